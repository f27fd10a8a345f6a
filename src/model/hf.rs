//! Hugging Face model directories: `config.json`, the tokenizer files, and one or more
//! memory-mapped `*.safetensors` files (sharded ones through `model.safetensors.index.json`).
//!
//! Tensors are renamed into llama.cpp's GGUF naming (`model.layers.3.self_attn.q_proj.weight`
//! becomes `blk.3.attn_q.weight`) and their shapes reversed into ggml order, so the binder and
//! the forward pass see one naming whatever the format. Data stays where it is in the map, in
//! its own dtype.

use std::collections::{BTreeSet, HashMap};
use std::fs::File;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use memmap2::Mmap;
use safetensors::tensor::{Dtype, SafeTensors};

use super::arch::{self, ArchRow};
use super::gguf::TensorInfo;
use crate::error::{Error, Result};
use crate::quant::GgmlType;

/// Largest `config.json` / index / tokenizer file read into memory (they are small text files;
/// a bigger one is not a model directory).
const MAX_JSON_BYTES: u64 = 64 << 20;
/// Most shards an index may name.
const MAX_SHARDS: usize = 4096;

/// An opened Hugging Face model directory.
pub struct HfModel {
    /// The directory.
    pub dir: PathBuf,
    /// `config.json`, parsed.
    pub config: serde_json::Value,
    /// The family, from `model_type` (confirmed by `architectures` when present).
    pub arch: &'static ArchRow,
    maps: Vec<Arc<Mmap>>,
    files: Vec<PathBuf>,
    tensors: Vec<TensorInfo>,
    map_of: Vec<usize>,
    hf_names: Vec<String>,
    index: HashMap<String, usize>,
}

impl HfModel {
    /// Open `dir`: parse `config.json`, find the family, map every safetensors file and rename
    /// its tensors. Errors name the file and, for tensors, the tensor.
    pub fn open(dir: &Path) -> Result<HfModel> {
        let config = read_json(&dir.join("config.json"))?;
        let arch = detect_arch(&config, dir)?;
        check_quantization(&config, dir)?;
        let files = safetensors_files(dir)?;
        let mut m = HfModel {
            dir: dir.to_path_buf(),
            config,
            arch,
            maps: Vec::new(),
            files: Vec::new(),
            tensors: Vec::new(),
            map_of: Vec::new(),
            hf_names: Vec::new(),
            index: HashMap::new(),
        };
        for path in files {
            m.add_file(&path)?;
        }
        if m.tensors.is_empty() {
            return Err(Error::Format {
                path: dir.to_path_buf(),
                why: "the safetensors files hold no tensors".into(),
            });
        }
        Ok(m)
    }

    fn add_file(&mut self, path: &Path) -> Result<()> {
        let file = File::open(path).map_err(|e| Error::io(path, e))?;
        // SAFETY: the map is read-only and the file is not modified while we hold it (the same
        // contract every mmap-based loader relies on); all reads go through bounds-checked slices.
        let map = unsafe { Mmap::map(&file) }.map_err(|e| Error::io(path, e))?;
        let (n, meta) = SafeTensors::read_metadata(&map).map_err(|e| Error::Format {
            path: path.to_path_buf(),
            why: format!("not a valid safetensors file: {e}"),
        })?;
        let data_start = 8 + n;
        let map_idx = self.maps.len();
        let mut names: Vec<(String, &safetensors::tensor::TensorInfo)> =
            meta.tensors().into_iter().collect();
        names.sort_by_key(|(_, t)| t.data_offsets.0);
        for (hf_name, t) in names {
            let Some(name) = gguf_name(self.arch, &hf_name) else {
                // Tensors the forward pass never reads (e.g. rotary caches some exporters
                // write) are left out of the table; unknown *layer* tensors are caught by the
                // binder's unused-tensor check because they map to a name.
                if is_ignorable(&hf_name) {
                    continue;
                }
                return Err(Error::Format {
                    path: path.to_path_buf(),
                    why: format!(
                        "tensor '{hf_name}' is not part of a {} model (config.json model_type)",
                        self.arch.name
                    ),
                });
            };
            let ty = match t.dtype {
                Dtype::F32 => GgmlType::F32,
                Dtype::F16 => GgmlType::F16,
                Dtype::BF16 => GgmlType::BF16,
                // Only meaningful with a `weight_scale` companion; the binder requires one.
                Dtype::I8 => GgmlType::I8,
                other => {
                    return Err(Error::Format {
                        path: path.to_path_buf(),
                        why: format!(
                            "tensor '{hf_name}' has dtype {other:?}; supported: F32, F16, BF16, I8"
                        ),
                    })
                }
            };
            if t.shape.is_empty() || t.shape.len() > 4 || t.shape.contains(&0) {
                return Err(Error::Format {
                    path: path.to_path_buf(),
                    why: format!("tensor '{hf_name}' has unsupported shape {:?}", t.shape),
                });
            }
            if self.index.contains_key(&name) {
                return Err(Error::Format {
                    path: path.to_path_buf(),
                    why: format!("tensor '{hf_name}' ({name}) appears twice"),
                });
            }
            let (s, e) = t.data_offsets;
            self.index.insert(name.clone(), self.tensors.len());
            self.tensors.push(TensorInfo {
                name,
                // ggml order is fastest-first: HF [out, in] is ggml [in, out].
                dims: t.shape.iter().rev().map(|&d| d as u64).collect(),
                ty,
                start: data_start + s,
                len: e - s,
            });
            self.map_of.push(map_idx);
            self.hf_names.push(hf_name);
        }
        self.maps.push(Arc::new(map));
        self.files.push(path.to_path_buf());
        Ok(())
    }

