#!/usr/bin/env python3
"""Perplexity of a GGUF model computed exactly: float64 numpy, weights dequantized by the `gguf`
package, activations never rounded. This is the value every backend approximates; llama.cpp's
CPU path (and ours) round activations to Q8 blocks before each quantized dot product, which
moves perplexity by up to about 1% on these small models, so a backend that keeps activations
in f32 (CUDA) is checked against this number rather than against the CPU.

It follows llama-perplexity exactly otherwise: the ids of the whole text (from llama-tokenize,
BOS first), cut into chunks of CTX; each chunk's first id replaced by BOS (where the vocab adds one); the second half of
each chunk scored (positions CTX/2 .. CTX-2 predict the next id).

Supports the architectures of the real models the tests use: `llama` (SmolLM2) and `gemma3`.

Usage: exact-perplexity.py MODEL.gguf IDS_FILE CTX CHUNKS > result.json
       exact-perplexity.py --logits MODEL.gguf IDS_FILE TOPK > result.json
  IDS_FILE holds the ids as llama-tokenize --ids prints them (comma separated).
  --logits evaluates the ids as one sequence instead and writes, for every position, the exact
  log-sum-exp of its logits and the TOPK largest logits with their ids: the reference the CUDA
  backend's logits are checked against (log-probabilities of those ids).
"""

import json
import sys

import numpy as np
from gguf import GGUFReader
from gguf.quants import dequantize


def fail(msg):
    print(f"exact-perplexity: error: {msg}", file=sys.stderr)
    sys.exit(1)


