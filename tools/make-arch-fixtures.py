#!/usr/bin/env python3
"""Generate tiny, deterministic multi-architecture fixtures for torchless.

Writes ``tests/fixtures/arch/<case>/`` for ten HF model families (llama, llama3,
mistral, phi2, phi3, gemma, gemma2, gemma3, qwen2, qwen3) plus
``tests/fixtures/arch/manifest.json`` and ``tests/fixtures/arch/tokenizer-ids.json``.

Per case:
  f32/                      HF checkpoint, f32 safetensors (qwen2: sharded + index)
  bf16/                     same weights rounded to bf16
  i8/                       compressed-tensors w8a8 "int-quantized" checkpoint
                            (int8 per-output-channel weights + f32 weight_scale [out,1],
                            dynamic per-token int8 input activations), written directly
  model-f32.gguf            llama.cpp convert_hf_to_gguf.py --outtype f32 of f32/
  model-q8_0.gguf           llama.cpp convert_hf_to_gguf.py --outtype q8_0 of f32/
  logits-f64.npy            [T, vocab] float32, computed in float64 (see "true f64" below)
  logits-bf16ref.npy        float64 forward of the bf16-rounded weights
  logits-q8_0ref.npy        float64 forward with exactly the GGUF-Q8_0 tensors q/dq'd
  logits-i8ref.npy          float64 emulation of w8a8 (int8 weights + per-token int8 acts)
  (mistral only) logits-f64-nowindow.npy / logits-q8_0ref-nowindow.npy: the converter
                            drops Mistral's sliding_window, so the GGUFs encode this model.
  ref.json                  ids, T, n_vocab, scale, margins, per-file info

Sizes: hidden 64 / ffn 64 / 2 layers / vocab 300 for most cases; phi2 hidden 32 (the converter
hard-codes ffn = 4*hidden); gemma3 hidden 32 with 6 layers (llama.cpp's implicit Gemma3 sliding
pattern is 6). Total ~12.4 MB.

"true f64": transformers upcasts some ops to float32 even in a float64 model (RMSNorm
``.to(torch.float32)``, rotary ``.float()``, eager softmax ``dtype=torch.float32``,
inv_freq built with ``dtype=torch.float``). The references are computed with those
float32 islands redirected to float64 (``torch.float``/``torch.float32`` and
``Tensor.float`` temporarily aliased to float64 while the reference model is built
and run). The size of that change is recorded per case in manifest.json.

Pinned environment (tools/requirements-fixtures.txt), Python 3.11:
  torch==2.9.1 transformers==5.2.0 tokenizers==0.22.2 safetensors==0.8.0
  sentencepiece==0.2.3 compressed-tensors==0.12.2 numpy==2.4.6 gguf==0.19.0
  llama.cpp converter + gguf-py (0.19.0) from the llama-cpp-python 0.3.36 sdist
  (vendor/llama.cpp), imported as a module (see convert_gguf()).

Regenerate (from the repo root):
  python3 tools/make-arch-fixtures.py \
      --llama-cpp /work/refbuild/llama_cpp_python-0.3.36/vendor/llama.cpp
Optional cross-check with llama.cpp (writes llamacpp-check.json; machine-dependent floats):
      --llama-logits <llama.cpp>/build/bin/llama-logits   (built by tools/build-llamacpp.sh)

Everything is seeded; re-running reproduces byte-identical files.
"""
from __future__ import annotations

import argparse
import contextlib
import copy
import hashlib
import json
import logging
import math
import os
import shutil
import sys
import tempfile
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parent.parent
DEFAULT_LLAMA_CPP = Path("/work/refbuild/llama_cpp_python-0.3.36/vendor/llama.cpp")

T = 24
HIDDEN = 64
VOCAB_TARGET = 300
IDS_SEED = 1234

PINNED = {
    "python": "3.11",
    "torch": "2.9.1",
    "transformers": "5.2.0",
    "tokenizers": "0.22.2",
    "safetensors": "0.8.0",
    "sentencepiece": "0.2.3",
    "compressed-tensors": "0.12.2",
    "numpy": "2.4.6",
    "gguf-py": "0.19.0 (llama.cpp vendor/llama.cpp/gguf-py)",
    "llama.cpp": "vendor/llama.cpp of llama-cpp-python 0.3.36 sdist",
}

TOKENIZER_TEXT = """The quick brown fox jumps over the lazy dog. A tiny model reads the text and predicts the next token.
In 2024, there were 366 days; in 2025 there are 365 days. Numbers like 3.14 and 42 appear here and there.
Hello, world! How are you today? I'm fine, thanks - and you? We've been testing the tokenizer again and again.
The rain in Spain stays mainly in the plain. She sells sea shells on the sea shore, and the shells she sells are sea shells.
"""

TOKENIZER_PROBES = [
    "Hello, world!",
    "The quick brown fox jumps over the lazy dog.",
    "  leading spaces,  double  spaces\tand a tab ",
    "Numbers: 3.14159, 2024 and 1234567890.",
    "unicode: caf\u00e9 na\u00efve \u2014 \u65e5\u672c\u8a9e \U0001F680",
    "line one\nline two\n\nline four\n",
    "special <s> and </s> and <pad> tokens",
    "I'm sure we'll've done it; isn't it? 'RE",
]


def parse_args():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--llama-cpp", type=Path, default=DEFAULT_LLAMA_CPP,
                    help="llama.cpp source tree containing convert_hf_to_gguf.py, conversion/ and gguf-py/")
    ap.add_argument("--out", type=Path, default=REPO / "tests" / "fixtures" / "arch")
    ap.add_argument("--cases", nargs="*", default=None, help="subset of cases (default: all)")
    ap.add_argument("--llama-logits", type=Path, default=None,
                    help="optional: tools/llama-logits.cpp binary (built by tools/build-llamacpp.sh); if given, "
                         "every GGUF is run through llama.cpp and the agreement with the references is written "
                         "to llamacpp-check.json (machine-dependent floats, informational)")
    return ap.parse_args()


ARGS = parse_args()
# The converter must use its own gguf-py (same API version as the converter code).
sys.path.insert(0, str(ARGS.llama_cpp / "gguf-py"))
sys.path.insert(0, str(ARGS.llama_cpp))

import torch  # noqa: E402
import transformers  # noqa: E402
import gguf  # noqa: E402
from safetensors.torch import load_file, save_file  # noqa: E402

torch.set_num_threads(max(1, min(2, os.cpu_count() or 1)))
os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
transformers.utils.logging.disable_progress_bar()
logging.basicConfig(level=logging.WARNING)
transformers.logging.set_verbosity_error()


# ----------------------------------------------------------------------------------------
# tokenizer
# ----------------------------------------------------------------------------------------

