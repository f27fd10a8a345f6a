#!/usr/bin/env bash
# Generate torchless' llama.cpp reference fixtures for the two real models:
#
#   tests/fixtures/logits/<model>.json, <model>.logits.npy     (model: smollm2, gemma3)
#       A fixed English paragraph, tokenized with llama-tokenize (BOS added when the model asks
#       for it), evaluated as one sequence in one batch by tools/llama-logits.cpp with 2 threads;
#       the logits of every position stored as float16 .npy [n_ids, n_vocab]. The JSON holds the
#       ids, and top1 / top2_margin per position computed from the float32 logits (before the
#       rounding to float16). Row j is the prediction for position j+1.
#   tests/fixtures/logits/<model>.exact.json
#       The same ids' logits computed exactly by tools/exact-perplexity.py --logits (float64,
#       dequantized weights, no activation rounding): per position the log-sum-exp and the 32
#       largest logits with their ids.
#   tests/fixtures/perplexity/text.txt, README.md
#       A verbatim prefix of the GPL-3 text (from /usr/share/common-licenses/GPL-3) made only when
#       text.txt is missing; an existing text.txt is reused as is.
#   tests/fixtures/perplexity/<model>.json
#       llama-perplexity -m MODEL -f text.txt -c 128 -b 128 --chunks N -t 2, with N = all the
#       128-token chunks the text gives, at most 16; and under "exact" the same chunks computed
#       exactly by tools/exact-perplexity.py (float64, dequantized weights, no activation rounding).
#
# Needs: the llama.cpp build (tools/build-llamacpp.sh is run; it honours LLAMACPP_DIR), the models
# (tools/fetch-models.sh is run; it honours TORCHLESS_MODELS_DIR), python3 with numpy and gguf
# (tools/requirements-fixtures.txt pins both).
# Or set LLAMACPP_BIN to a folder that already holds llama-tokenize, llama-perplexity, llama-logits.
# Progress and the top-2 margin summary go to stderr.
set -euo pipefail

log() { printf 'gen-ref-fixtures: %s\n' "$*" >&2; }
die() { printf 'gen-ref-fixtures: error: %s\n' "$*" >&2; exit 1; }

SCRIPT_DIR="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
REPO_ROOT="$(cd "$SCRIPT_DIR/.." && pwd)"
PYTHON="${PYTHON:-python3}"
THREADS=2
PPL_CTX=128
PPL_MAX_CHUNKS=16
EXPECTED_COMMIT="0c1e570"

"$PYTHON" -c 'import numpy, gguf' 2>/dev/null \
    || die "$PYTHON cannot import numpy and gguf (pip install -r tools/requirements-fixtures.txt)"

# ------------------------------------------------------------------ inputs
if [[ -n "${LLAMACPP_BIN:-}" ]]; then
    BIN="$(cd "$LLAMACPP_BIN" && pwd)"
else
    BIN="$("$SCRIPT_DIR/build-llamacpp.sh")"
fi
for t in llama-tokenize llama-perplexity llama-logits; do
    [[ -x "$BIN/$t" ]] || die "$BIN/$t not found (run tools/build-llamacpp.sh)"
done

