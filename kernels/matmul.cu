// matmul.cu: y[t * rows + r] = sum_c W[r][c] * x[t * cols + c] (or y += that, when the kernels'
// last argument `add` is set: the residual add fused in) for ggml weight types, fused with the
// dequantization (weights stay in their file layout; block decoding in quant.cuh).
//
// matvec_<t> (few tokens; the decode path): memory bound. MV_WARPS warps per block, grid-stride
//   over rows. Two row loops:
//   - Layout C (Q4_0, Q4_1, Q5_0, Q5_1, Q8_0, Q4_K, Q5_K, Q6_K when cols % 128 == 0 and the
//     buffers are aligned, i.e. always for model weights): lane L takes columns 128m + 4L .. +4 of
//     every 128-column chunk m, so each 16-byte x load of the warp covers 512 contiguous bytes
//     (the x traffic through L1, not the weights, is what limits a 4-bit matvec otherwise). A warp
//     works on R rows at once (each x load feeds R rows) and requests a whole step of blocks
//     before using any; Q4_K / Q5_K share the per-sub-block scale decoding through a small
//     per-warp shared-memory table instead of every lane decoding the 6-bit scales. Tokens go in
//     passes of up to MAXNT per type.
//   - Unit layout (F32 / F16 / BF16, Q2_K, Q3_K, and the fallback of the others for unaligned
//     buffers or cols % 128 != 0): lane L takes units L, L + 32, ... of its row (a unit is 8-32
//     consecutive-ish weights of one block), decodes each once and dots it with every token's x.
//   Per-lane sums are reduced with warp shuffles.
// matvec_glu_<t> (decode, gated feed-forward blocks): the gate and up projections and the GLU in
//   one launch, through the layout-C loop with gate row r and up row r as a warp's two rows.
// matmul_<t> (prefill): 64 rows x 64 tokens per block of 256 threads, K in steps of 32. Each step
//   dequantizes the 64 x 32 weight tile (exact decoder, 8 values per thread) and the 64 x 32 x tile
//   into shared memory (k-major); each thread accumulates a 4 x 4 register tile. The next step's
//   global loads are issued before the current step's arithmetic.
// matmul_mma_<t> (prefill, quantized types): the same tiles and loads, rounded to bfloat16 in
//   shared memory and multiplied on the tensor cores (mma.m16n8k16, f32 accumulators); the
//   weights decoded with wide loads (quant.cuh's Fast8) where the base is aligned.
#include "act.cuh"
#include "quant.cuh"
#include "q8dot.cuh"
#include "q8act.cuh"
#include "rope.cuh"

#ifndef MV_WARPS
#define MV_WARPS 4
#endif
// Tokens per pass over the weights (register budget: each lane keeps MV_MAX_TOK sums and its
// decoded unit live); more tokens take further passes, which re-read the weights mostly from L2.
#ifndef MV_MAX_TOK
#define MV_MAX_TOK 4
#endif
#define MV_LB TLQ_LAUNCH_BOUNDS(MV_WARPS * 32)

// One output: y = s, or y += s when `add` (the residual add fused into the projection that
// feeds it; the same single f32 addition the separate add kernel would do). Each output has one
// writer, so the read-modify-write is race-free.
static __device__ __forceinline__ void mv_store(float* y, float s, int add) {
    *y = add ? *y + s : s;
}

// One row per warp; NT tokens. AL: see quant.cuh (also says x is 16-byte aligned).
template <class M, int NT, bool AL>
static __device__ __forceinline__ void mv_rows(const uint8_t* __restrict__ w,
                                               const float* __restrict__ x, float* __restrict__ y,
                                               int rows, int cols, int add) {
    const int lane = threadIdx.x & 31;
    const int nb = cols / M::QK;
    const int nunits = nb * M::UPB;
    const tlq_sz row_bytes = (tlq_sz)nb * M::BYTES;
    for (int r = blockIdx.x * MV_WARPS + (threadIdx.x >> 5); r < rows; r += gridDim.x * MV_WARPS) {
        const uint8_t* wr = w + (tlq_sz)r * row_bytes;
        float acc[NT];
#pragma unroll
        for (int t = 0; t < NT; ++t) acc[t] = 0.f;
#pragma unroll 1
        for (int u = lane; u < nunits; u += 32) {
            const int bi = u / M::UPB, sub = u % M::UPB;
            float v[M::NSEG * M::SEGL];
            M::template decode<AL>(wr + (tlq_sz)bi * M::BYTES, sub, v);
            const float* xb = x + (tlq_sz)bi * M::QK;
#pragma unroll
            for (int t = 0; t < NT; ++t) {
                const float* xt = xb + (tlq_sz)t * cols;
                float p0 = 0.f, p1 = 0.f, p2 = 0.f, p3 = 0.f;
#pragma unroll
                for (int s = 0; s < M::NSEG; ++s) {
                    const float* xs = xt + M::seg_off(sub, s);
                    const float* vs = v + s * M::SEGL;
                    if (AL && M::SEGL % 4 == 0) {
#pragma unroll
                        for (int i = 0; i < M::SEGL; i += 4) {
                            const tlq_f4 xv = *(const tlq_f4*)(xs + i);
                            p0 += vs[i] * xv.x;
                            p1 += vs[i + 1] * xv.y;
                            p2 += vs[i + 2] * xv.z;
                            p3 += vs[i + 3] * xv.w;
                        }
                    } else {
#pragma unroll
                        for (int i = 0; i < M::SEGL; ++i) p0 += vs[i] * xs[i];
                    }
                }
                acc[t] += (p0 + p1) + (p2 + p3);
            }
        }
#pragma unroll
        for (int t = 0; t < NT; ++t) {
            const float s = tl_warp_sum(acc[t]);
            if (lane == t) mv_store(y + (tlq_sz)t * rows + r, s, add);
        }
    }
}

// Token groups of up to MV_MAX_TOK on the wide-load path; the fallback path (unaligned buffers
// or odd float widths, never the hot path) takes one token per pass to keep the code small.
template <class M, bool AL>
static __device__ __forceinline__ void mv_dispatch(const uint8_t* __restrict__ w,
                                                   const float* __restrict__ x,
                                                   float* __restrict__ y, int rows, int cols,
                                                   int n_tok, int add) {
    const int step = AL ? MV_MAX_TOK : 1;
    for (int t0 = 0; t0 < n_tok; t0 += step) {
        const int nt = n_tok - t0 < step ? n_tok - t0 : step;
        const float* xt = x + (tlq_sz)t0 * cols;
        float* yt = y + (tlq_sz)t0 * rows;
        if (!AL || nt == 1) mv_rows<M, 1, AL>(w, xt, yt, rows, cols, add);
#if MV_MAX_TOK >= 2
        else if (nt == 2) mv_rows<M, 2, AL>(w, xt, yt, rows, cols, add);
#endif
#if MV_MAX_TOK >= 3
        else if (nt == 3) mv_rows<M, 3, AL>(w, xt, yt, rows, cols, add);
#endif
#if MV_MAX_TOK >= 4
        else if (nt == 4) mv_rows<M, 4, AL>(w, xt, yt, rows, cols, add);
#endif
#if MV_MAX_TOK >= 5
        else if (nt == 5) mv_rows<M, 5, AL>(w, xt, yt, rows, cols, add);
        else if (nt == 6) mv_rows<M, 6, AL>(w, xt, yt, rows, cols, add);
        else if (nt == 7) mv_rows<M, 7, AL>(w, xt, yt, rows, cols, add);
        else if (nt == 8) mv_rows<M, 8, AL>(w, xt, yt, rows, cols, add);
#endif
    }
}

// Unit layout, one token per pass (fallback for unaligned buffers / odd widths).
template <class M, bool AL>
static __device__ __forceinline__ void mv_dispatch1(const uint8_t* __restrict__ w,
                                                    const float* __restrict__ x,
                                                    float* __restrict__ y, int rows, int cols,
                                                    int n_tok, int add) {
    for (int t = 0; t < n_tok; ++t)
        mv_rows<M, 1, AL>(w, x + (tlq_sz)t * cols, y + (tlq_sz)t * rows, rows, cols, add);
}

static __device__ __forceinline__ bool mv_aligned(const void* p, unsigned a) {
    return ((unsigned long long)p & (unsigned long long)(a - 1)) == 0;
}

