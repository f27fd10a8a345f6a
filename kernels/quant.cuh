// quant.cuh: ggml weight-block decoding shared by matmul.cu and embed.cu.
//
// The decoders per weight type:
//
// - `Deq<T>::deq8(blk, off, v)`: the 8 consecutive values at column offset `off` (a multiple of 8)
//   of one block, computed with exactly the float operations of the CPU reference
//   (src/quant/dequant.rs, bit-exact with ggml): products and sums are written with explicitly
//   rounded PTX (`mul.rn`, `add.rn`, `sub.rn`) so neither compiler contracts them into FMAs.
//   Byte and half-word loads only, so any block address works. Used by get_rows (where results
//   must match the CPU bit for bit) and by the tiled matmul's shared-memory tile loads.
//
// - `Fast8<T>::get8(blk, off, v)`: deq8's values with wide loads and FMA conversions, for the
//   tensor-core prefill tiles (which round them to bfloat16).
//
// - `McXXX::decode4(blk, c, v)` (below, "layout C"): the 4 values at column offset c of a 32-value
//   block for the coalesced matvec row loops of matmul.cu (the K-quants' are in matmul.cu).
//
// - `MvXXX::decode<AL>(blk, sub, v)`: the unit-layout matvec decoder. A block is split into `UPB` lane
//   units of `NSEG * SEGL` values; unit `sub` yields its values in `v`, `v[s * SEGL + i]` being
//   column `seg_off(sub, s) + i` of the block. Quants become floats without integer-to-float
//   conversions: a quant byte q < 128 is moved by one PRMT into bits 16..22 of 0x3F000000, giving
//   f = 0.5 + q / 256 exactly, and `s * (q - o) + c` becomes one FMA `f * 256s + (c - s(128 + o))`
//   (single rounding of the exact product plus a once-rounded constant: error below 2^-17 of a
//   quant step). `AL` says the weight base is aligned to the type's natural block alignment (and x
//   to 16 bytes), which allows the wide loads noted per type; without it everything is read as
//   half-words (block starts are always 2-byte aligned).
#pragma once
#include "prelude.cuh"

// ---------------------------------------------------------------------------------------------
// Small helpers
// ---------------------------------------------------------------------------------------------

#ifdef TL_HOST_EMU
#define TLQ_LAUNCH_BOUNDS(n)
#else
#define TLQ_LAUNCH_BOUNDS(n) __attribute__((launch_bounds(n)))
#endif

// Byte offsets and element counts (prelude.cuh defines no size_t for the header-less clang build).
typedef unsigned long long tlq_sz;

struct tlq_u4 {
    uint32_t x, y, z, w;
};
struct __attribute__((aligned(16))) tlq_f4 {
    float x, y, z, w;
};

// Explicitly rounded float ops: never contracted into an FMA, so results equal the CPU's.
static __device__ __forceinline__ float tlq_mul(float a, float b) {
#ifdef TL_HOST_EMU
    return a * b;  // the emulator is built with -ffp-contract=off
#else
    float r;
    asm("{ mul.rn.f32 %0, %1, %2; }" : "=f"(r) : "f"(a), "f"(b));
    return r;
#endif
}
static __device__ __forceinline__ float tlq_add(float a, float b) {
#ifdef TL_HOST_EMU
    return a + b;
#else
    float r;
    asm("{ add.rn.f32 %0, %1, %2; }" : "=f"(r) : "f"(a), "f"(b));
    return r;
#endif
}
static __device__ __forceinline__ float tlq_fma(float a, float b, float c) {
#ifdef TL_HOST_EMU
    return fmaf(a, b, c);
#else
    float r;
    asm("{ fma.rn.f32 %0, %1, %2, %3; }" : "=f"(r) : "f"(a), "f"(b), "f"(c));
    return r;
#endif
}
static __device__ __forceinline__ float tlq_sub(float a, float b) {
#ifdef TL_HOST_EMU
    return a - b;
#else
    float r;
    asm("{ sub.rn.f32 %0, %1, %2; }" : "=f"(r) : "f"(a), "f"(b));
    return r;
#endif
}

// Plain byte / half-word reads (any 1- / 2-aligned address).
static __device__ __forceinline__ uint32_t tlq_b(const uint8_t* p) { return *p; }
static __device__ __forceinline__ uint32_t tlq_h(const uint8_t* p) {
    return *(const uint16_t*)p;
}
// A little-endian u32 from a 2-aligned address, as two half-words.
static __device__ __forceinline__ uint32_t tlq_w2(const uint8_t* p) {
    return tlq_h(p) | (tlq_h(p + 2) << 16);
}

// Streaming weight loads: read-only path, not kept in L1 (weights are read once per matvec; L1
// stays free for x, which every row re-reads). `volatile` only keeps the compiler from
// speculating the load above its bounds check; ptxas still schedules it freely.
static __device__ __forceinline__ uint32_t tlq_ldw4(const uint8_t* p) {
#ifdef TL_HOST_EMU
    uint32_t v;
    memcpy(&v, p, 4);
    return v;
#else
    uint32_t v;
    asm volatile("ld.global.nc.L1::no_allocate.u32 %0, [%1];" : "=r"(v) : "l"(p));
    return v;
#endif
}
static __device__ __forceinline__ tlq_u4 tlq_ldw16(const uint8_t* p) {
#ifdef TL_HOST_EMU
    tlq_u4 v;
    memcpy(&v, p, 16);
    return v;
#else
    tlq_u4 v;
    asm volatile("ld.global.nc.L1::no_allocate.v4.u32 {%0, %1, %2, %3}, [%4];"
                 : "=r"(v.x), "=r"(v.y), "=r"(v.z), "=r"(v.w)
                 : "l"(p));
    return v;
#endif
}
static __device__ __forceinline__ void tlq_ldw8(const uint8_t* p, uint32_t& a, uint32_t& b) {
#ifdef TL_HOST_EMU
    memcpy(&a, p, 4);
    memcpy(&b, p + 4, 4);
#else
    asm volatile("ld.global.nc.L1::no_allocate.v2.u32 {%0, %1}, [%2];"
                 : "=r"(a), "=r"(b)
                 : "l"(p));
#endif
}
// 4 / 8 / 16 weight bytes at `p`: one wide load when AL (the caller proved the alignment), else
// half-words.
template <bool AL>
static __device__ __forceinline__ uint32_t tlq_ld4(const uint8_t* p) {
    return AL ? tlq_ldw4(p) : tlq_w2(p);
}
template <bool AL>
static __device__ __forceinline__ void tlq_ld8(const uint8_t* p, uint32_t& a, uint32_t& b) {
    if (AL) {
        tlq_ldw8(p, a, b);
    } else {
        a = tlq_w2(p);
        b = tlq_w2(p + 4);
    }
}
template <bool AL>
static __device__ __forceinline__ tlq_u4 tlq_ld16(const uint8_t* p) {
    if (AL) return tlq_ldw16(p);
    tlq_u4 v;
    v.x = tlq_w2(p);
    v.y = tlq_w2(p + 4);
    v.z = tlq_w2(p + 8);
    v.w = tlq_w2(p + 12);
    return v;
}

