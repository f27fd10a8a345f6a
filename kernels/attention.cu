// attention.cu: the f16 KV cache store and causal attention (GQA, sliding window, soft-capping),
// same semantics as src/backend/cpu/attention.rs.
//
// Layouts: q [n_tok][n_head * head_dim] f32; K cache [n_ctx][kw] and V cache [n_ctx][vw] f16 bits
// (kw = n_head_kv * head_dim, vw = n_head_kv * head_dim_v); out [n_tok][n_head * head_dim_v].
// Query head h reads K/V head h / (n_head / n_head_kv). The token of row t sits at position
// pos = pos0 + t and sees keys lo ..= pos, lo = max(0, pos + 1 - window) (window <= 0: none).
//
// Split-K (flash-decoding): attn_partial_* runs one block per (key split, token * head); each
// block walks its slice of the key range with an online softmax (per warp, merged at the end)
// and either
//  - n_split == 1: writes the normalised output row directly (prefill), or
//  - n_split > 1: writes its partial (max m, sum l, unnormalised acc[head_dim_v]) to `part`,
//    and the splits of each (token, head) are merged with weights exp(m_s - M): by the block
//    of the split that finishes last (`counters` given: one u32 per token * head, zero before
//    the launch and left zero after it; the fused form, one launch), or by attn_combine.
// With `xq` given (one token, head_dim_v % 32 == 0), the output row also goes to xq in Q8 form
// (q8act.cuh) for the int8 matvec of the output projection.
// `part` layout for P = n_tok * n_head * n_split partials, partial index p = th * n_split + s:
//   part[2p] = m, part[2p + 1] = l, part[2P + p * head_dim_v + d] = acc[d].
// An empty split (its key slice is past pos) writes m = -inf, l = 0, acc = 0.
// Split s covers keys lo + s * chunk .. min(lo + (s + 1) * chunk, pos + 1), where chunk is the
// longest range of the call (min(window, pos0 + n_tok)) over n_split, rounded up to ATTN_TILE
// keys: the splits cover every row's keys. The kernel derives chunk itself, so the host can fix
// n_split for a whole context (from its size, not the position) and the same launch serves
// every step of a recorded decode graph.
//
// Position: pos0, or *pos_dev when pos_dev is not null (a decode graph's step input, written
// before each replay).
//
// Entry points:
//   attn_kv_store      one thread per element, grid-stride; any block size.
//   attn_rope_kv_store RoPE on Q and K and the K/V store in one launch: one thread per Q or K
//                      pair, unrotated K element or V element, grid-stride; any block size.
//   attn_partial_d64, _d128, _d256, _d512, attn_partial_any (see ATTN_PARTIAL_ENTRY for which
//                      widths each takes): grid (n_split, min(n_tok * n_head, 65535)), block
//                      exactly 32 * ATTN_WARPS = 128 threads, static shared memory only.
//   attn_combine       grid (min(n_tok * n_head, 65535), ceil(head_dim_v / blockDim.x)), block a
//                      multiple of 32 (64); n_split <= ATTN_MAX_SPLIT.

#include "rope.cuh"
#include "q8act.cuh"

// Warps per attn_partial block (blockDim.x must be 32 * ATTN_WARPS), keys each warp scores at
// once (independent loads in flight), and the largest head_dim / head_dim_v (per-lane register
// arrays and static shared memory, so the PTX has no `.extern` symbol; the host checks it).
#define ATTN_WARPS 4
#define ATTN_KB 8
#define ATTN_MAX_D 512
// Most splits attn_combine merges (its weights live in shared memory; the host caps n_split).
#define ATTN_MAX_SPLIT 64
// Splits are whole multiples of this many keys (two passes of the block's warps x ATTN_KB keys),
// so no split is too short to pay for its block (`TILE` in src/backend/cuda/attention.rs).
#define ATTN_TILE 64

static __device__ __forceinline__ float attn_neg_inf() { return tl_bits_f32(0xff800000u); }

