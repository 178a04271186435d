//! The shape of the workspace, as `docs/ARCHITECTURE.md` states it: which crates may depend on burn,
//! every source file says what it is for, step kinds live in one folder, and no two source files
//! import each other.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

fn root() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

/// Every `.rs` file under `dir`, sorted.
fn rust_files(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for entry in std::fs::read_dir(&d).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                stack.push(path);
            } else if path.extension().is_some_and(|e| e == "rs") {
                out.push(path);
            }
        }
    }
    out.sort();
    out
}

/// The packages each package of `Cargo.lock` depends on, by name.
fn lock_graph() -> BTreeMap<String, Vec<String>> {
    let text = std::fs::read_to_string(root().join("Cargo.lock")).unwrap();
    let mut graph = BTreeMap::new();
    for block in text.split("[[package]]").skip(1) {
        let name = block
            .lines()
            .find_map(|l| l.strip_prefix("name = "))
            .expect("a package has a name")
            .trim_matches('"')
            .to_string();
        let mut deps = Vec::new();
        if let Some(start) = block.find("dependencies = [") {
            let list = &block[start..block[start..].find(']').map_or(block.len(), |e| start + e)];
            for line in list.lines().skip(1) {
                let dep = line.trim().trim_end_matches(',').trim_matches('"');
                if let Some(name) = dep.split(' ').next().filter(|n| !n.is_empty()) {
                    deps.push(name.to_string());
                }
            }
        }
        // Several versions of one package merge into one node: an over-approximation, which is
        // the safe side for "does not depend on".
        graph.entry(name).or_insert_with(Vec::new).extend(deps);
    }
    graph
}

fn closure(graph: &BTreeMap<String, Vec<String>>, from: &str) -> BTreeSet<String> {
    let mut seen = BTreeSet::new();
    let mut stack = vec![from.to_string()];
    while let Some(p) = stack.pop() {
        if seen.insert(p.clone()) {
            stack.extend(graph.get(&p).into_iter().flatten().cloned());
        }
    }
    seen
}

#[test]
fn engine_cache_and_schemas_do_not_depend_on_burn() {
    let graph = lock_graph();
    for krate in ["lf-engine", "lf-cache", "lf-schemas"] {
        assert!(graph.contains_key(krate), "`{krate}` is not in Cargo.lock");
        let ml: Vec<_> = closure(&graph, krate)
            .into_iter()
            .filter(|p| p.starts_with("burn") || p.starts_with("cubecl") || p == "lf-model")
            .collect();
        assert!(ml.is_empty(), "`{krate}` depends on {ml:?}");
    }
    // The check itself can fail: the model crate does depend on burn.
    assert!(closure(&graph, "lf-model").contains("burn"));
}

#[test]
fn every_source_file_says_what_it_is_for() {
    let mut missing = Vec::new();
    for dir in [
        "src", "engine", "cache", "schemas", "model", "steps", "serve", "tests",
    ] {
        for file in rust_files(&root().join(dir)) {
            let text = std::fs::read_to_string(&file).unwrap();
            let first = text.lines().find(|l| !l.trim().is_empty()).unwrap_or("");
            if !first.starts_with("//!") {
                missing.push(file.strip_prefix(root()).unwrap().display().to_string());
            }
        }
    }
    assert!(
        missing.is_empty(),
        "these files do not open with a `//!` line: {missing:?}"
    );
}

#[test]
fn only_the_kinds_folder_implements_step_and_no_library_imports_a_kind() {
    let steps = root().join("steps/src");
    let kinds = steps.join("kinds");
    let files = rust_files(&steps);
    assert!(files.iter().any(|f| f.starts_with(&kinds)));
    for file in files {
        let text = std::fs::read_to_string(&file).unwrap();
        let name = file.strip_prefix(root()).unwrap().display().to_string();
        if file.starts_with(&kinds) {
            continue;
        }
        assert!(
            !text.contains("impl Step for") && !text.contains("impl lf_engine::Step for"),
            "`{name}` implements `Step` outside `steps/src/kinds/`"
        );
        // `lib.rs` re-exports the registry; a library's `tests.rs` may test a kind's checks.
        if file != steps.join("lib.rs") && file.file_name().is_some_and(|n| n != "tests.rs") {
            assert!(
                !text.contains("crate::kinds"),
                "the library file `{name}` imports a step kind"
            );
        }
    }
}

