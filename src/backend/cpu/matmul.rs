//! Quantized matmul / matvec on the CPU: activations are quantized once into the weight type's
//! dot format, then each weight row is dotted with every token row while it is hot in cache. The
//! weights are read straight from the file map in their own block format.

use rayon::prelude::*;

use super::dot::DotKernels;
use super::CpuWeight;
use crate::quant::Acts;

/// Rows of W handed to one rayon task: big enough that scheduling cost is small next to the
/// dots, small enough that both cores get even shares of a 576-row matrix.
const ROWS_PER_TASK: usize = 32;

/// `out[t * w.rows + r] = dot(W[r], x[t])` for `t < n_tok`.
pub fn matmul(
    k: &DotKernels,
    w: &CpuWeight,
    x: &[f32],
    n_tok: usize,
    acts: &mut Acts,
    tmp: &mut Vec<f32>,
    out: &mut [f32],
) {
    let (rows, cols) = (w.rows, w.cols);
    k.quantize(w.ty.act_kind(), &x[..n_tok * cols], cols, acts);
    let data = w.bytes();
    let row_bytes = data.len() / rows;
    let acts = &*acts;
    if n_tok == 1 {
        let a = acts.row(0);
        out[..rows]
            .par_chunks_mut(ROWS_PER_TASK)
            .enumerate()
            .for_each(|(ci, chunk)| {
                let r0 = ci * ROWS_PER_TASK;
                for (i, o) in chunk.iter_mut().enumerate() {
                    let r = r0 + i;
                    *o = k.dot(w.ty, &data[r * row_bytes..(r + 1) * row_bytes], a, cols);
                }
            });
        return;
    }
    // Batched: compute a transposed [rows, n_tok] block per task so each weight row is decoded
    // from memory once and reused for every token, then transpose into the row-major output.
    tmp.resize(rows * n_tok, 0.0);
    tmp.par_chunks_mut(ROWS_PER_TASK * n_tok)
        .enumerate()
        .for_each(|(ci, chunk)| {
            let r0 = ci * ROWS_PER_TASK;
            for (i, orow) in chunk.chunks_mut(n_tok).enumerate() {
                let r = r0 + i;
                let wr = &data[r * row_bytes..(r + 1) * row_bytes];
                k.dot_tokens(w.ty, wr, acts, 0, orow);
            }
        });
    for r in 0..rows {
        for t in 0..n_tok {
            out[t * rows + r] = tmp[r * n_tok + t];
        }
    }
}
