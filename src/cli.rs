//! Command-line interface: argument definitions and one function per subcommand.

use std::collections::BTreeMap;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::Instant;

use clap::{Parser, Subcommand};
use serde_json::{json, Value};

use torchless::backend::cpu::caps::{self, CpuCaps};
use torchless::backend::cpu::dot::DotKernels;
use torchless::backend::BackendKind;
use torchless::chat::{ChatTemplate, Message};
use torchless::model::ModelSource;
use torchless::server::ServeOptions;
use torchless::{Error, GenerateOptions, LoadOptions, Model, Result, SamplerConfig};

/// The model `run` uses when no `--model` is given.
const DEFAULT_MODEL: &str = "SmolLM2-135M-Instruct.Q4_1.gguf";

#[derive(Parser)]
#[command(
    name = "torchless",
    version,
    about = "LLM inference with hand-written kernels"
)]
pub struct Cli {
    #[command(subcommand)]
    cmd: Command,
}

#[derive(clap::Args)]
struct Exec {
    /// CPU threads (default: one per core).
    #[arg(long, default_value_t = 0)]
    threads: usize,
    /// Backend to run on: cpu, cuda (builds with feature `cuda`) or wgpu (feature `wgpu`).
    #[arg(long, default_value = "cpu")]
    backend: String,
    /// GPU for device backends: the CUDA ordinal, or the wgpu adapter index.
    #[arg(long, default_value_t = 0)]
    device: usize,
}

impl Exec {
    fn options(&self) -> Result<LoadOptions> {
        Ok(LoadOptions {
            backend: self.backend.parse::<BackendKind>()?,
            threads: self.threads,
            device: self.device,
            cpu_path: None,
        })
    }
}

/// The sampling pipeline's knobs (llama.cpp's names and defaults).
#[derive(clap::Args)]
struct SamplingArgs {
    /// Sampling temperature; 0 = greedy.
    #[arg(long, default_value_t = 0.8)]
    temp: f32,
    /// Keep the k most likely tokens (0 = off).
    #[arg(long, default_value_t = 40)]
    top_k: usize,
    /// Keep the smallest set of tokens whose probability reaches p (1 = off).
    #[arg(long, default_value_t = 0.95)]
    top_p: f32,
    /// Drop tokens less likely than this fraction of the best one (0 = off).
    #[arg(long, default_value_t = 0.05)]
    min_p: f32,
    /// Repetition penalty over the last --repeat-last-n tokens (1 = off).
    #[arg(long, default_value_t = 1.0)]
    repeat_penalty: f32,
    /// How many recent tokens the penalties look at.
    #[arg(long, default_value_t = 64)]
    repeat_last_n: usize,
    /// Presence penalty (0 = off).
    #[arg(long, default_value_t = 0.0)]
    presence_penalty: f32,
    /// Frequency penalty (0 = off).
    #[arg(long, default_value_t = 0.0)]
    frequency_penalty: f32,
    /// Random seed: the same seed, model and settings give the same text.
    #[arg(long, default_value_t = 0)]
    seed: u64,
    /// Stop before this string (repeatable).
    #[arg(long = "stop")]
    stop: Vec<String>,
}

impl SamplingArgs {
    fn options(&self, max_tokens: usize) -> Result<GenerateOptions> {
        let sampler = SamplerConfig {
            temperature: self.temp,
            top_k: self.top_k,
            top_p: self.top_p,
            min_p: self.min_p,
            repeat_penalty: self.repeat_penalty,
            presence_penalty: self.presence_penalty,
            frequency_penalty: self.frequency_penalty,
            penalty_last_n: self.repeat_last_n,
            seed: self.seed,
        };
        sampler.validate().map_err(Error::InvalidArgument)?;
        Ok(GenerateOptions {
            max_tokens,
            sampler,
            stop: self.stop.clone(),
        })
    }
}

