//! The answer cache of `GET /api/v1/apps`: the serialized page, by query
//! string, for `api.apps_cache_ms` (default 1000 ms; 0: off). It spares the
//! dashboard's polling and busy clients a database read per request.
//!
//! Staleness bound: an answer is at most `api.apps_cache_ms` old. A
//! state-changing request through this API (any method but GET, HEAD and
//! OPTIONS, answered by any route) drops every kept answer before its answer
//! leaves (`crate::hardening::Edge` calls [`ReadCache::changed`]), so a client that changed something reads its change at once.
//! Changes made elsewhere — the serve loop's runs (status, progress), the
//! CLI, another host on the same database — appear within the bound.
//!
//! A generation counter makes the drop race-free: an answer read from the
//! database while a change was being made is kept under the old generation
//! and never served.
//!
//! A kept answer is served early ([`Early`], inside `crate::hardening::Edge`
//! and CORS): once the request's token, rate limit and role pass the same
//! checks as the route's guard (`crate::access::check`), the kept bytes are
//! the answer, without the guard's and the handler's services, extractors or
//! serialization. A request without a fresh kept answer goes the usual way.

use std::convert::Infallible;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::task::{Context, Poll};

use axum::body::Bytes;
use axum::extract::Request;
use axum::http::{HeaderValue, Method, header};
use axum::response::{IntoResponse, Response};
use chrono::{DateTime, TimeDelta, Utc};
use dc_core::access::Role;
use dc_scheduler::Clock;
use futures_util::future::{BoxFuture, Either};
use tower::Service;

use crate::{ApiState, access};

/// The path whose answers are kept.
pub const PATH: &str = "/api/v1/apps";

/// The role `GET /apps` needs: that of the route group it is routed in
/// (viewer, see `crate::api_routes`).
const ROLE: Role = Role::Viewer;

/// Different query strings kept at most.
pub const CAPACITY: usize = 1_000;

#[derive(Clone)]
struct Kept {
    generation: u64,
    read_at: DateTime<Utc>,
    body: Bytes,
}

/// Kept answers.
pub struct ReadCache {
    ttl: TimeDelta,
    clock: Arc<dyn Clock>,
    generation: AtomicU64,
    answers: quick_cache::sync::Cache<String, Kept>,
}

/// A ticket for storing an answer: the generation and time before the read.
#[derive(Debug, Clone, Copy)]
pub struct Ticket {
    generation: u64,
    read_at: DateTime<Utc>,
}

impl ReadCache {
    /// Answers kept for `ttl_ms` milliseconds by `clock` (0: nothing is kept).
    pub fn new(ttl_ms: u64, clock: Arc<dyn Clock>) -> ReadCache {
        ReadCache {
            ttl: TimeDelta::milliseconds(i64::try_from(ttl_ms).unwrap_or(i64::MAX)),
            clock,
            generation: AtomicU64::new(0),
            answers: quick_cache::sync::Cache::new(CAPACITY),
        }
    }

    /// The kept answer to `query` when it is fresh, else a ticket to keep
    /// the answer about to be read.
    pub fn get(&self, query: &str) -> Result<Bytes, Ticket> {
        let ticket = Ticket { generation: self.generation.load(Ordering::Acquire), read_at: self.clock.now() };
        if self.ttl > TimeDelta::zero()
            && let Some(k) = self.answers.get(query)
            && k.generation == ticket.generation
            && ticket.read_at >= k.read_at
            && ticket.read_at - k.read_at < self.ttl
        {
            return Ok(k.body);
        }
        Err(ticket)
    }

    /// Keeps `body` as the answer to `query` read after `ticket` was taken;
    /// an answer read across a change is not kept.
    pub fn put(&self, query: &str, ticket: Ticket, body: Bytes) {
        if self.ttl > TimeDelta::zero() && ticket.generation == self.generation.load(Ordering::Acquire) {
            self.answers
                .insert(query.to_string(), Kept { generation: ticket.generation, read_at: ticket.read_at, body });
        }
    }

    /// Drops every kept answer (something changed).
    pub fn changed(&self) {
        self.generation.fetch_add(1, Ordering::AcqRel);
    }
}

/// A JSON answer of `body` (kept or just serialized).
pub fn json(body: Bytes) -> Response {
    ([(header::CONTENT_TYPE, HeaderValue::from_static("application/json"))], body).into_response()
}

/// The service that answers `GET /api/v1/apps` from a fresh kept answer
/// once the guard's checks pass, and hands every other request to `inner`
/// (the route).
#[derive(Clone)]
pub struct Early<S> {
    state: ApiState,
    inner: S,
}

impl<S> Early<S> {
    /// `inner` with kept answers of `state` served early.
    pub fn new(state: ApiState, inner: S) -> Early<S> {
        Early { state, inner }
    }
}

impl<S> Service<Request> for Early<S>
where
    S: Service<Request, Response = Response, Error = Infallible> + Clone + Send + 'static,
    S::Future: Send + 'static,
{
    type Response = Response;
    type Error = Infallible;
    type Future = Either<BoxFuture<'static, Result<Response, Infallible>>, S::Future>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: Request) -> Self::Future {
        if req.method() == Method::GET && req.uri().path() == PATH {
            // the same key as the handler's (`RawQuery`: the query string as sent)
            if let Ok(body) = self.state.reads().get(req.uri().query().unwrap_or_default()) {
                let state = self.state.clone();
                let authorization = req.headers().get(header::AUTHORIZATION).cloned();
                return Either::Left(Box::pin(async move {
                    Ok(access::check(&state, authorization.as_ref(), ROLE).await.unwrap_or_else(|| json(body)))
                }));
            }
        }
        Either::Right(self.inner.call(req))
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use dc_scheduler::ManualClock;

    use super::*;

    #[test]
    fn answers_are_kept_for_the_ttl_and_dropped_on_a_change() {
        let clock = Arc::new(ManualClock::new(Utc::now()));
        let c = ReadCache::new(1000, clock.clone());
        let t = c.get("limit=5").expect_err("nothing kept yet");
        c.put("limit=5", t, Bytes::from_static(b"one"));
        assert_eq!(c.get("limit=5").ok(), Some(Bytes::from_static(b"one")));
        assert!(c.get("limit=6").is_err(), "by query string");
        clock.advance(Duration::from_millis(999));
        assert!(c.get("limit=5").is_ok());
        clock.advance(Duration::from_millis(1));
        let t = c.get("limit=5").expect_err("1000 ms old: read again");
        c.put("limit=5", t, Bytes::from_static(b"two"));
        c.changed();
        assert!(c.get("limit=5").is_err(), "a change drops it");

        // read across a change: not kept
        let t = c.get("limit=5").expect_err("dropped");
        c.changed();
        c.put("limit=5", t, Bytes::from_static(b"stale"));
        assert!(c.get("limit=5").is_err());

        let off = ReadCache::new(0, clock);
        let t = off.get("").expect_err("off");
        off.put("", t, Bytes::from_static(b"x"));
        assert!(off.get("").is_err());
    }
}
