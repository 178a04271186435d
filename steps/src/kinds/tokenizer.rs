//! `tokenizer`: trains a byte-level BPE tokenizer on text and writes it as a Hugging Face tokenizer
//! folder, with a chat template.

use lf_engine::{Problem, Step, StepContext};
use lf_schemas::FieldPath;
use lf_schemas::kinds::TokenizerParams;
use lf_schemas::kinds::dataset::TemplateName;

use crate::data::bpe::{train, training_texts};
use crate::data::builtin;

/// The `tokenizer` step kind.
pub struct TokenizerStep;

impl Step for TokenizerStep {
    type Params = TokenizerParams;
    const KIND: &'static str = "tokenizer";
    const VERSION: u32 = 1;
    const ABOUT: &'static str = "train a byte-level BPE tokenizer on text, with a chat template";

    fn check(&self, p: &TokenizerParams) -> Vec<Problem> {
        let mut problems = Vec::new();
        if let Some(problem) =
            crate::data::render::check_source(FieldPath::key("source"), &p.source)
        {
            problems.push(problem);
        }
        if p.template == TemplateName::Auto {
            problems.push(
                Problem::new(
                    FieldPath::key("template"),
                    "a new tokenizer has no template of its own",
                )
                .hint("choose a built-in one, e.g. `chatml`"),
            );
        }
        let specials = 1 + p.special_tokens.len() + 4;
        if p.vocab_size < 256 + specials {
            problems.push(Problem::new(
                FieldPath::key("vocab_size"),
                format!(
                    "must be at least {} (256 bytes and the special tokens)",
                    256 + specials
                ),
            ));
        }
        for (i, s) in p.special_tokens.iter().enumerate() {
            if s.is_empty() {
                problems.push(Problem::new(
                    FieldPath::key("special_tokens").at(i),
                    "is empty",
                ));
            }
        }
        problems
    }

    fn run(&self, p: &TokenizerParams, cx: &mut StepContext<'_>) -> anyhow::Result<()> {
        let input = if builtin::is_builtin(&p.source) {
            None
        } else {
            Some(cx.input("source")?)
        };
        let texts = training_texts(&p.source, input, p.file.as_deref())?;
        let vocab = train(p, &texts, cx.out_dir())?;
        cx.metric("vocab_size", vocab);
        cx.metric(
            "training_bytes",
            texts.iter().map(String::len).sum::<usize>(),
        );
        Ok(())
    }
}
