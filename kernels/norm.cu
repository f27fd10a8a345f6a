// norm.cu: RMSNorm / LayerNorm over rows, and projection biases.
//
// Same math as src/backend/cpu/norm.rs: LayerNorm is two-pass (mean, then the mean of squared
// deviations), RMSNorm uses the mean of squares; scale = 1 / sqrt(var + eps) (sqrt.rn then
// rcp.rn, both correctly rounded); y = (x - mean) * scale * (w + w_offset) [+ b]. Sums are f32,
// reduced as a tree (the CPU sums in f64; a tree keeps the f32 error at O(log n) ulp).
//
// Every thread writes only the elements it read itself, and all reads of a row finish before the
// last reduction of that row, so the in-place entry points (x == out) are race-free.
//
// Entry points:
//   norm_rows               one block per row (grid-stride over rows), any dim
//   norm_rows_warp          one warp per row (grid-stride over rows), for short rows
//   norm_rows_inplace       as norm_rows, x = norm(x), no bias
//   norm_rows_inplace_warp  as norm_rows_warp, x = norm(x), no bias (QK-norm over heads)
//   norm_rows_q8            as norm_rows for one row, and the row in Q8 form too (q8act.cuh)
//   norm_rows_warp_q8       as norm_rows_warp for one row, and the row in Q8 form too
//   norm_add_bias           x[r * cols + i] += b[i]
// blockDim.x must be a multiple of 32 (full warps: the shuffles use the full mask), at most 1024.

#include "prelude.cuh"
#include "q8act.cuh"

#define NORM_RMS 0
#define NORM_LAYER 1

// Sum over the whole block; every thread gets the same value. `sh` holds 32 floats.
static __device__ __forceinline__ float norm_block_sum(float v, float* sh) {
    v = tl_warp_sum(v);
    // The previous call may still be reading `sh`: wait before overwriting it.
    TL_SYNC();
    if ((threadIdx.x & 31) == 0) sh[threadIdx.x >> 5] = v;
    TL_SYNC();
    const int nw = blockDim.x >> 5;
    float t = 0.f;
    for (int i = 0; i < nw; i++) t += sh[i];
    return t;
}

struct NormBlockRed {
    float* sh;
    __device__ __forceinline__ float sum(float v) const { return norm_block_sum(v, sh); }
};

struct NormWarpRed {
    __device__ __forceinline__ float sum(float v) const { return tl_warp_sum(v); }
};

// Normalise one row of `dim` values; this thread handles elements i0, i0 + step, ...
// `bty < 0` means no bias. `out` may equal `x` (see the header). Q8: the outputs also go to `xq`
// in Q8 form, rounded from the very floats stored to `out`; that needs dim % 32 == 0 and
// step % 32 == 0 with i0 % 32 the lane, so that each pass of a warp holds 32 consecutive values
// (or none: the host checks dim % 32, which keeps whole warps in or out of the last pass).
//
// Latency, not bandwidth, bounds a decode norm (one row, one block: H100 timed the loop form at
// 9-12 us a launch, 15-20% of a 7B decode step). So a thread's NV values of x, of the weight and
// of the bias are all requested before the first reduction and kept in registers: one memory
// round trip a row instead of one per value and pass. Rows longer than NV * step take the loop
// (norm_row_loop). Both sum each thread's values in the same order and reduce them the same way.
template <int NV>
static __device__ __forceinline__ void norm_load_vec(float (&v)[NV], const void* p, int ty,
                                                     int i0, int step, int dim) {
    // The type test is hoisted out of the loop so that the NV loads issue back to back.
    if (ty == TL_VEC_F32) {
#pragma unroll
        for (int k = 0; k < NV; k++) {
            const int i = i0 + k * step;
            v[k] = i < dim ? ((const float*)p)[i] : 0.f;
        }
    } else if (ty == TL_VEC_F16) {
#pragma unroll
        for (int k = 0; k < NV; k++) {
            const int i = i0 + k * step;
            v[k] = i < dim ? tl_h2f(((const uint16_t*)p)[i]) : 0.f;
        }
    } else {
#pragma unroll
        for (int k = 0; k < NV; k++) {
            const int i = i0 + k * step;
            v[k] = i < dim ? tl_bf2f(((const uint16_t*)p)[i]) : 0.f;
        }
    }
}

