//! Byte-level BPE (llama.cpp's `llm_tokenizer_bpe`), as used by GPT-2-style vocabularies.
//!
//! Each pre-tokenized word is re-spelled in GPT-2's byte alphabet, split into characters,
//! and the adjacent pair with the lowest merge rank (ties: leftmost) is merged repeatedly.
//! Symbols are interned to integer ids so each candidate pair costs one hash lookup on two
//! integers instead of building and hashing strings.

use std::cmp::Ordering;
use std::collections::BinaryHeap;

use super::hash::FxHashMap;
use super::pretokenize::{self, PreOptions};
use super::unicode;
use super::vocab::Vocab;
use super::TokenizerError;

pub(crate) struct Bpe {
    pub opts: PreOptions,
    /// Strings that occur in merges but are not vocabulary tokens; ids start at `n_vocab`.
    extra: FxHashMap<String, u32>,
    /// (left symbol, right symbol) → (rank, merged symbol).
    merges: FxHashMap<(u32, u32), (u32, u32)>,
    byte_chars: [char; 256],
}

#[derive(Clone, Copy)]
struct Symbol {
    start: usize,
    n: usize,
    /// Interned id of the symbol's text, `None` if it occurs in no merge and no token.
    sym: Option<u32>,
    prev: Option<usize>,
    next: Option<usize>,
}

#[derive(PartialEq, Eq)]
struct Bigram {
    rank: u32,
    left: usize,
    right: usize,
    size: usize,
    merged: u32,
}

impl PartialOrd for Bigram {
    fn partial_cmp(&self, o: &Self) -> Option<Ordering> {
        Some(self.cmp(o))
    }
}
impl Ord for Bigram {
    /// Max-heap order: lowest rank first, then the leftmost pair.
    fn cmp(&self, o: &Self) -> Ordering {
        o.rank.cmp(&self.rank).then_with(|| o.left.cmp(&self.left))
    }
}

impl Bpe {
    pub fn build(
        vocab: &Vocab,
        opts: PreOptions,
        merges: &[String],
    ) -> Result<Bpe, TokenizerError> {
        let n_vocab = vocab.n_tokens() as u32;
        let mut extra: FxHashMap<String, u32> = FxHashMap::default();
        let intern = |s: &str, extra: &mut FxHashMap<String, u32>| -> u32 {
            if let Some(id) = vocab.text_to_token(s.as_bytes()) {
                return id;
            }
            let next = n_vocab + extra.len() as u32;
            *extra.entry(s.to_string()).or_insert(next)
        };
        let mut table: FxHashMap<(u32, u32), (u32, u32)> = FxHashMap::default();
        table.reserve(merges.len());
        for (rank, m) in merges.iter().enumerate() {
            // "left right", split at the first space after the first byte (so a left part
            // may itself start with a space, as in llama.cpp).
            let Some(pos) = m
                .as_bytes()
                .iter()
                .skip(1)
                .position(|&b| b == b' ')
                .map(|p| p + 1)
            else {
                continue; // llama.cpp files this under ("", ""), which can never match
            };
            let (a, b) = (&m[..pos], &m[pos + 1..]);
            if a.is_empty() || b.is_empty() {
                continue;
            }
            let ia = intern(a, &mut extra);
            let ib = intern(b, &mut extra);
            let merged = format!("{a}{b}");
            let im = intern(&merged, &mut extra);
            // The first occurrence of a pair keeps its rank.
            table.entry((ia, ib)).or_insert((rank as u32, im));
        }
        if extra.len() as u64 + n_vocab as u64 >= u32::MAX as u64 {
            return Err(TokenizerError::Invalid("too many merge symbols".into()));
        }
        Ok(Bpe {
            opts,
            extra,
            merges: table,
            byte_chars: unicode::byte_to_unicode_table(),
        })
    }

    fn sym_of(&self, vocab: &Vocab, s: &[u8]) -> Option<u32> {
        vocab.text_to_token(s).or_else(|| {
            std::str::from_utf8(s)
                .ok()
                .and_then(|s| self.extra.get(s).copied())
        })
    }

    /// Appends the tokens of one raw fragment to `out`.
    pub fn tokenize(&self, vocab: &Vocab, text: &str, out: &mut Vec<u32>) {
        let mut word = String::new();
        for r in pretokenize::split(text, self.opts.pre) {
            word.clear();
            for &b in &text.as_bytes()[r] {
                word.push(self.byte_chars[b as usize]);
            }
            self.tokenize_word(vocab, &word, out);
        }
    }

    fn tokenize_word(&self, vocab: &Vocab, word: &str, out: &mut Vec<u32>) {
        let bytes = word.as_bytes();
        if self.opts.ignore_merges {
            if let Some(id) = vocab.text_to_token(bytes) {
                out.push(id);
                return;
            }
        }
        let mut symbols: Vec<Symbol> = Vec::with_capacity(word.len());
        for (i, (start, c)) in word.char_indices().enumerate() {
            let n = c.len_utf8();
            symbols.push(Symbol {
                start,
                n,
                sym: self.sym_of(vocab, &bytes[start..start + n]),
                prev: i.checked_sub(1),
                next: if start + n == word.len() {
                    None
                } else {
                    Some(i + 1)
                },
            });
        }

        let mut queue = BinaryHeap::new();
        let add = |symbols: &[Symbol],
                   queue: &mut BinaryHeap<Bigram>,
                   left: Option<usize>,
                   right: Option<usize>| {
            let (Some(l), Some(r)) = (left, right) else {
                return;
            };
            let (Some(a), Some(b)) = (symbols[l].sym, symbols[r].sym) else {
                return;
            };
            if let Some(&(rank, merged)) = self.merges.get(&(a, b)) {
                queue.push(Bigram {
                    rank,
                    left: l,
                    right: r,
                    size: symbols[l].n + symbols[r].n,
                    merged,
                });
            }
        };
        for i in 1..symbols.len() {
            add(&symbols, &mut queue, Some(i - 1), Some(i));
        }
        while let Some(bg) = queue.pop() {
            let (l, r) = (symbols[bg.left], symbols[bg.right]);
            // Stale if either side was merged away or grew since the pair was queued.
            if l.n == 0 || r.n == 0 || l.n + r.n != bg.size {
                continue;
            }
            symbols[bg.left].n += r.n;
            symbols[bg.left].sym = Some(bg.merged);
            symbols[bg.right].n = 0;
            symbols[bg.left].next = r.next;
            if let Some(nx) = r.next {
                symbols[nx].prev = Some(bg.left);
            }
            let (prev, next) = (symbols[bg.left].prev, symbols[bg.left].next);
            add(&symbols, &mut queue, prev, Some(bg.left));
            add(&symbols, &mut queue, Some(bg.left), next);
        }

        let n_vocab = vocab.n_tokens() as u32;
        for s in symbols.iter().filter(|s| s.n > 0) {
            match s.sym {
                Some(id) if id < n_vocab => out.push(id),
                _ => {
                    // Not a token: llama.cpp looks each byte of the (byte-encoded) text up as
                    // a one-byte token, which can only succeed for ASCII.
                    for &b in &bytes[s.start..s.start + s.n] {
                        if let Some(id) = vocab.text_to_token(&[b]) {
                            out.push(id);
                        }
                    }
                }
            }
        }
    }
}
