// profile.cu: the kernel profiler's hold (src/backend/cuda/profile.rs), not an op.
//
// Entry point (one block of one thread):
//   profile_hold  keeps the stream busy for `ns` nanoseconds of the GPU's global timer
//
// Why: the profiler times each kernel of a decode step by the events recorded between them. If
// the host enqueued them while the GPU ran them, a gap between two events would also hold the
// host's own launch latency. A step is queued behind this kernel instead, so by the time the
// hold ends every launch and event is waiting on the GPU and the events measure the kernels.

#include "prelude.cuh"

extern "C" __global__ void profile_hold(unsigned long long ns) {
    tl_kernel_start();
#ifndef TL_HOST_EMU
    // The host emulator runs kernels as they are launched, so there is nothing to hold there.
    unsigned long long t0, t;
    asm volatile("mov.u64 %0, %%globaltimer;" : "=l"(t0));
    do {
        asm volatile("nanosleep.u32 20000;");
        asm volatile("mov.u64 %0, %%globaltimer;" : "=l"(t));
    } while (t - t0 < ns);
#else
    (void)ns;
#endif
}
