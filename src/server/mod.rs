//! An OpenAI-compatible HTTP server: `POST /v1/chat/completions`, `POST /v1/completions` (both
//! with `stream: true` as server-sent events), `GET /v1/models` and `GET /health`.
//!
//! HTTP runs on tokio (axum); inference runs on one worker thread that interleaves the active
//! requests token by token (see [`worker`]). Every bad request gets an OpenAI-style JSON error with
//! a 4xx status, and nothing a client sends can panic the server.

pub mod api;
pub mod worker;

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use axum::body::{Body, Bytes};
use axum::extract::State;
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde::de::DeserializeOwned;
use serde_json::{json, Value};
use tokio::sync::mpsc::{unbounded_channel, UnboundedReceiver};
use tokio_stream::wrappers::UnboundedReceiverStream;
use tokio_stream::StreamExt;

use crate::chat::ChatTemplate;
use crate::engine::Model;
use crate::error::{Error, Result};
use crate::session::GenerateOptions;
use api::{ApiError, ChatRequest, CompletionRequest, Sampling};
use worker::{Event, Job, Queue, SubmitError};

/// How to serve.
#[derive(Clone, Debug)]
pub struct ServeOptions {
    /// Address to bind, e.g. `127.0.0.1`.
    pub host: String,
    /// Port to bind; 0 = any free port (the chosen one is reported).
    pub port: u16,
    /// Requests generated at the same time (each has its own KV cache).
    pub slots: usize,
    /// Context size of each slot.
    pub n_ctx: usize,
    /// Requests that may wait for a slot before new ones are refused with 503.
    pub queue: usize,
    /// Largest request body accepted, in bytes.
    pub max_body: usize,
}

impl Default for ServeOptions {
    fn default() -> Self {
        ServeOptions {
            host: "127.0.0.1".into(),
            port: 8080,
            slots: 4,
            n_ctx: 4096,
            queue: 64,
            max_body: 1 << 20,
        }
    }
}

struct AppState {
    model: Arc<Model>,
    template: ChatTemplate,
    queue: Queue,
    model_id: String,
    n_ctx: usize,
    max_body: usize,
    next_id: AtomicU64,
    created: u64,
}

/// Serves `model` until interrupted (Ctrl-C). `on_listen` is called with the bound address once
/// the socket is open.
pub fn serve(
    model: Model,
    template: ChatTemplate,
    opts: &ServeOptions,
    on_listen: impl FnOnce(SocketAddr),
) -> Result<()> {
    let model = Arc::new(model);
    let n_ctx = opts.n_ctx.min(model.config().n_ctx_train);
    let queue = worker::start(model.clone(), opts.slots, n_ctx, opts.queue)?;
    // The file name, as llama-server reports it: stable and free of spaces.
    let model_id = model.source().file_name();
    let state = Arc::new(AppState {
        model,
        template,
        queue,
        model_id,
        n_ctx,
        max_body: opts.max_body,
        next_id: AtomicU64::new(1),
        created: now(),
    });
    let app = Router::new()
        .route("/health", get(health))
        .route("/v1/models", get(models))
        .route("/v1/chat/completions", post(chat_completions))
        .route("/v1/completions", post(completions))
        .fallback(not_found)
        .with_state(state);
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .map_err(|e| Error::InvalidArgument(format!("cannot start the HTTP runtime: {e}")))?;
    rt.block_on(async move {
        let addr = format!("{}:{}", opts.host, opts.port);
        let listener = tokio::net::TcpListener::bind(&addr)
            .await
            .map_err(|e| Error::InvalidArgument(format!("cannot listen on {addr}: {e}")))?;
        let bound = listener
            .local_addr()
            .map_err(|e| Error::InvalidArgument(format!("cannot listen on {addr}: {e}")))?;
        on_listen(bound);
        axum::serve(listener, app)
            .with_graceful_shutdown(async {
                let _ = tokio::signal::ctrl_c().await;
            })
            .await
            .map_err(|e| Error::InvalidArgument(format!("server error: {e}")))
    })
}

fn now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

async fn health(State(st): State<Arc<AppState>>) -> Json<Value> {
    let load = &st.queue.load;
    Json(json!({
        "status": "ok",
        "slots": load.slots.load(Ordering::SeqCst),
        "slots_busy": load.busy.load(Ordering::SeqCst),
        "waiting": load.waiting.load(Ordering::SeqCst),
    }))
}

async fn models(State(st): State<Arc<AppState>>) -> Json<Value> {
    Json(json!({
        "object": "list",
        "data": [{
            "id": st.model_id,
            "object": "model",
            "created": st.created,
            "owned_by": "torchless",
            "context_length": st.n_ctx,
        }],
    }))
}

