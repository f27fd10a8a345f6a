//! [`ModelSource`]: a model as files on disk, whichever format. A `.gguf` file or a Hugging Face
//! directory; both expose tensors in GGUF naming and ggml dimension order, so everything after
//! loading is format-blind.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use memmap2::Mmap;

use super::config::{ModelConfig, SourceFormat};
use super::gguf::{GgufFile, TensorInfo};
use super::hf::HfModel;
use super::vocab_spec;
use crate::error::{Error, Result};
use crate::tokenizer::Tokenizer;

/// A model's files, opened and memory-mapped.
pub enum ModelSource {
    /// A single GGUF file.
    Gguf(GgufFile),
    /// A Hugging Face directory (`config.json`, tokenizer files, safetensors).
    Hf(HfModel),
}

impl ModelSource {
    /// Open a GGUF file, or a directory holding `config.json` and safetensors.
    pub fn open(path: impl AsRef<Path>) -> Result<ModelSource> {
        let path = path.as_ref();
        if path.is_dir() {
            if !path.join("config.json").is_file() {
                return Err(Error::Format {
                    path: path.to_path_buf(),
                    why: "a model directory needs config.json (and safetensors files)".into(),
                });
            }
            return HfModel::open(path).map(ModelSource::Hf);
        }
        GgufFile::open(path).map(ModelSource::Gguf)
    }

    /// Which format this is.
    pub fn format(&self) -> SourceFormat {
        match self {
            ModelSource::Gguf(_) => SourceFormat::Gguf,
            ModelSource::Hf(_) => SourceFormat::Safetensors,
        }
    }

    /// The file or directory it was opened from.
    pub fn path(&self) -> &Path {
        match self {
            ModelSource::Gguf(f) => &f.path,
            ModelSource::Hf(m) => &m.dir,
        }
    }

    /// The GGUF file, when that is the format.
    pub fn gguf(&self) -> Option<&GgufFile> {
        match self {
            ModelSource::Gguf(f) => Some(f),
            ModelSource::Hf(_) => None,
        }
    }

    /// Every tensor, in GGUF naming.
    pub fn tensors(&self) -> &[TensorInfo] {
        match self {
            ModelSource::Gguf(f) => f.tensors(),
            ModelSource::Hf(m) => m.tensors(),
        }
    }

    /// The tensor called `name` (GGUF naming) and the map holding its data.
    pub fn tensor(&self, name: &str) -> Option<(&TensorInfo, &Arc<Mmap>)> {
        match self {
            ModelSource::Gguf(f) => f.tensor(name).map(|t| (t, f.map())),
            ModelSource::Hf(m) => m.tensor(name),
        }
    }

    /// A tensor's bytes.
    pub fn tensor_data(&self, t: &TensorInfo) -> &[u8] {
        match self {
            ModelSource::Gguf(f) => f.tensor_data(t),
            ModelSource::Hf(m) => m.tensor_data(t),
        }
    }

    /// Total bytes of the model's mapped files.
    pub fn total_len(&self) -> u64 {
        match self {
            ModelSource::Gguf(f) => f.file_len(),
            ModelSource::Hf(m) => m.total_len(),
        }
    }

    /// The resolved config.
    pub fn config(&self) -> Result<ModelConfig> {
        match self {
            ModelSource::Gguf(f) => ModelConfig::from_gguf(f),
            ModelSource::Hf(m) => ModelConfig::from_hf(&m.config, m.arch),
        }
    }

    /// The tokenizer: GGUF `tokenizer.ggml.*` metadata, or `tokenizer.json` (with
    /// `tokenizer_config.json` when present).
    pub fn tokenizer(&self) -> Result<Tokenizer> {
        match self {
            ModelSource::Gguf(f) => Ok(Tokenizer::from_spec(vocab_spec(f)?)?),
            ModelSource::Hf(m) => {
                let json = m
                    .file_if_exists("tokenizer.json")
                    .ok_or_else(|| Error::Format {
                        path: m.dir.clone(),
                        why: "no tokenizer.json in the model directory".into(),
                    })?;
                let config = m.file_if_exists("tokenizer_config.json");
                Ok(Tokenizer::from_hf_files(&json, config.as_deref())?)
            }
        }
    }

    /// The chat template the model ships: GGUF `tokenizer.chat_template`, or
    /// `tokenizer_config.json`'s `chat_template` (or a `chat_template.jinja` file).
    pub fn chat_template(&self) -> Option<String> {
        match self {
            ModelSource::Gguf(f) => f
                .get("tokenizer.chat_template")
                .and_then(|v| v.as_str())
                .map(str::to_string),
            ModelSource::Hf(m) => {
                if let Some(p) = m.file_if_exists("chat_template.jinja") {
                    return std::fs::read_to_string(p).ok();
                }
                let p = m.file_if_exists("tokenizer_config.json")?;
                crate::tokenizer::hf_chat_template(&p)
            }
        }
    }

    /// A short name for messages: the file or directory name.
    pub fn file_name(&self) -> String {
        display_name(self.path())
    }
}

fn display_name(p: &Path) -> String {
    p.file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| PathBuf::from(p).display().to_string())
}
