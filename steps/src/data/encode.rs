//! Samples made into token ids and labels: which tokens training learns from.
//!
//! A conversation is rendered whole through the chat template, and tokenized once. The replies are
//! found by rendering incrementally: for the reply at message `j`, the prompt `render(messages[..j],
//! add_generation_prompt=true)` must be a prefix of the whole text, and the reply runs from there
//! through the end of `render(messages[..=j])` — its text and the end-of-turn token, but not the
//! whitespace after it (`<|im_end|>` is trained, the `\n` after it is not). When a template renders a
//! reply differently once later turns follow (Qwen3 drops empty `<think>` blocks from history), the
//! reply ends at the first occurrence of its end-of-turn token instead. The tokens of each prompt,
//! tokenized alone, are checked to be a prefix of the conversation's tokens; rows where they are not
//! (a token spans the prompt/reply boundary) are counted, and the boundary token stays untrained.
//!
//! Labels are aligned with the input ids (the Hugging Face convention): `labels[i]` is `ids[i]` when
//! token `i` is trained, else `-100`; the loss shifts them by one.

use lf_schemas::kinds::dataset::{Stage, Truncation};

use super::chat::{ChatTemplate, describe_error};
use super::format::{Conversation, Message, Role, Sample};
use super::tokenizer::ModelTokenizer;

/// The label of a token training does not learn from.
pub const IGNORE: i32 = -100;

/// How samples are encoded.
#[derive(Debug, Clone, Copy)]
pub struct Settings {
    /// The stage.
    pub stage: Stage,
    /// The longest sequence.
    pub cutoff_len: usize,
    /// What happens to longer rows.
    pub truncation: Truncation,
    /// Train on prompts too.
    pub train_on_prompt: bool,
    /// Train on the last reply only.
    pub mask_history: bool,
}

/// Token ids and their labels.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Encoded {
    /// Token ids.
    pub ids: Vec<u32>,
    /// `ids[i]` where trained, else [`IGNORE`].
    pub labels: Vec<i32>,
}

impl Encoded {
    /// How many tokens are trained.
    pub fn trained(&self) -> usize {
        self.labels.iter().filter(|&&l| l != IGNORE).count()
    }

    fn cut(&mut self, len: usize) {
        self.ids.truncate(len);
        self.labels.truncate(len);
    }
}

/// Why a row was left out.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Dropped {
    /// No text, or an empty reply.
    Empty,
    /// The conversation does not end with an assistant reply.
    NoReply,
    /// The chat template raised an error (e.g. roles that do not alternate).
    TemplateError,
    /// The replies could not be located in the rendered text.
    Unmaskable,
    /// Longer than `cutoff_len` (or nothing trained left after cutting).
    TooLong,
}

impl Dropped {
    /// Its name in `info.json` and metrics.
    pub fn name(self) -> &'static str {
        match self {
            Dropped::Empty => "empty",
            Dropped::NoReply => "no_reply",
            Dropped::TemplateError => "template_error",
            Dropped::Unmaskable => "unmaskable",
            Dropped::TooLong => "too_long",
        }
    }
}

/// Remarks about an encoded row, counted in `info.json`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Flags {
    /// Cut to `cutoff_len`.
    pub truncated: bool,
    /// A prompt's own tokens were not a prefix of the conversation's tokens.
    pub prefix_mismatch: bool,
    /// A reply's end was found by its end-of-turn token (the template renders history differently).
    pub searched: bool,
}

/// One encoded sample.
#[derive(Debug, Clone)]
pub enum Outcome {
    /// A conversation (sft).
    Seq {
        /// Ids and labels.
        seq: Encoded,
        /// The rendered text.
        text: String,
        /// Remarks.
        flags: Flags,
    },
    /// A preference pair (rm).
    Pair {
        /// The conversation with the chosen reply.
        chosen: Encoded,
        /// The conversation with the rejected reply.
        rejected: Encoded,
        /// Their rendered texts.
        texts: Box<(String, String)>,
        /// How far the chosen reply should out-score the other, if the data says.
        margin: Option<f32>,
        /// Remarks.
        flags: Flags,
    },
    /// A reply marked desirable or not (kto).
    Feedback {
        /// The conversation with its reply.
        completion: Encoded,
        /// Its prompt with another row's reply, for the KL estimate.
        kl: Encoded,
        /// Their rendered texts.
        texts: Box<(String, String)>,
        /// Whether the reply is desirable.
        desirable: bool,
        /// Remarks.
        flags: Flags,
    },
    /// A pretraining document: its ids, EOS last.
    Doc(Vec<u32>),
    /// Left out.
    Dropped(Dropped, Option<String>),
}

