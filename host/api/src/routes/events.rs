//! Live streams (Server-Sent Events): `GET /runs/{runtime_id}/events` and
//! `GET /apps/{app_id}/events`, the stream tickets browsers use to open them
//! (`POST /stream-tickets`), and `GET /me` (who the token stands for, so the
//! dashboard shows only the buttons the role may use). The hubs behind the
//! streams are in [`crate::stream`].
//!
//! Events: `state` (the run or app as `GET` shows it, whenever it changes;
//! the current one first), `log` (a log record; its SSE `id` is the record
//! id, so a reconnecting `EventSource` resumes after it with
//! `Last-Event-ID`), `lagged` (`{"skipped": N}`: records this client read too
//! slowly to get), `truncated` (`{"after": ID}`: the backlog was longer than
//! [`BACKLOG_MAX`]; older records are at `GET /logs?cursor`) and `end` (the
//! run has ended, or the server shuts down; the stream closes).

use std::collections::VecDeque;
use std::convert::Infallible;
use std::sync::Arc;

use axum::extract::{Extension, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::sse::{Event, KeepAlive, Sse};
use dc_core::access::{Principal, Role};
use dc_core::logs::{LogEntry, LogQuery};
use futures_util::Stream;
use serde::{Deserialize, Serialize};
use serde_json::json;
use tokio::sync::{broadcast, watch};
use utoipa::{IntoParams, ToSchema};

use crate::extract::{ApiPath, ApiQuery};
use crate::routes::apps::App;
use crate::routes::logs::{LevelParam, LogRecord};
use crate::routes::runs::Run;
use crate::stream::{Snapshot, Subscription, TICKET_TTL, Topic};
use crate::{ApiError, ApiState, ErrorBody};

/// Records a stream sends from before it went live, at most.
pub const BACKLOG_MAX: usize = 2_000;

/// The caller.
#[derive(Debug, Serialize, ToSchema)]
pub struct Me {
    /// User name or client id.
    pub subject: String,
    /// `viewer`, `operator` or `admin`.
    #[schema(value_type = String)]
    pub role: Role,
}

/// Who the bearer token stands for, and its role. Role: viewer.
#[utoipa::path(get, path = "/api/v1/me", operation_id = "me", tag = "streams", security(("bearer" = [])), responses(
    (status = 200, body = Me),
    (status = 401, body = ErrorBody),
))]
pub async fn me(Extension(who): Extension<Principal>) -> axum::Json<Me> {
    axum::Json(Me { subject: who.subject, role: who.role })
}

/// A stream ticket.
#[derive(Debug, Serialize, ToSchema)]
pub struct Ticket {
    /// Pass as `?ticket=` to one event stream; accepted once.
    pub ticket: String,
    /// Seconds it is valid.
    pub expires_in: u64,
}

/// Trades the bearer token for a stream ticket: for browsers, whose
/// `EventSource` cannot send an `Authorization` header. A ticket opens one
/// event stream, once, within 30 s, as the token's subject; it is valid on
/// the event routes only and only on the host that issued it. Role: viewer.
#[utoipa::path(post, path = "/api/v1/stream-tickets", operation_id = "createStreamTicket", tag = "streams", security(("bearer" = [])), responses(
    (status = 201, body = Ticket),
    (status = 401, body = ErrorBody),
    (status = 503, description = "too many unused tickets", body = ErrorBody),
))]
pub async fn ticket(
    State(state): State<ApiState>,
    Extension(who): Extension<Principal>,
) -> Result<(StatusCode, axum::Json<Ticket>), ApiError> {
    let ticket = state
        .streams()
        .issue_ticket(who)
        .map_err(|e| ApiError::new(StatusCode::SERVICE_UNAVAILABLE, "unavailable", e))?;
    Ok((StatusCode::CREATED, axum::Json(Ticket { ticket, expires_in: TICKET_TTL.as_secs() })))
}

