//! `lf chat`: an interactive (or one-shot) chat with a model: a HF directory, a GGUF file, or a
//! LoRA artifact (its adapter is attached to the base it carries in `base/`).
//!
//! The principal function is [`chat`]; the CLI layer builds its [`ChatOptions`]. Prompts are
//! rendered with the model's own chat template through [`render_chat_template`], which uses the same
//! renderer as the training data.

use std::collections::BTreeMap;
use std::io::{BufRead, Write};
use std::path::PathBuf;

use anyhow::Context;
use burn::tensor::backend::Backend;
use serde::Serialize;

use crate::data::chat::{ChatTemplate, TemplateTokens, describe_error};
use lf_model::ModelArtifact;
use lf_model::TokenizerBundle;
use lf_model::backend::{Device, Dtype, InferenceTask, run_inference};
use lf_model::generate::{GenerateOptions, Sampling, generate};

/// What `lf chat` was asked to do.
#[derive(Debug, Clone)]
pub struct ChatOptions {
    /// A HF model directory, a `.gguf` file, a directory holding one `.gguf`, or a LoRA artifact.
    pub model: PathBuf,
    /// Answer this one prompt and exit (no interactive loop).
    pub prompt: Option<String>,
    /// System prompt.
    pub system: Option<String>,
    /// Sampling settings (temperature 0: greedy).
    pub sampling: Sampling,
    /// Most new tokens per answer.
    pub max_new_tokens: usize,
    /// Extra strings that end an answer.
    pub stop: Vec<String>,
    /// Where to run.
    pub device: Device,
    /// Weight and activation dtype.
    pub dtype: Dtype,
}

impl Default for ChatOptions {
    fn default() -> Self {
        ChatOptions {
            model: PathBuf::new(),
            prompt: None,
            system: None,
            sampling: Sampling::greedy(),
            max_new_tokens: 256,
            stop: Vec::new(),
            device: Device::Auto,
            dtype: Dtype::F32,
        }
    }
}

/// One chat turn.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ChatMessage {
    /// `system`, `user` or `assistant`.
    pub role: String,
    /// The text.
    pub content: String,
}

impl ChatMessage {
    /// A message with `role` and `content`.
    pub fn new(role: &str, content: impl Into<String>) -> Self {
        ChatMessage {
            role: role.to_owned(),
            content: content.into(),
        }
    }
}

/// Renders `messages` with a HF chat template the way transformers' `apply_chat_template` does, with
/// the same renderer that prepares training data (`data::chat`), so a model is asked in exactly the
/// format it was trained on.
pub fn render_chat_template(
    template: &str,
    messages: &[ChatMessage],
    add_generation_prompt: bool,
    tokenizer: &TokenizerBundle,
) -> anyhow::Result<String> {
    let tokens = TemplateTokens {
        bos: tokenizer.bos_token.clone(),
        eos: tokenizer.eos_token.clone(),
        pad: tokenizer.pad_token.clone(),
        unk: tokenizer.unk_token.clone(),
    };
    let invalid = |e: minijinja::Error| anyhow::anyhow!("{}", describe_error(&e));
    ChatTemplate::new(template, &tokens, &BTreeMap::new())
        .map_err(invalid)
        .context("invalid chat template")?
        .render_values(
            minijinja::Value::from_serialize(messages),
            None,
            add_generation_prompt,
            &BTreeMap::new(),
        )
        .map_err(invalid)
        .context("cannot render the chat template")
}

/// The prompt text for `messages`: the chat template when the model has one, else the turns'
/// contents joined by newlines.
pub fn build_prompt(
    tokenizer: &TokenizerBundle,
    messages: &[ChatMessage],
) -> anyhow::Result<String> {
    match &tokenizer.chat_template {
        Some(t) => render_chat_template(t, messages, true, tokenizer),
        None => Ok(messages
            .iter()
            .map(|m| m.content.as_str())
            .collect::<Vec<_>>()
            .join("\n")),
    }
}

struct ChatTask {
    opts: ChatOptions,
}

impl InferenceTask for ChatTask {
    type Output = anyhow::Result<()>;