// Round rows of K and V to f16 (round to nearest even, as half::f16::from_f32) and store them at
// positions pos0 .. pos0 + n_tok of one layer's cache (pos0 = *pos_dev when that is not null).
extern "C" __global__ void attn_kv_store(const float* k, const float* v, uint16_t* kc,
                                         uint16_t* vc, int pos0, const int* pos_dev, int n_tok,
                                         int kw, int vw) {
    tl_kernel_start();
    if (pos_dev != nullptr) pos0 = *pos_dev;
    const int nk = n_tok * kw;
    const int nv = n_tok * vw;
    const int n = nk > nv ? nk : nv;
    for (int i = blockIdx.x * blockDim.x + threadIdx.x; i < n; i += gridDim.x * blockDim.x) {
        if (i < nk) kc[pos0 * kw + i] = tl_f2h(k[i]);
        if (i < nv) vc[pos0 * vw + i] = tl_f2h(v[i]);
    }
}

// RoPE on Q and K, then K and V into the cache, in one launch: what rope_rotate on Q, rope_rotate
// on K and attn_kv_store do, with the same rotation and rounding (bit for bit). Q and K
// ([n_tok][heads * head_dim]) are rotated in place; K's rotated pairs go to the cache from the
// thread that rotated them, its dims >= n_rot and V as they are. cs: [n_tok][n_rot / 2][2].
extern "C" __global__ void attn_rope_kv_store(float* q, float* k, const float* v, const float* cs,
                                              uint16_t* kc, uint16_t* vc, int pos0,
                                              const int* pos_dev, int n_tok, int hq, int hk,
                                              int head_dim, int n_rot, int layout, int vw) {
    tl_kernel_start();
    if (pos_dev != nullptr) pos0 = *pos_dev;
    const int half = n_rot / 2;
    const int rest = head_dim - n_rot;
    const int kw = hk * head_dim;
    const int nq = n_tok * hq * half;
    const int nk = n_tok * hk * half;
    const int nr = n_tok * hk * rest;
    const int n = nq + nk + nr + n_tok * vw;
    for (int idx = blockIdx.x * blockDim.x + threadIdx.x; idx < n;
         idx += gridDim.x * blockDim.x) {
        if (idx < nq + nk) {
            const bool is_q = idx < nq;
            const int j = is_q ? idx : idx - nq;
            const int heads = is_q ? hq : hk;
            const int i = j % half;
            const int th = j / half;  // token * heads + head
            const int t = th / heads;
            const float c = cs[(t * half + i) * 2];
            const float s = cs[(t * half + i) * 2 + 1];
            float* hp = (is_q ? q : k) + th * head_dim;
            int a, b;
            rope_pair(layout, i, half, a, b);
            float y0, y1;
            rope_rotate_pair(hp[a], hp[b], c, s, y0, y1);
            hp[a] = y0;
            hp[b] = y1;
            if (!is_q) {
                // th * head_dim is t * kw + head * head_dim: attn_kv_store's element index.
                kc[pos0 * kw + th * head_dim + a] = tl_f2h(y0);
                kc[pos0 * kw + th * head_dim + b] = tl_f2h(y1);
            }
        } else if (idx < nq + nk + nr) {
            const int j = idx - nq - nk;
            const int e = (j / rest) * head_dim + n_rot + j % rest;
            kc[pos0 * kw + e] = tl_f2h(k[e]);
        } else {
            const int j = idx - nq - nk - nr;
            vc[pos0 * vw + j] = tl_f2h(v[j]);
        }
    }
}

// Elements d and d + 1 (d even) of an f16 row of n values as one word (element d in the low
// half), 0 past the end. With AL the row starts at an even element and n is even, so the pair is
// one aligned 32-bit word; otherwise two 16-bit loads. Predicated loads, not branches: the loads
// of a batch's keys stay in flight together.
template <bool AL>
static __device__ __forceinline__ uint32_t attn_ld_pair(const uint16_t* row, int d, int n) {
    if (AL) {
        uint32_t u = 0;
        if (d < n) u = *(const uint32_t*)(row + d);
        return u;
    }
    const uint32_t u0 = d < n ? row[d] : 0u;
    const uint32_t u1 = d + 1 < n ? row[d + 1] : 0u;
    return u0 | (u1 << 16);
}
static __device__ __forceinline__ void attn_unpack(uint32_t u, float& a, float& b) {
    a = tl_h2f((uint16_t)(u & 0xffffu));
    b = tl_h2f((uint16_t)(u >> 16));
}

