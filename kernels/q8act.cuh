// q8act.cuh: activations to Q8 form (q8dot.cuh's x format), one warp per 32 values. Shared by
// matmul.cu's `quantize_q8` and norm.cu's `norm_rows*_q8` (a decode norm that also writes its
// output in Q8 form for the int8 matvecs that read it, so no separate quantize launch runs):
// both round with this one function, so the fused path is bit for bit the separate one.
#pragma once
#include "prelude.cuh"
#include "q8dot.cuh"

// Lane L of a full warp holds v = x[32 g + L]: writes q = round(v / d) to xq[32 g + L] and, from
// lane 0, (d, d * sum q) to the float pair g after the `cols` quant bytes. Warp-collective.
static __device__ __forceinline__ void q8_store_group(float v, int g, int lane,
                                                      uint8_t* __restrict__ xq, int cols) {
    const float amax = tl_warp_max(v < 0.f ? -v : v);
    float d, id;
    tlq8_scale(amax, d, id);
    const int q = tlq8_quant(v, id);
    // |sum| <= 32 * 127: exact in f32.
    const float sum = tl_warp_sum((float)q);
    xq[32 * g + lane] = (uint8_t)(int8_t)q;
    if (lane == 0) {
        float* ds = (float*)(xq + cols);
        ds[2 * g] = d;
        ds[2 * g + 1] = d * sum;
    }
}

// Counts the row this warp just wrote (its output made visible device-wide first) in on its
// 32-row group; true in the warp that arrives last, which then owns the group: every row of it
// is written, and its later loads see them (tl_ld_cg). Warp-collective. The owner re-arms the
// counter (zero between launches).
static __device__ __forceinline__ bool q8_group_last(uint32_t* __restrict__ counters, int grp,
                                                     int lane) {
    float arrived = 0.f;
    if (lane == 0) {
        tl_fence_gpu();
        arrived = (float)tl_atomic_add_u32(counters + grp, 1u);
    }
    TL_SYNCWARP();
    if (tl_warp_max(arrived) != 31.f) return false;
    tl_fence_gpu();
    return true;
}

// The Q8 form of a row whose RMSNorm is still to be applied ("pending"): the rounded values are
// z = x * (w + w_off), and after quantize_q8's cols bytes and cols / 32 float pairs come cols / 32
// floats, each group's sum of x^2. Rounding is scale-free (a group's int8 values are the same for
// z and for z * s, its d scales with s), so the matvec that reads the form applies the norm's
// scale 1 / sqrt(mean(x^2) + eps) to its finished sums instead (q8_pending_scale). That lets the
// residual projection that writes x round it as it goes, group by group, without the norm's
// launch between them: the norm's scale needs the whole row, the rounding only 32 values.
static __device__ __forceinline__ float* q8_pending_sums(uint8_t* xq, int cols) {
    return (float*)(xq + cols + 8 * (cols / 32));
}

// Lane L of a full warp holds x[32 g + L] (the row's final values) and the norm weight's
// element: writes group g of the pending form (above). Warp-collective.
static __device__ __forceinline__ void q8_store_pending(float x, float w, int g, int lane,
                                                        uint8_t* __restrict__ xq, int cols) {
    q8_store_group(x * w, g, lane, xq, cols);
    const float ss = tl_warp_sum(x * x);
    if (lane == 0) q8_pending_sums(xq, cols)[g] = ss;
}

// The RMSNorm scale of x in pending form: 1 / sqrt(sum of the group sums / cols + eps), the
// group sums added lane-strided and then across the warp, so that every warp of every kernel
// gets the same value. Warp-collective.
static __device__ __forceinline__ float q8_pending_scale(const uint8_t* __restrict__ xq,
                                                         int cols, float eps, int lane) {
    const float* ss = q8_pending_sums((uint8_t*)xq, cols);
    float s = 0.f;
    for (int g = lane; g < cols / 32; g += 32) s += ss[g];
    return tl_rsqrtf(tl_warp_sum(s) / (float)cols + eps);
}
