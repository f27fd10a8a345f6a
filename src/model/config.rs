//! The resolved model configuration: an architecture row plus the hyper-parameters read from the
//! file's metadata, with every per-layer choice (window, RoPE base) spelled out.

use serde::Serialize;

use super::arch::{self, ArchRow, RopeLayout};
use super::gguf::GgufFile;
use super::rope::{self, RopeScaling};
use crate::error::{Error, Result};
use crate::quant::GgmlType;

/// RoPE parameters of one layer.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct RopeParams {
    /// Frequency base θ (`rope.freq_base` / `rope_theta`, or the windowed layers' own base).
    pub base: f64,
    /// Rotated dimensions per head (`rope.dimension_count`, or head_dim × `partial_rotary_factor`).
    pub n_rot: usize,
    /// How the inverse frequencies are scaled (always none on windowed layers).
    pub scaling: RopeScaling,
}

impl RopeParams {
    /// The `n_rot / 2` inverse frequencies and the factor that multiplies cos and sin for a
    /// forward pass whose last position is `seq_len - 1` (only dynamic NTK and longrope look at
    /// it, as transformers does).
    pub fn table(&self, seq_len: usize) -> (Vec<f64>, f64) {
        rope::inv_freq(self.base, self.n_rot, &self.scaling, seq_len)
    }
}

/// The per-layer choices of a model (they differ between layers in sliding-window models).
#[derive(Clone, Debug, Serialize)]
pub struct LayerConfig {
    /// Attend only to the last `window` positions (sliding-window layers).
    pub window: Option<usize>,
    /// RoPE parameters for Q and K of this layer.
    pub rope: RopeParams,
}

/// Which kind of files a model was loaded from; a few conventions differ between them.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
pub enum SourceFormat {
    /// One GGUF file, as llama.cpp's converter writes it.
    Gguf,
    /// A Hugging Face directory: `config.json` and safetensors.
    Safetensors,
}

/// Everything the forward pass needs to know about a model's shape, resolved from GGUF metadata
/// by [`ModelConfig::from_gguf`] or from a Hugging Face `config.json` by
/// [`ModelConfig::from_hf`]. Sizes are range-checked (non-zero and below fixed caps) so a
/// hostile file cannot request absurd buffers.
#[derive(Clone, Debug, Serialize)]
pub struct ModelConfig {
    /// The architecture row.
    pub arch: &'static ArchRow,
    /// Where the config came from.
    pub format: SourceFormat,
    /// `general.name` / `_name_or_path` (empty when absent).
    pub name: String,
    /// Transformer blocks.
    pub n_layer: usize,
    /// Residual stream width.
    pub dim: usize,
    /// FFN hidden width.
    pub n_ff: usize,
    /// Query heads.
    pub n_head: usize,
    /// K/V heads (default `n_head`); divides `n_head`.
    pub n_head_kv: usize,
    /// Per-head size of Q and K (`attention.key_length` / `head_dim`; dim / n_head when absent).
    pub head_dim: usize,
    /// Per-head size of V (`head_dim` unless the GGUF says otherwise).
    pub head_dim_v: usize,
    /// Vocabulary size.
    pub n_vocab: usize,
    /// Context length the model was trained with (default 4096).
    pub n_ctx_train: usize,
    /// Epsilon of every norm (default 1e-5).
    pub norm_eps: f32,
    /// Added to every norm weight before use: 1.0 for Gemma safetensors (stored as `w - 1`),
    /// else 0.0.
    pub norm_w_offset: f32,
    /// RoPE pairing of Q/K as stored (GGUF: the row's; safetensors: halves).
    pub rope_layout: RopeLayout,
    /// Factor applied to token embeddings: `sqrt(dim)` for Gemma, else 1.0.
    pub embed_scale: f32,
    /// Factor applied to q·k before the softmax (`1 / sqrt(head_dim)`, or
    /// `query_pre_attn_scalar^-1/2`, or the GGUF's `attention.scale`).
    pub attn_scale: f32,
    /// Gemma 2 attention soft-capping: scores = c * tanh(scores / c).
    pub attn_softcap: Option<f32>,
    /// `final_logit_softcapping` (Gemma 2/3): logits = c * tanh(logits / c).
    pub final_softcap: Option<f32>,
    /// One entry per layer (`n_layer` of them).
    pub layers: Vec<LayerConfig>,
}

/// Upper bounds that keep a hostile file from asking for absurd buffers before any tensor is
/// checked against them.
const MAX_DIM: u64 = 1 << 20;
const MAX_LAYERS: u64 = 4096;
const MAX_HEADS: u64 = 1 << 14;
const MAX_CTX: u64 = 1 << 24;

