//! The model worker: one thread that owns the model and answers [`Job`]s one at a time, streaming
//! each answer's text back as it is decoded.
//!
//! Requests wait in a bounded queue in front of it (`max_queue`); a full queue is the server's 429.
//! A job whose client went away (its event receiver dropped) is skipped, and one being answered
//! stops at the next token, so a disconnect frees the model at once.

use std::panic::{AssertUnwindSafe, catch_unwind};
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::mpsc;

use anyhow::Context as _;
use burn::tensor::backend::Backend;
use lf_model::backend::{Device, Dtype, InferenceTask, run_inference};
use lf_model::generate::{FinishReason, GenerateOptions, Sampling, generate_until};
use lf_model::{ModelArtifact, TokenizerBundle};
use tokio::sync::mpsc::UnboundedSender;

/// One generation request, its prompt already tokenized.
pub struct Job {
    /// Prompt token ids.
    pub ids: Vec<u32>,
    /// Most new tokens.
    pub max_tokens: usize,
    /// Token choice.
    pub sampling: Sampling,
    /// Strings that end the answer (not included in it).
    pub stop: Vec<String>,
    /// Where the answer goes.
    pub events: UnboundedSender<Event>,
}

/// What the worker reports for a job.
#[derive(Debug, Clone, PartialEq)]
pub enum Event {
    /// More answer text.
    Text(String),
    /// The answer is complete.
    Done {
        /// OpenAI's `finish_reason`: `stop` (EOS or a stop string) or `length`.
        finish: &'static str,
        /// Prompt tokens.
        prompt_tokens: usize,
        /// Generated tokens.
        completion_tokens: usize,
    },
    /// Generation failed.
    Error(String),
}

/// What the server needs to know of the loaded model.
#[derive(Clone)]
pub struct ModelInfo {
    /// The tokenizer (with the chat template).
    pub tokenizer: Arc<TokenizerBundle>,
    /// The context length (prompt plus answer).
    pub context: usize,
}

/// The handle through which requests reach the worker.
#[derive(Clone)]
pub struct Worker {
    jobs: mpsc::SyncSender<Job>,
    waiting: Arc<AtomicUsize>,
    cancelled: Arc<AtomicU64>,
    alive: Arc<AtomicBool>,
    /// The loaded model.
    pub info: ModelInfo,
}

/// Why a job was not queued.
#[derive(Debug)]
pub enum Refused {
    /// The queue is full.
    Full,
    /// The worker has stopped.
    Gone,
}

impl Worker {
    /// Loads `model` on a thread of its own and returns once it is ready to answer (or failed to
    /// load). At most `max_queue` jobs wait behind the one being answered.
    pub fn spawn(
        model: PathBuf,
        device: Device,
        dtype: Dtype,
        max_queue: usize,
    ) -> anyhow::Result<Self> {
        let (jobs, rx) = mpsc::sync_channel::<Job>(max_queue);
        let waiting = Arc::new(AtomicUsize::new(0));
        let cancelled = Arc::new(AtomicU64::new(0));
        let alive = Arc::new(AtomicBool::new(true));
        let (ready_tx, ready_rx) = mpsc::sync_channel(1);
        let task = Serve {
            model,
            jobs: rx,
            waiting: waiting.clone(),
            cancelled: cancelled.clone(),
            ready: ready_tx,
        };
        let flag = alive.clone();
        std::thread::Builder::new()
            .name("lf-serve-model".into())
            .spawn(move || {
                // The flag drops to false however the thread ends (a panic included).
                struct Dead(Arc<AtomicBool>);
                impl Drop for Dead {
                    fn drop(&mut self) {
                        self.0.store(false, Ordering::SeqCst);
                    }
                }
                let _dead = Dead(flag);
                let ready = task.ready.clone();
                if let Err(e) = run_inference(device, dtype, task) {
                    let _ = ready.send(Err(e));
                }
            })
            .context("cannot start the model thread")?;
        let info = ready_rx
            .recv()
            .context("the model thread stopped while loading")??;
        Ok(Worker {
            jobs,
            waiting,
            cancelled,
            alive,
            info,
        })
    }

    /// Queues `job`, or says why not.
    pub fn submit(&self, job: Job) -> Result<(), Refused> {
        self.waiting.fetch_add(1, Ordering::SeqCst);
        match self.jobs.try_send(job) {
            Ok(()) => Ok(()),
            Err(e) => {
                self.waiting.fetch_sub(1, Ordering::SeqCst);
                Err(match e {
                    mpsc::TrySendError::Full(_) => Refused::Full,
                    mpsc::TrySendError::Disconnected(_) => Refused::Gone,
                })
            }
        }
    }