// Byte k (compile-time after unrolling) of w, which must be < 128, as 0.5 + byte / 256 (exact).
static __device__ __forceinline__ float tlq_bf(uint32_t w, int k) {
#ifdef TL_HOST_EMU
    return tl_bits_f32(0x3F000000u | (((w >> (8 * k)) & 0xFF) << 16));
#else
    uint32_t r;
    // Result bytes: [0] = [1] = byte 4 (0x00 of the constant), [2] = byte k of w, [3] = 0x3F.
    asm("prmt.b32 %0, %1, %2, %3;" : "=r"(r) : "r"(w), "r"(0x3F000000u), "r"(0x7044u | (k << 8)));
    return tl_bits_f32(r);
#endif
}
// Byte k of w (any value) as 2^23 + byte (exact).
static __device__ __forceinline__ float tlq_bf23(uint32_t w, int k) {
#ifdef TL_HOST_EMU
    return tl_bits_f32(0x4B000000u | ((w >> (8 * k)) & 0xFF));
#else
    uint32_t r;
    asm("prmt.b32 %0, %1, %2, %3;" : "=r"(r) : "r"(w), "r"(0x4B000000u), "r"(0x7440u | k));
    return tl_bits_f32(r);
#endif
}
// Four bits of n (0..15) spread to the low bit of each byte: bit b -> bit 8b.
static __device__ __forceinline__ uint32_t tlq_spread4(uint32_t n) {
    return (n * 0x00204081u) & 0x01010101u;
}

// The FMA constants that turn f = 0.5 + q / 256 into s * (q - o) + c.
struct tlq_ab {
    float a, b;
};
static __device__ __forceinline__ tlq_ab tlq_coef(float s, float o, float c) {
    tlq_ab r;
    r.a = 256.f * s;
    r.b = tlq_fma(-s, 128.f + o, c);
    return r;
}
// v[i] for the 4 bytes of w (each < 128).
static __device__ __forceinline__ void tlq_put4(float* v, uint32_t w, tlq_ab k) {
#pragma unroll
    for (int i = 0; i < 4; ++i) v[i] = tlq_fma(tlq_bf(w, i), k.a, k.b);
}

// Byte n (runtime) of the 12-byte scale field held in three words.
static __device__ __forceinline__ uint32_t tlq_sbyte(uint32_t s0, uint32_t s1, uint32_t s2, int n) {
    uint32_t w = n < 4 ? s0 : (n < 8 ? s1 : s2);
    return (w >> (8 * (n & 3))) & 0xFFu;
}
// ggml get_scale_min_k4 (src/quant/blocks.rs unpack_scales_k4) for sub-block j in 0..8, with the
// 12 scale bytes in s0 (bytes 0..3), s1 (4..7), s2 (8..11). With b = j & 3:
//   j < 4:  sc = q[j] & 63,                          m = q[j + 4] & 63
//   j >= 4: sc = (q[j + 4] & 15) | (q[j - 4] >> 6) << 4, m = (q[j + 4] >> 4) | (q[j] >> 6) << 4
// where q[j] / q[j + 4] are byte b of s0 / s1 for j < 4, and q[j - 4], q[j], q[j + 4] are byte b
// of s0, s1, s2 for j >= 4. Branch-free: j differs between the lanes of a warp.
static __device__ __forceinline__ void tlq_scale_min_k4(int j, uint32_t s0, uint32_t s1, uint32_t s2,
                                                        uint32_t& sc, uint32_t& m) {
    const int sh = 8 * (j & 3);
    const uint32_t t0 = s0 >> sh, t1 = s1 >> sh, t2 = s2 >> sh;
    const uint32_t sc_lo = t0 & 63u, m_lo = t1 & 63u;
    const uint32_t sc_hi = (t2 & 0xFu) | ((t0 >> 2) & 0x30u);
    const uint32_t m_hi = ((t2 >> 4) & 0xFu) | ((t1 >> 2) & 0x30u);
    sc = j < 4 ? sc_lo : sc_hi;
    m = j < 4 ? m_lo : m_hi;
}
// Q3_K scale j in 0..16 (src/quant/blocks.rs unpack_scales_q3k), already minus 32.
static __device__ __forceinline__ int tlq_scale_q3k(int j, uint32_t s0, uint32_t s1, uint32_t s2) {
    uint32_t lo = j < 8 ? (tlq_sbyte(s0, s1, s2, j) & 0xFu) : (tlq_sbyte(s0, s1, s2, j - 8) >> 4);
    uint32_t hi = (tlq_sbyte(s0, s1, s2, 8 + (j & 3)) >> (2 * (j >> 2))) & 3u;
    return (int)(lo | (hi << 4)) - 32;
}

// ---------------------------------------------------------------------------------------------
// Type tags with block geometry (QK values in BYTES bytes), shared by all decoders.
// ---------------------------------------------------------------------------------------------

struct TF32 { enum { QK = 1, BYTES = 4 }; };
struct TF16 { enum { QK = 1, BYTES = 2 }; };
struct TBF16 { enum { QK = 1, BYTES = 2 }; };
struct TQ4_0 { enum { QK = 32, BYTES = 18 }; };
struct TQ4_1 { enum { QK = 32, BYTES = 20 }; };
struct TQ5_0 { enum { QK = 32, BYTES = 22 }; };
struct TQ5_1 { enum { QK = 32, BYTES = 24 }; };
struct TQ8_0 { enum { QK = 32, BYTES = 34 }; };
struct TQ2_K { enum { QK = 256, BYTES = 84 }; };
struct TQ3_K { enum { QK = 256, BYTES = 110 }; };
struct TQ4_K { enum { QK = 256, BYTES = 144 }; };
struct TQ5_K { enum { QK = 256, BYTES = 176 }; };
struct TQ6_K { enum { QK = 256, BYTES = 210 }; };

// ---------------------------------------------------------------------------------------------
// Exact decoders: deq8 (quantized types) and deq1 (float types, one element).
// ---------------------------------------------------------------------------------------------

template <class T>
struct Deq;

template <>
struct Deq<TF32> {
    static __device__ __forceinline__ float deq1(const uint8_t* row, int c) {
        return tl_bits_f32(tlq_w2(row + 4 * c));
    }
};
template <>
struct Deq<TF16> {
    static __device__ __forceinline__ float deq1(const uint8_t* row, int c) {
        return tl_h2f((uint16_t)tlq_h(row + 2 * c));
    }
};
template <>
struct Deq<TBF16> {
    static __device__ __forceinline__ float deq1(const uint8_t* row, int c) {
        return tl_bf2f((uint16_t)tlq_h(row + 2 * c));
    }
};

