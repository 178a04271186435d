//! Caching, invalidation, kills, concurrency and lockfiles, driven through the `lf` binary with `command`
//! steps (programs whose side effects count how often they ran).

use crate::common::{Project, ok};

/// A three-step chain `a → b → c` plus an independent `d`; each step appends its name to `ran.log` (beside the
/// manifest, so `sandbox: false`) so a
/// test can count executions.
fn chain(p: &Project, a_text: &str, c_flag: &str) {
    p.write(
        "p.yaml",
        &format!(
            r#"name: chain
vars:
  greeting: {a_text}
steps:
  a:
    kind: command
    sandbox: false
    run: echo a >> ran.log; echo "{{{{ vars.greeting }}}}" > "$LF_OUT/a.txt"
  b:
    kind: command
    sandbox: false
    run: echo b >> ran.log; tr a-z A-Z < "$LF_INPUT_A/a.txt" > "$LF_OUT/b.txt"
    inputs: {{a: a}}
  c:
    kind: command
    sandbox: false
    run: echo c >> ran.log; cat "$LF_INPUT_B/b.txt" > "$LF_OUT/c.txt"; echo {c_flag} >> "$LF_OUT/c.txt"
    inputs: {{b: b}}
  d:
    kind: command
    sandbox: false
    run: echo d >> ran.log; echo independent > "$LF_OUT/d.txt"
"#
        ),
    );
}

fn ran(p: &Project) -> Vec<String> {
    let log = p.read("ran.log");
    std::fs::remove_file(p.path().join("ran.log")).ok();
    let mut v: Vec<String> = log.lines().map(str::to_string).collect();
    v.sort();
    v
}

#[test]
fn hit_skips_execution() {
    let p = Project::new();
    chain(&p, "hello", "x");
    let first = p.lf(&["run", "p.yaml", "--json"]);
    ok(&first);
    assert_eq!(ran(&p), ["a", "b", "c", "d"]);
    assert!(first.statuses().iter().all(|(_, s)| s == "ran"));
    let second = p.lf(&["run", "p.yaml", "--json"]);
    ok(&second);
    assert!(ran(&p).is_empty(), "a cached run executed steps");
    assert!(second.statuses().iter().all(|(_, s)| s == "cached"));
    assert_eq!(
        std::fs::read_to_string(p.path().join("runs/chain/c/c.txt")).unwrap(),
        "HELLO\nx\n"
    );
}

#[test]
fn param_change_invalidates_downstream_only() {
    let p = Project::new();
    chain(&p, "hello", "x");
    ok(&p.lf(&["run", "p.yaml"]));
    ran(&p);
    // Changing c's command re-runs c only.
    chain(&p, "hello", "y");
    let plan = p.lf(&["plan", "p.yaml"]);
    ok(&plan);
    assert!(plan.stdout.contains("run      c"), "{}", plan.stdout);
    assert!(
        plan.stdout.contains("parameter `run` changed"),
        "{}",
        plan.stdout
    );
    ok(&p.lf(&["run", "p.yaml"]));
    assert_eq!(ran(&p), ["c"]);
    // Changing a variable used by a re-runs a and everything downstream of it, not d.
    ok(&p.lf(&["run", "p.yaml", "--var", "greeting=bye"]));
    assert_eq!(ran(&p), ["a", "b", "c"]);
}

#[test]
fn same_output_upstream_does_not_rerun_downstream() {
    let p = Project::new();
    chain(&p, "hello", "x");
    ok(&p.lf(&["run", "p.yaml"]));
    ran(&p);
    // `a` now writes the same bytes with a different command: b and c are still cached (early cutoff).
    let text = p.read("p.yaml").replace(
        r#"echo "{{ vars.greeting }}" > "$LF_OUT/a.txt""#,
        r#"printf '%s\n' "{{ vars.greeting }}" > "$LF_OUT/a.txt""#,
    );
    p.write("p.yaml", &text);
    let run = p.lf(&["run", "p.yaml", "--json"]);
    ok(&run);
    assert_eq!(ran(&p), ["a"]);
    assert_eq!(run.status_of("b"), "cached");
}

