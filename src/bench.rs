//! Model-level speed measurement, the way llama-bench measures it: prefill of a batch of
//! `prompt_tokens` arbitrary ids from an empty context (pp), and `gen_tokens` one-token decode
//! steps from an empty context (tg), each repeated after a warm-up; plus the bytes of weights a
//! decode step reads and the machine's read bandwidth, measured here, to say how close decode is
//! to the memory limit.

use std::time::Instant;

use crate::engine::Model;
use crate::error::{Error, Result};
use crate::graph::Logits;

/// What to measure.
#[derive(Clone, Debug)]
pub struct BenchOptions {
    /// Tokens in the prefill batch (0 = skip pp).
    pub prompt_tokens: usize,
    /// Decode steps (0 = skip tg).
    pub gen_tokens: usize,
    /// Timed repetitions of each test.
    pub repetitions: usize,
}

/// Mean and standard deviation of a rate over the repetitions.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct Rate {
    /// Mean tokens per second.
    pub mean: f64,
    /// Sample standard deviation.
    pub stddev: f64,
}

impl Rate {
    fn of(samples: &[f64]) -> Rate {
        if samples.is_empty() {
            return Rate::default();
        }
        let n = samples.len() as f64;
        let mean = samples.iter().sum::<f64>() / n;
        let var = if samples.len() > 1 {
            samples.iter().map(|s| (s - mean).powi(2)).sum::<f64>() / (n - 1.0)
        } else {
            0.0
        };
        Rate {
            mean,
            stddev: var.sqrt(),
        }
    }
}

/// Results of [`run`].
#[derive(Clone, Debug)]
pub struct BenchResult {
    /// Prefill tokens per second.
    pub pp: Rate,
    /// Decode tokens per second.
    pub tg: Rate,
    /// Bytes of weights one decode step reads (every matmul weight, the output matrix, and one
    /// embedding row; the KV cache is not counted).
    pub weight_bytes_per_token: u64,
}

/// Where a decode step's device time goes, kernel by kernel (`bench --profile`, CUDA only; see
/// `backend::cuda::profile` for how it is measured).
#[derive(Clone, Debug, Default, serde::Serialize)]
pub struct KernelProfile {
    /// Decode steps profiled.
    pub steps: u64,
    /// Mean device time of a step with its kernels run back to back, each after the one before
    /// it has completed (no graph, no overlap): an upper bound on a replayed step.
    pub step_ms: f64,
    /// Mean host time spent queueing a step's launches.
    pub enqueue_ms: f64,
    /// Steps whose queueing outlasted the hold before them (their times may include host time).
    pub late_steps: u64,
    /// One row per kernel and weight size, the most time first.
    pub kernels: Vec<KernelTime>,
}

/// One kernel at one weight size in a [`KernelProfile`].
#[derive(Clone, Debug, Default, serde::Serialize)]
pub struct KernelTime {
    /// Entry point.
    pub kernel: String,
    /// Weight bytes one launch reads (0 for kernels that read no weight matrix).
    pub weight_bytes: u64,
    /// Launches per decode step.
    pub launches_per_step: f64,
    /// Device time per decode step, in microseconds.
    pub us_per_step: f64,
}

impl KernelTime {
    /// Weight bytes read per second of this kernel's time (0 when it reads no weights).
    pub fn weight_bytes_per_s(&self) -> f64 {
        if self.us_per_step > 0.0 {
            self.weight_bytes as f64 * self.launches_per_step / (self.us_per_step * 1e-6)
        } else {
            0.0
        }
    }
}

/// Bytes of weights one decode step reads.
pub fn weight_bytes_per_token(model: &Model) -> u64 {
    let f = model.source();
    let mut bytes = 0u64;
    for t in f.tensors() {
        if t.name == "token_embd.weight" {
            // One row is gathered; the whole matrix again only when it doubles as the output.
            bytes += (t.len / t.n_rows().max(1)) as u64;
            if f.tensor("output.weight").is_none() {
                bytes += t.len as u64;
            }
        } else {
            bytes += t.len as u64;
        }
    }
    bytes
}

