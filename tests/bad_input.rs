//! Hostile and broken input: every case is a one-line error and a non-zero exit, never a panic.

mod common;

use common::*;
use torchless::model::GgufFile;

fn info(path: &std::path::Path) -> std::process::Output {
    torchless(&["info", "--model", path.to_str().unwrap()])
}

#[test]
fn valid_tiny_file_parses() {
    let p = write_temp("tiny.gguf", &tiny_valid().build());
    let f = GgufFile::open(&p).expect("tiny file parses");
    let t = f.tensor("w").unwrap();
    assert_eq!(f.tensor_data(t).len(), 32);
}

#[test]
fn missing_file() {
    let out = info(std::path::Path::new("/nonexistent/model.gguf"));
    assert_one_line_error(&out, &["/nonexistent/model.gguf", "No such file"]);
}

#[test]
fn directory_without_config() {
    let dir = std::env::temp_dir();
    let out = info(&dir);
    assert_one_line_error(&out, &["model directory needs config.json"]);
}

#[test]
fn wrong_magic() {
    let mut b = tiny_valid().build();
    b[..4].copy_from_slice(b"GGML");
    let out = info(&write_temp("magic.gguf", &b));
    assert_one_line_error(&out, &["not a GGUF file"]);
}

#[test]
fn bad_version() {
    let mut b = tiny_valid().build();
    b[4..8].copy_from_slice(&99u32.to_le_bytes());
    let out = info(&write_temp("version.gguf", &b));
    assert_one_line_error(&out, &["unsupported GGUF version 99"]);
}

#[test]
fn absurd_counts() {
    let g = tiny_valid();
    let out = info(&write_temp("kvcount.gguf", &g.build_with(1, u64::MAX / 2)));
    assert_one_line_error(&out, &["metadata count", "cannot fit"]);
    let out = info(&write_temp("tcount.gguf", &g.build_with(1 << 60, 1)));
    assert_one_line_error(&out, &["tensor count", "cannot fit"]);
}

#[test]
fn absurd_string_and_array_lengths() {
    let mut g = GgufBytes::default();
    // A key whose length claims far more bytes than the file holds.
    g.kv.extend((1u64 << 62).to_le_bytes());
    g.n_kv = 1;
    g.data = vec![0; 64];
    let out = info(&write_temp("strlen.gguf", &g.build()));
    assert_one_line_error(&out, &["truncated"]);

    let mut g = GgufBytes::default();
    GgufBytes::string(&mut g.kv, "tokenizer.ggml.tokens");
    g.kv.extend(9u32.to_le_bytes()); // array
    g.kv.extend(8u32.to_le_bytes()); // of strings
    g.kv.extend((1u64 << 50).to_le_bytes());
    g.n_kv = 1;
    g.data = vec![0; 64];
    let out = info(&write_temp("arrlen.gguf", &g.build()));
    assert_one_line_error(&out, &["array 'tokenizer.ggml.tokens'", "cannot fit"]);
}

#[test]
fn tensor_offset_past_end() {
    let mut g = tiny_valid();
    g.tensors.clear();
    g.n_tensors = 0;
    g.tensor("w", &[8], 0, 1 << 20);
    let out = info(&write_temp("offset.gguf", &g.build()));
    assert_one_line_error(&out, &["tensor 'w'", "outside the file"]);
}

#[test]
fn dimension_product_overflow() {
    let mut g = tiny_valid();
    g.tensors.clear();
    g.n_tensors = 0;
    g.tensor("w", &[1 << 32, 1 << 32, 1 << 32], 0, 0);
    let out = info(&write_temp("dims.gguf", &g.build()));
    assert_one_line_error(&out, &["tensor 'w'", "overflows"]);
}

#[test]
fn unknown_type_id() {
    let mut g = tiny_valid();
    g.tensors.clear();
    g.n_tensors = 0;
    g.tensor("w", &[8], 77, 0);
    let out = info(&write_temp("type.gguf", &g.build()));
    assert_one_line_error(&out, &["tensor 'w'", "unknown ggml type id 77"]);
}

#[test]
fn truncated_real_model() {
    let src = std::fs::read(model(SMOLLM2)).unwrap();
    // Cut inside the metadata, inside the tensor table and inside the tensor data.
    for cut in [3usize, 20, 1000, 1_700_000, 1_785_700, 40_000_000] {
        let p = write_temp(&format!("cut{cut}.gguf"), &src[..cut]);
        let out = info(&p);
        assert_one_line_error(&out, &[p.to_str().unwrap()]);
    }
}

#[test]
fn every_truncation_of_a_small_file_is_an_error_not_a_panic() {
    let b = tiny_valid().build();
    for cut in 0..b.len() {
        let p = write_temp("everycut.gguf", &b[..cut]);
        assert!(GgufFile::open(&p).is_err(), "cut at {cut} parsed");
    }
}

#[test]
fn unsupported_architecture() {
    let mut g = GgufBytes::default();
    g.kv_str("general.architecture", "mamba9");
    let out = info(&write_temp("arch.gguf", &g.build()));
    assert_one_line_error(
        &out,
        &["architecture 'mamba9' is not supported", "llama", "gemma3"],
    );
}

#[test]
fn out_of_range_token_id() {
    let out = smollm2(&[
        "logits",
        "--ids",
        "1,2,49152",
        "--out",
        "/tmp/torchless-oob.npy",
    ]);
    assert_one_line_error(&out, &["token id 49152 is out of range", "49152 tokens"]);
    let out = smollm2(&["logits", "--ids", "1,x", "--out", "/tmp/torchless-oob.npy"]);
    assert_one_line_error(&out, &["'x' is not a token id"]);
}

#[test]
fn unknown_backend() {
    let out = smollm2(&["run", "--prompt", "hi", "--backend", "tpu"]);
    assert_one_line_error(&out, &["unknown backend 'tpu'"]);
}

#[test]
fn prompt_longer_than_context() {
    let long = "word ".repeat(200);
    let out = smollm2(&["run", "--prompt", &long, "--ctx", "64", "-n", "4"]);
    assert_one_line_error(&out, &["context overflow"]);
}

#[test]
fn absurd_thread_count() {
    let out = smollm2(&["run", "--prompt", "hi", "--threads", "100000"]);
    assert_one_line_error(&out, &["--threads 100000"]);
}

#[test]
fn forced_kernel_path_must_exist() {
    let m = model(SMOLLM2);
    let args = [
        "run",
        "--model",
        m.to_str().unwrap(),
        "--prompt",
        "hi",
        "-n",
        "1",
    ];
    let out = torchless_env(&args, &[("TORCHLESS_CPU", "sse9")]);
    assert_one_line_error(&out, &["sse9"]);
}