// Weight prefetch before the wait (tl_prefetch_l2): the rows a warp of a decode matvec reads
// first. Rows r0 .. r0 + nr - 1 of a matrix of `rows` rows, none past its end.
static __device__ __forceinline__ void mv_prefetch_rows(const uint8_t* w, int rows, int r0, int nr,
                                                        tlq_sz row_bytes) {
    if (r0 >= rows) return;
    const int r1 = rows - r0 < nr ? rows : r0 + nr;
    tl_prefetch_l2(w + (tlq_sz)r0 * row_bytes, (tlq_sz)(r1 - r0) * row_bytes);
}
// This warp's first group of R rows when the groups of up to three matrices of one width follow
// one another, one group per warp, grid-strided (mc_rows, mq8_matvec3; a single matrix has
// rows1 = rows2 = 0, and its groups start at warp * R).
static __device__ __forceinline__ void mv_prefetch_first(const uint8_t* w0, int rows0,
                                                         const uint8_t* w1, int rows1,
                                                         const uint8_t* w2, int rows2, int R,
                                                         tlq_sz row_bytes) {
    int g = blockIdx.x * MV_WARPS + (threadIdx.x >> 5);
    const int g0 = (rows0 + R - 1) / R, g1 = (rows1 + R - 1) / R;
    if (g < g0) {
        mv_prefetch_rows(w0, rows0, g * R, R, row_bytes);
    } else if ((g -= g0) < g1) {
        mv_prefetch_rows(w1, rows1, g * R, R, row_bytes);
    } else {
        mv_prefetch_rows(w2, rows2, (g - g1) * R, R, row_bytes);
    }
}
// This warp's first row of a gated pair (mc_glu_rows, mq8_glu): row r of gate and of up.
static __device__ __forceinline__ void mv_prefetch_pair(const uint8_t* wg, const uint8_t* wu,
                                                        int rows, tlq_sz row_bytes) {
    const int r = blockIdx.x * MV_WARPS + (threadIdx.x >> 5);
    mv_prefetch_rows(wg, rows, r, 1, row_bytes);
    mv_prefetch_rows(wu, rows, r, 1, row_bytes);
}

// Quantized types: the wide-load path when the weight base has the type's block alignment and x
// is 16-byte aligned (always so for fresh device allocations); half-word loads otherwise.
#define TL_MATVEC_Q(name, M)                                                                      \
    extern "C" __global__ void MV_LB                                                              \
        matvec_##name(const uint8_t* __restrict__ w, const float* __restrict__ x,                 \
                      float* __restrict__ y, int rows, int cols, int n_tok, int add) {            \
        mv_prefetch_first(w, rows, w, 0, w, 0, 1, (tlq_sz)(cols / M::QK) * M::BYTES);            \
        tl_kernel_start();                                                                        \
        if (mv_aligned(w, M::ALIGN) && mv_aligned(x, 16))                                         \
            mv_dispatch<M, true>(w, x, y, rows, cols, n_tok, add);                                \
        else                                                                                      \
            mv_dispatch<M, false>(w, x, y, rows, cols, n_tok, add);                               \
    }

// Float types: 8 values per lane unit with 16-byte loads when cols % 8 == 0 and both bases are
// 16-byte aligned; one value per unit otherwise (any cols).
#define TL_MATVEC_F(name, MV, MS)                                                                 \
    extern "C" __global__ void MV_LB                                                              \
        matvec_##name(const uint8_t* __restrict__ w, const float* __restrict__ x,                 \
                      float* __restrict__ y, int rows, int cols, int n_tok, int add) {            \
        mv_prefetch_first(w, rows, w, 0, w, 0, 1, (tlq_sz)cols * MS::BYTES);                     \
        tl_kernel_start();                                                                        \
        if (cols % 8 == 0 && mv_aligned(w, 16) && mv_aligned(x, 16))                              \
            mv_dispatch<MV, true>(w, x, y, rows, cols, n_tok, add);                               \
        else if (mv_aligned(w, MS::ALIGN))                                                        \
            mv_dispatch<MS, true>(w, x, y, rows, cols, n_tok, add);                               \
        else                                                                                      \
            mv_dispatch<MS, false>(w, x, y, rows, cols, n_tok, add);                              \
    }

TL_MATVEC_F(f32, MvF32V, MvF32S)
TL_MATVEC_F(f16, MvHalfV<false>, MvHalfS<false>)
TL_MATVEC_F(bf16, MvHalfV<true>, MvHalfS<true>)
TL_MATVEC_Q(q2_k, MvQ2_K)
TL_MATVEC_Q(q3_k, MvQ3_K)

// ---------------------------------------------------------------------------------------------
// Layout C matvec (quant.cuh): lane L takes columns 128m + 4L .. +4 of each 128-column chunk m.
// A matvec is bound by how many weight bytes each SM keeps in flight, by instruction issue and
// by registers (occupancy), so per type: each warp works on R rows at once (every 16-byte x load
// then feeds R rows), takes up to MAXNT tokens per pass over the weights, and every row loop
// requests a whole step of blocks before it uses any of them. The values below were picked by
// measurement on an H100 (65536 x 4096 matrices; see the report in the commit that added them).
// ---------------------------------------------------------------------------------------------
// Blocks (or 128-column chunks) requested per step, summed over the R rows.
#ifndef MC_Q4K_CH
#define MC_Q4K_CH 8
#endif
#ifndef MC_Q5K_CH
#define MC_Q5K_CH 8
#endif
#ifndef MC_Q6K_STEP
#define MC_Q6K_STEP 8
#endif
#ifndef MC_32_STEP
#define MC_32_STEP 16
#endif

// acc[r][t] += v[r] . x[t][col .. col + 4] for R rows and NT tokens (one 16-byte x load per token).
template <int NT, int R>
static __device__ __forceinline__ void mc_dot4(const float (*v)[4], const float* __restrict__ x,
                                               int cols, int col, float (*acc)[NT]) {
#pragma unroll
    for (int t = 0; t < NT; ++t) {
        const tlq_f4 xv = *(const tlq_f4*)(x + (tlq_sz)t * cols + col);
#pragma unroll
        for (int r = 0; r < R; ++r) {
            acc[r][t] += v[r][0] * xv.x;
            acc[r][t] += v[r][1] * xv.y;
            acc[r][t] += v[r][2] * xv.z;
            acc[r][t] += v[r][3] * xv.w;
        }
    }
}

// 32-value blocks: chunk m holds blocks 4m .. 4m + 3; lane L reads block 4m + L / 8 at column
// offset 4 (L % 8). MC_32_STEP / R chunks per step, all loads issued before the arithmetic.
template <class C>
struct McRow32 {
    enum { TAB = 1, R = 2, MAXNT = 4 };
    template <int NT, int R>
    static __device__ __forceinline__ void row(const uint8_t* const* wr, const float* __restrict__ x,
                                               int cols, int lane, float (*acc)[NT], tlq_f4*) {
        enum { S = MC_32_STEP / R };
        const int nch = cols >> 7;
        const int c = 4 * (lane & 7), bl = lane >> 3;
        int m = 0;
        for (; m + S <= nch; m += S) {
            float v[S][R][4];
#pragma unroll
            for (int k = 0; k < S; ++k)
#pragma unroll
                for (int r = 0; r < R; ++r)
                    C::decode4(wr[r] + (tlq_sz)(4 * (m + k) + bl) * C::BYTES, c, v[k][r]);
#pragma unroll
            for (int k = 0; k < S; ++k) mc_dot4<NT, R>(v[k], x, cols, 128 * (m + k) + 4 * lane, acc);
        }
        for (; m < nch; ++m) {
            float v[R][4];
#pragma unroll
            for (int r = 0; r < R; ++r) C::decode4(wr[r] + (tlq_sz)(4 * m + bl) * C::BYTES, c, v[r]);
            mc_dot4<NT, R>(v, x, cols, 128 * m + 4 * lane, acc);
        }
    }
};

// Q4_K / Q5_K. Lane L handles columns 4L .. 4L + 4 (piece a) and 128 + 4L .. (piece b) of each
// super-block: qs bytes 32 (L / 16) + 4 (L % 8) .. +4 (piece b: +64), nibble (L / 8) & 1, i.e.
// sub-blocks q = L / 8 and q + 4. The per-sub-block FMA constants are computed once per block by
// a few lanes (not by all 32) into a per-warp table of CB blocks x 4 float4
// {A_q, B_q, A_q+4, B_q+4} per row, which the lanes then read with one broadcast 16-byte load.
template <bool Q5>
struct McRowQ45K {
    enum { CH = Q5 ? MC_Q5K_CH : MC_Q4K_CH, TAB = 4 * CH, BYTES = Q5 ? 176 : 144, QS = Q5 ? 48 : 16 };
    enum { R = 2, MAXNT = 2 };