def build_tokenizer(tmpdir: Path) -> Path:
    """Tiny byte-level BPE (GPT-2 style regex pre-tokenizer), 300 tokens:
    ids 0..2 = <s>, </s>, <pad>; 3..258 = the 256 byte symbols; 259.. = merges."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True)
    tok.decoder = decoders.ByteLevel()
    tok.post_processor = processors.ByteLevel(trim_offsets=False)
    trainer = trainers.BpeTrainer(
        vocab_size=VOCAB_TARGET, min_frequency=2, show_progress=False,
        special_tokens=["<s>", "</s>", "<pad>"],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    tok.train_from_iterator([TOKENIZER_TEXT] * 4, trainer=trainer)
    assert tok.get_vocab_size() == VOCAB_TARGET, tok.get_vocab_size()
    fast = PreTrainedTokenizerFast(tokenizer_object=tok, bos_token="<s>", eos_token="</s>", pad_token="<pad>")
    out = tmpdir / "tokenizer"
    fast.save_pretrained(out)
    return out


# ----------------------------------------------------------------------------------------
# case definitions
# ----------------------------------------------------------------------------------------

def common(**over):
    d = dict(vocab_size=VOCAB_TARGET, hidden_size=HIDDEN, intermediate_size=64, num_hidden_layers=2,
             num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=64,
             bos_token_id=0, eos_token_id=1, pad_token_id=2, rms_norm_eps=1e-6)
    d.update(over)
    return d


def rope(theta, **kw):
    return dict(rope_type="default", rope_theta=float(theta), **kw)


PHI3_SHORT = [1.0, 1.05, 1.1, 1.2, 1.35, 1.5, 1.75, 2.0]
PHI3_LONG = [1.0, 1.6, 2.5, 3.5, 5.0, 7.0, 9.5, 12.0]
G3_TYPES = ["sliding_attention"] * 5 + ["full_attention"]

# Each case: config class, model class, config kwargs, init stds, features, ablations.
# Ablation kinds: ("cfg", fn(kwargs)->kwargs) | ("sd", fn(sd, kwargs)->sd) | ("mod", fn(model, kwargs))
#                 | ("null", reason)  (structural feature with no meaningful "off" variant)
CASES: dict[str, dict] = {}


def case(name, **kw):
    CASES[name] = kw


def _cfgset(**changes):
    def f(kw):
        kw = copy.deepcopy(kw)
        for k, v in changes.items():
            kw[k] = v
        return kw
    return f


def _zero_sd(pred):
    def f(sd, kw):
        return {k: (torch.zeros_like(v) if pred(k) else v) for k, v in sd.items()}
    return f


def _identity_modules(*suffixes):
    def f(model, kw):
        for name, m in list(model.named_modules()):
            for s in suffixes:
                if name.endswith(s):
                    parent = model.get_submodule(name.rsplit(".", 1)[0])
                    setattr(parent, name.rsplit(".", 1)[1], torch.nn.Identity())
    return f


def _gqa_wrong_mapping(sd, kw):
    """Correct HF GQA: q head h uses kv head h // (n_head/n_kv). This ablation emulates the
    common bug "kv head = h % n_kv" by permuting q heads (q_proj rows, q bias) and the
    matching o_proj input columns of the correct model."""
    nh, nkv = kw["num_attention_heads"], kw["num_key_value_heads"]
    hd = kw.get("head_dim") or kw["hidden_size"] // nh
    g = nh // nkv
    inv = [(h % nkv) * g + h // nkv for h in range(nh)]  # position of orig head h in new order
    perm = [0] * nh
    for h, j in enumerate(inv):
        perm[j] = h
    rows = torch.cat([torch.arange(p * hd, (p + 1) * hd) for p in perm])
    out = dict(sd)
    for k, v in sd.items():
        if k.endswith("self_attn.q_proj.weight") or k.endswith("self_attn.q_proj.bias"):
            out[k] = v[rows].clone()
        elif k.endswith("self_attn.o_proj.weight"):
            out[k] = v[:, rows].clone()
        elif k.endswith("self_attn.qkv_proj.weight") or k.endswith("self_attn.qkv_proj.bias"):
            q = v[: nh * hd]
            out[k] = torch.cat([q[rows], v[nh * hd:]], 0).clone()
    return out


def _swap_gate_up(sd, kw):
    out = dict(sd)
    for k, v in sd.items():
        if k.endswith("mlp.gate_up_proj.weight"):
            a, b = v.chunk(2, 0)
            out[k] = torch.cat([b, a], 0).clone()
    return out


def _norm_minus_one(sd, kw):
    # Gemma RMSNorm computes x * (1 + w). "Forgetting the +1" == HF model with w - 1.
    return {k: (v - 1.0 if ("norm" in k and k.endswith(".weight")) else v) for k, v in sd.items()}


def _no_embed_scale(model, kw):
    s = math.sqrt(kw["hidden_size"])
    model.model.embed_tokens.register_forward_hook(lambda m, i, o: o / s)


def _phi_sequential(model, kw):
    def fwd(self, hidden_states, attention_mask=None, position_ids=None, past_key_values=None,
            output_attentions=False, use_cache=False, cache_position=None, position_embeddings=None, **kwargs):
        residual = hidden_states
        a, _ = self.self_attn(hidden_states=self.input_layernorm(hidden_states), attention_mask=attention_mask,
                              position_ids=position_ids, past_key_values=past_key_values,
                              use_cache=use_cache, cache_position=cache_position,
                              position_embeddings=position_embeddings, **kwargs)
        h = residual + a
        return (h + self.mlp(self.input_layernorm(h)),)
    import types
    for layer in model.model.layers:
        layer.forward = types.MethodType(fwd, layer)


def _invert_layer_types(kw):
    kw = copy.deepcopy(kw)
    kw["layer_types"] = ["full_attention" if t == "sliding_attention" else "sliding_attention"
                         for t in kw["layer_types"]]
    return kw


NO_WINDOW = 4096  # "window off" for configs that need an int (>> T)

CONVERTER_QUIRKS = [
    "get_vocab_base_pre monkeypatched to return 'gpt-2': the converter recognises BPE pre-tokenizers by a hash of "
    "the ids of a probe text and refuses unknown ones; this tokenizer is new but IS the GPT-2 byte-level regex split.",
    "every model class's set_vocab replaced by _set_vocab_gpt2 (Gemma*/Phi3/Llama would look for a sentencepiece "
    "tokenizer.model; only tokenizer.json exists). GGUF tokenizer: model=gpt2, pre=gpt-2, 300 tokens, 41 merges, "
    "bos=0 eos=1 pad=2, add_bos_token=false.",
    "general.name is 'torchless-arch-fixture' (no family name): llama.cpp's vocab loader applies per-model token "
    "attribute hacks keyed on general.name (a name containing 'phi3' made llama.cpp fail: it requires <unk> and "
    "<|endoftext|> tokens).",
    "Q8_0 file: every 2-D '.weight' tensor (incl. token_embd and output) is Q8_0; norms, biases and generated rope "
    "tensors stay F32.",
    "Llama/Mistral (arch 'llama'): attn_q/attn_k rows are permuted (LlamaModel.permute) for llama.cpp's "
    "interleaved-pair RoPE; all other archs are stored unpermuted (NEOX-style rotate_half). See hf_to_gguf.",
    "Gemma/Gemma2/Gemma3: RMSNorm weights stored as 1+w; lm_head skipped (tied).",
    "'Unknown RoPE type: default' warnings from the converter are harmless (plain rope).",
]

GGUF_NOTES = {
    "llama3": ["llama3 rope scaling is encoded only as the F32 tensor rope_freqs.weight [head_dim/2] (per-frequency "
               "divisors, applied as theta_i = pos * base^(-2i/d) / rope_freqs[i]); no rope-scaling keys are written."],
    "mistral": ["sliding_window is NOT written (MistralForCausalLM goes through LlamaModel): the GGUFs encode the "
                "no-window model -> compare them with logits-f64-nowindow.npy / logits-q8_0ref-nowindow.npy."],
    "phi2": ["feed_forward_length is hard-coded to 4*n_embd and head_count_kv to head_count by the converter (the "
             "fixture satisfies both); no rope.freq_base key (llama.cpp default 10000 == HF); rope.dimension_count = "
             "partial_rotary_factor*head_dim = 4; layer_norm_epsilon key; tokenizer.ggml.add_bos_token forced false."],
    "phi3": ["longrope: rope_factors_long.weight / rope_factors_short.weight [head_dim/2] F32 tensors + "
             "rope.scaling.attn_factor (sqrt(1+ln(64/16)/ln(16)) = 1.2247) + rope.scaling.original_context_length 16. "
             "HF uses long factors when the current sequence length (T=24) > 16; llama.cpp picks long when its "
             "context size n_ctx_seq > 16 (both long here). The attention factor multiplies cos and sin.",
             "sliding_window None in config.json -> attention.sliding_window = 0 (llama.cpp ignores Phi-3 SWA anyway)."],
    "gemma": ["no rope.freq_base / rope.dimension_count keys (llama.cpp defaults: 10000, key_length).",
              "embedding scale sqrt(n_embd) is implicit (not a key)."],
    "gemma2": ["no sliding_window_pattern key: llama.cpp assumes pattern 2 (even layers sliding) == HF layer_types.",
               "query_pre_attn_scalar is not stored: llama.cpp uses 1/sqrt(head_dim) (except 27B) -> fixture sets "
               "query_pre_attn_scalar = head_dim = 16.",
               "no rope.freq_base key (default 10000 == HF)."],
    "gemma3": ["no sliding_window_pattern key: llama.cpp assumes pattern 6 (layers 0-4 sliding, 5 global) -> the "
               "fixture has 6 layers with exactly that HF layer_types.",
               "rope.freq_base = full_attention theta (1e6), rope.freq_base_swa = sliding_attention theta (1e4).",
               "query_pre_attn_scalar not stored (1/sqrt(head_dim)) -> fixture sets it to head_dim = 16."],
    "qwen2": ["no sliding window written (HF use_sliding_window=false)."],
}

ABLATION_DESC = {
    "gqa": "q head h uses kv head h % n_kv instead of h // (n_head/n_kv) (q heads + o_proj columns permuted)",
    "untied_lm_head": "lm_head replaced by embed_tokens (tied)",
    "llama3_rope_scaling": "plain rope (no llama3 frequency scaling), same theta",
    "rope_theta_500k": "rope_theta 10000 instead of 500000 (llama3 scaling kept)",
    "sliding_window": "sliding_window=None (full causal attention)",
    "layernorm_bias": "LayerNorm biases zeroed",
    "gelu_new": "exact erf GELU instead of tanh-approx gelu_new (intrinsically tiny: |gelu-gelu_tanh| < 5e-4)",
    "gelu_vs_relu": "ReLU instead of gelu_new",
    "parallel_residual": "sequential residual instead: h=x+attn(ln(x)); out=h+mlp(ln(h)) (same LayerNorm)",
    "partial_rotary": "rope over the full head_dim instead of the first 50%",
    "lm_head_bias": "lm_head bias zeroed",
    "linear_biases": "q/k/v/dense/fc1/fc2 biases zeroed",
    "fused_gate_up": "gate/up halves of gate_up_proj swapped (first half is gate in HF)",
    "longrope": "plain rope: no longrope factors and no attention factor",
    "longrope_long_factors": "short_factor used where HF uses long_factor (HF picks long when T=24 > original 16)",
    "longrope_attn_factor": "attention_factor 1.0 instead of sqrt(1+ln(64/16)/ln(16)) (scales cos and sin)",
    "geglu": "SiLU instead of GELU(tanh) on the gate (SwiGLU instead of GeGLU)",
    "gelu_tanh": "exact erf GELU instead of the tanh approximation (intrinsically tiny)",
    "norm_plus_one": "RMSNorm multiplies by w instead of (1+w) (all Gemma norms incl. q/k norms)",
    "embed_scale": "no sqrt(hidden) scaling of the input embeddings",
    "attn_softcap": "attn_logit_softcapping off",
    "final_softcap": "final_logit_softcapping off",
    "sliding_window_alternating": "window off on all layers",
    "sliding_window_pattern": "window off on all layers",
    "sliding_window_pattern_inverted": "sliding/full layer types swapped",
    "post_norms": "post_attention_layernorm and post_feedforward_layernorm skipped (identity)",
    "qk_norm": "q_norm/k_norm skipped (identity)",
    "rope_local_base": "sliding layers use the global rope_theta (1e6) instead of 10000",
    "qkv_bias": "q/k/v biases zeroed",
    "rope_theta_1e6": "rope_theta 10000 instead of 1e6",
}

case("llama", cfg="LlamaConfig", cls="LlamaForCausalLM",
     kw=common(rope_parameters=rope(10000.0), tie_word_embeddings=False),
     init=dict(w=0.15, emb=0.5, head=0.4),
     features=["gqa", "untied_lm_head"],
     ablations={
         "gqa": ("sd", _gqa_wrong_mapping),
         "untied_lm_head": ("sd", lambda sd, kw: {**sd, "lm_head.weight": sd["model.embed_tokens.weight"].clone()}),
     })

case("llama3", cfg="LlamaConfig", cls="LlamaForCausalLM",
     kw=common(rope_parameters=dict(rope_type="llama3", rope_theta=500000.0, factor=8.0, low_freq_factor=1.0,
                                    high_freq_factor=4.0, original_max_position_embeddings=16),
               tie_word_embeddings=True),
     init=dict(w=0.15, emb=0.5, head=None),
     features=["llama3_rope_scaling", "rope_theta_500k", "tied_embeddings", "gqa"],
     ablations={
         "llama3_rope_scaling": ("cfg", _cfgset(rope_parameters=rope(500000.0))),
         "rope_theta_500k": ("cfg", _cfgset(rope_parameters=dict(rope_type="llama3", rope_theta=10000.0, factor=8.0,
                                                                  low_freq_factor=1.0, high_freq_factor=4.0,
                                                                  original_max_position_embeddings=16))),
         "tied_embeddings": ("null", "structural (lm_head == embed_tokens); no separate lm_head tensor exists"),
         "gqa": ("sd", _gqa_wrong_mapping),
     })

case("mistral", cfg="MistralConfig", cls="MistralForCausalLM",
     kw=common(head_dim=32, sliding_window=8, rope_parameters=rope(10000.0), tie_word_embeddings=False),
     init=dict(w=0.15, emb=0.5, head=0.4),
     features=["sliding_window", "head_dim_decoupled", "gqa"],
     ablations={
         "sliding_window": ("cfg", _cfgset(sliding_window=None)),
         "head_dim_decoupled": ("null", "structural (q width 128 != hidden 64); shapes only fit with head_dim=32"),
         "gqa": ("sd", _gqa_wrong_mapping),
     })

case("phi2", cfg="PhiConfig", cls="PhiForCausalLM",
     # intermediate must be 4*hidden: the converter hard-codes feed_forward_length = 4 * n_embd (true for
     # real Phi-2). hidden 32 (head_dim 8, 4 rotary dims) keeps the file small.
     kw=dict(vocab_size=VOCAB_TARGET, hidden_size=32, intermediate_size=4 * 32, num_hidden_layers=2,
             num_attention_heads=4, num_key_value_heads=4, max_position_embeddings=64,
             partial_rotary_factor=0.5, hidden_act="gelu_new", layer_norm_eps=1e-5, qk_layernorm=False,
             rope_parameters=rope(10000.0, partial_rotary_factor=0.5),
             bos_token_id=0, eos_token_id=1, pad_token_id=2, tie_word_embeddings=False),
     init=dict(w=0.15, emb=0.5, head=0.4),
     features=["layernorm_bias", "gelu_new", "parallel_residual", "partial_rotary", "lm_head_bias", "linear_biases"],
     ablations={
         "layernorm_bias": ("sd", _zero_sd(lambda k: "layernorm.bias" in k)),
         "gelu_new": ("cfg", _cfgset(hidden_act="gelu")),
         "gelu_vs_relu": ("cfg", _cfgset(hidden_act="relu")),
         "parallel_residual": ("mod", _phi_sequential),
         "partial_rotary": ("cfg", _cfgset(partial_rotary_factor=1.0, rope_parameters=rope(10000.0, partial_rotary_factor=1.0))),
         "lm_head_bias": ("sd", _zero_sd(lambda k: k == "lm_head.bias")),
         "linear_biases": ("sd", _zero_sd(lambda k: k.startswith("model.layers.") and k.endswith(".bias") and "layernorm" not in k)),
     })

case("phi3", cfg="Phi3Config", cls="Phi3ForCausalLM",
     kw=common(original_max_position_embeddings=16, max_position_embeddings=64, sliding_window=None,
               rope_parameters=dict(rope_type="longrope", rope_theta=10000.0, short_factor=PHI3_SHORT,
                                    long_factor=PHI3_LONG, original_max_position_embeddings=16),
               tie_word_embeddings=False),
     init=dict(w=0.15, emb=0.5, head=0.4),
     features=["fused_qkv", "fused_gate_up", "longrope", "longrope_long_factors", "longrope_attn_factor", "gqa"],
     ablations={
         "fused_qkv": ("null", "structural (single qkv_proj tensor)"),
         "fused_gate_up": ("sd", _swap_gate_up),
         "longrope": ("cfg", _cfgset(rope_parameters=rope(10000.0))),
         "longrope_long_factors": ("cfg", _cfgset(rope_parameters=dict(
             rope_type="longrope", rope_theta=10000.0, short_factor=PHI3_SHORT, long_factor=PHI3_SHORT,
             original_max_position_embeddings=16))),
         "longrope_attn_factor": ("cfg", _cfgset(rope_parameters=dict(
             rope_type="longrope", rope_theta=10000.0, short_factor=PHI3_SHORT, long_factor=PHI3_LONG,
             original_max_position_embeddings=16, attention_factor=1.0))),
         "gqa": ("sd", _gqa_wrong_mapping),
     })

case("gemma", cfg="GemmaConfig", cls="GemmaForCausalLM",
     kw=common(head_dim=32, num_key_value_heads=1, hidden_act="gelu_pytorch_tanh", hidden_activation="gelu_pytorch_tanh",
               rope_parameters=rope(10000.0), tie_word_embeddings=True),
     init=dict(w=0.15, emb=0.15, head=None, norm_plus_one=True),
     features=["geglu", "gelu_tanh", "norm_plus_one", "embed_scale", "head_dim_decoupled", "mqa", "tied_embeddings"],
     ablations={
         "geglu": ("cfg", _cfgset(hidden_act="silu", hidden_activation="silu")),
         "gelu_tanh": ("cfg", _cfgset(hidden_act="gelu", hidden_activation="gelu")),
         "norm_plus_one": ("sd", _norm_minus_one),
         "embed_scale": ("mod", _no_embed_scale),
         "head_dim_decoupled": ("null", "structural (q width 128 != hidden 64)"),
         "mqa": ("null", "structural (1 kv head shared by all 4 q heads)"),
         "tied_embeddings": ("null", "structural"),
     })

case("gemma2", cfg="Gemma2Config", cls="Gemma2ForCausalLM",
     kw=common(num_hidden_layers=2, head_dim=16, hidden_activation="gelu_pytorch_tanh", query_pre_attn_scalar=16,
               sliding_window=8, attn_logit_softcapping=5.0, final_logit_softcapping=4.0,
               layer_types=["sliding_attention", "full_attention"],
               rope_parameters=rope(10000.0), tie_word_embeddings=True),
     init=dict(w=0.15, qk=0.35, emb=0.15, head=None, norm_plus_one=True),
     features=["attn_softcap", "final_softcap", "sliding_window_alternating", "post_norms", "geglu",
               "norm_plus_one", "embed_scale", "gqa"],
     ablations={
         "attn_softcap": ("cfg", _cfgset(attn_logit_softcapping=None)),
         "final_softcap": ("cfg", _cfgset(final_logit_softcapping=None)),
         "sliding_window_alternating": ("cfg", _cfgset(sliding_window=NO_WINDOW)),
         "sliding_window_pattern_inverted": ("cfg", _invert_layer_types),
         "post_norms": ("mod", _identity_modules("post_attention_layernorm", "post_feedforward_layernorm")),
         "geglu": ("cfg", _cfgset(hidden_activation="silu")),
         "gelu_tanh": ("cfg", _cfgset(hidden_activation="gelu")),
         "norm_plus_one": ("sd", _norm_minus_one),
         "embed_scale": ("mod", _no_embed_scale),
         "gqa": ("sd", _gqa_wrong_mapping),
     })

case("gemma3", cfg="Gemma3TextConfig", cls="Gemma3ForCausalLM",
     # 6 layers: the converter writes no sliding_window_pattern for Gemma3 and llama.cpp then assumes
     # pattern 6 (layers 0-4 sliding, 5 global) == HF layer_types below. hidden 32 / ffn 64 keep it small;
     # head_dim 16 x 4 heads = q width 64 != hidden 32 (decoupled).
     kw=common(num_hidden_layers=6, hidden_size=32, head_dim=16, intermediate_size=64, hidden_activation="gelu_pytorch_tanh",
               query_pre_attn_scalar=16,
               sliding_window=8, layer_types=G3_TYPES, attn_logit_softcapping=None, final_logit_softcapping=None,
               rope_parameters=dict(sliding_attention=rope(10000.0), full_attention=rope(1000000.0)),
               tie_word_embeddings=True),
     init=dict(w=0.15, emb=0.15, head=None, norm_plus_one=True),
     features=["qk_norm", "rope_local_base", "sliding_window_pattern", "post_norms", "geglu", "norm_plus_one",
               "embed_scale", "gqa"],
     ablations={
         "qk_norm": ("mod", _identity_modules("self_attn.q_norm", "self_attn.k_norm")),
         "rope_local_base": ("cfg", _cfgset(rope_parameters=dict(sliding_attention=rope(1000000.0),
                                                                 full_attention=rope(1000000.0)))),
         "sliding_window_pattern": ("cfg", _cfgset(sliding_window=NO_WINDOW)),
         "sliding_window_pattern_inverted": ("cfg", _invert_layer_types),
         "post_norms": ("mod", _identity_modules("post_attention_layernorm", "post_feedforward_layernorm")),
         "geglu": ("cfg", _cfgset(hidden_activation="silu")),
         "gelu_tanh": ("cfg", _cfgset(hidden_activation="gelu")),
         "norm_plus_one": ("sd", _norm_minus_one),
         "embed_scale": ("mod", _no_embed_scale),
         "gqa": ("sd", _gqa_wrong_mapping),
     })

case("qwen2", cfg="Qwen2Config", cls="Qwen2ForCausalLM",
     kw=common(rope_parameters=rope(1000000.0), use_sliding_window=False, tie_word_embeddings=True),
     init=dict(w=0.15, emb=0.5, head=None),
     features=["qkv_bias", "rope_theta_1e6", "gqa", "tied_embeddings", "sharded_safetensors"],
     ablations={
         "qkv_bias": ("sd", _zero_sd(lambda k: k.endswith(("q_proj.bias", "k_proj.bias", "v_proj.bias")))),
         "rope_theta_1e6": ("cfg", _cfgset(rope_parameters=rope(10000.0))),
         "gqa": ("sd", _gqa_wrong_mapping),
         "tied_embeddings": ("null", "structural"),
         "sharded_safetensors": ("null", "file layout only"),
     })

case("qwen3", cfg="Qwen3Config", cls="Qwen3ForCausalLM",
     kw=common(head_dim=32, attention_bias=False, use_sliding_window=False, rope_parameters=rope(1000000.0),
               tie_word_embeddings=True),
     init=dict(w=0.15, emb=0.5, head=None),
     features=["qk_norm", "head_dim_decoupled", "gqa", "tied_embeddings"],
     ablations={
         "qk_norm": ("mod", _identity_modules("self_attn.q_norm", "self_attn.k_norm")),
         "head_dim_decoupled": ("null", "structural (q width 128 != hidden 64)"),
         "gqa": ("sd", _gqa_wrong_mapping),
         "tied_embeddings": ("null", "structural"),
     })


# ----------------------------------------------------------------------------------------
# helpers
# ----------------------------------------------------------------------------------------

def make_config(c, kw):
    cfg = getattr(transformers, c["cfg"])(**copy.deepcopy(kw))
    cfg.architectures = [c["cls"]]
    cfg._attn_implementation = "eager"
    return cfg


def init_weights(model, seed, init):
    """Deterministic init so logits are far from flat and every feature is visible."""
    g = torch.Generator().manual_seed(seed)
    plus_one = init.get("norm_plus_one", False)
    with torch.no_grad():
        emb_w = model.get_input_embeddings().weight
        for mname, m in model.named_modules():
            if isinstance(m, torch.nn.Linear):
                if m.weight is emb_w:  # tied lm_head: already initialised as the embedding
                    assert init["head"] is None or init["head"] == init["emb"], "tied: set head=None"
                    continue
                std = init["w"]
                if mname.endswith(("q_proj", "k_proj")) and "qk" in init:
                    std = init["qk"]
                if mname == "lm_head":
                    std = init["head"]
                m.weight.copy_(torch.randn(m.weight.shape, generator=g) * std)
                if m.bias is not None:
                    m.bias.copy_(torch.randn(m.bias.shape, generator=g) * 0.2)
            elif isinstance(m, torch.nn.Embedding):
                m.weight.copy_(torch.randn(m.weight.shape, generator=g) * init["emb"])
            elif "norm" in type(m).__name__.lower():
                for pname, p in m.named_parameters(recurse=False):
                    if pname == "weight":
                        base = 0.0 if plus_one else 1.0
                        p.copy_(base + torch.randn(p.shape, generator=g) * 0.2)
                    elif pname == "bias":
                        p.copy_(torch.randn(p.shape, generator=g) * 0.2)
                    else:
                        raise RuntimeError(f"unexpected norm param {mname}.{pname}")
        for n, p in model.named_parameters():  # everything must have been touched
            assert torch.isfinite(p).all(), n


@contextlib.contextmanager
def true_f64():
    """Alias the float32 islands in transformers' modeling code to float64 (see docstring)."""
    saved = (torch.float, torch.float32, torch.Tensor.float, torch.get_default_dtype())
    torch.set_default_dtype(torch.float64)  # e.g. Gemma3's embed_scale buffer = torch.tensor(sqrt(hidden))
    torch.float = torch.float64
    torch.float32 = torch.float64
    torch.Tensor.float = lambda self, *a, **k: self.to(torch.float64)
    try:
        yield
    finally:
        torch.float, torch.float32, torch.Tensor.float = saved[:3]
        torch.set_default_dtype(saved[3])


