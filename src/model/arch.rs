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

/// The gate activation of the feed-forward block (`act(gate) * up`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize)]
pub enum Activation {
    /// SiLU, `x * sigmoid(x)` (SwiGLU: Llama).
    Silu,
    /// GELU, tanh approximation (Gemma's GeGLU).
    GeluTanh,
}

/// How RoPE pairs the dimensions of a head.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize)]
pub enum RopeLayout {
    /// ggml "NORM": adjacent pairs (`x[2i]`, `x[2i+1]`). llama's converter permutes Q/K for this.
    Adjacent,
    /// ggml "NEOX": halves (`x[i]`, `x[i + n_rot/2]`).
    Halves,
}

/// How the attention scores are scaled before the softmax.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize)]
pub enum AttnScale {
    /// 1/sqrt(head_dim)
    InvSqrtHeadDim,
}

/// One model family. Tensor names follow llama.cpp's GGUF naming (`blk.N.attn_q.weight`).
#[derive(Debug, serde::Serialize)]
pub struct ArchRow {
    /// `general.architecture` value.
    pub name: &'static str,
    /// Normalisation of every norm in the model.
    pub norm: NormKind,
    /// Gate activation of the FFN.
    pub activation: Activation,
    /// RoPE dimension pairing.
    pub rope_layout: RopeLayout,
    /// Extra norm on the attention output before the residual add (Gemma 2/3).
    pub post_attn_norm: bool,
    /// Extra norm on the FFN output before the residual add (Gemma 2/3).
    pub post_ffn_norm: bool,
    /// RMSNorm over each head of Q and K before RoPE (Gemma 3, Qwen 3).
    pub qk_norm: bool,
    /// Multiply the token embedding by sqrt(dim) (Gemma).
    pub embed_scale_sqrt_dim: bool,
    /// Sliding-window layer pattern when the file has `attention.sliding_window` but no pattern:
    /// with pattern N every N-th layer (N-1, 2N-1, ...) is global, the others windowed.
    pub default_swa_pattern: Option<u32>,
    /// RoPE base for windowed layers when the file has no `rope.freq_base_swa`.
    pub default_rope_base_swa: Option<f32>,
    /// Attention score scaling.
    pub attn_scale: AttnScale,
    /// Tensors every layer must have, as the name between `blk.N.` and `.weight`; optional ones
    /// are looked up by the loader.
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

/// Every supported family (`llama`, `gemma3`).
pub static ARCHITECTURES: &[ArchRow] = &[
    ArchRow {
        name: "llama",
        norm: NormKind::Rms,
        activation: Activation::Silu,
        rope_layout: RopeLayout::Adjacent,
        post_attn_norm: false,
        post_ffn_norm: false,
        qk_norm: false,
        embed_scale_sqrt_dim: false,
        default_swa_pattern: None,
        default_rope_base_swa: None,
        attn_scale: AttnScale::InvSqrtHeadDim,
        layer_tensors: LLAMA_LAYER,
    },
    ArchRow {
        name: "gemma3",
        norm: NormKind::Rms,
        activation: Activation::GeluTanh,
        rope_layout: RopeLayout::Halves,
        post_attn_norm: true,
        post_ffn_norm: true,
        qk_norm: true,
        embed_scale_sqrt_dim: true,
        // llama.cpp's gemma3 loader: pattern 6 and base 10000 when the file does not say.
        default_swa_pattern: Some(6),
        default_rope_base_swa: Some(10_000.0),
        attn_scale: AttnScale::InvSqrtHeadDim,
        layer_tensors: GEMMA3_LAYER,
    },
];

/// The row whose `name` equals a `general.architecture` value exactly, if supported.
pub fn find(name: &str) -> Option<&'static ArchRow> {
    ARCHITECTURES.iter().find(|a| a.name == name)
}

/// The supported architecture names, comma-separated (for error messages).
pub fn supported_names() -> String {
    ARCHITECTURES
        .iter()
        .map(|a| a.name)
        .collect::<Vec<_>>()
        .join(", ")
}