#[derive(Subcommand)]
enum Command {
    /// Generate text from a prompt, streaming it to stdout.
    Run {
        /// GGUF model file (default: SmolLM2-135M, fetched into the model cache on first use).
        #[arg(long)]
        model: Option<PathBuf>,
        #[arg(long)]
        prompt: String,
        /// Tokens to generate at most.
        #[arg(short = 'n', long = "n-predict", default_value_t = 128)]
        n: usize,
        /// Context size (default: prompt + n, at most the model's training context).
        #[arg(long)]
        ctx: Option<usize>,
        #[command(flatten)]
        sampling: SamplingArgs,
        #[command(flatten)]
        exec: Exec,
    },
    /// Chat with a model: one user turn per line of stdin, replies streamed to stdout.
    /// `/reset` starts a new conversation, `/exit` (or end of input) quits.
    Chat {
        /// GGUF model file (default: SmolLM2-135M, fetched into the model cache on first use).
        #[arg(long)]
        model: Option<PathBuf>,
        /// A system prompt for the conversation.
        #[arg(long)]
        system: Option<String>,
        /// Chat template: a built-in name (chatml, gemma, llama3, llama2, phi3) or a Jinja
        /// file (default: the model's own, else the built-in one for its family).
        #[arg(long)]
        chat_template: Option<String>,
        /// Tokens per reply at most.
        #[arg(short = 'n', long = "n-predict", default_value_t = 512)]
        n: usize,
        /// Context size of the conversation (default: 4096, at most the training context).
        #[arg(long)]
        ctx: Option<usize>,
        #[command(flatten)]
        sampling: SamplingArgs,
        #[command(flatten)]
        exec: Exec,
    },
    /// Serve the model over an OpenAI-compatible HTTP API.
    Serve {
        /// GGUF model file (default: SmolLM2-135M, fetched into the model cache on first use).
        #[arg(long)]
        model: Option<PathBuf>,
        #[arg(long, default_value = "127.0.0.1")]
        host: String,
        /// Port (0 = any free port; the chosen one is printed).
        #[arg(long, default_value_t = 8080)]
        port: u16,
        /// Requests generated at the same time, each with its own KV cache.
        #[arg(long, default_value_t = 4)]
        parallel: usize,
        /// Context size per request slot (at most the training context).
        #[arg(long, default_value_t = 4096)]
        ctx: usize,
        /// Requests that may wait for a free slot before new ones get 503.
        #[arg(long, default_value_t = 64)]
        queue: usize,
        /// Largest request body in bytes.
        #[arg(long, default_value_t = 1 << 20)]
        max_body: usize,
        /// Chat template: a built-in name or a Jinja file (default: the model's own, else the
        /// built-in one for its family).
        #[arg(long)]
        chat_template: Option<String>,
        #[command(flatten)]
        exec: Exec,
    },
    /// Measure prefill (pp) and decode (tg) speed as llama-bench does, with the bytes of weights
    /// read per token, the achieved GB/s and the share of the machine's read bandwidth.
    Bench {
        /// GGUF model file.
        #[arg(long)]
        model: PathBuf,
        /// Tokens in the prefill batch (0 = skip).
        #[arg(long, default_value_t = 128)]
        prompt_tokens: usize,
        /// Decode steps (0 = skip).
        #[arg(long, default_value_t = 64)]
        gen_tokens: usize,
        /// Timed repetitions of each test.
        #[arg(long, short = 'r', default_value_t = 3)]
        repetitions: usize,
        /// Then time each kernel of another `gen-tokens` decode steps, run one kernel after
        /// another without a graph, and list where a step's device time goes (CUDA only).
        #[arg(long)]
        profile: bool,
        /// Print the results as one JSON object on the last line of stdout (the readable
        /// report goes to stderr).
        #[arg(long)]
        json: bool,
        #[command(flatten)]
        exec: Exec,
    },
    /// Describe a model file: architecture, hyper-parameters, tensor types and bytes.
    Info {
        #[arg(long)]
        model: PathBuf,
        #[arg(long)]
        json: bool,
        /// Also describe this backend's device (cuda: the GPU; wgpu: the adapter, its features
        /// and limits).
        #[arg(long, default_value = "cpu")]
        backend: String,
        /// GPU ordinal for device backends.
        #[arg(long, default_value_t = 0)]
        device: usize,
    },
    /// Print the tokens of TEXT (BOS when the model adds one, specials parsed): one
    /// `id<TAB>piece` line per token, or with --json one JSON array of ids.
    Tokenize {
        #[arg(long)]
        model: PathBuf,
        text: String,
        #[arg(long)]
        json: bool,
    },
    /// Evaluate ids as one sequence and write every position's logits as float32 .npy.
    Logits {
        #[arg(long)]
        model: PathBuf,
        /// Comma-separated token ids.
        #[arg(long)]
        ids: String,
        #[arg(long)]
        out: PathBuf,
        #[command(flatten)]
        exec: Exec,
    },
    /// Perplexity of a text file, computed like llama-perplexity.
    Perplexity {
        #[arg(long)]
        model: PathBuf,
        #[arg(long)]
        file: PathBuf,
        /// Tokens per chunk.
        #[arg(long, default_value_t = 512)]
        ctx: usize,
        /// Evaluate at most this many chunks.
        #[arg(long)]
        chunks: Option<usize>,
        #[command(flatten)]
        exec: Exec,
    },
}

