//! Command-line interface: argument definitions and one function per subcommand.

use std::collections::BTreeMap;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::Instant;

use clap::{Parser, Subcommand};
use serde_json::json;

use torchless::backend::cpu::caps::{self, CpuCaps};
use torchless::backend::cpu::dot::DotKernels;
use torchless::backend::BackendKind;
use torchless::model::{GgufFile, ModelConfig};
use torchless::sampling::SamplerConfig;
use torchless::{Engine, Error, LoadOptions, Result};

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
    /// Backend to run on.
    #[arg(long, default_value = "cpu")]
    backend: String,
}

impl Exec {
    fn options(&self) -> Result<LoadOptions> {
        Ok(LoadOptions {
            backend: self.backend.parse::<BackendKind>()?,
            threads: self.threads,
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
        /// Tokens to generate.
        #[arg(short = 'n', long = "n-predict", default_value_t = 128)]
        n: usize,
        /// Sampling temperature; 0 = greedy.
        #[arg(long, default_value_t = 0.8)]
        temp: f32,
        #[arg(long, default_value_t = 0)]
        seed: u64,
        /// Context size (default: prompt + n, at most the model's training context).
        #[arg(long)]
        ctx: Option<usize>,
        #[command(flatten)]
        exec: Exec,
    },
    /// Describe a model file: architecture, hyper-parameters, tensor types and bytes.
    Info {
        #[arg(long)]
        model: PathBuf,
        #[arg(long)]
        json: bool,
        #[arg(long, default_value = "cpu")]
        backend: String,
    },
    /// Print the token ids of TEXT as a JSON array (BOS when the model adds one, specials parsed).
    Tokenize {
        #[arg(long)]
        model: PathBuf,
        text: String,
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
            temp,
            seed,
            ctx,
            exec,
        } => {
            let opts = exec.options()?;
            let path = match model {
                Some(p) => p,
                None => default_model()?,
            };
            cmd_run(&path, &prompt, n, temp, seed, ctx, &opts)
        }
        Command::Info {
            model,
            json,
            backend,
        } => {
            backend.parse::<BackendKind>()?;
            cmd_info(&model, json)
        }
        Command::Tokenize { model, text } => {
            let engine = load_tokenizer_only(&model)?;
            println!("{}", json!(engine.encode(&text, true, true)));
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
            let engine = Engine::load(&model, &opts)?;
            let logits = engine.logits(&ids)?;
            let f = std::fs::File::create(&out).map_err(|e| io_err(&out, e))?;
            let shape = [ids.len(), engine.model.config.n_vocab];
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
            let engine = Engine::load(&model, &opts)?;
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
    let f = GgufFile::open(path)?;
    Ok(torchless::tokenizer::Tokenizer::from_spec(
        torchless::model::vocab_spec(&f)?,
    )?)
}

fn cmd_run(
    path: &Path,
    prompt: &str,
    n: usize,
    temp: f32,
    seed: u64,
    ctx: Option<usize>,
    opts: &LoadOptions,
) -> Result<()> {
    let engine = Engine::load(path, opts)?;
    let sampler = SamplerConfig {
        temperature: temp,
        seed,
        ..Default::default()
    };
    let mut out = std::io::stdout().lock();
    let stats = engine.generate(prompt, n, sampler, ctx, |piece| {
        // A closed pipe (e.g. `| head`) just ends the output; it is not an error worth a panic.
        let _ = out.write_all(piece.as_bytes());
        let _ = out.flush();
    })?;
    let _ = writeln!(out);
    let _ = out.flush();
    let pp = stats.prompt_tokens as f64 / stats.prompt_time.as_secs_f64().max(1e-9);
    let tg = stats.generated_tokens as f64 / stats.gen_time.as_secs_f64().max(1e-9);
    eprintln!(
        "prompt {} tokens at {pp:.1} tok/s (first token after {:.0} ms), generated {} tokens at {tg:.1} tok/s",
        stats.prompt_tokens,
        stats.prompt_time.as_secs_f64() * 1e3,
        stats.generated_tokens,
    );
    Ok(())
}

fn cmd_info(path: &Path, as_json: bool) -> Result<()> {
    let f = GgufFile::open(path)?;
    let c = ModelConfig::from_gguf(&f)?;
    let mut types: BTreeMap<&str, (usize, u64)> = BTreeMap::new();
    for t in f.tensors() {
        let e = types.entry(t.ty.name()).or_default();
        e.0 += 1;
        e.1 += t.len as u64;
    }
    let total: u64 = types.values().map(|v| v.1).sum();
    let caps = CpuCaps::detect();
    // The path `run` would pick: the best this CPU has, unless TORCHLESS_CPU asks for another.
    let cpu_path = caps::requested_path()
        .map_err(|e| e.to_string())
        .and_then(|req| DotKernels::select(&caps, req).map_err(|e| e.to_string()))
        .map_or_else(|e| format!("unavailable: {e}"), |k| k.path().to_string());
    let windows: Vec<Option<usize>> = c.layers.iter().map(|l| l.window).collect();
    let rope_bases: Vec<f32> = c.layers.iter().map(|l| l.rope.base).collect();
    let info = json!({
        "file": path.display().to_string(),
        "gguf_version": f.version,
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
        "rope_layout": c.arch.rope_layout,
        "rope_dims": c.layers.first().map(|l| l.rope.n_rot),
        "rope_base_per_layer": rope_bases,
        "window_per_layer": windows,
        "qk_norm": c.arch.qk_norm,
        "post_norms": c.arch.post_attn_norm,
        "embed_scale": c.embed_scale,
        "tied_output": f.tensor("output.weight").is_none(),
        "n_tensors": f.tensors().len(),
        "tensor_types": types.iter().map(|(k, v)| (k.to_string(), json!({"count": v.0, "bytes": v.1}))).collect::<serde_json::Map<_, _>>(),
        "tensor_bytes": total,
        "cpu": {"kernel_path": cpu_path, "features": caps.describe()},
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
    println!(
        "rope:          {:?}, dims {:?}, bases {:?}",
        c.arch.rope_layout,
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
        "cpu:           {cpu_path} kernels (features: {})",
        caps.describe()
    );
    Ok(())
}

fn dedup(v: &[f32]) -> Vec<f32> {
    let mut out: Vec<f32> = Vec::new();
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
