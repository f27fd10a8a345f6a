//! The f16 KV cache on the device and the launch wrappers for `kernels/attention.cu`: causal
//! attention with GQA, sliding window and soft-capping, same semantics as
//! [`crate::backend::cpu::attention`].
//!
//! Every call goes through split-K (flash-decoding): `attn_partial_*` runs one block per (key
//! split, token, head), each walking its slice of the key range with an online softmax (one per
//! warp over batches of keys, merged at the end). With one split (prefill: enough (token, head)
//! blocks to fill the GPU) it writes the output directly; otherwise (decode: one token, a few
//! heads, thousands of keys) it writes partial (max, sum, acc) triples to the cache's scratch
//! and `attn_combine` merges them.
//!
//! For one token the split count depends on the context size, never on the position: a decode
//! graph (graph.rs) records one launch for every step, and the kernel derives each split's key
//! range from the position it reads on the device. A batch (prefill) bounds it by its own last
//! position instead.

use std::sync::Mutex;

use cudarc::driver::{CudaSlice, CudaView, DriverError, LaunchConfig};

use super::launch::Launch;

use super::activation::grid_stride_cfg;
use super::{CudaBuf, CudaWeight, Dev};
use crate::backend::AttnShape;
use crate::model::arch::RopeLayout;

/// Splits are whole multiples of this many keys (two passes of the block's 4 warps × 8 keys), so
/// no split is too short to pay for its block (`ATTN_TILE`, with which the kernel sizes them).
const TILE: usize = 64;
/// Threads per block of `attn_partial_*`: `32 * ATTN_WARPS` exactly.
const THREADS: u32 = 128;
/// Threads per block of `attn_combine` (one per output dim; blockIdx.y covers the rest).
const COMBINE_THREADS: usize = 64;
/// Largest head_dim / head_dim_v the kernels hold (`ATTN_MAX_D`).
const MAX_D: usize = 512;
/// Split the key range until about this many blocks run (an H100 has 132 SMs, each holding up
/// to 16 of these 128-thread blocks).
const TARGET_BLOCKS: usize = 1024;
/// Most splits per (token, head) (`ATTN_MAX_SPLIT`: the combine keeps one weight per split in
/// shared memory); also bounds the scratch.
const MAX_SPLIT: usize = 64;
/// Most blocks per grid dimension the launches ask for; the kernels stride over the rest.
const MAX_GRID: usize = 65535;

