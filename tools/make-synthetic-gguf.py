#!/usr/bin/env python3
"""Write a synthetic llama-architecture GGUF with random weights, for speed benchmarks.

Decode and prefill speed do not depend on weight values, so a file with the exact shapes and
quantization of a real model (by default Llama-2-7B in Q4_K) benchmarks like the real one,
without downloading it. Needs only Python 3 and numpy: the GGUF v3 container is written by hand
(header, metadata, tensor table, 32-byte aligned data), tensor by tensor in bounded chunks, so
memory use stays small even for the ~3.9 GB default.

Weights are random but scaled so the model stays numerically tame: every matrix is zero-mean
with a standard deviation of about 1/sqrt(input dim), so activations keep their scale through
the layers (the RMS norms bound the residual stream anyway) and logits are O(1). For Q4_K each
sub-block uses the same 6-bit value for scale and min, and dmin = 7.5 * d, so a weight is
d * sc * (q - 7.5) with q uniform in 0..15 (Q5_K likewise about 15.5, q in 0..31; Q2_K about
1.5, q in 0..3). Norm weights are F32 ones.

Usage:
  tools/make-synthetic-gguf.py [--out PATH] [--type q4_0|q2_k|q3_k|q4_k|q5_k|q6_k|q8_0|f16]
      [--layers N] [--dim N]
      [--ff N] [--heads N] [--kv-heads N] [--vocab N] [--ctx N] [--seed N]

Example (tiny, for tests):
  tools/make-synthetic-gguf.py --out /tmp/x.gguf --layers 2 --dim 256 --ff 512 \\
      --heads 4 --kv-heads 2 --vocab 1000
"""

import argparse
import os
import struct
import sys
import time

import numpy as np

# GGUF metadata value types.
T_UINT8, T_INT8, T_UINT16, T_INT16, T_UINT32, T_INT32, T_FLOAT32, T_BOOL, T_STRING, T_ARRAY, \
    T_UINT64, T_INT64, T_FLOAT64 = range(13)

# ggml tensor types: id, values per block, bytes per block.
GGML_F32 = (0, 1, 4)
GGML_F16 = (1, 1, 2)
GGML_Q4_0 = (2, 32, 18)
GGML_Q8_0 = (8, 32, 34)
GGML_Q2_K = (10, 256, 84)
GGML_Q3_K = (11, 256, 110)
GGML_Q5_K = (13, 256, 176)
GGML_Q6_K = (14, 256, 210)
GGML_Q4_K = (12, 256, 144)
WEIGHT_TYPES = {
    "q4_0": GGML_Q4_0, "q2_k": GGML_Q2_K, "q3_k": GGML_Q3_K, "q4_k": GGML_Q4_K, "q5_k": GGML_Q5_K,
    "q6_k": GGML_Q6_K, "q8_0": GGML_Q8_0, "f16": GGML_F16,
}
# general.file_type (llama_ftype) for a file whose weights are all of one type.
# MOSTLY_Q4_0, MOSTLY_Q2_K, MOSTLY_Q3_K_S, MOSTLY_Q4_K_S, MOSTLY_Q5_K_S, MOSTLY_Q6_K, MOSTLY_Q8_0,
# MOSTLY_F16
FILE_TYPE = {"q4_0": 2, "q2_k": 10, "q3_k": 11, "q4_k": 14, "q5_k": 16, "q6_k": 18, "q8_0": 7,
             "f16": 1}

ALIGNMENT = 32
CHUNK_BYTES = 64 << 20  # bytes of tensor data generated per step


# ---------------------------------------------------------------------------------------------
# GGUF encoding


def enc_str(s):
    b = s.encode("utf-8")
    return struct.pack("<Q", len(b)) + b


_SCALAR_FMT = {
    T_UINT8: "<B", T_INT8: "<b", T_UINT16: "<H", T_INT16: "<h", T_UINT32: "<I", T_INT32: "<i",
    T_FLOAT32: "<f", T_BOOL: "<?", T_UINT64: "<Q", T_INT64: "<q", T_FLOAT64: "<d",
}
_NP_DTYPE = {
    T_UINT8: "<u1", T_INT8: "<i1", T_UINT16: "<u2", T_INT16: "<i2", T_UINT32: "<u4",
    T_INT32: "<i4", T_FLOAT32: "<f4", T_BOOL: "<u1", T_UINT64: "<u8", T_INT64: "<i8",
    T_FLOAT64: "<f8",
}


