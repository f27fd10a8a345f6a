//! The OpenAI-compatible server, started for real on 127.0.0.1 with SmolLM2 and spoken to over
//! HTTP: plain and streamed completions, errors, disconnects, concurrency, and the official
//! `openai` Python client.

mod common;

use std::io::{BufRead, BufReader, Read};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::*;
use serde_json::{json, Value};
use torchless::chat::{ChatTemplate, Message};
use torchless::{GenerateOptions, LoadOptions, Model, SamplerConfig};

/// A running `torchless serve`, killed on drop.
struct Server {
    child: Child,
    base: String,
}

impl Server {
    fn start(extra: &[&str]) -> Server {
        let m = model(SMOLLM2);
        let mut child = Command::new(env!("CARGO_BIN_EXE_torchless"))
            .args(["serve", "--model", m.to_str().unwrap(), "--port", "0"])
            .args(["--threads", "2"])
            .args(extra)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("start torchless serve");
        let mut line = String::new();
        BufReader::new(child.stderr.take().unwrap())
            .read_line(&mut line)
            .unwrap();
        let addr = line
            .split("http://")
            .nth(1)
            .and_then(|r| r.split_whitespace().next())
            .unwrap_or_else(|| panic!("no address in the server's first line: {line:?}"))
            .to_string();
        Server {
            child,
            base: format!("http://{addr}"),
        }
    }

    fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    /// POSTs a raw body; returns (status, parsed JSON body).
    fn post_raw(&self, path: &str, body: &str) -> (u16, Value) {
        let r = ureq::post(&self.url(path))
            .timeout(Duration::from_secs(120))
            .set("Content-Type", "application/json")
            .send_string(body);
        let resp = match r {
            Ok(r) => r,
            Err(ureq::Error::Status(_, r)) => r,
            Err(e) => panic!("POST {path}: {e}"),
        };
        let status = resp.status();
        let text = resp.into_string().unwrap();
        let v = serde_json::from_str(&text)
            .unwrap_or_else(|e| panic!("POST {path}: body is not JSON ({e}): {text}"));
        (status, v)
    }

    fn post(&self, path: &str, body: &Value) -> (u16, Value) {
        self.post_raw(path, &body.to_string())
    }

    fn get(&self, path: &str) -> Value {
        let text = ureq::get(&self.url(path))
            .timeout(Duration::from_secs(30))
            .call()
            .unwrap()
            .into_string()
            .unwrap();
        serde_json::from_str(&text).unwrap()
    }

