// driver.cpp: a host emulator of the CUDA driver API, built with the kernels into a `libcuda.so`
// (tools/cuda-emu.sh). With it first on LD_LIBRARY_PATH, cudarc and the CUDA backend run
// unchanged on a machine without a GPU, and every kernel of kernels/*.cu runs for real: the same
// source, compiled as C++ (-DTL_HOST_EMU), with the launch shapes, arguments, buffers and graph
// replays that the backend chooses.
//
// What it checks: kernel logic (indexing, block and warp cooperation, reductions, quant decoding,
// bounds), the backend's launch parameters and buffer handling, and graph capture and replay.
// What it cannot check: timing, the memory model of a real GPU (every launch runs to completion
// before the call returns, and the threads of a block run one after another between barriers),
// the PTX itself (tests/cuda_build.rs has NVIDIA's ptxas assemble it) and ex2.approx's rounding.
//
// How a launch runs: the grid's blocks are shared out between host threads (TLEMU_THREADS, by
// default one per core). A block's threads are fibers of one host thread, run in order until each
// finishes or reaches a barrier (`__syncthreads`, `__syncwarp`, or a shuffle, which is a write, a
// warp barrier, a read and a second warp barrier); a barrier releases when every live thread of
// the block (or warp) waits at it. Threads waiting at different barriers is a deadlock on a GPU
// too; it is reported and the process aborts.
//
// Kernels are found by name: the PTX handed to cuModuleLoadData lists each `.entry` with its
// parameter types (.u64, .u32, .f32), and libffi calls the host function of the same name.
#include <dlfcn.h>
#include <signal.h>
#include <ffi.h>
#include <sys/mman.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <map>
#include <memory>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

#include "tl_emu.h"

// ---------------------------------------------------------------------------------------------
// Driver types (ABI-compatible with cuda.h: handles are pointers, CUdeviceptr a 64-bit integer).
// ---------------------------------------------------------------------------------------------

typedef int CUresult;
typedef int CUdevice;
typedef unsigned long long CUdeviceptr;
struct Module;
struct Func;
struct Stream;
struct Graph;
struct Event {
    std::chrono::steady_clock::time_point at;
};
typedef void* CUcontext;
typedef Module* CUmodule;
typedef Func* CUfunction;
typedef Stream* CUstream;
typedef Event* CUevent;
typedef Graph* CUgraph;
typedef Graph* CUgraphExec;

enum : CUresult {
    OK = 0,
    ERR_INVALID_VALUE = 1,
    ERR_OUT_OF_MEMORY = 2,
    ERR_INVALID_DEVICE = 101,
    ERR_INVALID_IMAGE = 200,
    ERR_INVALID_HANDLE = 400,
    ERR_NOT_FOUND = 500,
    ERR_STREAM_CAPTURE_UNSUPPORTED = 900,
    ERR_NOT_SUPPORTED = 801,
};

static const char* const DEVICE_NAME = "torchless CUDA emulator (host CPU)";

[[noreturn]] static void fatal(const char* what, const char* detail) {
    std::fprintf(stderr, "cuda-emu: %s%s%s\n", what, detail ? ": " : "", detail ? detail : "");
    std::abort();
}

// ---------------------------------------------------------------------------------------------
// Fibers: one stack and saved stack pointer per CUDA thread of a block.
// ---------------------------------------------------------------------------------------------

#if !defined(__x86_64__)
#error "the CUDA emulator's fiber switch is written for x86-64"
#endif

// tlemu_switch(save, to): push the callee-saved registers, store the stack pointer in *save, load
// `to`, pop the same from there and return into that context. (The SSE and x87 control words are
// not switched: nothing here changes rounding modes.)
// A new fiber's stack is laid out so that its first switch returns into tlemu_fiber_entry, which
// calls the function in r13 with the argument in r12.
extern "C" void tlemu_switch(void** save, void* to);
extern "C" void tlemu_fiber_entry();
asm(R"(
    .text
    .globl tlemu_switch
    .hidden tlemu_switch
    .type tlemu_switch, @function
tlemu_switch:
    pushq %rbp
    pushq %rbx
    pushq %r12
    pushq %r13
    pushq %r14
    pushq %r15
    movq %rsp, (%rdi)
    movq %rsi, %rsp
    popq %r15
    popq %r14
    popq %r13
    popq %r12
    popq %rbx
    popq %rbp
    ret
    .size tlemu_switch, .-tlemu_switch

    .globl tlemu_fiber_entry
    .hidden tlemu_fiber_entry
    .type tlemu_fiber_entry, @function
tlemu_fiber_entry:
    movq %r12, %rdi
    callq *%r13
    ud2
    .size tlemu_fiber_entry, .-tlemu_fiber_entry
)");

// Room for the kernels' per-thread arrays (attention keeps a head's accumulators per thread).
static const size_t STACK_BYTES = 256 * 1024;

enum class Wait { Ready, Block, Warp, Done };

struct Fiber {
    void* sp = nullptr;
    char* stack = nullptr;
    tlemu_dim3 tid{};
    unsigned lane = 0, warp = 0;
    Wait state = Wait::Ready;
    uint64_t collectives = 0;  // warp reductions this thread has entered
};

struct Func {
    std::string name;
    void (*fn)() = nullptr;
    std::vector<ffi_type*> types;
    std::vector<size_t> sizes;
    ffi_cif cif;
    // Whether its PTX body waits for the grids before it (`griddepcontrol.wait`), which a
    // kernel launched with programmatic stream serialization must do.
    bool waits = false;
};

