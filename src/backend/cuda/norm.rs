//! Launch wrappers for `kernels/norm.cu`: RMSNorm / LayerNorm over rows (into another buffer or
//! in place) and projection biases. Same math as [`crate::backend::cpu::norm`], with f32 sums.

use cudarc::driver::{CudaSlice, LaunchConfig};

use super::activation::grid_stride_cfg;
use super::{vec_type_id, CudaBuf, CudaWeight, Dev};
use crate::backend::NormSpec;
use crate::model::arch::NormKind;

/// Rows up to this long get one warp each (QK-norm heads of 64–256 values, small models): a
/// block per short row would leave most of its threads idle and pay block-wide barriers.
const WARP_ROW_MAX: usize = 512;

/// Warps per block of the warp-per-row kernels.
const WARPS_PER_BLOCK: usize = 4;

/// Most blocks a norm launch asks for; the kernels stride over the remaining rows.
const MAX_BLOCKS: usize = 65535;

/// Every entry point of `kernels/norm.cu`.
pub(crate) fn entry_points() -> Vec<String> {
    [
        "norm_rows",
        "norm_rows_warp",
        "norm_rows_inplace",
        "norm_rows_inplace_warp",
        NORM_Q8_BLOCK,
        NORM_Q8_WARP,
        "norm_add_bias",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect()
}

/// One decode row normalised and rounded to Q8 in one launch (long rows, short rows).
const NORM_Q8_BLOCK: &str = "norm_rows_q8";
const NORM_Q8_WARP: &str = "norm_rows_warp_q8";

/// The kernels' norm id (`NORM_*` in norm.cu).
fn kind_id(kind: NormKind) -> i32 {
    match kind {
        NormKind::Rms => 0,
        NormKind::Layer => 1,
    }
}

/// The launch for `rows` rows of `dim`, and whether it is the warp-per-row kernel. Long rows get a
/// block each, about 8 values per thread (64..=1024 threads, whole warps as the kernel requires;
/// the kernel keeps up to `NORM_NV_BLOCK` = 8 values a thread in registers, so dim <= 8192).
/// 4 values a thread would shorten a decode row's chain further, but it changes the sums'
/// order, and with it the bfloat16 prefill's rounding: SmolLM2's perplexity on the emulator
/// moved from inside to just past its 0.1% bound.
fn row_cfg(rows: usize, dim: usize) -> (LaunchConfig, bool) {
    if dim <= WARP_ROW_MAX {
        let blocks = rows.div_ceil(WARPS_PER_BLOCK).clamp(1, MAX_BLOCKS);
        let cfg = LaunchConfig {
            grid_dim: (blocks as u32, 1, 1),
            block_dim: ((WARPS_PER_BLOCK * 32) as u32, 1, 1),
            shared_mem_bytes: 0,
        };
        (cfg, true)
    } else {
        let threads = dim.div_ceil(8).next_multiple_of(32).clamp(64, 1024);
        let cfg = LaunchConfig {
            grid_dim: (rows.clamp(1, MAX_BLOCKS) as u32, 1, 1),
            block_dim: (threads as u32, 1, 1),
            shared_mem_bytes: 0,
        };
        (cfg, false)
    }
}

/// The asserts a norm launch relies on (x and out hold `rows` rows of `dim`, the weight and bias
/// `dim` values, the sizes fit the kernels' 32-bit indexing), and the kernels' bias arguments:
/// without a bias the kernel never reads `b` (bty < 0), so the weight stands in as a valid
/// pointer.
fn checked_args<'a>(
    x: &CudaBuf,
    out: &CudaBuf,
    w: &'a CudaWeight,
    b: Option<&'a CudaWeight>,
    rows: usize,
    dim: usize,
) -> (&'a CudaSlice<u8>, i32) {
    let n = rows * dim;
    assert!(
        x.len() >= n && out.len() >= n,
        "norm: buffers shorter than {rows} x {dim}"
    );
    assert!(n < 1 << 31, "norm: {rows} x {dim} exceeds 32-bit indexing");
    assert!(w.cols >= dim, "norm: weight {} shorter than {dim}", w.name);
    match b {
        Some(b) => {
            assert!(b.cols >= dim, "norm: bias {} shorter than {dim}", b.name);
            (b.data.as_ref(), vec_type_id(b.ty))
        }
        None => (w.data.as_ref(), -1),
    }
}