pub fn run(cli: Cli) -> Result<()> {
    match cli.cmd {
        Command::Run {
            model,
            prompt,
            n,
            ctx,
            sampling,
            exec,
        } => {
            let load = exec.options()?;
            let gen = sampling.options(n)?;
            let path = model_or_default(model)?;
            cmd_run(&path, &prompt, &gen, ctx, &load)
        }
        Command::Chat {
            model,
            system,
            chat_template,
            n,
            ctx,
            sampling,
            exec,
        } => {
            let gen = sampling.options(n)?;
            let (model, template) = load_for_chat(model, chat_template.as_deref(), &exec)?;
            let ctx = ctx.unwrap_or(4096).min(model.config().n_ctx_train);
            cmd_chat(&model, &template, system, &gen, ctx)
        }
        Command::Serve {
            model,
            host,
            port,
            parallel,
            ctx,
            queue,
            max_body,
            chat_template,
            exec,
        } => {
            if parallel == 0 || queue == 0 {
                return Err(Error::InvalidArgument(
                    "--parallel and --queue must be at least 1".into(),
                ));
            }
            let (model, template) = load_for_chat(model, chat_template.as_deref(), &exec)?;
            let opts = ServeOptions {
                host,
                port,
                slots: parallel,
                n_ctx: ctx,
                queue,
                max_body,
            };
            let name = model.name();
            let origin = template.origin.clone();
            torchless::server::serve(model, template, &opts, |addr| {
                eprintln!(
                    "torchless serve: {name} on http://{addr} ({parallel} slots of {ctx} tokens, chat template {origin})"
                );
            })
        }
        Command::Bench {
            model,
            prompt_tokens,
            gen_tokens,
            repetitions,
            profile,
            json,
            exec,
        } => {
            let load = exec.options()?;
            if profile && !matches!(load.backend, BackendKind::Cuda) {
                return Err(torchless::bench::profile_needs_cuda());
            }
            let opts = torchless::bench::BenchOptions {
                prompt_tokens,
                gen_tokens,
                repetitions,
            };
            cmd_bench(&model, &load, &opts, profile, json)
        }
        Command::Info {
            model,
            json,
            backend,
            device,
        } => cmd_info(&model, json, backend.parse::<BackendKind>()?, device),
        Command::Tokenize { model, text, json } => {
            let tok = load_tokenizer_only(&model)?;
            let ids = tok.encode(&text, true, true);
            if json {
                println!("{}", serde_json::json!(ids));
            } else {
                for id in ids {
                    let piece = String::from_utf8_lossy(&tok.token_bytes(id)).into_owned();
                    println!("{id}\t{piece:?}");
                }
            }
            Ok(())
        }
        Command::Logits {
            model,
            ids,
            out,
            exec,
        } => {
            let opts = exec.options()?;
            let ids = parse_ids(&ids)?;
            let engine = load_model(&model, &opts)?;
            let logits = engine.logits(&ids)?;
            let f = std::fs::File::create(&out).map_err(|e| io_err(&out, e))?;
            let shape = [ids.len(), engine.config().n_vocab];
            torchless::npy::write_f32(std::io::BufWriter::new(f), &shape, &logits)
                .map_err(|e| io_err(&out, e))?;
            eprintln!(
                "wrote {} × {} logits to {}",
                shape[0],
                shape[1],
                out.display()
            );
            Ok(())
        }
        Command::Perplexity {
            model,
            file,
            ctx,
            chunks,
            exec,
        } => {
            let opts = exec.options()?;
            let text = std::fs::read_to_string(&file).map_err(|e| io_err(&file, e))?;
            let engine = load_model(&model, &opts)?;
            let t0 = Instant::now();
            let r = engine.perplexity(&text, ctx, chunks, |i, n, ppl| {
                eprintln!("[{i}/{n}] ppl {ppl:.4}");
            })?;
            println!(
                "Final estimate: PPL = {:.4} +/- {:.5} ({} chunks of {ctx}, {} tokens scored, {:.1}s)",
                r.ppl,
                r.stderr,
                r.chunks,
                r.scored_tokens,
                t0.elapsed().as_secs_f64()
            );
            Ok(())
        }
    }
}