/// Every entry point of `kernels/attention.cu`.
pub(crate) fn entry_points() -> Vec<String> {
    [
        "attn_kv_store",
        "attn_rope_kv_store",
        "attn_partial_d64",
        "attn_partial_d128",
        "attn_partial_d256",
        "attn_partial_d512",
        "attn_partial_any",
        "attn_combine",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect()
}

/// K and V rows for every position of the context, per layer, as f16 bits (like the CPU cache),
/// plus the split-K scratch.
pub struct CudaKvCache {
    /// Positions per layer.
    pub n_ctx: usize,
    /// K values per position (`n_head_kv * head_dim`).
    pub k_width: usize,
    /// V values per position (`n_head_kv * head_dim_v`).
    pub v_width: usize,
    /// Per layer, `[n_ctx, k_width]` row-major f16 bits.
    pub k: Vec<CudaSlice<u16>>,
    /// Per layer, `[n_ctx, v_width]` row-major f16 bits.
    pub v: Vec<CudaSlice<u16>>,
    /// Split-K partials (see attention.cu for the layout), sized at creation for every call
    /// this cache can serve: it is never replaced, since a recorded decode graph holds its
    /// address for the life of the cache. A mutex because `attention` takes the cache by shared
    /// reference.
    scratch: Mutex<CudaSlice<f32>>,
    /// One arrival counter per (token, head) for the fused split merge (attention.cu): zero
    /// between launches (the merging block re-arms it). With more than one split, n_th <
    /// TARGET_BLOCKS (see `split_count`), which sizes it. Used under the scratch's mutex.
    counters: CudaSlice<u32>,
}

impl CudaKvCache {
    /// A zeroed cache for `n_layer` layers of `n_ctx` positions.
    pub(crate) fn new(
        dev: &Dev,
        n_layer: usize,
        n_ctx: usize,
        k_width: usize,
        v_width: usize,
    ) -> Result<Self, DriverError> {
        let mut k = Vec::with_capacity(n_layer);
        let mut v = Vec::with_capacity(n_layer);
        for _ in 0..n_layer {
            k.push(dev.stream.alloc_zeros::<u16>(n_ctx * k_width)?);
            v.push(dev.stream.alloc_zeros::<u16>(n_ctx * v_width)?);
        }
        // With more than one split, n_tok * n_head * n_split < 2 * TARGET_BLOCKS (see
        // `split_count`), each partial holding 2 + head_dim_v floats, and head_dim_v <= MAX_D
        // and <= v_width (attention() asserts both).
        let scratch = dev
            .stream
            .alloc_zeros::<f32>(2 * TARGET_BLOCKS * (2 + v_width.min(MAX_D)))?;
        Ok(CudaKvCache {
            n_ctx,
            k_width,
            v_width,
            k,
            v,
            scratch: Mutex::new(scratch),
            counters: dev.stream.alloc_zeros::<u32>(TARGET_BLOCKS)?,
        })
    }

    /// Panics when positions `pos0..pos0 + n_tok` run past the context.
    fn check_positions(&self, pos0: usize, n_tok: usize) {
        assert!(
            pos0 + n_tok <= self.n_ctx,
            "kv store: positions {pos0}..{} past the context of {}",
            pos0 + n_tok,
            self.n_ctx
        );
    }

    /// The K and V caches of `layer`, for a kernel that writes positions `pos0..pos0 + n_tok`.
    /// Panics when that runs past `n_ctx`.
    pub(crate) fn layer_for(
        &mut self,
        layer: usize,
        pos0: usize,
        n_tok: usize,
    ) -> (&mut CudaSlice<u16>, &mut CudaSlice<u16>) {
        self.check_positions(pos0, n_tok);
        (&mut self.k[layer], &mut self.v[layer])
    }

    /// Round `n_tok` rows of `k` and `v` to f16 and write them at positions `pos0..pos0 + n_tok`
    /// of `layer`. Panics when that runs past `n_ctx`.
    pub(crate) fn store(
        &mut self,
        dev: &Dev,
        layer: usize,
        pos0: usize,
        n_tok: usize,
        k: &CudaBuf,
        v: &CudaBuf,
    ) {
        if dev.failed() || n_tok == 0 {
            return;
        }
        self.check_positions(pos0, n_tok);
        let (kw, vw) = (self.k_width, self.v_width);
        assert!(
            k.len() >= n_tok * kw && v.len() >= n_tok * vw,
            "kv store: K/V buffers shorter than {n_tok} rows"
        );
        let n = n_tok * kw.max(vw);
        let (p, t, kw_i, vw_i) = (pos0 as i32, n_tok as i32, kw as i32, vw as i32);
        let inputs = dev.captured_inputs();
        let (pos_dev, null) = (inputs.as_ref().map(|i| i.pos()), 0u64);
        let (kc, vc) = (&mut self.k[layer], &mut self.v[layer]);
        let mut b = dev.kernel("attn_kv_store");
        b.arg(k).arg(v).arg(kc).arg(vc).arg(&p);
        push_pos(&mut b, &pos_dev, &null);
        b.arg(&t).arg(&kw_i).arg(&vw_i);
        // SAFETY: the kernel reads k / v below n_tok * kw / n_tok * vw (held, asserted above) and
        // writes the layer's K / V cache below (pos + n_tok) * kw / * vw <= n_ctx * kw / * vw,
        // their lengths (pos is pos0, or in a decode graph the step's position, which the
        // executor checks against the context like pos0 before every replay); arguments match
        // attn_kv_store.
        let r = unsafe { b.launch(grid_stride_cfg(n, 256)) };
        dev.check("attn_kv_store", r);
    }

    /// RoPE on `q` and `k` with the (cos, sin) table `cs` (`[n_tok][n_rot / 2][2]`), then `k`
    /// and `v` rounded to f16 at positions `pos0..pos0 + n_tok` of `layer`: `rope` twice and
    /// [`CudaKvCache::store`] in one launch, bit for bit. Panics when that runs past `n_ctx` or a
    /// buffer is short.
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn rope_store(
        &mut self,
        dev: &Dev,
        layer: usize,
        pos0: usize,
        n_tok: usize,
        [q, k]: [&mut CudaBuf; 2],
        v: &CudaBuf,
        h: &RopeHeads,
        cs: &CudaView<'_, f32>,
    ) {
        if dev.failed() || n_tok == 0 {
            return;
        }
        self.check_positions(pos0, n_tok);
        let (kw, vw) = (self.k_width, self.v_width);
        assert!(
            h.n_rot <= h.head_dim && h.n_head_kv * h.head_dim == kw,
            "rope + kv store: {} K heads of {} (rotating {}) for a cache {kw} wide",
            h.n_head_kv,
            h.head_dim,
            h.n_rot
        );
        assert!(
            q.len() >= n_tok * h.n_head * h.head_dim
                && k.len() >= n_tok * kw
                && v.len() >= n_tok * vw,
            "rope + kv store: Q/K/V buffers shorter than {n_tok} rows"
        );
        assert!(
            cs.len() >= n_tok * (h.n_rot / 2) * 2,
            "rope + kv store: table shorter than {n_tok} x {}",
            h.n_rot
        );
        let half = h.n_rot / 2;
        let n = n_tok * (h.n_head * half + h.n_head_kv * (half + h.head_dim - h.n_rot) + vw);
        let lay = super::rope::layout_id(h.layout);
        let (p, t) = (pos0 as i32, n_tok as i32);
        let (hq, hk, d, r, vw_i) = (
            h.n_head as i32,
            h.n_head_kv as i32,
            h.head_dim as i32,
            h.n_rot as i32,
            vw as i32,
        );
        let inputs = dev.captured_inputs();
        let (pos_dev, null) = (inputs.as_ref().map(|i| i.pos()), 0u64);
        let (kc, vc) = (&mut self.k[layer], &mut self.v[layer]);
        let mut b = dev.kernel("attn_rope_kv_store");
        b.arg(q).arg(k).arg(v).arg(cs).arg(kc).arg(vc).arg(&p);
        push_pos(&mut b, &pos_dev, &null);
        b.arg(&t)
            .arg(&hq)
            .arg(&hk)
            .arg(&d)
            .arg(&r)
            .arg(&lay)
            .arg(&vw_i);
        // SAFETY: the kernel touches q below n_tok * n_head * head_dim, k below n_tok * kw, v below
        // n_tok * vw, cs below n_tok * n_rot (all held, asserted above; n_rot <= head_dim), and
        // writes the layer's caches below (pos + n_tok) * kw / * vw <= n_ctx * kw / * vw, their
        // lengths (pos is pos0, or in a decode graph the step's position, checked against the
        // context by the executor before every replay); arguments match attn_rope_kv_store.
        let r = unsafe { b.launch(grid_stride_cfg(n, 256)) };
        dev.check("attn_rope_kv_store", r);
    }
}

/// The heads of one [`CudaKvCache::rope_store`]: Q and K heads, their width and the rotated
/// dims of each, and the pair layout.
pub(crate) struct RopeHeads {
    /// Q heads.
    pub n_head: usize,
    /// K (and V) heads.
    pub n_head_kv: usize,
    /// Width of a Q or K head.
    pub head_dim: usize,
    /// Leading dims of each head that rotate.
    pub n_rot: usize,
    /// Which elements pair up.
    pub layout: RopeLayout,
}

impl RopeHeads {
    /// The heads of `shape`, rotating `n_rot` dims of each in `layout`.
    pub(crate) fn new(shape: &AttnShape, n_rot: usize, layout: RopeLayout) -> Self {
        RopeHeads {
            n_head: shape.n_head,
            n_head_kv: shape.n_head_kv,
            head_dim: shape.head_dim,
            n_rot,
            layout,
        }
    }
}

/// Key splits for `n_th` (token, head) pairs whose longest key range can reach `max_len` (>= 1;
/// the context size or the window, or for a batch its last position + 1 if smaller): enough for about TARGET_BLOCKS blocks, no
/// more than whole tiles of `max_len`, at most MAX_SPLIT. At a given position the kernel cuts
/// the actual longest range into this many whole tiles; the splits past it are empty and cost
/// a block that returns at once. When this returns more than one split,
/// `n_th * splits < 2 * TARGET_BLOCKS`: splits <= ceil(TARGET / n_th) >= 2 means n_th < TARGET,
/// and n_th * ceil(TARGET / n_th) < TARGET + n_th.
fn split_count(n_th: usize, max_len: usize) -> usize {
    let want = TARGET_BLOCKS.div_ceil(n_th);
    want.min(max_len.div_ceil(TILE)).clamp(1, MAX_SPLIT)
}

/// Pushes the kernels' `pos_dev` argument: the position a decode graph reads from its step
/// inputs, or a null pointer (the kernel takes `pos0`).
pub(crate) fn push_pos(b: &mut Launch<'_>, pos: &Option<CudaView<'_, u32>>, null: &u64) {
    match pos {
        Some(v) => b.arg(v),
        None => b.arg(null),
    };
}

/// The `attn_partial_*` variant for these widths: the narrowest `dN` holding both head widths
/// (fewer registers) when every width is even (32-bit K/V loads), else the generic one.
fn partial_entry(s: &AttnShape, k_width: usize, v_width: usize) -> &'static str {
    if !(s.head_dim | s.head_dim_v | k_width | v_width).is_multiple_of(2) {
        return "attn_partial_any";
    }
    match s.head_dim.max(s.head_dim_v) {
        0..=64 => "attn_partial_d64",
        65..=128 => "attn_partial_d128",
        129..=256 => "attn_partial_d256",
        _ => "attn_partial_d512",
    }
}

