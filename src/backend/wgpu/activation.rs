//! Element-wise ops (`shaders/activation.wgsl`): activations, gated activations, the residual
//! add and soft-capping, one invocation per element.

use super::{f, grid, u, Gpu, WgpuBuf, NO_WTYPE};
use crate::model::arch::Activation;

const FAMILY: &str = "activation";
/// Invocations per workgroup (`WG` in the shader).
const WG: usize = 256;

fn act_id(act: Activation) -> u32 {
    match act {
        Activation::Silu => 0,
        Activation::GeluTanh => 1,
    }
}

fn groups(gpu: &Gpu, len: usize) -> [u32; 3] {
    grid(
        len.div_ceil(WG),
        gpu.limits.max_compute_workgroups_per_dimension,
    )
}

/// `x = act(x)` over `len` values.
pub(crate) fn act(gpu: &Gpu, act: Activation, x: &mut WgpuBuf, len: usize) {
    if len == 0 {
        return;
    }
    let params = [u(len), act_id(act), 0];
    gpu.dispatch(
        FAMILY,
        "act_unary",
        NO_WTYPE,
        &[(0, &x.buf)],
        &params,
        groups(gpu, len),
    );
}

/// `out = act(gate) * up` over `len` values.
pub(crate) fn glu(
    gpu: &Gpu,
    act: Activation,
    gate: &WgpuBuf,
    up: &WgpuBuf,
    len: usize,
    out: &mut WgpuBuf,
) {
    if len == 0 {
        return;
    }
    let params = [u(len), act_id(act), 0];
    gpu.dispatch(
        FAMILY,
        "act_glu",
        NO_WTYPE,
        &[(1, &gate.buf), (2, &up.buf), (3, &out.buf)],
        &params,
        groups(gpu, len),
    );
}

/// `x += y` over `len` values.
pub(crate) fn add(gpu: &Gpu, x: &mut WgpuBuf, y: &WgpuBuf, len: usize) {
    if len == 0 {
        return;
    }
    let params = [u(len), 0, 0];
    gpu.dispatch(
        FAMILY,
        "act_add",
        NO_WTYPE,
        &[(0, &x.buf), (1, &y.buf)],
        &params,
        groups(gpu, len),
    );
}

/// `x = c * tanh(x / c)` over `len` values.
pub(crate) fn softcap(gpu: &Gpu, x: &mut WgpuBuf, c: f32, len: usize) {
    if len == 0 {
        return;
    }
    let params = [u(len), 0, f(c)];
    gpu.dispatch(
        FAMILY,
        "act_softcap",
        NO_WTYPE,
        &[(0, &x.buf)],
        &params,
        groups(gpu, len),
    );
}
