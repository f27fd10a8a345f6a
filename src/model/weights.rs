//! Binds the file's named tensors to the roles of the forward pass, checking every shape against
//! the config, and hands each one to the backend to wrap (the CPU keeps a view into the map).

use std::collections::HashSet;
use std::sync::Arc;

use memmap2::Mmap;

use super::arch::NormKind;
use super::config::ModelConfig;
use super::source::ModelSource;
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
    /// Per-row scales of an I8 weight (compressed-tensors `weight_scale`), else `None`.
    pub scale: Option<ScaleView<'a>>,
}

/// The per-output-row scale vector of an I8 weight: `rows` values of a plain float type,
/// possibly in another shard than the weight.
#[derive(Clone)]
pub struct ScaleView<'a> {
    /// F32, F16 or BF16.
    pub ty: GgmlType,
    /// The map holding the scales.
    pub map: &'a Arc<Mmap>,
    /// Absolute byte offset of the first scale.
    pub start: usize,
    /// Bytes of scales.
    pub len: usize,
}

impl<'a> WeightView<'a> {
    /// The tensor's bytes in the map.
    pub fn bytes(&self) -> &[u8] {
        &self.map[self.start..self.start + self.len]
    }

    /// Rows `r0..r0 + n` (a fused QKV or gate/up matrix split into its parts). The caller keeps
    /// the range within `rows`.
    pub fn row_range(&self, r0: usize, n: usize) -> WeightView<'a> {
        let row_bytes = self.len / self.rows;
        let scale = self.scale.as_ref().map(|s| {
            let elem = s.len / self.rows;
            ScaleView {
                start: s.start + r0 * elem,
                len: n * elem,
                ..s.clone()
            }
        });
        WeightView {
            rows: n,
            start: self.start + r0 * row_bytes,
            len: n * row_bytes,
            scale,
            ..self.clone()
        }
    }

    /// Elements `e0..e0 + n` of a vector of a plain (unblocked) type (a fused bias split).
    pub fn element_range(&self, e0: usize, n: usize) -> WeightView<'a> {
        let elem = self.len / self.cols;
        WeightView {
            cols: n,
            start: self.start + e0 * elem,
            len: n * elem,
            ..self.clone()
        }
    }
}

/// A projection: weight matrix and, when the file has one, its bias (`.bias`).
pub struct Linear<W> {
    /// The matrix.
    pub w: W,
    /// The bias vector, one value per output row.
    pub b: Option<W>,
}

/// A norm's weight and, for LayerNorm families, its bias.
pub struct Norm<W> {
    /// The per-channel scale.
    pub w: W,
    /// The per-channel shift (LayerNorm only, when present).
    pub b: Option<W>,
}

/// The weights of one transformer block, in the backend's form `W`. Tensor names are
/// `blk.N.<name>.weight` (`.bias` for biases); shapes below are GGUF `[cols, rows]`. Optional
/// norms are present exactly when the architecture row lists them; biases whenever the file has
/// them.
pub struct LayerWeights<W> {
    /// Pre-attention norm (`attn_norm`), `[dim]`.
    pub attn_norm: Norm<W>,
    /// Q projection (`attn_q`, or the first rows of a fused `attn_qkv`), `[dim, n_head * head_dim]`.
    pub wq: Linear<W>,
    /// K projection, `[dim, n_head_kv * head_dim]`.
    pub wk: Linear<W>,
    /// V projection, `[dim, n_head_kv * head_dim_v]`.
    pub wv: Linear<W>,
    /// Attention output projection (`attn_output`), `[n_head * head_dim_v, dim]`.
    pub wo: Linear<W>,
    /// Per-head Q norm (`attn_q_norm`), `[head_dim]`.
    pub q_norm: Option<W>,
    /// Per-head K norm (`attn_k_norm`), `[head_dim]`.
    pub k_norm: Option<W>,
    /// Norm of the attention output before the residual add (`post_attention_norm`), `[dim]`.
    pub post_attn_norm: Option<W>,
    /// Pre-FFN norm (`ffn_norm`), `[dim]`; absent in parallel-residual families.
    pub ffn_norm: Option<Norm<W>>,
    /// FFN gate projection (`ffn_gate`, or the first half of a fused `ffn_up`), `[dim, n_ff]`;
    /// absent in ungated families.
    pub gate: Option<Linear<W>>,
    /// FFN up projection (`ffn_up`), `[dim, n_ff]`.
    pub up: Linear<W>,
    /// FFN down projection (`ffn_down`), `[n_ff, dim]`.
    pub down: Linear<W>,
    /// Norm of the FFN output before the residual add (`post_ffw_norm`), `[dim]`.
    pub post_ffn_norm: Option<W>,
}

