//! The topology, declared (idempotently) by every publisher and consumer:
//!
//! ```text
//! publisher ──(routing key "command")──▶ <exchange>  (direct, durable)
//!                                          │ bound with "command"
//!                                          ▼
//!          <queue> (durable; x-dead-letter-exchange = <exchange>.dead)
//!            │ consumed by every `dc-host serve` (competing consumers, manual acks)
//!            │ rejected without requeue (malformed, unknown app)
//!            ▼
//!          <exchange>.dead (fanout, durable) ──▶ <queue>.dead (durable; kept for an operator)
//! ```
//!
//! Defaults: exchange and queue `dc.commands`, dead letters in
//! `dc.commands.dead` (an exchange and a queue of that name).

use lapin::options::{ExchangeDeclareOptions, QueueBindOptions, QueueDeclareOptions};
use lapin::types::{AMQPValue, FieldTable};
use lapin::{Channel, ExchangeKind};

/// The routing key of command messages (and the queue's binding).
pub const ROUTING_KEY: &str = "command";

/// The names of the exchange and queues.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Topology {
    /// Direct exchange commands are published to.
    pub exchange: String,
    /// The queue serving hosts consume.
    pub queue: String,
    /// Fanout exchange rejected messages go to (`<exchange>.dead`).
    pub dead_exchange: String,
    /// Where rejected messages are kept (`<queue>.dead`).
    pub dead_queue: String,
}

impl Topology {
    /// The topology for an exchange and a queue name.
    pub fn new(exchange: &str, queue: &str) -> Topology {
        Topology {
            exchange: exchange.to_string(),
            queue: queue.to_string(),
            dead_exchange: format!("{exchange}.dead"),
            dead_queue: format!("{queue}.dead"),
        }
    }

    /// The main queue's arguments: where its rejected messages go.
    fn queue_args(&self) -> FieldTable {
        let mut args = FieldTable::default();
        args.insert("x-dead-letter-exchange".into(), AMQPValue::LongString(self.dead_exchange.as_str().into()));
        args
    }

    /// Declares everything (a no-op when it exists with the same settings).
    /// On failure: what was being declared, and the error.
    pub async fn declare(&self, ch: &Channel) -> Result<(), (String, lapin::Error)> {
        let durable = ExchangeDeclareOptions { durable: true, ..Default::default() };
        let q_durable = QueueDeclareOptions { durable: true, ..Default::default() };
        let what = |kind: &str, name: &str| format!("declaring {kind} {name}");
        ch.exchange_declare(&self.dead_exchange, ExchangeKind::Fanout, durable, FieldTable::default())
            .await
            .map_err(|e| (what("exchange", &self.dead_exchange), e))?;
        ch.queue_declare(&self.dead_queue, q_durable, FieldTable::default())
            .await
            .map_err(|e| (what("queue", &self.dead_queue), e))?;
        ch.queue_bind(&self.dead_queue, &self.dead_exchange, "", QueueBindOptions::default(), FieldTable::default())
            .await
            .map_err(|e| (what("the binding of", &self.dead_queue), e))?;
        ch.exchange_declare(&self.exchange, ExchangeKind::Direct, durable, FieldTable::default())
            .await
            .map_err(|e| (what("exchange", &self.exchange), e))?;
        ch.queue_declare(&self.queue, q_durable, self.queue_args())
            .await
            .map_err(|e| (what("queue", &self.queue), e))?;
        ch.queue_bind(&self.queue, &self.exchange, ROUTING_KEY, QueueBindOptions::default(), FieldTable::default())
            .await
            .map_err(|e| (what("the binding of", &self.queue), e))?;
        Ok(())
    }
}

/// A lapin error in words, with the fix for the refusals an operator can cause.
pub fn explain(e: &lapin::Error) -> String {
    let text = e.to_string();
    if text.contains("PRECONDITION_FAILED") || text.contains("PRECONDITION-FAILED") {
        format!(
            "{text}; an exchange or queue of that name exists with other settings (type, durability or dead-letter \
             exchange): delete it in RabbitMQ, or set broker.exchange / broker.queue to unused names"
        )
    } else if text.contains("ACCESS_REFUSED") || text.contains("ACCESS-REFUSED") {
        format!("{text}; give the broker.url user configure, write and read permissions on the vhost")
    } else {
        text
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dead_letter_names_follow_the_configured_names() {
        let t = Topology::new("dc.commands", "dc.commands");
        assert_eq!((t.dead_exchange.as_str(), t.dead_queue.as_str()), ("dc.commands.dead", "dc.commands.dead"));
        match t.queue_args().inner().get("x-dead-letter-exchange") {
            Some(AMQPValue::LongString(s)) => assert_eq!(s.to_string(), "dc.commands.dead"),
            other => panic!("{other:?}"),
        }
    }
}
