//! The manifests the dashboard lists, and the `lf` command lines it shows and starts for them.

use std::collections::BTreeMap;
use std::path::Path;
use std::process::Command;

use serde::{Deserialize, Serialize};
use serde_json::Value as Json;

use super::UiOptions;
use super::files::safe_name;

/// A manifest found in the dashboard's folder (or the embedded quickstart).
#[derive(Debug, Clone, Serialize)]
pub struct Manifest {
    /// Its path relative to the folder (`None`: the embedded quickstart, what `lf run` runs with no
    /// file).
    pub file: Option<String>,
    /// The pipeline's name (its `runs/<name>/` folder).
    pub name: String,
    /// Its description.
    pub description: Option<String>,
    /// Its variables and their defaults.
    pub vars: BTreeMap<String, Json>,
    /// Why it cannot be read, if it cannot.
    pub error: Option<String>,
}

/// The manifests in `dir` and `dir/pipelines` (`*.yaml`, `*.yml` with a `steps:` mapping), sorted by
/// path, and the embedded quickstart unless one of them is named `quickstart`.
pub fn find(dir: &Path, quickstart: &str) -> Vec<Manifest> {
    let mut found = Vec::new();
    for sub in ["", "pipelines"] {
        let folder = dir.join(sub);
        let mut entries: Vec<_> = std::fs::read_dir(&folder)
            .into_iter()
            .flatten()
            .flatten()
            .map(|e| e.path())
            .filter(|p| p.is_file() && p.extension().is_some_and(|x| x == "yaml" || x == "yml"))
            .collect();
        entries.sort();
        for path in entries {
            let Ok(text) = std::fs::read_to_string(&path) else {
                continue;
            };
            let rel = path
                .strip_prefix(dir)
                .unwrap_or(&path)
                .to_string_lossy()
                .into_owned();
            let stem = path
                .file_stem()
                .unwrap_or_default()
                .to_string_lossy()
                .into_owned();
            if let Some(m) = describe(&text, Some(rel), &stem) {
                found.push(m);
            }
        }
    }
    if !found.iter().any(|m| m.name == "quickstart")
        && let Some(m) = describe(quickstart, None, "quickstart")
    {
        found.insert(0, m);
    }
    found
}

/// A manifest's name, description and variables; `None` if the YAML is not a manifest at all.
fn describe(text: &str, file: Option<String>, stem: &str) -> Option<Manifest> {
    let doc: serde_yaml::Value = match serde_yaml::from_str(text) {
        Ok(v) => v,
        Err(e) => {
            // A file that looks like a manifest but does not parse is listed with its error.
            return text.contains("steps:").then(|| Manifest {
                file,
                name: stem.to_string(),
                description: None,
                vars: BTreeMap::new(),
                error: Some(e.to_string()),
            });
        }
    };
    let map = doc.as_mapping()?;
    map.get("steps")?;
    let text_of = |k: &str| map.get(k).and_then(|v| v.as_str()).map(str::to_string);
    let vars = map
        .get("vars")
        .and_then(|v| serde_json::to_value(v).ok())
        .and_then(|v| match v {
            Json::Object(o) => Some(o.into_iter().collect()),
            _ => None,
        })
        .unwrap_or_default();
    Some(Manifest {
        name: text_of("name").unwrap_or_else(|| stem.to_string()),
        description: text_of("description").map(|d| d.trim().to_string()),
        file,
        vars,
        error: None,
    })
}

/// What the page asks to plan or run.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RunRequest {
    /// The manifest (as listed), or none for the embedded quickstart.
    #[serde(default)]
    pub file: Option<String>,
    /// `--var NAME=VALUE` overrides.
    #[serde(default)]
    pub vars: BTreeMap<String, String>,
    /// `--only STEP`.
    #[serde(default)]
    pub only: Vec<String>,
    /// `--force STEP`.
    #[serde(default)]
    pub force: Vec<String>,
}

/// Checks a request against the manifests the dashboard lists, and returns the manifest.
pub fn check(opts: &UiOptions, req: &RunRequest) -> Result<Manifest, String> {
    let manifests = find(&opts.dir, opts.quickstart);
    let file = req.file.as_deref().filter(|f| !f.is_empty());
    let Some(manifest) = manifests.into_iter().find(|m| m.file.as_deref() == file) else {
        return Err(format!(
            "`{}` is not a manifest this dashboard lists",
            file.unwrap_or("quickstart")
        ));
    };
    for name in req.vars.keys() {
        let ok = name
            .chars()
            .next()
            .is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
            && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_');
        if !ok {
            return Err(format!("`{name}` is not a variable name"));
        }
    }
    for step in req.only.iter().chain(&req.force) {
        if !safe_name(step) {
            return Err(format!("`{step}` is not a step name"));
        }
    }
    Ok(manifest)
}

/// The arguments of `lf SUBCOMMAND` for a request (without the program). Global options appear only
/// where the dashboard's store or runs folder is not the one `lf` would use in its folder.
pub fn argv(opts: &UiOptions, sub: &str, req: &RunRequest) -> Vec<String> {
    let mut args = vec![sub.to_string()];
    if let Some(file) = req.file.as_deref().filter(|f| !f.is_empty()) {
        // A file named like an option stays a file.
        args.push(if file.starts_with('-') {
            format!("./{file}")
        } else {
            file.to_string()
        });
    }
    for (k, v) in &req.vars {
        args.push("--var".into());
        args.push(format!("{k}={v}"));
    }
    for s in &req.only {
        args.push("--only".into());
        args.push(s.clone());
    }
    for s in &req.force {
        args.push("--force".into());
        args.push(s.clone());
    }
    let default_store =
        std::env::var_os("LF_STORE").is_none() && opts.store == opts.dir.join(".lf");
    if !default_store {
        args.push("--store".into());
        args.push(opts.store.display().to_string());
    }
    let default_runs =
        std::env::var_os("LF_RUNS_DIR").is_none() && opts.runs_dir == opts.dir.join("runs");
    if !default_runs {
        args.push("--runs-dir".into());
        args.push(opts.runs_dir.display().to_string());
    }
    if opts.offline {
        args.push("--offline".into());
    }
    args
}