// Q4_0: d (f16) @0, qs[16] @2; element j < 16 is the low nibble of qs[j], j >= 16 the high nibble
// of qs[j - 16]; x = (q - 8) * d.
template <>
struct Deq<TQ4_0> {
    static __device__ __forceinline__ void deq8(const uint8_t* b, int off, float* v) {
        const float d = tl_h2f((uint16_t)tlq_h(b));
        const int j0 = off & 15, sh = off >= 16 ? 4 : 0;
#pragma unroll
        for (int i = 0; i < 8; ++i) {
            int q = (int)((tlq_b(b + 2 + j0 + i) >> sh) & 0xFu) - 8;
            v[i] = tlq_mul((float)q, d);
        }
    }
};
// Q4_1: d @0, m @2, qs[16] @4; x = q * d + m.
template <>
struct Deq<TQ4_1> {
    static __device__ __forceinline__ void deq8(const uint8_t* b, int off, float* v) {
        const float d = tl_h2f((uint16_t)tlq_h(b));
        const float m = tl_h2f((uint16_t)tlq_h(b + 2));
        const int j0 = off & 15, sh = off >= 16 ? 4 : 0;
#pragma unroll
        for (int i = 0; i < 8; ++i) {
            int q = (int)((tlq_b(b + 4 + j0 + i) >> sh) & 0xFu);
            v[i] = tlq_add(tlq_mul((float)q, d), m);
        }
    }
};
// Q5_0: d @0, qh (u32) @2, qs[16] @6; bit e of qh is the 5th bit of element e; x = (q - 16) * d.
template <>
struct Deq<TQ5_0> {
    static __device__ __forceinline__ void deq8(const uint8_t* b, int off, float* v) {
        const float d = tl_h2f((uint16_t)tlq_h(b));
        const uint32_t qh = tlq_w2(b + 2);
        const int j0 = off & 15, sh = off >= 16 ? 4 : 0;
#pragma unroll
        for (int i = 0; i < 8; ++i) {
            int e = off + i;
            int q = (int)(((tlq_b(b + 6 + j0 + i) >> sh) & 0xFu) | (((qh >> e) & 1u) << 4)) - 16;
            v[i] = tlq_mul((float)q, d);
        }
    }
};
// Q5_1: d @0, m @2, qh @4, qs[16] @8; x = q * d + m.
template <>
struct Deq<TQ5_1> {
    static __device__ __forceinline__ void deq8(const uint8_t* b, int off, float* v) {
        const float d = tl_h2f((uint16_t)tlq_h(b));
        const float m = tl_h2f((uint16_t)tlq_h(b + 2));
        const uint32_t qh = tlq_w2(b + 4);
        const int j0 = off & 15, sh = off >= 16 ? 4 : 0;
#pragma unroll
        for (int i = 0; i < 8; ++i) {
            int e = off + i;
            int q = (int)(((tlq_b(b + 8 + j0 + i) >> sh) & 0xFu) | (((qh >> e) & 1u) << 4));
            v[i] = tlq_add(tlq_mul((float)q, d), m);
        }
    }
};
// Q8_0: d @0, qs (int8)[32] @2; x = q * d.
template <>
struct Deq<TQ8_0> {
    static __device__ __forceinline__ void deq8(const uint8_t* b, int off, float* v) {
        const float d = tl_h2f((uint16_t)tlq_h(b));
#pragma unroll
        for (int i = 0; i < 8; ++i) {
            int q = (int)(int8_t)tlq_b(b + 2 + off + i);
            v[i] = tlq_mul((float)q, d);
        }
    }
};
// Q2_K: scales[16] @0, qs[64] @16, d @80, dmin @82. Element e = 128h + 32k + l (l < 32):
// q = (qs[32h + l] >> 2k) & 3, scale byte sc = scales[8h + 2k + l / 16];
// x = (d * (sc & 15)) * q - dmin * (sc >> 4).
template <>
struct Deq<TQ2_K> {
    static __device__ __forceinline__ void deq8(const uint8_t* b, int off, float* v) {
        const float d = tl_h2f((uint16_t)tlq_h(b + 80));
        const float dmin = tl_h2f((uint16_t)tlq_h(b + 82));
        const int h = off >> 7, k = (off >> 5) & 3, l0 = off & 31;
        const uint32_t sc = tlq_b(b + 8 * h + 2 * k + (l0 >> 4));
        const float dl = tlq_mul(d, (float)(int)(sc & 0xFu));
        const float ml = tlq_mul(dmin, (float)(int)(sc >> 4));
#pragma unroll
        for (int i = 0; i < 8; ++i) {
            int q = (int)((tlq_b(b + 16 + 32 * h + l0 + i) >> (2 * k)) & 3u);
            v[i] = tlq_sub(tlq_mul(dl, (float)q), ml);
        }
    }
};
// Q3_K: hmask[32] @0, qs[64] @32, scales[12] @96, d @108. Element e = 128h + 32k + l:
// lo = (qs[32h + l] >> 2k) & 3, minus 4 when bit (4h + k) of hmask[l] is clear;
// x = (d * scale[8h + 2k + l / 16]) * q.
template <>
struct Deq<TQ3_K> {
    static __device__ __forceinline__ void deq8(const uint8_t* b, int off, float* v) {
        const float d = tl_h2f((uint16_t)tlq_h(b + 108));
        const int h = off >> 7, k = (off >> 5) & 3, l0 = off & 31;
        const uint32_t s0 = tlq_w2(b + 96), s1 = tlq_w2(b + 100), s2 = tlq_w2(b + 104);
        const int sc = tlq_scale_q3k(8 * h + 2 * k + (l0 >> 4), s0, s1, s2);
        const float dl = tlq_mul(d, (float)sc);
        const int hb = 4 * h + k;
#pragma unroll
        for (int i = 0; i < 8; ++i) {
            int lo = (int)((tlq_b(b + 32 + 32 * h + l0 + i) >> (2 * k)) & 3u);
            int hi = ((tlq_b(b + l0 + i) >> hb) & 1u) ? 0 : 4;
            v[i] = tlq_mul(dl, (float)(lo - hi));
        }
    }
};
// Q4_K: d @0, dmin @2, scales[12] @4, qs[128] @16. Element e = 64j + 32s + l: q is nibble s of
// qs[32j + l], sub-block 2j + s; x = (d * sc) * q - dmin * m.
template <>
struct Deq<TQ4_K> {
    static __device__ __forceinline__ void deq8(const uint8_t* b, int off, float* v) {
        const float d = tl_h2f((uint16_t)tlq_h(b));
        const float dmin = tl_h2f((uint16_t)tlq_h(b + 2));
        const int j = off >> 6, s = (off >> 5) & 1, l0 = off & 31;
        uint32_t sc, m;
        tlq_scale_min_k4(2 * j + s, tlq_w2(b + 4), tlq_w2(b + 8), tlq_w2(b + 12), sc, m);
        const float d1 = tlq_mul(d, (float)(int)sc);
        const float m1 = tlq_mul(dmin, (float)(int)m);
#pragma unroll
        for (int i = 0; i < 8; ++i) {
            int q = (int)((tlq_b(b + 16 + 32 * j + l0 + i) >> (4 * s)) & 0xFu);
            v[i] = tlq_sub(tlq_mul(d1, (float)q), m1);
        }
    }
};
// Q5_K: d @0, dmin @2, scales[12] @4, qh[32] @16, qs[128] @48. As Q4_K, plus 16 when bit
// (2j + s) of qh[l] is set.
template <>
struct Deq<TQ5_K> {
    static __device__ __forceinline__ void deq8(const uint8_t* b, int off, float* v) {
        const float d = tl_h2f((uint16_t)tlq_h(b));
        const float dmin = tl_h2f((uint16_t)tlq_h(b + 2));
        const int j = off >> 6, s = (off >> 5) & 1, l0 = off & 31;
        const int is = 2 * j + s;
        uint32_t sc, m;
        tlq_scale_min_k4(is, tlq_w2(b + 4), tlq_w2(b + 8), tlq_w2(b + 12), sc, m);
        const float d1 = tlq_mul(d, (float)(int)sc);
        const float m1 = tlq_mul(dmin, (float)(int)m);
#pragma unroll
        for (int i = 0; i < 8; ++i) {
            int q = (int)((tlq_b(b + 48 + 32 * j + l0 + i) >> (4 * s)) & 0xFu);
            q += ((tlq_b(b + 16 + l0 + i) >> is) & 1u) ? 16 : 0;
            v[i] = tlq_sub(tlq_mul(d1, (float)q), m1);
        }
    }
};
// Q6_K: ql[128] @0, qh[64] @128, scales (int8)[16] @192, d @208. Element e = 128h + 32k + l:
// low 4 bits = nibble (k >> 1) of ql[64h + 32(k & 1) + l], high 2 bits = bits 2k..2k+1 of
// qh[32h + l], q minus 32; x = (d * scales[8h + l / 16 + 2k]) * q.
template <>
struct Deq<TQ6_K> {
    static __device__ __forceinline__ void deq8(const uint8_t* b, int off, float* v) {
        const float d = tl_h2f((uint16_t)tlq_h(b + 208));
        const int h = off >> 7, k = (off >> 5) & 3, l0 = off & 31;
        const int sc = (int)(int8_t)tlq_b(b + 192 + 8 * h + (l0 >> 4) + 2 * k);
        const float ds = tlq_mul(d, (float)sc);
#pragma unroll
        for (int i = 0; i < 8; ++i) {
            uint32_t lo = (tlq_b(b + 64 * h + 32 * (k & 1) + l0 + i) >> (4 * (k >> 1))) & 0xFu;
            uint32_t hi = (tlq_b(b + 128 + 32 * h + l0 + i) >> (2 * k)) & 3u;
            int q = (int)(lo | (hi << 4)) - 32;
            v[i] = tlq_mul(ds, (float)q);
        }
    }
};

