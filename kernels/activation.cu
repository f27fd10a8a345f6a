// activation.cu: activations, gated activations, residual add and soft-capping, element-wise,
// with the formulas of src/backend/cpu/activation.rs (exact GELU tanh form, not a lookup table).
//
// Entry points (one thread per element, grid-stride; any block size):
//   act_unary    x = act(x)
//   act_glu      out = act(gate) * up
//   act_add      x += y
//   act_softcap  x = c * tanh(x / c)

#include "act.cuh"

extern "C" __global__ void act_unary(float* x, int len, int act) {
    tl_kernel_start();
    for (int i = blockIdx.x * blockDim.x + threadIdx.x; i < len; i += gridDim.x * blockDim.x) {
        x[i] = act_apply(act, x[i]);
    }
}

extern "C" __global__ void act_glu(const float* gate, const float* up, float* out, int len,
                                   int act) {
    tl_kernel_start();
    for (int i = blockIdx.x * blockDim.x + threadIdx.x; i < len; i += gridDim.x * blockDim.x) {
        out[i] = act_apply(act, gate[i]) * up[i];
    }
}

extern "C" __global__ void act_add(float* x, const float* y, int len) {
    tl_kernel_start();
    for (int i = blockIdx.x * blockDim.x + threadIdx.x; i < len; i += gridDim.x * blockDim.x) {
        x[i] += y[i];
    }
}

extern "C" __global__ void act_softcap(float* x, float c, int len) {
    tl_kernel_start();
    for (int i = blockIdx.x * blockDim.x + threadIdx.x; i < len; i += gridDim.x * blockDim.x) {
        x[i] = c * tl_tanhf(x[i] / c);
    }
}
