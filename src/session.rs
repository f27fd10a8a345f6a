//! A session: one sequence on a loaded [`Model`], with its KV cache, the tokens it holds and the
//! logits after the last one. Sessions feed tokens or text, sample, and generate; a new prompt
//! that shares a prefix with what the session holds re-evaluates only the part that differs
//! (and at least its last [`LANE_MIN_TOKENS`] tokens, so a repeated prompt takes the same
//! batched kernels as the first time and gets the same answer), so multi-turn chat and
//! repeated system prompts reuse the KV cache.

use std::time::{Duration, Instant};

use crate::backend::cpu::matmul::LANE_MIN_TOKENS;
use crate::engine::{Model, SeqState};
use crate::error::{Error, Result};
use crate::graph::Logits;
use crate::sampling::{Sampler, SamplerConfig, StopStrings};
use crate::tokenizer::StreamDecoder;

/// One sequence being evaluated on a model.
pub struct Session<'m> {
    model: &'m Model,
    state: SeqState,
    tokens: Vec<u32>,
    logits: Vec<f32>,
}

/// What a generation is asked to do.
#[derive(Clone, Debug)]
pub struct GenerateOptions {
    /// Most tokens to generate.
    pub max_tokens: usize,
    /// The sampling pipeline's settings.
    pub sampler: SamplerConfig,
    /// Generation stops before the first occurrence of any of these strings.
    pub stop: Vec<String>,
}

impl Default for GenerateOptions {
    fn default() -> Self {
        GenerateOptions {
            max_tokens: 128,
            sampler: SamplerConfig::default(),
            stop: Vec::new(),
        }
    }
}

/// Why a generation ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FinishReason {
    /// The model produced an end-of-generation token.
    EndOfGeneration,
    /// A stop string appeared.
    StopString,
    /// `max_tokens` were generated.
    MaxTokens,
    /// The context is full.
    ContextFull,
}

impl FinishReason {
    /// The OpenAI API's name for it: `stop` or `length`.
    pub fn openai(self) -> &'static str {
        match self {
            FinishReason::EndOfGeneration | FinishReason::StopString => "stop",
            FinishReason::MaxTokens | FinishReason::ContextFull => "length",
        }
    }
}

/// Counts and timings of one generation.
#[derive(Clone, Debug)]
pub struct GenStats {
    /// Tokens of the prompt.
    pub prompt_tokens: usize,
    /// Of those, how many were already in the session's KV cache.
    pub reused_tokens: usize,
    /// Tokens generated (the end-of-generation token is not counted).
    pub generated_tokens: usize,
    /// Time to evaluate the prompt (what was not reused).
    pub prompt_time: Duration,
    /// Time from the end of the prompt to the first token's text.
    pub first_token_time: Duration,
    /// Time spent generating.
    pub gen_time: Duration,
    /// Why generation stopped.
    pub finish: FinishReason,
}

impl GenStats {
    /// Prompt tokens evaluated per second.
    pub fn prompt_tps(&self) -> f64 {
        (self.prompt_tokens - self.reused_tokens) as f64 / self.prompt_time.as_secs_f64().max(1e-9)
    }
    /// Generated tokens per second.
    pub fn gen_tps(&self) -> f64 {
        self.generated_tokens as f64 / self.gen_time.as_secs_f64().max(1e-9)
    }
    /// One line for stderr: tokens, speeds and time to first token.
    pub fn summary(&self) -> String {
        let reused = if self.reused_tokens > 0 {
            format!(" ({} reused from cache)", self.reused_tokens)
        } else {
            String::new()
        };
        format!(
            "prompt {} tokens{reused} at {:.1} tok/s, first token after {:.0} ms, generated {} tokens at {:.1} tok/s ({})",
            self.prompt_tokens,
            self.prompt_tps(),
            (self.prompt_time + self.first_token_time).as_secs_f64() * 1e3,
            self.generated_tokens,
            self.gen_tps(),
            self.finish.openai(),
        )
    }
}