/// Encodes samples with a tokenizer and (for sft and rm) a chat template.
pub struct Encoder<'a> {
    tok: &'a ModelTokenizer,
    template: Option<&'a ChatTemplate>,
    settings: Settings,
    /// Special-token strings, longest first.
    specials: Vec<String>,
}

type Step<T> = Result<T, (Dropped, Option<String>)>;

impl<'a> Encoder<'a> {
    /// An encoder; `template` is needed for sft and rm.
    pub fn new(
        tok: &'a ModelTokenizer,
        template: Option<&'a ChatTemplate>,
        settings: Settings,
    ) -> Encoder<'a> {
        let mut specials: Vec<String> = tok.specials.clone();
        specials.sort_by(|a, b| b.len().cmp(&a.len()).then(a.cmp(b)));
        specials.dedup();
        specials.retain(|s| !s.is_empty());
        Encoder {
            tok,
            template,
            settings,
            specials,
        }
    }

    /// Encodes one sample (its kind must suit the stage; the caller checks).
    pub fn encode(&self, sample: &Sample) -> Outcome {
        let result = match sample {
            Sample::Chat(conv) => self.chat(conv),
            Sample::Pair {
                prompt,
                chosen,
                rejected,
                margin,
            } => self.pair(prompt, chosen, rejected).map(|mut o| {
                if let Outcome::Pair { margin: m, .. } = &mut o {
                    *m = margin.map(|x| x as f32);
                }
                o
            }),
            Sample::Feedback {
                conv,
                desirable,
                kl_reply,
            } => self.feedback(conv, *desirable, kl_reply.as_ref()),
            Sample::Text(text) => self.doc(text),
        };
        result.unwrap_or_else(|(why, detail)| Outcome::Dropped(why, detail))
    }

    fn render(&self, conv: &Conversation, messages: &[Message], agp: bool) -> Step<String> {
        let template = self.template.expect("sft and rm have a template");
        template
            .render(messages, conv.tools.as_ref(), agp)
            .map_err(|e| (Dropped::TemplateError, Some(describe_error(&e))))
    }

    fn tokenize(&self, text: &str) -> Step<tokenizers::Encoding> {
        self.tok
            .tokenizer
            .encode(text, false)
            .map_err(|e| (Dropped::Unmaskable, Some(format!("cannot tokenize: {e}"))))
    }

    fn chat(&self, conv: &Conversation) -> Step<Outcome> {
        let msgs = &conv.messages;
        let Some(last) = msgs.last() else {
            return Err((Dropped::Empty, None));
        };
        if last.role != Role::Assistant {
            return Err((Dropped::NoReply, None));
        }
        if last.content.trim().is_empty() && last.tool_calls.is_none() {
            return Err((Dropped::Empty, None));
        }
        let s = &self.settings;
        let full = self.render(conv, msgs, false)?;
        let replies: Vec<usize> = (0..msgs.len())
            .filter(|&j| msgs[j].role == Role::Assistant)
            .collect();
        let needed: &[usize] = match (s.mask_history, s.train_on_prompt) {
            (false, true) => &[],
            (true, false) => &replies[replies.len() - 1..],
            (true, true) => &replies[replies.len().saturating_sub(2)..],
            (false, false) => &replies,
        };
        let mut flags = Flags::default();
        let mut prompts = Vec::with_capacity(needed.len());
        for &j in needed {
            let p = self.render(conv, &msgs[..j], true)?;
            if !full.starts_with(&p) {
                return Err((
                    Dropped::Unmaskable,
                    Some(format!(
                        "the prompt of the reply in message {} is not a prefix of the whole conversation as the template renders it",
                        j + 1
                    )),
                ));
            }
            prompts.push(p);
        }
        let mut spans = Vec::with_capacity(needed.len());
        for (n, &j) in needed.iter().enumerate() {
            let start = prompts[n].len();
            let limit = prompts.get(n + 1).map_or(full.len(), String::len);
            let alone;
            let upto: &str = if j == msgs.len() - 1 {
                &full
            } else {
                alone = self.render(conv, &msgs[..=j], false)?;
                &alone
            };
            let reply = upto.strip_prefix(prompts[n].as_str()).ok_or_else(|| {
                (
                    Dropped::Unmaskable,
                    Some(format!(
                        "the template renders the prompt of message {} differently once the reply follows",
                        j + 1
                    )),
                )
            })?;
            let core = &reply[..self.core_len(reply)];
            let end = if full[start..].starts_with(core) && start + core.len() <= limit {
                start + core.len()
            } else {
                let found = self
                    .terminator(core)
                    .and_then(|t| full[start..limit].find(t).map(|i| start + i + t.len()));
                flags.searched = true;
                found.ok_or_else(|| {
                    (
                        Dropped::Unmaskable,
                        Some(format!(
                            "the reply in message {} is rendered differently once later turns follow, and has no end-of-turn token to find it by",
                            j + 1
                        )),
                    )
                })?
            };
            spans.push((start, end));
        }
        let trained: Vec<(usize, usize)> = match (s.mask_history, s.train_on_prompt) {
            (_, false) => spans.clone(),
            (false, true) => vec![(0, full.len())],
            (true, true) => {
                let last = *spans.last().expect("one reply at least");
                let from = if spans.len() == 2 { spans[0].1 } else { 0 };
                vec![(from, last.1)]
            }
        };
        let enc = self.tokenize(&full)?;
        let mut seq = label(&enc, &trained);
        if !s.train_on_prompt {
            for p in &prompts {
                let ids = self.tokenize(p)?.get_ids().to_vec();
                if !seq.ids.starts_with(&ids) {
                    flags.prefix_mismatch = true;
                }
            }
        }
        if seq.trained() == 0 {
            return Err((
                Dropped::Unmaskable,
                Some("no token of the replies was found".into()),
            ));
        }
        flags.truncated = self.fit(&mut seq)?;
        Ok(Outcome::Seq {
            seq,
            text: full,
            flags,
        })
    }

    fn pair(&self, prompt: &Conversation, chosen: &Message, rejected: &Message) -> Step<Outcome> {
        let ([(mut c, ct), (mut r, rt)], mut flags) = self.replies(prompt, chosen, rejected)?;
        flags.truncated = self.fit(&mut c)? | self.fit(&mut r)?;
        Ok(Outcome::Pair {
            chosen: c,
            rejected: r,
            texts: Box::new((ct, rt)),
            margin: None,
            flags,
        })
    }

    /// A conversation's last reply, and its prompt with `kl_reply` (its own reply when there is no
    /// other). A KL sequence longer than `cutoff_len` is always cut: it only estimates a mean.
    fn feedback(
        &self,
        conv: &Conversation,
        desirable: bool,
        kl_reply: Option<&Message>,
    ) -> Step<Outcome> {
        let Some((reply, messages)) = conv.messages.split_last() else {
            return Err((Dropped::Empty, None));
        };
        if reply.role != Role::Assistant {
            return Err((Dropped::NoReply, None));
        }
        let prompt = Conversation {
            messages: messages.to_vec(),
            tools: conv.tools.clone(),
        };
        let ([(mut completion, ct), (mut kl, kt)], mut flags) =
            self.replies(&prompt, reply, kl_reply.unwrap_or(reply))?;
        flags.truncated = self.fit(&mut completion)?;
        if kl.ids.len() > self.settings.cutoff_len {
            kl.cut(self.settings.cutoff_len);
            if kl.trained() == 0 {
                return Err((Dropped::TooLong, None));
            }
        }
        Ok(Outcome::Feedback {
            completion,
            kl,
            texts: Box::new((ct, kt)),
            desirable,
            flags,
        })
    }

    /// Two replies to one prompt, each encoded with the prompt (not yet fitted to `cutoff_len`).
    fn replies(
        &self,
        prompt: &Conversation,
        chosen: &Message,
        rejected: &Message,
    ) -> Step<([(Encoded, String); 2], Flags)> {
        if prompt.messages.is_empty() {
            return Err((Dropped::Empty, None));
        }
        for reply in [chosen, rejected] {
            if reply.content.trim().is_empty() && reply.tool_calls.is_none() {
                return Err((Dropped::Empty, None));
            }
        }
        let p = self.render(prompt, &prompt.messages, true)?;
        let prompt_ids = self.tokenize(&p)?.get_ids().to_vec();
        let mut flags = Flags::default();
        let mut encode = |reply: &Message| -> Step<(Encoded, String)> {
            let mut msgs = prompt.messages.clone();
            msgs.push(reply.clone());
            let full = self.render(prompt, &msgs, false)?;
            let Some(rest) = full.strip_prefix(p.as_str()) else {
                return Err((
                    Dropped::Unmaskable,
                    Some("the prompt is not a prefix of the prompt with its reply".into()),
                ));
            };
            let span = (p.len(), p.len() + self.core_len(rest));
            let seq = label(&self.tokenize(&full)?, &[span]);
            if !seq.ids.starts_with(&prompt_ids) {
                flags.prefix_mismatch = true;
            }
            Ok((seq, full))
        };
        let c = encode(chosen)?;
        let r = encode(rejected)?;
        Ok(([c, r], flags))
    }

    fn doc(&self, text: &str) -> Step<Outcome> {
        if text.trim().is_empty() {
            return Err((Dropped::Empty, None));
        }
        let mut ids = Vec::new();
        if self.tok.adds_bos
            && let Some(bos) = self.tok.bos_id
        {
            ids.push(bos);
        }
        ids.extend_from_slice(self.tokenize(text)?.get_ids());
        ids.push(self.tok.eos_id.expect("checked: pt needs an EOS token"));
        Ok(Outcome::Doc(ids))
    }

    /// Applies `cutoff_len`: true if the row was cut.
    fn fit(&self, seq: &mut Encoded) -> Step<bool> {
        if seq.ids.len() <= self.settings.cutoff_len {
            return Ok(false);
        }
        match self.settings.truncation {
            Truncation::Drop => Err((Dropped::TooLong, None)),
            Truncation::Cut => {
                seq.cut(self.settings.cutoff_len);
                if seq.trained() == 0 {
                    return Err((Dropped::TooLong, None));
                }
                Ok(true)
            }
        }
    }

    /// The trained length of a rendered reply: its text through the first special token of its
    /// trailing run of special tokens and whitespace (or without trailing whitespace if it ends in no
    /// special token).
    fn core_len(&self, reply: &str) -> usize {
        let mut end = reply.len();
        let mut through = None;
        loop {
            let trimmed = reply[..end].trim_end().len();
            if trimmed < end {
                end = trimmed;
                continue;
            }
            match self
                .specials
                .iter()
                .find(|s| reply[..end].ends_with(s.as_str()))
            {
                Some(s) => {
                    through = Some(end);
                    end -= s.len();
                }
                None => break,
            }
        }
        through.unwrap_or(end)
    }

    /// The special token a core reply ends with.
    fn terminator<'s>(&self, core: &'s str) -> Option<&'s str> {
        self.specials
            .iter()
            .find(|s| core.ends_with(s.as_str()))
            .map(|s| &core[core.len() - s.len()..])
    }
}

