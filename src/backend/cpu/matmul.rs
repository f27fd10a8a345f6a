//! Quantized matmul / matvec on the CPU: activations are quantized once into the weight type's
//! dot format, then each weight row is dotted with every token row while it is hot in cache. The
//! weights are read straight from the file map in their own block format.

use rayon::prelude::*;

use super::dot::{DotKernels, TokenTiles, TILE_TOKENS};
use super::CpuWeight;
use crate::quant::{Acts, GgmlType};

/// Rows of W handed to one rayon task: big enough that scheduling cost is small next to the
/// dots, small enough that both cores get even shares of a 576-row matrix.
const ROWS_PER_TASK: usize = 32;

/// How far ahead (bytes) a matvec asks for the weights it will read. The hardware prefetcher
/// alone kept one core at about half its read bandwidth on Gemma's 171 MB output matrix.
const PREFETCH_BYTES: usize = 4096;

/// Ask for `len` bytes of `data` from `start` (clipped to `data`) to be brought into cache.
#[inline]
fn prefetch_row(data: &[u8], start: usize, len: usize) {
    #[cfg(target_arch = "x86_64")]
    {
        let end = data.len().min(start.saturating_add(len));
        let mut at = start;
        while at < end {
            // SAFETY: `at < data.len()`, so the address is inside `data`; a prefetch has no
            // architectural effect beyond the cache.
            unsafe {
                std::arch::x86_64::_mm_prefetch::<{ std::arch::x86_64::_MM_HINT_T0 }>(
                    data.as_ptr().add(at) as *const i8,
                )
            };
            at += 64;
        }
    }
    #[cfg(not(target_arch = "x86_64"))]
    let _ = (data, start, len);
}

/// Reusable buffers of [`matmul`].
#[derive(Default)]
pub struct MatmulScratch {
    /// The activations in the weight type's dot format.
    pub acts: Acts,
    /// The same, rearranged for the tiled kernels (batches of [`TILE_TOKENS`] or more).
    pub tiles: TokenTiles,
    /// The transposed `[rows, n_tok]` result of a batch.
    pub tmp: Vec<f32>,
}

/// `out[t * w.rows + r] = dot(W[r], x[t])` for `t < n_tok`.
pub fn matmul(
    k: &DotKernels,
    w: &CpuWeight,
    x: &[f32],
    n_tok: usize,
    scratch: &mut MatmulScratch,
    out: &mut [f32],
) {
    let shape = WeightRows {
        ty: w.ty,
        data: w.bytes(),
        rows: w.rows,
        cols: w.cols,
    };
    matmul_rows(k, shape, x, n_tok, scratch, out);
}

/// A weight matrix as raw rows: `rows` rows of `cols` values of `ty`, back to back in `data`.
#[derive(Clone, Copy, Debug)]
pub struct WeightRows<'a> {
    /// Storage type.
    pub ty: GgmlType,
    /// `rows * ty.row_bytes(cols)` bytes, any alignment.
    pub data: &'a [u8],
    /// Output rows.
    pub rows: usize,
    /// Values per row.
    pub cols: usize,
}

/// [`matmul`] of raw weight rows (what the criterion benches time). Runs on the current rayon
/// pool.
pub fn matmul_rows(
    k: &DotKernels,
    w: WeightRows<'_>,
    x: &[f32],
    n_tok: usize,
    scratch: &mut MatmulScratch,
    out: &mut [f32],
) {
    let MatmulScratch { acts, tiles, tmp } = scratch;
    let (rows, cols, data) = (w.rows, w.cols, w.data);
    k.quantize(w.ty.act_kind(), &x[..n_tok * cols], cols, acts);
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
                    prefetch_row(data, r * row_bytes + PREFETCH_BYTES, row_bytes);
                    *o = k.dot(w.ty, &data[r * row_bytes..(r + 1) * row_bytes], a, cols);
                }
            });
        return;
    }
    // Batched: compute a transposed [rows, n_tok] block per task so each weight row is decoded
    // from memory once and reused for every token, then transpose into the row-major output.
    tmp.resize(rows * n_tok, 0.0);
    if n_tok >= TILE_TOKENS && k.has_tiles(w.ty) && tiles.fill(acts) {
        let tiles = &*tiles;
        // Token group outermost within a task: the group's activations (8 tokens) and the
        // task's weight rows both stay in L1 while every row is dotted with them.
        tmp.par_chunks_mut(ROWS_PER_TASK * n_tok)
            .enumerate()
            .for_each(|(ci, chunk)| {
                let r0 = ci * ROWS_PER_TASK;
                let mut o = [0f32; TILE_TOKENS];
                for g in 0..tiles.groups() {
                    let t0 = g * TILE_TOKENS;
                    let count = TILE_TOKENS.min(n_tok - t0);
                    for (i, orow) in chunk.chunks_mut(n_tok).enumerate() {
                        let r = r0 + i;
                        let wr = &data[r * row_bytes..(r + 1) * row_bytes];
                        k.dot_tile(w.ty, wr, tiles, g, &mut o);
                        orow[t0..t0 + count].copy_from_slice(&o[..count]);
                    }
                }
            });
        transpose_into(tmp, rows, n_tok, out);
        return;
    }
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
    transpose_into(tmp, rows, n_tok, out);
}

/// `out[t * rows + r] = tmp[r * n_tok + t]`.
fn transpose_into(tmp: &[f32], rows: usize, n_tok: usize, out: &mut [f32]) {
    for r in 0..rows {
        for t in 0..n_tok {
            out[t * rows + r] = tmp[r * n_tok + t];
        }
    }
}
