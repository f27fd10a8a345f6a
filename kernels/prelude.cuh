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
#elif defined(TL_HOST_EMU)
// Plain C++ for the host CUDA emulator (tests/cuda_emu): threads are fibers, barriers and
// shuffles call its scheduler, and the PTX helpers below have host equivalents (exact, except
// that ex2.approx becomes exp2f).
#include "tl_emu.h"
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

#ifndef TL_HOST_EMU
// Warp-level barrier and memory fence (inline PTX: same text for nvcc and clang).
#define TL_SYNCWARP() asm volatile("bar.warp.sync 0xffffffff;" ::: "memory")
#endif

#define TL_WARP 32

// Device-wide ordering for the "last block merges" pattern (attention.cu): a fence that makes
// this thread's global writes visible to every block before its later writes (and orders its
// later reads after what it observed), an atomic add on a global counter returning the old
// value, and a global load that bypasses L1 (another block's writes, not a stale line).
static __device__ __forceinline__ void tl_fence_gpu() {
#ifdef TL_HOST_EMU
    __atomic_thread_fence(__ATOMIC_SEQ_CST);
#else
    asm volatile("fence.acq_rel.gpu;" ::: "memory");
#endif
}
static __device__ __forceinline__ uint32_t tl_atomic_add_u32(uint32_t* p, uint32_t v) {
#ifdef TL_HOST_EMU
    return __atomic_fetch_add(p, v, __ATOMIC_ACQ_REL);
#else
    uint32_t old;
    asm volatile("atom.acq_rel.gpu.global.add.u32 %0, [%1], %2;"
                 : "=r"(old)
                 : "l"(p), "r"(v)
                 : "memory");
    return old;
#endif
}
static __device__ __forceinline__ float tl_ld_cg(const float* p) {
#ifdef TL_HOST_EMU
    float v;
    __atomic_load(p, &v, __ATOMIC_RELAXED);
    return v;
#else
    float v;
    asm volatile("ld.global.cg.f32 %0, [%1];" : "=f"(v) : "l"(p) : "memory");
    return v;
#endif
}

// The first statement of every kernel (after, at most, tl_prefetch_l2 of its weights):
// programmatic dependent launch (Hopper and newer). With it
// the driver may start a kernel while the one before it in the stream is still finishing, so
// the launch latency and block scheduling overlap that kernel's tail instead of following it.
// - `griddepcontrol.wait` holds every thread until the grids it depends on have completed and
//   their writes are visible. Nothing before it touches global memory, so no kernel reads an
//   input early or overwrites one that its predecessor still reads.
// - `griddepcontrol.launch_dependents` then lets the next kernel launch once every block of this
//   one has got here: with a grid of several waves, when the last wave runs.
// Both need PTX ISA 7.8 for sm_90, and the kernels build for sm_80 at ISA 7.5 (clang 14's
// most), so the PTX carries them as the comments `// tl-pdl-wait` and `// tl-pdl-launch`. The
// backend turns those into the instructions, and the target into sm_90, when it loads the
// modules on a device that has them (src/backend/cuda/launch.rs). Without the launch attribute
// that allows it, both instructions do nothing. The "memory" clobber keeps the compiler from
// moving any memory access above them.
static __device__ __forceinline__ void tl_kernel_start() {
#ifndef TL_HOST_EMU
    asm volatile("// tl-pdl-wait" ::: "memory");
    asm volatile("// tl-pdl-launch" ::: "memory");
#endif
}

