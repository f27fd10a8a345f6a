//! Tokenizers built from GGUF metadata (GPT-2 byte-level BPE and SentencePiece), or from a
//! Hugging Face `tokenizer.json` (see `hf`, which defers to the `tokenizers` crate and gives
//! transformers' ids).
//!
//! For GGUF the goal is token ids identical to llama.cpp's for the same file, so the pipeline
//! mirrors llama.cpp's `llama_vocab::tokenize`:
//!
//! 1. `special`: split the text around special tokens (CONTROL / USER_DEFINED / UNKNOWN
//!    token texts, longest first) when `parse_special` is set;
//! 2. per raw fragment, either `spm` (escape spaces to U+2581, score-driven bigram merges,
//!    byte fallback) or `bpe` (pre-tokenizer regex list from `pretokenize`, GPT-2 byte
//!    alphabet, rank-driven merges);
//! 3. BOS/EOS as the vocabulary asks.
//!
//! Vocabulary-level rules that llama.cpp applies at load time (default special ids, roles
//! detected from token text, the end-of-generation set) live in `vocab`.

mod bpe;
mod hash;
mod hf;
mod pretokenize;
mod special;
mod spm;
mod stream;
mod unicode;
mod unicode_data;
mod vocab;

pub use hf::hf_chat_template;
pub use pretokenize::PreType;

use std::path::Path;

use special::{Fragment, SpecialMatcher};
use vocab::{attr, Kind, Vocab};

/// Everything the tokenizer needs, read from GGUF `tokenizer.ggml.*` metadata by the loader.
#[derive(Clone, Debug, Default)]
pub struct VocabSpec {
    /// `tokenizer.ggml.model`: "gpt2" or "llama".
    pub model: String,
    /// `tokenizer.ggml.pre`: the BPE pre-tokenizer name (ignored for "llama").
    pub pre: Option<String>,
    /// `tokenizer.ggml.tokens`: token texts indexed by id, as stored (GPT-2 byte alphabet for
    /// "gpt2", U+2581 for spaces for "llama"). Must be non-empty.
    pub tokens: Vec<String>,
    /// `tokenizer.ggml.scores`: SentencePiece merge scores (higher merges first); at least one
    /// per token when present, all 0.0 when absent.
    pub scores: Option<Vec<f32>>,
    /// `tokenizer.ggml.token_type` (1 normal, 2 unknown, 3 control, 4 user-defined, 5 unused, 6 byte).
    /// All tokens are normal when absent; otherwise at least one entry per token.
    pub token_types: Option<Vec<i32>>,
    /// `tokenizer.ggml.merges`: BPE merges `"left right"` in rank order (required for "gpt2").
    pub merges: Option<Vec<String>>,
    /// `tokenizer.ggml.bos_token_id`. For this and the other ids, `None` or an id outside the
    /// vocabulary falls back to the model's default (llama: BOS 1, EOS 2, UNK 0; gpt2: BOS and
    /// EOS 11; the other ids have none).
    pub bos_id: Option<u32>,
    /// `tokenizer.ggml.eos_token_id`.
    pub eos_id: Option<u32>,
    /// `tokenizer.ggml.eot_token_id` (end of turn); detected from token text when absent.
    pub eot_id: Option<u32>,
    /// `tokenizer.ggml.eom_token_id` (end of message); detected from token text when absent.
    pub eom_id: Option<u32>,
    /// `tokenizer.ggml.unknown_token_id`.
    pub unk_id: Option<u32>,
    /// `tokenizer.ggml.padding_token_id`.
    pub pad_id: Option<u32>,
    /// `tokenizer.ggml.add_bos_token`; default per model / pre-tokenizer.
    pub add_bos: Option<bool>,
    /// `tokenizer.ggml.add_eos_token`; default false.
    pub add_eos: Option<bool>,
    /// `tokenizer.ggml.add_space_prefix`: SPM prepends a space to text that starts the input or
    /// follows a special token; default true for "llama".
    pub add_space_prefix: Option<bool>,
}

/// Why a [`Tokenizer`] could not be built from a [`VocabSpec`] or Hugging Face files.
#[derive(Debug, thiserror::Error)]
pub enum TokenizerError {
    /// `tokenizer.ggml.model` is neither "gpt2" nor "llama".
    #[error("unsupported tokenizer model '{0}' (supported: gpt2, llama)")]
    UnsupportedModel(String),
    /// The metadata is inconsistent (empty vocabulary, array lengths, unknown pre-tokenizer,
    /// missing or malformed merges, ...); the message says which.
    #[error("invalid tokenizer metadata: {0}")]
    Invalid(String),
    /// A Hugging Face tokenizer file is missing, unreadable or unusable (malformed JSON, an
    /// unknown model type, ...).
    #[error("{path}: {reason}")]
    File {
        /// The file (its path, or its usual name when loaded from bytes).
        path: String,
        /// What is wrong, on one line.
        reason: String,
    },
}

