//! The library API: sessions reuse their KV cache exactly, generation is reproducible, and
//! sampling knobs are validated.

mod common;

use common::*;
use torchless::backend::cpu::matmul::LANE_MIN_TOKENS;
use torchless::{FinishReason, GenerateOptions, LoadOptions, Model, SamplerConfig};

fn load() -> Model {
    Model::load(
        model(SMOLLM2),
        &LoadOptions {
            threads: 2,
            ..Default::default()
        },
    )
    .unwrap()
}

fn max_diff(a: &[f32], b: &[f32]) -> f32 {
    assert_eq!(a.len(), b.len());
    a.iter()
        .zip(b)
        .map(|(x, y)| (x - y).abs())
        .fold(0.0, f32::max)
}

#[test]
fn prefix_reuse_gives_the_same_logits_as_a_fresh_session() {
    let m = load();
    let a = m.tokenize("The quick brown fox jumps over the lazy dog. ");
    let b = m.tokenize("Then it ran into the forest and");
    let c = m.tokenize("A completely different ending");
    let ab: Vec<u32> = a.iter().chain(&b).copied().collect();
    let ac: Vec<u32> = a.iter().chain(&c).copied().collect();

    let mut fresh = m.session(256).unwrap();
    let want = fresh.feed(&ab).unwrap().to_vec();

    let mut s = m.session(256).unwrap();
    s.feed(&ac).unwrap();
    // Shares `a` with what the session holds: only `b` is evaluated — or, when `b` is shorter
    // than the batched kernels' minimum, the last LANE_MIN_TOKENS tokens, so that they take
    // the same kernels as in one fresh batch.
    let keep = a.len().min(ab.len() - LANE_MIN_TOKENS);
    let reused = s.set_prompt(&ab).unwrap();
    assert_eq!(reused, keep);
    assert_eq!(s.tokens(), &ab[..]);
    let d = max_diff(s.logits(), &want);
    assert!(d < 1e-3, "logits after prefix reuse differ by {d}");

    // The same prompt again evaluates nothing.
    assert_eq!(s.set_prompt(&ab).unwrap(), ab.len());
    s.truncate(a.len());
    assert!(s.logits().is_empty());
    assert_eq!(s.set_prompt(&ab).unwrap(), keep);
    assert!(max_diff(s.logits(), &want) < 1e-3);
    // Every prompt token cached, followed by a generated one (a repeated request): a tail of
    // LANE_MIN_TOKENS is evaluated again, and the logits are exactly those of the fresh batch.
    s.feed(&c[..1]).unwrap();
    assert_eq!(s.set_prompt(&ab).unwrap(), ab.len() - LANE_MIN_TOKENS);
    assert_eq!(s.logits(), &want[..]);
}

#[test]
fn generation_is_reproducible_and_reports_why_it_stopped() {
    let m = load();
    let opts = GenerateOptions {
        max_tokens: 10,
        sampler: SamplerConfig {
            temperature: 0.9,
            seed: 5,
            ..Default::default()
        },
        stop: vec![],
    };
    let run = || {
        let mut text = String::new();
        let stats = m
            .generate("Once upon a time", &opts, None, |t| text.push_str(t))
            .unwrap();
        (text, stats)
    };
    let (t1, s1) = run();
    let (t2, _) = run();
    assert_eq!(t1, t2);
    assert_eq!(s1.generated_tokens, 10);
    assert_eq!(s1.finish, FinishReason::MaxTokens);
    assert_eq!(s1.finish.openai(), "length");
}

#[test]
fn a_full_context_ends_generation() {
    let m = load();
    let ids = m.tokenize("Counting: 1, 2, 3,");
    let mut s = m.session(ids.len() + 3).unwrap();
    let opts = GenerateOptions {
        max_tokens: 100,
        sampler: SamplerConfig::greedy(),
        stop: vec![],
    };
    let stats = s.generate(&ids, &opts, |_| {}).unwrap();
    assert!(stats.generated_tokens <= 4);
    assert!(matches!(
        stats.finish,
        FinishReason::ContextFull | FinishReason::EndOfGeneration
    ));
    // A prompt that does not fit is an error, not a panic.
    let mut small = m.session(2).unwrap();
    let err = small.set_prompt(&ids).unwrap_err().to_string();
    assert!(err.contains("context"), "{err}");
}

#[test]
fn bad_sampling_settings_are_one_line_errors() {
    let m = model(SMOLLM2);
    for (flag, value) in [
        ("--top-p", "0"),
        ("--min-p", "1.5"),
        ("--temp=-1", ""),
        ("--repeat-penalty", "0"),
    ] {
        let mut args = vec![
            "run",
            "--model",
            m.to_str().unwrap(),
            "--prompt",
            "hi",
            flag,
        ];
        if !value.is_empty() {
            args.push(value);
        }
        let o = torchless(&args);
        let name = flag
            .trim_start_matches("--")
            .split('=')
            .next()
            .unwrap()
            .replace('-', "_");
        let name = if name == "temp" {
            "temperature".to_string()
        } else {
            name
        };
        assert_one_line_error(&o, &[&name]);
    }
}

#[test]
fn wrong_arguments_are_one_line_errors() {
    let o = torchless(&["run", "--prompt", "hi", "--top-k", "many"]);
    assert_one_line_error(&o, &["--top-k", "many"]);
    let o = torchless(&["serve", "--no-such-flag"]);
    assert_one_line_error(&o, &["--no-such-flag"]);
    let o = torchless(&["nonsense"]);
    assert_one_line_error(&o, &["nonsense"]);
}