struct Launch {
    Func* f;
    tlemu_dim3 grid, block;
    void** args;
};

thread_local tlemu_dim3 threadIdx, blockIdx, blockDim, gridDim;

// A warp's exchange area: one word per lane for shuffles, and a reduction's inputs and results.
struct WarpArea {
    uint32_t slot[32];
    float in[32], out[32];
    uint64_t reduced = 0;  // the `collectives` count whose results `out` holds
    // tlemu_mma_bf16_16816: every lane's fragments in, its accumulators out.
    uint32_t mma_a[32][4], mma_b[32][2];
    float mma_c[32][4];
    // tlemu_ldmatrix_x4: every lane's row address.
    const uint32_t* ldm_row[32];
};

// The fibers of the block this host thread runs, and the scheduler's own saved context.
struct BlockRunner {
    std::vector<Fiber> fibers;
    std::vector<WarpArea> warps;
    void* sched_sp = nullptr;
    Fiber* cur = nullptr;
    const Launch* launch = nullptr;

    void run(const Launch& l, tlemu_dim3 block_idx);
    void resume(Fiber& f) {
        cur = &f;
        threadIdx = f.tid;
        tlemu_switch(&sched_sp, f.sp);
    }
};
// One per host thread, never freed (pool threads live for the process).
static thread_local BlockRunner* runner_tls;
static BlockRunner& runner() {
    if (!runner_tls) runner_tls = new BlockRunner();
    return *runner_tls;
}

static void fiber_main(Fiber* f) {
    BlockRunner& r = runner();
    ffi_call(&r.launch->f->cif, r.launch->f->fn, nullptr, r.launch->args);
    f->state = Wait::Done;
    tlemu_switch(&f->sp, r.sched_sp);
    fatal("a finished fiber was resumed", nullptr);
}

