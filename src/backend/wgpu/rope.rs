//! Rotary position embedding (`shaders/rope.wgsl`), in place, with the host-computed (cos, sin)
//! table of `crate::backend::rope_tables`.

use super::{grid, u, Gpu, WgpuBuf, NO_WTYPE};
use crate::model::arch::RopeLayout;

/// Invocations per workgroup (`WG` in the shader).
const WG: usize = 256;

/// Rotate the first `n_rot` dims of each of `n_heads` heads of `n_tok` rows of `x` by table `cs`.
#[allow(clippy::too_many_arguments)]
pub(crate) fn rope(
    gpu: &Gpu,
    x: &mut WgpuBuf,
    n_tok: usize,
    n_heads: usize,
    head_dim: usize,
    n_rot: usize,
    layout: RopeLayout,
    cs: &wgpu::Buffer,
) {
    let n = n_tok * n_heads * (n_rot / 2);
    if n == 0 {
        return;
    }
    let layout_id = match layout {
        RopeLayout::Adjacent => 0,
        RopeLayout::Halves => 1,
    };
    let params = [u(n_tok), u(n_heads), u(head_dim), u(n_rot), layout_id];
    gpu.dispatch(
        "rope",
        "rope_rotate",
        NO_WTYPE,
        &[(0, &x.buf), (1, cs)],
        &params,
        grid(
            n.div_ceil(WG),
            gpu.limits.max_compute_workgroups_per_dimension,
        ),
    );
}