def enc_kv(key, ty, value, elem_ty=None):
    out = enc_str(key) + struct.pack("<I", ty)
    if ty == T_STRING:
        return out + enc_str(value)
    if ty == T_ARRAY:
        out += struct.pack("<IQ", elem_ty, len(value))
        if elem_ty == T_STRING:
            return out + b"".join(enc_str(v) for v in value)
        return out + np.asarray(value, dtype=_NP_DTYPE[elem_ty]).tobytes()
    return out + struct.pack(_SCALAR_FMT[ty], value)


def align_up(n, a=ALIGNMENT):
    return (n + a - 1) // a * a


# ---------------------------------------------------------------------------------------------
# Random tensor data. Each generator yields byte chunks for `n_rows` rows of `n_cols` values,
# zero-mean with standard deviation about `std`.


def block_chunks(n_blocks, nbytes, fill):
    """Chunks of n_blocks blocks of nbytes bytes each; fill(blk) writes an (n, nbytes) array."""
    step = max(1, CHUNK_BYTES // nbytes)
    for start in range(0, n_blocks, step):
        blk = np.empty((min(step, n_blocks - start), nbytes), dtype=np.uint8)
        fill(blk)
        yield blk.tobytes()


def k_quant_chunks(rng, n_cols, n_rows, std, nbytes, q_max, q_std):
    """Q4_K (nbytes 144, q_max 15) or Q5_K (176, 31): d, dmin, 12 bytes of scales and mins, then
    random quant bits (Q5_K: qh and qs). q_std: the std of q uniform in 0..q_max."""
    per_row = n_cols // 256
    n_blocks = per_row * n_rows
    # weight = d * sc * (q - q_max / 2), q uniform 0..q_max, sc uniform in 16..47 (mean 31.5).
    d = np.float16(std / (31.5 * q_std))
    dmin = np.float16(float(d) * q_max / 2)
    head = np.frombuffer(d.tobytes() + dmin.tobytes(), dtype=np.uint8)

    def fill(blk):
        n = len(blk)
        blk[:, 0:4] = head
        sc = rng.integers(16, 48, size=(n, 8), dtype=np.uint8)  # scale == min per sub-block
        hi = (sc[:, 4:8] >> 4) << 6
        blk[:, 4:8] = (sc[:, 0:4] & 63) | hi  # scales 0..3 (+ top bits of scales 4..7)
        blk[:, 8:12] = (sc[:, 0:4] & 63) | hi  # mins 0..3 (+ top bits of mins 4..7)
        blk[:, 12:16] = (sc[:, 4:8] & 0xF) | ((sc[:, 4:8] & 0xF) << 4)  # low bits of 4..7
        rest = nbytes - 16
        blk[:, 16:] = np.frombuffer(rng.bytes(n * rest), dtype=np.uint8).reshape(n, rest)

    return block_chunks(n_blocks, nbytes, fill)


def q4_k_chunks(rng, n_cols, n_rows, std):
    return k_quant_chunks(rng, n_cols, n_rows, std, 144, 15, 4.61)


def q5_k_chunks(rng, n_cols, n_rows, std):
    return k_quant_chunks(rng, n_cols, n_rows, std, 176, 31, 9.23)


def q8_0_chunks(rng, n_cols, n_rows, std):
    n_blocks = n_cols // 32 * n_rows
    # weight = d * q, q uniform in -127..127 (std 73.6).
    d = np.frombuffer(np.float16(std / 73.6).tobytes(), dtype=np.uint8)

    def fill(blk):
        blk[:, 0:2] = d
        blk[:, 2:34] = rng.integers(-127, 128, size=(len(blk), 32), dtype=np.int8).view(np.uint8)

    return block_chunks(n_blocks, 34, fill)


def q4_0_chunks(rng, n_cols, n_rows, std):
    n_blocks = n_cols // 32 * n_rows
    # weight = d * (q - 8), q uniform 0..15 (std 4.61 about 7.5; the -0.5 mean is noise here).
    d = np.frombuffer(np.float16(std / 4.61).tobytes(), dtype=np.uint8)

    def fill(blk):
        blk[:, 0:2] = d
        blk[:, 2:18] = np.frombuffer(rng.bytes(len(blk) * 16), dtype=np.uint8).reshape(-1, 16)

    return block_chunks(n_blocks, 18, fill)


def q6_k_chunks(rng, n_cols, n_rows, std):
    n_blocks = n_cols // 256 * n_rows
    # weight = d * sc * (q - 32), q uniform 0..63 (std 18.5), sc uniform in 16..47 (mean 31.5).
    d = np.frombuffer(np.float16(std / (31.5 * 18.5)).tobytes(), dtype=np.uint8)

    def fill(blk):
        n = len(blk)
        blk[:, 0:192] = np.frombuffer(rng.bytes(n * 192), dtype=np.uint8).reshape(n, 192)
        blk[:, 192:208] = rng.integers(16, 48, size=(n, 16), dtype=np.uint8)
        blk[:, 208:210] = d

    return block_chunks(n_blocks, 210, fill)


def q2_k_chunks(rng, n_cols, n_rows, std):
    n_blocks = n_cols // 256 * n_rows
    # weight = d * sc * q - dmin * m with m = sc and dmin = 1.5 d: d * sc * (q - 1.5), q uniform
    # 0..3 (std 1.118), sc uniform in 8..15 (mean 11.5).
    d = np.float16(std / (11.5 * 1.118))
    tail = np.frombuffer(d.tobytes() + np.float16(1.5 * float(d)).tobytes(), dtype=np.uint8)

    def fill(blk):
        n = len(blk)
        sc = rng.integers(8, 16, size=(n, 16), dtype=np.uint8)
        blk[:, 0:16] = sc | (sc << 4)
        blk[:, 16:80] = np.frombuffer(rng.bytes(n * 64), dtype=np.uint8).reshape(n, 64)
        blk[:, 80:84] = tail

    return block_chunks(n_blocks, 84, fill)


def q3_k_chunks(rng, n_cols, n_rows, std):
    n_blocks = n_cols // 256 * n_rows
    # weight = d * (s - 32) * q, q uniform in -4..3 (std 2.29), the six-bit s uniform in 48..63
    # (scale 16..31, mean 23.5).
    d = np.frombuffer(np.float16(std / (23.5 * 2.29)).tobytes(), dtype=np.uint8)

    def fill(blk):
        n = len(blk)
        blk[:, 0:96] = np.frombuffer(rng.bytes(n * 96), dtype=np.uint8).reshape(n, 96)
        s = rng.integers(48, 64, size=(n, 16), dtype=np.uint8)
        lo, hi = s & 0xF, s >> 4
        # Scale i: low nibble i / 8 of byte i % 8, top two bits 2 (i / 4) of byte 8 + i % 4.
        blk[:, 96:104] = lo[:, 0:8] | (lo[:, 8:16] << 4)
        blk[:, 104:108] = hi[:, 0:4] | (hi[:, 4:8] << 2) | (hi[:, 8:12] << 4) | (hi[:, 12:16] << 6)
        blk[:, 108:110] = d

    return block_chunks(n_blocks, 110, fill)


def f16_chunks(rng, n_cols, n_rows, std):
    n = n_cols * n_rows
    step = CHUNK_BYTES // 2
    for start in range(0, n, step):
        k = min(step, n - start)
        # Uniform in [-a, a] with std a / sqrt(3): cheaper than normal and just as good here.
        a = std * 3 ** 0.5
        yield rng.uniform(-a, a, size=k).astype("<f2").tobytes()


def ones_f32(n_cols, n_rows):
    yield np.ones(n_cols * n_rows, dtype="<f4").tobytes()


CHUNKERS = {
    "q4_0": q4_0_chunks, "q2_k": q2_k_chunks, "q3_k": q3_k_chunks, "q4_k": q4_k_chunks,
    "q5_k": q5_k_chunks, "q6_k": q6_k_chunks, "q8_0": q8_0_chunks, "f16": f16_chunks,
}


# ---------------------------------------------------------------------------------------------


def tokenizer_vocab(n_vocab):
    """SentencePiece-style ("llama") vocabulary: <unk> <s> </s>, 256 byte tokens, fillers."""
    tokens = ["<unk>", "<s>", "</s>"] + ["<0x%02X>" % b for b in range(256)]
    types = [2, 3, 3] + [6] * 256
    if n_vocab < len(tokens):
        raise SystemExit(f"--vocab must be at least {len(tokens)} (specials + 256 byte tokens)")
    n_fill = n_vocab - len(tokens)
    tokens += ["\u2581t%d" % i for i in range(n_fill)]
    types += [1] * n_fill
    scores = [0.0] * 259 + [-float(i) for i in range(n_fill)]
    return tokens, scores, types


def main():
    ap = argparse.ArgumentParser(
        description="Write a synthetic llama GGUF with random weights (default: Llama-2-7B "
                    "shape, Q4_K) for speed benchmarks. Needs only numpy.")
    ap.add_argument("--out", default="synthetic-7b-q4_k.gguf", help="output path")
    ap.add_argument("--type", default="q4_k", choices=sorted(WEIGHT_TYPES),
                    help="type of every 2-D weight (norms are F32)")
    ap.add_argument("--layers", type=int, default=32)
    ap.add_argument("--dim", type=int, default=4096)
    ap.add_argument("--ff", type=int, default=11008)
    ap.add_argument("--heads", type=int, default=32)
    ap.add_argument("--kv-heads", type=int, default=None, help="default: --heads")
    ap.add_argument("--vocab", type=int, default=32000)
    ap.add_argument("--ctx", type=int, default=4096)
    ap.add_argument("--rope-base", type=float, default=10000.0)
    ap.add_argument("--rms-eps", type=float, default=1e-5)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--name", default=None, help="general.name (default: synthetic-<size>-<type>)")
    a = ap.parse_args()

    n_kv = a.kv_heads if a.kv_heads is not None else a.heads
    wt = WEIGHT_TYPES[a.type]
    blk = wt[1]
    if a.dim % a.heads or a.heads % n_kv:
        raise SystemExit("--dim must be a multiple of --heads, and --heads of --kv-heads")
    head_dim = a.dim // a.heads
    kv_dim = head_dim * n_kv
    for what, cols in (("--dim", a.dim), ("--ff", a.ff)):
        if cols % blk:
            raise SystemExit(f"{what} {cols} must be a multiple of {blk} for {a.type}")
    if head_dim % 2:
        raise SystemExit("head dim (--dim / --heads) must be even for RoPE")

    # Tensors: (name, [ne0, ne1...] in ggml order (input dim first), ggml type, chunk factory).
    rng = np.random.default_rng(a.seed)
    chunker = CHUNKERS[a.type]

    def weight(name, n_in, n_out):
        std = 1.0 / n_in ** 0.5
        return (name, [n_in, n_out], wt, lambda: chunker(rng, n_in, n_out, std))

    def norm(name, n):
        return (name, [n], GGML_F32, lambda: ones_f32(n, 1))

    tensors = [weight("token_embd.weight", a.dim, a.vocab)]
    for i in range(a.layers):
        p = f"blk.{i}."
        tensors += [
            norm(p + "attn_norm.weight", a.dim),
            weight(p + "attn_q.weight", a.dim, a.dim),
            weight(p + "attn_k.weight", a.dim, kv_dim),
            weight(p + "attn_v.weight", a.dim, kv_dim),
            weight(p + "attn_output.weight", a.dim, a.dim),
            norm(p + "ffn_norm.weight", a.dim),
            weight(p + "ffn_gate.weight", a.dim, a.ff),
            weight(p + "ffn_up.weight", a.dim, a.ff),
            weight(p + "ffn_down.weight", a.ff, a.dim),
        ]
    tensors += [norm("output_norm.weight", a.dim), weight("output.weight", a.dim, a.vocab)]

    def nbytes(dims, ty):
        n = 1
        for d in dims:
            n *= d
        return n // ty[1] * ty[2]

    # Parameter count for the default name (e.g. 7B).
    n_params = sum(np.prod(d, dtype=np.int64) for _, d, _, _ in tensors)
    if a.name is None:
        size = f"{n_params / 1e9:.0f}B" if n_params >= 1e9 else f"{n_params / 1e6:.0f}M"
        a.name = f"synthetic-{size.lower()}-{a.type}"

    tokens, scores, types = tokenizer_vocab(a.vocab)
    kvs = [
        enc_kv("general.architecture", T_STRING, "llama"),
        enc_kv("general.name", T_STRING, a.name),
        enc_kv("general.file_type", T_UINT32, FILE_TYPE[a.type]),
        enc_kv("general.quantization_version", T_UINT32, 2),
        enc_kv("general.alignment", T_UINT32, ALIGNMENT),
        enc_kv("llama.vocab_size", T_UINT32, a.vocab),
        enc_kv("llama.context_length", T_UINT32, a.ctx),
        enc_kv("llama.embedding_length", T_UINT32, a.dim),
        enc_kv("llama.block_count", T_UINT32, a.layers),
        enc_kv("llama.feed_forward_length", T_UINT32, a.ff),
        enc_kv("llama.rope.dimension_count", T_UINT32, head_dim),
        enc_kv("llama.attention.head_count", T_UINT32, a.heads),
        enc_kv("llama.attention.head_count_kv", T_UINT32, n_kv),
        enc_kv("llama.attention.layer_norm_rms_epsilon", T_FLOAT32, a.rms_eps),
        enc_kv("llama.rope.freq_base", T_FLOAT32, a.rope_base),
        enc_kv("tokenizer.ggml.model", T_STRING, "llama"),
        enc_kv("tokenizer.ggml.tokens", T_ARRAY, tokens, T_STRING),
        enc_kv("tokenizer.ggml.scores", T_ARRAY, scores, T_FLOAT32),
        enc_kv("tokenizer.ggml.token_type", T_ARRAY, types, T_INT32),
        enc_kv("tokenizer.ggml.bos_token_id", T_UINT32, 1),
        enc_kv("tokenizer.ggml.eos_token_id", T_UINT32, 2),
        enc_kv("tokenizer.ggml.unknown_token_id", T_UINT32, 0),
        enc_kv("tokenizer.ggml.add_bos_token", T_BOOL, True),
        enc_kv("tokenizer.ggml.add_eos_token", T_BOOL, False),
    ]

    header = bytearray(b"GGUF" + struct.pack("<IQQ", 3, len(tensors), len(kvs)))
    for kv in kvs:
        header += kv
    offset = 0
    offsets = []
    for name, dims, ty, _ in tensors:
        offsets.append(offset)
        header += enc_str(name) + struct.pack("<I", len(dims))
        header += struct.pack(f"<{len(dims)}Q", *dims)
        header += struct.pack("<IQ", ty[0], offset)
        offset = align_up(offset + nbytes(dims, ty))
    header += b"\0" * (align_up(len(header)) - len(header))
    total = len(header) + offset

    t0 = time.time()
    tmp = a.out + ".part"
    with open(tmp, "wb") as f:
        f.write(header)
        data_start = f.tell()
        for (name, dims, ty, gen), off in zip(tensors, offsets):
            pos = f.tell() - data_start
            if pos != off:
                f.write(b"\0" * (off - pos))
            n = 0
            for chunk in gen():
                f.write(chunk)
                n += len(chunk)
            if n != nbytes(dims, ty):
                raise AssertionError(f"{name}: wrote {n} bytes, expected {nbytes(dims, ty)}")
        pos = f.tell() - data_start
        f.write(b"\0" * (offset - pos))
        assert f.tell() == total, (f.tell(), total)
    os.replace(tmp, a.out)
    dt = time.time() - t0

    # Bytes of weights one decode step reads, counted as `torchless bench` does: every tensor,
    # but only one row of token_embd (output.weight is separate, not tied).
    per_token = 0
    for name, dims, ty, _ in tensors:
        b = nbytes(dims, ty)
        per_token += b // dims[1] if name == "token_embd.weight" else b

    print(f"wrote {a.out}: {a.name}, llama, {a.layers} layers, dim {a.dim}, ff {a.ff}, "
          f"heads {a.heads}/{n_kv}, vocab {a.vocab}, ctx {a.ctx}, {a.type} "
          f"({n_params / 1e6:.1f}M params) in {dt:.1f} s", file=sys.stderr)
    print(f"file size: {total} bytes ({total / 2**30:.2f} GiB)")
    print(f"weight bytes read per token: {per_token} ({per_token / 2**30:.3f} GiB)")


if __name__ == "__main__":
    main()
