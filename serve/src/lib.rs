//! `lf serve`: a model behind an OpenAI-compatible HTTP API (axum).
//!
//! - `GET /v1/models`, `POST /v1/chat/completions`, `POST /v1/completions` (OpenAI's bodies,
//!   `stream: true` as server-sent events ending in `data: [DONE]`), behind `Authorization: Bearer`
//!   when a key is set;
//! - `GET /health`, and `GET /metrics` in Prometheus' text format.
//!
//! The model lives on one thread ([`worker`]) that answers requests one at a time; requests wait in a
//! bounded queue, and a full queue answers 429. Prompts are rendered with the model's own chat
//! template by the renderer training uses ([`lf_steps::chat::build_prompt`]).
//!
//! [`with_server`] plugs the server into the `lf` binary; [`Server::start`] runs it in the
//! background (the tests use it).

pub mod api;
mod metrics;
mod routes;
pub mod ui;
pub mod worker;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use anyhow::Context as _;
use lf_engine::cli::{App, BenchArgs, ChatArgs, Extensions, ServeArgs, UiArgs, UiContext};
use lf_engine::numerics::{Backends, Numerics};
use lf_model::backend::{Device, Dtype};
use serde_json::Value as Json;

/// What to serve, and how.
#[derive(Debug, Clone)]
pub struct ServeOptions {
    /// A model folder, GGUF file or LoRA artifact.
    pub model: PathBuf,
    /// The id clients name in `model`.
    pub model_id: String,
    /// The API key every `/v1` request must present.
    pub api_key: Option<String>,
    /// Requests that may wait behind the one being answered.
    pub max_queue: usize,
    /// The largest `max_tokens` a request may ask for, and the default.
    pub max_tokens: usize,
    /// The largest request body in bytes.
    pub max_body_bytes: usize,
    /// Where to run the model.
    pub device: Device,
    /// Weight and activation dtype.
    pub dtype: Dtype,
}

impl ServeOptions {
    /// Defaults for serving `model` as `model_id`.
    pub fn new(model: impl Into<PathBuf>, model_id: impl Into<String>) -> Self {
        ServeOptions {
            model: model.into(),
            model_id: model_id.into(),
            api_key: None,
            max_queue: 16,
            max_tokens: 512,
            max_body_bytes: 1 << 20,
            device: Device::Cpu,
            dtype: Dtype::F32,
        }
    }
}

/// A running server.
pub struct Server {
    /// The address it listens on.
    pub addr: SocketAddr,
    shutdown: Option<tokio::sync::oneshot::Sender<()>>,
    thread: Option<std::thread::JoinHandle<anyhow::Result<()>>>,
}

impl Server {
    /// Loads the model, binds `addr` and serves in the background until [`Server::stop`] (or drop).
    pub fn start(opts: ServeOptions, addr: &str) -> anyhow::Result<Server> {
        let worker =
            worker::Worker::spawn(opts.model.clone(), opts.device, opts.dtype, opts.max_queue)?;
        Server::bind(addr, |_| routes::router(opts, worker))
    }

    /// Binds `addr` and serves the routes `app` makes for the bound address in the background until
    /// [`Server::stop`] (or drop).
    fn bind(addr: &str, app: impl FnOnce(SocketAddr) -> axum::Router) -> anyhow::Result<Server> {
        let listener =
            std::net::TcpListener::bind(addr).with_context(|| format!("cannot bind {addr}"))?;
        listener.set_nonblocking(true)?;
        let addr = listener.local_addr()?;
        let app = app(addr);
        let (tx, rx) = tokio::sync::oneshot::channel::<()>();
        let thread = std::thread::Builder::new()
            .name("lf-serve-http".into())
            .spawn(move || -> anyhow::Result<()> {
                let rt = tokio::runtime::Builder::new_multi_thread()
                    .worker_threads(2)
                    .enable_all()
                    .build()?;
                rt.block_on(async move {
                    let listener = tokio::net::TcpListener::from_std(listener)?;
                    axum::serve(listener, app)
                        .with_graceful_shutdown(async {
                            let _ = rx.await;
                        })
                        .await?;
                    Ok(())
                })
            })?;
        Ok(Server {
            addr,
            shutdown: Some(tx),
            thread: Some(thread),
        })
    }

    /// Stops accepting requests and waits for the server to end.
    pub fn stop(mut self) -> anyhow::Result<()> {
        self.shut()
    }

