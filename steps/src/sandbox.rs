//! The sandbox `command` steps run in: the program may write only to its artifact folder, its scratch
//! folder and a private temp folder, reads everything else read-only, and has no network unless the
//! step asks for it.
//!
//! On Linux the sandbox is Landlock (through the `landlock` crate) where the kernel has it, else
//! bubblewrap (`bwrap`) where it is installed, else none, with a warning. `LF_SANDBOX=landlock` or
//! `LF_SANDBOX=bubblewrap` demands one mechanism (an error where it is missing). Landlock's network
//! rules (kernel 6.7+) cover TCP only; when lf runs with the right to (root outside a container), the
//! program also gets an empty network namespace, which cuts UDP too. Bubblewrap always gives one.

use std::ffi::OsString;
use std::path::PathBuf;
use std::process::Command as Process;

/// What a sandboxed program may do.
#[derive(Debug, Clone)]
pub struct Policy {
    /// Folders it may write to (and create, rename, delete in).
    pub writable: Vec<PathBuf>,
    /// Whether it may use the network.
    pub network: bool,
}

/// How a program was confined, for the step's log and for error hints.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Confinement {
    /// Landlock.
    Landlock {
        /// Whether TCP is blocked by it.
        tcp: bool,
    },
    /// Bubblewrap, with the network cut unless allowed.
    Bubblewrap,
    /// Not confined: the reason.
    None(String),
}

impl Confinement {
    /// One line for the step's log.
    pub fn describe(&self, policy: &Policy) -> String {
        let net = if policy.network {
            "network allowed"
        } else {
            match self {
                Confinement::Landlock { tcp: true } => "no TCP",
                Confinement::Landlock { tcp: false } => {
                    "network NOT restricted (Landlock without network rules: kernel older than 6.7)"
                }
                Confinement::Bubblewrap => "no network",
                Confinement::None(_) => "network NOT restricted",
            }
        };
        match self {
            Confinement::Landlock { .. } => {
                format!("sandbox: Landlock, writes only to $LF_OUT, $LF_SCRATCH and $TMPDIR, {net}")
            }
            Confinement::Bubblewrap => format!(
                "sandbox: bubblewrap, writes only to $LF_OUT, $LF_SCRATCH and $TMPDIR, {net}"
            ),
            Confinement::None(why) => format!("sandbox: none ({why})"),
        }
    }

    /// The mechanism's name.
    pub fn mechanism(&self) -> &'static str {
        match self {
            Confinement::Landlock { .. } => "Landlock",
            Confinement::Bubblewrap => "bubblewrap",
            Confinement::None(_) => "none",
        }
    }

    /// Whether the program was confined at all.
    pub fn confined(&self) -> bool {
        !matches!(self, Confinement::None(_))
    }
}

/// A mechanism a user may demand with `LF_SANDBOX`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Demand {
    Auto,
    Landlock,
    Bubblewrap,
}

fn demand() -> anyhow::Result<Demand> {
    match std::env::var("LF_SANDBOX").ok().as_deref() {
        None | Some("") | Some("auto") => Ok(Demand::Auto),
        Some("landlock") => Ok(Demand::Landlock),
        Some("bubblewrap") | Some("bwrap") => Ok(Demand::Bubblewrap),
        Some(other) => anyhow::bail!(
            "LF_SANDBOX is `{other}`\nhint: use `auto` (the default), `landlock` or `bubblewrap`; \
             to run one step unconfined, give it `sandbox: false`"
        ),
    }
}

/// A program, confined by `policy`: returns the process to spawn (its arguments, working folder and
/// environment still to be set by the caller, on top of what is set here) and how it is confined.
pub fn confine(
    program: &OsString,
    args: &[OsString],
    policy: &Policy,
) -> anyhow::Result<(Process, Confinement)> {
    let demand = demand()?;
    if demand != Demand::Bubblewrap {
        match landlock::prepare(policy)? {
            Some((ruleset, tcp)) => {
                let mut process = Process::new(program);
                process.args(args);
                landlock::install(&mut process, ruleset, policy.network);
                return Ok((process, Confinement::Landlock { tcp }));
            }
            None if demand == Demand::Landlock => anyhow::bail!(
                "LF_SANDBOX=landlock, but this kernel does not enforce Landlock\n\
                 hint: Landlock needs Linux 5.13+ with `landlock` in the `lsm=` boot parameter"
            ),
            None => {}
        }
    }
    if let Ok(bwrap) = which::which("bwrap") {
        let mut process = Process::new(bwrap);
        process
            .args(bubblewrap_args(policy))
            .arg("--")
            .arg(program)
            .args(args);
        return Ok((process, Confinement::Bubblewrap));
    }
    if demand == Demand::Bubblewrap {
        anyhow::bail!(
            "LF_SANDBOX=bubblewrap, but `bwrap` is not on PATH\nhint: install bubblewrap"
        );
    }
    let why = if cfg!(target_os = "linux") {
        "this kernel does not enforce Landlock and bubblewrap is not installed"
    } else {
        "command steps are sandboxed on Linux only"
    };
    tracing::warn!(
        "the command runs UNSANDBOXED: {why}; it can write anywhere you can, and what it writes outside \
         $LF_OUT is not tracked (install bubblewrap, or give the step `sandbox: false` to silence this)"
    );
    let mut process = Process::new(program);
    process.args(args);
    Ok((process, Confinement::None(why.to_string())))
}

