//! `lf serve` driven by a real OpenAI client (`async-openai`) and raw HTTP (`reqwest`) over loopback,
//! against a small random Llama with SmolLM2's tokenizer and chat template.

use std::path::{Path, PathBuf};
use std::time::Instant;

use async_openai::Client;
use async_openai::config::OpenAIConfig;
use async_openai::error::OpenAIError;
use async_openai::types::chat::{
    ChatCompletionRequestSystemMessageArgs, ChatCompletionRequestUserMessageArgs,
    CreateChatCompletionRequest, CreateChatCompletionRequestArgs,
};
use async_openai::types::completions::CreateCompletionRequestArgs;
use futures::StreamExt;
use lf_model::{Cpu, CpuDevice, Dtype, Llama, ModelConfig, SaveDtype, save_hf};
use lf_serve::{ServeOptions, Server};
use serde_json::{Value, json};

const MODEL: &str = "tiny";

/// A random Llama (vocabulary of SmolLM2's tokenizer, context 2048) in `dir/model`.
fn tiny_model(dir: &Path) -> PathBuf {
    let out = dir.join("model");
    let tok = Path::new(env!("CARGO_MANIFEST_DIR")).join("../tests/fixtures/smollm2/tokenizer");
    let mut config = ModelConfig::tiny(lf_model::Arch::Llama);
    config.vocab_size = 49152;
    config.max_position_embeddings = 2048;
    config.bos_token_id = Some(1);
    config.eos_token_ids = vec![2];
    config.pad_token_id = Some(2);
    let model = Llama::<Cpu>::init(&config, 7, &CpuDevice, Dtype::F32).unwrap();
    save_hf(&model, &out, SaveDtype::F32).unwrap();
    for f in std::fs::read_dir(&tok).unwrap() {
        let f = f.unwrap().path();
        std::fs::copy(&f, out.join(f.file_name().unwrap())).unwrap();
    }
    out
}

struct Fixture {
    _dir: tempfile::TempDir,
    server: Server,
}

impl Fixture {
    fn start(configure: impl FnOnce(&mut ServeOptions)) -> Fixture {
        let dir = tempfile::tempdir().unwrap();
        let mut opts = ServeOptions::new(tiny_model(dir.path()), MODEL);
        configure(&mut opts);
        let server = Server::start(opts, "127.0.0.1:0").unwrap();
        Fixture { _dir: dir, server }
    }

    fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.server.addr)
    }

    fn client(&self, key: &str) -> Client<OpenAIConfig> {
        Client::with_config(
            OpenAIConfig::new()
                .with_api_base(self.url("/v1"))
                .with_api_key(key),
        )
    }
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(4)
        .enable_all()
        .build()
        .unwrap()
}

fn chat_request(user: &str, max_tokens: u32, seed: i64) -> CreateChatCompletionRequest {
    CreateChatCompletionRequestArgs::default()
        .model(MODEL)
        .messages([
            ChatCompletionRequestSystemMessageArgs::default()
                .content("You are terse.")
                .build()
                .unwrap()
                .into(),
            ChatCompletionRequestUserMessageArgs::default()
                .content(user)
                .build()
                .unwrap()
                .into(),
        ])
        .temperature(0.0)
        .max_completion_tokens(max_tokens)
        .seed(seed)
        .build()
        .unwrap()
}

async fn post(url: &str, body: &str, key: Option<&str>) -> (u16, Value) {
    let mut req = reqwest::Client::new()
        .post(url)
        .header("content-type", "application/json")
        .body(body.to_owned());
    if let Some(k) = key {
        req = req.bearer_auth(k);
    }
    let resp = req.send().await.unwrap();
    let status = resp.status().as_u16();
    let text = resp.text().await.unwrap();
    (
        status,
        serde_json::from_str(&text).unwrap_or(Value::String(text)),
    )
}

