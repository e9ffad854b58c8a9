//! JSON Schemas of the config files, generated from the same raw types the loader parses.
//!
//! The schemas in the workspace's `schema/` directory are this module's output, checked in so
//! that editors (Taplo and the extensions built on it) can offer completion, descriptions and
//! checks while an operator types. A test compares the checked-in files with what this module
//! generates, so the two cannot drift.
//!
//! The schemas only describe shape: which keys exist and their types. Everything else (a cron
//! that does not parse, a relative path, a missing repository) is `validate`'s job.

use schemars::generate::SchemaSettings;
use schemars::transform::RecursiveTransform;
use schemars::{JsonSchema, Schema};
use serde_json::Value;

use crate::config::raw::{RawHost, RawNotification, RawPolicy, RawRepository};

/// Every schema as `(file name in schema/, pretty JSON ending with a newline)`, one per object
/// kind, in a fixed order.
#[must_use]
pub fn schemas() -> Vec<(&'static str, String)> {
    vec![
        ("host.schema.json", render::<RawHost>()),
        ("policy.schema.json", render::<RawPolicy>()),
        ("repository.schema.json", render::<RawRepository>()),
        ("notification.schema.json", render::<RawNotification>()),
    ]
}

/// The schema of one object kind (`hosts`, `policies`, `repositories`, `notifications`) as
/// a JSON value, generated once per process. The loader walks it to find unknown keys.
#[must_use]
pub fn schema_value(kind: &str) -> Option<&'static Value> {
    static VALUES: std::sync::OnceLock<Vec<(&'static str, Value)>> = std::sync::OnceLock::new();
    let values = VALUES.get_or_init(|| {
        let value = |text: String| serde_json::from_str(&text).expect("a generated schema parses");
        vec![
            ("hosts", value(render::<RawHost>())),
            ("policies", value(render::<RawPolicy>())),
            ("repositories", value(render::<RawRepository>())),
            ("notifications", value(render::<RawNotification>())),
        ]
    });
    values.iter().find(|(k, _)| *k == kind).map(|(_, v)| v)
}

/// The schema of any type as a JSON value, generated as the files in `schema/` are; the
/// server's settings file is checked against its own this way.
#[must_use]
pub fn schema_of<T: JsonSchema>() -> Value {
    serde_json::from_str(&render::<T>()).expect("a generated schema parses")
}

/// Generates one schema as pretty JSON.
///
/// The draft is pinned rather than left to schemars' default, which may change between
/// releases: draft 7 is the one every editor's TOML tooling understands, including Taplo
/// versions that predate draft 2020-12 support. No `$id` is written, so the files can be used
/// from any path or URL.
fn render<T: JsonSchema>() -> String {
    let schema = SchemaSettings::draft07()
        .with_transform(RecursiveTransform(drop_null))
        .into_generator()
        .into_root_schema_for::<T>();
    let mut text =
        serde_json::to_string_pretty(&schema).expect("a generated schema serializes to JSON");
    text.push('\n');
    text
}

/// Removes the `null` alternative schemars gives every `Option` field.
///
/// TOML has no null: an optional key is simply left out. Offering `null` would only add a
/// meaningless choice to an editor's completion list.
fn drop_null(schema: &mut Schema) {
    let Some(object) = schema.as_object_mut() else {
        return;
    };

    // `"type": ["string", "null"]` becomes `"type": "string"`.
    if let Some(Value::Array(types)) = object.get_mut("type") {
        types.retain(|t| t != "null");
        if let [only] = types.as_slice() {
            let only = only.clone();
            object.insert("type".to_owned(), only);
        }
    }

    // `"anyOf": [{"$ref": …}, {"type": "null"}]` becomes `"allOf": [{"$ref": …}]`: in draft 7
    // a `$ref` beside other keywords (the description) would be ignored, so it stays wrapped.
    if let Some(Value::Array(branches)) = object.get_mut("anyOf") {
        branches.retain(|b| *b != serde_json::json!({ "type": "null" }));
        if branches.len() == 1 {
            let only = branches.clone();
            object.remove("anyOf");
            object.insert("allOf".to_owned(), Value::Array(only));
        }
    }
}