/// Runs pp and tg as llama-bench does (a warm-up of each, then `repetitions` timed runs).
pub fn run(model: &Model, opts: &BenchOptions) -> Result<BenchResult> {
    let c = model.config();
    let n_ctx = opts.prompt_tokens.max(opts.gen_tokens).max(1);
    if n_ctx > c.n_ctx_train {
        return Err(Error::InvalidArgument(format!(
            "{n_ctx} tokens do not fit the model's context ({})",
            c.n_ctx_train
        )));
    }
    if opts.repetitions == 0 {
        return Err(Error::InvalidArgument(
            "--repetitions must be at least 1".into(),
        ));
    }
    let ids = bench_ids(c.n_vocab, n_ctx);
    let mut st = model.new_state(n_ctx)?;

    let mut pp = Vec::new();
    if opts.prompt_tokens > 0 {
        let batch = &ids[..opts.prompt_tokens];
        for rep in 0..=opts.repetitions {
            st.rewind(0);
            let t0 = Instant::now();
            model.forward(&mut st, batch, Logits::Last)?;
            if rep > 0 {
                pp.push(batch.len() as f64 / t0.elapsed().as_secs_f64());
            }
        }
    }
    let mut tg = Vec::new();
    if opts.gen_tokens > 0 {
        for rep in 0..=opts.repetitions {
            st.rewind(0);
            // The warm-up is one step, as in llama-bench.
            let steps = if rep == 0 { 1 } else { opts.gen_tokens };
            let t0 = Instant::now();
            for &id in &ids[..steps] {
                model.forward(&mut st, &[id], Logits::Last)?;
            }
            if rep > 0 {
                tg.push(steps as f64 / t0.elapsed().as_secs_f64());
            }
        }
    }
    Ok(BenchResult {
        pp: Rate::of(&pp),
        tg: Rate::of(&tg),
        weight_bytes_per_token: weight_bytes_per_token(model),
    })
}

/// The error for a kernel profile asked of a backend other than CUDA.
pub fn profile_needs_cuda() -> Error {
    Error::InvalidArgument("--profile times CUDA kernels: it needs --backend cuda".into())
}

/// Times every kernel of `gen_tokens` decode steps from an empty context, after [`run`]'s warm-up
/// (the backend must be CUDA: [`Model::start_kernel_profile`] says so otherwise).
pub fn profile(model: &Model, opts: &BenchOptions) -> Result<KernelProfile> {
    if opts.gen_tokens == 0 {
        return Err(Error::InvalidArgument(
            "--profile times decode steps: --gen-tokens must be at least 1".into(),
        ));
    }
    // The context `run` decodes in: attention's key splits depend on its size.
    let n_ctx = opts.prompt_tokens.max(opts.gen_tokens);
    let ids = bench_ids(model.config().n_vocab, opts.gen_tokens);
    let mut st = model.new_state(n_ctx)?;
    // One step unprofiled first, as in `run`: the first step of a state allocates.
    model.forward(&mut st, &ids[..1], Logits::Last)?;
    st.rewind(0);
    model.start_kernel_profile()?;
    let steps = ids
        .iter()
        .try_for_each(|&id| model.forward(&mut st, &[id], Logits::Last).map(drop));
    let profile = model.finish_kernel_profile();
    steps?;
    profile
}

/// Arbitrary but fixed token ids (llama-bench uses random ones; speed does not depend on them).
fn bench_ids(n_vocab: usize, n: usize) -> Vec<u32> {
    let mut x = 0x2545_F491_4F6C_DD1Du64;
    (0..n)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            (x % n_vocab as u64) as u32
        })
        .collect()
}

/// The machine's read bandwidth in bytes per second with `threads` threads: the best of several
/// passes summing a 512 MiB buffer (far larger than any cache), each thread its own slice.
pub fn read_bandwidth(threads: usize) -> f64 {
    const BYTES: usize = 512 << 20;
    const PASSES: usize = 5;
    let threads = threads.max(1);
    let buf: Vec<u64> = (0..BYTES / 8).map(|i| i as u64).collect();
    let chunk = buf.len().div_ceil(threads);
    let mut best = 0f64;
    for _ in 0..PASSES {
        let t0 = Instant::now();
        let total: u64 = std::thread::scope(|s| {
            let handles: Vec<_> = buf
                .chunks(chunk)
                .map(|part| {
                    s.spawn(move || {
                        // Eight independent lanes so the adds never limit the loads.
                        let mut acc = [0u64; 8];
                        for block in part.chunks_exact(8) {
                            for (a, &v) in acc.iter_mut().zip(block) {
                                *a = a.wrapping_add(v);
                            }
                        }
                        acc.iter().fold(0u64, |a, &b| a.wrapping_add(b))
                    })
                })
                .collect();
            handles
                .into_iter()
                .map(|h| h.join().unwrap_or(0))
                .fold(0u64, |a, b| a.wrapping_add(b))
        });
        std::hint::black_box(total);
        best = best.max(BYTES as f64 / t0.elapsed().as_secs_f64());
    }
    best
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rate_statistics() {
        let r = Rate::of(&[10.0, 12.0, 14.0]);
        assert!((r.mean - 12.0).abs() < 1e-12);
        assert!((r.stddev - 2.0).abs() < 1e-12);
        assert_eq!(Rate::of(&[]), Rate::default());
    }

    #[test]
    fn bench_ids_are_in_range_and_fixed() {
        let a = bench_ids(100, 50);
        assert_eq!(a, bench_ids(100, 50));
        assert!(a.iter().all(|&i| i < 100));
    }
}
