// q8dot.cuh: the integer decode matvec's arithmetic (matmul.cu's `quantize_q8` and
// `matvec_q8_<t>`), written as pure per-lane functions over values already loaded, so that
// tests/cuda_build.rs can compile this very header for the host and check it against the CPU
// reference. The includer supplies uint8_t / uint32_t, `__device__`, `__forceinline__`,
// `tl_h2f`, `tl_dp4a_us`, `tl_f2i_rn` and `tl_rcp` (prelude.cuh on the device).
//
// Why integers: the float matvec spends three instructions per weight (a PRMT into a magic
// float, an FFMA for the block scale, an FFMA for the dot), 3.6 weight bytes per warp instruction
// for Q4_K, which leaves it bound by instruction issue on an H100 (docs/performance.md). With x
// rounded to int8 once per matvec, four 4-bit weights cost one LOP3 and one IDP4A.
//
// x in Q8 form (`quantize_q8`): per 32 consecutive values, q_i = round(x_i / d) in -127..127 with
// d = max |x_i| / 127, stored as `cols` int8 bytes followed by `cols / 32` float pairs (d, d * sum
// q_i). The CPU's K-quant dots round x to 8 bits as well (Q8_K, one scale per 256).
#pragma once

struct __attribute__((aligned(16))) tlq8_u4 {
    uint32_t x, y, z, w;
};
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
