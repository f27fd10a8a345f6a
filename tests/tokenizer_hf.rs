//! Hugging Face `tokenizer.json` loading: ids and text identical to transformers'.
//!
//! Two tokenizers are checked: the byte-level BPE fixture written by
//! `tools/make-arch-fixtures.py` (with its transformers ids in `tokenizer-ids.json`), and a
//! small SentencePiece-style one (Metaspace, byte fallback, `add_bos_token`) built below, whose
//! expected ids were computed once with transformers 5.2.0 / tokenizers 0.22.2 on the JSON this
//! file generates (`AutoTokenizer.from_pretrained` on a folder with both files).

use std::path::{Path, PathBuf};

use serde_json::{json, Value};
use torchless::tokenizer::{hf_chat_template, StreamDecoder, Tokenizer, TokenizerError};

fn fixture(rel: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures/arch")
        .join(rel)
}

/// The byte-level fixture. Fails (never skips) when the fixture is missing.
fn fixture_tokenizer() -> Tokenizer {
    let dir = fixture("llama/f32");
    Tokenizer::from_hf_files(
        &dir.join("tokenizer.json"),
        Some(&dir.join("tokenizer_config.json")),
    )
    .expect("fixture tokenizer loads")
}

fn fixture_probes() -> Vec<(String, Vec<u32>)> {
    let text = std::fs::read_to_string(fixture("tokenizer-ids.json")).expect("tokenizer-ids.json");
    let v: Value = serde_json::from_str(&text).expect("tokenizer-ids.json is JSON");
    v.as_array()
        .expect("a list")
        .iter()
        .map(|p| {
            let ids = p["ids"]
                .as_array()
                .expect("ids")
                .iter()
                .map(|x| x.as_u64().expect("id") as u32)
                .collect();
            (p["text"].as_str().expect("text").to_string(), ids)
        })
        .collect()
}

fn stream(tok: &Tokenizer, ids: &[u32]) -> String {
    let mut d = StreamDecoder::new();
    let mut out: String = ids.iter().map(|&id| d.push(tok, id)).collect();
    out.push_str(&d.finish());
    out
}

#[test]
fn fixture_ids_match_transformers() {
    let tok = fixture_tokenizer();
    let probes = fixture_probes();
    assert!(!probes.is_empty());
    for (text, ids) in &probes {
        assert_eq!(&tok.encode(text, true, true), ids, "{text:?}");
        // The fixture's post-processor adds nothing.
        assert_eq!(&tok.encode(text, false, true), ids, "{text:?}");
    }
}

#[test]
fn fixture_round_trips() {
    let tok = fixture_tokenizer();
    for (text, ids) in fixture_probes() {
        // transformers' decode gives the text back for every probe.
        assert_eq!(tok.decode(&ids), text);
        assert_eq!(stream(&tok, &ids), text, "streamed {text:?}");
        let bytes: Vec<u8> = ids.iter().flat_map(|&id| tok.token_bytes(id)).collect();
        assert_eq!(bytes, text.as_bytes());
    }
}

#[test]
fn fixture_special_tokens() {
    let tok = fixture_tokenizer();
    assert_eq!(tok.n_vocab(), 300);
    assert_eq!(
        (tok.bos_id(), tok.eos_id(), tok.pad_id()),
        (Some(0), Some(1), Some(2))
    );
    assert!(!tok.add_bos() && !tok.add_eos());
    assert_eq!(tok.eog_ids(), &[1]);
    assert!(tok.is_eog(1) && !tok.is_eog(0));
    assert_eq!(tok.eot_id(), None);
    assert!(tok.is_control(0) && tok.is_control(1) && tok.is_control(2) && !tok.is_control(3));
    assert_eq!(tok.token_text(0), Some("<s>"));
    assert_eq!(tok.token_id("</s>"), Some(1));
    assert_eq!(tok.token_text(300), None);
    assert_eq!(tok.pre_type(), None);
    // " " is 'Ġ' in the GPT-2 alphabet.
    let space = tok.token_id("Ġ").expect("Ġ");
    assert_eq!(tok.token_bytes(space), b" ");
    assert_eq!(tok.token_bytes(0), b"<s>");
    assert!(tok.token_bytes(12345).is_empty());
    assert_eq!(tok.decode(&[0, 12345, 1]), "<s></s>");
    assert!(format!("{tok:?}").contains("hf"));
}