def forward_f64(c, kw, sd, mod=None, f64=True, dtype=torch.float64):
    """Build the HF model for config kwargs `kw`, load `sd` (HF names, tied lm_head may be
    absent), run the fixed ids, return logits [T, V] as float64 numpy."""
    ctx = true_f64() if (f64 and dtype == torch.float64) else contextlib.nullcontext()
    with ctx, torch.no_grad():
        cfg = make_config(c, kw)
        torch.manual_seed(0)
        model = getattr(transformers, c["cls"])(cfg).to(dtype).eval()
        sd = {k: v.to(dtype) for k, v in sd.items()}
        missing, unexpected = model.load_state_dict(sd, strict=False)
        assert not unexpected, unexpected
        assert set(missing) <= {"lm_head.weight"}, missing
        if missing:
            assert model.lm_head.weight.data_ptr() == model.model.embed_tokens.weight.data_ptr(), "untied"
        if mod is not None:
            mod(model, kw)
        ids = torch.tensor([IDS], dtype=torch.long)
        out = model(input_ids=ids, use_cache=False).logits[0]
        assert out.dtype == dtype, out.dtype
        return out.double().numpy()


def rel(a, b, scale):
    return float(np.max(np.abs(a - b)) / scale)


def sha256(p: Path) -> str:
    return hashlib.sha256(p.read_bytes()).hexdigest()


