//! The crawl frontier of one run (plugin interface 1.2, capability
//! `frontier`): the queue of work items the collecting threads take from, to
//! which `collect` adds items while the run goes on (`Context::enqueue`).
//!
//! Rules, the same in the host's worker and in the SDK's `TestHost`:
//! - items from `prepare_list` are depth 0 and are all collected, as before
//!   1.2; their keys are remembered, so enqueuing one of them again is a
//!   duplicate;
//! - an item enqueued while collecting an item of depth d has depth d + 1
//!   (enqueued outside `collect`, during `prepare_list`, it is depth 0);
//! - two items with the same key are collected once: the key is the entry's
//!   explicit key, else the canonical URL ([`canonical_url`]) when the item is
//!   a URL string or an object with a `url` string, else the item's JSON;
//! - an item deeper than `max_depth`, or beyond `max_items` items in the run,
//!   is dropped and counted, never an error;
//! - once collecting is over, `enqueue` is refused (nothing would collect it).
//!
//! The queue is first in, first out (breadth first), so a depth limit cuts the
//! crawl where a person would expect.
//!
//! Persistence (the host's worker): every item gets a sequence number in the
//! order it was added, and a [`Journal`] set with [`Frontier::with_journal`]
//! hears of every item as it is added, under the frontier's lock, so what the
//! journal records is always in the order the run added it. A resumed run
//! starts with [`Frontier::restore`]: the keys of the items the earlier run
//! finished are known (never collected again), its unfinished items are
//! queued again, and `prepare_list`'s items are then deduplicated against
//! everything known.

use std::collections::{HashSet, VecDeque};
use std::sync::{Condvar, Mutex, MutexGuard};

use dc_plugin_api::{CrawlLimits, EnqueueAnswer, EnqueueEntry};
use serde_json::Value;
use sha2::{Digest, Sha256};

/// The host's default cap on the items of one run (`runs.max_items`), which
/// also caps a manifest's `max_items`.
pub const DEFAULT_MAX_ITEMS: u64 = 1_000_000;

/// The canonical form of an absolute http(s) URL, for deduplication: scheme
/// and host in lower case, default port dropped, `.`/`..` segments resolved,
/// fragment dropped, query parameters sorted (an empty query dropped). `None`
/// for anything that is not an absolute http(s) URL.
pub fn canonical_url(raw: &str) -> Option<String> {
    let mut u = url::Url::parse(raw.trim()).ok()?;
    if !matches!(u.scheme(), "http" | "https") {
        return None;
    }
    u.set_fragment(None);
    if u.query().is_some() {
        let mut pairs: Vec<(String, String)> = u.query_pairs().into_owned().collect();
        if pairs.is_empty() {
            u.set_query(None);
        } else {
            pairs.sort();
            u.query_pairs_mut().clear().extend_pairs(pairs);
        }
    }
    Some(u.into())
}

/// The deduplication key of an entry (see the [crate docs](crate)).
pub fn key_of(entry: &EnqueueEntry) -> String {
    if let Some(k) = &entry.key {
        return k.clone();
    }
    item_key(&entry.item)
}

fn item_key(item: &Value) -> String {
    let url = match item {
        Value::String(s) => Some(s.as_str()),
        Value::Object(m) => m.get("url").and_then(Value::as_str),
        _ => None,
    };
    url.and_then(canonical_url).unwrap_or_else(|| item.to_string())
}

/// The identity the frontier deduplicates by: the first 16 bytes of the
/// SHA-256 of an item's key ([`key_of`]).
pub type Fingerprint = [u8; 16];

/// The fingerprint of a key.
pub fn fingerprint(key: &str) -> Fingerprint {
    let d = Sha256::digest(key.as_bytes());
    let mut out = [0u8; 16];
    out.copy_from_slice(&d[..16]);
    out
}

/// One item to collect.
#[derive(Debug, Clone, PartialEq)]
pub struct Work {
    /// The item, as `collect` receives it.
    pub item: Value,
    /// 0 for `prepare_list` items, parent + 1 for enqueued ones.
    pub depth: u32,
    /// Its number in the run, in the order items were added (from 0; a
    /// resumed run continues after the numbers it restored).
    pub seq: u64,
    /// Its deduplication key's fingerprint.
    pub key: Fingerprint,
}

