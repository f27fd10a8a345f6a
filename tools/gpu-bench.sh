#!/usr/bin/env bash
# The CUDA speed runs of docs/performance.md in one command, for a machine with an NVIDIA GPU:
# `torchless bench --backend cuda` on the synthetic 7B-shaped Q4_K model (made here by
# tools/make-synthetic-gguf.py, which needs numpy) and on both real models, each with decode
# steps replayed as CUDA graphs (the default) and run eagerly (TORCHLESS_CUDA_GRAPH=off), and the
# synthetic model and gemma-3 once more with each default turned the other way: the float decode
# matvec (TORCHLESS_CUDA_MATVEC=float), without the fused kernels (TORCHLESS_CUDA_FUSE=off),
# without the RMSNorms folded into the residual projections (TORCHLESS_CUDA_NORM_FOLD=off),
# without RoPE and the K/V store in the Q/K/V projection (TORCHLESS_CUDA_QKV_ROPE=off), with
# programmatic dependent launch (TORCHLESS_CUDA_PDL=on; also without the decode matvecs' weight
# prefetch before its wait, TORCHLESS_CUDA_PREFETCH=off, and with the next kernel launched as
# each kernel's blocks exit, TORCHLESS_CUDA_PDL_TRIGGER=exit) and with the prefill tiles in f32 FMA
# instead of on the tensor cores (TORCHLESS_CUDA_MMA=off).
# With GPU_BENCH_RUNS=types (a second call: each call has 10 minutes), the weight types the int8
# matvec covers besides Q4_K instead: 7B-shaped synthetic models in Q4_0, Q5_K, Q6_K and Q8_0, and
# SmolLM2 (Q4_1), each with the int8 and the float decode matvec. GPU_BENCH_RUNS=lowbit (a third
# call) does the same for 7B-shaped Q2_K and Q3_K models.
# Fails when there is no NVIDIA device.
#
#   tools/gpu-bench.sh OUT                 binary: target/release/torchless (feature cuda)
#   tools/gpu-bench.sh --prebuilt DIR OUT  binary and models of a bundle that
#                                          `tools/gpu-check.sh --prebuilt DIR` has unpacked
#
# Writes OUT/<model>.<graph|eager>.json (bench's JSON line) and OUT/bench.log (the readable
# reports), and prints one summary line per run. The runs with decode graphs on (but the
# variants with one feature off) also profile their decode kernels (`bench --profile`): the
# table is in bench.log and the JSON, and the summary names the four slowest kernels.
#
# Environment: TORCHLESS_MODELS_DIR (default ./models), GPU_BENCH_SYNTHETIC (the synthetic
# model's path, default /tmp/torchless-s7b.gguf; made when missing), GPU_BENCH_RUNS (main, the
# default, types or lowbit).
set -euo pipefail
cd "$(dirname "$0")/.."

die() { printf 'gpu-bench: error: %s\n' "$*" >&2; exit 1; }