def load_dir_sd(d: Path):
    sd = {}
    for f in sorted(d.glob("*.safetensors")):
        sd.update(load_file(f))
    return sd


def save_npy(path: Path, arr):
    np.save(path, np.ascontiguousarray(arr, dtype="<f4"))


# ----------------------------------------------------------------------------------------
# llama.cpp converter (imported as a module)
# ----------------------------------------------------------------------------------------

_CONV = None


def converter():
    global _CONV
    if _CONV is None:
        import conversion
        import conversion.base as cbase
        # Our tiny tokenizer is a GPT-2-style byte-level BPE (tokenizers ByteLevel pre-tokenizer with
        # use_regex=True == the GPT-2 split regex). The converter identifies BPE pre-tokenizers by hashing
        # the ids of a probe string and refuses unknown hashes; ours is unknown (new vocab), so we
        # declare it "gpt-2", which is what it is.
        cbase.TextModel.get_vocab_base_pre = lambda self, tokenizer: "gpt-2"
        logging.getLogger("hf-to-gguf").setLevel(logging.WARNING)
        _CONV = conversion
    return _CONV


def convert_gguf(src: Path, out: Path, outtype: str, model_name: str) -> str:
    conv = converter()
    hparams = conv.ModelBase.load_hparams(src, False)
    arch = conv.get_model_architecture(hparams, conv.ModelType.TEXT)
    mcls = conv.get_model_class(arch, mmproj=False)
    # Gemma/Gemma2/Phi3/Llama paths want a sentencepiece tokenizer.model (or fall back in ways that
    # don't apply here); we ship only tokenizer.json, so every class uses the GPT-2 BPE vocab writer.
    mcls.set_vocab = lambda self: self._set_vocab_gpt2()
    ftype = {"f32": gguf.LlamaFileType.ALL_F32, "q8_0": gguf.LlamaFileType.MOSTLY_Q8_0}[outtype]
    with torch.inference_mode():
        inst = mcls(src, ftype, out, eager=True, model_name=model_name)
        inst.write()
    return gguf.MODEL_ARCH_NAMES[inst.model_arch]