/// Filters of an event stream.
#[derive(Debug, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct EventParams {
    /// Only log records at this level or more severe.
    pub level: Option<LevelParam>,
    /// Send the log records after this id first (a `log` event's id; the
    /// `Last-Event-ID` header wins). Default: a run's stream from its first
    /// record, an app's from now on.
    pub after: Option<i64>,
    /// A stream ticket (`POST /stream-tickets`) instead of the
    /// `Authorization` header.
    #[expect(dead_code, reason = "the guard (access::guarded_stream) reads it; listed here for the document")]
    pub ticket: Option<String>,
}

/// Sent when the server shuts down, so open streams end and graceful
/// shutdown does not wait for them (`serve_router` adds it).
#[derive(Debug, Clone)]
pub struct Closing(pub watch::Receiver<bool>);

/// A run's state and log records, live, until it ends (text/event-stream).
/// Role: viewer (bearer token or stream ticket).
#[utoipa::path(get, path = "/api/v1/runs/{runtime_id}/events", operation_id = "runEvents", tag = "streams",
    security(("bearer" = []), ("ticket" = [])),
    params(("runtime_id" = String, Path, description = "run id or a unique prefix of 6+ characters"), EventParams),
    responses(
        (status = 200, content_type = "text/event-stream", body = String,
         description = "events `state` (a Run), `log` (a LogRecord, SSE id = record id), `lagged`, `truncated`, `end`"),
        (status = 401, body = ErrorBody), (status = 403, body = ErrorBody), (status = 404, body = ErrorBody),
        (status = 422, body = ErrorBody),
    ))]
pub async fn run_events(
    State(state): State<ApiState>,
    ApiPath(runtime_id): ApiPath<String>,
    ApiQuery(p): ApiQuery<EventParams>,
    headers: HeaderMap,
    closing: Option<Extension<Closing>>,
) -> Result<Sse<impl Stream<Item = Result<Event, Infallible>>>, ApiError> {
    let run = dc_core::runs::get(state.db(), &runtime_id).await?;
    let after = resume_after(&headers, p.after)?.unwrap_or(0);
    open(state, Topic::Run(run.runtime_id), after, p.level, closing).await
}

/// An app's state and log records, live (text/event-stream). Role: viewer
/// (bearer token or stream ticket).
#[utoipa::path(get, path = "/api/v1/apps/{app_id}/events", operation_id = "appEvents", tag = "streams",
    security(("bearer" = []), ("ticket" = [])),
    params(("app_id" = String, Path, description = "app id, unique id prefix (6+) or group/parent/name"), EventParams),
    responses(
        (status = 200, content_type = "text/event-stream", body = String,
         description = "events `state` (an App), `log` (a LogRecord, SSE id = record id), `lagged`, `truncated`"),
        (status = 401, body = ErrorBody), (status = 403, body = ErrorBody), (status = 404, body = ErrorBody),
        (status = 422, body = ErrorBody),
    ))]
pub async fn app_events(
    State(state): State<ApiState>,
    ApiPath(app_id): ApiPath<String>,
    ApiQuery(p): ApiQuery<EventParams>,
    headers: HeaderMap,
    closing: Option<Extension<Closing>>,
) -> Result<Sse<impl Stream<Item = Result<Event, Infallible>>>, ApiError> {
    let app = dc_core::apps::resolve_app(state.db(), &app_id).await?;
    let newest = dc_core::logs::last_id(state.db()).await?.unwrap_or(0);
    let after = resume_after(&headers, p.after)?.unwrap_or(newest);
    open(state, Topic::App(app.app_id), after, p.level, closing).await
}

/// The cursor of a reconnecting `EventSource` (`Last-Event-ID`) or `after`.
fn resume_after(headers: &HeaderMap, after: Option<i64>) -> Result<Option<i64>, ApiError> {
    match headers.get("last-event-id") {
        Some(v) => v
            .to_str()
            .ok()
            .and_then(|s| s.trim().parse::<i64>().ok())
            .map(Some)
            .ok_or_else(|| ApiError::invalid("Last-Event-ID must be a log record id (an integer)")),
        None => Ok(after),
    }
}

