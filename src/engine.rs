//! The library's front door: [`Model::load`] a model file with its tokenizer onto a backend,
//! then open [`Session`]s on it to feed text and generate, or evaluate logits and perplexity.
//!
//! A `Model` is immutable once loaded and is `Send + Sync`: share it (e.g. in an `Arc`) between
//! threads, each with its own sessions. There is no global state.

use std::path::Path;

use crate::model::config::SourceFormat;

use crate::backend::cpu::caps::{CpuCaps, KernelPath};
use crate::backend::cpu::dot::DotKernels;
use crate::backend::cpu::CpuBackend;
#[cfg(feature = "cuda")]
use crate::backend::cuda::CudaBackend;
#[cfg(feature = "wgpu")]
use crate::backend::wgpu::WgpuBackend;
use crate::backend::{Backend, BackendKind};
use crate::error::{Error, Result};
use crate::graph::{Executor, Logits, State};
use crate::model::{ModelConfig, ModelSource};
use crate::session::{GenStats, GenerateOptions, Session};
use crate::tokenizer::Tokenizer;

/// How to load a model.
#[derive(Clone, Debug)]
pub struct LoadOptions {
    /// Which backend runs the model.
    pub backend: BackendKind,
    /// CPU threads; 0 = one per core.
    pub threads: usize,
    /// GPU ordinal for device backends.
    pub device: usize,
    /// CPU kernel path; `None`: the best this CPU has (or what `TORCHLESS_CPU` names).
    pub cpu_path: Option<KernelPath>,
}

impl Default for LoadOptions {
    fn default() -> Self {
        LoadOptions {
            backend: BackendKind::Cpu,
            threads: 0,
            device: 0,
            cpu_path: None,
        }
    }
}

/// A model, loaded: weights bound to a backend, and its tokenizer.
pub struct Model {
    file: ModelSource,
    chat_template: Option<String>,
    exec: Exec,
    tokenizer: Tokenizer,
}

/// The executor on the backend the model was loaded onto (one variant per built-in backend).
// One per model, never moved on a hot path: boxing would only add an indirection.
#[allow(clippy::large_enum_variant)]
enum Exec {
    Cpu(Executor<CpuBackend>),
    #[cfg(feature = "cuda")]
    Cuda(Executor<CudaBackend>),
    #[cfg(feature = "wgpu")]
    Wgpu(Executor<WgpuBackend>),
}

/// Runs `$body` with `$e` bound to the executor of whichever backend `$exec` holds.
macro_rules! with_exec {
    ($exec:expr, $e:ident => $body:expr) => {
        match $exec {
            Exec::Cpu($e) => $body,
            #[cfg(feature = "cuda")]
            Exec::Cuda($e) => $body,
            #[cfg(feature = "wgpu")]
            Exec::Wgpu($e) => $body,
        }
    };
}

/// One sequence's state (KV cache, scratch) on the model's backend.
pub struct SeqState(StateKind);

// One per sequence, made once: the size difference does not matter.
#[allow(clippy::large_enum_variant)]
enum StateKind {
    Cpu(State<CpuBackend>),
    #[cfg(feature = "cuda")]
    Cuda(State<CudaBackend>),
    #[cfg(feature = "wgpu")]
    Wgpu(State<WgpuBackend>),
}

impl SeqState {
    /// Positions evaluated so far.
    pub fn n_past(&self) -> usize {
        match &self.0 {
            StateKind::Cpu(s) => s.n_past,
            #[cfg(feature = "cuda")]
            StateKind::Cuda(s) => s.n_past,
            #[cfg(feature = "wgpu")]
            StateKind::Wgpu(s) => s.n_past,
        }
    }
    /// Forgets positions from `n` on (their cache entries are overwritten by later passes);
    /// `n` larger than what was evaluated is ignored.
    pub fn rewind(&mut self, n: usize) {
        let np = match &mut self.0 {
            StateKind::Cpu(s) => &mut s.n_past,
            #[cfg(feature = "cuda")]
            StateKind::Cuda(s) => &mut s.n_past,
            #[cfg(feature = "wgpu")]
            StateKind::Wgpu(s) => &mut s.n_past,
        };
        *np = (*np).min(n);
    }
    /// Positions the KV cache has room for.
    pub fn n_ctx(&self) -> usize {
        match &self.0 {
            StateKind::Cpu(s) => s.n_ctx,
            #[cfg(feature = "cuda")]
            StateKind::Cuda(s) => s.n_ctx,
            #[cfg(feature = "wgpu")]
            StateKind::Wgpu(s) => s.n_ctx,
        }
    }
}