/// The hyper-parameters both formats provide, before per-layer resolution.
struct Hparams {
    arch: &'static ArchRow,
    format: SourceFormat,
    name: String,
    n_layer: usize,
    dim: usize,
    n_ff: usize,
    n_head: usize,
    n_head_kv: usize,
    head_dim: usize,
    head_dim_v: usize,
    n_rot: usize,
    n_vocab: usize,
    n_ctx_train: usize,
    norm_eps: f32,
    rope_base: f64,
    rope_scaling: RopeScaling,
    /// Base for windowed layers.
    rope_base_swa: f64,
    window: Option<usize>,
    /// Which layers are windowed (only read when `window` is set).
    windowed: Vec<bool>,
    attn_scale: Option<f32>,
    attn_softcap: Option<f32>,
    final_softcap: Option<f32>,
}

impl Hparams {
    fn build(self) -> Result<ModelConfig> {
        let key = |k: &str| match self.format {
            SourceFormat::Gguf => format!("{}.{k}", self.arch.name),
            SourceFormat::Safetensors => format!("config.json {k}"),
        };
        if !self.n_head.is_multiple_of(self.n_head_kv) {
            return Err(Error::BadKey {
                key: key("head_count_kv"),
                why: format!(
                    "{} query heads are not a multiple of {} kv heads",
                    self.n_head, self.n_head_kv
                ),
            });
        }
        if self.n_rot > self.head_dim || !self.n_rot.is_multiple_of(2) || self.n_rot == 0 {
            return Err(Error::BadKey {
                key: key("rope dimension count"),
                why: format!(
                    "{} must be even, non-zero and at most head_dim {}",
                    self.n_rot, self.head_dim
                ),
            });
        }
        for (what, v) in [
            ("rope base", self.rope_base),
            ("sliding-window rope base", self.rope_base_swa),
        ] {
            if !(v.is_finite() && v > 1.0) {
                return Err(Error::BadKey {
                    key: key(what),
                    why: format!("{v} must be a finite number above 1"),
                });
            }
        }
        // A bad scaling config (wrong factor-list length, non-positive factor) fails here, at
        // load time, rather than at the first forward pass.
        let probe = RopeParams {
            base: self.rope_base,
            n_rot: self.n_rot,
            scaling: self.rope_scaling.clone(),
        };
        rope::validate(&probe.scaling, self.n_rot).map_err(|why| Error::BadKey {
            key: key("rope scaling"),
            why,
        })?;
        for (what, v) in [
            ("norm epsilon", Some(self.norm_eps)),
            ("attention scale", self.attn_scale),
            ("attention soft-cap", self.attn_softcap),
            ("final soft-cap", self.final_softcap),
        ] {
            if let Some(v) = v {
                if !(v.is_finite() && v > 0.0) {
                    return Err(Error::BadKey {
                        key: key(what),
                        why: format!("{v} must be a positive finite number"),
                    });
                }
            }
        }
        let layers = (0..self.n_layer)
            .map(|il| {
                let windowed = self.window.is_some() && self.windowed[il];
                LayerConfig {
                    window: if windowed { self.window } else { None },
                    rope: if windowed {
                        // Windowed layers use the plain base (Gemma 3's local base), unscaled.
                        RopeParams {
                            base: self.rope_base_swa,
                            n_rot: self.n_rot,
                            scaling: RopeScaling::None,
                        }
                    } else {
                        probe.clone()
                    },
                }
            })
            .collect();
        let arch = self.arch;
        Ok(ModelConfig {
            arch,
            format: self.format,
            name: self.name,
            n_layer: self.n_layer,
            dim: self.dim,
            n_ff: self.n_ff,
            n_head: self.n_head,
            n_head_kv: self.n_head_kv,
            head_dim: self.head_dim,
            head_dim_v: self.head_dim_v,
            n_vocab: self.n_vocab,
            n_ctx_train: self.n_ctx_train,
            norm_eps: self.norm_eps,
            norm_w_offset: match self.format {
                SourceFormat::Safetensors if arch.hf_norm_plus_one => 1.0,
                _ => 0.0,
            },
            rope_layout: match self.format {
                SourceFormat::Gguf => arch.rope_layout,
                SourceFormat::Safetensors => RopeLayout::Halves,
            },
            embed_scale: if arch.embed_scale_sqrt_dim {
                (self.dim as f32).sqrt()
            } else {
                1.0
            },
            attn_scale: self
                .attn_scale
                .unwrap_or(1.0 / (self.head_dim as f32).sqrt()),
            attn_softcap: self.attn_softcap,
            final_softcap: self.final_softcap,
            layers,
        })
    }
}