// The K and V words of one batch of a warp's keys b0 .. b0 + ATTN_KB (lane's dims 2 lane + 64 i
// and the next): keys at or past ke re-read key ke - 1 (in range; their scores are masked), so
// there are no branches and every load of the batch is in flight at once. V does not depend on
// the scores, only its weights do: asking for both together, and for the warp's next batch as
// soon as this one is used, makes a batch one round trip to memory instead of two (a decode
// step's attention is a few such trips). Heads wider than 256 (NP > 4) load K at the top of
// the batch and V where it is used, as before: holding both would take more than a thread's 255
// registers.
template <int NP, bool AL>
struct AttnBatch {
    enum { KV = NP <= 4 };
    uint32_t k[ATTN_KB][NP], v[KV ? ATTN_KB : 1][NP];
    const uint16_t* vbase;
    int vw, b0, ke, lane, head_dim_v;

    // The batch starting at key b0 (nothing loaded yet).
    __device__ __forceinline__ AttnBatch(const uint16_t* vbase_, int vw_, int b0_, int ke_,
                                         int lane_, int head_dim_v_)
        : vbase(vbase_), vw(vw_), b0(b0_), ke(ke_), lane(lane_), head_dim_v(head_dim_v_) {}

    __device__ __forceinline__ int key(int j) const { return b0 + j < ke ? b0 + j : ke - 1; }
    __device__ __forceinline__ void load(const uint16_t* kbase, int kw, int head_dim) {
#pragma unroll
        for (int j = 0; j < ATTN_KB; j++) {
#pragma unroll
            for (int i = 0; i < NP; i++) {
                k[j][i] = attn_ld_pair<AL>(kbase + key(j) * kw, 2 * lane + 64 * i, head_dim);
                if (KV) v[KV ? j : 0][i] = vword_load(j, i);
            }
        }
    }
    __device__ __forceinline__ uint32_t vword_load(int j, int i) const {
        return attn_ld_pair<AL>(vbase + key(j) * vw, 2 * lane + 64 * i, head_dim_v);
    }
    // V's word i of key j of the batch.
    __device__ __forceinline__ uint32_t vword(int j, int i) const {
        return KV ? v[KV ? j : 0][i] : vword_load(j, i);
    }
};

// Splits whose partial sums attn_merge requests at once.
#define ATTN_MERGE_BATCH 8
static_assert(ATTN_MAX_SPLIT <= 64, "attn_merge's warp 0 holds two splits a lane");

// acc[(s0 + j) * stride] for j < ATTN_MERGE_BATCH, 0 past n_split: loads issued together, past
// L1 (other blocks of the same launch wrote them).
static __device__ __forceinline__ void attn_ld_splits(const float* acc, int s0, int n_split,
                                                      int stride, float* v) {
#pragma unroll
    for (int j = 0; j < ATTN_MERGE_BATCH; j++)
        v[j] = s0 + j < n_split ? tl_ld_cg(acc + (s0 + j) * stride) : 0.f;
}

