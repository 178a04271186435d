//! `command`: runs a program of the user's with declared inputs, writing its artifact into `$LF_OUT`,
//! sandboxed (see [`crate::sandbox`]).

use std::ffi::OsString;
use std::fs;
use std::io::{Read, Seek, SeekFrom, Write as _};
use std::process::{Command as Process, Stdio};

use anyhow::Context as _;
use lf_engine::{Step, StepContext};
use lf_schemas::kinds::CommandParams;
use lf_schemas::kinds::command::CommandLine;

use crate::sandbox::{self, Confinement, Policy};

/// The `command` step kind.
pub struct Command;

impl Step for Command {
    type Params = CommandParams;
    const KIND: &'static str = "command";
    const VERSION: u32 = 1;
    const ABOUT: &'static str =
        "run a program with declared inputs; it writes its artifact into $LF_OUT";

    fn check(&self, params: &CommandParams) -> Vec<lf_engine::Problem> {
        let empty = match &params.run {
            CommandLine::Shell(s) => s.trim().is_empty(),
            CommandLine::Argv(v) => v.is_empty(),
        };
        if empty {
            return vec![lf_engine::Problem::new(
                lf_schemas::FieldPath::key("run"),
                "the command is empty",
            )];
        }
        Vec::new()
    }

    fn run(&self, params: &CommandParams, cx: &mut StepContext<'_>) -> anyhow::Result<()> {
        let (program, args): (OsString, Vec<OsString>) = match &params.run {
            CommandLine::Shell(line) => ("sh".into(), vec!["-c".into(), line.into()]),
            CommandLine::Argv(argv) => (
                argv[0].clone().into(),
                argv[1..].iter().map(Into::into).collect(),
            ),
        };
        let out = std::path::absolute(cx.out_dir())?;
        let scratch = std::path::absolute(cx.scratch_dir())?;
        let tmp = scratch.join("tmp");
        fs::create_dir_all(&tmp)?;
        let logs = out.join("logs");
        fs::create_dir_all(&logs)?;
        let log_path = logs.join("output.log");
        let mut log = fs::File::create(&log_path)?;

        let policy = Policy {
            writable: vec![out.clone(), scratch.clone()],
            network: params.network,
        };
        let (mut process, confinement) = if params.sandbox {
            sandbox::confine(&program, &args, &policy)?
        } else {
            let mut p = Process::new(&program);
            p.args(&args);
            (
                p,
                Confinement::None("the step says `sandbox: false`".into()),
            )
        };
        writeln!(log, "[lf] {}", confinement.describe(&policy))?;
        process
            .current_dir(cx.manifest_dir())
            .env("LF_OUT", &out)
            .env("LF_SCRATCH", &scratch)
            .env("TMPDIR", &tmp)
            .envs(&params.env)
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log);
        die_with_parent(&mut process);
        for name in params.inputs.keys() {
            let path = cx.input(&format!("inputs.{name}"))?;
            process.env(input_var(name), std::path::absolute(path)?);
        }
        let status = process
            .status()
            .with_context(|| format!("cannot start `{}`", describe(&params.run)))?;
        if !status.success() {
            let tail = tail(&log_path, 2000);
            let hint = if confinement.confined() && denied(&tail) {
                format!(
                    "\nhint: the command ran sandboxed ({}): it may write only to $LF_OUT, $LF_SCRATCH and \
                     $TMPDIR{}; write results into $LF_OUT, or give the step `sandbox: false`",
                    confinement.mechanism(),
                    if params.network {
                        ""
                    } else {
                        ", and has no network unless the step says `network: true`"
                    }
                )
            } else {
                String::new()
            };
            anyhow::bail!(
                "`{}` exited with {status}{}{hint}",
                describe(&params.run),
                if tail.is_empty() {
                    String::new()
                } else {
                    format!("; its last output:\n{tail}")
                }
            );
        }
        Ok(())
    }
}

/// Whether a program's output looks like the sandbox stopped it.
fn denied(output: &str) -> bool {
    [
        "Permission denied",
        "Read-only file system",
        "Network is unreachable",
        "Operation not permitted",
    ]
    .iter()
    .any(|m| output.contains(m))
}

/// Makes the program die when lf does: a killed run must not leave the program writing into the step's
/// scratch folder while the next run resumes from it.
#[cfg(target_os = "linux")]
#[allow(unsafe_code)]
fn die_with_parent(process: &mut Process) {
    use std::os::unix::process::CommandExt;
    let parent = std::process::id() as libc::pid_t;
    // SAFETY: the closure runs between fork and exec; it only calls async-signal-safe functions
    // (prctl, getppid) and allocates nothing.
    unsafe {
        process.pre_exec(move || {
            if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            // lf may have died before prctl took effect.
            if libc::getppid() != parent {
                libc::_exit(137);
            }
            Ok(())
        });
    }
}

#[cfg(not(target_os = "linux"))]
fn die_with_parent(_process: &mut Process) {}

/// `LF_INPUT_<NAME>`: upper-cased, `-` and other non-alphanumerics become `_`.
pub fn input_var(name: &str) -> String {
    let name: String = name
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() {
                c.to_ascii_uppercase()
            } else {
                '_'
            }
        })
        .collect();
    format!("LF_INPUT_{name}")
}

fn describe(run: &CommandLine) -> String {
    let text = match run {
        CommandLine::Shell(s) => s.clone(),
        CommandLine::Argv(v) => v.join(" "),
    };
    match text.lines().next() {
        Some(first) if first.len() < 80 && text.lines().count() == 1 => first.to_string(),
        Some(first) => format!("{}…", first.chars().take(60).collect::<String>()),
        None => String::new(),
    }
}

fn tail(path: &std::path::Path, bytes: u64) -> String {
    let Ok(mut file) = fs::File::open(path) else {
        return String::new();
    };
    let len = file.metadata().map(|m| m.len()).unwrap_or(0);
    let _ = file.seek(SeekFrom::Start(len.saturating_sub(bytes)));
    let mut buf = Vec::new();
    let _ = file.read_to_end(&mut buf);
    String::from_utf8_lossy(&buf).trim_end().to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn input_variables_are_shell_friendly() {
        assert_eq!(input_var("my-data.v2"), "LF_INPUT_MY_DATA_V2");
    }
}