#[test]
fn fixture_parse_special_off_matches_split_special_tokens() {
    let tok = fixture_tokenizer();
    let text = "special <s> and </s> and <pad> tokens";
    let parsed = tok.encode(text, true, true);
    assert!(parsed.contains(&0) && parsed.contains(&1) && parsed.contains(&2));
    // transformers: encode(text, split_special_tokens=True).
    let split: Vec<u32> = vec![
        85, 82, 71, 69, 75, 67, 78, 223, 30, 85, 32, 269, 223, 30, 17, 85, 32, 269, 223, 30, 82,
        67, 70, 32, 279, 290, 85,
    ];
    assert_eq!(tok.encode(text, true, false), split);
    assert_eq!(tok.decode(&split), text);
    // Texts without special tokens do not depend on it.
    for (text, ids) in fixture_probes() {
        if !text.contains('<') {
            assert_eq!(tok.encode(&text, true, false), ids);
        }
    }
}

#[test]
fn fixture_without_config_guesses_specials() {
    let tok = Tokenizer::from_hf_files(&fixture("llama/f32/tokenizer.json"), None).expect("loads");
    assert_eq!(
        (tok.bos_id(), tok.eos_id(), tok.pad_id()),
        (Some(0), Some(1), Some(2))
    );
    for (text, ids) in fixture_probes() {
        assert_eq!(tok.encode(&text, true, true), ids);
    }
}

// ---------------------------------------------------------------------------------------
// A SentencePiece-style tokenizer (Llama 2 / Mistral layout).
// ---------------------------------------------------------------------------------------

const SPM_MERGES: &[(&str, &str)] = &[
    ("e", "l"),
    ("l", "o"),
    ("▁", "w"),
    ("▁w", "o"),
    ("▁wo", "r"),
    ("▁wor", "l"),
    ("▁worl", "d"),
    ("▁", "H"),
    ("▁H", "el"),
    ("▁Hel", "lo"),
];
const SPM_CHARS: &[&str] = &["▁", "H", "e", "l", "o", "w", "r", "d", ",", "!", "a"];

/// `tokenizer.json`: <unk> <s> </s>, 256 byte tokens, characters, merge results, and two added
/// tokens: `<|im_end|>` (special) and `<tool>` (not special).
fn spm_json() -> String {
    let mut vocab = serde_json::Map::new();
    let mut push = |t: &str| {
        let id = vocab.len();
        vocab.insert(t.to_string(), json!(id));
    };
    for t in ["<unk>", "<s>", "</s>"] {
        push(t);
    }
    for b in 0..256 {
        push(&format!("<0x{b:02X}>"));
    }
    for t in SPM_CHARS {
        push(t);
    }
    for (a, b) in SPM_MERGES {
        push(&format!("{a}{b}"));
    }
    let n = vocab.len();
    let merges: Vec<String> = SPM_MERGES.iter().map(|(a, b)| format!("{a} {b}")).collect();
    let added = |id: usize, content: &str, special: bool| {
        json!({"id": id, "content": content, "single_word": false, "lstrip": false,
               "rstrip": false, "normalized": false, "special": special})
    };
    json!({
        "version": "1.0",
        "truncation": {"direction": "Right", "max_length": 4, "strategy": "LongestFirst",
                       "stride": 0},
        "padding": null,
        "added_tokens": [added(0, "<unk>", true), added(1, "<s>", true), added(2, "</s>", true),
                         added(n, "<|im_end|>", true), added(n + 1, "<tool>", false)],
        "normalizer": {"type": "Sequence", "normalizers": [
            {"type": "Prepend", "prepend": "▁"},
            {"type": "Replace", "pattern": {"String": " "}, "content": "▁"}]},
        "pre_tokenizer": null,
        "post_processor": {
            "type": "TemplateProcessing",
            "single": [{"SpecialToken": {"id": "<s>", "type_id": 0}},
                       {"Sequence": {"id": "A", "type_id": 0}}],
            "pair": [{"SpecialToken": {"id": "<s>", "type_id": 0}},
                     {"Sequence": {"id": "A", "type_id": 0}},
                     {"Sequence": {"id": "B", "type_id": 1}}],
            "special_tokens": {"<s>": {"id": "<s>", "ids": [1], "tokens": ["<s>"]}}},
        "decoder": {"type": "Sequence", "decoders": [
            {"type": "Replace", "pattern": {"String": "▁"}, "content": " "},
            {"type": "ByteFallback"},
            {"type": "Fuse"},
            {"type": "Strip", "content": " ", "start": 1, "stop": 0}]},
        "model": {"type": "BPE", "dropout": null, "unk_token": "<unk>",
                  "continuing_subword_prefix": null, "end_of_word_suffix": null,
                  "fuse_unk": true, "byte_fallback": true, "ignore_merges": false,
                  "vocab": vocab, "merges": merges}
    })
    .to_string()
}

