//! Pre-tokenization for byte-level BPE: splitting text into words before merging.
//!
//! llama.cpp selects, per `tokenizer.ggml.pre`, a *list* of regexes that are applied in
//! sequence: each one re-splits the pieces the previous one produced, and a piece boundary
//! is never crossed by a later regex. It runs the common GPT-2 / Llama-3 / Qwen2 patterns
//! through hand-written matchers (whose behaviour differs from a true regex engine in small
//! ways, e.g. `\s+(?!\S)` at piece ends) and the rest through `std::regex` over a text in
//! which every non-ASCII codepoint is collapsed to a one-byte stand-in for its category.
//! We reproduce both kinds by hand here, on codepoint indices, so that the word boundaries
//! are identical to the reference for every input.

use std::ops::Range;

use super::unicode::{self, Flags, CAT_NUMBER, CAT_PUNCTUATION};

/// The pre-tokenizer families we implement (named after llama.cpp's `LLAMA_VOCAB_PRE_TYPE_*`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PreType {
    /// `[\p{P}\$\+<=>\^~\|]+`, GPT-2, `\p{N}+`, `[0-9][0-9][0-9]`.
    Default,
    /// Llama 3 pattern (`\p{N}{1,3}`, case-insensitive contractions, newline handling).
    Llama3,
    /// Like Llama 3 but single digits.
    Qwen2,
    /// The original GPT-2 pattern.
    Gpt2,
    /// Single digits, then the GPT-2 pattern (StarCoder, SmolLM, Command-R, ...).
    Smollm,
}

/// Per-pre-type vocabulary flags llama.cpp sets alongside the regexes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PreOptions {
    pub pre: PreType,
    /// A word that is already a whole token is emitted without running the merges.
    pub ignore_merges: bool,
    /// Default for `add_bos` when the file does not say.
    pub add_bos: bool,
    /// llama.cpp's `clean_up_tokenization_spaces` applied when detokenizing.
    pub clean_spaces: bool,
}

impl PreOptions {
    /// Maps a `tokenizer.ggml.pre` value to its family, using the same name lists as
    /// llama.cpp's vocabulary loader for the families implemented here.
    pub fn from_name(name: Option<&str>) -> Option<PreOptions> {
        let opts = |pre, ignore_merges, add_bos, clean_spaces| PreOptions {
            pre,
            ignore_merges,
            add_bos,
            clean_spaces,
        };
        let name = match name {
            None | Some("") | Some("default") => {
                return Some(opts(PreType::Default, false, false, true))
            }
            Some(n) => n,
        };
        Some(match name {
            "llama3" | "llama-v3" | "llama-bpe" | "falcon3" | "falcon-h1" | "pixtral"
            | "midm-2.0" | "lfm2" | "jina-v5-nano" => opts(PreType::Llama3, true, true, true),
            "dbrx" | "smaug-bpe" => opts(PreType::Llama3, false, false, true),
            "qwen2" | "deepseek-r1-qwen" | "kormo" | "f2llmv2" => {
                opts(PreType::Qwen2, false, false, false)
            }
            "stablelm2" | "megrez" => opts(PreType::Qwen2, false, false, true),
            "hunyuan" | "solar-open" | "grok-2" => opts(PreType::Qwen2, false, false, false),
            "gpt-2" | "phi-2" | "jina-es" | "jina-de" | "gigachat" | "jina-v2-es"
            | "jina-v2-de" | "a.x-4.0" | "mellum" | "modern-bert" | "exaone4" | "mpt" | "olmo"
            | "jais" | "jina-v1-en" | "jina-v2-code" | "roberta-bpe" => {
                opts(PreType::Gpt2, false, false, true)
            }
            "trillion" | "granite-docling" => opts(PreType::Gpt2, false, false, false),
            "smollm" | "command-r" => opts(PreType::Smollm, false, false, false),
            "starcoder" | "refact" | "codeshell" | "exaone" | "minerva-7b" | "mellum2" => {
                opts(PreType::Smollm, false, false, true)
            }
            _ => return None,
        })
    }
}

/// One entry of llama.cpp's regex list for a pre-type.
#[derive(Clone, Copy, Debug)]
enum Step {
    /// `'s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)` (custom matcher).
    Gpt2,
    /// Llama 3 pattern, `\p{N}{1,3}` (custom matcher).
    Llama3,
    /// Qwen2 pattern, `\p{N}` (custom matcher).
    Qwen2,
    /// `\p{N}`: every number codepoint on its own.
    EachNumber,
    /// `\p{N}+`.
    NumberRuns,
    /// `[\p{P}\$\+<=>\^~\|]+`.
    PunctRuns,
    /// `[0-9][0-9][0-9]`.
    DigitTriples,
}

