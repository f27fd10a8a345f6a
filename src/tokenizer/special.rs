//! Splitting raw text around special tokens before the model tokenizer sees it
//! (llama.cpp's `tokenizer_st_partition`).
//!
//! llama.cpp takes the special tokens (CONTROL, USER_DEFINED and UNKNOWN attributes)
//! longest text first and, for each in turn, splits every still-raw fragment at that
//! token's leftmost non-overlapping occurrences. So a longer token wins over a shorter
//! one wherever they overlap, even when the shorter one starts earlier. Doing that
//! literally costs (number of special tokens) × (text length) — 6k × 100 KB for Gemma —
//! so we find all occurrences of all special tokens in one Aho–Corasick pass and then
//! replay them in the same priority order, which yields the same fragments.

use std::collections::BTreeMap;
use std::ops::Range;

use aho_corasick::AhoCorasick;

use super::vocab::{attr, Vocab};

/// A piece of the input: raw text still to be tokenized, or a special token.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum Fragment {
    Text(Range<usize>),
    Token(u32),
}

pub(crate) struct SpecialMatcher {
    /// Over the special tokens' texts; pattern index = priority rank.
    ac: Option<AhoCorasick>,
    /// Pattern index → token id, in llama.cpp's order (longest text first).
    ids: Vec<u32>,
}

/// C `isspace` in the "C" locale (note: includes vertical tab, unlike Rust's ASCII check).
fn c_isspace(b: u8) -> bool {
    matches!(b, b' ' | b'\t' | b'\n' | 0x0B | 0x0C | b'\r')
}

impl SpecialMatcher {
    pub fn build(vocab: &Vocab) -> Self {
        let mut ids: Vec<u32> = (0..vocab.n_tokens() as u32)
            .filter(|&id| {
                vocab.attr(id) & (attr::CONTROL | attr::USER_DEFINED | attr::UNKNOWN) != 0
            })
            .collect();
        // llama.cpp sorts by length only (with an unstable sort); ties can only matter for
        // equal-length tokens that overlap each other, where we fall back to id order.
        ids.sort_by_key(|&id| std::cmp::Reverse(vocab.texts[id as usize].len()));
        let ac = if ids.is_empty() {
            None
        } else {
            // Building only fails for absurd pattern sets; then no special token is parsed
            // rather than panicking.
            AhoCorasick::new(ids.iter().map(|&id| vocab.texts[id as usize].as_bytes())).ok()
        };
        SpecialMatcher { ac, ids }
    }

    /// Splits `text` into raw-text ranges and special tokens. With `parse_special == false`
    /// only USER_DEFINED tokens are recognised (as in llama.cpp).
    pub fn partition(&self, vocab: &Vocab, text: &str, parse_special: bool) -> Vec<Fragment> {
        if text.is_empty() {
            return Vec::new();
        }
        let Some(ac) = &self.ac else {
            return vec![Fragment::Text(0..text.len())];
        };

        // Every occurrence of every eligible special token, as (priority, start).
        let mut occ: Vec<(usize, usize)> = ac
            .find_overlapping_iter(text.as_bytes())
            .filter_map(|m| {
                let rank = m.pattern().as_usize();
                let id = self.ids[rank];
                let skip = !parse_special && vocab.attr(id) & (attr::CONTROL | attr::UNKNOWN) != 0;
                (!skip).then_some((rank, m.start()))
            })
            .collect();
        if occ.is_empty() {
            return vec![Fragment::Text(0..text.len())];
        }
        occ.sort_unstable();

        let bytes = text.as_bytes();
        // Raw fragments by start offset → end offset.
        let mut raw: BTreeMap<usize, usize> = BTreeMap::new();
        raw.insert(0, text.len());
        let mut specials: Vec<(usize, u32)> = Vec::new();

        for (rank, pos) in occ {
            let id = self.ids[rank];
            let len = vocab.texts[id as usize].len();
            // The occurrence counts only if it lies wholly inside one raw fragment, which
            // is exactly when llama.cpp's leftmost search over that fragment would find it
            // (earlier occurrences of the same token were replayed first).
            let Some((&s, &e)) = raw.range(..=pos).next_back() else {
                continue;
            };
            if pos + len > e {
                continue;
            }
            raw.remove(&s);
            let a = vocab.attr(id);
            let mut left_end = pos;
            if a & attr::LSTRIP != 0 {
                while left_end > s && c_isspace(bytes[left_end - 1]) {
                    left_end -= 1;
                }
            }
            if left_end > s {
                raw.insert(s, left_end);
            }
            specials.push((pos, id));
            let mut right_start = pos + len;
            if a & attr::RSTRIP != 0 {
                while right_start < e && c_isspace(bytes[right_start]) {
                    right_start += 1;
                }
            }
            if right_start < e {
                raw.insert(right_start, e);
            }
        }

        specials.sort_unstable();
        let mut out = Vec::with_capacity(raw.len() + specials.len());
        let mut sp = specials.into_iter().peekable();
        for (s, e) in raw {
            while let Some(&(p, id)) = sp.peek() {
                if p >= s {
                    break;
                }
                out.push(Fragment::Token(id));
                sp.next();
            }
            out.push(Fragment::Text(s..e));
        }
        out.extend(sp.map(|(_, id)| Fragment::Token(id)));
        out
    }
}
