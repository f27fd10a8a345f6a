// Host driver for kernels/q8dot.cuh (tests/cuda_build.rs builds and runs it): the integer decode
// matvec's arithmetic compiled for the CPU, each 32-lane step of the kernels in matmul.cu
// (`quantize_q8`, `matvec_q8_<t>`) replayed lane by lane with the kernels' own addressing and
// the header's own per-type load and dot functions.
//
//   q8dot IN OUT      IN:  u32 type (0 Q4_0, 1 Q4_1, 2 Q5_0, 3 Q5_1, 4 Q8_0, 5 Q4_K, 6 Q6_K, 7 Q5_K,
//                          8 Q2_K, 9 Q3_K),
//                          u32 rows, u32 cols, rows * cols / QK blocks, cols f32 of x
//                     OUT: the Q8 form of x (cols int8, then cols / 16 f32) and rows f32 of W x
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <vector>

// What prelude.cuh gives the header on the device, in plain C++.
#define __device__
#define __forceinline__ inline
static inline float tl_h2f(uint16_t h) {
    const uint32_t sign = (uint32_t)(h >> 15) << 31, exp = (h >> 10) & 0x1F, man = h & 0x3FF;
    float f;
    if (exp == 0) {
        f = std::ldexp((float)man, -24);
    } else if (exp == 31) {
        f = man ? NAN : INFINITY;
    } else {
        f = std::ldexp((float)(man | 0x400), (int)exp - 25);
    }
    return sign ? -f : f;
}
static inline float tl_bits_f32(uint32_t u) {
    float f;
    std::memcpy(&f, &u, 4);
    return f;
}
static inline int tl_dp4a_us(uint32_t a, uint32_t b, int c) {
    for (int k = 0; k < 4; ++k) c += (int)((a >> (8 * k)) & 0xFF) * (int)(int8_t)(b >> (8 * k));
    return c;
}
static inline int tl_dp4a_ss(uint32_t a, uint32_t b, int c) {
    for (int k = 0; k < 4; ++k) c += (int)(int8_t)(a >> (8 * k)) * (int)(int8_t)(b >> (8 * k));
    return c;
}
static inline int tl_f2i_rn(float x) { return (int)std::nearbyint(x); }  // ties to even
static inline float tl_rcp(float x) { return 1.0f / x; }
struct tl_u4 {
    uint32_t x, y, z, w;
};
// The device loads, with the alignment each requires checked: a misaligned load would fault on
// the GPU.
static void need_aligned(const uint8_t* p, uintptr_t a) {
    if ((uintptr_t)p % a != 0) {
        std::fprintf(stderr, "load of %zu bytes at a misaligned address\n", (size_t)a);
        std::exit(3);
    }
}
static inline tl_u4 tl_ldnc16(const uint8_t* p) {
    need_aligned(p, 16);
    tl_u4 v;
    std::memcpy(&v, p, 16);
    return v;
}
static inline void tl_ldnc8(const uint8_t* p, uint32_t& a, uint32_t& b) {
    need_aligned(p, 8);
    std::memcpy(&a, p, 4);
    std::memcpy(&b, p + 4, 4);
}
static inline uint32_t tl_ldnc4(const uint8_t* p) {
    need_aligned(p, 4);
    uint32_t v;
    std::memcpy(&v, p, 4);
    return v;
}
static inline uint32_t tl_ldnc2(const uint8_t* p) {
    need_aligned(p, 2);
    uint16_t v;
    std::memcpy(&v, p, 2);
    return v;
}

#include "q8dot.cuh"

// W x for one type: lane LANES (b % (32 / LANES)) + p takes part p of block b, its blocks in
// increasing order as in the kernel's passes; the warp's lanes then summed.
template <class T>
static void matvec(const uint8_t* w, const uint8_t* xq, uint32_t rows, uint32_t cols, float* y) {
    const size_t nb = cols / T::QK, bps = 32 / T::LANES;
    for (uint32_t r = 0; r < rows; ++r) {
        const uint8_t* wr = w + (size_t)r * nb * T::BYTES;
        float lanes[32] = {0};
        for (size_t blk = 0; blk < nb; ++blk) {
            for (int p = 0; p < T::LANES; ++p) {
                const typename T::W wv = T::load(wr + blk * T::BYTES, p);
                lanes[(blk % bps) * T::LANES + p] += T::dot(wv, xq, (int)cols, (int)blk, p);
            }
        }
        float s = 0.f;
        for (int lane = 0; lane < 32; ++lane) s += lanes[lane];
        y[r] = s;
    }
}