def field_value(f):
    try:
        v = f.contents()
    except Exception as e:  # pragma: no cover
        return f"<unreadable: {e}>"
    if isinstance(v, list) and len(v) > 16:
        return {"array_len": len(v), "first": v[:4]}
    if isinstance(v, float):
        return float(np.float32(v))
    return v


def read_gguf(path: Path):
    r = gguf.GGUFReader(path)
    kv = {}
    for name, f in r.fields.items():
        if name.startswith("GGUF."):
            continue
        kv[name] = field_value(f)
    tensors = []
    for t in r.tensors:
        tensors.append({"name": t.name, "type": t.tensor_type.name,
                        "shape": [int(x) for x in t.shape]})  # ggml order (ne0 first)
    return r, kv, tensors


def qdq_q8_0(w: torch.Tensor) -> torch.Tensor:
    """Q8_0 quantize+dequantize along the last (HF `in`) dim with gguf-py (what the converter uses)."""
    a = w.detach().to(torch.float32).numpy()
    q = gguf.quants.quantize(a, gguf.GGMLQuantizationType.Q8_0)
    d = gguf.quants.dequantize(q, gguf.GGMLQuantizationType.Q8_0)
    return torch.from_numpy(np.ascontiguousarray(d.reshape(a.shape)))


# ----------------------------------------------------------------------------------------
# w8a8 (compressed-tensors int-quantized)
# ----------------------------------------------------------------------------------------

def quant_linear_names(model) -> list[str]:
    return sorted(n for n, m in model.named_modules()
                  if isinstance(m, torch.nn.Linear) and n.startswith("model.layers."))


def int8_channel(w: torch.Tensor):
    w = w.to(torch.float32)
    scale = w.abs().amax(dim=1, keepdim=True) / 127.0
    scale = torch.where(scale == 0, torch.ones_like(scale), scale)
    q = torch.clamp(torch.round(w / scale), -127, 127).to(torch.int8)
    return q, scale.to(torch.float32)


