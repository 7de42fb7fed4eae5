//! The worker's journal of the crawl frontier: every work item the run adds
//! (pending), finishes (done, with the records its `collect` returned) or
//! fails goes to a background writer, which commits them in batches of
//! [`BATCH_ROWS`] or every [`FLUSH_EVERY`], so a run that is stopped, fails or
//! is killed can be resumed (`dc-host run APP --resume ID`) without collecting
//! its finished items again.
//!
//! The writer commits the events in the order they were sent, and a batch
//! that could not be written is kept and tried again with the next one, so
//! the database always holds a prefix of the run's history. The items a
//! `collect` enqueues are sent before the item that enqueued them is marked
//! done, so the children of a done item are always known to a resumed run.
//! Once a plugin has merged rows itself inside `collect` (`ctx.merge`),
//! batches are written into the run's transaction (PostgreSQL): they commit
//! with the run or roll back with its merges, so an item never counts as done
//! while rows it merged could still be rolled back. On SQLite, where merges
//! are staged and applied only when the run ends, batches after the first
//! such merge are not written at all (a successful run deletes its items
//! anyway). The records `collect` returns are different: they are streamed
//! into the run's staging as they come, and saved with their item here, so a
//! resumed run stages them again; batches keep committing on their own.

use std::sync::Arc;
use std::sync::mpsc::{Receiver, RecvTimeoutError, Sender, channel};
use std::time::{Duration, Instant};

use dc_core::run_items::{self, ItemRow, ItemState};
use dc_frontier::Work;

use crate::callbacks::RunShared;

/// A batch is written once it has this many rows.
pub const BATCH_ROWS: usize = 1000;
/// A batch is written at the latest this long after its first row arrived.
pub const FLUSH_EVERY: Duration = Duration::from_millis(200);
/// After a failed write, the batch is tried again this much later.
const RETRY_AFTER: Duration = Duration::from_secs(1);

enum Msg {
    Row(ItemRow),
    Flush(Sender<()>),
    Finish(Sender<()>),
}

/// The sending side of the journal, held by the run and the frontier.
#[derive(Clone)]
pub struct JournalSender(Sender<Msg>);

/// The row of a work item in a state.
fn row(work: &Work, item_json: String, state: ItemState, records: Option<String>) -> ItemRow {
    ItemRow {
        seq: i64::try_from(work.seq).unwrap_or(i64::MAX),
        key_hash: hex::encode(work.key),
        item: item_json,
        depth: i64::from(work.depth),
        state: state.as_str().to_string(),
        records,
    }
}

impl dc_frontier::Journal for JournalSender {
    fn added(&self, work: &Work) {
        let _ = self.0.send(Msg::Row(row(work, work.item.to_string(), ItemState::Pending, None)));
    }
}

impl JournalSender {
    /// `work` was collected; `records_json` is what its `collect` returned.
    pub fn done(&self, work: &Work, item_json: &str, records_json: &str) {
        let r = row(work, item_json.to_string(), ItemState::Done, Some(records_json.to_string()));
        let _ = self.0.send(Msg::Row(r));
    }

    /// `collect` failed for `work`.
    pub fn failed(&self, work: &Work, item_json: &str) {
        let _ = self.0.send(Msg::Row(row(work, item_json.to_string(), ItemState::Failed, None)));
    }

    /// Waits until everything sent so far was written (or its write failed
    /// and was logged).
    pub fn flush(&self) {
        let (tx, rx) = channel();
        if self.0.send(Msg::Flush(tx)).is_ok() {
            let _ = rx.recv();
        }
    }

    /// Writes what is left and ends the writer; later rows are dropped.
    pub fn finish(&self) {
        let (tx, rx) = channel();
        if self.0.send(Msg::Finish(tx)).is_ok() {
            let _ = rx.recv();
        }
    }
}

/// A new journal: its sender, and the receiver [`start`] takes.
pub fn channel_pair() -> (JournalSender, JournalReceiver) {
    let (tx, rx) = channel();
    (JournalSender(tx), JournalReceiver(rx))
}

/// The receiving side, until the writer is started.
pub struct JournalReceiver(Receiver<Msg>);

/// Starts the writer thread for the run.
pub fn start(shared: Arc<RunShared>, rx: JournalReceiver) -> std::io::Result<std::thread::JoinHandle<()>> {
    std::thread::Builder::new().name("journal".into()).spawn(move || writer(&shared, rx.0))
}

