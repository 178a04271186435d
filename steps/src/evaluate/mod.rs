//! `evaluate`: models measured side by side on perplexity, generation quality (BLEU-4, ROUGE),
//! multiple-choice accuracy, reward accuracy and latency.
//!
//! The principal function is [`evaluate`]: it prepares each task's data once on the host, then loads
//! the models one at a time (on the step's device and dtype) and runs every task on each, and writes
//! `results.json`, `report.md`, `predictions.jsonl` and `logs/latency.json`.
//!
//! - [`metrics`]: BLEU-4 and ROUGE on words, CJK split per character.
//! - [`tasks`]: the tasks on one model, generic over the burn backend.
//! - [`report`]: the results file and the Markdown table.

pub mod metrics;
pub mod report;
pub mod tasks;

#[cfg(test)]
mod tests;

use std::collections::{BTreeMap, BTreeSet};
use std::io::Write as _;
use std::path::{Path, PathBuf};

use anyhow::Context as _;
use burn::tensor::backend::Backend;
use lf_engine::Numerics;
use lf_engine::progress::Progress;
use lf_schemas::kinds::EvaluateParams;
use lf_schemas::kinds::dataset::{Tags, TemplateName};
use lf_schemas::kinds::evaluate::EvalSplit;
use serde_json::{Value as Json, json};

use crate::data::artifact::{Split, TokenizedDataset};
use crate::data::chat::{ChatTemplate, TemplateTokens};
use crate::data::files::{Several, find, read_rows};
use crate::data::format::{Role, Sample, resolve};
use lf_model::backend::{Dtype, InferenceTask, run_inference};
use lf_model::gguf::GgufFile;
use lf_model::{ModelArtifact, ValueHead};
use lf_model::{TokenizerBundle, tokenizer_from_gguf};
use report::{ModelResults, round6};
use tasks::{GenSample, Question};

/// The resolved inputs of an `evaluate` step.
#[derive(Debug, Clone, Default)]
pub struct Inputs {
    /// Each model's artifact, in the order of `models`.
    pub models: Vec<PathBuf>,
    /// The perplexity dataset's artifact.
    pub perplexity: Option<PathBuf>,
    /// The reward dataset's artifact.
    pub reward: Option<PathBuf>,
    /// The generation source (none for a built-in).
    pub generation: Option<PathBuf>,
    /// The multiple-choice source (none for a built-in).
    pub multiple_choice: Option<PathBuf>,
}

/// What every model is evaluated on, read once.
struct Prepared {
    perplexity: Option<(TokenizedDataset, usize)>,
    reward: Option<(TokenizedDataset, usize)>,
    generation: Option<(Vec<GenSample>, usize)>,
    questions: Option<Vec<Question>>,
}

fn split_of(s: EvalSplit) -> Split {
    match s {
        EvalSplit::Train => Split::Train,
        EvalSplit::Val => Split::Val,
    }
}

/// The held-out conversations of a source: prompt messages and the last assistant reply; rows that do
/// not end with a reply are counted and left out.
pub fn read_conversations(
    g: &lf_schemas::kinds::evaluate::GenerationTask,
    input: Option<&Path>,
) -> anyhow::Result<(Vec<GenSample>, usize)> {
    let mut samples = Vec::new();
    let mut skipped = 0;
    for file in find(&g.source, input, g.file.as_deref(), Several::Error)? {
        let rows = read_rows(&file)?;
        let layout = resolve(g.format, &g.columns, &Tags::default(), rows.first())?;
        for row in &rows {
            if g.max_samples.is_some_and(|m| samples.len() + skipped >= m) {
                break;
            }
            match layout.convert(row)? {
                Sample::Chat(mut conv) => match conv.messages.last() {
                    Some(m) if m.role == Role::Assistant && !m.content.trim().is_empty() => {
                        let reply = conv.messages.pop().expect("a last message");
                        samples.push(GenSample {
                            messages: conv.messages,
                            tools: conv.tools,
                            reference: reply.content,
                        });
                    }
                    _ => skipped += 1,
                },
                other => anyhow::bail!(
                    "`{}` holds {}; generation needs conversations ending with a reference reply",
                    g.source,
                    other.kind()
                ),
            }
        }
    }
    anyhow::ensure!(
        !samples.is_empty(),
        "`{}` has no conversation ending with an assistant reply",
        g.source
    );
    Ok((samples, skipped))
}

