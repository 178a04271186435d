//! The JSON Schema of a pipeline manifest, generated from the manifest envelope and every registered step
//! kind's parameter type. Committed as `schemas/pipeline.schema.json`; `lf schema` prints it.

use lf_schemas::Manifest;
use schemars::SchemaGenerator;
use serde_json::{Value as Json, json};

use crate::step::Registry;

/// The schema as a JSON value.
pub fn pipeline_schema(registry: &Registry) -> Json {
    let mut generator = SchemaGenerator::default();
    let mut root = generator.root_schema_for::<Manifest>().to_value();
    let mut variants = Vec::new();
    for kind in registry.kinds() {
        let mut schema = kind.schema(&mut generator).to_value();
        let obj = schema
            .as_object_mut()
            .expect("parameter schemas are objects");
        let props = obj
            .entry("properties")
            .or_insert_with(|| json!({}))
            .as_object_mut()
            .expect("properties is an object");
        props.insert(
            "kind".into(),
            json!({"const": kind.kind(), "description": kind.about()}),
        );
        let required = obj
            .entry("required")
            .or_insert_with(|| json!([]))
            .as_array_mut()
            .expect("required is an array");
        required.insert(0, json!("kind"));
        obj.insert("title".into(), json!(format!("`{}` step", kind.kind())));
        variants.push(schema);
    }
    let kinds: Vec<&str> = registry.kinds().map(|k| k.kind()).collect();
    root["properties"]["steps"] = json!({
        "description": "The steps, by name. Each has a `kind` and that kind's parameters; a step refers to another step's output by its name.",
        "type": "object",
        "propertyNames": {"pattern": "^[A-Za-z0-9_-]{1,64}$"},
        "additionalProperties": {
            "type": "object",
            "required": ["kind"],
            "properties": {"kind": {"enum": kinds}},
            "oneOf": variants,
        },
    });
    let defs = generator.take_definitions(true);
    if !defs.is_empty() {
        let root_defs = root
            .as_object_mut()
            .expect("root schema is an object")
            .entry("$defs")
            .or_insert_with(|| json!({}));
        for (name, def) in defs {
            root_defs[name] = def;
        }
    }
    root["$id"] = json!("https://lf.invalid/schemas/pipeline.schema.json");
    root["title"] = json!("lf pipeline manifest");
    root
}

/// The schema as pretty JSON text ending in a newline.
pub fn pipeline_schema_text(registry: &Registry) -> String {
    serde_json::to_string_pretty(&pipeline_schema(registry)).expect("schema serializes")
}