/// llama.cpp's layer rule: with pattern N, layer `il` is windowed unless `il % N == N - 1`
/// (pattern 0: every layer windowed; no pattern: every layer windowed).
fn pattern_windowed(n_layer: usize, pattern: Option<u32>) -> Vec<bool> {
    (0..n_layer)
        .map(|il| match pattern {
            Some(0) | None => true,
            Some(p) => (il as u32 % p) < p - 1,
        })
        .collect()
}

impl ModelConfig {
    /// Resolve the config from the metadata (and RoPE factor tensors) of `f`.
    ///
    /// Errors on an unsupported or missing architecture, a missing required key, a value out
    /// of range, `n_head` not a multiple of `n_head_kv`, or an odd / too large
    /// `rope.dimension_count`.
    pub fn from_gguf(f: &GgufFile) -> Result<ModelConfig> {
        let arch_name = f
            .get_str("general.architecture")?
            .ok_or_else(|| Error::MissingKey("general.architecture".into()))?;
        let arch = arch::find(arch_name).ok_or_else(|| Error::UnsupportedArch {
            found: arch_name.to_string(),
            supported: arch::supported_names(),
        })?;
        let key = |k: &str| format!("{arch_name}.{k}");
        let req = |k: &str, max: u64| -> Result<usize> {
            let full = key(k);
            let v = f
                .get_u64(&full)?
                .ok_or_else(|| Error::MissingKey(full.clone()))?;
            check_range(&full, v, max)
        };
        let opt = |k: &str, max: u64| -> Result<Option<usize>> {
            let full = key(k);
            f.get_u64(&full)?
                .map(|v| check_range(&full, v, max))
                .transpose()
        };

        let n_layer = req("block_count", MAX_LAYERS)?;
        let dim = req("embedding_length", MAX_DIM)?;
        let n_head = req("attention.head_count", MAX_HEADS)?;
        let head_dim = match opt("attention.key_length", MAX_DIM)? {
            Some(h) => h,
            None => dim / n_head,
        };
        let n_ctx_train = opt("context_length", MAX_CTX)?.unwrap_or(4096);
        let rope_base = f.get_f32(&key("rope.freq_base"))?.unwrap_or(10_000.0) as f64;
        // 0 means no window (llama.cpp's converter writes 0 for Phi-3 without one).
        let window = match f.get_u64(&key("attention.sliding_window"))? {
            None | Some(0) => None,
            Some(w) => Some(check_range(&key("attention.sliding_window"), w, MAX_CTX)?),
        };
        let pattern = match opt("attention.sliding_window_pattern", MAX_LAYERS)? {
            Some(p) => Some(p as u32),
            None => arch.default_swa_pattern,
        };
        let n_vocab = match f.get_array("tokenizer.ggml.tokens")? {
            Some(t) => t.len(),
            None => opt("vocab_size", MAX_CTX)?
                .ok_or_else(|| Error::MissingKey("tokenizer.ggml.tokens".into()))?,
        };
        Hparams {
            arch,
            format: SourceFormat::Gguf,
            name: f.get_str("general.name")?.unwrap_or("").to_string(),
            n_layer,
            dim,
            n_ff: req("feed_forward_length", MAX_DIM * 8)?,
            n_head,
            n_head_kv: opt("attention.head_count_kv", MAX_HEADS)?.unwrap_or(n_head),
            head_dim,
            head_dim_v: opt("attention.value_length", MAX_DIM)?.unwrap_or(head_dim),
            n_rot: opt("rope.dimension_count", MAX_DIM)?.unwrap_or(head_dim),
            n_vocab,
            n_ctx_train,
            norm_eps: match arch.norm {
                arch::NormKind::Rms => f.get_f32(&key("attention.layer_norm_rms_epsilon"))?,
                arch::NormKind::Layer => f.get_f32(&key("attention.layer_norm_epsilon"))?,
            }
            .unwrap_or(1e-5),
            rope_base,
            rope_scaling: gguf_rope_scaling(f, arch_name, n_ctx_train)?,
            rope_base_swa: f
                .get_f32(&key("rope.freq_base_swa"))?
                .or(arch.default_rope_base_swa)
                .map_or(rope_base, |b| b as f64),
            window,
            windowed: pattern_windowed(n_layer, pattern),
            attn_scale: f.get_f32(&key("attention.scale"))?,
            attn_softcap: f
                .get_f32(&key("attn_logit_softcapping"))?
                .filter(|&c| c > 0.0),
            final_softcap: f
                .get_f32(&key("final_logit_softcapping"))?
                .filter(|&c| c > 0.0),
        }
        .build()
    }

