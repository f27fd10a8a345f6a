//! Typed errors. Every variant names the offending thing (file, tensor, key, id) so the runner can
//! print it as one line.

use std::path::PathBuf;

use crate::model::gguf::GgufError;
use crate::tokenizer::TokenizerError;

pub type Result<T, E = Error> = std::result::Result<T, E>;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("{}: {source}", path.display())]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{}: is a directory, expected a model file (.gguf)", .0.display())]
    IsDirectory(PathBuf),
    #[error("{}: {source}", path.display())]
    Gguf { path: PathBuf, source: GgufError },
    #[error("model metadata: missing key '{0}'")]
    MissingKey(String),
    #[error("model metadata: key '{key}' has an invalid value: {why}")]
    BadKey { key: String, why: String },
    #[error("architecture '{found}' is not supported (supported: {supported})")]
    UnsupportedArch { found: String, supported: String },
    #[error("architecture '{arch}': missing tensor '{name}'")]
    MissingTensor { arch: String, name: String },
    #[error("tensor '{name}': expected shape {expected:?}, found {found:?}")]
    TensorShape {
        name: String,
        expected: Vec<u64>,
        found: Vec<u64>,
    },
    #[error("tensor '{name}': type {ty} is not supported by {backend} for {role}")]
    UnsupportedType {
        name: String,
        ty: &'static str,
        backend: &'static str,
        role: &'static str,
    },
    #[error("tokenizer: {0}")]
    Tokenizer(#[from] TokenizerError),
    #[error("token id {id} is out of range (the vocabulary has {n_vocab} tokens)")]
    TokenOutOfRange { id: u64, n_vocab: usize },
    #[error("context overflow: {needed} tokens needed but the context holds {ctx} (raise --ctx, max {max})")]
    ContextOverflow {
        needed: usize,
        ctx: usize,
        max: usize,
    },
    #[error("unknown backend '{0}' (available: cpu)")]
    UnknownBackend(String),
    #[error("cpu kernels: {0}")]
    CpuKernels(String),
    #[error("invalid argument: {0}")]
    InvalidArgument(String),
}

impl Error {
    pub(crate) fn io(path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        Error::Io {
            path: path.into(),
            source,
        }
    }
}
