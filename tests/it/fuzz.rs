//! No manifest text may make validation panic: random bytes, YAML-ish noise, and mutations of real
//! manifests all come back as diagnostics or a pipeline.

use std::collections::BTreeMap;
use std::path::Path;

use proptest::prelude::*;

fn validate(text: &str) {
    let registry = lf_steps::registry();
    let result =
        lf_engine::pipeline::load(Path::new("fuzz.yaml"), text, &registry, &BTreeMap::new());
    if let Err(diags) = result {
        assert!(!diags.is_empty());
        let src = lf_engine::diag::SourceFile {
            path: "fuzz.yaml",
            text,
        };
        let _ = lf_engine::diag::render(&diags, &src, false);
    }
}

fn seeds() -> Vec<String> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let mut out = Vec::new();
    for dir in ["tests/manifests/bad", "tests/manifests/good", "pipelines"] {
        for e in std::fs::read_dir(root.join(dir)).unwrap() {
            out.push(std::fs::read_to_string(e.unwrap().path()).unwrap());
        }
    }
    out
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 400, ..ProptestConfig::default() })]

    #[test]
    fn arbitrary_text_never_panics(text in "\\PC{0,300}") {
        validate(&text);
    }

    #[test]
    fn yamlish_noise_never_panics(text in "([a-z{}\\[\\]:,\\-'\"&*!|>#% \n]|kind|steps|name|vars|\\{\\{|\\}\\}|  ){0,120}") {
        validate(&text);
    }

    #[test]
    fn mutated_manifests_never_panic(index in 0usize..64, cut in 0usize..4000, insert in "\\PC{0,8}", flip in 0usize..4000) {
        let seeds = seeds();
        let text = &seeds[index % seeds.len()];
        let mut bytes = text.as_bytes().to_vec();
        let cut = cut % (bytes.len() + 1);
        bytes.splice(cut..cut, insert.bytes());
        if !bytes.is_empty() {
            let at = flip % bytes.len();
            bytes[at] = bytes[at].wrapping_add(1);
        }
        validate(&String::from_utf8_lossy(&bytes));
    }
}

/// Loads `text`, returning the messages of its errors (empty when it is valid).
fn errors(text: &str) -> Vec<String> {
    let registry = lf_steps::registry();
    match lf_engine::pipeline::load(Path::new("fuzz.yaml"), text, &registry, &BTreeMap::new()) {
        Ok(_) => Vec::new(),
        Err(diags) => diags.into_iter().map(|d| d.message).collect(),
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 200, ..ProptestConfig::default() })]

    /// Nested loops of any size finish: within the template budget they render, past it they are a
    /// diagnostic, and `lf validate` never spins.
    #[test]
    fn template_loops_of_any_size_finish(outer in 0u64..2_000_000, inner in 0u64..2_000, width in 0usize..5_000) {
        let text = format!(
            "name: t\nsteps:\n  a:\n    kind: command\n    run: \"{{% for a in 'x' * {outer} %}}{{% for b in 'y' * {inner} %}}{{{{ 'x' * {width} }}}}{{% endfor %}}{{% endfor %}}\"\n"
        );
        let started = std::time::Instant::now();
        let found = errors(&text);
        // Generous: a debug build renders ~10^6 steps a second; unbounded loops would take hours.
        prop_assert!(started.elapsed() < std::time::Duration::from_secs(20));
        let stopped = found.iter().any(|e| e.contains("budget") || e.contains("too large"));
        if outer.saturating_mul(inner) > 200_000 {
            prop_assert!(stopped, "{found:?}");
        }
        // What renders stays under the output bound.
        if outer.saturating_mul(inner).saturating_mul(width as u64) > 2 << 20 {
            prop_assert!(stopped, "{found:?}");
        }
    }

    /// A byte order mark and extra YAML documents, anywhere in real manifests: a BOM at the start is
    /// skipped, nothing panics, and a second document after a manifest is an error that says so.
    #[test]
    fn boms_and_second_documents(index in 0usize..64, at in 0usize..4000, bom in any::<bool>(), key in "[a-z]{1,8}", value in "[a-z]{1,8}") {
        let seeds = seeds();
        let seed = &seeds[index % seeds.len()];
        let second = format!("---\n{key}: {value}");
        let mut lines: Vec<&str> = seed.lines().collect();
        let at = at % (lines.len() + 1);
        lines.insert(at, &second);
        let bom_text = if bom { "\u{feff}" } else { "" };
        validate(&format!("{bom_text}{}", lines.join("\n")));

        prop_assert_eq!(errors(&format!("\u{feff}{seed}")), errors(seed));
        let found = errors(&format!("{bom_text}{seed}\n{second}\n"));
        if !errors(seed).iter().any(|e| e.contains("invalid YAML")) {
            prop_assert!(found.iter().any(|e| e.contains("second")), "{:?}", found);
        }
    }
}
