//! `command`: runs a program of the user's with declared inputs, writing its artifact into `$LF_OUT`.

use std::fs;
use std::io::{Read, Seek, SeekFrom};
use std::process::{Command as Process, Stdio};

use anyhow::Context as _;
use lf_engine::{Step, StepContext};
use lf_schemas::kinds::CommandParams;
use lf_schemas::kinds::command::CommandLine;

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
        let mut process = match &params.run {
            CommandLine::Shell(line) => {
                let mut p = Process::new("sh");
                p.arg("-c").arg(line);
                p
            }
            CommandLine::Argv(argv) => {
                let mut p = Process::new(&argv[0]);
                p.args(&argv[1..]);
                p
            }
        };
        let logs = cx.out_dir().join("logs");
        fs::create_dir_all(&logs)?;
        let log_path = logs.join("output.log");
        let log = fs::File::create(&log_path)?;
        process
            .current_dir(cx.manifest_dir())
            .env("LF_OUT", std::path::absolute(cx.out_dir())?)
            .env("LF_SCRATCH", std::path::absolute(cx.scratch_dir())?)
            .envs(&params.env)
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log);
        die_with_parent(&mut process);
        for (name, target) in &params.inputs {
            let path = cx.input(&format!("inputs.{name}"))?;
            process.env(input_var(name), std::path::absolute(path)?);
            let _ = target;
        }
        let status = process
            .status()
            .with_context(|| format!("cannot start `{}`", describe(&params.run)))?;
        if !status.success() {
            let tail = tail(&log_path, 2000);
            anyhow::bail!(
                "`{}` exited with {status}{}",
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
