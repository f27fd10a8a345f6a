#!/usr/bin/env bash
# The CUDA runtime checks in one command: the op-by-op harness (every op and weight type against
# the CPU scalar reference) and end-to-end agreement with the CPU backend (both real models and
# every tiny architecture fixture). It FAILS when there is no NVIDIA device: it is the explicit
# command for machines with a GPU, never part of `cargo test`.
#
#   tools/gpu-check.sh                 build with cargo (feature cuda), fetch the models, run
#   tools/gpu-check.sh --bundle DIR    build here and copy the binaries into DIR (no GPU needed)
#   tools/gpu-check.sh --prebuilt DIR  run the binaries of a bundle (GPU machines without Rust)
#
# Environment: TORCHLESS_MODELS_DIR (default ./models).
set -euo pipefail
cd "$(dirname "$0")/.."
export TORCHLESS_MODELS_DIR="${TORCHLESS_MODELS_DIR:-$PWD/models}"

die() { printf 'gpu-check: error: %s\n' "$*" >&2; exit 1; }

mode=build
dir=""
case "${1:-}" in
    "") ;;
    --bundle | --prebuilt)
        [ $# -eq 2 ] || die "usage: tools/gpu-check.sh [--bundle DIR | --prebuilt DIR]"
        mode="${1#--}"
        dir="$2"
        ;;
    *) die "usage: tools/gpu-check.sh [--bundle DIR | --prebuilt DIR]" ;;
esac

if [ "$mode" != bundle ]; then
    command -v nvidia-smi >/dev/null 2>&1 || die "no NVIDIA driver (nvidia-smi not found): this command needs a GPU"
    nvidia-smi -L | grep -q '^GPU' || die "no NVIDIA device found (nvidia-smi -L lists none): this command needs a GPU"
    nvidia-smi -L
fi

if [ "$mode" = prebuilt ]; then
    test_bin="$dir/cuda_device"
    [ -x "$test_bin" ] || die "$test_bin: no test binary (make one with --bundle)"
else
    [ "$mode" = build ] && bash tools/fetch-models.sh
    export CARGO_BUILD_JOBS="${CARGO_BUILD_JOBS:-2}"
    cargo build --release --features cuda
    test_bin=$(cargo test --release --features cuda --test cuda_device --no-run 2>&1 \
        | sed -n 's/.*Executable .*(\(.*cuda_device-[0-9a-f]*\)).*/\1/p' | tail -1)
    [ -n "$test_bin" ] || die "could not find the cuda_device test binary"
    if [ "$mode" = bundle ]; then
        mkdir -p "$dir"
        cp "$test_bin" "$dir/cuda_device"
        cp target/release/torchless "$dir/torchless"
        echo "gpu-check: bundle in $dir (run: tools/gpu-check.sh --prebuilt $dir)"
        exit 0
    fi
fi

# One test at a time: they share the one device.
"$test_bin" --test-threads=1 --nocapture "${GPU_CHECK_FILTER:-}"
echo "gpu-check: all CUDA checks passed"
