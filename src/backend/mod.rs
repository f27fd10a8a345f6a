//! The op set every backend implements. The graph executor (`crate::graph`) composes these ops per
//! architecture config; a backend owns its buffers, weights and KV cache.
//!
//! Activations are row-major `[n_tok, width]` f32. Ops take explicit sizes and act on a prefix of
//! their buffers, so the executor can size scratch once for the largest batch.

pub mod cpu;
#[cfg(feature = "cuda")]
pub mod cuda;
#[cfg(any(feature = "cuda", feature = "wgpu"))]
pub mod rope_tables;
#[cfg(feature = "wgpu")]
pub mod wgpu;

use std::str::FromStr;

use crate::error::{Error, Result};
use crate::model::arch::{Activation, NormKind, RopeLayout};
use crate::model::config::RopeParams;
use crate::model::weights::{Role, WeightView};

/// Which backend to run on (`--backend`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum BackendKind {
    /// [`cpu::CpuBackend`]: `--backend cpu`.
    Cpu,
    /// `cuda::CudaBackend` (cargo feature `cuda`): `--backend cuda`, NVIDIA GPUs.
    Cuda,
    /// `wgpu::WgpuBackend` (cargo feature `wgpu`): `--backend wgpu`, any Vulkan / Metal / DX12
    /// adapter.
    Wgpu,
}

impl FromStr for BackendKind {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self> {
        match s {
            "cpu" => Ok(BackendKind::Cpu),
            "cuda" => Ok(BackendKind::Cuda),
            "wgpu" => Ok(BackendKind::Wgpu),
            other => Err(Error::UnknownBackend(other.to_string())),
        }
    }
}

/// How a norm op normalises: the family's kind, its epsilon, and a constant added to every
/// weight (1.0 for Gemma checkpoints that store `w - 1`).
#[derive(Clone, Copy, Debug)]
pub struct NormSpec {
    /// RMSNorm or LayerNorm.
    pub kind: NormKind,
    /// Added to the variance (mean square) before the square root.
    pub eps: f32,
    /// Added to each weight before it multiplies.
    pub w_offset: f32,
}

/// The shape of one attention call.
#[derive(Clone, Copy, Debug)]
pub struct AttnShape {
    /// Query heads.
    pub n_head: usize,
    /// K/V heads; divides `n_head` (query head `h` reads K/V head `h / (n_head / n_head_kv)`).
    pub n_head_kv: usize,
    /// Width of each query and key head.
    pub head_dim: usize,
    /// Width of each value head (and of each output head).
    pub head_dim_v: usize,
    /// Multiplies q·k before the softmax.
    pub scale: f32,
    /// Attend to the last `window` positions only.
    pub window: Option<usize>,
    /// Squash scaled scores with `c * tanh(s / c)` before the softmax (Gemma 2).
    pub softcap: Option<f32>,
}

/// Names the buffers a decode step touches (see [`Backend::decode_step`]): unique per state and
/// per replacement of any of its buffers.
pub type StepKey = u64;

/// What changes from one decode step to the next.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct StepInput {
    /// The token being evaluated.
    pub token: u32,
    /// Its position (the KV entries before it are filled).
    pub pos: usize,
}

/// A compute backend: owns weights, activation buffers and the KV cache, and implements every op
/// the graph executor composes. Sizes are trusted (the executor derives them from a validated
/// config); an op may panic on a buffer shorter than the sizes it is given.
pub trait Backend: Send + Sync {
    /// A weight in the backend's own form (the CPU keeps a view of the file map).
    type Weight: Send + Sync;
    /// An activation buffer.
    type Buf: Send;
    /// Per-layer K and V for every position of the context.
    type KvCache: Send;

    /// Short name as accepted by `--backend` (e.g. `"cpu"`).
    fn name(&self) -> &'static str;
    /// One line on what the backend detected and chose (kernel path, threads, device).
    fn describe(&self) -> String;