/// The command line as a user would type it (`lf` and the arguments, quoted for a POSIX shell).
pub fn display(args: &[String]) -> String {
    let mut line = String::from("lf");
    for a in args {
        line.push(' ');
        let plain = !a.is_empty()
            && a.chars()
                .all(|c| c.is_ascii_alphanumeric() || "_@%+=:,./-".contains(c));
        if plain {
            line.push_str(a);
        } else {
            line.push_str(&shlex::try_quote(a).map_or_else(|_| a.clone(), |q| q.into_owned()));
        }
    }
    line
}

/// A `Command` for `lf ARGS` in the dashboard's folder, without colour. The store and runs folder
/// come from `ARGS` alone ([`argv`] names them whenever `LF_STORE` / `LF_RUNS_DIR` is set).
pub fn command(opts: &UiOptions, args: &[String]) -> Command {
    let mut cmd = Command::new(&opts.lf);
    cmd.args(args)
        .current_dir(&opts.dir)
        .env("NO_COLOR", "1")
        .env_remove("LF_STORE")
        .env_remove("LF_RUNS_DIR")
        .env_remove("LF_UI_TOKEN")
        .stdin(std::process::Stdio::null());
    cmd
}

/// `lf plan --json` for a request: the plan, or `lf`'s diagnostics.
pub fn plan(opts: &UiOptions, req: &RunRequest) -> Result<Json, String> {
    let mut args = argv(opts, "plan", req);
    args.push("--json".into());
    let out = command(opts, &args)
        .output()
        .map_err(|e| format!("cannot start `{}`: {e}", opts.lf.display()))?;
    if !out.status.success() {
        let err = String::from_utf8_lossy(&out.stderr).into_owned();
        return Err(if err.trim().is_empty() {
            format!("`{}` failed ({})", display(&args), out.status)
        } else {
            err
        });
    }
    serde_json::from_slice(&out.stdout)
        .map_err(|e| format!("`lf plan --json` printed bad JSON: {e}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn opts(dir: &Path) -> UiOptions {
        UiOptions {
            dir: dir.to_path_buf(),
            store: dir.join(".lf"),
            runs_dir: dir.join("runs"),
            offline: false,
            quickstart: "name: quickstart\nvars: {name: Lumi}\nsteps:\n  a: {kind: command, run: echo}\n",
            token: None,
            lf: "lf".into(),
            device: lf_model::backend::Device::Cpu,
            dtype: lf_model::backend::Dtype::F32,
        }
    }

    #[test]
    fn manifests_are_found_and_the_embedded_quickstart_is_listed() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir(dir.path().join("pipelines")).unwrap();
        std::fs::write(dir.path().join("a.yaml"), "name: a\nsteps: {}\n").unwrap();
        std::fs::write(dir.path().join("not-a-manifest.yaml"), "x: 1\n").unwrap();
        std::fs::write(dir.path().join("pipelines/b.yml"), "steps: [\n").unwrap();
        let found = find(dir.path(), opts(dir.path()).quickstart);
        let names: Vec<_> = found
            .iter()
            .map(|m| (m.file.clone(), m.name.clone()))
            .collect();
        assert_eq!(
            names,
            [
                (None, "quickstart".to_string()),
                (Some("a.yaml".into()), "a".into()),
                (Some("pipelines/b.yml".into()), "b".into()),
            ]
        );
        assert!(found[2].error.is_some());
        assert_eq!(found[0].vars["name"], "Lumi");
    }

    #[test]
    fn requests_name_listed_manifests_and_plain_names_only() {
        let dir = tempfile::tempdir().unwrap();
        let o = opts(dir.path());
        assert!(check(&o, &RunRequest::default()).is_ok());
        for bad in [
            RunRequest {
                file: Some("/etc/passwd".into()),
                ..Default::default()
            },
            RunRequest {
                vars: [("a b".into(), "x".into())].into(),
                ..Default::default()
            },
            RunRequest {
                only: vec!["--store=/tmp".into()],
                ..Default::default()
            },
            RunRequest {
                force: vec!["../x".into()],
                ..Default::default()
            },
        ] {
            assert!(check(&o, &bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn commands_are_shown_as_they_run() {
        let dir = tempfile::tempdir().unwrap();
        let mut o = opts(dir.path());
        let req = RunRequest {
            vars: [("name".into(), "Ada Lovelace".into())].into(),
            only: vec!["sft".into()],
            ..Default::default()
        };
        let args = argv(&o, "run", &req);
        assert_eq!(
            display(&args),
            "lf run --var 'name=Ada Lovelace' --only sft"
        );
        o.store = "/elsewhere/.lf".into();
        o.offline = true;
        assert_eq!(
            display(&argv(&o, "run", &RunRequest::default())),
            "lf run --store /elsewhere/.lf --offline"
        );
    }
}
