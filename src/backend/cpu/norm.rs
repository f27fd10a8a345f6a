//! RMSNorm and LayerNorm over rows. Sums are accumulated in f64 over f32 data because ggml does the
//! same (`ggml_float` sums), which keeps us close to the reference logits. Weights and biases are
//! read in their stored type (F32, F16 or BF16) element by element: they are short vectors.

use rayon::prelude::*;

use crate::backend::NormSpec;
use crate::model::arch::NormKind;
use crate::quant::GgmlType;

/// A norm weight or bias vector in its stored type.
#[derive(Clone, Copy)]
pub struct Vector<'a> {
    ty: GgmlType,
    bytes: &'a [u8],
}

impl<'a> Vector<'a> {
    /// `bytes` holds values of `ty`, which must be F32, F16 or BF16.
    pub fn new(ty: GgmlType, bytes: &'a [u8]) -> Self {
        debug_assert!(matches!(ty, GgmlType::F32 | GgmlType::F16 | GgmlType::BF16));
        Vector { ty, bytes }
    }

    /// Value `i` widened to f32.
    #[inline]
    pub fn get(&self, i: usize) -> f32 {
        match self.ty {
            GgmlType::F32 => {
                let b = &self.bytes[4 * i..4 * i + 4];
                f32::from_le_bytes([b[0], b[1], b[2], b[3]])
            }
            GgmlType::F16 => {
                half::f16::from_le_bytes([self.bytes[2 * i], self.bytes[2 * i + 1]]).to_f32()
            }
            _ => half::bf16::from_le_bytes([self.bytes[2 * i], self.bytes[2 * i + 1]]).to_f32(),
        }
    }
}

/// Normalise each row of `dim` values of `x` into `out`: `(x - mean) / sqrt(var + eps) * w + b`
/// (LayerNorm) or `x / sqrt(mean(x²) + eps) * w` (RMSNorm, where `b` is added if given), with
/// `spec.w_offset` added to each weight. Parallel over rows when there are more than 8.
pub fn norm_rows(
    spec: NormSpec,
    x: &[f32],
    w: Vector<'_>,
    b: Option<Vector<'_>>,
    dim: usize,
    out: &mut [f32],
) {
    let go = |(xr, or): (&[f32], &mut [f32])| norm_row(spec, xr, w, b, or);
    if x.len() / dim > 8 {
        x.par_chunks(dim).zip(out.par_chunks_mut(dim)).for_each(go);
    } else {
        x.chunks(dim).zip(out.chunks_mut(dim)).for_each(go);
    }
}

/// In-place normalisation of each row of `dim` values of `x`, without bias (used for per-head
/// QK-norm). Sequential: the rows are short.
pub fn norm_rows_inplace(spec: NormSpec, x: &mut [f32], w: Vector<'_>, dim: usize) {
    for row in x.chunks_mut(dim) {
        let (scale, mean) = stats(spec.kind, row, spec.eps);
        for (i, v) in row.iter_mut().enumerate() {
            *v = (*v - mean) * scale * (w.get(i) + spec.w_offset);
        }
    }
}

fn norm_row(spec: NormSpec, x: &[f32], w: Vector<'_>, b: Option<Vector<'_>>, out: &mut [f32]) {
    let (scale, mean) = stats(spec.kind, x, spec.eps);
    for (i, (o, &xi)) in out.iter_mut().zip(x).enumerate() {
        *o = (xi - mean) * scale * (w.get(i) + spec.w_offset) + b.map_or(0.0, |b| b.get(i));
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