/// Every weight of a model, in the backend's form `W`, bound by [`ModelWeights::bind`].
pub struct ModelWeights<W> {
    /// Token embedding table (`token_embd.weight`), `[dim, n_vocab]`, bound as [`Role::Embedding`].
    pub tok_embd: W,
    /// Final norm (`output_norm`), `[dim]`.
    pub output_norm: Norm<W>,
    /// Logits projection (`output.weight`, `[dim, n_vocab]`, with `output.bias` when present),
    /// or `token_embd.weight` bound a second time as [`Role::Matmul`] when the file has none.
    pub output: Linear<W>,
    /// The output projection is the embedding table itself (no `output.weight` in the file).
    pub tied_output: bool,
    /// One entry per layer.
    pub layers: Vec<LayerWeights<W>>,
}

/// Tensors read by the config rather than bound as weights (RoPE factor tables).
const CONFIG_TENSORS: &[&str] = &[
    "rope_freqs.weight",
    "rope_factors_long.weight",
    "rope_factors_short.weight",
];

struct Binder<'a, F> {
    src: &'a ModelSource,
    arch: &'static str,
    load: F,
    used: HashSet<String>,
}

impl<'a, W, F: FnMut(WeightView<'_>, Role) -> Result<W>> Binder<'a, F> {
    fn missing(&self, name: &str) -> Error {
        Error::MissingTensor {
            file: self.src.path().to_path_buf(),
            arch: self.arch.to_string(),
            name: name.to_string(),
        }
    }

    /// The checked view of tensor `name` with GGUF dims `[cols, rows]` (or `[cols]`).
    fn view(&mut self, name: &str, dims: &[usize]) -> Result<Option<WeightView<'a>>> {
        let Some((t, map)) = self.src.tensor(name) else {
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
        self.used.insert(name.to_string());
        let rows = t.n_rows();
        let scale = match (t.ty, name.strip_suffix(".weight")) {
            (GgmlType::I8, Some(stem)) => Some(self.row_scales(stem, rows)?),
            (GgmlType::I8, None) => {
                return Err(Error::TensorShape {
                    name: name.to_string(),
                    expected: expected.clone(),
                    found: t.dims.clone(),
                })
            }
            _ => None,
        };
        Ok(Some(WeightView {
            name: &t.name,
            ty: t.ty,
            rows,
            cols: t.row_len(),
            map,
            start: t.start,
            len: t.len,
            scale,
        }))
    }

    /// The `stem.scale` companion of an I8 weight with `rows` rows: shape `[rows]` or
    /// `[1, rows]` (HF `[out, 1]`), a plain float type.
    fn row_scales(&mut self, stem: &str, rows: usize) -> Result<ScaleView<'a>> {
        let name = format!("{stem}.scale");
        let (t, map) = self.src.tensor(&name).ok_or_else(|| self.missing(&name))?;
        let ok_shape = t.dims == [rows as u64] || t.dims == [1, rows as u64];
        if !ok_shape || !matches!(t.ty, GgmlType::F32 | GgmlType::F16 | GgmlType::BF16) {
            return Err(Error::TensorShape {
                name,
                expected: vec![1, rows as u64],
                found: t.dims.clone(),
            });
        }
        self.used.insert(name);
        Ok(ScaleView {
            ty: t.ty,
            map,
            start: t.start,
            len: t.len,
        })
    }

    fn opt(&mut self, name: &str, dims: &[usize], role: Role) -> Result<Option<W>> {
        match self.view(name, dims)? {
            Some(v) => (self.load)(v, role).map(Some),
            None => Ok(None),
        }
    }

    fn req(&mut self, name: &str, dims: &[usize], role: Role) -> Result<W> {
        self.opt(name, dims, role)?
            .ok_or_else(|| self.missing(name))
    }

    /// `stem.weight` (`[cols, rows]`) and its optional `stem.bias` (`[rows]`).
    fn linear(&mut self, stem: &str, cols: usize, rows: usize) -> Result<Linear<W>> {
        Ok(Linear {
            w: self.req(&format!("{stem}.weight"), &[cols, rows], Role::Matmul)?,
            b: self.opt(&format!("{stem}.bias"), &[rows], Role::Norm)?,
        })
    }

    /// A fused projection `stem` of `cols` inputs split by output rows into `parts`
    /// (zero-copy: rows are contiguous in every format).
    fn fused(
        &mut self,
        stem: &str,
        cols: usize,
        parts: &[usize],
    ) -> Result<Option<Vec<Linear<W>>>> {
        let total: usize = parts.iter().sum();
        let Some(w) = self.view(&format!("{stem}.weight"), &[cols, total])? else {
            return Ok(None);
        };
        let b = self.view(&format!("{stem}.bias"), &[total])?;
        let mut out = Vec::with_capacity(parts.len());
        let mut r0 = 0;
        for &n in parts {
            let wp = w.row_range(r0, n);
            let bp = b.as_ref().map(|b| b.element_range(r0, n));
            out.push(Linear {
                w: (self.load)(wp, Role::Matmul)?,
                b: match bp {
                    Some(bp) => Some((self.load)(bp, Role::Norm)?),
                    None => None,
                },
            });
            r0 += n;
        }
        Ok(Some(out))
    }

    fn norm(&mut self, stem: &str, dim: usize, with_bias: bool) -> Result<Norm<W>> {
        Ok(Norm {
            w: self.req(&format!("{stem}.weight"), &[dim], Role::Norm)?,
            b: if with_bias {
                self.opt(&format!("{stem}.bias"), &[dim], Role::Norm)?
            } else {
                None
            },
        })
    }
}