    /// Every tensor, renamed into GGUF naming.
    pub fn tensors(&self) -> &[TensorInfo] {
        &self.tensors
    }

    /// The tensor called `name` (GGUF naming) and the map its data lives in.
    pub fn tensor(&self, name: &str) -> Option<(&TensorInfo, &Arc<Mmap>)> {
        let &i = self.index.get(name)?;
        Some((&self.tensors[i], &self.maps[self.map_of[i]]))
    }

    /// The checkpoint's own name for a tensor given its GGUF name (for messages).
    pub fn hf_name(&self, name: &str) -> Option<&str> {
        self.index.get(name).map(|&i| self.hf_names[i].as_str())
    }

    /// The tensor's bytes.
    pub fn tensor_data(&self, t: &TensorInfo) -> &[u8] {
        let i = self.index[&t.name];
        &self.maps[self.map_of[i]][t.start..t.start + t.len]
    }

    /// The safetensors files, in load order.
    pub fn files(&self) -> &[PathBuf] {
        &self.files
    }

    /// Total bytes of the mapped safetensors files.
    pub fn total_len(&self) -> u64 {
        self.maps.iter().map(|m| m.len() as u64).sum()
    }

    /// `path` inside the directory when it exists (tokenizer files).
    pub fn file_if_exists(&self, name: &str) -> Option<PathBuf> {
        let p = self.dir.join(name);
        p.is_file().then_some(p)
    }
}

/// Read a small JSON file (bounded size) with errors naming the file.
pub fn read_json(path: &Path) -> Result<serde_json::Value> {
    let meta = std::fs::metadata(path).map_err(|e| Error::io(path, e))?;
    if meta.len() > MAX_JSON_BYTES {
        return Err(Error::Format {
            path: path.to_path_buf(),
            why: format!("{} bytes is too large for a JSON config", meta.len()),
        });
    }
    let text = std::fs::read(path).map_err(|e| Error::io(path, e))?;
    serde_json::from_slice(&text).map_err(|e| Error::Format {
        path: path.to_path_buf(),
        why: format!("invalid JSON: {e}"),
    })
}

/// Only one quantized checkpoint format is understood: compressed-tensors `int-quantized` w8a8
/// (int8 weights with per-channel scales, int8 activations quantized per token at run time).
/// Anything else that declares a `quantization_config` would be misread, so it is refused.
fn check_quantization(cfg: &serde_json::Value, dir: &Path) -> Result<()> {
    let Some(q) = cfg.get("quantization_config").filter(|q| !q.is_null()) else {
        return Ok(());
    };
    let path = dir.join("config.json");
    let refuse = |why: String| {
        Err(Error::Format {
            path: path.clone(),
            why: format!(
                "quantization_config: {why}; supported: compressed-tensors int-quantized w8a8 \
                 (8-bit symmetric per-channel weights, dynamic per-token 8-bit activations)"
            ),
        })
    };
    let s = |v: &serde_json::Value, k: &str| v.get(k).and_then(|x| x.as_str()).map(str::to_string);
    if s(q, "quant_method").as_deref() != Some("compressed-tensors") {
        return refuse(format!("quant_method {:?}", s(q, "quant_method")));
    }
    if s(q, "format").as_deref() != Some("int-quantized") {
        return refuse(format!("format {:?}", s(q, "format")));
    }
    let groups = q.get("config_groups").and_then(|g| g.as_object());
    let Some(groups) = groups.filter(|g| !g.is_empty()) else {
        return refuse("no config_groups".into());
    };
    for (name, g) in groups {
        let (w, a) = (g.get("weights"), g.get("input_activations"));
        let int8 = |v: Option<&serde_json::Value>| {
            v.is_some_and(|v| {
                v.get("num_bits").and_then(|b| b.as_u64()) == Some(8)
                    && s(v, "type").as_deref() == Some("int")
                    && v.get("symmetric").and_then(|b| b.as_bool()) == Some(true)
            })
        };
        let w_ok = int8(w) && w.and_then(|w| s(w, "strategy")).as_deref() == Some("channel");
        let a_ok = int8(a)
            && a.and_then(|a| s(a, "strategy")).as_deref() == Some("token")
            && a.and_then(|a| a.get("dynamic")).and_then(|d| d.as_bool()) == Some(true);
        if !w_ok || !a_ok {
            return refuse(format!("config group '{name}' is not w8a8 channel/token"));
        }
    }
    Ok(())
}