// Merge the n_split (<= ATTN_MAX_SPLIT) partials of (token, head) th: M = max m_s,
// L = sum exp(m_s - M) l_s, out[d] = sum exp(m_s - M) acc_s[d] / L (an empty split, m_s = -inf,
// weighs 0; split 0 always holds key `pos`, so M is finite and L >= 1). Warp 0 computes the
// weights into shared memory, then each thread sums dims d0, d0 + dstep, ... in split order.
// Partials are read past L1 (in the fused form other blocks of the same launch wrote them), in
// as few round trips as the sums allow: every (m, l) of warp 0 at once, then ATTN_MERGE_BATCH
// splits' partial sums at once, so a merge of up to that many splits waits on memory twice
// (reading one split at a time waited once a split). Q8: the outputs also go to xq in Q8 form
// (q8act.cuh; one token, head_dim_v % 32 == 0, so each warp holds 32 consecutive outputs or
// none), for the int8 matvec of the output projection. The block's threads must all call it (it
// has barriers); whole warps.
template <bool Q8>
static __device__ __forceinline__ void attn_merge(const float* part, float* out, uint8_t* xq,
                                                  int th, int n_th, int n_split, int head_dim_v,
                                                  int d0, int dstep, float* w_s, float* inv_s) {
    const float neg_inf = attn_neg_inf();
    const int n_parts = n_th * n_split;
    const float* ml = part + 2 * th * n_split;
    const float* acc = part + 2 * n_parts + th * n_split * head_dim_v;
    // The previous merge of this block is done with w_s and inv_s.
    TL_SYNC();
    if (threadIdx.x < 32) {
        const int lane = threadIdx.x;
        float ms[2], ls[2];
#pragma unroll
        for (int j = 0; j < 2; j++) {
            const int s = lane + 32 * j;
            ms[j] = s < n_split ? tl_ld_cg(ml + 2 * s) : neg_inf;
            ls[j] = s < n_split ? tl_ld_cg(ml + 2 * s + 1) : 0.f;
        }
        float mx = neg_inf;
#pragma unroll
        for (int j = 0; j < 2; j++)
            if (lane + 32 * j < n_split) mx = tl_fmaxf(mx, ms[j]);
        mx = tl_warp_max(mx);
        float sum = 0.f;
#pragma unroll
        for (int j = 0; j < 2; j++) {
            const int s = lane + 32 * j;
            if (s < n_split) {
                const float w = ms[j] > neg_inf ? tl_expf(ms[j] - mx) : 0.f;
                w_s[s] = w;
                sum += w * ls[j];
            }
        }
        sum = tl_warp_sum(sum);
        if (lane == 0) *inv_s = 1.f / sum;
    }
    TL_SYNC();
    for (int d = d0; d < head_dim_v; d += dstep) {
        float a = 0.f;
        for (int s0 = 0; s0 < n_split; s0 += ATTN_MERGE_BATCH) {
            float v[ATTN_MERGE_BATCH];
            attn_ld_splits(acc + d, s0, n_split, head_dim_v, v);
#pragma unroll
            for (int j = 0; j < ATTN_MERGE_BATCH; j++)
                if (s0 + j < n_split) a += w_s[s0 + j] * v[j];
        }
        const float o = a * *inv_s;
        out[th * head_dim_v + d] = o;
        if (Q8) {
            const int i = th * head_dim_v + d;
            q8_store_group(o, i >> 5, i & 31, xq, n_th * head_dim_v);
        }
    }
}

