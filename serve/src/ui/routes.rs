//! The dashboard's routes: the page and its assets, the JSON API, the events, the files, the chat
//! proxy; and the guard in front of them all (the `Host` check on loopback, the token).

use std::sync::Arc;

use axum::body::Body;
use axum::extract::rejection::JsonRejection;
use axum::extract::{Path as UrlPath, Query, Request, State};
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::sse::{KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use axum::routing::{any, get, post};
use axum::{Json, Router};
use serde::Deserialize;
use serde_json::{Value, json};
use tower::ServiceExt as _;

use super::UiOptions;
use super::chat::Chat;
use super::files::{self, Roots, safe_name};
use super::jobs::Jobs;
use super::pipelines::{self, RunRequest};

struct Shared {
    opts: UiOptions,
    roots: Roots,
    jobs: Jobs,
    chat: Chat,
    /// Whether the server listens on loopback only (then `Host` must name loopback).
    loopback: bool,
    /// The cookie that carries the token after `?token=` (named after the port: cookies are shared
    /// by every port of a host).
    cookie: String,
}

type AppState = Arc<Shared>;

/// The dashboard's routes, for a server bound to `bound`.
pub fn router(opts: UiOptions, bound: std::net::SocketAddr) -> Router {
    let state = Arc::new(Shared {
        roots: Roots {
            runs_dir: opts.runs_dir.clone(),
            store: opts.store.clone(),
        },
        opts,
        jobs: Jobs::default(),
        chat: Chat::default(),
        loopback: bound.ip().is_loopback(),
        cookie: format!("lf_ui_token_{}", bound.port()),
    });
    let api = Router::new()
        .route("/pipelines", get(list_pipelines))
        .route("/plan", post(plan))
        .route("/command", post(command))
        .route("/runs", post(start_run))
        .route("/jobs", get(jobs))
        .route("/jobs/{id}/cancel", post(cancel))
        .route("/state/{pipeline}", get(run_state))
        .route("/history/{pipeline}", get(history))
        .route("/events/{pipeline}", get(events))
        .route("/artifacts/{pipeline}/{step}", get(artifact))
        .route("/preview/{pipeline}/{step}", get(preview))
        .route("/chat/load", post(chat_load))
        .route("/chat/v1/{*rest}", any(chat_proxy))
        .fallback(|| async { error(StatusCode::NOT_FOUND, "no such endpoint") });
    Router::new()
        .route("/", get(|| async { asset("index.html") }))
        .route(
            "/assets/{name}",
            get(|UrlPath(name): UrlPath<String>| async move { asset(&name) }),
        )
        .route("/files/{pipeline}/{step}/{*path}", get(file))
        .nest("/api", api)
        .fallback(|| async { error(StatusCode::NOT_FOUND, "not found") })
        .layer(middleware::from_fn_with_state(state.clone(), guard))
        .with_state(state)
}

/// A JSON error: `{"error": message}`.
fn error(status: StatusCode, message: impl Into<String>) -> Response {
    (status, Json(json!({"error": message.into()}))).into_response()
}

/// A request the dashboard refuses, answered as [`error`].
struct Refusal(StatusCode, String);

impl IntoResponse for Refusal {
    fn into_response(self) -> Response {
        error(self.0, self.1)
    }
}

type Answer = Result<Response, Refusal>;

/// Refuses what a web page elsewhere could send: on a loopback server, requests whose `Host` is not
/// loopback (DNS rebinding); requests that change something (not `GET`) from another origin, or
/// without a JSON body (a plain cross-site form). With a token, refuses requests that carry none of
/// it (header, cookie or `?token=`).
async fn guard(State(s): State<AppState>, req: Request, next: Next) -> Response {
    let host = req
        .headers()
        .get(header::HOST)
        .and_then(|h| h.to_str().ok())
        .unwrap_or("")
        .to_string();
    if s.loopback && !loopback_host(&host) {
        return error(
            StatusCode::FORBIDDEN,
            format!("the host `{host}` is not this machine"),
        );
    }
    if !matches!(req.method(), &Method::GET | &Method::HEAD) {
        let header = |name: &str| req.headers().get(name).and_then(|v| v.to_str().ok());
        let cross_origin = header("origin").is_some_and(|o| {
            o.strip_prefix("http://")
                .or_else(|| o.strip_prefix("https://"))
                != Some(host.as_str())
        }) || header("sec-fetch-site")
            .is_some_and(|v| v != "same-origin" && v != "none");
        if cross_origin {
            return error(
                StatusCode::FORBIDDEN,
                "requests from other sites are refused",
            );
        }
        if !header("content-type").is_some_and(|t| t.starts_with("application/json")) {
            return error(
                StatusCode::UNSUPPORTED_MEDIA_TYPE,
                "send a JSON body (`Content-Type: application/json`)",
            );
        }
    }
    let Some(token) = s.opts.token.as_deref() else {
        return next.run(req).await;
    };
    let from_query = req.uri().query().and_then(|q| {
        q.split('&')
            .filter_map(|kv| kv.split_once('='))
            .find(|(k, _)| *k == "token")
            .map(|(_, v)| v.to_string())
    });
    let matches = |p: &String| same(p.as_bytes(), token.as_bytes());
    let presented = [
        bearer(req.headers()),
        cookie(req.headers(), &s.cookie),
        from_query.clone(),
    ];
    if !presented.iter().flatten().any(matches) {
        return error(
            StatusCode::UNAUTHORIZED,
            "this dashboard needs its token: open it with `?token=TOKEN` or send `Authorization: Bearer TOKEN`",
        );
    }
    let mut response = next.run(req).await;
    if from_query.as_ref().is_some_and(matches)
        && let Ok(v) = HeaderValue::from_str(&format!(
            "{}={token}; Path=/; HttpOnly; SameSite=Strict",
            s.cookie
        ))
    {
        response.headers_mut().append(header::SET_COOKIE, v);
    }
    response
}

/// Whether a `Host` header names this machine: `localhost`, an IPv4 loopback address, `[::1]`.
fn loopback_host(host: &str) -> bool {
    let name = match host.strip_prefix('[') {
        Some(v6) => v6.split(']').next().unwrap_or(""),
        None => host.rsplit_once(':').map_or(host, |(h, _)| h),
    };
    name == "localhost"
        || name
            .parse::<std::net::IpAddr>()
            .is_ok_and(|ip| ip.is_loopback())
}

fn bearer(headers: &HeaderMap) -> Option<String> {
    let value = headers.get(header::AUTHORIZATION)?.to_str().ok()?;
    value.strip_prefix("Bearer ").map(|t| t.trim().to_string())
}

fn cookie(headers: &HeaderMap, name: &str) -> Option<String> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|kv| kv.trim().split_once('='))
        .find(|(k, _)| *k == name)
        .map(|(_, v)| v.to_string())
}