    /// Resolve the config from a Hugging Face `config.json` (already parsed) for the family
    /// `arch`. Reads both the transformers ≥ 5 `rope_parameters` form and the older
    /// `rope_theta` / `rope_scaling` keys.
    pub fn from_hf(cfg: &serde_json::Value, arch: &'static ArchRow) -> Result<ModelConfig> {
        let hf = HfKeys(cfg);
        let n_layer = hf.req("num_hidden_layers", MAX_LAYERS)?;
        let dim = hf.req("hidden_size", MAX_DIM)?;
        let n_head = hf.req("num_attention_heads", MAX_HEADS)?;
        let head_dim = hf.opt("head_dim", MAX_DIM)?.unwrap_or(dim / n_head);
        // head_dim × partial_rotary_factor, wherever the config keeps the factor.
        let n_rot =
            rope::hf_rotary_dim(cfg, Some("full_attention")).map_err(|why| Error::BadKey {
                key: "config.json partial_rotary_factor".into(),
                why,
            })?;
        let (rope_base, rope_scaling) = RopeScaling::from_hf_config(cfg, Some("full_attention"))
            .map_err(|why| Error::BadKey {
                key: "config.json rope parameters".into(),
                why,
            })?;
        // Gemma 3 keeps a separate, unscaled base for its sliding-window layers.
        let rope_base_swa = match hf.f64("rope_local_base_freq")? {
            Some(b) => b,
            None => match RopeScaling::from_hf_config(cfg, Some("sliding_attention")) {
                Ok((b, _)) => b,
                Err(_) => rope_base,
            },
        };
        let window = match hf.opt("sliding_window", MAX_CTX)? {
            Some(w) if cfg.get("use_sliding_window") != Some(&serde_json::Value::Bool(false)) => {
                Some(w)
            }
            _ => None,
        };
        let windowed = match cfg.get("layer_types").and_then(|v| v.as_array()) {
            Some(types) => {
                if types.len() != n_layer {
                    return Err(Error::BadKey {
                        key: "config.json layer_types".into(),
                        why: format!("{} entries for {n_layer} layers", types.len()),
                    });
                }
                types
                    .iter()
                    .map(|t| t.as_str() == Some("sliding_attention"))
                    .collect()
            }
            None => {
                let pattern = match hf.opt("sliding_window_pattern", MAX_LAYERS)? {
                    Some(p) => Some(p as u32),
                    None => arch.default_swa_pattern,
                };
                pattern_windowed(n_layer, pattern)
            }
        };
        let n_ctx_train = hf.opt("max_position_embeddings", MAX_CTX)?.unwrap_or(4096);
        let eps_key = match arch.norm {
            arch::NormKind::Rms => "rms_norm_eps",
            arch::NormKind::Layer => "layer_norm_eps",
        };
        Hparams {
            arch,
            format: SourceFormat::Safetensors,
            name: cfg
                .get("_name_or_path")
                .and_then(|v| v.as_str())
                .unwrap_or("")
                .to_string(),
            n_layer,
            dim,
            n_ff: hf.req("intermediate_size", MAX_DIM * 8)?,
            n_head,
            n_head_kv: hf.opt("num_key_value_heads", MAX_HEADS)?.unwrap_or(n_head),
            head_dim,
            head_dim_v: head_dim,
            n_rot,
            n_vocab: hf.req("vocab_size", MAX_CTX)?,
            n_ctx_train,
            norm_eps: hf.f64(eps_key)?.unwrap_or(1e-5) as f32,
            rope_base,
            rope_scaling,
            rope_base_swa,
            window,
            windowed,
            attn_scale: hf
                .f64("query_pre_attn_scalar")?
                .map(|s| (1.0 / s.sqrt()) as f32),
            attn_softcap: hf.f64("attn_logit_softcapping")?.map(|c| c as f32),
            final_softcap: hf.f64("final_logit_softcapping")?.map(|c| c as f32),
        }
        .build()
    }

    /// Width of the Q projection output (`n_head * head_dim`).
    pub fn q_dim(&self) -> usize {
        self.n_head * self.head_dim
    }
    /// Width of the K projection output (`n_head_kv * head_dim`).
    pub fn kv_dim(&self) -> usize {
        self.n_head_kv * self.head_dim
    }
    /// Width of the V projection output (`n_head_kv * head_dim_v`).
    pub fn v_dim(&self) -> usize {
        self.n_head_kv * self.head_dim_v
    }
}