enum Model {
    Spm,
    Bpe(Box<bpe::Bpe>),
}

/// A tokenizer: one GGUF vocabulary (SentencePiece "llama" or GPT-2 byte-level BPE "gpt2",
/// producing the same ids as llama.cpp) or a Hugging Face `tokenizer.json` (producing the same
/// ids as transformers). Immutable once built.
pub struct Tokenizer {
    inner: Inner,
}

enum Inner {
    // Both boxed: the two differ a lot in size and a Tokenizer is moved around by value.
    Gguf(Box<GgufTokenizer>),
    Hf(Box<hf::HfTokenizer>),
}

/// The GGUF (llama.cpp-compatible) implementation.
struct GgufTokenizer {
    vocab: Vocab,
    model: Model,
    special: SpecialMatcher,
    /// GPT-2 byte alphabet, codepoint → byte (BPE rendering).
    unicode_to_byte: Vec<Option<u8>>,
}

impl std::fmt::Debug for Tokenizer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let mut d = f.debug_struct("Tokenizer");
        match &self.inner {
            Inner::Gguf(g) => d.field("kind", &g.vocab.kind),
            Inner::Hf(_) => d.field("kind", &"hf"),
        };
        d.field("n_vocab", &self.n_vocab())
            .field("bos", &self.bos_id())
            .field("eos", &self.eos_id())
            .finish_non_exhaustive()
    }
}

impl Tokenizer {
    /// Build from GGUF tokenizer metadata (see [`crate::model::vocab_spec`]). Applies llama.cpp's
    /// load-time rules: per-model default special ids, control/EOG roles detected from token
    /// text, and renaming of empty token texts to `[EMPTY_<id>]`.
    pub fn from_spec(spec: VocabSpec) -> Result<Self, TokenizerError> {
        Ok(Tokenizer {
            inner: Inner::Gguf(Box::new(GgufTokenizer::from_spec(spec)?)),
        })
    }

    /// Build from a Hugging Face `tokenizer.json` and, when the model has one, its
    /// `tokenizer_config.json`, giving the ids of transformers' `AutoTokenizer` (see
    /// [`Tokenizer::from_hf_bytes`]). Errors name the file at fault.
    pub fn from_hf_files(
        tokenizer_json: &Path,
        tokenizer_config_json: Option<&Path>,
    ) -> Result<Self, TokenizerError> {
        let json = hf::read(tokenizer_json)?;
        let config = tokenizer_config_json.map(hf::read).transpose()?;
        let json_name = tokenizer_json.display().to_string();
        let config_name = tokenizer_config_json.map(|p| p.display().to_string());
        let hf = hf::HfTokenizer::from_bytes(
            &json,
            &json_name,
            config.as_deref().zip(config_name.as_deref()),
        )?;
        Ok(Tokenizer {
            inner: Inner::Hf(Box::new(hf)),
        })
    }

    /// [`Tokenizer::from_hf_files`] from the files' contents (errors call them
    /// `tokenizer.json` and `tokenizer_config.json`).
    ///
    /// The `tokenizers` crate runs the file's pipeline; on top of it the config is applied the
    /// way transformers 5 does at load time: the special tokens it names are added to the
    /// vocabulary, an explicit `add_bos_token` / `add_eos_token` decides what
    /// `encode(.., add_special = true, ..)` adds, `clean_up_tokenization_spaces` applies to
    /// [`Tokenizer::decode`]; truncation and padding stored in the file are ignored. BOS, EOS
    /// and PAD are the config's `bos_token` / `eos_token` / `pad_token` (an explicit `null`
    /// means none); without the key, what the post-processor adds, else a conventional text
    /// (`<s>`, `</s>`, `<pad>`, ...) present in the vocabulary.
    pub fn from_hf_bytes(
        tokenizer_json: &[u8],
        tokenizer_config_json: Option<&[u8]>,
    ) -> Result<Self, TokenizerError> {
        let hf = hf::HfTokenizer::from_bytes(
            tokenizer_json,
            "tokenizer.json",
            tokenizer_config_json.map(|c| (c, "tokenizer_config.json")),
        )?;
        Ok(Tokenizer {
            inner: Inner::Hf(Box::new(hf)),
        })
    }

