//! Reads the `tokenizer.ggml.*` metadata into a `VocabSpec`.

use super::gguf::{GgufFile, Value};
use crate::error::{Error, Result};
use crate::tokenizer::VocabSpec;

/// Collect the tokenizer metadata of `f` into a [`VocabSpec`] for
/// [`Tokenizer::from_spec`](crate::tokenizer::Tokenizer::from_spec).
///
/// `tokenizer.ggml.model` and `tokenizer.ggml.tokens` are required; every other key is optional.
/// Errors when a key has the wrong type, when `scores` / `token_type` do not have one entry per
/// token, or when a special-token id is outside the vocabulary.
pub fn vocab_spec(f: &GgufFile) -> Result<VocabSpec> {
    let model = f
        .get_str("tokenizer.ggml.model")?
        .ok_or_else(|| Error::MissingKey("tokenizer.ggml.model".into()))?
        .to_string();
    let tokens = strings(f, "tokenizer.ggml.tokens")?
        .ok_or_else(|| Error::MissingKey("tokenizer.ggml.tokens".into()))?;
    let n = tokens.len();
    let scores = match f.get_array("tokenizer.ggml.scores")? {
        None => None,
        Some(a) => Some(typed(a, "tokenizer.ggml.scores", n, Value::as_f32)?),
    };
    let token_types = match f.get_array("tokenizer.ggml.token_type")? {
        None => None,
        Some(a) => Some(typed(a, "tokenizer.ggml.token_type", n, |v| {
            v.as_i64().and_then(|x| i32::try_from(x).ok())
        })?),
    };
    let id = |k: &str| -> Result<Option<u32>> {
        match f.get_u64(k)? {
            None => Ok(None),
            Some(v) if (v as usize) < n => Ok(Some(v as u32)),
            Some(v) => Err(Error::BadKey {
                key: k.to_string(),
                why: format!("token id {v} is outside the vocabulary of {n}"),
            }),
        }
    };
    Ok(VocabSpec {
        model,
        pre: f.get_str("tokenizer.ggml.pre")?.map(str::to_string),
        tokens,
        scores,
        token_types,
        merges: strings(f, "tokenizer.ggml.merges")?,
        bos_id: id("tokenizer.ggml.bos_token_id")?,
        eos_id: id("tokenizer.ggml.eos_token_id")?,
        eot_id: id("tokenizer.ggml.eot_token_id")?,
        eom_id: id("tokenizer.ggml.eom_token_id")?,
        unk_id: id("tokenizer.ggml.unknown_token_id")?,
        pad_id: id("tokenizer.ggml.padding_token_id")?,
        add_bos: f.get_bool("tokenizer.ggml.add_bos_token")?,
        add_eos: f.get_bool("tokenizer.ggml.add_eos_token")?,
        add_space_prefix: f.get_bool("tokenizer.ggml.add_space_prefix")?,
    })
}

fn strings(f: &GgufFile, key: &str) -> Result<Option<Vec<String>>> {
    match f.get_array(key)? {
        None => Ok(None),
        Some(a) => a
            .iter()
            .map(|v| v.as_str().map(str::to_string))
            .collect::<Option<Vec<_>>>()
            .map(Some)
            .ok_or_else(|| Error::BadKey {
                key: key.to_string(),
                why: "expected an array of strings".into(),
            }),
    }
}

fn typed<T>(a: &[Value], key: &str, n: usize, f: impl Fn(&Value) -> Option<T>) -> Result<Vec<T>> {
    if a.len() != n {
        return Err(Error::BadKey {
            key: key.to_string(),
            why: format!("{} entries for {n} tokens", a.len()),
        });
    }
    a.iter()
        .map(&f)
        .collect::<Option<Vec<_>>>()
        .ok_or_else(|| Error::BadKey {
            key: key.to_string(),
            why: "element of the wrong type".into(),
        })
}