/// Labels of a tokenized text: a token is trained if it starts inside one of the byte `spans`.
fn label(enc: &tokenizers::Encoding, spans: &[(usize, usize)]) -> Encoded {
    let ids = enc.get_ids().to_vec();
    let labels = ids
        .iter()
        .zip(enc.get_offsets())
        .map(|(&id, &(start, _))| {
            if spans.iter().any(|&(a, b)| start >= a && start < b) {
                id as i32
            } else {
                IGNORE
            }
        })
        .collect();
    Encoded { ids, labels }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use super::*;
    use crate::data::chat::builtin;
    use crate::data::tokenizer::tests::smollm2;
    use lf_schemas::kinds::dataset::TemplateName;

    fn settings() -> Settings {
        Settings {
            stage: Stage::Sft,
            cutoff_len: 1024,
            truncation: Truncation::Drop,
            train_on_prompt: false,
            mask_history: false,
        }
    }

    fn conv(turns: &[(Role, &str)]) -> Conversation {
        Conversation {
            messages: turns.iter().map(|(r, c)| Message::new(*r, *c)).collect(),
            tools: None,
        }
    }

    /// The trained text, run by run, decoded.
    fn trained_runs(tok: &ModelTokenizer, seq: &Encoded) -> Vec<String> {
        let mut runs = Vec::new();
        let mut cur: Vec<u32> = Vec::new();
        for (&id, &l) in seq.ids.iter().zip(&seq.labels) {
            if l == IGNORE {
                if !cur.is_empty() {
                    runs.push(tok.tokenizer.decode(&cur, false).unwrap());
                    cur.clear();
                }
            } else {
                assert_eq!(l, id as i32);
                cur.push(id);
            }
        }
        if !cur.is_empty() {
            runs.push(tok.tokenizer.decode(&cur, false).unwrap());
        }
        runs
    }

    fn template(tok: &ModelTokenizer, source: &str) -> ChatTemplate {
        ChatTemplate::new(source, &tok.tokens, &BTreeMap::new()).unwrap()
    }

    const MULTI: &[(Role, &str)] = &[
        (Role::System, "Be brief."),
        (Role::User, "Hi"),
        (Role::Assistant, "Hello!"),
        (Role::User, "Who are you?"),
        (Role::Assistant, "I am Lumi."),
    ];

    #[test]
    fn multi_turn_trains_every_reply_and_its_end_of_turn_token() {
        let tok = smollm2();
        let t = template(&tok, tok.chat_template.as_deref().unwrap());
        let enc = Encoder::new(&tok, Some(&t), settings());
        let Outcome::Seq { seq, text, flags } = enc.encode(&Sample::Chat(conv(MULTI))) else {
            panic!()
        };
        assert!(text.ends_with("<|im_start|>assistant\nI am Lumi.<|im_end|>\n"));
        assert_eq!(
            trained_runs(&tok, &seq),
            vec!["Hello!<|im_end|>", "I am Lumi.<|im_end|>"]
        );
        assert_eq!(flags, Flags::default());
        // The trailing newline is there but not trained.
        assert_eq!(*seq.labels.last().unwrap(), IGNORE);
    }

    #[test]
    fn mask_history_trains_the_last_reply_only() {
        let tok = smollm2();
        let t = template(&tok, tok.chat_template.as_deref().unwrap());
        let s = Settings {
            mask_history: true,
            ..settings()
        };
        let Outcome::Seq { seq, .. } =
            Encoder::new(&tok, Some(&t), s).encode(&Sample::Chat(conv(MULTI)))
        else {
            panic!()
        };
        assert_eq!(trained_runs(&tok, &seq), vec!["I am Lumi.<|im_end|>"]);
    }

    #[test]
    fn train_on_prompt_trains_everything() {
        let tok = smollm2();
        let t = template(&tok, tok.chat_template.as_deref().unwrap());
        let s = Settings {
            train_on_prompt: true,
            ..settings()
        };
        let Outcome::Seq { seq, text, .. } =
            Encoder::new(&tok, Some(&t), s).encode(&Sample::Chat(conv(MULTI)))
        else {
            panic!()
        };
        assert_eq!(seq.trained(), seq.ids.len());
        assert_eq!(trained_runs(&tok, &seq), vec![text]);
        // With mask_history too: the last turn, its prompt included.
        let s = Settings {
            train_on_prompt: true,
            mask_history: true,
            ..settings()
        };
        let Outcome::Seq { seq, .. } =
            Encoder::new(&tok, Some(&t), s).encode(&Sample::Chat(conv(MULTI)))
        else {
            panic!()
        };
        assert_eq!(
            trained_runs(&tok, &seq),
            vec![
                "\n<|im_start|>user\nWho are you?<|im_end|>\n<|im_start|>assistant\nI am Lumi.<|im_end|>"
            ]
        );
    }

    #[test]
    fn every_builtin_template_masks_its_prompts() {
        let tok = smollm2();
        for b in crate::data::chat::BUILTINS {
            let t = ChatTemplate::new(b.source, &tok.tokens, &BTreeMap::new()).unwrap();
            let Outcome::Seq { seq, .. } =
                Encoder::new(&tok, Some(&t), settings()).encode(&Sample::Chat(conv(MULTI)))
            else {
                panic!("{:?}", b.name)
            };
            let runs = trained_runs(&tok, &seq);
            assert_eq!(runs.len(), 2, "{:?}: {runs:?}", b.name);
            assert!(runs[0].contains("Hello!"), "{:?}: {runs:?}", b.name);
            assert!(runs[1].contains("I am Lumi."), "{:?}: {runs:?}", b.name);
            assert!(!runs.concat().contains("Who are you"), "{:?}", b.name);
        }
    }

    #[test]
    fn history_rendered_differently_is_found_by_end_of_turn_token() {
        let tok = smollm2();
        // Like Qwen3: the final reply gets an empty think block, earlier ones do not.
        let source = "{%- for m in messages %}<|im_start|>{{ m.role }}\n{% if m.role == 'assistant' and loop.last %}<think>\n\n</think>\n\n{% endif %}{{ m.content }}<|im_end|>\n{% endfor %}{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}";
        let t = template(&tok, source);
        let Outcome::Seq { seq, flags, .. } =
            Encoder::new(&tok, Some(&t), settings()).encode(&Sample::Chat(conv(MULTI)))
        else {
            panic!()
        };
        assert!(flags.searched);
        assert_eq!(
            trained_runs(&tok, &seq),
            vec![
                "Hello!<|im_end|>",
                "<think>\n\n</think>\n\nI am Lumi.<|im_end|>"
            ]
        );
    }

    #[test]
    fn rows_without_a_final_reply_or_failing_the_template_are_dropped() {
        let tok = smollm2();
        let t = template(&tok, tok.chat_template.as_deref().unwrap());
        let enc = Encoder::new(&tok, Some(&t), settings());
        let out = enc.encode(&Sample::Chat(conv(&[(Role::User, "hi")])));
        assert!(matches!(out, Outcome::Dropped(Dropped::NoReply, _)));
        let out = enc.encode(&Sample::Chat(conv(&[
            (Role::User, "hi"),
            (Role::Assistant, " "),
        ])));
        assert!(matches!(out, Outcome::Dropped(Dropped::Empty, _)));
        let strict = template(
            &tok,
            "{% if messages[0].role == 'system' %}{{ raise_exception('no system role') }}{% endif %}",
        );
        let out = Encoder::new(&tok, Some(&strict), settings()).encode(&Sample::Chat(conv(MULTI)));
        match out {
            Outcome::Dropped(Dropped::TemplateError, Some(m)) => assert_eq!(m, "no system role"),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn cutoff_drops_or_cuts() {
        let tok = smollm2();
        let t = template(&tok, builtin(TemplateName::Chatml).unwrap().source);
        let long = "word ".repeat(200);
        let sample = Sample::Chat(conv(&[(Role::User, "Say it."), (Role::Assistant, &long)]));
        let s = Settings {
            cutoff_len: 64,
            ..settings()
        };
        let out = Encoder::new(&tok, Some(&t), s).encode(&sample);
        assert!(matches!(out, Outcome::Dropped(Dropped::TooLong, _)));
        let s = Settings {
            truncation: Truncation::Cut,
            ..s
        };
        let Outcome::Seq { seq, flags, .. } = Encoder::new(&tok, Some(&t), s).encode(&sample)
        else {
            panic!()
        };
        assert!(flags.truncated);
        assert_eq!(seq.ids.len(), 64);
        assert!(seq.trained() > 40);
        // A prompt longer than the cutoff leaves nothing trained: dropped even when cutting.
        let sample = Sample::Chat(conv(&[(Role::User, &long), (Role::Assistant, "ok")]));
        let out = Encoder::new(&tok, Some(&t), s).encode(&sample);
        assert!(matches!(out, Outcome::Dropped(Dropped::TooLong, _)));
    }

    #[test]
    fn pairs_share_the_prompt_and_train_the_replies() {
        let tok = smollm2();
        let t = template(&tok, tok.chat_template.as_deref().unwrap());
        let s = Settings {
            stage: Stage::Rm,
            ..settings()
        };
        let sample = Sample::Pair {
            prompt: conv(&[(Role::User, "Who are you?")]),
            chosen: Message::new(Role::Assistant, "Lumi."),
            rejected: Message::new(Role::Assistant, "A human."),
            margin: None,
        };
        let Outcome::Pair {
            chosen, rejected, ..
        } = Encoder::new(&tok, Some(&t), s).encode(&sample)
        else {
            panic!()
        };
        assert_eq!(trained_runs(&tok, &chosen), vec!["Lumi.<|im_end|>"]);
        assert_eq!(trained_runs(&tok, &rejected), vec!["A human.<|im_end|>"]);
        let shared = chosen.labels.iter().take_while(|&&l| l == IGNORE).count();
        assert_eq!(chosen.ids[..shared], rejected.ids[..shared]);
    }

    #[test]
    fn documents_end_with_eos() {
        let tok = smollm2();
        let s = Settings {
            stage: Stage::Pt,
            ..settings()
        };
        let Outcome::Doc(ids) = Encoder::new(&tok, None, s).encode(&Sample::Text("Hello".into()))
        else {
            panic!()
        };
        assert_eq!(*ids.last().unwrap(), tok.eos_id.unwrap());
        assert_eq!(
            tok.tokenizer.decode(&ids, false).unwrap(),
            "Hello<|im_end|>"
        );
    }
}