    /// Wrap a checked tensor view. Errors when the backend has no kernel for its type in `role`
    /// (norm weights and biases are [`Role::Norm`] vectors).
    fn weight(&self, view: WeightView<'_>, role: Role) -> Result<Self::Weight>;
    /// A zeroed activation buffer of `len` f32 values (a device backend can run out of memory).
    fn buf(&self, len: usize) -> Result<Self::Buf>;
    /// Capacity of `buf` in f32 values.
    fn buf_len(&self, buf: &Self::Buf) -> usize;
    /// Copy the first `len` values out into `out` (replacing its contents). This is where a
    /// device backend waits for its queued work, so it reports any failure of the ops before it.
    fn read(&self, buf: &Self::Buf, len: usize, out: &mut Vec<f32>) -> Result<()>;
    /// A KV cache for `n_layer` layers of `n_ctx` positions; each position holds `k_width`
    /// key values and `v_width` value values (all K/V heads side by side).
    fn kv_cache(
        &self,
        n_layer: usize,
        n_ctx: usize,
        k_width: usize,
        v_width: usize,
    ) -> Result<Self::KvCache>;

    /// Run `f` with the backend's threads available (the CPU installs its rayon pool once per
    /// forward pass instead of once per op).
    fn scope<R: Send>(&self, f: impl FnOnce() -> R + Send) -> R {
        f()
    }

    /// Queue the ops of one single-token decode step: `ops` issues them (embedding of
    /// `step.token` at position `step.pos` through the logits; not the read). A device backend
    /// may record them the first times it sees `key` and afterwards replay the recording with the
    /// new token and position instead of calling `ops` (the CUDA backend's decode graphs), so
    /// `key` must change whenever a buffer the ops touch may have been replaced, and the ops may
    /// depend on nothing else that changes between steps. The default just runs `ops`.
    fn decode_step(&self, key: StepKey, step: StepInput, ops: impl FnOnce()) {
        let _ = (key, step);
        ops()
    }

    /// `out[t] = table[ids[t]] * scale`.
    fn embed(&self, table: &Self::Weight, ids: &[u32], scale: f32, out: &mut Self::Buf);
    /// Normalise `rows` rows of `dim` values of `x` into `out` (`out` may not alias `x`).
    #[allow(clippy::too_many_arguments)]
    fn norm(
        &self,
        spec: NormSpec,
        x: &Self::Buf,
        w: &Self::Weight,
        b: Option<&Self::Weight>,
        rows: usize,
        dim: usize,
        out: &mut Self::Buf,
    );
    /// [`Backend::norm`] where the very next op is a matmul of `out` ([`Backend::matmul`],
    /// [`Backend::matmul_many`] or [`Backend::matmul_glu`]) by one or more of `feeds`, so that a
    /// backend may hand `out` to them prepared in the same launch: CUDA's int8 decode matvec gets
    /// it rounded to Q8 by the norm kernel instead of by a launch of its own. Any other op in
    /// between only costs that preparation. The default is [`Backend::norm`].
    #[allow(clippy::too_many_arguments)]
    fn norm_feeding(
        &self,
        spec: NormSpec,
        x: &Self::Buf,
        w: &Self::Weight,
        b: Option<&Self::Weight>,
        rows: usize,
        dim: usize,
        out: &mut Self::Buf,
        feeds: &[&Self::Weight],
    ) {
        let _ = feeds;
        self.norm(spec, x, w, b, rows, dim, out);
    }
    /// `x = norm(x)` per row of `dim` (QK-norm over each head).
    fn norm_inplace(
        &self,
        spec: NormSpec,
        x: &mut Self::Buf,
        w: &Self::Weight,
        rows: usize,
        dim: usize,
    );
    /// `out[t] = W · x[t]` for `n_tok` rows of `x` (`W.cols` wide) into rows of `W.rows`.
    fn matmul(&self, w: &Self::Weight, x: &Self::Buf, n_tok: usize, out: &mut Self::Buf);
    /// `outs[i][t] = ws[i] · x[t]` for every weight of `ws` over the same input (Q/K/V, gate/up),
    /// so that a backend can prepare `x` once for all of them (the CUDA int8 matvec rounds it to
    /// Q8 once). The default is one [`Backend::matmul`] per weight, in order.
    fn matmul_many(
        &self,
        ws: &[&Self::Weight],
        x: &Self::Buf,
        n_tok: usize,
        outs: &mut [&mut Self::Buf],
    ) {
        assert_eq!(ws.len(), outs.len(), "matmul_many: one output per weight");
        for (w, out) in ws.iter().zip(outs.iter_mut()) {
            self.matmul(w, x, n_tok, out);
        }
    }
    /// `out = act(gate · x) * (up · x)` for `n_tok` rows of `x` (`len` = `n_tok` × rows values):
    /// a gated feed-forward block's hidden activations. `gate_out` and `up_out` (room for `len`)
    /// hold the two projections where a backend computes them apart; the default is
    /// [`Backend::matmul_many`] (up, then gate) and [`Backend::glu`]. CUDA runs all three as one
    /// kernel for decode-sized batches, with the same sums and products.
    #[allow(clippy::too_many_arguments)]
    fn matmul_glu(
        &self,
        act: Activation,
        gate: &Self::Weight,
        up: &Self::Weight,
        x: &Self::Buf,
        n_tok: usize,
        [gate_out, up_out]: [&mut Self::Buf; 2],
        len: usize,
        out: &mut Self::Buf,
    ) {
        matmul_glu_apart(self, act, gate, up, x, n_tok, [gate_out, up_out], len, out);
    }
    /// [`Backend::matmul_glu`] where the very next op is a matmul of `out` by one of `next` (the
    /// down projection), as [`Backend::norm_feeding`] is for a norm: CUDA's gated int8 kernel
    /// then also rounds its output to Q8 for the int8 matvec. The default is
    /// [`Backend::matmul_glu`].
    #[allow(clippy::too_many_arguments)]
    fn matmul_glu_feeding(
        &self,
        act: Activation,
        gate: &Self::Weight,
        up: &Self::Weight,
        x: &Self::Buf,
        n_tok: usize,
        outs: [&mut Self::Buf; 2],
        len: usize,
        out: &mut Self::Buf,
        next: &[&Self::Weight],
    ) {
        let _ = next;
        self.matmul_glu(act, gate, up, x, n_tok, outs, len, out);
    }
    /// `acc += W x` for `n_tok` rows (`len` = `n_tok` × `W.rows` values): the residual add fused
    /// into the projection that feeds it. `tmp` (room for `len`) is scratch for a backend without
    /// a fused kernel; the default is [`Backend::matmul`] into `tmp`, then [`Backend::add`].
    /// Either way each output is the same single f32 addition `acc + (W x)`.
    fn matmul_add(
        &self,
        w: &Self::Weight,
        x: &Self::Buf,
        n_tok: usize,
        acc: &mut Self::Buf,
        tmp: &mut Self::Buf,
        len: usize,
    ) {
        self.matmul(w, x, n_tok, tmp);
        self.add(acc, tmp, len);
    }
    /// [`Backend::matmul_add`], then [`Backend::norm_feeding`] of the sum: `out = norm(acc)`
    /// over `n_tok` rows of `dim` for the matmuls by `feeds` that come next (a residual
    /// projection and the next block's pre-norm). Unlike `norm_feeding`, a backend may hand the
    /// normed rows to those matmuls in a form of its own and leave `out` unwritten, so the very
    /// next ops must be matmuls of `out` by `feeds`, and nothing else may read `out`: CUDA folds
    /// an RMSNorm into its int8 projection's launch that way. The default is the two calls.
    #[allow(clippy::too_many_arguments)]
    fn matmul_add_norm(
        &self,
        w: &Self::Weight,
        x: &Self::Buf,
        n_tok: usize,
        acc: &mut Self::Buf,
        tmp: &mut Self::Buf,
        len: usize,
        spec: NormSpec,
        nw: &Self::Weight,
        nb: Option<&Self::Weight>,
        dim: usize,
        out: &mut Self::Buf,
        feeds: &[&Self::Weight],
    ) {
        self.matmul_add(w, x, n_tok, acc, tmp, len);
        self.norm_feeding(spec, acc, nw, nb, n_tok, dim, out, feeds);
    }
    /// Rotate the first `p.n_rot` dims of each head; token `t` is at position `pos0 + t`. The
    /// frequencies come from `p.table(pos0 + n_tok)` (RoPE scaling included).
    #[allow(clippy::too_many_arguments)]
    fn rope(
        &self,
        x: &mut Self::Buf,
        n_tok: usize,
        n_heads: usize,
        head_dim: usize,
        pos0: usize,
        layout: RopeLayout,
        p: &RopeParams,
    );
    /// Store `n_tok` rows of K and V for `layer` at positions `pos0..`.
    fn kv_store(
        &self,
        kv: &mut Self::KvCache,
        layer: usize,
        pos0: usize,
        n_tok: usize,
        k: &Self::Buf,
        v: &Self::Buf,
    );
    /// RoPE on `q` (`shape.n_head` heads) and `k` (`shape.n_head_kv` heads), both
    /// `shape.head_dim` wide, as [`Backend::rope`]; then `k` and `v` stored for `layer` at
    /// positions `pos0..` as [`Backend::kv_store`]. CUDA does all three in one launch, with the
    /// same rotation and rounding.
    #[allow(clippy::too_many_arguments)]
    fn rope_kv_store(
        &self,
        [q, k]: [&mut Self::Buf; 2],
        v: &Self::Buf,
        kv: &mut Self::KvCache,
        layer: usize,
        pos0: usize,
        n_tok: usize,
        shape: &AttnShape,
        layout: RopeLayout,
        p: &RopeParams,
    ) {
        rope_kv_store_apart(self, [q, k], v, kv, layer, pos0, n_tok, shape, layout, p);
    }
    /// `q, k, v = Wq x, Wk x, Wv x` ([`Backend::matmul_many`] of `ws`), then
    /// [`Backend::rope_kv_store`]: an attention block's projections without biases or QK-norms,
    /// handed over together so that a backend may run them as one kernel (CUDA does for a decode
    /// token: a warp computes both elements of a RoPE pair and rotates them itself). The default
    /// is the two calls.
    #[allow(clippy::too_many_arguments)]
    fn matmul_rope_kv_store(
        &self,
        ws: [&Self::Weight; 3],
        x: &Self::Buf,
        n_tok: usize,
        outs: [&mut Self::Buf; 3],
        kv: &mut Self::KvCache,
        layer: usize,
        pos0: usize,
        shape: &AttnShape,
        layout: RopeLayout,
        p: &RopeParams,
    ) {
        matmul_rope_kv_store_apart(self, ws, x, n_tok, outs, kv, layer, pos0, shape, layout, p);
    }
    /// Causal attention of `n_tok` query rows at positions `pos0..` over the cache of `layer`.
    #[allow(clippy::too_many_arguments)]
    fn attention(
        &self,
        q: &Self::Buf,
        kv: &Self::KvCache,
        layer: usize,
        pos0: usize,
        n_tok: usize,
        shape: &AttnShape,
        out: &mut Self::Buf,
    );
    /// [`Backend::attention`] where the very next op is a matmul of `out` by one of `feeds` (the
    /// output projection), as [`Backend::norm_feeding`] is for a norm: CUDA's attention kernel
    /// then also rounds a decode step's output to Q8 for the int8 matvec. The default is
    /// [`Backend::attention`].
    #[allow(clippy::too_many_arguments)]
    fn attention_feeding(
        &self,
        q: &Self::Buf,
        kv: &Self::KvCache,
        layer: usize,
        pos0: usize,
        n_tok: usize,
        shape: &AttnShape,
        out: &mut Self::Buf,
        feeds: &[&Self::Weight],
    ) {
        let _ = feeds;
        self.attention(q, kv, layer, pos0, n_tok, shape, out);
    }
    /// `x[r] += b` for each of `rows` rows of `b.len` values (projection biases).
    fn add_bias(&self, x: &mut Self::Buf, b: &Self::Weight, rows: usize);
    /// `x = act(x)` over `len` values (ungated feed-forward blocks).
    fn act(&self, act: Activation, x: &mut Self::Buf, len: usize);
    /// `out = act(gate) * up` over `len` values.
    fn glu(
        &self,
        act: Activation,
        gate: &Self::Buf,
        up: &Self::Buf,
        len: usize,
        out: &mut Self::Buf,
    );
    /// `x += y` over `len` values.
    fn add(&self, x: &mut Self::Buf, y: &Self::Buf, len: usize);
    /// `x = c * tanh(x / c)` over `len` values.
    fn softcap(&self, x: &mut Self::Buf, c: f32, len: usize);
    /// Copy row `src_row` of `x` (`width` wide) to row 0 of `out`.
    fn copy_row(&self, x: &Self::Buf, src_row: usize, width: usize, out: &mut Self::Buf);
}

/// [`Backend::matmul_glu`] as separate ops: [`Backend::matmul_many`] (up, then gate) and
/// [`Backend::glu`]. The trait's default, and a fusing backend's path where its kernel does not
/// apply.
#[allow(clippy::too_many_arguments)]
pub fn matmul_glu_apart<B: Backend + ?Sized>(
    b: &B,
    act: Activation,
    gate: &B::Weight,
    up: &B::Weight,
    x: &B::Buf,
    n_tok: usize,
    [gate_out, up_out]: [&mut B::Buf; 2],
    len: usize,
    out: &mut B::Buf,
) {
    b.matmul_many(&[up, gate], x, n_tok, &mut [&mut *up_out, &mut *gate_out]);
    b.glu(act, gate_out, up_out, len, out);
}

/// [`Backend::matmul_rope_kv_store`] as separate ops: [`Backend::matmul_many`], then
/// [`Backend::rope_kv_store`]. The trait's default, and a fusing backend's path where its kernel
/// does not apply.
#[allow(clippy::too_many_arguments)]
pub fn matmul_rope_kv_store_apart<B: Backend + ?Sized>(
    b: &B,
    ws: [&B::Weight; 3],
    x: &B::Buf,
    n_tok: usize,
    [q, k, v]: [&mut B::Buf; 3],
    kv: &mut B::KvCache,
    layer: usize,
    pos0: usize,
    shape: &AttnShape,
    layout: RopeLayout,
    p: &RopeParams,
) {
    b.matmul_many(&ws, x, n_tok, &mut [&mut *q, &mut *k, &mut *v]);
    b.rope_kv_store([q, k], v, kv, layer, pos0, n_tok, shape, layout, p);
}

/// [`Backend::rope_kv_store`] as separate ops: [`Backend::rope`] on Q, on K, then
/// [`Backend::kv_store`]. The trait's default, and a fusing backend's path where its kernel
/// does not apply.
#[allow(clippy::too_many_arguments)]
pub fn rope_kv_store_apart<B: Backend + ?Sized>(
    b: &B,
    [q, k]: [&mut B::Buf; 2],
    v: &B::Buf,
    kv: &mut B::KvCache,
    layer: usize,
    pos0: usize,
    n_tok: usize,
    shape: &AttnShape,
    layout: RopeLayout,
    p: &RopeParams,
) {
    let d = shape.head_dim;
    b.rope(q, n_tok, shape.n_head, d, pos0, layout, p);
    b.rope(k, n_tok, shape.n_head_kv, d, pos0, layout, p);
    b.kv_store(kv, layer, pos0, n_tok, k, v);
}