    // Quants of block b for this lane (qh only for Q5_K).
    static __device__ __forceinline__ void fetch(const uint8_t* blk, int qoff, int hoff,
                                                 uint32_t& qa, uint32_t& qb, uint32_t& qh) {
        qa = tlq_ldw4(blk + qoff);
        qb = tlq_ldw4(blk + qoff + 64);
        qh = Q5 ? tlq_ldw4(blk + hoff) : 0u;
    }
    // The table entries {A_p, B_p, A_p+4, B_p+4} of one block from its 16-byte header.
    static __device__ __forceinline__ tlq_f4 entry(const tlq_u4 hd, int p) {
        const float d = tl_h2f((uint16_t)(hd.x & 0xFFFFu));
        const float dmin = tl_h2f((uint16_t)(hd.x >> 16));
        const int sh = 8 * p;
        // Byte p of each scale word; see tlq_scale_min_k4.
        const uint32_t t0 = hd.y >> sh, t1 = hd.z >> sh, t2 = hd.w >> sh;
        const uint32_t sca = t0 & 63u, ma = t1 & 63u;
        const uint32_t scb = (t2 & 0xFu) | ((t0 >> 2) & 0x30u);
        const uint32_t mb = ((t2 >> 4) & 0xFu) | ((t1 >> 2) & 0x30u);
        const tlq_ab ca = tlq_coef(d * (float)(int)sca, 0.f, -(dmin * (float)(int)ma));
        const tlq_ab cb = tlq_coef(d * (float)(int)scb, 0.f, -(dmin * (float)(int)mb));
        tlq_f4 e;
        e.x = ca.a; e.y = ca.b; e.z = cb.a; e.w = cb.b;
        return e;
    }
    // The 8 values of this lane in one block.
    static __device__ __forceinline__ void decode(int q, int s4, const tlq_f4 cf, uint32_t qa,
                                                  uint32_t qb, uint32_t qh, float* va, float* vb) {
        uint32_t wa = (qa >> s4) & 0x0F0F0F0Fu, wb = (qb >> s4) & 0x0F0F0F0Fu;
        if (Q5) {
            wa |= ((qh >> q) & 0x01010101u) << 4;
            wb |= ((qh >> (q + 4)) & 0x01010101u) << 4;
        }
        tlq_ab ka, kb;
        ka.a = cf.x; ka.b = cf.y; kb.a = cf.z; kb.b = cf.w;
        tlq_put4(va, wa, ka);
        tlq_put4(vb, wb, kb);
    }
    // CB blocks starting at b0 of each of the R rows; FULL: all CB exist (no per-block checks).
    template <int NT, int R, int CB, bool FULL>
    static __device__ __forceinline__ void step(const uint8_t* const* wr, const float* __restrict__ x,
                                                int cols, int lane, float (*acc)[NT], tlq_f4* tab,
                                                int b0, int nblk) {
        const int q = lane >> 3;
        const int s4 = 4 * (q & 1);
        const int qoff = QS + 32 * (lane >> 4) + 4 * (lane & 7);
        const int hoff = 16 + 4 * (lane & 7);
        // Table filling: LPB lanes per (row, block), each computing 4 / LPB entries.
        enum { LPB = 32 / (CB * R) };
        const int tr = lane / (CB * LPB), tb = (lane / LPB) % CB, tp = (lane % LPB) * (4 / LPB);
        // One memory round trip per step: headers and every lane's quants are all requested
        // before any of them is used.
        tlq_u4 hd;
        hd.x = hd.y = hd.z = hd.w = 0u;
        const bool tv = FULL || tb < nblk;
        const uint8_t* wt = wr[0];
#pragma unroll
        for (int r = 1; r < R; ++r) wt = tr == r ? wr[r] : wt;  // no run-time register indexing
        if (tv) hd = tlq_ldw16(wt + (tlq_sz)(b0 + tb) * BYTES);
        uint32_t qa[R][CB], qb[R][CB], qh[R][CB];
#pragma unroll
        for (int u = 0; u < CB; ++u)
#pragma unroll
            for (int r = 0; r < R; ++r) {
                qa[r][u] = qb[r][u] = qh[r][u] = 0u;
                if (FULL || u < nblk)
                    fetch(wr[r] + (tlq_sz)(b0 + u) * BYTES, qoff, hoff, qa[r][u], qb[r][u], qh[r][u]);
            }
        if (tv) {
#pragma unroll
            for (int pp = 0; pp < 4 / LPB; ++pp) tab[(tr * CB + tb) * 4 + tp + pp] = entry(hd, tp + pp);
        }
        TL_SYNCWARP();
#pragma unroll
        for (int u = 0; u < CB; ++u) {
            if (FULL || u < nblk) {
                float va[R][4], vb[R][4];
#pragma unroll
                for (int r = 0; r < R; ++r)
                    decode(q, s4, tab[(r * CB + u) * 4 + q], qa[r][u], qb[r][u], qh[r][u], va[r], vb[r]);
                const int col = 256 * (b0 + u) + 4 * lane;
                mc_dot4<NT, R>(va, x, cols, col, acc);
                mc_dot4<NT, R>(vb, x, cols, col + 128, acc);
            }
        }
        TL_SYNCWARP();
    }
    template <int NT, int R>
    static __device__ __forceinline__ void row(const uint8_t* const* wr, const float* __restrict__ x,
                                               int cols, int lane, float (*acc)[NT], tlq_f4* tab) {
        enum { CB = CH / R };
        const int nb = cols >> 8;
        int b0 = 0;
        for (; b0 + CB <= nb; b0 += CB) step<NT, R, CB, true>(wr, x, cols, lane, acc, tab, b0, CB);
        if (b0 < nb) step<NT, R, CB, false>(wr, x, cols, lane, acc, tab, b0, nb - b0);
    }
};

// Q6_K (210-byte blocks, only 2-aligned: half-word loads). Lane L: k = L / 8, l0 = 4 (L % 8); for
// each half h, columns 128h + 4L .. +4 = elements 128h + 32k + l0 + i: ql bytes
// 64h + 32 (k & 1) + l0 (nibble k / 2), qh bytes 128 + 32h + l0 (bits 2k, 2k + 1), scale
// 192 + 8h + 2k + l0 / 16.
struct McRowQ6K {
    enum { TAB = 1, BYTES = 210, R = 1, MAXNT = 2 };
    struct Raw {
        uint32_t dh, ql[2], qh[2], sc[2];
    };
    static __device__ __forceinline__ void fetch(const uint8_t* blk, int qlo, int l0, int sco,
                                                 Raw& w) {
        w.dh = tlq_h(blk + 208);
#pragma unroll
        for (int h = 0; h < 2; ++h) {
            w.ql[h] = tlq_w2(blk + 64 * h + qlo);
            w.qh[h] = tlq_w2(blk + 128 + 32 * h + l0);
            w.sc[h] = tlq_b(blk + sco + 8 * h);
        }
    }
    template <int NT, int R>
    static __device__ __forceinline__ void block(const float* __restrict__ x, int cols, int lane,
                                                 int ns, int hs, int b, const Raw* w,
                                                 float (*acc)[NT]) {
#pragma unroll
        for (int h = 0; h < 2; ++h) {
            float v[R][4];
#pragma unroll
            for (int r = 0; r < R; ++r) {
                const float d = tl_h2f((uint16_t)w[r].dh);
                const uint32_t u =
                    ((w[r].ql[h] >> ns) & 0x0F0F0F0Fu) | (((w[r].qh[h] >> hs) & 0x03030303u) << 4);
                tlq_put4(v[r], u, tlq_coef(d * (float)(int)(int8_t)w[r].sc[h], 32.f, 0.f));
            }
            mc_dot4<NT, R>(v, x, cols, 256 * b + 128 * h + 4 * lane, acc);
        }
    }
    template <int NT, int R>
    static __device__ __forceinline__ void row(const uint8_t* const* wr, const float* __restrict__ x,
                                               int cols, int lane, float (*acc)[NT], tlq_f4*) {
        enum { S = MC_Q6K_STEP / R };
        const int nb = cols >> 8;
        const int k = lane >> 3, l0 = 4 * (lane & 7);
        const int qlo = 32 * (k & 1) + l0, ns = 4 * (k >> 1), hs = 2 * k;
        const int sco = 192 + 2 * k + (l0 >> 4);
        int b = 0;
        for (; b + S <= nb; b += S) {
            Raw w[S][R];
#pragma unroll
            for (int u = 0; u < S; ++u)
#pragma unroll
                for (int r = 0; r < R; ++r) fetch(wr[r] + (tlq_sz)(b + u) * BYTES, qlo, l0, sco, w[u][r]);
#pragma unroll
            for (int u = 0; u < S; ++u) block<NT, R>(x, cols, lane, ns, hs, b + u, w[u], acc);
        }
        for (; b < nb; ++b) {
            Raw w[R];
#pragma unroll
            for (int r = 0; r < R; ++r) fetch(wr[r] + (tlq_sz)b * BYTES, qlo, l0, sco, w[r]);
            block<NT, R>(x, cols, lane, ns, hs, b, w, acc);
        }
    }
};

// One matrix of a layout-C launch: its rows, and y for the current token pass.
struct McSeg {
    const uint8_t* w;
    float* y;
    int rows;
};