#[test]
fn input_content_change_invalidates() {
    let p = Project::new();
    p.write("data/rows.txt", "one\n");
    p.write(
        "p.yaml",
        "name: files\nsteps:\n  count:\n    kind: command\n    sandbox: false\n    run: echo run >> ran.log; wc -l < \"$LF_INPUT_DATA\" > \"$LF_OUT/n\"\n    inputs: {data: data/rows.txt}\n",
    );
    ok(&p.lf(&["run", "p.yaml"]));
    ok(&p.lf(&["run", "p.yaml"]));
    assert_eq!(ran(&p), ["run"]);
    // Same path, same size, new bytes.
    p.write("data/rows.txt", "two\n");
    let plan = p.lf(&["plan", "p.yaml"]);
    assert!(plan.stdout.contains("input file"), "{}", plan.stdout);
    ok(&p.lf(&["run", "p.yaml"]));
    assert_eq!(ran(&p), ["run"]);
}

#[test]
fn failed_step_stops_its_dependents_only() {
    let p = Project::new();
    p.write(
        "p.yaml",
        r#"name: fails
steps:
  bad:
    kind: command
    run: echo oops >&2; exit 3
  after-bad:
    kind: command
    run: echo x > "$LF_OUT/x"
    inputs: {b: bad}
  fine:
    kind: command
    run: echo ok > "$LF_OUT/ok"
"#,
    );
    let run = p.lf(&["run", "p.yaml", "--json"]);
    assert_eq!(run.code, 1, "{}", run.stderr);
    assert_eq!(run.status_of("bad"), "failed");
    assert_eq!(run.status_of("after-bad"), "skipped");
    assert_eq!(run.status_of("fine"), "ran");
    assert!(
        run.stderr.contains("oops"),
        "the failure shows the command's output:\n{}",
        run.stderr
    );
    assert!(run.stderr.contains("FAILED"), "{}", run.stderr);
    // Nothing of the failed step reached the store or the runs folder.
    assert!(!p.path().join("runs/fails/bad").exists());
    assert!(p.path().join("runs/fails/fine/ok").exists());
}

#[test]
fn force_only_and_dry_run() {
    let p = Project::new();
    chain(&p, "hello", "x");
    let dry = p.lf(&["run", "p.yaml", "--dry-run"]);
    ok(&dry);
    assert!(ran(&p).is_empty(), "--dry-run executed something");
    assert!(dry.stdout.contains("new"), "{}", dry.stdout);

    ok(&p.lf(&["run", "p.yaml", "--only", "b"]));
    assert_eq!(ran(&p), ["a", "b"]);

    let forced = p.lf(&["run", "p.yaml", "--force", "a", "--json"]);
    ok(&forced);
    assert_eq!(forced.status_of("a"), "ran");
    // a reproduced the same output, so b stays cached; c and d run for the first time.
    assert_eq!(forced.status_of("b"), "cached");
    assert_eq!(ran(&p), ["a", "c", "d"]);

    // A step name on the command line that the manifest lacks is a usage error, like in `lf preview`.
    for command in ["run", "plan"] {
        let unknown = p.lf(&[command, "p.yaml", "--force", "nope"]);
        assert_eq!(unknown.code, 2, "{command} --force: {}", unknown.stderr);
    }
    let unknown = p.lf(&["run", "p.yaml", "--only", "nope"]);
    assert_eq!(unknown.code, 2);
    assert!(
        unknown.stderr.contains("no step is named `nope`"),
        "{}",
        unknown.stderr
    );
}

#[test]
fn locked_fails_on_drift_and_passes_when_reproduced() {
    let p = Project::new();
    chain(&p, "hello", "x");
    ok(&p.lf(&["run", "p.yaml"]));
    // A fresh store reproduces everything exactly: --locked passes.
    std::fs::remove_dir_all(p.path().join(".lf")).unwrap();
    ok(&p.lf(&["run", "p.yaml", "--locked"]));
    // A changed parameter is drift.
    chain(&p, "hello", "y");
    let drift = p.lf(&["run", "p.yaml", "--locked"]);
    assert_eq!(drift.code, 1);
    assert!(drift.stderr.contains("step `c`"), "{}", drift.stderr);
    assert!(
        drift.stderr.contains("parameter `run` changed"),
        "{}",
        drift.stderr
    );
    // A non-reproducible output is drift too.
    chain(&p, "hello", "x");
    let text = p.read("p.yaml").replace("echo independent", "date +%N");
    p.write("p.yaml", &text);
    ok(&p.lf(&["run", "p.yaml"]));
    std::fs::remove_dir_all(p.path().join(".lf")).unwrap();
    let nondeterministic = p.lf(&["run", "p.yaml", "--locked"]);
    assert_eq!(nondeterministic.code, 1, "{}", nondeterministic.stderr);
    assert!(
        nondeterministic
            .stderr
            .contains("output differs from the lockfile"),
        "{}",
        nondeterministic.stderr
    );
}