class Model:
    def __init__(self, path):
        self.reader = GGUFReader(path)
        self.tensors = {t.name: t for t in self.reader.tensors}
        self.arch = self.field("general.architecture")
        if self.arch not in ("llama", "gemma3"):
            fail(f"architecture {self.arch!r} is not supported (llama, gemma3)")
        a = self.arch
        self.n_layer = self.field(f"{a}.block_count")
        self.dim = self.field(f"{a}.embedding_length")
        self.n_head = self.field(f"{a}.attention.head_count")
        self.n_head_kv = self.field(f"{a}.attention.head_count_kv")
        self.head_dim = self.field(f"{a}.attention.key_length", self.dim // self.n_head)
        self.eps = self.field(f"{a}.attention.layer_norm_rms_epsilon")
        self.rope_base = self.field(f"{a}.rope.freq_base", 10000.0)
        # llama-perplexity puts BOS first in every chunk only where the vocab adds one.
        self.add_bos = bool(self.field("tokenizer.ggml.add_bos_token"))
        self.bos = self.field("tokenizer.ggml.bos_token_id")
        if a == "gemma3":
            # llama.cpp's gemma3: every 6th layer global (rope base from the file), the others
            # windowed with base 10000; embeddings scaled by sqrt(dim); GELU (tanh) gate.
            self.window = self.field(f"{a}.attention.sliding_window")
            self.swa_base = self.field(f"{a}.rope.freq_base_swa", 10000.0)
        rope_scale = self.field(f"{a}.rope.scaling.type", "none")
        if rope_scale not in ("none", "linear") or (
            rope_scale == "linear" and self.field(f"{a}.rope.scaling.factor", 1.0) != 1.0
        ):
            fail(f"RoPE scaling {rope_scale!r} is not supported")

    def field(self, key, default=None):
        f = self.reader.fields.get(key)
        if f is None:
            if default is None:
                fail(f"metadata {key} is missing")
            return default
        v = f.parts[f.data[0]]
        if f.types[0].name == "STRING":
            return bytes(v).decode()
        return v.item() if v.size == 1 else v

    def w(self, name):
        t = self.tensors.get(name)
        if t is None:
            return None
        shape = [int(x) for x in reversed(t.shape)]
        return dequantize(t.data, t.tensor_type).astype(np.float64).reshape(shape)


def rms_norm(x, w, eps):
    return x / np.sqrt((x * x).mean(-1, keepdims=True) + eps) * w


def rope(x, pos, base, halves):
    """x: [n, heads, d]. `halves` pairs i with i + d/2 (NEOX, gemma), else 2i with 2i + 1."""
    d = x.shape[-1]
    inv = base ** (-np.arange(d // 2, dtype=np.float64) * 2 / d)
    ang = pos[:, None] * inv[None, :]
    c, s = np.cos(ang)[:, None, :], np.sin(ang)[:, None, :]
    if halves:
        a, b = x[..., : d // 2], x[..., d // 2 :]
        return np.concatenate([a * c - b * s, a * s + b * c], -1)
    a, b = x[..., 0::2], x[..., 1::2]
    out = np.empty_like(x)
    out[..., 0::2], out[..., 1::2] = a * c - b * s, a * s + b * c
    return out


def gelu_tanh(x):
    return 0.5 * x * (1 + np.tanh(np.sqrt(2 / np.pi) * (x + 0.044715 * x**3)))


def silu(x):
    return x / (1 + np.exp(-x))


def forward(m, layers, embd, out_w, out_norm, ids, rows):
    """Logits (float64) of positions `rows` for one sequence `ids` starting at position 0."""
    n = len(ids)
    gemma = m.arch == "gemma3"
    pos = np.arange(n, dtype=np.float64)
    x = embd[ids]
    if gemma:
        x = x * np.sqrt(float(m.dim))
    qi, ki = np.arange(n)[:, None], np.arange(n)[None, :]
    causal = ki <= qi
    group = m.n_head // m.n_head_kv
    for il, lw in enumerate(layers):
        windowed = gemma and (il + 1) % 6 != 0
        base = m.swa_base if windowed else m.rope_base
        allowed = causal & (qi - ki < m.window) if windowed else causal
        h = rms_norm(x, lw["attn_norm"], m.eps)
        q = (h @ lw["attn_q"].T).reshape(n, m.n_head, m.head_dim)
        k = (h @ lw["attn_k"].T).reshape(n, m.n_head_kv, m.head_dim)
        v = (h @ lw["attn_v"].T).reshape(n, m.n_head_kv, -1)
        if gemma:
            q = rms_norm(q, lw["attn_q_norm"], m.eps)
            k = rms_norm(k, lw["attn_k_norm"], m.eps)
        q, k = rope(q, pos, base, gemma), rope(k, pos, base, gemma)
        k, v = np.repeat(k, group, axis=1), np.repeat(v, group, axis=1)
        s = np.einsum("ihd,jhd->hij", q, k) / np.sqrt(m.head_dim)
        s = np.where(allowed[None], s, -np.inf)
        p = np.exp(s - s.max(-1, keepdims=True))
        p /= p.sum(-1, keepdims=True)
        a = np.einsum("hij,jhd->ihd", p, v).reshape(n, -1) @ lw["attn_output"].T
        x = x + (rms_norm(a, lw["post_attention_norm"], m.eps) if gemma else a)
        h = rms_norm(x, lw["ffn_norm"], m.eps)
        act = gelu_tanh if gemma else silu
        f = (act(h @ lw["ffn_gate"].T) * (h @ lw["ffn_up"].T)) @ lw["ffn_down"].T
        x = x + (rms_norm(f, lw["post_ffw_norm"], m.eps) if gemma else f)
    return rms_norm(x[rows], out_norm, m.eps) @ out_w.T


def read_ids(path):
    with open(path) as f:
        return np.array([int(t) for t in f.read().replace(",", " ").split()], dtype=np.int64)


def load_weights(m):
    """(layers, embd, out_w, out_norm) as float64."""
    names = ["attn_norm", "attn_q", "attn_k", "attn_v", "attn_output", "ffn_norm"]
    names += ["ffn_gate", "ffn_up", "ffn_down"]
    if m.arch == "gemma3":
        names += ["attn_q_norm", "attn_k_norm", "post_attention_norm", "post_ffw_norm"]
    layers = []
    for il in range(m.n_layer):
        lw = {k: m.w(f"blk.{il}.{k}.weight") for k in names}
        missing = [k for k, v in lw.items() if v is None]
        if missing:
            fail(f"layer {il} lacks {missing}")
        layers.append(lw)
    embd = m.w("token_embd.weight")
    out_w = m.w("output.weight")
    out_w = embd if out_w is None else out_w
    out_norm = m.w("output_norm.weight")
    return layers, embd, out_w, out_norm


def log_sum_exp(logits):
    mx = logits.max(-1)
    return mx + np.log(np.exp(logits - mx[:, None]).sum(-1))


def main_logits(path, ids_file, top_k):
    m = Model(path)
    ids = read_ids(ids_file)
    layers, embd, out_w, out_norm = load_weights(m)
    logits = forward(m, layers, embd, out_w, out_norm, ids, np.arange(len(ids)))
    top = np.argsort(-logits, axis=1, kind="stable")[:, :top_k]
    json.dump(
        {
            "ids": [int(i) for i in ids],
            "lse": [round(float(v), 6) for v in log_sum_exp(logits)],
            "top_ids": top.tolist(),
            "top_logits": [[round(float(v), 6) for v in row] for row in np.take_along_axis(logits, top, 1)],
            "method": "float64 numpy forward from the gguf package's dequantized weights "
            "(tools/exact-perplexity.py --logits)",
        },
        sys.stdout,
    )
    print()


def main():
    if len(sys.argv) == 5 and sys.argv[1] == "--logits":
        return main_logits(sys.argv[2], sys.argv[3], int(sys.argv[4]))
    if len(sys.argv) != 5:
        fail("usage: exact-perplexity.py MODEL.gguf IDS_FILE CTX CHUNKS | --logits MODEL.gguf IDS_FILE TOPK")
    path, ids_file, ctx, max_chunks = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4])
    m = Model(path)
    ids = read_ids(ids_file)
    n_chunks = min(max_chunks, len(ids) // ctx)
    if n_chunks == 0:
        fail(f"{len(ids)} ids make no chunk of {ctx}")
    layers, embd, out_w, out_norm = load_weights(m)
    first = ctx // 2
    nll_sum, count, running = 0.0, 0, []
    for c in range(n_chunks):
        chunk = ids[c * ctx : (c + 1) * ctx].copy()
        if m.add_bos:
            chunk[0] = m.bos
        rows = np.arange(first, ctx - 1)
        logits = forward(m, layers, embd, out_w, out_norm, chunk, rows)
        nll = log_sum_exp(logits) - logits[np.arange(len(rows)), chunk[rows + 1]]
        nll_sum += nll.sum()
        count += len(rows)
        running.append(round(float(np.exp(nll_sum / count)), 4))
        print(f"exact-perplexity: [{c + 1}/{n_chunks}] {running[-1]}", file=sys.stderr)
    json.dump(
        {
            "ppl": running[-1],
            "ppl_running": running,
            "tokens_scored": count,
            "method": "float64 numpy forward from the gguf package's dequantized weights "
            "(tools/exact-perplexity.py)",
        },
        sys.stdout,
        indent=1,
    )
    print()


if __name__ == "__main__":
    main()