// Rows r0 .. r0 + C::R of one matrix for one warp (a missing last row re-reads row r0 and is not
// written).
template <class C, int NT>
static __device__ __forceinline__ void mc_group(const uint8_t* __restrict__ w,
                                                const float* __restrict__ x, float* __restrict__ y,
                                                int rows, int r0, int cols, tlq_sz row_bytes,
                                                tlq_f4* tab, int add) {
    const int lane = threadIdx.x & 31;
    enum { R = C::R };
    const uint8_t* wr[R];
    float acc[R][NT];
#pragma unroll
    for (int r = 0; r < R; ++r) {
        wr[r] = w + (tlq_sz)(r0 + r < rows ? r0 + r : r0) * row_bytes;
#pragma unroll
        for (int t = 0; t < NT; ++t) acc[r][t] = 0.f;
    }
    C::template row<NT, R>(wr, x, cols, lane, acc, tab);
#pragma unroll
    for (int r = 0; r < R; ++r) {
#pragma unroll
        for (int t = 0; t < NT; ++t) {
            const float s = tl_warp_sum(acc[r][t]);
            if (lane == t && r0 + r < rows) mv_store(y + (tlq_sz)t * rows + r0 + r, s, add);
        }
    }
}

// Every row group of S matrices of one width, one after another (S = 3: Q, K and V in one
// launch), grid-strided over the warps. A group never spans two matrices, so each row's sum is
// the one-matrix launch's bit for bit (a row's sum does not depend on the row beside it). One
// matrix keeps the plain row loop (the same machine code as before segments existed).
template <class C, int NT, int S>
static __device__ __forceinline__ void mc_rows(const McSeg* seg, const float* __restrict__ x,
                                               int cols, tlq_sz row_bytes, tlq_f4* tab, int add) {
    enum { R = C::R };
    const int warp = blockIdx.x * MV_WARPS + (threadIdx.x >> 5);
    if (S == 1) {
        for (int r0 = warp * R; r0 < seg[0].rows; r0 += gridDim.x * MV_WARPS * R)
            mc_group<C, NT>(seg[0].w, x, seg[0].y, seg[0].rows, r0, cols, row_bytes, tab, add);
        return;
    }
    int groups = 0;
#pragma unroll
    for (int s = 0; s < S; ++s) groups += (seg[s].rows + R - 1) / R;
    for (int g = warp; g < groups; g += gridDim.x * MV_WARPS) {
        // Warp-uniform: the matrix of row group g, and the group within it.
        int s = 0, gl = g;
#pragma unroll
        for (int i = 1; i < S; ++i) {
            const int prev = (seg[s].rows + R - 1) / R;
            if (gl >= prev) {
                gl -= prev;
                s = i;
            }
        }
        mc_group<C, NT>(seg[s].w, x, seg[s].y, seg[s].rows, gl * R, cols, row_bytes, tab, add);
    }
}

template <class C, int S>
static __device__ __forceinline__ void mc_dispatch(const McSeg* seg, const float* __restrict__ x,
                                                   int cols, int n_tok, tlq_sz row_bytes, int add) {
    __shared__ tlq_f4 tab[MV_WARPS * C::TAB];
    tlq_f4* wtab = tab + (threadIdx.x >> 5) * C::TAB;
    static_assert(C::MAXNT >= 1 && C::MAXNT <= 4, "MAXNT in 1..4");
    for (int t0 = 0; t0 < n_tok; t0 += C::MAXNT) {
        const int nt = n_tok - t0 < C::MAXNT ? n_tok - t0 : C::MAXNT;
        const float* xt = x + (tlq_sz)t0 * cols;
        McSeg st[S];
#pragma unroll
        for (int s = 0; s < S; ++s) {
            st[s] = seg[s];
            st[s].y += (tlq_sz)t0 * seg[s].rows;
        }
        // Branches above MAXNT are dead (nt <= MAXNT) and compile away.
        if (nt == 1 || C::MAXNT < 2) mc_rows<C, 1, S>(st, xt, cols, row_bytes, wtab, add);
        else if (nt == 2 || C::MAXNT < 3) mc_rows<C, (C::MAXNT < 2 ? 1 : 2), S>(st, xt, cols, row_bytes, wtab, add);
        else if (nt == 3 || C::MAXNT < 4) mc_rows<C, (C::MAXNT < 3 ? 1 : 3), S>(st, xt, cols, row_bytes, wtab, add);
        else mc_rows<C, (C::MAXNT < 4 ? 1 : 4), S>(st, xt, cols, row_bytes, wtab, add);
    }
}

// Layout C when the columns split into 128-column chunks and the bases are aligned (always so
// for model weights in fresh allocations); otherwise the unit layout above, one token per pass.
#define TL_MATVEC_C(name, C, M, QKV, BYTESV, ALIGNV)                                             \
    extern "C" __global__ void MV_LB matvec_##name(const uint8_t* __restrict__ w,                 \
                                                   const float* __restrict__ x,                   \
                                                   float* __restrict__ y, int rows, int cols,     \
                                                   int n_tok, int add) {                          \
        const tlq_sz row_bytes = (tlq_sz)(cols / (QKV)) * (BYTESV);                               \
        const bool lc = cols % 128 == 0 && mv_aligned(w, ALIGNV) && mv_aligned(x, 16);            \
        /* layout C takes C::R rows per warp, the unit-layout fallback one */                     \
        mv_prefetch_first(w, rows, w, 0, w, 0, lc ? C::R : 1, row_bytes);                         \
        tl_kernel_start();                                                                        \
        if (lc) {                                                                                 \
            const McSeg seg[1] = {{w, y, rows}};                                                  \
            mc_dispatch<C, 1>(seg, x, cols, n_tok, row_bytes, add);                               \
        } else if (mv_aligned(w, M::ALIGN) && mv_aligned(x, 16))                                    \
            mv_dispatch1<M, true>(w, x, y, rows, cols, n_tok, add);                               \
        else                                                                                      \
            mv_dispatch1<M, false>(w, x, y, rows, cols, n_tok, add);                              \
    }

TL_MATVEC_C(q4_0, McRow32<McQ4_0>, MvQ4_0, 32, 18, 2)
TL_MATVEC_C(q4_1, McRow32<McQ4_1>, MvQ4_1, 32, 20, 4)
TL_MATVEC_C(q5_0, McRow32<McQ5_0>, MvQ5_0, 32, 22, 2)
TL_MATVEC_C(q5_1, McRow32<McQ5_1>, MvQ5_1, 32, 24, 8)
TL_MATVEC_C(q8_0, McRow32<McQ8_0>, MvQ8_0, 32, 34, 2)
TL_MATVEC_C(q4_k, McRowQ45K<false>, MvQ4_K, 256, 144, 16)
TL_MATVEC_C(q5_k, McRowQ45K<true>, MvQ5_K, 256, 176, 16)
TL_MATVEC_C(q6_k, McRowQ6K, MvQ6_K, 256, 210, 2)

// Up to three matrices of one type and width over one input in one launch (Q, K and V):
// y_s[t * rows_s + r] = W_s[r] . x[t] for each s, unused ones with rows_s = 0. Layout C only:
// the host launches it where matvec_<t> takes that loop (cols % 128 == 0, aligned buffers).
#define TL_MATVEC3(name, C, QKV, BYTESV)                                                          \
    extern "C" __global__ void MV_LB matvec3_##name(                                             \
        const uint8_t* __restrict__ w0, float* __restrict__ y0, int rows0,                        \
        const uint8_t* __restrict__ w1, float* __restrict__ y1, int rows1,                        \
        const uint8_t* __restrict__ w2, float* __restrict__ y2, int rows2,                        \
        const float* __restrict__ x, int cols, int n_tok) {                                       \
        const tlq_sz row_bytes = (tlq_sz)(cols / (QKV)) * (BYTESV);                               \
        mv_prefetch_first(w0, rows0, w1, rows1, w2, rows2, C::R, row_bytes);                      \
        tl_kernel_start();                                                                        \
        const McSeg seg[3] = {{w0, y0, rows0}, {w1, y1, rows1}, {w2, y2, rows2}};                 \
        mc_dispatch<C, 3>(seg, x, cols, n_tok, row_bytes, 0);                                     \
    }

// The layout-C types whose row loop works on two rows at once (C::R == 2): name, row loop,
// values and bytes per block. Q6_K's loop takes one row.
#define TL_ROW_PAIR_TYPES(X)                                                                      \
    X(q4_0, McRow32<McQ4_0>, 32, 18)                                                              \
    X(q4_1, McRow32<McQ4_1>, 32, 20)                                                              \
    X(q5_0, McRow32<McQ5_0>, 32, 22)                                                              \
    X(q5_1, McRow32<McQ5_1>, 32, 24)                                                              \
    X(q8_0, McRow32<McQ8_0>, 32, 34)                                                              \
    X(q4_k, McRowQ45K<false>, 256, 144)                                                           \
    X(q5_k, McRowQ45K<true>, 256, 176)

TL_ROW_PAIR_TYPES(TL_MATVEC3)
TL_MATVEC3(q6_k, McRowQ6K, 256, 210)

