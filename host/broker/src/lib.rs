//! dc-broker: operator commands over RabbitMQ, the optional second path beside
//! the database (roadmap WP-08). Only this crate knows lapin.
//!
//! - [`topology`]: the durable exchange, the queue every `serve` consumes as a
//!   competing consumer, and the dead-letter exchange and queue.
//! - [`message`]: the versioned JSON command message.
//! - [`Broker::publish`]: publishes with publisher confirms.
//! - [`Broker::consume`]: manual acks, malformed messages dead-lettered,
//!   reconnection with capped exponential backoff.
//! - [`Broker::check`]: the health check behind `dc-host broker check`.
//!
//! The database stays the record of a command: a message only makes a
//! serving host act on it at once instead of at its next tick.

#![deny(missing_docs)]

pub mod consume;
pub mod health;
pub mod message;
pub mod topology;

use std::time::Duration;

use dc_core::settings::{BrokerSettings, redact_url};
use lapin::options::{BasicPublishOptions, ConfirmSelectOptions};
use lapin::publisher_confirm::Confirmation;
use lapin::types::{AMQPValue, FieldTable, ShortString};
use lapin::{BasicProperties, Connection, ConnectionProperties};

pub use consume::{ConsumerEvent, Disposition};
pub use health::Health;
pub use message::{CommandMessage, MessageError};
pub use topology::Topology;

/// How long connecting, and waiting for a publisher confirm, may take.
pub const TIMEOUT: Duration = Duration::from_secs(10);

/// A broker failure; the message names the broker (password hidden) and what to do.
#[derive(Debug, thiserror::Error)]
pub enum BrokerError {
    /// No connection.
    #[error(
        "cannot connect to the broker at {url}: {cause}; check broker.url (or DC_BROKER_URL) and that RabbitMQ runs (`dc-host broker check`)"
    )]
    Connect {
        /// The broker, password hidden.
        url: String,
        /// Why.
        cause: String,
    },
    /// The broker refused a declaration, a publish or an operation.
    #[error("the broker at {url} refused {what}: {cause}")]
    Refused {
        /// The broker, password hidden.
        url: String,
        /// What was asked.
        what: String,
        /// Its answer, with the fix where one is known.
        cause: String,
    },
    /// The broker did not confirm a message.
    #[error("the broker at {url} did not take the command message ({cause}); check it with `dc-host broker check`")]
    NotConfirmed {
        /// The broker, password hidden.
        url: String,
        /// Nack, returned as unroutable, or no confirm in time.
        cause: String,
    },
}

/// One configured broker: where it is and the names of its topology.
#[derive(Debug, Clone)]
pub struct Broker {
    url: String,
    /// The exchange and queues.
    pub topology: Topology,
}

impl Broker {
    /// The broker of `settings.broker` (with `${secret:…}` already resolved),
    /// or None when no `url` is set (commands go through the database only).
    pub fn from_settings(settings: &BrokerSettings) -> Option<Broker> {
        let url = settings.url.clone()?;
        Some(Broker { url, topology: Topology::new(&settings.exchange, &settings.queue) })
    }

    /// The URL with its password hidden, for messages and logs.
    pub fn shown_url(&self) -> String {
        redact_url(&self.url)
    }

    fn refused(&self, what: &str, e: lapin::Error) -> BrokerError {
        BrokerError::Refused { url: self.shown_url(), what: what.to_string(), cause: topology::explain(&e) }
    }

    /// Opens a connection named `name` (shown in RabbitMQ's management UI).
    pub(crate) async fn connect(&self, name: &str) -> Result<Connection, BrokerError> {
        let props = ConnectionProperties::default()
            .with_connection_name(name.into())
            .with_executor(tokio_executor_trait::Tokio::current())
            .with_reactor(tokio_reactor_trait::Tokio::current());
        let url = self.shown_url();
        match tokio::time::timeout(TIMEOUT, Connection::connect(&self.url, props)).await {
            Ok(Ok(c)) => Ok(c),
            Ok(Err(e)) => Err(BrokerError::Connect { url, cause: e.to_string() }),
            Err(_) => Err(BrokerError::Connect { url, cause: format!("no answer within {}s", TIMEOUT.as_secs()) }),
        }
    }

    /// Publishes one command with publisher confirms: Ok once the broker has
    /// taken it (routed to the queue, persistent). The topology is declared
    /// first, so a message published while no host serves waits in the queue.
    pub async fn publish(&self, msg: &CommandMessage) -> Result<(), BrokerError> {
        let conn = self.connect("dc-host publisher").await?;
        let result = self.publish_on(&conn, msg).await;
        let _ = conn.close(200, "published").await;
        result
    }

    async fn publish_on(&self, conn: &Connection, msg: &CommandMessage) -> Result<(), BrokerError> {
        let channel = conn.create_channel().await.map_err(|e| self.refused("a channel", e))?;
        self.topology.declare(&channel).await.map_err(|(what, e)| self.refused(&what, e))?;
        channel.confirm_select(ConfirmSelectOptions::default()).await.map_err(|e| self.refused("confirms", e))?;
        let mut headers = FieldTable::default();
        headers.insert("dc_message_version".into(), AMQPValue::LongUInt(message::MESSAGE_VERSION as u32));
        let props = BasicProperties::default()
            .with_content_type(ShortString::from(message::CONTENT_TYPE))
            .with_delivery_mode(2)
            .with_message_id(ShortString::from(msg.id.as_str()))
            .with_timestamp(msg.requested_at.timestamp().max(0) as u64)
            .with_type(ShortString::from(msg.command.as_str()))
            .with_app_id(ShortString::from("dc-host"))
            .with_headers(headers);
        let t = &self.topology;
        // mandatory: a message no queue takes comes back instead of vanishing
        let opts = BasicPublishOptions { mandatory: true, ..Default::default() };
        let body = msg.to_json();
        let confirm =
            async { channel.basic_publish(&t.exchange, topology::ROUTING_KEY, opts, &body, props).await?.await };
        let not_confirmed = |cause: String| BrokerError::NotConfirmed { url: self.shown_url(), cause };
        match tokio::time::timeout(TIMEOUT, confirm).await {
            Err(_) => Err(not_confirmed(format!("no confirm within {}s", TIMEOUT.as_secs()))),
            Ok(Err(e)) => Err(self.refused(&format!("a message to exchange {}", t.exchange), e)),
            Ok(Ok(Confirmation::Ack(None))) => Ok(()),
            Ok(Ok(Confirmation::Ack(Some(returned)))) => Err(not_confirmed(format!(
                "returned as unroutable ({}): no queue is bound to exchange {} with routing key {}",
                returned.reply_text,
                t.exchange,
                topology::ROUTING_KEY
            ))),
            Ok(Ok(Confirmation::Nack(_))) => Err(not_confirmed("the broker answered nack".into())),
            Ok(Ok(Confirmation::NotRequested)) => Err(not_confirmed("confirms were not enabled".into())),
        }
    }
}
