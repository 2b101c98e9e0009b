//! Input validation against a Cog model's OpenAPI schema, the way coglet 0.23.1 does it, so
//! a bad input is refused when the prediction is created (422 naming the field) instead of
//! failing later on the model server.
//!
//! What is checked is what Cog's schemas say about inputs: `required` fields, `type`
//! (`integer` accepts a number without a fraction, as JSON Schema does), `enum` (Cog's
//! `choices`, usually behind `allOf` and a `$ref`), `minimum`/`maximum` (`ge`/`le`) and their
//! exclusive forms, `minLength`/`maxLength`, `minItems`/`maxItems`, array `items`, `nullable`,
//! and `anyOf`/`oneOf`. Messages read like coglet's (`99 is greater than the maximum of 50`).
//! Fields the schema does not name are dropped, as coglet drops them, unless the schema
//! allows additional properties. `pattern` is not checked here (coglet still checks it).

use serde_json::{Map, Value};

use crate::provider::InputError;

/// How deep `$ref`s and nested schemas are followed before giving up (a cyclic schema).
const MAX_DEPTH: usize = 32;

/// Checks `input` against the `Input` schema of `root` (a whole OpenAPI document) and
/// returns it without the fields the schema does not know. A document without an `Input`
/// schema accepts anything.
pub(crate) fn validate(
    root: &Value,
    input: &Map<String, Value>,
) -> Result<Map<String, Value>, InputError> {
    let Some(schema) = root.pointer("/components/schemas/Input") else {
        return Ok(input.clone());
    };
    let schema = resolve(root, schema, 0);
    let properties = schema.get("properties").and_then(Value::as_object);
    if let Some(required) = schema.get("required").and_then(Value::as_array) {
        for name in required.iter().filter_map(Value::as_str) {
            if !input.contains_key(name) {
                return Err(InputError::field(name, "Field required"));
            }
        }
    }
    let additional = schema.get("additionalProperties");
    let mut out = Map::new();
    for (name, value) in input {
        match properties.and_then(|p| p.get(name)) {
            Some(field_schema) => {
                check(root, field_schema, value, name, 0)?;
                out.insert(name.clone(), value.clone());
            }
            None => match additional {
                Some(Value::Bool(true)) => {
                    out.insert(name.clone(), value.clone());
                }
                Some(extra @ Value::Object(_)) => {
                    check(root, extra, value, name, 0)?;
                    out.insert(name.clone(), value.clone());
                }
                _ => {
                    tracing::debug!(field = %name, "input field dropped: the model's schema does not name it")
                }
            },
        }
    }
    Ok(out)
}

/// Follows `$ref`s (`#/components/schemas/X`) to the schema they name.
fn resolve<'a>(root: &'a Value, mut schema: &'a Value, mut depth: usize) -> &'a Value {
    while let Some(reference) = schema.get("$ref").and_then(Value::as_str) {
        let Some(target) = reference
            .strip_prefix('#')
            .and_then(|pointer| root.pointer(pointer))
        else {
            break;
        };
        schema = target;
        depth += 1;
        if depth > MAX_DEPTH {
            break;
        }
    }
    schema
}

