//! RoPE frequency scaling, computed the way Hugging Face transformers 5.2.0 does it
//! (`transformers/modeling_rope_utils.py`), so that a model trained or fine-tuned with a scaled
//! RoPE sees the same rotations here as in the reference implementation.
//!
//! Two steps, both independent of any kernel:
//!
//! 1. [`RopeScaling::from_hf_config`] reads a `config.json` (the transformers ≥ 5 form
//!    `rope_parameters`, flat or per layer type, or the older `rope_theta` + `rope_scaling`) into
//!    the base θ and a [`RopeScaling`]; [`hf_rotary_dim`] gives the rotated width transformers
//!    derives from `head_dim` and `partial_rotary_factor`.
//! 2. [`RopeTable::new`] (or [`inv_freq`]) turns θ, the rotated width and the scaling into the
//!    `n_rot / 2` inverse frequencies and the attention factor. Pair `i` at position `p` is rotated
//!    by the angle `p · inv_freq[i]`, and both cos and sin are multiplied by the attention factor:
//!    transformers scales the cos/sin tables, not the attention logits.
//!
//! Everything is computed in f64. transformers computes the same formulas in f32, so its own
//! tables differ from these by f32 rounding (about 1e-6 relative in the frequencies); the tests
//! compare against transformers' code run in f64 (tight) and as shipped in f32 (loose).

use serde::Serialize;
use serde_json::{Map, Value};

/// θ when a config gives none (`RotaryEmbeddingConfigMixin.default_theta`).
const DEFAULT_THETA: f64 = 10_000.0;
/// Gemma 3's own defaults (`Gemma3TextConfig.default_theta`): global layers, then sliding layers.
const GEMMA3_GLOBAL_THETA: f64 = 1_000_000.0;
const GEMMA3_LOCAL_THETA: f64 = 10_000.0;
/// `Phi3Config` (and the Phi-4 multimodal config) always carry a top-level
/// `original_max_position_embeddings`, 4096 unless the file says otherwise, and transformers lets
/// that attribute override the value inside the RoPE block.
const PHI3_ORIGINAL_MAX_POS: usize = 4096;
/// Model types whose config class owns the attributes above.
const PHI3_TYPES: [&str; 2] = ["phi3", "phi4_multimodal"];

/// The rope types [`RopeScaling::from_hf_config`] understands, for error messages.
const SUPPORTED: &str = "default, linear, dynamic, yarn, llama3, longrope (or its old name su)";

/// An error message naming the offending key (as a path in `config.json`, e.g.
/// `rope_scaling.factor`) and what is wrong with its value. Plain strings so callers can wrap them
/// in their own error (the crate's `Error::BadKey`).
fn err(key: impl AsRef<str>, why: impl AsRef<str>) -> String {
    format!("{}: {}", key.as_ref(), why.as_ref())
}

/// How the RoPE frequencies are scaled, with every default already resolved the way transformers
/// resolves it (so two configs that transformers treats alike compare equal).
#[derive(Clone, Debug, PartialEq, Serialize)]
pub enum RopeScaling {
    /// Plain RoPE (`rope_type: "default"`): `inv_freq[i] = θ^(-2i/n_rot)`.
    None,
    /// Position interpolation (`"linear"`): every inverse frequency divided by `factor`.
    Linear {
        /// The context extension factor.
        factor: f64,
    },
    /// Dynamic NTK (`"dynamic"`): past `original_max_pos` the base grows with the sequence
    /// length, `θ' = θ · (factor·L/original_max_pos − (factor − 1))^(n_rot/(n_rot−2))`.
    DynamicNtk {
        /// The scaling factor.
        factor: f64,
        /// The length up to which plain RoPE is kept. transformers uses the config's top-level
        /// `max_position_embeddings` here (not `original_max_position_embeddings`).
        original_max_pos: usize,
    },
    /// YaRN (`"yarn"`): interpolation for low frequencies, extrapolation for high ones, a linear
    /// ramp between, and an attention factor on cos/sin.
    Yarn {
        /// The context extension factor (from `max_position_embeddings /
        /// original_max_position_embeddings` when the config sets `factor` to null).
        factor: f64,
        /// Pre-training context length; sets where the ramp lies.
        original_max_pos: usize,
        /// Rotations at which extrapolation ends (`beta_fast`, default 32; 0 counts as unset).
        beta_fast: f64,
        /// Rotations at which interpolation starts (`beta_slow`, default 1; 0 counts as unset).
        beta_slow: f64,
        /// Explicit factor on cos/sin; when `None` it is `0.1·ln(factor) + 1`, or the ratio of
        /// that with `mscale` and with `mscale_all_dim` when both are set and non-zero.
        attention_factor: Option<f64>,
        /// DeepSeek's `mscale` (numerator of the derived attention factor).
        mscale: Option<f64>,
        /// DeepSeek's `mscale_all_dim` (denominator of the derived attention factor).
        mscale_all_dim: Option<f64>,
        /// Round the ramp bounds outward to whole dimensions (`truncate`, default true; gpt-oss
        /// sets false).
        truncate: bool,
    },
    /// Llama 3.1 (`"llama3"`): long wavelengths divided by `factor`, short ones kept, a smooth
    /// blend between.
    Llama3 {
        /// Divisor of the low frequencies.
        factor: f64,
        /// Wavelengths above `original_max_pos / low_freq_factor` are fully scaled.
        low_freq_factor: f64,
        /// Wavelengths below `original_max_pos / high_freq_factor` are left alone.
        high_freq_factor: f64,
        /// Pre-training context length.
        original_max_pos: usize,
    },
    /// LongRoPE (`"longrope"`, formerly `"su"`): per-frequency divisors, short ones up to
    /// `original_max_pos` and long ones beyond.
    LongRope {
        /// Divisors used while the sequence fits in `original_max_pos` (`n_rot / 2` of them).
        short_factor: Vec<f64>,
        /// Divisors used past `original_max_pos` (`n_rot / 2` of them).
        long_factor: Vec<f64>,
        /// Pre-training context length: the switch point between the two factor lists.
        original_max_pos: usize,
        /// Extended context length (`max_position_embeddings`); `max_pos / original_max_pos` is
        /// the extension factor from which the default attention factor is derived.
        max_pos: usize,
        /// Explicit factor on cos/sin; when `None` it is `sqrt(1 + ln(f)/ln(original_max_pos))`
        /// with `f = max_pos / original_max_pos` (1 when `f <= 1`). A config's explicit `factor`
        /// is folded in here by [`RopeScaling::from_hf_config`], since it only changes this value.
        attention_factor: Option<f64>,
    },
    /// Per-frequency divisors with no other scaling: llama.cpp's `rope_freqs.weight` tensor
    /// (how its converter stores Llama 3 scaling), `inv_freq[i] = θ^(-2i/n_rot) / factors[i]`.
    Factors {
        /// One divisor per rotated pair (`n_rot / 2` of them).
        factors: Vec<f64>,
    },
}

