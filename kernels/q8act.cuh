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
