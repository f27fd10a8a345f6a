//! The CUDA backend on a real device: the op-by-op harness (tests/ops_harness, every op and
//! weight type against the CPU scalar reference) and end-to-end agreement with the CPU backend
//! on the two real models and on every tiny architecture fixture.
//!
//! Not part of `cargo test` (`test = false` in Cargo.toml): tools/gpu-check.sh runs it, one test
//! at a time, on a machine with an NVIDIA GPU. Every test FAILS when there is no device: passing
//! here means the CUDA backend really ran. Models come from `TORCHLESS_MODELS_DIR` (default
//! `./models`); op inputs are fresh each run (`TORCHLESS_OPS_SEED=<seed>` replays a failure).
#![cfg(feature = "cuda")]

mod ops_harness;

use std::path::PathBuf;

use ops_harness::Family;
use torchless::backend::cuda::CudaBackend;
use torchless::backend::BackendKind;
use torchless::graph::Logits;
use torchless::{Error, LoadOptions, Model};

/// Device 0, or a panic saying why not (these tests must fail without a GPU).
fn device() -> CudaBackend {
    CudaBackend::new(0).unwrap_or_else(|e| {
        panic!(
            "CUDA device 0 is not usable: {e} (these tests need an NVIDIA GPU: tools/gpu-check.sh)"
        )
    })
}

// ---------------------------------------------------------------------------------------------
// Op by op. Each family gets a fresh device backend: CUDA errors are sticky, so one faulting
// kernel must not hide the results of the others.
// ---------------------------------------------------------------------------------------------

#[test]
fn ops_embed() {
    ops_harness::check_family(&device(), "cuda", Family::Embed);
}

#[test]
fn ops_elementwise() {
    ops_harness::check_family(&device(), "cuda", Family::Elementwise);
}

#[test]
fn ops_norm() {
    ops_harness::check_family(&device(), "cuda", Family::Norm);
}

#[test]
fn ops_rope() {
    ops_harness::check_family(&device(), "cuda", Family::Rope);
}

#[test]
fn ops_attention() {
    ops_harness::check_family(&device(), "cuda", Family::Attention);
}

#[test]
fn ops_matmul() {
    ops_harness::check_family(&device(), "cuda", Family::Matmul);
}

#[test]
fn ops_odd_cols() {
    ops_harness::check_family(&device(), "cuda", Family::OddCols);
}

/// Every family again on one backend: state kept between ops (uploaded weights, the token-id
/// buffer, cached RoPE tables) must not leak from one call into the next.
#[test]
fn ops_all_families_on_one_backend() {
    ops_harness::check_backend(&device(), "cuda (one backend)");
}

// ---------------------------------------------------------------------------------------------
// The two real models through the library API.
// ---------------------------------------------------------------------------------------------

const SMOLLM2: &str = "SmolLM2-135M-Instruct.Q4_1.gguf";
const GEMMA3: &str = "gemma-3-270m-q4_k_m.gguf";

