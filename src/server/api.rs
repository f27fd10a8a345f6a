//! The OpenAI wire format: request bodies (unknown fields ignored, known fields type-checked),
//! response and stream-chunk bodies, and error bodies.

use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde::Deserialize;
use serde_json::{json, Value};

use crate::chat::Message;
use crate::sampling::SamplerConfig;

/// An error in OpenAI's shape: `{"error": {"message", "type", "param", "code"}}`.
#[derive(Debug)]
pub struct ApiError {
    /// HTTP status.
    pub status: StatusCode,
    /// OpenAI's error type, e.g. `invalid_request_error`.
    pub kind: &'static str,
    /// Machine-readable code, when there is one (e.g. `context_length_exceeded`).
    pub code: Option<&'static str>,
    /// What went wrong and what to do.
    pub message: String,
}

impl ApiError {
    /// 400 `invalid_request_error`.
    pub fn invalid(message: impl Into<String>) -> Self {
        ApiError {
            status: StatusCode::BAD_REQUEST,
            kind: "invalid_request_error",
            code: None,
            message: message.into(),
        }
    }

    /// The same error with a code.
    pub fn with_code(mut self, code: &'static str) -> Self {
        self.code = Some(code);
        self
    }

    /// The JSON body.
    pub fn body(&self) -> Value {
        json!({"error": {
            "message": self.message,
            "type": self.kind,
            "param": Value::Null,
            "code": self.code,
        }})
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        (self.status, axum::Json(self.body())).into_response()
    }
}

/// `stop`: one string or a list.
#[derive(Debug, Deserialize)]
#[serde(untagged)]
pub enum Stop {
    /// A single stop string.
    One(String),
    /// Several stop strings.
    Many(Vec<String>),
}

/// The sampling and length fields shared by both endpoints.
#[derive(Debug, Default, Deserialize)]
pub struct Sampling {
    /// Tokens to generate at most.
    pub max_tokens: Option<u32>,
    /// The newer name of `max_tokens` in chat requests.
    pub max_completion_tokens: Option<u32>,
    /// Sampling temperature (0 = greedy).
    pub temperature: Option<f32>,
    /// Nucleus sampling mass.
    pub top_p: Option<f32>,
    /// Top-k (an extension, as in llama-server).
    pub top_k: Option<u32>,
    /// Min-p (an extension, as in llama-server).
    pub min_p: Option<f32>,
    /// OpenAI presence penalty.
    pub presence_penalty: Option<f32>,
    /// OpenAI frequency penalty.
    pub frequency_penalty: Option<f32>,
    /// Repetition penalty (an extension, as in llama-server).
    pub repeat_penalty: Option<f32>,
    /// Seed; absent = a fresh one per request.
    pub seed: Option<u64>,
    /// Stop strings.
    pub stop: Option<Stop>,
    /// Stream the answer as server-sent events.
    pub stream: Option<bool>,
    /// Number of choices; only 1 is supported.
    pub n: Option<u32>,
}

impl Sampling {
    /// The sampler settings, checked; `fresh_seed` is used when the request has none.
    pub fn sampler(&self, fresh_seed: u64) -> Result<SamplerConfig, ApiError> {
        let d = SamplerConfig::default();
        let cfg = SamplerConfig {
            temperature: self.temperature.unwrap_or(d.temperature),
            top_k: self.top_k.map_or(d.top_k, |k| k as usize),
            top_p: self.top_p.unwrap_or(d.top_p),
            min_p: self.min_p.unwrap_or(d.min_p),
            repeat_penalty: self.repeat_penalty.unwrap_or(d.repeat_penalty),
            presence_penalty: self.presence_penalty.unwrap_or(0.0),
            frequency_penalty: self.frequency_penalty.unwrap_or(0.0),
            penalty_last_n: d.penalty_last_n,
            seed: self.seed.unwrap_or(fresh_seed),
        };
        cfg.validate().map_err(ApiError::invalid)?;
        if let Some(p) = self.presence_penalty.filter(|p| !(-2.0..=2.0).contains(p)) {
            return Err(ApiError::invalid(format!(
                "presence_penalty must be in [-2, 2], got {p}"
            )));
        }
        if let Some(p) = self.frequency_penalty.filter(|p| !(-2.0..=2.0).contains(p)) {
            return Err(ApiError::invalid(format!(
                "frequency_penalty must be in [-2, 2], got {p}"
            )));
        }
        if self.n.is_some_and(|n| n != 1) {
            return Err(ApiError::invalid("only n = 1 is supported"));
        }
        Ok(cfg)
    }

