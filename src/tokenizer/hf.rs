//! Hugging Face tokenizers: `tokenizer.json` (+ `tokenizer_config.json`) through the
//! `tokenizers` crate, with the ids transformers' `AutoTokenizer` gives.
//!
//! The `tokenizers` crate runs the pipeline the file describes (normalizer, pre-tokenizer,
//! model, post-processor, decoder), which is what transformers' generic `TokenizersBackend`
//! (formerly `PreTrainedTokenizerFast`) does. On top of that, transformers applies
//! `tokenizer_config.json` at load time, and this module repeats those steps:
//!
//! - special tokens the config names (`bos_token`, ..., `extra_special_tokens`) and entries of
//!   `added_tokens_decoder` missing from the file are added to the vocabulary;
//! - truncation and padding stored in the file are switched off (transformers does so for a
//!   plain `encode`);
//! - `clean_up_tokenization_spaces` applies its string replacements after decoding.
//!
//! The config's `add_bos_token` / `add_eos_token` are deliberately ignored: transformers 5 drops
//! them whenever a `tokenizer.json` exists (`_from_pretrained`), so the file's post-processor
//! alone decides what `add_special_tokens` adds. (transformers 4's Llama/Gemma classes rebuilt
//! the post-processor from them instead.)
//!
//! Not repeated: the model-specific classes of transformers 5 (`LlamaTokenizer`,
//! `GemmaTokenizer`, ...) that rebuild the pipeline from the vocabulary instead of using the
//! file's; for those the file's own pipeline is used.

use std::path::Path;
use std::sync::OnceLock;

use serde_json::Value;
use tokenizers::AddedToken;

use super::TokenizerError;

/// End-of-turn texts, most specific first: the first present becomes [`HfTokenizer::eot`].
const EOT_TEXTS: &[&str] = &["<|eot_id|>", "<|im_end|>", "<end_of_turn>", "<|end|>"];
/// Texts that end generation whenever the vocabulary has them (besides EOS).
const EOG_TEXTS: &[&str] = &[
    "<|eot_id|>",
    "<|eom_id|>",
    "<|im_end|>",
    "<end_of_turn>",
    "<|end|>",
    "<|endoftext|>",
];
/// Guesses used only when no `tokenizer_config.json` names the token and the post-processor
/// does not reveal it.
const BOS_GUESSES: &[&str] = &["<s>", "<|begin_of_text|>", "<bos>", "<|startoftext|>"];
const EOS_GUESSES: &[&str] = &["</s>", "<|end_of_text|>", "<eos>", "<|endoftext|>"];
const PAD_GUESSES: &[&str] = &["<pad>", "<|pad|>", "[PAD]"];

/// transformers' named special tokens, in the order it adds them.
const NAMED_SPECIALS: &[&str] = &[
    "bos_token",
    "eos_token",
    "unk_token",
    "sep_token",
    "pad_token",
    "cls_token",
    "mask_token",
];

/// How one token becomes bytes for streaming, following the file's decoder.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Render {
    /// `ByteLevel` decoder: undo the GPT-2 byte alphabet.
    ByteLevel,
    /// SentencePiece-style decoders (`Metaspace`, `Replace`, `ByteFallback`, `Fuse`, `Strip`).
    Spm {
        /// The character that stands for a space (U+2581), when the decoder turns it back.
        space: Option<char>,
        /// `<0xNN>` tokens are the byte NN.
        byte_fallback: bool,
    },
    /// Anything else: the decoder applied to the single token.
    Generic,
}

/// A `tokenizer.json` tokenizer plus what `tokenizer_config.json` says about it.
pub(crate) struct HfTokenizer {
    tk: tokenizers::Tokenizer,
    /// `tk` with special tokens treated as plain text (transformers' `split_special_tokens`),
    /// built on first use: most callers never need it and it doubles the memory.
    tk_split: OnceLock<tokenizers::Tokenizer>,
    /// Token text by id (model vocabulary and added tokens); empty for ids nobody uses.
    texts: Vec<String>,
    /// Added tokens marked special, by id.
    special: Vec<bool>,
    pub(crate) bos: Option<u32>,
    pub(crate) eos: Option<u32>,
    pub(crate) eot: Option<u32>,
    pub(crate) pad: Option<u32>,
    pub(crate) add_bos: bool,
    pub(crate) add_eos: bool,
    /// Sorted end-of-generation ids.
    pub(crate) eog: Vec<u32>,
    render: Render,
    clean_up_spaces: bool,
    unicode_to_byte: Vec<Option<u8>>,
}