static void fiber_reset(Fiber& f, unsigned color) {
    if (!f.stack) {
        void* m = mmap(nullptr, STACK_BYTES, PROT_READ | PROT_WRITE,
                       MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
        if (m == MAP_FAILED) fatal("cannot map a fiber stack", nullptr);
        f.stack = (char*)m;
    }
    // The frame tlemu_switch pops: r15, r14, r13 (function), r12 (argument), rbx, rbp, return
    // address; 16-byte aligned where tlemu_fiber_entry makes its call. Stack tops are staggered
    // (`color`) so that the fibers' hot frames do not all fall into the same cache sets.
    uintptr_t top = (uintptr_t)(f.stack + STACK_BYTES) - 16 - (uintptr_t)color * 208;
    top &= ~(uintptr_t)15;
    uint64_t* p = (uint64_t*)(top - 56);
    p[0] = p[1] = 0;
    p[2] = (uint64_t)(uintptr_t)&fiber_main;
    p[3] = (uint64_t)(uintptr_t)&f;
    p[4] = p[5] = 0;
    p[6] = (uint64_t)(uintptr_t)&tlemu_fiber_entry;
    f.sp = p;
    f.state = Wait::Ready;
    f.collectives = 0;
}

// Warp by warp: run a warp's threads in order until none is ready, releasing its warp barriers
// as they fill; then the next warp. When no warp can move, every live thread must be at the
// block barrier, which then releases.
void BlockRunner::run(const Launch& l, tlemu_dim3 block_idx) {
    const unsigned n = l.block.x * l.block.y * l.block.z;
    const unsigned nwarps = (n + 31) / 32;
    if (fibers.size() < n) fibers.resize(n);
    if (warps.size() < nwarps) warps.resize(nwarps);
    launch = &l;
    for (unsigned i = 0; i < n; ++i) {
        Fiber& f = fibers[i];
        fiber_reset(f, i % 256);
        f.tid = {i % l.block.x, (i / l.block.x) % l.block.y, i / (l.block.x * l.block.y)};
        f.lane = i % 32;
        f.warp = i / 32;
    }
    for (unsigned w = 0; w < nwarps; ++w) warps[w].reduced = 0;
    blockIdx = block_idx;
    blockDim = l.block;
    gridDim = l.grid;
    for (;;) {
        unsigned live = 0, at_block = 0;
        for (unsigned w = 0; w < nwarps; ++w) {
            Fiber* lanes = &fibers[32 * w];
            const unsigned nl = std::min(32u, n - 32 * w);
            for (;;) {
                for (unsigned i = 0; i < nl; ++i)
                    if (lanes[i].state == Wait::Ready) resume(lanes[i]);
                unsigned wl = 0, at_warp = 0;
                for (unsigned i = 0; i < nl; ++i) {
                    wl += lanes[i].state != Wait::Done;
                    at_warp += lanes[i].state == Wait::Warp;
                }
                if (wl == 0 || at_warp != wl) break;
                for (unsigned i = 0; i < nl; ++i) lanes[i].state = lanes[i].state == Wait::Warp ? Wait::Ready : lanes[i].state;
            }
            for (unsigned i = 0; i < nl; ++i) {
                live += lanes[i].state != Wait::Done;
                at_block += lanes[i].state == Wait::Block;
            }
        }
        if (live == 0) break;
        if (at_block != live) fatal("threads of one block wait at different barriers", l.f->name.c_str());
        for (unsigned i = 0; i < n; ++i)
            if (fibers[i].state == Wait::Block) fibers[i].state = Wait::Ready;
    }
    cur = nullptr;
}

static Fiber* wait_at(Wait w) {
    BlockRunner& r = runner();
    Fiber* f = r.cur;
    if (!f) fatal("a barrier was reached outside a kernel", nullptr);
    f->state = w;
    tlemu_switch(&f->sp, r.sched_sp);
    return f;
}

extern "C" void tlemu_sync_block() { wait_at(Wait::Block); }
extern "C" void tlemu_sync_warp() { wait_at(Wait::Warp); }

static uint32_t shfl_xor(uint32_t v, int lane_mask) {
    BlockRunner& r = runner();
    Fiber* f = r.cur;
    WarpArea& w = r.warps[f->warp];
    w.slot[f->lane] = v;
    wait_at(Wait::Warp);
    const uint32_t out = w.slot[(f->lane ^ (unsigned)lane_mask) & 31];
    wait_at(Wait::Warp);
    return out;
}
extern "C" float tlemu_shfl_xor_f32(float v, int lane_mask) {
    uint32_t u;
    std::memcpy(&u, &v, 4);
    u = shfl_xor(u, lane_mask);
    std::memcpy(&v, &u, 4);
    return v;
}
extern "C" int tlemu_shfl_xor_i32(int v, int lane_mask) {
    return (int)shfl_xor((uint32_t)v, lane_mask);
}

// tl_warp_sum / tl_warp_max in one exchange instead of five shuffles: the first lane through
// the barrier computes every lane's result with the butterfly's own operations in its order
// (`v = op(v, shfl_xor(v, m))` for m = 16, 8, 4, 2, 1), so results are bit for bit the same.
template <bool MAX>
static float warp_reduce(float v) {
    BlockRunner& r = runner();
    Fiber* f = r.cur;
    WarpArea& w = r.warps[f->warp];
    const uint64_t id = ++f->collectives;
    w.in[f->lane] = v;
    wait_at(Wait::Warp);
    if (w.reduced != id) {
        float cur[32], next[32];
        std::memcpy(cur, w.in, sizeof cur);
        for (unsigned m = 16; m > 0; m >>= 1) {
            for (unsigned i = 0; i < 32; ++i) {
                const float a = cur[i], b = cur[i ^ m];
                next[i] = MAX ? (a > b ? a : b) : a + b;
            }
            std::memcpy(cur, next, sizeof cur);
        }
        std::memcpy(w.out, cur, sizeof cur);
        w.reduced = id;
    }
    const float out = w.out[f->lane];
    wait_at(Wait::Warp);
    return out;
}
// mma.m16n8k16 with bfloat16 inputs and f32 accumulators (layout in prelude.cuh). Each
// bfloat16 product is exact in f32; they are summed in K order and then added to C (the
// hardware's internal order and rounding differ in the last bits, within the tests' bounds).
extern "C" void tlemu_mma_bf16_16816(float* c, const uint32_t* a, const uint32_t* b) {
    BlockRunner& r = runner();
    Fiber* f = r.cur;
    WarpArea& w = r.warps[f->warp];
    const uint64_t id = ++f->collectives;
    std::memcpy(w.mma_a[f->lane], a, sizeof w.mma_a[0]);
    std::memcpy(w.mma_b[f->lane], b, sizeof w.mma_b[0]);
    std::memcpy(w.mma_c[f->lane], c, sizeof w.mma_c[0]);
    wait_at(Wait::Warp);
    if (w.reduced != id) {
        const auto bf = [](uint32_t word, int hi) {
            const uint32_t u = (hi ? word >> 16 : word & 0xffffu) << 16;
            float v;
            std::memcpy(&v, &u, 4);
            return v;
        };
        // A[m][k] and B[k][n] from the fragments' owners (lane 4g + t holds row / column g,
        // K words t and t + 4).
        float A[16][16], B[16][8];
        for (int lane = 0; lane < 32; ++lane) {
            const int g = lane / 4, t = lane % 4;
            for (int reg = 0; reg < 4; ++reg) {
                const int m = g + 8 * (reg % 2), k = 2 * t + 8 * (reg / 2);
                A[m][k] = bf(w.mma_a[lane][reg], 0);
                A[m][k + 1] = bf(w.mma_a[lane][reg], 1);
            }
            for (int reg = 0; reg < 2; ++reg) {
                const int k = 2 * t + 8 * reg;
                B[k][g] = bf(w.mma_b[lane][reg], 0);
                B[k + 1][g] = bf(w.mma_b[lane][reg], 1);
            }
        }
        float D[32][4];
        for (int lane = 0; lane < 32; ++lane) {
            const int g = lane / 4, t = lane % 4;
            for (int reg = 0; reg < 4; ++reg) {
                const int m = g + 8 * (reg / 2), n = 2 * t + reg % 2;
                float s = 0.f;
                for (int k = 0; k < 16; ++k) s += A[m][k] * B[k][n];
                D[lane][reg] = w.mma_c[lane][reg] + s;
            }
        }
        std::memcpy(w.mma_c, D, sizeof D);
        w.reduced = id;
    }
    std::memcpy(c, w.mma_c[f->lane], sizeof w.mma_c[0]);
    wait_at(Wait::Warp);
}
// ldmatrix.sync.aligned.m8n8.x4.b16 (layout in prelude.cuh): lane l gets word l % 4 of row
// l / 4 of each of the four 8 x 8 matrices, whose row i lane 8 j + i names. Rows must be
// 16-byte aligned, as on the GPU. Every lane reads the block's shared memory directly (the
// fibers of a block share one host thread); the second barrier keeps the addresses until all
// have read.
extern "C" void tlemu_ldmatrix_x4(uint32_t* r, const uint32_t* row) {
    BlockRunner& br = runner();
    Fiber* f = br.cur;
    WarpArea& w = br.warps[f->warp];
    if ((uintptr_t)row % 16 != 0) {
        std::fprintf(stderr, "cuda-emu: ldmatrix row address %p is not 16-byte aligned\n",
                     (const void*)row);
        std::abort();
    }
    w.ldm_row[f->lane] = row;
    wait_at(Wait::Warp);
    for (int j = 0; j < 4; ++j) r[j] = w.ldm_row[8 * j + f->lane / 4][f->lane % 4];
    wait_at(Wait::Warp);
}
extern "C" float tlemu_warp_sum_f32(float v) { return warp_reduce<false>(v); }
extern "C" float tlemu_warp_max_f32(float v) { return warp_reduce<true>(v); }

// ---------------------------------------------------------------------------------------------
// Grids: blocks shared out between the calling thread and a pool of host threads.
// ---------------------------------------------------------------------------------------------

struct Pool {
    std::mutex m;
    std::condition_variable wake, done;
    std::vector<std::thread> threads;
    const Launch* job = nullptr;
    uint64_t generation = 0;
    size_t finished = 0;  // pool threads through with the current generation
    std::atomic<uint64_t> next{0};
    uint64_t total = 0;

    Pool() {
        unsigned n = std::thread::hardware_concurrency();
        if (const char* e = std::getenv("TLEMU_THREADS")) n = (unsigned)std::atoi(e);
        for (unsigned i = 1; i < std::max(1u, n); ++i) threads.emplace_back([this] { serve(); });
    }
    void run_blocks(const Launch& l) {
        const tlemu_dim3 g = l.grid;
        for (;;) {
            const uint64_t b = next.fetch_add(1);
            if (b >= total) return;
            runner().run(l, {(unsigned)(b % g.x), (unsigned)((b / g.x) % g.y),
                           (unsigned)(b / ((uint64_t)g.x * g.y))});
        }
    }
    // Pool threads live for the process (blocked here at exit is fine).
    void serve() {
        uint64_t seen = 0;
        for (;;) {
            const Launch* l;
            {
                std::unique_lock<std::mutex> lk(m);
                wake.wait(lk, [&] { return generation != seen; });
                seen = generation;
                l = job;
            }
            run_blocks(*l);
            std::lock_guard<std::mutex> lk(m);
            if (++finished == threads.size()) done.notify_all();
        }
    }
    // Every pool thread takes part in every launch (it may find no block left), so none can
    // still be looking at this launch when the next one is published.
    void launch(const Launch& l) {
        const uint64_t blocks = (uint64_t)l.grid.x * l.grid.y * l.grid.z;
        if (blocks == 1 || threads.empty()) {
            total = blocks;
            next = 0;
            run_blocks(l);
            return;
        }
        {
            std::lock_guard<std::mutex> lk(m);
            total = blocks;
            next = 0;
            job = &l;
            finished = 0;
            ++generation;
        }
        wake.notify_all();
        run_blocks(l);
        std::unique_lock<std::mutex> lk(m);
        done.wait(lk, [&] { return finished == threads.size(); });
    }
};
static std::mutex launch_lock;  // one launch at a time: the pool has one job slot
static Pool& pool() {
    static Pool* p = new Pool();
    return *p;
}

// ---------------------------------------------------------------------------------------------
// Modules: PTX entries matched to the host functions of the same name.
// ---------------------------------------------------------------------------------------------

struct Module {
    std::map<std::string, std::unique_ptr<Func>> funcs;
};

// The `.entry` names of a PTX text with their parameter types.
static bool parse_ptx(const char* ptx, Module& m) {
    const std::string s(ptx);
    size_t at = 0;
    while ((at = s.find(".entry ", at)) != std::string::npos) {
        at += 7;
        const size_t open = s.find('(', at), close = s.find(')', at);
        if (open == std::string::npos || close == std::string::npos || close < open) return false;
        auto f = std::make_unique<Func>();
        f->name = s.substr(at, open - at);
        while (!f->name.empty() && std::isspace((unsigned char)f->name.back())) f->name.pop_back();
        size_t p = open;
        while ((p = s.find(".param ", p)) != std::string::npos && p < close) {
            p += 7;
            const std::string ty = s.substr(p, 4);
            if (ty == ".u64" || ty == ".b64" || ty == ".s64") {
                f->types.push_back(&ffi_type_uint64);
                f->sizes.push_back(8);
            } else if (ty == ".u32" || ty == ".b32" || ty == ".s32") {
                f->types.push_back(&ffi_type_uint32);
                f->sizes.push_back(4);
            } else if (ty == ".f32") {
                f->types.push_back(&ffi_type_float);
                f->sizes.push_back(4);
            } else {
                std::fprintf(stderr, "cuda-emu: kernel %s: parameter type %s is not emulated\n",
                             f->name.c_str(), ty.c_str());
                return false;
            }
        }
        // The body: from this entry's parameters to the next entry (or the end).
        const size_t next = s.find(".entry ", close);
        const size_t wait = s.find("griddepcontrol.wait;", close);
        f->waits = wait != std::string::npos && (next == std::string::npos || wait < next);
        m.funcs[f->name] = std::move(f);
        at = close;
    }
    return true;
}

// ---------------------------------------------------------------------------------------------
// Streams and graphs: work runs when it is issued, unless the stream is capturing, in which case
// it is recorded (arguments copied, as the driver does) and replayed by cuGraphLaunch.
// ---------------------------------------------------------------------------------------------

struct Op {
    enum Kind { Kernel, Copy, Fill } kind = Kernel;
    Func* f = nullptr;
    tlemu_dim3 grid{}, block{};
    std::vector<std::vector<uint8_t>> args;
    void* dst = nullptr;
    const void* src = nullptr;
    size_t bytes = 0;
    unsigned char value = 0;
};
struct Graph {
    std::vector<Op> ops;
};
struct Stream {
    Graph* capture = nullptr;
};
static Stream default_stream;
static Stream* stream_of(CUstream s) { return s ? s : &default_stream; }

static void run_kernel(Func* f, tlemu_dim3 grid, tlemu_dim3 block, void** args) {
    if ((uint64_t)grid.x * grid.y * grid.z == 0 || (uint64_t)block.x * block.y * block.z == 0) return;
    Launch l{f, grid, block, args};
    std::lock_guard<std::mutex> lk(launch_lock);
    pool().launch(l);
}

static void run_op(const Op& op) {
    switch (op.kind) {
    case Op::Kernel: {
        std::vector<void*> argv;
        for (const auto& a : op.args) argv.push_back((void*)a.data());
        run_kernel(op.f, op.grid, op.block, argv.data());
        break;
    }
    case Op::Copy:
        std::memmove(op.dst, op.src, op.bytes);
        break;
    case Op::Fill:
        std::memset(op.dst, op.value, op.bytes);
        break;
    }
}

static CUresult issue(CUstream s, Op op) {
    Stream* st = stream_of(s);
    if (st->capture)
        st->capture->ops.push_back(std::move(op));
    else
        run_op(op);
    return OK;
}
// A copy (src set) or a fill (value) of n bytes at dst.
static CUresult memory_op(CUstream s, Op::Kind kind, void* dst, const void* src, unsigned char value, size_t n) {
    Op op;
    op.kind = kind;
    op.dst = dst;
    op.src = src;
    op.value = value;
    op.bytes = n;
    return issue(s, std::move(op));
}
static CUresult copy(CUstream s, void* dst, const void* src, size_t n) {
    return memory_op(s, Op::Copy, dst, src, 0, n);
}
static CUresult fill(CUstream s, void* dst, unsigned char v, size_t n) {
    return memory_op(s, Op::Fill, dst, nullptr, v, n);
}
// Copies between host and device memory cannot be captured (the driver refuses them for
// pageable host memory, which is all cudarc hands it); device-to-device copies can.
static CUresult host_copy(CUstream s, void* dst, const void* src, size_t n) {
    if (stream_of(s)->capture) return ERR_STREAM_CAPTURE_UNSUPPORTED;
    return copy(s, dst, src, n);
}
static void* ptr(CUdeviceptr p) { return (void*)(uintptr_t)p; }

// ---------------------------------------------------------------------------------------------
// The driver API (the entry points cudarc calls for the CUDA backend).
// ---------------------------------------------------------------------------------------------

static size_t meminfo(const char* key) {
    std::ifstream f("/proc/meminfo");
    std::string k;
    size_t kb = 0;
    while (f >> k >> kb) {
        if (k == key) return kb * 1024;
        f.ignore(64, '\n');
    }
    return 0;
}

// Device memory: each allocation ends where an inaccessible page begins, so a kernel reading or
// writing past the end of its buffer (beyond the 256-byte rounding every CUDA allocation has)
// faults at once, and the fault is reported with the kernel, block and thread that made it.
// Fresh memory is all 0xFF bytes (NaN as f32) so that a kernel reading what nothing wrote shows.
struct Mapping {
    char* base;
    size_t len;
};
static std::mutex alloc_lock;
static std::map<uintptr_t, Mapping> mappings;  // by the address handed out

static void* device_alloc(size_t bytes) {
    const size_t page = (size_t)sysconf(_SC_PAGESIZE);
    const size_t body = (std::max<size_t>(bytes, 1) + 255) & ~(size_t)255;
    const size_t data = (body + page - 1) / page * page;
    void* m = mmap(nullptr, data + page, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
    if (m == MAP_FAILED) return nullptr;
    char* base = (char*)m;
    if (mprotect(base + data, page, PROT_NONE) != 0) {
        munmap(m, data + page);
        return nullptr;
    }
    char* user = base + data - body;  // 256-aligned: data is whole pages, body whole 256s
    std::memset(user, 0xFF, body);
    std::lock_guard<std::mutex> lk(alloc_lock);
    mappings[(uintptr_t)user] = {base, data + page};
    return user;
}
static bool device_free(void* p) {
    std::lock_guard<std::mutex> lk(alloc_lock);
    auto it = mappings.find((uintptr_t)p);
    if (it == mappings.end()) return false;
    munmap(it->second.base, it->second.len);
    mappings.erase(it);
    return true;
}

static struct sigaction previous_segv;
static void on_fault(int sig, siginfo_t* info, void* uc) {
    BlockRunner* r = runner_tls;
    if (r && r->cur && r->launch) {
        char msg[512];
        const tlemu_dim3 b = blockIdx, t = r->cur->tid;
        const int n = std::snprintf(msg, sizeof msg,
                                    "cuda-emu: kernel %s, block (%u,%u,%u) thread (%u,%u,%u), touched %p "
                                    "outside every allocation (an out-of-bounds access)\n",
                                    r->launch->f->name.c_str(), b.x, b.y, b.z, t.x, t.y, t.z, info->si_addr);
        if (n > 0) (void)!write(2, msg, (size_t)std::min(n, (int)sizeof msg - 1));
        std::abort();
    }
    // Not in a kernel: whoever handled it before (Rust's stack-overflow report), or the default.
    if (previous_segv.sa_flags & SA_SIGINFO) {
        previous_segv.sa_sigaction(sig, info, uc);
    } else if (previous_segv.sa_handler != SIG_DFL && previous_segv.sa_handler != SIG_IGN) {
        previous_segv.sa_handler(sig);
    } else {
        signal(sig, SIG_DFL);  // returning re-runs the access, which now kills the process
    }
}
static void install_fault_report() {
    struct sigaction sa;
    std::memset(&sa, 0, sizeof sa);
    sa.sa_sigaction = on_fault;
    sa.sa_flags = SA_SIGINFO;
    sigemptyset(&sa.sa_mask);
    sigaction(SIGSEGV, &sa, &previous_segv);
}

static int context_token;

extern "C" {

CUresult cuInit(unsigned) {
    static std::once_flag once;
    std::call_once(once, install_fault_report);
    return OK;
}
CUresult cuDriverGetVersion(int* v) {
    *v = 12080;
    return OK;
}
CUresult cuDeviceGetCount(int* n) {
    *n = 1;
    return OK;
}
CUresult cuDeviceGet(CUdevice* d, int ordinal) {
    if (ordinal != 0) return ERR_INVALID_DEVICE;
    *d = 0;
    return OK;
}
CUresult cuDeviceGetName(char* name, int len, CUdevice) {
    std::snprintf(name, (size_t)len, "%s", DEVICE_NAME);
    return OK;
}
CUresult cuDeviceGetUuid(unsigned char* uuid, CUdevice) {
    std::memset(uuid, 0, 16);
    return OK;
}
CUresult cuDeviceGetUuid_v2(unsigned char* uuid, CUdevice d) { return cuDeviceGetUuid(uuid, d); }
CUresult cuDeviceTotalMem_v2(size_t* bytes, CUdevice) {
    *bytes = meminfo("MemTotal:");
    return OK;
}
CUresult cuDeviceGetAttribute(int* v, int attr, CUdevice) {
    switch (attr) {
    case 1: *v = 1024; break;                                                  // max threads per block
    case 2: case 3: *v = 1024; break;                                          // max block x, y
    case 4: *v = 64; break;                                                    // max block z
    case 5: *v = 0x7fffffff; break;                                            // max grid x
    case 6: case 7: *v = 65535; break;                                         // max grid y, z
    case 8: *v = 48 * 1024; break;                                             // shared memory per block
    case 10: *v = 32; break;                                                   // warp size
    case 16: *v = (int)std::max(1u, std::thread::hardware_concurrency()); break; // multiprocessors
    case 41: *v = 1; break;                                                    // unified addressing
    case 75: *v = 9; break;                                                    // compute capability major
    case 76: *v = 0; break;                                                    // minor
    case 97: *v = 227 * 1024; break;                                           // shared memory opt-in
    default: *v = 0; break;  // features this emulator does not offer (memory pools among them)
    }
    return OK;
}
CUresult cuDevicePrimaryCtxRetain(CUcontext* c, CUdevice) {
    *c = &context_token;
    return OK;
}
CUresult cuDevicePrimaryCtxRelease_v2(CUdevice) { return OK; }
CUresult cuCtxSetCurrent(CUcontext) { return OK; }
CUresult cuCtxGetCurrent(CUcontext* c) {
    *c = &context_token;
    return OK;
}
CUresult cuCtxPushCurrent_v2(CUcontext) { return OK; }
CUresult cuCtxPopCurrent_v2(CUcontext* c) {
    if (c) *c = &context_token;
    return OK;
}
CUresult cuCtxGetDevice(CUdevice* d) {
    *d = 0;
    return OK;
}
CUresult cuCtxSynchronize() { return OK; }
CUresult cuMemGetInfo_v2(size_t* free_bytes, size_t* total) {
    *free_bytes = meminfo("MemAvailable:");
    *total = meminfo("MemTotal:");
    return OK;
}

CUresult cuStreamCreate(CUstream* s, unsigned) {
    *s = new Stream();
    return OK;
}
CUresult cuStreamCreateWithPriority(CUstream* s, unsigned flags, int) { return cuStreamCreate(s, flags); }
CUresult cuStreamDestroy_v2(CUstream s) {
    if (s && s != &default_stream) delete s;
    return OK;
}
CUresult cuStreamSynchronize(CUstream s) {
    return stream_of(s)->capture ? ERR_STREAM_CAPTURE_UNSUPPORTED : OK;  // as the driver does
}
CUresult cuStreamWaitEvent(CUstream, CUevent, unsigned) { return OK; }
CUresult cuStreamBeginCapture_v2(CUstream s, int) {
    Stream* st = stream_of(s);
    if (st->capture) return ERR_STREAM_CAPTURE_UNSUPPORTED;
    st->capture = new Graph();
    return OK;
}
CUresult cuStreamEndCapture(CUstream s, CUgraph* g) {
    Stream* st = stream_of(s);
    if (!st->capture) return ERR_INVALID_VALUE;
    *g = st->capture;
    st->capture = nullptr;
    return OK;
}
CUresult cuStreamIsCapturing(CUstream s, int* status) {
    *status = stream_of(s)->capture ? 1 : 0;
    return OK;
}

CUresult cuEventCreate(CUevent* e, unsigned) {
    *e = new Event();
    return OK;
}
CUresult cuEventDestroy_v2(CUevent e) {
    delete e;
    return OK;
}
CUresult cuEventRecord(CUevent e, CUstream) {
    e->at = std::chrono::steady_clock::now();
    return OK;
}
CUresult cuEventRecordWithFlags(CUevent e, CUstream s, unsigned) { return cuEventRecord(e, s); }
CUresult cuEventSynchronize(CUevent) { return OK; }
CUresult cuEventQuery(CUevent) { return OK; }
CUresult cuEventElapsedTime(float* ms, CUevent a, CUevent b) {
    *ms = std::chrono::duration<float, std::milli>(b->at - a->at).count();
    return OK;
}
CUresult cuEventElapsedTime_v2(float* ms, CUevent a, CUevent b) { return cuEventElapsedTime(ms, a, b); }

CUresult cuMemAlloc_v2(CUdeviceptr* p, size_t bytes) {
    void* m = device_alloc(bytes);
    if (!m) return ERR_OUT_OF_MEMORY;
    *p = (CUdeviceptr)(uintptr_t)m;
    return OK;
}
CUresult cuMemAllocAsync(CUdeviceptr* p, size_t bytes, CUstream) { return cuMemAlloc_v2(p, bytes); }
CUresult cuMemFree_v2(CUdeviceptr p) { return device_free(ptr(p)) ? OK : ERR_INVALID_VALUE; }
CUresult cuMemFreeAsync(CUdeviceptr p, CUstream) { return cuMemFree_v2(p); }
CUresult cuMemsetD8_v2(CUdeviceptr p, unsigned char v, size_t n) { return fill(nullptr, ptr(p), v, n); }
CUresult cuMemsetD8Async(CUdeviceptr p, unsigned char v, size_t n, CUstream s) { return fill(s, ptr(p), v, n); }
CUresult cuMemcpyHtoD_v2(CUdeviceptr d, const void* h, size_t n) { return host_copy(nullptr, ptr(d), h, n); }
CUresult cuMemcpyHtoDAsync_v2(CUdeviceptr d, const void* h, size_t n, CUstream s) {
    return host_copy(s, ptr(d), h, n);
}
CUresult cuMemcpyDtoH_v2(void* h, CUdeviceptr d, size_t n) { return host_copy(nullptr, h, ptr(d), n); }
CUresult cuMemcpyDtoHAsync_v2(void* h, CUdeviceptr d, size_t n, CUstream s) { return host_copy(s, h, ptr(d), n); }
CUresult cuMemcpyDtoD_v2(CUdeviceptr d, CUdeviceptr s, size_t n) { return copy(nullptr, ptr(d), ptr(s), n); }
CUresult cuMemcpyDtoDAsync_v2(CUdeviceptr d, CUdeviceptr src, size_t n, CUstream s) {
    return copy(s, ptr(d), ptr(src), n);
}

CUresult cuModuleLoadData(CUmodule* m, const void* image) {
    auto mod = std::make_unique<Module>();
    if (!parse_ptx((const char*)image, *mod)) return ERR_INVALID_IMAGE;
    *m = mod.release();
    return OK;
}
CUresult cuModuleUnload(CUmodule m) {
    delete m;
    return OK;
}
CUresult cuModuleGetFunction(CUfunction* out, CUmodule m, const char* name) {
    auto it = m->funcs.find(name);
    if (it == m->funcs.end()) return ERR_NOT_FOUND;
    Func* f = it->second.get();
    if (!f->fn) {
        f->fn = (void (*)())dlsym(RTLD_DEFAULT, name);
        if (!f->fn) {
            std::fprintf(stderr, "cuda-emu: kernel %s is in the PTX but not in this emulator build\n", name);
            return ERR_NOT_FOUND;
        }
        if (ffi_prep_cif(&f->cif, FFI_DEFAULT_ABI, (unsigned)f->types.size(), &ffi_type_void,
                         f->types.data()) != FFI_OK)
            return ERR_INVALID_VALUE;
    }
    *out = f;
    return OK;
}
CUresult cuFuncGetAttribute(int* v, int attr, CUfunction) {
    *v = attr == 0 ? 1024 : 0;  // max threads per block; no static shared / local / registers
    return OK;
}
CUresult cuFuncSetAttribute(CUfunction, int, int) { return OK; }
CUresult cuFuncSetCacheConfig(CUfunction, int) { return OK; }

CUresult cuLaunchKernel(CUfunction f, unsigned gx, unsigned gy, unsigned gz, unsigned bx, unsigned by,
                        unsigned bz, unsigned shared_bytes, CUstream s, void** params, void** extra) {
    if (!f || extra || shared_bytes) return ERR_NOT_SUPPORTED;  // only what the backend uses
    // The limits of every device the backend supports (compute capability 8.0 and newer).
    if ((uint64_t)bx * by * bz > 1024 || bz > 64 || gx > 0x7fffffffu || gy > 65535 || gz > 65535)
        return ERR_INVALID_VALUE;
    Stream* st = stream_of(s);
    if (!st->capture) {
        run_kernel(f, {gx, gy, gz}, {bx, by, bz}, params);
        return OK;
    }
    // Captured: the argument values are copied now, as the driver does.
    Op op;
    op.kind = Op::Kernel;
    op.f = f;
    op.grid = {gx, gy, gz};
    op.block = {bx, by, bz};
    for (size_t i = 0; i < f->sizes.size(); ++i) {
        const uint8_t* a = (const uint8_t*)params[i];
        op.args.emplace_back(a, a + f->sizes[i]);
    }
    st->capture->ops.push_back(std::move(op));
    return OK;
}

// The launch attributes of cuLaunchKernelEx (cuda.h's CUlaunchConfig / CUlaunchAttribute).
struct EmuLaunchAttr {
    int id;
    char pad[4];
    union {
        char bytes[64];
        int value;
    };
};
struct EmuLaunchConfig {
    unsigned gx, gy, gz, bx, by, bz, shared_bytes;
    CUstream stream;
    EmuLaunchAttr* attrs;
    unsigned n_attrs;
};
// cuda.h's layouts on a 64-bit host: the attribute's value (a 64-byte union with 8-byte
// members) at offset 8, 72 bytes in all; the config's stream at 32, 56 bytes in all.
static_assert(offsetof(EmuLaunchAttr, value) == 8 && sizeof(EmuLaunchAttr) == 72, "CUlaunchAttribute");
static_assert(offsetof(EmuLaunchConfig, stream) == 32 && sizeof(EmuLaunchConfig) == 56, "CUlaunchConfig");
// CU_LAUNCH_ATTRIBUTE_PROGRAMMATIC_STREAM_SERIALIZATION: the one attribute the backend sets.
constexpr int ATTR_PROGRAMMATIC_SERIALIZATION = 6;

// Kernels run one after another here, so a programmatic launch runs as any other; what is
// checked is that the kernel waits for its predecessor (the backend loaded the sm_90 form of
// its module, where the wait is an instruction), since on a GPU it could otherwise start early.
CUresult cuLaunchKernelEx(const EmuLaunchConfig* c, CUfunction f, void** params, void** extra) {
    if (!c || (c->n_attrs && !c->attrs)) return ERR_INVALID_VALUE;
    for (unsigned i = 0; i < c->n_attrs; ++i) {
        const EmuLaunchAttr& a = c->attrs[i];
        if (a.id != ATTR_PROGRAMMATIC_SERIALIZATION) return ERR_NOT_SUPPORTED;
        if (a.value && f && !f->waits) {
            std::fprintf(stderr,
                         "cuda-emu: %s launched with programmatic stream serialization, but its "
                         "PTX does not execute griddepcontrol.wait\n",
                         f->name.c_str());
            return ERR_INVALID_VALUE;
        }
    }
    return cuLaunchKernel(f, c->gx, c->gy, c->gz, c->bx, c->by, c->bz, c->shared_bytes, c->stream,
                          params, extra);
}

CUresult cuGraphInstantiateWithFlags(CUgraphExec* e, CUgraph g, unsigned long long) {
    *e = new Graph(*g);
    return OK;
}
CUresult cuGraphUpload(CUgraphExec, CUstream) { return OK; }
CUresult cuGraphLaunch(CUgraphExec e, CUstream s) {
    for (const Op& op : e->ops) {
        const CUresult r = issue(s, op);
        if (r != OK) return r;
    }
    return OK;
}
CUresult cuGraphDestroy(CUgraph g) {
    delete g;
    return OK;
}
CUresult cuGraphExecDestroy(CUgraphExec e) {
    delete e;
    return OK;
}

CUresult cuGetErrorName(CUresult r, const char** s) {
    switch (r) {
    case OK: *s = "CUDA_SUCCESS"; break;
    case ERR_INVALID_VALUE: *s = "CUDA_ERROR_INVALID_VALUE"; break;
    case ERR_OUT_OF_MEMORY: *s = "CUDA_ERROR_OUT_OF_MEMORY"; break;
    case ERR_INVALID_DEVICE: *s = "CUDA_ERROR_INVALID_DEVICE"; break;
    case ERR_INVALID_IMAGE: *s = "CUDA_ERROR_INVALID_IMAGE"; break;
    case ERR_INVALID_HANDLE: *s = "CUDA_ERROR_INVALID_HANDLE"; break;
    case ERR_NOT_FOUND: *s = "CUDA_ERROR_NOT_FOUND"; break;
    case ERR_NOT_SUPPORTED: *s = "CUDA_ERROR_NOT_SUPPORTED"; break;
    case ERR_STREAM_CAPTURE_UNSUPPORTED: *s = "CUDA_ERROR_STREAM_CAPTURE_UNSUPPORTED"; break;
    default: *s = "CUDA_ERROR_UNKNOWN"; break;
    }
    return OK;
}
CUresult cuGetErrorString(CUresult r, const char** s) { return cuGetErrorName(r, s); }

}  // extern "C"
