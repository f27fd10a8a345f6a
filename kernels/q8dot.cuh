// q8dot.cuh: the integer decode matvec's arithmetic (matmul.cu's `quantize_q8` and
// `matvec_q8_<t>` / `matvec_glu_q8_<t>`), written as per-lane functions over a weight block and
// x in Q8 form, so that tests/cuda_build.rs can compile this very header for the host and check
// it against the CPU reference. The includer supplies uint8_t / uint32_t, `__device__`,
// `__forceinline__`, `tl_h2f`, `tl_bits_f32`, `tl_dp4a_us`, `tl_dp4a_ss`, `tl_f2i_rn`, `tl_rcp`,
// the `tl_u4` word quad and the loads `tl_ldnc16` / `tl_ldnc8` / `tl_ldnc4` / `tl_ldnc2`
// (prelude.cuh on the device).
//
// Why integers: the float matvec spends three instructions per weight (a PRMT into a magic
// float, an FFMA for the block scale, an FFMA for the dot), 3.6 weight bytes per warp instruction
// for Q4_K, which leaves it bound by instruction issue on an H100 (docs/performance.md). With x
// rounded to int8 once per matvec, four 4-bit weights cost one LOP3 and one IDP4A.
//
// x in Q8 form (`quantize_q8`): per 32 consecutive values, q_i = round(x_i / d) in -127..127 with
// d = max |x_i| / 127, stored as `cols` int8 bytes followed by `cols / 32` float pairs (d, d * sum
// q_i). The CPU's quantized dots round x to 8 bits as well (Q8_0 / Q8_1 / Q8_K).
//
// Each weight type is a struct: `LANES` lanes share a block of `QK` values (`BYTES` bytes);
// `load(blk, p)` reads lane p's weight registers `W` (the row loop issues several blocks' loads
// before the first is used), and `dot(w, xq, cols, b, p)` reads the x it pairs with and returns
// lane p's share of block b's dot product. The lanes' shares sum to the block's dot.
#pragma once

typedef tl_u4 tlq8_u4;
typedef unsigned long long tlq8_sz;
struct __attribute__((aligned(16))) tlq8_f4 {
    float x, y, z, w;
};

// The Q8 scale of a 32-value block with largest magnitude `amax`, and its inverse (0 for an
// all-zero block, whose quants are then all 0).
static __device__ __forceinline__ void tlq8_scale(float amax, float& d, float& id) {
    d = amax * (1.0f / 127.0f);
    id = amax > 0.f ? tl_rcp(d) : 0.f;
}
static __device__ __forceinline__ int tlq8_quant(float v, float id) {
    const int q = tl_f2i_rn(v * id);
    return q > 127 ? 127 : (q < -127 ? -127 : q);
}

// Q4_K (144-byte blocks of 256: f16 d, f16 dmin, 12 bytes of 6-bit scales and mins, 128 bytes
// of nibbles; value 32j + l of sub-block j is nibble (j & 1) of byte 32 (j / 2) + l, and equals
// d * sc_j * q - dmin * m_j).
//
// Four lanes share a block. Lane p (0..3) takes the 32 nibble bytes 32p .. 32p + 31: sub-blocks
// 2p (low nibbles) and 2p + 1 (high nibbles) whole. Its arguments are the block's first 16 bytes
// `hd`, those 32 nibble bytes `q0`, `q1`, the two sub-blocks' 32 int8 x values each (`xl0`,
// `xl1` and `xh0`, `xh1`) and their (d, d * sum) pairs `ds` = (d_2p, s_2p, d_2p+1, s_2p+1).
// High nibbles are dotted in place (bytes & 0xF0, unsigned: 16 q) and the 16 folded into the
// scale, which saves a shift per word.
struct tlq8_sm {
    float sc, m;
};
// Scale and min of sub-block j from the header words (scales bytes 0..11 = header bytes 4..15).
static __device__ __forceinline__ tlq8_sm tlq8_q4k_scale_min(const tlq8_u4 hd, int j) {
    const int sh = 8 * (j & 3);
    const uint32_t y = hd.y >> sh, z = hd.z >> sh, w = hd.w >> sh;
    uint32_t sc, m;
    if (j < 4) {
        sc = y & 63u;
        m = z & 63u;
    } else {
        sc = (w & 0xFu) | ((y >> 2) & 0x30u);
        m = ((w >> 4) & 0xFu) | ((z >> 2) & 0x30u);
    }
    tlq8_sm r;
    r.sc = (float)(int)sc;
    r.m = (float)(int)m;
    return r;
}