#[test]
fn concurrent_runs_execute_each_step_once() {
    let p = Project::new();
    p.write(
        "p.yaml",
        r#"name: together
steps:
  slow:
    kind: command
    sandbox: false
    run: echo slow >> ran.log; sleep 1; echo done > "$LF_OUT/x"
  after:
    kind: command
    sandbox: false
    run: echo after >> ran.log; cat "$LF_INPUT_S/x" > "$LF_OUT/y"
    inputs: {s: slow}
"#,
    );
    let a = p.spawn(&["run", "p.yaml"]);
    let b = p.spawn(&["run", "p.yaml"]);
    let (a, b) = (a.wait_with_output().unwrap(), b.wait_with_output().unwrap());
    assert!(a.status.success(), "{}", String::from_utf8_lossy(&a.stderr));
    assert!(b.status.success(), "{}", String::from_utf8_lossy(&b.stderr));
    assert_eq!(ran(&p), ["after", "slow"]);
}

#[test]
fn killed_run_resumes_with_identical_outputs() {
    // A step that counts to 8 slowly, checkpointing in $LF_SCRATCH: killed, it resumes where it stopped.
    // It runs sandboxed; it notes each resumption in its logs (not part of the artifact's hash).
    let manifest = r#"name: resumable
steps:
  count:
    kind: command
    run: |
      n=$(cat "$LF_SCRATCH/n" 2>/dev/null || echo 0)
      [ "$n" -gt 0 ] && echo resumed-at-$n >> "$LF_SCRATCH/resumed.log"
      while [ "$n" -lt 8 ]; do
        n=$((n + 1)); echo "line $n" >> "$LF_SCRATCH/out"; echo $n > "$LF_SCRATCH/n"; sleep 0.1
      done
      cp "$LF_SCRATCH/out" "$LF_OUT/out.txt"
      cp "$LF_SCRATCH/resumed.log" "$LF_OUT/logs/" 2>/dev/null || true
  after:
    kind: command
    run: sort -r "$LF_INPUT_C/out.txt" > "$LF_OUT/sorted.txt"
    inputs: {c: count}
"#;
    let reference = Project::new();
    reference.write("p.yaml", manifest);
    ok(&reference.lf(&["run", "p.yaml"]));
    let expected = reference.outputs("p.yaml");

    // Kill at several points (deterministic pseudo-random delays), then finish.
    let mut seed = 0x2545_F491_4F6C_DD1Du64;
    let mut resumed_once = false;
    for _ in 0..3 {
        let p = Project::new();
        p.write("p.yaml", manifest);
        for _ in 0..2 {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            let delay = 150 + seed % 600;
            let mut child = p.spawn(&["run", "p.yaml"]);
            std::thread::sleep(std::time::Duration::from_millis(delay));
            child.kill().unwrap(); // SIGKILL
            child.wait().unwrap();
            // Let orphaned shell commands of the killed run finish their current iteration.
            std::thread::sleep(std::time::Duration::from_millis(150));
        }
        ok(&p.lf(&["run", "p.yaml"]));
        assert_eq!(p.outputs("p.yaml"), expected);
        resumed_once |= !p.read("runs/resumable/count/logs/resumed.log").is_empty();
        // The next run removed the staging folders the killed ones left.
        let staging: Vec<_> = std::fs::read_dir(p.path().join(".lf/tmp"))
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert!(staging.is_empty(), "left in .lf/tmp: {staging:?}");
        let verify = p.lf(&["cache", "verify"]);
        ok(&verify);
        assert!(verify.stderr.contains("0 corrupted"), "{}", verify.stderr);
    }
    assert!(resumed_once, "no run resumed from its checkpoint");
}

