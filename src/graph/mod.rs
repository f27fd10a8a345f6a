//! The graph executor: ONE forward pass for every architecture, composed from backend ops and
//! steered by the flags of the config's architecture row.

use std::sync::atomic::{AtomicU64, Ordering};

use crate::backend::{AttnShape, Backend, NormSpec, StepInput, StepKey};
use crate::error::{Error, Result};
use crate::model::weights::{Linear, ModelWeights, Norm};
use crate::model::{ModelConfig, ModelSource};

/// Which positions of a forward pass produce logits.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Logits {
    /// Only the last position (prompt processing before generation).
    Last,
    /// Every position (`logits`, `perplexity`).
    All,
}

/// A loaded model as the executor sees it: its config and its weights in the backend's form.
pub struct Executor<B: Backend> {
    /// Hyper-parameters and the architecture row that steers the forward pass.
    pub config: ModelConfig,
    /// Every weight, bound to the backend (zero-copy on the CPU).
    pub weights: ModelWeights<B::Weight>,
    /// The backend that runs the ops.
    pub backend: B,
}

/// Per-sequence state: the KV cache, how much of it is filled, and scratch buffers sized for the
/// largest batch.
pub struct State<B: Backend> {
    /// Keys and values of every layer for positions `0..n_past`.
    pub kv: B::KvCache,
    /// Positions the KV cache has room for.
    pub n_ctx: usize,
    /// Positions evaluated so far; lowering it forgets the later ones (their cache entries are
    /// overwritten by the next forward pass).
    pub n_past: usize,
    max_batch: usize,
    x: B::Buf,
    xn: B::Buf,
    q: B::Buf,
    k: B::Buf,
    v: B::Buf,
    attn: B::Buf,
    proj: B::Buf,
    /// The FFN output of parallel-residual blocks (added beside `proj`).
    proj2: B::Buf,
    gate: B::Buf,
    up: B::Buf,
    hidden: B::Buf,
    last: B::Buf,
    logits: Option<B::Buf>,
    out: Vec<f32>,
    /// Names this state's buffers for [`Backend::decode_step`]; renewed whenever one of them
    /// (the logits) is replaced.
    key: StepKey,
}

/// The norm that comes right after a residual projection, with the weights that read its
/// output next ([`Executor::project_residual`]).
type NextNorm<'a, W> = (&'a Norm<W>, &'a [&'a W]);

/// A fresh [`StepKey`]: never one handed out before in this process.
fn new_step_key() -> StepKey {
    static NEXT: AtomicU64 = AtomicU64::new(1);
    NEXT.fetch_add(1, Ordering::Relaxed)
}

/// Tokens per forward step while prefilling: large enough to reuse each weight row across many
/// tokens, small enough that the all-positions logits buffer stays modest (128 × vocab floats).
pub const DEFAULT_BATCH: usize = 128;

impl<B: Backend> Executor<B> {
    /// Reads the config from `src` and binds its weights to `backend` (shapes checked).
    pub fn load(src: &ModelSource, backend: B) -> Result<Self> {
        Self::with_config(src, src.config()?, backend)
    }

    /// Binds the weights of `src` for an explicitly given `config` (tests switch single
    /// family features off this way to show the reference logits depend on them).
    pub fn with_config(src: &ModelSource, config: ModelConfig, backend: B) -> Result<Self> {
        let weights = ModelWeights::bind(src, &config, |view, role| backend.weight(view, role))?;
        Ok(Executor {
            config,
            weights,
            backend,
        })
    }

