//! The health check behind `dc-host broker check`: connect, declare the
//! exchange and the queues passively (never creating them), and read the
//! queue's depth and consumer count and the dead-letter queue's depth.

use lapin::options::{ExchangeDeclareOptions, QueueDeclareOptions};
use lapin::types::FieldTable;
use lapin::{Connection, ExchangeKind};
use serde::Serialize;

use crate::{Broker, topology};

/// What the check found.
#[derive(Debug, Clone, Serialize)]
pub struct Health {
    /// True when connected and every part of the topology exists.
    pub ok: bool,
    /// The broker, password hidden.
    pub url: String,
    /// Connected.
    pub connected: bool,
    /// The exchange.
    pub exchange: String,
    /// The queue.
    pub queue: String,
    /// Messages waiting in the queue.
    pub messages: Option<u32>,
    /// Consumers on the queue (serving hosts).
    pub consumers: Option<u32>,
    /// The dead-letter queue.
    pub dead_queue: String,
    /// Messages in the dead-letter queue.
    pub dead_messages: Option<u32>,
    /// What is wrong, with what to do.
    pub problems: Vec<String>,
}

const NOT_DECLARED: &str =
    "it is declared by `dc-host serve` (or the first `dc-host apps start` with a broker configured)";

impl Broker {
    /// Checks the broker; never declares anything.
    pub async fn check(&self) -> Health {
        let t = &self.topology;
        let mut h = Health {
            ok: false,
            url: self.shown_url(),
            connected: false,
            exchange: t.exchange.clone(),
            queue: t.queue.clone(),
            messages: None,
            consumers: None,
            dead_queue: t.dead_queue.clone(),
            dead_messages: None,
            problems: Vec::new(),
        };
        let conn = match self.connect("dc-host broker check").await {
            Ok(c) => c,
            Err(e) => {
                h.problems.push(e.to_string());
                return h;
            }
        };
        h.connected = true;
        // a passive declaration of something absent closes its channel: one channel each
        let passive = ExchangeDeclareOptions { passive: true, ..Default::default() };
        for (name, kind) in [(&t.exchange, ExchangeKind::Direct), (&t.dead_exchange, ExchangeKind::Fanout)] {
            let r = match conn.create_channel().await {
                Ok(ch) => ch.exchange_declare(name, kind, passive, FieldTable::default()).await,
                Err(e) => Err(e),
            };
            if let Err(e) = r {
                h.problems.push(format!("exchange {name}: {}; {NOT_DECLARED}", topology::explain(&e)));
            }
        }
        match declare_passive(&conn, &t.queue).await {
            Ok((messages, consumers)) => {
                h.messages = Some(messages);
                h.consumers = Some(consumers);
            }
            Err(e) => h.problems.push(format!("queue {}: {e}; {NOT_DECLARED}", t.queue)),
        }
        match declare_passive(&conn, &t.dead_queue).await {
            Ok((messages, _)) => h.dead_messages = Some(messages),
            Err(e) => h.problems.push(format!("queue {}: {e}; {NOT_DECLARED}", t.dead_queue)),
        }
        let _ = conn.close(200, "checked").await;
        h.ok = h.problems.is_empty();
        h
    }
}

async fn declare_passive(conn: &Connection, queue: &str) -> Result<(u32, u32), String> {
    let ch = conn.create_channel().await.map_err(|e| topology::explain(&e))?;
    let q = ch
        .queue_declare(queue, QueueDeclareOptions { passive: true, ..Default::default() }, FieldTable::default())
        .await
        .map_err(|e| topology::explain(&e))?;
    Ok((q.message_count(), q.consumer_count()))
}