impl RopeScaling {
    /// The transformers `rope_type` name of this scaling.
    pub fn rope_type(&self) -> &'static str {
        match self {
            RopeScaling::None => "default",
            RopeScaling::Linear { .. } => "linear",
            RopeScaling::DynamicNtk { .. } => "dynamic",
            RopeScaling::Yarn { .. } => "yarn",
            RopeScaling::Llama3 { .. } => "llama3",
            RopeScaling::LongRope { .. } => "longrope",
            RopeScaling::Factors { .. } => "factors",
        }
    }

    /// Whether the table depends on the sequence length, i.e. whether a caller must rebuild it
    /// (with [`RopeTable::new`]) as the sequence grows: true for dynamic NTK and LongRoPE.
    pub fn depends_on_seq_len(&self) -> bool {
        matches!(
            self,
            RopeScaling::DynamicNtk { .. } | RopeScaling::LongRope { .. }
        )
    }

    /// Read the base θ and the scaling from a Hugging Face `config.json` (for multimodal models,
    /// pass the text model's config, e.g. `text_config`).
    ///
    /// Both forms are read, with transformers 5.2.0's precedence:
    /// * `rope_scaling` (older form, `type` or `rope_type` inside) wins when it is a non-empty
    ///   object; θ then comes from the top-level `rope_theta`.
    /// * otherwise `rope_parameters` (transformers ≥ 5): one flat block with `rope_type`,
    ///   `rope_theta` and the scaling keys, or one block per layer type (Gemma 3:
    ///   `{"full_attention": {...}, "sliding_attention": {...}}`), picked by `layer_type`.
    /// * with neither, plain RoPE with the top-level `rope_theta` (default 10000).
    ///
    /// `layer_type` is required for the per-layer-type form and ignored by a flat block (which
    /// transformers applies to every layer). For Gemma 3 configs in the older form,
    /// `Some("sliding_attention")` gives plain RoPE with `rope_local_base_freq`, as
    /// `Gemma3TextConfig` does.
    ///
    /// `original_max_position_embeddings` follows transformers' resolution at compute time: for
    /// a flat block a top-level value overrides the one inside the block (Phi-3 configs default
    /// it to 4096), then the block's, then the top-level `max_position_embeddings`. Unknown
    /// rope types and malformed or out-of-range values are errors naming the key.
    pub fn from_hf_config(
        cfg: &Value,
        layer_type: Option<&str>,
    ) -> Result<(f64, RopeScaling), String> {
        let top = cfg
            .as_object()
            .ok_or_else(|| err("config", "is not a JSON object"))?;
        let sel = select(top, layer_type)?;
        let theta = sel.theta()?;
        let Some(block) = sel.block else {
            return Ok((theta, RopeScaling::None));
        };
        let path = sel.path.as_str();
        let key = |k: &str| format!("{path}.{k}");

        let mut rope_type = match non_null(block, "rope_type").or_else(|| non_null(block, "type")) {
            None => "default",
            Some(Value::String(s)) => s.as_str(),
            Some(v) => return Err(err(key("rope_type"), format!("{v} is not a string"))),
        };
        let model_type = top.get("model_type").and_then(Value::as_str).unwrap_or("");
        if rope_type == "su" || (model_type == "phi3" && rope_type == "yarn") {
            // "su" is LongRoPE's old name; Phi3Config also remaps its "yarn" to longrope.
            rope_type = "longrope";
        }

        let scaling = match rope_type {
            "default" => RopeScaling::None,
            "linear" => RopeScaling::Linear {
                factor: req_f64(block, path, "factor")?,
            },
            "dynamic" => RopeScaling::DynamicNtk {
                factor: req_f64(block, path, "factor")?,
                original_max_pos: top_max_pos(top)?,
            },
            "yarn" => {
                let original_max_pos = sel.original_max_pos(top, model_type)?;
                let factor = match block.get("factor") {
                    None => return Err(err(key("factor"), "missing")),
                    // Null: DeepSeek-V3 style, the ratio of the two context lengths.
                    Some(Value::Null) => top_max_pos(top)? as f64 / original_max_pos as f64,
                    Some(v) => num(v, &key("factor"))?,
                };
                // Python's `x or default`: null and 0 both fall back to the default.
                let or_default = |k: &str, d: f64| -> Result<f64, String> {
                    Ok(opt_f64(block, path, k)?.filter(|&v| v != 0.0).unwrap_or(d))
                };
                // `.get("truncate", True)`: absent is true, null is falsy. (transformers 5.2 reads
                // it from the outer dict, which only differs for YaRN per layer type, a form its
                // own validator cannot load; the block's value is the sensible reading there.)
                let truncate = match block.get("truncate") {
                    None => true,
                    Some(Value::Null) => false,
                    Some(Value::Bool(b)) => *b,
                    Some(v) => return Err(err(key("truncate"), format!("{v} is not a bool"))),
                };
                RopeScaling::Yarn {
                    factor,
                    original_max_pos,
                    beta_fast: or_default("beta_fast", 32.0)?,
                    beta_slow: or_default("beta_slow", 1.0)?,
                    attention_factor: opt_f64(block, path, "attention_factor")?,
                    mscale: opt_f64(block, path, "mscale")?,
                    mscale_all_dim: opt_f64(block, path, "mscale_all_dim")?,
                    truncate,
                }
            }
            "llama3" => RopeScaling::Llama3 {
                factor: req_f64(block, path, "factor")?,
                low_freq_factor: req_f64(block, path, "low_freq_factor")?,
                high_freq_factor: req_f64(block, path, "high_freq_factor")?,
                original_max_pos: sel.original_max_pos(top, model_type)?,
            },
            "longrope" => {
                let original_max_pos = sel.original_max_pos(top, model_type)?;
                let max_pos = non_null(top, "max_position_embeddings")
                    .map(|v| pos_usize(v, "max_position_embeddings"))
                    .transpose()?;
                let explicit = opt_f64(block, path, "factor")?;
                let mut attention_factor = opt_f64(block, path, "attention_factor")?;
                let max_pos = match (explicit, max_pos) {
                    (Some(f), m) => {
                        // transformers derives the default attention factor from an explicit
                        // `factor` rather than from the context lengths.
                        if attention_factor.is_none() {
                            if !(f.is_finite() && f > 0.0) {
                                return Err(err(
                                    key("factor"),
                                    format!("{f} must be a finite number > 0"),
                                ));
                            }
                            attention_factor = Some(longrope_attention(f, original_max_pos));
                        }
                        m.unwrap_or(original_max_pos)
                    }
                    (None, Some(m)) => m,
                    (None, None) => return Err(err("max_position_embeddings", "missing")),
                };
                RopeScaling::LongRope {
                    short_factor: f64_list(block, path, "short_factor")?,
                    long_factor: f64_list(block, path, "long_factor")?,
                    original_max_pos,
                    max_pos,
                    attention_factor,
                }
            }
            other => {
                return Err(err(
                    key("rope_type"),
                    format!("unsupported rope type '{other}' (supported: {SUPPORTED})"),
                ))
            }
        };
        scaling.check_values()?;
        Ok((theta, scaling))
    }

    /// Range checks that need no `n_rot` (the factor-list lengths are checked by [`validate`]).
    fn check_values(&self) -> Result<(), String> {
        let positive = |k: &str, v: f64| {
            if v.is_finite() && v > 0.0 {
                Ok(())
            } else {
                Err(err(k, format!("{v} must be a finite number > 0")))
            }
        };
        let ctx = |k: &str, v: usize| {
            if v > 0 {
                Ok(())
            } else {
                Err(err(k, "must be > 0"))
            }
        };
        match self {
            RopeScaling::None => {}
            RopeScaling::Linear { factor } => positive("factor", *factor)?,
            RopeScaling::DynamicNtk {
                factor,
                original_max_pos,
            } => {
                positive("factor", *factor)?;
                ctx("max_position_embeddings", *original_max_pos)?;
            }
            RopeScaling::Yarn {
                factor,
                original_max_pos,
                beta_fast,
                beta_slow,
                attention_factor,
                mscale,
                mscale_all_dim,
                truncate: _,
            } => {
                positive("factor", *factor)?;
                ctx("original_max_position_embeddings", *original_max_pos)?;
                // They enter a logarithm.
                positive("beta_fast", *beta_fast)?;
                positive("beta_slow", *beta_slow)?;
                if let Some(a) = attention_factor {
                    positive("attention_factor", *a)?;
                }
                for (k, v) in [("mscale", mscale), ("mscale_all_dim", mscale_all_dim)] {
                    if let Some(v) = v.filter(|v| !v.is_finite()) {
                        return Err(err(k, format!("{v} is not finite")));
                    }
                }
            }
            RopeScaling::Llama3 {
                factor,
                low_freq_factor,
                high_freq_factor,
                original_max_pos,
            } => {
                positive("factor", *factor)?;
                positive("low_freq_factor", *low_freq_factor)?;
                positive("high_freq_factor", *high_freq_factor)?;
                ctx("original_max_position_embeddings", *original_max_pos)?;
                // The blend divides by their difference (transformers' validator rejects it too).
                if high_freq_factor <= low_freq_factor {
                    return Err(err(
                        "high_freq_factor",
                        format!("{high_freq_factor} must be greater than low_freq_factor {low_freq_factor}"),
                    ));
                }
            }
            RopeScaling::LongRope {
                short_factor,
                long_factor,
                original_max_pos,
                max_pos,
                attention_factor,
            } => {
                ctx("original_max_position_embeddings", *original_max_pos)?;
                ctx("max_position_embeddings", *max_pos)?;
                if let Some(a) = attention_factor {
                    positive("attention_factor", *a)?;
                }
                for (k, list) in [("short_factor", short_factor), ("long_factor", long_factor)] {
                    for (i, &v) in list.iter().enumerate() {
                        positive(&format!("{k}[{i}]"), v)?;
                    }
                }
            }
            RopeScaling::Factors { factors } => {
                for (i, &v) in factors.iter().enumerate() {
                    positive(&format!("factors[{i}]"), v)?;
                }
            }
        }
        Ok(())
    }
}

