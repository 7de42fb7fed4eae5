//! Runtime arguments: validated against the plugin's declared JSON schema before
//! anything starts, with every problem naming the field and what was expected.

use serde_json::Value;

/// Validates `args` against `schema`; returns the problems (empty = valid).
pub fn validate(schema: &Value, args: &Value) -> Result<(), Vec<String>> {
    let validator = jsonschema::validator_for(schema)
        .map_err(|e| vec![format!("the plugin's args_schema is not a valid JSON schema: {e}")])?;
    let problems: Vec<String> = validator
        .iter_errors(args)
        .map(|e| {
            let at = e.instance_path().to_string();
            if at.is_empty() { format!("{e}") } else { format!("field {}: {e}", at.trim_start_matches('/')) }
        })
        .collect();
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
        assert!(p.contains("colour"), "{p}");
    }
}