    /// Jobs queued and not yet started.
    pub fn queue_depth(&self) -> usize {
        self.waiting.load(Ordering::SeqCst)
    }

    /// Whether the model thread still runs.
    pub fn is_alive(&self) -> bool {
        self.alive.load(Ordering::SeqCst)
    }

    /// Jobs dropped or stopped because their client went away.
    pub fn cancelled(&self) -> u64 {
        self.cancelled.load(Ordering::SeqCst)
    }
}

struct Serve {
    model: PathBuf,
    jobs: mpsc::Receiver<Job>,
    waiting: Arc<AtomicUsize>,
    cancelled: Arc<AtomicU64>,
    ready: mpsc::SyncSender<anyhow::Result<ModelInfo>>,
}

impl InferenceTask for Serve {
    type Output = ();

    fn run<B: Backend>(self, device: B::Device, dtype: Dtype) {
        let loaded = (|| -> anyhow::Result<_> {
            let artifact = ModelArtifact::open(&self.model)?;
            let tokenizer = artifact.tokenizer().with_context(|| {
                format!("cannot load the tokenizer of `{}`", self.model.display())
            })?;
            let model = artifact.load::<B>(&device, dtype)?;
            Ok((model, tokenizer))
        })();
        let (model, tokenizer) = match loaded {
            Ok(v) => v,
            Err(e) => {
                let _ = self.ready.send(Err(e));
                return;
            }
        };
        let mut eos = tokenizer.eos_ids.clone();
        for id in &model.config.eos_token_ids {
            if !eos.contains(id) {
                eos.push(*id);
            }
        }
        let pad_id = tokenizer.pad_id.or(model.config.pad_token_id).unwrap_or(0);
        let info = ModelInfo {
            tokenizer: Arc::new(tokenizer),
            context: model.config.max_position_embeddings,
        };
        let tokenizer = info.tokenizer.clone();
        if self.ready.send(Ok(info)).is_err() {
            return;
        }
        while let Ok(job) = self.jobs.recv() {
            self.waiting.fetch_sub(1, Ordering::SeqCst);
            if job.events.is_closed() {
                self.cancelled.fetch_add(1, Ordering::SeqCst);
                continue;
            }
            let opts = GenerateOptions {
                max_new_tokens: job.max_tokens,
                sampling: job.sampling.clone(),
                eos_ids: eos.clone(),
                stop_strings: Vec::new(),
                pad_id,
            };
            // A panic in one answer (a kernel failure, say) fails that request, not the server.
            let events = job.events.clone();
            match catch_unwind(AssertUnwindSafe(|| answer(&model, &tokenizer, &opts, job))) {
                Ok(true) => {}
                Ok(false) => {
                    self.cancelled.fetch_add(1, Ordering::SeqCst);
                }
                Err(_) => {
                    let _ = events.send(Event::Error(
                        "generation failed (panicked); see the server log".into(),
                    ));
                }
            }
        }
    }
}

/// Generates one answer, sending its text as it becomes final. False if the client went away.
fn answer<B: Backend>(
    model: &lf_model::Llama<B>,
    tokenizer: &TokenizerBundle,
    opts: &GenerateOptions,
    job: Job,
) -> bool {
    let mut text = TextStream::new(&job.stop);
    let mut ids = Vec::new();
    let mut stopped = false;
    let mut gone = false;
    let result = generate_until(
        model,
        std::slice::from_ref(&job.ids),
        opts,
        None,
        &mut |_, tok| {
            if job.events.is_closed() {
                gone = true;
                return false;
            }
            if opts.eos_ids.contains(&tok) {
                return true;
            }
            ids.push(tok);
            let decoded = tokenizer.decode(&ids, true).unwrap_or_default();
            let (piece, stop) = text.advance(&decoded);
            if !piece.is_empty() && job.events.send(Event::Text(piece)).is_err() {
                gone = true;
                return false;
            }
            stopped = stop;
            !stop
        },
    );
    if gone {
        return false;
    }
    let event = match result {
        Ok(out) => {
            let rest = text.finish(&tokenizer.decode(&ids, true).unwrap_or_default());
            if !rest.is_empty() {
                let _ = job.events.send(Event::Text(rest));
            }
            Event::Done {
                finish: match out.finish[0] {
                    FinishReason::Length if !stopped => "length",
                    _ => "stop",
                },
                prompt_tokens: out.prompt_tokens,
                completion_tokens: out.tokens[0].len(),
            }
        }
        Err(e) => Event::Error(e.to_string()),
    };
    job.events.send(event).is_ok()
}