/// Hears of every item added to a frontier (seeded or enqueued, not
/// restored), in the order they were added: the host's worker persists them.
/// Called with the frontier's lock held, so it must be quick (a channel send).
pub trait Journal: Send + Sync {
    /// `work` was added to the queue.
    fn added(&self, work: &Work);
}

#[derive(Default)]
struct State {
    queue: VecDeque<Work>,
    seen: HashSet<[u8; 16]>,
    in_flight: usize,
    total: u64,
    closed: bool,
    stopped: bool,
    dropped: EnqueueAnswer,
    next_seq: u64,
    restored: bool,
}

impl State {
    fn push(&mut self, item: Value, depth: u32, key: Fingerprint, journal: Option<&dyn Journal>) {
        let work = Work { item, depth, seq: self.next_seq, key };
        self.next_seq += 1;
        if let Some(j) = journal {
            j.added(&work);
        }
        self.queue.push_back(work);
        self.total += 1;
    }
}

/// The frontier of one run. Shared by the collecting threads (`&self`
/// everywhere); [`Frontier::next`] blocks while other threads may still add work.
pub struct Frontier {
    max_depth: Option<u32>,
    max_items: u64,
    state: Mutex<State>,
    ready: Condvar,
    journal: Option<Box<dyn Journal>>,
}

impl std::fmt::Debug for Frontier {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Frontier").field("max_depth", &self.max_depth).field("max_items", &self.max_items).finish()
    }
}

impl Frontier {
    /// An empty frontier with the manifest's limits, the item limit capped at
    /// `host_max_items` (the host's own cap).
    pub fn new(limits: CrawlLimits, host_max_items: u64) -> Frontier {
        Frontier {
            max_depth: limits.max_depth,
            max_items: limits.max_items.map_or(host_max_items, |m| m.min(host_max_items)),
            state: Mutex::new(State::default()),
            ready: Condvar::new(),
            journal: None,
        }
    }

    /// The same frontier, telling `journal` of every item added from now on.
    pub fn with_journal(mut self, journal: Box<dyn Journal>) -> Frontier {
        self.journal = Some(journal);
        self
    }

