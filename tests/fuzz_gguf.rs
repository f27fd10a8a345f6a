//! Mutation fuzzing of a real model file's header: random byte flips in the metadata and tensor
//! table must give an error or a valid model, never a panic or a runaway allocation.

mod common;

use std::io::{Seek, SeekFrom, Write};

use common::*;
use torchless::model::{vocab_spec, GgufFile, ModelConfig};
use torchless::tokenizer::Tokenizer;

fn xorshift(s: &mut u64) -> u64 {
    *s ^= *s << 13;
    *s ^= *s >> 7;
    *s ^= *s << 17;
    *s
}

/// Open, configure and build the tokenizer: everything `torchless info` and `run` do before the
/// forward pass. Returns whether it succeeded.
fn load_everything(path: &std::path::Path) -> bool {
    let Ok(f) = GgufFile::open(path) else {
        return false;
    };
    let config = ModelConfig::from_gguf(&f);
    let tok = vocab_spec(&f).map(Tokenizer::from_spec);
    if let Ok(Ok(t)) = &tok {
        // A tokenizer that was accepted must also survive use.
        let ids = t.encode("Hello <|im_start|> wörld 123", true, true);
        let _ = t.decode(&ids);
    }
    config.is_ok() && matches!(tok, Ok(Ok(_)))
}

#[test]
fn mutated_headers_never_panic() {
    let src = model(SMOLLM2);
    let header_len = {
        let f = GgufFile::open(&src).unwrap();
        f.data_offset as usize
    };
    let original = std::fs::read(&src).unwrap();
    let path = write_temp("fuzz.gguf", &original);
    let mut file = std::fs::OpenOptions::new().write(true).open(&path).unwrap();
    let mut seed = 0x9e37_79b9_7f4a_7c15u64;
    let (mut ok, mut rejected) = (0, 0);
    for _ in 0..150 {
        // Flip 1-4 bytes, biased towards the first few KB where counts, lengths and keys live.
        let n = 1 + (xorshift(&mut seed) % 4) as usize;
        let mut spots = Vec::new();
        for _ in 0..n {
            let r = xorshift(&mut seed);
            let pos = if r.is_multiple_of(2) {
                (r >> 8) as usize % 4096
            } else {
                (r >> 8) as usize % header_len
            };
            let byte = (xorshift(&mut seed) & 0xff) as u8;
            spots.push(pos);
            file.seek(SeekFrom::Start(pos as u64)).unwrap();
            file.write_all(&[byte]).unwrap();
        }
        file.flush().unwrap();
        if load_everything(&path) {
            ok += 1;
        } else {
            rejected += 1;
        }
        for pos in spots {
            file.seek(SeekFrom::Start(pos as u64)).unwrap();
            file.write_all(&original[pos..pos + 1]).unwrap();
        }
    }
    file.flush().unwrap();
    assert!(load_everything(&path), "the restored file must load");
    eprintln!("150 mutations: {ok} still loaded, {rejected} rejected with an error");
    assert!(rejected > 0);
}
