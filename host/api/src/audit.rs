//! The audit rows of the API: after every state-changing request (any method
//! but GET, HEAD and OPTIONS) to a route under `/api/v1` — the token endpoint
//! included, so failed logins are recorded too — `crate::hardening::Edge`
//! appends one row to the
//! audit log (`dc_core::audit`): who (the [`Actor`] the role guard or the
//! token endpoint put into the response; none when the caller was not
//! authenticated), the method, the route template, the id the route names,
//! the answered status, the time, the client address and the request id.
//! No body, token or password is ever recorded. A request to no route
//! changes nothing and is not recorded. The row is written before the answer
//! leaves, so a client that got its answer finds the entry; a failed write is
//! logged and does not change the answer (the change it audits is done).

use std::future::Future;
use std::net::SocketAddr;

use axum::extract::{ConnectInfo, FromRequestParts, MatchedPath, RawPathParams, Request};
use axum::http::Method;
use axum::response::Response;
use chrono::Utc;
use dc_core::Database;
use dc_core::access::Actor;
use dc_core::audit::{self, NewAuditEntry};

use crate::hardening::REQUEST_ID;

/// What the audit row of a state-changing request takes from the request,
/// before it is handled.
pub struct Pending {
    method: Method,
    route: String,
    target: Option<String>,
    client_addr: Option<String>,
    request_id: Option<String>,
}

/// True for the methods that change nothing (GET, HEAD, OPTIONS): requests
/// with them are not audited and do not drop kept answers.
pub fn is_read(method: &Method) -> bool {
    matches!(*method, Method::GET | Method::HEAD | Method::OPTIONS)
}

/// The audit row to write after `req` is answered: none for a read (GET,
/// HEAD, OPTIONS), a path outside `/api/v1/` or a request to no route.
/// `crate::hardening::Edge` calls it with the request id already set.
pub async fn start(req: Request) -> (Option<Pending>, Request) {
    if is_read(req.method()) || !req.uri().path().starts_with("/api/v1/") {
        return (None, req);
    }
    let Some(route) = req.extensions().get::<MatchedPath>().map(|m| m.as_str().to_string()) else {
        return (None, req);
    };
    let (mut parts, body) = req.into_parts();
    let target = RawPathParams::from_request_parts(&mut parts, &())
        .await
        .ok()
        .and_then(|p| p.iter().next().map(|(_, v)| v.to_string()));
    let pending = Pending {
        method: parts.method.clone(),
        route,
        target,
        client_addr: parts.extensions.get::<ConnectInfo<SocketAddr>>().map(|c| c.0.to_string()),
        request_id: parts.headers.get(&REQUEST_ID).and_then(|v| v.to_str().ok()).map(str::to_string),
    };
    (Some(pending), Request::from_parts(parts, body))
}

impl Pending {
    /// Appends the row for `response` (its status and the [`Actor`] the
    /// role guard or the token endpoint put into it). A failed write is
    /// logged; the answer stays as it is.
    pub fn record(self, db: &Database, response: &Response) -> impl Future<Output = ()> + Send + 'static {
        let actor = response.extensions().get::<Actor>().cloned().unwrap_or_default();
        let status = response.status().as_u16();
        let db = db.clone();
        async move { self.write(&db, actor, status).await }
    }

    async fn write(self, db: &Database, actor: Actor, status: u16) {
        let entry = NewAuditEntry {
            at: Utc::now(),
            subject: actor.subject,
            role: actor.role.map(|r| r.as_str().to_string()),
            method: self.method.to_string(),
            route: self.route,
            target: self.target,
            status,
            client_addr: self.client_addr,
            request_id: self.request_id,
        };
        if let Err(e) = audit::record(db, entry).await {
            tracing::error!(error = %e, "could not write the audit log entry of this request");
        }
    }
}
