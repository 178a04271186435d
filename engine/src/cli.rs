//! The `lf` command line: argument parsing, output, exit codes.
//!
//! Only data goes to stdout (plans, JSON, schema, chat replies); progress, logs and diagnostics go to
//! stderr. Exit codes: 0 success, 1 a step (or another operation) failed, 2 invalid manifest or usage.

use std::collections::{BTreeMap, BTreeSet, HashSet};
use std::io::{IsTerminal, Write};
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::Context as _;
use clap::{Args, Parser, Subcommand, ValueEnum};
use lf_cache::{Hash, Store};
use lf_schemas::{Device, Dtype};
use serde_json::Value as Json;

use crate::diag::{self, SourceFile};
use crate::lockfile::{Lockfile, lock_path};
use crate::numerics::{Backends, Numerics};
use crate::pipeline::{self, Pipeline};
use crate::plan::{self, Plan, PlanOptions, Status};
use crate::progress::Progress;
use crate::record::{self, RunRecord, StepStatus};
use crate::run::{self, RunOptions};
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
    /// Show the first rows of a dataset step as the model will see them.
    Preview(PreviewArgs),
    /// Measure speed (not a test: prints numbers).
    Bench(BenchArgs),
}

#[derive(Args, Clone)]
struct ManifestArgs {
    /// The manifest (default: the embedded quickstart pipeline).
    file: Option<PathBuf>,
    /// Override a variable: `--var name=Lumi` (repeatable).
    #[arg(long = "var", value_name = "NAME=VALUE")]
    vars: Vec<String>,
    /// Override the manifest's device.
    #[arg(long, value_enum)]
    device: Option<DeviceArg>,
    /// Override the manifest's dtype.
    #[arg(long, value_enum)]
    dtype: Option<DtypeArg>,
}

#[derive(Clone, Copy, ValueEnum)]
enum DeviceArg {
    Auto,
    Cpu,
    Cuda,
}

#[derive(Clone, Copy, ValueEnum)]
enum DtypeArg {
    Auto,
    F32,
    Bf16,
}

#[derive(Args)]
struct PlanArgs {
    #[command(flatten)]
    manifest: ManifestArgs,
    /// Plan this step even if cached (repeatable).
    #[arg(long, value_name = "STEP")]
    force: Vec<String>,
    /// Plan only this step and what it needs (repeatable).
    #[arg(long, value_name = "STEP")]
    only: Vec<String>,
    /// Print JSON.
    #[arg(long)]
    json: bool,
}

#[derive(Args)]
struct RunArgs {
    #[command(flatten)]
    plan: PlanArgs,
    /// Print the plan and stop.
    #[arg(long)]
    dry_run: bool,
    /// Fail if anything resolves or produces differently from the lockfile.
    #[arg(long)]
    locked: bool,
    /// How many independent steps may run at once.
    #[arg(long, short = 'j', default_value_t = 2)]
    jobs: usize,
}

#[derive(Args)]
struct ValidateArgs {
    /// The manifest (default: the embedded quickstart pipeline).
    file: Option<PathBuf>,
    /// Print diagnostics as JSON.
    #[arg(long)]
    json: bool,
}