COMMIT="unknown"
if [[ -f "$BIN/../common/build-info.cpp" ]]; then
    COMMIT="$(sed -n 's/.*LLAMA_COMMIT = "\([^"]*\)".*/\1/p' "$BIN/../common/build-info.cpp" | head -n1)"
fi
if [[ "$COMMIT" != "$EXPECTED_COMMIT" ]]; then
    log "warning: llama.cpp build commit is '$COMMIT', the fixtures are meant to come from $EXPECTED_COMMIT"
fi

"$SCRIPT_DIR/fetch-models.sh"
MODELS_DIR="$(cd "${TORCHLESS_MODELS_DIR:-$REPO_ROOT/models}" && pwd)"

LOGITS_DIR="$REPO_ROOT/tests/fixtures/logits"
PPL_DIR="$REPO_ROOT/tests/fixtures/perplexity"
mkdir -p "$LOGITS_DIR" "$PPL_DIR"

WORK="$(mktemp -d "${TMPDIR:-/tmp}/torchless-fixtures.XXXXXX")"
trap 'rm -rf "$WORK"' EXIT

# name|model file|stride|text  (ordinary prose written for these fixtures, ~100 ids).
# At least 64 ids, so that llama.cpp evaluates them with the same attention path as its perplexity
# runs (its CPU flash attention uses f32 tiles for batches of 64+ queries and an f16 accumulator
# below that). Only every `stride`-th position is stored, to keep gemma's 262144-wide rows small.
TEXT="The old lighthouse stood at the edge of the cliff, its white paint peeling after many winters of wind and salt. Every evening the keeper climbed the narrow stairs to light the lamp, and every morning he wrote a short note in the logbook about the weather and the ships he had seen. In the spring of that year, a storm came from the west and lasted for three days; the keeper did not sleep, and when it was over he found a small boat on the rocks below."
MODELS=(
    "smollm2|SmolLM2-135M-Instruct.Q4_1.gguf|1|$TEXT"
    "gemma3|gemma-3-270m-q4_k_m.gguf|3|$TEXT"
)

# tokenize MODEL_PATH TEXT_FILE -> "1, 2, 3" (llama-tokenize reads the file verbatim; no escapes)
tokenize() {
    local out
    out="$("$BIN/llama-tokenize" -m "$1" -f "$2" --ids --no-escape --log-disable 2>"$WORK/tokenize.log")" \
        || { cat "$WORK/tokenize.log" >&2; die "llama-tokenize failed on $2"; }
    out="$(printf '%s\n' "$out" | grep '^\[' | tail -n1)"
    [[ -n "$out" ]] || die "llama-tokenize printed no id list for $2"
    out="${out#[}"
    printf '%s\n' "${out%]}"
}

# ------------------------------------------------------------------ logits
for entry in "${MODELS[@]}"; do
    IFS='|' read -r name file stride text <<<"$entry"
    model="$MODELS_DIR/$file"
    printf '%s' "$text" >"$WORK/$name.txt"
    ids="$(tokenize "$model" "$WORK/$name.txt")"
    ids_csv="${ids//[[:space:]]/}"
    n_ids="$(awk -F, '{print NF}' <<<"$ids_csv")"
    log "$name: $n_ids ids"

    # The exact logits (float64, activations never rounded): log-sum-exp and top 32 per position,
    # what CUDA's logits are checked against.
    log "$name: exact logits (tools/exact-perplexity.py --logits, float64)"
    printf '%s\n' "$ids_csv" >"$WORK/$name.logit-ids"
    "$PYTHON" "$SCRIPT_DIR/exact-perplexity.py" --logits "$model" "$WORK/$name.logit-ids" 32 \
        >"$LOGITS_DIR/$name.exact.json" || die "exact-perplexity.py --logits failed for $name"

    log "$name: llama-logits -m $file --ids ... --threads $THREADS (float32)"
    "$BIN/llama-logits" -m "$model" --ids "$ids_csv" --out "$WORK/$name.f32.npy" --threads "$THREADS" \
        2>"$WORK/$name.logits.log" || { cat "$WORK/$name.logits.log" >&2; die "llama-logits failed"; }
    fa_line="$(grep -m1 'Flash Attention' "$WORK/$name.logits.log" || true)"
    log "$name: ${fa_line:-no Flash Attention line in the llama.cpp log}"
    log "$name: llama-logits ... --f16 (checks the tool's own float16 writer)"
    "$BIN/llama-logits" -m "$model" --ids "$ids_csv" --out "$WORK/$name.f16.npy" --threads "$THREADS" --f16 \
        2>"$WORK/$name.logits16.log" || { cat "$WORK/$name.logits16.log" >&2; die "llama-logits --f16 failed"; }

    "$PYTHON" - "$name" "$file" "$WORK/$name.txt" "$ids_csv" "$WORK/$name.f32.npy" "$WORK/$name.f16.npy" \
        "$LOGITS_DIR" "$COMMIT" "$THREADS" "$fa_line" "$stride" <<'EOF'
import json, sys
import numpy as np
name, file, text_path, ids_csv, f32_path, f16_path, out_dir, commit, threads, fa_line, stride = sys.argv[1:]
stride = int(stride)
text = open(text_path, encoding="utf-8").read()
ids = [int(x) for x in ids_csv.split(",")]
x = np.load(f32_path)
assert x.dtype == np.float32 and x.ndim == 2 and x.shape[0] == len(ids), (x.dtype, x.shape)
assert np.isfinite(x).all(), "non-finite logits"
h = x.astype(np.float16)  # round to nearest even
tool16 = np.load(f16_path)
if not (tool16.dtype == np.float16 and tool16.shape == h.shape and np.array_equal(tool16.view(np.uint16), h.view(np.uint16))):
    d = np.abs(tool16.astype(np.float32) - x).max() if tool16.shape == x.shape else float("nan")
    print(f"gen-ref-fixtures: warning: {name}: llama-logits --f16 output differs from numpy's rounding "
          f"of the float32 run (max |diff| {d}); the fixture uses numpy's rounding", file=sys.stderr)
order = np.argsort(-x, axis=1, kind="stable")
top1 = order[:, 0]
margin = x[np.arange(len(ids)), top1] - x[np.arange(len(ids)), order[:, 1]]
positions = list(range(0, len(ids), stride))
np.save(f"{out_dir}/{name}.logits.npy", h[positions])
fa = "enabled" if "Flash Attention enabled" in fa_line else ("disabled" if "Flash Attention" in fa_line else "unknown")
meta = {
    "model_file": file,
    "text": text,
    "ids": ids,
    "llamacpp_commit": commit,
    "threads": int(threads),
    "positions": positions,
    "top1": [int(top1[p]) for p in positions],
    "top2_margin": [round(float(margin[p]), 6) for p in positions],
    "n_vocab": int(x.shape[1]),
    "logits_file": f"{name}.logits.npy",
    "logits_dtype": "float16",
    "tool": "tools/llama-logits.cpp (one sequence, one batch; row i holds the logits at position positions[i], which predict the token after it)",
    "flash_attn": fa,
    "kv_cache_type": "f16",
}
with open(f"{out_dir}/{name}.json", "w", encoding="utf-8") as f:
    json.dump(meta, f, indent=1, ensure_ascii=False)
    f.write("\n")
n = len(positions)
margin = margin[positions]
clear = int((margin >= 0.5).sum())
r = np.abs(h.astype(np.float32) - x).max()
print(f"gen-ref-fixtures: {name}: {n} positions, top-2 margin >= 0.5 at {clear}/{n}, "
      f"min margin {margin.min():.4f}, median {np.median(margin):.4f}; "
      f"logits range [{x.min():.2f}, {x.max():.2f}], f16 rounding error max {r:.4f}", file=sys.stderr)
EOF
done

# ------------------------------------------------------------------ perplexity text
TEXT="$PPL_DIR/text.txt"
if [[ -f "$TEXT" ]]; then
    log "reusing $TEXT"
else
    GPL=/usr/share/common-licenses/GPL-3
    [[ -f "$GPL" ]] || die "$TEXT is missing and $GPL is not there to make it from"
    log "making $TEXT from $GPL (from the start up to section 2)"
    "$PYTHON" - "$GPL" "$TEXT" <<'EOF'
import sys
t = open(sys.argv[1], encoding="utf-8").read()
end = t.index("  2. Basic Permissions.")
open(sys.argv[2], "w", encoding="utf-8").write(t[:end].rstrip("\n") + "\n")
EOF
fi
if [[ ! -f "$PPL_DIR/README.md" ]]; then
    cat >"$PPL_DIR/README.md" <<'EOF'
Source of `text.txt`: the beginning of the GNU General Public License version 3 as installed in
Debian's `/usr/share/common-licenses/GPL-3` (package `base-files`), copied verbatim from its first
line up to, not including, section "2. Basic Permissions" (title, preamble, sections 0 and 1).
Copyright (C) 2007 Free Software Foundation, Inc. <https://fsf.org/>; "Everyone is permitted to
copy and distribute verbatim copies of this license document, but changing it is not allowed."
It is used only as test data for perplexity; it does not license anything in this repository.

`<model>.json` holds llama.cpp's perplexity on this text (see the `command` field), made by
`tools/gen-ref-fixtures.sh`. llama-perplexity strips one trailing newline from the file before
tokenizing it with the model's BOS rule.

Its `exact` object holds the same chunks' perplexity computed exactly by
`tools/exact-perplexity.py` (float64 numpy, weights dequantized by the `gguf` package, activations
never rounded; ids from llama-tokenize). llama.cpp's CPU path rounds activations to 8 bits before
each quantized dot product, which moves these small models' perplexity by 0.5–1.2%; the CUDA
backend keeps activations in f32 and is checked against `exact`.
EOF
fi

# ------------------------------------------------------------------ perplexity
for entry in "${MODELS[@]}"; do
    IFS='|' read -r name file _ <<<"$entry"
    model="$MODELS_DIR/$file"
    # llama-perplexity strips one trailing newline from the -f file before tokenizing
    "$PYTHON" -c 'import sys; t=open(sys.argv[1],encoding="utf-8").read(); t=t[:-1] if t.endswith("\n") else t; open(sys.argv[2],"w",encoding="utf-8").write(t)' \
        "$TEXT" "$WORK/ppl-text.txt"
    ids="$(tokenize "$model" "$WORK/ppl-text.txt")"
    n_tok="$(awk -F, '{print NF}' <<<"${ids//[[:space:]]/}")"
    chunks=$((n_tok / PPL_CTX))
    ((chunks > PPL_MAX_CHUNKS)) && chunks=$PPL_MAX_CHUNKS
    ((chunks >= 2)) || die "$name: text.txt gives only $n_tok tokens; llama-perplexity needs at least $((2 * PPL_CTX))"
    cmd_args=(-f tests/fixtures/perplexity/text.txt -c "$PPL_CTX" -b "$PPL_CTX" --chunks "$chunks" -t "$THREADS")
    log "$name: $n_tok tokens -> llama-perplexity -m $file ${cmd_args[*]}"
    (cd "$REPO_ROOT" && "$BIN/llama-perplexity" -m "$model" "${cmd_args[@]}") >"$WORK/$name.ppl.log" 2>&1 \
        || { tail -n 30 "$WORK/$name.ppl.log" >&2; die "llama-perplexity failed for $name"; }
    # The same chunks computed exactly (float64, activations never rounded): the value CUDA's
    # f32 path is checked against.
    printf '%s\n' "$ids" >"$WORK/$name.ids"
    log "$name: exact perplexity (tools/exact-perplexity.py, float64)"
    "$PYTHON" "$SCRIPT_DIR/exact-perplexity.py" "$model" "$WORK/$name.ids" "$PPL_CTX" "$chunks" \
        >"$WORK/$name.exact.json" || die "exact-perplexity.py failed for $name"
    "$PYTHON" - "$name" "$file" "$WORK/$name.ppl.log" "$PPL_DIR" "$chunks" "$THREADS" "$PPL_CTX" "$n_tok" "$COMMIT" \
        "llama-perplexity -m models/$file ${cmd_args[*]}" "$WORK/$name.exact.json" <<'EOF'
import json, re, sys
name, file, log_path, out_dir, chunks, threads, ctx, n_tok, commit, command, exact_path = sys.argv[1:]
log = open(log_path, encoding="utf-8", errors="replace").read()
m = re.search(r"Final estimate: PPL = ([0-9.]+) \+/- ([0-9.]+)", log)
if not m:
    sys.exit(f"gen-ref-fixtures: error: no 'Final estimate' line in the llama-perplexity output:\n{log[-2000:]}")
c = re.search(r"calculating perplexity over (\d+) chunks", log)
if not c or int(c.group(1)) != int(chunks):
    sys.exit(f"gen-ref-fixtures: error: llama-perplexity did not run {chunks} chunks")
running = [float(v) for v in re.findall(r"\[\d+\]([0-9.]+),", log)]
# llama-perplexity logs llama.cpp's INFO lines only with -v; its default is flash_attn = auto, which
# resolves to enabled on a CPU build (seen with -v: "resolve_fused_ops: Flash Attention enabled")
fa = "enabled" if "Flash Attention enabled" in log else ("disabled" if "Flash Attention disabled" in log else "auto (default)")
meta = {
    "model_file": file,
    "ctx": int(ctx),
    "chunks": int(chunks),
    "threads": int(threads),
    "ppl": float(m.group(1)),
    "ppl_stderr": float(m.group(2)),
    "command": command,
    "llamacpp_commit": commit,
    "text_tokens": int(n_tok),
    "ppl_running": running,
    "flash_attn": fa,
    "exact": json.load(open(exact_path, encoding="utf-8")),
}
with open(f"{out_dir}/{name}.json", "w", encoding="utf-8") as f:
    json.dump(meta, f, indent=1)
    f.write("\n")
print(f"gen-ref-fixtures: {name}: PPL = {meta['ppl']} +/- {meta['ppl_stderr']} over {chunks} chunks of {ctx}", file=sys.stderr)
EOF
done

log "done:"
ls -l "$LOGITS_DIR" "$PPL_DIR" >&2
