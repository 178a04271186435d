//! `lf chat`: an interactive (or one-shot) chat with a model directory or GGUF file.
//!
//! The principal function is [`chat`]; the CLI layer builds its [`ChatOptions`]. Prompts are
//! rendered with the model's own chat template through [`render_chat_template`], the one place to
//! swap in the general HF-compatible renderer.

use std::io::{BufRead, Write};
use std::path::PathBuf;

use anyhow::Context;
use burn::tensor::backend::Backend;
use serde::Serialize;

use crate::model::backend::{DeviceChoice, Dtype, InferenceTask, run_inference};
use crate::model::generate::{GenerateOptions, Sampling, generate};
use crate::model::{TokenizerBundle, load_tokenizer};

/// What `lf chat` was asked to do.
#[derive(Debug, Clone)]
pub struct ChatOptions {
    /// A HF model directory, a `.gguf` file, or a directory holding one `.gguf`.
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
    pub device: DeviceChoice,
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
            device: DeviceChoice::Auto,
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

/// Renders `messages` with a HF chat template the way transformers' `apply_chat_template` does
/// (Jinja with `trim_blocks` and `lstrip_blocks`, Python string methods, `raise_exception`,
/// `tojson`, `strftime_now`, and the special tokens as variables).
pub fn render_chat_template(
    template: &str,
    messages: &[ChatMessage],
    add_generation_prompt: bool,
    tokenizer: &TokenizerBundle,
) -> anyhow::Result<String> {
    let mut env = minijinja::Environment::new();
    env.set_trim_blocks(true);
    env.set_lstrip_blocks(true);
    env.set_unknown_method_callback(minijinja_contrib::pycompat::unknown_method_callback);
    env.add_function(
        "raise_exception",
        |msg: String| -> Result<minijinja::Value, minijinja::Error> {
            Err(minijinja::Error::new(
                minijinja::ErrorKind::InvalidOperation,
                msg,
            ))
        },
    );
    env.add_function("strftime_now", |fmt: String| strftime_now(&fmt));
    env.add_template("chat", template)
        .context("invalid chat template")?;
    let ctx = minijinja::context! {
        messages => messages,
        add_generation_prompt => add_generation_prompt,
        bos_token => tokenizer.bos_token.clone().unwrap_or_default(),
        eos_token => tokenizer.eos_token.clone().unwrap_or_default(),
        pad_token => tokenizer.pad_token.clone().unwrap_or_default(),
        unk_token => tokenizer.unk_token.clone().unwrap_or_default(),
        tools => minijinja::Value::from(()),
    };
    env.get_template("chat")?
        .render(ctx)
        .context("cannot render the chat template")
}

/// `strftime` of the current UTC time for the codes chat templates use.
fn strftime_now(fmt: &str) -> String {
    let secs = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs() as i64);
    strftime_at(fmt, secs)
}

fn strftime_at(fmt: &str, secs: i64) -> String {
    const MONTHS: [&str; 12] = [
        "January",
        "February",
        "March",
        "April",
        "May",
        "June",
        "July",
        "August",
        "September",
        "October",
        "November",
        "December",
    ];
    const DAYS: [&str; 7] = [
        "Thursday",
        "Friday",
        "Saturday",
        "Sunday",
        "Monday",
        "Tuesday",
        "Wednesday",
    ];
    let days = secs.div_euclid(86_400);
    let rem = secs.rem_euclid(86_400);
    // Civil date from days since 1970-01-01 (Howard Hinnant's algorithm).
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    let weekday = DAYS[days.rem_euclid(7) as usize];
    let month_name = MONTHS[(month - 1) as usize];
    let mut out = String::new();
    let mut chars = fmt.chars();
    while let Some(c) = chars.next() {
        if c != '%' {
            out.push(c);
            continue;
        }
        match chars.next() {
            Some('Y') => out.push_str(&year.to_string()),
            Some('y') => out.push_str(&format!("{:02}", year.rem_euclid(100))),
            Some('m') => out.push_str(&format!("{month:02}")),
            Some('d') => out.push_str(&format!("{day:02}")),
            Some('e') => out.push_str(&format!("{day:>2}")),
            Some('-') => match chars.next() {
                Some('d') => out.push_str(&day.to_string()),
                Some('m') => out.push_str(&month.to_string()),
                Some(o) => {
                    out.push_str("%-");
                    out.push(o);
                }
                None => out.push_str("%-"),
            },
            Some('B') => out.push_str(month_name),
            Some('b') => out.push_str(&month_name[..3]),
            Some('A') => out.push_str(weekday),
            Some('a') => out.push_str(&weekday[..3]),
            Some('H') => out.push_str(&format!("{:02}", rem / 3600)),
            Some('M') => out.push_str(&format!("{:02}", rem % 3600 / 60)),
            Some('S') => out.push_str(&format!("{:02}", rem % 60)),
            Some('%') => out.push('%'),
            Some(o) => {
                out.push('%');
                out.push(o);
            }
            None => out.push('%'),
        }
    }
    out
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
        // A LoRA artifact has the tokenizer files but no `config.json` at its top.
        let tokenizer = if opts.model.join("tokenizer.json").is_file() {
            TokenizerBundle::from_hf_dir(&opts.model).map_err(anyhow::Error::from)
        } else {
            load_tokenizer(&opts.model).map_err(anyhow::Error::from)
        }
        .with_context(|| format!("cannot load the tokenizer of `{}`", opts.model.display()))?;
        // A LoRA artifact (an adapter with its base in `base/`) comes with its adapter attached.
        let model = crate::train::load_any::<B>(&opts.model, &device, dtype)
            .with_context(|| format!("cannot load model `{}`", opts.model.display()))?;
        let mut eos_ids = tokenizer.eos_ids.clone();
        for id in &model.config.eos_token_ids {
            if !eos_ids.contains(id) {
                eos_ids.push(*id);
            }
        }
        let gen_opts = GenerateOptions {
            max_new_tokens: opts.max_new_tokens,
            sampling: opts.sampling.clone(),
            eos_ids: eos_ids.clone(),
            stop_strings: opts.stop.clone(),
            pad_id: tokenizer.pad_id.or(model.config.pad_token_id).unwrap_or(0),
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
    let (device, dtype) = (opts.device, opts.dtype);
    run_inference(device, dtype, ChatTask { opts })?
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn strftime_formats_a_known_date() {
        // 2024-02-29 13:05:09 UTC, a Thursday.
        let t = 1_709_211_909;
        assert_eq!(strftime_at("%Y-%m-%d %H:%M:%S", t), "2024-02-29 13:05:09");
        assert_eq!(
            strftime_at("%d %B %Y, %A %b %a %-d", t),
            "29 February 2024, Thursday Feb Thu 29"
        );
    }
}
