//! Every unknown key of a file at once, found by walking the parsed TOML against the
//! generated JSON Schema of its kind.
//!
//! serde stops at the first unknown key of a file; a typo-ridden file would then need one
//! run per typo. The schemas in `schema/` already know every valid key at every place, so
//! this walk reports all of them in one pass, each with its span.

use std::ops::Range;

use serde_json::Value;
use toml::de::{DeTable, DeValue};

/// A key that is not valid where it stands.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UnknownKey {
    pub key: String,
    pub span: Range<usize>,
    /// The keys that are valid at that place, sorted.
    pub valid: Vec<String>,
}

/// The unknown keys of a parsed document under `schema`, in file order.
#[must_use]
pub fn unknown_keys(doc: &DeTable<'_>, schema: &Value) -> Vec<UnknownKey> {
    let mut out = Vec::new();
    walk_table(doc, schema, schema, &mut out);
    out.sort_by_key(|u| u.span.start);
    out
}

fn walk_table(table: &DeTable<'_>, schema: &Value, root: &Value, out: &mut Vec<UnknownKey>) {
    let Some(object) = object_schema(schema, root) else {
        return;
    };
    let properties = object.get("properties").and_then(Value::as_object);
    let additional = object.get("additionalProperties");

    for (key, value) in table {
        let name: &str = key.get_ref();
        let known = properties.and_then(|p| p.get(name));
        match (known, additional) {
            (Some(sub), _) => walk_value(value.get_ref(), sub, root, out),
            (None, Some(sub)) if sub.is_object() => walk_value(value.get_ref(), sub, root, out),
            (None, Some(Value::Bool(false))) => {
                let mut valid: Vec<String> = properties
                    .map(|p| p.keys().cloned().collect())
                    .unwrap_or_default();
                valid.sort();
                out.push(UnknownKey {
                    key: name.to_owned(),
                    span: key.span(),
                    valid,
                });
            }
            _ => {}
        }
    }
}

fn walk_value(value: &DeValue<'_>, schema: &Value, root: &Value, out: &mut Vec<UnknownKey>) {
    match value {
        DeValue::Table(table) => walk_table(table, schema, root, out),
        DeValue::Array(items) => {
            let resolved = resolve(schema, root);
            if let Some(item_schema) = resolved.get("items") {
                for item in items {
                    walk_value(item.get_ref(), item_schema, root, out);
                }
            }
        }
        _ => {}
    }
}

/// Follows `$ref` and single-branch `allOf` wrappers to the schema they stand for.
fn resolve<'a>(mut schema: &'a Value, root: &'a Value) -> &'a Value {
    // Definitions do not nest references deeply; the bound only guards against a cycle.
    for _ in 0..16 {
        if let Some(reference) = schema.get("$ref").and_then(Value::as_str) {
            let name = reference.rsplit('/').next().unwrap_or_default();
            match root.get("definitions").and_then(|d| d.get(name)) {
                Some(target) => schema = target,
                None => return schema,
            }
        } else if let Some([only]) = schema
            .get("allOf")
            .and_then(Value::as_array)
            .map(Vec::as_slice)
        {
            schema = only;
        } else {
            return schema;
        }
    }
    schema
}

/// The object schema a table must match: the schema itself, or its object branch when it
/// allows a string or a table (sealed values).
fn object_schema<'a>(schema: &'a Value, root: &'a Value) -> Option<&'a Value> {
    let schema = resolve(schema, root);
    if schema.get("properties").is_some() || schema.get("additionalProperties").is_some() {
        return Some(schema);
    }
    ["anyOf", "oneOf"]
        .iter()
        .filter_map(|k| schema.get(*k).and_then(Value::as_array))
        .flatten()
        .find_map(|branch| {
            let branch = resolve(branch, root);
            (branch.get("type").and_then(Value::as_str) == Some("object")).then_some(branch)
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn unknown_in(text: &str, schema: &Value) -> Vec<UnknownKey> {
        unknown_keys(DeTable::parse(text).expect("valid TOML").get_ref(), schema)
    }

    fn policy_schema() -> Value {
        crate::schema::schema_value("policies")
            .expect("a policy schema")
            .clone()
    }

    #[test]
    fn every_unknown_key_is_found_with_its_place() {
        let text = "repositroy = \"x\"\nschedule = { crn = \"0 2 * * *\" }\n\
                    [retention]\nkeep-dayly = 3\n[hooks]\nbefore = [[\"a\"]]\nafter-all = []\n";
        let found = unknown_in(text, &policy_schema());
        let keys: Vec<&str> = found.iter().map(|u| u.key.as_str()).collect();
        assert_eq!(keys, ["repositroy", "crn", "keep-dayly", "after-all"]);
        assert_eq!(&text[found[1].span.clone()], "crn");
        assert!(found[1].valid.contains(&"cron".to_owned()));
    }

    #[test]
    fn maps_and_sealed_values_are_walked() {
        let schema = crate::schema::schema_value("repositories")
            .expect("schema")
            .clone();
        let text = "url = \"/x\"\npassword = { sealed = \"a\", seled = \"b\" }\n\
                    env = { ANY_NAME = \"ok\", OTHER = { sealled = \"c\" } }\n";
        let keys: Vec<String> = unknown_in(text, &schema)
            .into_iter()
            .map(|u| u.key)
            .collect();
        assert_eq!(keys, ["seled", "sealled"]);
    }
}