/// Compares in time that does not depend on where the first difference is.
fn same(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

#[cfg(test)]
mod tests {
    use super::loopback_host;

    #[test]
    fn only_loopback_hosts_pass() {
        for h in [
            "127.0.0.1:7860",
            "localhost:7860",
            "[::1]:7860",
            "127.1.2.3",
            "localhost",
        ] {
            assert!(loopback_host(h), "{h}");
        }
        for h in [
            "127.attacker.example:7860",
            "evil.example",
            "0.0.0.0:7860",
            "[::]:7860",
            "",
            "10.0.0.1",
        ] {
            assert!(!loopback_host(h), "{h}");
        }
    }
}

/// The page and its assets, embedded in the binary.
fn asset(name: &str) -> Response {
    let (body, mime): (&'static str, &str) = match name {
        "index.html" => (
            include_str!("../../assets/ui/index.html"),
            "text/html; charset=utf-8",
        ),
        "app.js" => (
            include_str!("../../assets/ui/app.js"),
            "text/javascript; charset=utf-8",
        ),
        "app.css" => (
            include_str!("../../assets/ui/app.css"),
            "text/css; charset=utf-8",
        ),
        "uPlot.iife.min.js" => (
            include_str!("../../assets/vendor/uplot/uPlot.iife.min.js"),
            "text/javascript; charset=utf-8",
        ),
        "uPlot.min.css" => (
            include_str!("../../assets/vendor/uplot/uPlot.min.css"),
            "text/css; charset=utf-8",
        ),
        _ => return error(StatusCode::NOT_FOUND, "no such asset"),
    };
    (
        [
            (header::CONTENT_TYPE, mime),
            (header::CACHE_CONTROL, "no-cache"),
            (header::X_CONTENT_TYPE_OPTIONS, "nosniff"),
        ],
        body,
    )
        .into_response()
}

/// A JSON body, or a 400 saying what is wrong with it.
fn body<T>(parsed: Result<Json<T>, JsonRejection>) -> Result<T, Refusal> {
    parsed
        .map(|Json(v)| v)
        .map_err(|e| Refusal(StatusCode::BAD_REQUEST, e.body_text()))
}

async fn list_pipelines(State(s): State<AppState>) -> Response {
    let opts = s.opts.clone();
    let found = tokio::task::spawn_blocking(move || pipelines::find(&opts.dir, opts.quickstart))
        .await
        .unwrap_or_default();
    Json(json!({
        "dir": s.opts.dir,
        "store": s.opts.store,
        "runs_dir": s.opts.runs_dir,
        "pipelines": found,
    }))
    .into_response()
}

/// The command line of a request, after checking it.
fn checked(s: &Shared, req: &RunRequest, sub: &str) -> Result<(String, Vec<String>), Refusal> {
    let manifest =
        pipelines::check(&s.opts, req).map_err(|e| Refusal(StatusCode::BAD_REQUEST, e))?;
    Ok((manifest.name, pipelines::argv(&s.opts, sub, req)))
}

async fn command(
    State(s): State<AppState>,
    req: Result<Json<RunRequest>, JsonRejection>,
) -> Answer {
    let (_, args) = checked(&s, &body(req)?, "run")?;
    Ok(Json(json!({"command": pipelines::display(&args), "argv": args})).into_response())
}

async fn plan(State(s): State<AppState>, req: Result<Json<RunRequest>, JsonRejection>) -> Answer {
    let req = body(req)?;
    checked(&s, &req, "plan")?;
    let opts = s.opts.clone();
    match tokio::task::spawn_blocking(move || pipelines::plan(&opts, &req)).await {
        Ok(Ok(plan)) => Ok(Json(json!({"plan": plan})).into_response()),
        // The manifest's diagnostics: shown on the page as `lf plan` prints them.
        Ok(Err(diagnostics)) => Ok(Json(json!({"error": diagnostics})).into_response()),
        Err(e) => Err(Refusal(StatusCode::INTERNAL_SERVER_ERROR, e.to_string())),
    }
}

async fn start_run(
    State(s): State<AppState>,
    req: Result<Json<RunRequest>, JsonRejection>,
) -> Answer {
    let (name, args) = checked(&s, &body(req)?, "run")?;
    let shown = pipelines::display(&args);
    let cmd = pipelines::command(&s.opts, &args);
    match s.jobs.start(&name, shown, cmd) {
        Ok(job) => Ok((StatusCode::CREATED, Json(job)).into_response()),
        Err(e) => Err(Refusal(StatusCode::CONFLICT, e)),
    }
}

async fn jobs(State(s): State<AppState>) -> Response {
    Json(json!({"jobs": s.jobs.list()})).into_response()
}

async fn cancel(State(s): State<AppState>, UrlPath(id): UrlPath<u64>) -> Answer {
    match s.jobs.cancel(id) {
        Some(true) => Ok(Json(json!({"cancelled": true})).into_response()),
        Some(false) => Ok(
            Json(json!({"cancelled": false, "error": "the run had already ended"})).into_response(),
        ),
        None => Err(Refusal(StatusCode::NOT_FOUND, format!("no run {id}"))),
    }
}

fn check_name(name: &str) -> Result<(), Refusal> {
    if safe_name(name) {
        Ok(())
    } else {
        Err(Refusal(
            StatusCode::BAD_REQUEST,
            format!("`{name}` is not a pipeline or step name"),
        ))
    }
}

async fn run_state(State(s): State<AppState>, UrlPath(pipeline): UrlPath<String>) -> Answer {
    check_name(&pipeline)?;
    let roots = s.roots.clone();
    match tokio::task::spawn_blocking(move || super::events::state(&roots, &pipeline)).await {
        Ok(v) => Ok(Json(v).into_response()),
        Err(e) => Err(Refusal(StatusCode::INTERNAL_SERVER_ERROR, e.to_string())),
    }
}

/// Every run of a pipeline the store recorded, newest first (at most 100).
async fn history(State(s): State<AppState>, UrlPath(pipeline): UrlPath<String>) -> Answer {
    check_name(&pipeline)?;
    let dir = s.opts.store.join("runs");
    let runs = tokio::task::spawn_blocking(move || {
        let mut runs: Vec<_> = lf_engine::record::read_all(&dir)
            .into_iter()
            .filter(|r| r.pipeline == pipeline)
            .collect();
        runs.reverse();
        runs.truncate(100);
        runs
    })
    .await
    .map_err(|e| Refusal(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()))?;
    Ok(Json(json!({"runs": runs})).into_response())
}

async fn events(State(s): State<AppState>, UrlPath(pipeline): UrlPath<String>) -> Answer {
    check_name(&pipeline)?;
    Ok(Sse::new(super::events::stream(s.roots.clone(), pipeline))
        .keep_alive(KeepAlive::default())
        .into_response())
}

/// A step's artifact: its files, and what the page shows of evaluations and exports.
async fn artifact(
    State(s): State<AppState>,
    UrlPath((pipeline, step)): UrlPath<(String, String)>,
) -> Response {
    let Some(dir) = s.roots.artifact(&pipeline, &step) else {
        return error(
            StatusCode::NOT_FOUND,
            format!("`{pipeline}/{step}` has no artifact"),
        );
    };
    let read = |name: &str| -> Value {
        std::fs::read(dir.join(name))
            .ok()
            .and_then(|b| serde_json::from_slice(&b).ok())
            .unwrap_or(Value::Null)
    };
    Json(json!({
        "pipeline": pipeline,
        "step": step,
        "artifact": dir.file_name().map(|n| n.to_string_lossy().into_owned()),
        "files": files::list(&dir, 1000),
        "results": read("results.json"),
        "export": read("export.json"),
    }))
    .into_response()
}

#[derive(Deserialize)]
struct Rows {
    rows: Option<usize>,
}

/// A dataset, template or tokenizer artifact as `lf preview` shows it, and a dataset's first samples
/// with their trained parts marked.
async fn preview(
    State(s): State<AppState>,
    UrlPath((pipeline, step)): UrlPath<(String, String)>,
    Query(q): Query<Rows>,
) -> Response {
    let Some(dir) = s.roots.artifact(&pipeline, &step) else {
        return error(
            StatusCode::NOT_FOUND,
            format!("`{pipeline}/{step}` has no artifact yet; run it first"),
        );
    };
    let rows = q.rows.unwrap_or(5).min(50);
    let result = tokio::task::spawn_blocking(move || -> anyhow::Result<Value> {
        use lf_steps::data::preview::{Style, dataset, template, tokenizer};
        let mut text = Vec::new();
        let style = Style { color: false };
        let samples: Vec<Value> = if dir.join("preview.jsonl").is_file() {
            dataset(&dir, 0, style, &mut text)?;
            std::fs::read_to_string(dir.join("preview.jsonl"))?
                .lines()
                .filter_map(|l| serde_json::from_str(l).ok())
                .take(rows)
                .collect()
        } else if dir.join("tokenizer.json").is_file() && !dir.join("config.json").is_file() {
            tokenizer(&dir, &mut text)?;
            Vec::new()
        } else {
            template(&dir, rows, &mut text)?;
            Vec::new()
        };
        Ok(json!({"text": String::from_utf8_lossy(&text), "samples": samples}))
    })
    .await;
    match result {
        Ok(Ok(v)) => Json(v).into_response(),
        Ok(Err(e)) => error(StatusCode::UNPROCESSABLE_ENTITY, format!("{e:#}")),
        Err(e) => error(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()),
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Load {
    pipeline: String,
    step: String,
}

async fn chat_load(State(s): State<AppState>, req: Result<Json<Load>, JsonRejection>) -> Response {
    let req = match body(req) {
        Ok(r) => r,
        Err(e) => return e.into_response(),
    };
    let Some(dir) = s.roots.artifact(&req.pipeline, &req.step) else {
        return error(
            StatusCode::NOT_FOUND,
            format!(
                "`{}/{}` has no artifact yet; run it first",
                req.pipeline, req.step
            ),
        );
    };
    match s
        .chat
        .load(dir, req.step.clone(), s.opts.device, s.opts.dtype)
        .await
    {
        Ok(()) => Json(json!({"model": req.step})).into_response(),
        Err(e) => error(
            StatusCode::UNPROCESSABLE_ENTITY,
            format!("cannot load `{}`: {e:#}", req.step),
        ),
    }
}

/// `lf serve`'s routes over the loaded model.
async fn chat_proxy(
    State(s): State<AppState>,
    UrlPath(rest): UrlPath<String>,
    req: Request,
) -> Response {
    let Some((_, routes)) = s.chat.current().await else {
        return error(StatusCode::CONFLICT, "no model is loaded; load one first");
    };
    let (mut parts, body) = req.into_parts();
    let query = parts
        .uri
        .query()
        .map(|q| format!("?{q}"))
        .unwrap_or_default();
    match format!("/v1/{rest}{query}").parse() {
        Ok(uri) => parts.uri = uri,
        Err(_) => return error(StatusCode::BAD_REQUEST, "bad path"),
    }
    match routes.oneshot(Request::from_parts(parts, body)).await {
        Ok(r) => r,
        Err(never) => match never {},
    }
}

/// A file of a step's artifact, as a download.
async fn file(
    State(s): State<AppState>,
    UrlPath((pipeline, step, path)): UrlPath<(String, String, String)>,
) -> Response {
    let roots = s.roots.clone();
    let found = tokio::task::spawn_blocking(move || {
        let real = roots.file(&pipeline, &step, &path)?;
        let file = std::fs::File::open(&real).ok()?;
        let len = file.metadata().ok()?.len();
        Some((real, file, len))
    })
    .await
    .ok()
    .flatten();
    let Some((real, file, len)) = found else {
        return error(StatusCode::NOT_FOUND, "no such file in this artifact");
    };
    let name = real
        .file_name()
        .map(|n| n.to_string_lossy().replace(['"', '\\', '\r', '\n'], "_"))
        .unwrap_or_default();
    let headers = [
        (header::CONTENT_TYPE, "application/octet-stream".to_string()),
        (header::CONTENT_LENGTH, len.to_string()),
        (
            header::CONTENT_DISPOSITION,
            format!("attachment; filename=\"{name}\""),
        ),
        (header::X_CONTENT_TYPE_OPTIONS, "nosniff".to_string()),
    ];
    let mut response = Response::new(Body::from_stream(chunks(file)));
    for (k, v) in headers {
        if let Ok(v) = HeaderValue::from_str(&v) {
            response.headers_mut().insert(k, v);
        }
    }
    response
}

/// A file's bytes as a stream of chunks read on the blocking pool (large GGUF files never sit in
/// memory whole).
fn chunks(file: std::fs::File) -> impl futures::Stream<Item = std::io::Result<Vec<u8>>> + Send {
    futures::stream::unfold(Some(file), |file| async move {
        let mut file = file?;
        let read = tokio::task::spawn_blocking(move || {
            use std::io::Read as _;
            let mut buf = vec![0u8; 1 << 20];
            let n = file.read(&mut buf)?;
            buf.truncate(n);
            Ok::<_, std::io::Error>((buf, file))
        })
        .await;
        match read {
            Ok(Ok((buf, _))) if buf.is_empty() => None,
            Ok(Ok((buf, file))) => Some((Ok(buf), Some(file))),
            Ok(Err(e)) => Some((Err(e), None)),
            Err(e) => Some((Err(std::io::Error::other(e)), None)),
        }
    })
}
