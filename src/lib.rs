//! torchless: LLM inference with hand-written kernels and no tensor framework.
pub mod backend;
pub mod error;
pub mod graph;
pub mod model;
pub mod quant;
pub mod tokenizer;

pub use error::{Error, Result};
pub mod engine;
pub mod npy;
pub mod sampling;

pub use engine::{Engine, LoadOptions};
