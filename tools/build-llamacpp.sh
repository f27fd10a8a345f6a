#!/usr/bin/env bash
# Build the llama.cpp reference tools (CPU only) used to make torchless' reference fixtures and
# to compare speed: llama-bench, llama-completion, llama-tokenize, llama-perplexity, plus our own
# tools/llama-logits.cpp (logits of every position, written as .npy).
#
# Source: the llama.cpp tree vendored in the llama-cpp-python sdist (version pinned below; it
# carries llama.cpp commit 0c1e570), fetched with the ordinary client:
#   pip download --no-deps --no-binary llama-cpp-python llama-cpp-python==0.3.36
# (the same sdist that `--no-binary :all:` gives, without letting pip compile the build backend's
# dependencies from source), unpacked into $TORCHLESS_LLAMACPP_CACHE (default
# <repo>/.cache/llama.cpp, git-ignored).
# Or point LLAMACPP_DIR at an existing llama.cpp source tree (the folder holding CMakeLists.txt,
# include/llama.h and, once built, build/bin); nothing is downloaded then.
#
# Build (CPU only, exactly):
#   cmake -B build -DGGML_NATIVE=ON -DLLAMA_CURL=OFF -DLLAMA_OPENSSL=OFF -DLLAMA_BUILD_TESTS=OFF -DCMAKE_BUILD_TYPE=Release
#   cmake --build build -j2 --target llama-bench llama-completion llama-tokenize llama-perplexity
# (about 5 minutes on 2 idle cores). cmake (and build-essential) are apt-installed if missing,
# after an apt-get update, before anything else needs them.
#
# Idempotent: an existing download, configure or build is reused; llama-logits is recompiled only
# when tools/llama-logits.cpp or libllama is newer than the binary.
# Progress goes to stderr; the one line on stdout is the folder holding the binaries
# (<llama.cpp>/build/bin), so `BIN="$(tools/build-llamacpp.sh)"` works.
#
# Environment: LLAMACPP_DIR, TORCHLESS_LLAMACPP_CACHE, PYTHON (default python3), CXX (default c++).
set -euo pipefail

log() { printf 'build-llamacpp: %s\n' "$*" >&2; }
die() { printf 'build-llamacpp: error: %s\n' "$*" >&2; exit 1; }

SCRIPT_DIR="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
REPO_ROOT="$(cd "$SCRIPT_DIR/.." && pwd)"
PYTHON="${PYTHON:-python3}"
LLAMA_CPP_PYTHON_VERSION="0.3.36"
TARGETS=(llama-bench llama-completion llama-tokenize llama-perplexity)

WORK=""
cleanup() { if [[ -n "$WORK" ]]; then rm -rf "$WORK"; fi; }
trap cleanup EXIT

as_root() {
    if [[ "$(id -u)" == 0 ]]; then
        "$@"
    elif command -v sudo >/dev/null 2>&1; then
        sudo "$@"
    else
        die "need root (or sudo) to run: $*"
    fi
}

APT_UPDATED=0
apt_install() {
    command -v apt-get >/dev/null 2>&1 || die "$1 is missing and apt-get is not available: install $* by hand"
    if [[ $APT_UPDATED == 0 ]]; then
        log "apt-get update"
        as_root env DEBIAN_FRONTEND=noninteractive apt-get update >&2
        APT_UPDATED=1
    fi
    log "apt-get install -y $*"
    as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends "$@" >&2
}

ensure_cmake() {
    if ! command -v cmake >/dev/null 2>&1; then
        apt_install cmake
    fi
    if ! command -v "${CXX:-c++}" >/dev/null 2>&1 || ! command -v cc >/dev/null 2>&1 || ! command -v make >/dev/null 2>&1; then
        apt_install build-essential
    fi
}

# ---------------------------------------------------------------- source tree
if [[ -n "${LLAMACPP_DIR:-}" ]]; then
    SRC="$(cd "$LLAMACPP_DIR" && pwd)" || die "LLAMACPP_DIR=$LLAMACPP_DIR is not a folder"
    [[ -f "$SRC/CMakeLists.txt" && -f "$SRC/include/llama.h" ]] \
        || die "LLAMACPP_DIR=$SRC does not look like a llama.cpp source tree (no CMakeLists.txt / include/llama.h)"
    log "using the llama.cpp tree at $SRC (LLAMACPP_DIR)"