fn io_err(path: &Path, e: std::io::Error) -> Error {
    Error::Io {
        path: path.to_path_buf(),
        source: e,
    }
}

fn parse_ids(s: &str) -> Result<Vec<u32>> {
    let ids = s
        .split(',')
        .map(str::trim)
        .filter(|t| !t.is_empty())
        .map(|t| {
            t.parse::<u64>()
                .map_err(|_| Error::InvalidArgument(format!("--ids: '{t}' is not a token id")))
                .and_then(|v| {
                    u32::try_from(v).map_err(|_| {
                        Error::InvalidArgument(format!("--ids: {v} is not a valid token id"))
                    })
                })
        })
        .collect::<Result<Vec<_>>>()?;
    if ids.is_empty() {
        return Err(Error::InvalidArgument("--ids is empty".into()));
    }
    Ok(ids)
}

fn load_tokenizer_only(path: &Path) -> Result<torchless::tokenizer::Tokenizer> {
    ModelSource::open(path)?.tokenizer()
}

fn model_or_default(model: Option<PathBuf>) -> Result<PathBuf> {
    match model {
        Some(p) => Ok(p),
        None => default_model(),
    }
}

/// The model (`--model` or the default) and its chat template (`--chat-template` or the
/// model's own, else its family's built-in one), for `chat` and `serve`.
fn load_for_chat(
    model: Option<PathBuf>,
    chat_template: Option<&str>,
    exec: &Exec,
) -> Result<(Model, ChatTemplate)> {
    let load = exec.options()?;
    let model = load_model(&model_or_default(model)?, &load)?;
    let template = ChatTemplate::for_model(&model, chat_template)?;
    Ok((model, template))
}

/// Loads a model with a progress bar on stderr (shown only when stderr is a terminal).
fn load_model(path: &Path, opts: &LoadOptions) -> Result<Model> {
    let mut bar: Option<indicatif::ProgressBar> = None;
    let model = Model::load_with_progress(path, opts, |done, total| {
        let b = bar.get_or_insert_with(|| {
            let b = indicatif::ProgressBar::with_draw_target(
                Some(total),
                indicatif::ProgressDrawTarget::stderr(),
            );
            if let Ok(style) = indicatif::ProgressStyle::with_template(
                "loading {msg} [{bar:30}] {bytes}/{total_bytes} ({bytes_per_sec})",
            ) {
                b.set_style(style.progress_chars("=> "));
            }
            let name = path.file_name().unwrap_or_default().to_string_lossy();
            b.set_message(name.into_owned());
            b
        });
        b.set_position(done);
    });
    if let Some(b) = bar {
        b.finish_and_clear();
    }
    model
}