// ---------------------------------------------------------------------------------------------
// Gated feed-forward matvec: y[t * rows + r] = act(gate_r . x_t) * (up_r . x_t) in one launch
// (the two projections and act_glu otherwise). A warp takes gate row r and up row r as the layout-C
// loop's R = 2 rows, so each sum is accumulated and reduced exactly as matvec_<t> does it (a row's
// sum does not depend on the row beside it) and the product is act_glu's: bit for bit the
// unfused result. Only the types whose layout-C loop works on two rows (C::R == 2) have one; the
// host launches it only where matvec_<t> would take the layout-C loop (cols % 128 == 0, aligned).
// ---------------------------------------------------------------------------------------------

template <class C, int NT>
static __device__ __forceinline__ void mc_glu_rows(const uint8_t* __restrict__ wg,
                                                   const uint8_t* __restrict__ wu,
                                                   const float* __restrict__ x,
                                                   float* __restrict__ y, int rows, int cols,
                                                   tlq_sz row_bytes, tlq_f4* tab, int act) {
    static_assert(C::R == 2, "the gated matvec pairs gate and up as the loop's two rows");
    const int lane = threadIdx.x & 31;
    for (int r = blockIdx.x * MV_WARPS + (threadIdx.x >> 5); r < rows;
         r += gridDim.x * MV_WARPS) {
        const uint8_t* wr[2] = {wg + (tlq_sz)r * row_bytes, wu + (tlq_sz)r * row_bytes};
        float acc[2][NT];
#pragma unroll
        for (int i = 0; i < 2; ++i)
#pragma unroll
            for (int t = 0; t < NT; ++t) acc[i][t] = 0.f;
        C::template row<NT, 2>(wr, x, cols, lane, acc, tab);
#pragma unroll
        for (int t = 0; t < NT; ++t) {
            const float g = tl_warp_sum(acc[0][t]);
            const float u = tl_warp_sum(acc[1][t]);
            if (lane == t) y[(tlq_sz)t * rows + r] = act_apply(act, g) * u;
        }
    }
}

#define TL_MATVEC_GLU(name, C, QKV, BYTESV)                                                       \
    extern "C" __global__ void MV_LB matvec_glu_##name(                                          \
        const uint8_t* __restrict__ wg, const uint8_t* __restrict__ wu,                           \
        const float* __restrict__ x, float* __restrict__ y, int rows, int cols, int n_tok,        \
        int act) {                                                                                \
        const tlq_sz row_bytes = (tlq_sz)(cols / (QKV)) * (BYTESV);                               \
        mv_prefetch_pair(wg, wu, rows, row_bytes);                                                \
        tl_kernel_start();                                                                        \
        __shared__ tlq_f4 tab[MV_WARPS * C::TAB];                                                 \
        tlq_f4* wtab = tab + (threadIdx.x >> 5) * C::TAB;                                         \
        for (int t0 = 0; t0 < n_tok; t0 += C::MAXNT) {                                            \
            const int nt = n_tok - t0 < C::MAXNT ? n_tok - t0 : C::MAXNT;                         \
            const float* xt = x + (tlq_sz)t0 * cols;                                              \
            float* yt = y + (tlq_sz)t0 * rows;                                                    \
            if (nt == 1) mc_glu_rows<C, 1>(wg, wu, xt, yt, rows, cols, row_bytes, wtab, act);     \
            else if (nt == 2 || C::MAXNT < 3)                                                     \
                mc_glu_rows<C, (C::MAXNT < 2 ? 1 : 2)>(wg, wu, xt, yt, rows, cols, row_bytes,     \
                                                       wtab, act);                                \
            else if (nt == 3 || C::MAXNT < 4)                                                     \
                mc_glu_rows<C, (C::MAXNT < 3 ? 1 : 3)>(wg, wu, xt, yt, rows, cols, row_bytes,     \
                                                       wtab, act);                                \
            else                                                                                  \
                mc_glu_rows<C, (C::MAXNT < 4 ? 1 : 4)>(wg, wu, xt, yt, rows, cols, row_bytes,     \
                                                       wtab, act);                                \
        }                                                                                         \
    }

TL_ROW_PAIR_TYPES(TL_MATVEC_GLU)

// ---------------------------------------------------------------------------------------------
// Integer matvec (q8dot.cuh): x rounded to int8 once, then dp4a against the weight nibbles.
// ---------------------------------------------------------------------------------------------

// x (cols floats, cols % 32 == 0) to Q8 form at xq: cols int8 values, then cols / 32 float pairs
// (d, d * sum q) at xq + cols. One warp per 32 values, grid-stride over them.
extern "C" __global__ void MV_LB quantize_q8(const float* __restrict__ x, uint8_t* __restrict__ xq,
                                             int cols) {
    tl_kernel_start();
    const int lane = threadIdx.x & 31;
    for (int g = blockIdx.x * MV_WARPS + (threadIdx.x >> 5); g < cols / 32;
         g += gridDim.x * MV_WARPS)
        q8_store_group(x[32 * g + lane], g, lane, xq, cols);
}

// One pass of mq8_rows: STEPS warp steps from block b0, their loads issued before the first
// dot; blocks past nb are skipped. Every pass checks, the full ones too: with the check ptxas
// keeps a pass's weight loads together ahead of its dots, and without it, it sank the second
// step's loads below the first step's dots (tools/sass-rounds.py: matvec_q8_q4_k waited on DRAM
// twice a 4096-column row instead of once).
template <class T, int R, int STEPS>
static __device__ __forceinline__ void mq8_pass(const uint8_t* const* wr,
                                                const uint8_t* __restrict__ xq, int cols, int nb,
                                                int b0, int bsel, int p, float* acc) {
    enum { BPS = 32 / T::LANES };
    typename T::W w[STEPS][R];
#pragma unroll
    for (int u = 0; u < STEPS; ++u) {
        const int blk = b0 + BPS * u + bsel;
        if (blk < nb) {
#pragma unroll
            for (int i = 0; i < R; ++i) w[u][i] = T::load(wr[i] + (tlq_sz)blk * T::BYTES, p);
        }
    }
#pragma unroll
    for (int u = 0; u < STEPS; ++u) {
        const int blk = b0 + BPS * u + bsel;
        if (blk < nb) {
#pragma unroll
            for (int i = 0; i < R; ++i) acc[i] += T::dot(w[u][i], xq, cols, blk, p);
        }
    }
}

// Row loop of the int8 matvecs: acc[i] += W_i . x for the R rows wr[i] of type T (q8dot.cuh;
// cols whole blocks, bases aligned as T's loads need: fresh allocations are) against x in Q8
// form (quantize_q8 of the same cols). A warp step takes 32 / T::LANES blocks of each row, lane
// LANES b + p taking part p of block b; a pass issues T::STEPS / R steps' loads before any is
// used. Each lane adds its blocks to acc[i] in increasing block order whatever R is, so a row's
// sum does not depend on the rows beside it (the gated kernel's results are the plain kernel's
// bit for bit).
template <class T, int R>
static __device__ __forceinline__ void mq8_rows(const uint8_t* const* wr,
                                                const uint8_t* __restrict__ xq, int cols,
                                                int lane, float* acc) {
    enum { BPS = 32 / T::LANES, STEPS = T::STEPS / R > 1 ? T::STEPS / R : 1 };
    const int bsel = lane / T::LANES, p = lane % T::LANES;
    const int nb = cols / T::QK;
    for (int b0 = 0; b0 < nb; b0 += BPS * STEPS)
        mq8_pass<T, R, STEPS>(wr, xq, cols, nb, b0, bsel, p, acc);
}

// y_s[r] (+)= W_s[r] . x for one token and up to three matrices s of type T and one width (the
// projections of one input: Q, K and V in one launch; unused ones have rows_s = 0), x in Q8
// form. One warp per row, the rows of the three matrices one after another. `eps` >= 0: x is in
// pending-RMSNorm form (q8act.cuh) and every sum takes the norm's scale before it is stored.
// With `zq` (one matrix, rows0 % 32 == 0, `counters` one zero per 32 rows): the residual
// projection folds the next RMSNorm in, writing y0 (after the add) to zq in pending form with
// the norm weight `nw` (its element type `nwty`, plus `w_off`); each 32-row group by the warp
// that finishes it last, as mq8_glu does.
template <class T>
static __device__ __forceinline__ void mq8_matvec3(
    const uint8_t* __restrict__ w0, float* __restrict__ y0, int rows0,
    const uint8_t* __restrict__ w1, float* __restrict__ y1, int rows1,
    const uint8_t* __restrict__ w2, float* __restrict__ y2, int rows2,
    const uint8_t* __restrict__ xq, int cols, int add, float eps, const void* __restrict__ nw,
    int nwty, float w_off, uint8_t* __restrict__ zq, uint32_t* __restrict__ counters) {
    const int lane = threadIdx.x & 31;
    const tlq_sz row_bytes = (tlq_sz)(cols / T::QK) * T::BYTES;
    const int rows = rows0 + rows1 + rows2;
    for (int r = blockIdx.x * MV_WARPS + (threadIdx.x >> 5); r < rows; r += gridDim.x * MV_WARPS) {
        // Warp-uniform: which matrix row r belongs to.
        const uint8_t* w = w0;
        float* y = y0;
        int rr = r;
        if (rr >= rows0) {
            rr -= rows0;
            w = w1;
            y = y1;
            if (rr >= rows1) {
                rr -= rows1;
                w = w2;
                y = y2;
            }
        }
        const uint8_t* wr[1] = {w + (tlq_sz)rr * row_bytes};
        float acc[1] = {0.f};
        mq8_rows<T, 1>(wr, xq, cols, lane, acc);
        float s = tl_warp_sum(acc[0]);
        // x's norm scale, after the row's weights are in (a warp has one row or few).
        if (eps >= 0.f) s *= q8_pending_scale(xq, cols, eps, lane);
        if (lane == 0) mv_store(y + rr, s, add);
        if (zq != nullptr) {
            const int grp = rr >> 5;
            if (q8_group_last(counters, grp, lane)) {
                const int i = 32 * grp + lane;
                q8_store_pending(tl_ld_cg(y0 + i), tl_vec_get(nw, nwty, i) + w_off, grp, lane,
                                 zq, rows0);
                if (lane == 0) counters[grp] = 0u;
            }
        }
    }
}