fn spm_config(add_bos: bool, add_eos: bool) -> String {
    json!({
        "add_bos_token": add_bos,
        "add_eos_token": add_eos,
        "bos_token": "<s>",
        "eos_token": {"__type": "AddedToken", "content": "</s>", "lstrip": false,
                      "normalized": false, "rstrip": false, "single_word": false,
                      "special": true},
        "unk_token": "<unk>",
        "pad_token": null,
        "clean_up_tokenization_spaces": false,
        "tokenizer_class": "TokenizersBackend",
        "chat_template": "{{ bos_token }}{% for m in messages %}{{ m['content'] }}{% endfor %}"
    })
    .to_string()
}

fn spm(add_bos: bool, add_eos: bool) -> Tokenizer {
    let config = spm_config(add_bos, add_eos);
    Tokenizer::from_hf_bytes(spm_json().as_bytes(), Some(config.as_bytes())).expect("spm loads")
}

/// (text, ids with add_special, ids with split_special_tokens, decode of the first) from
/// transformers.
#[rustfmt::skip]
const SPM_EXPECTED: &[(&str, &[u32], &[u32], &str)] = &[
    ("Hello world", &[1, 279, 276], &[1, 279, 276], "<s> Hello world"),
    ("Hello, world!", &[1, 279, 267, 276, 268], &[1, 279, 267, 276, 268], "<s> Hello, world!"),
    ("  lead", &[1, 259, 259, 259, 262, 261, 269, 266], &[1, 259, 259, 259, 262, 261, 269, 266],
     "<s>   lead"),
    ("héllo 😀", &[1, 259, 107, 198, 172, 262, 271, 259, 243, 162, 155, 131],
     &[1, 259, 107, 198, 172, 262, 271, 259, 243, 162, 155, 131], "<s> héllo 😀"),
    ("<s>Hello</s>", &[1, 1, 279, 2], &[1, 259, 63, 118, 65, 260, 270, 271, 63, 50, 118, 65],
     "<s><s> Hello</s>"),
    ("Hello<|im_end|> world", &[1, 279, 280, 259, 276],
     &[1, 279, 63, 127, 108, 112, 98, 261, 113, 266, 127, 65, 276], "<s> Hello<|im_end|>  world"),
    ("a<tool>b", &[1, 259, 269, 281, 259, 101], &[1, 259, 269, 281, 259, 101], "<s> a<tool> b"),
];

#[test]
fn spm_ids_match_transformers() {
    let tok = spm(true, false);
    for (text, ids, split, _) in SPM_EXPECTED {
        assert_eq!(&tok.encode(text, true, true), ids, "{text:?}");
        assert_eq!(&tok.encode(text, true, false), split, "split {text:?}");
        assert_eq!(
            tok.encode(text, false, true),
            ids[1..],
            "no specials {text:?}"
        );
    }
}