/// The parts of `tokenizer_config.json` that change tokenization.
#[derive(Default)]
struct Config {
    /// `NAMED_SPECIALS` present in the config: `None` for an explicit `null`.
    named: Vec<(&'static str, Option<AddedToken>)>,
    extra: Vec<AddedToken>,
    added_tokens_decoder: Vec<(u64, AddedToken)>,
    clean_up_spaces: bool,
}

impl Config {
    fn parse(bytes: &[u8], name: &str) -> Result<Config, TokenizerError> {
        let v: Value = serde_json::from_slice(bytes).map_err(|e| file_error(name, e))?;
        let Value::Object(map) = v else {
            return Err(file_error(name, "not a JSON object"));
        };
        let mut cfg = Config::default();
        for &key in NAMED_SPECIALS {
            if let Some(v) = map.get(key) {
                // transformers marks every named token special, whatever the file says.
                cfg.named.push((key, added_token(v, true)));
            }
        }
        // transformers 5 reads the old name when the new one is absent.
        let extra = map
            .get("extra_special_tokens")
            .or_else(|| map.get("additional_special_tokens"));
        match extra {
            Some(Value::Array(a)) => {
                cfg.extra = a.iter().filter_map(|v| added_token(v, true)).collect()
            }
            Some(Value::Object(o)) => {
                cfg.extra = o.values().filter_map(|v| added_token(v, true)).collect()
            }
            _ => {}
        }
        if let Some(Value::Object(o)) = map.get("added_tokens_decoder") {
            for (id, v) in o {
                if let (Ok(id), Some(t)) = (id.parse::<u64>(), added_token(v, false)) {
                    cfg.added_tokens_decoder.push((id, t));
                }
            }
            cfg.added_tokens_decoder.sort_by_key(|(id, _)| *id);
        }
        // transformers 5 defaults to no clean-up.
        cfg.clean_up_spaces = map
            .get("clean_up_tokenization_spaces")
            .and_then(Value::as_bool)
            .unwrap_or(false);
        Ok(cfg)
    }