/// Perplexity over a text, computed the way llama-perplexity does.
#[derive(Clone, Debug)]
pub struct Perplexity {
    /// exp(mean negative log-likelihood) over the scored tokens.
    pub ppl: f64,
    /// Standard error of the estimate (llama-perplexity's "+/-").
    pub stderr: f64,
    /// Chunks evaluated.
    pub chunks: usize,
    /// Tokens whose likelihood was scored.
    pub scored_tokens: usize,
}

impl Model {
    /// Loads a GGUF file or a Hugging Face directory (`config.json`, `tokenizer.json`,
    /// safetensors): parses it, binds every weight (zero-copy from the memory map, in its own
    /// dtype) and builds its tokenizer.
    pub fn load(path: impl AsRef<Path>, opts: &LoadOptions) -> Result<Model> {
        Self::load_with_progress(path, opts, |_, _| {})
    }

    /// Like [`Model::load`], and also reads every weight page once so the first forward pass
    /// does not stall on disk, calling `progress(bytes_done, bytes_total)` as it goes.
    pub fn load_with_progress(
        path: impl AsRef<Path>,
        opts: &LoadOptions,
        mut progress: impl FnMut(u64, u64),
    ) -> Result<Model> {
        let file = ModelSource::open(path)?;
        let tokenizer = file.tokenizer()?;
        let exec = match opts.backend {
            BackendKind::Cpu => {
                let cpu = match opts.cpu_path {
                    None => CpuBackend::new(opts.threads)?,
                    Some(path) => {
                        let caps = CpuCaps::detect();
                        let kernels = DotKernels::select(&caps, Some(path))
                            .map_err(|e| Error::CpuKernels(e.to_string()))?;
                        CpuBackend::with_kernels(caps, kernels, opts.threads)?
                    }
                };
                Exec::Cpu(Executor::load(&file, cpu)?)
            }
            #[cfg(feature = "cuda")]
            BackendKind::Cuda => Exec::Cuda(Executor::load(&file, CudaBackend::new(opts.device)?)?),
            #[cfg(not(feature = "cuda"))]
            BackendKind::Cuda => return Err(Error::BackendNotBuilt("cuda")),
            #[cfg(feature = "wgpu")]
            BackendKind::Wgpu => Exec::Wgpu(Executor::load(&file, WgpuBackend::new(opts.device)?)?),
            #[cfg(not(feature = "wgpu"))]
            BackendKind::Wgpu => return Err(Error::BackendNotBuilt("wgpu")),
        };
        let n_vocab = with_exec!(&exec, e => e.config.n_vocab);
        // HF checkpoints often pad the embedding past the tokenizer (to a multiple of 64 or
        // 128); GGUF converters write exactly one row per token.
        let vocab_ok = match file.format() {
            SourceFormat::Gguf => tokenizer.n_vocab() == n_vocab,
            SourceFormat::Safetensors => tokenizer.n_vocab() <= n_vocab,
        };
        if !vocab_ok {
            return Err(Error::BadKey {
                key: "tokenizer vocabulary".into(),
                why: format!(
                    "{} tokens but the embedding has {} rows",
                    tokenizer.n_vocab(),
                    n_vocab
                ),
            });
        }
        prefault(&file, &mut progress);
        Ok(Model {
            chat_template: file.chat_template(),
            file,
            exec,
            tokenizer,
        })
    }

    /// Hyper-parameters and the architecture row.
    pub fn config(&self) -> &ModelConfig {
        with_exec!(&self.exec, e => &e.config)
    }

    /// The memory bandwidth the backend's decode is measured against, in bytes/s: the CPU's
    /// read bandwidth with its threads, or a GPU's device-to-device copy bandwidth (bytes read
    /// and written).
    pub fn memory_bandwidth(&self) -> Result<f64> {
        match &self.exec {
            Exec::Cpu(e) => Ok(crate::bench::read_bandwidth(e.backend.threads())),
            #[cfg(feature = "cuda")]
            Exec::Cuda(e) => e.backend.copy_bandwidth(),
            #[cfg(feature = "wgpu")]
            Exec::Wgpu(e) => e.backend.copy_bandwidth(),
        }
    }

    /// Starts timing each kernel of the decode steps that follow
    /// ([`crate::bench::profile`]); only the CUDA backend can.
    pub fn start_kernel_profile(&self) -> Result<()> {
        #[cfg(feature = "cuda")]
        if let Exec::Cuda(e) = &self.exec {
            e.backend.start_kernel_profile();
            return Ok(());
        }
        Err(crate::bench::profile_needs_cuda())
    }

