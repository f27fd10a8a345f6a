//! The CUDA backend on a real device: the op-by-op harness (tests/ops_harness, every op and
//! weight type against the CPU scalar reference) and end-to-end agreement with the CPU backend
//! on the two real models and on every tiny architecture fixture.
//!
//! Not part of plain `cargo test` (`test = false` in Cargo.toml). Two commands run it, one test
//! at a time:
//! - tools/gpu-check.sh, on a machine with an NVIDIA GPU: the real thing;
//! - tools/test.sh, with the host CUDA emulator (tests/cuda_emu, built by tools/cuda-emu.sh) as
//!   `libcuda.so`: the same kernels compiled for the CPU behind the same driver API, which proves
//!   the kernels' logic and the backend's launches but nothing about a GPU (the device then
//!   names itself "torchless CUDA emulator (host CPU)").
//!
//! Every test FAILS when no driver answers: passing means the CUDA backend really ran. Models
//! come from `TORCHLESS_MODELS_DIR` (default `./models`); op inputs are fresh each run
//! (`TORCHLESS_OPS_SEED=<seed>` replays a failure).
#![cfg(feature = "cuda")]

mod ops_harness;

use ops_harness::{models, Family};
use torchless::backend::cuda::{CudaBackend, CudaOptions, PdlTrigger};
use torchless::backend::BackendKind;

/// Device 0, or a panic saying why not (these tests must fail without a GPU).
fn device() -> CudaBackend {
    CudaBackend::new(0).unwrap_or_else(|e| {
        panic!(
            "CUDA device 0 is not usable: {e} (these tests need an NVIDIA GPU, tools/gpu-check.sh, or the emulator: tools/test.sh)"
        )
    })
}

/// A backend with the decode matvec, decode graphs and fused kernels as given (with the fused
/// kernels, the norm fold too, as by default).
fn device_with(int8: bool, graphs: bool, fused: bool) -> CudaBackend {
    device_fold(int8, graphs, fused, fused)
}

/// [`device_with`], the norm fold as given.
fn device_fold(int8: bool, graphs: bool, fused: bool, norm_fold: bool) -> CudaBackend {
    device_opts(CudaOptions {
        decode_graphs: graphs,
        int8_matvec: int8,
        fused,
        norm_fold,
        qkv_rope: fused,
        pdl: true,
        pdl_prefetch: true,
        pdl_trigger: PdlTrigger::Start,
        mma_prefill: true,
    })
}

