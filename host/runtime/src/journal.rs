//! The worker's journal of the crawl frontier: every work item the run adds
//! (pending), finishes (done, with the records its `collect` returned) or
//! fails goes to a background writer, which commits them in batches of
//! [`BATCH_ROWS`] (or [`BATCH_BYTES`]) or every [`FLUSH_EVERY`], so a run
//! that is stopped, fails or is killed can be resumed (`dc-host run APP
//! --resume ID`) without collecting its finished items again.
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
//!
//! What waits for the writer is bounded: a sender that finds
//! [`MAX_PENDING_BYTES`] of items and records queued waits until the writer
//! takes them, so a run's memory does not grow with its length when the
//! writer falls behind.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::mpsc::{Sender, channel};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use dc_core::run_items::{self, ItemRow, ItemState};
use dc_frontier::Work;

use crate::callbacks::RunShared;

/// A batch is written once it has this many rows.
pub const BATCH_ROWS: usize = 1000;
/// A batch is written once its items and records hold this many bytes.
pub const BATCH_BYTES: usize = 2 << 20;
/// A sender waits while this many bytes wait for the writer: a writer that
/// falls behind (a slow disk, a long write of the database) holds the
/// collecting threads back instead of letting the queue grow with the run.
pub const MAX_PENDING_BYTES: usize = 4 * BATCH_BYTES;
/// A batch is written at the latest this long after its first row arrived.
pub const FLUSH_EVERY: Duration = Duration::from_millis(200);
/// After a failed write, the batch is tried again this much later.
const RETRY_AFTER: Duration = Duration::from_secs(1);

/// What the senders left for the writer.
#[derive(Default)]
struct Pending {
    rows: Vec<ItemRow>,
    /// The bytes of `rows`' items and records.
    bytes: usize,
    /// Senders waiting for room ([`MAX_PENDING_BYTES`]).
    held_back: usize,
    /// When the first of `rows` arrived.
    since: Option<Instant>,
    /// Answered once everything sent before them is written.
    flushes: Vec<Sender<()>>,
    /// Answered like a flush; the writer then ends.
    finish: Option<Sender<()>>,
    /// Every sender is gone.
    closed: bool,
    /// The writer has ended: rows and requests are dropped.
    ended: bool,
}

/// The rows on their way to the writer. Senders append under the lock and
/// wake the writer only for the first row of a batch, a full batch, a flush
/// or the end — not for every row, which on a busy crawl cost a thread
/// switch per work item.
struct Queue {
    pending: Mutex<Pending>,
    wake: Condvar,
    /// Signalled when the writer takes the rows (or ends): senders held back
    /// by [`MAX_PENDING_BYTES`] go on.
    room: Condvar,
    senders: AtomicUsize,
}

impl Queue {
    fn lock(&self) -> MutexGuard<'_, Pending> {
        self.pending.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// The sending side of the journal, held by the run and the frontier.
pub struct JournalSender(Arc<Queue>);

impl Clone for JournalSender {
    fn clone(&self) -> Self {
        self.0.senders.fetch_add(1, Ordering::Relaxed);
        JournalSender(self.0.clone())
    }
}

impl Drop for JournalSender {
    fn drop(&mut self) {
        if self.0.senders.fetch_sub(1, Ordering::AcqRel) == 1 {
            self.0.lock().closed = true;
            self.0.wake.notify_one();
        }
    }
}

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
        self.send(row(work, work.item.to_string(), ItemState::Pending, None));
    }
}

impl JournalSender {
    fn send(&self, r: ItemRow) {
        let size = r.item.len() + r.records.as_ref().map_or(0, String::len);
        let mut p = self.0.lock();
        while p.bytes >= MAX_PENDING_BYTES && !p.ended && p.finish.is_none() {
            // the writer is behind: it takes what is there now
            p.held_back += 1;
            self.0.wake.notify_one();
            p = self.0.room.wait(p).unwrap_or_else(|e| e.into_inner());
            p.held_back -= 1;
        }
        if p.ended || p.finish.is_some() {
            // the writer has ended (or is ending): later rows are dropped
            return;
        }
        p.rows.push(r);
        p.bytes += size;
        let first = p.rows.len() == 1;
        if first {
            p.since = Some(Instant::now());
        }
        let full = p.rows.len() == BATCH_ROWS || (p.bytes >= BATCH_BYTES && p.bytes - size < BATCH_BYTES);
        drop(p);
        if first || full {
            self.0.wake.notify_one();
        }
    }

    /// `work` was collected; `records_json` is what its `collect` returned.
    pub fn done(&self, work: &Work, item_json: &str, records_json: &str) {
        self.send(row(work, item_json.to_string(), ItemState::Done, Some(records_json.to_string())));
    }

    /// `collect` failed for `work`.
    pub fn failed(&self, work: &Work, item_json: &str) {
        self.send(row(work, item_json.to_string(), ItemState::Failed, None));
    }

