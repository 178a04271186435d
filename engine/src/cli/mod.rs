//! The `lf` command line: argument parsing, output, exit codes. One file per subcommand; this one holds the
//! arguments shared by all of them, the [`Extensions`] the binary plugs in, and the dispatch.
//!
//! Only data goes to stdout (plans, JSON, schema, chat replies); progress, logs and diagnostics go to
//! stderr.
//!
//! Every command returns an [`exit::Exit`] status, the same in all of them: 0 success; 1 a step or another
//! operation failed at run time; 2 usage: an invalid manifest, a step or benchmark name that does not exist
//! (`--only`, `--force`, `lf preview`, `lf chat --model`, `lf serve --model`), bad argument values (`--var`,
//! a device or dtype the binary cannot use, a non-loopback `lf serve`/`lf ui` without a key or token).
//! With 2, nothing ran.

mod bench;
mod cache;
mod chat;
mod exit;
mod import;
mod manifest;
mod plan;
mod preview;
mod run;
mod schema;
mod serve;
mod ui;
mod validate;

use std::io::IsTerminal;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::Context as _;
use clap::{Parser, Subcommand, ValueEnum};
use lf_cache::Store;
use serde_json::Value as Json;

pub use bench::BenchArgs;
pub use chat::ChatArgs;
pub use serve::ServeArgs;
pub use ui::{UiArgs, UiContext};

use cache::CacheCommand;
use import::ImportArgs;
use plan::PlanArgs;
use preview::PreviewArgs;
use run::RunArgs;
use validate::ValidateArgs;

use exit::Failure;

use crate::numerics::{Backends, Numerics};
use crate::step::Registry;

/// What the binary plugs into the engine: its step kinds, its default pipeline, and the commands that need
/// the ML crates (the engine itself knows nothing of models).
pub struct App {
    /// Every step kind.
    pub registry: Registry,
    /// The embedded default manifest (`pipelines/quickstart.yaml`), run when no file is given.
    pub quickstart: &'static str,
    /// Commands implemented outside the engine.
    pub extensions: Box<dyn Extensions>,
}

/// Commands implemented by the step crate.
pub trait Extensions: Send + Sync {
    /// Which backends the binary has.
    fn backends(&self) -> Backends;
    /// `lf chat`: `model` is a resolved artifact or local path.
    fn chat(&self, model: &Path, args: &ChatArgs, numerics: &Numerics) -> anyhow::Result<()>;
    /// `lf preview`: shows the first rows of a step's artifact of kind `kind`.
    fn preview(&self, kind: &str, artifact: &Path, rows: usize) -> anyhow::Result<()>;
    /// `lf bench NAME`: benchmarks of the ML parts; `None` if `name` is not one of theirs.
    fn bench(&self, name: &str, args: &BenchArgs) -> Option<anyhow::Result<Json>>;
    /// Names of the extension benchmarks, for help.
    fn bench_names(&self) -> Vec<&'static str>;
    /// `lf serve`: serves `model` (a resolved artifact or local path) until interrupted.
    fn serve(&self, model: &Path, args: &ServeArgs, numerics: &Numerics) -> anyhow::Result<()> {
        let _ = (model, args, numerics);
        anyhow::bail!("this lf binary was built without the server")
    }
    /// `lf ui`: serves the dashboard until interrupted.
    fn ui(&self, args: &UiArgs, context: &UiContext) -> anyhow::Result<()> {
        let _ = (args, context);
        anyhow::bail!("this lf binary was built without the dashboard")
    }
}

/// lf: declarative, cached, resumable LLM fine-tuning pipelines.
#[derive(Parser)]
#[command(name = "lf", version, about, long_about = None, max_term_width = 100)]
pub struct Cli {
    #[command(subcommand)]
    command: Command,
    /// More output: -v debug logs, -vv trace logs and cache-key JSON in `lf plan`.
    #[arg(short, long, action = clap::ArgAction::Count, global = true)]
    verbose: u8,
    /// No progress bars.
    #[arg(short, long, global = true)]
    quiet: bool,
    /// The artifact store.
    #[arg(long, env = "LF_STORE", default_value = ".lf", global = true)]
    store: PathBuf,
    /// Where `runs/<pipeline>/<step>` links and run records go.
    #[arg(long, env = "LF_RUNS_DIR", default_value = "runs", global = true)]
    runs_dir: PathBuf,
    /// Never use the network (also `HF_HUB_OFFLINE=1` or `LF_OFFLINE=1`).
    #[arg(long, global = true)]
    offline: bool,
    /// Colour in diagnostics.
    #[arg(long, value_enum, default_value_t = ColorChoice::Auto, global = true)]
    color: ColorChoice,
}

