// Host driver for kernels/q8dot.cuh (tests/cuda_build.rs builds and runs it): the integer decode
// matvec's arithmetic compiled for the CPU, each 32-lane step of the kernels in matmul.cu
// (`quantize_q8`, `matvec_q8_q4_k`) replayed lane by lane with the kernels' own addressing.
//
//   q8dot IN OUT      IN:  u32 rows, u32 cols, rows * cols / 256 Q4_K blocks, cols f32 of x
//                     OUT: the Q8 form of x (cols int8, then cols / 16 f32) and rows f32 of W x
#include <cmath>
#include <cstdint>
#include <cstdio>
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
static inline int tl_dp4a_us(uint32_t a, uint32_t b, int c) {
    for (int k = 0; k < 4; ++k) c += (int)((a >> (8 * k)) & 0xFF) * (int)(int8_t)(b >> (8 * k));
    return c;
}
static inline int tl_f2i_rn(float x) { return (int)std::nearbyint(x); }  // ties to even
static inline float tl_rcp(float x) { return 1.0f / x; }

#include "q8dot.cuh"

int main(int argc, char** argv) {
    if (argc != 3) {
        std::fprintf(stderr, "usage: q8dot IN OUT\n");
        return 2;
    }
    FILE* in = std::fopen(argv[1], "rb");
    if (!in) return 2;
    uint32_t rows = 0, cols = 0;
    if (std::fread(&rows, 4, 1, in) != 1 || std::fread(&cols, 4, 1, in) != 1 || cols % 256) return 2;
    const size_t nb = cols / 256, wbytes = (size_t)rows * nb * 144;
    std::vector<uint8_t> w(wbytes);
    std::vector<float> x(cols);
    if (std::fread(w.data(), 1, wbytes, in) != wbytes) return 2;
    if (std::fread(x.data(), 4, cols, in) != cols) return 2;
    std::fclose(in);

    // quantize_q8: one warp per 32 values; lane values reduced exactly as the shuffles would.
    std::vector<uint8_t> xq(cols + 4 * (cols / 16));
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
    std::memcpy(xq.data() + cols, ds_out.data(), 4 * ds_out.size());

    // matvec_q8_q4_k: lane 4b + p of a pass takes block 8k + b; the same loads as the kernel.
    // The kernel's ds[i] and xv[i]: 16-byte words of the Q8 form (copied out, no aliasing).
    auto ds = [&](size_t i) {
        tlq8_f4 v;
        std::memcpy(&v, xq.data() + cols + 16 * i, 16);
        return v;
    };
    auto xv = [&](size_t i) {
        tlq8_u4 v;
        std::memcpy(&v, xq.data() + 16 * i, 16);
        return v;
    };
    std::vector<float> y(rows);
    for (uint32_t r = 0; r < rows; ++r) {
        const uint8_t* wr = w.data() + (size_t)r * nb * 144;
        float lanes[32] = {0};
        for (size_t b0 = 0; b0 < nb; b0 += 8) {
            for (int lane = 0; lane < 32; ++lane) {
                const int bsel = lane >> 2, p = lane & 3;
                const size_t blk = b0 + bsel;
                if (blk >= nb) continue;
                const uint8_t* bp = wr + blk * 144;
                const int qoff = 16 + 32 * p;
                tlq8_u4 hd, q0, q1;
                std::memcpy(&hd, bp, 16);
                std::memcpy(&q0, bp + qoff, 16);
                std::memcpy(&q1, bp + qoff + 16, 16);
                const size_t pair = 4 * blk + p;
                lanes[lane] += tlq8_q4k_lane(hd, q0, q1, xv(4 * pair), xv(4 * pair + 1),
                                             xv(4 * pair + 2), xv(4 * pair + 3), ds(pair), p);
            }
        }
        float s = 0.f;
        for (int lane = 0; lane < 32; ++lane) s += lanes[lane];
        y[r] = s;
    }

    FILE* out = std::fopen(argv[2], "wb");
    if (!out) return 2;
    std::fwrite(xq.data(), 1, xq.size(), out);
    std::fwrite(y.data(), 4, rows, out);
    std::fclose(out);
    return 0;
}