#[derive(Subcommand)]
enum CacheCommand {
    /// List cached step results.
    Ls {
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
    /// Re-hash every artifact and report corrupted ones.
    Verify {
        /// Remove corrupted artifacts (their steps run again next time).
        #[arg(long)]
        repair: bool,
    },
    /// Remove artifacts no lockfile and none of the last runs reference.
    Gc {
        /// Keep the artifacts of this many most recent runs.
        #[arg(long, default_value_t = 10)]
        keep_runs: usize,
        /// Also remove checkpoints of interrupted steps.
        #[arg(long)]
        scratch: bool,
        /// Show what would be removed.
        #[arg(long)]
        dry_run: bool,
    },
}

/// Arguments of `lf chat`.
#[derive(Args, Clone, Debug)]
pub struct ChatArgs {
    /// A model folder or GGUF file, or the name of a step of `--file`'s pipeline.
    #[arg(long)]
    pub model: String,
    /// The pipeline whose step `--model` names (default: the embedded quickstart).
    #[arg(long, short = 'f')]
    pub file: Option<PathBuf>,
    /// Answer this prompt and exit.
    #[arg(long)]
    pub prompt: Option<String>,
    /// System prompt.
    #[arg(long)]
    pub system: Option<String>,
    /// Sampling temperature (0: greedy).
    #[arg(long, default_value_t = 0.0)]
    pub temperature: f32,
    /// Keep the k most likely tokens (0: all).
    #[arg(long, default_value_t = 0)]
    pub top_k: usize,
    /// Nucleus sampling mass.
    #[arg(long, default_value_t = 1.0)]
    pub top_p: f32,
    /// Penalty for repeating tokens (1: none).
    #[arg(long, default_value_t = 1.0)]
    pub repetition_penalty: f32,
    /// Most new tokens per answer.
    #[arg(long, default_value_t = 256)]
    pub max_new_tokens: usize,
    /// Sampling seed.
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    /// Device.
    #[arg(long, value_enum, default_value_t = DeviceArgPub::Auto)]
    pub device: DeviceArgPub,
}

/// `--device` of `lf chat`.
#[derive(Clone, Copy, ValueEnum, Debug)]
pub enum DeviceArgPub {
    /// CUDA if available.
    Auto,
    /// CPU.
    Cpu,
    /// CUDA.
    Cuda,
}

#[derive(Args)]
struct PreviewArgs {
    /// The manifest.
    file: PathBuf,
    /// The dataset step to preview (it is run first if needed).
    step: String,
    /// How many rows.
    #[arg(long, short = 'n', default_value_t = 3)]
    rows: usize,
}

/// Arguments of `lf bench`.
#[derive(Args, Clone, Debug)]
pub struct BenchArgs {
    /// Which benchmark: `engine`, `hash`, or one of the ML benchmarks.
    pub name: String,
    /// Size parameter (MiB for `hash`, steps for `engine`, rows or tokens for others).
    #[arg(long)]
    pub size: Option<u64>,
    /// A model path for model benchmarks.
    #[arg(long)]
    pub model: Option<PathBuf>,
    /// Device for model benchmarks.
    #[arg(long, value_enum, default_value_t = DeviceArgPub::Auto)]
    pub device: DeviceArgPub,
}

/// Entry point of the `lf` binary.
pub fn main(app: App) -> ExitCode {
    let cli = Cli::parse();
    init_logging(cli.verbose, color_enabled(cli.color));
    match dispatch(&app, &cli) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::from(1)
        }
    }
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

