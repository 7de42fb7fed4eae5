//! The RabbitMQ command source of `serve` (when `broker.url` is set): a
//! consumer task that records each message's command in the database with
//! `apps::queue_command`, the same path `dc-host apps start` takes, then wakes
//! the manager so it claims pending commands at once instead of at its next
//! tick. The database claim keeps a command to one run when several hosts
//! receive it. A message marked `recorded` (the CLI queued the command in the
//! database before publishing it) only wakes the manager, so a message
//! consumed after a host already claimed its command never runs it twice.

use std::sync::Arc;

use dc_broker::{Broker, CommandMessage, ConsumerEvent, Disposition};
use dc_core::apps;
use dc_core::{Database, DbError};
use tokio::sync::{Notify, mpsc, watch};

use crate::manager::Event;

/// Finds the app a message names: its id, or exactly `group/parent/name`.
async fn find_app(db: &Database, spec: &str) -> Result<Option<apps::AppRow>, DbError> {
    if let Ok(id) = dc_core::AppId::parse(spec)
        && let Some(a) = apps::get_app(db, &id).await?
    {
        return Ok(Some(a));
    }
    Ok(apps::list_apps(db).await?.into_iter().find(|a| a.path() == spec))
}

/// Records one message's command; what to tell the broker.
async fn record(db: &Database, msg: &CommandMessage, wake: &Notify) -> Disposition {
    if msg.recorded {
        wake.notify_one();
        return Disposition::Ack;
    }
    let app = match find_app(db, &msg.app_id).await {
        Ok(Some(a)) => a,
        Ok(None) => {
            return Disposition::Reject(format!(
                "field `app_id`: no app {:?} in this host's database; use an app id or group/parent/name from `dc-host apps list`",
                msg.app_id
            ));
        }
        // the database failed: the message waits for it
        Err(e) => return Disposition::Requeue(format!("cannot read the apps: {e}")),
    };
    match apps::queue_command(db, &app.app_id, msg.command).await {
        Ok(()) => {
            wake.notify_one();
            Disposition::Ack
        }
        Err(e) => Disposition::Requeue(format!("cannot queue {} for {}: {e}", msg.command.as_str(), app.path())),
    }
}

fn event(e: ConsumerEvent) -> Event {
    match e {
        ConsumerEvent::Connected { queue } => Event::BrokerConnected { queue },
        ConsumerEvent::Down { error, attempt, retry_in } => {
            Event::BrokerDown { error, attempt, retry_in_ms: retry_in.as_millis().try_into().unwrap_or(u64::MAX) }
        }
        ConsumerEvent::Rejected { message_id, reason } => Event::MessageRejected { message_id, reason },
        ConsumerEvent::Requeued { message_id, reason } => Event::MessageRequeued { message_id, reason },
    }
}

/// Starts the consumer task; it ends when `shutdown` turns true.
pub(crate) fn start(
    broker: Broker,
    db: Database,
    host: &str,
    wake: Arc<Notify>,
    events: mpsc::UnboundedSender<Event>,
    shutdown: watch::Receiver<bool>,
) -> tokio::task::JoinHandle<()> {
    let name = format!("dc-host serve on {host}");
    tokio::spawn(async move {
        let handler = |msg: CommandMessage| {
            let (db, wake, events) = (db.clone(), wake.clone(), events.clone());
            async move {
                let d = record(&db, &msg, &wake).await;
                if d == Disposition::Ack {
                    let _ = events.send(Event::Message {
                        id: msg.id.clone(),
                        app: msg.app_id.clone(),
                        command: msg.command.as_str().to_string(),
                        recorded: msg.recorded,
                    });
                }
                d
            }
        };
        let on_event = |e: ConsumerEvent| {
            let _ = events.send(event(e));
        };
        broker.consume(&name, handler, on_event, shutdown).await;
    })
}