/// Multiple-choice rows: `{subject?, question, choices: [..], answer}` (or MMLU's CSV columns `A`..`D`);
/// `answer` is a letter or a 0-based index.
pub fn read_questions(
    c: &lf_schemas::kinds::evaluate::ChoiceTask,
    input: Option<&Path>,
) -> anyhow::Result<Vec<Question>> {
    let mut out = Vec::new();
    for file in find(&c.source, input, c.file.as_deref(), Several::Error)? {
        for row in read_rows(&file)? {
            if c.max_samples.is_some_and(|m| out.len() >= m) {
                break;
            }
            let at = &row.origin;
            let obj = row
                .value
                .as_object()
                .with_context(|| format!("{at}: a question must be an object"))?;
            let text = |k: &str| obj.get(k).and_then(Json::as_str).map(str::to_owned);
            let question = text("question").with_context(|| format!("{at}: no `question`"))?;
            let choices: Vec<String> = match obj.get("choices") {
                Some(Json::Array(a)) => a
                    .iter()
                    .map(|v| match v {
                        Json::String(s) => Ok(s.clone()),
                        other => Ok(other.to_string()),
                    })
                    .collect::<anyhow::Result<_>>()?,
                _ => (0..10)
                    .map_while(|i| text(&tasks::letter(i).to_string()))
                    .collect(),
            };
            anyhow::ensure!(
                (2..=10).contains(&choices.len()),
                "{at}: needs 2 to 10 `choices` (or columns `A`, `B`, ...), found {}",
                choices.len()
            );
            let answer = match obj.get("answer") {
                Some(Json::String(s)) if s.trim().len() == 1 => {
                    let ch = s.trim().chars().next().unwrap_or('?').to_ascii_uppercase();
                    (ch as usize).wrapping_sub('A' as usize)
                }
                Some(Json::Number(n)) => n.as_u64().map_or(usize::MAX, |n| n as usize),
                _ => usize::MAX,
            };
            anyhow::ensure!(
                answer < choices.len(),
                "{at}: `answer` must be a letter A..{} or an index below {}",
                tasks::letter(choices.len() - 1),
                choices.len()
            );
            out.push(Question {
                subject: text("subject").unwrap_or_default(),
                question,
                choices,
                answer,
            });
        }
    }
    anyhow::ensure!(!out.is_empty(), "`{}` has no questions", c.source);
    Ok(out)
}

fn prepare(p: &EvaluateParams, inputs: &Inputs) -> anyhow::Result<Prepared> {
    let open = |dir: &Option<PathBuf>, split: EvalSplit, max: Option<usize>, what: &str| {
        let dir = dir.as_ref().with_context(|| format!("no {what} dataset"))?;
        let ds = TokenizedDataset::open(dir, split_of(split))?;
        let rows = max.map_or(ds.len(), |m| m.min(ds.len()));
        anyhow::ensure!(rows > 0, "the {what} dataset has no rows");
        Ok((ds, rows))
    };
    Ok(Prepared {
        perplexity: p
            .perplexity
            .as_ref()
            .map(|t| open(&inputs.perplexity, t.split, t.max_rows, "perplexity"))
            .transpose()?,
        reward: p
            .reward
            .as_ref()
            .map(|t| open(&inputs.reward, t.split, t.max_rows, "reward"))
            .transpose()?,
        generation: p
            .generation
            .as_ref()
            .map(|g| read_conversations(g, inputs.generation.as_deref()))
            .transpose()?,
        questions: p
            .multiple_choice
            .as_ref()
            .map(|c| read_questions(c, inputs.multiple_choice.as_deref()))
            .transpose()?,
    })
}

/// The tokenizer of a model's tokenizer folder (`tokenizer.json`, else its `.gguf` file).
pub fn load_tokenizer(dir: &Path) -> anyhow::Result<TokenizerBundle> {
    if dir.join("tokenizer.json").is_file() {
        return Ok(TokenizerBundle::from_hf_dir(dir)?);
    }
    let gguf = lf_model::load::find_gguf(dir)
        .with_context(|| format!("cannot read `{}`", dir.display()))?
        .with_context(|| format!("`{}` has no tokenizer", dir.display()))?;
    let file = GgufFile::open(&gguf)?;
    Ok(tokenizer_from_gguf(&file)?)
}