    /// Ends the profile [`Model::start_kernel_profile`] opened and returns it.
    pub fn finish_kernel_profile(&self) -> Result<crate::bench::KernelProfile> {
        #[cfg(feature = "cuda")]
        if let Exec::Cuda(e) = &self.exec {
            return e.backend.finish_kernel_profile();
        }
        Err(crate::bench::profile_needs_cuda())
    }

    /// One line on the backend the model runs on (kernel path, threads or device).
    pub fn backend_description(&self) -> String {
        with_exec!(&self.exec, e => e.backend.describe())
    }

    /// The model's tokenizer.
    pub fn tokenizer(&self) -> &Tokenizer {
        &self.tokenizer
    }

    /// The opened model files (GGUF metadata, or the HF directory, and the tensor table).
    pub fn source(&self) -> &ModelSource {
        &self.file
    }

    /// The model's name from its metadata, else its file name.
    pub fn name(&self) -> String {
        if !self.config().name.is_empty() {
            return self.config().name.clone();
        }
        self.file.file_name()
    }

    /// The Jinja chat template stored with the model (GGUF `tokenizer.chat_template`, or
    /// `tokenizer_config.json`'s), if any.
    pub fn chat_template(&self) -> Option<&str> {
        self.chat_template.as_deref()
    }

    /// Tokens for `text` as llama-tokenize makes them (BOS if the model adds one, specials parsed).
    pub fn tokenize(&self, text: &str) -> Vec<u32> {
        self.tokenizer.encode(text, true, true)
    }