    /// The stop strings (at most 4, as OpenAI allows).
    pub fn stops(&self) -> Result<Vec<String>, ApiError> {
        let v = match &self.stop {
            None => Vec::new(),
            Some(Stop::One(s)) => vec![s.clone()],
            Some(Stop::Many(v)) => v.clone(),
        };
        if v.len() > 4 {
            return Err(ApiError::invalid("stop: at most 4 sequences"));
        }
        Ok(v)
    }

    /// The requested token limit, if any (0 is refused).
    pub fn limit(&self) -> Result<Option<usize>, ApiError> {
        match self.max_tokens.or(self.max_completion_tokens) {
            Some(0) => Err(ApiError::invalid("max_tokens must be at least 1")),
            v => Ok(v.map(|v| v as usize)),
        }
    }
}

/// A chat message as clients send it: `content` is a string or a list of text parts.
#[derive(Debug, Deserialize)]
pub struct InMessage {
    /// `system`, `developer`, `user` or `assistant`.
    pub role: String,
    /// The text, as a string or parts.
    #[serde(default)]
    pub content: Option<Content>,
}

/// Message content.
#[derive(Debug, Deserialize)]
#[serde(untagged)]
pub enum Content {
    /// Plain text.
    Text(String),
    /// Typed parts; only `text` parts are supported.
    Parts(Vec<Part>),
}

/// One content part.
#[derive(Debug, Deserialize)]
pub struct Part {
    /// The part's type; only `text` is supported.
    #[serde(rename = "type")]
    pub kind: String,
    /// The text of a `text` part.
    #[serde(default)]
    pub text: Option<String>,
}

/// `POST /v1/chat/completions`.
#[derive(Debug, Deserialize)]
pub struct ChatRequest {
    /// The conversation.
    pub messages: Vec<InMessage>,
    /// Generation settings.
    #[serde(flatten)]
    pub sampling: Sampling,
}

impl ChatRequest {
    /// The conversation as template messages, checked.
    pub fn messages(&self) -> Result<Vec<Message>, ApiError> {
        if self.messages.is_empty() {
            return Err(ApiError::invalid("messages must not be empty"));
        }
        self.messages
            .iter()
            .enumerate()
            .map(|(i, m)| {
                let role = match m.role.as_str() {
                    "system" | "developer" => "system",
                    "user" => "user",
                    "assistant" => "assistant",
                    other => {
                        return Err(ApiError::invalid(format!(
                            "messages[{i}].role '{other}' is not supported (system, user, assistant)"
                        )))
                    }
                };
                let content = match &m.content {
                    None => String::new(),
                    Some(Content::Text(t)) => t.clone(),
                    Some(Content::Parts(parts)) => {
                        let mut s = String::new();
                        for p in parts {
                            match (p.kind.as_str(), &p.text) {
                                ("text", Some(t)) => s.push_str(t),
                                (k, _) => {
                                    return Err(ApiError::invalid(format!(
                                        "messages[{i}]: content part of type '{k}' is not supported (text only)"
                                    )))
                                }
                            }
                        }
                        s
                    }
                };
                Ok(Message::new(role, content))
            })
            .collect()
    }
}

/// `prompt`: a string or a list of exactly one string.
#[derive(Debug, Deserialize)]
#[serde(untagged)]
pub enum Prompt {
    /// One prompt.
    One(String),
    /// A batch of prompts; only one is supported.
    Many(Vec<String>),
}

/// `POST /v1/completions`.
#[derive(Debug, Deserialize)]
pub struct CompletionRequest {
    /// The text to continue.
    pub prompt: Prompt,
    /// Generation settings.
    #[serde(flatten)]
    pub sampling: Sampling,
}

impl CompletionRequest {
    /// The prompt text.
    pub fn prompt(&self) -> Result<&str, ApiError> {
        match &self.prompt {
            Prompt::One(s) => Ok(s),
            Prompt::Many(v) if v.len() == 1 => Ok(&v[0]),
            Prompt::Many(_) => Err(ApiError::invalid("prompt: only one prompt per request")),
        }
    }
}