fn check_range(key: &str, v: u64, max: u64) -> Result<usize> {
    if v == 0 || v > max {
        return Err(Error::BadKey {
            key: key.to_string(),
            why: format!("{v} is outside 1..={max}"),
        });
    }
    Ok(v as usize)
}

/// Typed access to `config.json` values; `null` counts as absent (transformers writes
/// `"sliding_window": null`).
struct HfKeys<'a>(&'a serde_json::Value);

impl HfKeys<'_> {
    fn get(&self, k: &str) -> Option<&serde_json::Value> {
        self.0.get(k).filter(|v| !v.is_null())
    }
    fn opt(&self, k: &str, max: u64) -> Result<Option<usize>> {
        let full = format!("config.json {k}");
        match self.get(k) {
            None => Ok(None),
            Some(v) => {
                let n = v.as_u64().ok_or_else(|| Error::BadKey {
                    key: full.clone(),
                    why: format!("{v} is not a non-negative integer"),
                })?;
                check_range(&full, n, max).map(Some)
            }
        }
    }
    fn req(&self, k: &str, max: u64) -> Result<usize> {
        self.opt(k, max)?
            .ok_or_else(|| Error::MissingKey(format!("config.json {k}")))
    }
    fn f64(&self, k: &str) -> Result<Option<f64>> {
        match self.get(k) {
            None => Ok(None),
            Some(v) => v.as_f64().map(Some).ok_or_else(|| Error::BadKey {
                key: format!("config.json {k}"),
                why: format!("{v} is not a number"),
            }),
        }
    }
}

/// RoPE scaling as llama.cpp's converter stores it: `rope.scaling.*` keys, Llama 3's per-dim
/// divisors in a `rope_freqs.weight` tensor, and longrope's factor tensors.
fn gguf_rope_scaling(f: &GgufFile, arch: &str, n_ctx_train: usize) -> Result<RopeScaling> {
    let key = |k: &str| format!("{arch}.rope.scaling.{k}");
    let factor = f.get_f32(&key("factor"))?.map(f64::from);
    let original = f
        .get_u64(&key("original_context_length"))?
        .map(|v| check_range(&key("original_context_length"), v, MAX_CTX))
        .transpose()?;
    let attn_factor = f.get_f32(&key("attn_factor"))?.map(f64::from);
    if let Some(freqs) = f32_tensor(f, "rope_freqs.weight")? {
        return Ok(RopeScaling::Factors { factors: freqs });
    }
    if let (Some(long), Some(short)) = (
        f32_tensor(f, "rope_factors_long.weight")?,
        f32_tensor(f, "rope_factors_short.weight")?,
    ) {
        return Ok(RopeScaling::LongRope {
            short_factor: short,
            long_factor: long,
            original_max_pos: original.unwrap_or(n_ctx_train),
            max_pos: n_ctx_train,
            attention_factor: attn_factor,
        });
    }
    let ty = f.get_str(&key("type"))?.unwrap_or("none");
    let need_factor = || {
        factor.filter(|v| *v > 0.0).ok_or_else(|| Error::BadKey {
            key: key("factor"),
            why: format!("rope scaling type '{ty}' needs a positive factor"),
        })
    };
    Ok(match ty {
        "none" | "" => RopeScaling::None,
        "linear" => RopeScaling::Linear {
            factor: need_factor()?,
        },
        "yarn" => RopeScaling::Yarn {
            factor: need_factor()?,
            original_max_pos: original.unwrap_or(n_ctx_train),
            beta_fast: f.get_f32(&key("yarn_beta_fast"))?.map_or(32.0, f64::from),
            beta_slow: f.get_f32(&key("yarn_beta_slow"))?.map_or(1.0, f64::from),
            attention_factor: attn_factor,
            mscale: None,
            mscale_all_dim: None,
            truncate: true,
        },
        other => {
            return Err(Error::BadKey {
                key: key("type"),
                why: format!("unknown rope scaling type '{other}' (known: none, linear, yarn)"),
            })
        }
    })
}

/// A small F32 vector tensor read into f64 (RoPE factors: configuration, not weights).
fn f32_tensor(f: &GgufFile, name: &str) -> Result<Option<Vec<f64>>> {
    let Some(t) = f.tensor(name) else {
        return Ok(None);
    };
    if t.ty != GgmlType::F32 || t.dims.len() != 1 || t.dims[0] > MAX_DIM {
        return Err(Error::TensorShape {
            name: name.to_string(),
            expected: vec![t.dims.first().copied().unwrap_or(0).min(MAX_DIM)],
            found: t.dims.clone(),
        });
    }
    Ok(Some(
        f.tensor_data(t)
            .chunks_exact(4)
            .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]) as f64)
            .collect(),
    ))
}
