//! Codepoint classification and the GPT-2 byte↔unicode mapping.
//!
//! The classification deliberately follows llama.cpp's own tables (see `unicode_data.rs`)
//! rather than Rust's `char` methods: the pre-tokenizers must agree with the reference on
//! every codepoint, and the two disagree on a few (e.g. Unicode-version differences, and
//! llama.cpp's `\s` set, which is not `char::is_whitespace`).

use super::unicode_data::{CATEGORY_RANGES, WHITESPACE};

pub(crate) const CAT_UNDEFINED: u8 = 0x01;
pub(crate) const CAT_NUMBER: u8 = 0x02;
pub(crate) const CAT_LETTER: u8 = 0x04;
pub(crate) const CAT_PUNCTUATION: u8 = 0x20;

/// What the pre-tokenizers need to know about one codepoint.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(crate) struct Flags {
    /// One of the `CAT_*` bits (exactly one for any real codepoint; 0 means "outside the
    /// current piece", llama.cpp's empty flags used for out-of-range positions).
    pub cat: u8,
    pub whitespace: bool,
}

impl Flags {
    #[inline]
    pub fn is_letter(self) -> bool {
        self.cat & CAT_LETTER != 0
    }
    #[inline]
    pub fn is_number(self) -> bool {
        self.cat & CAT_NUMBER != 0
    }
    #[inline]
    pub fn is_whitespace(self) -> bool {
        self.whitespace
    }
    /// llama.cpp's `flags.as_uint() != 0`: true for every real codepoint.
    #[inline]
    pub fn is_defined(self) -> bool {
        self.cat != 0 || self.whitespace
    }
}

/// Category bits of `cpt` per llama.cpp's table.
pub(crate) fn category(cpt: u32) -> u8 {
    if cpt >= 0x110000 {
        return CAT_UNDEFINED;
    }
    // Last range whose start is <= cpt. The table starts at 0, so the index is never -1.
    let idx = CATEGORY_RANGES.partition_point(|&(start, _)| start <= cpt);
    CATEGORY_RANGES[idx.saturating_sub(1)].1
}

pub(crate) fn is_whitespace(cpt: u32) -> bool {
    if cpt < 0x80 {
        return matches!(cpt, 0x09..=0x0D | 0x20);
    }
    WHITESPACE.binary_search(&cpt).is_ok()
}

pub(crate) fn flags(cpt: u32) -> Flags {
    Flags {
        cat: category(cpt),
        whitespace: is_whitespace(cpt),
    }
}

/// GPT-2's byte-level alphabet: printable Latin-1 bytes map to themselves, the other 68
/// bytes to U+0100.. in byte order, so every byte string becomes printable text.
pub(crate) fn byte_to_unicode_table() -> [char; 256] {
    let mut table = ['\0'; 256];
    let printable = |b: u32| {
        (0x21..=0x7E).contains(&b) || (0xA1..=0xAC).contains(&b) || (0xAE..=0xFF).contains(&b)
    };
    let mut next = 256u32;
    for b in 0..256u32 {
        let cpt = if printable(b) {
            b
        } else {
            next += 1;
            next - 1
        };
        // All values are < 0x200, hence valid scalar values.
        table[b as usize] = char::from_u32(cpt).unwrap_or('\u{FFFD}');
    }
    table
}

/// Inverse of [`byte_to_unicode_table`], indexed by codepoint (all are < 0x144).
pub(crate) fn unicode_to_byte_table() -> Vec<Option<u8>> {
    let fwd = byte_to_unicode_table();
    let mut inv = vec![None; 0x200];
    for (b, c) in fwd.iter().enumerate() {
        inv[*c as usize] = Some(b as u8);
    }
    inv
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn categories_match_reference_samples() {
        assert_eq!(category('a' as u32), CAT_LETTER);
        assert_eq!(category('7' as u32), CAT_NUMBER);
        assert_eq!(category('!' as u32), CAT_PUNCTUATION);
        assert_eq!(category('²' as u32), CAT_NUMBER);
        assert_eq!(category('中' as u32), CAT_LETTER);
        assert!(is_whitespace(0x3000));
        assert!(!is_whitespace(0x200B));
        assert_eq!(category(0x10FFFF), CAT_UNDEFINED);
    }

    #[test]
    fn byte_table_is_a_bijection() {
        let fwd = byte_to_unicode_table();
        assert_eq!(fwd[b'!' as usize], '!');
        assert_eq!(fwd[b' ' as usize], 'Ġ');
        assert_eq!(fwd[b'\n' as usize], 'Ċ');
        let inv = unicode_to_byte_table();
        for b in 0..256usize {
            assert_eq!(inv[fwd[b] as usize], Some(b as u8));
        }
    }
}
