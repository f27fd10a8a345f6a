// Self-test of the host CUDA emulator (tests/cuda_build.rs builds and runs it, linked against
// target/cuda-emu/libcuda.so): a real kernel (act_add, from kernels/activation.cu) launched
// through the driver API in bounds, then with a length past the end of its buffers, which must
// stop the process with the emulator's report naming the kernel, block and thread. Before that,
// a programmatic dependent launch (cuLaunchKernelEx) of the kernel must be refused while its PTX
// lacks griddepcontrol.wait, and run once a module whose body has it is loaded.
//
//   selftest     exit 0 never: prints "in bounds ok" and then dies on the out-of-bounds launch
#include <cstdint>
#include <cstdio>
#include <cstring>

extern "C" {
int cuInit(unsigned);
int cuModuleLoadData(void** module, const void* image);
int cuModuleGetFunction(void** f, void* module, const char* name);
int cuMemAlloc_v2(unsigned long long* p, size_t bytes);
int cuMemcpyHtoD_v2(unsigned long long dst, const void* src, size_t bytes);
int cuMemcpyDtoH_v2(void* dst, unsigned long long src, size_t bytes);
int cuLaunchKernel(void* f, unsigned gx, unsigned gy, unsigned gz, unsigned bx, unsigned by, unsigned bz,
                   unsigned shared, void* stream, void** params, void** extra);
// cuda.h's CUlaunchAttribute and CUlaunchConfig.
struct LaunchAttr {
    int id;
    char pad[4];
    union {
        char bytes[64];
        int value;
    };
};
struct LaunchConfig {
    unsigned gx, gy, gz, bx, by, bz, shared;
    void* stream;
    LaunchAttr* attrs;
    unsigned n_attrs;
};
int cuLaunchKernelEx(const LaunchConfig* c, void* f, void** params, void** extra);
}

#define CHECK(call)                                                    \
    do {                                                               \
        const int r = (call);                                          \
        if (r != 0) {                                                  \
            std::fprintf(stderr, "selftest: %s returned %d\n", #call, r); \
            return 2;                                                  \
        }                                                              \
    } while (0)

int main() {
    // The parameter list as clang's PTX writes it for act_add(float* x, const float* y, int len).
    const char* ptx =
        ".visible .entry act_add(\n\t.param .u64 act_add_param_0,\n\t.param .u64 act_add_param_1,\n"
        "\t.param .u32 act_add_param_2\n)\n{\n\tret;\n}\n";
    void* module = nullptr;
    void* f = nullptr;
    CHECK(cuInit(0));
    CHECK(cuModuleLoadData(&module, ptx));
    CHECK(cuModuleGetFunction(&f, module, "act_add"));

    const int n = 1000;  // 4000 bytes: one page with the 256-byte rounding (4096)
    float hx[n], hy[n];
    for (int i = 0; i < n; ++i) {
        hx[i] = (float)i;
        hy[i] = 0.5f;
    }
    unsigned long long x = 0, y = 0;
    CHECK(cuMemAlloc_v2(&x, sizeof hx));
    CHECK(cuMemAlloc_v2(&y, sizeof hy));
    CHECK(cuMemcpyHtoD_v2(x, hx, sizeof hx));
    CHECK(cuMemcpyHtoD_v2(y, hy, sizeof hy));
    int len = n;
    void* args[] = {&x, &y, &len};
    CHECK(cuLaunchKernel(f, 4, 1, 1, 256, 1, 1, 0, nullptr, args, nullptr));
    CHECK(cuMemcpyDtoH_v2(hx, x, sizeof hx));
    for (int i = 0; i < n; ++i) {
        if (hx[i] != (float)i + 0.5f) {
            std::fprintf(stderr, "selftest: x[%d] = %g, expected %g\n", i, hx[i], (float)i + 0.5f);
            return 2;
        }
    }
    // Programmatic stream serialization (attribute 6): refused without the wait, run with it.
    LaunchAttr attr{};
    attr.id = 6;
    attr.value = 1;
    const LaunchConfig cfg{4, 1, 1, 256, 1, 1, 0, nullptr, &attr, 1};
    if (cuLaunchKernelEx(&cfg, f, args, nullptr) == 0) {
        std::fprintf(stderr, "selftest: a programmatic launch without griddepcontrol.wait ran\n");
        return 2;
    }
    const char* ptx_pdl =
        ".visible .entry act_add(\n\t.param .u64 act_add_param_0,\n\t.param .u64 act_add_param_1,\n"
        "\t.param .u32 act_add_param_2\n)\n{\n\tgriddepcontrol.wait;\n\tret;\n}\n";
    void* module_pdl = nullptr;
    void* f_pdl = nullptr;
    CHECK(cuModuleLoadData(&module_pdl, ptx_pdl));
    CHECK(cuModuleGetFunction(&f_pdl, module_pdl, "act_add"));
    CHECK(cuLaunchKernelEx(&cfg, f_pdl, args, nullptr));
    CHECK(cuMemcpyDtoH_v2(hx, x, sizeof hx));
    for (int i = 0; i < n; ++i) {
        if (hx[i] != (float)i + 1.0f) {
            std::fprintf(stderr, "selftest: x[%d] = %g after the programmatic launch\n", i, hx[i]);
            return 2;
        }
    }
    std::printf("in bounds ok\n");
    std::fflush(stdout);
    // Elements 1000..1023 are inside the rounding, as on a GPU; element 1024 is not.
    len = 1100;
    CHECK(cuLaunchKernel(f, 8, 1, 1, 256, 1, 1, 0, nullptr, args, nullptr));
    std::printf("out of bounds not caught\n");
    return 0;
}
