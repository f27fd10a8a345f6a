#!/usr/bin/env python3
"""Write tests/fixtures/rope/*.json: RoPE inverse frequencies, attention factors and cos/sin
tables as Hugging Face transformers computes them, for the tests in src/model/rope.rs.

Pinned versions (the fixtures record them too):
    python 3.11, torch==2.9.1, transformers==5.2.0

Usage:
    pip install torch==2.9.1 transformers==5.2.0
    python3 tools/make-rope-fixtures.py            # from the repository root

One file per rope type (default, linear, dynamic, yarn, llama3, longrope). Each case holds:
  config          the model's config.json as transformers 5.2.0 saves it (`to_diff_dict()`,
                  trimmed to the keys RoPE reads), i.e. the `rope_parameters` form
  legacy_config   the same model in the older form (`rope_theta` + `rope_scaling`); the script
                  checks that transformers gives identical results from both
  layer_type      the layer type to read (Gemma 3's per-layer-type form), or null
  seq_len         max(positions) + 1: what transformers' rotary module passes to its dynamic
                  (dynamic NTK, longrope) frequency update for a forward over `positions`
  rotary_dim      int(head_dim * partial_rotary_factor), the length of inv_freq times two
  rope_theta      the base transformers resolved
  inv_freq        transformers' own rope function for the type (`ROPE_INIT_FUNCTIONS[type]` or
                  the model's `compute_default_rope_parameters`), called as the rotary module
                  calls it for `seq_len`, but run in float64: the same function code with
                  `torch.float`/`torch.float32` and `Tensor.float()` mapped to float64
  attention_factor  the function's second result (plain Python floats, so exact)
  cos, sin        [len(positions)][len(index)]: cos(p * inv_freq[i]) * attention_factor in
                  float64, at the frequency indices `index` (a subset, to keep files small)
  inv_freq_f32    the inverse frequencies transformers' rotary module really holds (float32)
                  after its forward over `positions`
  cos_f32, sin_f32  that module's forward output (float32, first half of the table) at `index`
Float32 values are written as the shortest decimal that round-trips in float32; float64 values
with repr (round-trip exact).
"""

import json
import math
import os
import random
import sys
import types

import numpy as np
import torch
import transformers
from transformers import Gemma3TextConfig, LlamaConfig, Phi3Config
from transformers.modeling_rope_utils import ROPE_INIT_FUNCTIONS
from transformers.models.gemma3.modeling_gemma3 import Gemma3RotaryEmbedding
from transformers.models.llama.modeling_llama import LlamaRotaryEmbedding
from transformers.models.phi3.modeling_phi3 import Phi3RotaryEmbedding

PINNED = {"torch": "2.9.1", "transformers": "5.2.0"}
OUT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "tests", "fixtures", "rope")
POSITIONS = [0, 1, 7, 100, 1000]
# Keys of config.json that RoPE reads; everything else transformers saves is dropped.
KEEP = {
    "model_type",
    "hidden_size",
    "num_attention_heads",
    "head_dim",
    "max_position_embeddings",
    "original_max_position_embeddings",
    "partial_rotary_factor",
    "rope_parameters",
    "rope_theta",
    "rope_scaling",
    "rope_local_base_freq",
}
MODELS = {
    "llama": (LlamaConfig, LlamaRotaryEmbedding),
    "phi3": (Phi3Config, Phi3RotaryEmbedding),
    "gemma3_text": (Gemma3TextConfig, Gemma3RotaryEmbedding),
}


class _Float64Torch:
    """`torch`, except that the float32 dtypes are float64."""

    float = torch.float64
    float32 = torch.float64

    def __getattr__(self, name):
        return getattr(torch, name)


def in_float64(fn):
    """The same function code, resolving `torch` to _Float64Torch."""
    g = dict(fn.__globals__)
    g["torch"] = _Float64Torch()
    return types.FunctionType(fn.__code__, g, fn.__name__, fn.__defaults__, fn.__closure__)


class _TensorFloatIsDouble:
    """Within the block, `Tensor.float()` gives float64 (longrope calls it on its exponents)."""

    def __enter__(self):
        self.saved = torch.Tensor.float
        torch.Tensor.float = lambda t, *a, **k: t.double()

    def __exit__(self, *exc):
        torch.Tensor.float = self.saved


def f32(x):
    """Shortest decimal that round-trips in float32, as a JSON number."""
    return float(np.format_float_positional(np.float32(x), unique=True, trim="0"))


