//! `dc-host broker`: the RabbitMQ command path. `check` connects to
//! `broker.url`, declares the exchange and queues passively (creating
//! nothing), and prints the queue's depth and consumers (serving hosts) and
//! the dead-letter queue's depth; it exits 1 when something is wrong.

use std::process::ExitCode;

use clap::Subcommand;
use dc_core::Settings;

use crate::output;

/// Broker commands.
#[derive(Subcommand)]
pub enum BrokerCommand {
    /// Check the broker: connection, exchange and queues, depth, consumers.
    Check {
        /// JSON output.
        #[arg(long)]
        json: bool,
    },
}

pub async fn exec(c: BrokerCommand, settings: &Settings) -> anyhow::Result<ExitCode> {
    let BrokerCommand::Check { json } = c;
    let Some(broker) = dc_broker::Broker::from_settings(&settings.broker) else {
        anyhow::bail!(
            "no broker is configured: set broker.url (or DC_BROKER_URL), e.g. amqp://guest:guest@127.0.0.1:5672/%2f; \
             without one, commands go through the database only"
        );
    };
    let h = broker.check().await;
    if json {
        output::json(&h)?;
    } else {
        let n = |v: Option<u32>| v.map(|x| x.to_string()).unwrap_or_else(|| "-".into());
        println!("broker       {} ({})", h.url, if h.connected { "connected" } else { "not reachable" });
        println!("exchange     {}", h.exchange);
        println!("queue        {}: {} message(s), {} consumer(s)", h.queue, n(h.messages), n(h.consumers));
        println!("dead letters {}: {} message(s)", h.dead_queue, n(h.dead_messages));
        for p in &h.problems {
            println!("problem      {p}");
        }
        println!("{}", if h.ok { "ok" } else { "NOT OK" });
    }
    Ok(if h.ok { ExitCode::SUCCESS } else { ExitCode::FAILURE })
}
