//! The CUDA build without a GPU: build.rs compiled every kernel file to PTX (with clang or
//! nvcc), and the embedded PTX has an entry point for every op × weight type the backend
//! launches, with no unresolved external function. Runs in CI (`--features cuda`, no device).
#![cfg(feature = "cuda")]

use std::collections::BTreeSet;

use torchless::backend::cuda::{ptx_entry_points, ptx_modules, required_entry_points};

/// Every weight type the CUDA backend has matmul and embedding kernels for.
const TYPES: &[&str] = &[
    "f32", "f16", "bf16", "q4_0", "q4_1", "q5_0", "q5_1", "q8_0", "q2_k", "q3_k", "q4_k", "q5_k",
    "q6_k",
];
/// The ops that exist once per weight type: decode matvec, tiled prefill matmul, row lookup.
const TYPED_OPS: &[&str] = &["matvec", "matmul", "get_rows"];
/// One file per op family.
const FAMILIES: &[&str] = &["activation", "attention", "embed", "matmul", "norm", "rope"];

fn entry_points() -> BTreeSet<String> {
    ptx_modules()
        .iter()
        .flat_map(|(_, ptx)| ptx_entry_points(ptx))
        .collect()
}

#[test]
fn every_op_family_is_a_compiled_module() {
    let stems: BTreeSet<&str> = ptx_modules().iter().map(|(s, _)| *s).collect();
    for f in FAMILIES {
        assert!(stems.contains(f), "no PTX for kernels/{f}.cu: {stems:?}");
    }
    for (stem, ptx) in ptx_modules() {
        assert!(ptx.contains(".target sm_80"), "{stem}: not built for sm_80");
        assert!(!ptx_entry_points(ptx).is_empty(), "{stem}: no kernels");
    }
}

#[test]
fn every_op_and_weight_type_has_an_entry_point() {
    let have = entry_points();
    let mut missing = Vec::new();
    for op in TYPED_OPS {
        for ty in TYPES {
            let name = format!("{op}_{ty}");
            if !have.contains(&name) {
                missing.push(name);
            }
        }
    }
    for name in required_entry_points() {
        if !have.contains(&name) {
            missing.push(name);
        }
    }
    assert!(missing.is_empty(), "PTX lacks {missing:?}");
    // And the other way round: the backend launches every typed kernel it ships.
    let required: BTreeSet<String> = required_entry_points().into_iter().collect();
    for op in TYPED_OPS {
        for ty in TYPES {
            assert!(
                required.contains(&format!("{op}_{ty}")),
                "{op}_{ty} is never launched"
            );
        }
    }
}

#[test]
fn ptx_calls_no_external_function() {
    for (stem, ptx) in ptx_modules() {
        assert!(
            !ptx.contains(".extern .func"),
            "kernels/{stem}.cu calls an unresolved function (libdevice is not linked)"
        );
    }
}
