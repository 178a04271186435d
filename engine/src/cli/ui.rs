//! `lf ui`: the web dashboard over the store and the runs folder (the server itself is an extension,
//! like `lf serve`'s).

use std::path::PathBuf;

use clap::Args;
use lf_schemas::{Device, Dtype};

use super::exit::{self, Exit, Failure};
use super::serve::Secret;
use super::{App, Cli, offline};

/// Arguments of `lf ui`.
#[derive(Args, Clone, Debug)]
pub struct UiArgs {
    /// Address to bind. The default is loopback; any other address needs a token.
    #[arg(long, default_value = "127.0.0.1")]
    pub host: String,
    /// Port to bind (0: any free port, printed at start).
    #[arg(long, default_value_t = 7860)]
    pub port: u16,
    /// Every request must carry this token (`?token=` once in the browser, then a cookie; or
    /// `Authorization: Bearer`).
    #[arg(long, env = "LF_UI_TOKEN", hide_env_values = true)]
    pub token: Option<String>,
    /// The folder whose manifests (`*.yaml`, and `pipelines/*.yaml`) the dashboard lists and runs.
    #[arg(long, default_value = ".")]
    pub dir: PathBuf,
    /// Where the chat panel runs models.
    #[arg(long, value_enum, default_value_t = Device::Auto)]
    pub device: Device,
}

/// What the dashboard serves: the global options of the command line it was started with.
#[derive(Clone, Debug)]
pub struct UiContext {
    /// The artifact store.
    pub store: PathBuf,
    /// Where `runs/<pipeline>/<step>` links and run records are.
    pub runs_dir: PathBuf,
    /// Whether runs it starts stay off the network.
    pub offline: bool,
    /// The embedded quickstart manifest (listed unless the folder has a pipeline named `quickstart`).
    pub quickstart: &'static str,
    /// Where the chat panel runs models.
    pub numerics: crate::numerics::Numerics,
}

/// `lf ui`.
pub(super) fn ui(app: &App, cli: &Cli, args: &UiArgs) -> exit::Result {
    Secret {
        name: "token",
        article: "a",
        flag: "--token",
        metavar: "TOKEN",
        env: "LF_UI_TOKEN",
        exposes: "the dashboard (which starts runs)",
    }
    .check(&args.host, args.token.as_deref())?;
    if !args.dir.is_dir() {
        return Err(Failure::usage(format_args!(
            "`--dir {}` is not a folder",
            args.dir.display()
        )));
    }
    let numerics = app
        .extensions
        .backends()
        .resolve(args.device, Dtype::Auto)
        .map_err(Failure::usage)?;
    let context = UiContext {
        numerics,
        store: cli.store.clone(),
        runs_dir: cli.runs_dir.clone(),
        offline: offline(cli),
        quickstart: app.quickstart,
    };
    app.extensions.ui(args, &context)?;
    Ok(Exit::Ok)
}