// ---------------------------------------------------------------------------------------------
// Fast matvec decoders. Each: QK/BYTES (block), ALIGN (base alignment that makes the wide loads
// legal), UPB lane units per block, NSEG segments of SEGL contiguous columns per unit,
// seg_off(sub, s), decode<AL>(blk, sub, v). Consecutive `sub` read consecutive bytes, so the lanes
// of a warp cover whole blocks with coalesced loads.
// ---------------------------------------------------------------------------------------------

// F32 / F16 / BF16, vector form (cols % 8 == 0 and AL): a "block" is 8 values in one or two
// 16-byte loads.
struct MvF32V {
    enum { QK = 8, BYTES = 32, ALIGN = 16, UPB = 1, NSEG = 1, SEGL = 8 };
    static __device__ __forceinline__ int seg_off(int, int) { return 0; }
    template <bool AL>
    static __device__ __forceinline__ void decode(const uint8_t* b, int, float* v) {
        tlq_u4 a = tlq_ld16<AL>(b), c = tlq_ld16<AL>(b + 16);
        v[0] = tl_bits_f32(a.x); v[1] = tl_bits_f32(a.y); v[2] = tl_bits_f32(a.z); v[3] = tl_bits_f32(a.w);
        v[4] = tl_bits_f32(c.x); v[5] = tl_bits_f32(c.y); v[6] = tl_bits_f32(c.z); v[7] = tl_bits_f32(c.w);
    }
};
template <bool BF>
struct MvHalfV {
    enum { QK = 8, BYTES = 16, ALIGN = 16, UPB = 1, NSEG = 1, SEGL = 8 };
    static __device__ __forceinline__ int seg_off(int, int) { return 0; }
    static __device__ __forceinline__ float cvt(uint32_t h) {
        return BF ? tl_bf2f((uint16_t)h) : tl_h2f((uint16_t)h);
    }
    template <bool AL>
    static __device__ __forceinline__ void decode(const uint8_t* b, int, float* v) {
        tlq_u4 a = tlq_ld16<AL>(b);
        uint32_t w[4] = {a.x, a.y, a.z, a.w};
#pragma unroll
        for (int i = 0; i < 4; ++i) {
            v[2 * i] = cvt(w[i] & 0xFFFFu);
            v[2 * i + 1] = cvt(w[i] >> 16);
        }
    }
};
// Scalar form for any cols / alignment: one value per unit.
struct MvF32S {
    enum { QK = 1, BYTES = 4, ALIGN = 4, UPB = 1, NSEG = 1, SEGL = 1 };
    static __device__ __forceinline__ int seg_off(int, int) { return 0; }
    template <bool AL>
    static __device__ __forceinline__ void decode(const uint8_t* b, int, float* v) {
        v[0] = tl_bits_f32(tlq_ld4<AL>(b));
    }
};
template <bool BF>
struct MvHalfS {
    enum { QK = 1, BYTES = 2, ALIGN = 2, UPB = 1, NSEG = 1, SEGL = 1 };
    static __device__ __forceinline__ int seg_off(int, int) { return 0; }
    template <bool AL>
    static __device__ __forceinline__ void decode(const uint8_t* b, int, float* v) {
        uint32_t h = tlq_h(b);
        v[0] = BF ? tl_bf2f((uint16_t)h) : tl_h2f((uint16_t)h);
    }
};