def ct_quant_config():
    import compressed_tensors
    from compressed_tensors.quantization import QuantizationArgs, QuantizationConfig, QuantizationScheme
    scheme = QuantizationScheme(
        targets=["Linear"],
        weights=QuantizationArgs(num_bits=8, type="int", symmetric=True, strategy="channel", dynamic=False),
        input_activations=QuantizationArgs(num_bits=8, type="int", symmetric=True, strategy="token", dynamic=True))
    qc = QuantizationConfig(config_groups={"group_0": scheme}, quant_method="compressed-tensors",
                            format="int-quantized", quantization_status="compressed", ignore=["lm_head"])
    d = qc.model_dump()
    d["version"] = compressed_tensors.__version__
    return d


def act_quant_hook_ct(module, inputs):
    # compressed-tensors' own dynamic int8 convention (scale = max|x|/127.5, clamp [-128, 127])
    (x,) = inputs
    s = x.abs().amax(dim=-1, keepdim=True) / 127.5
    s = torch.where(s == 0, torch.ones_like(s), s)
    return (torch.round(torch.clamp(x / s, -128, 127)) * s,)


def act_quant_hook(module, inputs):
    (x,) = inputs
    s = x.abs().amax(dim=-1, keepdim=True) / 127.0
    s = torch.where(s == 0, torch.ones_like(s), s)
    return (torch.clamp(torch.round(x / s), -127, 127) * s,)


# ----------------------------------------------------------------------------------------
# main per-case work
# ----------------------------------------------------------------------------------------

def copy_tok_files(src: Path, dst: Path):
    for name in ("tokenizer.json", "tokenizer_config.json", "special_tokens_map.json", "generation_config.json"):
        if (src / name).exists():
            shutil.copyfile(src / name, dst / name)


def run_case(name: str, c: dict, seed: int, tokdir: Path, outroot: Path) -> dict:
    from transformers import AutoTokenizer
    cdir = outroot / name
    if cdir.exists():
        shutil.rmtree(cdir)
    cdir.mkdir(parents=True)
    kw = c["kw"]
    info: dict = {"hf_class": c["cls"], "features": c["features"], "seed": seed,
                  "gguf_notes": GGUF_NOTES.get(name, []), "notes": []}

    # --- f32 checkpoint -------------------------------------------------------------
    cfg = make_config(c, kw)
    torch.manual_seed(seed)
    model = getattr(transformers, c["cls"])(cfg).to(torch.float32).eval()
    init_weights(model, seed, c["init"])
    info["model_type"] = cfg.model_type
    info["config"] = {k: v for k, v in kw.items()}
    f32dir = cdir / "f32"
    shard = "200KB" if name == "qwen2" else "1GB"
    model.save_pretrained(f32dir, max_shard_size=shard)
    tok = AutoTokenizer.from_pretrained(tokdir)
    tok.save_pretrained(f32dir)
    if name == "qwen2":
        shards = sorted(p.name for p in f32dir.glob("model-*.safetensors"))
        assert len(shards) >= 2 and (f32dir / "model.safetensors.index.json").exists(), shards
    sd = load_dir_sd(f32dir)  # exactly what is on disk (tied lm_head omitted)
    tied = "lm_head.weight" not in sd
    info["tied_embeddings"] = tied

    # --- bf16 checkpoint ------------------------------------------------------------
    bf16dir = cdir / "bf16"
    copy.deepcopy(model).to(torch.bfloat16).save_pretrained(bf16dir)
    tok.save_pretrained(bf16dir)
    sd_bf16 = load_dir_sd(bf16dir)
    assert set(sd_bf16) == set(sd)
    for k in sd:
        assert torch.equal(sd_bf16[k], sd[k].to(torch.bfloat16)), k

    # --- i8 (w8a8 compressed-tensors) checkpoint ---------------------------------------
    i8dir = cdir / "i8"
    i8dir.mkdir()
    qnames = quant_linear_names(model)
    sd_i8 = {}
    sd_i8_deq = dict(sd)
    for k, v in sd.items():
        mod = k.rsplit(".", 1)[0]
        if mod in qnames and k.endswith(".weight"):
            q, s = int8_channel(v)
            sd_i8[k] = q.contiguous()
            sd_i8[mod + ".weight_scale"] = s.contiguous()
            sd_i8_deq[k] = (q.to(torch.float64) * s.to(torch.float64))
        else:
            sd_i8[k] = v.contiguous()
    save_file(dict(sorted(sd_i8.items())), str(i8dir / "model.safetensors"), metadata={"format": "pt"})
    i8cfg = json.loads((f32dir / "config.json").read_text())
    i8cfg["quantization_config"] = ct_quant_config()
    (i8dir / "config.json").write_text(json.dumps(i8cfg, indent=2, sort_keys=True) + "\n")
    copy_tok_files(f32dir, i8dir)
    info["i8"] = {"quantized_linears": qnames,
                  "weight_scheme": "int8 symmetric per-output-channel: scale=max|row|/127 (f32 [out,1]), "
                                   "q=clamp(round_half_even(w/scale),-127,127)",
                  "activation_scheme": "dynamic per-token: s=max|x|/127, xq=clamp(round_half_even(x/s),-127,127), "
                                       "y=(xq*s) @ (q*scale)^T + bias",
                  "note": "compressed-tensors' own int8 observer would use max/127.5 and range [-128,127]; "
                          "this fixture follows the vLLM-style /127 symmetric convention above. No weight_zero_point "
                          "is stored (symmetric)."}

    # --- GGUF ------------------------------------------------------------------------
    gg = {}
    arch = None
    try:
        for ot in ("f32", "q8_0"):
            p = cdir / f"model-{ot}.gguf"
            # general.name must not contain a family name: llama.cpp's vocab loader applies per-model
            # token-attribute hacks keyed on general.name (e.g. "phi3" requires <unk>/<|endoftext|>).
            arch = convert_gguf(f32dir, p, ot, model_name="torchless-arch-fixture")
            _, kvs, tens = read_gguf(p)
            gg[ot] = {"file": p.name, "bytes": p.stat().st_size, "kv": kvs,
                      "tensors": [f"{t['name']} {t['type']} {t['shape']}" for t in tens]}
        assert [x.split()[0] for x in gg["f32"]["tensors"]] == [x.split()[0] for x in gg["q8_0"]["tensors"]]
        del gg["f32"]["tensors"]  # same names/shapes as q8_0, all F32
        gg["tensor_list_format"] = "name GGML_TYPE [ne0, ne1] (ggml order: ne0 = HF in-dim)"
        info["gguf_arch"] = arch
    except Exception as e:  # record and continue with safetensors only
        import traceback
        traceback.print_exc()
        info["gguf_arch"] = None
        info["gguf_error"] = f"{type(e).__name__}: {e}"
        for p in cdir.glob("*.gguf"):
            p.unlink()
        gg = {}

    # --- references -------------------------------------------------------------------
    refs = {}
    ref64 = forward_f64(c, kw, sd)
    scale = float(np.max(np.abs(ref64)))
    save_npy(cdir / "logits-f64.npy", ref64)
    refs["logits-f64.npy"] = {"what": "float64 forward of f32/ weights"}

    # float32-island effect + plain f32 HF forward (noise floors, for choosing tolerances)
    hf64 = forward_f64(c, kw, sd, f64=False)
    hf32 = forward_f64(c, kw, sd, dtype=torch.float32)
    info["precision"] = {
        "hf_float64_with_f32_islands_vs_true_f64": rel(hf64, ref64, scale),
        "hf_float32_eager_vs_true_f64": rel(hf32, ref64, scale),
    }

    sd_bf = {k: v.to(torch.bfloat16).to(torch.float64) for k, v in sd.items()}
    r = forward_f64(c, kw, sd_bf)
    save_npy(cdir / "logits-bf16ref.npy", r)
    refs["logits-bf16ref.npy"] = {"what": "float64 forward with every weight rounded to bf16 (== bf16/ values)",
                                  "rel_diff_vs_f64": rel(r, ref64, scale)}

    # i8 emulation
    def i8_mod(m, _kw):
        for n in qnames:
            m.get_submodule(n).register_forward_pre_hook(act_quant_hook)
    r = forward_f64(c, kw, sd_i8_deq, mod=i8_mod)
    save_npy(cdir / "logits-i8ref.npy", r)
    refs["logits-i8ref.npy"] = {"what": "float64 w8a8 emulation (dequantized int8 weights + per-token int8 "
                                        "activation fake-quant on the quantized Linears; torch.round = half-to-even)",
                                "rel_diff_vs_f64": rel(r, ref64, scale)}
    i8_weight_only = forward_f64(c, kw, sd_i8_deq)
    info["i8"]["weight_only_rel_diff_vs_f64"] = rel(i8_weight_only, ref64, scale)
    def i8_mod_ct(m, _kw):
        for n in qnames:
            m.get_submodule(n).register_forward_pre_hook(act_quant_hook_ct)
    i8_ct32 = forward_f64(c, kw, sd_i8_deq, mod=i8_mod_ct, dtype=torch.float32)
    info["i8"]["transformers_load"] = try_load_i8(i8dir, r, i8_weight_only, i8_ct32, scale)

    # q8_0 emulation
    sd_q8 = None
    if gg:
        sd_q8, qinfo = q8_state_dict(cdir, sd, arch, kw, gg)
        info["q8_0"] = qinfo
        r = forward_f64(c, kw, sd_q8)
        save_npy(cdir / "logits-q8_0ref.npy", r)
        refs["logits-q8_0ref.npy"] = {
            "what": "float64 forward with exactly the tensors that are Q8_0 in model-q8_0.gguf replaced by "
                    "gguf.quants Q8_0 quantize->dequantize along the HF `in` dim (blocks of 32 per row). Exact: "
                    "the converter only permutes rows (Q/K rope permutation), so row-wise block quantization "
                    "commutes; verified bit-exact against the dequantized GGUF tensors vs q/dq of the f32 GGUF tensors.",
            "rel_diff_vs_f64": rel(r, ref64, scale)}

    # converter drops: mistral sliding window
    if name == "mistral":
        kw_nw = _cfgset(sliding_window=None)(kw)
        r = forward_f64(c, kw_nw, sd)
        save_npy(cdir / "logits-f64-nowindow.npy", r)
        refs["logits-f64-nowindow.npy"] = {
            "what": "float64 forward with sliding_window=None; llama.cpp's converter writes no sliding window for "
                    "MistralForCausalLM (LlamaModel path) so model-f32.gguf encodes THIS model",
            "rel_diff_vs_f64": rel(r, ref64, scale)}
        if sd_q8 is not None:
            r = forward_f64(c, kw_nw, sd_q8)
            save_npy(cdir / "logits-q8_0ref-nowindow.npy", r)
            refs["logits-q8_0ref-nowindow.npy"] = {
                "what": "as logits-q8_0ref.npy but sliding_window=None (what model-q8_0.gguf encodes)",
                "rel_diff_vs_f64": rel(r, ref64, scale)}

    # --- feature effects --------------------------------------------------------------
    effects, effect_notes = {}, {}
    for feat, (kind, spec) in c["ablations"].items():
        if kind == "null":
            effects[feat] = None
            effect_notes[feat] = spec
            continue
        effect_notes[feat] = ABLATION_DESC[feat]
        if kind == "cfg":
            r = forward_f64(c, spec(kw), sd)
        elif kind == "sd":
            r = forward_f64(c, kw, spec(sd, kw))
        elif kind == "mod":
            r = forward_f64(c, kw, sd, mod=spec)
        else:
            raise ValueError(kind)
        effects[feat] = rel(r, ref64, scale)
    info["feature_effects"] = effects
    info["feature_effect_notes"] = effect_notes
    weak = {k: v for k, v in effects.items() if v is not None and v < 1e-2}
    if weak:
        info["notes"].append(f"effects below 1e-2*scale: {weak}")

    # --- ref.json ----------------------------------------------------------------------
    srt = np.sort(ref64, axis=-1)
    margins = srt[:, -1] - srt[:, -2]
    ref = {"ids": IDS, "T": T, "n_vocab": int(ref64.shape[1]), "scale": scale,
           "top2_margin_min": float(margins.min()),
           "argmax": [int(x) for x in ref64.argmax(-1)],
           "files": refs,
           "npy_format": "little-endian float32, shape [T, n_vocab], values computed in float64"}
    for fn in refs:
        a = np.load(cdir / fn)
        refs[fn]["max_abs"] = float(np.max(np.abs(a)))
        refs[fn]["top2_margin_min"] = float(np.min(np.diff(np.sort(a.astype(np.float64), -1)[:, -2:], axis=-1)))
    (cdir / "ref.json").write_text(json.dumps(ref, indent=2, sort_keys=True) + "\n")
    info["scale"] = scale
    info["top2_margin_min"] = float(margins.min())
    info["references"] = refs
    info["gguf"] = gg
    return info