#[test]
fn a_damaged_cached_artifact_is_rebuilt_not_used() {
    let p = Project::new();
    chain(&p, "hello", "x");
    ok(&p.lf(&["run", "p.yaml"]));
    ran(&p);
    // Edit `b`'s artifact in place, as root or an editor can despite the read-only bits.
    let link = std::fs::read_link(p.path().join("runs/chain/b")).unwrap();
    let file = link.join("b.txt");
    for path in [&link, &file] {
        let mut perms = std::fs::metadata(path).unwrap().permissions();
        #[allow(clippy::permissions_set_readonly_false)]
        perms.set_readonly(false);
        std::fs::set_permissions(path, perms).unwrap();
    }
    std::fs::write(&file, "DAMAGED\n").unwrap();
    // What does not rebuild (chat reads a step's artifact directly) stops, naming it and the way out.
    let chat = p.lf(&["chat", "-f", "p.yaml", "--model", "b", "--prompt", "hi"]);
    assert_eq!(chat.code, 1, "{}", chat.stderr);
    for part in [
        "the artifact of step `b`",
        "is damaged",
        "lf cache verify --repair",
    ] {
        assert!(chat.stderr.contains(part), "{part}: {}", chat.stderr);
    }
    let plan = p.lf(&["plan", "p.yaml", "--json"]);
    ok(&plan);
    let b = plan.json()["steps"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["name"] == "b")
        .cloned()
        .unwrap();
    assert_eq!(b["status"], "run", "{b}");
    assert_eq!(b["reasons"][0], "its artifact was damaged", "{b}");
    // `b` runs again and reproduces its bytes, so `c` (which reads them) stays cached.
    let run = p.lf(&["run", "p.yaml", "--json"]);
    ok(&run);
    assert_eq!(ran(&p), ["b"]);
    assert_eq!(std::fs::read_to_string(&file).unwrap(), "HELLO\n");
    let verify = p.lf(&["cache", "verify"]);
    ok(&verify);
    assert!(verify.stderr.contains("0 corrupted"), "{}", verify.stderr);
}

#[test]
fn cache_ls_verify_and_gc() {
    let p = Project::new();
    chain(&p, "hello", "x");
    ok(&p.lf(&["run", "p.yaml"]));
    chain(&p, "hello", "y");
    ok(&p.lf(&["run", "p.yaml"]));
    let ls = p.lf(&["cache", "ls"]);
    ok(&ls);
    assert!(ls.stdout.contains("5 keys"), "{}", ls.stdout);

    // Corrupt an artifact: verify finds it; --repair removes it and the step runs again.
    let link = std::fs::read_link(p.path().join("runs/chain/d")).unwrap();
    let file = link.join("d.txt");
    let mut perms = std::fs::metadata(&link).unwrap().permissions();
    #[allow(clippy::permissions_set_readonly_false)]
    perms.set_readonly(false);
    std::fs::set_permissions(&link, perms.clone()).unwrap();
    std::fs::set_permissions(&file, perms).unwrap();
    std::fs::write(&file, "tampered\n").unwrap();
    let verify = p.lf(&["cache", "verify"]);
    assert_eq!(verify.code, 1);
    assert!(verify.stdout.contains("corrupted"), "{}", verify.stdout);
    ok(&p.lf(&["cache", "verify", "--repair"]));
    ran(&p);
    ok(&p.lf(&["run", "p.yaml"]));
    assert_eq!(ran(&p), ["d"]);

    // gc keeps what the lockfile and the kept runs reference: with no kept runs, the old `c` goes.
    let dry = p.lf(&["cache", "gc", "--keep-runs", "0", "--dry-run"]);
    ok(&dry);
    assert!(dry.stdout.contains("would remove"), "{}", dry.stdout);
    let gc = p.lf(&["cache", "gc", "--keep-runs", "0"]);
    ok(&gc);
    assert!(gc.stderr.contains("removed 1 artifacts"), "{}", gc.stderr);
    let run = p.lf(&["run", "p.yaml", "--json"]);
    ok(&run);
    assert!(run.statuses().iter().all(|(_, s)| s == "cached"));
}