template <class Red, bool Q8, int NV>
static __device__ __forceinline__ void norm_row_cached(const Red& red, const float* x, float* out,
                                                       int dim, int i0, int step, const void* w,
                                                       int wty, const void* b, int bty, int kind,
                                                       float eps, float w_off, uint8_t* xq) {
    float xv[NV], wv[NV], bv[NV];
    norm_load_vec<NV>(xv, x, TL_VEC_F32, i0, step, dim);
    norm_load_vec<NV>(wv, w, wty, i0, step, dim);
    if (bty >= 0) norm_load_vec<NV>(bv, b, bty, i0, step, dim);
    const float n = (float)dim;
    float mean = 0.f;
    float var;
    if (kind == NORM_LAYER) {
        float s = 0.f;
#pragma unroll
        for (int k = 0; k < NV; k++) {
            if (i0 + k * step < dim) s += xv[k];
        }
        mean = red.sum(s) / n;
        float v = 0.f;
#pragma unroll
        for (int k = 0; k < NV; k++) {
            const float d = xv[k] - mean;
            if (i0 + k * step < dim) v += d * d;
        }
        var = red.sum(v) / n;
    } else {
        float s = 0.f;
#pragma unroll
        for (int k = 0; k < NV; k++) {
            if (i0 + k * step < dim) s += xv[k] * xv[k];
        }
        var = red.sum(s) / n;
    }
    const float scale = tl_rsqrtf(var + eps);
#pragma unroll
    for (int k = 0; k < NV; k++) {
        const int i = i0 + k * step;
        if (i >= dim) break;
        float y = (xv[k] - mean) * scale * (wv[k] + w_off);
        if (bty >= 0) y += bv[k];
        out[i] = y;
        if (Q8) q8_store_group(y, i >> 5, i & 31, xq, dim);
    }
}

template <class Red, bool Q8>
static __device__ __forceinline__ void norm_row_loop(const Red& red, const float* x, float* out,
                                                     int dim, int i0, int step, const void* w,
                                                     int wty, const void* b, int bty, int kind,
                                                     float eps, float w_off, uint8_t* xq) {
    const float n = (float)dim;
    float mean = 0.f;
    float var;
    if (kind == NORM_LAYER) {
        float s = 0.f;
        for (int i = i0; i < dim; i += step) s += x[i];
        mean = red.sum(s) / n;
        float v = 0.f;
        for (int i = i0; i < dim; i += step) {
            const float d = x[i] - mean;
            v += d * d;
        }
        var = red.sum(v) / n;
    } else {
        float s = 0.f;
        for (int i = i0; i < dim; i += step) s += x[i] * x[i];
        var = red.sum(s) / n;
    }
    const float scale = tl_rsqrtf(var + eps);
    for (int i = i0; i < dim; i += step) {
        float y = (x[i] - mean) * scale * (tl_vec_get(w, wty, i) + w_off);
        if (bty >= 0) y += tl_vec_get(b, bty, i);
        out[i] = y;
        if (Q8) q8_store_group(y, i >> 5, i & 31, xq, dim);
    }
}

// Values per thread held in registers: a block row (the host gives about 8 values a thread,
// up to 1024 threads) and a warp row (dim <= 512: up to 16 a lane).
#define NORM_NV_BLOCK 8
#define NORM_NV_WARP 16

template <class Red, bool Q8, int NV>
static __device__ __forceinline__ void norm_row(const Red& red, const float* x, float* out,
                                                int dim, int i0, int step, const void* w, int wty,
                                                const void* b, int bty, int kind, float eps,
                                                float w_off, uint8_t* xq) {
    // Uniform over the block: every thread takes the same form, so the reductions pair up.
    if (dim <= NV * step) {
        norm_row_cached<Red, Q8, NV>(red, x, out, dim, i0, step, w, wty, b, bty, kind, eps,
                                     w_off, xq);
    } else {
        norm_row_loop<Red, Q8>(red, x, out, dim, i0, step, w, wty, b, bty, kind, eps, w_off, xq);
    }
}

#ifdef TL_HOST_EMU
#define NORM_LB
#else
// Up to 1024 threads a block (the host's launches): at most 64 registers a thread.
#define NORM_LB __attribute__((launch_bounds(1024)))
#endif

