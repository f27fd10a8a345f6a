#!/usr/bin/env bash
# Regenerate the tokenizer reference fixtures from llama.cpp's own tokenizer.
#
# For every string in tests/fixtures/tokenize/corpus.json (a JSON list of strings) this runs
#   llama-tokenize -m MODEL -f <file holding the string verbatim> --ids --no-escape --log-disable
# i.e. llama-tokenize's defaults (BOS added if the model asks for it, special tokens parsed),
# with the text read byte for byte from a file so newlines, tabs and quotes survive, and writes
#   tests/fixtures/tokenize/smollm2.json   (SmolLM2-135M-Instruct.Q4_1.gguf, gpt2 / smollm)
#   tests/fixtures/tokenize/gemma3.json    (gemma-3-270m-q4_k_m.gguf, SentencePiece)
# as [{"text": "...", "ids": [...]}, ...] in corpus order. tests/tokenizer.rs checks
# torchless' tokenizer against these files.
#
# The other byte-level BPE pre-tokenizers (llama3, qwen2, gpt-2, default) have no real model
# here, so they are checked on SmolLM2's vocabulary with `tokenizer.ggml.pre` swapped: a
# vocabulary-only copy of the SmolLM2 metadata (no tensors; llama-tokenize loads vocab only)
# is written with the `gguf` Python package per pre-tokenizer, giving
#   tests/fixtures/tokenize/smollm2-pre-<name>.json
# (`gguf` from PyPI, or llama.cpp's own gguf-py next to the build, is used).
#
# Usage: tools/gen-token-fixtures.sh [LLAMACPP_BIN] [MODELS_DIR]
#   LLAMACPP_BIN  folder holding llama-tokenize (also env LLAMACPP_BIN); default: the folder
#                 printed by tools/build-llamacpp.sh (which builds llama.cpp if needed)
#   MODELS_DIR    folder holding the two GGUF files (also env TORCHLESS_MODELS_DIR);
#                 default <repo>/models (see tools/fetch-models.sh)
# Environment: PYTHON (default python3).
#
# Deterministic: the same corpus, models and llama.cpp version give byte-identical output.
set -euo pipefail

log() { printf 'gen-token-fixtures: %s\n' "$*" >&2; }
die() { printf 'gen-token-fixtures: error: %s\n' "$*" >&2; exit 1; }

SCRIPT_DIR="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
REPO_ROOT="$(cd "$SCRIPT_DIR/.." && pwd)"
PYTHON="${PYTHON:-python3}"
FIXTURES="$REPO_ROOT/tests/fixtures/tokenize"
CORPUS="$FIXTURES/corpus.json"

BIN="${1:-${LLAMACPP_BIN:-}}"
if [[ -z "$BIN" ]]; then
    log "no llama.cpp folder given; asking tools/build-llamacpp.sh"
    BIN="$("$SCRIPT_DIR/build-llamacpp.sh")"
fi
MODELS="${2:-${TORCHLESS_MODELS_DIR:-$REPO_ROOT/models}}"

TOKENIZE="$BIN/llama-tokenize"
[[ -x "$TOKENIZE" ]] || die "llama-tokenize not found in '$BIN' (build it with tools/build-llamacpp.sh)"
[[ -f "$CORPUS" ]] || die "corpus not found: $CORPUS"
command -v "$PYTHON" >/dev/null 2>&1 || die "python interpreter '$PYTHON' not found"

SMOLLM="$MODELS/SmolLM2-135M-Instruct.Q4_1.gguf"
GEMMA="$MODELS/gemma-3-270m-q4_k_m.gguf"
for m in "$SMOLLM" "$GEMMA"; do
    [[ -f "$m" ]] || die "model not found: $m (run tools/fetch-models.sh)"
done