def rope_block(cfg, layer_type):
    return cfg.rope_parameters[layer_type] if layer_type else cfg.rope_parameters


def init_fn(model, rope_type):
    _, rotary = MODELS[model]
    return rotary.compute_default_rope_parameters if rope_type == "default" else ROPE_INIT_FUNCTIONS[rope_type]


def call(fn, cfg, seq_len, layer_type):
    kwargs = {"seq_len": seq_len}
    if layer_type:
        kwargs["layer_type"] = layer_type
    return fn(cfg, None, **kwargs)


def effective_seq_len(cfg, rope_type, block, seq_len):
    """The seq_len transformers' rotary module passes to the init function for a forward whose
    largest position is seq_len - 1 (see dynamic_rope_update)."""
    if rope_type == "dynamic" and seq_len > cfg.max_position_embeddings:
        return seq_len
    if rope_type == "longrope" and seq_len > block["original_max_position_embeddings"]:
        return block["original_max_position_embeddings"] + 1
    return None  # the table built at init time


def reference(model, config_dict, layer_type, seq_len):
    """(theta, rope_type, inv_freq float64, attention_factor, float32 fn result) from transformers."""
    cls, _ = MODELS[model]
    cfg = cls.from_dict(json.loads(json.dumps(config_dict)))
    block = rope_block(cfg, layer_type)
    rope_type = block["rope_type"]
    fn = init_fn(model, rope_type)
    eff = effective_seq_len(cfg, rope_type, block, seq_len)
    inv32, attn32 = call(fn, cfg, eff, layer_type)
    with _TensorFloatIsDouble():
        inv64, attn64 = call(in_float64(fn), cfg, eff, layer_type)
    assert inv32.dtype == torch.float32 and inv64.dtype == torch.float64, (inv32.dtype, inv64.dtype)
    assert float(attn32) == float(attn64), (attn32, attn64)
    rel = ((inv64 - inv32.double()).abs() / inv64.abs()).max().item()
    assert rel < 4e-6, f"float64 run strays from the float32 one: {rel}"
    theta = rope_block(cfg, layer_type)["rope_theta"]
    return cfg, float(theta), rope_type, inv64, float(attn64)


def module_tables(model, cfg, layer_type, positions):
    """inv_freq held by transformers' rotary module after a forward over `positions`, and its
    cos/sin (first half), all float32."""
    _, rotary = MODELS[model]
    rot = rotary(cfg)
    x = torch.zeros(1, dtype=torch.float32)
    pid = torch.tensor([positions])
    if layer_type:
        cos, sin = rot(x, pid, layer_type)
        inv = getattr(rot, f"{layer_type}_inv_freq")
    else:
        cos, sin = rot(x, pid)
        inv = rot.inv_freq
    half = inv.shape[0]
    return inv, cos[0, :, :half], sin[0, :, :half]


def saved_config(model, config_dict):
    """config.json as transformers 5.2.0 writes it (save_pretrained uses to_diff_dict)."""
    cls, _ = MODELS[model]
    d = cls.from_dict(json.loads(json.dumps(config_dict))).to_diff_dict()
    return {k: v for k, v in d.items() if k in KEEP}


def rotary_dim(cfg, layer_type):
    block = rope_block(cfg, layer_type)
    head_dim = getattr(cfg, "head_dim", None) or cfg.hidden_size // cfg.num_attention_heads
    return int(head_dim * block.get("partial_rotary_factor", 1.0))


