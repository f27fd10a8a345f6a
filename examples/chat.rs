//! A two-turn chat with the model's chat template, reusing the KV cache between turns.
//!
//! `cargo run --release --example chat -- models/SmolLM2-135M-Instruct.Q4_1.gguf`
use torchless::chat::{ChatTemplate, Message};
use torchless::{GenerateOptions, LoadOptions, Model, SamplerConfig};

fn main() -> Result<(), torchless::Error> {
    let path = std::env::args()
        .nth(1)
        .unwrap_or("models/SmolLM2-135M-Instruct.Q4_1.gguf".into());
    let model = Model::load(&path, &LoadOptions::default())?;
    // The model's own template, or the built-in one for its family.
    let template = ChatTemplate::for_model(&model, None)?;
    let mut session = model.session(2048)?;
    let opts = GenerateOptions {
        max_tokens: 96,
        sampler: SamplerConfig::greedy(),
        stop: Vec::new(),
    };
    let mut history = vec![Message::new("system", "You are a concise assistant.")];
    for question in ["What is the capital of France?", "And of Italy?"] {
        println!("> {question}");
        history.push(Message::new("user", question));
        let prompt = template.tokens(&model, &history)?;
        let mut reply = String::new();
        // Only the tokens after what the session already holds are evaluated.
        let stats = session.generate(&prompt, &opts, |text| reply.push_str(text))?;
        println!("{reply}");
        eprintln!("{}", stats.summary());
        history.push(Message::new("assistant", reply));
    }
    Ok(())
}