// Sum over the 16 bytes of a and b of a_i * b_i (a unsigned bytes after `mask`, b signed).
static __device__ __forceinline__ int tlq8_dot16(const tlq8_u4 a, uint32_t mask, const tlq8_u4 b,
                                                 int c) {
    c = tl_dp4a_us(a.x & mask, b.x, c);
    c = tl_dp4a_us(a.y & mask, b.y, c);
    c = tl_dp4a_us(a.z & mask, b.z, c);
    return tl_dp4a_us(a.w & mask, b.w, c);
}

static __device__ __forceinline__ float tlq8_q4k_lane(const tlq8_u4 hd, const tlq8_u4 q0,
                                                      const tlq8_u4 q1, const tlq8_u4 xl0,
                                                      const tlq8_u4 xl1, const tlq8_u4 xh0,
                                                      const tlq8_u4 xh1, const tlq8_f4 ds, int p) {
    const int lo = tlq8_dot16(q1, 0x0F0F0F0Fu, xl1, tlq8_dot16(q0, 0x0F0F0F0Fu, xl0, 0));
    const int hi16 = tlq8_dot16(q1, 0xF0F0F0F0u, xh1, tlq8_dot16(q0, 0xF0F0F0F0u, xh0, 0));
    const float d = tl_h2f((uint16_t)(hd.x & 0xFFFFu));
    const float dmin = tl_h2f((uint16_t)(hd.x >> 16));
    const tlq8_sm a = tlq8_q4k_scale_min(hd, 2 * p), b = tlq8_q4k_scale_min(hd, 2 * p + 1);
    // hi16 = 16 * the high nibbles' dot: exact in f32 (|hi16| <= 32 * 240 * 127), / 16 exact.
    const float dot = a.sc * ds.x * (float)lo + b.sc * (ds.z * 0.0625f) * (float)hi16;
    return d * dot - dmin * (a.m * ds.y + b.m * ds.w);
}

// ---------------------------------------------------------------------------------------------
// Loads and the x side
// ---------------------------------------------------------------------------------------------

// A little-endian word at a 2-aligned address (32-value blocks start on even bytes only).
static __device__ __forceinline__ uint32_t tlq8_ld4a2(const uint8_t* p) {
    return tl_ldnc2(p) | (tl_ldnc2(p + 2) << 16);
}
// The four floats at a 16-aligned address.
static __device__ __forceinline__ tlq8_f4 tlq8_ldf4(const uint8_t* p) {
    const tlq8_u4 u = tl_ldnc16(p);
    tlq8_f4 f;
    f.x = tl_bits_f32(u.x);
    f.y = tl_bits_f32(u.y);
    f.z = tl_bits_f32(u.z);
    f.w = tl_bits_f32(u.w);
    return f;
}
// (d, d * sum q) of x's 32-value group g.
static __device__ __forceinline__ void tlq8_xds(const uint8_t* xq, int cols, int g, float& d,
                                                float& s) {
    uint32_t a, b;
    tl_ldnc8(xq + cols + 8 * (tlq8_sz)g, a, b);
    d = tl_bits_f32(a);
    s = tl_bits_f32(b);
}
// The scales d of x's four consecutive 32-value groups g0 .. g0 + 3 (g0 even: two 16-byte
// loads), for the K-quant lanes that take one value run from each of four groups.
static __device__ __forceinline__ void tlq8_xd4(const uint8_t* xq, int cols, tlq8_sz g0,
                                                float* dk) {
    const tlq8_f4 ds01 = tlq8_ldf4(xq + cols + 8 * g0);
    const tlq8_f4 ds23 = tlq8_ldf4(xq + cols + 8 * g0 + 16);
    dk[0] = ds01.x;
    dk[1] = ds01.z;
    dk[2] = ds23.x;
    dk[3] = ds23.z;
}
// The 4-bit fifth-bit field n spread to bit 4 of each byte (bit i of n to bit 8i + 4).
static __device__ __forceinline__ uint32_t tlq8_bit4(uint32_t n) {
    return (n * 0x02040810u) & 0x10101010u;
}