#[test]
fn spm_specials_follow_the_file_and_config() {
    let tok = spm(true, false);
    assert!(tok.add_bos() && !tok.add_eos());
    assert_eq!(
        (tok.bos_id(), tok.eos_id(), tok.pad_id()),
        (Some(1), Some(2), None)
    );
    assert_eq!(tok.n_vocab(), 282);
    let im_end = tok.token_id("<|im_end|>").expect("<|im_end|>");
    assert_eq!(im_end, 280);
    assert_eq!(tok.eot_id(), Some(im_end));
    assert_eq!(tok.eog_ids(), &[2, im_end]);
    assert!(tok.is_control(im_end) && tok.is_control(1));
    let tool = tok.token_id("<tool>").expect("<tool>");
    assert!(!tok.is_control(tool) && !tok.is_control(279));
    // transformers 5.2 ignores add_bos_token / add_eos_token when there is a tokenizer.json:
    // the post-processor (BOS only) decides, whatever the config says.
    for (b, e) in [(false, true), (true, true), (false, false)] {
        let tok = spm(b, e);
        assert!(tok.add_bos() && !tok.add_eos());
        assert_eq!(tok.encode("Hello world", true, true), vec![1, 279, 276]);
    }
    // Without a config the BOS/EOS ids are guessed; ids do not change.
    let tok = Tokenizer::from_hf_bytes(spm_json().as_bytes(), None).expect("loads");
    assert_eq!((tok.bos_id(), tok.eos_id()), (Some(1), Some(2)));
    assert!(tok.add_bos() && !tok.add_eos());
    assert_eq!(tok.encode("Hello world", true, true), vec![1, 279, 276]);
    // A config naming a token the file lacks adds it, as transformers does (next free id).
    let cfg = json!({"bos_token": "<s>", "eos_token": "</s>", "pad_token": "<pad>"});
    let tok = Tokenizer::from_hf_bytes(spm_json().as_bytes(), Some(cfg.to_string().as_bytes()))
        .expect("loads");
    assert_eq!(tok.pad_id(), Some(282));
    assert_eq!(tok.n_vocab(), 283);
    assert!(tok.is_control(282));
    assert_eq!(tok.encode("a<pad>", false, true), vec![259, 269, 282]);
}

#[test]
fn spm_decode_and_stream() {
    let tok = spm(true, false);
    for (text, ids, _, want) in SPM_EXPECTED {
        assert_eq!(tok.decode(ids), *want, "{text:?}");
        // Streaming keeps every space; after BOS that is what decode gives too.
        assert_eq!(stream(&tok, ids), *want, "stream {text:?}");
    }
    // Without BOS the decoder strips the prefix space of the whole text (transformers'
    // decode of `encode(text, add_special_tokens=False)`); streaming keeps it.
    for (text, body, streamed) in [
        ("Hello world", "Hello world", " Hello world"),
        ("  lead", "  lead", "   lead"),
        ("héllo 😀", "héllo 😀", " héllo 😀"),
        ("<s>Hello</s>", "<s> Hello</s>", "<s> Hello</s>"),
        (
            "Hello<|im_end|> world",
            "Hello<|im_end|>  world",
            " Hello<|im_end|>  world",
        ),
        ("a<tool>b", "a<tool> b", " a<tool> b"),
    ] {
        let ids = tok.encode(text, false, true);
        assert_eq!(tok.decode(&ids), body, "{text:?}");
        assert_eq!(stream(&tok, &ids), streamed, "stream {text:?}");
    }
    let e = tok.token_id("<0xC3>").expect("byte token");
    assert_eq!(tok.token_bytes(e), [0xC3]);
    assert_eq!(
        tok.token_bytes(tok.token_id("▁world").expect("▁world")),
        b" world"
    );
}