fn dispatch(app: &App, cli: &Cli) -> anyhow::Result<ExitCode> {
    let color = color_enabled(cli.color);
    match &cli.command {
        Command::Schema => {
            println!("{}", crate::schema::pipeline_schema_text(&app.registry));
            Ok(ExitCode::SUCCESS)
        }
        Command::Kinds => {
            for kind in app.registry.kinds() {
                println!("{:<10} {}", kind.kind(), kind.about());
            }
            Ok(ExitCode::SUCCESS)
        }
        Command::Validate(args) => {
            let manifest = ManifestArgs {
                file: args.file.clone(),
                vars: Vec::new(),
                device: None,
                dtype: None,
            };
            match load(app, &manifest, color, args.json) {
                Ok(p) => {
                    if args.json {
                        println!(
                            "{}",
                            serde_json::json!({"ok": true, "diagnostics": warnings_json(&p)})
                        );
                    } else {
                        eprintln!("{}: ok ({} steps)", p.path.display(), p.steps.len());
                    }
                    Ok(ExitCode::SUCCESS)
                }
                Err(code) => Ok(code),
            }
        }
        Command::Plan(args) => {
            let pipeline = match load(app, &args.manifest, color, args.json) {
                Ok(p) => p,
                Err(code) => return Ok(code),
            };
            let store = open_store(cli)?;
            let (numerics, plan) = make_plan(app, cli, &pipeline, &store, args)?;
            if let Some(code) =
                report_plan_problems(app, &args.manifest, &pipeline, &plan, color, args.json)
            {
                return Ok(code);
            }
            print_plan(&pipeline, &plan, &numerics, args.json, cli.verbose)?;
            Ok(ExitCode::SUCCESS)
        }
        Command::Run(args) => run_command(app, cli, args, color),
        Command::Cache(cmd) => cache_command(cli, cmd),
        Command::Chat(args) => {
            let model = resolve_model(app, cli, args)?;
            let device = match args.device {
                DeviceArgPub::Auto => Device::Auto,
                DeviceArgPub::Cpu => Device::Cpu,
                DeviceArgPub::Cuda => Device::Cuda,
            };
            let numerics = app
                .extensions
                .backends()
                .resolve(device, Dtype::Auto)
                .map_err(anyhow::Error::msg)?;
            app.extensions.chat(&model, args, &numerics)?;
            Ok(ExitCode::SUCCESS)
        }
        Command::Preview(args) => {
            let manifest = ManifestArgs {
                file: Some(args.file.clone()),
                vars: Vec::new(),
                device: None,
                dtype: None,
            };
            let pipeline = match load(app, &manifest, color, false) {
                Ok(p) => p,
                Err(code) => return Ok(code),
            };
            let Some(index) = pipeline.index_of(&args.step) else {
                eprintln!(
                    "error: no step is named `{}`\nhint: steps are {}",
                    args.step,
                    diag::list(pipeline.steps.iter().map(|s| s.name.as_str()))
                );
                return Ok(ExitCode::from(2));
            };
            let store = open_store(cli)?;
            let plan_args = PlanArgs {
                manifest,
                force: Vec::new(),
                only: vec![args.step.clone()],
                json: false,
            };
            let (_, plan) = make_plan(app, cli, &pipeline, &store, &plan_args)?;
            let record = run::execute(
                &pipeline,
                &store,
                &plan,
                &RunOptions {
                    plan: plan_options(cli, &plan_args),
                    jobs: 2,
                    locked: None,
                    runs_dir: cli.runs_dir.clone(),
                    progress: Progress::new(!cli.quiet && std::io::stderr().is_terminal()),
                    previous: BTreeMap::new(),
                    log_steps: !cli.quiet && !std::io::stderr().is_terminal(),
                },
            )?;
            let step = record.steps.iter().find(|s| s.name == args.step);
            let Some(artifact) = step.and_then(|s| s.artifact) else {
                print_summary(&record);
                return Ok(ExitCode::from(1));
            };
            app.extensions.preview(
                pipeline.steps[index].kind.kind(),
                &store.object_path(&artifact),
                args.rows,
            )?;
            Ok(ExitCode::SUCCESS)
        }
        Command::Bench(args) => {
            let result = match args.name.as_str() {
                "engine" => crate::bench::engine(args.size.unwrap_or(10) as usize)?,
                "hash" => crate::bench::hash(args.size.unwrap_or(1024))?,
                name => match app.extensions.bench(name, args) {
                    Some(r) => r?,
                    None => {
                        let mut names = vec!["engine", "hash"];
                        names.extend(app.extensions.bench_names());
                        eprintln!(
                            "error: unknown benchmark `{name}`\nhint: benchmarks are {}",
                            diag::list(names)
                        );
                        return Ok(ExitCode::from(2));
                    }
                },
            };
            println!("{}", serde_json::to_string_pretty(&result)?);
            Ok(ExitCode::SUCCESS)
        }
    }
}

fn warnings_json(p: &Pipeline) -> Json {
    serde_json::to_value(&p.warnings).unwrap_or(Json::Null)
}

