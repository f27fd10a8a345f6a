// tl_emu.h: what kernels/prelude.cuh takes from CUDA when the kernels are compiled as plain C++
// for the host CUDA emulator (tests/cuda_emu/driver.cpp, built by tools/cuda-emu.sh with
// -DTL_HOST_EMU). Every CUDA thread of a block is a fiber of one host thread; barriers and warp
// shuffles are calls into the emulator's scheduler, which runs the other fibers until every
// thread of the block (or of the warp) has reached the same barrier.
#pragma once

#include <math.h>
#include <stdint.h>
#include <string.h>

struct tlemu_dim3 {
    unsigned x, y, z;
};
// The running fiber's indices (the scheduler sets them before it resumes a fiber).
extern thread_local tlemu_dim3 threadIdx, blockIdx, blockDim, gridDim;

extern "C" void tlemu_sync_block();
extern "C" void tlemu_sync_warp();
extern "C" float tlemu_shfl_xor_f32(float v, int lane_mask);
extern "C" int tlemu_shfl_xor_i32(int v, int lane_mask);
// tl_warp_sum / tl_warp_max as one warp exchange (same butterfly, same result bits).
extern "C" float tlemu_warp_sum_f32(float v);
extern "C" float tlemu_warp_max_f32(float v);
// tl_mma_bf16_16816: one warp's tensor-core product, computed from every lane's fragments by
// the first lane through the warp barrier.
extern "C" void tlemu_mma_bf16_16816(float* c, const uint32_t* a, const uint32_t* b);
// tl_ldmatrix_x4: every lane's row address in, its four words out, through the warp barrier.
extern "C" void tlemu_ldmatrix_x4(uint32_t* r, const uint32_t* row);

#define __global__
#define __device__
#define __host__
// One copy per block: blocks of one launch run one at a time on each host thread, and every
// fiber of a block runs on the same host thread.
#define __shared__ static thread_local
#define __constant__
#define __forceinline__ inline

#define TL_SYNC() tlemu_sync_block()
#define TL_SYNCWARP() tlemu_sync_warp()
#define TL_SHFL_XOR(v, m) tlemu_shfl_xor_f32((v), (m))
#define TL_SHFL_XOR_I(v, m) tlemu_shfl_xor_i32((v), (m))