// ---------------------------------------------------------------------------------------------
// The 32-value types. Lane p of 2 takes quant bytes 8p .. 8p + 7 of the nibble types (values
// 8p .. 8p + 7 in the low nibbles, 16 + 8p .. 16 + 8p + 7 in the high ones); lane p of 4 takes
// bytes 8p .. 8p + 7 of Q8_0. A block's constant offset (-8 q, -16 q, + m) multiplies the sum of
// its 32 x values, which the Q8 form holds: lane 0 adds it for the block.
// ---------------------------------------------------------------------------------------------

// Lane p's share of a nibble block b's integer dot: its low-nibble words lo0, lo1 (values
// 8p .. 8p + 7) and high-nibble words hi0, hi1 (values 16 + 8p ..), as unsigned bytes.
static __device__ __forceinline__ int tlq8_nib_dot(uint32_t lo0, uint32_t lo1, uint32_t hi0,
                                                   uint32_t hi1, const uint8_t* xq, int b, int p) {
    const uint8_t* xb = xq + 32 * (tlq8_sz)b + 8 * p;
    uint32_t xl0, xl1, xh0, xh1;
    tl_ldnc8(xb, xl0, xl1);
    tl_ldnc8(xb + 16, xh0, xh1);
    int v = tl_dp4a_us(lo0, xl0, 0);
    v = tl_dp4a_us(lo1, xl1, v);
    v = tl_dp4a_us(hi0, xh0, v);
    return tl_dp4a_us(hi1, xh1, v);
}
// The same for nibble words q0, q1 with fifth bits qh (bit e: value e's): bits 8p .. 8p + 7 go
// to the low nibbles' values, 16 + 8p .. to the high ones'.
static __device__ __forceinline__ int tlq8_nib5_dot(uint32_t q0, uint32_t q1, uint32_t qh,
                                                    const uint8_t* xq, int b, int p) {
    const uint32_t hl = qh >> (8 * p), hh = qh >> (16 + 8 * p);
    return tlq8_nib_dot((q0 & 0x0F0F0F0Fu) | tlq8_bit4(hl & 0xFu),
                        (q1 & 0x0F0F0F0Fu) | tlq8_bit4((hl >> 4) & 0xFu),
                        ((q0 >> 4) & 0x0F0F0F0Fu) | tlq8_bit4(hh & 0xFu),
                        ((q1 >> 4) & 0x0F0F0F0Fu) | tlq8_bit4((hh >> 4) & 0xFu), xq, b, p);
}
static __device__ __forceinline__ int tlq8_nib4_dot(uint32_t q0, uint32_t q1, const uint8_t* xq,
                                                    int b, int p) {
    return tlq8_nib_dot(q0 & 0x0F0F0F0Fu, q1 & 0x0F0F0F0Fu, (q0 >> 4) & 0x0F0F0F0Fu,
                        (q1 >> 4) & 0x0F0F0F0Fu, xq, b, p);
}
// Lane p's share of block b for integer dot v: d (v - off sum x) for the offset types (f16 d in
// the low half of dw), d v + m sum x for the ones with a min (f16 d, m in dw).
static __device__ __forceinline__ float tlq8_off_share(uint32_t dw, float off, int v,
                                                       const uint8_t* xq, int cols, int b, int p) {
    float dx, sx;
    tlq8_xds(xq, cols, b, dx, sx);
    return tl_h2f((uint16_t)(dw & 0xFFFFu)) * (dx * (float)v - (p == 0 ? off * sx : 0.f));
}
static __device__ __forceinline__ float tlq8_min_share(uint32_t dw, int v, const uint8_t* xq,
                                                       int cols, int b, int p) {
    float dx, sx;
    tlq8_xds(xq, cols, b, dx, sx);
    const float d = tl_h2f((uint16_t)(dw & 0xFFFFu)), m = tl_h2f((uint16_t)(dw >> 16));
    return d * (dx * (float)v) + (p == 0 ? m * sx : 0.f);
}

