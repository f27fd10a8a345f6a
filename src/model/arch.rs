//! The architecture table: one row of data per model family. The forward pass in `graph` reads
//! these flags; adding a family means adding a row (and, at most, a new flag), never a new
//! forward pass.

/// Which normalisation a family uses.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize)]
pub enum NormKind {
    /// x / rms(x) * w
    Rms,
    /// (x - mean) / std * w + b
    Layer,
}

/// The activation of the feed-forward block: `act(gate) * up` when the family is gated,
/// `act(up)` otherwise.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize)]
pub enum Activation {
    /// SiLU, `x * sigmoid(x)` (SwiGLU: Llama).
    Silu,
    /// GELU, tanh approximation (Gemma's GeGLU, Phi-2's `gelu_new`).
    GeluTanh,
}

/// How RoPE pairs the dimensions of a head.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize)]
pub enum RopeLayout {
    /// ggml "NORM": adjacent pairs (`x[2i]`, `x[2i+1]`). llama's converter permutes Q/K for this.
    Adjacent,
    /// ggml "NEOX" and transformers' `rotate_half`: halves (`x[i]`, `x[i + n_rot/2]`).
    Halves,
}

/// One model family. Tensor names follow llama.cpp's GGUF naming (`blk.N.attn_q.weight`);
/// safetensors checkpoints are renamed into it through `hf_*` fields and the common table in
/// [`crate::model::hf`].
#[derive(Clone, Debug, serde::Serialize)]
pub struct ArchRow {
    /// `general.architecture` value.
    pub name: &'static str,
    /// Hugging Face `config.json` `model_type` values of this family.
    pub hf_model_types: &'static [&'static str],
    /// Normalisation of every norm in the model.
    pub norm: NormKind,
    /// Activation of the FFN.
    pub activation: Activation,
    /// The FFN is gated (`down(act(gate(x)) * up(x))`); otherwise `down(act(up(x)))` (Phi-2).
    pub ffn_gated: bool,
    /// Attention and FFN read the same normed input and both add to the residual (Phi-2), so
    /// there is no `ffn_norm`.
    pub parallel_residual: bool,
    /// RoPE dimension pairing of the GGUF tensors (safetensors always use halves).
    pub rope_layout: RopeLayout,
    /// Extra norm on the attention output before the residual add (Gemma 2/3).
    pub post_attn_norm: bool,
    /// Extra norm on the FFN output before the residual add (Gemma 2/3).
    pub post_ffn_norm: bool,
    /// RMSNorm over each head of Q and K before RoPE (Gemma 3, Qwen 3).
    pub qk_norm: bool,
    /// Multiply the token embedding by sqrt(dim) (Gemma).
    pub embed_scale_sqrt_dim: bool,
    /// Sliding-window layer pattern when the file has a window but no pattern: with pattern N
    /// every N-th layer (N-1, 2N-1, ...) is global, the others windowed.
    pub default_swa_pattern: Option<u32>,
    /// RoPE base for windowed layers when the file has no `rope.freq_base_swa`.
    pub default_rope_base_swa: Option<f32>,
    /// Norm weights in transformers' checkpoints are stored as `w - 1` and applied as `1 + w`
    /// (Gemma); llama.cpp's converter adds the 1 when it writes the GGUF.
    pub hf_norm_plus_one: bool,
    /// The GGUF name of HF's `post_attention_layernorm`: the pre-FFN norm in most families,
    /// the attention post-norm in Gemma 2/3 (whose pre-FFN norm is `pre_feedforward_layernorm`).
    pub hf_post_attention_layernorm: &'static str,
    /// Tensors every layer must have, as the name between `blk.N.` and `.weight`. `attn_q`,
    /// `attn_k` and `attn_v` may come fused as one `attn_qkv`, and a gated FFN's `ffn_gate` fused
    /// into `ffn_up` (gate rows first), as Phi-3 stores them.
    pub layer_tensors: &'static [&'static str],
}

const LLAMA_LAYER: &[&str] = &[
    "attn_norm",
    "attn_q",
    "attn_k",
    "attn_v",
    "attn_output",
    "ffn_norm",
    "ffn_gate",
    "ffn_up",
    "ffn_down",
];

const QK_NORM_LAYER: &[&str] = &[
    "attn_norm",
    "attn_q",
    "attn_k",
    "attn_v",
    "attn_output",
    "attn_q_norm",
    "attn_k_norm",
    "ffn_norm",
    "ffn_gate",
    "ffn_up",
    "ffn_down",
];

const GEMMA2_LAYER: &[&str] = &[
    "attn_norm",
    "attn_q",
    "attn_k",
    "attn_v",
    "attn_output",
    "post_attention_norm",
    "ffn_norm",
    "ffn_gate",
    "ffn_up",
    "ffn_down",
    "post_ffw_norm",
];