#[derive(Clone, Copy, ValueEnum)]
enum ColorChoice {
    Auto,
    Always,
    Never,
}

#[derive(Subcommand)]
enum Command {
    /// Run a pipeline: every step whose inputs changed, no more.
    Run(RunArgs),
    /// Show what `lf run` would do, and why.
    Plan(PlanArgs),
    /// Check a manifest and report every problem.
    Validate(ValidateArgs),
    /// Print the JSON Schema of manifests.
    Schema,
    /// List the step kinds.
    Kinds,
    /// Inspect and clean the artifact store.
    #[command(subcommand)]
    Cache(CacheCommand),
    /// Chat with a model (a path, or a step of a pipeline).
    Chat(ChatArgs),
    /// Serve a model behind an OpenAI-compatible HTTP API.
    Serve(ServeArgs),
    /// A web dashboard: pipelines, runs with live loss curves, data preview, chat, exports.
    Ui(UiArgs),
    /// Show the first rows of a dataset step as the model will see them.
    Preview(PreviewArgs),
    /// Measure speed (not a test: prints numbers).
    Bench(BenchArgs),
    /// Turn another tool's config into an lf manifest (LLaMA-Factory's YAML).
    Import(ImportArgs),
}

/// Entry point of the `lf` binary.
pub fn main(app: App) -> ExitCode {
    let cli = Cli::parse();
    init_logging(cli.verbose, color_enabled(cli.color));
    dispatch(&app, &cli).unwrap_or_else(Failure::report).into()
}

fn color_enabled(choice: ColorChoice) -> bool {
    match choice {
        ColorChoice::Always => true,
        ColorChoice::Never => false,
        ColorChoice::Auto => {
            std::env::var_os("NO_COLOR").is_none_or(|v| v.is_empty())
                && std::io::stderr().is_terminal()
        }
    }
}

fn init_logging(verbose: u8, color: bool) {
    let default = match verbose {
        0 => "warn",
        1 => "debug",
        _ => "trace",
    };
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(default));
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(color)
        .without_time()
        .try_init();
}

fn offline(cli: &Cli) -> bool {
    let truthy = |name: &str| {
        std::env::var(name)
            .is_ok_and(|v| matches!(v.as_str(), "1" | "true" | "TRUE" | "yes" | "ON" | "on"))
    };
    cli.offline || truthy("LF_OFFLINE") || truthy("HF_HUB_OFFLINE")
}

fn dispatch(app: &App, cli: &Cli) -> exit::Result {
    let color = color_enabled(cli.color);
    match &cli.command {
        Command::Schema => Ok(schema::schema(app)),
        Command::Kinds => Ok(schema::kinds(app)),
        Command::Validate(args) => validate::validate(app, args, color),
        Command::Plan(args) => plan::plan(app, cli, args, color),
        Command::Run(args) => run::run(app, cli, args, color),
        Command::Cache(cmd) => cache::cache(cli, cmd),
        Command::Chat(args) => chat::chat(app, cli, args),
        Command::Serve(args) => serve::serve(app, cli, args),
        Command::Ui(args) => ui::ui(app, cli, args),
        Command::Preview(args) => preview::preview(app, cli, args, color),
        Command::Bench(args) => bench::bench(app, args),
        Command::Import(args) => import::import(args),
    }
}

fn open_store(cli: &Cli) -> anyhow::Result<Store> {
    Store::open(&cli.store)
        .with_context(|| format!("cannot open the store `{}`", cli.store.display()))
}

#[cfg(test)]
mod tests {
    use lf_schemas::kinds::CommandParams;

