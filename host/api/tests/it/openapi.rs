//! The OpenAPI document: version 3.1, every routed operation in it, and every
//! operation in it routed.

use reqwest::Method;
use serde_json::json;

use crate::common::*;

/// Every operation the API routes (method, path as documented).
const ROUTES: &[(&str, &str)] = &[
    ("get", "/api/v1/health"),
    ("get", "/api/v1/ready"),
    ("get", "/api/v1/apps"),
    ("get", "/api/v1/apps/{app_id}"),
    ("patch", "/api/v1/apps/{app_id}"),
    ("delete", "/api/v1/apps/{app_id}"),
    ("post", "/api/v1/apps/{app_id}/commands"),
    ("get", "/api/v1/runs"),
    ("get", "/api/v1/runs/{runtime_id}"),
    ("post", "/api/v1/runs/{runtime_id}/stop"),
    ("get", "/api/v1/logs"),
    ("get", "/api/v1/hosts"),
    ("get", "/api/v1/plugins"),
    ("post", "/api/v1/plugins"),
    ("get", "/api/v1/plugins/{app_id}/versions"),
    ("post", "/api/v1/plugins/{app_id}/rollback"),
    ("get", "/api/v1/me"),
    ("get", "/api/v1/audit"),
    ("post", "/api/v1/stream-tickets"),
    ("get", "/api/v1/runs/{runtime_id}/events"),
    ("get", "/api/v1/apps/{app_id}/events"),
];

#[tokio::test]
async fn the_document_lists_every_routed_operation_and_nothing_else() {
    let api = TestApi::sqlite().await;
    let (s, doc) = api.get("/api/v1/openapi.json", None).await;
    assert_eq!(s, 200);
    assert!(doc["openapi"].as_str().expect("version").starts_with("3.1"), "{}", doc["openapi"]);
    assert!(doc["components"]["securitySchemes"]["bearer"].is_object());
    let ticket = &doc["components"]["securitySchemes"]["ticket"];
    assert_eq!((ticket["type"].as_str(), ticket["in"].as_str()), (Some("apiKey"), Some("query")), "{ticket}");
    let paths = doc["paths"].as_object().expect("paths");
    let mut documented: Vec<(String, String)> = paths
        .iter()
        .flat_map(|(p, ops)| ops.as_object().expect("ops").keys().map(move |m| (m.clone(), p.clone())))
        .filter(|(m, _)| ["get", "post", "patch", "put", "delete"].contains(&m.as_str()))
        .collect();
    documented.sort();
    let mut expected: Vec<(String, String)> = ROUTES.iter().map(|(m, p)| (m.to_string(), p.to_string())).collect();
    expected.sort();
    assert_eq!(documented, expected);
    // every documented operation is routed (an admin gets past every guard;
    // whatever the handler says, it is not the unknown-route answer)
    for (method, path) in ROUTES {
        let concrete = path.replace("{app_id}", "no-such-app").replace("{runtime_id}", "no-such-run");
        let method = Method::from_bytes(method.to_uppercase().as_bytes()).expect("method");
        let (s, body) = api.send(method.clone(), &concrete, Some(ADMIN), &json!({})).await;
        let unrouted = s == 404 && body["error"]["message"].as_str().is_some_and(|m| m.starts_with("no route"));
        assert!(!unrouted && s != 405, "{method} {concrete}: {s} {body}");
        // operations that need a role say so, and say which one
        let op = &doc["paths"][*path][method.as_str().to_lowercase()];
        if !path.ends_with("/health") && !path.ends_with("/ready") {
            assert!(op["security"].is_array(), "{method} {path} lacks security");
            let text = format!(
                "{} {}",
                op["summary"].as_str().unwrap_or_default(),
                op["description"].as_str().unwrap_or_default()
            );
            assert!(text.contains("Role:"), "{method} {path}: {op}");
        }
    }
    api.stop().await;
}

/// The status and OpenAPI document of `api`'s router with the token
/// authority's routes mounted (`dc_api::router_with_auth`), served on a
/// loopback port for the one request and then shut down.
async fn document_with_auth(api: &TestApi) -> (u16, serde_json::Value) {
    let router = dc_api::router_with_auth(api.state.clone(), axum::Router::new());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let url = format!("http://{}/api/v1/openapi.json", listener.local_addr().expect("addr"));
    let (tx, rx) = tokio::sync::oneshot::channel::<()>();
    let server = tokio::spawn(dc_api::serve_router(listener, router, async move {
        let _ = rx.await;
    }));
    let answer = answer(api.client.get(&url).send().await.expect("GET")).await;
    let _ = tx.send(());
    server.await.expect("server task").expect("served");
    answer
}