/// The rotated width transformers derives from a `config.json`:
/// `int(head_dim · partial_rotary_factor)`, where `head_dim` is the top-level `head_dim` (else
/// `hidden_size / num_attention_heads`) and `partial_rotary_factor` is the top-level one when
/// present (it overrides the RoPE block's, as transformers' re-standardisation does; Phi-3
/// configs default it to 1.0), else the RoPE block's, else 1.0.
///
/// This is what transformers' scaled-RoPE functions use. Some models' plain-RoPE code ignores
/// `partial_rotary_factor` (Llama, Gemma 3); a GGUF file's `rope.dimension_count` is the
/// authority there.
pub fn hf_rotary_dim(cfg: &Value, layer_type: Option<&str>) -> Result<usize, String> {
    let top = cfg
        .as_object()
        .ok_or_else(|| err("config", "is not a JSON object"))?;
    let head_dim = match non_null(top, "head_dim") {
        Some(v) => pos_usize(v, "head_dim")?,
        None => {
            let hidden = pos_usize(req(top, "", "hidden_size")?, "hidden_size")?;
            let heads = pos_usize(req(top, "", "num_attention_heads")?, "num_attention_heads")?;
            hidden / heads
        }
    };
    let model_type = top.get("model_type").and_then(Value::as_str).unwrap_or("");
    let sel = select(top, layer_type)?;
    let prf = match opt_f64(top, "", "partial_rotary_factor")? {
        Some(p) => p,
        None if PHI3_TYPES.contains(&model_type) => 1.0,
        None => match sel.block {
            Some(b) => opt_f64(b, &sel.path, "partial_rotary_factor")?.unwrap_or(1.0),
            None => 1.0,
        },
    };
    if !(prf.is_finite() && prf > 0.0) {
        return Err(err(
            "partial_rotary_factor",
            format!("{prf} must be a finite number > 0"),
        ));
    }
    // Python's int() truncates, like `as`.
    let dim = (head_dim as f64 * prf) as usize;
    if dim == 0 || dim > head_dim {
        return Err(err(
            "partial_rotary_factor",
            format!("{prf} × head_dim {head_dim} gives {dim} rotated dimensions"),
        ));
    }
    Ok(dim)
}

/// The precomputed RoPE table of one layer: what a kernel needs besides the positions.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct RopeTable {
    /// `n_rot / 2` inverse frequencies; pair `i` at position `p` turns by `p · inv_freq[i]`.
    pub inv_freq: Vec<f64>,
    /// Factor on both cos and sin (1 except for YaRN and LongRoPE).
    pub attn_factor: f64,
}

impl RopeTable {
    /// Build the table (arguments as for [`inv_freq`]) after checking them: `base` must be finite
    /// and above 1, and `scaling` must pass [`validate`] for `n_rot`. Also errors when a result
    /// is not finite and positive (parameters so extreme that the formulas overflow).
    pub fn new(
        base: f64,
        n_rot: usize,
        scaling: &RopeScaling,
        seq_len: usize,
    ) -> Result<RopeTable, String> {
        // Every formula assumes wavelengths that grow with the dimension; YaRN divides by ln θ.
        if !(base.is_finite() && base > 1.0) {
            return Err(err(
                "rope_theta",
                format!("{base} must be a finite number > 1"),
            ));
        }
        validate(scaling, n_rot)?;
        let (inv_freq, attn_factor) = inv_freq(base, n_rot, scaling, seq_len);
        if let Some((i, f)) = inv_freq
            .iter()
            .enumerate()
            .find(|(_, f)| !(f.is_finite() && **f > 0.0))
        {
            return Err(err(
                scaling.rope_type(),
                format!("inverse frequency {i} is {f}; the parameters are out of range"),
            ));
        }
        if !(attn_factor.is_finite() && attn_factor > 0.0) {
            return Err(err(
                scaling.rope_type(),
                format!("attention factor is {attn_factor}; the parameters are out of range"),
            ));
        }
        Ok(RopeTable {
            inv_freq,
            attn_factor,
        })
    }

    /// Rotated dimensions per head.
    pub fn n_rot(&self) -> usize {
        2 * self.inv_freq.len()
    }

    /// `(cos, sin)` of each pair at position `pos`, both already multiplied by the attention
    /// factor, as transformers' rotary embedding returns them (the first half of its table; the
    /// second half repeats it).
    pub fn cos_sin(&self, pos: usize) -> impl Iterator<Item = (f64, f64)> + '_ {
        let p = pos as f64;
        self.inv_freq.iter().map(move |&f| {
            let (s, c) = (p * f).sin_cos();
            (c * self.attn_factor, s * self.attn_factor)
        })
    }
}

/// Check `scaling` against the rotated width `n_rot`: `n_rot` even and non-zero, more than 2 for
/// dynamic NTK (its exponent divides by `n_rot − 2`), `n_rot / 2` entries in every factor list,
/// and every parameter in range (factors finite and positive, llama3's `high_freq_factor` above
/// `low_freq_factor`, context lengths non-zero). Call it once at load time; [`inv_freq`] assumes
/// it passed.
pub fn validate(scaling: &RopeScaling, n_rot: usize) -> Result<(), String> {
    if n_rot == 0 || !n_rot.is_multiple_of(2) {
        return Err(err("n_rot", format!("{n_rot} must be even and > 0")));
    }
    scaling.check_values()?;
    let half = n_rot / 2;
    let lists: &[(&str, &Vec<f64>)] = match scaling {
        RopeScaling::LongRope {
            short_factor,
            long_factor,
            ..
        } => &[("short_factor", short_factor), ("long_factor", long_factor)],
        RopeScaling::Factors { factors } => &[("factors", factors)],
        RopeScaling::DynamicNtk { .. } if n_rot <= 2 => {
            return Err(err("n_rot", "dynamic NTK needs n_rot > 2"));
        }
        _ => &[],
    };
    for (k, list) in lists {
        if list.len() != half {
            return Err(err(
                k,
                format!("has {} entries, n_rot {n_rot} needs {half}", list.len()),
            ));
        }
    }
    Ok(())
}