/// Token ids that end a reply: the tokenizer's EOS, the config's, and `generation_config.json`'s.
fn eos_ids(art: &ModelArtifact, tk: &TokenizerBundle) -> Vec<u32> {
    let mut ids: Vec<u32> = tk.eos_ids.clone();
    ids.extend(&art.config.eos_token_ids);
    for dir in [art.tokenizer_dir.clone(), art.base_dir()] {
        let Ok(text) = std::fs::read_to_string(dir.join("generation_config.json")) else {
            continue;
        };
        let Ok(v) = serde_json::from_str::<Json>(&text) else {
            continue;
        };
        match v.get("eos_token_id") {
            Some(Json::Array(a)) => ids.extend(a.iter().filter_map(Json::as_u64).map(|x| x as u32)),
            Some(x) => ids.extend(x.as_u64().map(|x| x as u32)),
            None => {}
        }
    }
    let mut seen = BTreeSet::new();
    ids.retain(|i| seen.insert(*i));
    ids
}

struct ModelRun<'a> {
    label: &'a str,
    art: &'a ModelArtifact,
    params: &'a EvaluateParams,
    prepared: &'a Prepared,
    progress: &'a Progress,
}

/// What evaluating one model produced.
struct ModelOutcome {
    results: ModelResults,
    predictions: Vec<Json>,
}

