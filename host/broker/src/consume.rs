//! The consumer `dc-host serve` runs: manual acks, one message handled at a
//! time per host (prefetch 1, so competing hosts share the queue), and
//! reconnection with capped exponential backoff when the connection or the
//! channel drops (a broker restart): each attempt is reported, and consuming
//! resumes by itself.
//!
//! Ack semantics: a message is acked only after the handler returns
//! [`Disposition::Ack`] (the command is recorded in the database); a
//! [`Disposition::Requeue`] (the database failed) is nacked with requeue after
//! a pause, so it is delivered again; a malformed message or a
//! [`Disposition::Reject`] is rejected without requeue and lands in the
//! dead-letter queue. A message whose ack was lost with the connection is
//! delivered again (at least once).

use std::future::Future;
use std::time::Duration;

use futures_util::StreamExt;
use lapin::options::{BasicAckOptions, BasicConsumeOptions, BasicNackOptions, BasicQosOptions, BasicRejectOptions};
use lapin::types::FieldTable;
use tokio::sync::watch;

use crate::message::CommandMessage;
use crate::{Broker, BrokerError};

/// The first wait before reconnecting; it doubles per failed attempt.
pub const FIRST_BACKOFF: Duration = Duration::from_millis(500);
/// The longest wait between reconnection attempts.
pub const MAX_BACKOFF: Duration = Duration::from_secs(30);
/// How long a message the handler could not record waits before it is requeued.
pub const REQUEUE_PAUSE: Duration = Duration::from_secs(1);

/// What the handler decided about a message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Disposition {
    /// Recorded: ack.
    Ack,
    /// Not recorded for a reason that may pass (the database is down): nack
    /// with requeue.
    Requeue(String),
    /// Never acceptable (an unknown app): reject to the dead-letter queue.
    Reject(String),
}

/// What the consumer did, for the serve loop's events and the log.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ConsumerEvent {
    /// Connected, topology declared, consuming.
    Connected {
        /// The queue.
        queue: String,
    },
    /// The connection failed or dropped; the next attempt comes after `retry_in`.
    Down {
        /// What happened.
        error: String,
        /// Failed attempts in a row.
        attempt: u32,
        /// The wait before the next attempt.
        retry_in: Duration,
    },
    /// A message was rejected to the dead-letter queue.
    Rejected {
        /// Its `message_id` property, if any.
        message_id: Option<String>,
        /// What was wrong.
        reason: String,
    },
    /// A message could not be recorded and was requeued.
    Requeued {
        /// Its id.
        message_id: String,
        /// Why.
        reason: String,
    },
}

/// The wait before reconnection attempt `attempt` (1, 2, …): 0.5 s doubling,
/// at most [`MAX_BACKOFF`].
pub fn backoff(attempt: u32) -> Duration {
    let factor = 2u32.saturating_pow(attempt.saturating_sub(1).min(16));
    FIRST_BACKOFF.saturating_mul(factor).min(MAX_BACKOFF)
}

enum Ended {
    Shutdown,
    Lost(String),
}

impl Broker {
    /// Consumes until `shutdown` turns true, reconnecting as long as it
    /// takes. `handler` gets every well-formed message; `on_event` hears about
    /// connections, drops and rejected messages.
    pub async fn consume<H, F>(
        &self,
        name: &str,
        handler: H,
        on_event: impl Fn(ConsumerEvent),
        mut shutdown: watch::Receiver<bool>,
    ) where
        H: Fn(CommandMessage) -> F,
        F: Future<Output = Disposition>,
    {
        let mut attempt = 0u32;
        while !*shutdown.borrow() {
            let error = match self.session(name, &handler, &on_event, &mut attempt, &mut shutdown).await {
                Ok(Ended::Shutdown) => return,
                Ok(Ended::Lost(why)) => why,
                Err(e) => e.to_string(),
            };
            attempt = attempt.saturating_add(1);
            let retry_in = backoff(attempt);
            tracing::warn!(broker = %self.shown_url(), attempt, retry_in_ms = retry_in.as_millis() as u64, %error, "broker connection lost; reconnecting");
            on_event(ConsumerEvent::Down { error, attempt, retry_in });
            tokio::select! {
                () = tokio::time::sleep(retry_in) => {}
                _ = shutdown.changed() => {}
            }
        }
    }