/// The state of a run for its stream (`None`: it was removed).
fn read_run(
    db: dc_core::Database,
    topic: Topic,
) -> std::pin::Pin<Box<dyn Future<Output = Result<Option<Snapshot>, String>> + Send>> {
    Box::pin(async move {
        let Topic::Run(id) = topic else { return Err("not a run".to_string()) };
        match dc_core::runs::get(&db, &id).await {
            Ok(r) => {
                let ended = !matches!(r.status.as_str(), "PENDING" | "RUNNING");
                let json = serde_json::to_value(Run::from(r)).map_err(|e| e.to_string())?;
                Ok(Some(Snapshot { json, ended }))
            }
            Err(e) if e.kind() == dc_core::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(e.to_string()),
        }
    })
}

/// The state of an app for its stream (`None`: it was removed).
fn read_app(
    db: dc_core::Database,
    topic: Topic,
) -> std::pin::Pin<Box<dyn Future<Output = Result<Option<Snapshot>, String>> + Send>> {
    Box::pin(async move {
        let Topic::App(id) = topic else { return Err("not an app".to_string()) };
        let Some(row) = dc_core::apps::get_app(&db, &id).await.map_err(|e| e.to_string())? else { return Ok(None) };
        let app = App::from_row(row).map_err(|e| format!("{e:?}"))?;
        let json = serde_json::to_value(app).map_err(|e| e.to_string())?;
        Ok(Some(Snapshot { json, ended: false }))
    })
}

async fn open(
    state: ApiState,
    topic: Topic,
    after: i64,
    level: Option<LevelParam>,
    closing: Option<Extension<Closing>>,
) -> Result<Sse<impl Stream<Item = Result<Event, Infallible>>>, ApiError> {
    let db = state.db();
    let newest = dc_core::logs::last_id(db).await?.unwrap_or(0);
    let read = match topic {
        Topic::Run(_) => read_run as crate::stream::ReadState,
        Topic::App(_) => read_app,
    };
    let Subscription { logs, state: snapshots, through } = state.streams().subscribe(db, topic.clone(), newest, read);
    // the records before the hub's: read here, from `after` to `through`
    let mut pending = VecDeque::new();
    let (app_id, runtime_id) = match &topic {
        Topic::Run(id) => (None, Some(id.clone())),
        Topic::App(id) => (Some(id.clone()), None),
    };
    let mut cursor = after;
    'backlog: while cursor < through {
        let q = LogQuery {
            app_id: app_id.clone(),
            runtime_id: runtime_id.clone(),
            min_level: level.map(LevelParam::level),
            after_id: Some(cursor),
            limit: 500,
            ..LogQuery::default()
        };
        let rows = dc_core::logs::query(db, &q).await?;
        if rows.is_empty() {
            break;
        }
        for row in rows {
            if row.id > through {
                break 'backlog;
            }
            if pending.len() >= BACKLOG_MAX {
                pending.push_back(Event::default().event("truncated").data(json!({"after": cursor}).to_string()));
                break 'backlog;
            }
            cursor = row.id;
            pending.push_back(log_event(&row));
        }
    }
    // the state comes first: the hub's, or (before its first poll) read here
    let mut snapshots = snapshots;
    let current = snapshots.borrow_and_update().clone();
    let first = match current {
        Some(snap) => Some(snap),
        None => read(db.clone(), topic.clone())
            .await
            .map_err(|e| ApiError::of_kind(dc_core::ErrorKind::Unavailable, e))?
            .map(Arc::new),
    };
    if let Some(snap) = &first {
        pending.push_front(state_event(snap));
    }
    let client = Client {
        pending,
        logs,
        snapshots,
        last_state: first,
        sent_through: after.max(through),
        min_rank: level.map(|l| rank(l.level())),
        closing: closing.map(|c| c.0.0),
        done: false,
        is_run: matches!(topic, Topic::Run(_)),
    };
    let stream = futures_util::stream::unfold(client, |mut c| async move { c.next().await.map(|e| (Ok(e), c)) });
    Ok(Sse::new(stream).keep_alive(KeepAlive::default()))
}

