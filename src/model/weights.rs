//! Binds the file's named tensors to the roles of the forward pass, checking every shape against
//! the config, and hands each one to the backend to wrap (the CPU keeps a view into the map).

use std::sync::Arc;

use memmap2::Mmap;

use super::arch::NormKind;
use super::config::ModelConfig;
use super::gguf::GgufFile;
use crate::error::{Error, Result};
use crate::quant::GgmlType;

/// What a weight is used for; backends check that they have a kernel for its type in that role.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Role {
    /// A matrix multiplied with activations (`rows` outputs of `cols` inputs).
    Matmul,
    /// A per-channel norm weight or bias.
    Norm,
    /// A token-embedding table (rows are looked up).
    Embedding,
}

impl Role {
    /// The role as it reads in error messages.
    pub fn name(self) -> &'static str {
        match self {
            Role::Matmul => "matmul",
            Role::Norm => "norm",
            Role::Embedding => "embedding lookup",
        }
    }
}

/// A tensor as stored in the file: `rows` rows of `cols` elements of type `ty`.
///
/// Produced only after the shape was checked against the config, so `len` is exactly
/// `rows * ty.row_bytes(cols)` and `start..start + len` lies within the map. `start` has the
/// file's alignment relative to the data section, not necessarily in memory.
#[derive(Clone)]
pub struct WeightView<'a> {
    /// Tensor name in the file.
    pub name: &'a str,
    /// Storage type.
    pub ty: GgmlType,
    /// Rows (product of the GGUF dimensions after the first; 1 for a vector).
    pub rows: usize,
    /// Elements per row (the first, contiguous GGUF dimension).
    pub cols: usize,
    /// The whole file map and this tensor's byte range in it, so a backend can keep a zero-copy
    /// reference that outlives the borrow.
    pub map: &'a Arc<Mmap>,
    /// Absolute byte offset of the data in the map.
    pub start: usize,
    /// Bytes of data.
    pub len: usize,
}

impl WeightView<'_> {
    /// The tensor's bytes in the map.
    pub fn bytes(&self) -> &[u8] {
        &self.map[self.start..self.start + self.len]
    }
}

/// The weights of one transformer block, in the backend's form `W`. Tensor names are
/// `blk.N.<name>.weight` (`.bias` for biases); shapes below are GGUF `[cols, rows]`.
/// Optional norms are present exactly when the architecture row lists them; biases only for
/// LayerNorm families, and only when the file has them.
pub struct LayerWeights<W> {
    /// Pre-attention norm weight (`attn_norm`), `[dim]`.
    pub attn_norm: W,
    /// Pre-attention norm bias (LayerNorm families only).
    pub attn_norm_b: Option<W>,
    /// Q projection (`attn_q`), `[dim, n_head * head_dim]`.
    pub wq: W,
    /// K projection (`attn_k`), `[dim, n_head_kv * head_dim]`.
    pub wk: W,
    /// V projection (`attn_v`), `[dim, n_head_kv * head_dim_v]`.
    pub wv: W,
    /// Attention output projection (`attn_output`), `[n_head * head_dim_v, dim]`.
    pub wo: W,
    /// Per-head Q norm (`attn_q_norm`), `[head_dim]`.
    pub q_norm: Option<W>,
    /// Per-head K norm (`attn_k_norm`), `[head_dim]`.
    pub k_norm: Option<W>,
    /// Norm of the attention output before the residual add (`post_attention_norm`), `[dim]`.
    pub post_attn_norm: Option<W>,
    /// Pre-FFN norm weight (`ffn_norm`), `[dim]`.
    pub ffn_norm: W,
    /// Pre-FFN norm bias (LayerNorm families only).
    pub ffn_norm_b: Option<W>,
    /// FFN gate projection (`ffn_gate`), `[dim, n_ff]`.
    pub gate: W,
    /// FFN up projection (`ffn_up`), `[dim, n_ff]`.
    pub up: W,
    /// FFN down projection (`ffn_down`), `[n_ff, dim]`.
    pub down: W,
    /// Norm of the FFN output before the residual add (`post_ffw_norm`), `[dim]`.
    pub post_ffn_norm: Option<W>,
}

/// Every weight of a model, in the backend's form `W`, bound by [`ModelWeights::bind`].
pub struct ModelWeights<W> {
    /// Token embedding table (`token_embd.weight`), `[dim, n_vocab]`, bound as [`Role::Embedding`].
    pub tok_embd: W,
    /// Final norm weight (`output_norm.weight`), `[dim]`.
    pub output_norm: W,
    /// Final norm bias (LayerNorm families only, when present).
    pub output_norm_b: Option<W>,
    /// Logits projection (`output.weight`, `[dim, n_vocab]`), or `token_embd.weight` bound a
    /// second time as [`Role::Matmul`] when the file has none (see `tied_output`).
    pub output: W,
    /// The output projection is the embedding table itself (no `output.weight` in the file).
    pub tied_output: bool,
    /// One entry per layer.
    pub layers: Vec<LayerWeights<W>>,
}

struct Binder<'a, F> {
    f: &'a GgufFile,
    arch: &'static str,
    load: F,
}