// Q4_0: f16 d @0, qs[16] @2; w = d (q - 8).
struct Q8Q4_0 {
    enum { QK = 32, BYTES = 18, LANES = 2, STEPS = 8 };
    struct W {
        uint32_t d, q0, q1;
    };
    static __device__ __forceinline__ W load(const uint8_t* blk, int p) {
        W w;
        w.d = tl_ldnc2(blk);
        w.q0 = tlq8_ld4a2(blk + 2 + 8 * p);
        w.q1 = tlq8_ld4a2(blk + 6 + 8 * p);
        return w;
    }
    static __device__ __forceinline__ float dot(const W& w, const uint8_t* xq, int cols, int b,
                                                int p) {
        return tlq8_off_share(w.d, 8.f, tlq8_nib4_dot(w.q0, w.q1, xq, b, p), xq, cols, b, p);
    }
};
// Q4_1: f16 d @0, f16 m @2, qs[16] @4; w = d q + m. 20-byte blocks: 4-aligned.
struct Q8Q4_1 {
    enum { QK = 32, BYTES = 20, LANES = 2, STEPS = 8 };
    struct W {
        uint32_t dm, q0, q1;
    };
    static __device__ __forceinline__ W load(const uint8_t* blk, int p) {
        W w;
        w.dm = tl_ldnc4(blk);
        w.q0 = tl_ldnc4(blk + 4 + 8 * p);
        w.q1 = tl_ldnc4(blk + 8 + 8 * p);
        return w;
    }
    static __device__ __forceinline__ float dot(const W& w, const uint8_t* xq, int cols, int b,
                                                int p) {
        return tlq8_min_share(w.dm, tlq8_nib4_dot(w.q0, w.q1, xq, b, p), xq, cols, b, p);
    }
};
// Q5_0: f16 d @0, qh (u32) @2, qs[16] @6; bit e of qh is value e's fifth bit; w = d (q - 16).
struct Q8Q5_0 {
    enum { QK = 32, BYTES = 22, LANES = 2, STEPS = 8 };
    struct W {
        uint32_t d, qh, q0, q1;
    };
    static __device__ __forceinline__ W load(const uint8_t* blk, int p) {
        W w;
        w.d = tl_ldnc2(blk);
        w.qh = tlq8_ld4a2(blk + 2);
        w.q0 = tlq8_ld4a2(blk + 6 + 8 * p);
        w.q1 = tlq8_ld4a2(blk + 10 + 8 * p);
        return w;
    }
    static __device__ __forceinline__ float dot(const W& w, const uint8_t* xq, int cols, int b,
                                                int p) {
        return tlq8_off_share(w.d, 16.f, tlq8_nib5_dot(w.q0, w.q1, w.qh, xq, b, p), xq, cols, b,
                              p);
    }
};
// Q5_1: f16 d @0, f16 m @2, qh @4, qs[16] @8; w = d q + m. 24-byte blocks: 8-aligned.
struct Q8Q5_1 {
    enum { QK = 32, BYTES = 24, LANES = 2, STEPS = 8 };
    struct W {
        uint32_t dm, qh, q0, q1;
    };
    static __device__ __forceinline__ W load(const uint8_t* blk, int p) {
        W w;
        tl_ldnc8(blk, w.dm, w.qh);
        tl_ldnc8(blk + 8 + 8 * p, w.q0, w.q1);
        return w;
    }
    static __device__ __forceinline__ float dot(const W& w, const uint8_t* xq, int cols, int b,
                                                int p) {
        return tlq8_min_share(w.dm, tlq8_nib5_dot(w.q0, w.q1, w.qh, xq, b, p), xq, cols, b, p);
    }
};
// Q8_0: f16 d @0, qs[32] (int8) @2; w = d q. Lane p: values 8p .. 8p + 7.
struct Q8Q8_0 {
    enum { QK = 32, BYTES = 34, LANES = 4, STEPS = 8 };
    struct W {
        uint32_t d, q0, q1;
    };
    static __device__ __forceinline__ W load(const uint8_t* blk, int p) {
        W w;
        w.d = tl_ldnc2(blk);
        w.q0 = tlq8_ld4a2(blk + 2 + 8 * p);
        w.q1 = tlq8_ld4a2(blk + 6 + 8 * p);
        return w;
    }
    static __device__ __forceinline__ float dot(const W& w, const uint8_t* xq, int cols, int b,
                                                int p) {
        uint32_t x0, x1;
        tl_ldnc8(xq + 32 * (tlq8_sz)b + 8 * p, x0, x1);
        const int v = tl_dp4a_ss(w.q1, x1, tl_dp4a_ss(w.q0, x0, 0));
        float dx, sx;  // no offset: the sum is not needed
        tlq8_xds(xq, cols, b, dx, sx);
        return tl_h2f((uint16_t)w.d) * (dx * (float)v);
    }
};