// The one thing a kernel may do before tl_kernel_start(): ask L2 for the weight bytes
// [p, p + n) it will read first, the warp's lanes one 128-byte line each in turn. With PDL a
// kernel's blocks may become resident while the kernel before it still runs (its tail, when its
// last blocks leave SMs idle), and there they only wait; fetched now, their first rows are in L2
// by the time the wait ends, so DRAM stays busy across the kernel boundary instead of idling
// through the tail and the next kernel's first round trip.
// - Safe before the wait: the weights are uploaded once and never written on the device, and a
//   prefetch into L2 returns no data to the thread (L2 is where device writes land anyway).
// - The PTX carries it as the comment `// tl-pdl-prefetch <address register>`, which the backend
//   turns into `prefetch.L2 [<register>]` together with the wait (src/backend/cuda/launch.rs),
//   so only devices with PDL run it, and `TORCHLESS_CUDA_PREFETCH=off` leaves it a comment.
// - On the host emulator each line's first byte in the range is read instead, so a range
//   outside the weights' allocation stops the test that launched it.
static __device__ __forceinline__ void tl_prefetch_l2(const uint8_t* p, unsigned long long n) {
    const unsigned long long lo = (unsigned long long)p, end = lo + n;
    for (unsigned long long a = (lo & ~127ull) + 128ull * (threadIdx.x & 31); a < end;
         a += 32ull * 128ull) {
#ifdef TL_HOST_EMU
        const volatile uint8_t* q = (const volatile uint8_t*)(a < lo ? lo : a);
        (void)*q;
#else
        asm volatile("// tl-pdl-prefetch %0" ::"l"(a));
#endif
    }
}

// Math through PTX instructions, not libdevice (clang is run with -nocudalib, and the same
// numerics under nvcc keep the two builds identical). Accuracy: ex2.approx has ~2 ulp relative
// error, ample for softmax weights and activations.
static __device__ __forceinline__ float tl_exp2(float x) {
#ifdef TL_HOST_EMU
    return exp2f(x);
#else
    float y;
    asm("{ ex2.approx.ftz.f32 %0, %1; }" : "=f"(y) : "f"(x));
    return y;
#endif
}
static __device__ __forceinline__ float tl_expf(float x) { return tl_exp2(x * 1.4426950408889634f); }
static __device__ __forceinline__ float tl_rcp(float x) {
#ifdef TL_HOST_EMU
    return 1.0f / x;
#else
    float y;
    asm("{ rcp.rn.f32 %0, %1; }" : "=f"(y) : "f"(x));
    return y;
#endif
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
#ifdef TL_HOST_EMU
    return sqrtf(x);
#else
    float y;
    asm("{ sqrt.rn.f32 %0, %1; }" : "=f"(y) : "f"(x));
    return y;
#endif
}
static __device__ __forceinline__ float tl_rsqrtf(float x) { return tl_rcp(tl_sqrtf(x)); }
static __device__ __forceinline__ float tl_fmaxf(float a, float b) { return a > b ? a : b; }
static __device__ __forceinline__ float tl_fminf(float a, float b) { return a < b ? a : b; }

// Four 8-bit products summed into c, a's bytes unsigned (0..255) and b's signed (sm_61+; the
// backend requires sm_80).
static __device__ __forceinline__ int tl_dp4a_us(uint32_t a, uint32_t b, int c) {
#ifdef TL_HOST_EMU
    for (int k = 0; k < 4; ++k) c += (int)((a >> (8 * k)) & 0xFF) * (int)(int8_t)(b >> (8 * k));
    return c;
#else
    int d;
    asm("{ dp4a.u32.s32 %0, %1, %2, %3; }" : "=r"(d) : "r"(a), "r"(b), "r"(c));
    return d;
#endif
}
// The same with both operands' bytes signed.
static __device__ __forceinline__ int tl_dp4a_ss(uint32_t a, uint32_t b, int c) {
#ifdef TL_HOST_EMU
    for (int k = 0; k < 4; ++k) c += (int)(int8_t)(a >> (8 * k)) * (int)(int8_t)(b >> (8 * k));
    return c;
#else
    int d;
    asm("{ dp4a.s32.s32 %0, %1, %2, %3; }" : "=r"(d) : "r"(a), "r"(b), "r"(c));
    return d;
#endif
}