# Shared libraries sit next to the binaries in a shared build.
export LD_LIBRARY_PATH="$BIN${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
# llama.cpp's gguf-py (<llama.cpp>/gguf-py, with <llama.cpp>/build/bin = $BIN) as a fallback
# for the `gguf` package.
GGUF_PY="$(cd "$BIN/../.." 2>/dev/null && pwd)/gguf-py"
if [[ -d "$GGUF_PY" ]]; then
    export PYTHONPATH="${PYTHONPATH:+$PYTHONPATH:}$GGUF_PY"
fi

"$PYTHON" - "$TOKENIZE" "$CORPUS" "$SMOLLM" "$GEMMA" "$FIXTURES" <<'PY'
import json, os, subprocess, sys, tempfile

tokenize, corpus_path, smollm, gemma, fixtures = sys.argv[1:6]
jobs = [(smollm, os.path.join(fixtures, "smollm2.json")), (gemma, os.path.join(fixtures, "gemma3.json"))]
# tokenizer.ggml.pre values checked on SmolLM2's vocabulary, beyond its own "smollm".
PRE_VARIANTS = ["llama3", "qwen2", "gpt-2", "default"]

def vocab_only_copy(src, dst, pre):
    """Writes `src`'s metadata (no tensors) to `dst` with tokenizer.ggml.pre = `pre`."""
    from gguf import GGUFReader, GGUFWriter, GGUFValueType
    r = GGUFReader(src)
    w = GGUFWriter(dst, arch=bytes(r.fields["general.architecture"].parts[-1]).decode())
    for key, f in r.fields.items():
        if key.startswith("GGUF.") or key == "general.architecture":
            continue
        t = f.types[0]
        if key == "tokenizer.ggml.pre":
            w.add_string(key, pre)
        elif t == GGUFValueType.ARRAY:
            if f.types[1] == GGUFValueType.STRING:
                w.add_array(key, [bytes(f.parts[i]).decode("utf-8") for i in f.data])
            else:
                w.add_array(key, [f.parts[i][0].item() for i in f.data])
        elif t == GGUFValueType.STRING:
            w.add_string(key, bytes(f.parts[f.data[0]]).decode("utf-8"))
        else:
            w.add_key_value(key, f.parts[f.data[0]][0].item(), t)
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()

with open(corpus_path, encoding="utf-8") as f:
    corpus = json.load(f)
if not isinstance(corpus, list) or not all(isinstance(s, str) for s in corpus):
    sys.exit("gen-token-fixtures: error: corpus must be a JSON list of strings")

def ids_for(model, text, tmpdir):
    path = os.path.join(tmpdir, "prompt.txt")
    with open(path, "wb") as f:
        f.write(text.encode("utf-8"))
    cmd = [tokenize, "-m", model, "-f", path, "--ids", "--no-escape", "--log-disable"]
    r = subprocess.run(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    if r.returncode != 0:
        sys.exit(f"gen-token-fixtures: error: llama-tokenize failed on {text!r}:\n"
                 + r.stderr.decode("utf-8", "replace"))
    # The id list is the last line that looks like a Python list.
    lines = [l for l in r.stdout.decode("utf-8", "replace").splitlines() if l.startswith("[")]
    if not lines:
        sys.exit(f"gen-token-fixtures: error: no id list in llama-tokenize output for {text!r}")
    return json.loads(lines[-1])

with tempfile.TemporaryDirectory() as tmpdir:
    for pre in PRE_VARIANTS:
        path = os.path.join(tmpdir, f"smollm2-pre-{pre}.gguf")
        vocab_only_copy(smollm, path, pre)
        jobs.append((path, os.path.join(fixtures, f"smollm2-pre-{pre}.json")))
    for model, out_path in jobs:
        rows = [{"text": t, "ids": ids_for(model, t, tmpdir)} for t in corpus]
        with open(out_path, "w", encoding="utf-8") as f:
            f.write("[\n")
            f.write(",\n".join(json.dumps(r, ensure_ascii=False) for r in rows))
            f.write("\n]\n")
        print(f"gen-token-fixtures: wrote {len(rows)} cases to {out_path}", file=sys.stderr)
PY