fn writer(shared: &RunShared, rx: Receiver<Msg>) {
    let mut batch: Vec<ItemRow> = Vec::new();
    let mut due = Instant::now();
    let mut warned = false;
    let mut saved_done = 0u64;
    loop {
        let msg = if batch.is_empty() {
            rx.recv().map_err(|_| RecvTimeoutError::Disconnected)
        } else {
            rx.recv_timeout(due.saturating_duration_since(Instant::now()))
        };
        let reply = match msg {
            Ok(Msg::Row(r)) => {
                if batch.is_empty() {
                    due = Instant::now() + FLUSH_EVERY;
                }
                batch.push(r);
                if batch.len() < BATCH_ROWS {
                    continue;
                }
                None
            }
            Ok(Msg::Flush(reply)) => Some((reply, false)),
            Ok(Msg::Finish(reply)) => Some((reply, true)),
            Err(RecvTimeoutError::Timeout) => None,
            Err(RecvTimeoutError::Disconnected) => {
                write(shared, &mut batch, &mut warned, &mut saved_done);
                return;
            }
        };
        if !write(shared, &mut batch, &mut warned, &mut saved_done) {
            due = Instant::now() + RETRY_AFTER;
        }
        if let Some((reply, finish)) = reply {
            let _ = reply.send(());
            if finish {
                return;
            }
        }
    }
}

/// One row per item, the furthest state winning (an item can finish before
/// the row that announced it is written), in the order of first appearance.
fn coalesce(batch: Vec<ItemRow>) -> Vec<ItemRow> {
    let mut at: std::collections::HashMap<i64, usize> = std::collections::HashMap::with_capacity(batch.len());
    let mut out: Vec<ItemRow> = Vec::with_capacity(batch.len());
    for r in batch {
        match at.get(&r.seq) {
            Some(&i) => {
                if r.state != ItemState::Pending.as_str() {
                    out[i] = r;
                }
            }
            None => {
                at.insert(r.seq, out.len());
                out.push(r);
            }
        }
    }
    out
}

/// Writes the batch; on failure keeps it (to be tried again with the next
/// rows, so what is stored stays a prefix of the run) and returns false.
/// After each write it emits a debug event with the number of items saved as
/// done so far (`saved_done`), which tools and tests can follow on the
/// worker's stderr (`DC_LOG=dc_runtime::journal=debug`) instead of polling.
fn write(shared: &RunShared, batch: &mut Vec<ItemRow>, warned: &mut bool, saved_done: &mut u64) -> bool {
    if batch.is_empty() {
        return true;
    }
    let rows = coalesce(std::mem::take(batch));
    let mut writes = shared.writes.lock().unwrap_or_else(|p| p.into_inner());
    if writes.failed.is_some() {
        // a merge failed: the run's transaction will roll back, and with it
        // anything written into it; nothing after this point can count
        return true;
    }
    // the lock is held while writing, so a merge cannot open the run's
    // transaction between the check and the write (on SQLite the journal's
    // own transaction would then wait for the run's, which waits for the end
    // of the run)
    if writes.merged_directly && writes.tx.is_none() {
        // the plugin merged rows itself; they are staged (SQLite) and commit
        // only with the run: an item saved as done now could outlive rows it
        // merged that are then never stored, so nothing after this point
        // counts (what was saved before stays a prefix of the run). Records
        // `collect` returned are no reason: they are saved with their item
        // and staged again when the run is resumed.
        return true;
    }
    let runtime_id = &shared.runtime_id;
    let direct = writes.merged_directly;
    let written = shared.rt.block_on(async {
        match writes.tx.as_mut().filter(|_| direct) {
            Some(tx) => run_items::save_in(tx, runtime_id, &rows).await,
            None => {
                let mut tx = shared.db.begin_write().await?;
                run_items::save_in(&mut tx, runtime_id, &rows).await?;
                tx.commit().await
            }
        }
    });
    drop(writes);
    match written {
        Ok(()) => {
            let done = rows.iter().filter(|r| r.state == ItemState::Done.as_str()).count();
            *saved_done += done as u64;
            tracing::debug!(saved_done = *saved_done, rows = rows.len(), "work items saved");
            if *warned {
                let _g = shared.span.enter();
                tracing::info!("the run's work items are being saved again");
                *warned = false;
            }
            true
        }
        Err(e) => {
            if !*warned {
                let _g = shared.span.enter();
                tracing::warn!(error = %e, rows = rows.len(), "cannot save the run's work items; trying again (a resume would repeat the items since the last save)");
                *warned = true;
            }
            *batch = rows;
            false
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn r(seq: i64, state: ItemState) -> ItemRow {
        ItemRow {
            seq,
            key_hash: String::new(),
            item: String::new(),
            depth: 0,
            state: state.as_str().into(),
            records: None,
        }
    }

    #[test]
    fn a_batch_has_one_row_per_item_and_pending_never_wins() {
        let got = coalesce(vec![
            r(1, ItemState::Pending),
            r(2, ItemState::Done),
            r(1, ItemState::Done),
            r(2, ItemState::Pending),
            r(3, ItemState::Pending),
        ]);
        let states: Vec<(i64, &str)> = got.iter().map(|r| (r.seq, r.state.as_str())).collect();
        assert_eq!(states, vec![(1, "done"), (2, "done"), (3, "pending")]);
    }
}