fn steps(pre: PreType) -> &'static [Step] {
    match pre {
        PreType::Default => &[
            Step::PunctRuns,
            Step::Gpt2,
            Step::NumberRuns,
            Step::DigitTriples,
        ],
        PreType::Llama3 => &[Step::Llama3],
        PreType::Qwen2 => &[Step::Qwen2],
        PreType::Gpt2 => &[Step::Gpt2],
        PreType::Smollm => &[Step::EachNumber, Step::Gpt2],
    }
}

/// Splits `text` into words; returns byte ranges into `text`, in order, covering it exactly.
pub fn split(text: &str, pre: PreType) -> Vec<Range<usize>> {
    if text.is_empty() {
        return Vec::new();
    }
    let mut cpts = Vec::with_capacity(text.len());
    let mut byte_pos = Vec::with_capacity(text.len() + 1);
    for (i, c) in text.char_indices() {
        cpts.push(c as u32);
        byte_pos.push(i);
    }
    byte_pos.push(text.len());
    let flags: Vec<Flags> = cpts.iter().map(|&c| unicode::flags(c)).collect();

    // Piece lengths in codepoints, as llama.cpp's `bpe_offsets`.
    let mut pieces = vec![cpts.len()];
    for step in steps(pre) {
        let t = Text {
            cpts: &cpts,
            flags: &flags,
        };
        pieces = match step {
            Step::Gpt2 => t.split_custom(&pieces, Pattern::Gpt2),
            Step::Llama3 => t.split_custom(&pieces, Pattern::Llama3),
            Step::Qwen2 => t.split_custom(&pieces, Pattern::Qwen2),
            Step::EachNumber => t.split_class(&pieces, is_collapsed_number, false),
            Step::NumberRuns => t.split_class(&pieces, is_collapsed_number, true),
            Step::PunctRuns => t.split_class(&pieces, is_punct_or_listed_symbol, true),
            Step::DigitTriples => t.split_digit_triples(&pieces),
        };
    }

    let mut out = Vec::with_capacity(pieces.len());
    let mut start = 0usize;
    for len in pieces {
        let end = start + len;
        out.push(byte_pos[start]..byte_pos[end]);
        start = end;
    }
    out
}

/// `\p{N}` as llama.cpp's std::regex path sees it: ASCII digits, or a non-ASCII,
/// non-whitespace codepoint whose category is "number".
fn is_collapsed_number(c: u32, f: Flags) -> bool {
    if c < 0x80 {
        (b'0' as u32..=b'9' as u32).contains(&c)
    } else {
        !f.whitespace && f.cat == CAT_NUMBER
    }
}

/// `[\p{P}\$\+<=>\^~\|]` as llama.cpp's std::regex path sees it. Its ASCII list for `\p{P}`
/// is exactly the ASCII punctuation category, and the listed symbols are all ASCII
/// symbols except the backtick.
fn is_punct_or_listed_symbol(c: u32, f: Flags) -> bool {
    if c < 0x80 {
        let b = c as u8;
        b.is_ascii_punctuation() && b != b'`'
    } else {
        !f.whitespace && f.cat == CAT_PUNCTUATION
    }
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Pattern {
    Gpt2,
    Llama3,
    Qwen2,
}

const OUT_OF_RANGE: u32 = 0xFFFF_FFFF;

struct Text<'a> {
    cpts: &'a [u32],
    flags: &'a [Flags],
}

/// A view of one piece `[ini, end)` in which positions outside read as "nothing"
/// (llama.cpp's `OUT_OF_RANGE` codepoint and empty flags), so matchers stop at piece edges.
struct Piece<'a> {
    t: &'a Text<'a>,
    ini: usize,
    end: usize,
}

impl Piece<'_> {
    #[inline]
    fn cpt(&self, pos: usize) -> u32 {
        if pos >= self.ini && pos < self.end {
            self.t.cpts[pos]
        } else {
            OUT_OF_RANGE
        }
    }
    #[inline]
    fn flags(&self, pos: usize) -> Flags {
        if pos >= self.ini && pos < self.end {
            self.t.flags[pos]
        } else {
            Flags::default()
        }
    }
}

/// Lowercases only what matters for the contraction check: the only codepoints llama.cpp's
/// case table maps onto `s t m d r e v l` are their ASCII capitals.
#[inline]
fn ascii_lower(c: u32) -> u32 {
    if (b'A' as u32..=b'Z' as u32).contains(&c) {
        c + 32
    } else {
        c
    }
}