/// Normalise `rows` rows of `dim` values of `x` into `out`:
/// `(x - mean) / sqrt(var + eps) * (w + w_offset) + b` (LayerNorm; RMSNorm has mean 0 and uses
/// the mean square as `var`; `b` is added when given).
#[allow(clippy::too_many_arguments)]
pub(crate) fn norm(
    dev: &Dev,
    spec: NormSpec,
    x: &CudaBuf,
    w: &CudaWeight,
    b: Option<&CudaWeight>,
    rows: usize,
    dim: usize,
    out: &mut CudaBuf,
) {
    if dev.failed() || rows == 0 || dim == 0 {
        return;
    }
    let (cfg, warp) = row_cfg(rows, dim);
    let name = if warp { "norm_rows_warp" } else { "norm_rows" };
    launch(dev, name, cfg, spec, x, w, b, rows, dim, out, None);
}

/// Launches `name`, one of the norm_rows* kernels, with their common arguments (and, for the Q8
/// forms, `xq`); true when the launch was queued.
#[allow(clippy::too_many_arguments)]
fn launch(
    dev: &Dev,
    name: &str,
    cfg: LaunchConfig,
    spec: NormSpec,
    x: &CudaBuf,
    w: &CudaWeight,
    b: Option<&CudaWeight>,
    rows: usize,
    dim: usize,
    out: &mut CudaBuf,
    xq: Option<&mut CudaSlice<u8>>,
) -> bool {
    let (bdata, bty) = checked_args(x, out, w, b, rows, dim);
    let wty = vec_type_id(w.ty);
    let (rows_i, dim_i, kind) = (rows as i32, dim as i32, kind_id(spec.kind));
    let mut lb = dev.kernel(name);
    lb.arg(x)
        .arg(out)
        .arg(w.data.as_ref())
        .arg(&wty)
        .arg(bdata)
        .arg(&bty)
        .arg(&rows_i)
        .arg(&dim_i)
        .arg(&kind)
        .arg(&spec.eps)
        .arg(&spec.w_offset);
    if let Some(xq) = xq {
        lb.arg(xq);
    }
    // SAFETY: the kernel reads x and writes out at indices < rows * dim, which both hold
    // (checked_args), and reads w / b at indices < dim, which they hold (cols >= dim, checked);
    // blocks are whole warps as the kernel requires; arguments match norm_rows /
    // norm_rows_warp (x, out, w, wty, b, bty, rows, dim, kind, eps, w_off), and for the Q8
    // forms, which the caller launches for one row of dim % 32 == 0 with an xq of
    // dim + 8 * dim / 32 bytes at least (`Q8Scratch::holding`), those and xq.
    let r = unsafe { lb.launch(cfg) };
    dev.check(name, r).is_some()
}

