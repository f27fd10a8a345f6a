#!/usr/bin/env bash
# The one test command: installs what the tests need (the two real models, the openai Python
# client), checks formatting and lints, then runs every test. `.ci/run` calls exactly this.
set -euo pipefail
cd "$(dirname "$0")/.."

export TORCHLESS_MODELS_DIR="${TORCHLESS_MODELS_DIR:-$PWD/models}"
# Two cores: keep builds and test threads from oversubscribing them.
export CARGO_BUILD_JOBS="${CARGO_BUILD_JOBS:-2}"

bash tools/fetch-models.sh

# The server test talks to `torchless serve` with the official OpenAI Python client.
PYTHON="${PYTHON:-python3}"
OPENAI_PIN="openai==3.54.0"
if ! "$PYTHON" -c 'import openai, sys; sys.exit(openai.__version__ != "3.54.0")' 2>/dev/null; then
    "$PYTHON" -m pip install --quiet --disable-pip-version-check "$OPENAI_PIN" \
        || "$PYTHON" -m pip install --quiet --disable-pip-version-check --break-system-packages "$OPENAI_PIN"
fi

# The CUDA backend's kernels compile to PTX with clang (no CUDA toolkit, no GPU needed here);
# its build, PTX coverage and no-driver error are tested below with `--features cuda`; NVIDIA's
# ptxas assembles every module as the driver would, and nvcc builds every kernel file too (both
# from pip wheels, nothing installed system-wide).
cuda_tools="$(bash tools/fetch-cuda-tools.sh)"
export TORCHLESS_NVCC="$cuda_tools/bin/nvcc" TORCHLESS_PTXAS="$cuda_tools/bin/ptxas"
# The wgpu backend's tests need a Vulkan adapter: Mesa's software driver (lavapipe) gives every
# machine one. Its tests fail, never skip, without an adapter.
packages=()
if ! command -v nvcc >/dev/null 2>&1 && ! command -v clang >/dev/null 2>&1; then
    packages+=(clang)
fi
# tests/cuda_build.rs builds a small host C++ program around kernels/q8dot.cuh, and
# tools/cuda-emu.sh builds the host CUDA emulator (C++ and libffi).
if ! command -v "${CXX:-c++}" >/dev/null 2>&1; then
    packages+=(g++)
fi
if [ ! -f /usr/include/ffi.h ] && ! compgen -G '/usr/include/*/ffi.h' >/dev/null; then
    packages+=(libffi-dev)
fi
if ! ldconfig -p | grep -q 'libvulkan\.so\.1' || ! compgen -G '/usr/share/vulkan/icd.d/*.json' >/dev/null; then
    packages+=(mesa-vulkan-drivers libvulkan1)
fi
if [ "${#packages[@]}" -gt 0 ]; then
    SUDO=""
    [ "$(id -u)" -eq 0 ] || SUDO="sudo"
    $SUDO apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq "${packages[@]}" >/dev/null
fi
# Mesa's Vulkan loader complains on stderr when this is unset (CI shells).
if [ -z "${XDG_RUNTIME_DIR:-}" ] || [ ! -d "$XDG_RUNTIME_DIR" ]; then
    XDG_RUNTIME_DIR="$(mktemp -d)"
    export XDG_RUNTIME_DIR
fi

# Lints run wherever the toolchain has them (rustup's default profile does).
if cargo fmt --version >/dev/null 2>&1; then
    cargo fmt --check
else
    echo "test.sh: rustfmt is not installed; skipping the format check" >&2
fi
if cargo clippy --version >/dev/null 2>&1; then
    cargo clippy --release --all-targets -- -D warnings
    cargo clippy --release --all-targets --features cuda,wgpu -- -D warnings
    # The GPU-only test target is outside --all-targets (`test = false`); lint it too.
    cargo clippy --release --features cuda --test cuda_device -- -D warnings
else
    echo "test.sh: clippy is not installed; skipping lints" >&2
fi
# Every public item has rustdoc (missing_docs is denied through clippy above) and no doc link is
# broken.
RUSTDOCFLAGS="-D warnings" cargo doc --no-deps --quiet --features cuda,wgpu
log="$(mktemp)"
trap 'rm -f "$log"' EXIT
set +e
# Every test, with both GPU backends built in: wgpu runs on lavapipe here; CUDA's runtime checks
# need an NVIDIA GPU (tools/gpu-check.sh).
cargo test --release --features cuda,wgpu -- --test-threads=2 2>&1 | tee "$log"
status=${PIPESTATUS[0]}
# The CUDA backend's runtime tests (tests/cuda_device.rs: the op harness, the architecture
# fixtures, both real models, decode graphs) on the host CUDA emulator (tests/cuda_emu): the
# driver API in C++ with every kernel compiled for the CPU, so the kernels' logic and the
# backend's launches run for real here. It proves correctness, not speed, and not the PTX
# (ptxas above) or a real GPU (tools/gpu-check.sh). Then both real models again through the int8
# matvec (SmolLM2: Q4_1 and Q8_0; gemma-3: Q4_K, Q5_0, Q6_K and Q8_0).
emu="$(bash tools/cuda-emu.sh)" || status=1
emu_run() {
    LD_LIBRARY_PATH="$emu${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}" \
        cargo test --release --features cuda --test cuda_device -- --test-threads=1 "$@" 2>&1 | tee -a "$log"
    [ "${PIPESTATUS[0]}" -eq 0 ] || status=1
}
emu_run
TORCHLESS_CUDA_MATVEC=int8 emu_run smollm2_logits gemma3_logits
set -e
# One closing line over every test binary (cargo's last line is the doc-test binary's alone).
passed=$(grep -E '^test result:' "$log" | grep -oE '[0-9]+ passed' | awk '{s += $1} END {print s + 0}')
failed=$(grep -E '^test result:' "$log" | grep -oE '[0-9]+ failed' | awk '{s += $1} END {print s + 0}')
echo "tests: $passed passed, $failed failed"
exit "$status"