    /// Waits until everything sent so far was written (or its write failed
    /// and was logged).
    pub fn flush(&self) {
        self.ask(false);
    }

    /// Writes what is left and ends the writer; later rows are dropped.
    pub fn finish(&self) {
        self.ask(true);
    }

    fn ask(&self, finish: bool) {
        let (tx, rx) = channel();
        {
            let mut p = self.0.lock();
            if p.ended || p.finish.is_some() {
                return;
            }
            if finish {
                p.finish = Some(tx);
            } else {
                p.flushes.push(tx);
            }
        }
        self.0.wake.notify_one();
        // (no answer: the writer thread is gone)
        let _ = rx.recv();
    }
}

/// A new journal: its sender, and the receiver [`start`] takes.
pub fn channel_pair() -> (JournalSender, JournalReceiver) {
    let q = Arc::new(Queue {
        pending: Mutex::default(),
        wake: Condvar::new(),
        room: Condvar::new(),
        senders: AtomicUsize::new(1),
    });
    (JournalSender(q.clone()), JournalReceiver(q))
}

/// The receiving side, until the writer is started.
pub struct JournalReceiver(Arc<Queue>);

/// Starts the writer thread for the run.
pub fn start(shared: Arc<RunShared>, rx: JournalReceiver) -> std::io::Result<std::thread::JoinHandle<()>> {
    std::thread::Builder::new().name("journal".into()).spawn(move || writer(&shared, &rx.0))
}

/// What the writer took from the queue in one go.
struct Taken {
    rows: Vec<ItemRow>,
    replies: Vec<Sender<()>>,
    last: bool,
}

/// Waits until there is something to do: a full batch, a batch (or a batch
/// kept after a failed write, `retry_at`) that is due, a flush, the finish or
/// the last sender gone; then takes it all.
fn take(q: &Queue, retry_at: Option<Instant>) -> Taken {
    let mut p = q.lock();
    loop {
        let now = Instant::now();
        let due = match (p.since.map(|t| t + FLUSH_EVERY), retry_at) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        };
        let ready = p.rows.len() >= BATCH_ROWS
            || p.bytes >= BATCH_BYTES
            || p.held_back > 0
            || !p.flushes.is_empty()
            || p.finish.is_some()
            || p.closed
            || due.is_some_and(|d| d <= now);
        if ready {
            break;
        }
        p = match due {
            Some(d) => q.wake.wait_timeout(p, d - now).unwrap_or_else(|e| e.into_inner()).0,
            None => q.wake.wait(p).unwrap_or_else(|e| e.into_inner()),
        };
    }
    p.since = None;
    let mut replies = std::mem::take(&mut p.flushes);
    let last = p.closed || p.finish.is_some();
    replies.extend(p.finish.take());
    p.ended = last;
    p.bytes = 0;
    q.room.notify_all();
    Taken { rows: std::mem::take(&mut p.rows), replies, last }
}

/// Ends the queue when the writer returns or panics: rows sent later are
/// dropped, and whoever waits on a flush or the finish is let go (their
/// answer channels close) instead of waiting forever.
struct EndOnDrop<'a>(&'a Queue);

impl Drop for EndOnDrop<'_> {
    fn drop(&mut self) {
        let mut p = self.0.lock();
        p.ended = true;
        p.flushes.clear();
        p.finish = None;
        self.0.room.notify_all();
    }
}

