//! Activations (gated `act(gate) * up` and plain `act(x)`), residual add and soft-capping.

use super::caps::KernelPath;
use crate::model::arch::Activation;

pub(super) const SQRT_2_OVER_PI: f32 = 0.797_884_6;

/// GELU, tanh approximation: `0.5 x (1 + tanh(sqrt(2/π) (x + 0.044715 x³)))`.
pub fn gelu_tanh(x: f32) -> f32 {
    0.5 * x * (1.0 + (SQRT_2_OVER_PI * x * (1.0 + 0.044715 * x * x)).tanh())
}

/// SiLU (swish): `x * sigmoid(x)`.
pub fn silu(x: f32) -> f32 {
    x / (1.0 + (-x).exp())
}

/// `out = act(gate) * up`, element by element.
///
/// GELU is computed exactly (f32 `tanh`), not through llama.cpp's f16 lookup table
/// (`GGML_GELU_FP16`): the table adds f16 rounding to every activation, and measured against
/// llama.cpp's own logits that extra noise moved Gemma's perplexity from 0.07% to 1.0% away.
pub fn glu(act: Activation, gate: &[f32], up: &[f32], out: &mut [f32]) {
    let f = function(act);
    for ((o, &g), &u) in out.iter_mut().zip(gate).zip(up) {
        *o = f(g) * u;
    }
}

/// `x = act(x)` in place (ungated FFNs such as Phi-2's `fc2(gelu(fc1(x)))`).
pub fn unary(act: Activation, x: &mut [f32]) {
    let f = function(act);
    for v in x {
        *v = f(*v);
    }
}

/// [`glu`] on kernel path `path`: with AVX-512, GELU runs 16 lanes at a time through a port of
/// the C library's `tanhf` that is bit-identical to it (see `gelu512.rs`); anything else is
/// the scalar loop.
pub fn glu_on(path: KernelPath, act: Activation, gate: &[f32], up: &[f32], out: &mut [f32]) {
    #[cfg(target_arch = "x86_64")]
    if path == KernelPath::Avx512 && act == Activation::GeluTanh {
        // SAFETY: a kernel table for the AVX-512 path is only built on a CPU with AVX-512F
        // (`DotKernels::select` checks it at run time).
        unsafe { super::gelu512::glu(gate, up, out) };
        return;
    }
    let _ = path;
    glu(act, gate, up, out)
}

/// [`unary`] on kernel path `path` (as [`glu_on`]).
pub fn unary_on(path: KernelPath, act: Activation, x: &mut [f32]) {
    #[cfg(target_arch = "x86_64")]
    if path == KernelPath::Avx512 && act == Activation::GeluTanh {
        // SAFETY: as in `glu_on`.
        unsafe { super::gelu512::gelu_in_place(x) };
        return;
    }
    let _ = path;
    unary(act, x)
}

fn function(act: Activation) -> fn(f32) -> f32 {
    match act {
        Activation::Silu => silu,
        Activation::GeluTanh => gelu_tanh,
    }
}

/// `x += y`, element by element (the residual connection).
pub fn add(x: &mut [f32], y: &[f32]) {
    for (a, &b) in x.iter_mut().zip(y) {
        *a += b;
    }
}

/// `x = c * tanh(x / c)`: squashes values smoothly into `(-c, c)` (Gemma-2 logit soft-capping).
pub fn softcap(x: &mut [f32], c: f32) {
    for v in x {
        *v = c * (*v / c).tanh();
    }
}
