//! The wgpu backend on a real adapter: the op-by-op harness (tests/ops_harness, every op and
//! weight type against the CPU scalar reference, fresh random inputs each run), end-to-end
//! agreement with the CPU backend on the two real models and on every tiny architecture
//! fixture, and the errors a user meets.
//!
//! Runs in `cargo test --features wgpu` (the README's test command installs Mesa's software
//! Vulkan driver, lavapipe, so every machine has an adapter). A test that finds no adapter FAILS:
//! passing here means the shaders really ran.
#![cfg(feature = "wgpu")]

mod ops_harness;

use ops_harness::{models, Family};
use torchless::backend::wgpu::matmul::{Matvec, Prefill};
use torchless::backend::wgpu::{ShaderChoice, WgpuBackend};
use torchless::backend::BackendKind;

/// Adapter 0, or a panic saying why not (these tests must fail without an adapter).
fn adapter() -> WgpuBackend {
    WgpuBackend::new(0).unwrap_or_else(|e| {
        panic!(
            "no usable wgpu adapter: {e} (the test command installs Mesa's software Vulkan \
             driver: apt-get install mesa-vulkan-drivers libvulkan1)"
        )
    })
}

// ---------------------------------------------------------------------------------------------
// Op by op. Each family gets a fresh backend: errors are sticky, so one failing shader must not
// hide the results of the others.
// ---------------------------------------------------------------------------------------------

#[test]
fn ops_embed() {
    ops_harness::check_family(&adapter(), "wgpu", Family::Embed);
}

#[test]
fn ops_elementwise() {
    ops_harness::check_family(&adapter(), "wgpu", Family::Elementwise);
}

#[test]
fn ops_norm() {
    ops_harness::check_family(&adapter(), "wgpu", Family::Norm);
}

#[test]
fn ops_rope() {
    ops_harness::check_family(&adapter(), "wgpu", Family::Rope);
}

#[test]
fn ops_attention() {
    ops_harness::check_family(&adapter(), "wgpu", Family::Attention);
}

/// Every matmul shader, whichever this adapter would choose: the three prefill shaders, `tiled`
/// and `tiled-f16` (adapters without and with `shader-f16`) and `rows` (forced only), and both
/// decode shaders, `workgroup` and `subgroup` (the adapter must have subgroups and `shader-f16`:
/// lavapipe, which CI runs on, has both).
#[test]
fn ops_matmul_every_shader_variant() {
    for (prefill, matvec) in [
        (Prefill::Tiled, Matvec::Workgroup),
        (Prefill::Rows, Matvec::Subgroup),
        (Prefill::TiledF16, Matvec::Subgroup),
    ] {
        let choice = ShaderChoice {
            prefill: Some(prefill),
            matvec: Some(matvec),
        };
        let b = WgpuBackend::with_shaders(0, choice)
            .unwrap_or_else(|e| panic!("no usable wgpu adapter: {e}"));
        let label = format!("wgpu {} prefill, {} matvec", prefill.name(), matvec.name());
        ops_harness::check_family(&b, &label, Family::Matmul);
    }
}

#[test]
fn ops_odd_cols() {
    ops_harness::check_family(&adapter(), "wgpu", Family::OddCols);
}

// ---------------------------------------------------------------------------------------------
// The two real models through the library API (tests/ops_harness/models.rs).
// ---------------------------------------------------------------------------------------------

#[test]
fn smollm2_logits_match_cpu() {
    models::real_model_logits(
        models::SMOLLM2,
        "smollm2",
        BackendKind::Wgpu,
        models::NearExact::NO,
    );
}

#[test]
fn gemma3_logits_match_cpu() {
    models::real_model_logits(
        models::GEMMA3,
        "gemma3",
        BackendKind::Wgpu,
        models::NearExact::NO,
    );
}

/// The real models' prefill through the shaders an adapter does not choose here: the tests
/// above use lavapipe's own choice, `tiled-f16`; adapters without `shader-f16` run `tiled`, and
/// `rows` is there to be forced. Batch logits of the fixed prompt against the CPU's.
#[test]
fn real_models_other_prefill_shaders_match_cpu() {
    for prefill in [Prefill::Tiled, Prefill::Rows] {
        for (name, fixture) in [(models::SMOLLM2, "smollm2"), (models::GEMMA3, "gemma3")] {
            let choice = ShaderChoice {
                prefill: Some(prefill),
                matvec: None,
            };
            let b = WgpuBackend::with_shaders(0, choice)
                .unwrap_or_else(|e| panic!("no usable wgpu adapter: {e}"));
            let label = format!("wgpu {} prefill", prefill.name());
            models::real_model_batch_logits(name, fixture, &label, b);
        }
    }
}

/// Chunks of the perplexity text compared (of the fixture's 13): Mesa's software driver runs
/// the shaders on the CPU at a few tokens per second, and 3 × 128 tokens keep the test to
/// minutes while scoring ~190 tokens.
const PPL_CHUNKS: usize = 3;

#[test]
fn smollm2_perplexity_matches_cpu() {
    models::real_model_perplexity(
        models::SMOLLM2,
        "smollm2",
        BackendKind::Wgpu,
        Some(PPL_CHUNKS),
    );
}

#[test]
fn gemma3_perplexity_matches_cpu() {
    models::real_model_perplexity(
        models::GEMMA3,
        "gemma3",
        BackendKind::Wgpu,
        Some(PPL_CHUNKS),
    );
}

// ---------------------------------------------------------------------------------------------
// The tiny architecture fixtures (every family; F32 and Q8_0 GGUF, f32 and bf16 safetensors).
// ---------------------------------------------------------------------------------------------

#[test]
fn arch_fixtures_match_cpu() {
    ops_harness::check_arch_fixtures("wgpu", &ops_harness::ARCH_FILES, || WgpuBackend::new(0));
}

/// I8 (compressed-tensors w8a8) has no shader: loading must fail with the clear
/// `UnsupportedType` error naming the tensor, the type and the backend, not run wrongly.
#[test]
fn arch_i8_is_refused_with_unsupported_type() {
    models::assert_i8_refused(BackendKind::Wgpu, "wgpu", adapter);
}
