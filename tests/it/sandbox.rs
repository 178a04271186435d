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

/// `lf run p.yaml --json` in `p` with `LF_SANDBOX=mechanism`, one step at a time; `None` (saying so)
/// when this machine lacks the mechanism.
fn run_under(p: &Project, mechanism: &str) -> Option<Run> {
    let run = p.lf_env(
        &["run", "p.yaml", "--json", "--jobs", "1"],
        &[("LF_SANDBOX", mechanism)],
    );
    if run.stdout.contains("does not enforce Landlock")
        || run.stdout.contains("`bwrap` is not on PATH")
    {
        eprintln!("skipped: this machine has no {mechanism}: {}", run.stdout);
        return None;
    }
    Some(run)
}

/// Runs the manifest with `LF_SANDBOX=mechanism`, while a listener on loopback collects what reaches it.
/// `None` when this machine lacks the mechanism.
fn run_with(mechanism: &str) -> Option<(Project, Run, String)> {
    let p = Project::new();
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    listener.set_nonblocking(true).unwrap();
    let port = listener.local_addr().unwrap().port();
    p.write("p.yaml", &manifest(port));
    let run = run_under(&p, mechanism)?;
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
    let run = p.lf_env(&["run", "p.yaml"], &[("LF_SANDBOX", "chroot")]);
    let text = run.stdout + &run.stderr;
    assert_eq!(run.code, 1, "{text}");
    assert!(text.contains("LF_SANDBOX is `chroot`"), "{text}");
    assert!(text.contains("`sandbox: false`"), "{text}");
    // A step that opts out does not look at LF_SANDBOX at all.
    p.write("q.yaml", "name: q\nsteps:\n  a:\n    kind: command\n    sandbox: false\n    run: echo > \"$LF_OUT/a\"\n");
    let run = p.lf_env(&["run", "q.yaml"], &[("LF_SANDBOX", "chroot")]);
    assert_eq!(run.code, 0, "{}", run.stdout);
}

/// Ways out a program might try. Each is a step of its own; every one must fail, leaving the files
/// beside the manifest as they were.
const ESCAPES: &[(&str, &str)] = &[
    ("beside", r#"echo x > escaped.txt"#),
    ("climb-out", r#"echo x > "$LF_OUT/../escaped.txt""#),
    (
        "climb-scratch",
        r#"echo x > "$LF_SCRATCH/../../escaped.txt""#,
    ),
    ("proc-cwd", r#"echo x > /proc/self/cwd/escaped.txt"#),
    ("append", r#"echo x >> victim.txt"#),
    ("truncate", r#": > victim.txt"#),
    ("remove", r#"rm -f victim.txt"#),
    ("rename-in", r#"mv victim.txt "$LF_OUT/stolen.txt""#),
    (
        "rename-out",
        r#"echo x > "$LF_OUT/f" && mv "$LF_OUT/f" escaped.txt"#,
    ),
    ("mkdir", r#"mkdir escaped-dir"#),
    (
        "symlink",
        r#"ln -s "$PWD" "$LF_OUT/up" && echo x > "$LF_OUT/up/escaped.txt""#,
    ),
    (
        "hardlink",
        r#"ln victim.txt "$LF_OUT/v" && echo x >> "$LF_OUT/v""#,
    ),
    ("tmp", r#"echo x > "/tmp/lf-sandbox-escape-${PWD##*/}.txt""#),
    (
        "home",
        r#"echo x > "$HOME/lf-sandbox-escape-${PWD##*/}.txt""#,
    ),
];

/// Runs every escape as a step, with `LF_SANDBOX=mechanism` (or unconfined with `sandbox: false`).
fn attempt(mechanism: &str, sandbox: bool) -> Option<(Project, Run)> {
    let p = Project::new();
    p.write("victim.txt", "original\n");
    let mut manifest = String::from("name: esc\nsteps:\n");
    for (name, run) in ESCAPES {
        manifest.push_str(&format!(
            "  {name}:\n    kind: command\n    sandbox: {sandbox}\n    run: '{run}'\n"
        ));
    }
    p.write("p.yaml", &manifest);
    let run = run_under(&p, mechanism)?;
    Some((p, run))
}

/// Files an escape may have left outside the project (named after it, so that tests running at the
/// same time, the unconfined control among them, do not see each other's).
fn outside_files(p: &Project) -> [std::path::PathBuf; 2] {
    let name = p.path().file_name().unwrap().to_string_lossy().into_owned();
    let home = std::env::var_os("HOME").unwrap_or_else(|| "/nonexistent".into());
    [
        std::path::Path::new("/tmp").join(format!("lf-sandbox-escape-{name}.txt")),
        std::path::Path::new(&home).join(format!("lf-sandbox-escape-{name}.txt")),
    ]
}

fn escapes(mechanism: &str) {
    let Some((p, run)) = attempt(mechanism, true) else {
        return;
    };
    for (name, _) in ESCAPES {
        assert_eq!(
            run.status_of(name),
            "failed",
            "`{name}` got out under {mechanism}"
        );
    }
    assert_eq!(p.read("victim.txt"), "original\n");
    let beside: Vec<String> = std::fs::read_dir(p.path())
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.contains("escape"))
        .collect();
    assert!(beside.is_empty(), "written beside the manifest: {beside:?}");
    for file in outside_files(&p) {
        assert!(!file.exists(), "written: {}", file.display());
    }
    eprintln!(
        "{mechanism}: {} escape attempts, all refused",
        ESCAPES.len()
    );
}

#[test]
fn landlock_refuses_every_escape() {
    escapes("landlock");
}

#[test]
fn bubblewrap_refuses_every_escape() {
    escapes("bubblewrap");
}

/// The control: unconfined, each escape works, so the tests above fail for the sandbox's reasons.
#[test]
fn every_escape_works_without_the_sandbox() {
    let (p, run) = attempt("auto", false).expect("unconfined needs no mechanism");
    let escaped: Vec<&str> = ESCAPES
        .iter()
        .map(|(name, _)| *name)
        .filter(|name| run.status_of(name) == "ran")
        .collect();
    for file in outside_files(&p) {
        let _ = std::fs::remove_file(file);
    }
    // `append`, `truncate`, `remove` and `rename-in` each change the victim; run one after another they
    // all succeed, whichever order they ran in.
    let all: Vec<&str> = ESCAPES.iter().map(|(name, _)| *name).collect();
    let failed: Vec<&&str> = all.iter().filter(|n| !escaped.contains(n)).collect();
    assert!(
        failed
            .iter()
            .all(|n| ["append", "truncate", "rename-in", "hardlink"].contains(n)),
        "unconfined, these failed: {failed:?}\n{}",
        run.stdout
    );
    assert!(escaped.len() >= ESCAPES.len() - 4, "{escaped:?}");
}