/// Checks one value against one schema; `field` names it in errors.
fn check(
    root: &Value,
    schema: &Value,
    value: &Value,
    field: &str,
    depth: usize,
) -> Result<(), InputError> {
    if depth > MAX_DEPTH {
        return Ok(());
    }
    let schema = resolve(root, schema, depth);
    let Some(keywords) = schema.as_object() else {
        return Ok(());
    };
    if value.is_null() && keywords.get("nullable") == Some(&Value::Bool(true)) {
        return Ok(());
    }
    if let Some(all) = keywords.get("allOf").and_then(Value::as_array) {
        for sub in all {
            check(root, sub, value, field, depth + 1)?;
        }
    }
    for key in ["anyOf", "oneOf"] {
        if let Some(options) = keywords.get(key).and_then(Value::as_array)
            && !options.is_empty()
            && !options
                .iter()
                .any(|sub| check(root, sub, value, field, depth + 1).is_ok())
        {
            return Err(InputError::field(
                field,
                format!(
                    "{} is not valid under any of the given schemas",
                    show(value)
                ),
            ));
        }
    }
    if let Some(types) = keywords.get("type") {
        check_type(types, value, field)?;
    }
    if let Some(choices) = keywords.get("enum").and_then(Value::as_array)
        && !choices.iter().any(|choice| same(choice, value))
    {
        return Err(InputError::field(
            field,
            format!(
                "{} is not one of {}",
                show(value),
                Value::from(choices.clone())
            ),
        ));
    }
    if let Some(n) = value.as_f64() {
        check_bounds(keywords, n, value, field)?;
    }
    if let Some(text) = value.as_str() {
        let length = text.chars().count();
        if let Some(min) = keywords.get("minLength").and_then(Value::as_u64)
            && (length as u64) < min
        {
            return Err(InputError::field(
                field,
                format!("{} is shorter than {min} characters", show(value)),
            ));
        }
        if let Some(max) = keywords.get("maxLength").and_then(Value::as_u64)
            && (length as u64) > max
        {
            return Err(InputError::field(
                field,
                format!("{} is longer than {max} characters", show(value)),
            ));
        }
    }
    if let Some(items) = value.as_array() {
        if let Some(min) = keywords.get("minItems").and_then(Value::as_u64)
            && (items.len() as u64) < min
        {
            return Err(InputError::field(
                field,
                format!("{} has fewer than {min} items", show(value)),
            ));
        }
        if let Some(max) = keywords.get("maxItems").and_then(Value::as_u64)
            && (items.len() as u64) > max
        {
            return Err(InputError::field(
                field,
                format!("{} has more than {max} items", show(value)),
            ));
        }
        if let Some(item_schema) = keywords.get("items") {
            for (i, item) in items.iter().enumerate() {
                check(root, item_schema, item, &format!("{field}[{i}]"), depth + 1)?;
            }
        }
    }
    Ok(())
}

fn check_type(types: &Value, value: &Value, field: &str) -> Result<(), InputError> {
    let names: Vec<&str> = match types {
        Value::String(name) => vec![name.as_str()],
        Value::Array(names) => names.iter().filter_map(Value::as_str).collect(),
        _ => return Ok(()),
    };
    if names.is_empty() || names.iter().any(|name| is_type(name, value)) {
        return Ok(());
    }
    let expected = names
        .iter()
        .map(|n| format!("\"{n}\""))
        .collect::<Vec<_>>()
        .join(", ");
    let noun = if names.len() == 1 { "type" } else { "types" };
    Err(InputError::field(
        field,
        format!("{} is not of {noun} {expected}", show(value)),
    ))
}

/// JSON Schema's type test: an integer is any number without a fractional part.
fn is_type(name: &str, value: &Value) -> bool {
    match name {
        "string" => value.is_string(),
        "integer" => {
            value.is_i64()
                || value.is_u64()
                || value
                    .as_f64()
                    .is_some_and(|f| f.is_finite() && f.fract() == 0.0)
        }
        "number" => value.is_number(),
        "boolean" => value.is_boolean(),
        "array" => value.is_array(),
        "object" => value.is_object(),
        "null" => value.is_null(),
        // A type this check does not know is not a reason to refuse the input.
        _ => true,
    }
}

fn check_bounds(
    keywords: &Map<String, Value>,
    n: f64,
    value: &Value,
    field: &str,
) -> Result<(), InputError> {
    let bound = |key: &str| keywords.get(key).and_then(|b| b.as_f64().map(|f| (f, b)));
    // OpenAPI 3.0 spells exclusive bounds as booleans beside minimum/maximum; 3.1 as numbers.
    let exclusive_flag = |key: &str| keywords.get(key) == Some(&Value::Bool(true));
    if let Some((min, shown)) = bound("minimum") {
        if exclusive_flag("exclusiveMinimum") && n <= min {
            return Err(InputError::field(
                field,
                format!("{value} is less than or equal to the minimum of {shown}"),
            ));
        }
        if n < min {
            return Err(InputError::field(
                field,
                format!("{value} is less than the minimum of {shown}"),
            ));
        }
    }
    if let Some((max, shown)) = bound("maximum") {
        if exclusive_flag("exclusiveMaximum") && n >= max {
            return Err(InputError::field(
                field,
                format!("{value} is greater than or equal to the maximum of {shown}"),
            ));
        }
        if n > max {
            return Err(InputError::field(
                field,
                format!("{value} is greater than the maximum of {shown}"),
            ));
        }
    }
    if let Some((min, shown)) = bound("exclusiveMinimum")
        && n <= min
    {
        return Err(InputError::field(
            field,
            format!("{value} is less than or equal to the minimum of {shown}"),
        ));
    }
    if let Some((max, shown)) = bound("exclusiveMaximum")
        && n >= max
    {
        return Err(InputError::field(
            field,
            format!("{value} is greater than or equal to the maximum of {shown}"),
        ));
    }
    Ok(())
}