// ---------------------------------------------------------------------------------------------
// The K-quants
// ---------------------------------------------------------------------------------------------

// Q4_K as tlq8_q4k_lane above: lane p of 4 takes nibble bytes 32p .. 32p + 31 (sub-blocks 2p and
// 2p + 1). 144-byte blocks: 16-aligned.
struct Q8Q4_K {
    enum { QK = 256, BYTES = 144, LANES = 4, STEPS = 2 };
    struct W {
        tlq8_u4 hd, q0, q1;
    };
    static __device__ __forceinline__ W load(const uint8_t* blk, int p) {
        W w;
        w.hd = tl_ldnc16(blk);
        w.q0 = tl_ldnc16(blk + 16 + 32 * p);
        w.q1 = tl_ldnc16(blk + 32 + 32 * p);
        return w;
    }
    static __device__ __forceinline__ float dot(const W& w, const uint8_t* xq, int cols, int b,
                                                int p) {
        const tlq8_sz pair = 4 * (tlq8_sz)b + p;  // sub-blocks 2 pair, 2 pair + 1 of the row
        const uint8_t* xv = xq + 64 * pair;
        return tlq8_q4k_lane(w.hd, w.q0, w.q1, tl_ldnc16(xv), tl_ldnc16(xv + 16),
                             tl_ldnc16(xv + 32), tl_ldnc16(xv + 48),
                             tlq8_ldf4(xq + cols + 16 * pair), p);
    }
};