/// The `n_rot / 2` inverse frequencies and the attention factor (multiplying cos and sin) of
/// `scaling` with base `base`, as transformers 5.2.0 computes them (in f64 here; `Factors` as
/// llama.cpp applies `rope_freqs.weight`).
///
/// `seq_len` matters only for [`RopeScaling::DynamicNtk`] (the base grows once `seq_len` passes
/// `original_max_pos`) and [`RopeScaling::LongRope`] (long factors once `seq_len >
/// original_max_pos`). Choose it as transformers does on every forward call: the largest position
/// in the batch plus one, so a prefill of `n` tokens from position 0 uses `n` and one decode step
/// at position `p` uses `p + 1`; 0 gives the table transformers builds at load time (plain base,
/// short factors). transformers caches rotated keys, so keys computed under an earlier table keep
/// their rotation; for one growing sequence this stateless rule reproduces its (stateful) choice.
///
/// Never panics, but the values are only meaningful when [`validate`] accepted `scaling` for
/// `n_rot` and `base` is finite and above 1 ([`RopeTable::new`] checks all of that); a factor
/// list of the wrong length has its missing entries read as 1.
pub fn inv_freq(base: f64, n_rot: usize, scaling: &RopeScaling, seq_len: usize) -> (Vec<f64>, f64) {
    let half = n_rot / 2;
    let dim = n_rot as f64;
    // transformers: base ** (arange(0, dim, 2) / dim), and 1 / that.
    let pos_freq = |b: f64, i: usize| b.powf((2 * i) as f64 / dim);
    let plain = |b: f64| -> Vec<f64> { (0..half).map(|i| 1.0 / pos_freq(b, i)).collect() };
    let nth = |list: &[f64], i: usize| list.get(i).copied().unwrap_or(1.0);

    match scaling {
        RopeScaling::None => (plain(base), 1.0),
        RopeScaling::Linear { factor } => {
            (plain(base).into_iter().map(|f| f / factor).collect(), 1.0)
        }
        RopeScaling::Factors { factors } => (
            plain(base)
                .into_iter()
                .enumerate()
                .map(|(i, f)| f / nth(factors, i))
                .collect(),
            1.0,
        ),
        RopeScaling::DynamicNtk {
            factor,
            original_max_pos,
        } => {
            let max = *original_max_pos as f64;
            let seq = seq_len.max(*original_max_pos) as f64;
            let b = base * ((factor * seq / max) - (factor - 1.0)).powf(dim / (dim - 2.0));
            (plain(b), 1.0)
        }
        RopeScaling::Yarn {
            factor,
            original_max_pos,
            beta_fast,
            beta_slow,
            attention_factor,
            mscale,
            mscale_all_dim,
            truncate,
        } => {
            let factor = *factor;
            let attn = match (attention_factor, mscale, mscale_all_dim) {
                (Some(a), _, _) => *a,
                // Python truthiness: both must be set and non-zero.
                (None, Some(m), Some(a)) if *m != 0.0 && *a != 0.0 => {
                    yarn_mscale(factor, *m) / yarn_mscale(factor, *a)
                }
                _ => yarn_mscale(factor, 1.0),
            };
            // The dimension whose wavelength fits `rotations` times in the original context.
            let max = *original_max_pos as f64;
            let correction_dim = |rotations: f64| {
                (dim * (max / (rotations * 2.0 * std::f64::consts::PI)).ln()) / (2.0 * base.ln())
            };
            let (mut low, mut high) = (correction_dim(*beta_fast), correction_dim(*beta_slow));
            if *truncate {
                low = low.floor();
                high = high.ceil();
            }
            let low = low.max(0.0);
            let high = high.min(dim - 1.0);
            // transformers nudges equal bounds apart to avoid dividing by zero.
            let high = if low == high { high + 0.001 } else { high };
            let inv = (0..half)
                .map(|i| {
                    let ramp = ((i as f64 - low) / (high - low)).clamp(0.0, 1.0);
                    let extrapolation = 1.0 - ramp;
                    let pos = pos_freq(base, i);
                    let (inv_extra, inv_inter) = (1.0 / pos, 1.0 / (factor * pos));
                    inv_inter * (1.0 - extrapolation) + inv_extra * extrapolation
                })
                .collect();
            (inv, attn)
        }
        RopeScaling::Llama3 {
            factor,
            low_freq_factor,
            high_freq_factor,
            original_max_pos,
        } => {
            let old = *original_max_pos as f64;
            let low_wavelen = old / low_freq_factor;
            let high_wavelen = old / high_freq_factor;
            let inv = plain(base)
                .into_iter()
                .map(|f| {
                    let wavelen = 2.0 * std::f64::consts::PI / f;
                    let scaled = if wavelen > low_wavelen { f / factor } else { f };
                    // Neither short (kept) nor long (divided): blend by where it sits.
                    if wavelen >= high_wavelen && wavelen <= low_wavelen {
                        let smooth = (old / wavelen - low_freq_factor)
                            / (high_freq_factor - low_freq_factor);
                        (1.0 - smooth) * scaled / factor + smooth * scaled
                    } else {
                        scaled
                    }
                })
                .collect();
            (inv, 1.0)
        }
        RopeScaling::LongRope {
            short_factor,
            long_factor,
            original_max_pos,
            max_pos,
            attention_factor,
        } => {
            let attn = attention_factor.unwrap_or_else(|| {
                longrope_attention(
                    *max_pos as f64 / *original_max_pos as f64,
                    *original_max_pos,
                )
            });
            let ext = if seq_len > *original_max_pos {
                long_factor
            } else {
                short_factor
            };
            let inv = (0..half)
                .map(|i| 1.0 / (nth(ext, i) * pos_freq(base, i)))
                .collect();
            (inv, attn)
        }
    }
}

/// LongRoPE's default attention factor: `sqrt(1 + ln(factor) / ln(original_max_pos))`, or 1 when
/// `factor <= 1`.
fn longrope_attention(factor: f64, original_max_pos: usize) -> f64 {
    if factor <= 1.0 {
        1.0
    } else {
        (1.0 + factor.ln() / (original_max_pos as f64).ln()).sqrt()
    }
}

/// YaRN's `get_mscale`: `0.1 · mscale · ln(scale) + 1`, or 1 when `scale <= 1`.
fn yarn_mscale(scale: f64, mscale: f64) -> f64 {
    if scale <= 1.0 {
        1.0
    } else {
        0.1 * mscale * scale.ln() + 1.0
    }
}

/// The RoPE block chosen from a config, and how transformers would treat it.
struct Selected<'a> {
    /// The block with `rope_type` and the scaling keys; `None` when the config has none or the
    /// layer type ignores it (Gemma 3 sliding layers in the older form).
    block: Option<&'a Map<String, Value>>,
    /// Where `block` is, for error messages.
    path: String,
    /// The block is one entry of a per-layer-type dict (transformers then ignores a top-level
    /// `original_max_position_embeddings`).
    nested: bool,
    /// θ when the block gives none.
    default_theta: f64,
}

impl Selected<'_> {
    /// The block's `rope_theta`, else the default resolved by [`select`].
    fn theta(&self) -> Result<f64, String> {
        let theta = match self
            .block
            .map(|b| opt_f64(b, &self.path, "rope_theta"))
            .transpose()?
        {
            Some(Some(t)) => t,
            _ => self.default_theta,
        };
        if !(theta.is_finite() && theta > 1.0) {
            return Err(err(
                format!("{}.rope_theta", self.path),
                format!("{theta} must be a finite number > 1"),
            ));
        }
        Ok(theta)
    }

    /// `original_max_position_embeddings` as transformers resolves it when computing llama3,
    /// yarn and longrope frequencies (its `standardize_rope_params`, which runs again then).
    fn original_max_pos(
        &self,
        top: &Map<String, Value>,
        model_type: &str,
    ) -> Result<usize, String> {
        const K: &str = "original_max_position_embeddings";
        if !self.nested {
            // A top-level attribute, when the config object has one, overrides the block's.
            if let Some(v) = non_null(top, K) {
                return pos_usize(v, K);
            }
            if PHI3_TYPES.contains(&model_type) {
                return Ok(PHI3_ORIGINAL_MAX_POS);
            }
        }
        if let Some(v) = self.block.and_then(|b| non_null(b, K)) {
            return pos_usize(v, &format!("{}.{K}", self.path));
        }
        top_max_pos(top)
    }
}

