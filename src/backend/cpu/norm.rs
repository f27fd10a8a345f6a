//! RMSNorm and LayerNorm over rows. Sums are accumulated in f64 over f32 data because ggml does the
//! same (`ggml_float` sums), which keeps us close to the reference logits.

use rayon::prelude::*;

use crate::model::arch::NormKind;

/// Normalise each row of `dim` values of `x` into `out`: `(x - mean) / sqrt(var + eps) * w + b`
/// (LayerNorm) or `x / sqrt(mean(x²) + eps) * w` (RMSNorm, where `b` is added if given). `w` and
/// `b` are `dim` long. Parallel over rows when there are more than 8.
pub fn norm_rows(
    kind: NormKind,
    x: &[f32],
    w: &[f32],
    b: Option<&[f32]>,
    eps: f32,
    dim: usize,
    out: &mut [f32],
) {
    let go = |(xr, or): (&[f32], &mut [f32])| norm_row(kind, xr, w, b, eps, or);
    if x.len() / dim > 8 {
        x.par_chunks(dim).zip(out.par_chunks_mut(dim)).for_each(go);
    } else {
        x.chunks(dim).zip(out.chunks_mut(dim)).for_each(go);
    }
}

/// In-place normalisation of each row of `dim` values of `x`, without bias (used for per-head
/// QK-norm). Sequential: the rows are short.
pub fn norm_rows_inplace(kind: NormKind, x: &mut [f32], w: &[f32], eps: f32, dim: usize) {
    for row in x.chunks_mut(dim) {
        let scale_shift = stats(kind, row, eps);
        for (v, &wi) in row.iter_mut().zip(w) {
            *v = (*v - scale_shift.1) * scale_shift.0 * wi;
        }
    }
}

fn norm_row(kind: NormKind, x: &[f32], w: &[f32], b: Option<&[f32]>, eps: f32, out: &mut [f32]) {
    let (scale, mean) = stats(kind, x, eps);
    for i in 0..x.len() {
        out[i] = (x[i] - mean) * scale * w[i] + b.map_or(0.0, |b| b[i]);
    }
}

/// (1/denominator, mean to subtract).
fn stats(kind: NormKind, x: &[f32], eps: f32) -> (f32, f32) {
    let n = x.len() as f64;
    match kind {
        NormKind::Rms => {
            let ss: f64 = x.iter().map(|&v| (v as f64) * (v as f64)).sum();
            (1.0 / ((ss / n) as f32 + eps).sqrt(), 0.0)
        }
        NormKind::Layer => {
            let mean = x.iter().map(|&v| v as f64).sum::<f64>() / n;
            let var = x.iter().map(|&v| (v as f64 - mean).powi(2)).sum::<f64>() / n;
            (1.0 / (var as f32 + eps).sqrt(), mean as f32)
        }
    }
}