/// Turns the growing decoded answer into final pieces: text that may still become part of a stop
/// string, or an incomplete UTF-8 sequence (decoded as U+FFFD), is held back until it is settled.
pub struct TextStream<'a> {
    stop: &'a [String],
    sent: usize,
    stopped: bool,
}

impl<'a> TextStream<'a> {
    /// A stream that ends at the first of `stop`.
    pub fn new(stop: &'a [String]) -> Self {
        TextStream {
            stop,
            sent: 0,
            stopped: false,
        }
    }

    /// The new final text of `decoded` (the whole answer so far), and whether a stop string ended
    /// it.
    pub fn advance(&mut self, decoded: &str) -> (String, bool) {
        if self.stopped {
            return (String::new(), true);
        }
        if let Some(end) = self
            .stop
            .iter()
            .filter(|s| !s.is_empty())
            .filter_map(|s| decoded.find(s.as_str()))
            .min()
        {
            self.stopped = true;
            return (self.take(decoded, end), true);
        }
        // Byte-level and byte-fallback decoders show each byte of an unfinished character as U+FFFD.
        let mut end = decoded.trim_end_matches('\u{FFFD}').len();
        // Hold back the longest tail that begins a stop string.
        let mut hold = 0;
        for s in self.stop {
            for (i, _) in s.char_indices().skip(1) {
                if decoded[..end].ends_with(&s[..i]) {
                    hold = hold.max(i);
                }
            }
        }
        end -= hold;
        (self.take(decoded, end), false)
    }

    /// What is left to send once generation ended (nothing after a stop string).
    pub fn finish(&mut self, decoded: &str) -> String {
        if self.stopped {
            return String::new();
        }
        self.take(decoded, decoded.len())
    }

    fn take(&mut self, decoded: &str, end: usize) -> String {
        if end <= self.sent
            || !decoded.is_char_boundary(end)
            || !decoded.is_char_boundary(self.sent)
        {
            return String::new();
        }
        let piece = decoded[self.sent..end].to_owned();
        self.sent = end;
        piece
    }
}

#[cfg(test)]
mod tests {
    use super::TextStream;

    fn run(stop: &[&str], steps: &[&str]) -> (Vec<String>, String) {
        let stop: Vec<String> = stop.iter().map(|s| (*s).to_owned()).collect();
        let mut t = TextStream::new(&stop);
        let mut pieces = Vec::new();
        for s in steps {
            let (p, done) = t.advance(s);
            pieces.push(p);
            if done {
                return (pieces, String::new());
            }
        }
        let rest = t.finish(steps.last().unwrap());
        (pieces, rest)
    }

    #[test]
    fn text_is_sent_once_settled() {
        let (pieces, rest) = run(&[], &["He", "Hell", "Hello", "Hello!"]);
        assert_eq!(pieces, ["He", "ll", "o", "!"]);
        assert_eq!(rest, "");
        // An incomplete character waits for its other bytes.
        let (pieces, _) = run(&[], &["a\u{FFFD}", "aé"]);
        assert_eq!(pieces, ["a", "é"]);
        // Byte fallback: one U+FFFD per byte until the character is complete.
        let (pieces, rest) = run(
            &[],
            &[
                "a",
                "a\u{FFFD}",
                "a\u{FFFD}\u{FFFD}",
                "a\u{FFFD}\u{FFFD}\u{FFFD}",
                "a😀",
                "a😀 is",
                "a😀 is 中",
            ],
        );
        assert_eq!(pieces.concat() + &rest, "a😀 is 中");
    }

    #[test]
    fn stop_strings_end_the_text_and_are_never_sent() {
        // "<" could begin "<end>", so it waits; the stop string cuts the answer.
        let (pieces, rest) = run(
            &["<end>"],
            &["Hi", "Hi <", "Hi <en", "Hi <end>", "Hi <end> more"],
        );
        assert_eq!(pieces.concat(), "Hi ");
        assert_eq!(rest, "");
        // A held-back tail that does not become the stop string is sent later.
        let (pieces, rest) = run(&["<end>"], &["a <", "a <b"]);
        assert_eq!(pieces.concat() + &rest, "a <b");
    }
}
