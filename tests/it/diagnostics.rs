//! `lf validate` on a folder of bad manifests: every problem reported at once, with file:line:col, an
//! excerpt and a hint, and exit code 2. A new edge case is a new file in `tests/manifests/bad/`.

use std::path::Path;

fn validate(path: &Path) -> (i32, String) {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_lf"))
        .args(["validate"])
        .arg(path)
        .env("NO_COLOR", "1")
        .output()
        .unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn bad_manifests_report_every_problem_with_a_location() {
    insta::glob!("..", "manifests/bad/*.yaml", |path| {
        let rel = path
            .strip_prefix(env!("CARGO_MANIFEST_DIR"))
            .unwrap()
            .to_path_buf();
        let (code, stderr) = validate(&rel);
        assert_eq!(code, 2, "{}:\n{stderr}", rel.display());
        assert!(
            stderr.contains(&format!("{}:", rel.display())),
            "no location in:\n{stderr}"
        );
        insta::assert_snapshot!(stderr);
    });
}

#[test]
fn good_manifests_and_shipped_pipelines_validate() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let mut files: Vec<_> = std::fs::read_dir(root.join("tests/manifests/good"))
        .unwrap()
        .chain(std::fs::read_dir(root.join("pipelines")).unwrap())
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "yaml"))
        .collect();
    files.sort();
    assert!(files.len() >= 2);
    for file in files {
        let (code, stderr) = validate(&file);
        assert_eq!(code, 0, "{}:\n{stderr}", file.display());
        let text = std::fs::read_to_string(&file).unwrap();
        assert!(
            text.starts_with("# yaml-language-server: $schema="),
            "{} does not start with the schema comment",
            file.display()
        );
    }
}

#[test]
fn json_diagnostics_carry_locations() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_lf"))
        .args(["validate", "--json"])
        .arg("tests/manifests/bad/many_problems.yaml")
        .current_dir(root)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let doc: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let diags = doc["diagnostics"].as_array().unwrap();
    assert!(diags.len() >= 4, "{doc:#}");
    for d in diags {
        let loc = d["location"].as_str().unwrap();
        assert!(
            loc.starts_with("tests/manifests/bad/many_problems.yaml:"),
            "{loc}"
        );
    }
}
