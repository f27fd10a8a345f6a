//! torchless: LLM inference with hand-written kernels and no tensor framework.
//!
//! The crate documentation is the README; its library example runs as a doc-test (it needs the
//! models that `tools/fetch-models.sh` puts in `models/`).
#![doc = include_str!("../README.md")]
#![warn(missing_docs)]
pub mod backend;
pub mod bench;
#[cfg(feature = "chat")]
pub mod chat;
pub mod engine;
pub mod error;
pub mod graph;
pub mod model;
pub mod npy;
pub mod quant;
pub mod sampling;
#[cfg(feature = "server")]
pub mod server;
pub mod session;
pub mod tokenizer;

pub use engine::{LoadOptions, Model, Perplexity};
pub use error::{Error, Result};
pub use sampling::{Sampler, SamplerConfig};
pub use session::{FinishReason, GenStats, GenerateOptions, Generation, Session, Step};