/// Causal attention of `n_tok` query rows at positions `pos0..` over the cache of `layer`.
///
/// `q` is `[n_tok, n_head * head_dim]`, `out` receives `[n_tok, n_head * head_dim_v]`; the K/V of
/// this call's tokens must already be stored. Q is rounded to f16 before the dot like the CPU.
#[allow(clippy::too_many_arguments)]
pub(crate) fn attention(
    dev: &Dev,
    q: &CudaBuf,
    kv: &CudaKvCache,
    layer: usize,
    pos0: usize,
    n_tok: usize,
    shape: &AttnShape,
    out: &mut CudaBuf,
    feeds: &[&CudaWeight],
) {
    if dev.failed() || n_tok == 0 {
        return;
    }
    let s = shape;
    assert!(
        s.n_head_kv > 0 && s.n_head.is_multiple_of(s.n_head_kv),
        "attention: {} heads over {} K/V heads",
        s.n_head,
        s.n_head_kv
    );
    assert!(
        s.head_dim <= MAX_D && s.head_dim_v <= MAX_D,
        "attention: head widths {}/{} over the kernel's {MAX_D}",
        s.head_dim,
        s.head_dim_v
    );
    assert!(
        s.n_head_kv * s.head_dim <= kv.k_width && s.n_head_kv * s.head_dim_v <= kv.v_width,
        "attention: K/V heads wider than the cache"
    );
    assert!(
        pos0 + n_tok <= kv.n_ctx,
        "attention: positions past the context"
    );
    let n_th = n_tok * s.n_head;
    assert!(
        q.len() >= n_th * s.head_dim && out.len() >= n_th * s.head_dim_v,
        "attention: Q/out buffers shorter than {n_tok} rows"
    );
    // A zero window would see no key at all; it is not a valid config, read it as "no window".
    let window = s.window.filter(|&w| w > 0);
    // The longest key range any row of this context can have. A single-token call keeps that
    // bound at every position (a decode graph replays one launch for all of them, and eager
    // steps split the same way, so both give the same sums); a batch (prefill, never recorded)
    // is bounded by its own last position instead, so a short prompt does not launch splits
    // that find no key.
    let longest = window.map_or(kv.n_ctx, |w| w.min(kv.n_ctx));
    let longest = if n_tok > 1 {
        longest.min(pos0 + n_tok)
    } else {
        longest
    };
    let n_split = split_count(n_th, longest);
    debug_assert!(n_split <= MAX_SPLIT);

    let mut scratch = kv.scratch.lock().unwrap_or_else(|e| e.into_inner());
    let need = if n_split > 1 {
        n_th * n_split * (2 + s.head_dim_v)
    } else {
        0
    };
    assert!(
        need <= scratch.len(),
        "attention: {need} split-K partials past the scratch sized at creation"
    );

    let (p0, t, nh, nkv) = (
        pos0 as i32,
        n_tok as i32,
        s.n_head as i32,
        s.n_head_kv as i32,
    );
    let (hd, hdv, kw, vw) = (
        s.head_dim as i32,
        s.head_dim_v as i32,
        kv.k_width as i32,
        kv.v_width as i32,
    );
    let win = window.map_or(0, |w| w.min(i32::MAX as usize) as i32);
    let cap = s.softcap.unwrap_or(0.0);
    let ns = n_split as i32;
    let inputs = dev.captured_inputs();
    let (pos_dev, null) = (inputs.as_ref().map(|i| i.pos()), 0u64);
    // Fused kernels on: the block of the split that finishes last merges the splits (no
    // attn_combine launch), and with one token whose output the int8 matvec reads next (the
    // output projection) the output also goes out in Q8 form (whole 32-value groups per head),
    // so the matvec skips its own rounding launch.
    let merge_in_place = dev.fused && n_split > 1;
    let cols = n_th * s.head_dim_v;
    // Whole 32-value groups per head, so each warp of the output loop holds one.
    let to_q8 = n_tok == 1
        && s.head_dim_v.is_multiple_of(32)
        && super::matmul::feeds_int8(dev, feeds, cols);
    // The int8 scratch is locked only when attention writes to it.
    let mut q8 = to_q8.then(|| super::lock(&dev.q8));
    let mut xq = q8.as_mut().and_then(|q8| q8.holding(cols));
    let q8_out = xq.is_some();
    let cfg = LaunchConfig {
        grid_dim: (n_split as u32, n_th.min(MAX_GRID) as u32, 1),
        block_dim: (THREADS, 1, 1),
        shared_mem_bytes: 0,
    };
    let name = partial_entry(s, kv.k_width, kv.v_width);
    let mut b = dev.kernel(name);
    b.arg(q)
        .arg(&kv.k[layer])
        .arg(&kv.v[layer])
        .arg(&mut *out)
        .arg(&mut *scratch)
        .arg(&p0);
    push_pos(&mut b, &pos_dev, &null);
    b.arg(&t)
        .arg(&nh)
        .arg(&nkv)
        .arg(&hd)
        .arg(&hdv)
        .arg(&kw)
        .arg(&vw)
        .arg(&s.scale)
        .arg(&win)
        .arg(&cap)
        .arg(&ns);
    if merge_in_place {
        b.arg(&kv.counters);
    } else {
        b.arg(&null);
    }
    match xq.as_mut() {
        Some(xq) => b.arg(&mut **xq),
        None => b.arg(&null),
    };
    // SAFETY: q is read below n_th * head_dim and out written below n_th * head_dim_v (held,
    // asserted above); K/V rows read are < pos + n_tok <= n_ctx (pos: pos0, or a decode graph's
    // step position, checked against the context before every replay), at columns below
    // n_head_kv * head_dim <= k_width (resp. v); head widths fit the kernel's shared arrays
    // (<= MAX_D, asserted) and the variant's (partial_entry); with n_split > 1 the scratch holds
    // n_th * n_split * (2 + head_dim_v) floats (asserted above), and with one split it is not
    // touched; the counters (given only with n_split > 1, when n_th < TARGET_BLOCKS, their
    // count) are zero before the launch and re-armed by it, and the scratch's mutex keeps other
    // calls off them; xq (given only for one token, head_dim_v % 32 == 0) holds
    // q8_bytes(n_th * head_dim_v) bytes (`holding`); the block is the 4 warps the kernel is
    // written for; null pointers where those are not given; arguments match attn_partial_*.
    let r = unsafe { b.launch(cfg) };
    if dev.check(name, r).is_none() {
        return;
    }
    if q8_out {
        dev.set_q8_input(out, cols, super::matmul::X_SLOT);
    }
    if n_split > 1 && !merge_in_place {
        let n_th_i = n_th as i32;
        let cfg = LaunchConfig {
            grid_dim: (
                n_th.min(MAX_GRID) as u32,
                s.head_dim_v.div_ceil(COMBINE_THREADS) as u32,
                1,
            ),
            block_dim: (COMBINE_THREADS as u32, 1, 1),
            shared_mem_bytes: 0,
        };
        let mut b = dev.kernel("attn_combine");
        b.arg(&*scratch).arg(out).arg(&n_th_i).arg(&ns).arg(&hdv);
        // SAFETY: the kernel reads the n_th * n_split partials attn_partial_* just wrote (the
        // scratch holds them, see above) and writes out below n_th * head_dim_v (held, asserted);
        // n_split <= MAX_SPLIT (split_count), the size of its weight array; whole warps;
        // arguments match attn_combine.
        let r = unsafe { b.launch(cfg) };
        dev.check("attn_combine", r);
    }
}