fn cmd_run(
    path: &Path,
    prompt: &str,
    gen: &GenerateOptions,
    ctx: Option<usize>,
    opts: &LoadOptions,
) -> Result<()> {
    let model = load_model(path, opts)?;
    let mut out = std::io::stdout().lock();
    let stats = model.generate(prompt, gen, ctx, |piece| {
        // A closed pipe (e.g. `| head`) just ends the output; it is not an error worth a panic.
        let _ = out.write_all(piece.as_bytes());
        let _ = out.flush();
    })?;
    let _ = writeln!(out);
    let _ = out.flush();
    eprintln!("{}", stats.summary());
    Ok(())
}

/// Interactive (or piped) multi-turn chat. The session keeps its KV cache between turns: each
/// turn renders the whole conversation, and only the part after the longest prefix already in
/// the cache is evaluated.
fn cmd_chat(
    model: &Model,
    template: &ChatTemplate,
    system: Option<String>,
    gen: &GenerateOptions,
    ctx: usize,
) -> Result<()> {
    use std::io::{BufRead, IsTerminal};
    let interactive = std::io::stdin().is_terminal();
    let mut session = model.session(ctx)?;
    let start: Vec<Message> = system
        .into_iter()
        .map(|s| Message::new("system", s))
        .collect();
    let mut history = start.clone();
    if interactive {
        eprintln!(
            "chatting with {} (template {}, context {ctx}); /reset starts over, /exit quits",
            model.name(),
            template.origin
        );
    }
    let stdin = std::io::stdin();
    let mut lines = stdin.lock().lines();
    let mut out = std::io::stdout();
    loop {
        if interactive {
            eprint!("> ");
        }
        let Some(line) = lines.next() else { break };
        let line = line.map_err(|e| io_err(Path::new("<stdin>"), e))?;
        let line = line.trim_end_matches(['\r', '\n']);
        match line.trim() {
            "" => continue,
            "/exit" | "/quit" => break,
            "/reset" => {
                history = start.clone();
                session.reset();
                eprintln!("(conversation reset)");
                continue;
            }
            _ => {}
        }
        history.push(Message::new("user", line));
        let ids = template.tokens(model, &history)?;
        if ids.len() >= session.n_ctx() {
            history.pop();
            eprintln!(
                "error: the conversation needs {} tokens but the context holds {}; /reset to start over or raise --ctx",
                ids.len(),
                session.n_ctx()
            );
            continue;
        }
        let mut reply = String::new();
        let stats = session.generate(&ids, gen, |piece| {
            reply.push_str(piece);
            let _ = out.write_all(piece.as_bytes());
            let _ = out.flush();
        })?;
        let _ = writeln!(out);
        let _ = out.flush();
        eprintln!("{}", stats.summary());
        history.push(Message::new("assistant", reply));
    }
    Ok(())
}