fn device_opts(opts: CudaOptions) -> CudaBackend {
    CudaBackend::with_options(0, opts)
        .unwrap_or_else(|e| panic!("CUDA device 0 is not usable: {e}"))
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

/// The matmul family; the quantized types' prefill tiles on the tensor cores
/// (`matmul_mma_<t>`, the default).
#[test]
fn ops_matmul() {
    let dev = device_with(false, true, true);
    assert!(dev.device_info().mma_prefill);
    ops_harness::check_family(&dev, "cuda", Family::Matmul);
}

/// The matmul family again with one-token matvecs through the int8 kernels
/// (`TORCHLESS_CUDA_MATVEC=int8`; every type `int8_kernels` lists), against the same CPU
/// reference and bounds.
#[test]
fn ops_matmul_int8_matvec() {
    let opts = CudaOptions {
        decode_graphs: true,
        int8_matvec: true,
        fused: true,
        norm_fold: true,
        qkv_rope: true,
        pdl: true,
        pdl_prefetch: true,
        pdl_trigger: PdlTrigger::Start,
        mma_prefill: true,
    };
    let dev = CudaBackend::with_options(0, opts).unwrap_or_else(|e| {
        panic!("CUDA device 0 is not usable: {e} (these tests need an NVIDIA GPU)")
    });
    assert_eq!(dev.device_info().matvec, "int8");
    ops_harness::check_family(&dev, "cuda (int8 matvec)", Family::Matmul);
}

/// The matmul family with the quantized prefill tiles in f32 FMA (`TORCHLESS_CUDA_MMA=off`,
/// `matmul_<t>`) instead of on the tensor cores (`matmul_mma_<t>`, which `ops_matmul` runs):
/// both kernels stay checked against the same CPU reference and bounds.
#[test]
fn ops_matmul_fma_prefill() {
    let dev = device_opts(CudaOptions {
        decode_graphs: true,
        int8_matvec: false,
        fused: true,
        norm_fold: true,
        qkv_rope: true,
        pdl: true,
        pdl_prefetch: true,
        pdl_trigger: PdlTrigger::Start,
        mma_prefill: false,
    });
    assert!(!dev.device_info().mma_prefill);
    ops_harness::check_family(&dev, "cuda (f32 FMA prefill tiles)", Family::Matmul);
}

/// A backend with the int8 decode matvec, decode graphs and fused kernels as given.
fn int8_device(graphs: bool, fused: bool) -> CudaBackend {
    let dev = device_with(true, graphs, fused);
    assert_eq!(dev.device_info().matvec, "int8");
    dev
}

/// With the int8 decode matvec, a norm feeding Q4_K and Q8_0 projections rounds its output to
/// Q8 in its own launch, Q/K/V share one launch and gate/up/GLU run as one kernel: bit for bit
/// the same values as `norm`, `quantize_q8` and one matvec per weight.
#[test]
fn int8_norm_feeding_is_bit_exact() {
    ops_harness::assert_norm_feeding_exact(&int8_device(true, true));
}

/// Projections of one input in one launch (`matvec3_<t>`, Q/K/V) against one launch per weight:
/// bit for bit, with the float decode matvec and with the int8 one.
#[test]
fn matmul_many_is_bit_exact() {
    let dev = device();
    assert!(
        dev.device_info().fused,
        "TORCHLESS_CUDA_FUSE=off: nothing to compare"
    );
    ops_harness::assert_matmul_many_exact(&dev);
    ops_harness::assert_matmul_many_exact(&int8_device(true, true));
}

/// The gated FFN kernel with the int8 matvec (`matvec_glu_q8_<t>` for one token of a type with
/// int8 kernels, the float kernels for the rest) against the projections and `act_glu` apart:
/// bit for bit.
#[test]
fn int8_glu_fusion_is_bit_exact() {
    ops_harness::assert_glu_fusion_exact(&int8_device(true, true));
}

/// The decode path's fused gate/up/GLU kernel (`matvec_glu_<t>`) against the two projections
/// and `act_glu` launched apart: bit for bit.
#[test]
fn glu_fusion_is_bit_exact() {
    let dev = device();
    assert!(
        dev.device_info().fused,
        "TORCHLESS_CUDA_FUSE=off: nothing to compare"
    );
    ops_harness::assert_glu_fusion_exact(&dev);
}

/// RoPE on Q and K with the K/V store as one kernel (`attn_rope_kv_store`) against
/// `rope_rotate` twice and `attn_kv_store`: bit for bit.
#[test]
fn rope_store_fusion_is_bit_exact() {
    let dev = device();
    assert!(
        dev.device_info().fused,
        "TORCHLESS_CUDA_FUSE=off: nothing to compare"
    );
    ops_harness::assert_rope_store_fusion_exact(&dev);
}

/// Q/K/V, RoPE and the K/V store of a decode token as one kernel (`matvec_qkv_rope_q8_<t>`)
/// against `matmul_many` and `rope_kv_store` apart: bit for bit, and one launch fewer.
#[test]
fn int8_qkv_rope_fusion_is_bit_exact() {
    let dev = int8_device(true, true);
    ops_harness::assert_qkv_rope_fusion_exact(&dev, &|| dev.kernel_launches());
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
// The two real models through the library API (tests/ops_harness/models.rs).
// ---------------------------------------------------------------------------------------------

/// CUDA's matmuls keep activations in f32, or round them to bfloat16 in the tensor-core
/// prefill tiles (`TORCHLESS_CUDA_MMA`, default on), so besides the CPU's bounds its logits are
/// held to the exact ones (float64, tests/fixtures/logits/*.exact.json), with the bound of the
/// prefill's precision: the batch, and the decode steps (which read the prefix's K/V) unless the
/// int8 decode matvec (`TORCHLESS_CUDA_MATVEC=int8`) rounds x to 8 bits.
fn near_exact() -> models::NearExact {
    let opts = CudaOptions::from_env().unwrap_or_else(|e| panic!("{e}"));
    let bound = if opts.mma_prefill {
        models::BF16_LOGPROB_BOUND
    } else {
        models::EXACT_LOGPROB_BOUND
    };
    models::NearExact {
        batch: Some(bound),
        decode: (!opts.int8_matvec).then_some(bound),
    }
}

#[test]
fn smollm2_logits_match_cpu() {
    models::real_model_logits(models::SMOLLM2, "smollm2", BackendKind::Cuda, near_exact());
}

#[test]
fn gemma3_logits_match_cpu() {
    models::real_model_logits(models::GEMMA3, "gemma3", BackendKind::Cuda, near_exact());
}

// Perplexity against the exact value (float64, activations never rounded), not the CPU's: CUDA's
// matmuls keep activations in f32 or (prefill on the tensor cores) round them to bfloat16, while
// the CPU (as llama.cpp) rounds them to 8 bits per 32 values, which puts the CPU 0.67% (SmolLM2)
// and 0.94% (gemma-3) from the exact value over these 13 chunks.
#[test]
fn smollm2_perplexity_matches_exact() {
    models::real_model_perplexity_exact(models::SMOLLM2, "smollm2", BackendKind::Cuda);
}

#[test]
fn gemma3_perplexity_matches_exact() {
    models::real_model_perplexity_exact(models::GEMMA3, "gemma3", BackendKind::Cuda);
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
    models::assert_i8_refused(BackendKind::Cuda, "cuda", device);
}

// ---------------------------------------------------------------------------------------------
// Decode graphs (src/backend/cuda/graph.rs).
// ---------------------------------------------------------------------------------------------

/// The synthetic two-layer Q4_K llama (tests/fixtures/synthetic): every matmul takes the Q4_K
/// decode kernels, so the int8 path's fusions all run.
fn tiny_q4k() -> std::path::PathBuf {
    ops_harness::repo_dir().join("tests/fixtures/synthetic/tiny-q4k.gguf")
}

/// 160 token ids below the tiny model's vocabulary (512): a context long enough for decode
/// attention to split the keys and merge the splits (a context of 64 or fewer is one split).
fn tiny_ids() -> Vec<u32> {
    (0..160u32).map(|i| (i * 37 + 11) % 512).collect()
}

/// A whole model through the fused launches and decode graphs gives bit for bit the logits of
/// the same steps with every fusion off, launched op by op: with the float decode matvec (Q/K/V
/// in one launch, RoPE with the K/V store, gate/up/GLU, attention merging its key splits in its
/// own launch instead of `attn_combine`) and with the int8 one (also the norms, attention and
/// the gated FFN kernel rounding their outputs to Q8 instead of `quantize_q8`). The norm fold,
/// which rounds before the norm's scale instead of after, is off here; it has its own test
/// (`decode_norm_fold_moves_logits_by_rounding_only`).
#[test]
fn decode_fusions_match_apart_bit_for_bit() {
    let ids = tiny_ids();
    let mut int8_fused = Vec::new();
    // 48 positions: attention in one split; 160: split keys, merged by the last split's block.
    for n in [48, ids.len()] {
        for int8 in [false, true] {
            let run = &ids[..n];
            let device = device_fold(int8, true, true, false);
            let fused = models::decode_schedule_at(&tiny_q4k(), device, run);
            let apart =
                models::decode_schedule_at(&tiny_q4k(), device_with(int8, false, false), run);
            let differ = ops_harness::bits_differ(&fused, &apart);
            let mode = if int8 { "int8" } else { "float" };
            eprintln!(
                "tiny-q4k, {mode}, context {n}: {} decode logits, {differ} differ",
                fused.len()
            );
            assert_eq!(
                differ, 0,
                "{mode}, context {n}: fused decode differs from the ops apart"
            );
            if int8 {
                int8_fused = fused;
            }
        }
    }
    let fused = int8_fused;
    // And the int8 path computes the float path's model: the same logits up to the rounding of
    // x to 8 bits, which moves them about as far as the CPU's own 8-bit rounding does.
    let float = models::decode_schedule_at(&tiny_q4k(), device(), &ids);
    let cpu = models::decode_schedule_at(&tiny_q4k(), ops_harness::reference(), &ids);
    let scale = float.iter().fold(0f32, |m, v| m.max(v.abs()));
    let dist = |other: &[f32]| {
        float
            .iter()
            .zip(other)
            .fold(0f32, |m, (a, b)| m.max((a - b).abs()))
    };
    let (int8, cpu) = (dist(&fused), dist(&cpu));
    eprintln!(
        "tiny-q4k: max |d logit| from the float path: int8 {int8:.3e}, CPU {cpu:.3e} (max |logit| \
         {scale:.3})"
    );
    assert!(
        int8 <= 0.05 * scale,
        "int8 decode logits {int8} from the float path's (max |logit| {scale})"
    );
}

/// The norm fold (`TORCHLESS_CUDA_NORM_FOLD`, on by default): the output and down projections
/// round their sums to Q8 for the next block before its RMSNorm's scale, and the projections
/// reading them apply the scale to their own sums. Same model, other rounding: the logits of a
/// whole decode move from the unfolded path's by about what the int8 rounding itself moves
/// them (the bound is the one the int8 path keeps from the float path), and the steps through
/// recorded graphs give the eager steps' logits bit for bit.
#[test]
fn decode_norm_fold_moves_logits_by_rounding_only() {
    let ids = tiny_ids();
    let folded = models::decode_schedule_at(&tiny_q4k(), device_fold(true, true, true, true), &ids);
    let eager = models::decode_schedule_at(&tiny_q4k(), device_fold(true, false, true, true), &ids);
    let unfolded =
        models::decode_schedule_at(&tiny_q4k(), device_fold(true, true, true, false), &ids);
    let float = models::decode_schedule_at(&tiny_q4k(), device(), &ids);
    let scale = unfolded.iter().fold(0f32, |m, v| m.max(v.abs()));
    let dist = |a: &[f32], b: &[f32]| a.iter().zip(b).fold(0f32, |m, (x, y)| m.max((x - y).abs()));
    let (moved, int8) = (dist(&folded, &unfolded), dist(&unfolded, &float));
    let differ = ops_harness::bits_differ(&folded, &unfolded);
    eprintln!(
        "tiny-q4k: {} decode logits, {differ} moved by the fold, max |d logit| {moved:.3e} (int8 \
         from float: {int8:.3e}; max |logit| {scale:.3})",
        folded.len()
    );
    assert!(differ > 0, "the fold changed nothing: was it applied?");
    assert!(
        moved <= 0.05 * scale,
        "folded decode logits {moved} from the unfolded ones (max |logit| {scale})"
    );
    assert_eq!(
        ops_harness::bits_differ(&folded, &eager),
        0,
        "folded decode: graphs differ from eager launches"
    );
}

/// Op by op: a residual projection with the next RMSNorm folded in (`matmul_add_norm`), feeding
/// Q/K/V (a Q8_0 matrix among Q4_K ones), the gated int8 kernel and a lone projection, against
/// the projection, `norm` and the matmuls apart (tests/ops_harness).
#[test]
fn int8_norm_fold_is_the_norm_up_to_rounding() {
    let dev = int8_device(false, true);
    assert!(dev.device_info().norm_fold);
    ops_harness::assert_norm_fold_close(&dev, &|| dev.kernel_launches());
}

/// Programmatic dependent launch lets each kernel start while the one before it finishes, and
/// each kernel waits for it before touching memory (src/backend/cuda/launch.rs). Decode steps
/// replayed from graphs, float and int8, must give the ordinary launches' logits bit for bit: on
/// a GPU, a kernel that read an input early would show here. PDL is on exactly where the device
/// has it (compute capability 9.0, driver 12.3; the emulator reports both).
#[test]
fn pdl_launches_match_ordinary_bit_for_bit() {
    let ids = tiny_ids();
    for int8 in [false, true] {
        let backend = |pdl, pdl_trigger| {
            device_opts(CudaOptions {
                decode_graphs: true,
                int8_matvec: int8,
                fused: true,
                norm_fold: true,
                qkv_rope: true,
                pdl,
                pdl_prefetch: true,
                pdl_trigger,
                mma_prefill: true,
            })
        };
        let off = backend(false, PdlTrigger::Start);
        assert!(!off.device_info().pdl);
        let without = models::decode_schedule_at(&tiny_q4k(), off, &ids);
        for trigger in [PdlTrigger::Start, PdlTrigger::Exit] {
            let on = backend(true, trigger);
            let info = on.device_info().clone();
            assert_eq!(info.pdl_trigger, trigger);
            let cc: Vec<u32> = info
                .compute_capability
                .split('.')
                .map(|v| v.parse().unwrap())
                .collect();
            let driver: Vec<u32> = info.driver.split('.').map(|v| v.parse().unwrap()).collect();
            assert_eq!(
                info.pdl,
                cc >= vec![9, 0] && driver >= vec![12, 3],
                "PDL on compute {} with driver {}",
                info.compute_capability,
                info.driver
            );
            assert!(
                info.pdl_ordinary.is_empty(),
                "kernels launched without PDL: {:?}",
                info.pdl_ordinary
            );
            let with = models::decode_schedule_at(&tiny_q4k(), on, &ids);
            let differ = ops_harness::bits_differ(&with, &without);
            let mode = if int8 { "int8" } else { "float" };
            eprintln!(
                "tiny-q4k, {mode}: {} decode logits with PDL {} (trigger at {}), {differ} differ",
                with.len(),
                if info.pdl { "on" } else { "unavailable" },
                trigger.name()
            );
            assert_eq!(
                differ,
                0,
                "{mode}: PDL launches (trigger at {}) differ from ordinary ones",
                trigger.name()
            );
        }
    }
}

/// Kernel launches per decode step on the Q4_K llama shape, eager (a decode graph replays the
/// same kernels). Per layer, with the context split for attention:
/// - float, fused (8): norm, Q/K/V, RoPE + K/V store, attention (the last split to finish
///   merges them), output projection + residual, norm, gate/up/GLU, down + residual;
/// - float, apart (15): Q, K and V apart, RoPE twice and the store, the split merge on its own,
///   gate and up apart and GLU;
/// - int8, fused, norms not folded (7): the float list, with the norms, attention and the gated
///   FFN kernel also writing their outputs in Q8 form for the int8 matvecs that read them, and
///   RoPE + K/V store done by the Q/K/V kernel (`matvec_qkv_rope_q8_<t>`);
/// - int8, fused, RoPE apart (6): the norms folded into the output and down projections before
///   them;
/// - int8, fused (5): and RoPE + K/V store done by the Q/K/V kernel;
/// - int8, apart (19): the float-apart list plus a `quantize_q8` before each of the 4 inputs.
///
/// Besides the layers a step embeds its token and runs the output norm and head (plus one
/// `quantize_q8` int8 apart); with the fold, the first layer's norm runs on its own and the
/// output norm is folded into the last down projection. docs/performance.md quotes these counts.
#[test]
fn decode_step_launches() {
    use torchless::graph::{Executor, Logits};
    use torchless::model::ModelSource;
    let src = ModelSource::open(tiny_q4k()).expect("tiny-q4k");
    let layers = 2;
    let ids = tiny_ids();
    // (label, int8, fused, norm fold, RoPE in the Q/K/V kernel, launches)
    let modes = [
        ("float, fused", false, true, true, true, 3 + 8 * layers),
        ("float, apart", false, false, false, false, 3 + 15 * layers),
        (
            "int8, fused, norms not folded",
            true,
            true,
            false,
            true,
            3 + 7 * layers,
        ),
        (
            "int8, fused, RoPE apart",
            true,
            true,
            true,
            false,
            3 + 6 * layers,
        ),
        ("int8, fused", true, true, true, true, 3 + 5 * layers),
        ("int8, apart", true, false, false, false, 4 + 19 * layers),
    ];
    for (label, int8, fused, fold, qkv_rope, want) in modes {
        let dev = device_opts(CudaOptions {
            decode_graphs: false,
            int8_matvec: int8,
            fused,
            norm_fold: fold,
            qkv_rope,
            pdl: true,
            pdl_prefetch: true,
            pdl_trigger: PdlTrigger::Start,
            mma_prefill: true,
        });
        let info = dev.device_info();
        assert_eq!(info.norm_fold, int8 && fold, "{label}: norm fold");
        assert_eq!(info.qkv_rope, int8 && qkv_rope, "{label}: RoPE in Q/K/V");
        let exec = Executor::load(&src, dev).expect("load");
        let mut st = exec.new_state(ids.len()).expect("state");
        exec.forward(&mut st, &ids[..8], Logits::Last)
            .expect("prefill");
        let before = exec.backend.kernel_launches();
        exec.forward(&mut st, &ids[8..9], Logits::Last)
            .expect("decode");
        let step = exec.backend.kernel_launches() - before;
        eprintln!("{label}: {step} launches per decode step");
        assert_eq!(step, want as u64, "{label}: launches per decode step");
    }
}

/// The kernel profile (`bench --profile`) times every launch of a decode step but the hold
/// before it, gives the step's host-to-device copies rows of their own, counts each matmul's
/// weight bytes, and leaves the logits as an unprofiled step computes them, bit for bit.
#[test]
fn kernel_profile_times_every_decode_launch() {
    use torchless::graph::{Executor, Logits};
    use torchless::model::ModelSource;
    let src = ModelSource::open(tiny_q4k()).expect("tiny-q4k");
    let layers = 2;
    let ids = tiny_ids();
    let steps = 4;
    // Every matrix a decode step multiplies: each 2-D weight but the embedding table, which
    // is only gathered from unless it doubles as the output matrix.
    let tied = src.tensor("output.weight").is_none();
    let matrices: u64 = src
        .tensors()
        .iter()
        .filter(|t| t.n_rows() > 1 && (tied || t.name != "token_embd.weight"))
        .map(|t| t.len as u64)
        .sum();
    for int8 in [false, true] {
        let decode = |profile: bool| {
            let exec = Executor::load(&src, device_with(int8, true, true)).expect("load");
            let mut st = exec.new_state(ids.len()).expect("state");
            exec.forward(&mut st, &ids[..8], Logits::Last)
                .expect("prefill");
            if profile {
                exec.backend.start_kernel_profile();
            }
            let mut logits = Vec::new();
            for &id in &ids[8..8 + steps] {
                logits.extend(exec.forward(&mut st, &[id], Logits::Last).expect("decode"));
            }
            let report = profile.then(|| exec.backend.finish_kernel_profile().expect("profile"));
            (logits, report)
        };
        let (plain, _) = decode(false);
        let (profiled, report) = decode(true);
        let p = report.expect("a profile");
        // Rows of copies queued inside a step are named "(copy) ..."; the rest are kernels.
        let (copies, kernels): (Vec<_>, Vec<_>) = p
            .kernels
            .iter()
            .partition(|k| k.kernel.starts_with("(copy)"));
        let launches: f64 = kernels.iter().map(|k| k.launches_per_step).sum();
        let bytes: f64 = p
            .kernels
            .iter()
            .map(|k| k.weight_bytes as f64 * k.launches_per_step)
            .sum();
        eprintln!(
            "int8 {int8}: {} steps, {launches} launches and {bytes} weight bytes per step, \
             {:.3} ms per step, {} kernels",
            p.steps,
            p.step_ms,
            p.kernels.len()
        );
        for k in &p.kernels {
            eprintln!(
                "  {:<24} {:>8} B x {:.2}: {:.1} us",
                k.kernel, k.weight_bytes, k.launches_per_step, k.us_per_step
            );
        }
        assert_eq!(p.steps, steps as u64);
        // The int8 path folds all norms but the first into projections (two launches a layer)
        // and RoPE + K/V store into the Q/K/V kernel (one).
        let per_layer = if int8 { 5 } else { 8 };
        assert_eq!(
            launches,
            (3 + per_layer * layers) as f64,
            "int8 {int8}: launches timed"
        );
        assert_eq!(bytes, matrices as f64, "int8 {int8}: weight bytes per step");
        assert!(
            p.kernels
                .iter()
                .all(|k| k.us_per_step > 0.0 && k.kernel != "profile_hold"),
            "int8 {int8}: every kernel but the hold, timed"
        );
        // Each step uploads its token id and its position's RoPE table (one parameter set).
        let copy_rows: Vec<(&str, f64)> = copies
            .iter()
            .map(|k| (k.kernel.as_str(), k.launches_per_step))
            .collect();
        assert_eq!(
            copy_rows.len(),
            2,
            "int8 {int8}: copies in a step: {copy_rows:?}"
        );
        for what in ["(copy) token ids", "(copy) RoPE table"] {
            assert!(
                copy_rows.contains(&(what, 1.0)),
                "int8 {int8}: {what} once a step: {copy_rows:?}"
            );
        }
        assert!(p.step_ms > 0.0);
        assert_eq!(
            ops_harness::bits_differ(&plain, &profiled),
            0,
            "int8 {int8}: profiled decode steps differ from unprofiled ones"
        );
    }
}

/// Decode steps recorded as CUDA graphs and replayed give exactly (bit for bit) the logits of
/// the same steps launched op by op: the same kernels run with the same launch shapes, only the
/// token, position and RoPE tables come from the step inputs instead of the host. Two sequences
/// alternate (two recordings alive) and one rewinds (a replay at an earlier position).
#[test]
fn decode_graphs_match_eager_bit_for_bit() {
    for (name, fixture) in [(models::SMOLLM2, "smollm2"), (models::GEMMA3, "gemma3")] {
        let ids = models::prompt_ids(fixture);
        let open = |graphs: bool| {
            CudaBackend::with_graphs(0, graphs)
                .unwrap_or_else(|e| panic!("CUDA device 0 is not usable: {e}"))
        };
        let graph = open(true);
        assert!(graph.device_info().decode_graphs);
        let eager = models::decode_schedule(name, open(false), &ids);
        let replayed = models::decode_schedule(name, graph, &ids);
        assert_eq!(eager.len(), replayed.len());
        let differ = ops_harness::bits_differ(&eager, &replayed);
        eprintln!(
            "{name}: {} decode logits, {differ} differ between graphs and eager launches",
            eager.len()
        );
        assert_eq!(
            differ, 0,
            "{name}: replayed decode graphs differ from eager steps"
        );
    }
}
