//! Launch wrappers for `kernels/activation.cu`: activations, gated activations, the residual add
//! and soft-capping, element-wise over a prefix of the buffers (formulas of
//! [`crate::backend::cpu::activation`]).

use cudarc::driver::LaunchConfig;

use super::{CudaBuf, Dev};
use crate::model::arch::Activation;

/// Threads per block of the element-wise kernels.
const THREADS: u32 = 256;

/// Most blocks an element-wise launch asks for; the kernels stride over the rest.
const MAX_BLOCKS: usize = 65535;

/// Every entry point of `kernels/activation.cu`.
pub(crate) fn entry_points() -> Vec<String> {
    ["act_unary", "act_glu", "act_add", "act_softcap"]
        .iter()
        .map(|s| s.to_string())
        .collect()
}

/// A 1-D launch for `n` items of a grid-stride kernel with `threads` threads per block: enough
/// blocks for one item per thread, capped (the kernel loops over what the cap leaves out).
/// Shared by the other wrappers of this backend's element-wise kernels.
pub(crate) fn grid_stride_cfg(n: usize, threads: u32) -> LaunchConfig {
    let blocks = n.div_ceil(threads as usize).clamp(1, MAX_BLOCKS);
    LaunchConfig {
        grid_dim: (blocks as u32, 1, 1),
        block_dim: (threads, 1, 1),
        shared_mem_bytes: 0,
    }
}

/// The kernels' activation id (`ACT_*` in activation.cu).
pub(crate) fn act_id(act: Activation) -> i32 {
    match act {
        Activation::Silu => 0,
        Activation::GeluTanh => 1,
    }
}

/// `x = act(x)` over the first `len` values.
pub(crate) fn act(dev: &Dev, act: Activation, x: &mut CudaBuf, len: usize) {
    if dev.failed() || len == 0 {
        return;
    }
    assert!(x.len() >= len, "act: buffer of {} < {len}", x.len());
    let (n, a) = (len as i32, act_id(act));
    let mut b = dev.kernel("act_unary");
    b.arg(x).arg(&n).arg(&a);
    // SAFETY: the kernel touches x[0..len) only (grid-stride, bounds-checked), and x holds at least
    // `len` values (asserted above); the arguments match the kernel's (float*, int, int).
    let r = unsafe { b.launch(grid_stride_cfg(len, THREADS)) };
    dev.check("act_unary", r);
}

/// `out = act(gate) * up` over the first `len` values.
pub(crate) fn glu(
    dev: &Dev,
    act: Activation,
    gate: &CudaBuf,
    up: &CudaBuf,
    len: usize,
    out: &mut CudaBuf,
) {
    if dev.failed() || len == 0 {
        return;
    }
    assert!(
        gate.len() >= len && up.len() >= len && out.len() >= len,
        "glu: buffers shorter than {len}"
    );
    let (n, a) = (len as i32, act_id(act));
    let mut b = dev.kernel("act_glu");
    b.arg(gate).arg(up).arg(out).arg(&n).arg(&a);
    // SAFETY: the kernel reads gate/up and writes out at indices < len only, and all three hold at
    // least `len` values (asserted above); argument order and types match act_glu.
    let r = unsafe { b.launch(grid_stride_cfg(len, THREADS)) };
    dev.check("act_glu", r);
}

/// `x += y` over the first `len` values (the residual connection).
pub(crate) fn add(dev: &Dev, x: &mut CudaBuf, y: &CudaBuf, len: usize) {
    if dev.failed() || len == 0 {
        return;
    }
    assert!(
        x.len() >= len && y.len() >= len,
        "add: buffers shorter than {len}"
    );
    let n = len as i32;
    let mut b = dev.kernel("act_add");
    b.arg(x).arg(y).arg(&n);
    // SAFETY: indices < len only, both buffers hold at least `len` values (asserted above);
    // argument order and types match act_add.
    let r = unsafe { b.launch(grid_stride_cfg(len, THREADS)) };
    dev.check("act_add", r);
}

/// `x = c * tanh(x / c)` over the first `len` values.
pub(crate) fn softcap(dev: &Dev, x: &mut CudaBuf, c: f32, len: usize) {
    if dev.failed() || len == 0 {
        return;
    }
    assert!(x.len() >= len, "softcap: buffer of {} < {len}", x.len());
    let n = len as i32;
    let mut b = dev.kernel("act_softcap");
    b.arg(x).arg(&c).arg(&n);
    // SAFETY: indices < len only, x holds at least `len` values (asserted above); argument order
    // and types match act_softcap (float*, float, int).
    let r = unsafe { b.launch(grid_stride_cfg(len, THREADS)) };
    dev.check("act_softcap", r);
}