    /// Starts a resumed run from what an earlier run persisted: `done` are
    /// the sequence numbers and fingerprints of the items it finished (known,
    /// so never collected or enqueued again), `pending` its unfinished items,
    /// queued again in their order. Call before [`Frontier::seed`]; new items
    /// are numbered after the highest number restored. The journal is not
    /// told (these items are persisted already).
    pub fn restore(&self, done: impl IntoIterator<Item = (u64, Fingerprint)>, pending: impl IntoIterator<Item = Work>) {
        let mut s = self.lock();
        s.restored = true;
        for (seq, key) in done {
            s.seen.insert(key);
            s.total += 1;
            s.next_seq = s.next_seq.max(seq + 1);
        }
        let mut pending: Vec<Work> = pending.into_iter().collect();
        pending.sort_by_key(|w| w.seq);
        for w in pending {
            s.seen.insert(w.key);
            s.total += 1;
            s.next_seq = s.next_seq.max(w.seq + 1);
            s.queue.push_back(w);
        }
        drop(s);
        self.ready.notify_all();
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Adds the items of `prepare_list` (depth 0). All of them are collected,
    /// duplicates and items over the limits included, as before interface 1.2;
    /// their keys are remembered so enqueuing one again is a duplicate. After
    /// [`Frontier::restore`], items whose key the restored run knew are
    /// skipped. Returns how many were skipped so.
    pub fn seed(&self, items: Vec<Value>) -> usize {
        let mut s = self.lock();
        let keyed: Vec<(Fingerprint, Value)> = items.into_iter().map(|i| (fingerprint(&item_key(&i)), i)).collect();
        let before = keyed.len();
        let keyed: Vec<(Fingerprint, Value)> =
            if s.restored { keyed.into_iter().filter(|(k, _)| !s.seen.contains(k)).collect() } else { keyed };
        let skipped = before - keyed.len();
        for (key, item) in keyed {
            s.seen.insert(key);
            s.push(item, 0, key, self.journal.as_deref());
        }
        drop(s);
        self.ready.notify_all();
        skipped
    }

    /// Adds enqueued entries. `parent_depth` is the depth of the item being
    /// collected on the calling thread (`None` outside `collect`). Refused once
    /// collecting is over.
    pub fn enqueue(&self, parent_depth: Option<u32>, entries: Vec<EnqueueEntry>) -> Result<EnqueueAnswer, String> {
        let depth = parent_depth.map_or(0, |d| d.saturating_add(1));
        let mut answer = EnqueueAnswer::default();
        let mut s = self.lock();
        if s.closed {
            return Err("enqueue came after the run stopped collecting; add work while prepare_list or collect runs \
                        (items added in store or cleanup would never be collected)"
                .into());
        }
        for e in entries {
            let key = fingerprint(&key_of(&e));
            if s.seen.contains(&key) {
                answer.duplicates += 1;
            } else if self.max_depth.is_some_and(|max| depth > max) {
                answer.over_depth += 1;
            } else if s.total >= self.max_items {
                answer.over_limit += 1;
            } else {
                s.seen.insert(key);
                s.push(e.item, depth, key, self.journal.as_deref());
                answer.added += 1;
            }
        }
        s.dropped.duplicates += answer.duplicates;
        s.dropped.over_depth += answer.over_depth;
        s.dropped.over_limit += answer.over_limit;
        drop(s);
        if answer.added > 0 {
            self.ready.notify_all();
        }
        Ok(answer)
    }

    /// The next item to collect, waiting while the queue is empty but other
    /// threads are still collecting (they may add work). `None` when all work
    /// is done or the frontier was stopped; then every waiting thread gets
    /// `None` too. Call [`Frontier::done`] after collecting the item.
    pub fn next(&self) -> Option<Work> {
        let mut s = self.lock();
        loop {
            if s.closed || s.stopped {
                return None;
            }
            if let Some(w) = s.queue.pop_front() {
                s.in_flight += 1;
                return Some(w);
            }
            if s.in_flight == 0 {
                s.closed = true;
                drop(s);
                self.ready.notify_all();
                return None;
            }
            s = self.ready.wait(s).unwrap_or_else(|p| p.into_inner());
        }
    }

    /// Marks an item taken with [`Frontier::next`] as collected (or failed).
    pub fn done(&self) {
        let mut s = self.lock();
        s.in_flight = s.in_flight.saturating_sub(1);
        let idle = s.in_flight == 0 && s.queue.is_empty();
        drop(s);
        if idle {
            self.ready.notify_all();
        }
    }

    /// Stops handing out work (an operator's stop): waiting threads return
    /// `None`. Items still being collected may enqueue work until
    /// [`Frontier::close`]: it is kept (and journaled) for a resumed run.
    pub fn stop(&self) {
        self.lock().stopped = true;
        self.ready.notify_all();
    }

    /// Ends collecting: no work is handed out and `enqueue` is refused from
    /// now on (nothing would ever collect it).
    pub fn close(&self) {
        self.lock().closed = true;
        self.ready.notify_all();
    }

    /// Items in the run so far (collected, being collected and queued).
    pub fn total(&self) -> u64 {
        self.lock().total
    }

    /// Items still queued (0 after a complete run; more after a stop).
    pub fn pending(&self) -> usize {
        self.lock().queue.len()
    }

    /// What `enqueue` dropped over the whole run (`added` is 0).
    pub fn dropped(&self) -> EnqueueAnswer {
        self.lock().dropped
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;
    use std::sync::Arc;

    fn limits(max_depth: Option<u32>, max_items: Option<u64>) -> CrawlLimits {
        let mut l = CrawlLimits::default();
        l.max_depth = max_depth;
        l.max_items = max_items;
        l
    }

    #[test]
    fn urls_are_canonical() {
        let c = |s| canonical_url(s).expect("a URL");
        assert_eq!(c("HTTP://Example.COM:80/a/./b/../c?z=1&a=2#frag"), "http://example.com/a/c?a=2&z=1");
        assert_eq!(c("https://example.com:443/?"), "https://example.com/");
        assert_eq!(c("https://example.com"), "https://example.com/");
        assert_eq!(c("http://example.com:8080/x"), "http://example.com:8080/x");
        assert_ne!(c("http://example.com/X"), c("http://example.com/x"), "paths keep their case");
        assert_eq!(canonical_url("mailto:a@b.c"), None);
        assert_eq!(canonical_url("/relative"), None);
    }

    #[test]
    fn keys_come_from_urls_objects_or_json() {
        let k = |v: Value| key_of(&EnqueueEntry::new(v));
        assert_eq!(k(json!("http://h/p?b=1&a=2#x")), k(json!("http://H/p?a=2&b=1")));
        assert_eq!(k(json!({"url": "http://h/p", "kind": "list"})), k(json!("http://h/p")));
        assert_eq!(k(json!({"b": 1, "a": 2})), k(json!({"a": 2, "b": 1})), "object keys are ordered");
        assert_ne!(k(json!("not a url")), k(json!("not a url ")));
        assert_eq!(key_of(&EnqueueEntry::keyed("sku-1", json!("http://h/1"))), "sku-1");
    }

    #[test]
    fn duplicates_depth_and_count_limits_are_counted_not_errors() {
        let f = Frontier::new(limits(Some(1), Some(4)), 1_000);
        f.seed(vec![json!("http://h/"), json!("http://h/")]);
        assert_eq!(f.total(), 2, "prepare_list items are all kept, duplicates too");
        let w = f.next().expect("work");
        assert_eq!(w.depth, 0);
        let a = f
            .enqueue(
                Some(w.depth),
                vec![
                    EnqueueEntry::new(json!("http://h/#top")),
                    EnqueueEntry::new(json!("http://h/a")),
                    EnqueueEntry::new(json!("http://h/a?")),
                    EnqueueEntry::new(json!("http://h/b")),
                    EnqueueEntry::new(json!("http://h/c")),
                ],
            )
            .expect("open");
        assert_eq!((a.added, a.duplicates, a.over_depth, a.over_limit), (2, 2, 0, 1));
        f.done();
        let w = f.next().expect("the second seed");
        f.done();
        assert_eq!(w.depth, 0);
        let w = f.next().expect("an enqueued item");
        assert_eq!((w.item.clone(), w.depth), (json!("http://h/a"), 1));
        let a = f.enqueue(Some(w.depth), vec![EnqueueEntry::new(json!("http://h/deep"))]).expect("open");
        assert_eq!(a.over_depth, 1, "depth 2 is over max_depth 1");
        f.done();
        assert!(f.next().is_some());
        f.done();
        assert_eq!(f.next(), None, "all done");
        let d = f.dropped();
        assert_eq!((d.duplicates, d.over_depth, d.over_limit), (2, 1, 1));
        assert!(f.enqueue(None, vec![EnqueueEntry::new(json!(1))]).is_err(), "closed after collecting");
    }

    #[test]
    fn the_host_cap_applies_over_the_manifest() {
        let f = Frontier::new(limits(None, Some(100)), 2);
        f.seed(vec![json!(1)]);
        let a = f.enqueue(None, vec![EnqueueEntry::new(json!(2)), EnqueueEntry::new(json!(3))]).expect("open");
        assert_eq!((a.added, a.over_limit), (1, 1));
    }

    #[test]
    fn waiting_threads_get_work_added_by_others_and_all_finish() {
        // a chain: each item enqueues the next, so at most one item is ever
        // queued and the other threads must wait for it instead of quitting
        let f = Arc::new(Frontier::new(CrawlLimits::default(), 1_000));
        f.seed(vec![json!(0)]);
        let collected = Arc::new(Mutex::new(Vec::new()));
        let threads: Vec<_> = (0..4)
            .map(|_| {
                let (f, collected) = (f.clone(), collected.clone());
                std::thread::spawn(move || {
                    while let Some(w) = f.next() {
                        let n = w.item.as_u64().expect("number");
                        if n < 50 {
                            f.enqueue(Some(w.depth), vec![EnqueueEntry::new(json!(n + 1))]).expect("open");
                        }
                        collected.lock().expect("lock").push(n);
                        f.done();
                    }
                })
            })
            .collect();
        for t in threads {
            t.join().expect("thread");
        }
        let mut got = collected.lock().expect("lock").clone();
        got.sort_unstable();
        assert_eq!(got, (0..=50).collect::<Vec<_>>());
    }

    #[test]
    fn stop_wakes_waiting_threads() {
        let f = Arc::new(Frontier::new(CrawlLimits::default(), 10));
        f.seed(vec![json!(1)]);
        let held = f.next().expect("work");
        let waiter = {
            let f = f.clone();
            std::thread::spawn(move || f.next())
        };
        f.stop();
        assert_eq!(waiter.join().expect("thread"), None);
        assert_eq!(held.depth, 0);
        // the item still being collected may add work, kept for a resumed run
        let a = f.enqueue(Some(0), vec![EnqueueEntry::new(json!(2))]).expect("open until closed");
        assert_eq!((a.added, f.pending()), (1, 1));
        assert_eq!(f.next(), None, "nothing is handed out after a stop");
        f.close();
        assert!(f.enqueue(Some(0), vec![EnqueueEntry::new(json!(3))]).is_err());
    }

    /// A journal that remembers what it heard.
    #[derive(Default)]
    struct Heard(Arc<Mutex<Vec<(u64, Value, u32)>>>);

    impl Journal for Heard {
        fn added(&self, work: &Work) {
            self.0.lock().expect("lock").push((work.seq, work.item.clone(), work.depth));
        }
    }

    #[test]
    fn the_journal_hears_every_added_item_in_order_with_its_number() {
        let heard = Heard::default();
        let log = heard.0.clone();
        let f = Frontier::new(CrawlLimits::default(), 100).with_journal(Box::new(heard));
        f.seed(vec![json!("http://h/"), json!("http://h/")]);
        let w = f.next().expect("work");
        assert_eq!((w.seq, w.key), (0, fingerprint(&key_of(&EnqueueEntry::new(json!("http://h/"))))));
        f.enqueue(Some(0), vec![EnqueueEntry::new(json!("http://h/a")), EnqueueEntry::new(json!("http://h/"))])
            .expect("open");
        let got = log.lock().expect("lock").clone();
        assert_eq!(
            got,
            vec![(0, json!("http://h/"), 0), (1, json!("http://h/"), 0), (2, json!("http://h/a"), 1)],
            "duplicates dropped by enqueue are not journaled"
        );
    }

    #[test]
    fn a_restored_frontier_collects_only_what_was_unfinished_and_new() {
        let key = |s: &str| fingerprint(&key_of(&EnqueueEntry::new(json!(s))));
        let heard = Heard::default();
        let log = heard.0.clone();
        let f = Frontier::new(CrawlLimits::default(), 100).with_journal(Box::new(heard));
        let pending = |seq: u64, url: &str, depth: u32| Work { item: json!(url), depth, seq, key: key(url) };
        // seq 0 (the start page) and 2 were done; 1 and 3 were not (given out of order)
        f.restore(
            vec![(0, key("http://h/")), (2, key("http://h/b"))],
            vec![pending(3, "http://h/c", 2), pending(1, "http://h/a", 1)],
        );
        assert_eq!(f.total(), 4, "restored items count in the run's total");
        // prepare_list again: the known start page is skipped, a new item is added
        let skipped = f.seed(vec![json!("http://h/#top"), json!("http://h/new")]);
        assert_eq!(skipped, 1);
        let order: Vec<(u64, Value, u32)> = std::iter::from_fn(|| {
            let w = f.next()?;
            if w.item == json!("http://h/a") {
                // links to done, queued and new pages: only the new one is added
                let a = f
                    .enqueue(
                        Some(w.depth),
                        ["http://h/", "http://h/b", "http://h/c", "http://h/d"]
                            .map(|u| EnqueueEntry::new(json!(u)))
                            .to_vec(),
                    )
                    .expect("open");
                assert_eq!((a.added, a.duplicates), (1, 3));
            }
            f.done();
            Some((w.seq, w.item, w.depth))
        })
        .collect();
        assert_eq!(
            order,
            vec![
                (1, json!("http://h/a"), 1),
                (3, json!("http://h/c"), 2),
                (4, json!("http://h/new"), 0),
                (5, json!("http://h/d"), 2),
            ],
            "unfinished items first, in their order; new items numbered after the restored ones"
        );
        let heard: Vec<u64> = log.lock().expect("lock").iter().map(|(s, _, _)| *s).collect();
        assert_eq!(heard, vec![4, 5], "restored items are not journaled again");
        assert_eq!(f.total(), 6);
    }
}
