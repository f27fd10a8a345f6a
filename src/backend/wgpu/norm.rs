//! RMSNorm / LayerNorm over rows and projection biases (`shaders/norm.wgsl`). Norm weights and
//! biases stay in their file dtype (F32, F16 or BF16) and are decoded in the shader.

use super::{f, grid, u, Gpu, WgpuBuf, WgpuWeight, NO_WTYPE};
use crate::backend::NormSpec;
use crate::model::arch::NormKind;

const FAMILY: &str = "norm";
/// Invocations per workgroup of `norm_add_bias` (`WG` in the shader).
const WG: usize = 256;
/// `bty` of a call without a bias.
const NO_BIAS: u32 = u32::MAX;

fn kind_id(k: NormKind) -> u32 {
    match k {
        NormKind::Rms => 0,
        NormKind::Layer => 1,
    }
}

/// The one part of a vector weight (vectors are far below any binding limit).
fn vector(w: &WgpuWeight) -> &wgpu::Buffer {
    &w.parts[0].buf
}

/// Normalise `rows` rows of `dim` values of `x` into `out` (one workgroup per row).
#[allow(clippy::too_many_arguments)]
pub(crate) fn norm(
    gpu: &Gpu,
    spec: NormSpec,
    x: &WgpuBuf,
    w: &WgpuWeight,
    b: Option<&WgpuWeight>,
    rows: usize,
    dim: usize,
    out: &mut WgpuBuf,
) {
    if rows == 0 {
        return;
    }
    let wb = vector(w);
    // Without a bias the weight stands in for the unused binding.
    let (bb, bty) = match b {
        Some(b) => (vector(b), b.ty.ggml_id()),
        None => (wb, NO_BIAS),
    };
    let params = [
        u(rows),
        u(dim),
        kind_id(spec.kind),
        f(spec.eps),
        f(spec.w_offset),
        w.ty.ggml_id(),
        bty,
    ];
    gpu.dispatch(
        FAMILY,
        "norm_rows",
        NO_WTYPE,
        &[(0, &x.buf), (1, wb), (2, bb), (3, &out.buf)],
        &params,
        grid(rows, gpu.limits.max_compute_workgroups_per_dimension),
    );
}

/// `x = norm(x)` per row of `dim` (QK-norm over each head).
pub(crate) fn norm_inplace(
    gpu: &Gpu,
    spec: NormSpec,
    x: &mut WgpuBuf,
    w: &WgpuWeight,
    rows: usize,
    dim: usize,
) {
    if rows == 0 {
        return;
    }
    let params = [
        u(rows),
        u(dim),
        kind_id(spec.kind),
        f(spec.eps),
        f(spec.w_offset),
        w.ty.ggml_id(),
        NO_BIAS,
    ];
    gpu.dispatch(
        FAMILY,
        "norm_rows_inplace",
        NO_WTYPE,
        &[(4, &x.buf), (1, vector(w))],
        &params,
        grid(rows, gpu.limits.max_compute_workgroups_per_dimension),
    );
}

/// `x[r] += b` for each of `rows` rows of `b.cols` values.
pub(crate) fn add_bias(gpu: &Gpu, x: &mut WgpuBuf, b: &WgpuWeight, rows: usize) {
    let n = rows * b.cols;
    if n == 0 {
        return;
    }
    let params = [u(rows), u(b.cols), 0, 0, 0, b.ty.ggml_id(), NO_BIAS];
    gpu.dispatch(
        FAMILY,
        "norm_add_bias",
        NO_WTYPE,
        &[(4, &x.buf), (1, vector(b))],
        &params,
        grid(
            n.div_ceil(WG),
            gpu.limits.max_compute_workgroups_per_dimension,
        ),
    );
}
