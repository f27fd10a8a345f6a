#!/usr/bin/env bash
# Fetch NVIDIA's CUDA compiler (nvcc) and PTX assembler (ptxas) for the CUDA build tests, which
# need no GPU: they assemble every embedded PTX module for sm_80 and sm_90 (what the driver's
# JIT does when a module is loaded) and build every kernel file with nvcc as well as clang (the
# prelude's claim that one source builds under both). cuobjdump and nvdisasm come along for the
# SASS tools (tools/sass-rounds.py, tools/sass-loops.py). Nothing is installed system-wide: six
# wheels of the public Python package index (nvcc, cicc, the runtime headers, crt headers,
# cuobjdump, nvdisasm), fetched with `pip download --no-deps --require-hashes` and unpacked
# with Python's zipfile.
#
# Usage: tools/fetch-cuda-tools.sh      prints the toolkit folder on stdout; its bin/ holds
#                                       nvcc, ptxas, cuobjdump and nvdisasm
#
# Output: <repo>/target/cuda-tools-<version>/ (git-ignored, about 350 MB; idempotent: a folder
# whose programs all run is reused). Needs about 130 MB of download. Progress goes to stderr.
#
# Environment: PYTHON (interpreter, default python3), TMPDIR (temporary download folder).
set -euo pipefail

log() { printf 'fetch-cuda-tools: %s\n' "$*" >&2; }
die() { printf 'fetch-cuda-tools: error: %s\n' "$*" >&2; exit 1; }

SCRIPT_DIR="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
REPO_ROOT="$(cd "$SCRIPT_DIR/.." && pwd)"
PYTHON="${PYTHON:-python3}"

VERSION="13.5.37"
# Each wheel's sha256 for x86_64 and aarch64 (PyPI).
WHEELS=(
    "nvidia-cuda-nvcc f5c4f7ead5d964fb4af42bbf1e6d3ec3c1e6e9d83b53749f691d387e7fcaa3a7 588eda18eb5076ae859fe272844b526459228af22df0b117f54eec3aa82bc9c8"
    "nvidia-nvvm c41bfa362e407405163f103c2229f0765f8cc2ed7d148b754dc77f228bf7e070 b659bd3115b7ac7ec8931e67d0e2c0dd09cd35b08a6a7372df6f8f22c67da80a"
    "nvidia-cuda-runtime df2b79a8852f10d1fef8c848489c49eebb5754051bf870202a862831412b179d de2dc5a7367974228b0a69588a9acc9340d3768bef1bf38bf0801eb08497cd2d"
    "nvidia-cuda-crt e898b7f73d3035fa89915a3f7bf3b54a73e90249746111aed295822c4729bb29 9ed2c565fdf3244fa6719769a80a466b85bfd4b1467ea339353bc91c971d09e0"
    "nvidia-cuda-cuobjdump 38780fee50863252a0b8926357faa91615ca1c8346490563f33a06100cd73f58 f48e3148535365161a268547b285fd01d92c80e4b457275375933825b5fc26b2"
    "nvidia-cuda-nvdisasm d3fdbdd49fa53e2e4aacd3db8259d052bd2b049ececdcb69e92e083c6728e7ca a3a8248074edb9fba63b74c38a5416b712a91ab09e70b8ab37186c3d293fc605"
)

OUT_DIR="$REPO_ROOT/target/cuda-tools-$VERSION"
runs() {
    for prog in nvcc ptxas cuobjdump nvdisasm; do
        "$OUT_DIR/bin/$prog" --version >/dev/null 2>&1 || return 1
    done
}
if runs; then
    echo "$OUT_DIR"
    exit 0
fi

case "$(uname -m)" in
    x86_64 | aarch64) ;;
    *) die "no CUDA tool wheels for machine type $(uname -m) (x86_64 and aarch64 only)" ;;
esac

tmp="$(mktemp -d)"
trap 'rm -rf "$tmp"' EXIT
for w in "${WHEELS[@]}"; do
    read -r name sha_x86 sha_arm <<<"$w"
    printf '%s==%s --hash=sha256:%s --hash=sha256:%s\n' "$name" "$VERSION" "$sha_x86" "$sha_arm"
done >"$tmp/requirements.txt"
log "downloading nvcc, cicc, headers, cuobjdump and nvdisasm of CUDA $VERSION (about 130 MB)"
"$PYTHON" -m pip download --quiet --disable-pip-version-check --no-deps --only-binary=:all: \
    --require-hashes -r "$tmp/requirements.txt" -d "$tmp" >&2 \
    || die "pip could not download the CUDA $VERSION tool wheels"

rm -rf "$OUT_DIR.tmp"
mkdir -p "$OUT_DIR.tmp"
# Each wheel holds nvidia/cu13/{bin,nvvm,include,lib}/...; they merge into one toolkit folder.
"$PYTHON" - "$tmp" "$OUT_DIR.tmp" <<'PY' || die "could not unpack the CUDA tool wheels"
import glob, os, sys, zipfile

tmp, dest = sys.argv[1], sys.argv[2]
wheels = glob.glob(os.path.join(tmp, "*.whl"))
if len(wheels) != 6:
    sys.exit(f"expected six wheels in {tmp}, found {wheels}")
prefix = "nvidia/cu13/"
for whl in wheels:
    with zipfile.ZipFile(whl) as z:
        for info in z.infolist():
            if not info.filename.startswith(prefix) or info.is_dir():
                continue
            rel = info.filename[len(prefix):]
            path = os.path.join(dest, rel)
            os.makedirs(os.path.dirname(path), exist_ok=True)
            with z.open(info) as src, open(path, "wb") as dst:
                dst.write(src.read())
            if rel.startswith(("bin/", "nvvm/bin/")):
                os.chmod(path, 0o755)
PY
rm -rf "$OUT_DIR"
mv "$OUT_DIR.tmp" "$OUT_DIR"
runs || die "nvcc, ptxas, cuobjdump or nvdisasm in $OUT_DIR does not run on this machine"
log "CUDA $VERSION tools in $OUT_DIR"
echo "$OUT_DIR"