// One block of ATTN_WARPS warps per (split, token * head), grid-stride over token * head.
// Each warp runs its own online softmax over batches of ATTN_KB keys (batches are dealt to the
// warps in turn: warp w takes keys kb + (w + j * ATTN_WARPS) * ATTN_KB ..): the lanes split the
// dims (pairs, see NP; Q and the accumulator live in registers), each key's dot is a warp
// sum, so every lane holds the same scores, max m, sum l and weights. No barrier inside the key
// loop. At the end the warps' (m, l, acc) meet in shared memory and are merged like splits:
// M = max m_w, L = sum exp(m_w - M) l_w, acc = sum exp(m_w - M) acc_w (an empty warp has m_w =
// -inf and weight 0). With one split the block writes acc / L to `out`, else its partial.
template <int NP, bool AL>
static __device__ __forceinline__ void attn_partial_impl(
    const float* q, const uint16_t* kc, const uint16_t* vc, float* out, float* part, int pos0,
    const int* pos_dev, int n_tok, int n_head, int n_head_kv, int head_dim, int head_dim_v,
    int kw, int vw, float scale, int window, float softcap, int n_split, uint32_t* counters,
    uint8_t* xq) {
    __shared__ float red_m[ATTN_WARPS];
    __shared__ float w_s[ATTN_MAX_SPLIT];
    __shared__ float inv_s;
    __shared__ int last_s;
    __shared__ float red_l[ATTN_WARPS];
    __shared__ float red_acc[ATTN_WARPS][ATTN_MAX_D];

    const float neg_inf = attn_neg_inf();
    const int lane = threadIdx.x & 31;
    const int warp = threadIdx.x >> 5;
    const int split = blockIdx.x;
    const int group = n_head / n_head_kv;
    const int n_th = n_tok * n_head;
    const int n_parts = n_th * n_split;
    if (pos_dev != nullptr) pos0 = *pos_dev;
    // The longest key range of any row (the last one's), split n_split ways in whole tiles.
    const int max_len = (window > 0 && window < pos0 + n_tok) ? window : pos0 + n_tok;
    const int chunk = ((max_len + n_split - 1) / n_split + ATTN_TILE - 1) / ATTN_TILE * ATTN_TILE;

    for (int th = blockIdx.y; th < n_th; th += gridDim.y) {
        const int t = th / n_head;
        const int h = th % n_head;
        const int g = h / group;
        const int pos = pos0 + t;
        const int lo = (window > 0 && pos + 1 > window) ? pos + 1 - window : 0;
        const int kb = lo + split * chunk;                           // first key of this split
        const int ke = kb + chunk < pos + 1 ? kb + chunk : pos + 1;  // one past the last

        const uint16_t* kbase = kc + g * head_dim;
        // The warp's first batch is requested before Q, so that Q's loads join it in flight.
        AttnBatch<NP, AL> kv(vc + g * head_dim_v, vw, kb + warp * ATTN_KB, ke, lane, head_dim_v);
        if (kv.KV && kv.b0 < ke) kv.load(kbase, kw, head_dim);

        // This lane's Q dims, rounded to f16 like the CPU (and like the cached K).
        float q0[NP], q1[NP], acc0[NP], acc1[NP];
        const float* qr = q + th * head_dim;
#pragma unroll
        for (int i = 0; i < NP; i++) {
            const int d = 2 * lane + 64 * i;
            q0[i] = d < head_dim ? tl_h2f(tl_f2h(qr[d])) : 0.f;
            q1[i] = d + 1 < head_dim ? tl_h2f(tl_f2h(qr[d + 1])) : 0.f;
            acc0[i] = 0.f;
            acc1[i] = 0.f;
        }
        float m = neg_inf;  // this warp's running max
        float l = 0.f;      // this warp's running sum of exp(score - m)

        for (int b0 = kv.b0; b0 < ke; b0 = kv.b0) {
            if (!kv.KV) kv.load(kbase, kw, head_dim);
            // Scores of keys b0 .. b0 + ATTN_KB (those < ke; b0 itself always is).
            float s[ATTN_KB];
#pragma unroll
            for (int k = 0; k < ATTN_KB; k++) {
                float acc = 0.f;
#pragma unroll
                for (int i = 0; i < NP; i++) {
                    float a, b;
                    attn_unpack(kv.k[k][i], a, b);
                    acc += q0[i] * a + q1[i] * b;
                }
                s[k] = acc;
            }
            float mb = neg_inf;
#pragma unroll
            for (int k = 0; k < ATTN_KB; k++) {
                float v = tl_warp_sum(s[k]) * scale;
                if (softcap > 0.f) v = softcap * tl_tanhf(v / softcap);
                s[k] = v;
                if (b0 + k < ke) mb = tl_fmaxf(mb, v);
            }
            // mb is finite (key b0 is in range); exp(-inf) = 0 on the first batch.
            const float m_new = tl_fmaxf(m, mb);
            const float corr = tl_expf(m - m_new);
            m = m_new;
            l *= corr;
#pragma unroll
            for (int i = 0; i < NP; i++) {
                acc0[i] *= corr;
                acc1[i] *= corr;
            }
#pragma unroll
            for (int k = 0; k < ATTN_KB; k++) {
                const float p = b0 + k < ke ? tl_expf(s[k] - m_new) : 0.f;
                l += p;
#pragma unroll
                for (int i = 0; i < NP; i++) {
                    float a, b;
                    attn_unpack(kv.vword(k, i), a, b);
                    acc0[i] += p * a;
                    acc1[i] += p * b;
                }
            }
            kv.b0 += ATTN_WARPS * ATTN_KB;
            if (kv.KV && kv.b0 < ke) kv.load(kbase, kw, head_dim);
        }

        // Merge the warps. The previous (token, head) of this block is done with red_*.
        TL_SYNC();
        if (lane == 0) {
            red_m[warp] = m;
            red_l[warp] = l;
        }
#pragma unroll
        for (int i = 0; i < NP; i++) {
            const int d = 2 * lane + 64 * i;
            if (d < head_dim_v) red_acc[warp][d] = acc0[i];
            if (d + 1 < head_dim_v) red_acc[warp][d + 1] = acc1[i];
        }
        TL_SYNC();
        float mx = neg_inf;
        for (int w = 0; w < ATTN_WARPS; w++) mx = tl_fmaxf(mx, red_m[w]);
        float wt[ATTN_WARPS];
        float sum = 0.f;
        for (int w = 0; w < ATTN_WARPS; w++) {
            wt[w] = red_m[w] > neg_inf ? tl_expf(red_m[w] - mx) : 0.f;
            sum += wt[w] * red_l[w];
        }
        if (n_split == 1) {
            // The only split holds key `pos`, so sum >= 1.
            const float inv = 1.f / sum;
            for (int d = threadIdx.x; d < head_dim_v; d += blockDim.x) {
                float a = 0.f;
                for (int w = 0; w < ATTN_WARPS; w++) a += wt[w] * red_acc[w][d];
                const float o = a * inv;
                out[th * head_dim_v + d] = o;
                if (xq != nullptr) {
                    const int i = th * head_dim_v + d;
                    q8_store_group(o, i >> 5, i & 31, xq, n_th * head_dim_v);
                }
            }
        } else {
            // An empty split leaves mx = -inf, sum = 0, acc = 0, which attn_combine skips.
            const int p = th * n_split + split;
            for (int d = threadIdx.x; d < head_dim_v; d += blockDim.x) {
                float a = 0.f;
                for (int w = 0; w < ATTN_WARPS; w++) a += wt[w] * red_acc[w][d];
                part[2 * n_parts + p * head_dim_v + d] = a;
            }
            if (threadIdx.x == 0) {
                part[2 * p] = mx;
                part[2 * p + 1] = sum;
            }
            if (counters != nullptr) {
                // The split of th that finishes last merges them all, in split order whichever
                // it is (attn_combine's sums, bit for bit), and re-arms the counter for the next
                // launch. Every thread's partial writes are made visible before the count.
                tl_fence_gpu();
                TL_SYNC();
                if (threadIdx.x == 0)
                    last_s = tl_atomic_add_u32(counters + th, 1u) == (uint32_t)(n_split - 1);
                TL_SYNC();
                if (last_s) {
                    tl_fence_gpu();
                    if (xq != nullptr)
                        attn_merge<true>(part, out, xq, th, n_th, n_split, head_dim_v,
                                         threadIdx.x, blockDim.x, w_s, &inv_s);
                    else
                        attn_merge<false>(part, out, xq, th, n_th, n_split, head_dim_v,
                                          threadIdx.x, blockDim.x, w_s, &inv_s);
                    if (threadIdx.x == 0) counters[th] = 0u;
                }
            }
        }
    }
}

