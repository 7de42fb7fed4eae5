//! Live event streams (Server-Sent Events) of a run or an app: their state
//! and new log records, read from the database by ONE task per topic (a run
//! or an app) however many clients watch it, and fanned out to the clients.
//!
//! - A topic's hub polls the database every [`POLL`]: the run's (or app's)
//!   row, then the log records after the last id it sent. Its state goes into
//!   a `watch` channel (a client always sees the newest state and never falls
//!   behind on it); log records into a bounded `broadcast` channel. A client
//!   that reads slower than records arrive loses the oldest ones and is told
//!   so (`lagged`); sending never waits for a client, so no client slows the
//!   host or the other clients.
//! - A hub ends when its last client has gone, or, for a run, shortly after
//!   the run has ended (after [`END_POLLS`] more polls for the records its
//!   worker writes last); its clients then get an `end` event.
//! - A client starts from its own cursor: before going live it reads the
//!   records up to the id the hub had sent when it subscribed
//!   ([`Subscription::through`]), so nothing falls between the two.
//! - Browsers' `EventSource` cannot send an `Authorization` header, so a
//!   holder of a bearer token may trade it for a *stream ticket*: random,
//!   accepted once, for [`TICKET_TTL`], only on the event routes (as
//!   `?ticket=`), and kept in this process's memory only.

use std::collections::HashMap;
use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::{Arc, Mutex, Weak};
use std::time::{Duration, Instant};

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use dc_core::Database;
use dc_core::access::Principal;
use dc_core::logs::{self, LogEntry, LogQuery};
use serde_json::Value;
use tokio::sync::{broadcast, watch};

/// How often a hub reads the database.
pub const POLL: Duration = Duration::from_millis(250);
/// Polls a run's hub goes on after the run has ended (records its worker
/// flushes last).
pub const END_POLLS: u32 = 2;
/// Log records a hub keeps for slow clients before they lag.
pub const LOG_BUFFER: usize = 256;
/// Records read per query.
const PAGE: i64 = 500;
/// How long a stream ticket is valid.
pub const TICKET_TTL: Duration = Duration::from_secs(30);
/// Unused tickets one process keeps at most.
const MAX_TICKETS: usize = 10_000;

/// What a stream watches.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Topic {
    /// A run (its full id).
    Run(dc_core::RuntimeId),
    /// An app (its full id).
    App(dc_core::AppId),
}

/// A topic's state as its clients see it.
#[derive(Debug, Clone, PartialEq)]
pub struct Snapshot {
    /// The run or app, as `GET /runs/{id}` or `GET /apps/{id}` shows it.
    pub json: Value,
    /// The run has ended (never for an app).
    pub ended: bool,
}

/// Reads a topic's state: `None` when it no longer exists.
pub type ReadState =
    fn(Database, Topic) -> std::pin::Pin<Box<dyn Future<Output = Result<Option<Snapshot>, String>> + Send>>;

/// A client's view of a hub.
#[derive(Debug)]
pub struct Subscription {
    /// New log records of the topic (every level; the client filters).
    pub logs: broadcast::Receiver<Arc<LogEntry>>,
    /// The topic's newest state (`None` before the hub's first poll).
    pub state: watch::Receiver<Option<Arc<Snapshot>>>,
    /// Records with an id up to this one were sent before this subscription:
    /// the client reads them itself.
    pub through: i64,
}

struct Hub {
    logs: broadcast::Sender<Arc<LogEntry>>,
    state: watch::Receiver<Option<Arc<Snapshot>>>,
    through: Arc<AtomicI64>,
}

/// The hubs and stream tickets of one API.
#[derive(Default)]
pub struct Streams {
    hubs: Mutex<HashMap<Topic, Hub>>,
    tickets: Mutex<HashMap<String, (Principal, Instant)>>,
}

impl std::fmt::Debug for Streams {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Streams").field("hubs", &self.hub_count()).finish_non_exhaustive()
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

impl Streams {
    /// Hubs running now (one per watched topic).
    pub fn hub_count(&self) -> usize {
        lock(&self.hubs).len()
    }