/// Reads and validates the manifest, printing diagnostics; `Err` carries the exit code.
fn load(app: &App, args: &ManifestArgs, color: bool, json: bool) -> Result<Pipeline, ExitCode> {
    let (path, text) = match &args.file {
        Some(path) => match std::fs::read_to_string(path) {
            Ok(text) => (path.clone(), text),
            Err(e) => {
                eprintln!("error: cannot read `{}`: {e}", path.display());
                return Err(ExitCode::from(2));
            }
        },
        None => (PathBuf::from("quickstart.yaml"), app.quickstart.to_string()),
    };
    let mut overrides = BTreeMap::new();
    for var in &args.vars {
        let Some((name, value)) = var.split_once('=') else {
            eprintln!("error: `--var {var}` must be NAME=VALUE");
            return Err(ExitCode::from(2));
        };
        let node = crate::yaml::parse(value).ok();
        let value = node.map_or(Json::String(value.into()), |n| n.to_json());
        overrides.insert(name.to_string(), value);
    }
    let display = path.display().to_string();
    let source = SourceFile {
        path: &display,
        text: &text,
    };
    match pipeline::load(&path, &text, &app.registry, &overrides) {
        Ok(mut p) => {
            if let Some(d) = args.device {
                p.device = match d {
                    DeviceArg::Auto => Device::Auto,
                    DeviceArg::Cpu => Device::Cpu,
                    DeviceArg::Cuda => Device::Cuda,
                };
            }
            if let Some(d) = args.dtype {
                p.dtype = match d {
                    DtypeArg::Auto => Dtype::Auto,
                    DtypeArg::F32 => Dtype::F32,
                    DtypeArg::Bf16 => Dtype::Bf16,
                };
            }
            if !p.warnings.is_empty() && !json {
                eprint!("{}", diag::render(&p.warnings, &source, color));
            }
            diag::locate(&mut p.warnings, &source);
            Ok(p)
        }
        Err(mut diags) => {
            if json {
                diag::locate(&mut diags, &source);
                println!("{}", serde_json::json!({"ok": false, "diagnostics": diags}));
            } else {
                eprint!("{}", diag::render(&diags, &source, color));
                let errors = diags
                    .iter()
                    .filter(|d| d.severity == diag::Severity::Error)
                    .count();
                eprintln!(
                    "error: `{display}` has {errors} problem{}",
                    if errors == 1 { "" } else { "s" }
                );
            }
            Err(ExitCode::from(2))
        }
    }
}

/// Reports the problems the plan found in the inputs of steps that must run (a dataset tokenized for
/// another model, ...), like validation errors: before anything runs, exit code 2.
fn report_plan_problems(
    app: &App,
    args: &ManifestArgs,
    pipeline: &Pipeline,
    plan: &Plan,
    color: bool,
    json: bool,
) -> Option<ExitCode> {
    let mut diags = plan.diagnostics(pipeline);
    if diags.is_empty() {
        return None;
    }
    let text = match &args.file {
        Some(path) => std::fs::read_to_string(path).unwrap_or_default(),
        None => app.quickstart.to_string(),
    };
    let display = pipeline.path.display().to_string();
    let source = SourceFile {
        path: &display,
        text: &text,
    };
    if json {
        diag::locate(&mut diags, &source);
        println!("{}", serde_json::json!({"ok": false, "diagnostics": diags}));
    } else {
        eprint!("{}", diag::render(&diags, &source, color));
        eprintln!(
            "error: the inputs of `{display}`'s steps have {} problem{}; nothing ran",
            diags.len(),
            if diags.len() == 1 { "" } else { "s" }
        );
    }
    Some(ExitCode::from(2))
}

fn open_store(cli: &Cli) -> anyhow::Result<Store> {
    Store::open(&cli.store)
        .with_context(|| format!("cannot open the store `{}`", cli.store.display()))
}

fn plan_options(cli: &Cli, args: &PlanArgs) -> PlanOptions {
    PlanOptions {
        force: args.force.iter().cloned().collect::<BTreeSet<_>>(),
        only: args.only.clone(),
        offline: offline(cli),
    }
}

/// Where the lockfile of the pipeline lives (embedded pipelines keep theirs under the runs folder).
fn lockfile_path(cli: &Cli, pipeline: &Pipeline, args: &ManifestArgs) -> PathBuf {
    match &args.file {
        Some(file) => lock_path(file),
        None => cli.runs_dir.join(format!("{}.lock", pipeline.name)),
    }
}

fn make_plan(
    app: &App,
    cli: &Cli,
    pipeline: &Pipeline,
    store: &Store,
    args: &PlanArgs,
) -> anyhow::Result<(Numerics, Plan)> {
    for name in args.force.iter().chain(&args.only) {
        if pipeline.index_of(name).is_none() {
            anyhow::bail!(
                "no step is named `{name}`\nhint: steps are {}",
                diag::list(pipeline.steps.iter().map(|s| s.name.as_str()))
            );
        }
    }
    let numerics = app
        .extensions
        .backends()
        .resolve(pipeline.device, pipeline.dtype)
        .map_err(anyhow::Error::msg)?;
    let lock = Lockfile::read(&lockfile_path(cli, pipeline, &args.manifest))?;
    let previous = previous_keys(cli, pipeline, lock.as_ref());
    let pins = lock.as_ref().map(Lockfile::pins).unwrap_or_default();
    let plan = plan::plan(
        pipeline,
        store,
        &numerics,
        &plan_options(cli, args),
        &previous,
        &pins,
    )?;
    Ok((numerics, plan))
}