    use super::exit::Exit;
    use super::*;
    use crate::step::{Step, StepContext};

    /// A step kind whose runs fail, so `lf run` has something to fail at.
    struct Failing;

    impl Step for Failing {
        type Params = CommandParams;
        const KIND: &'static str = "command";
        const VERSION: u32 = 1;
        const ABOUT: &'static str = "fails";

        fn run(&self, _: &CommandParams, _: &mut StepContext<'_>) -> anyhow::Result<()> {
            anyhow::bail!("this step always fails")
        }
    }

    /// A binary without ML commands or CUDA.
    struct NoMl;

    impl Extensions for NoMl {
        fn backends(&self) -> Backends {
            Backends {
                cuda_compiled: false,
                cuda_present: false,
            }
        }
        fn chat(&self, _: &Path, _: &ChatArgs, _: &Numerics) -> anyhow::Result<()> {
            Ok(())
        }
        fn preview(&self, _: &str, _: &Path, _: usize) -> anyhow::Result<()> {
            Ok(())
        }
        fn bench(&self, _: &str, _: &BenchArgs) -> Option<anyhow::Result<Json>> {
            None
        }
        fn bench_names(&self) -> Vec<&'static str> {
            Vec::new()
        }
    }

    const MANIFEST: &str = "name: t\nsteps:\n  a:\n    kind: command\n    run: echo a\n";

    /// Runs `lf ARGS` in-process, with a fresh store and runs folder, and `p.yaml` (the same pipeline as
    /// the embedded one) in the current folder's place; returns the exit status.
    fn lf(args: &[&str]) -> Exit {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("p.yaml");
        std::fs::write(&file, MANIFEST).unwrap();
        let (store, runs) = (dir.path().join("store"), dir.path().join("runs"));
        let mut argv = ["lf", "--quiet", "--offline", "--store"]
            .map(String::from)
            .to_vec();
        argv.push(store.display().to_string());
        argv.push("--runs-dir".into());
        argv.push(runs.display().to_string());
        argv.extend(
            args.iter()
                .map(|a| a.replace("p.yaml", &file.display().to_string())),
        );
        let cli = Cli::try_parse_from(argv).unwrap();
        let app = App {
            registry: Registry::new(&[&Failing]),
            quickstart: MANIFEST,
            extensions: Box::new(NoMl),
        };
        dispatch(&app, &cli).unwrap_or_else(Failure::report)
    }

    #[test]
    fn success_is_0() {
        assert_eq!(lf(&["plan"]), Exit::Ok);
        assert_eq!(lf(&["validate", "p.yaml"]), Exit::Ok);
        assert_eq!(lf(&["run", "--dry-run", "--only", "a"]), Exit::Ok);
        assert_eq!(lf(&["cache", "verify"]), Exit::Ok);
    }

    #[test]
    fn unknown_names_on_the_command_line_are_usage_errors() {
        for args in [
            &["plan", "--only", "nope"][..],
            &["plan", "--force", "nope"],
            &["run", "--only", "nope"],
            &["run", "p.yaml", "--force", "nope"],
            &["preview", "p.yaml", "nope"],
            &["chat", "--model", "nope"],
            &["bench", "nope"],
        ] {
            assert_eq!(lf(args), Exit::Usage, "lf {}", args.join(" "));
        }
    }

    #[test]
    fn bad_manifests_and_argument_values_are_usage_errors() {
        for args in [
            &["validate", "missing.yaml"][..],
            &["plan", "missing.yaml"],
            &["chat", "--model", "a", "-f", "missing.yaml"],
            &["run", "--var", "no-equals-sign"],
            &["plan", "--device", "cuda"],
            &["plan", "--device", "cpu", "--dtype", "bf16"],
            &["chat", "--model", "p.yaml", "--device", "cuda"],
        ] {
            assert_eq!(lf(args), Exit::Usage, "lf {}", args.join(" "));
        }
    }

    #[test]
    fn runtime_failures_are_1() {
        assert_eq!(lf(&["run"]), Exit::Failed);
        assert_eq!(lf(&["run", "--locked"]), Exit::Failed);
        assert_eq!(lf(&["chat", "--model", "a"]), Exit::Failed);
    }
}