int main(int argc, char** argv) {
    if (argc != 3) {
        std::fprintf(stderr, "usage: q8dot IN OUT\n");
        return 2;
    }
    FILE* in = std::fopen(argv[1], "rb");
    if (!in) return 2;
    uint32_t ty = 0, rows = 0, cols = 0;
    if (std::fread(&ty, 4, 1, in) != 1 || std::fread(&rows, 4, 1, in) != 1 ||
        std::fread(&cols, 4, 1, in) != 1 || ty > 9)
        return 2;
    static const size_t qk[10] = {32, 32, 32, 32, 32, 256, 256, 256, 256, 256};
    static const size_t bytes[10] = {18, 20, 22, 24, 34, 144, 210, 176, 84, 110};
    if (cols % qk[ty]) return 2;
    const size_t wbytes = (size_t)rows * (cols / qk[ty]) * bytes[ty];
    // Both buffers start 256-byte aligned, as the device allocations do.
    std::vector<uint8_t> wbuf(wbytes + 256);
    uint8_t* w = wbuf.data() + (256 - (uintptr_t)wbuf.data() % 256) % 256;
    std::vector<float> x(cols);
    if (std::fread(w, 1, wbytes, in) != wbytes) return 2;
    if (std::fread(x.data(), 4, cols, in) != cols) return 2;
    std::fclose(in);

    // quantize_q8: one warp per 32 values; lane values reduced exactly as the shuffles would.
    const size_t xq_len = cols + 4 * (cols / 16);
    std::vector<uint8_t> xqbuf(xq_len + 256);
    uint8_t* xq = xqbuf.data() + (256 - (uintptr_t)xqbuf.data() % 256) % 256;
    std::vector<float> ds_out(cols / 16);
    for (uint32_t g = 0; g < cols / 32; ++g) {
        float amax = 0.f;
        for (int lane = 0; lane < 32; ++lane) amax = std::fmax(amax, std::fabs(x[32 * g + lane]));
        float d, id;
        tlq8_scale(amax, d, id);
        float sum = 0.f;
        for (int lane = 0; lane < 32; ++lane) {
            const int q = tlq8_quant(x[32 * g + lane], id);
            sum += (float)q;
            xq[32 * g + lane] = (uint8_t)(int8_t)q;
        }
        ds_out[2 * g] = d;
        ds_out[2 * g + 1] = d * sum;
    }
    std::memcpy(xq + cols, ds_out.data(), 4 * ds_out.size());

    std::vector<float> y(rows);
    switch (ty) {
        case 0: matvec<Q8Q4_0>(w, xq, rows, cols, y.data()); break;
        case 1: matvec<Q8Q4_1>(w, xq, rows, cols, y.data()); break;
        case 2: matvec<Q8Q5_0>(w, xq, rows, cols, y.data()); break;
        case 3: matvec<Q8Q5_1>(w, xq, rows, cols, y.data()); break;
        case 4: matvec<Q8Q8_0>(w, xq, rows, cols, y.data()); break;
        case 5: matvec<Q8Q4_K>(w, xq, rows, cols, y.data()); break;
        case 6: matvec<Q8Q6_K>(w, xq, rows, cols, y.data()); break;
        case 7: matvec<Q8Q5_K>(w, xq, rows, cols, y.data()); break;
        case 8: matvec<Q8Q2_K>(w, xq, rows, cols, y.data()); break;
        default: matvec<Q8Q3_K>(w, xq, rows, cols, y.data()); break;
    }

    FILE* out = std::fopen(argv[2], "wb");
    if (!out) return 2;
    std::fwrite(xq, 1, xq_len, out);
    std::fwrite(y.data(), 4, rows, out);
    std::fclose(out);
    return 0;
}