    /// A fresh sequence with room for `n_ctx` positions (at most the training context).
    pub fn new_state(&self, n_ctx: usize) -> Result<State<B>> {
        let c = &self.config;
        if n_ctx == 0 || n_ctx > c.n_ctx_train {
            return Err(Error::InvalidArgument(format!(
                "context size {n_ctx} must be between 1 and the model's training context {}",
                c.n_ctx_train
            )));
        }
        let b = &self.backend;
        let mb = DEFAULT_BATCH.min(n_ctx);
        Ok(State {
            kv: b.kv_cache(c.n_layer, n_ctx, c.kv_dim(), c.v_dim())?,
            n_ctx,
            n_past: 0,
            max_batch: mb,
            x: b.buf(mb * c.dim)?,
            xn: b.buf(mb * c.dim.max(c.q_dim()))?,
            q: b.buf(mb * c.q_dim())?,
            k: b.buf(mb * c.kv_dim())?,
            v: b.buf(mb * c.v_dim())?,
            attn: b.buf(mb * c.n_head * c.head_dim_v)?,
            proj: b.buf(mb * c.dim)?,
            proj2: b.buf(if c.arch.parallel_residual {
                mb * c.dim
            } else {
                0
            })?,
            gate: b.buf(mb * c.n_ff)?,
            up: b.buf(mb * c.n_ff)?,
            hidden: b.buf(mb * c.n_ff)?,
            last: b.buf(c.dim)?,
            logits: None,
            out: Vec::new(),
            key: new_step_key(),
        })
    }

    /// Run `ids` at positions `state.n_past..` and return logits (`n_vocab` for `Last`,
    /// `ids.len() * n_vocab` for `All`).
    pub fn forward(&self, state: &mut State<B>, ids: &[u32], mode: Logits) -> Result<Vec<f32>> {
        let c = &self.config;
        if ids.is_empty() {
            return Err(Error::InvalidArgument("no tokens to evaluate".into()));
        }
        if let Some(&bad) = ids.iter().find(|&&id| id as usize >= c.n_vocab) {
            return Err(Error::TokenOutOfRange {
                id: bad as u64,
                n_vocab: c.n_vocab,
            });
        }
        let needed = state.n_past + ids.len();
        if needed > state.n_ctx {
            return Err(Error::ContextOverflow {
                needed,
                ctx: state.n_ctx,
                max: c.n_ctx_train,
            });
        }
        let mut result = Vec::with_capacity(match mode {
            Logits::Last => c.n_vocab,
            Logits::All => ids.len() * c.n_vocab,
        });
        let n_chunks = ids.len().div_ceil(state.max_batch);
        for (i, chunk) in ids.chunks(state.max_batch).enumerate() {
            let want = match mode {
                Logits::All => Some(Logits::All),
                Logits::Last if i + 1 == n_chunks => Some(Logits::Last),
                Logits::Last => None,
            };
            self.backend.scope(|| self.step(state, chunk, want))?;
            if want.is_some() {
                result.extend_from_slice(&state.out);
            }
        }
        Ok(result)
    }

    /// One batch through every layer; logits (if wanted) land in `state.out`.
    fn step(&self, s: &mut State<B>, ids: &[u32], want: Option<Logits>) -> Result<()> {
        let (c, b) = (&self.config, &self.backend);
        let n = ids.len();
        // Every buffer the ops touch exists before they are queued, so a recorded decode step
        // sees the same buffers each time (a replaced one renews the key).
        let len = want.map(|mode| match mode {
            Logits::All => n * c.n_vocab,
            Logits::Last => c.n_vocab,
        });
        if let Some(len) = len {
            if s.logits.as_ref().is_none_or(|l| b.buf_len(l) < len) {
                // Sized once for the mode's largest batch, not per call.
                let cap = match want {
                    Some(Logits::All) => s.max_batch * c.n_vocab,
                    _ => c.n_vocab,
                };
                s.logits = Some(b.buf(cap.max(len))?);
                s.key = new_step_key();
            }
        }
        if n == 1 && want == Some(Logits::Last) {
            let step = StepInput {
                token: ids[0],
                pos: s.n_past,
            };
            b.decode_step(s.key, step, || self.queue_ops(s, ids, want));
        } else {
            self.queue_ops(s, ids, want);
        }
        s.n_past += n;
        match (len, &s.logits) {
            (Some(len), Some(logits)) => b.read(logits, len, &mut s.out),
            _ => Ok(()),
        }
    }

