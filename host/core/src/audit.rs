//! The control plane's audit log (`dc_audit`): one row per state-changing
//! request to the REST API or the token endpoint, written by `dc-api`'s audit
//! layer after the answer is known, read by admins (`GET /api/v1/audit`,
//! `dc-host audit list`). A row never holds a secret: who (subject and role,
//! none when the caller was not authenticated), what (method, route template,
//! target id, answered status), when, from where (client address), request id.

use chrono::{DateTime, Utc};
use serde::Serialize;

use crate::db::{Database, DbError};
use crate::{on_pool, on_tx};

/// The longest text any audit column keeps (longer values are cut), so a
/// caller cannot grow the log with huge names.
pub const MAX_TEXT: usize = 200;

/// One audited request, as the audit layer records it.
#[derive(Debug, Clone, Default)]
pub struct NewAuditEntry {
    /// When the answer was sent.
    pub at: DateTime<Utc>,
    /// The user name or client id (none: not authenticated, or unknown).
    pub subject: Option<String>,
    /// Its role (`viewer`, `operator`, `admin`; none when unknown).
    pub role: Option<String>,
    /// The HTTP method.
    pub method: String,
    /// The route template (`/api/v1/apps/{app_id}`).
    pub route: String,
    /// The id the route names (app, run), as the caller gave it.
    pub target: Option<String>,
    /// The status answered.
    pub status: u16,
    /// The client's address (the TCP peer).
    pub client_addr: Option<String>,
    /// The request's `x-request-id`.
    pub request_id: Option<String>,
}

/// One row of `dc_audit`.
#[derive(Debug, Clone, Serialize, sqlx::FromRow)]
pub struct AuditRow {
    /// Row id (grows with every entry).
    pub id: i64,
    /// When the answer was sent.
    pub at: DateTime<Utc>,
    /// The user name or client id (none: not authenticated).
    pub subject: Option<String>,
    /// Its role.
    pub role: Option<String>,
    /// The HTTP method.
    pub method: String,
    /// The route template.
    pub route: String,
    /// The id the route names.
    pub target: Option<String>,
    /// The status answered.
    pub status: i32,
    /// The client's address.
    pub client_addr: Option<String>,
    /// The request id.
    pub request_id: Option<String>,
}

/// A filtered page of the audit log, newest first ([`page`]).
#[derive(Debug, Clone, Default)]
pub struct AuditQuery {
    /// Only entries of this subject.
    pub subject: Option<String>,
    /// Only entries at or after this time.
    pub since: Option<DateTime<Utc>>,
    /// Only entries before this time.
    pub until: Option<DateTime<Utc>>,
    /// Continue with the entries older than this id.
    pub before_id: Option<i64>,
    /// At most this many.
    pub limit: i64,
}

fn cut(s: Option<String>) -> Option<String> {
    s.map(|s| if s.len() > MAX_TEXT { s.chars().take(MAX_TEXT).collect() } else { s })
}

/// Appends `e` to the audit log (texts longer than [`MAX_TEXT`] are cut).
pub async fn record(db: &Database, e: NewAuditEntry) -> Result<(), DbError> {
    let mut tx = db.begin_write().await?;
    let (subject, role, target) = (cut(e.subject), cut(e.role), cut(e.target));
    let (method, route) = (cut(Some(e.method)).unwrap_or_default(), cut(Some(e.route)).unwrap_or_default());
    let (client_addr, request_id) = (cut(e.client_addr), cut(e.request_id));
    on_tx!(&mut tx, conn => sqlx::query(
        "INSERT INTO dc_audit (at, subject, role, method, route, target, status, client_addr, request_id) \
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)")
        .bind(e.at).bind(&subject).bind(&role).bind(&method).bind(&route).bind(&target)
        .bind(i32::from(e.status)).bind(&client_addr).bind(&request_id)
        .execute(&mut *conn).await.map(|_| ()))?;
    tx.commit().await
}

/// A page of audit entries matching `q`, newest first.
pub async fn page(db: &Database, q: &AuditQuery) -> Result<Vec<AuditRow>, DbError> {
    Ok(on_pool!(db, pool => sqlx::query_as::<_, AuditRow>(
        "SELECT id, at, subject, role, method, route, target, status, client_addr, request_id FROM dc_audit \
         WHERE ($1 IS NULL OR subject = $1) AND ($2 IS NULL OR at >= $2) AND ($3 IS NULL OR at < $3) \
         AND ($4 IS NULL OR id < $4) ORDER BY id DESC LIMIT $5")
        .bind(&q.subject).bind(q.since).bind(q.until).bind(q.before_id).bind(q.limit)
        .fetch_all(pool).await)?)
}