async fn not_found() -> ApiError {
    ApiError {
        status: StatusCode::NOT_FOUND,
        kind: "not_found_error",
        code: None,
        message: "no such endpoint (try POST /v1/chat/completions, POST /v1/completions, GET /v1/models, GET /health)".into(),
    }
}

/// Reads at most `max_body` bytes and parses them as `T`.
async fn parse_body<T: DeserializeOwned>(body: Body, max_body: usize) -> Result<T, ApiError> {
    let bytes: Bytes = axum::body::to_bytes(body, max_body)
        .await
        .map_err(|_| ApiError {
            status: StatusCode::PAYLOAD_TOO_LARGE,
            kind: "invalid_request_error",
            code: Some("request_too_large"),
            message: format!("the request body is larger than {max_body} bytes (or unreadable)"),
        })?;
    serde_json::from_slice(&bytes)
        .map_err(|e| ApiError::invalid(format!("the request body is not valid: {e}")))
}

/// Which endpoint a job came from: decides the response shapes.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Kind {
    Chat,
    Completion,
}

impl Kind {
    fn object(self, chunk: bool) -> &'static str {
        match (self, chunk) {
            (Kind::Chat, false) => "chat.completion",
            (Kind::Chat, true) => "chat.completion.chunk",
            (Kind::Completion, _) => "text_completion",
        }
    }
}

async fn chat_completions(State(st): State<Arc<AppState>>, body: Body) -> Response {
    let run = async {
        let req: ChatRequest = parse_body(body, st.max_body).await?;
        let messages = req.messages()?;
        let prompt = st
            .template
            .tokens(&st.model, &messages)
            .map_err(|e| ApiError::invalid(e.to_string()))?;
        start(&st, Kind::Chat, prompt, &req.sampling).await
    };
    run.await.unwrap_or_else(IntoResponse::into_response)
}

async fn completions(State(st): State<Arc<AppState>>, body: Body) -> Response {
    let run = async {
        let req: CompletionRequest = parse_body(body, st.max_body).await?;
        let text = req.prompt()?;
        let prompt = st.model.tokenizer().encode(text, true, true);
        if prompt.is_empty() {
            return Err(ApiError::invalid("prompt: produced no tokens"));
        }
        start(&st, Kind::Completion, prompt, &req.sampling).await
    };
    run.await.unwrap_or_else(IntoResponse::into_response)
}

/// Checks the request against the context, queues it, and answers (streamed or whole).
async fn start(
    st: &Arc<AppState>,
    kind: Kind,
    prompt: Vec<u32>,
    sampling: &Sampling,
) -> Result<Response, ApiError> {
    let id_n = st.next_id.fetch_add(1, Ordering::Relaxed);
    let sampler = sampling.sampler(now() ^ id_n.wrapping_mul(0x9E37_79B9_7F4A_7C15))?;
    let stop = sampling.stops()?;
    if prompt.len() >= st.n_ctx {
        return Err(ApiError::invalid(format!(
            "the prompt has {} tokens but the context holds {} (including at least one generated token)",
            prompt.len(),
            st.n_ctx
        ))
        .with_code("context_length_exceeded"));
    }
    let room = st.n_ctx - prompt.len();
    // Without a limit, completions follow OpenAI's default of 16 tokens; chat fills the context.
    let max_tokens = match (sampling.limit()?, kind) {
        (Some(n), _) => n.min(room),
        (None, Kind::Completion) => 16.min(room),
        (None, Kind::Chat) => room,
    };
    let (tx, rx) = unbounded_channel();
    let prompt_len = prompt.len();
    st.queue
        .submit(Job {
            prompt,
            opts: GenerateOptions {
                max_tokens,
                sampler,
                stop,
            },
            events: tx,
        })
        .map_err(|e| ApiError {
            status: StatusCode::SERVICE_UNAVAILABLE,
            kind: "server_error",
            code: None,
            message: match e {
                SubmitError::Busy => {
                    "the server is busy: too many requests are waiting; retry later".into()
                }
                SubmitError::Stopped => "the inference worker has stopped".into(),
            },
        })?;
    let id = match kind {
        Kind::Chat => format!("chatcmpl-{id_n}"),
        Kind::Completion => format!("cmpl-{id_n}"),
    };
    let head = Head {
        id,
        kind,
        model: st.model_id.clone(),
        created: now(),
    };
    if sampling.stream.unwrap_or(false) {
        Ok(stream_response(head, rx))
    } else {
        whole_response(head, rx, prompt_len).await
    }
}