// Q5_K (176-byte blocks of 256: f16 d @0, f16 dmin @2, 12 bytes of scales and mins @4 as Q4_K's,
// qh[32] @16, qs[128] @48): value 32 j + l of sub-block j is Q4_K's nibble plus 16 times bit j
// of qh[l]. Lane p of 4 takes sub-blocks 2p and 2p + 1 as in Q4_K, and all 32 qh bytes (bits 2p
// and 2p + 1 of each). 176-byte blocks: 16-aligned.
struct Q8Q5_K {
    enum { QK = 256, BYTES = 176, LANES = 4, STEPS = 2 };
    struct W {
        tlq8_u4 hd, h0, h1, q0, q1;
    };
    static __device__ __forceinline__ W load(const uint8_t* blk, int p) {
        W w;
        w.hd = tl_ldnc16(blk);
        w.h0 = tl_ldnc16(blk + 16);
        w.h1 = tl_ldnc16(blk + 32);
        w.q0 = tl_ldnc16(blk + 48 + 32 * p);
        w.q1 = tl_ldnc16(blk + 64 + 32 * p);
        return w;
    }
    // The 16 five-bit values of nibble bytes q (the low nibbles, or with HI the high ones) with
    // fifth bits from bit hsh of the qh bytes h, dotted with x.
    template <int HI>
    static __device__ __forceinline__ int dot16(const tlq8_u4 q, const tlq8_u4 h, int hsh,
                                                const tlq8_u4 x, int c) {
        c = tl_dp4a_us(((q.x >> (4 * HI)) & 0x0F0F0F0Fu) | (((h.x >> hsh) & 0x01010101u) << 4),
                       x.x, c);
        c = tl_dp4a_us(((q.y >> (4 * HI)) & 0x0F0F0F0Fu) | (((h.y >> hsh) & 0x01010101u) << 4),
                       x.y, c);
        c = tl_dp4a_us(((q.z >> (4 * HI)) & 0x0F0F0F0Fu) | (((h.z >> hsh) & 0x01010101u) << 4),
                       x.z, c);
        return tl_dp4a_us(((q.w >> (4 * HI)) & 0x0F0F0F0Fu) | (((h.w >> hsh) & 0x01010101u) << 4),
                          x.w, c);
    }
    static __device__ __forceinline__ float dot(const W& w, const uint8_t* xq, int cols, int b,
                                                int p) {
        const tlq8_sz pair = 4 * (tlq8_sz)b + p;  // sub-blocks 2 pair, 2 pair + 1 of the row
        const uint8_t* xv = xq + 64 * pair;
        const int lo = dot16<0>(w.q1, w.h1, 2 * p, tl_ldnc16(xv + 16),
                                dot16<0>(w.q0, w.h0, 2 * p, tl_ldnc16(xv), 0));
        const int hi = dot16<1>(w.q1, w.h1, 2 * p + 1, tl_ldnc16(xv + 48),
                                dot16<1>(w.q0, w.h0, 2 * p + 1, tl_ldnc16(xv + 32), 0));
        const tlq8_f4 ds = tlq8_ldf4(xq + cols + 16 * pair);
        const float d = tl_h2f((uint16_t)(w.hd.x & 0xFFFFu));
        const float dmin = tl_h2f((uint16_t)(w.hd.x >> 16));
        const tlq8_sm a = tlq8_q4k_scale_min(w.hd, 2 * p), c = tlq8_q4k_scale_min(w.hd, 2 * p + 1);
        const float dot = a.sc * ds.x * (float)lo + c.sc * ds.z * (float)hi;
        return d * dot - dmin * (a.m * ds.y + c.m * ds.w);
    }
};

// Q2_K (84-byte blocks of 256: scales[16] @0, qs[64] @16, f16 d @80, f16 dmin @82). Value
// 128 n + 32 j + l (n < 2, j < 4, l < 32) is q = (qs[32 n + l] >> 2j) & 3, and equals
// d * (sc & 15) * q - dmin * (sc >> 4) for the scale byte sc = scales[8 n + 2 j + l / 16].
// Lane p of 4 takes n = p / 2 and l = 16 (p & 1) .. + 15 for all four j: qs bytes 16 p .. + 15,
// one scale byte per j (byte (p & 1) + 2 j of scales[8 n .. 8 n + 7]). Scales cover 16 values,
// half of an x group, so the min's term needs the lane's own sum of x: one signed dp4a of x
// against ones per word. 84-byte blocks: 4-aligned.
struct Q8Q2_K {
    enum { QK = 256, BYTES = 84, LANES = 4, STEPS = 4 };
    struct W {
        uint32_t q[4], sc[2], dm;
    };
    static __device__ __forceinline__ W load(const uint8_t* blk, int p) {
        W w;
#pragma unroll
        for (int i = 0; i < 4; ++i) w.q[i] = tl_ldnc4(blk + 16 + 16 * p + 4 * i);
        w.sc[0] = tl_ldnc4(blk + 8 * (p >> 1));
        w.sc[1] = tl_ldnc4(blk + 8 * (p >> 1) + 4);
        w.dm = tl_ldnc4(blk + 80);
        return w;
    }
    static __device__ __forceinline__ float dot(const W& w, const uint8_t* xq, int cols, int b,
                                                int p) {
        const int n = p >> 1, half = p & 1;
        // x group 8 b + 4 n + j holds values 128 n + 32 j ..; the lane reads its 16 at 16 half.
        const tlq8_sz g0 = 8 * (tlq8_sz)b + 4 * n;
        float dk[4];
        tlq8_xd4(xq, cols, g0, dk);
        float sd = 0.f, sm = 0.f;
#pragma unroll
        for (int j = 0; j < 4; ++j) {
            const tlq8_u4 x = tl_ldnc16(xq + 32 * (g0 + j) + 16 * half);
            const uint32_t q[4] = {(w.q[0] >> (2 * j)) & 0x03030303u,
                                   (w.q[1] >> (2 * j)) & 0x03030303u,
                                   (w.q[2] >> (2 * j)) & 0x03030303u,
                                   (w.q[3] >> (2 * j)) & 0x03030303u};
            int v = tl_dp4a_us(q[0], x.x, 0);
            v = tl_dp4a_us(q[1], x.y, v);
            v = tl_dp4a_us(q[2], x.z, v);
            v = tl_dp4a_us(q[3], x.w, v);
            int sx = tl_dp4a_ss(0x01010101u, x.x, 0);
            sx = tl_dp4a_ss(0x01010101u, x.y, sx);
            sx = tl_dp4a_ss(0x01010101u, x.z, sx);
            sx = tl_dp4a_ss(0x01010101u, x.w, sx);
            const uint32_t sc = (w.sc[j >> 1] >> (8 * (half + 2 * (j & 1)))) & 0xFFu;
            sd += dk[j] * (float)((int)(sc & 0xFu) * v);
            sm += dk[j] * (float)((int)(sc >> 4) * sx);
        }
        const float d = tl_h2f((uint16_t)(w.dm & 0xFFFFu)), dmin = tl_h2f((uint16_t)(w.dm >> 16));
        return d * sd - dmin * sm;
    }
};

