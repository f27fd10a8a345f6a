#!/usr/bin/env python3
"""Write the ggml block-decoding fixtures used by tests/quant.rs.

An independent decoder (gguf-py's `gguf.quants`) is the ground truth: for every weight
type it can dequantize, we write a few random valid blocks and its dequantized output;
for Q8_0 we also write activation vectors and `gguf.quants.quantize`'s blocks.

Tested with: gguf==0.19.0, numpy==2.4.6 (Python 3.11). Install with
    pip install gguf==0.19.0 numpy==2.4.6
Run from the repository root:
    python3 tools/gen-quant-fixtures.py
Output (all little-endian), in tests/fixtures/quant/:
    manifest.json            list of cases: {name, type, n, weights, dequant}
    <name>.bin               raw blocks (n weights)
    <name>.f32               gguf.quants.dequantize of those bytes, f32
    act_q8_0.json            {n, x, blocks}: activation vector file names for Q8_0
    act_q8_0_x.f32           the activations
    act_q8_0.bin             gguf.quants.quantize(x, Q8_0)
"""

import json
import os
import sys

import numpy as np
from gguf import GGMLQuantizationType as T
from gguf import quants

OUT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "tests", "fixtures", "quant")

# (type, weights per block, bytes per block, offsets of f16 scale fields within a block)
LAYOUT = {
    T.Q4_0: (32, 18, [0]),
    T.Q4_1: (32, 20, [0, 2]),
    T.Q5_0: (32, 22, [0]),
    T.Q5_1: (32, 24, [0, 2]),
    T.Q8_0: (32, 34, [0]),
    T.Q2_K: (256, 84, [80, 82]),
    T.Q3_K: (256, 110, [108]),
    T.Q4_K: (256, 144, [0, 2]),
    T.Q5_K: (256, 176, [0, 2]),
    T.Q6_K: (256, 210, [208]),
}


def random_f16(rng, shape, lo_exp=-14, hi_exp=1):
    """Finite, moderate f16 values of both signs (including a few tiny subnormals)."""
    mag = np.exp2(rng.uniform(lo_exp, hi_exp, size=shape)).astype(np.float32)
    sign = np.where(rng.random(shape) < 0.5, -1.0, 1.0).astype(np.float32)
    v = (mag * sign).astype(np.float16)
    sub = rng.random(shape) < 0.03
    v[sub] = np.float16(rng.integers(1, 1024, size=sub.sum()) * 2.0**-24) * np.where(
        rng.random(sub.sum()) < 0.5, -1, 1
    ).astype(np.float16)
    return v


def random_blocks(rng, ty, nblocks):
    bl, bb, scales = LAYOUT[ty]
    raw = rng.integers(0, 256, size=(nblocks, bb), dtype=np.uint8)
    for off in scales:
        raw[:, off : off + 2] = random_f16(rng, (nblocks,)).view(np.uint8).reshape(nblocks, 2)
    return raw.reshape(-1), nblocks * bl


def main():
    rng = np.random.default_rng(20260422)
    os.makedirs(OUT, exist_ok=True)
    manifest = []

    def emit(name, ty, n, raw):
        raw = np.ascontiguousarray(raw, dtype=np.uint8)
        deq = quants.dequantize(raw, ty).astype("<f4").reshape(-1)
        assert deq.size == n, (name, deq.size, n)
        assert np.all(np.isfinite(deq)), name
        raw.tofile(os.path.join(OUT, name + ".bin"))
        deq.tofile(os.path.join(OUT, name + ".f32"))
        manifest.append(
            {"name": name, "type": ty.name, "n": int(n), "weights": name + ".bin", "dequant": name + ".f32"}
        )

    # Float types.
    n = 96
    emit("f32", T.F32, n, rng.normal(0, 3, size=n).astype("<f4").view(np.uint8))
    f16 = random_f16(rng, (n,), -24, 15)
    emit("f16", T.F16, n, f16.astype("<f2").view(np.uint8))
    bf = rng.normal(0, 100, size=n).astype(np.float32)
    bf_bits = (bf.view(np.uint32) >> 16).astype("<u2")
    emit("bf16", T.BF16, n, bf_bits.view(np.uint8))

    # Random valid blocks of every quantized weight type (every bit pattern of the quants,
    # scales forced finite), plus blocks produced by gguf's own quantizer where it has one.
    for ty, (bl, _, _) in LAYOUT.items():
        nb = 7 if bl == 32 else 5
        raw, n = random_blocks(rng, ty, nb)
        emit(ty.name.lower(), ty, n, raw)
        try:
            x = rng.normal(0, 1, size=(2, bl * 3)).astype(np.float32)
            q = quants.quantize(x, ty)
        except NotImplementedError:
            continue
        emit(ty.name.lower() + "_quantized", ty, x.size, q.reshape(-1))

    with open(os.path.join(OUT, "manifest.json"), "w") as f:
        json.dump(manifest, f, indent=1)

    # Q8_0 activation quantization: random rows, rows with exact .5 ties after scaling
    # (amax = 127 makes d = 1 and id = 1), an all-zero block and tiny values.
    blocks = [rng.normal(0, 2, size=32).astype(np.float32) for _ in range(6)]
    tie = (rng.integers(-126, 126, size=32) + 0.5).astype(np.float32)
    tie[3] = 127.0
    blocks.append(tie)
    tie2 = -tie
    blocks.append(tie2)
    blocks.append(np.zeros(32, dtype=np.float32))
    blocks.append((rng.normal(0, 1, size=32) * 1e-6).astype(np.float32))
    blocks.append((rng.normal(0, 1, size=32) * 1e4).astype(np.float32))
    x = np.concatenate(blocks).astype("<f4")
    q = quants.quantize(x.reshape(1, -1), T.Q8_0).reshape(-1)
    x.tofile(os.path.join(OUT, "act_q8_0_x.f32"))
    q.tofile(os.path.join(OUT, "act_q8_0.bin"))
    with open(os.path.join(OUT, "act_q8_0.json"), "w") as f:
        json.dump({"n": int(x.size), "x": "act_q8_0_x.f32", "blocks": "act_q8_0.bin"}, f, indent=1)

    total = sum(os.path.getsize(os.path.join(OUT, p)) for p in os.listdir(OUT))
    print(f"wrote {len(manifest)} dequant cases, {total} bytes to {os.path.normpath(OUT)}", file=sys.stderr)
    assert total < 300_000


if __name__ == "__main__":
    main()