#[tokio::test]
async fn with_the_token_authority_mounted_the_document_describes_its_form_endpoints() {
    let api = TestApi::sqlite().await;
    let (s, doc) = document_with_auth(&api).await;
    assert_eq!(s, 200);
    for path in ["/api/v1/auth/token", "/api/v1/auth/revoke"] {
        let op = &doc["paths"][path]["post"];
        assert!(op["security"].is_null(), "{path} needs no bearer token: {op}");
        let form = &op["requestBody"]["content"]["application/x-www-form-urlencoded"]["schema"];
        assert!(form.is_object(), "{path}: {op}");
        assert!(op["responses"]["429"]["headers"]["Retry-After"].is_object(), "{path}: {op}");
    }
    let token = &doc["components"]["schemas"]["TokenRequest"];
    assert_eq!(token["required"], json!(["grant_type"]), "{token}");
    let ok = &doc["paths"]["/api/v1/auth/token"]["post"]["responses"]["200"]["content"]["application/json"]["schema"];
    assert_eq!(ok["$ref"], "#/components/schemas/TokenAnswer", "{ok}");
    // the document of the API alone does not list what it does not serve
    let (_, plain) = api.get("/api/v1/openapi.json", None).await;
    assert!(plain["paths"]["/api/v1/auth/token"].is_null());
    api.stop().await;
}

/// Every `$ref` in `v` (the document, recursively).
fn refs(v: &serde_json::Value, out: &mut Vec<String>) {
    match v {
        serde_json::Value::Object(m) => {
            if let Some(r) = m.get("$ref").and_then(|r| r.as_str()) {
                out.push(r.to_string());
            }
            m.values().for_each(|x| refs(x, out));
        }
        serde_json::Value::Array(a) => a.iter().for_each(|x| refs(x, out)),
        _ => {}
    }
}

/// A client generator (or schemathesis) cannot use a parameter whose schema
/// points nowhere: every `$ref` names a schema the document defines.
#[tokio::test]
async fn every_reference_resolves() {
    let api = TestApi::sqlite().await;
    let (s, doc) = api.get("/api/v1/openapi.json", None).await;
    assert_eq!(s, 200);
    let mut found = Vec::new();
    refs(&doc, &mut found);
    assert!(found.len() > 10, "the document refers to its schemas: {found:?}");
    let dangling: Vec<&String> = found
        .iter()
        .filter(|r| {
            let name = r.strip_prefix("#/components/schemas/").expect("a schema reference");
            doc["components"]["schemas"][name].is_null()
        })
        .collect();
    assert!(dangling.is_empty(), "references to undefined schemas: {dangling:?}");
    // the query enums are among them
    for name in ["AppSortParam", "RunStatusParam", "LevelParam"] {
        assert!(doc["components"]["schemas"][name].is_object(), "{name}");
    }
    api.stop().await;
}

#[tokio::test]
async fn typed_ids_are_plain_strings_in_the_document() {
    let api = TestApi::sqlite().await;
    let (s, doc) = api.get("/api/v1/openapi.json", None).await;
    assert_eq!(s, 200);
    let schemas = &doc["components"]["schemas"];
    // (schema, field, may be null): `AppId` / `RuntimeId` fields document as
    // the strings they were before the ids were typed
    for (schema, field, nullable) in [
        ("App", "app_id", false),
        ("QueuedCommand", "app_id", false),
        ("DeletedApp", "app_id", false),
        ("PluginApp", "app_id", false),
        ("Run", "runtime_id", false),
        ("Run", "app_id", false),
        ("Run", "resumed_from", true),
        ("LogRecord", "app_id", true),
        ("LogRecord", "runtime_id", true),
    ] {
        let s = &schemas[schema];
        let prop = &s["properties"][field];
        let ty = if nullable { json!(["string", "null"]) } else { json!("string") };
        assert_eq!(prop["type"], ty, "{schema}.{field}: {prop}");
        assert!(prop["description"].as_str().is_some_and(|d| !d.is_empty()), "{schema}.{field} keeps its doc: {prop}");
        let required = s["required"].as_array().is_some_and(|r| r.contains(&json!(field)));
        assert_eq!(required, !nullable, "{schema}.{field} required: {}", s["required"]);
    }
    api.stop().await;
}

/// A validator for the document's schema `name` (its `$ref`s resolve in the
/// document).
fn validator(doc: &serde_json::Value, name: &str) -> jsonschema::Validator {
    let mut root = doc.clone();
    root["$schema"] = json!("https://json-schema.org/draft/2020-12/schema");
    root["$ref"] = json!(format!("#/components/schemas/{name}"));
    jsonschema::validator_for(&root).unwrap_or_else(|e| panic!("{name} is a usable JSON schema: {e}"))
}

