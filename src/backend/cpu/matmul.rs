//! Quantized matmul / matvec on the CPU: activations are quantized once into the weight type's
//! dot format, then each weight row is dotted with every token row while it is hot in cache. The
//! weights are read straight from the file map in their own block format.

use rayon::prelude::*;

use super::dot::{
    DotKernels, Lanes, TokenLanes, TokenTiles, LANE_TOKENS, MAX_LANE_ROWS, TILE_TOKENS,
};
use super::CpuWeight;
use crate::quant::{Acts, GgmlType};

/// Rows of W handed to one rayon task: big enough that scheduling cost is small next to the
/// dots, small enough that both cores get even shares of a 576-row matrix.
const ROWS_PER_TASK: usize = 32;

/// The smallest batch that takes the lane (prefill) kernels. They round differently from the
/// one-token kernels (exact integer block sums against per-lane partial sums), so a token's
/// logits depend, in the last bits, on whether its batch reached this size.
/// [`crate::session::Session`] re-evaluates at least this many prompt tokens on a cache hit
/// for that reason.
pub const LANE_MIN_TOKENS: usize = LANE_TOKENS / 2;

/// Reusable buffers of [`matmul`].
#[derive(Default)]
pub struct MatmulScratch {
    /// The activations in the weight type's dot format.
    pub acts: Acts,
    /// The same, rearranged for the tiled kernels (batches of [`TILE_TOKENS`] or more).
    pub tiles: TokenTiles,
    /// The same, transposed for the lane kernels (batches of [`LANE_TOKENS`] / 2 or more).
    pub lanes: TokenLanes,
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
    let MatmulScratch {
        acts,
        tiles,
        lanes,
        tmp,
    } = scratch;
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
                let bytes = chunk.len() * row_bytes;
                k.dot_rows(w.ty, &data[r0 * row_bytes..][..bytes], a, cols, chunk);
            });
        return;
    }
    // Batched: compute a transposed [rows, n_tok] block per task so each weight row is decoded
    // from memory once and reused for every token, then transpose into the row-major output.
    tmp.resize(rows * n_tok, 0.0);
    if n_tok >= LANE_MIN_TOKENS && k.has_lanes(w.ty) && lanes.fill(acts) {
        let lanes = &*lanes;
        assert!(out.len() >= n_tok * rows, "matmul: output too small");
        let dst = SharedOut(out.as_mut_ptr());
        // Token group outermost within a task, so the group's activations stay in cache while
        // the task's rows (up to MAX_LANE_ROWS at a time, sharing each activation load) pass
        // over them. Each 16 × 16 block of results is transposed on the stack and written
        // straight into the row-major output as 16 runs of 16 rows: transposing the whole
        // result afterwards was one strided store per value and a fifth of the time.
        (0..rows.div_ceil(ROWS_PER_TASK))
            .into_par_iter()
            .for_each(|ci| {
                let r0 = ci * ROWS_PER_TASK;
                let task_rows = ROWS_PER_TASK.min(rows - r0);
                // 16 rows × 16 tokens of results, then the same transposed.
                let mut o = [Lanes::default(); LANE_TOKENS];
                let mut ot = [[0f32; LANE_TOKENS]; LANE_TOKENS];
                for g in 0..lanes.groups() {
                    let t0 = g * LANE_TOKENS;
                    let count = LANE_TOKENS.min(n_tok - t0);
                    for rb in (0..task_rows).step_by(LANE_TOKENS) {
                        let block_rows = LANE_TOKENS.min(task_rows - rb);
                        let mut i = 0;
                        while i < block_rows {
                            let nr = MAX_LANE_ROWS.min(block_rows - i);
                            let r = r0 + rb + i;
                            let wr = &data[r * row_bytes..(r + nr) * row_bytes];
                            k.dot_lanes(w.ty, wr, lanes, g, &mut o[i..i + nr]);
                            i += nr;
                        }
                        for (j, oj) in o[..block_rows].iter().enumerate() {
                            for (l, &v) in oj.0.iter().enumerate() {
                                ot[l][j] = v;
                            }
                        }
                        for (l, run) in ot[..count].iter().enumerate() {
                            // SAFETY: t0 + l < n_tok and the run's rows r0 + rb .. + block_rows
                            // are < rows, so it lies inside `out` (checked above to hold
                            // n_tok * rows values); only this task writes its rows, and `out`
                            // is borrowed exclusively until every task has finished.
                            unsafe { dst.write((t0 + l) * rows + r0 + rb, &run[..block_rows]) };
                        }
                    }
                }
            });
        return;
    }
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

/// The output of a matmul shared by its tasks, each writing a disjoint set of rows.
#[derive(Clone, Copy)]
struct SharedOut(*mut f32);

// SAFETY: the pointer is only written through `SharedOut::write`, at indices each task owns
// exclusively (see the call site), while the slice it came from is mutably borrowed.
unsafe impl Send for SharedOut {}
// SAFETY: as for `Send`: no two tasks write the same index, and nothing reads through it.
unsafe impl Sync for SharedOut {}

impl SharedOut {
    /// Copy `v` to indices `i..i + v.len()`.
    ///
    /// # Safety
    /// Those indices are in bounds of the slice the pointer came from, and no other thread
    /// accesses them.
    unsafe fn write(self, i: usize, v: &[f32]) {
        // SAFETY: guaranteed by the caller; `v` is a separate (stack) buffer.
        unsafe { std::ptr::copy_nonoverlapping(v.as_ptr(), self.0.add(i), v.len()) }
    }
}

/// `out[t * rows + r] = tmp[r * n_tok + t]`, in parallel over blocks of [`LANE_TOKENS`] tokens
/// (serial, it was a fifth of a one-thread prefill matmul): each task reads one 64-byte run of
/// every row of `tmp` and writes its tokens' output rows front to back.
fn transpose_into(tmp: &[f32], rows: usize, n_tok: usize, out: &mut [f32]) {
    out[..rows * n_tok]
        .par_chunks_mut(LANE_TOKENS * rows)
        .enumerate()
        .for_each(|(b, block)| {
            let t0 = b * LANE_TOKENS;
            let count = block.len() / rows;
            for r in 0..rows {
                let src = &tmp[r * n_tok + t0..][..count];
                for (i, &v) in src.iter().enumerate() {
                    block[i * rows + r] = v;
                }
            }
        });
}