const GEMMA3_LAYER: &[&str] = &[
    "attn_norm",
    "attn_q",
    "attn_k",
    "attn_v",
    "attn_output",
    "attn_q_norm",
    "attn_k_norm",
    "post_attention_norm",
    "ffn_norm",
    "ffn_gate",
    "ffn_up",
    "ffn_down",
    "post_ffw_norm",
];

const PHI2_LAYER: &[&str] = &[
    "attn_norm",
    "attn_q",
    "attn_k",
    "attn_v",
    "attn_output",
    "ffn_up",
    "ffn_down",
];

const PHI3_LAYER: &[&str] = &[
    "attn_norm",
    "attn_q",
    "attn_k",
    "attn_v",
    "attn_output",
    "ffn_norm",
    "ffn_up",
    "ffn_down",
];

/// The fields most families share; rows override what differs.
const BASE: ArchRow = ArchRow {
    name: "",
    hf_model_types: &[],
    norm: NormKind::Rms,
    activation: Activation::Silu,
    ffn_gated: true,
    parallel_residual: false,
    rope_layout: RopeLayout::Halves,
    post_attn_norm: false,
    post_ffn_norm: false,
    qk_norm: false,
    embed_scale_sqrt_dim: false,
    default_swa_pattern: None,
    default_rope_base_swa: None,
    hf_norm_plus_one: false,
    hf_post_attention_layernorm: "ffn_norm",
    layer_tensors: LLAMA_LAYER,
};

/// Every supported family.
pub static ARCHITECTURES: &[ArchRow] = &[
    // Llama 1/2/3, Mistral (its converter writes `llama`), DeepSeek-R1 Llama distills.
    ArchRow {
        name: "llama",
        hf_model_types: &["llama", "mistral"],
        rope_layout: RopeLayout::Adjacent,
        ..BASE
    },
    // Qwen 2 / 2.5, DeepSeek-R1 Qwen distills: QKV bias (bound like every optional bias).
    ArchRow {
        name: "qwen2",
        hf_model_types: &["qwen2"],
        ..BASE
    },
    ArchRow {
        name: "qwen3",
        hf_model_types: &["qwen3"],
        qk_norm: true,
        layer_tensors: QK_NORM_LAYER,
        ..BASE
    },
    ArchRow {
        name: "phi2",
        hf_model_types: &["phi"],
        norm: NormKind::Layer,
        activation: Activation::GeluTanh,
        ffn_gated: false,
        parallel_residual: true,
        layer_tensors: PHI2_LAYER,
        ..BASE
    },
    ArchRow {
        name: "phi3",
        hf_model_types: &["phi3"],
        layer_tensors: PHI3_LAYER,
        ..BASE
    },
    ArchRow {
        name: "gemma",
        hf_model_types: &["gemma"],
        activation: Activation::GeluTanh,
        embed_scale_sqrt_dim: true,
        hf_norm_plus_one: true,
        ..BASE
    },
    ArchRow {
        name: "gemma2",
        hf_model_types: &["gemma2"],
        activation: Activation::GeluTanh,
        post_attn_norm: true,
        post_ffn_norm: true,
        embed_scale_sqrt_dim: true,
        // Gemma 2 alternates: even layers windowed, odd layers global.
        default_swa_pattern: Some(2),
        hf_norm_plus_one: true,
        hf_post_attention_layernorm: "post_attention_norm",
        layer_tensors: GEMMA2_LAYER,
        ..BASE
    },
    ArchRow {
        name: "gemma3",
        hf_model_types: &["gemma3_text", "gemma3"],
        activation: Activation::GeluTanh,
        post_attn_norm: true,
        post_ffn_norm: true,
        qk_norm: true,
        embed_scale_sqrt_dim: true,
        // llama.cpp's gemma3 loader: pattern 6 and base 10000 when the file does not say.
        default_swa_pattern: Some(6),
        default_rope_base_swa: Some(10_000.0),
        hf_norm_plus_one: true,
        hf_post_attention_layernorm: "post_attention_norm",
        layer_tensors: GEMMA3_LAYER,
        ..BASE
    },
];

/// The row whose `name` equals a `general.architecture` value exactly, if supported.
pub fn find(name: &str) -> Option<&'static ArchRow> {
    ARCHITECTURES.iter().find(|a| a.name == name)
}

/// The row for a Hugging Face `model_type`, if supported.
pub fn find_hf(model_type: &str) -> Option<&'static ArchRow> {
    ARCHITECTURES
        .iter()
        .find(|a| a.hf_model_types.contains(&model_type))
}

/// The supported architecture names, comma-separated (for error messages).
pub fn supported_names() -> String {
    ARCHITECTURES
        .iter()
        .map(|a| a.name)
        .collect::<Vec<_>>()
        .join(", ")
}

/// The supported Hugging Face `model_type` values, comma-separated (for error messages).
pub fn supported_hf_types() -> String {
    ARCHITECTURES
        .iter()
        .flat_map(|a| a.hf_model_types.iter().copied())
        .collect::<Vec<_>>()
        .join(", ")
}