    /// A new, empty session with room for `n_ctx` tokens (at most the training context).
    pub fn session(&self, n_ctx: usize) -> Result<Session<'_>> {
        Session::new(self, n_ctx)
    }

    /// A fresh sequence state with room for `n_ctx` positions (for code that drives forward
    /// passes itself; [`Session`] wraps one).
    pub fn new_state(&self, n_ctx: usize) -> Result<SeqState> {
        Ok(SeqState(match &self.exec {
            Exec::Cpu(e) => StateKind::Cpu(e.new_state(n_ctx)?),
            #[cfg(feature = "cuda")]
            Exec::Cuda(e) => StateKind::Cuda(e.new_state(n_ctx)?),
            #[cfg(feature = "wgpu")]
            Exec::Wgpu(e) => StateKind::Wgpu(e.new_state(n_ctx)?),
        }))
    }

    /// Evaluates `ids` at positions `state.n_past()..` and returns their logits (the last
    /// position's, or every position's).
    pub fn forward(&self, state: &mut SeqState, ids: &[u32], mode: Logits) -> Result<Vec<f32>> {
        match (&self.exec, &mut state.0) {
            (Exec::Cpu(e), StateKind::Cpu(s)) => e.forward(s, ids, mode),
            #[cfg(feature = "cuda")]
            (Exec::Cuda(e), StateKind::Cuda(s)) => e.forward(s, ids, mode),
            #[cfg(feature = "wgpu")]
            (Exec::Wgpu(e), StateKind::Wgpu(s)) => e.forward(s, ids, mode),
            #[cfg(any(feature = "cuda", feature = "wgpu"))]
            _ => Err(Error::InvalidArgument(
                "a sequence state belongs to the backend of the model that made it".into(),
            )),
        }
    }

    /// Logits of every position of `ids`, evaluated as one sequence: `[ids.len() * n_vocab]`.
    pub fn logits(&self, ids: &[u32]) -> Result<Vec<f32>> {
        let mut st = self.new_state(ids.len().max(1).min(self.config().n_ctx_train))?;
        self.forward(&mut st, ids, Logits::All)
    }

    /// Generates after `prompt` in a fresh session of `n_ctx` positions (default: the prompt
    /// plus `opts.max_tokens`, at most the training context), calling `on_text` with each piece
    /// of whole UTF-8 characters. A prompt that leaves no room to generate is an error; a
    /// context that fills up ends the generation (`FinishReason::ContextFull`).
    pub fn generate(
        &self,
        prompt: &str,
        opts: &GenerateOptions,
        n_ctx: Option<usize>,
        on_text: impl FnMut(&str),
    ) -> Result<GenStats> {
        let ids = self.tokenize(prompt);
        if ids.is_empty() {
            return Err(Error::InvalidArgument(
                "the prompt produced no tokens".into(),
            ));
        }
        let max = self.config().n_ctx_train;
        let ctx = n_ctx.unwrap_or_else(|| (ids.len() + opts.max_tokens).min(max));
        if ids.len() >= ctx {
            return Err(Error::ContextOverflow {
                needed: ids.len() + 1,
                ctx,
                max,
            });
        }
        let mut s = self.session(ctx)?;
        s.generate(&ids, opts, on_text)
    }

    /// Perplexity of `text` with chunks of `ctx` tokens, as llama-perplexity computes it: one
    /// trailing newline is dropped, the text is tokenized once (BOS in front when the model adds
    /// one, special-token text left as plain text), cut into whole chunks of which at least two
    /// must fit, the first token of each chunk is overwritten with BOS when the model uses one,
    /// and only the second half of each chunk is scored (every token there predicts the next).
    pub fn perplexity(
        &self,
        text: &str,
        ctx: usize,
        max_chunks: Option<usize>,
        mut on_chunk: impl FnMut(usize, usize, f64),
    ) -> Result<Perplexity> {
        if ctx < 4 {
            return Err(Error::InvalidArgument(format!(
                "--ctx {ctx} is too small (min 4)"
            )));
        }
        let text = text.strip_suffix('\n').unwrap_or(text);
        let tokens = self.tokenizer.encode(text, true, false);
        if tokens.len() < 2 * ctx {
            return Err(Error::InvalidArgument(format!(
                "the text has {} tokens; perplexity with --ctx {ctx} needs at least {}",
                tokens.len(),
                2 * ctx
            )));
        }
        let mut n_chunks = tokens.len() / ctx;
        if let Some(m) = max_chunks {
            if m == 0 {
                return Err(Error::InvalidArgument("--chunks must be at least 1".into()));
            }
            n_chunks = n_chunks.min(m);
        }
        let bos = self.tokenizer.bos_id().filter(|_| self.tokenizer.add_bos());
        let n_vocab = self.config().n_vocab;
        let first = ctx / 2;
        let mut st = self.new_state(ctx)?;
        let (mut nll, mut nll2, mut count) = (0f64, 0f64, 0usize);
        for c in 0..n_chunks {
            let start = c * ctx;
            let mut batch = tokens[start..start + ctx].to_vec();
            if let Some(b) = bos {
                batch[0] = b;
            }
            st.rewind(0);
            let logits = self.forward(&mut st, &batch, Logits::All)?;
            for j in first..ctx - 1 {
                let row = &logits[j * n_vocab..(j + 1) * n_vocab];
                let v = neg_log_softmax(row, tokens[start + j + 1] as usize);
                nll += v;
                nll2 += v * v;
                count += 1;
            }
            on_chunk(c + 1, n_chunks, (nll / count as f64).exp());
        }
        let mean = nll / count as f64;
        let var = (nll2 / count as f64 - mean * mean).max(0.0);
        let ppl = mean.exp();
        Ok(Perplexity {
            ppl,
            stderr: ppl * (var / (count as f64 - 1.0).max(1.0)).sqrt(),
            chunks: n_chunks,
            scored_tokens: count,
        })
    }
}

/// Reads one byte of every page of tensor data, reporting progress every 16 MiB.
fn prefault(file: &ModelSource, progress: &mut impl FnMut(u64, u64)) {
    const PAGE: usize = 4096;
    const REPORT: u64 = 16 << 20;
    let total: u64 = file.tensors().iter().map(|t| t.len as u64).sum();
    let (mut done, mut last) = (0u64, 0u64);
    progress(0, total);
    let mut sink = 0u8;
    for t in file.tensors() {
        let data = file.tensor_data(t);
        for page in data.chunks(PAGE) {
            sink = sink.wrapping_add(page[0]);
            done += page.len() as u64;
            if done - last >= REPORT {
                progress(done, total);
                last = done;
            }
        }
    }
    std::hint::black_box(sink);
    progress(total, total);
}

/// `-log softmax(row)[target]`, in f64.
pub fn neg_log_softmax(row: &[f32], target: usize) -> f64 {
    let max = row.iter().copied().fold(f32::NEG_INFINITY, f32::max) as f64;
    let sum: f64 = row.iter().map(|&l| (l as f64 - max).exp()).sum();
    sum.ln() + max - row[target] as f64
}

#[cfg(test)]
mod tests {
    use super::*;

    fn assert_send_sync<T: Send + Sync>() {}
    fn assert_send<T: Send>() {}

    #[test]
    fn model_is_shareable_and_sessions_can_move() {
        assert_send_sync::<Model>();
        assert_send::<Session<'static>>();
    }
}