/// [`norm`] of one decode row whose output the int8 matvecs read next (one of `feeds` takes
/// them): `norm_rows*_q8` also writes the row in Q8 form to the int8 scratch, in the same launch,
/// and marks the scratch as holding `out` ([`Dev::set_q8_input`]), so the matvec that follows
/// skips its `quantize_q8` launch. The floats in `out` are [`norm`]'s, and the Q8 form is
/// `quantize_q8`'s of them, bit for bit (one rounding function, kernels/q8act.cuh).
/// Returns false, launching nothing, where that does not apply (more than one row, fused
/// kernels off, no feed taking the int8 matvec, dim not whole 32-value groups): the caller runs
/// [`norm`].
#[allow(clippy::too_many_arguments)]
pub(crate) fn norm_q8(
    dev: &Dev,
    spec: NormSpec,
    x: &CudaBuf,
    w: &CudaWeight,
    b: Option<&CudaWeight>,
    rows: usize,
    dim: usize,
    out: &mut CudaBuf,
    feeds: &[&CudaWeight],
) -> bool {
    if rows != 1 || !super::matmul::feeds_int8(dev, feeds, dim) {
        return false;
    }
    if dev.failed() {
        return true;
    }
    let mut q8 = super::lock(&dev.q8);
    let Some(xq) = q8.holding(dim) else {
        // Every int8 weight reserves the scratch for its columns as it is made.
        dev.fail(format!(
            "norm into the int8 matvec: no scratch for {dim} values (the weights were not made \
             by this backend)"
        ));
        return true;
    };
    let (mut cfg, warp) = row_cfg(1, dim);
    if warp {
        // The warp kernel's Q8 form is one row's: one warp.
        cfg.block_dim.0 = 32;
    }
    let name = if warp { NORM_Q8_WARP } else { NORM_Q8_BLOCK };
    if launch(dev, name, cfg, spec, x, w, b, 1, dim, out, Some(xq)) {
        dev.set_q8_input(out, dim, super::matmul::X_SLOT);
    }
    true
}

/// `x = norm(x)` for each of `rows` rows of `dim` values, without bias (QK-norm over each head:
/// many short rows, one warp each).
pub(crate) fn norm_inplace(
    dev: &Dev,
    spec: NormSpec,
    x: &mut CudaBuf,
    w: &CudaWeight,
    rows: usize,
    dim: usize,
) {
    if dev.failed() || rows == 0 || dim == 0 {
        return;
    }
    assert!(
        x.len() >= rows * dim,
        "norm_inplace: buffer shorter than {rows} x {dim}"
    );
    assert!(
        w.cols >= dim,
        "norm_inplace: weight {} shorter than {dim}",
        w.name
    );
    let (cfg, warp) = row_cfg(rows, dim);
    let name = if warp {
        "norm_rows_inplace_warp"
    } else {
        "norm_rows_inplace"
    };
    let wty = vec_type_id(w.ty);
    let (rows_i, dim_i, kind) = (rows as i32, dim as i32, kind_id(spec.kind));
    let mut lb = dev.kernel(name);
    lb.arg(x)
        .arg(w.data.as_ref())
        .arg(&wty)
        .arg(&rows_i)
        .arg(&dim_i)
        .arg(&kind)
        .arg(&spec.eps)
        .arg(&spec.w_offset);
    // SAFETY: the kernel reads and writes x at indices < rows * dim (held, asserted above), each
    // thread only the elements it read itself, and reads w at indices < dim (cols >= dim);
    // blocks are whole warps; arguments match norm_rows_inplace / norm_rows_inplace_warp.
    let r = unsafe { lb.launch(cfg) };
    dev.check(name, r);
}

/// `x[r * b.cols + i] += b[i]` for each of `rows` rows (projection biases).
pub(crate) fn add_bias(dev: &Dev, x: &mut CudaBuf, b: &CudaWeight, rows: usize) {
    let cols = b.cols;
    if dev.failed() || rows == 0 || cols == 0 {
        return;
    }
    let n = rows * cols;
    assert!(
        x.len() >= n,
        "add_bias: buffer shorter than {rows} x {cols}"
    );
    let bty = vec_type_id(b.ty);
    let (rows_i, cols_i) = (rows as i32, cols as i32);
    let mut lb = dev.kernel("norm_add_bias");
    lb.arg(x)
        .arg(b.data.as_ref())
        .arg(&bty)
        .arg(&rows_i)
        .arg(&cols_i);
    // SAFETY: the kernel writes x at indices < rows * cols (held, asserted above) and reads b at
    // indices < cols, its length; arguments match norm_add_bias.
    let r = unsafe { lb.launch(grid_stride_cfg(n, 256)) };
    dev.check("norm_add_bias", r);
}
