//! The resolved model configuration: an architecture row plus the hyper-parameters read from the
//! file's metadata, with every per-layer choice (window, RoPE base) spelled out.

use serde::Serialize;

use super::arch::{self, ArchRow, AttnScale};
use super::gguf::GgufFile;
use crate::error::{Error, Result};

/// RoPE parameters of one layer.
#[derive(Clone, Copy, Debug, PartialEq, Serialize)]
pub struct RopeParams {
    /// Frequency base θ (`rope.freq_base`, or `rope.freq_base_swa` on windowed layers).
    pub base: f32,
    /// Rotated dimensions per head (`rope.dimension_count`, at most head_dim).
    pub n_rot: usize,
    /// Linear position scale, `1 / rope.scaling.factor` (1.0 = none; always 1.0 on windowed layers).
    pub freq_scale: f32,
}

/// The per-layer choices of a model (they differ between layers in sliding-window models).
#[derive(Clone, Debug, Serialize)]
pub struct LayerConfig {
    /// Attend only to the last `window` positions (sliding-window layers).
    pub window: Option<usize>,
    /// RoPE parameters for Q and K of this layer.
    pub rope: RopeParams,
}

/// Everything the forward pass needs to know about a model's shape, resolved from GGUF metadata
/// by [`ModelConfig::from_gguf`]. Keys are `{arch}.*`; sizes are range-checked (non-zero and below
/// fixed caps) so a hostile file cannot request absurd buffers.
#[derive(Clone, Debug, Serialize)]
pub struct ModelConfig {
    /// The architecture row for `general.architecture`.
    pub arch: &'static ArchRow,
    /// `general.name` (empty when absent).
    pub name: String,
    /// Transformer blocks (`block_count`).
    pub n_layer: usize,
    /// Residual stream width (`embedding_length`).
    pub dim: usize,
    /// FFN hidden width (`feed_forward_length`).
    pub n_ff: usize,
    /// Query heads (`attention.head_count`).
    pub n_head: usize,
    /// K/V heads (`attention.head_count_kv`, default `n_head`); divides `n_head`.
    pub n_head_kv: usize,
    /// Per-head size of Q and K (`attention.key_length`; dim / n_head only when absent).
    pub head_dim: usize,
    /// Per-head size of V (`attention.value_length`; `head_dim` when absent).
    pub head_dim_v: usize,
    /// Vocabulary size: length of `tokenizer.ggml.tokens`, else `{arch}.vocab_size`.
    pub n_vocab: usize,
    /// Context length the model was trained with (`context_length`, default 4096).
    pub n_ctx_train: usize,
    /// Epsilon of every norm (`attention.layer_norm_rms_epsilon` or `layer_norm_epsilon` by
    /// norm kind; default 1e-5).
    pub norm_eps: f32,
    /// Factor applied to token embeddings: `sqrt(dim)` for Gemma, else 1.0.
    pub embed_scale: f32,
    /// Factor applied to q·k before the softmax (`1 / sqrt(head_dim)`).
    pub attn_scale: f32,
    /// `final_logit_softcapping` (Gemma 2): logits = c * tanh(logits / c).
    pub final_softcap: Option<f32>,
    /// One entry per layer (`n_layer` of them).
    pub layers: Vec<LayerConfig>,
}

/// Upper bounds that keep a hostile file from asking for absurd buffers before any tensor is
/// checked against them.
const MAX_DIM: u64 = 1 << 20;
const MAX_LAYERS: u64 = 4096;
const MAX_HEADS: u64 = 1 << 14;