impl<'a, W, F: FnMut(WeightView<'_>, Role) -> Result<W>> Binder<'a, F> {
    /// Required tensor `name` with GGUF dims `[cols, rows]` (or `[cols]` for vectors).
    fn req(&mut self, name: &str, dims: &[usize], role: Role) -> Result<W> {
        self.opt(name, dims, role)?
            .ok_or_else(|| Error::MissingTensor {
                arch: self.arch.to_string(),
                name: name.to_string(),
            })
    }

    fn opt(&mut self, name: &str, dims: &[usize], role: Role) -> Result<Option<W>> {
        let Some(t) = self.f.tensor(name) else {
            return Ok(None);
        };
        // Trailing 1s are insignificant in ggml shapes.
        let mut found = t.dims.clone();
        while found.len() > dims.len() && found.last() == Some(&1) {
            found.pop();
        }
        let expected: Vec<u64> = dims.iter().map(|&d| d as u64).collect();
        if found != expected {
            return Err(Error::TensorShape {
                name: name.to_string(),
                expected,
                found: t.dims.clone(),
            });
        }
        let view = WeightView {
            name: &t.name,
            ty: t.ty,
            rows: t.n_rows(),
            cols: t.row_len(),
            map: self.f.map(),
            start: t.start,
            len: t.len,
        };
        (self.load)(view, role).map(Some)
    }
}

impl<W> ModelWeights<W> {
    /// Bind every tensor the config needs. `load` turns a checked view into a backend weight.
    ///
    /// Errors when a required tensor is missing, when any bound tensor's dimensions differ from
    /// what the config implies (trailing 1s ignored), or when `load` fails.
    pub fn bind(
        f: &GgufFile,
        c: &ModelConfig,
        load: impl FnMut(WeightView<'_>, Role) -> Result<W>,
    ) -> Result<Self> {
        let mut b = Binder {
            f,
            arch: c.arch.name,
            load,
        };
        let (dim, ff) = (c.dim, c.n_ff);
        let layernorm = c.arch.norm == NormKind::Layer;
        let tok_embd = b.req("token_embd.weight", &[dim, c.n_vocab], Role::Embedding)?;
        let output_norm = b.req("output_norm.weight", &[dim], Role::Norm)?;
        let output_norm_b = if layernorm {
            b.opt("output_norm.bias", &[dim], Role::Norm)?
        } else {
            None
        };
        let (output, tied_output) = match b.opt("output.weight", &[dim, c.n_vocab], Role::Matmul)? {
            Some(w) => (w, false),
            None => (
                b.req("token_embd.weight", &[dim, c.n_vocab], Role::Matmul)?,
                true,
            ),
        };
        let mut layers = Vec::with_capacity(c.n_layer);
        for il in 0..c.n_layer {
            let n = |s: &str| format!("blk.{il}.{s}.weight");
            let nb = |s: &str| format!("blk.{il}.{s}.bias");
            let needs = |s: &str| c.arch.layer_tensors.contains(&s);
            // Norms only some families have: required when the row lists them, else absent.
            let mut family_norm = |s: &str, dims: &[usize]| -> Result<Option<W>> {
                if needs(s) {
                    b.req(&n(s), dims, Role::Norm).map(Some)
                } else {
                    Ok(None)
                }
            };
            let q_norm = family_norm("attn_q_norm", &[c.head_dim])?;
            let k_norm = family_norm("attn_k_norm", &[c.head_dim])?;
            let post_attn_norm = family_norm("post_attention_norm", &[dim])?;
            let post_ffn_norm = family_norm("post_ffw_norm", &[dim])?;
            layers.push(LayerWeights {
                attn_norm: b.req(&n("attn_norm"), &[dim], Role::Norm)?,
                attn_norm_b: if layernorm {
                    b.opt(&nb("attn_norm"), &[dim], Role::Norm)?
                } else {
                    None
                },
                wq: b.req(&n("attn_q"), &[dim, c.q_dim()], Role::Matmul)?,
                wk: b.req(&n("attn_k"), &[dim, c.kv_dim()], Role::Matmul)?,
                wv: b.req(&n("attn_v"), &[dim, c.v_dim()], Role::Matmul)?,
                wo: b.req(
                    &n("attn_output"),
                    &[c.n_head * c.head_dim_v, dim],
                    Role::Matmul,
                )?,
                q_norm,
                k_norm,
                post_attn_norm,
                ffn_norm: b.req(&n("ffn_norm"), &[dim], Role::Norm)?,
                ffn_norm_b: if layernorm {
                    b.opt(&nb("ffn_norm"), &[dim], Role::Norm)?
                } else {
                    None
                },
                gate: b.req(&n("ffn_gate"), &[dim, ff], Role::Matmul)?,
                up: b.req(&n("ffn_up"), &[dim, ff], Role::Matmul)?,
                down: b.req(&n("ffn_down"), &[ff, dim], Role::Matmul)?,
                post_ffn_norm,
            });
        }
        Ok(ModelWeights {
            tok_embd,
            output_norm,
            output_norm_b,
            output,
            tied_output,
            layers,
        })
    }
}