    /// Queue the ops of one batch at positions `s.n_past..`: every layer, then (if wanted) the
    /// output norm and projection into `s.logits` (allocated by the caller).
    fn queue_ops(&self, s: &mut State<B>, ids: &[u32], want: Option<Logits>) {
        let (c, w, b) = (&self.config, &self.weights, &self.backend);
        let arch = c.arch;
        let n = ids.len();
        let pos0 = s.n_past;
        let (dim, ff) = (c.dim, c.n_ff);
        let spec = self.norm_spec();

        // Where the last logits are read from: a decode step's one row is the last one already
        // (no copy: on a device that is one node fewer in the recorded step, between two
        // kernels that could overlap).
        let logits_src = match want {
            Some(Logits::All) => Some((false, n)),
            Some(Logits::Last) if n == 1 => Some((false, 1)),
            Some(Logits::Last) => Some((true, 1)),
            None => None,
        };
        b.embed(&w.tok_embd, ids, c.embed_scale, &mut s.x);
        // Whether `s.xn` already holds this layer's attention norm: the projection that ended the
        // layer before computed it with its residual add (project_residual).
        let mut normed = false;
        for (il, (lw, lc)) in w.layers.iter().zip(&c.layers).enumerate() {
            // Attention block.
            let qkv = [&lw.wq.w, &lw.wk.w, &lw.wv.w];
            if !normed {
                self.norm(&s.x, &lw.attn_norm, n, &mut s.xn, &qkv);
            }
            let shape = AttnShape {
                n_head: c.n_head,
                n_head_kv: c.n_head_kv,
                head_dim: c.head_dim,
                head_dim_v: c.head_dim_v,
                scale: c.attn_scale,
                window: lc.window,
                softcap: c.attn_softcap,
            };
            let qkv_l = [&lw.wq, &lw.wk, &lw.wv];
            let qk_norms = lw.q_norm.as_ref().zip(lw.k_norm.as_ref());
            if qk_norms.is_none() && qkv_l.iter().all(|l| l.b.is_none()) {
                // Nothing between the projections and RoPE: one call (one kernel on CUDA).
                b.matmul_rope_kv_store(
                    qkv,
                    &s.xn,
                    n,
                    [&mut s.q, &mut s.k, &mut s.v],
                    &mut s.kv,
                    il,
                    pos0,
                    &shape,
                    c.rope_layout,
                    &lc.rope,
                );
            } else {
                self.linears(qkv_l, &s.xn, n, [&mut s.q, &mut s.k, &mut s.v]);
                if let Some((qn, kn)) = qk_norms {
                    b.norm_inplace(spec, &mut s.q, qn, n * c.n_head, c.head_dim);
                    b.norm_inplace(spec, &mut s.k, kn, n * c.n_head_kv, c.head_dim);
                }
                b.rope_kv_store(
                    [&mut s.q, &mut s.k],
                    &s.v,
                    &mut s.kv,
                    il,
                    pos0,
                    n,
                    &shape,
                    c.rope_layout,
                    &lc.rope,
                );
            }
            // A sequential block projects the attention output next (a backend may prepare it
            // for that matmul); a parallel one runs the FFN first.
            let attn_next: &[&B::Weight] = if arch.parallel_residual {
                &[]
            } else {
                &[&lw.wo.w]
            };
            b.attention_feeding(&s.q, &s.kv, il, pos0, n, &shape, &mut s.attn, attn_next);
            if arch.parallel_residual {
                // Phi-2: the FFN reads the same normed input as attention; both outputs add to
                // the residual, attention's first.
                // (No family has post-norms with a parallel residual; none are applied here.)
                // The attention projection runs between this FFN and its down projection.
                let (gate, up, hidden) = (&mut s.gate, &mut s.up, &mut s.hidden);
                let h = self.ffn_hidden(lw, n, ff, &s.xn, gate, up, hidden, &[]);
                let (x, xn) = (&mut s.x, &mut s.xn);
                self.project_residual(&lw.wo, &s.attn, n, x, &mut s.proj, None, xn, None);
                self.project_residual(&lw.down, h, n, x, &mut s.proj2, None, xn, None);
                normed = false;
                continue;
            }
            // Feed-forward block.
            // Sequential blocks have their own pre-FFN norm; a parallel-residual family run
            // sequentially (an ablation) reuses the attention norm.
            let ffn_norm = lw.ffn_norm.as_ref().unwrap_or(&lw.attn_norm);
            let ffn_in = match &lw.gate {
                Some(g) => [&g.w, &lw.up.w],
                None => [&lw.up.w, &lw.up.w],
            };
            let attn_post = lw.post_attn_norm.as_ref();
            self.project_residual(
                &lw.wo,
                &s.attn,
                n,
                &mut s.x,
                &mut s.proj,
                attn_post,
                &mut s.xn,
                Some((ffn_norm, &ffn_in)),
            );
            let (gate, up, hidden) = (&mut s.gate, &mut s.up, &mut s.hidden);
            let h = self.ffn_hidden(lw, n, ff, &s.xn, gate, up, hidden, &[&lw.down.w]);
            let ffn_post = lw.post_ffn_norm.as_ref();
            // The norm after this block: the next layer's attention norm, or the output norm
            // when the logits are read from x itself.
            let next_qkv;
            let head = [&w.output.w];
            let next: Option<NextNorm<'_, B::Weight>> = match w.layers.get(il + 1) {
                Some(nl) => {
                    next_qkv = [&nl.wq.w, &nl.wk.w, &nl.wv.w];
                    Some((&nl.attn_norm, &next_qkv))
                }
                None if logits_src.is_some_and(|(copy, _)| !copy) => Some((&w.output_norm, &head)),
                None => None,
            };
            normed = next.is_some();
            let x = &mut s.x;
            self.project_residual(&lw.down, h, n, x, &mut s.proj, ffn_post, &mut s.xn, next);
        }

