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
use torchless::backend::cuda::{CudaBackend, CudaOptions};
use torchless::backend::BackendKind;

/// Device 0, or a panic saying why not (these tests must fail without a GPU).
fn device() -> CudaBackend {
    CudaBackend::new(0).unwrap_or_else(|e| {
        panic!(
            "CUDA device 0 is not usable: {e} (these tests need an NVIDIA GPU, tools/gpu-check.sh, or the emulator: tools/test.sh)"
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

/// The matmul family again with one-token Q4_K matvecs through the int8 kernels
/// (`TORCHLESS_CUDA_MATVEC=int8`), against the same CPU reference and bounds.
#[test]
fn ops_matmul_int8_matvec() {
    let opts = CudaOptions {
        decode_graphs: true,
        int8_matvec: true,
        fused: true,
    };
    let dev = CudaBackend::with_options(0, opts).unwrap_or_else(|e| {
        panic!("CUDA device 0 is not usable: {e} (these tests need an NVIDIA GPU)")
    });
    assert_eq!(dev.device_info().matvec, "int8");
    ops_harness::check_family(&dev, "cuda (int8 matvec)", Family::Matmul);
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

/// CUDA computes with f32 activations, so besides the CPU's bounds its logits are held to the
/// exact ones (float64, tests/fixtures/logits/*.exact.json): batch and decode, or with the int8
/// decode matvec (`TORCHLESS_CUDA_MATVEC=int8`, which rounds x to 8 bits) the batch only.
fn near_exact() -> models::NearExact {
    let opts = CudaOptions::from_env().unwrap_or_else(|e| panic!("{e}"));
    if opts.int8_matvec {
        models::NearExact::Batch
    } else {
        models::NearExact::BatchAndDecode
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
// matmuls keep activations in f32, while the CPU (as llama.cpp) rounds them to 8 bits, which puts
// the CPU 0.67% (SmolLM2) and 0.94% (gemma-3) from the exact value over these 13 chunks.
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
        let differ = eager
            .iter()
            .zip(&replayed)
            .filter(|(a, b)| a.to_bits() != b.to_bits())
            .count();
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
