//! The two real models on a device backend against the CPU backend, through the library API
//! (shared by tests/cuda_device.rs and tests/wgpu_backend.rs), and the I8 refusal check.

use std::path::PathBuf;

use torchless::backend::{Backend, BackendKind};
use torchless::graph::Logits;
use torchless::{Error, LoadOptions, Model};

/// SmolLM2-135M-Instruct, Q4_1 (llama family).
pub const SMOLLM2: &str = "SmolLM2-135M-Instruct.Q4_1.gguf";
/// gemma-3-270m, Q4_K_M (Q8_0 tied output, sliding window).
pub const GEMMA3: &str = "gemma-3-270m-q4_k_m.gguf";

/// `name` in `TORCHLESS_MODELS_DIR` (default `./models`); a missing file fails the test.
pub fn model_path(name: &str) -> PathBuf {
    let dir = std::env::var_os("TORCHLESS_MODELS_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| super::repo_dir().join("models"));
    let p = dir.join(name);
    assert!(
        p.is_file(),
        "{} is missing: run tools/fetch-models.sh (the test command does)",
        p.display()
    );
    p
}

fn options(backend: BackendKind) -> LoadOptions {
    LoadOptions {
        backend,
        ..Default::default()
    }
}

/// Loads `name` onto `backend`, or fails the test saying why.
pub fn load(name: &str, backend: BackendKind) -> Model {
    Model::load(model_path(name), &options(backend))
        .unwrap_or_else(|e| panic!("{name} on {backend:?}: {e}"))
}

fn fixture_json(rel: &str) -> serde_json::Value {
    let p = super::repo_dir().join("tests/fixtures").join(rel);
    serde_json::from_slice(&std::fs::read(&p).unwrap_or_else(|e| panic!("{}: {e}", p.display())))
        .expect("fixture json")
}

/// The fixed prompt: the ids of the llama.cpp parity fixture (tests/parity.rs), 64+ tokens.
pub fn prompt_ids(fixture: &str) -> Vec<u32> {
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

/// The RMS logit difference the issue asks of a device backend against the CPU.
pub const RMS_TARGET: f64 = 0.1;
/// How far above the CPU's own noise floor (see [`cpu_noise_floor`]) a device may land.
pub const FLOOR_FACTOR: f64 = 1.25;

/// The CPU's other kernel paths: every one this machine runs besides the default (its best).
/// Each quantizes the same weights and activations the same way and differs from the others
/// only in f32 summation order (the scalar reference, AVX2's per-lane partial sums, AVX-512's
/// exact integer block sums over 16 token lanes).
fn other_cpu_paths() -> Vec<torchless::backend::cpu::caps::KernelPath> {
    use torchless::backend::cpu::caps::{CpuCaps, KernelPath};
    let caps = CpuCaps::detect();
    let best = KernelPath::best(&caps);
    KernelPath::ALL
        .into_iter()
        .filter(|&p| p != best && caps.supports(p).is_ok())
        .collect()
}

/// The CPU's own disagreement with itself on this prompt: the largest RMS logit difference
/// between its default kernels and any other path it runs ([`other_cpu_paths`]). On these
/// small models summation-order noise is amplified to ~0.2 RMS (an 8-bit activation block
/// whose value sits near a rounding boundary flips a quant), which no backend that sums in
/// another order can beat.
pub fn cpu_noise_floor(name: &str, ids: &[u32]) -> f64 {
    use torchless::backend::cpu::caps::{CpuCaps, KernelPath};
    use torchless::backend::cpu::dot::DotKernels;
    use torchless::backend::cpu::CpuBackend;
    let run = |path: Option<KernelPath>| {
        let caps = CpuCaps::detect();
        let kernels = DotKernels::select(&caps, path).expect("CPU kernels");
        let b = CpuBackend::with_kernels(caps, kernels, 0).expect("CPU backend");
        super::executor_logits(&model_path(name), b, ids).expect("CPU logits")
    };
    let (best, n_vocab) = run(None);
    other_cpu_paths()
        .into_iter()
        .map(|p| super::logit_diff(&run(Some(p)).0, &best, n_vocab, 0.5).rms)
        .fold(0.0, f64::max)
}

/// Device logits within the real-model bounds of the CPU's: the same top-1 wherever the CPU's
/// top-2 margin is ≥ 0.5 (a flip there is a bug, not rounding), and RMS logit difference ≤ 0.1
/// or, where the CPU's own kernel paths already disagree by more ([`cpu_noise_floor`],
/// `floor`), within [`FLOOR_FACTOR`] of that floor. The two backends share every rounding that
/// matters (weights, 8-bit activations, f16 Q and KV) and differ by summation order.
pub fn assert_logits_close(what: &str, got: &[f32], want: &[f32], n_vocab: usize, floor: f64) {
    let bound = RMS_TARGET.max(FLOOR_FACTOR * floor);
    let d = super::logit_diff(got, want, n_vocab, 0.5);
    eprintln!(
        "{what}: {} positions, RMS Δlogit {:.4} (bound {bound:.4}; CPU paths apart {floor:.4}), \
         max|Δ|/scale {:.2e}, KL {:.2e}, top-1 {}/{} clear",
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
        "{what}: top-1 differs where the CPU's margin is ≥ 0.5 (pos, cpu, device, margin): {:?}",
        d.top1_mismatch
    );
    assert!(
        d.rms <= bound,
        "{what}: RMS logit difference {:.4} > {bound:.4} (the CPU's own paths: {floor:.4})",
        d.rms
    );
}

/// The exact logits of the fixed prompt (tests/fixtures/logits/<fixture>.exact.json, from
/// tools/exact-perplexity.py --logits: float64, activations never rounded): per position the
/// log-sum-exp and the 32 largest logits with their ids.
struct ExactLogits {
    lse: Vec<f64>,
    top_ids: Vec<Vec<usize>>,
    top_logits: Vec<Vec<f64>>,
}

fn exact_logits(fixture: &str, ids: &[u32]) -> ExactLogits {
    let j = fixture_json(&format!("logits/{fixture}.exact.json"));
    let nums = |v: &serde_json::Value| -> Vec<f64> {
        let a = v.as_array().expect("array");
        a.iter().map(|x| x.as_f64().expect("number")).collect()
    };
    let rows =
        |key: &str| -> Vec<Vec<f64>> { j[key].as_array().expect(key).iter().map(nums).collect() };
    let fixture_ids: Vec<u32> = nums(&j["ids"]).iter().map(|&i| i as u32).collect();
    assert_eq!(
        fixture_ids, ids,
        "{fixture}.exact.json is for other ids: regenerate it"
    );
    ExactLogits {
        lse: nums(&j["lse"]),
        top_ids: rows("top_ids")
            .into_iter()
            .map(|r| r.into_iter().map(|i| i as usize).collect())
            .collect(),
        top_logits: rows("top_logits"),
    }
}

/// How far a backend that keeps activations in f32 may put the log-probability of any of a
/// position's 32 exact top tokens from the exact value. Measured on the CUDA emulator: at most
/// 0.0058 (gemma-3) and 0.0074 (SmolLM2); the CPU, which rounds activations to 8 bits as
/// llama.cpp does, is 0.68 and 0.53 away.
pub const EXACT_LOGPROB_BOUND: f64 = 0.03;

/// The same for a backend whose prefill matmuls round the weights and activations to bfloat16
/// (8 significant bits per value; CUDA's tensor-core tiles). Measured on the CUDA emulator: at
/// most 0.089 (gemma-3) and 0.109 (SmolLM2), a sixth of the CPU's distance.
pub const BF16_LOGPROB_BOUND: f64 = 0.2;

/// `got` (rows of `n_vocab` logits for positions `first..`) within `bound` of the exact
/// log-probabilities of every position's top tokens.
fn assert_near_exact(
    what: &str,
    got: &[f32],
    first: usize,
    n_vocab: usize,
    exact: &ExactLogits,
    bound: f64,
) {
    let (mut worst, mut at) = (0f64, (0, 0));
    for (row, p) in got.chunks(n_vocab).zip(first..) {
        let max = row.iter().fold(f64::NEG_INFINITY, |m, &v| m.max(v as f64));
        let lse = max
            + row
                .iter()
                .map(|&v| (v as f64 - max).exp())
                .sum::<f64>()
                .ln();
        for (&id, &want) in exact.top_ids[p].iter().zip(&exact.top_logits[p]) {
            let d = ((row[id] as f64 - lse) - (want - exact.lse[p])).abs();
            // NaN compares false: make it the worst.
            if d.is_nan() || d > worst {
                (worst, at) = (if d.is_nan() { f64::INFINITY } else { d }, (p, id));
            }
        }
    }
    eprintln!(
        "{what}: max |Δ log-prob| {worst:.4} against the exact top 32 (bound {bound}; at \
         position {}, token {})",
        at.0, at.1
    );
    assert!(
        worst <= bound,
        "{what}: log-probability of token {} at position {} is {worst:.4} from the exact value \
         (bound {bound})",
        at.1,
        at.0
    );
}

/// Which of a device's logits [`real_model_logits`] also holds to the exact ones, and how
/// closely ([`EXACT_LOGPROB_BOUND`] where the matmuls keep activations in f32,
/// [`BF16_LOGPROB_BOUND`] where prefill rounds them to bfloat16); None where they are rounded
/// to 8 bits as the CPU does (wgpu; CUDA's int8 decode matvec).
#[derive(Clone, Copy, PartialEq)]
pub struct NearExact {
    /// The all-position batch.
    pub batch: Option<f64>,
    /// The decode steps (after a prefix batch, whose K/V they read).
    pub decode: Option<f64>,
}

impl NearExact {
    /// Neither.
    pub const NO: NearExact = NearExact {
        batch: None,
        decode: None,
    };
}

/// All-position logits of the fixed prompt, in one batch, device vs CPU; then the same prompt
/// fed to the device as a prefix batch followed by one token per step (the decode path: n_tok = 1
/// at growing pos0), each step's logits against the CPU's for that position. Where `exact` says
/// so, the same logits also against the exact ones.
pub fn real_model_logits(name: &str, fixture: &str, backend: BackendKind, exact: NearExact) {
    let ids = prompt_ids(fixture);
    let cpu = load(name, BackendKind::Cpu);
    let dev = load(name, backend);
    eprintln!("{}", dev.backend_description());
    let n_vocab = cpu.config().n_vocab;
    let want = cpu.logits(&ids).expect("CPU logits");
    let got = dev.logits(&ids).expect("device logits");
    let floor = cpu_noise_floor(name, &ids);
    assert_logits_close(&format!("{name} batch"), &got, &want, n_vocab, floor);
    let reference = (exact != NearExact::NO).then(|| exact_logits(fixture, &ids));
    if let (Some(bound), Some(e)) = (exact.batch, &reference) {
        assert_near_exact(&format!("{name} batch"), &got, 0, n_vocab, e, bound);
    }

    let prefix = ids.len() - 24;
    let mut st = dev.new_state(ids.len()).expect("device state");
    let mut steps = dev
        .forward(&mut st, &ids[..prefix], Logits::Last)
        .expect("device prefix");
    for &id in &ids[prefix..ids.len() - 1] {
        steps.extend(
            dev.forward(&mut st, &[id], Logits::Last)
                .expect("device decode step"),
        );
    }
    let want_steps = &want[(prefix - 1) * n_vocab..(ids.len() - 1) * n_vocab];
    assert_logits_close(
        &format!("{name} decode"),
        &steps,
        want_steps,
        n_vocab,
        floor,
    );
    if let (Some(bound), Some(e)) = (exact.decode, &reference) {
        let what = format!("{name} decode");
        assert_near_exact(&what, &steps, prefix - 1, n_vocab, e, bound);
    }
}

/// All-position logits of the fixed prompt in one batch on `backend` (a device backend built
/// with shader variants of the test's choosing), against the CPU backend's, within
/// [`assert_logits_close`]'s bounds. `label` names the variant in the messages.
pub fn real_model_batch_logits<B: Backend>(name: &str, fixture: &str, label: &str, backend: B) {
    let ids = prompt_ids(fixture);
    let cpu = load(name, BackendKind::Cpu);
    let want = cpu.logits(&ids).expect("CPU logits");
    eprintln!("{}", backend.describe());
    let (got, n_vocab) = super::executor_logits(&model_path(name), backend, &ids)
        .unwrap_or_else(|e| panic!("{name} on {label}: {e}"));
    let floor = cpu_noise_floor(name, &ids);
    assert_logits_close(
        &format!("{name} batch, {label}"),
        &got,
        &want,
        n_vocab,
        floor,
    );
}

/// The perplexity fixture of `fixture` (tests/fixtures/perplexity): its context, the chunks to
/// run (all of llama-perplexity's, or the first `max_chunks`), the parity text, and the exact
/// perplexity of those chunks (`exact.ppl_running`, from tools/exact-perplexity.py: float64,
/// dequantized weights, activations never rounded).
struct PplFixture {
    ctx: usize,
    chunks: usize,
    text: String,
    exact: f64,
}

fn ppl_fixture(fixture: &str, max_chunks: Option<usize>) -> PplFixture {
    let meta = fixture_json(&format!("perplexity/{fixture}.json"));
    let ctx = meta["ctx"].as_u64().expect("ctx") as usize;
    let chunks = meta["chunks"].as_u64().expect("chunks") as usize;
    let chunks = max_chunks.map_or(chunks, |m| m.min(chunks));
    let exact = meta["exact"]["ppl_running"][chunks - 1]
        .as_f64()
        .expect("exact.ppl_running (run tools/gen-ref-fixtures.sh)");
    let text_path = super::repo_dir().join("tests/fixtures/perplexity/text.txt");
    let text = std::fs::read_to_string(&text_path)
        .unwrap_or_else(|e| panic!("{}: {e}", text_path.display()));
    PplFixture {
        ctx,
        chunks,
        text,
        exact,
    }
}

impl PplFixture {
    fn run(&self, name: &str, m: &Model) -> f64 {
        let r = m
            .perplexity(&self.text, self.ctx, Some(self.chunks), |_, _, _| {})
            .unwrap_or_else(|e| panic!("{name} perplexity on {}: {e}", m.backend_description()));
        assert_eq!(r.chunks, self.chunks);
        assert!(r.ppl.is_finite(), "{name}: perplexity is not finite");
        r.ppl
    }
}

/// Perplexity of the parity text (tests/fixtures/perplexity, the chunks llama-perplexity used,
/// or the first `max_chunks` of them) within 0.5% of the CPU's, or, where the CPU's own kernel
/// paths ([`other_cpu_paths`]) already disagree with its default by more on those chunks,
/// within [`FLOOR_FACTOR`] of the largest such gap. Over all 13 chunks the CPU's paths agree to
/// a few tenths of a percent; over 3 chunks (~190 scored tokens) their summation-order noise
/// alone moves perplexity by 1–2% (SmolLM2: scalar 24.12, AVX2 24.48, AVX-512 24.07, against
/// llama.cpp's 24.38 over the same chunks). For a backend that rounds activations to 8 bits as
/// the CPU does (wgpu's `quantize_act`); one that keeps them in f32 is held to the exact value
/// instead ([`real_model_perplexity_exact`]).
pub fn real_model_perplexity(
    name: &str,
    fixture: &str,
    backend: BackendKind,
    max_chunks: Option<usize>,
) {
    let f = ppl_fixture(fixture, max_chunks);
    let cpu = f.run(name, &load(name, BackendKind::Cpu));
    let dev = f.run(name, &load(name, backend));
    let floor = other_cpu_paths()
        .into_iter()
        .map(|p| (f.run(name, &cpu_on(name, p)) - cpu).abs() / cpu)
        .fold(0.0, f64::max);
    let bound = 0.005f64.max(FLOOR_FACTOR * floor);
    let rel = (dev - cpu).abs() / cpu;
    eprintln!(
        "{name}: PPL {backend:?} {dev:.4} vs cpu {cpu:.4} ({:.3}% apart, bound {:.3}%; CPU paths \
         apart {:.3}%; exact {:.4}; {} chunks of {})",
        rel * 100.0,
        bound * 100.0,
        floor * 100.0,
        f.exact,
        f.chunks,
        f.ctx
    );
    assert!(
        rel <= bound,
        "{name}: {backend:?} perplexity {dev:.4} is {:.3}% from the CPU's {cpu:.4} (bound {:.3}%)",
        rel * 100.0,
        bound * 100.0
    );
}

/// How far a backend whose matmuls keep activations in f32 (or in bfloat16, CUDA's tensor-core
/// prefill) may land from the exact perplexity. Measured on the CUDA emulator over all 13
/// chunks: SmolLM2 0.007%, gemma-3 0.009% (bfloat16 prefill: 0.0001%, 0.0087%); the CPU
/// (8-bit activations, as llama.cpp) lands 0.67% and 0.94% away, llama.cpp 0.50% and 1.15%.
pub const EXACT_PPL_BOUND: f64 = 0.001;

/// Perplexity of the parity text within [`EXACT_PPL_BOUND`] of the exact value (the fixture's
/// `exact`): for a backend that computes in f32 throughout, where comparing with the CPU would
/// only measure the CPU's own rounding of activations to 8 bits.
pub fn real_model_perplexity_exact(name: &str, fixture: &str, backend: BackendKind) {
    let f = ppl_fixture(fixture, None);
    let dev = f.run(name, &load(name, backend));
    // The CPU only for the record: its distance from the exact value is its own rounding.
    let cpu = f.run(name, &load(name, BackendKind::Cpu));
    let rel = (dev - f.exact).abs() / f.exact;
    eprintln!(
        "{name}: PPL {backend:?} {dev:.4} vs exact {:.4} ({:.4}% apart, bound {:.3}%); cpu \
         {cpu:.4} ({:+.3}% from exact); {} chunks of {}",
        f.exact,
        rel * 100.0,
        EXACT_PPL_BOUND * 100.0,
        (cpu - f.exact) / f.exact * 100.0,
        f.chunks,
        f.ctx
    );
    assert!(
        rel <= EXACT_PPL_BOUND,
        "{name}: {backend:?} perplexity {dev:.4} is {:.4}% from the exact {:.4} (bound {:.3}%)",
        rel * 100.0,
        f.exact,
        EXACT_PPL_BOUND * 100.0
    );
}

/// `name` on the CPU's kernel `path`.
fn cpu_on(name: &str, path: torchless::backend::cpu::caps::KernelPath) -> Model {
    let opts = LoadOptions {
        cpu_path: Some(path),
        ..options(BackendKind::Cpu)
    };
    Model::load(model_path(name), &opts)
        .unwrap_or_else(|e| panic!("{name} on the {} CPU path: {e}", path.as_str()))
}

/// I8 (compressed-tensors w8a8) has no kernel on `backend`: loading every fixture's `i8`
/// directory must fail with the clear `UnsupportedType` error naming the tensor, the type and
/// the backend, both through the executor and through `Model::load`.
pub fn assert_i8_refused<B: Backend>(backend: BackendKind, name: &str, make: impl Fn() -> B) {
    for case in super::ARCH_CASES {
        let path = super::arch_dir(case).join("i8");
        let ids = super::arch_ids(case);
        match super::executor_logits(&path, make(), &ids) {
            Ok(_) => panic!("{case}/i8 ran on {name}; I8 weights have no {name} kernel"),
            Err(e @ Error::UnsupportedType { ty, backend: b, .. }) => {
                assert_eq!((ty, b), ("I8", name), "{case}/i8: {e}");
                let msg = e.to_string();
                assert!(msg.contains("I8") && msg.contains(name), "{case}/i8: {msg}");
            }
            Err(e) => panic!("{case}/i8: expected UnsupportedType for I8 on {name}, got: {e}"),
        }
        match Model::load(&path, &options(backend)) {
            Err(Error::UnsupportedType { ty: "I8", .. }) => {}
            Err(e) => panic!("{case}/i8 via Model::load: expected UnsupportedType, got: {e}"),
            Ok(_) => panic!("{case}/i8 loaded on {name} via Model::load"),
        }
    }
}

/// Every decode-step logit of a fixed schedule on `backend`: two sequences of `ids` (prefixes of
/// different lengths) alternate single-token steps, then the first rewinds 5 positions and steps
/// again. Exercises a backend's recorded decode steps (CUDA graphs: a warm-up, a recording and
/// replays per sequence, two recordings alive at once, a replay at an earlier position).
pub fn decode_schedule<B: Backend>(name: &str, backend: B, ids: &[u32]) -> Vec<f32> {
    decode_schedule_at(&model_path(name), backend, ids)
}

/// [`decode_schedule`] for the model file at `path`.
pub fn decode_schedule_at<B: Backend>(path: &std::path::Path, backend: B, ids: &[u32]) -> Vec<f32> {
    use torchless::graph::Executor;
    use torchless::model::ModelSource;
    let name = path.display();
    let src = ModelSource::open(path).unwrap_or_else(|e| panic!("{name}: {e}"));
    let exec = Executor::load(&src, backend).unwrap_or_else(|e| panic!("{name}: {e}"));
    let n = ids.len();
    assert!(n >= 40, "{name}: the schedule needs 40 ids");
    let mut a = exec.new_state(n).expect("state");
    let mut b = exec.new_state(n).expect("state");
    let mut out = Vec::new();
    let mut fwd = |st: &mut torchless::graph::State<B>, toks: &[u32], keep: bool| {
        let l = exec.forward(st, toks, Logits::Last).expect("forward");
        if keep {
            out.extend(l);
        }
    };
    fwd(&mut a, &ids[..n - 24], false);
    fwd(&mut b, &ids[..n - 30], false);
    for i in 0..12 {
        fwd(&mut a, &ids[n - 24 + i..n - 23 + i], true);
        fwd(&mut b, &ids[n - 30 + i..n - 29 + i], true);
    }
    a.n_past -= 5;
    for i in 7..12 {
        fwd(&mut a, &ids[n - 24 + i..n - 23 + i], true);
    }
    out
}