// Loads through the read-only data path (kept in L1): data no thread of the kernel writes. The
// int8 matvecs read weights and x in Q8 form with them (kernels/q8dot.cuh); the lanes that share
// a weight block read neighbouring bytes of the same sectors, so the second read hits L1.
struct __attribute__((aligned(16))) tl_u4 {
    uint32_t x, y, z, w;
};
// 16 bytes at a 16-aligned address.
static __device__ __forceinline__ tl_u4 tl_ldnc16(const uint8_t* p) {
    tl_u4 v;
#ifdef TL_HOST_EMU
    memcpy(&v, p, 16);
#else
    asm volatile("ld.global.nc.v4.u32 {%0, %1, %2, %3}, [%4];"
                 : "=r"(v.x), "=r"(v.y), "=r"(v.z), "=r"(v.w)
                 : "l"(p));
#endif
    return v;
}
// 8 bytes at an 8-aligned address, as two words.
static __device__ __forceinline__ void tl_ldnc8(const uint8_t* p, uint32_t& a, uint32_t& b) {
#ifdef TL_HOST_EMU
    memcpy(&a, p, 4);
    memcpy(&b, p + 4, 4);
#else
    asm volatile("ld.global.nc.v2.u32 {%0, %1}, [%2];" : "=r"(a), "=r"(b) : "l"(p));
#endif
}
// A word at a 4-aligned address.
static __device__ __forceinline__ uint32_t tl_ldnc4(const uint8_t* p) {
    uint32_t v;
#ifdef TL_HOST_EMU
    memcpy(&v, p, 4);
#else
    asm volatile("ld.global.nc.u32 %0, [%1];" : "=r"(v) : "l"(p));
#endif
    return v;
}
// A half-word at a 2-aligned address, zero-extended.
static __device__ __forceinline__ uint32_t tl_ldnc2(const uint8_t* p) {
#ifdef TL_HOST_EMU
    uint16_t h;
    memcpy(&h, p, 2);
    return h;
#else
    uint16_t h;
    asm volatile("ld.global.nc.u16 %0, [%1];" : "=h"(h) : "l"(p));
    return h;
#endif
}

// Round to the nearest integer, ties to even.
static __device__ __forceinline__ int tl_f2i_rn(float x) {
#ifdef TL_HOST_EMU
    return (int)nearbyintf(x);  // ties to even (the default rounding mode)
#else
    int i;
    asm("{ cvt.rni.s32.f32 %0, %1; }" : "=r"(i) : "f"(x));
    return i;
#endif
}

// Half and bfloat16 conversions through inline PTX (clang has no _Float16 on this target).
static __device__ __forceinline__ float tl_h2f(uint16_t h) {
#ifdef TL_HOST_EMU
    _Float16 f;
    memcpy(&f, &h, 2);
    return (float)f;
#else
    float f;
    asm("{ cvt.f32.f16 %0, %1; }" : "=f"(f) : "h"(h));
    return f;
#endif
}
static __device__ __forceinline__ uint16_t tl_f2h(float f) {
#ifdef TL_HOST_EMU
    _Float16 r = (_Float16)f;  // round to nearest even, as cvt.rn
    uint16_t h;
    memcpy(&h, &r, 2);
    return h;
#else
    uint16_t h;
    asm("{ cvt.rn.f16.f32 %0, %1; }" : "=h"(h) : "f"(f));
    return h;
#endif
}
static __device__ __forceinline__ float tl_bits_f32(uint32_t u) {
    union { uint32_t u; float f; } c;
    c.u = u;
    return c.f;
}
static __device__ __forceinline__ float tl_bf2f(uint16_t b) { return tl_bits_f32(((uint32_t)b) << 16); }