impl<W> ModelWeights<W> {
    /// Bind every tensor the config needs. `load` turns a checked view into a backend weight.
    ///
    /// Errors when a required tensor is missing, when any bound tensor's dimensions differ from
    /// what the config implies (trailing 1s ignored), when `load` fails, or when the file holds
    /// a tensor the architecture has no use for (the file contradicts its declared family).
    pub fn bind(
        src: &ModelSource,
        c: &ModelConfig,
        load: impl FnMut(WeightView<'_>, Role) -> Result<W>,
    ) -> Result<Self> {
        let mut b = Binder {
            src,
            arch: c.arch.name,
            load,
            used: HashSet::new(),
        };
        let (dim, ff) = (c.dim, c.n_ff);
        let layernorm = c.arch.norm == NormKind::Layer;
        let tok_embd = b.req("token_embd.weight", &[dim, c.n_vocab], Role::Embedding)?;
        let output_norm = b.norm("output_norm", dim, layernorm)?;
        let (output, tied_output) = match b.opt("output.weight", &[dim, c.n_vocab], Role::Matmul)? {
            Some(w) => (
                Linear {
                    w,
                    b: b.opt("output.bias", &[c.n_vocab], Role::Norm)?,
                },
                false,
            ),
            None => (
                Linear {
                    w: b.req("token_embd.weight", &[dim, c.n_vocab], Role::Matmul)?,
                    b: None,
                },
                true,
            ),
        };
        let mut layers = Vec::with_capacity(c.n_layer);
        for il in 0..c.n_layer {
            let p = |s: &str| format!("blk.{il}.{s}");
            let needs = |s: &str| c.arch.layer_tensors.contains(&s);
            // Norms only some families have: required when the row lists them, else absent.
            let mut family_norm = |s: &str, dims: &[usize]| -> Result<Option<W>> {
                if needs(s) {
                    b.req(&(p(s) + ".weight"), dims, Role::Norm).map(Some)
                } else {
                    Ok(None)
                }
            };
            let q_norm = family_norm("attn_q_norm", &[c.head_dim])?;
            let k_norm = family_norm("attn_k_norm", &[c.head_dim])?;
            let post_attn_norm = family_norm("post_attention_norm", &[dim])?;
            let post_ffn_norm = family_norm("post_ffw_norm", &[dim])?;
            let attn_norm = b.norm(&p("attn_norm"), dim, layernorm)?;
            let [wq, wk, wv] =
                match b.fused(&p("attn_qkv"), dim, &[c.q_dim(), c.kv_dim(), c.v_dim()])? {
                    Some(v) => v.try_into().unwrap_or_else(|_| unreachable!("three parts")),
                    None => [
                        b.linear(&p("attn_q"), dim, c.q_dim())?,
                        b.linear(&p("attn_k"), dim, c.kv_dim())?,
                        b.linear(&p("attn_v"), dim, c.v_dim())?,
                    ],
                };
            let wo = b.linear(&p("attn_output"), c.n_head * c.head_dim_v, dim)?;
            let ffn_norm = if c.arch.parallel_residual {
                None
            } else {
                Some(b.norm(&p("ffn_norm"), dim, layernorm)?)
            };
            let (gate, up) = if !c.arch.ffn_gated {
                (None, b.linear(&p("ffn_up"), dim, ff)?)
            } else if b.src.tensor(&p("ffn_gate.weight")).is_some() {
                (
                    Some(b.linear(&p("ffn_gate"), dim, ff)?),
                    b.linear(&p("ffn_up"), dim, ff)?,
                )
            } else {
                // Phi-3 stores gate and up as one matrix, gate rows first.
                let mut v = b
                    .fused(&p("ffn_up"), dim, &[ff, ff])?
                    .ok_or_else(|| b.missing(&p("ffn_gate.weight")))?;
                let up = v.pop().expect("two parts");
                (v.pop(), up)
            };
            let down = b.linear(&p("ffn_down"), ff, dim)?;
            layers.push(LayerWeights {
                attn_norm,
                wq,
                wk,
                wv,
                wo,
                q_norm,
                k_norm,
                post_attn_norm,
                ffn_norm,
                gate,
                up,
                down,
                post_ffn_norm,
            });
        }
        if let Some(t) = src
            .tensors()
            .iter()
            .find(|t| !b.used.contains(&t.name) && !CONFIG_TENSORS.contains(&t.name.as_str()))
        {
            return Err(Error::UnexpectedTensor {
                file: src.path().to_path_buf(),
                arch: c.arch.name.to_string(),
                name: t.name.clone(),
            });
        }
        Ok(ModelWeights {
            tok_embd,
            output_norm,
            output,
            tied_output,
            layers,
        })
    }
}