def make_case(name, model, config, legacy, layer_type=None, extra_position=None):
    positions = POSITIONS + ([extra_position] if extra_position is not None else [])
    seq_len = max(positions) + 1
    cfg, theta, rope_type, inv64, attn = reference(model, config, layer_type, seq_len)
    cfg_l, theta_l, rope_type_l, inv64_l, attn_l = reference(model, legacy, layer_type, seq_len)
    assert (theta, rope_type, attn) == (theta_l, rope_type_l, attn_l), name
    assert torch.equal(inv64, inv64_l), f"{name}: legacy form differs"
    n_rot = rotary_dim(cfg, layer_type)
    assert n_rot == 2 * inv64.shape[0] == rotary_dim(cfg_l, layer_type), name

    inv32, cos32, sin32 = module_tables(model, cfg, layer_type, positions)
    half = inv64.shape[0]
    index = sorted(set(range(0, half, max(1, half // 8))) | {half - 1})
    pos64 = torch.tensor(positions, dtype=torch.float64)
    ang = torch.outer(pos64, inv64)
    cos64, sin64 = ang.cos() * attn, ang.sin() * attn

    # Report how far float32 transformers is from the float64 run (the Rust tests' loose bounds).
    rel32 = ((inv32.double() - inv64).abs() / inv64).max().item()
    err_cs = max(
        ((cos32.double() - cos64).abs().max(dim=1).values / (1 + pos64 * inv64.max())).max().item(),
        ((sin32.double() - sin64).abs().max(dim=1).values / (1 + pos64 * inv64.max())).max().item(),
    )
    print(f"  {name:34} {rope_type:8} n_rot={n_rot:3} attn={attn:.6f} f32 rel={rel32:.1e} cs={err_cs:.1e}")

    return {
        "name": name,
        "config": saved_config(model, config),
        "legacy_config": legacy,
        "layer_type": layer_type,
        "seq_len": seq_len,
        "rotary_dim": n_rot,
        "rope_theta": theta,
        "inv_freq": inv64.tolist(),
        "attention_factor": attn,
        "positions": positions,
        "index": index,
        "cos": [[cos64[p, i].item() for i in index] for p in range(len(positions))],
        "sin": [[sin64[p, i].item() for i in index] for p in range(len(positions))],
        "inv_freq_f32": [f32(v) for v in inv32.tolist()],
        "cos_f32": [[f32(cos32[p, i].item()) for i in index] for p in range(len(positions))],
        "sin_f32": [[f32(sin32[p, i].item()) for i in index] for p in range(len(positions))],
    }


def llama(hidden, heads, max_pos, head_dim=None, **extra):
    d = {"model_type": "llama", "hidden_size": hidden, "num_attention_heads": heads, "max_position_embeddings": max_pos}
    if head_dim is not None:
        d["head_dim"] = head_dim
    d.update(extra)
    return d


def factors(seed, n, lo, hi):
    rng = random.Random(seed)
    return sorted(round(rng.uniform(lo, hi), 4) for _ in range(n))


def cases():
    out = {m: [] for m in ["default", "linear", "dynamic", "yarn", "llama3", "longrope"]}
    add = lambda mode, *a, **k: out[mode].append(make_case(*a, **k))

    # --- default (plain RoPE)
    add("default", "head64_theta1e4", "llama",
        llama(512, 8, 2048, rope_parameters={"rope_type": "default", "rope_theta": 10000.0}),
        llama(512, 8, 2048, rope_theta=10000.0))
    add("default", "head128_theta5e5", "llama",
        llama(2048, 32, 8192, head_dim=128, rope_parameters={"rope_type": "default", "rope_theta": 500000.0}),
        llama(2048, 32, 8192, head_dim=128, rope_theta=500000.0))
    add("default", "phi3_partial_half", "phi3",
        {"model_type": "phi3", "hidden_size": 1024, "num_attention_heads": 8, "max_position_embeddings": 4096,
         "partial_rotary_factor": 0.5, "rope_parameters": {"rope_type": "default", "rope_theta": 10000.0}},
        {"model_type": "phi3", "hidden_size": 1024, "num_attention_heads": 8, "max_position_embeddings": 4096,
         "partial_rotary_factor": 0.5, "rope_theta": 10000.0})
    gemma = {"model_type": "gemma3_text", "hidden_size": 1152, "num_attention_heads": 4, "head_dim": 256,
             "max_position_embeddings": 32768}
    gemma_new = dict(gemma, rope_parameters={
        "full_attention": {"rope_type": "linear", "factor": 8.0, "rope_theta": 1000000.0},
        "sliding_attention": {"rope_type": "default", "rope_theta": 10000.0}})
    gemma_old = dict(gemma, rope_theta=1000000.0, rope_local_base_freq=10000.0,
                     rope_scaling={"rope_type": "linear", "factor": 8.0})
    add("default", "gemma3_sliding", "gemma3_text", gemma_new, gemma_old, layer_type="sliding_attention")

    # --- linear
    add("linear", "head64_factor2", "llama",
        llama(512, 8, 4096, rope_parameters={"rope_type": "linear", "factor": 2.0, "rope_theta": 10000.0}),
        llama(512, 8, 4096, rope_theta=10000.0, rope_scaling={"type": "linear", "factor": 2.0}))
    add("linear", "head128_partial_half_factor4", "llama",
        llama(4096, 32, 16384, partial_rotary_factor=0.5,
              rope_parameters={"rope_type": "linear", "factor": 4.0, "rope_theta": 1000000.0}),
        llama(4096, 32, 16384, partial_rotary_factor=0.5, rope_theta=1000000.0,
              rope_scaling={"rope_type": "linear", "factor": 4.0}))
    add("linear", "gemma3_full_factor8", "gemma3_text", gemma_new, gemma_old, layer_type="full_attention")

    # --- dynamic NTK (seq_len below, at, just above and far above max_position_embeddings)
    def dyn(name, hidden, heads, max_pos, factor, theta, extra=None, **kw):
        new = llama(hidden, heads, max_pos, rope_parameters={"rope_type": "dynamic", "factor": factor, "rope_theta": theta}, **kw)
        old = llama(hidden, heads, max_pos, rope_theta=theta, rope_scaling={"type": "dynamic", "factor": factor}, **kw)
        add("dynamic", name, "llama", new, old, extra_position=extra)

    dyn("below_max", 512, 8, 2048, 2.0, 10000.0)
    dyn("at_max", 512, 8, 1001, 2.0, 10000.0)
    dyn("just_above_max_partial", 4096, 32, 1000, 3.0, 10000.0, partial_rotary_factor=0.75)
    dyn("above_max", 512, 8, 512, 2.0, 10000.0)
    dyn("far_above_max_head128", 4096, 32, 256, 4.0, 500000.0, extra=4095)

    # --- YaRN
    def yarn(name, hidden, heads, max_pos, theta, params, head_dim=None, top=None, model="llama"):
        top = top or {}
        new = llama(hidden, heads, max_pos, head_dim=head_dim, rope_parameters=dict(params, rope_type="yarn", rope_theta=theta), **top)
        old = llama(hidden, heads, max_pos, head_dim=head_dim, rope_theta=theta, rope_scaling=dict(params, type="yarn"), **top)
        add("yarn", name, model, new, old)

    yarn("qwen_factor4", 5120, 40, 131072, 1000000.0, {"factor": 4.0, "original_max_position_embeddings": 32768})
    yarn("explicit_attention_beta16_2", 512, 8, 32768, 10000.0,
         {"factor": 8.0, "original_max_position_embeddings": 4096, "attention_factor": 1.2,
          "beta_fast": 16.0, "beta_slow": 2.0})
    yarn("deepseek_mscale_equal", 7168, 128, 163840, 10000.0,
         {"factor": 40.0, "original_max_position_embeddings": 4096, "mscale": 1.0, "mscale_all_dim": 1.0,
          "beta_fast": 32.0, "beta_slow": 1.0}, head_dim=64)
    yarn("mscale_ratio", 2048, 16, 65536, 10000.0,
         {"factor": 16.0, "original_max_position_embeddings": 4096, "mscale": 1.0, "mscale_all_dim": 0.707},
         head_dim=64)
    yarn("mscale_without_all_dim", 2048, 16, 65536, 10000.0,
         {"factor": 16.0, "original_max_position_embeddings": 4096, "mscale": 0.707}, head_dim=64)
    yarn("gptoss_no_truncate", 2880, 64, 131072, 150000.0,
         {"factor": 32.0, "original_max_position_embeddings": 4096, "beta_fast": 32.0, "beta_slow": 1.0,
          "truncate": False}, head_dim=64)
    yarn("partial_half", 4096, 32, 8192, 10000.0, {"factor": 2.0, "original_max_position_embeddings": 2048},
         top={"partial_rotary_factor": 0.5})
    yarn("factor_null", 1024, 8, 65536, 10000.0, {"factor": None, "original_max_position_embeddings": 4096})
    # beta_fast == beta_slow without truncation: equal ramp bounds, which transformers nudges apart.
    yarn("equal_betas_no_truncate", 512, 8, 16384, 10000.0,
         {"factor": 4.0, "original_max_position_embeddings": 4096, "beta_fast": 8.0, "beta_slow": 8.0,
          "truncate": False})
    yarn("toplevel_original_max_wins", 1024, 8, 131072, 500000.0,
         {"factor": 4.0, "original_max_position_embeddings": 4096},
         top={"original_max_position_embeddings": 8192})

    # --- Llama 3.1 style
    def l3(name, hidden, heads, max_pos, theta, factor, low, high, orig, **kw):
        p = {"factor": factor, "low_freq_factor": low, "high_freq_factor": high, "original_max_position_embeddings": orig}
        new = llama(hidden, heads, max_pos, rope_parameters=dict(p, rope_type="llama3", rope_theta=theta), **kw)
        old = llama(hidden, heads, max_pos, rope_theta=theta, rope_scaling=dict(p, rope_type="llama3"), **kw)
        add("llama3", name, "llama", new, old)

    l3("llama31_8b", 4096, 32, 131072, 500000.0, 8.0, 1.0, 4.0, 8192)
    l3("llama32_1b", 2048, 32, 131072, 500000.0, 32.0, 1.0, 4.0, 8192)
    l3("factor16_low2_high8", 512, 8, 65536, 10000.0, 16.0, 2.0, 8.0, 4096)
    l3("partial_half", 4096, 32, 131072, 500000.0, 8.0, 1.0, 4.0, 8192, partial_rotary_factor=0.5)

    # --- LongRoPE (Phi-3 style: factor from the context lengths; short and long)
    phi = {"model_type": "phi3", "hidden_size": 3072, "num_attention_heads": 32, "max_position_embeddings": 131072,
           "original_max_position_embeddings": 4096}
    short, long = factors(1, 48, 1.0, 3.0), factors(2, 48, 1.0, 60.0)
    lr = {"short_factor": short, "long_factor": long}
    phi_new = dict(phi, rope_parameters=dict(lr, rope_type="longrope", rope_theta=10000.0))
    phi_old = dict(phi, rope_theta=10000.0, rope_scaling=dict(lr, type="longrope"))
    add("longrope", "phi3_short", "phi3", phi_new, phi_old)
    add("longrope", "phi3_at_original_max", "phi3", phi_new, phi_old, extra_position=4095)
    add("longrope", "phi3_long", "phi3", phi_new, phi_old, extra_position=4999)
    phi4 = {"model_type": "phi3", "hidden_size": 3072, "num_attention_heads": 24, "max_position_embeddings": 131072,
            "original_max_position_embeddings": 4096, "partial_rotary_factor": 0.75}
    lr4 = {"short_factor": factors(3, 48, 1.0, 2.0), "long_factor": factors(4, 48, 1.0, 40.0)}
    add("longrope", "phi4mini_partial_just_long", "phi3",
        dict(phi4, rope_parameters=dict(lr4, rope_type="longrope", rope_theta=250000.0)),
        dict(phi4, rope_theta=250000.0, rope_scaling=dict(lr4, type="longrope")), extra_position=4096)
    lr8 = {"short_factor": factors(5, 32, 1.0, 2.0), "long_factor": factors(6, 32, 1.0, 20.0),
           "original_max_position_embeddings": 2048}
    add("longrope", "explicit_factor_long", "llama",
        llama(1024, 16, 65536, rope_parameters=dict(lr8, factor=8.0, rope_type="longrope", rope_theta=10000.0)),
        llama(1024, 16, 65536, rope_theta=10000.0, rope_scaling=dict(lr8, factor=8.0, rope_type="longrope")),
        extra_position=3000)
    add("longrope", "explicit_attention_short", "llama",
        llama(1024, 16, 65536, rope_parameters=dict(lr8, attention_factor=1.1, rope_type="longrope", rope_theta=10000.0)),
        llama(1024, 16, 65536, rope_theta=10000.0, rope_scaling=dict(lr8, attention_factor=1.1, type="longrope")))
    return out


def main():
    assert transformers.__version__ == PINNED["transformers"], transformers.__version__
    assert torch.__version__.split("+")[0] == PINNED["torch"], torch.__version__
    os.makedirs(OUT, exist_ok=True)
    total = 0
    for mode, cs in cases().items():
        doc = {
            "generator": "tools/make-rope-fixtures.py",
            "versions": PINNED,
            "rope_type": mode,
            "cases": cs,
        }
        path = os.path.join(OUT, f"{mode}.json")
        text = json.dumps(doc, separators=(",", ":")) + "\n"
        with open(path, "w") as f:
            f.write(text)
        total += len(text)
        print(f"{path}: {len(cs)} cases, {len(text)} bytes")
    print(f"total {total} bytes")
    if total > 200_000:
        sys.exit("fixtures exceed 200 KB")


if __name__ == "__main__":
    main()