/// The keys of the last run of this pipeline (or the lockfile's), to explain what changed.
fn previous_keys(cli: &Cli, pipeline: &Pipeline, lock: Option<&Lockfile>) -> plan::Previous {
    let last_run = std::fs::read(cli.runs_dir.join(&pipeline.name).join("run.json"))
        .ok()
        .and_then(|b| serde_json::from_slice::<RunRecord>(&b).ok());
    let mut previous: plan::Previous = lock
        .map(|l| l.steps.iter().map(|(k, v)| (k.clone(), v.key)).collect())
        .unwrap_or_default();
    if let Some(run) = last_run {
        previous.extend(run.keys());
    }
    previous
}

fn print_plan(
    pipeline: &Pipeline,
    plan: &Plan,
    numerics: &Numerics,
    json: bool,
    verbose: u8,
) -> anyhow::Result<()> {
    let mut out = std::io::stdout().lock();
    if json {
        let steps: Vec<Json> = plan
            .order
            .iter()
            .map(|&i| {
                let p = plan.steps[i].as_ref().expect("ordered steps are planned");
                serde_json::json!({
                    "name": pipeline.steps[i].name,
                    "kind": pipeline.steps[i].kind.kind(),
                    "status": p.status,
                    "key": p.key.as_ref().map(|k| k.hash.hex()),
                    "key_json": if verbose >= 2 { p.key.as_ref().map(|k| k.json.clone()) } else { None },
                    "artifact": p.record.as_ref().map(|r| r.artifact.hex()),
                    "reasons": p.reasons,
                })
            })
            .collect();
        let doc = serde_json::json!({
            "pipeline": pipeline.name,
            "manifest": pipeline.path,
            "numerics": numerics,
            "steps": steps,
        });
        writeln!(out, "{}", serde_json::to_string_pretty(&doc)?)?;
        return Ok(());
    }
    writeln!(
        out,
        "plan for `{}` ({}) on {}/{}",
        pipeline.name,
        pipeline.path.display(),
        numerics.device,
        numerics.dtype
    )?;
    let width = plan
        .order
        .iter()
        .map(|&i| pipeline.steps[i].name.len())
        .max()
        .unwrap_or(4);
    let (mut to_run, mut cached, mut pending) = (0, 0, 0);
    for &i in &plan.order {
        let step = &pipeline.steps[i];
        let p = plan.steps[i].as_ref().expect("ordered steps are planned");
        let status = match p.status {
            Status::Cached => {
                cached += 1;
                "cached"
            }
            Status::Run => {
                to_run += 1;
                "run"
            }
            Status::Pending => {
                pending += 1;
                "pending"
            }
        };
        let detail = match p.status {
            Status::Cached => p.key.as_ref().map(|k| k.hash.short()).unwrap_or_default(),
            _ => p.reasons.join("; "),
        };
        writeln!(
            out,
            "  {status:<8} {:<width$}  {:<9} {detail}",
            step.name,
            step.kind.kind()
        )?;
        if verbose >= 2
            && let Some(key) = &p.key
        {
            writeln!(
                out,
                "===> cache key {}:\n{}",
                key.hash,
                serde_json::to_string_pretty(&key.json)?
            )?;
        }
    }
    writeln!(out, "{to_run} to run, {pending} pending, {cached} cached")?;
    Ok(())
}

