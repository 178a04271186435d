//! The `download` step against the Hugging Face cache layout (offline) and against a local stand-in for
//! the hub's HTTP API (online), through the real `hf-hub` client.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpListener;
use std::path::Path;

use crate::common::{Project, ok};

const SHA1: &str = "1111111111111111111111111111111111111111";
const SHA2: &str = "2222222222222222222222222222222222222222";

/// Lays out a repository in a hub cache exactly as `huggingface_hub` does: content in `blobs/<etag>`,
/// `snapshots/<commit>/<file>` as relative symlinks to the blobs, `refs/<revision>` holding the commit.
fn cache_repo(cache: &Path, files: &[(&str, &str)], commit: &str, revision: &str) {
    let repo = cache.join("models--acme--tiny");
    for (name, content) in files {
        let etag = blake3::hash(content.as_bytes()).to_hex()[..40].to_string();
        std::fs::create_dir_all(repo.join("blobs")).unwrap();
        std::fs::write(repo.join("blobs").join(&etag), content).unwrap();
        let link = repo.join("snapshots").join(commit).join(name);
        std::fs::create_dir_all(link.parent().unwrap()).unwrap();
        let depth = name.matches('/').count();
        let target = format!("{}../../blobs/{etag}", "../".repeat(depth));
        std::os::unix::fs::symlink(target, &link).unwrap();
    }
    std::fs::create_dir_all(repo.join("refs")).unwrap();
    std::fs::write(repo.join("refs").join(revision), commit).unwrap();
}

const MANIFEST: &str = r#"name: hub
steps:
  model:
    kind: download
    repo: acme/tiny
    include: ["*.json", "sub/*"]
"#;

#[test]
fn offline_download_reads_the_standard_cache_and_pins_the_commit() {
    let p = Project::new();
    let cache = p.path().join("hf-cache");
    cache_repo(
        &cache,
        &[
            ("config.json", "{\"v\": 1}"),
            ("sub/tokenizer.json", "{}"),
            ("weights.bin", "xx"),
        ],
        SHA1,
        "main",
    );
    p.write("p.yaml", MANIFEST);
    let run = p.lf(&["run", "p.yaml", "--json"]);
    ok(&run);
    let artifact = p.path().join("runs/hub/model");
    assert_eq!(
        std::fs::read_to_string(artifact.join("config.json")).unwrap(),
        "{\"v\": 1}"
    );
    assert!(artifact.join("sub/tokenizer.json").is_file());
    assert!(
        !artifact.join("weights.bin").exists(),
        "include patterns were ignored"
    );
    let lock = p.lock("p.yaml");
    assert_eq!(lock["steps"]["model"]["pin"]["commit"].as_str(), Some(SHA1));

    // Cached: a second run touches nothing.
    let again = p.lf(&["run", "p.yaml", "--json"]);
    assert_eq!(again.status_of("model"), "cached");

    // `main` moves to a new commit: the plan says so, --locked refuses, a plain run re-downloads.
    cache_repo(&cache, &[("config.json", "{\"v\": 2}")], SHA2, "main");
    let plan = p.lf(&["plan", "p.yaml"]);
    ok(&plan);
    assert!(
        plan.stdout.contains("remote input now resolves to"),
        "{}",
        plan.stdout
    );
    let locked = p.lf(&["run", "p.yaml", "--locked"]);
    assert_eq!(locked.code, 1);
    assert!(
        locked.stderr.contains("remote input resolves to"),
        "{}",
        locked.stderr
    );
    ok(&p.lf(&["run", "p.yaml"]));
    assert_eq!(
        std::fs::read_to_string(artifact.join("config.json")).unwrap(),
        "{\"v\": 2}"
    );
}

#[test]
fn offline_without_the_revision_is_a_clear_error() {
    let p = Project::new();
    p.write("p.yaml", MANIFEST);
    let plan = p.lf(&["plan", "p.yaml"]);
    assert_eq!(plan.code, 1);
    assert!(
        plan.stderr.contains("not in the local Hugging Face cache"),
        "{}",
        plan.stderr
    );
    assert!(plan.stderr.contains("hint:"), "{}", plan.stderr);
}