    async fn session<H, F>(
        &self,
        name: &str,
        handler: &H,
        on_event: &impl Fn(ConsumerEvent),
        attempt: &mut u32,
        shutdown: &mut watch::Receiver<bool>,
    ) -> Result<Ended, BrokerError>
    where
        H: Fn(CommandMessage) -> F,
        F: Future<Output = Disposition>,
    {
        let conn = self.connect(name).await?;
        let channel = conn.create_channel().await.map_err(|e| self.refused("a channel", e))?;
        self.topology.declare(&channel).await.map_err(|(what, e)| self.refused(&what, e))?;
        channel.basic_qos(1, BasicQosOptions::default()).await.map_err(|e| self.refused("basic.qos", e))?;
        let mut consumer = channel
            .basic_consume(&self.topology.queue, name, BasicConsumeOptions::default(), FieldTable::default())
            .await
            .map_err(|e| self.refused(&format!("consuming from queue {}", self.topology.queue), e))?;
        *attempt = 0;
        tracing::info!(broker = %self.shown_url(), queue = %self.topology.queue, "consuming commands");
        on_event(ConsumerEvent::Connected { queue: self.topology.queue.clone() });
        loop {
            let delivery = tokio::select! {
                next = consumer.next() => next,
                _ = shutdown.changed() => {
                    // unacked messages go back to the queue for another host
                    let _ = conn.close(200, "dc-host serve is shutting down").await;
                    return Ok(Ended::Shutdown);
                }
            };
            let delivery = match delivery {
                Some(Ok(d)) => d,
                Some(Err(e)) => return Ok(Ended::Lost(e.to_string())),
                None => return Ok(Ended::Lost("the broker ended the consumer".into())),
            };
            let message_id = delivery.properties.message_id().as_ref().map(|s| s.to_string());
            let lost = |e: lapin::Error| Ended::Lost(format!("cannot settle a message: {e}"));
            let outcome = match CommandMessage::parse(&delivery.data) {
                Err(e) => Disposition::Reject(format!("malformed command message: {e}")),
                Ok(msg) => handler(msg).await,
            };
            match outcome {
                Disposition::Ack => {
                    if let Err(e) = delivery.ack(BasicAckOptions::default()).await {
                        return Ok(lost(e));
                    }
                }
                Disposition::Requeue(reason) => {
                    let id = message_id.unwrap_or_default();
                    tracing::warn!(message_id = %id, %reason, "command message requeued");
                    on_event(ConsumerEvent::Requeued { message_id: id, reason });
                    tokio::time::sleep(REQUEUE_PAUSE).await;
                    if let Err(e) = delivery.nack(BasicNackOptions { requeue: true, multiple: false }).await {
                        return Ok(lost(e));
                    }
                }
                Disposition::Reject(reason) => {
                    tracing::warn!(message_id = ?message_id, %reason, dead_letter_queue = %self.topology.dead_queue, "command message rejected");
                    on_event(ConsumerEvent::Rejected { message_id, reason });
                    if let Err(e) = delivery.reject(BasicRejectOptions { requeue: false }).await {
                        return Ok(lost(e));
                    }
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_up_to_its_cap() {
        assert_eq!(backoff(1), Duration::from_millis(500));
        assert_eq!(backoff(2), Duration::from_secs(1));
        assert_eq!(backoff(4), Duration::from_secs(4));
        assert_eq!(backoff(7), MAX_BACKOFF);
        assert_eq!(backoff(u32::MAX), MAX_BACKOFF);
    }
}
