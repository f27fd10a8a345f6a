//! Incremental UTF-8 assembly for streamed output.
//!
//! A token may end in the middle of a character (byte-fallback tokens, or BPE tokens that
//! split a multi-byte character), so bytes are held back until the character is complete.
//! Bytes that can never form a character are replaced by U+FFFD as soon as that is known.

/// Appends to `out` everything in `pending` that is decided, leaving only a trailing
/// incomplete-but-so-far-valid sequence in `pending`.
pub(crate) fn drain_complete(pending: &mut Vec<u8>, out: &mut String) {
    let mut consumed = 0usize;
    loop {
        let rest = &pending[consumed..];
        match std::str::from_utf8(rest) {
            Ok(s) => {
                out.push_str(s);
                consumed = pending.len();
                break;
            }
            Err(e) => {
                let valid = e.valid_up_to();
                // `valid_up_to` guarantees this prefix is UTF-8.
                out.push_str(std::str::from_utf8(&rest[..valid]).unwrap_or_default());
                match e.error_len() {
                    // Truncated character at the end: wait for more bytes.
                    None => {
                        consumed += valid;
                        break;
                    }
                    Some(bad) => {
                        out.push('\u{FFFD}');
                        consumed += valid + bad;
                    }
                }
            }
        }
    }
    pending.drain(..consumed);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn holds_back_partial_characters() {
        let emoji = "😀".as_bytes();
        let mut pending = Vec::new();
        let mut out = String::new();
        for &b in emoji {
            pending.push(b);
            drain_complete(&mut pending, &mut out);
        }
        assert_eq!(out, "😀");
        assert!(pending.is_empty());
    }

    #[test]
    fn invalid_bytes_become_replacement() {
        let mut pending = vec![b'a', 0xFF, b'b', 0xE2, 0x82];
        let mut out = String::new();
        drain_complete(&mut pending, &mut out);
        assert_eq!(out, "a\u{FFFD}b");
        assert_eq!(pending, vec![0xE2, 0x82]);
    }
}