fn cmd_bench(
    path: &Path,
    load: &LoadOptions,
    opts: &torchless::bench::BenchOptions,
    profile: bool,
    as_json: bool,
) -> Result<()> {
    let model = load_model(path, load)?;
    let r = torchless::bench::run(&model, opts)?;
    let profile = if profile {
        Some(torchless::bench::profile(&model, opts)?)
    } else {
        None
    };
    let bw = model.memory_bandwidth()?;
    let per_tok = r.weight_bytes_per_token as f64;
    let achieved = per_tok * r.tg.mean;
    let backend = model.backend_description();
    let bw_kind = match load.backend {
        BackendKind::Cpu => "read",
        BackendKind::Cuda | BackendKind::Wgpu => "device copy",
    };
    let mut report = vec![
        format!(
            "model {} ({}, {:.1} MB of weights read per token) on {backend}",
            path.display(),
            model.config().arch.name,
            per_tok / 1e6
        ),
        format!(
            "pp{}: {:.1} ± {:.1} tok/s",
            opts.prompt_tokens, r.pp.mean, r.pp.stddev
        ),
        format!(
            "tg{}: {:.1} ± {:.1} tok/s = {:.2} GB/s of weights, {:.1}% of the measured {:.1} GB/s {bw_kind} bandwidth",
            opts.gen_tokens,
            r.tg.mean,
            r.tg.stddev,
            achieved / 1e9,
            100.0 * achieved / bw,
            bw / 1e9
        ),
    ];
    if let Some(p) = &profile {
        report.extend(profile_lines(p, r.tg.mean, bw));
    }
    for line in &report {
        if as_json {
            eprintln!("{line}");
        } else {
            println!("{line}");
        }
    }
    if as_json {
        println!(
            "{}",
            json!({
                "model": path.display().to_string(),
                "backend": backend,
                "prompt_tokens": opts.prompt_tokens,
                "gen_tokens": opts.gen_tokens,
                "repetitions": opts.repetitions,
                "pp_tps": r.pp.mean,
                "pp_tps_stddev": r.pp.stddev,
                "tg_tps": r.tg.mean,
                "tg_tps_stddev": r.tg.stddev,
                "weight_bytes_per_token": r.weight_bytes_per_token,
                "tg_gbps": achieved / 1e9,
                "read_bandwidth_gbps": bw / 1e9,
                "bandwidth_pct": 100.0 * achieved / bw,
                "profile": profile,
            })
        );
    }
    Ok(())
}

/// The readable form of a kernel profile: one line on the step, then one per kernel and weight
/// size, the most time first, with the weight bytes it read per second against `bw`.
fn profile_lines(p: &torchless::bench::KernelProfile, tg: f64, bw: f64) -> Vec<String> {
    let mut lines = vec![format!(
        "kernel profile of {} decode steps, kernels one after another (no graph, no overlap): \
         {:.3} ms per step on the device (the timed tg: {:.3} ms), {:.3} ms to queue{}",
        p.steps,
        p.step_ms,
        if tg > 0.0 { 1e3 / tg } else { 0.0 },
        p.enqueue_ms,
        if p.late_steps > 0 {
            format!(
                "; {} of the {} steps were queued slower than the hold before them, so their \
                 times may include host time",
                p.late_steps, p.steps
            )
        } else {
            String::new()
        }
    )];
    lines.push(format!(
        "{:<28} {:>14} {:>10} {:>10} {:>7} {:>10} {:>7}",
        "kernel", "weights/launch", "launches", "us/step", "share", "GB/s", "of bw"
    ));
    let total: f64 = p.kernels.iter().map(|k| k.us_per_step).sum();
    for k in &p.kernels {
        let rate = k.weight_bytes_per_s();
        let (gbps, of_bw) = if k.weight_bytes > 0 {
            (
                format!("{:.1}", rate / 1e9),
                format!("{:.1}%", 100.0 * rate / bw),
            )
        } else {
            ("-".into(), "-".into())
        };
        lines.push(format!(
            "{:<28} {:>14} {:>10.2} {:>10.1} {:>6.1}% {:>10} {:>7}",
            k.kernel,
            if k.weight_bytes > 0 {
                format!("{:.2} MB", k.weight_bytes as f64 / 1e6)
            } else {
                "-".into()
            },
            k.launches_per_step,
            k.us_per_step,
            if total > 0.0 {
                100.0 * k.us_per_step / total
            } else {
                0.0
            },
            gbps,
            of_bw
        ));
    }
    lines
}