// Q3_K (110-byte blocks of 256: hmask[32] @0, qs[64] @32, scales[12] @96, f16 d @108). Value
// 128 n + 32 j + l is lo = (qs[32 n + l] >> 2j) & 3, minus 4 when bit 4 n + j of hmask[l] is
// clear, times d * scale[8 n + 2 j + l / 16]; the 16 six-bit scales (minus 32) keep their low
// nibbles in bytes 0..7 (nibble i / 8 of byte i % 8) and their top two bits in bytes 8..11 (bits
// 2 (i / 4) of byte 8 + i % 4).
// Lane p of 4 takes n = p / 2 and l = 16 (p & 1) .. + 15 for all four j as in Q2_K: qs bytes
// 32 + 16 p .., hmask bytes 16 (p & 1) .. (bits 4 n + j). Each weight byte is lo | (bit << 2),
// 0..7, and the -4 is a signed dp4a of x against 0xFC (-4). 110-byte blocks: 2-aligned.
struct Q8Q3_K {
    enum { QK = 256, BYTES = 110, LANES = 4, STEPS = 2 };
    struct W {
        uint32_t q[4], h[4], sl[2], sh, d;
    };
    static __device__ __forceinline__ W load(const uint8_t* blk, int p) {
        W w;
#pragma unroll
        for (int i = 0; i < 4; ++i) {
            w.q[i] = tlq8_ld4a2(blk + 32 + 16 * p + 4 * i);
            // Bits 4 n .. 4 n + 3 of each hmask byte are this lane's: shifted down once here,
            // each j's bit is then a constant shift away.
            w.h[i] = tlq8_ld4a2(blk + 16 * (p & 1) + 4 * i) >> (4 * (p >> 1));
        }
        w.sl[0] = tlq8_ld4a2(blk + 96);
        w.sl[1] = tlq8_ld4a2(blk + 100);
        w.sh = tlq8_ld4a2(blk + 104);
        w.d = tl_ldnc2(blk + 108);
        return w;
    }
    static __device__ __forceinline__ float dot(const W& w, const uint8_t* xq, int cols, int b,
                                                int p) {
        const int n = p >> 1, half = p & 1;
        const tlq8_sz g0 = 8 * (tlq8_sz)b + 4 * n;
        float dk[4];
        tlq8_xd4(xq, cols, g0, dk);
        float sum = 0.f;
#pragma unroll
        for (int j = 0; j < 4; ++j) {
            const tlq8_u4 x = tl_ldnc16(xq + 32 * (g0 + j) + 16 * half);
            const uint32_t xs[4] = {x.x, x.y, x.z, x.w};
            int v = 0;
#pragma unroll
            for (int i = 0; i < 4; ++i) {
                const uint32_t q = ((w.q[i] >> (2 * j)) & 0x03030303u) |
                                   (((w.h[i] >> j) & 0x01010101u) << 2);
                v = tl_dp4a_ss(0xFCFCFCFCu, xs[i], tl_dp4a_us(q, xs[i], v));
            }
            // Scale 8 n + 2 j + half: low nibble n of byte half + 2 j, top bits 2 (2 n + j / 2)
            // of byte 8 + half + 2 (j & 1).
            const int bi = half + 2 * (j & 1);
            const uint32_t lo = (w.sl[j >> 1] >> (8 * bi + 4 * n)) & 0xFu;
            const uint32_t hi = (w.sh >> (8 * bi + 2 * (2 * n + (j >> 1)))) & 3u;
            sum += dk[j] * (float)(((int)(lo | (hi << 4)) - 32) * v);
        }
        return tl_h2f((uint16_t)w.d) * sum;
    }
};