    /// The configured content of a named token: `Some(None)` for an explicit null.
    fn named(&self, key: &str) -> Option<Option<&str>> {
        self.named
            .iter()
            .find(|(k, _)| *k == key)
            .map(|(_, t)| t.as_ref().map(|t| t.content.as_str()))
    }
}

/// A token in config form: a string (special, not normalized) or an AddedToken dict.
/// `force_special`: transformers adds it with `add_special_tokens`, which marks it special
/// before Python's `AddedToken` picks the default for `normalized` ("not special").
fn added_token(v: &Value, force_special: bool) -> Option<AddedToken> {
    match v {
        Value::String(s) if !s.is_empty() => Some(AddedToken::from(s.as_str(), true)),
        Value::Object(o) => {
            let content = o.get("content")?.as_str()?;
            if content.is_empty() {
                return None;
            }
            let flag = |k: &str| o.get(k).and_then(Value::as_bool);
            let special = force_special || flag("special").unwrap_or(false);
            Some(AddedToken {
                content: content.to_string(),
                single_word: flag("single_word").unwrap_or(false),
                lstrip: flag("lstrip").unwrap_or(false),
                rstrip: flag("rstrip").unwrap_or(false),
                // Python's AddedToken: normalized defaults to "not special".
                normalized: flag("normalized").unwrap_or(!special),
                special,
            })
        }
        _ => None,
    }
}

/// A one-line error naming the file.
fn file_error(name: &str, why: impl std::fmt::Display) -> TokenizerError {
    let why = why.to_string().replace(['\n', '\r'], " ");
    TokenizerError::File {
        path: name.to_string(),
        reason: why,
    }
}

impl HfTokenizer {
    /// Builds from the contents of `tokenizer.json` and optionally `tokenizer_config.json`;
    /// `json_name` / `config_name` name them in errors.
    pub(crate) fn from_bytes(
        json: &[u8],
        json_name: &str,
        config: Option<(&[u8], &str)>,
    ) -> Result<HfTokenizer, TokenizerError> {
        // Parsed with serde_json first: the crate's own parser panics on some malformed JSON
        // (its decoder deserializer `expect`s), and never sees syntax errors this way.
        let raw: Value = serde_json::from_slice(json).map_err(|e| file_error(json_name, e))?;
        if !raw.is_object() {
            return Err(file_error(json_name, "not a JSON object"));
        }
        // The decoder is read from the JSON: the crate's wrapper types hide their fields.
        let render = render_mode(raw.get("decoder").unwrap_or(&Value::Null));
        let mut tk: tokenizers::Tokenizer = guarded(|| serde_json::from_value(raw))
            .map_err(|e| file_error(json_name, e))?
            .map_err(|e| file_error(json_name, e))?;
        let cfg = match config {
            Some((bytes, name)) => Config::parse(bytes, name)?,
            None => Config::default(),
        };

        // A plain `encode` in transformers switches both off.
        let padding_pad = tk.get_padding().map(|p| p.pad_token.clone());
        tk.with_truncation(None)
            .map_err(|e| file_error(json_name, e))?;
        tk.with_padding(None);

        add_config_tokens(&mut tk, &cfg);

        let vocab = tk.get_vocab(true);
        let n_vocab = vocab.values().map(|&id| id as usize + 1).max().unwrap_or(0);
        if n_vocab == 0 {
            return Err(file_error(json_name, "empty vocabulary"));
        }
        // Ids index tables below; a stray huge id must not allocate gigabytes.
        if n_vocab > 2 * vocab.len() + 65536 {
            return Err(file_error(
                json_name,
                format!(
                    "token id {} is far beyond the {} tokens",
                    n_vocab - 1,
                    vocab.len()
                ),
            ));
        }
        let mut texts = vec![String::new(); n_vocab];
        for (text, id) in vocab {
            texts[id as usize] = text;
        }
        let mut special = vec![false; n_vocab];
        for (id, t) in tk.get_added_tokens_decoder() {
            if let Some(s) = special.get_mut(id as usize) {
                *s = t.special;
            }
        }

        let id_of = |text: &str| tk.token_to_id(text);
        let guess = |list: &[&str]| list.iter().find_map(|t| id_of(t));
        // What the file's post-processor adds around a text, to learn BOS/EOS when the config
        // is silent and to report `add_bos` / `add_eos`.
        let probe = |add: bool| {
            tk.encode_fast("a", add)
                .map(|e| e.get_ids().to_vec())
                .unwrap_or_default()
        };
        // Some inconsistent files (a template naming an unknown special token, a subword
        // prefix longer than the tokens, ...) make the crate panic on first use; run every
        // stage once so that they are refused here rather than failing later.
        let (with, without) = guarded(|| {
            for (text, add) in [(PROBE_TEXT, true), (PROBE_TEXT, false)] {
                if let Ok(e) = tk.encode_fast(text, add) {
                    let _ = tk.decode(e.get_ids(), false);
                }
            }
            (probe(true), probe(false))
        })
        .map_err(|e| file_error(json_name, format!("unusable tokenizer ({e})")))?;
        let pp_prefix = (with.len() > without.len() && with.first() != without.first())
            .then(|| with.first().copied())
            .flatten();
        let pp_suffix = (with.len() > without.len() && with.last() != without.last())
            .then(|| with.last().copied())
            .flatten();

        let resolve = |key: &str, fallback: Option<u32>| match cfg.named(key) {
            Some(Some(text)) => id_of(text),
            Some(None) => None,
            None => fallback,
        };
        let bos = resolve("bos_token", pp_prefix.or_else(|| guess(BOS_GUESSES)));
        let eos = resolve("eos_token", pp_suffix.or_else(|| guess(EOS_GUESSES)));
        let pad = resolve(
            "pad_token",
            padding_pad
                .as_deref()
                .and_then(id_of)
                .or_else(|| guess(PAD_GUESSES)),
        );

        // Reported only: the post-processor is what adds them.
        let add_bos = bos.is_some() && pp_prefix == bos;
        let add_eos = eos.is_some() && pp_suffix == eos;

        let eot = EOT_TEXTS.iter().find_map(|t| id_of(t));
        let mut eog: Vec<u32> = EOG_TEXTS.iter().filter_map(|t| id_of(t)).collect();
        eog.extend(eos);
        eog.sort_unstable();
        eog.dedup();

        Ok(HfTokenizer {
            tk,
            tk_split: OnceLock::new(),
            texts,
            special,
            bos,
            eos,
            eot,
            pad,
            add_bos,
            add_eos,
            eog,
            render,
            clean_up_spaces: cfg.clean_up_spaces,
            unicode_to_byte: super::unicode::unicode_to_byte_table(),
        })
    }

    /// Token ids of `text`, as transformers' `encode(text, add_special_tokens=add_special,
    /// split_special_tokens=!parse_special)`.
    pub(crate) fn encode(&self, text: &str, add_special: bool, parse_special: bool) -> Vec<u32> {
        let tk = if parse_special {
            &self.tk
        } else {
            self.tk_split.get_or_init(|| {
                let mut t = self.tk.clone();
                t.set_encode_special_tokens(true);
                t
            })
        };
        // Only a vocabulary with an unknown token it does not contain can fail here; such a
        // text has no ids, as transformers would raise.
        guarded(|| tk.encode_fast(text, add_special))
            .ok()
            .and_then(Result::ok)
            .map(|e| e.get_ids().to_vec())
            .unwrap_or_default()
    }