        let Some((copy, rows)) = logits_src else {
            return;
        };
        let src = if copy {
            b.copy_row(&s.x, n - 1, dim, &mut s.last);
            &s.last
        } else {
            &s.x
        };
        if !normed {
            self.norm(src, &w.output_norm, rows, &mut s.xn, &[&w.output.w]);
        }
        let logits = s
            .logits
            .as_mut()
            .expect("step() allocates the logits first");
        self.linear(&w.output, &s.xn, rows, logits);
        if let Some(cap) = c.final_softcap {
            b.softcap(logits, cap, rows * c.n_vocab);
        }
    }

    fn norm_spec(&self) -> NormSpec {
        let c = &self.config;
        NormSpec {
            kind: c.arch.norm,
            eps: c.norm_eps,
            w_offset: c.norm_w_offset,
        }
    }

    /// `out = norm(x)` over `rows` rows of the model width, for the matmul by `feeds` that comes
    /// next ([`Backend::norm_feeding`]).
    fn norm(
        &self,
        x: &B::Buf,
        nw: &Norm<B::Weight>,
        rows: usize,
        out: &mut B::Buf,
        feeds: &[&B::Weight],
    ) {
        let dim = self.config.dim;
        let spec = self.norm_spec();
        self.backend
            .norm_feeding(spec, x, &nw.w, nw.b.as_ref(), rows, dim, out, feeds);
    }

    /// `out = W x (+ bias)` for `n` rows.
    fn linear(&self, l: &Linear<B::Weight>, x: &B::Buf, n: usize, out: &mut B::Buf) {
        self.backend.matmul(&l.w, x, n, out);
        if let Some(bias) = &l.b {
            self.backend.add_bias(out, bias, n);
        }
    }

    /// `outs[i] = ls[i] x (+ bias)`: the projections of one input (Q/K/V, up/gate), handed to
    /// the backend together ([`Backend::matmul_many`]), then each one's bias.
    fn linears<const N: usize>(
        &self,
        ls: [&Linear<B::Weight>; N],
        x: &B::Buf,
        n: usize,
        mut outs: [&mut B::Buf; N],
    ) {
        let ws = ls.map(|l| &l.w);
        self.backend.matmul_many(&ws, x, n, &mut outs);
        for (l, out) in ls.iter().zip(outs) {
            if let Some(bias) = &l.b {
                self.backend.add_bias(out, bias, n);
            }
        }
    }

    /// The feed-forward block's hidden activations from normed input `xn`: `act(gate) * up`
    /// (in `hidden`) when gated, else `act(up)` (in `up`); the down projection is the caller's,
    /// and `next` names it when it comes right after ([`Backend::matmul_glu_feeding`]).
    #[allow(clippy::too_many_arguments)]
    fn ffn_hidden<'a>(
        &self,
        lw: &crate::model::LayerWeights<B::Weight>,
        n: usize,
        ff: usize,
        xn: &B::Buf,
        gate: &mut B::Buf,
        up: &'a mut B::Buf,
        hidden: &'a mut B::Buf,
        next: &[&B::Weight],
    ) -> &'a B::Buf {
        let (b, act) = (&self.backend, self.config.arch.activation);
        match &lw.gate {
            Some(g) if g.b.is_none() && lw.up.b.is_none() => {
                let outs = [gate, &mut *up];
                b.matmul_glu_feeding(act, &g.w, &lw.up.w, xn, n, outs, n * ff, hidden, next);
                hidden
            }
            Some(g) => {
                self.linears([&lw.up, g], xn, n, [&mut *up, &mut *gate]);
                b.glu(act, gate, up, n * ff, hidden);
                hidden
            }
            None => {
                self.linear(&lw.up, xn, n, up);
                b.act(act, up, n * ff);
                up
            }
        }
    }

    /// `x += post_norm(l(h))` (Gemma's post-norms) or `x += l(h)`, then, with `next`,
    /// `xn = norm(x)` by its norm for the matmuls by its feeds that come next (the next block's
    /// pre-norm). Without a post-norm or bias the add is fused into the projection
    /// ([`Backend::matmul_add`]: one kernel on a device), and the norm with it
    /// ([`Backend::matmul_add_norm`]: CUDA folds it into that kernel, and `xn` must then be read
    /// only by those matmuls). `tmp` holds the projection where it is not fused; `xn` is
    /// scratch for the post-norm.
    #[allow(clippy::too_many_arguments)]
    fn project_residual(
        &self,
        l: &Linear<B::Weight>,
        h: &B::Buf,
        n: usize,
        x: &mut B::Buf,
        tmp: &mut B::Buf,
        post_norm: Option<&B::Weight>,
        xn: &mut B::Buf,
        next: Option<NextNorm<'_, B::Weight>>,
    ) {
        let (b, dim) = (&self.backend, self.config.dim);
        let len = n * dim;
        if post_norm.is_none() && l.b.is_none() {
            if let Some((nw, feeds)) = next {
                let (w, nb, spec) = (&nw.w, nw.b.as_ref(), self.norm_spec());
                return b.matmul_add_norm(&l.w, h, n, x, tmp, len, spec, w, nb, dim, xn, feeds);
            }
            b.matmul_add(&l.w, h, n, x, tmp, len);
        } else {
            self.linear(l, h, n, tmp);
            self.residual(x, tmp, post_norm, n, xn);
        }
        if let Some((nw, feeds)) = next {
            self.norm(x, nw, n, xn, feeds);
        }
    }

    /// `x += post_norm(y)` (Gemma's post-norms) or `x += y`.
    fn residual(
        &self,
        x: &mut B::Buf,
        y: &B::Buf,
        post_norm: Option<&B::Weight>,
        n: usize,
        tmp: &mut B::Buf,
    ) {
        let (c, b) = (&self.config, &self.backend);
        match post_norm {
            Some(pw) => {
                b.norm(self.norm_spec(), y, pw, None, n, c.dim, tmp);
                b.add(x, tmp, n * c.dim);
            }
            None => b.add(x, y, n * c.dim),
        }
    }
}