fn run_command(app: &App, cli: &Cli, args: &RunArgs, color: bool) -> anyhow::Result<ExitCode> {
    let pipeline = match load(app, &args.plan.manifest, color, args.plan.json) {
        Ok(p) => p,
        Err(code) => return Ok(code),
    };
    let store = open_store(cli)?;
    let lock_file = lockfile_path(cli, &pipeline, &args.plan.manifest);
    let lock = Lockfile::read(&lock_file)?;
    let (numerics, plan) = make_plan(app, cli, &pipeline, &store, &args.plan)?;
    if let Some(code) = report_plan_problems(
        app,
        &args.plan.manifest,
        &pipeline,
        &plan,
        color,
        args.plan.json,
    ) {
        return Ok(code);
    }
    if args.dry_run {
        print_plan(&pipeline, &plan, &numerics, args.plan.json, cli.verbose)?;
        return Ok(ExitCode::SUCCESS);
    }
    let locked = if args.locked {
        let Some(lock) = lock.clone() else {
            eprintln!(
                "error: `--locked` needs a lockfile, and `{}` does not exist\nhint: run once without `--locked` to write it",
                lock_file.display()
            );
            return Ok(ExitCode::from(1));
        };
        let mut drift = Vec::new();
        if lock.numerics != numerics {
            drift.push(format!(
                "numerics are {}/{}/{} but the lockfile has {}/{}/{}",
                numerics.device,
                numerics.dtype,
                numerics.backend,
                lock.numerics.device,
                lock.numerics.dtype,
                lock.numerics.backend
            ));
        }
        for &i in &plan.order {
            let step = &pipeline.steps[i];
            let planned = plan.steps[i].as_ref().expect("planned");
            match lock.steps.get(&step.name) {
                None => drift.push(format!("step `{}` is not in the lockfile", step.name)),
                Some(l) if l.pin != planned.pin => drift.push(format!(
                    "step `{}`: remote input resolves to {} but the lockfile has {}",
                    step.name,
                    planned
                        .pin
                        .as_ref()
                        .map_or("nothing".into(), Json::to_string),
                    l.pin.as_ref().map_or("nothing".into(), Json::to_string)
                )),
                Some(l) => {
                    if let Some(key) = &planned.key
                        && key.hash != l.key
                    {
                        let why = store
                            .record(&l.key)
                            .map(|prev| {
                                plan::explain(&prev.key_json, &key.json, &pipeline, i).join("; ")
                            })
                            .unwrap_or_else(|| {
                                "parameters, inputs or the implementation differ".into()
                            });
                        drift.push(format!(
                            "step `{}`: cache key differs from the lockfile: {why}",
                            step.name
                        ));
                    }
                }
            }
        }
        if !drift.is_empty() {
            eprintln!("error: the run differs from `{}`:", lock_file.display());
            for d in &drift {
                eprintln!("  - {d}");
            }
            eprintln!("hint: run without `--locked` to update the lockfile");
            return Ok(ExitCode::from(1));
        }
        Some(lock)
    } else {
        None
    };
    let progress = Progress::new(!cli.quiet && std::io::stderr().is_terminal());
    let previous = previous_keys(cli, &pipeline, lock.as_ref());
    let record = run::execute(
        &pipeline,
        &store,
        &plan,
        &RunOptions {
            plan: plan_options(cli, &args.plan),
            jobs: args.jobs,
            locked: locked.clone(),
            runs_dir: cli.runs_dir.clone(),
            progress,
            previous,
            log_steps: !cli.quiet && !std::io::stderr().is_terminal(),
        },
    )?;
    if locked.is_none() {
        let updated = run::updated_lockfile(&pipeline, &plan, &record, &numerics, lock.as_ref());
        if lock.as_ref() != Some(&updated) {
            updated.write(&lock_file)?;
        }
        register_lockfile(&store, &lock_file);
    }
    if args.plan.json {
        println!("{}", serde_json::to_string_pretty(&record)?);
    }
    print_summary(&record);
    Ok(if record.ok {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    })
}

/// Remembers a lockfile's location so `lf cache gc` keeps what it references.
fn register_lockfile(store: &Store, lock: &Path) {
    let registry = store.root().join("lockfiles.json");
    let mut paths: BTreeSet<PathBuf> = std::fs::read(&registry)
        .ok()
        .and_then(|b| serde_json::from_slice(&b).ok())
        .unwrap_or_default();
    let abs = std::path::absolute(lock).unwrap_or_else(|_| lock.to_path_buf());
    if paths.insert(abs) {
        let _ = lf_cache::write_atomic(
            &registry,
            &serde_json::to_vec_pretty(&paths).unwrap_or_default(),
        );
    }
}