    /// Token ids for `text`. `add_special`: add BOS/EOS as the model asks; `parse_special`: text
    /// like `<|im_start|>` becomes its special token (llama-tokenize's defaults are both true).
    ///
    /// For GGUF vocabularies, `parse_special = false` still matches user-defined tokens, as
    /// llama.cpp does. For Hugging Face tokenizers this is transformers'
    /// `encode(text, add_special_tokens=add_special, split_special_tokens=!parse_special)`:
    /// `add_special` runs the post-processor (or adds BOS/EOS per the config's
    /// `add_bos_token` / `add_eos_token`), and with `parse_special = false` added tokens marked
    /// special are tokenized as ordinary text while non-special added tokens still match.
    pub fn encode(&self, text: &str, add_special: bool, parse_special: bool) -> Vec<u32> {
        match &self.inner {
            Inner::Gguf(g) => g.encode(text, add_special, parse_special),
            Inner::Hf(h) => h.encode(text, add_special, parse_special),
        }
    }

    /// The BPE pre-tokenizer family of a GGUF BPE vocabulary (`None` for SentencePiece and for
    /// Hugging Face tokenizers, whose pre-tokenizer is in their file).
    pub fn pre_type(&self) -> Option<PreType> {
        match &self.inner {
            Inner::Gguf(g) => g.pre_type(),
            Inner::Hf(_) => None,
        }
    }
    /// Number of tokens in the vocabulary (ids are `0..n_vocab`).
    pub fn n_vocab(&self) -> usize {
        match &self.inner {
            Inner::Gguf(g) => g.vocab.n_tokens(),
            Inner::Hf(h) => h.n_vocab(),
        }
    }
    /// Beginning-of-sequence token, if the vocabulary has one.
    pub fn bos_id(&self) -> Option<u32> {
        match &self.inner {
            Inner::Gguf(g) => g.vocab.bos,
            Inner::Hf(h) => h.bos,
        }
    }
    /// End-of-sequence token, if the vocabulary has one.
    pub fn eos_id(&self) -> Option<u32> {
        match &self.inner {
            Inner::Gguf(g) => g.vocab.eos,
            Inner::Hf(h) => h.eos,
        }
    }
    /// End-of-turn token (from the metadata, or detected from its text as llama.cpp does;
    /// for Hugging Face tokenizers the first of `<|eot_id|>`, `<|im_end|>`, `<end_of_turn>`,
    /// `<|end|>` in the vocabulary).
    pub fn eot_id(&self) -> Option<u32> {
        match &self.inner {
            Inner::Gguf(g) => g.vocab.eot,
            Inner::Hf(h) => h.eot,
        }
    }
    /// Padding token, if the metadata names one.
    pub fn pad_id(&self) -> Option<u32> {
        match &self.inner {
            Inner::Gguf(g) => g.vocab.pad,
            Inner::Hf(h) => h.pad,
        }
    }
    /// Whether [`Tokenizer::encode`] with `add_special` prepends BOS.
    pub fn add_bos(&self) -> bool {
        match &self.inner {
            Inner::Gguf(g) => g.vocab.add_bos,
            Inner::Hf(h) => h.add_bos,
        }
    }
    /// Whether [`Tokenizer::encode`] with `add_special` appends EOS.
    pub fn add_eos(&self) -> bool {
        match &self.inner {
            Inner::Gguf(g) => g.vocab.add_eos,
            Inner::Hf(h) => h.add_eos,
        }
    }
    /// Whether `id` ends generation (EOS, EOT, EOM, and tokens like `<|endoftext|>` detected
    /// from their text).
    pub fn is_eog(&self, id: u32) -> bool {
        self.eog_ids().binary_search(&id).is_ok()
    }
    /// All end-of-generation ids, ascending.
    pub fn eog_ids(&self) -> &[u32] {
        match &self.inner {
            Inner::Gguf(g) => &g.vocab.eog,
            Inner::Hf(h) => &h.eog,
        }
    }
    /// The stored text of a token (GPT-2 byte alphabet / U+2581 spaces, not rendered).
    pub fn token_text(&self, id: u32) -> Option<&str> {
        match &self.inner {
            Inner::Gguf(g) => g.vocab.texts.get(id as usize).map(String::as_str),
            Inner::Hf(h) => h.token_text(id),
        }
    }
    /// The id whose stored text is exactly `text`.
    pub fn token_id(&self, text: &str) -> Option<u32> {
        match &self.inner {
            Inner::Gguf(g) => g.vocab.text_to_token(text.as_bytes()),
            Inner::Hf(h) => h.token_id(text),
        }
    }
    /// Whether a token is a control token (rendered only when special tokens are shown). For
    /// Hugging Face tokenizers: an added token marked special.
    pub fn is_control(&self, id: u32) -> bool {
        match &self.inner {
            Inner::Gguf(g) => g.vocab.attr(id) & attr::CONTROL != 0,
            Inner::Hf(h) => h.is_control(id),
        }
    }

