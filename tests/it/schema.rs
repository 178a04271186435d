//! The committed JSON Schema matches what the code generates.

use std::path::Path;

#[test]
fn committed_schema_is_current() {
    let generated = lf_engine::schema::pipeline_schema_text(&lf_steps::registry());
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("schemas/pipeline.schema.json");
    if std::env::var_os("LF_UPDATE_SCHEMA").is_some() {
        std::fs::write(&path, format!("{generated}\n")).unwrap();
    }
    let committed = std::fs::read_to_string(&path).unwrap_or_default();
    assert!(
        committed.trim_end() == generated.trim_end(),
        "schemas/pipeline.schema.json is stale: run `LF_UPDATE_SCHEMA=1 cargo test --test schema` (or `lf schema > schemas/pipeline.schema.json`)"
    );
}

#[test]
fn schema_lists_every_kind_and_denies_unknown_keys() {
    let schema = lf_engine::schema::pipeline_schema(&lf_steps::registry());
    let variants = schema["properties"]["steps"]["additionalProperties"]["oneOf"]
        .as_array()
        .unwrap();
    let kinds: Vec<&str> = variants
        .iter()
        .map(|v| v["properties"]["kind"]["const"].as_str().unwrap())
        .collect();
    for kind in lf_steps::registry().kinds() {
        assert!(kinds.contains(&kind.kind()), "{} missing", kind.kind());
    }
    for v in variants {
        assert_eq!(v["additionalProperties"], serde_json::json!(false), "{v:#}");
    }
}
