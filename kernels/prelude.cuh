// prelude.cuh: the one header every kernel includes. It lets the same source build with nvcc and
// with clang without any CUDA installation (clang -x cuda -nocudainc -nocudalib), by mapping
// what the CUDA headers would provide onto clang's builtins.
#pragma once

#if defined(__NVCC__)
// nvcc: the CUDA headers are there.
#include <cuda_runtime.h>
#include <stdint.h>
#define TL_SYNC() __syncthreads()
#define TL_SHFL_XOR(v, m) __shfl_xor_sync(0xffffffffu, (v), (m))
#define TL_SHFL_XOR_I(v, m) __shfl_xor_sync(0xffffffffu, (v), (m))
#else
// clang without CUDA headers: attributes, index variables and intrinsics by hand.
#include <__clang_cuda_builtin_vars.h>
#define __global__ __attribute__((global))
#define __device__ __attribute__((device))
#define __host__ __attribute__((host))
#define __shared__ __attribute__((shared))
#define __constant__ __attribute__((constant))
#define __forceinline__ __inline__ __attribute__((always_inline))
typedef unsigned char uint8_t;
typedef signed char int8_t;
typedef unsigned short uint16_t;
typedef short int16_t;
typedef unsigned int uint32_t;
typedef int int32_t;
typedef unsigned long long uint64_t;
typedef long long int64_t;
#define TL_SYNC() __nvvm_bar_sync(0)
#define TL_SHFL_XOR(v, m) __nvvm_shfl_sync_bfly_f32(0xffffffffu, (v), (m), 0x1f)
#define TL_SHFL_XOR_I(v, m) __nvvm_shfl_sync_bfly_i32(0xffffffffu, (v), (m), 0x1f)
#endif

#define TL_WARP 32

// Math through PTX instructions, not libdevice (clang is run with -nocudalib, and the same
// numerics under nvcc keep the two builds identical). Accuracy: ex2.approx has ~2 ulp relative
// error, ample for softmax weights and activations.
static __device__ __forceinline__ float tl_exp2(float x) {
    float y;
    asm("{ ex2.approx.ftz.f32 %0, %1; }" : "=f"(y) : "f"(x));
    return y;
}
static __device__ __forceinline__ float tl_expf(float x) { return tl_exp2(x * 1.4426950408889634f); }
static __device__ __forceinline__ float tl_rcp(float x) {
    float y;
    asm("{ rcp.rn.f32 %0, %1; }" : "=f"(y) : "f"(x));
    return y;
}
// tanh(x) = sign(x) (1 - 2 / (exp(2|x|) + 1)); saturates cleanly for large |x|. Below |x| = 1/4
// that difference cancels to a few bits (soft-capping divides by c = 30 or 50, so small arguments
// are the common case), and the Taylor series through x^9 is exact to f32 instead.
static __device__ __forceinline__ float tl_tanhf(float x) {
    float a = x < 0.f ? -x : x;
    if (a < 0.25f) {
        float x2 = x * x;
        return x * (1.f + x2 * (-1.f / 3.f + x2 * (2.f / 15.f + x2 * (-17.f / 315.f + x2 * (62.f / 2835.f)))));
    }
    float t = 1.f - 2.f * tl_rcp(tl_expf(2.f * a) + 1.f);
    return x < 0.f ? -t : t;
}
static __device__ __forceinline__ float tl_sqrtf(float x) {
    float y;
    asm("{ sqrt.rn.f32 %0, %1; }" : "=f"(y) : "f"(x));
    return y;
}
static __device__ __forceinline__ float tl_rsqrtf(float x) { return tl_rcp(tl_sqrtf(x)); }
static __device__ __forceinline__ float tl_fmaxf(float a, float b) { return a > b ? a : b; }
static __device__ __forceinline__ float tl_fminf(float a, float b) { return a < b ? a : b; }

// Four 8-bit products summed into c, a's bytes unsigned (0..255) and b's signed (sm_61+; the
// backend requires sm_80).
static __device__ __forceinline__ int tl_dp4a_us(uint32_t a, uint32_t b, int c) {
    int d;
    asm("{ dp4a.u32.s32 %0, %1, %2, %3; }" : "=r"(d) : "r"(a), "r"(b), "r"(c));
    return d;
}
// Round to the nearest integer, ties to even.
static __device__ __forceinline__ int tl_f2i_rn(float x) {
    int i;
    asm("{ cvt.rni.s32.f32 %0, %1; }" : "=r"(i) : "f"(x));
    return i;
}

// Half and bfloat16 conversions through inline PTX (clang has no _Float16 on this target).
static __device__ __forceinline__ float tl_h2f(uint16_t h) {
    float f;
    asm("{ cvt.f32.f16 %0, %1; }" : "=f"(f) : "h"(h));
    return f;
}
static __device__ __forceinline__ uint16_t tl_f2h(float f) {
    uint16_t h;
    asm("{ cvt.rn.f16.f32 %0, %1; }" : "=h"(h) : "f"(f));
    return h;
}
static __device__ __forceinline__ float tl_bits_f32(uint32_t u) {
    union { uint32_t u; float f; } c;
    c.u = u;
    return c.f;
}
static __device__ __forceinline__ float tl_bf2f(uint16_t b) { return tl_bits_f32(((uint32_t)b) << 16); }

// Weight-vector element types (norm weights and biases), matching the host's `VecType` ids.
#define TL_VEC_F32 0
#define TL_VEC_F16 1
#define TL_VEC_BF16 2
// Element `i` of a norm / bias vector stored as F32, F16 or BF16 (a uniform switch).
static __device__ __forceinline__ float tl_vec_get(const void* v, int ty, int i) {
    if (ty == TL_VEC_F32) return ((const float*)v)[i];
    if (ty == TL_VEC_F16) return tl_h2f(((const uint16_t*)v)[i]);
    return tl_bf2f(((const uint16_t*)v)[i]);
}

// Sum and max over the 32 lanes of a warp (every lane gets the result).
static __device__ __forceinline__ float tl_warp_sum(float v) {
    for (int m = 16; m > 0; m >>= 1) v += TL_SHFL_XOR(v, m);
    return v;
}
static __device__ __forceinline__ float tl_warp_max(float v) {
    for (int m = 16; m > 0; m >>= 1) v = tl_fmaxf(v, TL_SHFL_XOR(v, m));
    return v;
}