impl InferenceTask for ModelRun<'_> {
    type Output = anyhow::Result<ModelOutcome>;

    fn run<B: Backend>(self, device: B::Device, dtype: Dtype) -> anyhow::Result<ModelOutcome> {
        let ModelRun {
            label,
            art,
            params: p,
            prepared,
            progress,
        } = self;
        let model = art.load::<B>(&device, dtype)?;
        let tk = load_tokenizer(&art.tokenizer_dir)?;
        let pad = tk.pad_id.or(art.config.pad_token_id).unwrap_or(0);
        let vocab = art.config.vocab_size;
        let mut results = ModelResults::new(label, art);
        let mut predictions = Vec::new();
        let bs = p.batch_size;
        let bar = |n: usize, what: &str| progress.bar(n as u64, &format!("{what} ({label})"));

        if let (Some(t), Some((ds, rows))) = (&p.perplexity, &prepared.perplexity) {
            ds.check_tokenizer(&art.tokenizer_dir)?;
            tasks::check_ids(ds, *rows, vocab)?;
            let b = bar(*rows, "perplexity rows");
            let nll = tasks::perplexity(&model, ds, *rows, bs, |n| b.inc(n as u64))?;
            b.finish_and_clear();
            results.perplexity = Some(json!({
                "split": split_of(t.split).name(),
                "rows": rows,
                "tokens": nll.tokens,
                "nll": round6(nll.mean()),
                "perplexity": round6(nll.perplexity()),
            }));
        }

        if let (Some(c), Some(questions)) = (&p.multiple_choice, &prepared.questions) {
            let n_choices = questions.iter().map(|q| q.choices.len()).max().unwrap_or(4);
            let letters = tasks::letter_tokens(&tk, n_choices)?;
            let prompts: Vec<Vec<u32>> = (0..questions.len())
                .map(|i| {
                    let mut text = tasks::mc_prompt(questions, i, c.shots, c.seed);
                    if !letters.with_space {
                        text.push(' ');
                    }
                    tk.encode(&text, true)
                })
                .collect::<Result<_, _>>()?;
            let b = bar(prompts.len(), "questions");
            let logits = tasks::last_logits(&model, &prompts, pad, bs, |n| b.inc(n as u64))?;
            b.finish_and_clear();
            let mut correct = 0usize;
            let mut by_subject: BTreeMap<String, (usize, usize)> = BTreeMap::new();
            for (i, (q, row)) in questions.iter().zip(&logits).enumerate() {
                let scores: Vec<f32> = letters.ids[..q.choices.len()]
                    .iter()
                    .map(|&id| row[id as usize])
                    .collect();
                let pick = lf_model::generate::argmax(&scores);
                let ok = pick == q.answer;
                correct += usize::from(ok);
                let e = by_subject.entry(q.subject.clone()).or_default();
                e.0 += usize::from(ok);
                e.1 += 1;
                predictions.push(json!({
                    "model": label, "task": "multiple_choice", "index": i,
                    "subject": q.subject,
                    "answer": tasks::letter(q.answer).to_string(),
                    "predicted": tasks::letter(pick).to_string(),
                    "correct": ok,
                    "logits": scores.iter().map(|&s| round6(f64::from(s))).collect::<Vec<_>>(),
                }));
            }
            let n = questions.len();
            results.multiple_choice = Some(json!({
                "questions": n,
                "shots": c.shots,
                "seed": c.seed,
                "letters": if letters.with_space { "\" A\"" } else { "\"A\"" },
                "accuracy": round6(correct as f64 / n as f64),
                "by_subject": by_subject.iter().map(|(s, (ok, total))| {
                    (s.clone(), json!({"questions": total, "accuracy": round6(*ok as f64 / *total as f64)}))
                }).collect::<serde_json::Map<_, _>>(),
            }));
        }

        if let (Some(g), Some((samples, skipped))) = (&p.generation, &prepared.generation) {
            let (source, template_name) = match g.template {
                TemplateName::Auto => match &tk.chat_template {
                    Some(t) => (t.clone(), "auto".to_string()),
                    None => {
                        results.notes.push(
                            "the model has no chat template; prompts use lf's `default` template"
                                .into(),
                        );
                        (
                            crate::data::chat::builtin(TemplateName::Default)
                                .expect("built-in")
                                .source
                                .to_string(),
                            "default".to_string(),
                        )
                    }
                },
                name => (
                    crate::data::chat::builtin(name)
                        .with_context(|| format!("no built-in template `{}`", name.name()))?
                        .source
                        .to_string(),
                    name.name().to_string(),
                ),
            };
            let tokens = TemplateTokens {
                bos: tk.bos_token.clone(),
                eos: tk.eos_token.clone(),
                pad: tk.pad_token.clone(),
                unk: tk.unk_token.clone(),
            };
            let template = ChatTemplate::new(&source, &tokens, &BTreeMap::new())
                .map_err(|e| anyhow::anyhow!("invalid chat template: {e}"))?;
            let mut texts = Vec::with_capacity(samples.len());
            let mut prompts = Vec::with_capacity(samples.len());
            for s in samples {
                let text = template
                    .render(&s.messages, s.tools.as_ref(), true)
                    .map_err(|e| {
                        anyhow::anyhow!(
                            "the chat template fails on a held-out conversation: {}",
                            crate::data::chat::describe_error(&e)
                        )
                    })?;
                prompts.push(tk.encode(&text, false)?);
                texts.push(text);
            }
            let eos = eos_ids(art, &tk);
            let b = bar(prompts.len(), "replies");
            let outputs =
                tasks::generate_greedy(&model, &prompts, &eos, pad, g.max_new_tokens, bs, |n| {
                    b.inc(n as u64)
                })?;
            b.finish_and_clear();
            let mut scores = Vec::with_capacity(samples.len());
            let mut new_tokens = 0usize;
            for (i, ((s, text), out)) in samples.iter().zip(&texts).zip(&outputs).enumerate() {
                let prediction = tk.decode(out, true)?.trim().to_string();
                let sc = metrics::score(&prediction, s.reference.trim());
                new_tokens += out.len();
                predictions.push(json!({
                    "model": label, "task": "generation", "index": i,
                    "prompt": text, "reference": s.reference, "prediction": prediction,
                    "new_tokens": out.len(),
                    "bleu_4": round6(sc.bleu_4), "rouge_1": round6(sc.rouge_1),
                    "rouge_2": round6(sc.rouge_2), "rouge_l": round6(sc.rouge_l),
                }));
                scores.push(sc);
            }
            let m = metrics::mean(&scores);
            results.generation = Some(json!({
                "samples": samples.len(),
                "skipped": skipped,
                "template": template_name,
                "max_new_tokens": g.max_new_tokens,
                "mean_new_tokens": round6(new_tokens as f64 / samples.len() as f64),
                "bleu_4": round6(m.bleu_4),
                "rouge_1": round6(m.rouge_1),
                "rouge_2": round6(m.rouge_2),
                "rouge_l": round6(m.rouge_l),
            }));
        }

        if let (Some(t), Some((ds, rows))) = (&p.reward, &prepared.reward) {
            ds.check_tokenizer(&art.tokenizer_dir)?;
            tasks::check_ids(ds, *rows, vocab)?;
            let b = bar(*rows, "pairs");
            let (scorer, scores) = match &art.value_head {
                Some(path) => {
                    let head = ValueHead::read(path, art.config.hidden_size, &model.device())?;
                    let scores = tasks::rewards(&model, &head, ds, *rows, bs, |n| b.inc(n as u64))?;
                    ("value_head", scores)
                }
                None => {
                    let scores = tasks::reply_logps(&model, ds, *rows, bs, |n| b.inc(n as u64))?;
                    ("mean_logp", scores)
                }
            };
            b.finish_and_clear();
            let n = scores.len() as f64;
            let wins = scores.iter().filter(|(c, r)| c > r).count();
            for (i, (c, r)) in scores.iter().enumerate() {
                predictions.push(json!({
                    "model": label, "task": "reward", "index": i,
                    "chosen": round6(*c), "rejected": round6(*r), "correct": c > r,
                }));
            }
            let mut reward = json!({
                "available": true,
                "scorer": scorer,
                "split": split_of(t.split).name(),
                "pairs": scores.len(),
                "accuracy": round6(wins as f64 / n),
                "mean_chosen": round6(scores.iter().map(|s| s.0).sum::<f64>() / n),
                "mean_rejected": round6(scores.iter().map(|s| s.1).sum::<f64>() / n),
                "mean_margin": round6(scores.iter().map(|s| s.0 - s.1).sum::<f64>() / n),
            });
            if scorer == "mean_logp" {
                reward["note"] =
                    json!("no value head: rewards are the replies' mean token log-probabilities");
            }
            results.reward = Some(reward);
        }

        results.latency = match &p.latency {
            None => None,
            Some(l) => {
                let seed = tasks::latency_seed(&tk)?;
                let r = lf_model::generate::bench_generation(
                    &model,
                    &seed,
                    l.prompt_tokens,
                    l.new_tokens,
                    l.runs,
                )?;
                Some(json!({
                    "prompt_tokens": r.prompt_tokens,
                    "new_tokens": r.new_tokens,
                    "runs": r.runs,
                    "time_to_first_token_ms": 1000.0 * r.prompt_tokens as f64 / r.prompt_tokens_per_sec.max(1e-9),
                    "prompt_tokens_per_sec": r.prompt_tokens_per_sec,
                    "tokens_per_sec": r.gen_tokens_per_sec,
                }))
            }
        };
        Ok(ModelOutcome {
            results,
            predictions,
        })
    }
}

