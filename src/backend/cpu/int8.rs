//! w8a8 matmul for I8 weights (compressed-tensors `int-quantized`): each token row of the
//! activations is quantized to int8 with its own scale (`max|x| / 127`, round half to even as
//! `torch.round` does), dotted with the int8 weight rows in exact integer arithmetic, and the
//! i32 sum scaled by the token's and the weight row's scales.

use rayon::prelude::*;

use super::norm::Vector;

/// Weight rows handed to one rayon task.
const ROWS_PER_TASK: usize = 32;

/// Per-token int8 activations: `rows` rows of `n` quants and one scale per row.
#[derive(Default)]
pub struct I8Acts {
    q: Vec<i8>,
    scales: Vec<f32>,
}

impl I8Acts {
    /// Quantize `x` (`x.len() / n` rows of `n`), reusing the allocation.
    pub fn quantize(&mut self, x: &[f32], n: usize) {
        let rows = x.len() / n;
        self.q.resize(x.len(), 0);
        self.scales.resize(rows, 0.0);
        for ((xr, qr), s) in x
            .chunks_exact(n)
            .zip(self.q.chunks_exact_mut(n))
            .zip(&mut self.scales)
        {
            *s = quantize_row(xr, qr);
        }
    }

    /// Row `t`'s quants and scale.
    pub fn row(&self, t: usize, n: usize) -> (&[i8], f32) {
        (&self.q[t * n..(t + 1) * n], self.scales[t])
    }
}

/// Symmetric int8 quantization of one row; returns its scale (0 for an all-zero row).
pub fn quantize_row(x: &[f32], q: &mut [i8]) -> f32 {
    let amax = x.iter().fold(0.0f32, |m, &v| m.max(v.abs()));
    let s = amax / 127.0;
    let inv = if s > 0.0 { 1.0 / s } else { 0.0 };
    for (o, &v) in q.iter_mut().zip(x) {
        *o = (v * inv).round_ties_even().clamp(-127.0, 127.0) as i8;
    }
    s
}

/// Exact integer dot product of two int8 rows. Written as a widening multiply-add over fixed
/// chunks so the compiler vectorises it (`vpmaddwd` on AVX2 / AVX-512).
pub fn dot_i8(a: &[i8], b: &[i8]) -> i32 {
    let mut acc = [0i32; 16];
    let (ca, cb) = (a.chunks_exact(16), b.chunks_exact(16));
    let (ra, rb) = (ca.remainder(), cb.remainder());
    for (x, y) in ca.zip(cb) {
        for l in 0..16 {
            acc[l] += x[l] as i32 * y[l] as i32;
        }
    }
    let mut s: i32 = acc.iter().sum();
    for (&x, &y) in ra.iter().zip(rb) {
        s += x as i32 * y as i32;
    }
    s
}

/// `out[t * rows + r] = (Σ q_w[r] · q_x[t]) · s_w[r] · s_x[t]` for `n_tok` token rows of `x`.
/// `w` holds `rows` int8 rows of `cols`; `w_scales` one scale per row.
#[allow(clippy::too_many_arguments)]
pub fn matmul(
    w: &[u8],
    w_scales: Vector<'_>,
    rows: usize,
    cols: usize,
    x: &[f32],
    n_tok: usize,
    acts: &mut I8Acts,
    tmp: &mut Vec<f32>,
    out: &mut [f32],
) {
    acts.quantize(&x[..n_tok * cols], cols);
    let w: &[i8] = bytemuck::cast_slice(&w[..rows * cols]);
    let acts = &*acts;
    // Transposed [rows, n_tok] blocks per task so each weight row is read once per batch.
    tmp.resize(rows * n_tok, 0.0);
    tmp.par_chunks_mut(ROWS_PER_TASK * n_tok)
        .enumerate()
        .for_each(|(ci, chunk)| {
            let r0 = ci * ROWS_PER_TASK;
            for (i, orow) in chunk.chunks_mut(n_tok).enumerate() {
                let r = r0 + i;
                let wr = &w[r * cols..(r + 1) * cols];
                let sw = w_scales.get(r);
                for (t, o) in orow.iter_mut().enumerate() {
                    let (q, sx) = acts.row(t, cols);
                    *o = dot_i8(wr, q) as f32 * (sw * sx);
                }
            }
        });
    for r in 0..rows {
        for t in 0..n_tok {
            out[t * rows + r] = tmp[r * n_tok + t];
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quantizes_symmetrically_with_ties_to_even() {
        let mut q = [0i8; 4];
        // amax 127 gives scale 1: values land exactly on .5 and round to even.
        let s = quantize_row(&[127.0, 2.5, -3.5, 0.5], &mut q);
        assert_eq!(s, 1.0);
        assert_eq!(q, [127, 2, -4, 0]);
        assert_eq!(quantize_row(&[0.0; 4], &mut q), 0.0);
        assert_eq!(q, [0; 4]);
    }

    #[test]
    fn matmul_matches_the_formula_on_odd_shapes() {
        let (rows, cols, n_tok) = (37, 45, 3);
        let mut seed = 7u64;
        let mut next = || {
            seed = seed.wrapping_mul(6364136223846793005).wrapping_add(1);
            (seed >> 33) as i64
        };
        let w: Vec<i8> = (0..rows * cols)
            .map(|_| (next() % 255 - 127) as i8)
            .collect();
        let ws: Vec<f32> = (0..rows)
            .map(|_| (next() % 1000) as f32 / 1e5 + 1e-4)
            .collect();
        let x: Vec<f32> = (0..n_tok * cols)
            .map(|_| (next() % 2001 - 1000) as f32 / 100.0)
            .collect();
        let mut out = vec![0.0; n_tok * rows];
        let (mut acts, mut tmp) = (I8Acts::default(), Vec::new());
        matmul(
            bytemuck::cast_slice(&w),
            Vector::new(crate::quant::GgmlType::F32, bytemuck::cast_slice(&ws)),
            rows,
            cols,
            &x,
            n_tok,
            &mut acts,
            &mut tmp,
            &mut out,
        );
        for t in 0..n_tok {
            let xr = &x[t * cols..(t + 1) * cols];
            let mut q = vec![0i8; cols];
            let sx = quantize_row(xr, &mut q);
            for r in 0..rows {
                let want: f64 = (0..cols)
                    .map(|c| w[r * cols + c] as f64 * q[c] as f64)
                    .sum::<f64>()
                    * ws[r] as f64
                    * sx as f64;
                let got = out[t * rows + r] as f64;
                assert!(
                    (got - want).abs() <= 1e-5 * (1.0 + want.abs()),
                    "{got} vs {want}"
                );
            }
        }
    }
}