/// The device a GPU backend would use, described (`None` for the CPU, which `info` always shows).
fn device_info(backend: BackendKind, device: usize) -> Result<Option<Value>> {
    match backend {
        BackendKind::Cpu => Ok(None),
        #[cfg(feature = "cuda")]
        BackendKind::Cuda => {
            let b = torchless::backend::cuda::CudaBackend::new(device)?;
            Ok(Some(
                serde_json::to_value(b.device_info()).unwrap_or_default(),
            ))
        }
        #[cfg(not(feature = "cuda"))]
        BackendKind::Cuda => {
            let _ = device;
            Err(Error::BackendNotBuilt("cuda"))
        }
        #[cfg(feature = "wgpu")]
        BackendKind::Wgpu => {
            let b = torchless::backend::wgpu::WgpuBackend::new(device)?;
            Ok(Some(
                serde_json::to_value(b.adapter_report()).unwrap_or_default(),
            ))
        }
        #[cfg(not(feature = "wgpu"))]
        BackendKind::Wgpu => {
            let _ = device;
            Err(Error::BackendNotBuilt("wgpu"))
        }
    }
}

fn cmd_info(path: &Path, as_json: bool, backend: BackendKind, device: usize) -> Result<()> {
    let gpu = device_info(backend, device)?;
    let f = ModelSource::open(path)?;
    let c = f.config()?;
    let mut types: BTreeMap<&str, (usize, u64)> = BTreeMap::new();
    for t in f.tensors() {
        let e = types.entry(t.ty.name()).or_default();
        e.0 += 1;
        e.1 += t.len as u64;
    }
    let total: u64 = types.values().map(|v| v.1).sum();
    let caps = CpuCaps::detect();
    // The path `run` would pick: the best this CPU has, unless TORCHLESS_CPU asks for another.
    let request = caps::requested_path();
    let cpu_path = request
        .clone()
        .and_then(|req| DotKernels::select(&caps, req).map_err(|e| e.to_string()))
        .map_or_else(|e| format!("unavailable: {e}"), |k| k.path().to_string());
    // Why that path: forced by the environment, or the best the detected features allow.
    let cpu_why = match request {
        Ok(Some(p)) => format!("forced by TORCHLESS_CPU={p}"),
        Ok(None) => "the best path the detected CPU features allow (set TORCHLESS_CPU=scalar|avx2|avx512 to force one)".to_string(),
        Err(e) => e,
    };
    let windows: Vec<Option<usize>> = c.layers.iter().map(|l| l.window).collect();
    let rope_bases: Vec<f64> = c.layers.iter().map(|l| l.rope.base).collect();
    let info = json!({
        "file": path.display().to_string(),
        "format": c.format,
        "gguf_version": f.gguf().map(|g| g.version),
        "architecture": c.arch.name,
        "name": c.name,
        "n_layer": c.n_layer,
        "dim": c.dim,
        "n_ff": c.n_ff,
        "n_head": c.n_head,
        "n_head_kv": c.n_head_kv,
        "head_dim": c.head_dim,
        "n_vocab": c.n_vocab,
        "n_ctx_train": c.n_ctx_train,
        "norm": c.arch.norm,
        "norm_eps": c.norm_eps,
        "activation": c.arch.activation,
        "rope_layout": c.rope_layout,
        "rope_dims": c.layers.first().map(|l| l.rope.n_rot),
        "rope_scaling": c.layers.iter().find(|l| l.window.is_none()).map(|l| &l.rope.scaling),
        "rope_base_per_layer": rope_bases,
        "window_per_layer": windows,
        "qk_norm": c.arch.qk_norm,
        "post_norms": c.arch.post_attn_norm,
        "parallel_residual": c.arch.parallel_residual,
        "ffn_gated": c.arch.ffn_gated,
        "embed_scale": c.embed_scale,
        "attn_scale": c.attn_scale,
        "attn_softcap": c.attn_softcap,
        "final_softcap": c.final_softcap,
        "tied_output": f.tensor("output.weight").is_none(),
        "n_tensors": f.tensors().len(),
        "tensor_types": types.iter().map(|(k, v)| (k.to_string(), json!({"count": v.0, "bytes": v.1}))).collect::<serde_json::Map<_, _>>(),
        "tensor_bytes": total,
        "cpu": {"kernel_path": cpu_path, "why": cpu_why, "features": caps.describe()},
        "device": gpu,
    });
    if as_json {
        println!("{info}");
        return Ok(());
    }
    println!("file:          {}", path.display());
    println!("architecture:  {} ({})", c.arch.name, c.name);
    println!(
        "layers:        {}   dim {}   ffn {}",
        c.n_layer, c.dim, c.n_ff
    );
    println!(
        "heads:         {} q / {} kv, head_dim {}",
        c.n_head, c.n_head_kv, c.head_dim
    );
    println!("vocab:         {}   train ctx {}", c.n_vocab, c.n_ctx_train);
    println!(
        "norm:          {:?} eps {:e}   activation {:?}",
        c.arch.norm, c.norm_eps, c.arch.activation
    );
    println!("format:        {:?}", c.format);
    println!(
        "rope:          {:?}, dims {:?}, bases {:?}",
        c.rope_layout,
        c.layers.first().map(|l| l.rope.n_rot),
        dedup(&rope_bases)
    );
    let n_windowed = windows.iter().filter(|w| w.is_some()).count();
    if n_windowed > 0 {
        println!(
            "sliding window: {:?} on {n_windowed} of {} layers",
            windows.iter().flatten().next(),
            c.n_layer
        );
    }
    println!(
        "tensors:       {} ({:.1} MB)",
        f.tensors().len(),
        total as f64 / 1e6
    );
    for (k, v) in &types {
        println!("  {k:<6} {:>4} tensors  {:>12} bytes", v.0, v.1);
    }
    println!(
        "cpu:           {cpu_path} kernels: {cpu_why} (features: {})",
        caps.describe()
    );
    if let Some(Value::Object(d)) = &gpu {
        for (k, v) in d {
            let v = v.as_str().map_or_else(|| v.to_string(), str::to_string);
            println!("device {k:<8} {v}");
        }
    }
    Ok(())
}

