//! The runner's interfaces, exactly as scripts use them.

mod common;

use common::*;

fn stdout(o: &std::process::Output) -> String {
    assert!(
        o.status.success(),
        "failed: {}",
        String::from_utf8_lossy(&o.stderr)
    );
    String::from_utf8(o.stdout.clone()).unwrap()
}

/// `torchless run` on SmolLM2, greedy, 12 tokens after "The capital of France is", plus `extra`.
fn greedy_capital(extra: &[&str]) -> std::process::Output {
    let m = model(SMOLLM2);
    let mut args = vec![
        "run",
        "--model",
        m.to_str().unwrap(),
        "--prompt",
        "The capital of France is",
        "-n",
        "12",
        "--temp",
        "0",
        "--threads",
        "2",
    ];
    args.extend_from_slice(extra);
    torchless(&args)
}

#[test]
fn run_greedy_is_deterministic_and_streams_text() {
    let a = greedy_capital(&[]);
    let b = greedy_capital(&[]);
    let text = stdout(&a);
    assert_eq!(text, stdout(&b));
    assert!(
        text.contains("Paris"),
        "unexpected greedy continuation: {text:?}"
    );
    let err = String::from_utf8_lossy(&a.stderr);
    assert!(
        err.contains("tok/s") && err.contains("first token"),
        "no summary on stderr: {err}"
    );
}

#[test]
fn run_sampling_is_reproducible_with_a_seed() {
    let m = model(GEMMA3);
    let run = |seed: &str| {
        stdout(&torchless(&[
            "run",
            "--model",
            m.to_str().unwrap(),
            "--prompt",
            "Once upon a time",
            "-n",
            "16",
            "--temp",
            "1.0",
            "--seed",
            seed,
        ]))
    };
    assert_eq!(run("7"), run("7"));
}

#[test]
fn tokenize_json_prints_ids_on_the_last_line() {
    let m = model(GEMMA3);
    let out = stdout(&torchless(&[
        "tokenize",
        "--model",
        m.to_str().unwrap(),
        "Hello world<end_of_turn>",
        "--json",
    ]));
    let last = out.lines().last().unwrap();
    let ids: Vec<u32> = serde_json::from_str(last).unwrap();
    // BOS (2) is added, and the special token is parsed to its id (106).
    assert_eq!(ids.first(), Some(&2));
    assert_eq!(ids.last(), Some(&106));
}

#[test]
fn info_json_describes_the_model() {
    let m = model(GEMMA3);
    let out = stdout(&torchless(&[
        "info",
        "--model",
        m.to_str().unwrap(),
        "--json",
    ]));
    let v: serde_json::Value = serde_json::from_str(out.lines().last().unwrap()).unwrap();
    assert_eq!(v["architecture"], "gemma3");
    assert_eq!(v["head_dim"], 256);
    assert_eq!(v["n_head_kv"], 1);
    assert_eq!(v["tensor_types"]["Q4_K"]["count"], 27);
    assert_eq!(v["tensor_bytes"], 246_587_904u64);
    let windows = v["window_per_layer"].as_array().unwrap();
    let global: Vec<usize> = (0..windows.len())
        .filter(|&i| windows[i].is_null())
        .collect();
    assert_eq!(global, vec![5, 11, 17]);
    assert_eq!(v["rope_base_per_layer"][5], 1_000_000.0);
    assert_eq!(v["rope_base_per_layer"][0], 10_000.0);
}

#[test]
fn logits_writes_npy_of_every_position() {
    let m = model(SMOLLM2);
    let out = std::env::temp_dir().join(format!("torchless-logits-{}.npy", std::process::id()));
    let o = torchless(&[
        "logits",
        "--model",
        m.to_str().unwrap(),
        "--ids",
        "1,504,2365",
        "--out",
        out.to_str().unwrap(),
    ]);
    stdout(&o);
    let (shape, data) = torchless::npy::read_f32(&std::fs::read(&out).unwrap()).unwrap();
    assert_eq!(shape, vec![3, 49152]);
    assert!(data.iter().all(|v| v.is_finite()));
}

