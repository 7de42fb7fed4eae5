//! dc-orchestrator: the manager behind `dc-host serve`. It turns the apps
//! registry into work: apps whose schedule is due and operator commands
//! (START, STOP, RESTART, ENABLE, DISABLE) queued in the database are claimed
//! atomically (so several hosts sharing one database never start the same run
//! twice), runs are started and supervised in worker processes, a heartbeat row
//! says the host is alive, and SIGTERM/SIGINT shut it down gracefully: stop
//! claiming, let running runs finish up to a grace period, then stop them and
//! record why. With `broker.url` set, commands also arrive over RabbitMQ
//! (`dc-broker`) and are acted on at once.
//!
//! Decisions about time take "now" from an injected [`dc_scheduler::Clock`];
//! [`plan`] is the pure part of a scheduling decision, tested without a clock.

mod commands_mq;
pub mod manager;
pub mod metrics;
pub mod notify;

pub use manager::{Event, ServeOptions, plan, serve};
pub use notify::{Notice, Notifications, Notifier};