impl<'m> Session<'m> {
    pub(crate) fn new(model: &'m Model, n_ctx: usize) -> Result<Self> {
        Ok(Session {
            model,
            state: model.new_state(n_ctx)?,
            tokens: Vec::new(),
            logits: Vec::new(),
        })
    }

    /// The model this session runs on.
    pub fn model(&self) -> &'m Model {
        self.model
    }

    /// Positions this session has room for.
    pub fn n_ctx(&self) -> usize {
        self.state.n_ctx()
    }

    /// Positions still free.
    pub fn remaining(&self) -> usize {
        self.n_ctx() - self.tokens.len()
    }

    /// The tokens evaluated so far (they are in the KV cache).
    pub fn tokens(&self) -> &[u32] {
        &self.tokens
    }

    /// Logits (`n_vocab`) after the last evaluated token; empty before the first feed or after a
    /// truncation.
    pub fn logits(&self) -> &[f32] {
        &self.logits
    }

    /// Evaluates `ids` after what the session holds and returns the logits after the last one.
    pub fn feed(&mut self, ids: &[u32]) -> Result<&[f32]> {
        self.logits = self.model.forward(&mut self.state, ids, Logits::Last)?;
        self.tokens.extend_from_slice(ids);
        Ok(&self.logits)
    }

    /// Tokenizes `text` (BOS first when the session is empty and the model adds one; special
    /// tokens parsed) and feeds it.
    pub fn feed_text(&mut self, text: &str) -> Result<&[f32]> {
        let ids = self
            .model
            .tokenizer()
            .encode(text, self.tokens.is_empty(), true);
        if ids.is_empty() {
            return Err(Error::InvalidArgument("the text produced no tokens".into()));
        }
        self.feed(&ids)
    }

    /// Forgets every token from position `n` on (the KV cache before `n` stays valid).
    pub fn truncate(&mut self, n: usize) {
        if n < self.tokens.len() {
            self.tokens.truncate(n);
            self.state.rewind(n);
            self.logits.clear();
        }
    }

    /// Empties the session.
    pub fn reset(&mut self) {
        self.truncate(0);
    }

    /// Makes the session hold exactly `ids`, with logits after the last: the longest common
    /// prefix with what it holds is kept and only the rest is evaluated. Returns how many tokens
    /// were reused.
    pub fn set_prompt(&mut self, ids: &[u32]) -> Result<usize> {
        if ids.is_empty() {
            return Err(Error::InvalidArgument("the prompt has no tokens".into()));
        }
        if ids.len() > self.n_ctx() {
            return Err(Error::ContextOverflow {
                needed: ids.len(),
                ctx: self.n_ctx(),
                max: self.model.config().n_ctx_train,
            });
        }
        let mut keep = self
            .tokens
            .iter()
            .zip(ids)
            .take_while(|(a, b)| a == b)
            .count();
        if keep == ids.len() && keep == self.tokens.len() && !self.logits.is_empty() {
            return Ok(keep);
        }
        // The last prompt token is always evaluated: its logits are needed. Re-evaluate a tail
        // of at least `LANE_MIN_TOKENS` tokens so that it goes through the same kernels as
        // the batch that first evaluated those positions (batched and one-token kernels round
        // differently): a repeated request then gives exactly the answer it gave the first
        // time, as a fresh session would.
        keep = keep
            .min(ids.len().saturating_sub(LANE_MIN_TOKENS))
            .min(ids.len() - 1);
        self.truncate(keep);
        self.feed(&ids[keep..])?;
        Ok(keep)
    }

    /// Samples the next token from the current logits, penalising the session's recent tokens.
    pub fn sample(&self, sampler: &mut Sampler) -> Result<u32> {
        if self.logits.is_empty() {
            return Err(Error::InvalidArgument(
                "nothing to sample from: feed tokens first".into(),
            ));
        }
        Ok(sampler.sample(&self.logits, &self.tokens))
    }

    /// Sets the session to `prompt` (reusing the common prefix) and generates, calling `on_text`
    /// with each piece of whole UTF-8 characters as it is produced.
    pub fn generate(
        &mut self,
        prompt: &[u32],
        opts: &GenerateOptions,
        mut on_text: impl FnMut(&str),
    ) -> Result<GenStats> {
        let t0 = Instant::now();
        let reused = self.set_prompt(prompt)?;
        let prompt_time = t0.elapsed();
        let t1 = Instant::now();
        let mut first_token_time = None;
        let mut gen = Generation::new(opts);
        let finish = loop {
            let step = gen.step(self)?;
            let (text, done) = match step {
                Step::Text(t) => (t, None),
                Step::Done(reason, t) => (t, Some(reason)),
            };
            if !text.is_empty() {
                first_token_time.get_or_insert_with(|| t1.elapsed());
                on_text(&text);
            }
            if let Some(reason) = done {
                break reason;
            }
        };
        Ok(GenStats {
            prompt_tokens: prompt.len(),
            reused_tokens: reused,
            generated_tokens: gen.generated(),
            prompt_time,
            first_token_time: first_token_time.unwrap_or_else(|| t1.elapsed()),
            gen_time: t1.elapsed(),
            finish,
        })
    }
}