fn select<'a>(
    top: &'a Map<String, Value>,
    layer_type: Option<&str>,
) -> Result<Selected<'a>, String> {
    let model_type = top.get("model_type").and_then(Value::as_str).unwrap_or("");
    let gemma3 =
        matches!(model_type, "gemma3" | "gemma3_text") || top.contains_key("rope_local_base_freq");
    let top_theta = opt_f64(top, "", "rope_theta")?;
    // Python's `rope_scaling or rope_parameters`: null and {} count as absent.
    let object = |k: &str| -> Result<Option<&'a Map<String, Value>>, String> {
        match top.get(k) {
            None | Some(Value::Null) => Ok(None),
            Some(Value::Object(m)) if m.is_empty() => Ok(None),
            Some(Value::Object(m)) => Ok(Some(m)),
            Some(v) => Err(err(k, format!("{v} is not an object"))),
        }
    };
    let legacy = object("rope_scaling")?;
    let params = object("rope_parameters")?;

    match (legacy, params) {
        (Some(_), _) | (None, None) => {
            if gemma3 && layer_type == Some("sliding_attention") {
                // Gemma3TextConfig: sliding layers get plain RoPE on rope_local_base_freq and
                // never see rope_scaling.
                return Ok(Selected {
                    block: None,
                    path: "rope_local_base_freq".into(),
                    nested: false,
                    default_theta: opt_f64(top, "", "rope_local_base_freq")?
                        .unwrap_or(GEMMA3_LOCAL_THETA),
                });
            }
            let default = if gemma3 {
                GEMMA3_GLOBAL_THETA
            } else {
                DEFAULT_THETA
            };
            Ok(Selected {
                block: legacy,
                path: "rope_scaling".into(),
                nested: false,
                default_theta: top_theta.unwrap_or(default),
            })
        }
        (None, Some(p)) => {
            // Per-layer-type form: every value is a block. A flat block always has scalars.
            let nested = p.values().all(Value::is_object);
            if !nested {
                return Ok(Selected {
                    block: Some(p),
                    path: "rope_parameters".into(),
                    nested: false,
                    default_theta: top_theta.unwrap_or(DEFAULT_THETA),
                });
            }
            let names = || p.keys().cloned().collect::<Vec<_>>().join(", ");
            let lt = layer_type.ok_or_else(|| {
                err(
                    "rope_parameters",
                    format!("is per layer type ({}); a layer type is needed", names()),
                )
            })?;
            let block = p.get(lt).and_then(Value::as_object).ok_or_else(|| {
                err(
                    "rope_parameters",
                    format!("has no entry for layer type '{lt}' (has: {})", names()),
                )
            })?;
            Ok(Selected {
                block: Some(block),
                path: format!("rope_parameters.{lt}"),
                nested: true,
                default_theta: top_theta.unwrap_or(DEFAULT_THETA),
            })
        }
    }
}

/// `max_position_embeddings`, which dynamic NTK and the derived factors need.
fn top_max_pos(top: &Map<String, Value>) -> Result<usize, String> {
    pos_usize(
        req(top, "", "max_position_embeddings")?,
        "max_position_embeddings",
    )
}

fn full_key(path: &str, k: &str) -> String {
    if path.is_empty() {
        k.to_string()
    } else {
        format!("{path}.{k}")
    }
}

fn non_null<'a>(m: &'a Map<String, Value>, k: &str) -> Option<&'a Value> {
    m.get(k).filter(|v| !v.is_null())
}

fn req<'a>(m: &'a Map<String, Value>, path: &str, k: &str) -> Result<&'a Value, String> {
    non_null(m, k).ok_or_else(|| err(full_key(path, k), "missing"))
}

fn num(v: &Value, key: &str) -> Result<f64, String> {
    v.as_f64()
        .ok_or_else(|| err(key, format!("{v} is not a number")))
}

fn req_f64(m: &Map<String, Value>, path: &str, k: &str) -> Result<f64, String> {
    num(req(m, path, k)?, &full_key(path, k))
}

fn opt_f64(m: &Map<String, Value>, path: &str, k: &str) -> Result<Option<f64>, String> {
    non_null(m, k)
        .map(|v| num(v, &full_key(path, k)))
        .transpose()
}

fn f64_list(m: &Map<String, Value>, path: &str, k: &str) -> Result<Vec<f64>, String> {
    let key = full_key(path, k);
    req(m, path, k)?
        .as_array()
        .ok_or_else(|| err(&key, "is not a list"))?
        .iter()
        .enumerate()
        .map(|(i, v)| num(v, &format!("{key}[{i}]")))
        .collect()
}

