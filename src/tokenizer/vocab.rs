//! The vocabulary as llama.cpp's loader sees it: token texts, scores, per-token attributes,
//! special ids with their per-model defaults, and the end-of-generation set.
//!
//! llama.cpp does not take special-token roles only from the metadata: it also recognises
//! well-known token texts (`<|im_end|>`, `<end_of_turn>`, FIM markers, ...), promotes them to
//! CONTROL, and collects the end-of-generation set from them. Those rules change which
//! strings are parsed as special tokens and when generation stops, so we apply the same ones.

use super::hash::TextIndex;
use super::pretokenize::PreOptions;
use super::{TokenizerError, VocabSpec};

/// llama.cpp's `llama_token_attr` bits.
pub(crate) mod attr {
    pub const UNKNOWN: u16 = 1 << 0;
    pub const UNUSED: u16 = 1 << 1;
    pub const NORMAL: u16 = 1 << 2;
    pub const CONTROL: u16 = 1 << 3;
    pub const USER_DEFINED: u16 = 1 << 4;
    pub const BYTE: u16 = 1 << 5;
    pub const LSTRIP: u16 = 1 << 7;
    pub const RSTRIP: u16 = 1 << 8;
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Kind {
    /// `llama`: SentencePiece with scores and byte fallback.
    Spm,
    /// `gpt2`: byte-level BPE with merges and a pre-tokenizer.
    Bpe(PreOptions),
}

pub(crate) struct Vocab {
    pub kind: Kind,
    pub texts: Vec<String>,
    pub scores: Vec<f32>,
    pub attrs: Vec<u16>,
    pub index: TextIndex,
    pub bos: Option<u32>,
    pub eos: Option<u32>,
    pub eot: Option<u32>,
    pub unk: Option<u32>,
    pub pad: Option<u32>,
    pub add_bos: bool,
    pub add_eos: bool,
    pub add_space_prefix: bool,
    pub clean_spaces: bool,
    /// Sorted ids of end-of-generation tokens.
    pub eog: Vec<u32>,
}

/// Texts llama.cpp treats as end-of-turn when `tokenizer.ggml.eot_token_id` is absent.
const EOT_TEXTS: &[&str] = &[
    "<|eot_id|>",
    "<|im_end|>",
    "<|end|>",
    "<end_of_turn>",
    "<|endoftext|>",
    "<|end_of_text|>",
    "<EOT>",
    "_<EOT>",
    "[EOT]",
    "<｜end▁of▁sentence｜>",
    "<end_of_utterance>",
];
const EOM_TEXTS: &[&str] = &["<|eom_id|>"];
const FIM_PRE_TEXTS: &[&str] = &[
    "<|fim_prefix|>",
    "<fim-prefix>",
    "<fim_prefix>",
    "<｜fim▁begin｜>",
    "<PRE>",
    "▁<PRE>",
    "<|code_prefix|>",
    "<|prefix|>",
];
const FIM_SUF_TEXTS: &[&str] = &[
    "<|fim_suffix|>",
    "<fim-suffix>",
    "<fim_suffix>",
    "<｜fim▁hole｜>",
    "<SUF>",
    "▁<SUF>",
    "<|code_suffix|>",
    "<|suffix|>",
];
const FIM_MID_TEXTS: &[&str] = &[
    "<|fim_middle|>",
    "<fim-middle>",
    "<fim_middle>",
    "<｜fim▁end｜>",
    "<MID>",
    "▁<MID>",
    "<|code_middle|>",
    "<|middle|>",
];
const FIM_PAD_TEXTS: &[&str] = &["<|fim_pad|>", "<fim-pad>", "<fim_pad>", "<PAD>", "[PAD]"];
const FIM_REP_TEXTS: &[&str] = &[
    "<|fim_repo|>",
    "<|repo_name|>",
    "<fim-repo>",
    "<REPO>",
    "<reponame>",
];
const FIM_SEP_TEXTS: &[&str] = &["<|file_sep|>"];
/// Texts that end generation whatever the metadata says.
const EOG_TEXTS: &[&str] = &[
    "<|eot_id|>",
    "<|im_end|>",
    "<|end|>",
    "<|return|>",
    "<|call|>",
    "<|flush|>",
    "<|calls|>",
    "<end_of_turn>",
    "<|endoftext|>",
    "</s>",
    "<|eom_id|>",
    "<EOT>",
    "_<EOT>",
    "[EOT]",
    "[EOS]",
    "<|end_of_text|>",
    "<end_of_utterance>",
    "<eos>",
    "<turn|>",
    "<|tool_response>",
    "<｜end▁of▁sentence｜>",
    "[e~[",
];

fn type_to_attr(t: i32) -> u16 {
    match t {
        1 => attr::NORMAL,
        2 => attr::UNKNOWN,
        3 => attr::CONTROL,
        4 => attr::USER_DEFINED,
        5 => attr::UNUSED,
        6 => attr::BYTE,
        _ => 0, // undefined
    }
}

impl Vocab {
    pub fn build(spec: VocabSpec) -> Result<Vocab, TokenizerError> {
        let VocabSpec {
            model,
            pre,
            mut tokens,
            scores,
            token_types,
            merges: _,
            bos_id,
            eos_id,
            eot_id,
            eom_id,
            unk_id,
            pad_id,
            add_bos,
            add_eos,
            add_space_prefix,
        } = spec;

        // Per-model defaults, as llama.cpp's loader sets them before reading the metadata.
        let (kind, mut bos, mut eos, mut unk, def_add_bos, def_space_prefix, clean_spaces) =
            match model.as_str() {
                "llama" => (Kind::Spm, Some(1), Some(2), Some(0), true, true, false),
                "gpt2" => {
                    let opts = PreOptions::from_name(pre.as_deref()).ok_or_else(|| {
                    TokenizerError::Invalid(format!(
                        "unsupported pre-tokenizer '{}' (supported: default, llama3, qwen2, gpt2, smollm families)",
                        pre.as_deref().unwrap_or("")
                    ))
                })?;
                    (
                        Kind::Bpe(opts),
                        Some(11),
                        Some(11),
                        None,
                        opts.add_bos,
                        false,
                        opts.clean_spaces,
                    )
                }
                other => return Err(TokenizerError::UnsupportedModel(other.to_string())),
            };
        if tokens.is_empty() {
            return Err(TokenizerError::Invalid("empty token list".into()));
        }
        if tokens.len() >= u32::MAX as usize {
            return Err(TokenizerError::Invalid("too many tokens".into()));
        }
        let n = tokens.len();

        // Empty texts would be unaddressable; llama.cpp renames them the same way.
        for (i, t) in tokens.iter_mut().enumerate() {
            if t.is_empty() {
                *t = format!("[EMPTY_{i}]");
            }
        }
        let scores = match scores {
            Some(s) if s.len() >= n => s[..n].to_vec(),
            Some(s) => {
                return Err(TokenizerError::Invalid(format!(
                    "{} scores for {} tokens",
                    s.len(),
                    n
                )));
            }
            None => vec![0.0; n],
        };
        let mut attrs = match token_types {
            Some(t) if t.len() >= n => t[..n].iter().map(|&t| type_to_attr(t)).collect(),
            Some(t) => {
                return Err(TokenizerError::Invalid(format!(
                    "{} token types for {} tokens",
                    t.len(),
                    n
                )));
            }
            None => vec![attr::NORMAL; n],
        };
        let index = TextIndex::build(&tokens);

        // Special ids: a default outside the vocabulary is disabled; a bad value in the file
        // is ignored in favour of the default.
        let in_range = |id: Option<u32>| id.filter(|&i| (i as usize) < n);
        let pick = |def: Option<u32>, given: Option<u32>| match given {
            Some(g) if (g as usize) < n => Some(g),
            _ => in_range(def),
        };
        bos = pick(bos, bos_id);
        eos = pick(eos, eos_id);
        unk = pick(unk, unk_id);
        let mut eot = pick(None, eot_id);
        let mut eom = pick(None, eom_id);
        let pad = pick(None, pad_id);

        let lookup = |s: &str| index.get(&tokens, s.as_bytes());
        // Role detection by text. llama.cpp walks a hash map, so when several candidate
        // texts exist the winner is unspecified; we take the first candidate in list order.
        let detect = |slot: &mut Option<u32>, texts: &[&str], attrs: &mut Vec<u16>| {
            if slot.is_some() {
                return;
            }
            if let Some(id) = texts.iter().find_map(|t| lookup(t)) {
                *slot = Some(id);
                attrs[id as usize] |= attr::CONTROL;
            }
        };
        let (mut fim_pre, mut fim_suf, mut fim_mid, mut fim_pad, mut fim_rep, mut fim_sep) =
            (None, None, None, None, None, None);
        detect(&mut eot, EOT_TEXTS, &mut attrs);
        detect(&mut eom, EOM_TEXTS, &mut attrs);
        detect(&mut fim_pre, FIM_PRE_TEXTS, &mut attrs);
        detect(&mut fim_suf, FIM_SUF_TEXTS, &mut attrs);
        detect(&mut fim_mid, FIM_MID_TEXTS, &mut attrs);
        detect(&mut fim_pad, FIM_PAD_TEXTS, &mut attrs);
        detect(&mut fim_rep, FIM_REP_TEXTS, &mut attrs);
        detect(&mut fim_sep, FIM_SEP_TEXTS, &mut attrs);

        // Control tokens named "unused" are placeholders.
        for (a, t) in attrs.iter_mut().zip(tokens.iter()) {
            if *a & attr::CONTROL != 0 && t.contains("unused") {
                *a |= attr::UNUSED;
            }
        }

        let mut eog: Vec<u32> = [fim_pad, fim_rep, fim_sep].into_iter().flatten().collect();
        for t in EOG_TEXTS {
            if let Some(id) = lookup(t) {
                eog.push(id);
                attrs[id as usize] |= attr::CONTROL;
            }
        }
        // gpt-oss renders these channel markers even when not asked for special tokens.
        for t in ["<|channel|>", "<|message|>", "<|start|>", "<|constrain|>"] {
            if let Some(id) = lookup(t) {
                attrs[id as usize] = attr::USER_DEFINED;
            }
        }
        eog.extend([eos, eot, eom].into_iter().flatten());
        eog.sort_unstable();
        eog.dedup();

        let has = |eog: &[u32], s: &str| eog.iter().any(|&id| tokens[id as usize] == s);
        // o200k_harmony / solar-open: "<|end|>" ends a message, not the generation.
        if (has(&eog, "<|return|>") && has(&eog, "<|call|>")
            || has(&eog, "<|calls|>") && has(&eog, "<|flush|>"))
            && has(&eog, "<|end|>")
        {
            if let Some(pos) = eog.iter().position(|&id| tokens[id as usize] == "<|end|>") {
                let id = eog.remove(pos);
                attrs[id as usize] = attr::USER_DEFINED;
            }
        }
        // Gemma 4 / PLaMo: "</s>" is an ordinary token there.
        if (has(&eog, "<|tool_response>") || has(&eog, "<|plamo:eos|>")) && has(&eog, "</s>") {
            if let Some(pos) = eog.iter().position(|&id| tokens[id as usize] == "</s>") {
                let id = eog.remove(pos);
                attrs[id as usize] = attr::NORMAL;
            }
        }

        let add_bos = add_bos.unwrap_or(def_add_bos);
        let add_eos = add_eos.unwrap_or(false);
        let add_space_prefix = add_space_prefix.unwrap_or(def_space_prefix);

        Ok(Vocab {
            kind,
            texts: tokens,
            scores,
            attrs,
            index,
            bos,
            eos,
            eot,
            unk,
            pad,
            add_bos,
            add_eos,
            add_space_prefix,
            clean_spaces,
            eog,
        })
    }