impl Text<'_> {
    /// The hand-written matchers of llama.cpp's `unicode_regex_split_custom_{gpt2,llama3,qwen2}`.
    fn split_custom(&self, pieces: &[usize], pat: Pattern) -> Vec<usize> {
        let mut out = Vec::with_capacity(pieces.len());
        let mut start = 0usize;
        for &len in pieces {
            let p = Piece {
                t: self,
                ini: start,
                end: start + len,
            };
            start += len;
            let end = p.end;
            let mut pos = p.ini;
            let mut prev_end = p.ini;
            // Emits the word ending at `e` (if non-empty); returns its length.
            let mut add = |e: usize, out: &mut Vec<usize>| -> usize {
                let n = e - prev_end;
                if n > 0 {
                    out.push(n);
                }
                prev_end = e;
                n
            };
            let fold = |c: u32| {
                if pat == Pattern::Gpt2 {
                    c
                } else {
                    ascii_lower(c)
                }
            };
            while pos < end {
                let cpt = p.cpt(pos);
                let fl = p.flags(pos);

                // Contractions: 's 't 're 've 'm 'll 'd (case-insensitive except GPT-2).
                if cpt == '\'' as u32 && pos + 1 < end {
                    let n1 = fold(p.cpt(pos + 1));
                    if [b's', b't', b'm', b'd'].iter().any(|&b| n1 == b as u32) {
                        pos += add(pos + 2, &mut out);
                        continue;
                    }
                    if pos + 2 < end {
                        let n2 = fold(p.cpt(pos + 2));
                        let is = |a: u8, b: u8| n1 == a as u32 && n2 == b as u32;
                        if is(b'r', b'e') || is(b'v', b'e') || is(b'l', b'l') {
                            pos += add(pos + 3, &mut out);
                            continue;
                        }
                    }
                }

                if pat == Pattern::Gpt2 {
                    let mut f2 = if cpt == ' ' as u32 {
                        p.flags(pos + 1)
                    } else {
                        fl
                    };
                    // ` ?\p{L}+`
                    if f2.is_letter() {
                        pos += (cpt == ' ' as u32) as usize;
                        while f2.is_letter() {
                            pos += 1;
                            f2 = p.flags(pos);
                        }
                        add(pos, &mut out);
                        continue;
                    }
                    // ` ?\p{N}+`
                    if f2.is_number() {
                        pos += (cpt == ' ' as u32) as usize;
                        while f2.is_number() {
                            pos += 1;
                            f2 = p.flags(pos);
                        }
                        add(pos, &mut out);
                        continue;
                    }
                    // ` ?[^\s\p{L}\p{N}]+`
                    let other = |f: Flags| {
                        !(f.is_whitespace() || f.is_letter() || f.is_number()) && f.is_defined()
                    };
                    if other(f2) {
                        pos += (cpt == ' ' as u32) as usize;
                        while other(f2) {
                            pos += 1;
                            f2 = p.flags(pos);
                        }
                        add(pos, &mut out);
                        continue;
                    }
                } else {
                    // `[^\r\n\p{L}\p{N}]?\p{L}+`
                    if !(cpt == '\r' as u32 || cpt == '\n' as u32 || fl.is_number())
                        && (fl.is_letter() || p.flags(pos + 1).is_letter())
                    {
                        pos += 1;
                        while p.flags(pos).is_letter() {
                            pos += 1;
                        }
                        add(pos, &mut out);
                        continue;
                    }
                    if fl.is_number() {
                        if pat == Pattern::Llama3 {
                            // `\p{N}{1,3}`
                            let mut ini = pos;
                            while p.flags(pos).is_number() {
                                pos += 1;
                                if pos - ini >= 3 {
                                    add(pos, &mut out);
                                    ini = pos;
                                }
                            }
                            add(pos, &mut out);
                        } else {
                            // `\p{N}`
                            pos += 1;
                            add(pos, &mut out);
                        }
                        continue;
                    }
                    // ` ?[^\s\p{L}\p{N}]+[\r\n]*` (note: the guard tests the first
                    // codepoint's own flags, as the reference does)
                    let mut f2 = if cpt == ' ' as u32 {
                        p.flags(pos + 1)
                    } else {
                        fl
                    };
                    let other = |f: Flags| !(f.is_whitespace() || f.is_letter() || f.is_number());
                    if other(f2) && fl.is_defined() {
                        pos += (cpt == ' ' as u32) as usize;
                        while other(f2) && f2.is_defined() {
                            pos += 1;
                            f2 = p.flags(pos);
                        }
                        let mut c2 = p.cpt(pos);
                        while c2 == '\r' as u32 || c2 == '\n' as u32 {
                            pos += 1;
                            c2 = p.cpt(pos);
                        }
                        add(pos, &mut out);
                        continue;
                    }
                }

                let mut num_ws = 0usize;
                let mut last_rn_end = 0usize;
                while p.flags(pos + num_ws).is_whitespace() {
                    if pat != Pattern::Gpt2 {
                        let c2 = p.cpt(pos + num_ws);
                        if c2 == '\r' as u32 || c2 == '\n' as u32 {
                            last_rn_end = pos + num_ws + 1;
                        }
                    }
                    num_ws += 1;
                }
                // `\s*[\r\n]+`
                if last_rn_end > 0 {
                    pos = last_rn_end;
                    add(pos, &mut out);
                    continue;
                }
                // `\s+(?!\S)`: leave the last whitespace to prefix the next word, unless the
                // run reaches the end of the piece.
                if num_ws > 1 && p.cpt(pos + num_ws) != OUT_OF_RANGE {
                    pos += num_ws - 1;
                    add(pos, &mut out);
                    continue;
                }
                // `\s+`
                if num_ws > 0 {
                    pos += num_ws;
                    add(pos, &mut out);
                    continue;
                }
                // No alternative matched: a single codepoint on its own.
                pos += 1;
                add(pos, &mut out);
            }
        }
        out
    }

    /// A one-character-class regex, either `[class]` (`runs == false`) or `[class]+`:
    /// matches and the text between them all become pieces.
    fn split_class(
        &self,
        pieces: &[usize],
        class: impl Fn(u32, Flags) -> bool,
        runs: bool,
    ) -> Vec<usize> {
        let mut out = Vec::with_capacity(pieces.len());
        let mut start = 0usize;
        for &len in pieces {
            let end = start + len;
            let mut gap_start = start;
            let mut pos = start;
            while pos < end {
                if class(self.cpts[pos], self.flags[pos]) {
                    if pos > gap_start {
                        out.push(pos - gap_start);
                    }
                    let m = pos;
                    pos += 1;
                    if runs {
                        while pos < end && class(self.cpts[pos], self.flags[pos]) {
                            pos += 1;
                        }
                    }
                    out.push(pos - m);
                    gap_start = pos;
                } else {
                    pos += 1;
                }
            }
            if end > gap_start {
                out.push(end - gap_start);
            }
            start = end;
        }
        out
    }

    /// `[0-9][0-9][0-9]`: leftmost, non-overlapping ASCII digit triples.
    fn split_digit_triples(&self, pieces: &[usize]) -> Vec<usize> {
        let is_digit = |c: u32| (b'0' as u32..=b'9' as u32).contains(&c);
        let mut out = Vec::with_capacity(pieces.len());
        let mut start = 0usize;
        for &len in pieces {
            let end = start + len;
            let mut gap_start = start;
            let mut pos = start;
            while pos < end {
                if pos + 3 <= end && (pos..pos + 3).all(|i| is_digit(self.cpts[i])) {
                    if pos > gap_start {
                        out.push(pos - gap_start);
                    }
                    out.push(3);
                    pos += 3;
                    gap_start = pos;
                } else {
                    pos += 1;
                }
            }
            if end > gap_start {
                out.push(end - gap_start);
            }
            start = end;
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn words(text: &str, pre: PreType) -> Vec<&str> {
        split(text, pre).into_iter().map(|r| &text[r]).collect()
    }

    #[test]
    fn gpt2_basic() {
        assert_eq!(
            words("Hello world's  end  ", PreType::Gpt2),
            ["Hello", " world", "'s", " ", " end", "  "]
        );
    }

    #[test]
    fn smollm_splits_digits_first() {
        assert_eq!(
            words("abc 123x", PreType::Smollm),
            ["abc", " ", "1", "2", "3", "x"]
        );
    }

    #[test]
    fn llama3_numbers_and_newlines() {
        assert_eq!(
            words("1234567 a\n\nb", PreType::Llama3),
            ["123", "456", "7", " a", "\n\n", "b"]
        );
    }

    #[test]
    fn default_list() {
        assert_eq!(
            words("a+b 12345", PreType::Default),
            ["a", "+", "b", " ", "123", "45"]
        );
    }

    #[test]
    fn covers_input_exactly() {
        let s = "x\u{3000}\u{3000}y'LL \r\n\t 9½";
        for pre in [
            PreType::Default,
            PreType::Llama3,
            PreType::Qwen2,
            PreType::Gpt2,
            PreType::Smollm,
        ] {
            assert_eq!(words(s, pre).concat(), s);
        }
    }
}
