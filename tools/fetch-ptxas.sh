#!/usr/bin/env bash
# Fetch NVIDIA's PTX assembler (ptxas) for the CUDA build test that assembles every embedded PTX
# module for sm_80 and sm_90, the step the driver's JIT performs when a module is loaded. No GPU
# and no CUDA installation are needed: ptxas is one static binary inside the
# `nvidia-cuda-nvcc-cu12` wheel on the public Python package index, fetched with
# `pip download --no-deps --require-hashes` and unpacked with Python's zipfile module.
#
# Usage: tools/fetch-ptxas.sh      prints the path of the ptxas binary on stdout
#
# Output: <repo>/target/ptxas-<version>/ptxas (git-ignored; idempotent: an existing binary that
# runs is reused). Progress goes to stderr.
#
# Environment: PYTHON (interpreter, default python3), TMPDIR (temporary download folder).
set -euo pipefail

log() { printf 'fetch-ptxas: %s\n' "$*" >&2; }
die() { printf 'fetch-ptxas: error: %s\n' "$*" >&2; exit 1; }

SCRIPT_DIR="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
REPO_ROOT="$(cd "$SCRIPT_DIR/.." && pwd)"
PYTHON="${PYTHON:-python3}"

VERSION="12.9.86"
# The wheel's sha256 for each machine type it is published for (PyPI, nvidia-cuda-nvcc-cu12).
SHA_X86_64="5d6a0d32fdc7ea39917c20065614ae93add6f577d840233237ff08e9a38f58f0"
SHA_AARCH64="44e1eca4d08926193a558d2434b1bf83d57b4d5743e0c431c0c83d51da1df62b"

OUT_DIR="$REPO_ROOT/target/ptxas-$VERSION"
BIN="$OUT_DIR/ptxas"

if [ -x "$BIN" ] && "$BIN" --version >/dev/null 2>&1; then
    echo "$BIN"
    exit 0
fi

case "$(uname -m)" in
    x86_64) ;;
    aarch64) ;;
    *) die "no ptxas wheel for machine type $(uname -m) (x86_64 and aarch64 only)" ;;
esac

tmp="$(mktemp -d)"
trap 'rm -rf "$tmp"' EXIT
printf 'nvidia-cuda-nvcc-cu12==%s --hash=sha256:%s --hash=sha256:%s\n' \
    "$VERSION" "$SHA_X86_64" "$SHA_AARCH64" >"$tmp/requirements.txt"
log "downloading nvidia-cuda-nvcc-cu12 $VERSION (about 40 MB) for ptxas"
"$PYTHON" -m pip download --quiet --disable-pip-version-check --no-deps --only-binary=:all: \
    --require-hashes -r "$tmp/requirements.txt" -d "$tmp" >&2 \
    || die "pip could not download nvidia-cuda-nvcc-cu12==$VERSION"

mkdir -p "$OUT_DIR"
"$PYTHON" - "$tmp" "$BIN" <<'EOF' || die "could not unpack ptxas from the wheel"
import glob, os, shutil, sys, zipfile

tmp, dest = sys.argv[1], sys.argv[2]
wheels = glob.glob(os.path.join(tmp, "nvidia_cuda_nvcc_cu12-*.whl"))
if len(wheels) != 1:
    sys.exit(f"expected one wheel in {tmp}, found {wheels}")
with zipfile.ZipFile(wheels[0]) as z:
    with z.open("nvidia/cuda_nvcc/bin/ptxas") as src, open(dest + ".tmp", "wb") as dst:
        shutil.copyfileobj(src, dst)
os.chmod(dest + ".tmp", 0o755)
os.replace(dest + ".tmp", dest)
EOF
"$BIN" --version >/dev/null 2>&1 || die "$BIN does not run on this machine"
log "ptxas $VERSION in $BIN"
echo "$BIN"
