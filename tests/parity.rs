//! Parity with llama.cpp on the two real models: teacher-forced logits at every position and
//! perplexity, against fixtures made by tools/gen-ref-fixtures.sh (llama.cpp 0c1e570).

mod common;

use common::*;
use serde_json::Value;
use torchless::{LoadOptions, Model};

fn load(name: &str) -> Model {
    Model::load(
        model(name),
        &LoadOptions {
            threads: 2,
            ..Default::default()
        },
    )
    .expect("load model")
}

fn json(rel: &str) -> Value {
    serde_json::from_slice(&std::fs::read(fixture(rel)).expect("fixture")).expect("fixture json")
}

/// Our logits against llama.cpp's for the fixture's ids: top-1 where llama.cpp's margin is clear, and RMS.
fn logits_parity(fixture_name: &str, model_name: &str) {
    let meta = json(&format!("logits/{fixture_name}.json"));
    let ids: Vec<u32> = meta["ids"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_u64().unwrap() as u32)
        .collect();
    let margins: Vec<f64> = meta["top2_margin"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_f64().unwrap())
        .collect();
    let top1: Vec<u64> = meta["top1"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_u64().unwrap())
        .collect();
    // The fixture stores the logits of these positions of the sequence (all, or every k-th).
    let positions: Vec<usize> = meta["positions"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_u64().unwrap() as usize)
        .collect();
    let (shape, reference) = torchless::npy::read_f32(
        &std::fs::read(fixture(&format!("logits/{fixture_name}.logits.npy"))).unwrap(),
    )
    .unwrap();
    let engine = load(model_name);
    let n_vocab = engine.config().n_vocab;
    assert_eq!(shape, vec![positions.len(), n_vocab]);
    assert!(
        ids.len() >= 64,
        "fixtures need 64+ ids so llama.cpp uses its f32 attention path"
    );
    let ours = engine.logits(&ids).unwrap();

    let (mut sq, mut clear, mut clear_bad) = (0f64, 0, Vec::new());
    let mut worst = 0f64;
    for (i, ((&m, &t1), &j)) in margins.iter().zip(&top1).zip(&positions).enumerate() {
        let a = &ours[j * n_vocab..(j + 1) * n_vocab];
        let r = &reference[i * n_vocab..(i + 1) * n_vocab];
        let mut row_sq = 0f64;
        for (x, y) in a.iter().zip(r) {
            row_sq += ((x - y) as f64).powi(2);
        }
        worst = worst.max((row_sq / n_vocab as f64).sqrt());
        sq += row_sq;
        if m >= 0.5 {
            clear += 1;
            let ours_top = torchless::sampling::argmax(a) as u64;
            if ours_top != t1 {
                clear_bad.push((j, t1, ours_top, m));
            }
        }
    }
    let rms = (sq / (positions.len() * n_vocab) as f64).sqrt();
    eprintln!(
        "{fixture_name}: {} of {} positions compared, RMS logit difference {rms:.4} (worst position {worst:.3}), top-1 agrees at {}/{clear} clear positions",
        positions.len(),
        ids.len(),
        clear - clear_bad.len()
    );
    assert!(
        clear_bad.is_empty(),
        "top-1 differs where llama.cpp's margin ≥ 0.5: {clear_bad:?}"
    );
    assert!(rms <= 0.25, "RMS logit difference {rms:.4} > 0.25");
}

#[test]
fn smollm2_logits_match_llamacpp() {
    logits_parity("smollm2", SMOLLM2);
}

#[test]
fn gemma3_logits_match_llamacpp() {
    logits_parity("gemma3", GEMMA3);
}

fn perplexity_parity(fixture_name: &str, model_name: &str) {
    let meta = json(&format!("perplexity/{fixture_name}.json"));
    let ctx = meta["ctx"].as_u64().unwrap() as usize;
    let chunks = meta["chunks"].as_u64().unwrap() as usize;
    let reference = meta["ppl"].as_f64().unwrap();
    let text = std::fs::read_to_string(fixture("perplexity/text.txt")).unwrap();
    let engine = load(model_name);
    let r = engine
        .perplexity(&text, ctx, Some(chunks), |_, _, _| {})
        .unwrap();
    let rel = (r.ppl - reference).abs() / reference;
    eprintln!(
        "{fixture_name}: PPL {:.4} vs llama-perplexity {reference:.4} ({:.3}% apart, {} chunks of {ctx})",
        r.ppl,
        rel * 100.0,
        r.chunks
    );
    assert_eq!(r.chunks, chunks);
    assert!(
        rel <= 0.01,
        "perplexity {:.4} is {:.2}% from llama.cpp's {reference:.4}",
        r.ppl,
        rel * 100.0
    );
}

#[test]
fn smollm2_perplexity_matches_llamacpp() {
    perplexity_parity("smollm2", SMOLLM2);
}

#[test]
fn gemma3_perplexity_matches_llamacpp() {
    perplexity_parity("gemma3", GEMMA3);
}