    fn run<B: Backend>(self, device: B::Device, dtype: Dtype) -> anyhow::Result<()> {
        let opts = self.opts;
        let source = ModelArtifact::open(&opts.model)?;
        let tokenizer = source
            .tokenizer()
            .with_context(|| format!("cannot load the tokenizer of `{}`", opts.model.display()))?;
        let config = source.config.clone();
        let model = source.load::<B>(&device, dtype)?;
        let mut eos_ids = tokenizer.eos_ids.clone();
        for id in &config.eos_token_ids {
            if !eos_ids.contains(id) {
                eos_ids.push(*id);
            }
        }
        let gen_opts = GenerateOptions {
            max_new_tokens: opts.max_new_tokens,
            sampling: opts.sampling.clone(),
            eos_ids: eos_ids.clone(),
            stop_strings: opts.stop.clone(),
            pad_id: tokenizer.pad_id.or(config.pad_token_id).unwrap_or(0),
        };
        let system: Vec<ChatMessage> = opts
            .system
            .iter()
            .map(|s| ChatMessage::new("system", s.clone()))
            .collect();
        let mut history = system.clone();
        let interactive = opts.prompt.is_none();
        let stdin = std::io::stdin();
        let mut lines = stdin.lock().lines();
        let mut turn = 0u64;
        loop {
            let user = match &opts.prompt {
                Some(p) => p.clone(),
                None => {
                    eprint!("> ");
                    std::io::stderr().flush().ok();
                    match lines.next() {
                        None => break,
                        Some(line) => line.context("cannot read stdin")?,
                    }
                }
            };
            match user.trim() {
                "exit" | "quit" if interactive => break,
                "clear" if interactive => {
                    history = system.clone();
                    eprintln!("(history cleared)");
                    continue;
                }
                "" if interactive => continue,
                _ => {}
            }
            history.push(ChatMessage::new("user", user));
            let prompt = build_prompt(&tokenizer, &history)?;
            let ids = tokenizer.encode(&prompt, false)?;
            let mut stream = tokenizer.tokenizer.decode_stream(true);
            let mut stdout = std::io::stdout().lock();
            let mut answer_ids = Vec::new();
            let mut turn_opts = gen_opts.clone();
            turn_opts.sampling.seed = gen_opts.sampling.seed.wrapping_add(turn);
            let mut write_err = None;
            let out = generate(
                &model,
                &[ids],
                &turn_opts,
                Some(&tokenizer),
                &mut |_, tok| {
                    if eos_ids.contains(&tok) {
                        return;
                    }
                    answer_ids.push(tok);
                    if let Ok(Some(piece)) = stream.step(tok)
                        && let Err(e) = stdout
                            .write_all(piece.as_bytes())
                            .and_then(|_| stdout.flush())
                    {
                        write_err.get_or_insert(e);
                    }
                },
            )?;
            if let Some(e) = write_err {
                return Err(e).context("cannot write to stdout");
            }
            writeln!(stdout)?;
            drop(stdout);
            let mut answer = tokenizer.decode(&answer_ids, true)?;
            for s in &opts.stop {
                if let Some(i) = answer.find(s.as_str()) {
                    answer.truncate(i);
                }
            }
            eprintln!(
                "[{} prompt tokens, {:.1} tok/s; {} new tokens, {:.1} tok/s]",
                out.prompt_tokens,
                out.prompt_tokens_per_sec(),
                out.tokens[0].len(),
                out.gen_tokens_per_sec()
            );
            history.push(ChatMessage::new("assistant", answer));
            turn += 1;
            if !interactive {
                break;
            }
        }
        Ok(())
    }
}

/// Runs `lf chat`: loads the model and its tokenizer, then answers `opts.prompt` once, or reads
/// user turns from stdin (`clear` forgets the history, `exit` quits). Answers stream to stdout;
/// throughput goes to stderr.
pub fn chat(opts: ChatOptions) -> anyhow::Result<()> {
    // Checked before the model loads: a bad option should not cost a model load to find out.
    opts.sampling
        .validate()
        .map_err(|e| anyhow::anyhow!("{e}\nhint: see `lf chat --help` for each option's range"))?;
    anyhow::ensure!(
        opts.max_new_tokens > 0,
        "--max-new-tokens is 0; it must be at least 1"
    );
    let (device, dtype) = (opts.device, opts.dtype);
    run_inference(device, dtype, ChatTask { opts })?
}

#[cfg(test)]
mod tests {
    use std::path::{Path, PathBuf};

    use lf_model::gguf::GgufFile;
    use lf_model::gguf::tokenizer::tokenizer_from_gguf;
    use serde_json::Value;

    use super::{ChatMessage, build_prompt};

    fn fixtures() -> PathBuf {
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../tests/fixtures")
    }

    fn read_json(path: &Path) -> Value {
        let text =
            std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
        serde_json::from_str(&text).unwrap()
    }

    fn ids_of(v: &Value) -> Vec<u32> {
        v.as_array()
            .unwrap()
            .iter()
            .map(|x| x.as_u64().unwrap() as u32)
            .collect()
    }

    fn smollm2_gguf() -> PathBuf {
        let dir = std::env::var_os("LF_MODELS_DIR")
            .map(PathBuf::from)
            .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("../.models"));
        let path = dir.join("SmolLM2-135M-Instruct.Q4_1.gguf");
        assert!(
            path.is_file(),
            "`{}` is missing: this test needs it\nhint: run `scripts/fetch-models.sh` from the repository root",
            path.display()
        );
        path
    }

    #[test]
    fn smollm2_chat_template_renders_the_golden_prompt() {
        let file = GgufFile::open(&smollm2_gguf()).unwrap();
        let tb = tokenizer_from_gguf(&file).unwrap();
        let golden = read_json(&fixtures().join("smollm2/logits.json"));
        for p in golden["prompts"].as_array().unwrap() {
            if p["chat_template"] != Value::Bool(true) {
                continue;
            }
            let messages: Vec<ChatMessage> = p["messages"]
                .as_array()
                .unwrap()
                .iter()
                .map(|m| {
                    ChatMessage::new(m["role"].as_str().unwrap(), m["content"].as_str().unwrap())
                })
                .collect();
            let text = build_prompt(&tb, &messages).unwrap();
            assert_eq!(text, p["text"].as_str().unwrap());
            assert_eq!(tb.encode(&text, false).unwrap(), ids_of(&p["input_ids"]));
        }
    }
}
