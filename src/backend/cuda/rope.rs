//! Launch wrapper for `kernels/rope.cu`: rotary position embedding in place. The (cos, sin) table
//! is computed on the host in f64 like [`crate::backend::cpu::rope`] and uploaded by the caller, so
//! the kernel applies exactly the CPU's f32 values.

use cudarc::driver::CudaView;

use super::activation::grid_stride_cfg;
use super::{CudaBuf, Dev};
use crate::model::arch::RopeLayout;

/// Every entry point of `kernels/rope.cu`.
pub(crate) fn entry_points() -> Vec<String> {
    vec!["rope_rotate".to_string()]
}

/// The kernels' layout argument (`ROPE_ADJACENT` / `ROPE_HALVES` in kernels/rope.cuh).
pub(crate) fn layout_id(layout: RopeLayout) -> i32 {
    match layout {
        RopeLayout::Adjacent => 0,
        RopeLayout::Halves => 1,
    }
}

/// Rotate the first `n_rot` dims of each of `n_heads` heads (`head_dim` wide) of `n_tok` rows of
/// `x`; `cs` holds `[n_tok][n_rot / 2][2]` = (cos, sin) per token and pair, attention factor
/// included. Dims `>= n_rot` are left as they are.
#[allow(clippy::too_many_arguments)]
pub(crate) fn rope(
    dev: &Dev,
    x: &mut CudaBuf,
    n_tok: usize,
    n_heads: usize,
    head_dim: usize,
    n_rot: usize,
    layout: RopeLayout,
    cs: &CudaView<'_, f32>,
) {
    let pairs = n_tok * n_heads * (n_rot / 2);
    if dev.failed() || pairs == 0 {
        return;
    }
    assert!(
        n_rot <= head_dim,
        "rope: n_rot {n_rot} > head_dim {head_dim}"
    );
    assert!(
        x.len() >= n_tok * n_heads * head_dim,
        "rope: buffer shorter than {n_tok} x {n_heads} x {head_dim}"
    );
    assert!(
        cs.len() >= n_tok * (n_rot / 2) * 2,
        "rope: table shorter than {n_tok} x {n_rot}"
    );
    let lay = layout_id(layout);
    let (t, h, d, r) = (n_tok as i32, n_heads as i32, head_dim as i32, n_rot as i32);
    let mut b = dev.kernel("rope_rotate");
    b.arg(x).arg(cs).arg(&t).arg(&h).arg(&d).arg(&r).arg(&lay);
    // SAFETY: the kernel touches x at (token * n_heads + head) * head_dim + k with k < n_rot <=
    // head_dim (held, asserted above) and reads cs below n_tok * (n_rot / 2) * 2 (held); it
    // strides over the pairs; arguments match rope_rotate.
    let r = unsafe { b.launch(grid_stride_cfg(pairs, 256)) };
    dev.check("rope_rotate", r);
}