    /// Serves until the process is interrupted (Ctrl-C).
    pub fn wait(mut self) -> anyhow::Result<()> {
        match self.thread.take() {
            Some(t) => t
                .join()
                .map_err(|_| anyhow::anyhow!("the server thread panicked"))?,
            None => Ok(()),
        }
    }

    fn shut(&mut self) -> anyhow::Result<()> {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
        match self.thread.take() {
            Some(t) => t
                .join()
                .map_err(|_| anyhow::anyhow!("the server thread panicked"))?,
            None => Ok(()),
        }
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.shut();
    }
}

/// The `lf` binary's extensions with `lf serve` added.
pub fn with_server(app: App) -> App {
    App {
        extensions: Box::new(WithServer(app.extensions)),
        ..app
    }
}

/// The id a model is served as: a step's name, or a path's folder or file name (`.gguf` dropped).
fn model_id(arg: &str, model: &Path) -> String {
    if !Path::new(arg).exists() {
        return arg.to_owned();
    }
    let name = if model.is_file() {
        model.file_stem()
    } else {
        model.file_name()
    };
    name.map_or_else(|| arg.to_owned(), |n| n.to_string_lossy().into_owned())
}

struct WithServer(Box<dyn Extensions>);

impl Extensions for WithServer {
    fn backends(&self) -> Backends {
        self.0.backends()
    }
    fn chat(&self, model: &Path, args: &ChatArgs, numerics: &Numerics) -> anyhow::Result<()> {
        self.0.chat(model, args, numerics)
    }
    fn preview(&self, kind: &str, artifact: &Path, rows: usize) -> anyhow::Result<()> {
        self.0.preview(kind, artifact, rows)
    }
    fn bench(&self, name: &str, args: &BenchArgs) -> Option<anyhow::Result<Json>> {
        self.0.bench(name, args)
    }
    fn bench_names(&self) -> Vec<&'static str> {
        self.0.bench_names()
    }
    fn serve(&self, model: &Path, args: &ServeArgs, numerics: &Numerics) -> anyhow::Result<()> {
        let id = args
            .served_model_name
            .clone()
            .unwrap_or_else(|| model_id(&args.model, model));
        let opts = ServeOptions {
            api_key: args.api_key.clone(),
            max_queue: args.max_queue,
            max_tokens: args.max_tokens,
            device: numerics.device,
            dtype: numerics.dtype,
            ..ServeOptions::new(model, id.clone())
        };
        eprintln!("loading `{}`", model.display());
        let server = Server::start(opts, &format!("{}:{}", args.host, args.port))?;
        eprintln!(
            "serving `{id}` at http://{}/v1 (OpenAI API{}); Ctrl-C stops",
            server.addr,
            if args.api_key.is_some() {
                ", key required"
            } else {
                ""
            }
        );
        server.wait()
    }
    fn ui(&self, args: &UiArgs, context: &UiContext) -> anyhow::Result<()> {
        let opts = ui::UiOptions {
            dir: args.dir.clone(),
            store: context.store.clone(),
            runs_dir: context.runs_dir.clone(),
            offline: context.offline,
            quickstart: context.quickstart,
            token: args.token.clone(),
            lf: std::env::current_exe().context("cannot find the lf executable")?,
            device: context.numerics.device,
            dtype: context.numerics.dtype,
        };
        let server = ui::start(opts, &format!("{}:{}", args.host, args.port))?;
        let host = match server.addr {
            std::net::SocketAddr::V6(a) => format!("[{}]", a.ip()),
            std::net::SocketAddr::V4(a) => a.ip().to_string(),
        };
        eprintln!(
            "lf ui at http://{host}:{}/{}; Ctrl-C stops",
            server.addr.port(),
            if args.token.is_some() {
                "?token=…"
            } else {
                ""
            }
        );
        server.wait()
    }
}

#[cfg(test)]
mod tests {
    use super::model_id;
    use std::path::Path;

    #[test]
    fn models_are_named_after_their_step_or_path() {
        let dir = tempfile::tempdir().unwrap();
        let gguf = dir.path().join("SmolLM2.Q4_1.gguf");
        std::fs::write(&gguf, b"").unwrap();
        let arg = gguf.to_str().unwrap();
        assert_eq!(model_id(arg, &gguf), "SmolLM2.Q4_1");
        assert_eq!(
            model_id(dir.path().to_str().unwrap(), dir.path()),
            dir.path().file_name().unwrap().to_str().unwrap()
        );
        assert_eq!(model_id("dpo", Path::new("runs/quickstart/dpo")), "dpo");
    }
}
