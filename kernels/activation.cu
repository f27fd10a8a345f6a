// activation.cu: activations, gated activations, residual add and soft-capping, element-wise,
// with the formulas of src/backend/cpu/activation.rs (exact GELU tanh form, not a lookup table).
//
// Entry points (one thread per element, grid-stride; any block size):
//   act_unary    x = act(x)
//   act_glu      out = act(gate) * up
//   act_add      x += y
//   act_softcap  x = c * tanh(x / c)

#include "prelude.cuh"

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

extern "C" __global__ void act_unary(float* x, int len, int act) {
    for (int i = blockIdx.x * blockDim.x + threadIdx.x; i < len; i += gridDim.x * blockDim.x) {
        x[i] = act_apply(act, x[i]);
    }
}

extern "C" __global__ void act_glu(const float* gate, const float* up, float* out, int len,
                                   int act) {
    for (int i = blockIdx.x * blockDim.x + threadIdx.x; i < len; i += gridDim.x * blockDim.x) {
        out[i] = act_apply(act, gate[i]) * up[i];
    }
}

extern "C" __global__ void act_add(float* x, const float* y, int len) {
    for (int i = blockIdx.x * blockDim.x + threadIdx.x; i < len; i += gridDim.x * blockDim.x) {
        x[i] += y[i];
    }
}

extern "C" __global__ void act_softcap(float* x, float c, int len) {
    for (int i = blockIdx.x * blockDim.x + threadIdx.x; i < len; i += gridDim.x * blockDim.x) {
        x[i] = c * tl_tanhf(x[i] / c);
    }
}