// Entry points. attn_partial_dN: max(head_dim, head_dim_v) <= N, and head_dim, head_dim_v, kw
// and vw all even (32-bit K/V loads); lane l holds dims (2l + 64i, 2l + 64i + 1) for i < N / 64,
// so narrow heads use fewer registers. attn_partial_any: any widths up to ATTN_MAX_D, 16-bit
// loads (odd widths; not expected in practice).
#define ATTN_PARTIAL_ENTRY(NAME, NP, AL)                                                          \
    extern "C" __global__ void NAME(const float* q, const uint16_t* kc, const uint16_t* vc,      \
                                    float* out, float* part, int pos0, const int* pos_dev,        \
                                    int n_tok, int n_head, int n_head_kv, int head_dim,           \
                                    int head_dim_v, int kw, int vw, float scale, int window,      \
                                    float softcap, int n_split, uint32_t* counters,               \
                                    uint8_t* xq) {                                                \
        tl_kernel_start();                                                                        \
        attn_partial_impl<NP, AL>(q, kc, vc, out, part, pos0, pos_dev, n_tok, n_head, n_head_kv, \
                                  head_dim, head_dim_v, kw, vw, scale, window, softcap, n_split,  \
                                  counters, xq);                                                  \
    }
ATTN_PARTIAL_ENTRY(attn_partial_d64, 1, true)
ATTN_PARTIAL_ENTRY(attn_partial_d128, 2, true)
ATTN_PARTIAL_ENTRY(attn_partial_d256, 4, true)
ATTN_PARTIAL_ENTRY(attn_partial_d512, 8, true)
ATTN_PARTIAL_ENTRY(attn_partial_any, ATTN_MAX_D / 64, false)

// The merge as a launch of its own (fused kernels off): grid (min(n_th, 65535),
// ceil(head_dim_v / blockDim.x)), one dim per thread, blockDim.x a multiple of 32.
extern "C" __global__ void attn_combine(const float* part, float* out, int n_th, int n_split,
                                        int head_dim_v) {
    tl_kernel_start();
    __shared__ float w_s[ATTN_MAX_SPLIT];
    __shared__ float inv_s;
    const int d = blockIdx.y * blockDim.x + threadIdx.x;
    for (int th = blockIdx.x; th < n_th; th += gridDim.x)
        attn_merge<false>(part, out, nullptr, th, n_th, n_split, head_dim_v, d, head_dim_v, w_s,
                          &inv_s);
}