// 32-value blocks: two lanes per block; unit g (0, 1) takes qs bytes 8g .. 8g + 8, i.e. columns
// 8g + i (low nibbles) and 16 + 8g + i (high nibbles).
// Q4_0 (18 bytes, 2-aligned): half-word loads (d and 4 of qs).
struct MvQ4_0 {
    enum { QK = 32, BYTES = 18, ALIGN = 2, UPB = 2, NSEG = 2, SEGL = 8 };
    static __device__ __forceinline__ int seg_off(int g, int s) { return 16 * s + 8 * g; }
    template <bool AL>
    static __device__ __forceinline__ void decode(const uint8_t* b, int g, float* v) {
        const float d = tl_h2f((uint16_t)tlq_h(b));
        const tlq_ab k = tlq_coef(d, 8.f, 0.f);
#pragma unroll
        for (int i = 0; i < 2; ++i) {
            uint32_t w = tlq_w2(b + 2 + 8 * g + 4 * i);
            tlq_put4(v + 4 * i, w & 0x0F0F0F0Fu, k);
            tlq_put4(v + 8 + 4 * i, (w >> 4) & 0x0F0F0F0Fu, k);
        }
    }
};
// Q4_1 (20 bytes, 4-aligned blocks when the base is): u32 loads for d|m and qs.
struct MvQ4_1 {
    enum { QK = 32, BYTES = 20, ALIGN = 4, UPB = 2, NSEG = 2, SEGL = 8 };
    static __device__ __forceinline__ int seg_off(int g, int s) { return 16 * s + 8 * g; }
    template <bool AL>
    static __device__ __forceinline__ void decode(const uint8_t* b, int g, float* v) {
        const uint32_t dm = tlq_ld4<AL>(b);
        const float d = tl_h2f((uint16_t)(dm & 0xFFFFu)), m = tl_h2f((uint16_t)(dm >> 16));
        const tlq_ab k = tlq_coef(d, 0.f, m);
#pragma unroll
        for (int i = 0; i < 2; ++i) {
            uint32_t w = tlq_ld4<AL>(b + 4 + 8 * g + 4 * i);
            tlq_put4(v + 4 * i, w & 0x0F0F0F0Fu, k);
            tlq_put4(v + 8 + 4 * i, (w >> 4) & 0x0F0F0F0Fu, k);
        }
    }
};
// Q5_0 (22 bytes, 2-aligned): half-word loads.
struct MvQ5_0 {
    enum { QK = 32, BYTES = 22, ALIGN = 2, UPB = 2, NSEG = 2, SEGL = 8 };
    static __device__ __forceinline__ int seg_off(int g, int s) { return 16 * s + 8 * g; }
    template <bool AL>
    static __device__ __forceinline__ void decode(const uint8_t* b, int g, float* v) {
        const float d = tl_h2f((uint16_t)tlq_h(b));
        const uint32_t qh = tlq_w2(b + 2);
        const tlq_ab k = tlq_coef(d, 16.f, 0.f);
#pragma unroll
        for (int i = 0; i < 2; ++i) {
            const int e = 8 * g + 4 * i;  // first column of this word's low nibbles
            uint32_t w = tlq_w2(b + 6 + e);
            uint32_t hl = tlq_spread4((qh >> e) & 0xFu) << 4;
            uint32_t hh = tlq_spread4((qh >> (16 + e)) & 0xFu) << 4;
            tlq_put4(v + 4 * i, (w & 0x0F0F0F0Fu) | hl, k);
            tlq_put4(v + 8 + 4 * i, ((w >> 4) & 0x0F0F0F0Fu) | hh, k);
        }
    }
};
// Q5_1 (24 bytes, 8-aligned blocks when the base is): 8-byte loads.
struct MvQ5_1 {
    enum { QK = 32, BYTES = 24, ALIGN = 8, UPB = 2, NSEG = 2, SEGL = 8 };
    static __device__ __forceinline__ int seg_off(int g, int s) { return 16 * s + 8 * g; }
    template <bool AL>
    static __device__ __forceinline__ void decode(const uint8_t* b, int g, float* v) {
        uint32_t dm, qh, q[2];
        tlq_ld8<AL>(b, dm, qh);
        tlq_ld8<AL>(b + 8 + 8 * g, q[0], q[1]);
        const float d = tl_h2f((uint16_t)(dm & 0xFFFFu)), m = tl_h2f((uint16_t)(dm >> 16));
        const tlq_ab k = tlq_coef(d, 0.f, m);
#pragma unroll
        for (int i = 0; i < 2; ++i) {
            const int e = 8 * g + 4 * i;
            uint32_t hl = tlq_spread4((qh >> e) & 0xFu) << 4;
            uint32_t hh = tlq_spread4((qh >> (16 + e)) & 0xFu) << 4;
            tlq_put4(v + 4 * i, (q[i] & 0x0F0F0F0Fu) | hl, k);
            tlq_put4(v + 8 + 4 * i, ((q[i] >> 4) & 0x0F0F0F0Fu) | hh, k);
        }
    }
};
// Q8_0 (34 bytes, 2-aligned): unit g = columns 16g .. 16g + 16; half-word loads; signed bytes via
// 2^23 + (q + 128), exact.
struct MvQ8_0 {
    enum { QK = 32, BYTES = 34, ALIGN = 2, UPB = 2, NSEG = 1, SEGL = 16 };
    static __device__ __forceinline__ int seg_off(int g, int) { return 16 * g; }
    template <bool AL>
    static __device__ __forceinline__ void decode(const uint8_t* b, int g, float* v) {
        const float d = tl_h2f((uint16_t)tlq_h(b));
#pragma unroll
        for (int i = 0; i < 4; ++i) {
            uint32_t w = tlq_w2(b + 2 + 16 * g + 4 * i) ^ 0x80808080u;
#pragma unroll
            for (int k = 0; k < 4; ++k) v[4 * i + k] = (tlq_bf23(w, k) - 8388736.f) * d;
        }
    }
};
// Q2_K (84 bytes, 4-aligned blocks when the base is). Unit sub = 4h + 2p + g covers l in
// 16p + 8g .. +8 for the four k: qs bytes 32h + 16p + 8g .. +8 (= 8 sub), columns
// 128h + 32k + 16p + 8g + i. Loads: 2 words of qs, 2 words of scales[8h..8h+8], d|dmin.
struct MvQ2_K {
    enum { QK = 256, BYTES = 84, ALIGN = 4, UPB = 8, NSEG = 4, SEGL = 8 };
    static __device__ __forceinline__ int seg_off(int sub, int k) {
        return 128 * (sub >> 2) + 32 * k + 8 * (sub & 3);
    }
    template <bool AL>
    static __device__ __forceinline__ void decode(const uint8_t* b, int sub, float* v) {
        const int h = sub >> 2, p = (sub >> 1) & 1;
        const uint32_t q0 = tlq_ld4<AL>(b + 16 + 8 * sub), q1 = tlq_ld4<AL>(b + 20 + 8 * sub);
        const uint32_t sa = tlq_ld4<AL>(b + 8 * h), sb = tlq_ld4<AL>(b + 8 * h + 4);
        const uint32_t dd = tlq_ld4<AL>(b + 80);
        const float d = tl_h2f((uint16_t)(dd & 0xFFFFu)), dmin = tl_h2f((uint16_t)(dd >> 16));
#pragma unroll
        for (int k = 0; k < 4; ++k) {
            // scales[8h + 2k + p]: byte 2(k & 1) + p of word k >> 1.
            const uint32_t sc = ((k < 2 ? sa : sb) >> (8 * (2 * (k & 1) + p))) & 0xFFu;
            const tlq_ab c = tlq_coef(d * (float)(int)(sc & 0xFu), 0.f, -(dmin * (float)(int)(sc >> 4)));
            tlq_put4(v + 8 * k, (q0 >> (2 * k)) & 0x03030303u, c);
            tlq_put4(v + 8 * k + 4, (q1 >> (2 * k)) & 0x03030303u, c);
        }
    }
};
// Q3_K (110 bytes, 2-aligned): same unit layout as Q2_K; qs bytes 32 + 32h + 16p + 8g, hmask bytes
// 16p + 8g (bit 4h + k), all 12 scale bytes, d. Half-word loads.
struct MvQ3_K {
    enum { QK = 256, BYTES = 110, ALIGN = 2, UPB = 8, NSEG = 4, SEGL = 8 };
    static __device__ __forceinline__ int seg_off(int sub, int k) {
        return 128 * (sub >> 2) + 32 * k + 8 * (sub & 3);
    }
    template <bool AL>
    static __device__ __forceinline__ void decode(const uint8_t* b, int sub, float* v) {
        const int h = sub >> 2, p = (sub >> 1) & 1, l0 = 8 * (sub & 3);
        const uint32_t q0 = tlq_w2(b + 32 + 8 * sub), q1 = tlq_w2(b + 36 + 8 * sub);
        const uint32_t m0 = tlq_w2(b + l0), m1 = tlq_w2(b + l0 + 4);
        const uint32_t s0 = tlq_w2(b + 96), s1 = tlq_w2(b + 100), s2 = tlq_w2(b + 104);
        const float d = tl_h2f((uint16_t)tlq_h(b + 108));
#pragma unroll
        for (int k = 0; k < 4; ++k) {
            const int sc = tlq_scale_q3k(8 * h + 2 * k + p, s0, s1, s2);
            const tlq_ab c = tlq_coef(d * (float)sc, 4.f, 0.f);
            const int hb = 4 * h + k;
            tlq_put4(v + 8 * k, ((q0 >> (2 * k)) & 0x03030303u) | (((m0 >> hb) & 0x01010101u) << 2), c);
            tlq_put4(v + 8 * k + 4, ((q1 >> (2 * k)) & 0x03030303u) | (((m1 >> hb) & 0x01010101u) << 2), c);
        }
    }
};
// Q4_K (144 bytes = 9 x 16: every block is 16-aligned when the base is). Unit p (8 per block) =
// qs bytes 16p .. 16p + 16, i.e. j = p / 2, l0 = 16 (p & 1): low nibbles are columns 64j + l0 + i
// (sub-block 2j), high nibbles 64j + 32 + l0 + i (2j + 1). Loads: the 16-byte header (d, dmin,
// scales) and 16 bytes of qs, one v4 load each when AL; the 8 lanes of a block share the header.
struct MvQ4_K {
    enum { QK = 256, BYTES = 144, ALIGN = 16, UPB = 8, NSEG = 2, SEGL = 16 };
    static __device__ __forceinline__ int seg_off(int sub, int s) {
        return 64 * (sub >> 1) + 32 * s + 16 * (sub & 1);
    }
    template <bool AL>
    static __device__ __forceinline__ void decode(const uint8_t* b, int sub, float* v) {
        const tlq_u4 hd = tlq_ld16<AL>(b);
        const tlq_u4 q = tlq_ld16<AL>(b + 16 + 16 * sub);
        const float d = tl_h2f((uint16_t)(hd.x & 0xFFFFu)), dmin = tl_h2f((uint16_t)(hd.x >> 16));
        const int j = sub >> 1;
        uint32_t sc0, m0, sc1, m1;
        tlq_scale_min_k4(2 * j, hd.y, hd.z, hd.w, sc0, m0);
        tlq_scale_min_k4(2 * j + 1, hd.y, hd.z, hd.w, sc1, m1);
        const tlq_ab c0 = tlq_coef(d * (float)(int)sc0, 0.f, -(dmin * (float)(int)m0));
        const tlq_ab c1 = tlq_coef(d * (float)(int)sc1, 0.f, -(dmin * (float)(int)m1));
        const uint32_t w[4] = {q.x, q.y, q.z, q.w};
#pragma unroll
        for (int i = 0; i < 4; ++i) {
            tlq_put4(v + 4 * i, w[i] & 0x0F0F0F0Fu, c0);
            tlq_put4(v + 16 + 4 * i, (w[i] >> 4) & 0x0F0F0F0Fu, c1);
        }
    }
};
// Q5_K (176 bytes = 11 x 16, 16-aligned blocks). Units as Q4_K; also qh[l0 .. l0 + 16] (bits 2j and
// 2j + 1). Three v4 loads when AL.
struct MvQ5_K {
    enum { QK = 256, BYTES = 176, ALIGN = 16, UPB = 8, NSEG = 2, SEGL = 16 };
    static __device__ __forceinline__ int seg_off(int sub, int s) {
        return 64 * (sub >> 1) + 32 * s + 16 * (sub & 1);
    }
    template <bool AL>
    static __device__ __forceinline__ void decode(const uint8_t* b, int sub, float* v) {
        const tlq_u4 hd = tlq_ld16<AL>(b);
        const tlq_u4 qh = tlq_ld16<AL>(b + 16 + 16 * (sub & 1));
        const tlq_u4 q = tlq_ld16<AL>(b + 48 + 16 * sub);
        const float d = tl_h2f((uint16_t)(hd.x & 0xFFFFu)), dmin = tl_h2f((uint16_t)(hd.x >> 16));
        const int j = sub >> 1;
        uint32_t sc0, m0, sc1, m1;
        tlq_scale_min_k4(2 * j, hd.y, hd.z, hd.w, sc0, m0);
        tlq_scale_min_k4(2 * j + 1, hd.y, hd.z, hd.w, sc1, m1);
        const tlq_ab c0 = tlq_coef(d * (float)(int)sc0, 0.f, -(dmin * (float)(int)m0));
        const tlq_ab c1 = tlq_coef(d * (float)(int)sc1, 0.f, -(dmin * (float)(int)m1));
        const uint32_t w[4] = {q.x, q.y, q.z, q.w};
        const uint32_t hw[4] = {qh.x, qh.y, qh.z, qh.w};
#pragma unroll
        for (int i = 0; i < 4; ++i) {
            const uint32_t h0 = ((hw[i] >> (2 * j)) & 0x01010101u) << 4;
            const uint32_t h1 = ((hw[i] >> (2 * j + 1)) & 0x01010101u) << 4;
            tlq_put4(v + 4 * i, (w[i] & 0x0F0F0F0Fu) | h0, c0);
            tlq_put4(v + 16 + 4 * i, ((w[i] >> 4) & 0x0F0F0F0Fu) | h1, c1);
        }
    }
};
// Q6_K (210 bytes, 2-aligned). Unit sub = 4h + g covers l in 8g .. 8g + 8 of half h for the four k:
// ql bytes 64h + 8g (k = 0 low, k = 2 high nibbles) and 64h + 32 + 8g (k = 1, 3), qh bytes
// 128 + 32h + 8g, scales 192 + 8h + g / 2 + 2k, d. Columns 128h + 32k + 8g + i. Half-word loads.
struct MvQ6_K {
    enum { QK = 256, BYTES = 210, ALIGN = 2, UPB = 8, NSEG = 4, SEGL = 8 };
    static __device__ __forceinline__ int seg_off(int sub, int k) {
        return 128 * (sub >> 2) + 32 * k + 8 * (sub & 3);
    }
    template <bool AL>
    static __device__ __forceinline__ void decode(const uint8_t* b, int sub, float* v) {
        const int h = sub >> 2, g = sub & 3;
        const uint8_t* ql = b + 64 * h + 8 * g;
        const uint32_t a0 = tlq_w2(ql), a1 = tlq_w2(ql + 4);
        const uint32_t b0 = tlq_w2(ql + 32), b1 = tlq_w2(ql + 36);
        const uint8_t* qh = b + 128 + 32 * h + 8 * g;
        const uint32_t h0 = tlq_w2(qh), h1 = tlq_w2(qh + 4);
        const float d = tl_h2f((uint16_t)tlq_h(b + 208));
        // scales[8h + 2k .. 8h + 2k + 2] as a half-word; the byte we need is g / 2 of it.
        const uint8_t* scp = b + 192 + 8 * h;
        const int sh = 8 * (g >> 1);
#pragma unroll
        for (int k = 0; k < 4; ++k) {
            const int sc = (int)(int8_t)((tlq_h(scp + 2 * k) >> sh) & 0xFFu);
            const tlq_ab c = tlq_coef(d * (float)sc, 32.f, 0.f);
            const uint32_t la = (k & 1) ? b0 : a0, lb = (k & 1) ? b1 : a1;
            const int ns = 4 * (k >> 1);
            // qh bits 2k..2k+1 moved to bits 4..5 of each byte.
            uint32_t ha, hb;
            if (k == 0) { ha = h0 << 4; hb = h1 << 4; }
            else if (k == 1) { ha = h0 << 2; hb = h1 << 2; }
            else if (k == 2) { ha = h0; hb = h1; }
            else { ha = h0 >> 2; hb = h1 >> 2; }
            tlq_put4(v + 8 * k, ((la >> ns) & 0x0F0F0F0Fu) | (ha & 0x30303030u), c);
            tlq_put4(v + 8 * k + 4, ((lb >> ns) & 0x0F0F0F0Fu) | (hb & 0x30303030u), c);
        }
    }
};