// y[r] = act(gate_r . x) * (up_r . x) for one token, gate and up of type T (one shape), x in Q8
// form: mq8_matvec3's sums for both rows (bit for bit, see mq8_rows; `eps` as there) and
// act_glu's product, in one launch. One warp per row pair. With `yq` (rows % 32 == 0,
// `counters` one zero per 32 rows), y also goes to yq in Q8 form for the down projection: each
// warp counts its row in on its 32-row group after making y[r] visible device-wide, and the warp
// that arrives last rounds the group (quantize_q8's arithmetic on the same floats) and re-arms
// the counter.
template <class T>
static __device__ __forceinline__ void mq8_glu(const uint8_t* __restrict__ wg,
                                               const uint8_t* __restrict__ wu,
                                               const uint8_t* __restrict__ xq,
                                               float* __restrict__ y, int rows, int cols, int act,
                                               uint8_t* __restrict__ yq,
                                               uint32_t* __restrict__ counters, float eps) {
    const int lane = threadIdx.x & 31;
    const tlq_sz row_bytes = (tlq_sz)(cols / T::QK) * T::BYTES;
    for (int r = blockIdx.x * MV_WARPS + (threadIdx.x >> 5); r < rows; r += gridDim.x * MV_WARPS) {
        const uint8_t* wr[2] = {wg + (tlq_sz)r * row_bytes, wu + (tlq_sz)r * row_bytes};
        float acc[2] = {0.f, 0.f};
        mq8_rows<T, 2>(wr, xq, cols, lane, acc);
        float g = tl_warp_sum(acc[0]);
        float u = tl_warp_sum(acc[1]);
        if (eps >= 0.f) {
            const float scale = q8_pending_scale(xq, cols, eps, lane);
            g *= scale;
            u *= scale;
        }
        if (lane == 0) y[r] = act_apply(act, g) * u;
        if (yq != nullptr) {
            const int grp = r >> 5;
            if (q8_group_last(counters, grp, lane)) {
                q8_store_group(tl_ld_cg(y + 32 * grp + lane), grp, lane, yq, rows);
                if (lane == 0) counters[grp] = 0u;
            }
        }
    }
}

// Where unit u of mq8_qkv_rope goes: the matrix (0 Q, 1 K, 2 V), its rows a and b, and, for a
// RoPE pair, the pair's index i in its head (else -1). Each head of Q and K is head_dim / 2 units:
// first its n_rot / 2 RoPE pairs (rope_pair's two elements), then its unrotated dims two by two;
// then V's rows two by two.
struct QkvUnit {
    int m, a, b, i;
};
static __device__ __forceinline__ QkvUnit qkv_unit(int u, int hq, int head_dim, int n_rot,
                                                   int layout, int nqk) {
    QkvUnit t;
    if (u >= nqk) {
        t.m = 2;
        t.a = 2 * (u - nqk);
        t.b = t.a + 1;
        t.i = -1;
        return t;
    }
    const int hp = head_dim / 2, half = n_rot / 2;
    const int nq = hq * hp;
    t.m = u < nq ? 0 : 1;
    const int j = u < nq ? u : u - nq;
    const int base = (j / hp) * head_dim, e = j % hp;
    if (e < half) {
        rope_pair(layout, e, half, t.a, t.b);
        t.i = e;
    } else {
        t.a = n_rot + 2 * (e - half);
        t.b = t.a + 1;
        t.i = -1;
    }
    t.a += base;
    t.b += base;
    return t;
}

// Q, K and V of one decode token, RoPE on Q and K, and K and V into the cache, in one launch:
// what mq8_matvec3 on (Q, K, V) and attn_rope_kv_store do, with the same sums (mq8_rows' per-lane
// order does not depend on the rows beside a row), the same rotation (rope.cuh, (cos, sin) from
// `cs`) and the same f16 rounding, bit for bit. A warp takes two rows at once, the two elements
// of a RoPE pair (or two unrotated ones, or two of V), so it rotates the pair itself: no row has
// to wait for another warp's. Q: hq heads, K: hk heads, both head_dim wide (even), V: vw rows
// (even); x in Q8 form (`eps` as in mq8_matvec3); the caches' row `pos` (pos0, or *pos_dev when
// not null) gets K's kw = hk * head_dim and V's vw values.
template <class T>
static __device__ __forceinline__ void mq8_qkv_rope(
    const uint8_t* __restrict__ wq, float* __restrict__ q, const uint8_t* __restrict__ wk,
    float* __restrict__ k, const uint8_t* __restrict__ wv, float* __restrict__ v,
    const uint8_t* __restrict__ xq, int cols, float eps, const float* __restrict__ cs,
    uint16_t* __restrict__ kc, uint16_t* __restrict__ vc, int pos0, const int* __restrict__ pos_dev,
    int hq, int hk, int head_dim, int n_rot, int layout, int vw) {
    const int lane = threadIdx.x & 31;
    const tlq_sz row_bytes = (tlq_sz)(cols / T::QK) * T::BYTES;
    const int nqk = (hq + hk) * (head_dim / 2);
    const int units = nqk + vw / 2;
    const int kw = hk * head_dim;
    for (int u = blockIdx.x * MV_WARPS + (threadIdx.x >> 5); u < units; u += gridDim.x * MV_WARPS) {
        const QkvUnit t = qkv_unit(u, hq, head_dim, n_rot, layout, nqk);
        const uint8_t* w = t.m == 0 ? wq : t.m == 1 ? wk : wv;
        float* y = t.m == 0 ? q : t.m == 1 ? k : v;
        const uint8_t* wr[2] = {w + (tlq_sz)t.a * row_bytes, w + (tlq_sz)t.b * row_bytes};
        float acc[2] = {0.f, 0.f};
        mq8_rows<T, 2>(wr, xq, cols, lane, acc);
        float ya = tl_warp_sum(acc[0]);
        float yb = tl_warp_sum(acc[1]);
        if (eps >= 0.f) {
            const float scale = q8_pending_scale(xq, cols, eps, lane);
            ya *= scale;
            yb *= scale;
        }
        if (t.i >= 0) {
            float r0, r1;
            rope_rotate_pair(ya, yb, cs[2 * t.i], cs[2 * t.i + 1], r0, r1);
            ya = r0;
            yb = r1;
        }
        if (lane == 0) {
            y[t.a] = ya;
            y[t.b] = yb;
            if (t.m != 0) {
                const int pos = pos_dev != nullptr ? *pos_dev : pos0;
                uint16_t* c = t.m == 1 ? kc + pos * kw : vc + pos * vw;
                c[t.a] = tl_f2h(ya);
                c[t.b] = tl_f2h(yb);
            }
        }
    }
}

// This warp's first unit of mq8_qkv_rope: its two rows.
static __device__ __forceinline__ void mv_prefetch_qkv(const uint8_t* wq, const uint8_t* wk,
                                                       const uint8_t* wv, int hq, int hk,
                                                       int head_dim, int n_rot, int layout,
                                                       int vw, tlq_sz row_bytes) {
    const int u = blockIdx.x * MV_WARPS + (threadIdx.x >> 5);
    const int nqk = (hq + hk) * (head_dim / 2);
    if (u >= nqk + vw / 2) return;
    const QkvUnit t = qkv_unit(u, hq, head_dim, n_rot, layout, nqk);
    const uint8_t* w = t.m == 0 ? wq : t.m == 1 ? wk : wv;
    tl_prefetch_l2(w + (tlq_sz)t.a * row_bytes, row_bytes);
    tl_prefetch_l2(w + (tlq_sz)t.b * row_bytes, row_bytes);
}