/// The answer lf itself gives for the same conversation (greedy), so the server is known to render
/// the model's template and run the model unchanged.
fn direct_answer(model: &Path, user: &str, max_tokens: usize) -> String {
    use lf_steps::chat::{ChatMessage, build_prompt};
    let artifact = lf_model::ModelArtifact::open(model).unwrap();
    let tokenizer = artifact.tokenizer().unwrap();
    let llama = artifact.load::<Cpu>(&CpuDevice, Dtype::F32).unwrap();
    let prompt = build_prompt(
        &tokenizer,
        &[
            ChatMessage::new("system", "You are terse."),
            ChatMessage::new("user", user),
        ],
    )
    .unwrap();
    let ids = tokenizer.encode(&prompt, false).unwrap();
    let opts = lf_model::GenerateOptions {
        max_new_tokens: max_tokens,
        eos_ids: vec![2],
        pad_id: 2,
        ..Default::default()
    };
    let out = lf_model::generate(&llama, &[ids], &opts, None, &mut |_, _| {}).unwrap();
    let answer: Vec<u32> = out.tokens[0].iter().copied().filter(|&t| t != 2).collect();
    tokenizer.decode(&answer, true).unwrap()
}

#[test]
fn chat_and_completions_answer_through_the_openai_client() {
    let f = Fixture::start(|_| {});
    let rt = runtime();
    let client = f.client("unused");
    rt.block_on(async {
        let models = client.models().list().await.unwrap();
        assert_eq!(models.data.len(), 1);
        assert_eq!(models.data[0].id, MODEL);

        let answer = client
            .chat()
            .create(chat_request("Who are you?", 12, 1))
            .await
            .unwrap();
        let text = answer.choices[0].message.content.clone().unwrap();
        let usage = answer.usage.unwrap();
        assert!(usage.prompt_tokens > 10, "{usage:?}");
        assert!((1..=12).contains(&usage.completion_tokens), "{usage:?}");
        assert_eq!(
            usage.total_tokens,
            usage.prompt_tokens + usage.completion_tokens
        );
        // The model and its chat template, exactly as lf runs them.
        let model = f._dir.path().join("model");
        assert_eq!(text, direct_answer(&model, "Who are you?", 12));

        // Streamed: the same text in pieces, a finish reason, then the end.
        let mut stream = client
            .chat()
            .create_stream(chat_request("Who are you?", 12, 1))
            .await
            .unwrap();
        let (mut streamed, mut finish, mut chunks) = (String::new(), None, 0);
        while let Some(chunk) = stream.next().await {
            let chunk = chunk.unwrap();
            chunks += 1;
            for c in chunk.choices {
                streamed.push_str(c.delta.content.as_deref().unwrap_or(""));
                finish = finish.or(c.finish_reason);
            }
        }
        assert_eq!(streamed, text);
        assert!(finish.is_some());
        assert!(chunks >= 3, "{chunks} chunks");

        // Text completions, plain and streamed.
        let req = CreateCompletionRequestArgs::default()
            .model(MODEL)
            .prompt("The capital of France is")
            .max_tokens(10u32)
            .temperature(0.0)
            .build()
            .unwrap();
        let plain = client.completions().create(req.clone()).await.unwrap();
        let plain_text = plain.choices[0].text.clone();
        assert!(plain.usage.unwrap().completion_tokens <= 10);
        let mut stream = client.completions().create_stream(req).await.unwrap();
        let mut streamed = String::new();
        while let Some(chunk) = stream.next().await {
            for c in chunk.unwrap().choices {
                streamed.push_str(&c.text);
            }
        }
        assert_eq!(streamed, plain_text);
    });
    // Health and metrics.
    rt.block_on(async {
        let health: Value = reqwest::get(f.url("/health"))
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        assert_eq!(health["status"], "ok");
        let metrics = reqwest::get(f.url("/metrics"))
            .await
            .unwrap()
            .text()
            .await
            .unwrap();
        assert!(
            metrics.contains(r#"lf_requests_total{endpoint="/v1/chat/completions",code="200"} 2"#),
            "{metrics}"
        );
        assert!(metrics.contains("lf_generated_tokens_total"), "{metrics}");
        assert!(
            metrics.contains("lf_request_duration_seconds_bucket"),
            "{metrics}"
        );
        assert!(metrics.contains("lf_queue_depth 0"), "{metrics}");
        // Only the scrape itself is in flight: finished requests, streams included, are counted out.
        assert!(metrics.contains("lf_in_flight_requests 1"), "{metrics}");
    });
}

#[test]
fn stop_strings_and_seeds_behave_like_openai() {
    let f = Fixture::start(|_| {});
    let rt = runtime();
    let body = |extra: Value| {
        let mut v = json!({"model": MODEL, "prompt": "Once upon a time", "max_tokens": 24, "temperature": 0});
        v.as_object_mut()
            .unwrap()
            .extend(extra.as_object().unwrap().clone());
        v.to_string()
    };
    rt.block_on(async {
        let url = f.url("/v1/completions");
        let (_, full) = post(&url, &body(json!({})), None).await;
        let full = full["choices"][0]["text"].as_str().unwrap().to_owned();
        // Stop at a piece of the greedy answer: the text ends just before it.
        let cut = full.char_indices().nth(full.chars().count() / 2).unwrap().0;
        let stop: String = full[cut..].chars().take(3).collect();
        let (_, stopped) = post(&url, &body(json!({"stop": [stop.clone()]})), None).await;
        let want = &full[..full.find(&stop).unwrap()];
        assert_eq!(stopped["choices"][0]["text"], want, "stop {stop:?}");
        assert_eq!(stopped["choices"][0]["finish_reason"], "stop");
        // Sampling: the same seed gives the same answer.
        let sampled = json!({"temperature": 1.0, "seed": 42});
        let (_, a) = post(&url, &body(sampled.clone()), None).await;
        let (_, b) = post(&url, &body(sampled), None).await;
        assert_eq!(a["choices"][0]["text"], b["choices"][0]["text"]);
    });
}

#[test]
fn an_api_key_guards_v1() {
    let f = Fixture::start(|o| o.api_key = Some("sekret".into()));
    let rt = runtime();
    rt.block_on(async {
        let body = json!({"model": MODEL, "prompt": "hi", "max_tokens": 2}).to_string();
        let url = f.url("/v1/completions");
        let (status, err) = post(&url, &body, None).await;
        assert_eq!(status, 401);
        assert_eq!(err["error"]["code"], "invalid_api_key");
        assert_eq!(err["error"]["type"], "invalid_request_error");
        let (status, _) = post(&url, &body, Some("wrong")).await;
        assert_eq!(status, 401);
        let (status, _) = post(&url, &body, Some("sekret")).await;
        assert_eq!(status, 200);
        // The OpenAI client reads the error.
        match f.client("wrong").models().list().await {
            Err(OpenAIError::ApiError(e)) => assert_eq!(e.code.as_deref(), Some("invalid_api_key")),
            other => panic!("expected an API error, got {other:?}"),
        }
        assert_eq!(
            f.client("sekret").models().list().await.unwrap().data.len(),
            1
        );
        // Health stays open for probes.
        let health = reqwest::get(f.url("/health")).await.unwrap();
        assert_eq!(health.status().as_u16(), 200);
    });
}

#[test]
fn malformed_requests_get_openai_errors() {
    let f = Fixture::start(|o| {
        o.max_tokens = 64;
        o.max_body_bytes = 4096;
    });
    let rt = runtime();
    rt.block_on(async {
        let chat = f.url("/v1/chat/completions");
        let user = json!([{"role": "user", "content": "hi"}]);
        let cases: Vec<(String, u16, Option<&str>)> = vec![
            ("{not json".into(), 400, None),
            (json!({"model": MODEL}).to_string(), 400, None),
            (json!({"model": MODEL, "messages": "hi"}).to_string(), 400, None),
            (json!({"model": MODEL, "messages": []}).to_string(), 400, Some("messages")),
            (json!({"model": MODEL, "messages": user, "temperature": 5}).to_string(), 400, Some("temperature")),
            (json!({"model": MODEL, "messages": user, "top_p": 0}).to_string(), 400, Some("top_p")),
            (json!({"model": MODEL, "messages": user, "max_tokens": 65}).to_string(), 400, Some("max_tokens")),
            (json!({"model": MODEL, "messages": user, "n": 2}).to_string(), 400, Some("n")),
            (json!({"model": MODEL, "messages": [{"role": "tool", "content": "x"}]}).to_string(), 400, Some("messages")),
            (json!({"model": "gpt-4", "messages": user}).to_string(), 404, Some("model")),
            (json!({"model": MODEL, "messages": [{"role": "user", "content": "x".repeat(5000)}]}).to_string(), 413, None),
        ];
        for (body, status, param) in cases {
            let (got, err) = post(&chat, &body, None).await;
            let shown: String = body.chars().take(60).collect();
            assert_eq!(got, status, "{shown}: {err}");
            assert!(err["error"]["message"].as_str().is_some_and(|m| !m.is_empty()), "{shown}: {err}");
            assert!(err["error"]["type"].is_string(), "{shown}: {err}");
            if let Some(p) = param {
                assert_eq!(err["error"]["param"], p, "{shown}");
            }
        }
        // A prompt longer than the context.
        let long = json!({"model": MODEL, "prompt": "word ".repeat(700), "max_tokens": 4});
        let f2 = Fixture::start(|o| o.max_body_bytes = 1 << 20);
        let (got, err) = post(&f2.url("/v1/completions"), &long.to_string(), None).await;
        assert_eq!(got, 200, "{err}");
        let longer = json!({"model": MODEL, "prompt": "word ".repeat(2100), "max_tokens": 4});
        let (got, err) = post(&f2.url("/v1/completions"), &longer.to_string(), None).await;
        assert_eq!(got, 400);
        assert_eq!(err["error"]["code"], "context_length_exceeded");
        // Unknown paths and methods, in OpenAI's shape too.
        let resp = reqwest::get(f.url("/v2/nothing")).await.unwrap();
        assert_eq!(resp.status().as_u16(), 404);
        let resp = reqwest::get(f.url("/v1/chat/completions")).await.unwrap();
        assert_eq!(resp.status().as_u16(), 405);
        let err: Value = resp.json().await.unwrap();
        assert_eq!(err["error"]["code"], "method_not_allowed");
        // What clients send that OpenAI accepts: `stream: null`, a negative seed, extra fields.
        let lenient = json!({"model": MODEL, "messages": user, "max_tokens": 2, "stream": null,
                             "seed": -5, "user": "someone", "frequency_penalty": 0});
        assert_eq!(post(&chat, &lenient.to_string(), None).await.0, 200);
        let ok = json!({"model": MODEL, "messages": user, "max_tokens": 3}).to_string();
        assert_eq!(post(&chat, &ok, None).await.0, 200);
    });
}

#[test]
fn a_full_queue_answers_429_and_a_client_that_leaves_frees_the_model() {
    let f = Fixture::start(|o| {
        o.max_queue = 1;
        o.max_tokens = 1800;
    });
    let rt = runtime();
    rt.block_on(async {
        let client = f.client("unused");
        // A long answer occupies the model; wait until it streams.
        let mut long = client
            .chat()
            .create_stream(chat_request("Tell a long story.", 1800, 3))
            .await
            .unwrap();
        long.next().await.unwrap().unwrap();
        // One request may wait behind it...
        let waiting_client = client.clone();
        let waiting = tokio::spawn(async move {
            waiting_client
                .chat()
                .create(chat_request("And you?", 4, 4))
                .await
        });
        loop {
            let health: Value = reqwest::get(f.url("/health")).await.unwrap().json().await.unwrap();
            if health["queue_depth"] == 1 {
                break;
            }
            tokio::time::sleep(std::time::Duration::from_millis(5)).await;
        }
        // ...the next is refused.
        let body = json!({"model": MODEL, "messages": [{"role": "user", "content": "hi"}], "max_tokens": 2});
        let (status, err) = post(&f.url("/v1/chat/completions"), &body.to_string(), None).await;
        assert_eq!(status, 429);
        assert_eq!(err["error"]["code"], "queue_full");
        // The streaming client leaves: its answer stops and the waiting request is answered.
        drop(long);
        let answer = waiting.await.unwrap().unwrap();
        assert!(answer.usage.unwrap().completion_tokens <= 4);
        let metrics = reqwest::get(f.url("/metrics")).await.unwrap().text().await.unwrap();
        assert!(metrics.contains("lf_cancelled_requests_total 1"), "{metrics}");
        assert!(metrics.contains(r#"lf_errors_total{endpoint="/v1/chat/completions",code="429"} 1"#), "{metrics}");
    });
}

/// 16 clients × 4 requests at once: every answer arrives and equals the answer the same request gets
/// alone, so none is mixed with another's. Prints throughput and latency (not asserted).
#[test]
fn concurrent_clients_each_get_their_own_answer() {
    let f = Fixture::start(|o| o.max_queue = 64);
    let rt = runtime();
    let prompts: Vec<(usize, usize, String)> = (0..16)
        .flat_map(|c| (0..4).map(move |r| (c, r, format!("Client {c} asks question number {r}."))))
        .collect();
    rt.block_on(async {
        let client = f.client("unused");
        let mut alone = Vec::new();
        for (_, _, p) in &prompts {
            let a = client.chat().create(chat_request(p, 8, 0)).await.unwrap();
            alone.push(a.choices[0].message.content.clone().unwrap());
        }
        let start = Instant::now();
        let tasks: Vec<_> = (0..16)
            .map(|c| {
                let client = client.clone();
                let mine: Vec<String> = prompts
                    .iter()
                    .filter(|(pc, _, _)| *pc == c)
                    .map(|(_, _, p)| p.clone())
                    .collect();
                tokio::spawn(async move {
                    let mut out = Vec::new();
                    for p in mine {
                        let t = Instant::now();
                        let stream = c % 2 == 0;
                        let text = if stream {
                            let mut s = client.chat().create_stream(chat_request(&p, 8, 0)).await.unwrap();
                            let mut text = String::new();
                            while let Some(chunk) = s.next().await {
                                for ch in chunk.unwrap().choices {
                                    text.push_str(ch.delta.content.as_deref().unwrap_or(""));
                                }
                            }
                            text
                        } else {
                            let a = client.chat().create(chat_request(&p, 8, 0)).await.unwrap();
                            a.choices[0].message.content.clone().unwrap()
                        };
                        out.push((text, t.elapsed().as_secs_f64()));
                    }
                    out
                })
            })
            .collect();
        let mut latencies = Vec::new();
        for (c, task) in tasks.into_iter().enumerate() {
            for (r, (text, secs)) in task.await.unwrap().into_iter().enumerate() {
                assert_eq!(text, alone[c * 4 + r], "client {c} request {r}");
                latencies.push(secs);
            }
        }
        let wall = start.elapsed().as_secs_f64();
        latencies.sort_by(f64::total_cmp);
        let pct = |q: f64| latencies[((latencies.len() - 1) as f64 * q).round() as usize];
        eprintln!(
            "64 requests from 16 clients in {wall:.2} s: {:.1} requests/s, latency p50 {:.3} s, p99 {:.3} s",
            64.0 / wall,
            pct(0.5),
            pct(0.99)
        );
    });
}