/// Evaluates every model of `p` and writes the artifact into `out`; returns each model's results.
pub fn evaluate(
    p: &EvaluateParams,
    inputs: &Inputs,
    out: &Path,
    numerics: &Numerics,
    progress: &Progress,
) -> anyhow::Result<Vec<ModelResults>> {
    let (device, dtype) = (numerics.device, numerics.dtype);
    let prepared = prepare(p, inputs)?;
    let mut all = Vec::new();
    let mut predictions = Vec::new();
    let mut latency = serde_json::Map::new();
    for (label, dir) in p.models.iter().zip(&inputs.models) {
        let art =
            ModelArtifact::open(dir).with_context(|| format!("cannot open model `{label}`"))?;
        let outcome = run_inference(
            device,
            dtype,
            ModelRun {
                label,
                art: &art,
                params: p,
                prepared: &prepared,
                progress,
            },
        )?
        .with_context(|| format!("evaluating `{label}`"))?;
        predictions.extend(outcome.predictions);
        if let Some(l) = &outcome.results.latency {
            latency.insert(label.clone(), l.clone());
        }
        all.push(outcome.results);
    }
    std::fs::create_dir_all(out)?;
    report::write_results(&out.join("results.json"), &all, numerics)?;
    std::fs::write(out.join("report.md"), report::markdown(&all, p))?;
    let mut f = std::io::BufWriter::new(std::fs::File::create(out.join("predictions.jsonl"))?);
    for row in &predictions {
        serde_json::to_writer(&mut f, row)?;
        f.write_all(b"\n")?;
    }
    f.flush()?;
    if !latency.is_empty() {
        let logs = out.join("logs");
        std::fs::create_dir_all(&logs)?;
        std::fs::write(
            logs.join("latency.json"),
            serde_json::to_string_pretty(&Json::Object(latency))? + "\n",
        )?;
    }
    Ok(all)
}