bin=target/release/torchless
models="${TORCHLESS_MODELS_DIR:-$PWD/models}"
case "${1:-}" in
    --prebuilt)
        [ $# -eq 3 ] || die "usage: tools/gpu-bench.sh [--prebuilt DIR] OUT"
        bin="$2/bin/torchless"
        [ -d "$2/models" ] && models="$2/models"
        out="$3"
        ;;
    "" | -*) die "usage: tools/gpu-bench.sh [--prebuilt DIR] OUT" ;;
    *)
        [ $# -eq 1 ] || die "usage: tools/gpu-bench.sh [--prebuilt DIR] OUT"
        out="$1"
        ;;
esac
[ -x "$bin" ] || die "$bin: no torchless binary"
command -v nvidia-smi >/dev/null 2>&1 || die "no NVIDIA driver (nvidia-smi not found): this command needs a GPU"
nvidia-smi -L | grep -q '^GPU' || die "no NVIDIA device found (nvidia-smi -L lists none): this command needs a GPU"
mkdir -p "$out"
log="$out/bench.log"
nvidia-smi -L | tee "$log"
# Whether NVIDIA's profilers are there too (for a later session's deeper look).
for tool in ncu nsys; do
    printf 'gpu-bench: %s: %s\n' "$tool" "$(command -v "$tool" || echo 'not installed')" | tee -a "$log"
done

# make_synthetic PATH [TYPE]: the 7B-shaped synthetic model, made when missing.
make_synthetic() {
    [ -f "$1" ] && return 0
    python3 tools/make-synthetic-gguf.py --out "$1" --type "${2:-q4_k}" >>"$log" 2>&1 \
        || die "could not make the synthetic model $1 (see $log)"
}

# run NAME MODEL on|off [--profile]: one bench, decode graphs on or off; with --profile, bench
# then times each kernel of 64 more decode steps (the table goes to bench.log and the JSON).
run() {
    local name="$1" model="$2" graphs="$3" tag
    local extra=("${@:4}")
    [ -f "$model" ] || die "$model is missing"
    tag=$([ "$graphs" = on ] && echo graph || echo eager)
    echo "== $name, TORCHLESS_CUDA_GRAPH=$graphs ${extra[*]-}" >>"$log"
    TORCHLESS_CUDA_GRAPH="$graphs" "$bin" bench --model "$model" --backend cuda \
        --prompt-tokens 128 --gen-tokens 64 ${extra[@]+"${extra[@]}"} --json 2>>"$log" | tail -1 >"$out/$name.$tag.json" \
        || die "bench failed on $name with TORCHLESS_CUDA_GRAPH=$graphs: $(tail -1 "$log")"
    python3 - "$name" "$tag" "$out/$name.$tag.json" <<'EOF'
import json, sys

name, tag, path = sys.argv[1:]
r = json.load(open(path))
print(
    f"gpu-bench: {name:<11} {tag:<5} pp{r['prompt_tokens']} {r['pp_tps']:9.1f} tok/s  "
    f"tg{r['gen_tokens']} {r['tg_tps']:7.1f} ± {r['tg_tps_stddev']:.1f} tok/s  "
    f"{r['tg_gbps']:7.1f} GB/s = {r['bandwidth_pct']:.1f}% of {r['read_bandwidth_gbps']:.0f} GB/s copy"
)
p = r.get("profile")
if p:
    total = sum(k["us_per_step"] for k in p["kernels"]) or 1.0
    def label(k):
        mb = k["weight_bytes"] / 1e6
        return f"{k['kernel']} ({mb:.1f} MB)" if mb > 0 else k["kernel"]
    top = ", ".join(
        f"{label(k)} {100 * k['us_per_step'] / total:.0f}%" for k in p["kernels"][:4]
    )
    print(
        f"gpu-bench: {name:<11} profile: {p['step_ms']:.3f} ms of kernels back to back per step "
        f"(graph step {1e3 / r['tg_tps']:.3f} ms, {p['late_steps']} late); {top}"
    )
EOF
}

# bench_types TYPE...: int8 and float decode matvec side by side per type, graphs on.
bench_types() {
    local ty m
    for ty in "$@"; do
        m="/tmp/torchless-s7b-$ty.gguf"
        make_synthetic "$m" "$ty"
        run "s7b-$ty" "$m" on --profile
        TORCHLESS_CUDA_MATVEC=float run "s7b-$ty-float" "$m" on --profile
        rm -f "$m" # the next one needs the disk more than this one
    done
}

runs="${GPU_BENCH_RUNS:-main}"
case "$runs" in
    main) ;;
    types)
        bench_types q4_0 q5_k q6_k q8_0
        TORCHLESS_CUDA_MATVEC=float run smollm2-float "$models/SmolLM2-135M-Instruct.Q4_1.gguf" on --profile
        echo "gpu-bench: results in $out"
        exit 0
        ;;
    lowbit)
        bench_types q2_k q3_k
        echo "gpu-bench: results in $out"
        exit 0
        ;;
    *) die "GPU_BENCH_RUNS=$runs: expected main, types or lowbit" ;;
esac

