//! Launch wrapper for `kernels/embed.cu`: embedding-row lookup with dequantization, bit-exact with
//! the CPU backend's `embed` (same float operations per type).

use cudarc::driver::{CudaView, LaunchConfig};

use super::matmul::{names, KERNEL_TYPES};
use super::{CudaBuf, CudaWeight, Dev};

/// Threads per block of `get_rows_<t>`; each thread produces 8 consecutive columns.
const GR_THREADS: u32 = 256;
const GR_COLS_PER_BLOCK: usize = 8 * GR_THREADS as usize;

/// Every entry point of `kernels/embed.cu`.
pub(crate) fn entry_points() -> Vec<String> {
    KERNEL_TYPES
        .iter()
        .filter_map(|&t| names(t))
        .map(|n| n.get_rows.to_string())
        .collect()
}

/// `out[t * table.cols + c] = dequant(table row ids[t])[c] * scale` for `t < n_tok`.
///
/// Every `ids[t]` must be below `table.rows`: the kernel cannot check it (the caller validates
/// token ids on the host, as the CPU backend's indexing would panic). Panics when `ids` or `out`
/// is too short or for a type without a kernel (rejected when the weight is loaded).
pub(crate) fn embed(
    dev: &Dev,
    table: &CudaWeight,
    ids: &CudaView<'_, u32>,
    n_tok: usize,
    scale: f32,
    out: &mut CudaBuf,
) {
    if dev.failed() || n_tok == 0 || table.cols == 0 {
        return;
    }
    let names = names(table.ty)
        .unwrap_or_else(|| panic!("embed: no CUDA kernel for {} ({})", table.ty, table.name));
    let row_bytes = table.ty.row_bytes(table.cols).unwrap_or_else(|| {
        panic!(
            "embed: {} has {} columns, not whole {} blocks",
            table.name, table.cols, table.ty
        )
    });
    assert!(
        table.data.len() >= table.rows * row_bytes,
        "embed: {} holds {} bytes, {} rows need {}",
        table.name,
        table.data.len(),
        table.rows,
        table.rows * row_bytes
    );
    assert!(
        ids.len() >= n_tok,
        "embed: {n_tok} tokens but {} ids",
        ids.len()
    );
    assert!(
        out.len() >= n_tok * table.cols,
        "embed: output shorter than {n_tok} x {}",
        table.cols
    );
    assert!(
        n_tok <= i32::MAX as usize && table.cols <= (i32::MAX as usize) / 2,
        "embed: {n_tok} x {} exceeds the kernel's 32-bit indexing",
        table.cols
    );
    let col_blocks = table.cols.div_ceil(GR_COLS_PER_BLOCK);
    assert!(
        col_blocks <= 65_535,
        "embed: {} columns exceed the launch grid",
        table.cols
    );
    let (cols, nt) = (table.cols as i32, n_tok as i32);
    let cfg = LaunchConfig {
        grid_dim: (n_tok as u32, col_blocks as u32, 1),
        block_dim: (GR_THREADS, 1, 1),
        shared_mem_bytes: 0,
    };
    let mut b = dev.kernel(names.get_rows);
    b.arg(&*table.data)
        .arg(ids)
        .arg(out)
        .arg(&cols)
        .arg(&scale)
        .arg(&nt);
    // SAFETY: block (t, j) reads ids[t] for t < n_tok (ids holds n_tok, asserted), the table row
    // ids[t] < rows (the caller's contract, documented above; data holds rows * row_bytes bytes,
    // asserted) and writes out[t * cols + c] for c < cols only (out holds n_tok * cols, asserted);
    // the arguments match get_rows_<t> (w, ids, out, cols, scale, n_tok).
    let r = unsafe { b.launch(cfg) };
    dev.check(names.get_rows, r);
}