impl ModelConfig {
    /// Resolve the config from the metadata of `f`.
    ///
    /// Errors on an unsupported or missing architecture, a missing required key, a value out
    /// of range, `n_head` not a multiple of `n_head_kv`, or an odd / too large
    /// `rope.dimension_count`. Sliding-window layers follow llama.cpp: with pattern N, layer
    /// `il` is windowed unless `il % N == N - 1`.
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
        let n_ff = req("feed_forward_length", MAX_DIM * 8)?;
        let n_head = req("attention.head_count", MAX_HEADS)?;
        let n_head_kv = opt("attention.head_count_kv", MAX_HEADS)?.unwrap_or(n_head);
        if n_head % n_head_kv != 0 {
            return Err(Error::BadKey {
                key: key("attention.head_count_kv"),
                why: format!("{n_head} query heads are not a multiple of {n_head_kv} kv heads"),
            });
        }
        let head_dim = match opt("attention.key_length", MAX_DIM)? {
            Some(h) => h,
            None => dim / n_head,
        };
        let head_dim_v = opt("attention.value_length", MAX_DIM)?.unwrap_or(head_dim);
        let n_rot = opt("rope.dimension_count", MAX_DIM)?.unwrap_or(head_dim);
        if n_rot > head_dim || n_rot % 2 != 0 {
            return Err(Error::BadKey {
                key: key("rope.dimension_count"),
                why: format!("{n_rot} must be even and at most head_dim {head_dim}"),
            });
        }
        let n_ctx_train = opt("context_length", 1 << 24)?.unwrap_or(4096);
        let norm_eps = match arch.norm {
            arch::NormKind::Rms => f.get_f32(&key("attention.layer_norm_rms_epsilon"))?,
            arch::NormKind::Layer => f.get_f32(&key("attention.layer_norm_epsilon"))?,
        }
        .unwrap_or(1e-5);
        let rope_base = f.get_f32(&key("rope.freq_base"))?.unwrap_or(10_000.0);
        let freq_scale = match f.get_f32(&key("rope.scaling.factor"))? {
            Some(s) if s > 0.0 => 1.0 / s,
            _ => 1.0,
        };
        let rope_base_swa = f
            .get_f32(&key("rope.freq_base_swa"))?
            .or(arch.default_rope_base_swa)
            .unwrap_or(rope_base);
        let window = opt("attention.sliding_window", 1 << 24)?.filter(|&w| w > 0);
        let pattern = match opt("attention.sliding_window_pattern", MAX_LAYERS)? {
            Some(p) => Some(p as u32),
            None => arch.default_swa_pattern,
        };

        let layers = (0..n_layer)
            .map(|il| {
                // Same rule as llama.cpp: with pattern N, layer il is windowed unless il % N == N-1.
                let windowed = match (window, pattern) {
                    (Some(_), Some(0)) => true,
                    (Some(_), Some(p)) => (il as u32 % p) < p - 1,
                    (Some(_), None) => true,
                    (None, _) => false,
                };
                LayerConfig {
                    window: if windowed { window } else { None },
                    rope: RopeParams {
                        base: if windowed { rope_base_swa } else { rope_base },
                        n_rot,
                        freq_scale: if windowed { 1.0 } else { freq_scale },
                    },
                }
            })
            .collect();

        let n_vocab = match f.get_array("tokenizer.ggml.tokens")? {
            Some(t) => t.len(),
            None => opt("vocab_size", 1 << 24)?
                .ok_or_else(|| Error::MissingKey("tokenizer.ggml.tokens".into()))?,
        };

        Ok(ModelConfig {
            arch,
            name: f.get_str("general.name")?.unwrap_or("").to_string(),
            n_layer,
            dim,
            n_ff,
            n_head,
            n_head_kv,
            head_dim,
            head_dim_v,
            n_vocab,
            n_ctx_train,
            norm_eps,
            embed_scale: if arch.embed_scale_sqrt_dim {
                (dim as f32).sqrt()
            } else {
                1.0
            },
            attn_scale: match arch.attn_scale {
                AttnScale::InvSqrtHeadDim => 1.0 / (head_dim as f32).sqrt(),
            },
            final_softcap: f
                .get_f32(&key("final_logit_softcapping"))?
                .filter(|&c| c > 0.0),
            layers,
        })
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