#[test]
fn chat_template_from_config() {
    let dir = std::env::temp_dir().join(format!("torchless-hf-tok-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("temp dir");
    let p = dir.join("tokenizer_config.json");
    std::fs::write(&p, spm_config(true, false)).expect("write");
    assert_eq!(
        hf_chat_template(&p).as_deref(),
        Some("{{ bos_token }}{% for m in messages %}{{ m['content'] }}{% endfor %}")
    );
    let list = json!({"chat_template": [{"name": "tool_use", "template": "T"},
                                        {"name": "default", "template": "D"}]});
    std::fs::write(&p, list.to_string()).expect("write");
    assert_eq!(hf_chat_template(&p).as_deref(), Some("D"));
    std::fs::write(&p, "{}").expect("write");
    assert_eq!(hf_chat_template(&p), None);
    assert_eq!(hf_chat_template(&dir.join("missing.json")), None);
    let _ = std::fs::remove_dir_all(&dir);
}

fn err_of(r: Result<Tokenizer, TokenizerError>) -> String {
    let e = r.expect_err("must fail");
    let msg = e.to_string();
    assert!(!msg.contains('\n'), "one line: {msg}");
    msg
}

#[test]
fn bad_input_is_an_error_naming_the_file() {
    let missing = Path::new("/nonexistent/tokenizer.json");
    let msg = err_of(Tokenizer::from_hf_files(missing, None));
    assert!(msg.contains("/nonexistent/tokenizer.json"), "{msg}");

    let msg = err_of(Tokenizer::from_hf_bytes(b"{not json", None));
    assert!(msg.starts_with("tokenizer.json: "), "{msg}");

    let mut v: Value = serde_json::from_str(&spm_json()).expect("json");
    v["model"]["type"] = json!("NoSuchModel");
    let msg = err_of(Tokenizer::from_hf_bytes(v.to_string().as_bytes(), None));
    assert!(msg.starts_with("tokenizer.json: "), "{msg}");

    let msg = err_of(Tokenizer::from_hf_bytes(b"[]", None));
    assert!(msg.starts_with("tokenizer.json: "), "{msg}");

    let json = spm_json();
    let msg = err_of(Tokenizer::from_hf_bytes(json.as_bytes(), Some(b"[1, 2")));
    assert!(msg.starts_with("tokenizer_config.json: "), "{msg}");
    let msg = err_of(Tokenizer::from_hf_bytes(json.as_bytes(), Some(b"42")));
    assert!(msg.starts_with("tokenizer_config.json: "), "{msg}");
    // A stray huge id would make the id-indexed tables enormous.
    let mut v: Value = serde_json::from_str(&json).expect("json");
    v["model"]["vocab"]["zz"] = json!(4_000_000_000u32);
    let msg = err_of(Tokenizer::from_hf_bytes(v.to_string().as_bytes(), None));
    assert!(msg.contains("4000000000"), "{msg}");

    let dir = fixture("llama/f32");
    let msg = err_of(Tokenizer::from_hf_files(
        &dir.join("tokenizer.json"),
        Some(&dir.join("no_such_config.json")),
    ));
    assert!(msg.contains("no_such_config.json"), "{msg}");
}

#[test]
fn truncated_and_mangled_files_never_panic() {
    let json = spm_json();
    let bytes = json.as_bytes();
    // Every prefix length would take too long; a spread of cut points covers each section.
    for cut in (0..bytes.len()).step_by(97) {
        let _ = Tokenizer::from_hf_bytes(&bytes[..cut], None);
    }
    let fixture_json = std::fs::read(fixture("llama/f32/tokenizer.json")).expect("fixture");
    for cut in (0..fixture_json.len()).step_by(251) {
        let _ = Tokenizer::from_hf_bytes(&fixture_json[..cut], None);
    }
    // Structurally valid JSON with wrong types in places.
    let mut v: Value = serde_json::from_str(&json).expect("json");
    v["model"]["merges"] = json!(["▁ nosuch"]);
    let _ = Tokenizer::from_hf_bytes(v.to_string().as_bytes(), None);
    let mut v: Value = serde_json::from_str(&json).expect("json");
    v["added_tokens"] = json!([{"id": 300, "content": "<x>", "special": true}]);
    if let Ok(t) = Tokenizer::from_hf_bytes(v.to_string().as_bytes(), None) {
        let _ = t.encode("a<x>b", true, true);
        let _ = t.decode(&[300, 299, 7, u32::MAX]);
        let _ = t.token_bytes(299);
    }
    let weird_cfg = json!({"bos_token": 7, "eos_token": {"content": 3}, "add_bos_token": "yes",
                           "extra_special_tokens": {"image": "<img>"},
                           "added_tokens_decoder": {"x": {}, "9": {"content": "<y>"}}});
    let t = Tokenizer::from_hf_bytes(json.as_bytes(), Some(weird_cfg.to_string().as_bytes()))
        .expect("odd but valid config");
    let _ = t.encode("<img><y>", true, true);
}

/// Random edits of real `tokenizer.json` files (wrong types, empty values, odd specials) load
/// with an error or work; none panics (hostile files get a one-line error).
#[test]
fn mutated_tokenizer_json_never_panics() {
    use std::panic::{catch_unwind, AssertUnwindSafe};
    fn paths(v: &Value, cur: Vec<String>, out: &mut Vec<Vec<String>>, depth: usize) {
        out.push(cur.clone());
        if depth > 6 {
            return;
        }
        match v {
            Value::Object(m) => {
                for (k, x) in m {
                    if k == "vocab" {
                        let mut c = cur.clone();
                        c.push(k.clone());
                        out.push(c.clone());
                        for (kk, _) in m[k]
                            .as_object()
                            .map(|o| o.iter().take(5).collect::<Vec<_>>())
                            .unwrap_or_default()
                        {
                            let mut c2 = c.clone();
                            c2.push(kk.clone());
                            out.push(c2);
                        }
                        continue;
                    }
                    let mut c = cur.clone();
                    c.push(k.clone());
                    paths(x, c, out, depth + 1)
                }
            }
            Value::Array(a) => {
                for (i, x) in a.iter().enumerate().take(6) {
                    let mut c = cur.clone();
                    c.push(i.to_string());
                    paths(x, c, out, depth + 1)
                }
            }
            _ => {}
        }
    }
    fn get_mut<'a>(v: &'a mut Value, p: &[String]) -> Option<&'a mut Value> {
        let mut cur = v;
        for k in p {
            cur = match cur {
                Value::Array(a) => a.get_mut(k.parse::<usize>().ok()?)?,
                Value::Object(m) => m.get_mut(k)?,
                _ => return None,
            };
        }
        Some(cur)
    }
    let repl = [
        json!(null),
        json!(0),
        json!(-1),
        json!(4000000000u64),
        json!(""),
        json!("x"),
        json!([]),
        json!({}),
        json!(true),
        json!("<0xZZ>"),
        json!([["a", "b"]]),
        json!({"type":"Sequence"}),
        json!({"type":"Metaspace"}),
        json!({"type":"Strip"}),
        json!(1.5),
    ];
    let srcs = [
        spm_json(),
        std::fs::read_to_string(fixture("llama/f32/tokenizer.json")).unwrap(),
    ];
    std::panic::set_hook(Box::new(|_| {}));
    let mut seed: u64 = 12345;
    let mut rnd = move |n: usize| {
        seed = seed
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        ((seed >> 33) as usize) % n
    };
    let mut panics = std::collections::BTreeMap::new();
    for src in &srcs {
        let base: Value = serde_json::from_str(src).unwrap();
        let mut ps = vec![];
        paths(&base, vec![], &mut ps, 0);
        for _ in 0..3000 {
            let mut v = base.clone();
            let k = 1 + rnd(2);
            let mut desc = vec![];
            for _ in 0..k {
                let p = &ps[rnd(ps.len())];
                let r = repl[rnd(repl.len())].clone();
                desc.push(format!("{}={}", p.join("."), r));
                if let Some(x) = get_mut(&mut v, p) {
                    *x = r;
                }
            }
            let bytes = v.to_string();
            let res = catch_unwind(AssertUnwindSafe(|| {
                if let Ok(t) = Tokenizer::from_hf_bytes(bytes.as_bytes(), None) {
                    let ids = t.encode("Hello <s> wörld 😀 <|im_end|>", true, true);
                    let _ = t.encode("Hello <s> wörld", true, false);
                    let _ = t.decode(&ids);
                    for id in 0..t.n_vocab() as u32 + 2 {
                        let _ = t.token_bytes(id);
                    }
                }
            }));
            if let Err(e) = res {
                let m = e
                    .downcast_ref::<String>()
                    .cloned()
                    .or_else(|| e.downcast_ref::<&str>().map(|s| s.to_string()))
                    .unwrap_or_default();
                panics.entry(m).or_insert(desc.join(" ; "));
            }
        }
    }
    let _ = std::panic::take_hook();
    let report: Vec<String> = panics
        .iter()
        .map(|(m, d)| format!("panic {m:?} via {d}"))
        .collect();
    assert!(report.is_empty(), "{}", report.join("\n"));
}
