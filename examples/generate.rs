//! Generate text from a prompt with the library API.
//!
//! `cargo run --release --example generate -- models/SmolLM2-135M-Instruct.Q4_1.gguf "Once upon a time"`
use std::io::Write;

use torchless::{GenerateOptions, LoadOptions, Model, SamplerConfig};

fn main() -> Result<(), torchless::Error> {
    let mut args = std::env::args().skip(1);
    let path = args
        .next()
        .unwrap_or("models/SmolLM2-135M-Instruct.Q4_1.gguf".into());
    let prompt = args.next().unwrap_or("The three primary colors are".into());
    let model = Model::load(&path, &LoadOptions::default())?;
    let mut session = model.session(512)?;
    let opts = GenerateOptions {
        max_tokens: 64,
        sampler: SamplerConfig {
            temperature: 0.7,
            seed: 42,
            ..Default::default()
        },
        stop: vec!["\n\n".into()],
    };
    let stats = session.generate(&model.tokenize(&prompt), &opts, |text| {
        print!("{text}");
        let _ = std::io::stdout().flush();
    })?;
    eprintln!("\n{}", stats.summary());
    Ok(())
}