fn writer(shared: &RunShared, q: &Queue) {
    let _end = EndOnDrop(q);
    let mut batch: Vec<ItemRow> = Vec::new();
    let mut retry_at: Option<Instant> = None;
    let mut warned = false;
    let mut saved_done = 0u64;
    loop {
        let taken = take(q, retry_at);
        batch.extend(taken.rows);
        // a batch kept after a failed write waits for its retry time, unless
        // it grew full or someone waits for it
        let retry_due = retry_at.is_none_or(|t| t <= Instant::now());
        if retry_due || batch.len() >= BATCH_ROWS || !taken.replies.is_empty() || taken.last {
            retry_at = if write(shared, &mut batch, &mut warned, &mut saved_done) {
                None
            } else {
                Some(Instant::now() + RETRY_AFTER)
            };
        }
        for reply in taken.replies {
            let _ = reply.send(());
        }
        if taken.last {
            return;
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

    fn seqs(rows: &[ItemRow]) -> Vec<i64> {
        rows.iter().map(|r| r.seq).collect()
    }

    #[test]
    fn the_writer_takes_rows_in_order_and_answers_a_flush_after_them() {
        let (tx, rx) = channel_pair();
        for seq in 0..5 {
            tx.send(r(seq, ItemState::Pending));
        }
        // a batch under BATCH_ROWS is taken once due, whole and in order
        let t = take(&rx.0, None);
        assert_eq!(seqs(&t.rows), vec![0, 1, 2, 3, 4]);
        assert!(t.replies.is_empty() && !t.last);
        // a flush comes with every row sent before it, and returns once answered
        let flusher = {
            let tx = tx.clone();
            std::thread::spawn(move || {
                tx.send(r(5, ItemState::Done));
                tx.flush();
                "flushed"
            })
        };
        let t = take(&rx.0, None);
        assert_eq!(seqs(&t.rows), vec![5]);
        assert_eq!(t.replies.len(), 1, "the flush request is taken with its rows");
        for reply in t.replies {
            reply.send(()).expect("answer");
        }
        assert_eq!(flusher.join().expect("flusher"), "flushed");
        // a full batch is taken whole
        for seq in 0..BATCH_ROWS as i64 {
            tx.send(r(100 + seq, ItemState::Pending));
        }
        let t = take(&rx.0, None);
        assert_eq!(t.rows.len(), BATCH_ROWS);
        // finish: the last take, and rows sent after it are dropped
        let finisher = {
            let tx = tx.clone();
            std::thread::spawn(move || tx.finish())
        };
        let t = loop {
            let t = take(&rx.0, None);
            if t.last {
                break t;
            }
        };
        assert_eq!(t.replies.len(), 1);
        for reply in t.replies {
            reply.send(()).expect("answer");
        }
        finisher.join().expect("finisher");
        tx.send(r(9_999, ItemState::Done));
        assert!(rx.0.lock().rows.is_empty(), "a row sent after the finish was kept");
        tx.flush(); // returns at once: nobody would answer
    }

    #[test]
    fn a_flush_returns_when_the_writer_is_gone() {
        let (tx, rx) = channel_pair();
        let (returned, flushed) = channel();
        {
            let tx = tx.clone();
            std::thread::spawn(move || {
                tx.flush();
                let _ = returned.send(());
            });
        }
        // the flush wakes the writer once it is queued; then the writer ends
        // without answering it (as when it panics)
        drop(woken_until(&rx.0, |p| !p.flushes.is_empty()));
        drop(EndOnDrop(&rx.0));
        // (a bound only so that a regression fails instead of hanging the suite)
        flushed.recv_timeout(Duration::from_secs(60)).expect("the flush must return once the writer is gone");
        tx.flush(); // and later ones return at once
        tx.finish();
    }

    /// The queue once `ready` holds, waiting on the writer's wake-ups (the
    /// bound only ends a broken test instead of hanging the suite).
    fn woken_until(q: &Queue, ready: impl Fn(&Pending) -> bool) -> MutexGuard<'_, Pending> {
        let deadline = Instant::now() + Duration::from_secs(60);
        let mut p = q.lock();
        while !ready(&p) {
            let left = deadline.checked_duration_since(Instant::now()).expect("the queue never got ready");
            p = q.wake.wait_timeout(p, left).unwrap_or_else(|e| e.into_inner()).0;
        }
        p
    }

    fn with_records(seq: i64, bytes: usize) -> ItemRow {
        ItemRow { records: Some("x".repeat(bytes)), ..r(seq, ItemState::Done) }
    }

    #[test]
    fn a_sender_waits_while_the_writer_is_behind_by_max_pending_bytes() {
        let (tx, rx) = channel_pair();
        let per_row = MAX_PENDING_BYTES / 4;
        for seq in 0..4 {
            tx.send(with_records(seq, per_row));
        }
        let sender = {
            let tx = tx.clone();
            std::thread::spawn(move || tx.send(with_records(4, per_row)))
        };
        // the fifth row is either queued (no bound) or its sender waits for room
        {
            let p = woken_until(&rx.0, |p| p.held_back > 0 || p.rows.len() >= 5);
            assert_eq!(p.rows.len(), 4, "a sender queued past MAX_PENDING_BYTES");
            assert_eq!(p.held_back, 1);
        }
        // the writer takes the four; the held-back sender goes on
        let t = take(&rx.0, None);
        assert_eq!(seqs(&t.rows), vec![0, 1, 2, 3]);
        sender.join().expect("the held-back sender returns once the writer took the rows");
        let t = take(&rx.0, None);
        assert_eq!(seqs(&t.rows), vec![4]);
        // a writer that ends lets a held-back sender go (its row is dropped)
        for seq in 5..9 {
            tx.send(with_records(seq, per_row));
        }
        let sender = {
            let tx = tx.clone();
            std::thread::spawn(move || tx.send(with_records(9, per_row)))
        };
        drop(woken_until(&rx.0, |p| p.held_back > 0));
        drop(EndOnDrop(&rx.0));
        sender.join().expect("the held-back sender returns once the writer is gone");
        assert_eq!(rx.0.lock().rows.len(), 4, "the row sent after the end is dropped");
    }

    #[test]
    fn the_writer_ends_when_every_sender_is_gone() {
        let (tx, rx) = channel_pair();
        let other = tx.clone();
        other.send(r(1, ItemState::Failed));
        drop(tx);
        drop(other);
        let t = take(&rx.0, None);
        assert!(t.last, "no sender is left: the writer must end");
        assert_eq!(seqs(&t.rows), vec![1], "rows sent before the senders went are still written");
    }
}
