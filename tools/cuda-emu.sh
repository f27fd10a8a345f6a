#!/usr/bin/env bash
# Builds the host CUDA emulator (tests/cuda_emu): the driver API entry points the CUDA backend
# uses, and every kernels/*.cu compiled as C++ for the CPU, linked into target/cuda-emu/libcuda.so.
# With that directory first on LD_LIBRARY_PATH, `--backend cuda` runs its real kernels on the
# CPU: a correctness check of kernel logic and of the backend's launches without a GPU (it says
# nothing about speed). Prints the directory.
#
#   LD_LIBRARY_PATH="$(tools/cuda-emu.sh)" torchless info --backend cuda
set -euo pipefail
cd "$(dirname "$0")/.."
out="$PWD/target/cuda-emu"
CXX="${CXX:-c++}"
command -v "$CXX" >/dev/null 2>&1 || { echo "cuda-emu: no C++ compiler ($CXX): apt-get install g++" >&2; exit 1; }
[ -f /usr/include/ffi.h ] || compgen -G '/usr/include/*/ffi.h' >/dev/null \
    || { echo "cuda-emu: libffi's header is missing: apt-get install libffi-dev" >&2; exit 1; }
mkdir -p "$out/obj"
# Exact float semantics: no FMA contraction (the kernels' explicitly rounded ops must stay so).
# TLS descriptors (gnu2): kernels read threadIdx & co. at every index computation, and in a
# shared object the classic model makes each read a call into ld.so. -march=native: F16C
# conversions and FMA in hardware (the library is built on the machine that runs it).
flags=(-std=c++17 -O2 -march=native -g0 -fPIC -mtls-dialect=gnu2 -ffp-contract=off -fno-fast-math -Wall -Wno-unused-function -Wno-unknown-pragmas
       -DTL_HOST_EMU -Itests/cuda_emu -Ikernels)
objs=()
for src in tests/cuda_emu/driver.cpp kernels/*.cu; do
    obj="$out/obj/$(basename "$src").o"
    objs+=("$obj")
    # Rebuilt when any kernel source or emulator file is newer (every object includes headers
    # from both directories).
    if [ ! -f "$obj" ] || [ -n "$(find kernels tests/cuda_emu -type f -newer "$obj" -print -quit)" ]; then
        "$CXX" "${flags[@]}" -x c++ -c "$src" -o "$obj" >&2
    fi
done
"$CXX" -shared -o "$out/libcuda.so.tmp" "${objs[@]}" -lffi -pthread
mv "$out/libcuda.so.tmp" "$out/libcuda.so"
echo "$out"