/// One step of a [`Generation`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Step {
    /// A token was generated; this is the text it made final (possibly empty).
    Text(String),
    /// Generation is over; the last of the text (possibly empty).
    Done(FinishReason, String),
}

/// A generation in progress, driven one token at a time (so a server can interleave several).
pub struct Generation {
    sampler: Sampler,
    stops: StopStrings,
    decoder: StreamDecoder,
    max_tokens: usize,
    generated: usize,
    finished: bool,
}

impl Generation {
    /// A generation with these options; it continues from a session's current logits.
    pub fn new(opts: &GenerateOptions) -> Self {
        Generation {
            sampler: Sampler::new(opts.sampler.clone()),
            stops: StopStrings::new(opts.stop.iter().cloned()),
            decoder: StreamDecoder::new(),
            max_tokens: opts.max_tokens,
            generated: 0,
            finished: false,
        }
    }

    /// Tokens generated so far.
    pub fn generated(&self) -> usize {
        self.generated
    }

    /// Samples one token, returns its text and feeds it to the session (unless that token ends
    /// the generation). Calling it after `Done` is an error.
    pub fn step(&mut self, s: &mut Session) -> Result<Step> {
        if self.finished {
            return Err(Error::InvalidArgument("the generation is over".into()));
        }
        if self.generated >= self.max_tokens {
            return Ok(self.done(FinishReason::MaxTokens, String::new()));
        }
        let tok = s.sample(&mut self.sampler)?;
        let tokenizer = s.model().tokenizer();
        if tokenizer.is_eog(tok) {
            return Ok(self.done(FinishReason::EndOfGeneration, String::new()));
        }
        self.generated += 1;
        // Control tokens (chat markup) are not shown, as in llama.cpp's default output.
        let piece = if tokenizer.is_control(tok) {
            String::new()
        } else {
            self.decoder.push(tokenizer, tok)
        };
        let (text, stopped) = self.stops.push(&piece);
        if stopped {
            self.finished = true;
            return Ok(Step::Done(FinishReason::StopString, text));
        }
        if self.generated >= self.max_tokens {
            return Ok(self.done(FinishReason::MaxTokens, text));
        }
        if s.remaining() == 0 {
            return Ok(self.done(FinishReason::ContextFull, text));
        }
        s.feed(&[tok])?;
        Ok(Step::Text(text))
    }

    /// Ends the generation, releasing text held back for UTF-8 or stop-string matching.
    fn done(&mut self, reason: FinishReason, mut text: String) -> Step {
        self.finished = true;
        let tail = self.decoder.finish();
        let (t, stopped) = self.stops.push(&tail);
        text.push_str(&t);
        if stopped {
            return Step::Done(FinishReason::StopString, text);
        }
        text.push_str(&self.stops.finish());
        Step::Done(reason, text)
    }
}