    /// POSTs with `stream: true` and returns every `data:` payload, checking SSE framing.
    fn stream(&self, path: &str, body: &Value) -> Vec<String> {
        let resp = ureq::post(&self.url(path))
            .timeout(Duration::from_secs(300))
            .send_json(body.clone())
            .unwrap();
        assert_eq!(resp.content_type(), "text/event-stream");
        let mut text = String::new();
        resp.into_reader().read_to_string(&mut text).unwrap();
        sse_payloads(&text)
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Splits an SSE body into its `data:` payloads; every event must be one `data:` line followed
/// by a blank line, and the last must be `[DONE]`.
fn sse_payloads(text: &str) -> Vec<String> {
    assert!(
        text.ends_with("\n\n"),
        "stream does not end an event: {text:?}"
    );
    let events: Vec<&str> = text.trim_end_matches('\n').split("\n\n").collect();
    let payloads: Vec<String> = events
        .iter()
        .map(|e| {
            assert!(!e.contains('\n'), "multi-line event: {e:?}");
            e.strip_prefix("data: ")
                .unwrap_or_else(|| panic!("event without 'data: ': {e:?}"))
                .to_string()
        })
        .collect();
    assert_eq!(payloads.last().map(String::as_str), Some("[DONE]"));
    payloads
}

/// Checks a streamed chat: one id, role first, a finish reason last; returns the text.
fn chat_stream_text(payloads: &[String]) -> (String, String) {
    let chunks: Vec<Value> = payloads[..payloads.len() - 1]
        .iter()
        .map(|p| serde_json::from_str(p).unwrap())
        .collect();
    assert!(chunks.len() >= 2);
    let id = chunks[0]["id"].as_str().unwrap();
    assert!(id.starts_with("chatcmpl-"));
    assert_eq!(chunks[0]["choices"][0]["delta"]["role"], "assistant");
    let mut text = String::new();
    for (i, c) in chunks.iter().enumerate() {
        assert_eq!(c["object"], "chat.completion.chunk");
        assert_eq!(c["id"], id);
        let finish = &c["choices"][0]["finish_reason"];
        assert_eq!(finish.is_null(), i + 1 < chunks.len(), "chunk {i}: {c}");
        if let Some(t) = c["choices"][0]["delta"]["content"].as_str() {
            text.push_str(t);
        }
    }
    let last = chunks.last().unwrap();
    (
        text,
        last["choices"][0]["finish_reason"]
            .as_str()
            .unwrap()
            .to_string(),
    )
}

const QUESTION: &str = "What is the capital of France?";

fn chat_body(max_tokens: u32, stream: bool) -> Value {
    json!({
        "model": "anything",
        "messages": [{"role": "user", "content": QUESTION}],
        "max_tokens": max_tokens,
        "temperature": 0,
        "stream": stream,
    })
}

#[test]
fn health_and_models() {
    let s = Server::start(&[]);
    let h = s.get("/health");
    assert_eq!(h["status"], "ok");
    assert_eq!(h["slots"], 4);
    let m = s.get("/v1/models");
    assert_eq!(m["object"], "list");
    assert_eq!(m["data"][0]["id"], SMOLLM2);
}

#[test]
fn chat_completion_matches_the_library_and_the_stream() {
    let s = Server::start(&[]);
    let (status, v) = s.post("/v1/chat/completions", &chat_body(24, false));
    assert_eq!(status, 200, "{v}");
    assert_eq!(v["object"], "chat.completion");
    let content = v["choices"][0]["message"]["content"].as_str().unwrap();
    assert_eq!(v["choices"][0]["message"]["role"], "assistant");

    // The same greedy generation through the library, with the model's own template.
    let model = Model::load(
        model(SMOLLM2),
        &LoadOptions {
            threads: 2,
            ..Default::default()
        },
    )
    .unwrap();
    let t = ChatTemplate::for_model(&model, None).unwrap();
    assert_eq!(t.origin, "model");
    let prompt = t.tokens(&model, &[Message::new("user", QUESTION)]).unwrap();
    let mut session = model.session(4096).unwrap();
    let opts = GenerateOptions {
        max_tokens: 24,
        sampler: SamplerConfig::greedy(),
        stop: vec![],
    };
    let mut expected = String::new();
    let stats = session
        .generate(&prompt, &opts, |t| expected.push_str(t))
        .unwrap();
    assert_eq!(content, expected);
    assert!(!content.is_empty());
    assert_eq!(v["usage"]["prompt_tokens"], prompt.len());
    assert_eq!(v["usage"]["completion_tokens"], stats.generated_tokens);
    assert_eq!(v["choices"][0]["finish_reason"], stats.finish.openai());

    let payloads = s.stream("/v1/chat/completions", &chat_body(24, true));
    let (text, finish) = chat_stream_text(&payloads);
    assert_eq!(text, expected);
    assert_eq!(finish, stats.finish.openai());
}

#[test]
fn completions_honour_stop_strings_and_max_tokens() {
    let s = Server::start(&[]);
    let body = json!({"prompt": "The capital of France is", "max_tokens": 12, "temperature": 0});
    let (status, v) = s.post("/v1/completions", &body);
    assert_eq!(status, 200, "{v}");
    assert_eq!(v["object"], "text_completion");
    let full = v["choices"][0]["text"].as_str().unwrap().to_string();
    assert!(full.contains('.'), "{full:?}");
    assert_eq!(v["usage"]["completion_tokens"], 12);
    assert_eq!(v["choices"][0]["finish_reason"], "length");

    let body = json!({"prompt": "The capital of France is", "max_tokens": 12, "temperature": 0, "stop": ["."]});
    let (_, v) = s.post("/v1/completions", &body);
    let cut = v["choices"][0]["text"].as_str().unwrap();
    assert_eq!(cut, &full[..full.find('.').unwrap()]);
    assert_eq!(v["choices"][0]["finish_reason"], "stop");

    // Streamed completions carry the same text.
    let body = json!({"prompt": "The capital of France is", "max_tokens": 12, "temperature": 0, "stream": true});
    let payloads = s.stream("/v1/completions", &body);
    let mut text = String::new();
    for p in &payloads[..payloads.len() - 1] {
        let c: Value = serde_json::from_str(p).unwrap();
        assert_eq!(c["object"], "text_completion");
        text.push_str(c["choices"][0]["text"].as_str().unwrap());
    }
    assert_eq!(text, full);
}

#[test]
fn a_seed_makes_sampling_reproducible() {
    let s = Server::start(&[]);
    let body = |seed: u64| json!({"prompt": "Once upon a time", "max_tokens": 16, "temperature": 1.0, "seed": seed});
    let text = |seed| s.post("/v1/completions", &body(seed)).1["choices"][0]["text"].clone();
    let a = text(11);
    assert_eq!(a, text(11));
    let others: Vec<Value> = (12..16).map(text).collect();
    assert!(
        others.iter().any(|o| *o != a),
        "different seeds never differ"
    );
}

#[test]
fn bad_requests_get_openai_errors_and_the_server_keeps_serving() {
    let s = Server::start(&["--max-body", "4096", "--ctx", "256"]);
    let expect = |status: u16, v: &Value, want: u16, needle: &str| {
        assert_eq!(status, want, "{v}");
        let msg = v["error"]["message"].as_str().unwrap();
        assert!(msg.contains(needle), "{msg:?} lacks {needle:?}");
        assert!(v["error"]["type"].is_string());
    };
    let (st, v) = s.post_raw("/v1/chat/completions", "{not json");
    expect(st, &v, 400, "not valid");
    let (st, v) = s.post_raw("/v1/chat/completions", "[]");
    expect(st, &v, 400, "not valid");
    let (st, v) = s.post(
        "/v1/chat/completions",
        &json!({"messages": [{"role": "user", "content": "hi"}], "max_tokens": "ten"}),
    );
    expect(st, &v, 400, "invalid type");
    let (st, v) = s.post(
        "/v1/chat/completions",
        &json!({"messages": "hi", "temperature": 0}),
    );
    expect(st, &v, 400, "invalid type");
    let (st, v) = s.post("/v1/chat/completions", &json!({"messages": []}));
    expect(st, &v, 400, "empty");
    let (st, v) = s.post(
        "/v1/chat/completions",
        &json!({"messages": [{"role": "tool", "content": "x"}]}),
    );
    expect(st, &v, 400, "role");
    let (st, v) = s.post("/v1/completions", &json!({"prompt": "hi", "n": 2}));
    expect(st, &v, 400, "n = 1");
    let (st, v) = s.post(
        "/v1/completions",
        &json!({"prompt": "hi", "temperature": -1}),
    );
    expect(st, &v, 400, "temperature");
    let (st, v) = s.post("/v1/completions", &json!({"prompt": "hi", "top_p": 0}));
    expect(st, &v, 400, "top_p");
    let (st, v) = s.post("/v1/completions", &json!({"prompt": "hi", "max_tokens": 0}));
    expect(st, &v, 400, "max_tokens");
    let (st, v) = s.post("/v1/completions", &json!({"max_tokens": 3}));
    expect(st, &v, 400, "prompt");
    // A body over --max-body.
    let big = json!({"prompt": "a".repeat(10_000)});
    let (st, v) = s.post("/v1/completions", &big);
    expect(st, &v, 413, "larger than 4096");
    // A prompt longer than the context (256 tokens per slot here).
    let long = json!({"prompt": "hello ".repeat(400)});
    let (st, v) = s.post("/v1/completions", &long);
    expect(st, &v, 400, "context");
    assert_eq!(v["error"]["code"], "context_length_exceeded");
    // Unknown routes.
    let r = ureq::get(&s.url("/v2/nothing")).call();
    match r {
        Err(ureq::Error::Status(404, resp)) => {
            let v: Value = serde_json::from_str(&resp.into_string().unwrap()).unwrap();
            assert_eq!(v["error"]["type"], "not_found_error");
        }
        other => panic!("expected 404, got {other:?}"),
    }
    // Unknown fields are ignored, as OpenAI clients send many.
    let (st, v) = s.post(
        "/v1/completions",
        &json!({"prompt": "hi", "max_tokens": 2, "user": "x", "logit_bias": {}, "stream_options": null}),
    );
    assert_eq!(st, 200, "{v}");
    assert_eq!(s.get("/health")["status"], "ok");
}

#[test]
fn a_client_that_disconnects_frees_its_slot() {
    let s = Server::start(&["--parallel", "1", "--ctx", "2048"]);
    // A long streamed completion; read two events, then hang up.
    let body =
        json!({"prompt": "1, 2, 3, 4, 5,", "max_tokens": 2000, "temperature": 0, "stream": true});
    let resp = ureq::post(&s.url("/v1/completions"))
        .send_json(body)
        .unwrap();
    let mut reader = BufReader::new(resp.into_reader());
    let mut line = String::new();
    let mut events = 0;
    while events < 2 {
        line.clear();
        reader.read_line(&mut line).unwrap();
        if line.starts_with("data: ") {
            events += 1;
        }
    }
    assert_eq!(s.get("/health")["slots_busy"], 1);
    drop(reader);
    let t0 = Instant::now();
    while s.get("/health")["slots_busy"] != 0 {
        assert!(
            t0.elapsed() < Duration::from_secs(20),
            "the slot of a disconnected client was not freed"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    // The single slot serves the next client.
    let (st, _) = s.post(
        "/v1/completions",
        &json!({"prompt": "Hello", "max_tokens": 4, "temperature": 0}),
    );
    assert_eq!(st, 200);
}

#[test]
fn eight_concurrent_streams_all_complete_with_correct_framing() {
    let s = Server::start(&["--parallel", "4", "--ctx", "512"]);
    let base = s.base.clone();
    let t0 = Instant::now();
    let handles: Vec<_> = (0..8)
        .map(|i| {
            let url = format!("{base}/v1/chat/completions");
            std::thread::spawn(move || {
                let body = json!({
                    "messages": [{"role": "user", "content": format!("Count to {}.", i + 3)}],
                    "max_tokens": 16,
                    "temperature": 0.7,
                    "seed": i,
                    "stream": true,
                });
                let resp = ureq::post(&url)
                    .timeout(Duration::from_secs(300))
                    .send_json(body)
                    .unwrap();
                let mut text = String::new();
                resp.into_reader().read_to_string(&mut text).unwrap();
                let payloads = sse_payloads(&text);
                chat_stream_text(&payloads)
            })
        })
        .collect();
    for h in handles {
        let (_, finish) = h.join().expect("a client thread failed");
        assert!(finish == "stop" || finish == "length");
    }
    assert!(t0.elapsed() < Duration::from_secs(240));
    let h = s.get("/health");
    assert_eq!(h["slots_busy"], 0);
    assert_eq!(h["waiting"], 0);
}

#[test]
fn the_official_openai_python_client_works() {
    let s = Server::start(&[]);
    let out = Command::new(std::env::var("PYTHON").unwrap_or_else(|_| "python3".into()))
        .arg(repo().join("tools/openai-client-check.py"))
        .arg(s.url("/v1"))
        .output()
        .expect("run python3 (tools/test.sh installs the openai package)");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "openai client check failed: {stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let v: Value = serde_json::from_str(stdout.lines().last().unwrap()).unwrap();
    assert_eq!(v["model"], SMOLLM2);
    assert!(!v["plain"].as_str().unwrap().is_empty());
    assert_eq!(v["plain"], v["streamed"]);
}