/// A positive whole number (a float such as `4096.0` is accepted, as Python would).
fn pos_usize(v: &Value, key: &str) -> Result<usize, String> {
    let bad = || err(key, format!("{v} is not a positive integer"));
    if let Some(u) = v.as_u64() {
        return usize::try_from(u).ok().filter(|&u| u > 0).ok_or_else(bad);
    }
    match v.as_f64() {
        Some(f) if f >= 1.0 && f.fract() == 0.0 && f < (1u64 << 53) as f64 => Ok(f as usize),
        _ => Err(bad()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    /// Against transformers' own code run in f64 (see tools/make-rope-fixtures.py); only libm
    /// rounding separates the two.
    const REL_F64: f64 = 1e-12;
    const ABS_COS_SIN_F64: f64 = 1e-9;
    /// Against stock transformers, which computes in f32: the fixtures show at most 3.2e-7
    /// relative in the frequencies and 1e-7 · (1 + p·max inv_freq) in cos/sin.
    const REL_F32: f64 = 1e-6;
    const ABS_COS_SIN_F32: f64 = 1e-6;

    fn fixture(mode: &str) -> Value {
        let path = format!(
            "{}/tests/fixtures/rope/{mode}.json",
            env!("CARGO_MANIFEST_DIR")
        );
        let text = std::fs::read_to_string(&path)
            .unwrap_or_else(|e| panic!("{path}: {e} (tools/make-rope-fixtures.py writes it)"));
        serde_json::from_str(&text).unwrap_or_else(|e| panic!("{path}: {e}"))
    }

    fn floats(v: &Value) -> Vec<f64> {
        v.as_array()
            .expect("array")
            .iter()
            .map(|x| x.as_f64().expect("number"))
            .collect()
    }

    fn rows(v: &Value) -> Vec<Vec<f64>> {
        v.as_array().expect("array").iter().map(floats).collect()
    }

    fn rel(a: f64, b: f64) -> f64 {
        (a - b).abs() / b.abs().max(f64::MIN_POSITIVE)
    }

    /// Every case of one fixture file: both config forms parse to the same thing, and the table
    /// matches transformers in f64 (tight) and f32 (loose). Returns the number of cases.
    fn check_mode(mode: &str) -> usize {
        let doc = fixture(mode);
        assert_eq!(doc["rope_type"], mode);
        let cases = doc["cases"].as_array().expect("cases");
        assert!(cases.len() >= 3, "{mode}: only {} cases", cases.len());
        for case in cases {
            check_case(mode, case);
        }
        cases.len()
    }

    fn check_case(mode: &str, case: &Value) {
        let name = format!("{mode}/{}", case["name"].as_str().expect("name"));
        let layer_type = case["layer_type"].as_str();
        let seq_len = case["seq_len"].as_u64().expect("seq_len") as usize;
        let n_rot = case["rotary_dim"].as_u64().expect("rotary_dim") as usize;

        let (theta, scaling) = RopeScaling::from_hf_config(&case["config"], layer_type)
            .unwrap_or_else(|e| panic!("{name}: {e}"));
        let legacy = RopeScaling::from_hf_config(&case["legacy_config"], layer_type)
            .unwrap_or_else(|e| panic!("{name} (legacy form): {e}"));
        assert_eq!(
            (theta, &scaling),
            (legacy.0, &legacy.1),
            "{name}: the two forms differ"
        );
        assert_eq!(scaling.rope_type(), mode, "{name}");
        assert_eq!(
            theta,
            case["rope_theta"].as_f64().expect("theta"),
            "{name}: theta"
        );
        assert_eq!(
            hf_rotary_dim(&case["config"], layer_type),
            Ok(n_rot),
            "{name}"
        );
        assert_eq!(
            hf_rotary_dim(&case["legacy_config"], layer_type),
            Ok(n_rot),
            "{name}"
        );

        let table = RopeTable::new(theta, n_rot, &scaling, seq_len)
            .unwrap_or_else(|e| panic!("{name}: {e}"));
        assert_eq!(table.n_rot(), n_rot, "{name}");
        // The infallible path gives the same numbers.
        assert_eq!(
            inv_freq(theta, n_rot, &scaling, seq_len),
            (table.inv_freq.clone(), table.attn_factor),
            "{name}"
        );

        let attn = case["attention_factor"].as_f64().expect("attention_factor");
        assert!(
            rel(table.attn_factor, attn) <= REL_F64,
            "{name}: attention factor {} vs {attn}",
            table.attn_factor
        );
        for (key, tol) in [("inv_freq", REL_F64), ("inv_freq_f32", REL_F32)] {
            let want = floats(&case[key]);
            assert_eq!(want.len(), n_rot / 2, "{name}: {key} length");
            for (i, (&got, &want)) in table.inv_freq.iter().zip(&want).enumerate() {
                assert!(
                    rel(got, want) <= tol,
                    "{name}: {key}[{i}] = {got}, transformers {want}"
                );
            }
        }

        let positions: Vec<usize> = floats(&case["positions"])
            .iter()
            .map(|&p| p as usize)
            .collect();
        let index: Vec<usize> = floats(&case["index"]).iter().map(|&i| i as usize).collect();
        let max_inv = table.inv_freq.iter().copied().fold(0.0, f64::max);
        for (cos_key, sin_key, tol) in [
            ("cos", "sin", ABS_COS_SIN_F64),
            ("cos_f32", "sin_f32", ABS_COS_SIN_F32),
        ] {
            let (cos, sin) = (rows(&case[cos_key]), rows(&case[sin_key]));
            for (r, &p) in positions.iter().enumerate() {
                // f32 angles lose absolute precision as p·inv_freq grows.
                let tol = if cos_key == "cos" {
                    tol
                } else {
                    tol * (1.0 + p as f64 * max_inv)
                };
                let got: Vec<(f64, f64)> = table.cos_sin(p).collect();
                for (c, &i) in index.iter().enumerate() {
                    let (gc, gs) = got[i];
                    assert!(
                        (gc - cos[r][c]).abs() <= tol && (gs - sin[r][c]).abs() <= tol,
                        "{name}: {cos_key}/{sin_key} at position {p}, pair {i}: ({gc}, {gs}) vs ({}, {})",
                        cos[r][c],
                        sin[r][c]
                    );
                }
            }
        }
    }

    #[test]
    fn default_matches_transformers() {
        check_mode("default");
    }

    #[test]
    fn linear_matches_transformers() {
        check_mode("linear");
    }

    #[test]
    fn dynamic_ntk_matches_transformers() {
        assert!(check_mode("dynamic") >= 4);
    }

    #[test]
    fn yarn_matches_transformers() {
        assert!(check_mode("yarn") >= 6);
    }

    #[test]
    fn llama3_matches_transformers() {
        check_mode("llama3");
    }

    #[test]
    fn longrope_matches_transformers() {
        check_mode("longrope");
    }

    /// The fixtures cover what the tests above claim: seq_len on both sides of the switch point.
    #[test]
    fn fixtures_cover_both_sides_of_the_seq_len_switch() {
        for mode in ["dynamic", "longrope"] {
            let doc = fixture(mode);
            let (mut below, mut above) = (false, false);
            for case in doc["cases"].as_array().expect("cases") {
                let (_, s) = RopeScaling::from_hf_config(&case["config"], None).expect("parses");
                let orig = match s {
                    RopeScaling::DynamicNtk {
                        original_max_pos, ..
                    } => original_max_pos,
                    RopeScaling::LongRope {
                        original_max_pos, ..
                    } => original_max_pos,
                    _ => unreachable!(),
                };
                let seq = case["seq_len"].as_u64().expect("seq_len") as usize;
                below |= seq <= orig;
                above |= seq > orig;
            }
            assert!(below && above, "{mode}");
        }
    }

    fn parse(cfg: Value) -> Result<(f64, RopeScaling), String> {
        RopeScaling::from_hf_config(&cfg, None)
    }

    fn parse_err(cfg: Value) -> String {
        match parse(cfg.clone()) {
            Ok(r) => panic!("{cfg} parsed to {r:?}"),
            Err(e) => e,
        }
    }

    #[test]
    fn no_rope_block_is_plain_rope() {
        assert_eq!(parse(json!({})), Ok((10_000.0, RopeScaling::None)));
        assert_eq!(
            parse(json!({"rope_theta": 5e5})),
            Ok((5e5, RopeScaling::None))
        );
        // null and {} count as absent, as Python's `rope_scaling or rope_parameters` does.
        assert_eq!(
            parse(json!({"rope_theta": 5e5, "rope_scaling": null, "rope_parameters": {}})),
            Ok((5e5, RopeScaling::None))
        );
        assert_eq!(
            parse(json!({"rope_parameters": {"rope_type": "default", "rope_theta": 1e6}})),
            Ok((1e6, RopeScaling::None))
        );
    }

    #[test]
    fn rope_scaling_wins_over_rope_parameters() {
        let cfg = json!({
            "rope_theta": 1e4,
            "rope_scaling": {"type": "linear", "factor": 2.0},
            "rope_parameters": {"rope_type": "linear", "factor": 8.0, "rope_theta": 1e6},
        });
        assert_eq!(parse(cfg), Ok((1e4, RopeScaling::Linear { factor: 2.0 })));
    }

    #[test]
    fn rope_type_wins_over_type_and_su_is_longrope() {
        let cfg =
            json!({"rope_scaling": {"type": "dynamic", "rope_type": "linear", "factor": 2.0}});
        assert_eq!(parse(cfg), Ok((1e4, RopeScaling::Linear { factor: 2.0 })));

        let lr = |ty: &str| {
            json!({
                "max_position_embeddings": 131072,
                "original_max_position_embeddings": 4096,
                "rope_scaling": {"type": ty, "short_factor": [1.0, 2.0], "long_factor": [3.0, 4.0]},
            })
        };
        let su = parse(lr("su")).expect("su");
        assert_eq!(su, parse(lr("longrope")).expect("longrope"));
        assert_eq!(
            su.1,
            RopeScaling::LongRope {
                short_factor: vec![1.0, 2.0],
                long_factor: vec![3.0, 4.0],
                original_max_pos: 4096,
                max_pos: 131072,
                attention_factor: None,
            }
        );
        assert!(su.1.depends_on_seq_len());
    }

    #[test]
    fn per_layer_type_blocks() {
        let cfg = json!({
            "max_position_embeddings": 32768,
            "rope_parameters": {
                "full_attention": {"rope_type": "linear", "factor": 8.0, "rope_theta": 1e6},
                "sliding_attention": {"rope_type": "default", "rope_theta": 1e4},
            },
        });
        let full = RopeScaling::from_hf_config(&cfg, Some("full_attention"));
        assert_eq!(full, Ok((1e6, RopeScaling::Linear { factor: 8.0 })));
        let sliding = RopeScaling::from_hf_config(&cfg, Some("sliding_attention"));
        assert_eq!(sliding, Ok((1e4, RopeScaling::None)));

        let e = RopeScaling::from_hf_config(&cfg, None).expect_err("needs a layer type");
        assert!(
            e.contains("full_attention") && e.contains("sliding_attention"),
            "{e}"
        );
        let e = RopeScaling::from_hf_config(&cfg, Some("chunked_attention")).expect_err("unknown");
        assert!(e.contains("chunked_attention"), "{e}");

        // A flat block applies to every layer type.
        let flat =
            json!({"rope_parameters": {"rope_type": "linear", "factor": 2.0, "rope_theta": 1e4}});
        assert_eq!(
            RopeScaling::from_hf_config(&flat, Some("sliding_attention")),
            Ok((1e4, RopeScaling::Linear { factor: 2.0 }))
        );
    }

    #[test]
    fn gemma3_older_form() {
        // Gemma3TextConfig: rope_scaling only reaches the global layers; sliding layers use
        // rope_local_base_freq; class defaults 1e6 / 1e4.
        let cfg = json!({
            "model_type": "gemma3_text",
            "rope_theta": 1e6,
            "rope_local_base_freq": 1e4,
            "rope_scaling": {"rope_type": "linear", "factor": 8.0},
        });
        let get = |c: &Value, lt| RopeScaling::from_hf_config(c, Some(lt));
        assert_eq!(
            get(&cfg, "full_attention"),
            Ok((1e6, RopeScaling::Linear { factor: 8.0 }))
        );
        assert_eq!(get(&cfg, "sliding_attention"), Ok((1e4, RopeScaling::None)));
        let bare = json!({"model_type": "gemma3_text"});
        assert_eq!(get(&bare, "full_attention"), Ok((1e6, RopeScaling::None)));
        assert_eq!(
            get(&bare, "sliding_attention"),
            Ok((1e4, RopeScaling::None))
        );
    }

    /// Checked against transformers 5.2.0: Phi3Config's own attributes override the RoPE block
    /// when the frequencies are computed.
    #[test]
    fn phi3_class_defaults_override_the_block() {
        let cfg = json!({
            "model_type": "phi3",
            "hidden_size": 1024,
            "num_attention_heads": 8,
            "max_position_embeddings": 65536,
            "rope_scaling": {
                "type": "longrope",
                "short_factor": [],
                "long_factor": [],
                "original_max_position_embeddings": 2048,
                "partial_rotary_factor": 0.5,
            },
        });
        let (_, s) = parse(cfg.clone()).expect("parses");
        let RopeScaling::LongRope {
            original_max_pos,
            max_pos,
            ..
        } = s
        else {
            panic!("{s:?}")
        };
        assert_eq!((original_max_pos, max_pos), (4096, 65536));
        // partial_rotary_factor defaults to 1.0 at the top level, which wins.
        assert_eq!(hf_rotary_dim(&cfg, None), Ok(128));
        // Other models: the block's value stands, and a top-level one overrides it.
        let mut llama = cfg.clone();
        llama["model_type"] = json!("llama");
        assert_eq!(hf_rotary_dim(&llama, None), Ok(64));
        llama["partial_rotary_factor"] = json!(0.25);
        assert_eq!(hf_rotary_dim(&llama, None), Ok(32));
        let (_, s) = parse(llama).expect("parses");
        assert!(
            matches!(
                s,
                RopeScaling::LongRope {
                    original_max_pos: 2048,
                    ..
                }
            ),
            "{s:?}"
        );
    }

    #[test]
    fn yarn_defaults_follow_python_truthiness() {
        let yarn = |extra: Value| {
            let mut block = json!({"rope_type": "yarn", "factor": 4.0, "original_max_position_embeddings": 4096});
            for (k, v) in extra.as_object().expect("object") {
                block[k] = v.clone();
            }
            parse(json!({"max_position_embeddings": 16384, "rope_parameters": block})).map(|r| r.1)
        };
        let base = RopeScaling::Yarn {
            factor: 4.0,
            original_max_pos: 4096,
            beta_fast: 32.0,
            beta_slow: 1.0,
            attention_factor: None,
            mscale: None,
            mscale_all_dim: None,
            truncate: true,
        };
        assert_eq!(yarn(json!({})), Ok(base.clone()));
        assert_eq!(
            yarn(json!({"beta_fast": 0, "beta_slow": null})),
            Ok(base.clone())
        );
        let RopeScaling::Yarn { truncate, .. } = yarn(json!({"truncate": null})).expect("parses")
        else {
            unreachable!()
        };
        assert!(!truncate, "`.get('truncate', True)` of null is falsy");
        // factor null: the ratio of the context lengths.
        let RopeScaling::Yarn { factor, .. } = yarn(json!({"factor": null})).expect("parses")
        else {
            unreachable!()
        };
        assert_eq!(factor, 4.0);
        assert!(yarn(json!({"truncate": "yes"})).is_err());

        // Default attention factor 0.1·ln(factor) + 1; mscale only counts with mscale_all_dim.
        let attn = |s: &RopeScaling| inv_freq(1e4, 64, s, 0).1;
        assert_eq!(attn(&base), 0.1 * 4f64.ln() + 1.0);
        let mscales = |m: Option<f64>, a: Option<f64>| RopeScaling::Yarn {
            factor: 4.0,
            original_max_pos: 4096,
            beta_fast: 32.0,
            beta_slow: 1.0,
            attention_factor: None,
            mscale: m,
            mscale_all_dim: a,
            truncate: true,
        };
        assert_eq!(attn(&mscales(Some(0.707), None)), attn(&base));
        let both = mscales(Some(1.0), Some(0.5));
        assert_eq!(
            attn(&both),
            (0.1 * 4f64.ln() + 1.0) / (0.05 * 4f64.ln() + 1.0)
        );
        let zero = mscales(Some(1.0), Some(0.0));
        assert_eq!(attn(&zero), 0.1 * 4f64.ln() + 1.0);
    }

    #[test]
    fn longrope_explicit_factor_sets_the_attention_factor() {
        let cfg = |extra: Value| {
            let mut block = json!({
                "rope_type": "longrope",
                "short_factor": [1.0, 1.0],
                "long_factor": [2.0, 2.0],
                "original_max_position_embeddings": 2048,
            });
            for (k, v) in extra.as_object().expect("object") {
                block[k] = v.clone();
            }
            json!({"max_position_embeddings": 65536, "rope_scaling": block})
        };
        let attn_of = |c: Value| {
            let (t, s) = parse(c).expect("parses");
            RopeTable::new(t, 4, &s, 0).expect("table").attn_factor
        };
        let from_lengths = (1.0 + 32f64.ln() / 2048f64.ln()).sqrt();
        assert_eq!(attn_of(cfg(json!({}))), from_lengths);
        assert_eq!(
            attn_of(cfg(json!({"factor": 8.0}))),
            (1.0 + 8f64.ln() / 2048f64.ln()).sqrt()
        );
        assert_eq!(
            attn_of(cfg(json!({"factor": 8.0, "attention_factor": 1.5}))),
            1.5
        );
        assert_eq!(attn_of(cfg(json!({"factor": 1.0}))), 1.0);
    }

    #[test]
    fn unknown_rope_type_is_named() {
        let e =
            parse_err(json!({"rope_scaling": {"type": "mrope", "mrope_section": [16, 24, 24]}}));
        assert!(
            e.contains("'mrope'") && e.contains("rope_scaling.rope_type"),
            "{e}"
        );
        let e = parse_err(json!({"rope_parameters": {"rope_type": 3, "rope_theta": 1e4}}));
        assert!(e.contains("rope_type"), "{e}");
    }

    #[test]
    fn bad_values_are_errors() {
        let lin = |f: Value| json!({"rope_scaling": {"type": "linear", "factor": f}});
        for bad in [json!(0.0), json!(-2.0), json!("2.0"), json!([2.0])] {
            let e = parse_err(lin(bad.clone()));
            assert!(e.contains("factor"), "{bad}: {e}");
        }
        assert!(parse_err(json!({"rope_scaling": {"type": "linear"}})).contains("factor: missing"));
        assert!(
            parse_err(json!({"rope_scaling": {"type": "linear", "factor": null}}))
                .contains("missing")
        );

        // Structure.
        assert!(RopeScaling::from_hf_config(&json!([1, 2]), None).is_err());
        assert!(parse_err(json!({"rope_scaling": "linear"})).contains("rope_scaling"));
        assert!(parse_err(json!({"rope_parameters": [1]})).contains("rope_parameters"));

        // θ.
        for theta in [json!(1.0), json!(-1e4), json!(0), json!("1e4")] {
            let e = parse_err(json!({"rope_theta": theta.clone()}));
            assert!(e.contains("rope_theta"), "{theta}: {e}");
        }
        let e = parse_err(json!({"rope_parameters": {"rope_type": "default", "rope_theta": 0.5}}));
        assert!(e.contains("rope_parameters.rope_theta"), "{e}");

        // Dynamic NTK needs the top-level context length.
        let e = parse_err(json!({"rope_scaling": {"type": "dynamic", "factor": 2.0}}));
        assert!(e.contains("max_position_embeddings"), "{e}");
        let e = parse_err(
            json!({"max_position_embeddings": 0, "rope_scaling": {"type": "dynamic", "factor": 2.0}}),
        );
        assert!(e.contains("max_position_embeddings"), "{e}");

        // Llama 3: all keys, high above low.
        let l3 = |low: f64, high: f64| {
            json!({"rope_scaling": {"rope_type": "llama3", "factor": 8.0, "low_freq_factor": low,
                   "high_freq_factor": high, "original_max_position_embeddings": 8192}})
        };
        assert!(parse(l3(1.0, 4.0)).is_ok());
        assert!(parse_err(l3(4.0, 4.0)).contains("high_freq_factor"));
        assert!(parse_err(l3(4.0, 1.0)).contains("high_freq_factor"));
        assert!(parse_err(l3(0.0, 1.0)).contains("low_freq_factor"));
        let e = parse_err(
            json!({"rope_scaling": {"rope_type": "llama3", "factor": 8.0, "low_freq_factor": 1.0}}),
        );
        assert!(e.contains("high_freq_factor: missing"), "{e}");
        let e = parse_err(
            json!({"rope_scaling": {"rope_type": "llama3", "factor": 8.0, "low_freq_factor": 1.0,
                                 "high_freq_factor": 4.0, "original_max_position_embeddings": 4096.5}}),
        );
        assert!(e.contains("original_max_position_embeddings"), "{e}");

        // YaRN.
        let yarn = |k: &str, v: Value| {
            let mut b = json!({"rope_type": "yarn", "factor": 4.0, "original_max_position_embeddings": 4096});
            b[k] = v;
            json!({"max_position_embeddings": 16384, "rope_scaling": b})
        };
        assert!(parse_err(yarn("beta_fast", json!(-1.0))).contains("beta_fast"));
        assert!(parse_err(yarn("attention_factor", json!(0.0))).contains("attention_factor"));
        assert!(parse_err(yarn("mscale", json!("big"))).contains("mscale"));
        assert!(
            parse_err(yarn("original_max_position_embeddings", json!(-5))).contains("original_max")
        );
        let mut no_factor = yarn("beta_fast", json!(32.0));
        no_factor["rope_scaling"]
            .as_object_mut()
            .expect("object")
            .remove("factor");
        assert!(parse_err(no_factor).contains("factor: missing"));

        // LongRoPE.
        let lr = |short: Value| {
            json!({"max_position_embeddings": 131072, "original_max_position_embeddings": 4096,
                   "rope_scaling": {"type": "longrope", "short_factor": short, "long_factor": [1.0, 2.0]}})
        };
        assert!(parse_err(lr(json!([1.0, "x"]))).contains("short_factor[1]"));
        assert!(parse_err(lr(json!([1.0, 0.0]))).contains("short_factor[1]"));
        assert!(parse_err(lr(json!(1.0))).contains("short_factor"));
        let e = parse_err(
            json!({"rope_scaling": {"type": "longrope", "short_factor": [1.0], "long_factor": [1.0]}}),
        );
        assert!(e.contains("max_position_embeddings"), "{e}");
    }

    #[test]
    fn rotary_dim_from_config() {
        assert_eq!(
            hf_rotary_dim(
                &json!({"hidden_size": 4096, "num_attention_heads": 32}),
                None
            ),
            Ok(128)
        );
        let with = |extra: Value| {
            let mut c = json!({"hidden_size": 4096, "num_attention_heads": 32, "head_dim": 256});
            for (k, v) in extra.as_object().expect("object") {
                c[k] = v.clone();
            }
            hf_rotary_dim(&c, None)
        };
        assert_eq!(with(json!({})), Ok(256));
        assert_eq!(with(json!({"head_dim": null})), Ok(128));
        assert_eq!(with(json!({"partial_rotary_factor": 0.25})), Ok(64));
        assert_eq!(
            with(
                json!({"rope_parameters": {"rope_type": "default", "rope_theta": 1e4, "partial_rotary_factor": 0.5}})
            ),
            Ok(128)
        );
        for bad in [
            json!(0.0),
            json!(-0.5),
            json!(1.5),
            json!(0.001),
            json!("half"),
        ] {
            assert!(
                with(json!({"partial_rotary_factor": bad.clone()})).is_err(),
                "{bad}"
            );
        }
        assert!(with(json!({"head_dim": 0})).is_err());
        assert!(hf_rotary_dim(&json!({"hidden_size": 4096}), None).is_err());
        assert!(hf_rotary_dim(
            &json!({"hidden_size": 4096, "num_attention_heads": 0}),
            None
        )
        .is_err());
    }

    #[test]
    fn validate_checks_n_rot_and_list_lengths() {
        let lr = RopeScaling::LongRope {
            short_factor: vec![1.0; 4],
            long_factor: vec![2.0; 3],
            original_max_pos: 4096,
            max_pos: 131072,
            attention_factor: None,
        };
        let e = validate(&lr, 8).expect_err("long_factor is short");
        assert!(e.contains("long_factor") && e.contains("needs 4"), "{e}");
        assert!(validate(
            &RopeScaling::Factors {
                factors: vec![1.0; 4]
            },
            8
        )
        .is_ok());
        assert!(validate(
            &RopeScaling::Factors {
                factors: vec![1.0; 4]
            },
            10
        )
        .is_err());
        assert!(validate(
            &RopeScaling::Factors {
                factors: vec![1.0, -1.0]
            },
            4
        )
        .is_err());
        assert!(validate(&RopeScaling::None, 0).is_err());
        assert!(validate(&RopeScaling::None, 7).is_err());
        let dyn_ntk = RopeScaling::DynamicNtk {
            factor: 2.0,
            original_max_pos: 512,
        };
        assert!(validate(&dyn_ntk, 4).is_ok());
        assert!(validate(&dyn_ntk, 2).is_err());
        assert!(validate(&RopeScaling::Linear { factor: f64::NAN }, 4).is_err());

        for base in [1.0, 0.0, -1.0, f64::INFINITY, f64::NAN] {
            assert!(
                RopeTable::new(base, 8, &RopeScaling::None, 0).is_err(),
                "{base}"
            );
        }
        assert!(RopeTable::new(1e4, 8, &lr, 0).is_err());
        // Parameters that pass the range checks but overflow the formulas.
        let huge = RopeScaling::DynamicNtk {
            factor: 1e300,
            original_max_pos: 1,
        };
        assert!(RopeTable::new(1e4, 4, &huge, 1 << 40).is_err());

        // The infallible path never panics, whatever it is given.
        let _ = inv_freq(1e4, 8, &lr, 10_000);
        let _ = inv_freq(0.0, 0, &RopeScaling::None, 0);
        let _ = inv_freq(1e4, 3, &RopeScaling::Factors { factors: vec![] }, 0);
        let _ = inv_freq(1e4, 2, &dyn_ntk, 1 << 20);
    }

    #[test]
    fn factors_divide_plain_frequencies() {
        let plain = inv_freq(5e5, 8, &RopeScaling::None, 0).0;
        let factors = vec![1.0, 2.0, 4.0, 8.0];
        let (scaled, attn) = inv_freq(
            5e5,
            8,
            &RopeScaling::Factors {
                factors: factors.clone(),
            },
            0,
        );
        assert_eq!(attn, 1.0);
        for ((p, s), f) in plain.iter().zip(&scaled).zip(&factors) {
            assert_eq!(*s, p / f);
        }
        assert_eq!(plain[0], 1.0);
        assert!(rel(plain[1], 5e5f64.powf(-0.25)) < 1e-15);
    }

    #[test]
    fn seq_len_only_moves_dynamic_and_longrope() {
        let lr = RopeScaling::LongRope {
            short_factor: vec![1.0, 1.0],
            long_factor: vec![2.0, 4.0],
            original_max_pos: 100,
            max_pos: 400,
            attention_factor: None,
        };
        let dyn_ntk = RopeScaling::DynamicNtk {
            factor: 2.0,
            original_max_pos: 100,
        };
        let at = |s: &RopeScaling, n| inv_freq(1e4, 4, s, n).0;
        assert_eq!(at(&lr, 0), at(&lr, 100));
        assert_eq!(at(&lr, 101), vec![0.5, 0.25 * 0.01]);
        assert_eq!(at(&dyn_ntk, 0), at(&RopeScaling::None, 0));
        assert_eq!(at(&dyn_ntk, 100), at(&RopeScaling::None, 0));
        assert!(at(&dyn_ntk, 200)[1] < at(&dyn_ntk, 101)[1]);
        for s in [RopeScaling::Linear { factor: 2.0 }, RopeScaling::None] {
            assert!(!s.depends_on_seq_len());
            assert_eq!(at(&s, 0), at(&s, 1 << 30));
        }
        assert!(dyn_ntk.depends_on_seq_len());
    }

    #[test]
    fn cos_sin_carry_the_attention_factor() {
        let t = RopeTable {
            inv_freq: vec![1.0, 0.5],
            attn_factor: 2.0,
        };
        let cs: Vec<_> = t.cos_sin(3).collect();
        assert_eq!(
            cs,
            vec![
                (2.0 * 3f64.cos(), 2.0 * 3f64.sin()),
                (2.0 * 1.5f64.cos(), 2.0 * 1.5f64.sin())
            ]
        );
    }
}
