//! Causal multi-head attention over an f16 KV cache (GQA/MQA, sliding window). The cache is read
//! in place; each (token, head) pair is one task with a fused max-subtracted softmax.

use half::f16;
use half::slice::HalfFloatSliceExt;
use rayon::prelude::*;

use crate::backend::AttnShape;

/// K and V rows for every position of the context, per layer, stored as f16 like llama.cpp's
/// default cache (half the memory traffic of f32 at decode).
pub struct CpuKvCache {
    /// Positions per layer.
    pub n_ctx: usize,
    /// K values per position (`n_head_kv * head_dim`).
    pub k_width: usize,
    /// V values per position (`n_head_kv * head_dim_v`).
    pub v_width: usize,
    /// Per layer, `[n_ctx, k_width]` row-major.
    pub k: Vec<Vec<f16>>,
    /// Per layer, `[n_ctx, v_width]` row-major.
    pub v: Vec<Vec<f16>>,
}

impl CpuKvCache {
    /// A zeroed cache for `n_layer` layers; allocates `n_layer * n_ctx * (k_width + v_width)` f16s.
    pub fn new(n_layer: usize, n_ctx: usize, k_width: usize, v_width: usize) -> Self {
        CpuKvCache {
            n_ctx,
            k_width,
            v_width,
            k: (0..n_layer)
                .map(|_| vec![f16::ZERO; n_ctx * k_width])
                .collect(),
            v: (0..n_layer)
                .map(|_| vec![f16::ZERO; n_ctx * v_width])
                .collect(),
        }
    }

    /// Round `n_tok` rows of `k` and `v` (row-major f32) to f16 and write them at positions
    /// `pos0..pos0 + n_tok` of `layer`. Panics when that runs past `n_ctx`.
    pub fn store(&mut self, layer: usize, pos0: usize, n_tok: usize, k: &[f32], v: &[f32]) {
        let (kw, vw) = (self.k_width, self.v_width);
        self.k[layer][pos0 * kw..(pos0 + n_tok) * kw].convert_from_f32_slice(&k[..n_tok * kw]);
        self.v[layer][pos0 * vw..(pos0 + n_tok) * vw].convert_from_f32_slice(&v[..n_tok * vw]);
    }
}

/// Causal attention for `n_tok` query tokens at positions `pos0..pos0 + n_tok`.
///
/// `q` is `[n_tok, n_head * head_dim]`, `out` receives `[n_tok, n_head * head_dim_v]`. Token at
/// position `p` attends to cached positions `max(0, p + 1 - window) ..= p` of `layer`, which must
/// already be stored (including the tokens of this call). Q is rounded to f16 like the cached K;
/// scores, softmax and the V sum are f32. Parallel over (token, head) pairs on the current rayon
/// pool.
pub fn attention(
    q: &[f32],
    kv: &CpuKvCache,
    layer: usize,
    pos0: usize,
    n_tok: usize,
    s: &AttnShape,
    out: &mut [f32],
) {
    let group = s.n_head / s.n_head_kv;
    let (kc, vc) = (&kv.k[layer], &kv.v[layer]);
    let (kw, vw) = (kv.k_width, kv.v_width);
    out[..n_tok * s.n_head * s.head_dim_v]
        .par_chunks_mut(s.head_dim_v)
        .enumerate()
        .for_each_init(
            || {
                (
                    Vec::new(),
                    vec![0f32; s.head_dim.max(s.head_dim_v)],
                    vec![0f32; s.head_dim],
                )
            },
            |(scores, row, qh), (idx, o)| {
                let (t, h) = (idx / s.n_head, idx % s.n_head);
                let g = h / group;
                let pos = pos0 + t;
                let lo = s.window.map_or(0, |w| (pos + 1).saturating_sub(w));
                // Q is rounded to f16 like K, as llama.cpp does before its f16 dot (both of its
                // attention paths), so the scores see the same rounding.
                for (d, &v) in qh
                    .iter_mut()
                    .zip(&q[(t * s.n_head + h) * s.head_dim..][..s.head_dim])
                {
                    *d = f16::from_f32(v).to_f32();
                }
                scores.clear();
                let mut max = f32::NEG_INFINITY;
                for j in lo..=pos {
                    let kr = &kc[j * kw + g * s.head_dim..][..s.head_dim];
                    kr.convert_to_f32_slice(&mut row[..s.head_dim]);
                    let mut d = dot(qh, &row[..s.head_dim]) * s.scale;
                    if let Some(c) = s.softcap {
                        d = c * (d / c).tanh();
                    }
                    max = max.max(d);
                    scores.push(d);
                }
                let mut sum = 0.0f32;
                for sc in scores.iter_mut() {
                    *sc = (*sc - max).exp();
                    sum += *sc;
                }
                let inv = 1.0 / sum;
                o.fill(0.0);
                for (j, &p) in (lo..=pos).zip(scores.iter()) {
                    let vr = &vc[j * vw + g * s.head_dim_v..][..s.head_dim_v];
                    vr.convert_to_f32_slice(&mut row[..s.head_dim_v]);
                    let w = p * inv;
                    for (a, &b) in o.iter_mut().zip(&row[..s.head_dim_v]) {
                        *a += w * b;
                    }
                }
            },
        );
}

fn dot(a: &[f32], b: &[f32]) -> f32 {
    // Eight independent accumulators, walked with exact chunks so there are no bounds checks
    // and the compiler vectorises (the sum order is fixed: lane l sums elements l, l+8, ...).
    let mut acc = [0f32; 8];
    let (ca, cb) = (a.chunks_exact(8), b.chunks_exact(8));
    let (ra, rb) = (ca.remainder(), cb.remainder());
    for (x, y) in ca.zip(cb) {
        for l in 0..8 {
            acc[l] += x[l] * y[l];
        }
    }
    let mut s: f32 = acc.iter().sum();
    for (x, y) in ra.iter().zip(rb) {
        s += x * y;
    }
    s
}
