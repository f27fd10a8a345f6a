//! Model files: the GGUF reader, the architecture table, the resolved config, and the binding of
//! named tensors to the roles the forward pass needs.

pub mod arch;
pub mod config;
pub mod gguf;
pub mod hf;
pub mod rope;
pub mod source;
pub mod vocab;
pub mod weights;

pub use config::ModelConfig;
pub use gguf::GgufFile;
pub use source::ModelSource;
pub use vocab::vocab_spec;
pub use weights::{LayerWeights, Linear, ModelWeights, Norm, WeightView};