/// Bubblewrap's arguments before `--`: the whole file system read-only, fresh `/dev` and `/proc`, the
/// writable folders bound read-write, the network cut unless allowed.
pub fn bubblewrap_args(policy: &Policy) -> Vec<OsString> {
    let mut args: Vec<OsString> = [
        "--die-with-parent",
        "--ro-bind",
        "/",
        "/",
        "--dev",
        "/dev",
        "--proc",
        "/proc",
    ]
    .map(OsString::from)
    .to_vec();
    for dir in &policy.writable {
        args.extend(["--bind".into(), dir.into(), dir.into()]);
    }
    if !policy.network {
        args.push("--unshare-net".into());
    }
    args
}

#[cfg(target_os = "linux")]
mod landlock {
    use std::os::fd::{AsRawFd, OwnedFd};
    use std::process::Command as Process;

    use landlock::{
        ABI, Access, AccessFs, AccessNet, CompatLevel, Compatible, Ruleset, RulesetAttr,
        RulesetCreatedAttr, path_beneath_rules,
    };

    use super::Policy;

    /// Device files any program may write to.
    const DEVICES: [&str; 4] = ["/dev/null", "/dev/zero", "/dev/full", "/dev/tty"];

    /// The ruleset's file descriptor and whether it blocks TCP; `None` where the kernel does not
    /// enforce Landlock.
    pub fn prepare(policy: &Policy) -> anyhow::Result<Option<(OwnedFd, bool)>> {
        let fs = AccessFs::from_all(ABI::V5);
        let base = || Ruleset::default().handle_access(fs);
        // Network rules exist from ABI 4 on; demand them so that we know whether TCP is blocked.
        let (ruleset, tcp) = if policy.network {
            (base()?, false)
        } else {
            match base()?
                .set_compatibility(CompatLevel::HardRequirement)
                .handle_access(AccessNet::from_all(ABI::V4))
            {
                Ok(with_net) => (with_net.set_compatibility(CompatLevel::BestEffort), true),
                Err(_) => (base()?, false),
            }
        };
        let created = ruleset
            .create()?
            .add_rules(path_beneath_rules(["/"], AccessFs::from_read(ABI::V5)))?
            .add_rules(path_beneath_rules(DEVICES, AccessFs::from_file(ABI::V5)))?
            .add_rules(path_beneath_rules(&policy.writable, fs))?;
        let fd: Option<OwnedFd> = created.into();
        Ok(fd.map(|fd| (fd, tcp)))
    }

    /// Makes the child restrict itself with the ruleset just before it runs the program.
    #[allow(unsafe_code)]
    pub fn install(process: &mut Process, ruleset: OwnedFd, network: bool) {
        use std::os::unix::process::CommandExt;
        // SAFETY: the closure runs between fork and exec; it only makes system calls (prctl, geteuid,
        // unshare, landlock_restrict_self) and allocates nothing. The descriptor stays open until the
        // process is spawned because the closure owns it.
        unsafe {
            process.pre_exec(move || {
                if !network && libc::geteuid() == 0 {
                    // An empty network namespace where lf may create one; Landlock covers TCP anyway.
                    let _ = libc::unshare(libc::CLONE_NEWNET);
                }
                if libc::prctl(libc::PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) != 0 {
                    return Err(std::io::Error::last_os_error());
                }
                if libc::syscall(libc::SYS_landlock_restrict_self, ruleset.as_raw_fd(), 0) != 0 {
                    return Err(std::io::Error::last_os_error());
                }
                Ok(())
            });
        }
    }
}

#[cfg(not(target_os = "linux"))]
mod landlock {
    use std::process::Command as Process;

    use super::Policy;

    pub fn prepare(_policy: &Policy) -> anyhow::Result<Option<((), bool)>> {
        Ok(None)
    }

    pub fn install(_process: &mut Process, _ruleset: (), _network: bool) {}
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bubblewrap_binds_only_the_writable_folders_and_cuts_the_network() {
        let policy = Policy {
            writable: vec![
                PathBuf::from("/store/tmp/out"),
                PathBuf::from("/store/tmp/scratch"),
            ],
            network: false,
        };
        let args: Vec<String> = bubblewrap_args(&policy)
            .iter()
            .map(|a| a.to_string_lossy().into_owned())
            .collect();
        let text = args.join(" ");
        assert!(text.contains("--ro-bind / /"), "{text}");
        assert!(
            text.contains("--bind /store/tmp/out /store/tmp/out"),
            "{text}"
        );
        assert!(
            text.contains("--bind /store/tmp/scratch /store/tmp/scratch"),
            "{text}"
        );
        assert!(text.contains("--unshare-net"), "{text}");
        // Writable binds come after the read-only root, or they would be covered by it.
        let root = args.iter().position(|a| a == "--ro-bind").unwrap();
        let bind = args.iter().position(|a| a == "--bind").unwrap();
        assert!(root < bind);

        let open = bubblewrap_args(&Policy {
            network: true,
            ..policy
        });
        assert!(!open.iter().any(|a| a == "--unshare-net"));
    }

    #[test]
    fn the_log_line_says_what_is_not_restricted() {
        let policy = Policy {
            writable: Vec::new(),
            network: false,
        };
        assert!(
            Confinement::Landlock { tcp: false }
                .describe(&policy)
                .contains("NOT restricted")
        );
        assert!(
            Confinement::Landlock { tcp: true }
                .describe(&policy)
                .contains("no TCP")
        );
        assert!(!Confinement::None("x".into()).confined());
    }
}
