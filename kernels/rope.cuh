// rope.cuh: which two elements of a head one RoPE pair rotates, and the rotation itself, as
// src/backend/cpu/rope.rs does it. Shared by rope.cu and attention.cu's fused RoPE + KV store.
#pragma once
#include "prelude.cuh"

#define ROPE_ADJACENT 0  // pairs (2i, 2i + 1): ggml "NORM"
#define ROPE_HALVES 1    // pairs (i, i + n_rot / 2): ggml "NEOX"

// Pair i (< n_rot / 2) of a head is elements a and b.
static __device__ __forceinline__ void rope_pair(int layout, int i, int half, int& a, int& b) {
    a = layout == ROPE_ADJACENT ? 2 * i : i;
    b = layout == ROPE_ADJACENT ? 2 * i + 1 : i + half;
}

// (x0, x1) rotated by (c, s).
static __device__ __forceinline__ void rope_rotate_pair(float x0, float x1, float c, float s,
                                                        float& y0, float& y1) {
    y0 = x0 * c - x1 * s;
    y1 = x0 * s + x1 * c;
}