/// A tiny HTTP server answering the two hub endpoints `hf-hub` uses.
fn mock_hub(files: Vec<(&'static str, &'static str)>) -> String {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(mut stream) = stream else { continue };
            let mut reader = BufReader::new(stream.try_clone().unwrap());
            let mut request_line = String::new();
            if reader.read_line(&mut request_line).is_err() {
                continue;
            }
            let mut range_start = None;
            loop {
                let mut line = String::new();
                if reader.read_line(&mut line).unwrap_or(0) == 0 || line == "\r\n" {
                    break;
                }
                let lower = line.to_ascii_lowercase();
                if let Some(r) = lower.strip_prefix("range: bytes=") {
                    range_start = r
                        .trim()
                        .split('-')
                        .next()
                        .and_then(|s| s.parse::<usize>().ok());
                }
            }
            let path = request_line
                .split_whitespace()
                .nth(1)
                .unwrap_or("/")
                .to_string();
            let (status, headers, body): (&str, Vec<(String, String)>, Vec<u8>) = if path
                == "/api/models/acme/tiny/revision/main"
                || path == format!("/api/models/acme/tiny/revision/{SHA1}")
            {
                let siblings: Vec<String> = files
                    .iter()
                    .map(|(n, _)| format!("{{\"rfilename\":\"{n}\"}}"))
                    .collect();
                let body = format!(
                    "{{\"sha\":\"{SHA1}\",\"siblings\":[{}]}}",
                    siblings.join(",")
                );
                (
                    "200 OK",
                    vec![("content-type".into(), "application/json".into())],
                    body.into_bytes(),
                )
            } else if let Some((name, content)) = files
                .iter()
                .find(|(n, _)| path == format!("/acme/tiny/resolve/{SHA1}/{n}"))
            {
                let _ = name;
                let bytes = content.as_bytes();
                let start = range_start.unwrap_or(0).min(bytes.len());
                let body = bytes[start..].to_vec();
                let etag = format!("\"{}\"", &blake3::hash(bytes).to_hex()[..40]);
                (
                    "206 Partial Content",
                    vec![
                        ("etag".into(), etag),
                        ("x-repo-commit".into(), SHA1.into()),
                        (
                            "content-range".into(),
                            format!(
                                "bytes {start}-{}/{}",
                                bytes.len().saturating_sub(1),
                                bytes.len()
                            ),
                        ),
                    ],
                    body,
                )
            } else {
                ("404 Not Found", Vec::new(), b"not found".to_vec())
            };
            let mut response = format!(
                "HTTP/1.1 {status}\r\ncontent-length: {}\r\nconnection: close\r\n",
                body.len()
            );
            for (k, v) in headers {
                response.push_str(&format!("{k}: {v}\r\n"));
            }
            response.push_str("\r\n");
            let _ = stream.write_all(response.as_bytes());
            let _ = stream.write_all(&body);
            let _ = stream.flush();
            let mut sink = [0u8; 1];
            let _ = stream.set_read_timeout(Some(std::time::Duration::from_millis(10)));
            let _ = stream.read(&mut sink);
        }
    });
    format!("http://{addr}")
}

#[test]
fn online_download_fills_the_cache_like_the_hub_client() {
    let endpoint = mock_hub(vec![
        ("config.json", "{\"hidden\": 8}"),
        ("sub/a.json", "[1]"),
        ("big.bin", "0123"),
    ]);
    let p = Project::new();
    p.write("p.yaml", MANIFEST);
    let out = p
        .command(&["run", "p.yaml", "--json"])
        .env_remove("HF_HUB_OFFLINE")
        .env("HF_ENDPOINT", &endpoint)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let artifact = p.path().join("runs/hub/model");
    assert_eq!(
        std::fs::read_to_string(artifact.join("config.json")).unwrap(),
        "{\"hidden\": 8}"
    );
    assert_eq!(
        std::fs::read_to_string(artifact.join("sub/a.json")).unwrap(),
        "[1]"
    );
    assert!(!artifact.join("big.bin").exists());
    // The cache now has the hub client's layout: blobs, snapshot links, and `refs/main`.
    let repo = p.path().join("hf-cache/models--acme--tiny");
    assert_eq!(
        std::fs::read_to_string(repo.join("refs/main"))
            .unwrap()
            .trim(),
        SHA1
    );
    let link = repo.join("snapshots").join(SHA1).join("config.json");
    assert!(
        std::fs::symlink_metadata(&link)
            .unwrap()
            .file_type()
            .is_symlink()
    );
    // ...which hf-hub's own cache reader, and an offline lf run, both use.
    assert!(
        hf_hub::Cache::new(p.path().join("hf-cache"))
            .model("acme/tiny".into())
            .get("config.json")
            .is_some()
    );
    std::fs::remove_dir_all(p.path().join(".lf")).unwrap();
    ok(&p.lf(&["run", "p.yaml", "--locked"]));
}
