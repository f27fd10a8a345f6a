// rope.cu: rotary position embedding, in place, as src/backend/cpu/rope.rs.
//
// The host computes the table `cs` = [n_tok][n_rot / 2][2] of (cos, sin), already multiplied by
// the attention factor, in f64 exactly like the CPU; the kernel only applies it, so both backends
// rotate by the same f32 values.
//
// Entry points:
//   rope_rotate  one thread per (token, head, pair), grid-stride; any block size.

#include "rope.cuh"

// x: [n_tok][n_heads * head_dim]; dims >= n_rot of each head are left untouched. Each pair is
// owned by exactly one thread (the pairs of a head are disjoint for both layouts).
extern "C" __global__ void rope_rotate(float* x, const float* cs, int n_tok, int n_heads,
                                       int head_dim, int n_rot, int layout) {
    tl_kernel_start();
    const int half = n_rot / 2;
    const int n = n_tok * n_heads * half;
    for (int idx = blockIdx.x * blockDim.x + threadIdx.x; idx < n;
         idx += gridDim.x * blockDim.x) {
        const int i = idx % half;
        const int th = idx / half;  // token * n_heads + head
        const int t = th / n_heads;
        const float c = cs[(t * half + i) * 2];
        const float s = cs[(t * half + i) * 2 + 1];
        float* hp = x + th * head_dim;
        int a, b;
        rope_pair(layout, i, half, a, b);
        rope_rotate_pair(hp[a], hp[b], c, s, hp[a], hp[b]);
    }
}