// Q6_K (210-byte blocks of 256: ql[128] @0, qh[64] @128, int8 scales[16] @192, f16 d @208).
// Value 128 n + 32 k + l (n < 2, k < 4, l < 32) is
//   (nibble of ql[64 n + 32 (k & 1) + l], high for k >= 2) | ((qh[32 n + l] >> 2k) & 3) << 4,
// minus 32, times d * scales[8 n + l / 16 + 2 k].
// Lane p of 8 takes n = p / 4 and l = 8 (p & 3) .. + 7, for all four k: 32 values, whose scales
// are bytes is + 2k (is = (p & 3) / 2) of scales[8 n .. 8 n + 7]. The -32 is a signed dp4a of
// the x bytes against 0xE0 (-32) in each byte.
struct Q8Q6_K {
    enum { QK = 256, BYTES = 210, LANES = 8, STEPS = 2 };
    struct W {
        uint32_t la[2], lb[2], h[2], sc[2], d;
    };
    static __device__ __forceinline__ W load(const uint8_t* blk, int p) {
        const int n = p >> 2, l0 = 8 * (p & 3);
        W w;
#pragma unroll
        for (int i = 0; i < 2; ++i) {
            w.la[i] = tlq8_ld4a2(blk + 64 * n + l0 + 4 * i);
            w.lb[i] = tlq8_ld4a2(blk + 64 * n + 32 + l0 + 4 * i);
            w.h[i] = tlq8_ld4a2(blk + 128 + 32 * n + l0 + 4 * i);
            w.sc[i] = tlq8_ld4a2(blk + 192 + 8 * n + 4 * i);
        }
        w.d = tl_ldnc2(blk + 208);
        return w;
    }
    static __device__ __forceinline__ float dot(const W& w, const uint8_t* xq, int cols, int b,
                                                int p) {
        const int n = p >> 2, l0 = 8 * (p & 3), is = (p & 3) >> 1;
        // x group 8 b + 4 n + k holds values 128 n + 32 k ..; their scales d_k.
        const tlq8_sz g0 = 8 * (tlq8_sz)b + 4 * n;
        float dk[4];
        tlq8_xd4(xq, cols, g0, dk);
        float sum = 0.f;
#pragma unroll
        for (int k = 0; k < 4; ++k) {
            uint32_t x[2];
            tl_ldnc8(xq + 32 * (g0 + k) + l0, x[0], x[1]);
            int v = 0;
#pragma unroll
            for (int i = 0; i < 2; ++i) {
                const uint32_t ql = (k & 1) ? w.lb[i] : w.la[i];
                const uint32_t q = (((k & 2) ? ql >> 4 : ql) & 0x0F0F0F0Fu) |
                                   (((w.h[i] >> (2 * k)) & 0x03030303u) << 4);
                v = tl_dp4a_ss(0xE0E0E0E0u, x[i], tl_dp4a_us(q, x[i], v));
            }
            const int sc = (int)(int8_t)(uint8_t)(w.sc[k >> 1] >> (8 * (is + 2 * (k & 1))));
            sum += (float)sc * dk[k] * (float)v;
        }
        return tl_h2f((uint16_t)w.d) * sum;
    }
};