/// The source files a file imports through `crate::…` and `super::…` paths (test modules excluded:
/// a `tests` module importing its parent is no cycle).
fn imports(krate: &Path, file: &Path, text: &str) -> BTreeSet<PathBuf> {
    let code = text
        .split("#[cfg(test)]\nmod tests {")
        .next()
        .unwrap_or(text);
    // Comments (doc links to other modules included) are not imports.
    let text: String = code
        .lines()
        .filter(|l| !l.trim_start().starts_with("//"))
        .collect::<Vec<_>>()
        .join("\n");
    let text = text.as_str();
    // The module path of `file`: `a/b.rs` and `a/b/mod.rs` are `[a, b]`.
    let rel = file.strip_prefix(krate).unwrap().with_extension("");
    let mut here: Vec<String> = rel
        .components()
        .map(|c| c.as_os_str().to_string_lossy().into_owned())
        .collect();
    if matches!(
        here.last().map(String::as_str),
        Some("mod" | "lib" | "main")
    ) {
        here.pop();
    }
    let mut out = BTreeSet::new();
    for (i, _) in text
        .match_indices("crate::")
        .chain(text.match_indices("super::"))
    {
        // Only whole paths: `lf_model::x` is another crate, `self::super::` does not occur.
        if text[..i]
            .chars()
            .last()
            .is_some_and(|c| c.is_alphanumeric() || c == '_')
        {
            continue;
        }
        let path: String = text[i..]
            .chars()
            .take_while(|c| c.is_alphanumeric() || *c == '_' || *c == ':')
            .collect();
        let mut parts: Vec<&str> = path.split("::").filter(|p| !p.is_empty()).collect();
        let mut base = if parts[0] == "crate" {
            parts.remove(0);
            Vec::new()
        } else {
            let mut b = here.clone();
            while parts.first() == Some(&"super") {
                parts.remove(0);
                b.pop();
            }
            b
        };
        // The deepest prefix that is a file of the crate.
        let mut target = None;
        for p in parts {
            base.push(p.to_string());
            let joined: PathBuf = base.iter().collect();
            let as_file = krate.join(&joined).with_extension("rs");
            let as_dir = krate.join(&joined).join("mod.rs");
            if as_file.is_file() {
                target = Some(as_file);
            } else if as_dir.is_file() {
                target = Some(as_dir);
            } else {
                break;
            }
        }
        if let Some(t) = target.filter(|t| t != file) {
            out.insert(t);
        }
    }
    out
}

#[test]
fn no_two_source_files_import_each_other() {
    for krate in [
        "engine/src",
        "cache/src",
        "schemas/src",
        "model/src",
        "steps/src",
        "serve/src",
    ] {
        let dir = root().join(krate);
        let graph: BTreeMap<PathBuf, BTreeSet<PathBuf>> = rust_files(&dir)
            .into_iter()
            .filter(|f| f.file_name().is_some_and(|n| n != "tests.rs"))
            .map(|f| {
                let text = std::fs::read_to_string(&f).unwrap();
                let deps = imports(&dir, &f, &text);
                (f, deps)
            })
            .collect();
        // A module file (`mod.rs`, `lib.rs`) declares its children; edges from children to their
        // parent module are the usual shape and not counted as cycles.
        let is_parent = |parent: &Path, child: &Path| {
            let pdir = parent.parent().unwrap();
            parent
                .file_name()
                .is_some_and(|n| n == "mod.rs" || n == "lib.rs")
                && child.starts_with(pdir)
        };
        let edges: BTreeMap<&PathBuf, Vec<&PathBuf>> = graph
            .iter()
            .map(|(a, deps)| {
                let kept = deps
                    .iter()
                    .filter(|b| graph.contains_key(*b) && !is_parent(a, b) && !is_parent(b, a))
                    .collect();
                (a, kept)
            })
            .collect();
        if let Some(cycle) = find_cycle(&edges) {
            let names: Vec<String> = cycle
                .iter()
                .map(|f| f.strip_prefix(root()).unwrap().display().to_string())
                .collect();
            panic!(
                "source files import each other in a cycle: {}",
                names.join(" → ")
            );
        }
    }
}

/// A cycle of `edges`, as the files along it (the first repeated at the end), if there is one.
fn find_cycle<'a>(edges: &BTreeMap<&'a PathBuf, Vec<&'a PathBuf>>) -> Option<Vec<&'a PathBuf>> {
    // 0: not visited, 1: on the current path, 2: done.
    let mut state: BTreeMap<&PathBuf, u8> = BTreeMap::new();
    fn visit<'a>(
        node: &'a PathBuf,
        edges: &BTreeMap<&'a PathBuf, Vec<&'a PathBuf>>,
        state: &mut BTreeMap<&'a PathBuf, u8>,
        path: &mut Vec<&'a PathBuf>,
    ) -> Option<Vec<&'a PathBuf>> {
        state.insert(node, 1);
        path.push(node);
        for &next in edges.get(node).into_iter().flatten() {
            match state.get(next).copied().unwrap_or(0) {
                1 => {
                    let start = path.iter().position(|p| *p == next).unwrap();
                    let mut cycle = path[start..].to_vec();
                    cycle.push(next);
                    return Some(cycle);
                }
                0 => {
                    if let Some(c) = visit(next, edges, state, path) {
                        return Some(c);
                    }
                }
                _ => {}
            }
        }
        path.pop();
        state.insert(node, 2);
        None
    }
    for &node in edges.keys() {
        if state.get(node).copied().unwrap_or(0) == 0
            && let Some(c) = visit(node, edges, &mut state, &mut Vec::new())
        {
            return Some(c);
        }
    }
    None
}
