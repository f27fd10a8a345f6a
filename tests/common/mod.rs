//! Shared test helpers: model paths, the binary, and a tiny GGUF writer for hostile files.
#![allow(dead_code)]

use std::path::PathBuf;
use std::process::{Command, Output};

pub const SMOLLM2: &str = "SmolLM2-135M-Instruct.Q4_1.gguf";
pub const GEMMA3: &str = "gemma-3-270m-q4_k_m.gguf";

pub fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// A real model from the models folder. Fails (never skips) when it is missing.
pub fn model(name: &str) -> PathBuf {
    let dir = std::env::var_os("TORCHLESS_MODELS_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| repo().join("models"));
    let p = dir.join(name);
    assert!(
        p.is_file(),
        "{} is missing: run tools/fetch-models.sh (or tools/test.sh, which does it)",
        p.display()
    );
    p
}

pub fn fixture(rel: &str) -> PathBuf {
    repo().join("tests/fixtures").join(rel)
}

pub fn torchless(args: &[&str]) -> Output {
    torchless_env(args, &[])
}

/// Run the binary with extra environment variables.
pub fn torchless_env(args: &[&str], env: &[(&str, &str)]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_torchless"))
        .args(args)
        .envs(env.iter().copied())
        .output()
        .expect("spawn torchless")
}

/// `torchless SUBCOMMAND --model <SmolLM2> REST...`.
pub fn smollm2(args: &[&str]) -> Output {
    let m = model(SMOLLM2);
    let mut all = vec![args[0], "--model", m.to_str().unwrap()];
    all.extend_from_slice(&args[1..]);
    torchless(&all)
}

/// Assert a failed run with exactly one line on stderr that contains every `needles`.
pub fn assert_one_line_error(out: &Output, needles: &[&str]) {
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success(),
        "expected failure, got success; stderr: {err}"
    );
    assert_ne!(out.status.code(), Some(101), "panicked: {err}");
    let lines: Vec<&str> = err.lines().filter(|l| !l.trim().is_empty()).collect();
    assert_eq!(lines.len(), 1, "expected one error line, got: {err}");
    for n in needles {
        assert!(
            lines[0].contains(n),
            "error line {:?} does not mention {n:?}",
            lines[0]
        );
    }
}

/// Builds GGUF bytes field by field, so tests can corrupt any of them.
#[derive(Default)]
pub struct GgufBytes {
    pub kv: Vec<u8>,
    pub n_kv: u64,
    pub tensors: Vec<u8>,
    pub n_tensors: u64,
    pub data: Vec<u8>,
}

impl GgufBytes {
    pub fn string(out: &mut Vec<u8>, s: &str) {
        out.extend((s.len() as u64).to_le_bytes());
        out.extend(s.as_bytes());
    }
    pub fn kv_u32(&mut self, k: &str, v: u32) -> &mut Self {
        Self::string(&mut self.kv, k);
        self.kv.extend(4u32.to_le_bytes());
        self.kv.extend(v.to_le_bytes());
        self.n_kv += 1;
        self
    }
    pub fn kv_str(&mut self, k: &str, v: &str) -> &mut Self {
        Self::string(&mut self.kv, k);
        self.kv.extend(8u32.to_le_bytes());
        Self::string(&mut self.kv, v);
        self.n_kv += 1;
        self
    }
    /// A tensor entry with explicit type id and offset (relative to the data section).
    pub fn tensor(&mut self, name: &str, dims: &[u64], ty: u32, offset: u64) -> &mut Self {
        Self::string(&mut self.tensors, name);
        self.tensors.extend((dims.len() as u32).to_le_bytes());
        for d in dims {
            self.tensors.extend(d.to_le_bytes());
        }
        self.tensors.extend(ty.to_le_bytes());
        self.tensors.extend(offset.to_le_bytes());
        self.n_tensors += 1;
        self
    }
    pub fn build(&self) -> Vec<u8> {
        self.build_with(self.n_tensors, self.n_kv)
    }
    /// Build with the given header counts (lie about them to test validation).
    pub fn build_with(&self, n_tensors: u64, n_kv: u64) -> Vec<u8> {
        let mut out = b"GGUF".to_vec();
        out.extend(3u32.to_le_bytes());
        out.extend(n_tensors.to_le_bytes());
        out.extend(n_kv.to_le_bytes());
        out.extend(&self.kv);
        out.extend(&self.tensors);
        while !out.len().is_multiple_of(32) {
            out.push(0);
        }
        out.extend(&self.data);
        out
    }
}

/// A small valid file: one F32 tensor of 8 values.
pub fn tiny_valid() -> GgufBytes {
    let mut g = GgufBytes::default();
    g.kv_str("general.architecture", "llama");
    g.tensor("w", &[8], 0, 0);
    g.data = (0..8).flat_map(|i| (i as f32).to_le_bytes()).collect();
    g
}

pub fn write_temp(name: &str, bytes: &[u8]) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("torchless-test-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let p = dir.join(name);
    std::fs::write(&p, bytes).unwrap();
    p
}