/// The request schemas say what the server checks: a body the schema
/// allows is accepted, and a body it refuses the server refuses too.
#[tokio::test]
async fn the_app_patch_schema_matches_what_the_server_accepts() {
    let api = TestApi::sqlite().await;
    let (_, doc) = api.get("/api/v1/openapi.json", None).await;
    let patch = validator(&doc, "AppPatch");
    let id = app(&api.db, "patched").await;
    let path = format!("/api/v1/apps/{id}");
    let allowed = [
        json!({"enabled": false}),
        json!({"max_concurrent_runs": 2}),
        json!({"schedule": {"every": "2h30m"}}),
        json!({"schedule": {"cron": "30 6 * * 1-5", "tz": "Europe/Berlin"}}),
        json!({"schedule": {"cron": "0 */15 8-18 * * 1,3,5"}}),
        json!({"schedule": {"cron": "@daily"}}),
        json!({"schedule": {"off": true}}),
        json!({"args": null}),
    ];
    for body in &allowed {
        assert!(patch.is_valid(body), "the schema allows {body}");
        let (s, answer) = api.send(Method::PATCH, &path, Some(OPERATOR), body).await;
        assert_eq!(s, 200, "{body}: {answer}");
    }
    let refused = [
        json!({}),
        json!({"enabled": null}),
        json!({"colour": "red"}),
        json!({"max_concurrent_runs": 0}),
        json!({"max_concurrent_runs": 1001}),
        json!({"schedule": {}}),
        json!({"schedule": {"off": false}}),
        json!({"schedule": {"every": "5m", "off": true}}),
        json!({"schedule": {"every": "0s"}}),
        json!({"schedule": {"every": "5m5m"}}),
        json!({"schedule": {"cron": "61 * * * *"}}),
        json!({"schedule": {"cron": "* * *"}}),
        json!({"schedule": {"cron": "0 6 * * *", "tz": "Mars/Olympus"}}),
        json!({"schedule": {"tz": "Europe/Berlin"}}),
    ];
    for body in &refused {
        assert!(!patch.is_valid(body), "the schema refuses {body}");
        let (s, answer) = api.send(Method::PATCH, &path, Some(OPERATOR), body).await;
        assert_eq!(s, 422, "{body}: {answer}");
    }
    api.stop().await;
}

#[tokio::test]
async fn the_form_bodies_state_their_required_fields_and_token_shape() {
    let api = TestApi::sqlite().await;
    let (_, doc) = document_with_auth(&api).await;
    let revoke = validator(&doc, "RevokeRequest");
    // a refresh token (43 base64url characters), with or without its hint
    let refresh = "q3nD0mR3fr3shT0k3n_0f-f0rty-thr33-charact3r";
    assert_eq!(refresh.len(), 43);
    assert!(revoke.is_valid(&json!({"token": refresh})));
    assert!(revoke.is_valid(&json!({"token": refresh, "token_type_hint": "refresh_token"})));
    // what the server refuses with 400: no token, an empty one, an access
    // token (a JWT), the access-token hint
    for refused in [
        json!({}),
        json!({"token": ""}),
        json!({"token": "eyJhbGciOiJFZERTQSJ9.eyJzdWIiOiJhZGEifQ.c2ln"}),
        json!({"token": refresh, "token_type_hint": "access_token"}),
    ] {
        assert!(!revoke.is_valid(&refused), "the schema refuses {refused}");
    }
    let upload = &doc["components"]["schemas"]["PluginUpload"];
    assert_eq!(upload["required"], json!(["file"]), "{upload}");
    assert_eq!(upload["additionalProperties"], json!(false), "one field only: {upload}");
    api.stop().await;
}

/// Operation ids are unique (links name their target by it), and the links
/// of the list and get answers point at operations that exist, with
/// parameters those operations have.
#[tokio::test]
async fn operation_ids_are_unique_and_links_lead_to_real_operations() {
    let api = TestApi::sqlite().await;
    let (_, doc) = api.get("/api/v1/openapi.json", None).await;
    let mut ops = std::collections::HashMap::new();
    for (path, item) in doc["paths"].as_object().expect("paths") {
        for (method, op) in item.as_object().expect("path item") {
            let id = op["operationId"].as_str().unwrap_or_else(|| panic!("{method} {path} has no operationId"));
            assert!(ops.insert(id.to_string(), op.clone()).is_none(), "operationId {id} twice");
        }
    }
    let mut links = Vec::new();
    for (from_id, op) in &ops {
        for (status, response) in op["responses"].as_object().expect("responses") {
            for (name, link) in response["links"].as_object().into_iter().flatten() {
                let to_id = link["operationId"].as_str().expect("links name their operation by id");
                let to = ops.get(to_id).unwrap_or_else(|| panic!("{from_id} {status} links {name} to no operation"));
                for param in link["parameters"].as_object().expect("link parameters").keys() {
                    let known = to["parameters"].as_array().into_iter().flatten().any(|p| p["name"] == json!(param));
                    assert!(known, "{from_id} → {to_id}: {to_id} has no parameter {param}");
                }
                links.push((from_id.clone(), to_id.to_string()));
            }
        }
    }
    for (from, to) in [
        ("listRuns", "getRun"),
        ("listRuns", "stopRun"),
        ("getRun", "stopRun"),
        ("listPlugins", "rollbackPlugin"),
        ("listPluginVersions", "rollbackPlugin"),
        ("listApps", "getApp"),
        ("getApp", "rollbackPlugin"),
    ] {
        assert!(links.contains(&(from.to_string(), to.to_string())), "a link {from} → {to} in {links:?}");
    }
    api.stop().await;
}