// Two floats rounded to bfloat16 (nearest, ties to even) in one word: `lo` in bits 0-15, `hi`
// in bits 16-31, the order the tensor-core fragments take consecutive K values in.
static __device__ __forceinline__ uint32_t tl_pack_bf16x2(float lo, float hi) {
#ifdef TL_HOST_EMU
    const auto rn = [](float f) -> uint32_t {
        uint32_t u;
        memcpy(&u, &f, 4);
        if ((u & 0x7fffffffu) > 0x7f800000u) return (u >> 16) | 0x40u;  // NaN stays NaN
        return (u + 0x7fffu + ((u >> 16) & 1u)) >> 16;
    };
    return rn(lo) | (rn(hi) << 16);
#else
    uint32_t d;
    // cvt.rn.bf16x2.f32 d, a, b puts a in the upper half and b in the lower one.
    asm("{ cvt.rn.bf16x2.f32 %0, %1, %2; }" : "=r"(d) : "f"(hi), "f"(lo));
    return d;
#endif
}

// One warp-wide tensor-core product (sm_80+): c += A B for a 16 x 16 bfloat16 A (row-major),
// a 16 x 8 bfloat16 B and a 16 x 8 f32 accumulator, in the mma.m16n8k16 fragment layout. With
// g = lane / 4 and t = lane % 4 (each word two consecutive K values, the lower K in bits 0-15):
// a[0] = A[g][2t, 2t+1], a[1] = A[g+8][2t, 2t+1], a[2] = A[g][2t+8, 2t+9], a[3] = A[g+8][..];
// b[0] = B[2t, 2t+1][g], b[1] = B[2t+8, 2t+9][g]; c[0], c[1] = C[g][2t, 2t+1], c[2], c[3] =
// C[g+8][2t, 2t+1]. Every lane of the warp must execute it.
static __device__ __forceinline__ void tl_mma_bf16_16816(float* c, const uint32_t* a,
                                                         const uint32_t* b) {
#ifdef TL_HOST_EMU
    tlemu_mma_bf16_16816(c, a, b);
#else
    asm("mma.sync.aligned.m16n8k16.row.col.f32.bf16.bf16.f32 {%0, %1, %2, %3}, {%4, %5, %6, %7}, "
        "{%8, %9}, {%0, %1, %2, %3};"
        : "+f"(c[0]), "+f"(c[1]), "+f"(c[2]), "+f"(c[3])
        : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b[0]), "r"(b[1]));
#endif
}

// ldmatrix.sync.aligned.m8n8.x4.shared.b16: four 8 x 8 matrices of 16-bit values from shared
// memory in one instruction. Lane 8 j + i gives the (16-byte aligned) address of row i of matrix
// j; every lane l gets in r[j] the word l % 4 of row l / 4 of matrix j, i.e. the mma fragment
// layout above (sm_75+). Every lane of the warp must execute it.
static __device__ __forceinline__ void tl_ldmatrix_x4(uint32_t* r, const uint32_t* row) {
#ifdef TL_HOST_EMU
    tlemu_ldmatrix_x4(r, row);
#else
    // A 32-bit shared-window address keeps the address arithmetic 32-bit.
    uint32_t s;
    asm("{ .reg .u64 t; cvta.to.shared.u64 t, %1; cvt.u32.u64 %0, t; }" : "=r"(s) : "l"(row));
    asm volatile("ldmatrix.sync.aligned.m8n8.x4.shared.b16 {%0, %1, %2, %3}, [%4];"
                 : "=r"(r[0]), "=r"(r[1]), "=r"(r[2]), "=r"(r[3])
                 : "r"(s)
                 : "memory");
#endif
}

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
#ifdef TL_HOST_EMU
static inline float tl_warp_sum(float v) { return tlemu_warp_sum_f32(v); }
static inline float tl_warp_max(float v) { return tlemu_warp_max_f32(v); }
#else
static __device__ __forceinline__ float tl_warp_sum(float v) {
    for (int m = 16; m > 0; m >>= 1) v += TL_SHFL_XOR(v, m);
    return v;
}
static __device__ __forceinline__ float tl_warp_max(float v) {
    for (int m = 16; m > 0; m >>= 1) v = tl_fmaxf(v, TL_SHFL_XOR(v, m));
    return v;
}
#endif
