#!/usr/bin/env bash
# Side-by-side speed of torchless and llama.cpp on the two real models, at 1 and 2 threads.
#
# For each model and thread count, ROUNDS rounds of: llama-bench (-p 128 -n 64 -r REPS) then
# `torchless bench` (--prompt-tokens 128 --gen-tokens 64 -r REPS), interleaved so both see the
# same machine noise. Prints a Markdown table of the mean tokens/s and the ratios
# (torchless / llama.cpp), ready to paste into docs/performance.md with the date and commit.
#
# llama.cpp is built from the llama-cpp-python sdist by tools/build-llamacpp.sh if it is missing
# (or set LLAMACPP_BIN to a folder holding llama-bench). Models come from tools/fetch-models.sh.
#
# Environment: ROUNDS (default 2), REPS (default 3), THREADS (default "1 2"),
#              MODELS (default both), TORCHLESS_MODELS_DIR, LLAMACPP_BIN, PYTHON.
set -euo pipefail
cd "$(dirname "$0")/.."

log() { printf 'bench-vs-llamacpp: %s\n' "$*" >&2; }

ROUNDS="${ROUNDS:-2}"
REPS="${REPS:-3}"
THREADS="${THREADS:-1 2}"
PYTHON="${PYTHON:-python3}"
MODELS_DIR="${TORCHLESS_MODELS_DIR:-$PWD/models}"
MODELS="${MODELS:-SmolLM2-135M-Instruct.Q4_1.gguf gemma-3-270m-q4_k_m.gguf}"

TORCHLESS_MODELS_DIR="$MODELS_DIR" bash tools/fetch-models.sh >&2
if [[ -z "${LLAMACPP_BIN:-}" ]]; then
    LLAMACPP_BIN="$(bash tools/build-llamacpp.sh)"
fi
[[ -x "$LLAMACPP_BIN/llama-bench" ]] || { log "no llama-bench in $LLAMACPP_BIN"; exit 1; }
log "building torchless (release)"
cargo build --release --quiet >&2
TL=target/release/torchless

OUT="$(mktemp -d)"
trap 'rm -rf "$OUT"' EXIT

for m in $MODELS; do
    for t in $THREADS; do
        for r in $(seq "$ROUNDS"); do
            log "$m, $t threads, round $r: llama-bench"
            "$LLAMACPP_BIN/llama-bench" -m "$MODELS_DIR/$m" -p 128 -n 64 -t "$t" -r "$REPS" -o json \
                >"$OUT/llama.$m.$t.$r.json" 2>/dev/null
            log "$m, $t threads, round $r: torchless bench"
            "$TL" bench --model "$MODELS_DIR/$m" --prompt-tokens 128 --gen-tokens 64 -r "$REPS" \
                --threads "$t" --json 2>/dev/null | tail -n 1 >"$OUT/tl.$m.$t.$r.json"
        done
    done
done

"$PYTHON" - "$OUT" "$ROUNDS" "$MODELS" "$THREADS" <<'EOF'
import json, sys
out, rounds, models, threads = sys.argv[1], int(sys.argv[2]), sys.argv[3].split(), sys.argv[4].split()

def llama(m, t, r):
    rows = json.load(open(f"{out}/llama.{m}.{t}.{r}.json"))
    pp = next(x["avg_ts"] for x in rows if x["n_prompt"] > 0 and x["n_gen"] == 0)
    tg = next(x["avg_ts"] for x in rows if x["n_gen"] > 0 and x["n_prompt"] == 0)
    return pp, tg

def ours(m, t, r):
    v = json.load(open(f"{out}/tl.{m}.{t}.{r}.json"))
    return v["pp_tps"], v["tg_tps"], v["bandwidth_pct"]

print("| model | threads | llama.cpp pp128 | torchless pp128 | pp ratio | llama.cpp tg64 | torchless tg64 | tg ratio | torchless tg % of read bandwidth |")
print("|---|---|---|---|---|---|---|---|---|")
for m in models:
    for t in threads:
        L = [llama(m, t, r) for r in range(1, rounds + 1)]
        T = [ours(m, t, r) for r in range(1, rounds + 1)]
        lpp = sum(x[0] for x in L) / rounds
        ltg = sum(x[1] for x in L) / rounds
        tpp = sum(x[0] for x in T) / rounds
        ttg = sum(x[1] for x in T) / rounds
        bw = sum(x[2] for x in T) / rounds
        print(f"| {m} | {t} | {lpp:.1f} | {tpp:.1f} | {tpp / lpp:.2f} | {ltg:.1f} | {ttg:.1f} | {ttg / ltg:.2f} | {bw:.0f}% |")
EOF
