//! The f16 KV cache and causal attention over it (`shaders/attention.wgsl`).

use super::{f, grid, u, Gpu, WgpuBuf, NO_WTYPE};
use crate::backend::AttnShape;
use crate::error::{Error, Result};

const FAMILY: &str = "attention";
/// Widest query/key and value head the shader takes (`MAX_DK`, `MAX_DV`).
pub const MAX_HEAD_DIM: usize = 512;
/// Invocations per workgroup of `kv_store`.
const STORE_WG: usize = 256;

/// Per layer, K and V of every position: `[n_ctx][width]` halves in one buffer each, so each
/// layer is one storage binding no matter how many layers there are.
pub struct WgpuKvCache {
    k: Vec<wgpu::Buffer>,
    v: Vec<wgpu::Buffer>,
    k_width: usize,
    v_width: usize,
}

impl WgpuKvCache {
    pub(crate) fn new(
        gpu: &Gpu,
        n_layer: usize,
        n_ctx: usize,
        k_width: usize,
        v_width: usize,
    ) -> Result<Self> {
        // Halves are stored in pairs: an odd width would split a pair across two positions.
        if !k_width.is_multiple_of(2) || !v_width.is_multiple_of(2) {
            return Err(Error::Wgpu(format!(
                "the KV cache needs even K and V widths (got {k_width} and {v_width})"
            )));
        }
        let mut k = Vec::with_capacity(n_layer);
        let mut v = Vec::with_capacity(n_layer);
        for layer in 0..n_layer {
            let what = |kv: &str, w: usize| {
                format!("the {kv} cache of layer {layer} ({n_ctx} positions × {w} halves)")
            };
            k.push(gpu.storage_zeroed(&what("K", k_width), n_ctx * k_width * 2)?);
            v.push(gpu.storage_zeroed(&what("V", v_width), n_ctx * v_width * 2)?);
        }
        Ok(WgpuKvCache {
            k,
            v,
            k_width,
            v_width,
        })
    }

    /// Store `n_tok` rows of K and V for `layer` at positions `pos0..`.
    pub(crate) fn store(
        &mut self,
        gpu: &Gpu,
        layer: usize,
        pos0: usize,
        n_tok: usize,
        k: &WgpuBuf,
        v: &WgpuBuf,
    ) {
        let pairs = n_tok * (self.k_width + self.v_width) / 2;
        if pairs == 0 {
            return;
        }
        // The first four fields of the shader's `Params`.
        let params = [u(n_tok), u(pos0), u(self.k_width), u(self.v_width)];
        gpu.dispatch(
            FAMILY,
            "kv_store",
            NO_WTYPE,
            &[
                (0, &k.buf),
                (1, &v.buf),
                (2, &self.k[layer]),
                (3, &self.v[layer]),
            ],
            &params,
            grid(
                pairs.div_ceil(STORE_WG),
                gpu.limits.max_compute_workgroups_per_dimension,
            ),
        );
    }
}

/// Causal attention of `n_tok` query rows at positions `pos0..` over the cache of `layer`: one
/// workgroup per (query head, token).
#[allow(clippy::too_many_arguments)]
pub(crate) fn attention(
    gpu: &Gpu,
    q: &WgpuBuf,
    kv: &WgpuKvCache,
    layer: usize,
    pos0: usize,
    n_tok: usize,
    s: &AttnShape,
    out: &mut WgpuBuf,
) {
    if n_tok == 0 || gpu.failed() {
        return;
    }
    if s.head_dim > MAX_HEAD_DIM || s.head_dim_v > MAX_HEAD_DIM || !s.head_dim.is_multiple_of(2) {
        gpu.fail(format!(
            "attention: head widths {} (K) and {} (V) are not supported by shaders/attention.wgsl \
             (even, at most {MAX_HEAD_DIM})",
            s.head_dim, s.head_dim_v
        ));
        return;
    }
    let max_dim = gpu.limits.max_compute_workgroups_per_dimension as usize;
    if s.n_head > max_dim || n_tok > max_dim {
        gpu.fail(format!(
            "attention: {} heads × {n_tok} tokens exceed the adapter's {max_dim} workgroups per \
             dimension",
            s.n_head
        ));
        return;
    }
    let params = [
        u(n_tok),
        u(pos0),
        u(kv.k_width),
        u(kv.v_width),
        u(s.n_head),
        u(s.n_head_kv),
        u(s.head_dim),
        u(s.head_dim_v),
        f(s.scale),
        u(s.window.unwrap_or(0)),
        f(s.softcap.unwrap_or(0.0)),
    ];
    gpu.dispatch(
        FAMILY,
        "attention",
        NO_WTYPE,
        &[
            (4, &q.buf),
            (5, &kv.k[layer]),
            (6, &kv.v[layer]),
            (7, &out.buf),
        ],
        &params,
        [u(s.n_head), u(n_tok), 1],
    );
}