def q8_state_dict(cdir: Path, sd: dict, arch: str, kw: dict, gg: dict):
    r32 = gguf.GGUFReader(cdir / "model-f32.gguf")
    r8 = gguf.GGUFReader(cdir / "model-q8_0.gguf")
    t32 = {t.name: t for t in r32.tensors}
    t8 = {t.name: t for t in r8.tensors}
    assert set(t32) == set(t8)
    q8names = sorted(n for n, t in t8.items() if t.tensor_type == gguf.GGMLQuantizationType.Q8_0)
    # 1) the converter's Q8_0 data == gguf-py q/dq of its own f32 tensor (bit-exact)
    for n in q8names:
        deq = gguf.quants.dequantize(t8[n].data, t8[n].tensor_type)
        f32 = np.asarray(t32[n].data, dtype=np.float32).reshape(deq.shape)
        ref = gguf.quants.dequantize(gguf.quants.quantize(f32, gguf.GGMLQuantizationType.Q8_0),
                                     gguf.GGMLQuantizationType.Q8_0)
        assert np.array_equal(deq, ref), n
    # 2) map HF names -> GGUF names and q/dq exactly those HF tensors
    arch_enum = next(k for k, v in gguf.MODEL_ARCH_NAMES.items() if v == arch)
    tmap = gguf.get_tensor_name_map(arch_enum, kw["num_hidden_layers"])
    out, mapping, hit = {}, {}, set()
    for k, v in sd.items():
        gname = tmap.get_name(k, try_suffixes=(".weight", ".bias"))
        mapping[k] = [gname, gguf_transform(v, t32.get(gname), kw)]
        if gname in q8names:
            out[k] = qdq_q8_0(v).to(torch.float64)
            hit.add(gname)
            # the GGUF tensor must be a row permutation of the HF one: compare sorted rows
            a = np.sort(out[k].numpy().astype(np.float32).reshape(v.shape[0], -1), axis=0)
            b = gguf.quants.dequantize(t8[gname].data, t8[gname].tensor_type).reshape(v.shape[0], -1)
            assert np.array_equal(a, np.sort(b, axis=0)), k
        else:
            out[k] = v
    assert hit == set(q8names), (set(q8names) - hit)
    info = {"q8_0_tensors": q8names,
            "hf_to_gguf": mapping,
            "hf_to_gguf_format": "HF tensor -> [GGUF tensor, how the f32 GGUF data relates to the HF tensor "
                                 "(identical | plus_one | llama_rope_permute(n_head=N) | dropped)]",
            "gguf_only_tensors": sorted(set(t8) - {g for g, _ in mapping.values()})}
    return out, info