/// Equality for `enum`, with numbers compared by value (`1` equals `1.0`).
fn same(a: &Value, b: &Value) -> bool {
    match (a.as_f64(), b.as_f64()) {
        (Some(x), Some(y)) => x == y,
        _ => a == b,
    }
}

/// A value as it appears in a message: JSON, long strings cut.
fn show(value: &Value) -> String {
    let text = value.to_string();
    if text.chars().count() > 80 {
        let cut: String = text.chars().take(77).collect();
        format!("{cut}...")
    } else {
        text
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    /// The shape `cog build` generates, with a `choices` enum behind `allOf` + `$ref`.
    fn schema() -> Value {
        json!({
            "openapi": "3.0.2",
            "components": {"schemas": {
                "Input": {"type": "object", "required": ["prompt"], "properties": {
                    "prompt": {"type": "string", "minLength": 1},
                    "steps": {"type": "integer", "default": 3, "minimum": 1, "maximum": 50},
                    "scale": {"type": "number", "exclusiveMinimum": 0},
                    "color": {"allOf": [{"$ref": "#/components/schemas/color"}], "default": "red"},
                    "seed": {"type": "integer", "nullable": true},
                    "tags": {"type": "array", "items": {"type": "string"}, "maxItems": 2},
                    "image": {"type": "string", "format": "uri"}
                }},
                "color": {"title": "color", "enum": ["red", "green"], "type": "string"}
            }}
        })
    }

    fn run(input: Value) -> Result<Map<String, Value>, InputError> {
        validate(&schema(), input.as_object().unwrap())
    }

    #[test]
    fn valid_inputs_pass_and_unknown_fields_are_dropped() {
        let out = run(
            json!({"prompt": "a cat", "steps": 2.0, "color": "green", "seed": null,
                             "tags": ["a"], "scale": 0.5, "extra": 1}),
        )
        .unwrap();
        assert!(!out.contains_key("extra"));
        assert_eq!(out["steps"], json!(2.0));
        assert_eq!(out.len(), 6);
    }

    #[test]
    fn errors_name_the_field_and_read_like_coglet() {
        for (input, field, message) in [
            (json!({}), "prompt", "Field required"),
            (
                json!({"prompt": 3}),
                "prompt",
                "3 is not of type \"string\"",
            ),
            (
                json!({"prompt": ""}),
                "prompt",
                "\"\" is shorter than 1 characters",
            ),
            (
                json!({"prompt": "x", "steps": "abc"}),
                "steps",
                "\"abc\" is not of type \"integer\"",
            ),
            (
                json!({"prompt": "x", "steps": 2.5}),
                "steps",
                "2.5 is not of type \"integer\"",
            ),
            (
                json!({"prompt": "x", "steps": 99}),
                "steps",
                "99 is greater than the maximum of 50",
            ),
            (
                json!({"prompt": "x", "steps": 0}),
                "steps",
                "0 is less than the minimum of 1",
            ),
            (
                json!({"prompt": "x", "scale": 0}),
                "scale",
                "0 is less than or equal to the minimum of 0",
            ),
            (
                json!({"prompt": "x", "color": "blue"}),
                "color",
                "\"blue\" is not one of [\"red\",\"green\"]",
            ),
            (
                json!({"prompt": "x", "tags": ["a", 1]}),
                "tags[1]",
                "1 is not of type \"string\"",
            ),
            (
                json!({"prompt": "x", "tags": ["a", "b", "c"]}),
                "tags",
                "[\"a\",\"b\",\"c\"] has more than 2 items",
            ),
            (
                json!({"prompt": null}),
                "prompt",
                "null is not of type \"string\"",
            ),
            (
                json!({"prompt": "x", "steps": true}),
                "steps",
                "true is not of type \"integer\"",
            ),
        ] {
            let err = run(input.clone()).unwrap_err();
            assert_eq!(err.field.as_deref(), Some(field), "{input}");
            assert_eq!(err.message, message, "{input}");
        }
    }

    #[test]
    fn a_schema_without_input_accepts_anything() {
        let input = json!({"anything": [1, 2]});
        let out = validate(&json!({"openapi": "3.0.2"}), input.as_object().unwrap()).unwrap();
        assert_eq!(Value::Object(out), input);
    }

    #[test]
    fn cyclic_references_do_not_hang() {
        let root = json!({"components": {"schemas": {
            "Input": {"type": "object", "properties": {"a": {"$ref": "#/components/schemas/A"}}},
            "A": {"$ref": "#/components/schemas/A"}
        }}});
        assert!(validate(&root, json!({"a": 1}).as_object().unwrap()).is_ok());
    }
}