fn print_summary(record: &RunRecord) {
    let mut err = std::io::stderr().lock();
    let width = record
        .steps
        .iter()
        .map(|s| s.name.len())
        .max()
        .unwrap_or(4)
        .max(4);
    let _ = writeln!(
        err,
        "\n{:<width$}  {:<9} {:<7} {:>8}  {:<12}  artifact",
        "step", "kind", "status", "time", "key"
    );
    for s in &record.steps {
        let status = match s.status {
            StepStatus::Cached => "cached",
            StepStatus::Ran => "ran",
            StepStatus::Failed => "FAILED",
            StepStatus::Skipped => "skipped",
        };
        let time = if s.status == StepStatus::Ran || s.status == StepStatus::Failed {
            format!("{:.1}s", s.wall_s)
        } else {
            "-".into()
        };
        let metrics = s
            .metrics
            .iter()
            .map(|(k, v)| match v {
                Json::Number(n) if n.is_f64() => {
                    let v = n.as_f64().unwrap_or_default();
                    if v.fract() == 0.0 && v.abs() < 1e15 {
                        format!("{k}={v:.0}")
                    } else {
                        format!("{k}={v:.4}")
                    }
                }
                Json::String(s) => format!("{k}={s}"),
                _ => format!("{k}={v}"),
            })
            .collect::<Vec<_>>()
            .join(" ");
        let _ = writeln!(
            err,
            "{:<width$}  {:<9} {:<7} {:>8}  {:<12}  {}{}",
            s.name,
            s.kind,
            status,
            time,
            s.key.map(|k| k.short()).unwrap_or_default(),
            s.path
                .as_ref()
                .map(|p| p.display().to_string())
                .unwrap_or_default(),
            if metrics.is_empty() {
                String::new()
            } else {
                format!("  {metrics}")
            }
        );
        if let Some(e) = &s.error {
            for line in e.lines() {
                let _ = writeln!(err, "{:width$}  {line}", "");
            }
        }
    }
    let failed = record
        .steps
        .iter()
        .filter(|s| s.status == StepStatus::Failed)
        .count();
    let _ = writeln!(
        err,
        "{} in {:.1}s: {} ran, {} cached, {} failed, {} skipped",
        if record.ok { "finished" } else { "FAILED" },
        record.wall_s,
        record
            .steps
            .iter()
            .filter(|s| s.status == StepStatus::Ran)
            .count(),
        record
            .steps
            .iter()
            .filter(|s| s.status == StepStatus::Cached)
            .count(),
        failed,
        record
            .steps
            .iter()
            .filter(|s| s.status == StepStatus::Skipped)
            .count(),
    );
}