// ---------------------------------------------------------------------------------------------
// Row8<T>::row8(row, c, cols, v): the exact values of columns c .. c + 8 of one weight row
// (c a multiple of 8). Quantized types need c + 8 <= cols (cols is a whole number of blocks);
// float types check each column against cols and give 0 past the end.
// ---------------------------------------------------------------------------------------------

template <class T>
struct Row8 {
    static __device__ __forceinline__ void row8(const uint8_t* row, int c, int, float* v) {
        Deq<T>::deq8(row + (tlq_sz)(c / T::QK) * T::BYTES, c % T::QK, v);
    }
};
template <class T>
struct Row8F {
    static __device__ __forceinline__ void row8(const uint8_t* row, int c, int cols, float* v) {
#pragma unroll
        for (int i = 0; i < 8; ++i) v[i] = c + i < cols ? Deq<T>::deq1(row, c + i) : 0.f;
    }
};
template <>
struct Row8<TF32> : Row8F<TF32> {};
template <>
struct Row8<TF16> : Row8F<TF16> {};
template <>
struct Row8<TBF16> : Row8F<TBF16> {};

// ---------------------------------------------------------------------------------------------
// Fast8<T>::get8(blk, off, v): the 8 consecutive values at column offset `off` (a multiple of 8)
// of one block, for the tensor-core prefill tiles (matmul.cu's mt_body), which round them to
// bfloat16 anyway. Unlike Deq<T>::deq8 (byte loads, the CPU's exact float operations), the
// quants come in with the widest loads the type's block alignment `ALIGN` allows (the caller
// checks the weight base; whole-block rows keep every block aligned) and become floats through
// the PRMT + FMA of tlq_put4, error below 2^-17 of a quant step: two to three times fewer
// instructions than deq8 for the tile loader, which bounds those tiles.
// ---------------------------------------------------------------------------------------------