else
    CACHE="${TORCHLESS_LLAMACPP_CACHE:-$REPO_ROOT/.cache/llama.cpp}"
    mkdir -p "$CACHE"
    CACHE="$(cd "$CACHE" && pwd)"
    SRC="$CACHE/llama_cpp_python-$LLAMA_CPP_PYTHON_VERSION/vendor/llama.cpp"
    if [[ -f "$SRC/CMakeLists.txt" && -f "$SRC/include/llama.h" ]]; then
        log "llama.cpp source already unpacked at $SRC"
    else
        command -v "$PYTHON" >/dev/null 2>&1 || die "$PYTHON not found (set PYTHON=...)"
        # cmake first: pip prepares the sdist's metadata with its build backend (scikit-build-core),
        # which asks for the `cmake` PyPI package when no system cmake is found.
        ensure_cmake
        WORK="$(mktemp -d "${TMPDIR:-/tmp}/torchless-llamacpp.XXXXXX")"
        # --no-binary is limited to llama-cpp-python itself (rather than :all:) so that pip never
        # compiles the backend's own build dependencies from source while preparing metadata.
        log "pip download --no-deps --no-binary llama-cpp-python llama-cpp-python==$LLAMA_CPP_PYTHON_VERSION"
        "$PYTHON" -m pip download --no-deps --no-binary llama-cpp-python --no-cache-dir --disable-pip-version-check \
            --progress-bar off -d "$WORK" "llama-cpp-python==$LLAMA_CPP_PYTHON_VERSION" >&2 \
            || die "pip download of the llama-cpp-python sdist failed"
        sdist="$(ls "$WORK"/llama_cpp_python-"$LLAMA_CPP_PYTHON_VERSION".tar.gz 2>/dev/null | head -n1 || true)"
        [[ -n "$sdist" ]] || die "sdist llama_cpp_python-$LLAMA_CPP_PYTHON_VERSION.tar.gz not found after download"
        log "unpacking $(basename "$sdist") into $CACHE"
        rm -rf "$CACHE/llama_cpp_python-$LLAMA_CPP_PYTHON_VERSION"
        "$PYTHON" - "$sdist" "$CACHE" <<'EOF'
import sys, tarfile
with tarfile.open(sys.argv[1]) as t:
    if hasattr(tarfile, "data_filter"):
        t.extractall(sys.argv[2], filter="data")
    else:
        for m in t.getmembers():
            if m.name.startswith("/") or ".." in m.name.split("/"):
                raise SystemExit(f"unsafe path in sdist: {m.name}")
        t.extractall(sys.argv[2])
EOF
        [[ -f "$SRC/CMakeLists.txt" ]] || die "the sdist has no vendor/llama.cpp/CMakeLists.txt"
    fi
fi

BUILD="$SRC/build"
BIN="$BUILD/bin"

# ---------------------------------------------------------------- cmake build
missing=()
for t in "${TARGETS[@]}"; do
    [[ -x "$BIN/$t" ]] || missing+=("$t")
done
if [[ ${#missing[@]} == 0 ]]; then
    log "llama.cpp tools already built in $BIN"
else
    ensure_cmake
    cd "$SRC"
    if [[ ! -f "$BUILD/CMakeCache.txt" ]]; then
        log "configuring: cmake -B build -DGGML_NATIVE=ON -DLLAMA_CURL=OFF -DLLAMA_OPENSSL=OFF -DLLAMA_BUILD_TESTS=OFF -DCMAKE_BUILD_TYPE=Release"
        cmake -B build -DGGML_NATIVE=ON -DLLAMA_CURL=OFF -DLLAMA_OPENSSL=OFF -DLLAMA_BUILD_TESTS=OFF \
            -DCMAKE_BUILD_TYPE=Release >&2
    else
        log "build/CMakeCache.txt exists: reusing the configured build"
    fi
    log "building (missing: ${missing[*]}): cmake --build build -j2 --target ${TARGETS[*]} (~5 min on 2 cores)"
    cmake --build build -j2 --target "${TARGETS[@]}" >&2
    for t in "${TARGETS[@]}"; do
        [[ -x "$BIN/$t" ]] || die "$BIN/$t was not built"
    done
fi

# ---------------------------------------------------------------- llama-logits
LOGITS_SRC="$SCRIPT_DIR/llama-logits.cpp"
LOGITS_BIN="$BIN/llama-logits"
[[ -f "$LOGITS_SRC" ]] || die "$LOGITS_SRC not found"
libllama="$(ls "$BIN"/libllama.so "$BUILD"/src/libllama.so 2>/dev/null | head -n1 || true)"
[[ -n "$libllama" ]] || die "libllama.so not found in $BIN or $BUILD/src (a shared-library build is expected)"
LIBDIR="$(dirname "$libllama")"
if [[ -x "$LOGITS_BIN" && "$LOGITS_BIN" -nt "$LOGITS_SRC" && "$LOGITS_BIN" -nt "$libllama" ]]; then
    log "llama-logits is up to date ($LOGITS_BIN)"
else
    CXX="${CXX:-c++}"
    command -v "$CXX" >/dev/null 2>&1 || apt_install build-essential
    log "compiling $LOGITS_SRC -> $LOGITS_BIN"
    "$CXX" -std=c++17 -O2 -Wall -Wextra \
        -I "$SRC/include" -I "$SRC/ggml/include" \
        "$LOGITS_SRC" -o "$LOGITS_BIN.tmp" \
        -L "$LIBDIR" -lllama -lggml -lggml-base -Wl,-rpath,"$LIBDIR" >&2
    mv -f "$LOGITS_BIN.tmp" "$LOGITS_BIN"
fi

log "ready: $BIN"
printf '%s\n' "$BIN"