#[test]
fn perplexity_needs_two_chunks_of_text() {
    let m = model(SMOLLM2);
    let txt = write_temp("short.txt", b"Just a few words.");
    let o = torchless(&[
        "perplexity",
        "--model",
        m.to_str().unwrap(),
        "--file",
        txt.to_str().unwrap(),
        "--ctx",
        "64",
    ]);
    assert_one_line_error(&o, &["needs at least 128"]);
}

#[test]
fn run_without_model_fetches_the_default_into_the_cache() {
    let dir = std::env::temp_dir().join(format!("torchless-cache-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let args = ["run", "--prompt", "Hi", "-n", "4", "--temp", "0"];
    let env = [("TORCHLESS_MODELS_DIR", dir.to_str().unwrap())];
    let o = torchless_env(&args, &env);
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(o.status.success(), "{err}");
    assert!(
        err.contains("fetching it with"),
        "does not say it fetches: {err}"
    );
    assert!(dir.join(SMOLLM2).is_file());
    // Second use: found in the cache, nothing fetched.
    let o = torchless_env(&args, &env);
    assert!(o.status.success());
    assert!(!String::from_utf8_lossy(&o.stderr).contains("fetching"));
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn run_stops_before_a_stop_string() {
    let full = stdout(&greedy_capital(&[]));
    let cut = stdout(&greedy_capital(&["--stop", "."]));
    let at = full.find('.').expect("the greedy text has a period");
    assert_eq!(cut.trim_end_matches('\n'), &full[..at]);
}

#[test]
fn tokenize_without_json_prints_one_token_per_line() {
    let m = model(SMOLLM2);
    let out = stdout(&torchless(&[
        "tokenize",
        "--model",
        m.to_str().unwrap(),
        "Hello world",
    ]));
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(lines.len(), 2, "{out}");
    assert!(
        lines[1].ends_with("\"world\"") || lines[1].ends_with("\" world\""),
        "{out}"
    );
}

/// `torchless chat` with stdin piped: one turn per line.
fn chat(model_name: &str, input: &str, extra: &[&str]) -> (String, String) {
    use std::io::Write;
    let m = model(model_name);
    let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_torchless"))
        .args(["chat", "--model", m.to_str().unwrap(), "--temp", "0"])
        .args(["--threads", "2"])
        .args(extra)
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(input.as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    let stdout = stdout(&out);
    (stdout, String::from_utf8_lossy(&out.stderr).into_owned())
}

#[test]
fn chat_reuses_the_kv_cache_across_turns() {
    let (out, err) = chat(
        SMOLLM2,
        "What is the capital of France?\nAnd of Italy?\n/exit\nnever read\n",
        &["-n", "24"],
    );
    let summaries: Vec<&str> = err.lines().filter(|l| l.contains("tok/s")).collect();
    assert_eq!(summaries.len(), 2, "{err}");
    assert!(!summaries[0].contains("reused"), "{err}");
    // The second turn re-evaluates only what follows the first turn's tokens.
    assert!(summaries[1].contains("reused from cache"), "{err}");
    assert!(!out.contains("<|im_"), "chat markup leaked: {out:?}");
    assert!(!out.contains("never read"));
}

#[test]
fn chat_reset_starts_a_new_conversation() {
    let (out, err) = chat(
        SMOLLM2,
        "Name a fruit.\n/reset\nName a fruit.\n",
        &["--system", "You answer in one word.", "-n", "24"],
    );
    let replies: Vec<&str> = out.lines().filter(|l| !l.is_empty()).collect();
    assert!(replies.len() >= 2, "{out:?}");
    // Greedy, same conversation after the reset: the same reply.
    let half = out.len() / 2;
    assert_eq!(&out[..half], &out[half..], "{out:?}");
    assert!(err.contains("conversation reset"), "{err}");
    assert!(!err.lines().any(|l| l.contains("reused")), "{err}");
}

#[test]
fn chat_uses_a_builtin_template_for_gemma() {
    // The gemma-3 GGUF has no chat template: the built-in Gemma one renders its turns.
    let (out, err) = chat(GEMMA3, "Say hello.\n", &["-n", "40"]);
    assert!(
        !out.contains("<end_of_turn>") && !out.contains("<start_of_turn>"),
        "{out:?}"
    );
    assert!(err.contains("tok/s"), "{err}");
    // An unknown template name is a one-line error.
    let m = model(GEMMA3);
    let o = torchless(&[
        "chat",
        "--model",
        m.to_str().unwrap(),
        "--chat-template",
        "nonesuch",
    ]);
    assert_one_line_error(&o, &["nonesuch", "chatml"]);
}

#[test]
fn bench_json_reports_speeds_and_bandwidth() {
    let m = model(SMOLLM2);
    let out = stdout(&torchless(&[
        "bench",
        "--model",
        m.to_str().unwrap(),
        "--prompt-tokens",
        "16",
        "--gen-tokens",
        "4",
        "-r",
        "1",
        "--threads",
        "2",
        "--json",
    ]));
    let v: serde_json::Value = serde_json::from_str(out.lines().last().unwrap()).unwrap();
    assert!(v["pp_tps"].as_f64().unwrap() > 0.0);
    assert!(v["tg_tps"].as_f64().unwrap() > 0.0);
    // Every tensor once (SmolLM2's output is tied: the embedding is read in full as the output
    // matrix) plus the one embedding row gathered for the token.
    assert_eq!(v["weight_bytes_per_token"], 96_576_768u64 + 612);
    let pct = v["bandwidth_pct"].as_f64().unwrap();
    assert!(pct > 0.0 && pct < 200.0, "{pct}");
    assert!(v["read_bandwidth_gbps"].as_f64().unwrap() > 0.1);
    assert!(v["profile"].is_null(), "no kernel profile unless asked");
    // Bad settings are one-line errors; the kernel profile is the CUDA backend's.
    let o = torchless(&["bench", "--model", m.to_str().unwrap(), "-r", "0"]);
    assert_one_line_error(&o, &["repetitions"]);
    let o = torchless(&["bench", "--model", m.to_str().unwrap(), "--profile"]);
    assert_one_line_error(&o, &["--profile", "--backend cuda"]);
}

#[test]
fn info_says_which_kernel_path_and_why() {
    let m = model(SMOLLM2);
    let args = ["info", "--model", m.to_str().unwrap(), "--json"];
    let forced = torchless_env(&args, &[("TORCHLESS_CPU", "scalar")]);
    let v: serde_json::Value =
        serde_json::from_str(stdout(&forced).lines().last().unwrap()).unwrap();
    assert_eq!(v["cpu"]["kernel_path"], "scalar");
    assert!(v["cpu"]["why"]
        .as_str()
        .unwrap()
        .contains("TORCHLESS_CPU=scalar"));
    let auto = torchless_env(&args, &[("TORCHLESS_CPU", "")]);
    let v: serde_json::Value = serde_json::from_str(stdout(&auto).lines().last().unwrap()).unwrap();
    assert!(v["cpu"]["why"].as_str().unwrap().contains("best path"));
}

/// Every model command accepts a Hugging Face directory (config.json + tokenizer.json +
/// safetensors; this one is sharded) wherever it accepts a GGUF file.
#[test]
fn commands_accept_a_safetensors_directory() {
    let dir = fixture("arch/qwen2/f32");
    let d = dir.to_str().unwrap();

    let info = stdout(&torchless(&["info", "--model", d, "--json"]));
    let v: serde_json::Value = serde_json::from_str(info.lines().last().unwrap()).unwrap();
    assert_eq!(v["architecture"], "qwen2");
    assert_eq!(v["format"], "Safetensors");
    assert_eq!(v["rope_layout"], "Halves");

    let ids = stdout(&torchless(&[
        "tokenize",
        "--model",
        d,
        "hello world",
        "--json",
    ]));
    let ids: Vec<u32> = serde_json::from_str(ids.lines().last().unwrap()).unwrap();
    assert!(!ids.is_empty());

    let run = torchless(&[
        "run", "--model", d, "--prompt", "hello", "-n", "4", "--temp", "0",
    ]);
    stdout(&run);

    let out = std::env::temp_dir().join(format!("torchless-dir-logits-{}.npy", std::process::id()));
    stdout(&torchless(&[
        "logits",
        "--model",
        d,
        "--ids",
        "5,6,7",
        "--out",
        out.to_str().unwrap(),
    ]));
    let (shape, _) = torchless::npy::read_f32(&std::fs::read(&out).unwrap()).unwrap();
    assert_eq!(shape, vec![3, 300]);

    let text = std::env::temp_dir().join(format!("torchless-dir-ppl-{}.txt", std::process::id()));
    std::fs::write(
        &text,
        "the quick brown fox jumps over the lazy dog. ".repeat(20),
    )
    .unwrap();
    let ppl = stdout(&torchless(&[
        "perplexity",
        "--model",
        d,
        "--file",
        text.to_str().unwrap(),
        "--ctx",
        "32",
    ]));
    assert!(
        ppl.contains("perplexity") || ppl.contains("PPL") || !ppl.is_empty(),
        "{ppl}"
    );
}

/// `--backend cuda` where it cannot run is one clear line and a non-zero exit: without the
/// `cuda` feature it says how to rebuild; with it, on a machine without the NVIDIA driver (CI),
/// it says the driver is missing. Where a driver and GPU exist, the same command generates.
#[test]
fn cuda_backend_where_it_cannot_run_is_a_clear_error() {
    let m = model(SMOLLM2);
    let args = [
        "run",
        "--model",
        m.to_str().unwrap(),
        "--prompt",
        "Hi",
        "-n",
        "2",
        "--temp",
        "0",
        "--backend",
        "cuda",
    ];
    let o = torchless(&args);
    let err = String::from_utf8_lossy(&o.stderr);
    #[cfg(not(feature = "cuda"))]
    let expect = Some(
        "backend 'cuda' is not built in: rebuild with `cargo build --release --features cuda`",
    );
    #[cfg(feature = "cuda")]
    let expect = (!torchless::backend::cuda::driver_present())
        .then_some("no CUDA driver found (libcuda.so could not be loaded)");
    match expect {
        Some(msg) => {
            assert!(!o.status.success(), "should fail: {err}");
            assert_eq!(err.trim().lines().count(), 1, "one line: {err}");
            assert!(err.contains(msg), "unexpected message: {err}");
        }
        None => {
            stdout(&o);
        }
    }
    // `info --backend cuda` fails the same way where the backend cannot start.
    let o = torchless(&["info", "--model", m.to_str().unwrap(), "--backend", "cuda"]);
    assert_eq!(o.status.success(), expect.is_none());
}

/// A bad value of a CUDA option variable is one line and a non-zero exit, read before the
/// driver is looked for (so it shows on any machine).
#[cfg(feature = "cuda")]
#[test]
fn bad_cuda_option_variables_are_clear_errors() {
    let m = model(SMOLLM2);
    for (var, value, msg) in [
        (
            "TORCHLESS_CUDA_MATVEC",
            "fast",
            "TORCHLESS_CUDA_MATVEC=fast: expected float or int8",
        ),
        (
            "TORCHLESS_CUDA_GRAPH",
            "maybe",
            "TORCHLESS_CUDA_GRAPH=maybe: expected on or off",
        ),
        (
            "TORCHLESS_CUDA_FUSE",
            "yes",
            "TORCHLESS_CUDA_FUSE=yes: expected on or off",
        ),
        (
            "TORCHLESS_CUDA_NORM_FOLD",
            "later",
            "TORCHLESS_CUDA_NORM_FOLD=later: expected on or off",
        ),
        (
            "TORCHLESS_CUDA_QKV_ROPE",
            "sometimes",
            "TORCHLESS_CUDA_QKV_ROPE=sometimes: expected on or off",
        ),
        (
            "TORCHLESS_CUDA_PDL",
            "later",
            "TORCHLESS_CUDA_PDL=later: expected on or off",
        ),
        (
            "TORCHLESS_CUDA_PREFETCH",
            "l2",
            "TORCHLESS_CUDA_PREFETCH=l2: expected on or off",
        ),
        (
            "TORCHLESS_CUDA_PDL_TRIGGER",
            "end",
            "TORCHLESS_CUDA_PDL_TRIGGER=end: expected start or exit",
        ),
        (
            "TORCHLESS_CUDA_MMA",
            "bf16",
            "TORCHLESS_CUDA_MMA=bf16: expected on or off",
        ),
    ] {
        let args = ["info", "--model", m.to_str().unwrap(), "--backend", "cuda"];
        let o = torchless_env(&args, &[(var, value)]);
        let err = String::from_utf8_lossy(&o.stderr);
        assert!(!o.status.success(), "{var}={value} should fail: {err}");
        assert_eq!(err.trim().lines().count(), 1, "one line: {err}");
        assert!(err.contains(msg), "unexpected message: {err}");
    }
}

/// `--backend wgpu` without the `wgpu` feature says how to rebuild, in one line.
#[cfg(not(feature = "wgpu"))]
#[test]
fn wgpu_backend_not_built_is_a_clear_error() {
    let m = model(SMOLLM2);
    let o = torchless(&["info", "--model", m.to_str().unwrap(), "--backend", "wgpu"]);
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(!o.status.success(), "should fail: {err}");
    assert_eq!(err.trim().lines().count(), 1, "one line: {err}");
    assert!(
        err.contains(
            "backend 'wgpu' is not built in: rebuild with `cargo build --release --features wgpu`"
        ),
        "unexpected message: {err}"
    );
}

/// Mesa's Vulkan loader prints "XDG_RUNTIME_DIR is invalid" lines when the variable is unset
/// (CI); give the child a valid one so stderr holds only what torchless says.
#[cfg(feature = "wgpu")]
fn with_runtime_dir(args: &[&str]) -> std::process::Output {
    let dir = std::env::temp_dir().join(format!("torchless-xdg-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("runtime dir");
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o700)).expect("chmod");
    }
    torchless_env(args, &[("XDG_RUNTIME_DIR", dir.to_str().unwrap())])
}

/// `info --backend wgpu --json` describes the adapter: its name, API, the features the shaders
/// use and the limits that decide how tensors are split.
#[cfg(feature = "wgpu")]
#[test]
fn wgpu_info_describes_the_adapter() {
    let m = model(SMOLLM2);
    let o = with_runtime_dir(&[
        "info",
        "--model",
        m.to_str().unwrap(),
        "--backend",
        "wgpu",
        "--json",
    ]);
    let v: serde_json::Value = serde_json::from_str(&stdout(&o)).expect("json");
    let d = &v["device"];
    assert!(
        d["name"].as_str().is_some_and(|s| !s.is_empty()),
        "adapter name: {d}"
    );
    assert!(d["api"].is_string(), "api: {d}");
    let features: Vec<&str> = d["features"]
        .as_array()
        .expect("features")
        .iter()
        .filter_map(|f| f.as_str())
        .collect();
    assert!(features.contains(&"immediates"), "features: {features:?}");
    assert!(
        d["limits"]["max_storage_buffer_binding_size"]
            .as_u64()
            .is_some_and(|n| n >= 128 << 20),
        "limits: {d}"
    );
    let types: Vec<&str> = d["weight_types"]
        .as_array()
        .expect("weight types")
        .iter()
        .filter_map(|t| t.as_str())
        .collect();
    for t in ["Q4_0", "Q4_1", "Q5_0", "Q8_0", "Q4_K", "Q6_K", "F16", "F32"] {
        assert!(types.contains(&t), "{t} missing from {types:?}");
    }
}

/// A wrong `--device` for wgpu is one line naming the adapters there are, and a non-zero exit.
#[cfg(feature = "wgpu")]
#[test]
fn wgpu_bad_device_is_a_clear_error() {
    let m = model(SMOLLM2);
    let o = with_runtime_dir(&[
        "run",
        "--model",
        m.to_str().unwrap(),
        "--prompt",
        "Hi",
        "-n",
        "2",
        "--backend",
        "wgpu",
        "--device",
        "99",
    ]);
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(!o.status.success(), "should fail: {err}");
    assert_eq!(err.trim().lines().count(), 1, "one line: {err}");
    assert!(
        err.contains("--device 99: only"),
        "unexpected message: {err}"
    );
}

/// `run --backend wgpu` generates the same greedy text as the CPU on SmolLM2.
#[cfg(feature = "wgpu")]
#[test]
fn wgpu_greedy_run_matches_cpu() {
    let cpu = stdout(&greedy_capital(&[]));
    let gpu = stdout(&greedy_capital(&["--backend", "wgpu"]));
    assert_eq!(gpu, cpu, "wgpu and cpu greedy text differ");
}
