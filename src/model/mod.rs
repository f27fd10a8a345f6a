//! Model files: the GGUF reader, the architecture table, the resolved config, and the binding of
//! named tensors to the roles the forward pass needs.

pub mod arch;
pub mod config;
pub mod gguf;
pub mod vocab;
pub mod weights;

pub use config::ModelConfig;
pub use gguf::GgufFile;
pub use vocab::vocab_spec;
pub use weights::{LayerWeights, ModelWeights, WeightView};