    /// Subscribes to `topic`, starting its hub when none runs. `newest` is
    /// the newest log id when the caller asked (a new hub starts after it).
    pub fn subscribe(self: &Arc<Self>, db: &Database, topic: Topic, newest: i64, read: ReadState) -> Subscription {
        let mut hubs = lock(&self.hubs);
        if let Some(h) = hubs.get(&topic) {
            // subscribe first, then read how far the hub got: a record it
            // sends after this load is received, one before is read back
            let logs = h.logs.subscribe();
            let through = h.through.load(Ordering::SeqCst);
            return Subscription { logs, state: h.state.clone(), through };
        }
        let (log_tx, logs) = broadcast::channel(LOG_BUFFER);
        let (state_tx, state) = watch::channel(None);
        let through = Arc::new(AtomicI64::new(newest));
        hubs.insert(topic.clone(), Hub { logs: log_tx.clone(), state: state.clone(), through: through.clone() });
        let hub = HubTask {
            db: db.clone(),
            topic,
            logs: log_tx,
            state: state_tx,
            through: through.clone(),
            streams: Arc::downgrade(self),
            read,
        };
        tokio::spawn(hub.run());
        Subscription { logs, state, through: newest }
    }

    /// A new stream ticket for `who`.
    pub fn issue_ticket(&self, who: Principal) -> Result<String, String> {
        let mut bytes = [0u8; 32];
        getrandom::fill(&mut bytes).map_err(|e| format!("no randomness for a stream ticket: {e}"))?;
        let ticket = URL_SAFE_NO_PAD.encode(bytes);
        let now = Instant::now();
        let mut tickets = lock(&self.tickets);
        tickets.retain(|_, (_, at)| now.duration_since(*at) < TICKET_TTL);
        if tickets.len() >= MAX_TICKETS {
            return Err(format!("{MAX_TICKETS} stream tickets are waiting to be used; try again in a few seconds"));
        }
        tickets.insert(ticket.clone(), (who, now));
        Ok(ticket)
    }

    /// The principal of an unused, unexpired ticket; a ticket is accepted once.
    pub fn redeem_ticket(&self, ticket: &str) -> Option<Principal> {
        let (who, at) = lock(&self.tickets).remove(ticket)?;
        (at.elapsed() < TICKET_TTL).then_some(who)
    }
}

struct HubTask {
    db: Database,
    topic: Topic,
    logs: broadcast::Sender<Arc<LogEntry>>,
    state: watch::Sender<Option<Arc<Snapshot>>>,
    through: Arc<AtomicI64>,
    streams: Weak<Streams>,
    read: ReadState,
}

impl HubTask {
    async fn run(self) {
        tracing::debug!(topic = ?self.topic, "event hub started");
        let mut tick = tokio::time::interval(POLL);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut polls_after_end = 0;
        loop {
            tick.tick().await;
            // the state first, then the records: after a run's final state
            // the records written before it are read in the same poll
            let snap = match (self.read)(self.db.clone(), self.topic.clone()).await {
                Ok(s) => s,
                Err(e) => {
                    tracing::warn!(topic = ?self.topic, error = %e, "event hub: reading the state failed; retrying");
                    continue;
                }
            };
            if let Err(e) = self.send_new_logs().await {
                tracing::warn!(topic = ?self.topic, error = %e, "event hub: reading log records failed; retrying");
            }
            let gone = snap.is_none();
            let ended = snap.as_ref().is_none_or(|s| s.ended);
            if let Some(snap) = snap {
                self.state.send_if_modified(|cur| {
                    if cur.as_deref() == Some(&snap) {
                        false
                    } else {
                        *cur = Some(Arc::new(snap));
                        true
                    }
                });
            }
            if ended {
                polls_after_end += 1;
            }
            let Some(streams) = self.streams.upgrade() else { return };
            let mut hubs = lock(&streams.hubs);
            if self.logs.receiver_count() == 0 || gone || polls_after_end > END_POLLS {
                if hubs.get(&self.topic).is_some_and(|h| Arc::ptr_eq(&h.through, &self.through)) {
                    hubs.remove(&self.topic);
                }
                tracing::debug!(topic = ?self.topic, "event hub ended");
                // dropping the senders ends the clients' streams
                return;
            }
        }
    }

    async fn send_new_logs(&self) -> Result<(), dc_core::DbError> {
        let (app_id, runtime_id) = match &self.topic {
            Topic::Run(id) => (None, Some(id.clone())),
            Topic::App(id) => (Some(id.clone()), None),
        };
        loop {
            let q = LogQuery {
                app_id: app_id.clone(),
                runtime_id: runtime_id.clone(),
                after_id: Some(self.through.load(Ordering::SeqCst)),
                limit: PAGE,
                ..LogQuery::default()
            };
            let rows = logs::query(&self.db, &q).await?;
            let n = rows.len();
            for row in rows {
                // published before sending: see `Streams::subscribe`
                self.through.store(row.id, Ordering::SeqCst);
                // no receiver is not an error: the hub ends at the next check
                let _ = self.logs.send(Arc::new(row));
            }
            if n < PAGE as usize {
                return Ok(());
            }
        }
    }
}
