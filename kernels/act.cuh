// act.cuh: the activation functions, with the formulas of src/backend/cpu/activation.rs (exact
// GELU tanh form, not a lookup table). Shared by activation.cu and by matmul.cu's gated matvec,
// which applies them before its store.
#pragma once
#include "prelude.cuh"

// The ids src/backend/cuda/activation.rs passes.
#define ACT_SILU 0
#define ACT_GELU_TANH 1

// SiLU: x / (1 + exp(-x)); exp overflowing to +inf gives -0 for very negative x, like the CPU.
static __device__ __forceinline__ float act_silu(float x) { return x / (1.f + tl_expf(-x)); }

// GELU, tanh approximation: 0.5 x (1 + tanh(sqrt(2/pi) (x + 0.044715 x^3))).
static __device__ __forceinline__ float act_gelu_tanh(float x) {
    const float k = 0.7978846f;  // sqrt(2 / pi), the CPU's SQRT_2_OVER_PI
    return 0.5f * x * (1.f + tl_tanhf(k * x * (1.f + 0.044715f * x * x)));
}

static __device__ __forceinline__ float act_apply(int act, float x) {
    return act == ACT_GELU_TANH ? act_gelu_tanh(x) : act_silu(x);
}