/// The fields every response and chunk repeats.
#[derive(Clone)]
struct Head {
    id: String,
    kind: Kind,
    model: String,
    created: u64,
}

impl Head {
    /// A streamed chunk carrying `text` (or, with `finish`, the closing chunk).
    fn chunk(&self, text: Option<&str>, role: bool, finish: Option<&str>) -> Value {
        let choice = match self.kind {
            Kind::Chat => {
                let mut delta = serde_json::Map::new();
                if role {
                    delta.insert("role".into(), json!("assistant"));
                }
                if let Some(t) = text {
                    delta.insert("content".into(), json!(t));
                }
                json!({"index": 0, "delta": delta, "logprobs": null, "finish_reason": finish})
            }
            Kind::Completion => {
                json!({"index": 0, "text": text.unwrap_or(""), "logprobs": null, "finish_reason": finish})
            }
        };
        json!({
            "id": self.id,
            "object": self.kind.object(true),
            "created": self.created,
            "model": self.model,
            "choices": [choice],
        })
    }
}

fn usage(prompt_tokens: usize, completion_tokens: usize) -> Value {
    json!({
        "prompt_tokens": prompt_tokens,
        "completion_tokens": completion_tokens,
        "total_tokens": prompt_tokens + completion_tokens,
    })
}

fn sse(v: &Value) -> String {
    format!("data: {v}\n\n")
}

/// Server-sent events: a role chunk (chat), one chunk per piece of text, a closing chunk with
/// the finish reason and usage, then `data: [DONE]`. Dropping the response (client gone) drops
/// the receiver, which frees the worker's slot.
fn stream_response(head: Head, rx: UnboundedReceiver<Event>) -> Response {
    let first = match head.kind {
        Kind::Chat => sse(&head.chunk(Some(""), true, None)),
        Kind::Completion => String::new(),
    };
    let h = head.clone();
    let events = UnboundedReceiverStream::new(rx).map(move |ev| {
        let frame = match ev {
            Event::Text(t) => sse(&h.chunk(Some(&t), false, None)),
            Event::Done {
                finish,
                prompt_tokens,
                completion_tokens,
            } => {
                let mut last = h.chunk(None, false, Some(finish.openai()));
                last["usage"] = usage(prompt_tokens, completion_tokens);
                format!("{}data: [DONE]\n\n", sse(&last))
            }
            Event::Error(msg) => format!(
                "{}data: [DONE]\n\n",
                sse(&json!({"error": {"message": msg, "type": "server_error", "param": null, "code": null}}))
            ),
        };
        Ok::<_, Infallible>(Bytes::from(frame))
    });
    let body = Body::from_stream(tokio_stream::once(Ok(Bytes::from(first))).chain(events));
    Response::builder()
        .header(header::CONTENT_TYPE, "text/event-stream")
        .header(header::CACHE_CONTROL, "no-cache")
        .body(body)
        .unwrap_or_else(|_| StatusCode::INTERNAL_SERVER_ERROR.into_response())
}

/// Collects the whole answer into one response body.
async fn whole_response(
    head: Head,
    mut rx: UnboundedReceiver<Event>,
    prompt_len: usize,
) -> Result<Response, ApiError> {
    let mut text = String::new();
    while let Some(ev) = rx.recv().await {
        match ev {
            Event::Text(t) => text.push_str(&t),
            Event::Done {
                finish,
                prompt_tokens,
                completion_tokens,
            } => {
                let choice = match head.kind {
                    Kind::Chat => json!({
                        "index": 0,
                        "message": {"role": "assistant", "content": text},
                        "logprobs": null,
                        "finish_reason": finish.openai(),
                    }),
                    Kind::Completion => json!({
                        "index": 0,
                        "text": text,
                        "logprobs": null,
                        "finish_reason": finish.openai(),
                    }),
                };
                let body = json!({
                    "id": head.id,
                    "object": head.kind.object(false),
                    "created": head.created,
                    "model": head.model,
                    "choices": [choice],
                    "usage": usage(prompt_tokens, completion_tokens),
                });
                return Ok(Json(body).into_response());
            }
            Event::Error(msg) => {
                return Err(ApiError {
                    status: StatusCode::INTERNAL_SERVER_ERROR,
                    kind: "server_error",
                    code: None,
                    message: msg,
                })
            }
        }
    }
    Err(ApiError {
        status: StatusCode::INTERNAL_SERVER_ERROR,
        kind: "server_error",
        code: None,
        message: format!(
            "the inference worker stopped before answering ({prompt_len} prompt tokens)"
        ),
    })
}