    /// The bytes a token renders to: special tokens as their text, byte tokens as their byte,
    /// normal tokens with the GPT-2 alphabet / U+2581 undone. Unused tokens and unknown ids
    /// render as nothing. May be a partial UTF-8 sequence. For Hugging Face tokenizers this
    /// follows the file's decoder token by token, except that a leading space the decoder
    /// strips from the whole text is kept.
    pub fn token_bytes(&self, id: u32) -> Vec<u8> {
        match &self.inner {
            Inner::Gguf(g) => g.token_bytes(id),
            Inner::Hf(h) => h.token_bytes(id),
        }
    }

    /// Text of `ids` like llama.cpp's `llama_detokenize(.., remove_special=false,
    /// unparse_special=true)`: special tokens as their text, the space-prefix of SPM
    /// vocabularies removed from the first token, and the vocabulary's
    /// clean-up-tokenization-spaces rule applied. For Hugging Face tokenizers, transformers'
    /// `decode(ids, skip_special_tokens=False)`. Unknown ids are skipped; invalid UTF-8
    /// becomes U+FFFD.
    pub fn decode(&self, ids: &[u32]) -> String {
        match &self.inner {
            Inner::Gguf(g) => g.decode(ids),
            Inner::Hf(h) => h.decode(ids),
        }
    }
}

impl GgufTokenizer {
    fn from_spec(mut spec: VocabSpec) -> Result<Self, TokenizerError> {
        let merges = spec.merges.take();
        let vocab = Vocab::build(spec)?;
        let model = match vocab.kind {
            Kind::Spm => Model::Spm,
            Kind::Bpe(opts) => {
                let merges = merges.ok_or_else(|| {
                    TokenizerError::Invalid("gpt2 tokenizer without merges".into())
                })?;
                Model::Bpe(Box::new(bpe::Bpe::build(&vocab, opts, &merges)?))
            }
        };
        let special = SpecialMatcher::build(&vocab);
        Ok(GgufTokenizer {
            vocab,
            model,
            special,
            unicode_to_byte: unicode::unicode_to_byte_table(),
        })
    }

    fn encode(&self, text: &str, add_special: bool, parse_special: bool) -> Vec<u32> {
        let v = &self.vocab;
        let fragments = self.special.partition(v, text, parse_special);
        let mut out = Vec::with_capacity(text.len() / 3 + 2);
        if add_special && v.add_bos {
            out.extend(v.bos);
        }
        match &self.model {
            Model::Spm => {
                // A leading space is added to text that starts the input or follows a special
                // token, when the vocabulary asks for a space prefix.
                let mut prev_special = true;
                let mut buf = String::new();
                for f in &fragments {
                    match f {
                        Fragment::Text(r) => {
                            buf.clear();
                            if v.add_space_prefix && prev_special {
                                buf.push(' ');
                            }
                            buf.push_str(text.get(r.clone()).unwrap_or_default());
                            let escaped = buf.replace(' ', "\u{2581}");
                            spm::tokenize(v, &escaped, &mut out);
                            prev_special = false;
                        }
                        Fragment::Token(id) => {
                            out.push(*id);
                            prev_special = true;
                        }
                    }
                }
            }
            Model::Bpe(bpe) => {
                for f in &fragments {
                    match f {
                        Fragment::Text(r) => {
                            bpe.tokenize(v, text.get(r.clone()).unwrap_or_default(), &mut out)
                        }
                        Fragment::Token(id) => out.push(*id),
                    }
                }
            }
        }
        if add_special && v.add_eos {
            out.extend(v.eos);
        }
        out
    }

    fn pre_type(&self) -> Option<PreType> {
        match self.vocab.kind {
            Kind::Spm => None,
            Kind::Bpe(opts) => Some(opts.pre),
        }
    }

    fn token_bytes(&self, id: u32) -> Vec<u8> {
        let v = &self.vocab;
        let Some(text) = v.texts.get(id as usize) else {
            return Vec::new();
        };
        let a = v.attr(id);
        if a & (attr::UNKNOWN | attr::CONTROL | attr::USER_DEFINED) != 0 {
            return text.as_bytes().to_vec();
        }
        if a & attr::NORMAL != 0 {
            return match self.model {
                Model::Spm => text.replace('\u{2581}', " ").into_bytes(),
                Model::Bpe(_) => self.gpt2_unmap(text),
            };
        }
        if a & attr::BYTE != 0 {
            return v.token_to_byte(id).map(|b| vec![b]).unwrap_or_default();
        }
        // UNUSED-only and undefined tokens render as nothing.
        Vec::new()
    }

