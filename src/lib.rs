//! torchless: LLM inference with hand-written kernels and no tensor framework.
//!
//! The crate documentation is the README; its library example runs as a doc-test (it needs the
//! models that `tools/fetch-models.sh` puts in `models/`).
#![doc = include_str!("../README.md")]
pub mod backend;
pub mod engine;
pub mod error;
pub mod graph;
pub mod model;
pub mod npy;
pub mod quant;
pub mod sampling;
pub mod tokenizer;

pub use engine::{Engine, LoadOptions};
pub use error::{Error, Result};