/// Seeded random damage to cached artifacts (a flipped byte, a truncation, an append, a deleted file,
/// same-size content with the old mtime put back, a mode change): content damage always re-runs the
/// step and restores the bytes; a mode change alone stays cached.
#[test]
fn random_store_damage_is_always_rebuilt() {
    use std::os::unix::fs::PermissionsExt;
    let p = Project::new();
    chain(&p, "hello", "x");
    ok(&p.lf(&["run", "p.yaml"]));
    ran(&p);
    let steps = ["a", "b", "c", "d"];
    let file_of = |s: &str| {
        std::fs::read_link(p.path().join(format!("runs/chain/{s}")))
            .unwrap()
            .join(format!("{s}.txt"))
    };
    let original: Vec<Vec<u8>> = steps
        .iter()
        .map(|s| std::fs::read(file_of(s)).unwrap())
        .collect();
    let mut state = 0x2545_f491_4f6c_dd1du64;
    let mut next = move |n: u64| {
        state ^= state >> 12;
        state ^= state << 25;
        state ^= state >> 27;
        state.wrapping_mul(0x9e37_79b9_7f4a_7c15) % n
    };
    const DAMAGES: [&str; 6] = ["flip", "truncate", "append", "delete", "same-size", "chmod"];
    const CASES: usize = 18;
    let mut counts = [0usize; DAMAGES.len()];
    for case in 0..CASES {
        let which = next(steps.len() as u64) as usize;
        let damage = if case < DAMAGES.len() {
            case
        } else {
            next(DAMAGES.len() as u64) as usize
        };
        counts[damage] += 1;
        let file = file_of(steps[which]);
        let dir = file.parent().unwrap().to_path_buf();
        // Writable again, as root or an editor can make it; the executable bit is content, so kept off.
        std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o755)).unwrap();
        std::fs::set_permissions(&file, std::fs::Permissions::from_mode(0o644)).unwrap();
        let bytes = original[which].clone();
        match DAMAGES[damage] {
            "flip" => {
                let mut b = bytes.clone();
                let at = next(b.len() as u64) as usize;
                b[at] ^= 1 << next(8);
                std::fs::write(&file, b).unwrap();
            }
            "truncate" => {
                std::fs::write(&file, &bytes[..next(bytes.len() as u64) as usize]).unwrap()
            }
            "append" => std::fs::write(&file, [bytes.as_slice(), b"!"].concat()).unwrap(),
            "delete" => std::fs::remove_file(&file).unwrap(),
            "same-size" => {
                let mtime = std::fs::metadata(&file).unwrap().modified().unwrap();
                let swapped: Vec<u8> = bytes
                    .iter()
                    .map(|b| if *b == b'\n' { b'\n' } else { b'Z' })
                    .collect();
                std::fs::write(&file, swapped).unwrap();
                std::fs::File::options()
                    .write(true)
                    .open(&file)
                    .unwrap()
                    .set_modified(mtime)
                    .unwrap();
            }
            "chmod" => {}
            other => unreachable!("{other}"),
        }
        let run = p.lf(&["run", "p.yaml", "--json"]);
        ok(&run);
        let status = run.status_of(steps[which]);
        if DAMAGES[damage] == "chmod" {
            assert_eq!(
                status, "cached",
                "case {case}: a mode change alone is not damage"
            );
        } else {
            assert_eq!(
                status, "ran",
                "case {case}: {} of `{}` was used",
                DAMAGES[damage], steps[which]
            );
        }
        for (s, want) in steps.iter().zip(&original) {
            assert_eq!(
                &std::fs::read(file_of(s)).unwrap(),
                want,
                "case {case}: `{s}`"
            );
        }
        ran(&p);
    }
    let verify = p.lf(&["cache", "verify"]);
    ok(&verify);
    assert!(verify.stderr.contains("0 corrupted"), "{}", verify.stderr);
    eprintln!(
        "{CASES} damages: {:?}",
        DAMAGES.iter().zip(counts).collect::<Vec<_>>()
    );
}

/// A damaged artifact whose step cannot run again (here: the file it read is gone) fails the run, saying
/// that the damaged copy could not be rebuilt and how to remove it.
#[test]
fn a_damaged_artifact_that_cannot_be_rebuilt_says_so() {
    use std::os::unix::fs::PermissionsExt;
    let p = Project::new();
    p.write("source.txt", "only copy\n");
    p.write(
        "p.yaml",
        "name: gone\nsteps:\n  copy:\n    kind: command\n    run: cat source.txt > \"$LF_OUT/x\"\n",
    );
    ok(&p.lf(&["run", "p.yaml"]));
    let dir = std::fs::read_link(p.path().join("runs/gone/copy")).unwrap();
    std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o755)).unwrap();
    std::fs::set_permissions(dir.join("x"), std::fs::Permissions::from_mode(0o644)).unwrap();
    std::fs::write(dir.join("x"), "damaged\n").unwrap();
    std::fs::remove_file(p.path().join("source.txt")).unwrap();
    let run = p.lf(&["run", "p.yaml"]);
    let output = format!("{}{}", run.stdout, run.stderr);
    assert_eq!(run.code, 1, "{output}");
    for part in ["could not be rebuilt", "lf cache verify --repair"] {
        assert!(output.contains(part), "{part}: {output}");
    }
}