fn model_path(name: &str) -> PathBuf {
    let dir = std::env::var_os("TORCHLESS_MODELS_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| ops_harness::repo_dir().join("models"));
    let p = dir.join(name);
    assert!(
        p.is_file(),
        "{} is missing: run tools/fetch-models.sh (tools/gpu-check.sh does)",
        p.display()
    );
    p
}

fn load(name: &str, backend: BackendKind) -> Model {
    let opts = LoadOptions {
        backend,
        threads: 0,
        device: 0,
    };
    Model::load(model_path(name), &opts).unwrap_or_else(|e| panic!("{name} on {backend:?}: {e}"))
}

fn fixture_json(rel: &str) -> serde_json::Value {
    let p = ops_harness::repo_dir().join("tests/fixtures").join(rel);
    serde_json::from_slice(&std::fs::read(&p).unwrap_or_else(|e| panic!("{}: {e}", p.display())))
        .expect("fixture json")
}

/// The fixed prompt: the ids of the llama.cpp parity fixture (tests/parity.rs), 64+ tokens.
fn prompt_ids(fixture: &str) -> Vec<u32> {
    let ids: Vec<u32> = fixture_json(&format!("logits/{fixture}.json"))["ids"]
        .as_array()
        .expect("ids")
        .iter()
        .map(|v| v.as_u64().expect("id") as u32)
        .collect();
    assert!(
        ids.len() >= 64,
        "{fixture}: the prompt fixture has {} ids",
        ids.len()
    );
    ids
}

/// CUDA logits within the real-model bounds of the CPU's: the same top-1 wherever the CPU's
/// top-2 margin is ≥ 0.5 (a flip there is a bug, not rounding), and RMS logit difference ≤ 0.1
/// (the CPU is itself within 0.25 of llama.cpp; the two backends share every rounding that
/// matters — weights, f16 KV — and differ by activation quantization and summation order).
fn assert_logits_close(what: &str, got: &[f32], want: &[f32], n_vocab: usize) {
    let d = ops_harness::logit_diff(got, want, n_vocab, 0.5);
    eprintln!(
        "{what}: {} positions, RMS Δlogit {:.4}, max|Δ|/scale {:.2e}, KL {:.2e}, top-1 {}/{} clear",
        d.positions,
        d.rms,
        d.max_rel,
        d.mean_kl,
        d.clear - d.top1_mismatch.len(),
        d.clear
    );
    assert!(d.rms.is_finite(), "{what}: non-finite logits");
    assert!(
        d.top1_mismatch.is_empty(),
        "{what}: top-1 differs where the CPU's margin is ≥ 0.5 (pos, cpu, cuda, margin): {:?}",
        d.top1_mismatch
    );
    assert!(
        d.rms <= 0.1,
        "{what}: RMS logit difference {:.4} > 0.1",
        d.rms
    );
}

/// All-position logits of the fixed prompt, in one batch, CUDA vs CPU; then the same prompt fed
/// to CUDA as a prefix batch followed by one token per step (the decode path: n_tok = 1 at
/// growing pos0), each step's logits against the CPU's for that position.
fn real_model_logits(name: &str, fixture: &str) {
    let ids = prompt_ids(fixture);
    let cpu = load(name, BackendKind::Cpu);
    let cuda = load(name, BackendKind::Cuda);
    eprintln!("{}", cuda.backend_description());
    let n_vocab = cpu.config().n_vocab;
    let want = cpu.logits(&ids).expect("CPU logits");
    let got = cuda.logits(&ids).expect("CUDA logits");
    assert_logits_close(&format!("{name} batch"), &got, &want, n_vocab);

    let prefix = ids.len() - 24;
    let mut st = cuda.new_state(ids.len()).expect("CUDA state");
    let mut steps = cuda
        .forward(&mut st, &ids[..prefix], Logits::Last)
        .expect("CUDA prefix");
    for &id in &ids[prefix..ids.len() - 1] {
        steps.extend(
            cuda.forward(&mut st, &[id], Logits::Last)
                .expect("CUDA decode step"),
        );
    }
    let want_steps = &want[(prefix - 1) * n_vocab..(ids.len() - 1) * n_vocab];
    assert_logits_close(&format!("{name} decode"), &steps, want_steps, n_vocab);
}

#[test]
fn smollm2_logits_match_cpu() {
    real_model_logits(SMOLLM2, "smollm2");
}

#[test]
fn gemma3_logits_match_cpu() {
    real_model_logits(GEMMA3, "gemma3");
}

/// Perplexity of the parity text (tests/fixtures/perplexity, the chunks llama-perplexity used)
/// within 0.5% of the CPU's: the CPU is within 1% of llama.cpp, and per-token noise of the
/// size bounded above averages out over ~800 scored tokens.
fn real_model_perplexity(name: &str, fixture: &str) {
    let meta = fixture_json(&format!("perplexity/{fixture}.json"));
    let ctx = meta["ctx"].as_u64().expect("ctx") as usize;
    let chunks = meta["chunks"].as_u64().expect("chunks") as usize;
    let text_path = ops_harness::repo_dir().join("tests/fixtures/perplexity/text.txt");
    let text = std::fs::read_to_string(&text_path)
        .unwrap_or_else(|e| panic!("{}: {e}", text_path.display()));
    let run = |backend| {
        load(name, backend)
            .perplexity(&text, ctx, Some(chunks), |_, _, _| {})
            .unwrap_or_else(|e| panic!("{name} perplexity on {backend:?}: {e}"))
    };
    let (cpu, cuda) = (run(BackendKind::Cpu), run(BackendKind::Cuda));
    let rel = (cuda.ppl - cpu.ppl).abs() / cpu.ppl;
    eprintln!(
        "{name}: PPL cuda {:.4} vs cpu {:.4} ({:.3}% apart, {} chunks of {ctx})",
        cuda.ppl,
        cpu.ppl,
        rel * 100.0,
        cuda.chunks
    );
    assert_eq!(cuda.chunks, chunks);
    assert!(
        cuda.ppl.is_finite(),
        "{name}: CUDA perplexity is not finite"
    );
    assert!(
        rel <= 0.005,
        "{name}: CUDA perplexity {:.4} is {:.3}% from the CPU's {:.4}",
        cuda.ppl,
        rel * 100.0,
        cpu.ppl
    );
}

#[test]
fn smollm2_perplexity_matches_cpu() {
    real_model_perplexity(SMOLLM2, "smollm2");
}

#[test]
fn gemma3_perplexity_matches_cpu() {
    real_model_perplexity(GEMMA3, "gemma3");
}

// ---------------------------------------------------------------------------------------------
// The tiny architecture fixtures (every family; F32 and Q8_0 GGUF, f32 and bf16 safetensors).
// ---------------------------------------------------------------------------------------------

#[test]
fn arch_fixtures_match_cpu() {
    ops_harness::check_arch_fixtures("cuda", &ops_harness::ARCH_FILES, || CudaBackend::new(0));
}

/// I8 (compressed-tensors w8a8) has no CUDA kernel: loading must fail with the clear
/// `UnsupportedType` error naming the tensor, the type and the backend, not run wrongly.
#[test]
fn arch_i8_is_refused_with_unsupported_type() {
    for case in ops_harness::ARCH_CASES {
        let path = ops_harness::arch_dir(case).join("i8");
        let ids = ops_harness::arch_ids(case);
        match ops_harness::executor_logits(&path, device(), &ids) {
            Ok(_) => panic!("{case}/i8 ran on CUDA; I8 weights have no CUDA kernel"),
            Err(e @ Error::UnsupportedType { ty, backend, .. }) => {
                assert_eq!((ty, backend), ("I8", "cuda"), "{case}/i8: {e}");
                let msg = e.to_string();
                assert!(
                    msg.contains("I8") && msg.contains("cuda"),
                    "{case}/i8: {msg}"
                );
            }
            Err(e) => panic!("{case}/i8: expected UnsupportedType for I8 on cuda, got: {e}"),
        }
        // Through the library API too.
        let opts = LoadOptions {
            backend: BackendKind::Cuda,
            threads: 0,
            device: 0,
        };
        match Model::load(&path, &opts) {
            Err(Error::UnsupportedType { ty: "I8", .. }) => {}
            Err(e) => panic!("{case}/i8 via Model::load: expected UnsupportedType, got: {e}"),
            Ok(_) => panic!("{case}/i8 loaded on CUDA via Model::load"),
        }
    }
}
