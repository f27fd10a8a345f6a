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
    pub fn name(self) -> &'static str {
        match self {
            Role::Matmul => "matmul",
            Role::Norm => "norm",
            Role::Embedding => "embedding lookup",
        }
    }
}

/// A tensor as stored in the file: `rows` rows of `cols` elements of type `ty`.
#[derive(Clone)]
pub struct WeightView<'a> {
    pub name: &'a str,
    pub ty: GgmlType,
    pub rows: usize,
    pub cols: usize,
    /// The whole file map and this tensor's byte range in it, so a backend can keep a zero-copy
    /// reference that outlives the borrow.
    pub map: &'a Arc<Mmap>,
    pub start: usize,
    pub len: usize,
}

impl WeightView<'_> {
    pub fn bytes(&self) -> &[u8] {
        &self.map[self.start..self.start + self.len]
    }
}

pub struct LayerWeights<W> {
    pub attn_norm: W,
    pub attn_norm_b: Option<W>,
    pub wq: W,
    pub wk: W,
    pub wv: W,
    pub wo: W,
    pub q_norm: Option<W>,
    pub k_norm: Option<W>,
    pub post_attn_norm: Option<W>,
    pub ffn_norm: W,
    pub ffn_norm_b: Option<W>,
    pub gate: W,
    pub up: W,
    pub down: W,
    pub post_ffn_norm: Option<W>,
}

pub struct ModelWeights<W> {
    pub tok_embd: W,
    pub output_norm: W,
    pub output_norm_b: Option<W>,
    pub output: W,
    /// The output projection is the embedding table itself (no `output.weight` in the file).
    pub tied_output: bool,
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