fn dedup(v: &[f64]) -> Vec<f64> {
    let mut out: Vec<f64> = Vec::new();
    for &x in v {
        if !out.contains(&x) {
            out.push(x);
        }
    }
    out
}

/// The default model in the local cache, fetched by tools/fetch-models.sh on first use.
fn default_model() -> Result<PathBuf> {
    let dir = match std::env::var_os("TORCHLESS_MODELS_DIR") {
        Some(d) => PathBuf::from(d),
        None => {
            let base = std::env::var_os("XDG_CACHE_HOME")
                .map(PathBuf::from)
                .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cache")))
                .ok_or_else(|| {
                    Error::InvalidArgument(
                        "no --model given and neither TORCHLESS_MODELS_DIR nor HOME is set".into(),
                    )
                })?;
            base.join("torchless").join("models")
        }
    };
    let path = dir.join(DEFAULT_MODEL);
    if path.is_file() {
        return Ok(path);
    }
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tools/fetch-models.sh");
    if !script.is_file() {
        return Err(Error::InvalidArgument(format!(
            "no --model given and {} is missing; fetch it with tools/fetch-models.sh from the torchless source tree",
            path.display()
        )));
    }
    eprintln!(
        "default model {DEFAULT_MODEL} is not in {}; fetching it with {}",
        dir.display(),
        script.display()
    );
    let status = std::process::Command::new("bash")
        .arg(&script)
        .arg("smollm2")
        .env("TORCHLESS_MODELS_DIR", &dir)
        .status()
        .map_err(|e| io_err(&script, e))?;
    if !status.success() || !path.is_file() {
        return Err(Error::InvalidArgument(format!(
            "fetching the default model failed ({status}); run {} yourself or pass --model",
            script.display()
        )));
    }
    Ok(path)
}