fn cache_command(cli: &Cli, cmd: &CacheCommand) -> anyhow::Result<ExitCode> {
    let store = open_store(cli)?;
    match cmd {
        CacheCommand::Ls { json } => {
            let records = store.records()?;
            let sizes: BTreeMap<Hash, (u64, u64)> = store
                .objects()?
                .into_iter()
                .map(|o| (o.hash, (o.bytes, o.files)))
                .collect();
            if *json {
                let rows: Vec<Json> = records
                    .iter()
                    .map(|r| {
                        serde_json::json!({
                            "key": r.key, "artifact": r.artifact, "kind": r.kind, "step": r.step,
                            "created_unix_s": r.created_unix_s, "wall_s": r.wall_s,
                            "bytes": sizes.get(&r.artifact).map(|s| s.0),
                        })
                    })
                    .collect();
                println!("{}", serde_json::to_string_pretty(&rows)?);
            } else {
                println!(
                    "{:<12}  {:<12}  {:<9} {:<16} {:>10}",
                    "key", "artifact", "kind", "step", "size"
                );
                for r in &records {
                    println!(
                        "{:<12}  {:<12}  {:<9} {:<16} {:>10}",
                        r.key.short(),
                        r.artifact.short(),
                        r.kind,
                        r.step,
                        sizes
                            .get(&r.artifact)
                            .map_or("missing".into(), |s| human_bytes(s.0))
                    );
                }
                let total: u64 = sizes.values().map(|s| s.0).sum();
                println!(
                    "{} keys, {} artifacts, {}",
                    records.len(),
                    sizes.len(),
                    human_bytes(total)
                );
            }
            Ok(ExitCode::SUCCESS)
        }
        CacheCommand::Verify { repair } => {
            let report = store.verify(*repair)?;
            for (name, found) in &report.corrupted {
                println!("corrupted: artifact {} now hashes to {}", name, found);
            }
            for key in &report.dangling_keys {
                println!("dangling: key {} points at a missing artifact", key);
            }
            eprintln!(
                "checked {} artifacts: {} corrupted, {} dangling keys{}",
                report.checked,
                report.corrupted.len(),
                report.dangling_keys.len(),
                if *repair { " (removed)" } else { "" }
            );
            if !report.corrupted.is_empty() && !*repair {
                eprintln!(
                    "hint: `lf cache verify --repair` removes them; the steps run again next time"
                );
            }
            Ok(if report.corrupted.is_empty() || *repair {
                ExitCode::SUCCESS
            } else {
                ExitCode::from(1)
            })
        }
        CacheCommand::Gc {
            keep_runs,
            scratch,
            dry_run,
        } => {
            let mut keep: HashSet<Hash> = HashSet::new();
            let registry = store.root().join("lockfiles.json");
            let locks: Vec<PathBuf> = std::fs::read(&registry)
                .ok()
                .and_then(|b| serde_json::from_slice(&b).ok())
                .unwrap_or_default();
            for path in &locks {
                if let Ok(Some(lock)) = Lockfile::read(path) {
                    keep.extend(lock.steps.values().map(|s| s.output));
                }
            }
            let runs = record::read_all(&store.runs_dir());
            for run in runs.iter().rev().take(*keep_runs) {
                keep.extend(run.artifacts());
            }
            let report = store.gc(&keep, *scratch, *dry_run)?;
            for o in &report.removed_objects {
                println!(
                    "{} {} ({})",
                    if *dry_run { "would remove" } else { "removed" },
                    o.hash.short(),
                    human_bytes(o.bytes)
                );
            }
            eprintln!(
                "{}{} artifacts, {} keys, {} staging folders, {} scratch folders: {} freed; kept {} artifacts",
                if *dry_run {
                    "dry run: would remove "
                } else {
                    "removed "
                },
                report.removed_objects.len(),
                report.removed_keys,
                report.removed_staging,
                report.removed_scratch,
                human_bytes(report.freed_bytes),
                report.kept_objects
            );
            Ok(ExitCode::SUCCESS)
        }
    }
}

fn resolve_model(app: &App, cli: &Cli, args: &ChatArgs) -> anyhow::Result<PathBuf> {
    let direct = PathBuf::from(&args.model);
    if direct.exists() {
        return Ok(direct);
    }
    let text = match &args.file {
        Some(f) => {
            std::fs::read_to_string(f).with_context(|| format!("cannot read `{}`", f.display()))?
        }
        None => app.quickstart.to_string(),
    };
    let path = args
        .file
        .clone()
        .unwrap_or_else(|| PathBuf::from("quickstart.yaml"));
    let pipeline =
        pipeline::load(&path, &text, &app.registry, &BTreeMap::new()).map_err(|diags| {
            let display = path.display().to_string();
            let source = SourceFile {
                path: &display,
                text: &text,
            };
            eprint!("{}", diag::render(&diags, &source, false));
            anyhow::anyhow!(
                "`{display}` is not a valid manifest, so `--model` cannot name its steps"
            )
        })?;
    if pipeline.index_of(&args.model).is_none() {
        anyhow::bail!(
            "`{}` is neither a file nor a step of `{}`\nhint: steps are {}",
            args.model,
            pipeline.name,
            diag::list(pipeline.steps.iter().map(|s| s.name.as_str()))
        );
    }
    let link = cli.runs_dir.join(&pipeline.name).join(&args.model);
    if !link.exists() {
        anyhow::bail!(
            "step `{}` of `{}` has not produced an artifact yet\nhint: run `lf run {}` first",
            args.model,
            pipeline.name,
            args.file
                .as_ref()
                .map_or(String::new(), |f| f.display().to_string())
        );
    }
    Ok(link)
}

fn human_bytes(bytes: u64) -> String {
    const UNITS: [&str; 5] = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut value = bytes as f64;
    let mut unit = 0;
    while value >= 1024.0 && unit < UNITS.len() - 1 {
        value /= 1024.0;
        unit += 1;
    }
    if unit == 0 {
        format!("{bytes} B")
    } else {
        format!("{value:.1} {}", UNITS[unit])
    }
}
