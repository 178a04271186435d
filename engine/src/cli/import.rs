//! `lf import llamafactory CONFIG.yaml`: a LLaMA-Factory config as an lf manifest (`crate::import`).

use std::path::PathBuf;

use clap::{Args, ValueEnum};

use super::exit::{self, Exit, Failure};

/// Arguments of `lf import`.
#[derive(Args)]
pub(super) struct ImportArgs {
    /// The tool the config is for.
    from: From,
    /// The config (YAML).
    config: PathBuf,
    /// Write the manifest here (default: stdout).
    #[arg(long, short = 'o')]
    output: Option<PathBuf>,
    /// The pipeline's name (default: the config's file name).
    #[arg(long)]
    name: Option<String>,
}

#[derive(Clone, Copy, ValueEnum)]
enum From {
    /// LLaMA-Factory's training, export, chat and API configs.
    Llamafactory,
}

/// `lf import`.
pub(super) fn import(args: &ImportArgs) -> exit::Result {
    let From::Llamafactory = args.from;
    let text = std::fs::read_to_string(&args.config).map_err(|e| {
        Failure::usage(format_args!("cannot read `{}`: {e}", args.config.display()))
    })?;
    let name = args.name.clone().unwrap_or_else(|| {
        args.config
            .file_stem()
            .map(|s| s.to_string_lossy().replace('_', "-"))
            .unwrap_or_else(|| "imported".into())
    });
    let file = args
        .output
        .as_ref()
        .map_or("MANIFEST".to_string(), |o| o.display().to_string());
    // LLaMA-Factory resolves `model_name_or_path` and `dataset_dir` from the current folder, and so
    // does the manifest when it is written there.
    let imported =
        crate::import::llamafactory(&text, &name, &file, |m| std::path::Path::new(m).exists())
            .map_err(|e| Failure::usage(format_args!("`{}`: {e}", args.config.display())))?;
    match &args.output {
        Some(path) => {
            std::fs::write(path, &imported.manifest)?;
            eprintln!(
                "wrote `{}` ({} keys not mapped: see its comments)",
                path.display(),
                imported.unmapped.len()
            );
        }
        None => print!("{}", imported.manifest),
    }
    Ok(Exit::Ok)
}
