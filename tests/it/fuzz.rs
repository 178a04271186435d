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
