//! `command` steps run sandboxed: writes only into their own folders, no network unless asked, and
//! `sandbox: false` as the way out. Each mechanism this machine has (Landlock, bubblewrap) is tried;
//! one it lacks is skipped, saying so.

use std::io::Read;
use std::net::TcpListener;
use std::time::{Duration, Instant};

use crate::common::{Project, Run};

/// The manifest: `inside` writes where it may, `escape` next to the manifest, `climb` above it, `net`
/// connects to `port`, `allowed` does so with `network: true`, `free` escapes with `sandbox: false`.
fn manifest(port: u16) -> String {
    format!(
        r#"name: sb
steps:
  inside:
    kind: command
    run: echo out > "$LF_OUT/a"; echo tmp > "$TMPDIR/t"; cat "$TMPDIR/t" >> "$LF_OUT/a"; echo s > "$LF_SCRATCH/s"; echo q > /dev/null
  escape:
    kind: command
    run: echo x > escaped.txt
  climb:
    kind: command
    run: echo x > "$LF_OUT/../../climbed.txt"
  net:
    kind: command
    run: ["bash", "-c", "echo denied > /dev/tcp/127.0.0.1/{port}"]
  allowed:
    kind: command
    network: true
    run: ["bash", "-c", "echo allowed > /dev/tcp/127.0.0.1/{port}"]
  free:
    kind: command
    sandbox: false
    run: echo x > free.txt
"#
    )
}

/// Runs the manifest with `LF_SANDBOX=mechanism`, while a listener on loopback collects what reaches it.
/// `None` when this machine lacks the mechanism.
fn run_with(mechanism: &str) -> Option<(Project, Run, String)> {
    let p = Project::new();
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    listener.set_nonblocking(true).unwrap();
    let port = listener.local_addr().unwrap().port();
    p.write("p.yaml", &manifest(port));
    let mut cmd = p.command(&["run", "p.yaml", "--json", "--jobs", "1"]);
    cmd.env("LF_SANDBOX", mechanism);
    let out = cmd.output().unwrap();
    let run = Run {
        code: out.status.code().unwrap_or(-1),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    };
    if run.stdout.contains("does not enforce Landlock")
        || run.stdout.contains("`bwrap` is not on PATH")
    {
        eprintln!("skipped: this machine has no {mechanism}: {}", run.stdout);
        return None;
    }
    let mut received = String::new();
    let deadline = Instant::now() + Duration::from_secs(2);
    while Instant::now() < deadline {
        match listener.accept() {
            Ok((mut s, _)) => {
                s.set_nonblocking(false).unwrap();
                s.set_read_timeout(Some(Duration::from_secs(2))).unwrap();
                let _ = s.read_to_string(&mut received);
            }
            Err(_) if !received.is_empty() => break,
            Err(_) => std::thread::sleep(Duration::from_millis(20)),
        }
    }
    Some((p, run, received))
}

fn check(mechanism: &str) {
    let Some((p, run, received)) = run_with(mechanism) else {
        return;
    };
    assert_eq!(run.code, 1, "{}\n{}", run.stdout, run.stderr);
    for (step, status) in [
        ("inside", "ran"),
        ("escape", "failed"),
        ("climb", "failed"),
        ("net", "failed"),
        ("allowed", "ran"),
        ("free", "ran"),
    ] {
        assert_eq!(
            run.status_of(step),
            status,
            "{step} under {mechanism}: {}",
            run.stdout
        );
    }
    assert_eq!(p.read("runs/sb/inside/a"), "out\ntmp\n");
    assert!(
        p.read("runs/sb/inside/logs/output.log")
            .starts_with("[lf] sandbox: ")
    );
    assert!(
        !p.path().join("escaped.txt").exists(),
        "a sandboxed write escaped"
    );
    assert!(
        !p.path().join(".lf/climbed.txt").exists()
            && !p.path().join(".lf/tmp/climbed.txt").exists(),
        "a sandboxed write climbed out of $LF_OUT"
    );
    assert!(
        p.path().join("free.txt").exists(),
        "`sandbox: false` did not opt out"
    );
    assert_eq!(
        received.trim(),
        "allowed",
        "only the step with `network: true` may connect"
    );
    assert!(
        run.stdout.contains("hint: the command ran sandboxed"),
        "a refused write names the sandbox: {}",
        run.stdout
    );

    // What the sandbox allowed is cached like anything else; the refused steps are tried again.
    let again = p.lf(&["run", "p.yaml", "--json"]);
    assert_eq!(again.status_of("inside"), "cached");
}

#[test]
fn landlock_confines_command_steps() {
    check("landlock");
}

#[test]
fn bubblewrap_confines_command_steps() {
    check("bubblewrap");
}

#[test]
fn an_unknown_sandbox_demand_is_a_clear_error() {
    let p = Project::new();
    p.write(
        "p.yaml",
        "name: s\nsteps:\n  a:\n    kind: command\n    run: echo > \"$LF_OUT/a\"\n",
    );
    let mut cmd = p.command(&["run", "p.yaml"]);
    cmd.env("LF_SANDBOX", "chroot");
    let out = cmd.output().unwrap();
    let text =
        String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{text}");
    assert!(text.contains("LF_SANDBOX is `chroot`"), "{text}");
    assert!(text.contains("`sandbox: false`"), "{text}");
    // A step that opts out does not look at LF_SANDBOX at all.
    p.write("q.yaml", "name: q\nsteps:\n  a:\n    kind: command\n    sandbox: false\n    run: echo > \"$LF_OUT/a\"\n");
    let mut cmd = p.command(&["run", "q.yaml"]);
    cmd.env("LF_SANDBOX", "chroot");
    let out = cmd.output().unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );
}