    #[inline]
    pub fn n_tokens(&self) -> usize {
        self.texts.len()
    }

    #[inline]
    pub fn text_to_token(&self, text: &[u8]) -> Option<u32> {
        self.index.get(&self.texts, text)
    }

    #[inline]
    pub fn attr(&self, id: u32) -> u16 {
        self.attrs.get(id as usize).copied().unwrap_or(0)
    }

    /// SentencePiece byte fallback: `<0xXX>`, else the byte itself as a token.
    pub fn byte_to_token_spm(&self, b: u8) -> Option<u32> {
        let hex = format!("<0x{b:02X}>");
        self.text_to_token(hex.as_bytes())
            .or_else(|| self.text_to_token(&[b]))
    }

    /// The byte a BYTE-type token stands for: the two characters after `<0x`, parsed like
    /// `strtol(.., 16)` (leading hex digits only; 0 when there are none).
    pub fn token_to_byte(&self, id: u32) -> Option<u8> {
        let t = self.texts.get(id as usize)?.as_bytes();
        if t.len() < 3 {
            return None; // llama.cpp's substr(3, 2) would throw here
        }
        let hex = &t[3..t.len().min(5)];
        let mut v: u32 = 0;
        for &c in hex {
            match (c as char).to_digit(16) {
                Some(d) => v = v * 16 + d,
                None => break,
            }
        }
        Some(v as u8)
    }
}