    pub(crate) fn n_vocab(&self) -> usize {
        self.texts.len()
    }

    pub(crate) fn token_text(&self, id: u32) -> Option<&str> {
        self.texts.get(id as usize).map(String::as_str)
    }

    pub(crate) fn token_id(&self, text: &str) -> Option<u32> {
        self.tk.token_to_id(text)
    }

    pub(crate) fn is_control(&self, id: u32) -> bool {
        self.special.get(id as usize).copied().unwrap_or(false)
    }

    /// The bytes one token contributes to the output, per the file's decoder. Unlike
    /// [`HfTokenizer::decode`], a leading space that the decoder strips from the whole text
    /// (SentencePiece's prefix space) is kept: streamed tokens follow a prompt.
    pub(crate) fn token_bytes(&self, id: u32) -> Vec<u8> {
        let Some(text) = self.texts.get(id as usize).filter(|t| !t.is_empty()) else {
            return Vec::new();
        };
        match self.render {
            Render::ByteLevel => {
                // As the ByteLevel decoder: a token with a character outside the alphabet
                // (an added token with a space, say) is taken verbatim.
                let mapped: Option<Vec<u8>> = text
                    .chars()
                    .map(|c| self.unicode_to_byte.get(c as usize).copied().flatten())
                    .collect();
                mapped.unwrap_or_else(|| text.as_bytes().to_vec())
            }
            Render::Spm {
                space,
                byte_fallback,
            } => {
                if byte_fallback {
                    if let Some(b) = byte_token(text) {
                        return vec![b];
                    }
                }
                match space {
                    Some(c) => text.replace(c, " ").into_bytes(),
                    None => text.as_bytes().to_vec(),
                }
            }
            Render::Generic => guarded(|| self.tk.decode(&[id], false))
                .ok()
                .and_then(Result::ok)
                .unwrap_or_default()
                .into_bytes(),
        }
    }

    /// transformers' `decode(ids, skip_special_tokens=False)`. Unknown ids are skipped.
    pub(crate) fn decode(&self, ids: &[u32]) -> String {
        let text = match guarded(|| self.tk.decode(ids, false)) {
            Ok(Ok(t)) => t,
            // Decoders only fail on malformed configurations; fall back to the per-token bytes.
            _ => {
                let bytes: Vec<u8> = ids.iter().flat_map(|&id| self.token_bytes(id)).collect();
                String::from_utf8_lossy(&bytes).into_owned()
            }
        };
        if self.clean_up_spaces {
            clean_up_tokenization(&text)
        } else {
            text
        }
    }
}

/// Repeats transformers' load-time additions from `tokenizer_config.json` (`TokenizersBackend.
/// __init__` then `_post_init`), so that ids of newly added tokens and which texts are matched
/// as added tokens agree.
fn add_config_tokens(tk: &mut tokenizers::Tokenizer, cfg: &Config) {
    let existing: Vec<AddedToken> = tk.get_added_tokens_decoder().into_values().collect();
    let named: Vec<AddedToken> = cfg
        .named
        .iter()
        .filter_map(|(_, t)| t.clone())
        .chain(cfg.extra.iter().cloned())
        .collect();

    // __init__: `added_tokens_decoder` entries not already there (same flags), then named
    // tokens whose text is not an added token yet; added with `add_tokens`, so new ids follow
    // this order.
    let mut first: Vec<AddedToken> = cfg
        .added_tokens_decoder
        .iter()
        .map(|(_, t)| t.clone())
        .filter(|t| !existing.contains(t))
        .collect();
    for t in &named {
        let known = existing
            .iter()
            .chain(&first)
            .any(|e| e.content == t.content);
        if !known {
            first.push(t.clone());
        }
    }
    if !first.is_empty() {
        tk.add_tokens(&first);
    }
    // _post_init: every named token again, as special; this updates flags that differ.
    let now: Vec<AddedToken> = tk.get_added_tokens_decoder().into_values().collect();
    let second: Vec<AddedToken> = named.into_iter().filter(|t| !now.contains(t)).collect();
    if !second.is_empty() {
        tk.add_special_tokens(&second);
    }
}

/// The rendering that matches a `decoder` entry of `tokenizer.json`.
fn render_mode(decoder: &Value) -> Render {
    fn collect<'a>(v: &'a Value, out: &mut Vec<&'a Value>) {
        if let Some(Value::Array(list)) = v.get("decoders") {
            for d in list {
                collect(d, out);
            }
        } else if !v.is_null() {
            out.push(v);
        }
    }
    let mut parts = Vec::new();
    collect(decoder, &mut parts);
    let ty = |v: &Value| {
        v.get("type")
            .and_then(Value::as_str)
            .unwrap_or("")
            .to_string()
    };
    if parts.iter().any(|p| ty(p) == "ByteLevel") {
        return Render::ByteLevel;
    }
    if parts.is_empty() {
        return Render::Generic;
    }
    let mut space = None;
    let mut byte_fallback = false;
    for p in &parts {
        match ty(p).as_str() {
            "Metaspace" => {
                space = p
                    .get("replacement")
                    .and_then(Value::as_str)
                    .and_then(|s| s.chars().next())
                    .or(Some('\u{2581}'));
            }
            "Replace" => {
                let pattern = p
                    .get("pattern")
                    .and_then(|x| x.get("String"))
                    .and_then(Value::as_str);
                let content = p.get("content").and_then(Value::as_str);
                let mut chars = pattern.unwrap_or("").chars();
                match (chars.next(), chars.next(), content) {
                    (Some(c), None, Some(" ")) => space = Some(c),
                    _ => return Render::Generic,
                }
            }
            "ByteFallback" => byte_fallback = true,
            // Joining and stripping the whole text do not change per-token bytes.
            "Fuse" | "Strip" => {}
            _ => return Render::Generic,
        }
    }
    Render::Spm {
        space,
        byte_fallback,
    }
}