synthetic="${GPU_BENCH_SYNTHETIC:-/tmp/torchless-s7b.gguf}"
make_synthetic "$synthetic"
# The graph runs also profile their kernels (--profile: where a step's time goes).
run s7b "$synthetic" on --profile
run smollm2 "$models/SmolLM2-135M-Instruct.Q4_1.gguf" on --profile
run gemma3 "$models/gemma-3-270m-q4_k_m.gguf" on --profile
run s7b "$synthetic" off
run smollm2 "$models/SmolLM2-135M-Instruct.Q4_1.gguf" off
run gemma3 "$models/gemma-3-270m-q4_k_m.gguf" off
# One-token matvecs that decode the weights to floats (TORCHLESS_CUDA_MATVEC=float) instead of
# the default int8 kernels, graphs on.
export TORCHLESS_CUDA_MATVEC=float
run s7b-float "$synthetic" on --profile
run gemma3-float "$models/gemma-3-270m-q4_k_m.gguf" on --profile
unset TORCHLESS_CUDA_MATVEC
# Without the fused kernels (RoPE + K/V store, gate + up + GLU; TORCHLESS_CUDA_FUSE=off), graphs
# on: what the fusions save, side by side with the runs above.
export TORCHLESS_CUDA_FUSE=off
run s7b-unfused "$synthetic" on
run gemma3-unfused "$models/gemma-3-270m-q4_k_m.gguf" on
unset TORCHLESS_CUDA_FUSE
# Each RMSNorm in a launch of its own (TORCHLESS_CUDA_NORM_FOLD=off) instead of folded into the
# int8 residual projection before it, graphs on: what the fold saves (two launches a layer).
# gemma-3's post-norms keep its norms apart either way.
export TORCHLESS_CUDA_NORM_FOLD=off
run s7b-nofold "$synthetic" on --profile
run smollm2-nofold "$models/SmolLM2-135M-Instruct.Q4_1.gguf" on
unset TORCHLESS_CUDA_NORM_FOLD
# RoPE and the K/V store in a launch of their own (TORCHLESS_CUDA_QKV_ROPE=off) instead of in
# the int8 Q/K/V projection (matvec_qkv_rope_q8_<t>, two rows a warp), graphs on: what it saves
# (one launch a layer) or costs (the Q/K/V rows in pairs). gemma-3's QK-norms keep it apart.
export TORCHLESS_CUDA_QKV_ROPE=off
run s7b-norope "$synthetic" on --profile
run smollm2-norope "$models/SmolLM2-135M-Instruct.Q4_1.gguf" on
unset TORCHLESS_CUDA_QKV_ROPE
# With programmatic dependent launch (TORCHLESS_CUDA_PDL=on; off by default since the H100
# measured it slower), graphs on, both matvecs, with and without the decode matvecs' weight
# prefetch before their wait (TORCHLESS_CUDA_PREFETCH=off), and with each kernel letting the
# next launch only as its blocks exit (TORCHLESS_CUDA_PDL_TRIGGER=exit) instead of at its start:
# whether the next kernel's early blocks cost the running one anything.
export TORCHLESS_CUDA_PDL=on
run s7b-pdl "$synthetic" on
TORCHLESS_CUDA_MATVEC=float run s7b-float-pdl "$synthetic" on
run gemma3-pdl "$models/gemma-3-270m-q4_k_m.gguf" on
TORCHLESS_CUDA_PREFETCH=off run s7b-pdl-noprefetch "$synthetic" on
TORCHLESS_CUDA_PDL_TRIGGER=exit run s7b-pdl-exit "$synthetic" on
TORCHLESS_CUDA_PDL_TRIGGER=exit TORCHLESS_CUDA_PREFETCH=off run s7b-pdl-exit-noprefetch "$synthetic" on
unset TORCHLESS_CUDA_PDL
# Prefill tiles in f32 FMA (TORCHLESS_CUDA_MMA=off) instead of bfloat16 on the tensor cores:
# compare its pp with s7b's and gemma3's.
export TORCHLESS_CUDA_MMA=off
run s7b-fma "$synthetic" on
run gemma3-fma "$models/gemma-3-270m-q4_k_m.gguf" on
unset TORCHLESS_CUDA_MMA
echo "gpu-bench: results in $out"