template <class T>
struct Fast8;

// The 32-value types: values 8t .. 8t + 7 (t = off / 8) are the low (t < 2) or high nibbles of
// qs bytes 8 (t & 1) .. + 7; their fifth bits are bits off .. off + 7 of qh.
template <>
struct Fast8<TQ4_0> {
    enum { ALIGN = 2 };
    static __device__ __forceinline__ void get8(const uint8_t* b, int off, float* v) {
        const tlq_ab k = tlq_coef(tl_h2f((uint16_t)tlq_h(b)), 8.f, 0.f);
        const uint8_t* q = b + 2 + (off & 8);
        const int sh = off & 16 ? 4 : 0;
        tlq_put4(v, (tlq_w2(q) >> sh) & 0x0F0F0F0Fu, k);
        tlq_put4(v + 4, (tlq_w2(q + 4) >> sh) & 0x0F0F0F0Fu, k);
    }
};
template <>
struct Fast8<TQ4_1> {
    enum { ALIGN = 4 };
    static __device__ __forceinline__ void get8(const uint8_t* b, int off, float* v) {
        const uint32_t dm = tlq_ldw4(b);
        const tlq_ab k = tlq_coef(tl_h2f((uint16_t)(dm & 0xFFFFu)), 0.f,
                                  tl_h2f((uint16_t)(dm >> 16)));
        const uint8_t* q = b + 4 + (off & 8);
        const int sh = off & 16 ? 4 : 0;
        tlq_put4(v, (tlq_ldw4(q) >> sh) & 0x0F0F0F0Fu, k);
        tlq_put4(v + 4, (tlq_ldw4(q + 4) >> sh) & 0x0F0F0F0Fu, k);
    }
};
// Fifth bits h (8 bits, value i's at bit i) put at bit 4 of 8 nibble bytes q0, q1.
static __device__ __forceinline__ void tlq_put8_q5(float* v, uint32_t q0, uint32_t q1, uint32_t h,
                                                   tlq_ab k) {
    tlq_put4(v, (q0 & 0x0F0F0F0Fu) | (tlq_spread4(h & 0xFu) << 4), k);
    tlq_put4(v + 4, (q1 & 0x0F0F0F0Fu) | (tlq_spread4((h >> 4) & 0xFu) << 4), k);
}
template <>
struct Fast8<TQ5_0> {
    enum { ALIGN = 2 };
    static __device__ __forceinline__ void get8(const uint8_t* b, int off, float* v) {
        const tlq_ab k = tlq_coef(tl_h2f((uint16_t)tlq_h(b)), 16.f, 0.f);
        const uint32_t qh = tlq_w2(b + 2);
        const uint8_t* q = b + 6 + (off & 8);
        const int sh = off & 16 ? 4 : 0;
        tlq_put8_q5(v, tlq_w2(q) >> sh, tlq_w2(q + 4) >> sh, qh >> off, k);
    }
};
template <>
struct Fast8<TQ5_1> {
    enum { ALIGN = 8 };
    static __device__ __forceinline__ void get8(const uint8_t* b, int off, float* v) {
        uint32_t dm, qh, q0, q1;
        tlq_ldw8(b, dm, qh);
        tlq_ldw8(b + 8 + (off & 8), q0, q1);
        const tlq_ab k = tlq_coef(tl_h2f((uint16_t)(dm & 0xFFFFu)), 0.f,
                                  tl_h2f((uint16_t)(dm >> 16)));
        const int sh = off & 16 ? 4 : 0;
        tlq_put8_q5(v, q0 >> sh, q1 >> sh, qh >> off, k);
    }
};
// Q8_0: signed bytes via 2^23 + (q + 128), one rounding (exact as deq8).
template <>
struct Fast8<TQ8_0> {
    enum { ALIGN = 2 };
    static __device__ __forceinline__ void get8(const uint8_t* b, int off, float* v) {
        const float d = tl_h2f((uint16_t)tlq_h(b));
#pragma unroll
        for (int i = 0; i < 2; ++i) {
            const uint32_t w = tlq_w2(b + 2 + off + 4 * i) ^ 0x80808080u;
#pragma unroll
            for (int e = 0; e < 4; ++e) v[4 * i + e] = (tlq_bf23(w, e) - 8388736.f) * d;
        }
    }
};
// The K-quants: off = 128 n + 32 k + l0 (n < 2, k < 4, l0 in 0, 8, 16, 24) for Q2_K, Q3_K and
// Q6_K, whose bytes hold value l of each of four 32-value groups; off = 32 j + l0 (sub-block j)
// for Q4_K and Q5_K. See Deq<T> above for the layouts.
template <>
struct Fast8<TQ2_K> {
    enum { ALIGN = 4 };
    static __device__ __forceinline__ void get8(const uint8_t* b, int off, float* v) {
        const int n = off >> 7, k = (off >> 5) & 3, l0 = off & 31;
        const int is = 8 * n + 2 * k + (l0 >> 4);  // scale byte
        const uint32_t sc = (tlq_ldw4(b + (is & ~3)) >> (8 * (is & 3))) & 0xFFu;
        const uint32_t dm = tlq_ldw4(b + 80);
        const float d = tl_h2f((uint16_t)(dm & 0xFFFFu)), dmin = tl_h2f((uint16_t)(dm >> 16));
        const tlq_ab c = tlq_coef(d * (float)(int)(sc & 0xFu), 0.f, -(dmin * (float)(int)(sc >> 4)));
        const uint8_t* q = b + 16 + 32 * n + l0;
        tlq_put4(v, (tlq_ldw4(q) >> (2 * k)) & 0x03030303u, c);
        tlq_put4(v + 4, (tlq_ldw4(q + 4) >> (2 * k)) & 0x03030303u, c);
    }
};
template <>
struct Fast8<TQ3_K> {
    enum { ALIGN = 2 };
    static __device__ __forceinline__ void get8(const uint8_t* b, int off, float* v) {
        const int n = off >> 7, k = (off >> 5) & 3, l0 = off & 31;
        const int is = 8 * n + 2 * k + (l0 >> 4);  // scale 0..15
        const uint32_t lo = (tlq_b(b + 96 + (is & 7)) >> (4 * (is >> 3))) & 0xFu;
        const uint32_t hi = (tlq_b(b + 104 + (is & 3)) >> (2 * (is >> 2))) & 3u;
        const float d = tl_h2f((uint16_t)tlq_h(b + 108));
        const tlq_ab c = tlq_coef(d * (float)((int)(lo | (hi << 4)) - 32), 4.f, 0.f);
        const int hb = 4 * n + k;
#pragma unroll
        for (int i = 0; i < 2; ++i) {
            const uint32_t q = tlq_w2(b + 32 + 32 * n + l0 + 4 * i);
            const uint32_t m = tlq_w2(b + l0 + 4 * i);
            tlq_put4(v + 4 * i, ((q >> (2 * k)) & 0x03030303u) | (((m >> hb) & 0x01010101u) << 2),
                     c);
        }
    }
};
// Q4_K / Q5_K: the coefficients of sub-block j from the block's 16-byte header (d, dmin, the 12
// scale bytes): d * sc_j * q - dmin * m_j.
static __device__ __forceinline__ tlq_ab tlq_coef_k4(const tlq_u4 hd, int j) {
    uint32_t sc, m;
    tlq_scale_min_k4(j, hd.y, hd.z, hd.w, sc, m);
    const float d = tl_h2f((uint16_t)(hd.x & 0xFFFFu)), dmin = tl_h2f((uint16_t)(hd.x >> 16));
    return tlq_coef(d * (float)(int)sc, 0.f, -(dmin * (float)(int)m));
}
template <>
struct Fast8<TQ4_K> {
    enum { ALIGN = 16 };
    static __device__ __forceinline__ void get8(const uint8_t* b, int off, float* v) {
        const int j = off >> 5, l0 = off & 31;
        const tlq_ab c = tlq_coef_k4(tlq_ldw16(b), j);
        uint32_t q0, q1;
        tlq_ldw8(b + 16 + 32 * (j >> 1) + l0, q0, q1);
        const int sh = 4 * (j & 1);
        tlq_put4(v, (q0 >> sh) & 0x0F0F0F0Fu, c);
        tlq_put4(v + 4, (q1 >> sh) & 0x0F0F0F0Fu, c);
    }
};
template <>
struct Fast8<TQ5_K> {
    enum { ALIGN = 16 };
    static __device__ __forceinline__ void get8(const uint8_t* b, int off, float* v) {
        const int j = off >> 5, l0 = off & 31;
        const tlq_ab c = tlq_coef_k4(tlq_ldw16(b), j);
        uint32_t q0, q1, h0, h1;
        tlq_ldw8(b + 16 + l0, h0, h1);
        tlq_ldw8(b + 48 + 32 * (j >> 1) + l0, q0, q1);
        const int sh = 4 * (j & 1);
        tlq_put4(v, ((q0 >> sh) & 0x0F0F0F0Fu) | (((h0 >> j) & 0x01010101u) << 4), c);
        tlq_put4(v + 4, ((q1 >> sh) & 0x0F0F0F0Fu) | (((h1 >> j) & 0x01010101u) << 4), c);
    }
};
template <>
struct Fast8<TQ6_K> {
    enum { ALIGN = 2 };
    static __device__ __forceinline__ void get8(const uint8_t* b, int off, float* v) {
        const int n = off >> 7, k = (off >> 5) & 3, l0 = off & 31;
        const int sc = (int)(int8_t)(uint8_t)tlq_b(b + 192 + 8 * n + 2 * k + (l0 >> 4));
        const tlq_ab c = tlq_coef(tl_h2f((uint16_t)tlq_h(b + 208)) * (float)sc, 32.f, 0.f);
        const int sh = 4 * (k >> 1);
#pragma unroll
        for (int i = 0; i < 2; ++i) {
            const uint32_t ql = tlq_w2(b + 64 * n + 32 * (k & 1) + l0 + 4 * i);
            const uint32_t qh = tlq_w2(b + 128 + 32 * n + l0 + 4 * i);
            tlq_put4(v + 4 * i, ((ql >> sh) & 0x0F0F0F0Fu) | (((qh >> (2 * k)) & 0x03030303u) << 4),
                     c);
        }
    }
};