/// The family from `model_type`, cross-checked with `architectures[0]`'s prefix when both are
/// present (a Llama config claiming `Qwen2ForCausalLM` is a contradiction, not a guess).
fn detect_arch(cfg: &serde_json::Value, dir: &Path) -> Result<&'static ArchRow> {
    let path = dir.join("config.json");
    let model_type = cfg.get("model_type").and_then(|v| v.as_str());
    let class = cfg
        .get("architectures")
        .and_then(|v| v.as_array())
        .and_then(|a| a.first())
        .and_then(|v| v.as_str());
    let from_class = class.and_then(|c| {
        arch::ARCHITECTURES
            .iter()
            .find(|row| row.hf_model_types.iter().any(|t| class_matches(c, t)))
    });
    match (model_type, from_class) {
        (Some(t), _) => {
            let row = arch::find_hf(t).ok_or_else(|| Error::UnsupportedArch {
                found: format!("{t} (model_type in {})", path.display()),
                supported: arch::supported_hf_types(),
            })?;
            if let Some(c) = class {
                if !row.hf_model_types.iter().any(|t| class_matches(c, t)) {
                    return Err(Error::Format {
                        path,
                        why: format!("model_type '{t}' contradicts architectures[0] '{c}'"),
                    });
                }
            }
            Ok(row)
        }
        (None, Some(row)) => Ok(row),
        (None, None) => Err(Error::UnsupportedArch {
            found: format!(
                "{} (architectures in {})",
                class.unwrap_or("nothing"),
                path.display()
            ),
            supported: arch::supported_hf_types(),
        }),
    }
}

/// `Qwen2ForCausalLM` belongs to model_type `qwen2`, `Gemma3ForCausalLM` to `gemma3_text`,
/// `PhiForCausalLM` to `phi`: compare the class prefix with the model type, case-insensitively
/// and ignoring `_text`.
fn class_matches(class: &str, model_type: &str) -> bool {
    let prefix = class
        .split("For")
        .next()
        .unwrap_or(class)
        .to_ascii_lowercase();
    let ty = model_type.trim_end_matches("_text");
    prefix == ty
}

/// The safetensors files of `dir`: the shards named by `model.safetensors.index.json`, else
/// `model.safetensors`, else every `*.safetensors` file in name order.
fn safetensors_files(dir: &Path) -> Result<Vec<PathBuf>> {
    let index = dir.join("model.safetensors.index.json");
    if index.is_file() {
        let v = read_json(&index)?;
        let map = v
            .get("weight_map")
            .and_then(|m| m.as_object())
            .ok_or_else(|| Error::Format {
                path: index.clone(),
                why: "no weight_map object".into(),
            })?;
        let mut shards = BTreeSet::new();
        for (name, file) in map {
            let f = file.as_str().ok_or_else(|| Error::Format {
                path: index.clone(),
                why: format!("weight_map entry '{name}' is not a file name"),
            })?;
            // Shards must be plain file names inside the directory.
            if f.contains('/') || f.contains('\\') || f == ".." || f.is_empty() {
                return Err(Error::Format {
                    path: index.clone(),
                    why: format!("shard name '{f}' is not a file in the model directory"),
                });
            }
            shards.insert(f.to_string());
        }
        if shards.is_empty() || shards.len() > MAX_SHARDS {
            return Err(Error::Format {
                path: index,
                why: format!("{} shards named", shards.len()),
            });
        }
        return Ok(shards.into_iter().map(|s| dir.join(s)).collect());
    }
    let single = dir.join("model.safetensors");
    if single.is_file() {
        return Ok(vec![single]);
    }
    let mut found: Vec<PathBuf> = std::fs::read_dir(dir)
        .map_err(|e| Error::io(dir, e))?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|x| x == "safetensors"))
        .collect();
    found.sort();
    if found.is_empty() {
        return Err(Error::Format {
            path: dir.to_path_buf(),
            why: "no *.safetensors files (and no model.safetensors.index.json)".into(),
        });
    }
    Ok(found)
}

