// embed.cu: embedding-row lookup. out[t * cols + c] = dequant(W[ids[t]])[c] * scale, with the CPU's
// exact float operations (quant.cuh Row8), so results equal the CPU backend's bit for bit.
//
// get_rows_<t>: grid (n_tok, ceil(cols / (8 * GR_THREADS))), GR_THREADS threads; each thread
// produces 8 consecutive columns of one token's row.
#include "quant.cuh"

#define GR_THREADS 256

template <class T>
static __device__ __forceinline__ void gr_body(const uint8_t* __restrict__ w,
                                               const uint32_t* __restrict__ ids,
                                               float* __restrict__ out, int cols, float scale,
                                               int n_tok) {
    const int t = blockIdx.x;
    const int c = (blockIdx.y * GR_THREADS + threadIdx.x) * 8;
    if (t >= n_tok || c >= cols) return;
    const tlq_sz row_bytes = (tlq_sz)(cols / T::QK) * T::BYTES;
    const uint8_t* row = w + (tlq_sz)ids[t] * row_bytes;
    float v[8];
    Row8<T>::row8(row, c, cols, v);
    float* o = out + (tlq_sz)t * cols + c;
    if (c + 8 <= cols && cols % 4 == 0 && ((unsigned long long)out & 15ull) == 0) {
        tlq_f4 a, b;
        a.x = tlq_mul(v[0], scale); a.y = tlq_mul(v[1], scale);
        a.z = tlq_mul(v[2], scale); a.w = tlq_mul(v[3], scale);
        b.x = tlq_mul(v[4], scale); b.y = tlq_mul(v[5], scale);
        b.z = tlq_mul(v[6], scale); b.w = tlq_mul(v[7], scale);
        *(tlq_f4*)o = a;
        *(tlq_f4*)(o + 4) = b;
    } else {
#pragma unroll
        for (int i = 0; i < 8; ++i)
            if (c + i < cols) o[i] = tlq_mul(v[i], scale);
    }
}

#define TL_GET_ROWS(name, T)                                                                      \
    extern "C" __global__ void TLQ_LAUNCH_BOUNDS(GR_THREADS)                                      \
        get_rows_##name(const uint8_t* __restrict__ w, const uint32_t* __restrict__ ids,          \
                        float* __restrict__ out, int cols, float scale, int n_tok) {              \
        tl_kernel_start();                                                                        \
        gr_body<T>(w, ids, out, cols, scale, n_tok);                                              \
    }

TL_GET_ROWS(f32, TF32)
TL_GET_ROWS(f16, TF16)
TL_GET_ROWS(bf16, TBF16)
TL_GET_ROWS(q4_0, TQ4_0)
TL_GET_ROWS(q4_1, TQ4_1)
TL_GET_ROWS(q5_0, TQ5_0)
TL_GET_ROWS(q5_1, TQ5_1)
TL_GET_ROWS(q8_0, TQ8_0)
TL_GET_ROWS(q2_k, TQ2_K)
TL_GET_ROWS(q3_k, TQ3_K)
TL_GET_ROWS(q4_k, TQ4_K)
TL_GET_ROWS(q5_k, TQ5_K)
TL_GET_ROWS(q6_k, TQ6_K)
