//! The routes: OpenAI's endpoints, health and metrics, the API key check and request accounting.

use std::convert::Infallible;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Instant, SystemTime, UNIX_EPOCH};

use axum::extract::rejection::JsonRejection;
use axum::extract::{DefaultBodyLimit, Request, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::sse::{Event as SseEvent, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use futures::{Stream, StreamExt};
use serde_json::{Value, json};
use tokio::sync::mpsc;
use tokio_stream::wrappers::UnboundedReceiverStream;

use crate::ServeOptions;
use crate::api::{ApiError, ChatRequest, CompletionRequest, PromptField, Sampling, Usage};
use crate::metrics::Metrics;
use crate::worker::{Event, Job, Refused, Worker};
use lf_steps::chat::{ChatMessage, build_prompt};

struct Shared {
    opts: ServeOptions,
    worker: Worker,
    metrics: Metrics,
    requests: AtomicU64,
    started: u64,
}

type AppState = Arc<Shared>;

/// Marks a streamed response: its accounting happens when the stream ends.
#[derive(Clone, Copy)]
struct Streamed;

/// The server's routes.
pub fn router(opts: ServeOptions, worker: Worker) -> Router {
    let limit = opts.max_body_bytes;
    let state = Arc::new(Shared {
        opts,
        worker,
        metrics: Metrics::new(),
        requests: AtomicU64::new(0),
        started: unix_now(),
    });
    let v1 = Router::new()
        .route("/models", get(models))
        .route("/chat/completions", post(chat_completions))
        .route("/completions", post(completions))
        .layer(middleware::from_fn_with_state(state.clone(), authorize));
    Router::new()
        .nest("/v1", v1)
        .route("/health", get(health))
        .route("/metrics", get(metrics))
        .fallback(not_found)
        .method_not_allowed_fallback(method_not_allowed)
        .layer(middleware::from_fn_with_state(state.clone(), account))
        .layer(DefaultBodyLimit::max(limit))
        .with_state(state)
}

fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

/// The metrics label of a path.
fn endpoint(path: &str) -> &'static str {
    match path {
        "/v1/models" => "/v1/models",
        "/v1/chat/completions" => "/v1/chat/completions",
        "/v1/completions" => "/v1/completions",
        "/health" => "/health",
        "/metrics" => "/metrics",
        _ => "other",
    }
}

/// Counts every request and its latency (streams count when they end). A request whose client left
/// before the answer counts with code 499 (nginx's "client closed request").
async fn account(State(s): State<AppState>, req: Request, next: Next) -> Response {
    struct Pending {
        state: AppState,
        endpoint: &'static str,
        start: Instant,
        code: Option<u16>,
    }
    impl Drop for Pending {
        fn drop(&mut self) {
            match self.code {
                Some(0) => {} // a stream: its guard accounts for it
                code => {
                    self.state.metrics.in_flight.dec();
                    self.state.metrics.record(
                        self.endpoint,
                        code.unwrap_or(499),
                        self.start.elapsed().as_secs_f64(),
                    );
                }
            }
        }
    }
    s.metrics.in_flight.inc();
    let mut pending = Pending {
        state: s.clone(),
        endpoint: endpoint(req.uri().path()),
        start: Instant::now(),
        code: None,
    };
    let response = next.run(req).await;
    pending.code = Some(if response.extensions().get::<Streamed>().is_some() {
        0
    } else {
        response.status().as_u16()
    });
    response
}

/// With a key set, `/v1` needs `Authorization: Bearer <key>`.
async fn authorize(
    State(s): State<AppState>,
    headers: HeaderMap,
    req: Request,
    next: Next,
) -> Response {
    if let Some(key) = &s.opts.api_key {
        let given = headers
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer "));
        if given != Some(key.as_str()) {
            return ApiError::new(
                StatusCode::UNAUTHORIZED,
                "invalid_request_error",
                "invalid_api_key",
                if given.is_none() {
                    "no API key: send `Authorization: Bearer <key>`"
                } else {
                    "incorrect API key"
                },
            )
            .into_response();
        }
    }
    next.run(req).await
}

async fn health(State(s): State<AppState>) -> Response {
    let alive = s.worker.is_alive();
    let status = if alive {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    let body = json!({
        "status": if alive { "ok" } else { "model_stopped" },
        "model": s.opts.model_id,
        "queue_depth": s.worker.queue_depth(),
    });
    (status, Json(body)).into_response()
}

async fn metrics(State(s): State<AppState>) -> Response {
    s.metrics.queue_depth.set(s.worker.queue_depth() as i64);
    s.metrics.sync_cancelled(s.worker.cancelled());
    (
        [(
            header::CONTENT_TYPE,
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
        )],
        s.metrics.encode(),
    )
        .into_response()
}

async fn method_not_allowed() -> ApiError {
    ApiError::new(
        StatusCode::METHOD_NOT_ALLOWED,
        "invalid_request_error",
        "method_not_allowed",
        "this endpoint does not take this HTTP method",
    )
}

async fn not_found() -> ApiError {
    ApiError::new(
        StatusCode::NOT_FOUND,
        "invalid_request_error",
        "not_found",
        "no such endpoint",
    )
}

async fn models(State(s): State<AppState>) -> Json<Value> {
    Json(json!({
        "object": "list",
        "data": [{"id": s.opts.model_id, "object": "model", "created": s.started, "owned_by": "lf"}],
    }))
}

/// A parse failure as a 400 (413 for a body over the limit), in OpenAI's shape.
fn rejected(e: JsonRejection) -> ApiError {
    let status = match e.status() {
        StatusCode::PAYLOAD_TOO_LARGE => StatusCode::PAYLOAD_TOO_LARGE,
        _ => StatusCode::BAD_REQUEST,
    };
    ApiError {
        status,
        message: e.body_text(),
        kind: "invalid_request_error",
        param: None,
        code: None,
    }
}

/// A request's generation settings, checked.
struct Settings {
    max_tokens: usize,
    sampling: lf_model::generate::Sampling,
    stop: Vec<String>,
    stream: bool,
    include_usage: bool,
    /// The request's number (in its id).
    number: u64,
}

fn settings(
    s: &Shared,
    model: &str,
    p: &Sampling,
    default_max: usize,
) -> Result<Settings, ApiError> {
    if model != s.opts.model_id {
        return Err(ApiError {
            status: StatusCode::NOT_FOUND,
            message: format!(
                "the model `{model}` does not exist; this server serves `{}`",
                s.opts.model_id
            ),
            kind: "invalid_request_error",
            param: Some("model"),
            code: Some("model_not_found"),
        });
    }
    if p.n.is_some_and(|n| n != 1) {
        return Err(ApiError::invalid(
            "n",
            "lf answers one choice per request (`n: 1`)",
        ));
    }
    let temperature = p.temperature.unwrap_or(1.0);
    if !(0.0..=2.0).contains(&temperature) {
        return Err(ApiError::invalid(
            "temperature",
            format!("temperature {temperature} is not in [0, 2]"),
        ));
    }
    let top_p = p.top_p.unwrap_or(1.0);
    if !(top_p > 0.0 && top_p <= 1.0) {
        return Err(ApiError::invalid(
            "top_p",
            format!("top_p {top_p} is not in (0, 1]"),
        ));
    }
    let limit = s.opts.max_tokens;
    let max_tokens = p
        .max_completion_tokens
        .or(p.max_tokens)
        .unwrap_or(default_max.min(limit));
    if max_tokens == 0 || max_tokens > limit {
        return Err(ApiError::invalid(
            "max_tokens",
            format!("max_tokens {max_tokens} is not in [1, {limit}] (this server's limit)"),
        ));
    }
    let stop = p.stop.as_ref().map(|s| s.list()).unwrap_or_default();
    if stop.len() > 4 {
        return Err(ApiError::invalid("stop", "at most 4 stop strings"));
    }
    let n = s.requests.fetch_add(1, Ordering::SeqCst);
    Ok(Settings {
        max_tokens,
        sampling: lf_model::generate::Sampling {
            temperature,
            top_k: 0,
            top_p,
            repetition_penalty: 1.0,
            seed: p.seed.map_or(n, |s| s as u64),
        },
        stop,
        stream: p.stream.unwrap_or(false),
        include_usage: p.stream_options.as_ref().is_some_and(|o| o.include_usage),
        number: n,
    })
}

/// Tokenizes `prompt` and checks it leaves room for an answer.
fn tokenize(s: &Shared, prompt: &str, add_special: bool) -> Result<Vec<u32>, ApiError> {
    let ids = s
        .worker
        .info
        .tokenizer
        .encode(prompt, add_special)
        .map_err(|e| ApiError::invalid("messages", format!("cannot tokenize the prompt: {e}")))?;
    let context = s.worker.info.context;
    if ids.is_empty() {
        return Err(ApiError::invalid("prompt", "the prompt is empty"));
    }
    if ids.len() >= context {
        return Err(ApiError {
            status: StatusCode::BAD_REQUEST,
            message: format!(
                "the prompt has {} tokens; the model's context holds {context}",
                ids.len()
            ),
            kind: "invalid_request_error",
            param: Some("messages"),
            code: Some("context_length_exceeded"),
        });
    }
    Ok(ids)
}

/// Queues a job; its events arrive on the returned receiver.
fn submit(
    s: &Shared,
    ids: Vec<u32>,
    set: &Settings,
) -> Result<mpsc::UnboundedReceiver<Event>, ApiError> {
    let (tx, rx) = mpsc::unbounded_channel();
    let job = Job {
        ids,
        max_tokens: set.max_tokens,
        sampling: set.sampling.clone(),
        stop: set.stop.clone(),
        events: tx,
    };
    match s.worker.submit(job) {
        Ok(()) => Ok(rx),
        Err(Refused::Full) => Err(ApiError::new(
            StatusCode::TOO_MANY_REQUESTS,
            "rate_limit_error",
            "queue_full",
            format!(
                "{} requests are already waiting for the model; retry later",
                s.opts.max_queue
            ),
        )),
        Err(Refused::Gone) => Err(ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "server_error",
            "model_unavailable",
            "the model has stopped",
        )),
    }
}

/// The whole answer of a non-streamed request.
async fn collect(
    s: &Shared,
    mut rx: mpsc::UnboundedReceiver<Event>,
) -> Result<(String, &'static str, Usage), ApiError> {
    let mut text = String::new();
    while let Some(e) = rx.recv().await {
        match e {
            Event::Text(t) => text.push_str(&t),
            Event::Done {
                finish,
                prompt_tokens,
                completion_tokens,
            } => {
                s.metrics.prompt_tokens.inc_by(prompt_tokens as u64);
                s.metrics.generated_tokens.inc_by(completion_tokens as u64);
                return Ok((text, finish, Usage::new(prompt_tokens, completion_tokens)));
            }
            Event::Error(m) => {
                return Err(ApiError::new(
                    StatusCode::INTERNAL_SERVER_ERROR,
                    "server_error",
                    "generation_failed",
                    m,
                ));
            }
        }
    }
    Err(ApiError::new(
        StatusCode::INTERNAL_SERVER_ERROR,
        "server_error",
        "generation_failed",
        "the model stopped answering",
    ))
}

/// Records a streamed request when its stream ends (completed, or dropped by a client that left).
struct StreamGuard {
    state: AppState,
    endpoint: &'static str,
    start: Instant,
}

impl Drop for StreamGuard {
    fn drop(&mut self) {
        self.state.metrics.in_flight.dec();
        self.state
            .metrics
            .record(self.endpoint, 200, self.start.elapsed().as_secs_f64());
    }
}

/// Server-sent events for a job: `chunk(delta text, finish reason)` makes each event's JSON; a last
/// usage chunk when asked; then `[DONE]`.
fn event_stream(
    state: AppState,
    endpoint: &'static str,
    rx: mpsc::UnboundedReceiver<Event>,
    first: Option<Value>,
    chunk: impl Fn(Option<&str>, Option<&str>, Option<Usage>) -> Value + Send + 'static,
    include_usage: bool,
) -> Response {
    let guard = StreamGuard {
        state: state.clone(),
        endpoint,
        start: Instant::now(),
    };
    let head = futures::stream::iter(
        first.map(|v| Ok::<_, Infallible>(SseEvent::default().data(v.to_string()))),
    );
    let finished = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let finished_tail = finished.clone();
    let body = UnboundedReceiverStream::new(rx).flat_map(move |e| {
        let _keep = &guard;
        if matches!(e, Event::Done { .. } | Event::Error(_)) {
            finished.store(true, Ordering::SeqCst);
        }
        let events: Vec<Value> = match e {
            Event::Text(t) => vec![chunk(Some(&t), None, None)],
            Event::Done {
                finish,
                prompt_tokens,
                completion_tokens,
            } => {
                state.metrics.prompt_tokens.inc_by(prompt_tokens as u64);
                state
                    .metrics
                    .generated_tokens
                    .inc_by(completion_tokens as u64);
                let mut v = vec![chunk(None, Some(finish), None)];
                if include_usage {
                    v.push(chunk(
                        None,
                        None,
                        Some(Usage::new(prompt_tokens, completion_tokens)),
                    ));
                }
                v
            }
            Event::Error(m) => vec![
                ApiError::new(
                    StatusCode::INTERNAL_SERVER_ERROR,
                    "server_error",
                    "generation_failed",
                    m,
                )
                .body(),
            ],
        };
        futures::stream::iter(
            events
                .into_iter()
                .map(|v| Ok(SseEvent::default().data(v.to_string()))),
        )
    });
    // An answer that ended without its last event (the model thread failed) ends with an error.
    let tail = futures::stream::once(async move {
        let mut events = Vec::new();
        if !finished_tail.load(Ordering::SeqCst) {
            let e = ApiError::new(
                StatusCode::INTERNAL_SERVER_ERROR,
                "server_error",
                "generation_failed",
                "the model stopped before the answer was complete",
            );
            events.push(Ok(SseEvent::default().data(e.body().to_string())));
        }
        events.push(Ok(SseEvent::default().data("[DONE]")));
        futures::stream::iter(events)
    })
    .flatten();
    let stream: std::pin::Pin<Box<dyn Stream<Item = Result<SseEvent, Infallible>> + Send>> =
        Box::pin(head.chain(body).chain(tail));
    let mut response = Sse::new(stream)
        .keep_alive(KeepAlive::default())
        .into_response();
    response.extensions_mut().insert(Streamed);
    response
}

/// The fields every answer and chunk of one request share.
#[derive(Clone)]
struct Reply {
    id: String,
    created: u64,
    model: String,
}

impl Reply {
    fn new(s: &Shared, prefix: &str, set: &Settings) -> Self {
        Reply {
            id: format!("{prefix}-{}", set.number),
            created: unix_now(),
            model: s.opts.model_id.clone(),
        }
    }

    /// An answer or chunk of type `object` with `choices`, and `usage` when given.
    fn json(&self, object: &str, choices: Value, usage: Option<Usage>) -> Value {
        let mut v = json!({
            "id": self.id, "object": object, "created": self.created, "model": self.model,
            "choices": choices,
        });
        if let Some(u) = usage {
            v["usage"] = json!(u);
        }
        v
    }
}

async fn chat_completions(
    State(s): State<AppState>,
    body: Result<Json<ChatRequest>, JsonRejection>,
) -> Result<Response, ApiError> {
    let Json(req) = body.map_err(rejected)?;
    let set = settings(&s, &req.model, &req.sampling, s.opts.max_tokens)?;
    if req.messages.is_empty() {
        return Err(ApiError::invalid("messages", "`messages` is empty"));
    }
    let mut messages = Vec::with_capacity(req.messages.len());
    for m in &req.messages {
        let role = match m.role.as_str() {
            "developer" => "system",
            r @ ("system" | "user" | "assistant") => r,
            other => {
                return Err(ApiError::invalid(
                    "messages",
                    format!(
                        "messages with role `{other}` are not supported (system, developer, user, assistant)"
                    ),
                ));
            }
        };
        let text = match &m.content {
            Some(c) => c.text()?,
            None => String::new(),
        };
        messages.push(ChatMessage::new(role, text));
    }
    let prompt = build_prompt(&s.worker.info.tokenizer, &messages)
        .map_err(|e| ApiError::invalid("messages", format!("{e:#}")))?;
    let ids = tokenize(&s, &prompt, false)?;
    let rx = submit(&s, ids, &set)?;
    let reply = Reply::new(&s, "chatcmpl", &set);
    if set.stream {
        const CHUNK: &str = "chat.completion.chunk";
        let head = reply.json(
            CHUNK,
            json!([{"index": 0, "delta": {"role": "assistant", "content": ""}, "logprobs": null, "finish_reason": null}]),
            None,
        );
        let chunk = move |text: Option<&str>, finish: Option<&str>, usage: Option<Usage>| {
            match usage {
            Some(u) => reply.json(CHUNK, json!([]), Some(u)),
            None => reply.json(
                CHUNK,
                json!([{"index": 0, "delta": text.map_or(json!({}), |t| json!({"content": t})), "logprobs": null, "finish_reason": finish}]),
                None,
            ),
        }
        };
        return Ok(event_stream(
            s.clone(),
            "/v1/chat/completions",
            rx,
            Some(head),
            chunk,
            set.include_usage,
        ));
    }
    let (text, finish, usage) = collect(&s, rx).await?;
    Ok(Json(reply.json(
        "chat.completion",
        json!([{"index": 0, "message": {"role": "assistant", "content": text}, "logprobs": null, "finish_reason": finish}]),
        Some(usage),
    ))
    .into_response())
}

async fn completions(
    State(s): State<AppState>,
    body: Result<Json<CompletionRequest>, JsonRejection>,
) -> Result<Response, ApiError> {
    let Json(req) = body.map_err(rejected)?;
    // OpenAI's default for text completions is 16 tokens.
    let set = settings(&s, &req.model, &req.sampling, 16)?;
    let prompt = match &req.prompt {
        PromptField::One(p) => p.clone(),
        PromptField::Many(v) if v.len() == 1 => v[0].clone(),
        PromptField::Many(_) => {
            return Err(ApiError::invalid(
                "prompt",
                "lf answers one prompt per request",
            ));
        }
    };
    let ids = tokenize(&s, &prompt, true)?;
    let rx = submit(&s, ids, &set)?;
    let reply = Reply::new(&s, "cmpl", &set);
    let choice = |text: &str, finish: Option<&str>| json!([{"index": 0, "text": text, "logprobs": null, "finish_reason": finish}]);
    if set.stream {
        let chunk =
            move |text: Option<&str>, finish: Option<&str>, usage: Option<Usage>| match usage {
                Some(u) => reply.json("text_completion", json!([]), Some(u)),
                None => reply.json("text_completion", choice(text.unwrap_or(""), finish), None),
            };
        return Ok(event_stream(
            s.clone(),
            "/v1/completions",
            rx,
            None,
            chunk,
            set.include_usage,
        ));
    }
    let (text, finish, usage) = collect(&s, rx).await?;
    Ok(
        Json(reply.json("text_completion", choice(&text, Some(finish)), Some(usage)))
            .into_response(),
    )
}