/// Tensors some exporters write that carry no weights.
fn is_ignorable(hf_name: &str) -> bool {
    hf_name.ends_with("rotary_emb.inv_freq") || hf_name.ends_with(".masked_bias")
}

/// Layer tensor names shared by every family (HF suffix after `model.layers.N.`, GGUF name
/// between `blk.N.` and the `.weight` / `.bias` / `.scale` suffix).
const LAYER_NAMES: &[(&str, &str)] = &[
    ("input_layernorm", "attn_norm"),
    ("self_attn.q_proj", "attn_q"),
    ("self_attn.k_proj", "attn_k"),
    ("self_attn.v_proj", "attn_v"),
    ("self_attn.qkv_proj", "attn_qkv"),
    ("self_attn.o_proj", "attn_output"),
    ("self_attn.dense", "attn_output"),
    ("self_attn.q_norm", "attn_q_norm"),
    ("self_attn.k_norm", "attn_k_norm"),
    ("pre_feedforward_layernorm", "ffn_norm"),
    ("post_feedforward_layernorm", "post_ffw_norm"),
    ("mlp.gate_proj", "ffn_gate"),
    ("mlp.up_proj", "ffn_up"),
    ("mlp.gate_up_proj", "ffn_up"),
    ("mlp.fc1", "ffn_up"),
    ("mlp.down_proj", "ffn_down"),
    ("mlp.fc2", "ffn_down"),
];

/// Model-level tensors (HF name without its suffix → GGUF name without its suffix).
const GLOBAL_NAMES: &[(&str, &str)] = &[
    ("model.embed_tokens", "token_embd"),
    ("model.norm", "output_norm"),
    ("model.final_layernorm", "output_norm"),
    ("lm_head", "output"),
];

/// The GGUF name of an HF tensor, or `None` when it is not one the families use.
fn gguf_name(row: &ArchRow, hf: &str) -> Option<String> {
    // `weight_scale` is the per-output-channel scale of an int8 (compressed-tensors) weight.
    let (stem, suffix) = if let Some(s) = hf.strip_suffix(".weight_scale") {
        (s, "scale")
    } else if let Some(s) = hf.strip_suffix(".weight") {
        (s, "weight")
    } else if let Some(s) = hf.strip_suffix(".bias") {
        (s, "bias")
    } else {
        return None;
    };
    if let Some(&(_, g)) = GLOBAL_NAMES.iter().find(|(h, _)| *h == stem) {
        return Some(format!("{g}.{suffix}"));
    }
    let rest = stem.strip_prefix("model.layers.")?;
    let (il, part) = rest.split_once('.')?;
    let il: usize = il.parse().ok()?;
    let g = if part == "post_attention_layernorm" {
        row.hf_post_attention_layernorm
    } else {
        LAYER_NAMES.iter().find(|(h, _)| *h == part)?.1
    };
    Some(format!("blk.{il}.{g}.{suffix}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_map_into_gguf_naming() {
        let llama = arch::find("llama").unwrap();
        let gemma2 = arch::find("gemma2").unwrap();
        assert_eq!(
            gguf_name(llama, "model.layers.12.self_attn.q_proj.weight").unwrap(),
            "blk.12.attn_q.weight"
        );
        assert_eq!(
            gguf_name(llama, "model.layers.0.post_attention_layernorm.weight").unwrap(),
            "blk.0.ffn_norm.weight"
        );
        assert_eq!(
            gguf_name(gemma2, "model.layers.0.post_attention_layernorm.weight").unwrap(),
            "blk.0.post_attention_norm.weight"
        );
        assert_eq!(
            gguf_name(llama, "model.layers.1.mlp.down_proj.weight_scale").unwrap(),
            "blk.1.ffn_down.scale"
        );
        assert_eq!(gguf_name(llama, "lm_head.bias").unwrap(), "output.bias");
        assert_eq!(gguf_name(llama, "model.layers.x.mlp.fc1.weight"), None);
        assert_eq!(gguf_name(llama, "model.layers.0.mlp.experts.weight"), None);
    }

    #[test]
    fn classes_match_model_types() {
        assert!(class_matches("Qwen2ForCausalLM", "qwen2"));
        assert!(class_matches("Gemma3ForCausalLM", "gemma3_text"));
        assert!(class_matches("PhiForCausalLM", "phi"));
        assert!(!class_matches("Phi3ForCausalLM", "phi"));
        assert!(!class_matches("LlamaForCausalLM", "qwen2"));
    }
}
