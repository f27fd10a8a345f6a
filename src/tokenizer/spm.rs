//! SentencePiece-style tokenization (llama.cpp's `llm_tokenizer_spm`).
//!
//! The text (spaces already escaped to U+2581) starts as one symbol per UTF-8 character.
//! Adjacent pairs whose concatenation is a vocabulary token are queued by that token's
//! score; the best pair (ties: leftmost) is merged repeatedly until no pair is a token.
//! Symbols left that are not tokens fall back to `<0xXX>` byte tokens.

use std::cmp::Ordering;
use std::collections::BinaryHeap;

use super::vocab::Vocab;

#[derive(Clone, Copy)]
struct Symbol {
    /// Byte offset of the symbol in the text.
    start: usize,
    /// Length in bytes; 0 once merged into its left neighbour.
    n: usize,
    prev: Option<usize>,
    next: Option<usize>,
}

struct Bigram {
    left: usize,
    right: usize,
    score: f32,
    /// Byte length of the merged text, to detect entries made stale by other merges.
    size: usize,
}

impl PartialEq for Bigram {
    fn eq(&self, o: &Self) -> bool {
        self.cmp(o) == Ordering::Equal
    }
}
impl Eq for Bigram {}
impl PartialOrd for Bigram {
    fn partial_cmp(&self, o: &Self) -> Option<Ordering> {
        Some(self.cmp(o))
    }
}
impl Ord for Bigram {
    /// Max-heap order: higher score first, then the leftmost pair.
    fn cmp(&self, o: &Self) -> Ordering {
        self.score
            .total_cmp(&o.score)
            .then_with(|| o.left.cmp(&self.left))
    }
}

/// Appends the tokens of `text` (one raw fragment, whitespace already escaped) to `out`.
pub(crate) fn tokenize(vocab: &Vocab, text: &str, out: &mut Vec<u32>) {
    if text.is_empty() {
        return;
    }
    let bytes = text.as_bytes();
    let mut symbols: Vec<Symbol> = Vec::with_capacity(text.len());
    for (i, (start, c)) in text.char_indices().enumerate() {
        let n = c.len_utf8();
        symbols.push(Symbol {
            start,
            n,
            prev: i.checked_sub(1),
            next: if start + n == text.len() {
                None
            } else {
                Some(i + 1)
            },
        });
    }

    let mut queue = BinaryHeap::with_capacity(symbols.len());
    let try_add = |symbols: &[Symbol],
                   queue: &mut BinaryHeap<Bigram>,
                   left: Option<usize>,
                   right: Option<usize>| {
        let (Some(l), Some(r)) = (left, right) else {
            return;
        };
        let (ls, rs) = (symbols[l], symbols[r]);
        let merged = &bytes[ls.start..ls.start + ls.n + rs.n];
        if let Some(id) = vocab.text_to_token(merged) {
            queue.push(Bigram {
                left: l,
                right: r,
                score: vocab.scores[id as usize],
                size: merged.len(),
            });
        }
    };

    for i in 1..symbols.len() {
        try_add(&symbols, &mut queue, Some(i - 1), Some(i));
    }

    while let Some(b) = queue.pop() {
        let (l, r) = (symbols[b.left], symbols[b.right]);
        if l.n == 0 || r.n == 0 || l.n + r.n != b.size {
            continue;
        }
        // Merge the right symbol into the left one and unlink it.
        symbols[b.left].n += r.n;
        symbols[b.right].n = 0;
        symbols[b.left].next = r.next;
        if let Some(nx) = r.next {
            symbols[nx].prev = Some(b.left);
        }
        let (prev, next) = (symbols[b.left].prev, symbols[b.left].next);
        try_add(&symbols, &mut queue, prev, Some(b.left));
        try_add(&symbols, &mut queue, Some(b.left), next);
    }

    // Every merged symbol is a token by construction; only single characters can miss.
    let mut i = Some(0);
    while let Some(idx) = i {
        let s = symbols[idx];
        let piece = &bytes[s.start..s.start + s.n];
        match vocab.text_to_token(piece) {
            Some(id) => out.push(id),
            None => {
                for &b in piece {
                    // A vocabulary without byte tokens cannot spell this byte; llama.cpp
                    // aborts, we emit UNK if there is one, else drop the byte.
                    if let Some(id) = vocab.byte_to_token_spm(b).or(vocab.unk) {
                        out.push(id);
                    }
                }
            }
        }
        i = s.next;
    }
}
