//! Small hashing helpers for the tokenizer's hot lookups.
//!
//! Text→id lookups happen once per candidate merge, so they dominate encode time; the
//! standard SipHash is needlessly slow for short trusted-size keys. The text index also
//! avoids cloning all 262k token strings just to key a `HashMap`.

use std::hash::{BuildHasherDefault, Hasher};

/// The FxHash mixing function (rustc's), fine for non-adversarial keys such as token ids.
#[derive(Default, Clone, Copy)]
pub(crate) struct FxHasher {
    hash: u64,
}

const SEED: u64 = 0x51_7c_c1_b7_27_22_0a_95;

impl FxHasher {
    #[inline]
    fn add(&mut self, word: u64) {
        self.hash = (self.hash.rotate_left(5) ^ word).wrapping_mul(SEED);
    }
}

impl Hasher for FxHasher {
    #[inline]
    fn write(&mut self, bytes: &[u8]) {
        let mut chunks = bytes.chunks_exact(8);
        for c in &mut chunks {
            let mut w = [0u8; 8];
            w.copy_from_slice(c);
            self.add(u64::from_le_bytes(w));
        }
        let rest = chunks.remainder();
        if !rest.is_empty() {
            let mut w = [0u8; 8];
            w[..rest.len()].copy_from_slice(rest);
            self.add(u64::from_le_bytes(w) ^ ((rest.len() as u64) << 59));
        }
    }
    #[inline]
    fn write_u32(&mut self, i: u32) {
        self.add(i as u64);
    }
    #[inline]
    fn write_u64(&mut self, i: u64) {
        self.add(i);
    }
    #[inline]
    fn write_usize(&mut self, i: usize) {
        self.add(i as u64);
    }
    #[inline]
    fn finish(&self) -> u64 {
        self.hash
    }
}

pub(crate) type FxBuild = BuildHasherDefault<FxHasher>;
pub(crate) type FxHashMap<K, V> = std::collections::HashMap<K, V, FxBuild>;

#[inline]
fn hash_bytes(b: &[u8]) -> u64 {
    let mut h = FxHasher::default();
    h.write(b);
    // Final avalanche so the low bits used for the slot index depend on every input byte.
    let x = h.finish();
    let x = (x ^ (x >> 33)).wrapping_mul(0xff51_afd7_ed55_8ccd);
    x ^ (x >> 33)
}

/// Open-addressing index from token text to id over a text table owned elsewhere.
/// When two ids share a text the later one wins, as with llama.cpp's `token_to_id[word] = i`.
#[derive(Clone, Debug, Default)]
pub(crate) struct TextIndex {
    /// `id + 1`, or 0 for an empty slot.
    slots: Vec<u32>,
    mask: usize,
}

impl TextIndex {
    pub fn build(texts: &[String]) -> Self {
        let cap = (texts.len().max(1) * 2).next_power_of_two();
        let mut idx = TextIndex {
            slots: vec![0; cap],
            mask: cap - 1,
        };
        for (id, t) in texts.iter().enumerate() {
            let mut slot = hash_bytes(t.as_bytes()) as usize & idx.mask;
            loop {
                let cur = idx.slots[slot];
                if cur == 0 || texts[(cur - 1) as usize] == *t {
                    idx.slots[slot] = id as u32 + 1;
                    break;
                }
                slot = (slot + 1) & idx.mask;
            }
        }
        idx
    }

    #[inline]
    pub fn get(&self, texts: &[String], key: &[u8]) -> Option<u32> {
        if self.slots.is_empty() {
            return None;
        }
        let mut slot = hash_bytes(key) as usize & self.mask;
        loop {
            let cur = self.slots[slot];
            if cur == 0 {
                return None;
            }
            let id = cur - 1;
            if texts.get(id as usize).map(|t| t.as_bytes()) == Some(key) {
                return Some(id);
            }
            slot = (slot + 1) & self.mask;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn later_duplicate_wins_and_misses_are_none() {
        let texts: Vec<String> = ["a", "bb", "a", "ccc"]
            .iter()
            .map(|s| s.to_string())
            .collect();
        let idx = TextIndex::build(&texts);
        assert_eq!(idx.get(&texts, b"a"), Some(2));
        assert_eq!(idx.get(&texts, b"bb"), Some(1));
        assert_eq!(idx.get(&texts, b"ccc"), Some(3));
        assert_eq!(idx.get(&texts, b"zz"), None);
        assert_eq!(idx.get(&texts, b""), None);
    }
}