    /// Undoes the GPT-2 byte alphabet. A character outside it is rendered the way llama.cpp
    /// does (`[UNK_BYTE_0x..<token>]`) so output stays byte-identical to the reference.
    fn gpt2_unmap(&self, text: &str) -> Vec<u8> {
        let mut out = Vec::with_capacity(text.len());
        for c in text.chars() {
            match self.unicode_to_byte.get(c as usize).copied().flatten() {
                Some(b) => out.push(b),
                None => {
                    out.extend_from_slice(b"[UNK_BYTE_0x");
                    let mut buf = [0u8; 4];
                    for b in c.encode_utf8(&mut buf).bytes() {
                        out.extend_from_slice(format!("{b:02x}").as_bytes());
                    }
                    out.extend_from_slice(text.as_bytes());
                    out.push(b']');
                }
            }
        }
        out
    }

    fn decode(&self, ids: &[u32]) -> String {
        let mut bytes = Vec::new();
        let mut remove_space = self.vocab.add_space_prefix;
        for &id in ids {
            let piece = self.token_bytes(id);
            let piece = if remove_space && piece.first() == Some(&b' ') {
                &piece[1..]
            } else {
                &piece[..]
            };
            bytes.extend_from_slice(piece);
            remove_space = false;
        }
        if self.vocab.clean_spaces {
            clean_up_spaces(&mut bytes);
        }
        String::from_utf8_lossy(&bytes).into_owned()
    }
}

/// llama.cpp's `clean_spaces` post-processing of detokenized text: drop the space before
/// `? ! . ,`, around a lone `'`, and before the contractions `'s 'm 're 've`.
fn clean_up_spaces(text: &mut Vec<u8>) {
    // Pass 1: " ?", " !", " .", " ,".
    let n = text.len();
    let mut total = usize::from(n > 0);
    for i in 1..n {
        let x = text[i];
        if text[i - 1] == b' ' && matches!(x, b'?' | b'!' | b'.' | b',') {
            total -= 1;
        }
        text[total] = x;
        total += 1;
    }
    text.truncate(total);

    // Pass 2: " ' " → "'".
    let n = text.len();
    let mut total = usize::from(n > 0);
    let mut i = 1;
    while i < n {
        let x = text[i];
        if x == b'\'' && i + 1 < n && text[i - 1] == b' ' && text[i + 1] == b' ' {
            total -= 1;
            i += 1;
            text[i] = 0; // the reference blanks the skipped space in place
        }
        text[total] = x;
        total += 1;
        i += 1;
    }
    text.truncate(total);

    // Pass 3: " 's", " 'm", " 're", " 've" lose their space.
    let n = text.len();
    let mut total = usize::from(n > 0);
    for i in 1..n {
        let x = text[i];
        if text[i - 1] == b' ' && x == b'\'' && i + 1 < n {
            let x1 = text[i + 1];
            if x1 == b's' || x1 == b'm' {
                total -= 1;
            } else if x1 != b't' && x1 != b'd' && i + 2 < n {
                let x2 = text[i + 2];
                if (x1 == b'r' || x1 == b'v') && x2 == b'e' {
                    total -= 1;
                }
            }
        }
        text[total] = x;
        total += 1;
    }
    text.truncate(total);
}

/// Streams decoded text, emitting only whole UTF-8 characters.
#[derive(Default)]
pub struct StreamDecoder {
    pending: Vec<u8>,
}

impl StreamDecoder {
    /// A decoder with nothing pending.
    pub fn new() -> Self {
        Self::default()
    }
    /// Feed one token; returns the text that became complete.
    pub fn push(&mut self, tok: &Tokenizer, id: u32) -> String {
        self.pending.extend_from_slice(&tok.token_bytes(id));
        let mut out = String::new();
        stream::drain_complete(&mut self.pending, &mut out);
        out
    }
    /// Whatever is left at the end (invalid bytes become U+FFFD).
    pub fn finish(&mut self) -> String {
        let out = String::from_utf8_lossy(&self.pending).into_owned();
        self.pending.clear();
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn clean_spaces_matches_reference_rules() {
        let mut t = b"Hello , world ! It 's a ' b ' test 've".to_vec();
        clean_up_spaces(&mut t);
        assert_eq!(
            String::from_utf8_lossy(&t),
            "Hello, world! It's a'b'test've"
        );
    }
}
