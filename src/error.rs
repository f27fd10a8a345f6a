//! Typed errors. Every variant names the offending thing (file, tensor, key, id) so the runner can
//! print it as one line.

use std::path::PathBuf;

use crate::model::gguf::GgufError;
use crate::tokenizer::TokenizerError;

/// The crate's result type.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Everything that can go wrong, each variant naming what it is about.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// Reading or writing a file failed.
    #[error("{}: {source}", path.display())]
    Io {
        /// The file.
        path: PathBuf,
        /// What the OS said.
        source: std::io::Error,
    },
    /// A directory was given where a model file was expected.
    #[error("{}: is a directory, expected a model file (.gguf)", .0.display())]
    IsDirectory(PathBuf),
    /// The GGUF file is malformed (the error carries the offset).
    #[error("{}: {source}", path.display())]
    Gguf {
        /// The file.
        path: PathBuf,
        /// What is wrong, and where.
        source: GgufError,
    },
    /// A model directory or one of its files is malformed (safetensors header, config.json,
    /// shard index, a tensor of the wrong dtype); the message names the tensor or key.
    #[error("{}: {why}", path.display())]
    Format {
        /// The file or directory.
        path: PathBuf,
        /// What is wrong.
        why: String,
    },
    /// A required metadata key is absent.
    #[error("model metadata: missing key '{0}'")]
    MissingKey(String),
    /// A metadata key has a value of the wrong type or out of range.
    #[error("model metadata: key '{key}' has an invalid value: {why}")]
    BadKey {
        /// The key.
        key: String,
        /// What is wrong with its value.
        why: String,
    },
    /// The file's architecture has no row in the architecture table.
    #[error("architecture '{found}' is not supported (supported: {supported})")]
    UnsupportedArch {
        /// `general.architecture` as found.
        found: String,
        /// The architectures that are supported.
        supported: String,
    },
    /// A tensor the architecture needs is not in the file.
    #[error("{}: architecture '{arch}' needs tensor '{name}', which is missing", file.display())]
    MissingTensor {
        /// The model file or directory.
        file: PathBuf,
        /// The architecture.
        arch: String,
        /// The tensor's GGUF name.
        name: String,
    },
    /// The file holds a tensor its architecture has no use for: the file and its declared
    /// architecture contradict each other.
    #[error("{}: tensor '{name}' does not belong to architecture '{arch}' (is the declared architecture wrong?)", file.display())]
    UnexpectedTensor {
        /// The model file or directory.
        file: PathBuf,
        /// The declared architecture.
        arch: String,
        /// The tensor's GGUF name.
        name: String,
    },
    /// A tensor's shape does not match the config.
    #[error("tensor '{name}': expected shape {expected:?}, found {found:?}")]
    TensorShape {
        /// The tensor's GGUF name.
        name: String,
        /// The shape the config implies (ggml order).
        expected: Vec<u64>,
        /// The shape in the file.
        found: Vec<u64>,
    },
    /// The backend has no kernel for this tensor's type in this role.
    #[error("tensor '{name}': type {ty} is not supported by {backend} for {role}")]
    UnsupportedType {
        /// The tensor's GGUF name.
        name: String,
        /// Its ggml type.
        ty: &'static str,
        /// The backend.
        backend: &'static str,
        /// What the tensor is used for (matmul, norm, embedding).
        role: &'static str,
    },
    /// The tokenizer metadata is unusable.
    #[error("tokenizer: {0}")]
    Tokenizer(#[from] TokenizerError),
    /// A token id is not in the vocabulary.
    #[error("token id {id} is out of range (the vocabulary has {n_vocab} tokens)")]
    TokenOutOfRange {
        /// The id.
        id: u64,
        /// The vocabulary size.
        n_vocab: usize,
    },
    /// More tokens than the context holds.
    #[error("context overflow: {needed} tokens needed but the context holds {ctx} (raise --ctx, max {max})")]
    ContextOverflow {
        /// Tokens needed.
        needed: usize,
        /// The context size in use.
        ctx: usize,
        /// The model's training context (the largest allowed).
        max: usize,
    },
    /// `--backend` names no known backend.
    #[error("unknown backend '{0}' (available: cpu, cuda, wgpu)")]
    UnknownBackend(String),
    /// `--backend` names a backend this build leaves out (a cargo feature).
    #[error("backend '{0}' is not built in: rebuild with `cargo build --release --features {0}`")]
    BackendNotBuilt(&'static str),
    /// The CUDA backend could not start or a kernel failed (driver, device, memory).
    #[error("cuda: {0}")]
    Cuda(String),
    /// The wgpu backend could not start, a shader failed, or the model does not fit the
    /// adapter's limits.
    #[error("wgpu: {0}")]
    Wgpu(String),
    /// The requested CPU kernel path is not available on this CPU.
    #[error("cpu kernels: {0}")]
    CpuKernels(String),
    /// An argument or setting is out of range or inconsistent.
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
