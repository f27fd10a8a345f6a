//! The library's front door: load a model file with its tokenizer onto a backend, then generate
//! text, evaluate logits, or measure perplexity.

use std::path::Path;
use std::time::{Duration, Instant};

use crate::backend::cpu::CpuBackend;
use crate::backend::BackendKind;
use crate::error::{Error, Result};
use crate::graph::{Logits, Model, State};
use crate::model::{vocab_spec, GgufFile};
use crate::sampling::{Sampler, SamplerConfig};
use crate::tokenizer::{StreamDecoder, Tokenizer};

/// How to load a model.
#[derive(Clone, Debug)]
pub struct LoadOptions {
    pub backend: BackendKind,
    /// CPU threads; 0 = one per core.
    pub threads: usize,
}

impl Default for LoadOptions {
    fn default() -> Self {
        LoadOptions {
            backend: BackendKind::Cpu,
            threads: 0,
        }
    }
}

/// A model file, loaded: weights bound to a backend, and its tokenizer.
pub struct Engine {
    pub file: GgufFile,
    pub model: Model<CpuBackend>,
    pub tokenizer: Tokenizer,
}

/// Timings of one generation.
#[derive(Clone, Debug, Default)]
pub struct GenStats {
    pub prompt_tokens: usize,
    pub generated_tokens: usize,
    pub prompt_time: Duration,
    pub gen_time: Duration,
}

/// Perplexity over a text, computed the way llama-perplexity does.
#[derive(Clone, Debug)]
pub struct Perplexity {
    pub ppl: f64,
    /// Standard error of the estimate (llama-perplexity's "+/-").
    pub stderr: f64,
    pub chunks: usize,
    pub scored_tokens: usize,
}

impl Engine {
    pub fn load(path: impl AsRef<Path>, opts: &LoadOptions) -> Result<Engine> {
        let file = GgufFile::open(path)?;
        let tokenizer = Tokenizer::from_spec(vocab_spec(&file)?)?;
        let backend = match opts.backend {
            BackendKind::Cpu => CpuBackend::new(opts.threads)?,
        };
        let model = Model::load(&file, backend)?;
        if tokenizer.n_vocab() != model.config.n_vocab {
            return Err(Error::BadKey {
                key: "tokenizer.ggml.tokens".into(),
                why: format!(
                    "{} tokens but the embedding has {} rows",
                    tokenizer.n_vocab(),
                    model.config.n_vocab
                ),
            });
        }
        Ok(Engine {
            file,
            model,
            tokenizer,
        })
    }

    /// Tokens for `text` as llama-tokenize makes them (BOS if the model adds one, specials parsed).
    pub fn tokenize(&self, text: &str) -> Vec<u32> {
        self.tokenizer.encode(text, true, true)
    }

    pub fn new_state(&self, n_ctx: usize) -> Result<State<CpuBackend>> {
        self.model.new_state(n_ctx)
    }

    /// Logits of every position of `ids`, evaluated as one sequence: `[ids.len() * n_vocab]`.
    pub fn logits(&self, ids: &[u32]) -> Result<Vec<f32>> {
        let mut st = self.new_state(ids.len().max(1).min(self.model.config.n_ctx_train))?;
        self.model.forward(&mut st, ids, Logits::All)
    }

    /// Generate up to `n` tokens after `prompt`, calling `on_text` with each piece of whole
    /// UTF-8 characters as it is produced. Stops at an end-of-generation token.
    pub fn generate(
        &self,
        prompt: &str,
        n: usize,
        sampler: SamplerConfig,
        n_ctx: Option<usize>,
        mut on_text: impl FnMut(&str),
    ) -> Result<GenStats> {
        let ids = self.tokenize(prompt);
        if ids.is_empty() {
            return Err(Error::InvalidArgument(
                "the prompt produced no tokens".into(),
            ));
        }
        let max = self.model.config.n_ctx_train;
        let ctx = n_ctx.unwrap_or_else(|| (ids.len() + n).min(max));
        if ids.len() + n > ctx {
            return Err(Error::ContextOverflow {
                needed: ids.len() + n,
                ctx,
                max,
            });
        }
        let mut st = self.new_state(ctx)?;
        let mut sampler = Sampler::new(sampler);
        let mut dec = StreamDecoder::new();
        let mut stats = GenStats {
            prompt_tokens: ids.len(),
            ..Default::default()
        };
        let t0 = Instant::now();
        let mut logits = self.model.forward(&mut st, &ids, Logits::Last)?;
        stats.prompt_time = t0.elapsed();
        let t1 = Instant::now();
        for _ in 0..n {
            let tok = sampler.sample(&logits);
            if self.tokenizer.is_eog(tok) {
                break;
            }
            stats.generated_tokens += 1;
            let piece = dec.push(&self.tokenizer, tok);
            if !piece.is_empty() {
                on_text(&piece);
            }
            if stats.generated_tokens == n {
                break;
            }
            logits = self.model.forward(&mut st, &[tok], Logits::Last)?;
        }
        let rest = dec.finish();
        if !rest.is_empty() {
            on_text(&rest);
        }
        stats.gen_time = t1.elapsed();
        Ok(stats)
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
        let n_vocab = self.model.config.n_vocab;
        let first = ctx / 2;
        let mut st = self.new_state(ctx)?;
        let (mut nll, mut nll2, mut count) = (0f64, 0f64, 0usize);
        for c in 0..n_chunks {
            let start = c * ctx;
            let mut batch = tokens[start..start + ctx].to_vec();
            if let Some(b) = bos {
                batch[0] = b;
            }
            st.n_past = 0;
            let logits = self.model.forward(&mut st, &batch, Logits::All)?;
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

/// -log softmax(row)[target], in f64.
pub fn neg_log_softmax(row: &[f32], target: usize) -> f64 {
    let max = row.iter().copied().fold(f32::NEG_INFINITY, f32::max) as f64;
    let sum: f64 = row.iter().map(|&l| (l as f64 - max).exp()).sum();
    sum.ln() + max - row[target] as f64
}