// The int8 entry points of one type: `matvec_q8_<t>` (up to three matrices),
// `matvec_glu_q8_<t>` and `matvec_qkv_rope_q8_<t>` (mq8_qkv_rope). `eps` < 0: x is plain Q8
// form; else pending-RMSNorm form (see mq8_matvec3). matvec_q8's last five arguments fold the
// next RMSNorm in (zq null: none).
#define TL_MATVEC_Q8(name, T)                                                                     \
    extern "C" __global__ void MV_LB matvec_q8_##name(                                            \
        const uint8_t* __restrict__ w0, float* __restrict__ y0, int rows0,                        \
        const uint8_t* __restrict__ w1, float* __restrict__ y1, int rows1,                        \
        const uint8_t* __restrict__ w2, float* __restrict__ y2, int rows2,                        \
        const uint8_t* __restrict__ xq, int cols, int add, float eps,                             \
        const void* __restrict__ nw, int nwty, float w_off, uint8_t* __restrict__ zq,             \
        uint32_t* __restrict__ counters) {                                                        \
        mv_prefetch_first(w0, rows0, w1, rows1, w2, rows2, 1, (tlq_sz)(cols / T::QK) * T::BYTES); \
        tl_kernel_start();                                                                        \
        mq8_matvec3<T>(w0, y0, rows0, w1, y1, rows1, w2, y2, rows2, xq, cols, add, eps, nw, nwty, \
                       w_off, zq, counters);                                                      \
    }                                                                                             \
    extern "C" __global__ void MV_LB matvec_glu_q8_##name(                                        \
        const uint8_t* __restrict__ wg, const uint8_t* __restrict__ wu,                           \
        const uint8_t* __restrict__ xq, float* __restrict__ y, int rows, int cols, int act,       \
        uint8_t* __restrict__ yq, uint32_t* __restrict__ counters, float eps) {                   \
        mv_prefetch_pair(wg, wu, rows, (tlq_sz)(cols / T::QK) * T::BYTES);                        \
        tl_kernel_start();                                                                        \
        mq8_glu<T>(wg, wu, xq, y, rows, cols, act, yq, counters, eps);                            \
    }                                                                                             \
    extern "C" __global__ void MV_LB matvec_qkv_rope_q8_##name(                                   \
        const uint8_t* __restrict__ wq, float* __restrict__ q, const uint8_t* __restrict__ wk,    \
        float* __restrict__ k, const uint8_t* __restrict__ wv, float* __restrict__ v,             \
        const uint8_t* __restrict__ xq, int cols, float eps, const float* __restrict__ cs,        \
        uint16_t* __restrict__ kc, uint16_t* __restrict__ vc, int pos0, const int* pos_dev,       \
        int hq, int hk, int head_dim, int n_rot, int layout, int vw) {                            \
        mv_prefetch_qkv(wq, wk, wv, hq, hk, head_dim, n_rot, layout, vw,                          \
                        (tlq_sz)(cols / T::QK) * T::BYTES);                                       \
        tl_kernel_start();                                                                        \
        mq8_qkv_rope<T>(wq, q, wk, k, wv, v, xq, cols, eps, cs, kc, vc, pos0, pos_dev, hq, hk,    \
                        head_dim, n_rot, layout, vw);                                             \
    }

TL_MATVEC_Q8(q4_0, Q8Q4_0)
TL_MATVEC_Q8(q4_1, Q8Q4_1)
TL_MATVEC_Q8(q5_0, Q8Q5_0)
TL_MATVEC_Q8(q5_1, Q8Q5_1)
TL_MATVEC_Q8(q8_0, Q8Q8_0)
TL_MATVEC_Q8(q2_k, Q8Q2_K)
TL_MATVEC_Q8(q3_k, Q8Q3_K)
TL_MATVEC_Q8(q4_k, Q8Q4_K)
TL_MATVEC_Q8(q5_k, Q8Q5_K)
TL_MATVEC_Q8(q6_k, Q8Q6_K)

// ---------------------------------------------------------------------------------------------
// Tiled matmul
// ---------------------------------------------------------------------------------------------

#define MM_BM 64
#define MM_BN 64
#define MM_BK 32
#define MM_THREADS 256
// Shared row stride: 68 floats keeps the 16-byte reads aligned and the loaders' column stores
// (32 consecutive rows / tokens per warp) conflict-free.
#define MM_LD (MM_BM + 4)

// The loader role of a tile's thread (mm_body and mt_body): row / token lm of the 64 x 64 tile,
// K offset lk. Four consecutive threads share a row, so each warp-wide load touches 8 rows (not
// 32): the uncoalesced weight gathers are what limits the f32 tiles.
struct MmLoader {
    const uint8_t* wr;
    const float* xr;
    bool wok, xok, xvec;
    int lm, lk;
};
template <class T>
static __device__ __forceinline__ MmLoader mm_loader(const uint8_t* __restrict__ w,
                                                     const float* __restrict__ x, int rows,
                                                     int cols, int n_tok) {
    MmLoader l;
    const int m0 = blockIdx.x * MM_BM, n0 = blockIdx.y * MM_BN;
    l.lm = threadIdx.x >> 2;
    l.lk = (threadIdx.x & 3) * 8;
    l.wok = m0 + l.lm < rows;
    l.xok = n0 + l.lm < n_tok;
    l.xvec = cols % 8 == 0 && ((unsigned long long)x & 15ull) == 0;
    const tlq_sz row_bytes = (tlq_sz)(cols / T::QK) * T::BYTES;
    l.wr = w + (tlq_sz)(l.wok ? m0 + l.lm : 0) * row_bytes;
    l.xr = x + (tlq_sz)(l.xok ? n0 + l.lm : 0) * cols;
    return l;
}

// Global -> registers for K step kt: this thread's 8 weights (row lm, columns 32 kt + lk ..)
// and 8 activations (token lm, same columns); zeros outside the matrix.
template <class T>
static __device__ __forceinline__ void mm_fetch(const MmLoader& l, int kt, int cols, float* wv,
                                                float* xv) {
    const uint8_t* __restrict__ wr = l.wr;
    const float* __restrict__ xr = l.xr;
    const bool wok = l.wok, xok = l.xok, xvec = l.xvec;
    const int c = kt * MM_BK + l.lk;
    if (wok && c < cols) {
        Row8<T>::row8(wr, c, cols, wv);
    } else {
#pragma unroll
        for (int i = 0; i < 8; ++i) wv[i] = 0.f;
    }
    if (xok && xvec && c < cols) {
        // cols % 8 == 0 here, so c + 8 <= cols.
        const tlq_f4 a = *(const tlq_f4*)(xr + c), b = *(const tlq_f4*)(xr + c + 4);
        xv[0] = a.x; xv[1] = a.y; xv[2] = a.z; xv[3] = a.w;
        xv[4] = b.x; xv[5] = b.y; xv[6] = b.z; xv[7] = b.w;
    } else {
#pragma unroll
        for (int i = 0; i < 8; ++i) xv[i] = xok && c + i < cols ? xr[c + i] : 0.f;
    }
}

template <class T>
static __device__ __forceinline__ void mm_body(const uint8_t* __restrict__ w,
                                               const float* __restrict__ x, float* __restrict__ y,
                                               int rows, int cols, int n_tok, int add) {
    __shared__ __attribute__((aligned(16))) float ws[MM_BK][MM_LD];
    __shared__ __attribute__((aligned(16))) float xs[MM_BK][MM_LD];
    const int tid = threadIdx.x;
    const int m0 = blockIdx.x * MM_BM, n0 = blockIdx.y * MM_BN;
    const MmLoader ld = mm_loader<T>(w, x, rows, cols, n_tok);
    const int lm = ld.lm, lk = ld.lk;

    // Compute role: rows tm*4 .. +4, tokens tn*4 .. +4.
    const int tn = tid & 15, tm = tid >> 4;
    float acc[4][4];
#pragma unroll
    for (int i = 0; i < 4; ++i)
#pragma unroll
        for (int j = 0; j < 4; ++j) acc[i][j] = 0.f;

    float wv[8], xv[8];
    const int nk = (cols + MM_BK - 1) / MM_BK;
    mm_fetch<T>(ld, 0, cols, wv, xv);
    for (int kt = 0; kt < nk; ++kt) {
#pragma unroll
        for (int i = 0; i < 8; ++i) {
            ws[lk + i][lm] = wv[i];
            xs[lk + i][lm] = xv[i];
        }
        TL_SYNC();
        if (kt + 1 < nk) mm_fetch<T>(ld, kt + 1, cols, wv, xv);
#pragma unroll 8
        for (int k = 0; k < MM_BK; ++k) {
            const tlq_f4 a = *(const tlq_f4*)&ws[k][tm * 4];
            const tlq_f4 b = *(const tlq_f4*)&xs[k][tn * 4];
            const float av[4] = {a.x, a.y, a.z, a.w}, bv[4] = {b.x, b.y, b.z, b.w};
#pragma unroll
            for (int i = 0; i < 4; ++i)
#pragma unroll
                for (int j = 0; j < 4; ++j) acc[i][j] += av[i] * bv[j];
        }
        TL_SYNC();
    }
#pragma unroll
    for (int j = 0; j < 4; ++j) {
        const int t = n0 + tn * 4 + j;
        if (t >= n_tok) continue;
#pragma unroll
        for (int i = 0; i < 4; ++i) {
            const int r = m0 + tm * 4 + i;
            if (r < rows) mv_store(y + (tlq_sz)t * rows + r, acc[i][j], add);
        }
    }
}

