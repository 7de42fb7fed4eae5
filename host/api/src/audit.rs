//! The audit layer: after every state-changing request (any method but GET,
//! HEAD and OPTIONS) to a route under `/api/v1` — the token endpoint
//! included, so failed logins are recorded too — it appends one row to the
//! audit log (`dc_core::audit`): who (the [`Actor`] the role guard or the
//! token endpoint put into the response; none when the caller was not
//! authenticated), the method, the route template, the id the route names,
//! the answered status, the time, the client address and the request id.
//! No body, token or password is ever recorded. A request to no route
//! changes nothing and is not recorded. The row is written before the answer
//! leaves, so a client that got its answer finds the entry; a failed write is
//! logged and does not change the answer (the change it audits is done).

use std::net::SocketAddr;

use axum::extract::{ConnectInfo, FromRequestParts, MatchedPath, RawPathParams, Request, State};
use axum::http::Method;
use axum::middleware::Next;
use axum::response::Response;
use chrono::Utc;
use dc_core::Database;
use dc_core::access::Actor;
use dc_core::audit::{self, NewAuditEntry};

/// The middleware (`axum::middleware::from_fn_with_state` with the database).
pub async fn record(State(db): State<Database>, req: Request, next: Next) -> Response {
    if matches!(*req.method(), Method::GET | Method::HEAD | Method::OPTIONS)
        || !req.uri().path().starts_with("/api/v1/")
    {
        return next.run(req).await;
    }
    let Some(route) = req.extensions().get::<MatchedPath>().map(|m| m.as_str().to_string()) else {
        return next.run(req).await;
    };
    let (mut parts, body) = req.into_parts();
    let target = RawPathParams::from_request_parts(&mut parts, &())
        .await
        .ok()
        .and_then(|p| p.iter().next().map(|(_, v)| v.to_string()));
    let req = Request::from_parts(parts, body);
    let method = req.method().to_string();
    let client_addr = req.extensions().get::<ConnectInfo<SocketAddr>>().map(|c| c.0.to_string());
    let request_id = req.headers().get("x-request-id").and_then(|v| v.to_str().ok()).map(str::to_string);
    let response = next.run(req).await;
    let actor = response.extensions().get::<Actor>().cloned().unwrap_or_default();
    let entry = NewAuditEntry {
        at: Utc::now(),
        subject: actor.subject,
        role: actor.role.map(|r| r.as_str().to_string()),
        method,
        route,
        target,
        status: response.status().as_u16(),
        client_addr,
        request_id,
    };
    if let Err(e) = audit::record(&db, entry).await {
        tracing::error!(error = %e, "could not write the audit log entry of this request");
    }
    response
}
