//! `lf bench engine` and `lf bench hash`: speed of a fully cached re-run and of artifact hashing.
//!
//! These print numbers; nothing asserts on them (tests must not time things).

use std::io::Write;
use std::process::Command;
use std::time::Instant;

use anyhow::Context as _;
use serde_json::{Value as Json, json};

/// Re-runs a fully cached pipeline of `steps` command steps with the current `lf` binary and reports the
/// wall time of the no-op run (median of 5), and the warm re-plan time with a 256 MiB local input.
pub fn engine(steps: usize) -> anyhow::Result<Json> {
    let exe = std::env::current_exe().context("cannot find the lf binary")?;
    let dir = tempfile::tempdir()?;
    let input = dir.path().join("input.bin");
    write_random(&input, 256 << 20)?;
    let mut manifest = String::from("name: bench\nsteps:\n");
    for i in 0..steps {
        let input = if i == 0 {
            "{data: input.bin}".to_string()
        } else {
            format!("{{prev: s{}}}", i - 1)
        };
        manifest.push_str(&format!(
            "  s{i}:\n    kind: command\n    run: echo {i} > \"$LF_OUT/out.txt\"\n    inputs: {input}\n"
        ));
    }
    let path = dir.path().join("bench.yaml");
    std::fs::write(&path, manifest)?;
    let run = |args: &[&str]| -> anyhow::Result<f64> {
        let start = Instant::now();
        let status = Command::new(&exe)
            .args(args)
            .arg(&path)
            .current_dir(dir.path())
            .env("LF_STORE", dir.path().join(".lf"))
            .env("LF_RUNS_DIR", dir.path().join("runs"))
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .status()?;
        anyhow::ensure!(status.success(), "`lf {}` failed", args.join(" "));
        Ok(start.elapsed().as_secs_f64() * 1000.0)
    };
    let first = run(&["run", "-q"])?;
    // Let the input's mtime age so the stat cache trusts it, then warm it.
    std::thread::sleep(std::time::Duration::from_millis(2100));
    run(&["plan"])?;
    let mut noop: Vec<f64> = (0..5)
        .map(|_| run(&["run", "-q"]))
        .collect::<Result<_, _>>()?;
    let mut plan: Vec<f64> = (0..5).map(|_| run(&["plan"])).collect::<Result<_, _>>()?;
    noop.sort_by(f64::total_cmp);
    plan.sort_by(f64::total_cmp);
    Ok(json!({
        "benchmark": "engine",
        "steps": steps,
        "first_run_ms": first,
        "noop_rerun_ms_median": noop[2],
        "warm_replan_with_256MiB_input_ms_median": plan[2],
        "target": "no-op re-run of 10 cached steps < 100 ms; warm re-plan < 20 ms",
    }))
}

/// Hashes a freshly written artifact of `mib` MiB (8 files) and reports GiB/s.
pub fn hash(mib: u64) -> anyhow::Result<Json> {
    let dir = tempfile::tempdir()?;
    let per_file = (mib << 20) / 8;
    for i in 0..8 {
        write_random(&dir.path().join(format!("shard-{i}.bin")), per_file)?;
    }
    // A cold read needs the page cache emptied, which only root can ask for (Linux).
    let _ = Command::new("sync").status();
    let dropped = std::fs::write("/proc/sys/vm/drop_caches", "3").is_ok();
    let start = Instant::now();
    let first = lf_cache::hash_tree(dir.path())?;
    let cold = start.elapsed().as_secs_f64();
    let start = Instant::now();
    let second = lf_cache::hash_tree(dir.path())?;
    let again = start.elapsed().as_secs_f64();
    anyhow::ensure!(first == second, "hashing is not deterministic");
    let gib = (per_file * 8) as f64 / (1u64 << 30) as f64;
    Ok(json!({
        "benchmark": "hash",
        "bytes": per_file * 8,
        "first_hash_gib_per_s": gib / cold,
        "first_hash_from_disk": dropped,
        "second_hash_gib_per_s": gib / again,
        "threads": rayon_threads(),
        "note": if dropped {
            "the page cache was dropped before the first hash: it reads from the disk"
        } else {
            "the page cache could not be dropped (not root): both hashes read cached pages"
        },
    }))
}

fn rayon_threads() -> usize {
    std::thread::available_parallelism().map_or(1, |n| n.get())
}

fn write_random(path: &std::path::Path, bytes: u64) -> anyhow::Result<()> {
    let mut file = std::io::BufWriter::new(std::fs::File::create(path)?);
    let mut state = 0x9E37_79B9_7F4A_7C15u64;
    let mut buf = vec![0u8; 1 << 20];
    let mut left = bytes;
    while left > 0 {
        for chunk in buf.chunks_mut(8) {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            chunk.copy_from_slice(&state.to_le_bytes()[..chunk.len()]);
        }
        let n = left.min(buf.len() as u64) as usize;
        file.write_all(&buf[..n])?;
        left -= n as u64;
    }
    file.flush()?;
    Ok(())
}
