//! `lf serve`: serves a model given as a path or as a step of a pipeline behind an OpenAI-compatible
//! HTTP API (the server itself is an extension: the engine knows nothing of models).

use std::path::PathBuf;

use clap::Args;
use lf_schemas::{Device, Dtype};

use super::exit::{self, Exit, Failure};
use super::{App, Cli};

/// Arguments of `lf serve`.
#[derive(Args, Clone, Debug)]
pub struct ServeArgs {
    /// A model folder or GGUF file, or the name of a step of `--file`'s pipeline.
    #[arg(long)]
    pub model: String,
    /// The pipeline whose step `--model` names (default: the embedded quickstart).
    #[arg(long, short = 'f')]
    pub file: Option<PathBuf>,
    /// Address to bind. The default is loopback; any other address needs an API key.
    #[arg(long, default_value = "127.0.0.1")]
    pub host: String,
    /// Port to bind (0: any free port, printed at start).
    #[arg(long, default_value_t = 8000)]
    pub port: u16,
    /// Every `/v1` request must carry `Authorization: Bearer KEY`.
    #[arg(long, env = "LF_API_KEY", hide_env_values = true)]
    pub api_key: Option<String>,
    /// The model id clients name (default: the model's folder or step name).
    #[arg(long)]
    pub served_model_name: Option<String>,
    /// Requests waiting for the model beyond the one it is answering; more get 429.
    #[arg(long, default_value_t = 16)]
    pub max_queue: usize,
    /// The largest `max_tokens` a request may ask for (and the default when it asks for none).
    #[arg(long, default_value_t = 512)]
    pub max_tokens: usize,
    /// Device.
    #[arg(long, value_enum, default_value_t = Device::Auto)]
    pub device: Device,
}

/// The secret a server started by `lf` is guarded with, as its messages name it.
pub(super) struct Secret {
    /// "API key".
    pub name: &'static str,
    /// "an" or "a".
    pub article: &'static str,
    /// "--api-key".
    pub flag: &'static str,
    /// "KEY".
    pub metavar: &'static str,
    /// "LF_API_KEY".
    pub env: &'static str,
    /// What binding elsewhere exposes: "the server".
    pub exposes: &'static str,
}

impl Secret {
    /// Refuses an empty secret, and a non-loopback `host` without one.
    pub(super) fn check(&self, host: &str, value: Option<&str>) -> Result<(), Failure> {
        let Secret {
            name,
            article,
            flag,
            metavar,
            env,
            exposes,
        } = self;
        if value.is_some_and(|k| k.trim().is_empty()) {
            return Err(Failure::usage(format_args!(
                "the {name} is empty\nhint: pass a non-empty `{flag}` (or {env})"
            )));
        }
        if value.is_none() && !is_loopback(host) {
            return Err(Failure::usage(format_args!(
                "`--host {host}` exposes {exposes} beyond this machine without {article} {name}\nhint: pass `{flag} {metavar}` (or set {env}), or bind 127.0.0.1"
            )));
        }
        Ok(())
    }
}

/// `lf serve`.
pub(super) fn serve(app: &App, cli: &Cli, args: &ServeArgs) -> exit::Result {
    Secret {
        name: "API key",
        article: "an",
        flag: "--api-key",
        metavar: "KEY",
        env: "LF_API_KEY",
        exposes: "the server",
    }
    .check(&args.host, args.api_key.as_deref())?;
    let model = super::chat::resolve_model(app, cli, &args.model, args.file.as_deref())?;
    let numerics = app
        .extensions
        .backends()
        .resolve(args.device, Dtype::Auto)
        .map_err(Failure::usage)?;
    app.extensions.serve(&model, args, &numerics)?;
    Ok(Exit::Ok)
}

/// Whether `host` names this machine only.
fn is_loopback(host: &str) -> bool {
    host == "localhost"
        || host
            .parse::<std::net::IpAddr>()
            .is_ok_and(|ip| ip.is_loopback())
}

#[cfg(test)]
mod tests {
    use super::is_loopback;

    #[test]
    fn loopback_hosts_are_recognised() {
        for h in ["127.0.0.1", "::1", "localhost", "127.0.0.2"] {
            assert!(is_loopback(h), "{h}");
        }
        for h in ["0.0.0.0", "::", "192.168.1.10", "example.org"] {
            assert!(!is_loopback(h), "{h}");
        }
    }
}
