//! The OpenAPI document as served: utoipa's output, with what utoipa 5.5
//! writes wrongly put right, serialized once when the router is built.
//!
//! - A link's fields come out in snake case (`operation_id`,
//!   `operation_ref`, `request_body`); OpenAPI names them `operationId`,
//!   `operationRef`, `requestBody`, and tools ignore the others.
//! - `#[schema(min_properties = N)]` comes out as `maxProperties`; the
//!   schemas that need a least number of properties get it here instead.

use serde_json::Value;

/// Schemas and the least number of properties each needs.
const MIN_PROPERTIES: &[(&str, u64)] = &[
    // PATCH /apps/{app_id} with nothing to change is refused
    ("AppPatch", 1),
];

/// The document utoipa built, as JSON with the fixes applied.
pub fn served(doc: &utoipa::openapi::OpenApi) -> Value {
    let mut v = serde_json::to_value(doc).unwrap_or_else(|e| {
        // the document is built from types in this crate; a failure is a bug
        tracing::error!(error = %e, "cannot serialize the OpenAPI document");
        Value::Null
    });
    fix_links(&mut v);
    for (schema, min) in MIN_PROPERTIES {
        if let Some(s) = v.pointer_mut(&format!("/components/schemas/{schema}")).and_then(Value::as_object_mut) {
            s.remove("maxProperties");
            s.insert("minProperties".into(), Value::from(*min));
        }
    }
    v
}

/// Renames the snake-case fields of every link object (`…/links/NAME`).
fn fix_links(v: &mut Value) {
    match v {
        Value::Object(m) => {
            if let Some(Value::Object(links)) = m.get_mut("links") {
                for link in links.values_mut().filter_map(Value::as_object_mut) {
                    for (from, to) in [
                        ("operation_id", "operationId"),
                        ("operation_ref", "operationRef"),
                        ("request_body", "requestBody"),
                    ] {
                        if let Some(x) = link.remove(from) {
                            link.insert(to.into(), x);
                        }
                    }
                }
            }
            m.values_mut().for_each(fix_links);
        }
        Value::Array(a) => a.iter_mut().for_each(fix_links),
        _ => {}
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn links_get_their_openapi_field_names_and_min_properties_its_own_keyword() {
        let mut v = json!({
            "paths": {"/runs": {"get": {"responses": {"200": {"links": {
                "getRun": {"operation_id": "getRun", "parameters": {"runtime_id": "$response.body#/items/0/runtime_id"}},
                "other": {"operation_ref": "#/paths/~1x/get", "request_body": {"a": 1}}
            }}}}}},
            "components": {"schemas": {"links": {"type": "string"}}}
        });
        fix_links(&mut v);
        let links = &v["paths"]["/runs"]["get"]["responses"]["200"]["links"];
        assert_eq!(links["getRun"]["operationId"], "getRun");
        assert!(links["getRun"].get("operation_id").is_none());
        assert_eq!(links["other"]["operationRef"], "#/paths/~1x/get");
        assert_eq!(links["other"]["requestBody"], json!({"a": 1}));
        assert_eq!(
            v["components"]["schemas"]["links"],
            json!({"type": "string"}),
            "a schema named links is left alone"
        );
    }
}