/// One client's stream.
struct Client {
    pending: VecDeque<Event>,
    logs: broadcast::Receiver<Arc<LogEntry>>,
    snapshots: watch::Receiver<Option<Arc<Snapshot>>>,
    /// The state sent last (the same one is not sent twice).
    last_state: Option<Arc<Snapshot>>,
    /// Live records up to this id were sent already (or were in the backlog).
    sent_through: i64,
    min_rank: Option<u8>,
    closing: Option<watch::Receiver<bool>>,
    done: bool,
    is_run: bool,
}

impl Client {
    async fn next(&mut self) -> Option<Event> {
        loop {
            if let Some(e) = self.pending.pop_front() {
                return Some(e);
            }
            if self.done {
                return None;
            }
            let closing = async {
                match &mut self.closing {
                    Some(rx) => {
                        let _ = rx.wait_for(|c| *c).await;
                    }
                    None => std::future::pending().await,
                }
            };
            tokio::select! {
                biased;
                _ = closing => {
                    self.done = true;
                    return Some(Event::default().event("end").data(json!({"reason": "the server is shutting down"}).to_string()));
                }
                got = self.logs.recv() => match got {
                    Ok(row) => {
                        if row.id > self.sent_through && self.min_rank.is_none_or(|m| level_rank(&row.row.level) >= m) {
                            self.sent_through = row.id;
                            return Some(log_event(&row));
                        }
                    }
                    Err(broadcast::error::RecvError::Lagged(n)) => {
                        return Some(Event::default().event("lagged").data(json!({"skipped": n}).to_string()));
                    }
                    Err(broadcast::error::RecvError::Closed) => {
                        // the hub ended: the final state (if not sent yet), then `end`
                        self.done = true;
                        if let Some(e) = self.state_if_new() {
                            self.pending.push_back(e);
                        }
                        let status = self.snapshots.borrow().as_ref().and_then(|s| s.json.get("status").cloned());
                        let why = if self.is_run { "the run has ended" } else { "the app is gone" };
                        self.pending.push_back(
                            Event::default().event("end").data(json!({"reason": why, "status": status}).to_string()),
                        );
                    }
                },
                changed = self.snapshots.changed() => {
                    if changed.is_ok()
                        && let Some(e) = self.state_if_new()
                    {
                        return Some(e);
                    }
                }
            }
        }
    }
}

impl Client {
    /// The hub's newest state, when it differs from the one sent last.
    fn state_if_new(&mut self) -> Option<Event> {
        let snap = self.snapshots.borrow_and_update().clone()?;
        if self.last_state.as_deref() == Some(&*snap) {
            return None;
        }
        let e = state_event(&snap);
        self.last_state = Some(snap);
        Some(e)
    }
}

fn state_event(snap: &Snapshot) -> Event {
    Event::default().event("state").data(snap.json.to_string())
}

fn log_event(row: &LogEntry) -> Event {
    let rec = LogRecord::from(row.clone());
    let data = serde_json::to_string(&rec).unwrap_or_else(|_| "{}".to_string());
    Event::default().event("log").id(row.id.to_string()).data(data)
}

fn rank(level: tracing::Level) -> u8 {
    match level {
        tracing::Level::TRACE => 1,
        tracing::Level::DEBUG => 2,
        tracing::Level::INFO => 3,
        tracing::Level::WARN => 4,
        tracing::Level::ERROR => 5,
    }
}

/// The rank of a stored level name (as `dc_core::logs::query` ranks them).
fn level_rank(level: &str) -> u8 {
    match level {
        "ERROR" => 5,
        "WARN" => 4,
        "INFO" => 3,
        "DEBUG" => 2,
        _ => 1,
    }
}
