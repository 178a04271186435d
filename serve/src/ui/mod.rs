//! `lf ui`: a web dashboard over the store and the runs folder (LLaMA Board for lf).
//!
//! The page (`serve/assets/ui/`, embedded in the binary, charts drawn by uPlot) talks to a small JSON
//! API. The dashboard is a client of the `lf` command line: it plans and runs pipelines by starting the
//! very `lf plan` / `lf run` commands it shows ([`pipelines`], [`jobs`]), follows runs through the
//! `runs/<pipeline>/live.json` file `lf run` rewrites at every step change and the `logs/metrics.jsonl`
//! training steps append to (server-sent events, [`events`]), reads artifacts through the `runs/` links
//! only ([`files`]), and chats through `lf serve`'s own OpenAI routes over a model it loads on demand
//! ([`chat`]).

mod chat;
mod events;
mod files;
mod jobs;
mod pipelines;
mod routes;

use std::path::PathBuf;

use lf_model::backend::{Device, Dtype};

use crate::Server;

/// What the dashboard serves, and how.
#[derive(Debug, Clone)]
pub struct UiOptions {
    /// The folder whose manifests it lists; runs start there.
    pub dir: PathBuf,
    /// The artifact store.
    pub store: PathBuf,
    /// The runs folder (`runs/<pipeline>/<step>` links, `run.json`, `live.json`).
    pub runs_dir: PathBuf,
    /// Runs it starts stay off the network.
    pub offline: bool,
    /// The embedded quickstart manifest.
    pub quickstart: &'static str,
    /// The token every request must carry.
    pub token: Option<String>,
    /// The `lf` executable that plans and runs.
    pub lf: PathBuf,
    /// Where the chat panel runs models.
    pub device: Device,
    /// Their dtype.
    pub dtype: Dtype,
}

impl UiOptions {
    /// Makes every path absolute (runs start in `dir`, which need not be the current folder).
    fn absolute(mut self) -> anyhow::Result<Self> {
        self.dir = std::path::absolute(&self.dir)?;
        self.store = std::path::absolute(&self.store)?;
        self.runs_dir = std::path::absolute(&self.runs_dir)?;
        Ok(self)
    }
}

/// Binds `addr` and serves the dashboard in the background until [`Server::stop`] (or drop).
pub fn start(opts: UiOptions, addr: &str) -> anyhow::Result<Server> {
    let opts = opts.absolute()?;
    Server::bind(addr, |bound| routes::router(opts, bound))
}