// Tensor-core tiles (the quantized types' prefill): mm_body's 64 x 64 output tile, loader and
// K steps, but the 64 x 32 weight and x tiles are rounded to bfloat16 as they are stored to
// shared memory (row-major, K contiguous: each word two consecutive K values) and the products
// run as mma.m16n8k16 with f32 accumulators. Warp w takes rows 32 (w % 2) .. +32 and tokens
// 16 (w / 2) .. +16: two 16-row by two 8-token fragments per 16 K values. x rounded to 8
// significant bits per value is finer than the 8 bits per 32 values the CPU's quantized dots
// give it; bfloat16 keeps f32's range, so no activation overflows.
// Shared row stride in words: 16 words of data and 4 of padding, so the fragment loads (8 rows
// x 4 consecutive words per warp) hit 32 different banks and each row stays 16-byte aligned.
#define MT_LDW 20
// mm_fetch for the tensor-core tiles. FAST (the weight base aligned to Fast8<T>::ALIGN, x to 16
// bytes; whole-block rows keep every block and every token row aligned): the weights through
// Fast8, and no branch at all, since rows and tokens past the matrix read row / token 0
// (mm_loader points them there), whose products land in outputs that are never stored. Else
// mm_fetch's exact, checked loads.
template <class T, bool FAST>
static __device__ __forceinline__ void mt_fetch(const MmLoader& l, int kt, int cols, float* wv,
                                                float* xv) {
    if constexpr (FAST) {
        enum { SPB = T::QK / MM_BK };  // K steps per block
        Fast8<T>::get8(l.wr + (tlq_sz)(kt / SPB) * T::BYTES, (kt % SPB) * MM_BK + l.lk, wv);
        const float* xr = l.xr + (tlq_sz)kt * MM_BK + l.lk;
        const tlq_f4 a = *(const tlq_f4*)xr, b = *(const tlq_f4*)(xr + 4);
        xv[0] = a.x; xv[1] = a.y; xv[2] = a.z; xv[3] = a.w;
        xv[4] = b.x; xv[5] = b.y; xv[6] = b.z; xv[7] = b.w;
    } else {
        mm_fetch<T>(l, kt, cols, wv, xv);
    }
}
// 8 consecutive K values as 4 bfloat16 pairs (one 16-byte shared store).
static __device__ __forceinline__ tl_u4 mt_pack8(const float* v) {
    tl_u4 q;
    q.x = tl_pack_bf16x2(v[0], v[1]);
    q.y = tl_pack_bf16x2(v[2], v[3]);
    q.z = tl_pack_bf16x2(v[4], v[5]);
    q.w = tl_pack_bf16x2(v[6], v[7]);
    return q;
}
// The shared tiles, declared by the kernel (not in mt_body, whose two forms would each get
// their own).
struct MtTiles {
    uint32_t ws[MM_BM][MT_LDW];
    uint32_t xs[MM_BN][MT_LDW];
};
template <class T, bool FAST>
static __device__ __forceinline__ void mt_body(MtTiles& sm, const uint8_t* __restrict__ w,
                                               const float* __restrict__ x, float* __restrict__ y,
                                               int rows, int cols, int n_tok, int add) {
    uint32_t(*ws)[MT_LDW] = sm.ws;
    uint32_t(*xs)[MT_LDW] = sm.xs;
    const int tid = threadIdx.x;
    const int m0 = blockIdx.x * MM_BM, n0 = blockIdx.y * MM_BN;
    // Loader role as in mm_body (8 values of row / token lm, i.e. 4 words at word lk / 2).
    const MmLoader ld = mm_loader<T>(w, x, rows, cols, n_tok);
    const int lm = ld.lm, lk = ld.lk;

    // Compute role: fragment row g and K word t (prelude.cuh's tl_mma_bf16_16816).
    const int lane = tid & 31, g = lane >> 2, t = lane & 3;
    const int wm = (tid >> 5 & 1) * 32, wn = (tid >> 6) * 16;
    float acc[2][2][4];
#pragma unroll
    for (int i = 0; i < 2; ++i)
#pragma unroll
        for (int j = 0; j < 2; ++j)
#pragma unroll
            for (int e = 0; e < 4; ++e) acc[i][j][e] = 0.f;

    float wv[8], xv[8];
    const int nk = (cols + MM_BK - 1) / MM_BK;
    mt_fetch<T, FAST>(ld, 0, cols, wv, xv);
    for (int kt = 0; kt < nk; ++kt) {
        *(tl_u4*)&ws[lm][lk / 2] = mt_pack8(wv);
        *(tl_u4*)&xs[lm][lk / 2] = mt_pack8(xv);
        TL_SYNC();
        // The last step fetches its own columns again instead of branching.
        mt_fetch<T, FAST>(ld, kt + 1 < nk ? kt + 1 : kt, cols, wv, xv);
#pragma unroll
        for (int kw = 0; kw < MM_BK / 2; kw += 8) {
            // The fragments by ldmatrix (lane 8 m + i names row i of 8 x 8 matrix m): for A,
            // matrix m holds rows 8 (m & 1) .., words 4 (m >> 1) .. of the 16 x 16 part, i.e.
            // a[0..3]; for B, tokens 8 (m >> 1) .., words 4 (m & 1) .., i.e. b[0][0], b[0][1],
            // b[1][0], b[1][1]. One instruction for what took four shared loads.
            const int mi = lane >> 3, ri = lane & 7;
            uint32_t a[2][4], b[4];
#pragma unroll
            for (int i = 0; i < 2; ++i)
                tl_ldmatrix_x4(a[i], &ws[wm + 16 * i + 8 * (mi & 1) + ri][kw + 4 * (mi >> 1)]);
            tl_ldmatrix_x4(b, &xs[wn + 8 * (mi >> 1) + ri][kw + 4 * (mi & 1)]);
#pragma unroll
            for (int i = 0; i < 2; ++i)
#pragma unroll
                for (int j = 0; j < 2; ++j) tl_mma_bf16_16816(acc[i][j], a[i], b + 2 * j);
        }
        TL_SYNC();
    }
#pragma unroll
    for (int i = 0; i < 2; ++i)
#pragma unroll
        for (int j = 0; j < 2; ++j)
#pragma unroll
            for (int e = 0; e < 4; ++e) {
                const int r = m0 + wm + 16 * i + g + 8 * (e >> 1);
                const int tok = n0 + wn + 8 * j + 2 * t + (e & 1);
                if (r < rows && tok < n_tok) mv_store(y + (tlq_sz)tok * rows + r, acc[i][j][e], add);
            }
}

#define TL_MATMUL(name, T)                                                                        \
    extern "C" __global__ void TLQ_LAUNCH_BOUNDS(MM_THREADS)                                      \
        matmul_##name(const uint8_t* __restrict__ w, const float* __restrict__ x,                 \
                      float* __restrict__ y, int rows, int cols, int n_tok, int add) {            \
        tl_kernel_start();                                                                        \
        mm_body<T>(w, x, y, rows, cols, n_tok, add);                                              \
    }

// The quantized types (name, decoder tag): each has f32 and tensor-core tiles.
#define TL_QUANT_TYPES(X)                                                                         \
    X(q4_0, TQ4_0)                                                                                \
    X(q4_1, TQ4_1)                                                                                \
    X(q5_0, TQ5_0)                                                                                \
    X(q5_1, TQ5_1)                                                                                \
    X(q8_0, TQ8_0)                                                                                \
    X(q2_k, TQ2_K)                                                                                \
    X(q3_k, TQ3_K)                                                                                \
    X(q4_k, TQ4_K)                                                                                \
    X(q5_k, TQ5_K)                                                                                \
    X(q6_k, TQ6_K)

TL_MATMUL(f32, TF32)
TL_MATMUL(f16, TF16)
TL_MATMUL(bf16, TBF16)
TL_QUANT_TYPES(TL_MATMUL)

#define TL_MATMUL_MMA(name, T)                                                                    \
    extern "C" __global__ void TLQ_LAUNCH_BOUNDS(MM_THREADS)                                      \
        matmul_mma_##name(const uint8_t* __restrict__ w, const float* __restrict__ x,             \
                          float* __restrict__ y, int rows, int cols, int n_tok, int add) {        \
        tl_kernel_start();                                                                        \
        __shared__ __attribute__((aligned(16))) MtTiles sm;                                       \
        if (mv_aligned(w, Fast8<T>::ALIGN) && mv_aligned(x, 16))                                  \
            mt_body<T, true>(sm, w, x, y, rows, cols, n_tok, add);                                \
        else                                                                                      \
            mt_body<T, false>(sm, w, x, y, rows, cols, n_tok, add);                               \
    }

TL_QUANT_TYPES(TL_MATMUL_MMA)