/// Text that exercises every stage of a pipeline at load time: letters, digits, spaces,
/// punctuation, non-ASCII, and common special-token texts.
const PROBE_TEXT: &str = "Hello, world! 123  x\n\té 日本 😀 <s></s><|im_end|>";

/// Runs `f`, turning a panic into `Err(message)`: the `tokenizers` crate panics on some
/// inconsistent (but well-formed) files, and a bad model file must not bring the process
/// down. Its state is only caches, so going on after a caught panic is sound.
fn guarded<T>(f: impl FnOnce() -> T) -> Result<T, String> {
    std::panic::catch_unwind(std::panic::AssertUnwindSafe(f)).map_err(|e| {
        e.downcast_ref::<String>()
            .cloned()
            .or_else(|| e.downcast_ref::<&str>().map(|s| s.to_string()))
            .unwrap_or_else(|| "panic".to_string())
    })
}

/// The byte of a `<0xNN>` byte-fallback token.
fn byte_token(text: &str) -> Option<u8> {
    let hex = text.strip_prefix("<0x")?.strip_suffix('>')?;
    if hex.len() != 2 {
        return None;
    }
    u8::from_str_radix(hex, 16).ok()
}

/// transformers' `clean_up_tokenization`.
fn clean_up_tokenization(text: &str) -> String {
    text.replace(" .", ".")
        .replace(" ?", "?")
        .replace(" !", "!")
        .replace(" ,", ",")
        .replace(" ' ", "'")
        .replace(" n't", "n't")
        .replace(" 'm", "'m")
        .replace(" 's", "'s")
        .replace(" 've", "'ve")
        .replace(" 're", "'re")
}

/// Reads `path` for [`super::Tokenizer::from_hf_files`], naming it in the error.
pub(crate) fn read(path: &Path) -> Result<Vec<u8>, TokenizerError> {
    std::fs::read(path).map_err(|e| file_error(&path.display().to_string(), e))
}

/// The chat template in a `tokenizer_config.json`'s text: the `chat_template` string, or the
/// template named "default" when it is a list of `{name, template}`.
pub(crate) fn chat_template_from_config(json: &str) -> Option<String> {
    let v: Value = serde_json::from_str(json).ok()?;
    match v.get("chat_template")? {
        Value::String(s) => Some(s.clone()),
        Value::Array(list) => list
            .iter()
            .find(|t| t.get("name").and_then(Value::as_str) == Some("default"))
            .and_then(|t| t.get("template"))
            .and_then(Value::as_str)
            .map(str::to_string),
        _ => None,
    }
}

/// The chat template stored in the `tokenizer_config.json` at `path`: its `chat_template`
/// string, or the entry named "default" when it is a list of `{name, template}` objects.
/// `None` when the file cannot be read or parsed or has no template. (A separate
/// `chat_template.jinja` file is not looked at here.)
pub fn hf_chat_template(path: &Path) -> Option<String> {
    let text = std::fs::read_to_string(path).ok()?;
    chat_template_from_config(&text)
}