// ---------------------------------------------------------------------------------------------
// Coalesced matvec layout ("layout C", the hot path). Lane L of a warp takes columns
// 128m + 4L .. 128m + 4L + 4 of every 128-column chunk m, so each 16-byte x load of the warp reads
// 512 contiguous bytes (perfectly coalesced L1 traffic, which is what bounds a matvec whose
// weights are 4-5 bits wide). decode4(blk, c, v) gives the 4 values at column offset c (a multiple
// of 4) of a 32-value block; the K-quants have their own row loops in matmul.cu.
// ---------------------------------------------------------------------------------------------

// Q4_0: qs bytes (c & 15) .. +4, low nibbles for c < 16, high for c >= 16.
struct McQ4_0 {
    enum { QK = 32, BYTES = 18, ALIGN = 2 };
    static __device__ __forceinline__ void decode4(const uint8_t* b, int c, float* v) {
        const float d = tl_h2f((uint16_t)tlq_h(b));
        const uint32_t q = tlq_w2(b + 2 + (c & 15));
        tlq_put4(v, (q >> (c & 16 ? 4 : 0)) & 0x0F0F0F0Fu, tlq_coef(d, 8.f, 0.f));
    }
};
// Q4_1: 20-byte blocks, 4-aligned (the layout-C path requires the base alignment).
struct McQ4_1 {
    enum { QK = 32, BYTES = 20, ALIGN = 4 };
    static __device__ __forceinline__ void decode4(const uint8_t* b, int c, float* v) {
        const uint32_t dm = tlq_ldw4(b);
        const float d = tl_h2f((uint16_t)(dm & 0xFFFFu)), m = tl_h2f((uint16_t)(dm >> 16));
        const uint32_t q = tlq_ldw4(b + 4 + (c & 15));
        tlq_put4(v, (q >> (c & 16 ? 4 : 0)) & 0x0F0F0F0Fu, tlq_coef(d, 0.f, m));
    }
};
// Q5_0: the 5th bits of columns c .. c + 4 are bits c .. c + 4 of qh.
struct McQ5_0 {
    enum { QK = 32, BYTES = 22, ALIGN = 2 };
    static __device__ __forceinline__ void decode4(const uint8_t* b, int c, float* v) {
        const float d = tl_h2f((uint16_t)tlq_h(b));
        const uint32_t qh = tlq_w2(b + 2);
        const uint32_t q = tlq_w2(b + 6 + (c & 15));
        const uint32_t hb = tlq_spread4((qh >> c) & 0xFu) << 4;
        tlq_put4(v, ((q >> (c & 16 ? 4 : 0)) & 0x0F0F0F0Fu) | hb, tlq_coef(d, 16.f, 0.f));
    }
};
// Q5_1: 24-byte blocks, 8-aligned.
struct McQ5_1 {
    enum { QK = 32, BYTES = 24, ALIGN = 8 };
    static __device__ __forceinline__ void decode4(const uint8_t* b, int c, float* v) {
        uint32_t dm, qh;
        tlq_ldw8(b, dm, qh);
        const float d = tl_h2f((uint16_t)(dm & 0xFFFFu)), m = tl_h2f((uint16_t)(dm >> 16));
        const uint32_t q = tlq_ldw4(b + 8 + (c & 15));
        const uint32_t hb = tlq_spread4((qh >> c) & 0xFu) << 4;
        tlq_put4(v, ((q >> (c & 16 ? 4 : 0)) & 0x0F0F0F0Fu) | hb, tlq_coef(d, 0.f, m));
    }
};
// Q8_0: signed bytes via 2^23 + (q + 128), exact.
struct McQ8_0 {
    enum { QK = 32, BYTES = 34, ALIGN = 2 };
    static __device__ __forceinline__ void decode4(const uint8_t* b, int c, float* v) {
        const float d = tl_h2f((uint16_t)tlq_h(b));
        const uint32_t q = tlq_w2(b + 2 + c) ^ 0x80808080u;
#pragma unroll
        for (int i = 0; i < 4; ++i) v[i] = (tlq_bf23(q, i) - 8388736.f) * d;
    }
};
