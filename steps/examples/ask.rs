//! Asks a trained model questions, greedily, with its chat template: a quick check of what training
//! taught it. Works with every model artifact training writes (Hugging Face folders, GGUF files, LoRA
//! artifacts with their `base/`).
//!
//! ```text
//! cargo run --release -p lf-steps --example ask -- runs/quickstart/sft "Who are you?" "누구세요?"
//! ```

use std::path::PathBuf;

use lf_steps::chat::{ChatMessage, build_prompt};
use lf_steps::model::generate::{GenerateOptions, Sampling, generate};
use lf_steps::model::{Cpu, CpuDevice, Dtype};
use lf_steps::train::artifact::ModelSource;
use lf_steps::train::load_any;

fn main() -> anyhow::Result<()> {
    let mut args = std::env::args().skip(1);
    let path = PathBuf::from(args.next().expect("usage: ask MODEL QUESTION..."));
    let source = ModelSource::detect(&path)?;
    let tokenizer = source.tokenizer()?;
    let model = load_any::<Cpu>(&path, &CpuDevice, Dtype::F32)?;
    let mut eos = tokenizer.eos_ids.clone();
    eos.extend(model.config.eos_token_ids.iter().copied());
    let opts = GenerateOptions {
        max_new_tokens: 80,
        sampling: Sampling::greedy(),
        eos_ids: eos.clone(),
        stop_strings: Vec::new(),
        pad_id: tokenizer.pad_id.unwrap_or(0),
    };
    for question in args {
        let prompt = build_prompt(&tokenizer, &[ChatMessage::new("user", question.clone())])?;
        let ids = tokenizer.encode(&prompt, false)?;
        let out = generate(&model, &[ids], &opts, Some(&tokenizer), &mut |_, _| {})?;
        let answer: Vec<u32> = out.tokens[0]
            .iter()
            .copied()
            .filter(|t| !eos.contains(t))
            .collect();
        println!("Q: {question}\nA: {}\n", tokenizer.decode(&answer, true)?);
    }
    Ok(())
}
