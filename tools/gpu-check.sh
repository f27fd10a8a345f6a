#!/usr/bin/env bash
# The CUDA runtime checks in one command: the op-by-op harness (every op and weight type against
# the CPU scalar reference) and end-to-end agreement with the CPU backend (both real models and
# every tiny architecture fixture). It FAILS when there is no NVIDIA device: it is the explicit
# command for machines with a GPU, never part of `cargo test`.
#
#   tools/gpu-check.sh                 build with cargo (feature cuda), fetch the models, run
#   tools/gpu-check.sh --bundle DIR    build here and pack what a GPU machine without Rust or
#                                      network needs into DIR (no GPU needed; see below)
#   tools/gpu-check.sh --prebuilt DIR  unpack a bundle (once) and run its binaries there
#
# A bundle holds bin.tar.xz (the stripped `torchless` and `cuda_device` test binaries, about
# 5 MB) and the two real models as a tar stream cut into pieces of GPU_CHECK_PIECE_MIB (default
# 18) MiB, models.tar.p00, p01, ..., with models.sha256. The pieces exist for machines reached
# through a transfer limit (the device tool here carries at most 64 MiB a call, working tree
# included): carry bin.tar.xz and one piece per call, back to back, then run --prebuilt, which
# joins the pieces into DIR/models once all have arrived and checks their sha256.
#
# Environment: TORCHLESS_MODELS_DIR (default ./models; --prebuilt uses DIR/models when the
# bundle has pieces), GPU_CHECK_FILTER (run only the tests whose names contain it),
# GPU_CHECK_PIECE_MIB (piece size for --bundle).
set -euo pipefail
cd "$(dirname "$0")/.."
export TORCHLESS_MODELS_DIR="${TORCHLESS_MODELS_DIR:-$PWD/models}"

die() { printf 'gpu-check: error: %s\n' "$*" >&2; exit 1; }

MODELS=(SmolLM2-135M-Instruct.Q4_1.gguf gemma-3-270m-q4_k_m.gguf)

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

# --bundle: binaries, then the models in pieces.
pack() {
    local test_bin="$1" stage
    mkdir -p "$dir"
    stage="$(mktemp -d)"
    strip -o "$stage/torchless" target/release/torchless
    strip -o "$stage/cuda_device" "$test_bin"
    tar -cJf "$dir/bin.tar.xz" -C "$stage" torchless cuda_device
    rm -rf "$stage"
    rm -f "$dir"/models.tar.p* "$dir/models.sha256"
    (cd "$TORCHLESS_MODELS_DIR" && sha256sum "${MODELS[@]}") >"$dir/models.sha256"
    tar -cf - -C "$TORCHLESS_MODELS_DIR" "${MODELS[@]}" \
        | split -b "${GPU_CHECK_PIECE_MIB:-18}M" -d -a 2 - "$dir/models.tar.p"
    echo "gpu-check: bundle in $dir:"
    ls -l "$dir" | sed 's/^/  /'
    echo "gpu-check: carry bin.tar.xz, models.sha256 and each models.tar.pNN, then run:"
    echo "  tools/gpu-check.sh --prebuilt $dir"
}

# --prebuilt: unpack the binaries and join the model pieces (each once).
unpack() {
    [ -f "$dir/bin.tar.xz" ] || die "$dir/bin.tar.xz: no bundle (make one with --bundle)"
    if [ ! -x "$dir/bin/cuda_device" ] || [ "$dir/bin.tar.xz" -nt "$dir/bin/cuda_device" ]; then
        mkdir -p "$dir/bin"
        tar -xJf "$dir/bin.tar.xz" -C "$dir/bin"
    fi
    if [ -f "$dir/models.sha256" ]; then
        dir="$(cd "$dir" && pwd)"
        export TORCHLESS_MODELS_DIR="$dir/models"
        if ! (cd "$TORCHLESS_MODELS_DIR" 2>/dev/null && sha256sum --quiet -c "$dir/models.sha256" >/dev/null 2>&1); then
            compgen -G "$dir/models.tar.p*" >/dev/null || die "$dir: no model pieces (models.tar.pNN)"
            mkdir -p "$TORCHLESS_MODELS_DIR"
            cat "$dir"/models.tar.p* | tar -xf - -C "$TORCHLESS_MODELS_DIR" \
                || die "$dir: the model pieces do not form a whole archive (is one missing?)"
            (cd "$TORCHLESS_MODELS_DIR" && sha256sum --quiet -c "$dir/models.sha256") \
                || die "$dir: joined models fail their sha256 (a piece is missing or damaged)"
            echo "gpu-check: models joined into $TORCHLESS_MODELS_DIR"
        fi
    fi
}

if [ "$mode" != bundle ]; then
    command -v nvidia-smi >/dev/null 2>&1 || die "no NVIDIA driver (nvidia-smi not found): this command needs a GPU"
    nvidia-smi -L | grep -q '^GPU' || die "no NVIDIA device found (nvidia-smi -L lists none): this command needs a GPU"
    nvidia-smi -L
fi

if [ "$mode" = prebuilt ]; then
    unpack
    test_bin="$dir/bin/cuda_device"
else
    bash tools/fetch-models.sh
    export CARGO_BUILD_JOBS="${CARGO_BUILD_JOBS:-2}"
    cargo build --release --features cuda
    test_bin=$(cargo test --release --features cuda --test cuda_device --no-run 2>&1 \
        | sed -n 's/.*Executable .*(\(.*cuda_device-[0-9a-f]*\)).*/\1/p' | tail -1)
    [ -n "$test_bin" ] || die "could not find the cuda_device test binary"
    if [ "$mode" = bundle ]; then
        pack "$test_bin"
        exit 0
    fi
fi

# One test at a time: they share the one device.
"$test_bin" --test-threads=1 --nocapture "${GPU_CHECK_FILTER:-}"
# The whole-model checks and the graph replay again with one-token matvecs that decode the
# weights to floats (TORCHLESS_CUDA_MATVEC=float; the default int8 kernels ran above: SmolLM2's
# Q4_1 and Q8_0 matrices, gemma-3's Q4_K, Q5_0, Q6_K and Q8_0 ones; ops_matmul_int8_matvec
# covers every shape of the harness).
if [ -z "${GPU_CHECK_FILTER:-}" ]; then
    TORCHLESS_CUDA_MATVEC=float "$test_bin" --test-threads=1 --nocapture gemma3_ smollm2_logits \
        decode_graphs
fi
echo "gpu-check: all CUDA checks passed"
