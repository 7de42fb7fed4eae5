//! Runtime arguments of a dc-host plugin, validated against the JSON schema its
//! manifest declares (`args_schema`), with every problem naming the field and
//! what was expected. The host checks arguments with this before a run starts
//! and when it stores them; the SDK's `TestHost` uses the same function, so a
//! plugin's `cargo test` refuses exactly the arguments the host refuses.

use serde_json::Value;

/// Validates `args` against `schema`; returns the problems (empty = valid).
pub fn validate(schema: &Value, args: &Value) -> Result<(), Vec<String>> {
    let validator = jsonschema::validator_for(schema)
        .map_err(|e| vec![format!("the plugin's args_schema is not a valid JSON schema: {e}")])?;
    let mut problems: Vec<String> = Vec::new();
    for e in validator.iter_errors(args) {
        let at = e.instance_path().to_string();
        let schema_at = e.schema_path().to_string();
        // for a schema without `properties`, jsonschema reports a property
        // that `additionalProperties: false` forbids as "False schema does not
        // allow <value>", without its name: name the undeclared properties
        if let Some(parent) = schema_at.strip_suffix("/additionalProperties")
            && e.to_string().starts_with("False schema")
            && let (Some(Value::Object(obj)), Some(sub)) = (args.pointer(&at), schema.pointer(parent))
        {
            let declared = sub.get("properties").and_then(Value::as_object);
            let extra: Vec<&str> =
                obj.keys().filter(|k| !declared.is_some_and(|d| d.contains_key(*k))).map(String::as_str).collect();
            let problem = format!(
                "field {} is not allowed (the schema declares {})",
                extra.join(", "),
                declared
                    .map(|d| d.keys().cloned().collect::<Vec<_>>().join(", "))
                    .filter(|d| !d.is_empty())
                    .unwrap_or_else(|| "no fields".into())
            );
            if !extra.is_empty() && !problems.contains(&problem) {
                problems.push(problem);
                continue;
            }
        }
        problems.push(if at.is_empty() {
            format!("{e}")
        } else {
            format!("field {}: {e}", at.trim_start_matches('/'))
        });
    }
    if problems.is_empty() { Ok(()) } else { Err(problems) }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn problems_name_the_field() {
        let schema = json!({"type": "object", "required": ["base_url"], "additionalProperties": false,
            "properties": {"base_url": {"type": "string"}, "max_pages": {"type": "integer", "minimum": 1}}});
        assert!(validate(&schema, &json!({"base_url": "http://x/"})).is_ok());
        let p = validate(&schema, &json!({"max_pages": "two"})).expect_err("invalid").join("\n");
        assert!(p.contains("\"base_url\" is a required property"), "{p}");
        assert!(p.contains("field max_pages: \"two\" is not of type \"integer\""), "{p}");
        let p = validate(&schema, &json!({"base_url": "x", "colour": 1})).expect_err("invalid").join("\n");
        assert!(p.contains("Additional properties are not allowed ('colour' was unexpected)"), "{p}");
        let closed = json!({"type": "object", "additionalProperties": false});
        let p = validate(&closed, &json!({"colour": "red"})).expect_err("invalid").join("\n");
        assert_eq!(p, "field colour is not allowed (the schema declares no fields)");
    }
}