// One block per row; grid-stride over rows.
extern "C" __global__ void NORM_LB norm_rows(const float* x, float* out, const void* w, int wty,
                                             const void* b, int bty, int rows, int dim, int kind,
                                             float eps, float w_off) {
    tl_kernel_start();
    __shared__ float sh[32];
    const NormBlockRed red{sh};
    for (int r = blockIdx.x; r < rows; r += gridDim.x) {
        norm_row<NormBlockRed, false, NORM_NV_BLOCK>(red, x + r * dim, out + r * dim, dim,
                                                     threadIdx.x, blockDim.x, w, wty, b, bty,
                                                     kind, eps, w_off, nullptr);
    }
}

// One warp per row; grid-stride over rows (the row index is uniform within a warp).
extern "C" __global__ void NORM_LB norm_rows_warp(const float* x, float* out, const void* w,
                                                  int wty, const void* b, int bty, int rows,
                                                  int dim, int kind, float eps, float w_off) {
    tl_kernel_start();
    const NormWarpRed red{};
    const int wpb = blockDim.x >> 5;
    for (int r = blockIdx.x * wpb + (threadIdx.x >> 5); r < rows; r += gridDim.x * wpb) {
        norm_row<NormWarpRed, false, NORM_NV_WARP>(red, x + r * dim, out + r * dim, dim,
                                                   threadIdx.x & 31, 32, w, wty, b, bty, kind,
                                                   eps, w_off, nullptr);
    }
}

extern "C" __global__ void NORM_LB norm_rows_inplace(float* x, const void* w, int wty, int rows,
                                                     int dim, int kind, float eps, float w_off) {
    tl_kernel_start();
    __shared__ float sh[32];
    const NormBlockRed red{sh};
    for (int r = blockIdx.x; r < rows; r += gridDim.x) {
        norm_row<NormBlockRed, false, NORM_NV_BLOCK>(red, x + r * dim, x + r * dim, dim,
                                                     threadIdx.x, blockDim.x, w, wty, nullptr,
                                                     -1, kind, eps, w_off, nullptr);
    }
}

extern "C" __global__ void NORM_LB norm_rows_inplace_warp(float* x, const void* w, int wty,
                                                          int rows, int dim, int kind, float eps,
                                                          float w_off) {
    tl_kernel_start();
    const NormWarpRed red{};
    const int wpb = blockDim.x >> 5;
    for (int r = blockIdx.x * wpb + (threadIdx.x >> 5); r < rows; r += gridDim.x * wpb) {
        norm_row<NormWarpRed, false, NORM_NV_WARP>(red, x + r * dim, x + r * dim, dim,
                                                   threadIdx.x & 31, 32, w, wty, nullptr, -1,
                                                   kind, eps, w_off, nullptr);
    }
}

// One row (a decode step's: rows must be 1), normalised into `out` and in Q8 form into `xq`
// (dim % 32 == 0, dim int8 bytes then dim / 32 float pairs: quantize_q8's layout). One block; the
// same arithmetic as norm_rows / norm_rows_warp, so `out` holds the same floats. Their arguments,
// then xq.
extern "C" __global__ void NORM_LB norm_rows_q8(const float* x, float* out, const void* w,
                                                int wty, const void* b, int bty, int rows,
                                                int dim, int kind, float eps, float w_off,
                                                uint8_t* xq) {
    tl_kernel_start();
    __shared__ float sh[32];
    const NormBlockRed red{sh};
    norm_row<NormBlockRed, true, NORM_NV_BLOCK>(red, x, out, dim, threadIdx.x, blockDim.x, w,
                                                wty, b, bty, kind, eps, w_off, xq);
}

extern "C" __global__ void NORM_LB norm_rows_warp_q8(const float* x, float* out, const void* w,
                                                     int wty, const void* b, int bty, int rows,
                                                     int dim, int kind, float eps, float w_off,
                                                     uint8_t* xq) {
    tl_kernel_start();
    if (threadIdx.x >= 32) return;
    norm_row<NormWarpRed, true, NORM_NV_WARP>(NormWarpRed{}, x, out, dim, threadIdx.x, 32, w,
                                              wty, b, bty, kind, eps, w_off, xq);
}

// x[r * cols + i] += b[i] for `rows` rows; grid-stride over all rows * cols elements.
extern "C" __global__ void norm_add_bias(float* x, const void* b, int bty, int rows, int cols) {
    tl_kernel_start();
    const int n = rows * cols;
    for (int i = blockIdx.x * blockDim.x + threadIdx.x; i < n; i += gridDim.x * blockDim.x) {
        x[i] += tl_vec_get(b, bty, i % cols);
    }
}