def llama_permute(w: np.ndarray, n_head: int) -> np.ndarray:
    # == conversion/llama.py LlamaModel.permute (HF rotate_half layout -> llama.cpp interleaved pairs)
    return (w.reshape(n_head, 2, w.shape[0] // n_head // 2, *w.shape[1:])
            .swapaxes(1, 2).reshape(w.shape))


def gguf_transform(hf: torch.Tensor, t, kw) -> str:
    if t is None:
        return "dropped"
    a = hf.to(torch.float32).numpy()
    b = np.asarray(t.data, dtype=np.float32).reshape(a.shape)
    if np.array_equal(a, b):
        return "identical"
    if np.array_equal(a + np.float32(1.0), b):
        return "plus_one"
    for nh in sorted({kw["num_attention_heads"], kw.get("num_key_value_heads") or kw["num_attention_heads"]}):
        if np.array_equal(llama_permute(a, nh), b):
            return f"llama_rope_permute(n_head={nh})"
    return "other"


def try_load_i8(i8dir: Path, emu_w8a8, emu_w8, emu_ct32, scale):
    try:
        from transformers import AutoModelForCausalLM
        m = AutoModelForCausalLM.from_pretrained(i8dir, dtype=torch.float32, attn_implementation="eager").eval()
        with torch.no_grad():
            lg = m(input_ids=torch.tensor([IDS]), use_cache=False).logits[0].double().numpy()
        return {"loaded": True,
                "rel_diff_vs_w8a8_emulation": rel(lg, emu_w8a8, scale),
                "rel_diff_vs_weight_only_emulation": rel(lg, emu_w8, scale),
                "rel_diff_vs_ct_convention_emulation_f32": rel(lg, emu_ct32, scale),
                "note": "transformers 5.2 + compressed-tensors 0.12.2 load i8/ (CompressedLinear; weights decompress "
                        "to q*scale exactly). Its CPU forward fake-quantizes activations with ITS convention "
                        "(scale=max|x|/127.5 in f32, clamp [-128,127]) which differs from this fixture's /127 "
                        "convention; rel_diff_vs_ct_convention_emulation_f32 is our emulation with that convention "
                        "in float32 (should be ~1e-6: confirms the checkpoint is read as intended)."}
    except Exception as e:
        return {"loaded": False, "error": f"{type(e).__name__}: {str(e)[:300]}"}


# ----------------------------------------------------------------------------------------

def file_list(cdir: Path):
    out = []
    for p in sorted(cdir.rglob("*")):
        if p.is_file():
            out.append({"path": str(p.relative_to(cdir)), "bytes": p.stat().st_size})
    return out


def llamacpp_check(outroot: Path, names):
    import subprocess
    binp = ARGS.llama_logits.resolve()
    env = dict(os.environ, LD_LIBRARY_PATH=str(binp.parent) + ":" + os.environ.get("LD_LIBRARY_PATH", ""))
    path = outroot / "llamacpp-check.json"
    res = json.loads(path.read_text()) if path.exists() else {}
    res["about"] = ("llama.cpp (tools/llama-logits: one llama_decode of the ids, default context params: F16 KV "
                    "cache, flash-attn auto, n_ctx 256) on each GGUF; values = max|llama.cpp - ref| / scale. "
                    "llama.cpp's Q8_0 CPU matmul also quantizes activations to Q8_0, so q8_0 vs logits-q8_0ref "
                    "is not tight.")
    res.setdefault("cases", {})
    with tempfile.TemporaryDirectory() as td:
        for name in names:
            cdir = outroot / name
            if not (cdir / "model-f32.gguf").exists():
                continue
            f64 = np.load(cdir / "logits-f64.npy").astype(np.float64)
            sc = float(np.max(np.abs(f64)))
            res["cases"][name] = {}
            for ot in ("f32", "q8_0"):
                out = Path(td) / f"{name}-{ot}.npy"
                cp = subprocess.run([str(binp), "-m", str(cdir / f"model-{ot}.gguf"), "--ids", ",".join(map(str, IDS)),
                                     "--out", str(out), "--threads", "2"], env=env, capture_output=True, text=True)
                if cp.returncode != 0:
                    res["cases"][name][ot] = {"error": cp.stderr[-500:]}
                    continue
                ll = np.load(out).astype(np.float64)
                res["cases"][name][ot] = {p.name: rel(ll, np.load(p).astype(np.float64), sc)
                                          for p in sorted(cdir.glob("logits-*.npy"))}
    path.write_text(json.dumps(res, indent=1) + "\n")


def main():
    global IDS
    outroot: Path = ARGS.out
    outroot.mkdir(parents=True, exist_ok=True)
    names = ARGS.cases or list(CASES)
    with tempfile.TemporaryDirectory() as td:
        tokdir = build_tokenizer(Path(td))
        from transformers import AutoTokenizer
        tok = AutoTokenizer.from_pretrained(tokdir)
        V = len(tok)
        assert V == VOCAB_TARGET
        rng = np.random.RandomState(IDS_SEED)
        IDS = [int(x) for x in rng.randint(3, V, size=T)]  # never the specials 0..2

        manifest = {
            "generator": "tools/make-arch-fixtures.py",
            "regenerate": "python3 tools/make-arch-fixtures.py --llama-cpp <llama.cpp tree>",
            "versions": {**PINNED, "torch_runtime": torch.__version__,
                         "transformers_runtime": transformers.__version__},
            "T": T, "ids": IDS, "n_vocab": V,
            "conventions": {
                "logits_npy": "little-endian float32 [T, n_vocab], computed in float64 (true f64: transformers' "
                              "float32 islands aliased to float64)",
                "rounding": "torch.round / numpy round = round-half-to-even (i8 emulation); Q8_0 uses gguf-py "
                            "(np_roundf: round-half-away-from-zero, scale stored as f16)",
                "sliding_window": "HF semantics: query i sees key j iff 0 <= i-j < sliding_window (same as llama.cpp "
                                  "LLAMA_SWA_TYPE_STANDARD with n_swa = sliding_window)",
                "feature_effects": "max|logits(feature ablated) - logits-f64| / scale, scale = max|logits-f64|; "
                                   "null = structural feature, no meaningful off-switch",
                "gemma_norms": "HF stores Gemma RMSNorm weight w and computes x*(1+w); the GGUF stores 1+w",
                "gguf_tensor_shape": "ggml order (ne0 = innermost = HF `in` dim first)",
            },
            "tokenizer": {"kind": "byte-level BPE (tokenizers ByteLevel pre-tokenizer, GPT-2 regex)",
                          "size": V, "specials": {"<s>": 0, "</s>": 1, "<pad>": 2},
                          "adds_bos": False, "training_text": TOKENIZER_TEXT},
            "converter_quirks": CONVERTER_QUIRKS,
            "cases": {},
        }
        for i, name in enumerate(names):
            print(f"=== {name}", flush=True)
            info = run_case(name, CASES[name], seed=1000 + list(CASES).index(name), tokdir=tokdir, outroot=outroot)
            info["files"] = file_list(outroot / name)
            manifest["cases"][name] = info
            print(json.dumps({"scale": info["scale"], "effects": info["feature_effects"],
                              "gguf_arch": info.get("gguf_arch")}, indent=None), flush=True)

        probes = [{"text": s, "ids": tok.encode(s)} for s in TOKENIZER_PROBES]
        # same tokenizer in every case; check that the copies agree
        for name in names:
            t2 = AutoTokenizer.from_pretrained(outroot / name / "f32")
            assert [t2.encode(p["text"]) for p in probes] == [p["ids"] for p in probes]
        (outroot / "tokenizer-ids.json").write_text(json.dumps(probes, indent=2, ensure_ascii=False) + "\n")

    if ARGS.cases:  # partial run: merge into existing manifest
        mp = outroot / "manifest.json"
        if mp.exists():
            old = json.loads(mp.read_text())
            old["cases"].update(manifest["cases"])
            manifest["cases"] = {k: old["cases"][k] for k in CASES if k in old["cases"]}
    (outroot / "manifest.json").write_text(json.dumps(manifest, indent=1, sort_keys=False) + "\n")
    if ARGS.llama_logits:
        llamacpp_check(outroot, names)
    total = sum(p.stat().st_size for p in outroot.rglob("*") if p.is_file())
    print(f"total fixture bytes: {total}")


IDS: list[int] = []

if __name__ == "__main__":
    main()
