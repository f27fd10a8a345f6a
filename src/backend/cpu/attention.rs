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

/// K and V rows of one layer widened to f32 once per attention call, reused between calls.
#[derive(Debug, Default)]
pub struct AttnScratch {
    k: Vec<f32>,
    v: Vec<f32>,
}

/// Causal attention for `n_tok` query tokens at positions `pos0..pos0 + n_tok`.
///
/// `q` is `[n_tok, n_head * head_dim]`, `out` receives `[n_tok, n_head * head_dim_v]`. Token at
/// position `p` attends to cached positions `max(0, p + 1 - window) ..= p` of `layer`, which must
/// already be stored (including the tokens of this call). Q is rounded to f16 like the cached K;
/// scores, softmax and the V sum are f32. Parallel over (token, head) pairs on the current rayon
/// pool. `simd` runs the same loops compiled for AVX2 (it must only be set where the CPU has
/// AVX2, FMA and F16C); the sums keep their order and use no fused multiply-add, so the result
/// is bit-identical either way.
#[allow(clippy::too_many_arguments)]
pub fn attention(
    q: &[f32],
    kv: &CpuKvCache,
    layer: usize,
    pos0: usize,
    n_tok: usize,
    s: &AttnShape,
    simd: bool,
    scratch: &mut AttnScratch,
    out: &mut [f32],
) {
    let (kw, vw) = (kv.k_width, kv.v_width);
    // Every query token of the batch and every head of a KV group reads the same cached rows:
    // widen the rows any of them can see to f32 once, instead of once per (token, head).
    let lo_min = s.window.map_or(0, |w| (pos0 + 1).saturating_sub(w));
    let hi = pos0 + n_tok;
    scratch.k.resize((hi - lo_min) * kw, 0.0);
    scratch.v.resize((hi - lo_min) * vw, 0.0);
    kv.k[layer][lo_min * kw..hi * kw].convert_to_f32_slice(&mut scratch.k);
    kv.v[layer][lo_min * vw..hi * vw].convert_to_f32_slice(&mut scratch.v);
    let cache = Widened {
        k: &scratch.k,
        v: &scratch.v,
        lo: lo_min,
        kw,
        vw,
    };
    out[..n_tok * s.n_head * s.head_dim_v]
        .par_chunks_mut(s.head_dim_v)
        .enumerate()
        .for_each_init(
            || (Vec::new(), vec![0f32; s.head_dim]),
            |(scores, qh), (idx, o)| {
                let (t, h) = (idx / s.n_head, idx % s.n_head);
                let qrow = &q[(t * s.n_head + h) * s.head_dim..][..s.head_dim];
                #[cfg(target_arch = "x86_64")]
                if simd {
                    // SAFETY: the caller sets `simd` only where AVX2, FMA and F16C exist.
                    return unsafe { attend_avx2(qrow, &cache, pos0 + t, h, s, scores, qh, o) };
                }
                attend(qrow, &cache, pos0 + t, h, s, scores, qh, o)
            },
        );
}

/// Cached rows `lo..` of one layer as f32.
struct Widened<'a> {
    k: &'a [f32],
    v: &'a [f32],
    lo: usize,
    kw: usize,
    vw: usize,
}

/// One (query token at `pos`, head `h`) pair: scores, fused max-subtracted softmax, V sum.
#[inline(always)]
#[allow(clippy::too_many_arguments)]
fn attend(
    qrow: &[f32],
    c: &Widened<'_>,
    pos: usize,
    h: usize,
    s: &AttnShape,
    scores: &mut Vec<f32>,
    qh: &mut [f32],
    o: &mut [f32],
) {
    let g = h / (s.n_head / s.n_head_kv);
    let lo = s.window.map_or(0, |w| (pos + 1).saturating_sub(w));
    // Q is rounded to f16 like K, as llama.cpp does before its f16 dot (both of its attention
    // paths), so the scores see the same rounding.
    for (d, &v) in qh.iter_mut().zip(qrow) {
        *d = f16::from_f32(v).to_f32();
    }
    scores.clear();
    let mut max = f32::NEG_INFINITY;
    for j in lo..=pos {
        let kr = &c.k[(j - c.lo) * c.kw + g * s.head_dim..][..s.head_dim];
        let mut d = dot(qh, kr) * s.scale;
        if let Some(cap) = s.softcap {
            d = cap * (d / cap).tanh();
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
        let vr = &c.v[(j - c.lo) * c.vw + g * s.head_dim_v..][..s.head_dim_v];
        let w = p * inv;
        for (a, &b) in o.iter_mut().zip(vr) {
            *a += w * b;
        }
    }
}

/// [`attend`] compiled for AVX2 (8-wide), same operations in the same order. Off x86_64
/// there is none, and `simd` is ignored.
#[target_feature(enable = "avx2,fma,f16c")]
#[allow(clippy::too_many_arguments)]
#[cfg(target_arch = "x86_64")]
unsafe fn attend_avx2(
    qrow: &[f32],
    c: &Widened<'_>,
    pos: usize,
    h: usize,
    s: &AttnShape,
    scores: &mut Vec<f32>,
    qh: &mut [f32],
    o: &mut [f32],
) {
    attend(qrow, c, pos, h, s, scores, qh, o)
}

#[inline(always)]
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
