//! The SHA merge: counts, idempotence, change feed, run counters, archive,
//! incremental mode, atomic refusal of bad batches and Unicode normalization.

use dc_core::Database;
use dc_core::clock::ManualClock;
use dc_core::enums::UnicodeForm;
use dc_core::merge::{self, MergeError, MergeRequest};
use dc_plugin_api::{MergeSummary, MissingRows, TableDecl};
use serde_json::{Map, Value, json};

use crate::common::{
    TestDb, canonical, counters, feed, feed_entries_are_whole, item, items_decl, live, metas, new_app, new_run, obj,
    pair, pairs_decl, raw_count, req, unique_indexes,
};

both_backends!(
    merge_counts_feed_and_counters,
    archive_missing_rows,
    incremental_leaves_absent_rows,
    bad_batch_writes_nothing,
    a_first_load_refuses_a_bad_record_in_a_later_step,
    unicode_normalization_decides_unchanged,
    unstorable_text_is_refused_naming_record_and_field,
    a_feed_of_many_keys_reads_back_whole,
);

/// Where the tests' manual clocks start.
fn start_time() -> chrono::DateTime<chrono::Utc> {
    chrono::DateTime::parse_from_rfc3339("2026-03-01T12:00:00Z").expect("a valid time").to_utc()
}

fn summary(inserted: u64, updated: u64, deleted: u64, unchanged: u64) -> MergeSummary {
    MergeSummary::new(inserted, updated, deleted, unchanged)
}

fn keys_of(decl: &TableDecl, rows: &[Map<String, Value>]) -> Vec<String> {
    canonical(decl, rows).into_keys().collect()
}

fn feed_of(table: &str, op: &str, keys: &[String]) -> Vec<(String, String, String)> {
    keys.iter().map(|k| (table.to_string(), op.to_string(), k.clone())).collect()
}

async fn merge_counts_feed_and_counters(t: &TestDb) {
    merge_cycle(t, &items_decl("items_all_types"), item, 200).await;
    merge_cycle(t, &pairs_decl("pairs_two_keys"), pair, 120).await;
}

/// A change-feed entry holds up to `feed::KEYS_PER_ENTRY` keys: a merge cycle
/// with more keys than that in every operation (a first load, then updates,
/// deletes and inserts into a table with rows) reads its feed back whole, and
/// every entry holds what its `key_count` says.
async fn a_feed_of_many_keys_reads_back_whole(t: &TestDb) {
    merge_cycle(t, &pairs_decl("pairs_large_feed"), pair, 21_000).await;
    // 21 entries for the first load, 3 + 2 + 2 for the third run
    assert_eq!(feed_entries_are_whole(&t.db).await, 21 + 3 + 2 + 2);
    // PostgreSQL compresses entries this long with lz4 (migration 16), not pglz
    if let Database::Postgres(pool) = &t.db {
        let methods: Vec<Option<String>> = sqlx::query_scalar(
            "SELECT DISTINCT pg_column_compression(row_keys) FROM run_changes \
                 WHERE table_name = 'pairs_large_feed' AND key_count = 1000",
        )
        .fetch_all(pool)
        .await
        .expect("compression of the entries");
        assert_eq!(methods, vec![Some("lz4".to_string())], "every entry of 1,000 keys is stored compressed with lz4");
    }
}

/// Full merge cycle on one table: insert, idempotent re-merge, then 10%
/// changed / 5% removed / new rows, checking counts, content, the change feed,
/// bookkeeping columns and the run counters at every step.
async fn merge_cycle(t: &TestDb, decl: &TableDecl, make: fn(usize, bool) -> Map<String, Value>, n: usize) {
    let db = &t.db;
    let tn = decl.name.as_str();
    let app = new_app(db, tn).await;
    merge::ensure_table(db, &app, decl).await.expect("ensure_table");
    // the rows' timestamps come from a clock the test moves on
    let manual = ManualClock::new(start_time());
    let clock = manual.clock();
    let at = |rid| MergeRequest { clock: &clock, ..req(&app, rid, decl) };

    // 1. first merge inserts everything
    let first: Vec<_> = (0..n).map(|i| make(i, false)).collect();
    let r1 = new_run(db, &app).await;
    let s = merge::merge(db, at(Some(&r1)), &first).await.expect("first merge");
    assert_eq!(s, summary(n as u64, 0, 0, 0));
    assert_eq!(live(db, decl).await, canonical(decl, &first), "content after the first merge");
    assert_eq!(merge::count_rows(db, tn).await.expect("count"), n as i64);
    let mut expected_feed = feed_of(tn, "insert", &keys_of(decl, &first));
    expected_feed.sort();
    assert_eq!(feed(db, &r1).await, expected_feed);
    assert_eq!(counters(db, &r1).await, [n as i64, 0, 0, 0]);
    let m1 = metas(db, tn).await;
    assert_eq!(m1.len(), n);
    for (k, m) in &m1 {
        assert_eq!(m.runtime_id.as_deref(), Some(r1.as_str()), "{k}");
        assert!(m.first_seen.is_some() && m.first_seen == m.last_seen, "{k}: {m:?}");
        assert_eq!(m.archived_at, None, "{k}");
        assert_eq!(m.hash.len(), 64, "{k}");
    }

    // 2. the same snapshot again: nothing written at all
    manual.advance(chrono::TimeDelta::seconds(1));
    let r2 = new_run(db, &app).await;
    let s = merge::merge(db, at(Some(&r2)), &first).await.expect("same snapshot");
    assert_eq!(s, summary(0, 0, 0, n as u64));
    assert_eq!(metas(db, tn).await, m1, "an unchanged re-merge must not touch _row_hash/_last_seen/_runtime_id");
    assert!(feed(db, &r2).await.is_empty(), "no change feed for an unchanged merge");
    assert_eq!(counters(db, &r2).await, [0, 0, 0, n as i64]);

    // 3. 10% changed, 5% removed, new rows
    manual.advance(chrono::TimeDelta::seconds(1));
    let changed = |i: usize| i % 10 == 3;
    let removed = |i: usize| i % 20 == 7;
    let added = n..n + n / 20 + 3;
    let third: Vec<_> = (0..n)
        .filter(|&i| !removed(i))
        .map(|i| make(i, changed(i)))
        .chain(added.clone().map(|i| make(i, false)))
        .collect();
    let n_changed = (0..n).filter(|&i| changed(i)).count();
    let n_removed = (0..n).filter(|&i| removed(i)).count();
    let n_added = added.len();
    let r3 = new_run(db, &app).await;
    let s = merge::merge(db, at(Some(&r3)), &third).await.expect("third merge");
    let n_unchanged = n - n_changed - n_removed;
    assert_eq!(s, summary(n_added as u64, n_changed as u64, n_removed as u64, n_unchanged as u64));
    assert_eq!(live(db, decl).await, canonical(decl, &third), "content after the third merge");
    assert_eq!(raw_count(db, tn).await, (n - n_removed + n_added) as i64, "removed rows are deleted, not kept");

    let changed_rows: Vec<_> = (0..n).filter(|&i| changed(i)).map(|i| make(i, true)).collect();
    let removed_rows: Vec<_> = (0..n).filter(|&i| removed(i)).map(|i| make(i, false)).collect();
    let added_rows: Vec<_> = added.clone().map(|i| make(i, false)).collect();
    let mut expected_feed = feed_of(tn, "update", &keys_of(decl, &changed_rows));
    expected_feed.extend(feed_of(tn, "delete", &keys_of(decl, &removed_rows)));
    expected_feed.extend(feed_of(tn, "insert", &keys_of(decl, &added_rows)));
    expected_feed.sort();
    assert_eq!(feed(db, &r3).await, expected_feed);
    assert_eq!(counters(db, &r3).await, [n_added as i64, n_changed as i64, n_removed as i64, n_unchanged as i64]);
    // the counters of every run add up to what the table went through
    let mut total = [0i64; 4];
    for r in [&r1, &r2, &r3] {
        for (a, b) in total.iter_mut().zip(counters(db, r).await) {
            *a += b;
        }
    }
    assert_eq!(total[0] - total[2], raw_count(db, tn).await, "inserted - deleted = rows now");

    let m3 = metas(db, tn).await;
    let changed_keys = keys_of(decl, &changed_rows);
    let added_keys = keys_of(decl, &added_rows);
    for (k, m) in &m3 {
        if let Some(before) = m1.get(k) {
            assert_eq!(m.first_seen, before.first_seen, "{k}: _first_seen must never move");
            if changed_keys.contains(k) {
                assert_ne!(m.hash, before.hash, "{k}");
                assert!(m.last_seen > before.last_seen, "{k}: {m:?} vs {before:?}");
                assert_eq!(m.runtime_id.as_deref(), Some(r3.as_str()), "{k}");
            } else {
                assert_eq!(m, before, "{k}: unchanged row touched");
            }
        } else {
            assert!(added_keys.contains(k), "unexpected row {k}");
            assert_eq!(m.runtime_id.as_deref(), Some(r3.as_str()), "{k}");
            assert_eq!(m.first_seen, m.last_seen, "{k}");
        }
    }

    // 4. without a run: no feed, no counters, same counts
    let s = merge::merge(db, at(None), &third).await.expect("merge without run");
    assert_eq!(s, summary(0, 0, 0, third.len() as u64));
    let mut fourth = third.clone();
    let last = fourth.pop().expect("rows");
    fourth[0] = make(0, !changed(0));
    fourth.push(make(2 * n + 10, false));
    let s = merge::merge(db, at(None), &fourth).await.expect("merge without run, changes");
    assert_eq!(s, summary(1, 1, 1, third.len() as u64 - 2), "dropped {last:?}");
    assert_eq!(live(db, decl).await, canonical(decl, &fourth));
    // a merge without a run writes into no run's feed
    assert_eq!(feed(db, &r1).await.len(), n);
    assert_eq!(feed(db, &r2).await.len(), 0);
    assert_eq!(feed(db, &r3).await.len(), n_added + n_changed + n_removed);
}

async fn archive_missing_rows(t: &TestDb) {
    let db = &t.db;
    let app = new_app(db, "archive").await;
    for (name, by_decl) in [("archived_by_decl", true), ("archived_by_request", false)] {
        let mut d = items_decl(name);
        if by_decl {
            d.missing = MissingRows::Archive;
        }
        merge::ensure_table(db, &app, &d).await.expect("ensure_table");
        let manual = ManualClock::new(start_time());
        let clock = manual.clock();
        let archive = |rid| {
            let mut r = MergeRequest { clock: &clock, ..req(&app, rid, &d) };
            r.archive_missing = !by_decl;
            r
        };
        let all: Vec<_> = (0..50).map(|i| item(i, false)).collect();
        let s = merge::merge(db, archive(None), &all).await.expect("first");
        assert_eq!(s, summary(50, 0, 0, 0));

        // 5 rows go missing: archived, not deleted
        let gone = [3usize, 11, 20, 33, 49];
        let present: Vec<_> = (0..50).filter(|i| !gone.contains(i)).map(|i| item(i, false)).collect();
        let r1 = new_run(db, &app).await;
        let s = merge::merge(db, archive(Some(&r1)), &present).await.expect("archive merge");
        assert_eq!(s, summary(0, 0, 5, 45), "{name}");
        assert_eq!(merge::count_rows(db, name).await.expect("count"), 45, "{name}: count_rows excludes archived rows");
        assert_eq!(raw_count(db, name).await, 50, "{name}: archived rows are kept");
        assert_eq!(live(db, &d).await, canonical(&d, &present), "{name}: preview shows live rows only");
        let gone_rows: Vec<_> = gone.iter().map(|&i| item(i, false)).collect();
        let gone_keys = keys_of(&d, &gone_rows);
        let m1 = metas(db, name).await;
        for (k, m) in &m1 {
            assert_eq!(m.archived_at.is_some(), gone_keys.contains(k), "{name} {k}: {m:?}");
        }
        assert_eq!(feed(db, &r1).await, feed_of(name, "delete", &gone_keys), "{name}");
        assert_eq!(counters(db, &r1).await, [0, 0, 5, 45]);

        // the same snapshot again: archived rows stay archived, stamp untouched
        manual.advance(chrono::TimeDelta::seconds(1));
        let s = merge::merge(db, archive(None), &present).await.expect("again");
        assert_eq!(s, summary(0, 0, 0, 45), "{name}: already archived rows are not archived again");
        assert_eq!(metas(db, name).await, m1, "{name}");

        // two come back (one unchanged, one changed): un-archived, counted as updates
        let mut back = present.clone();
        back.push(item(3, false));
        back.push(item(20, true));
        let r2 = new_run(db, &app).await;
        let s = merge::merge(db, archive(Some(&r2)), &back).await.expect("reappear");
        assert_eq!(s, summary(0, 2, 0, 45), "{name}");
        assert_eq!(merge::count_rows(db, name).await.expect("count"), 47);
        assert_eq!(live(db, &d).await, canonical(&d, &back));
        let m2 = metas(db, name).await;
        let back_keys = keys_of(&d, &[item(3, false), item(20, true)]);
        for k in &back_keys {
            assert_eq!(m2[k].archived_at, None, "{name} {k} must be un-archived");
            assert_eq!(m2[k].first_seen, m1[k].first_seen, "{name} {k}");
        }
        assert_eq!(feed(db, &r2).await, feed_of(name, "update", &back_keys));
        assert_eq!(counters(db, &r2).await, [0, 2, 0, 45]);
    }
}

async fn incremental_leaves_absent_rows(t: &TestDb) {
    let db = &t.db;
    let app = new_app(db, "incremental").await;
    let d = items_decl("incr");
    merge::ensure_table(db, &app, &d).await.expect("ensure_table");
    let all: Vec<_> = (0..20).map(|i| item(i, false)).collect();
    merge::merge(db, req(&app, None, &d), &all).await.expect("first");
    let before = metas(db, "incr").await;

    let delta = vec![item(4, true), item(5, true), item(20, false), item(21, false), item(22, false), item(7, false)];
    let rid = new_run(db, &app).await;
    let mut r = req(&app, Some(&rid), &d);
    r.full_snapshot = false;
    let s = merge::merge(db, r, &delta).await.expect("incremental");
    assert_eq!(s, summary(3, 2, 0, 1));
    assert_eq!(merge::count_rows(db, "incr").await.expect("count"), 23);
    let mut expected: Vec<_> = all.clone();
    expected[4] = item(4, true);
    expected[5] = item(5, true);
    expected.extend([item(20, false), item(21, false), item(22, false)]);
    assert_eq!(live(db, &d).await, canonical(&d, &expected));
    let after = metas(db, "incr").await;
    for i in (0..20).filter(|i| ![4, 5].contains(i)) {
        let k = keys_of(&d, &[item(i, false)]).remove(0);
        assert_eq!(after[&k], before[&k], "absent row {k} must be left alone");
    }
    assert!(feed(db, &rid).await.iter().all(|(_, op, _)| op != "delete"));

    // incremental with archive declared: still nothing archived
    let mut r = req(&app, None, &d);
    r.full_snapshot = false;
    r.archive_missing = true;
    let s = merge::merge(db, r, &[item(0, false)]).await.expect("incremental archive");
    assert_eq!(s, summary(0, 0, 0, 1));
    assert_eq!(merge::count_rows(db, "incr").await.expect("count"), 23);
}

async fn bad_batch_writes_nothing(t: &TestDb) {
    let db = &t.db;
    let app = new_app(db, "badbatch").await;
    let d = items_decl("bad");
    merge::ensure_table(db, &app, &d).await.expect("ensure_table");
    let base: Vec<_> = (0..30).map(|i| item(i, false)).collect();
    merge::merge(db, req(&app, None, &d), &base).await.expect("first");
    let content = live(db, &d).await;
    let meta = metas(db, "bad").await;

    // a batch that changes, adds and drops rows, with a wrong type in record 2
    let mut batch: Vec<_> = (0..25).map(|i| item(i, true)).collect();
    batch.push(item(100, false));
    batch[2].insert("qty".into(), json!("many"));
    let rid = new_run(db, &app).await;
    let err = merge::merge(db, req(&app, Some(&rid), &d), &batch).await.expect_err("bad batch must be refused");
    assert!(matches!(&err, MergeError::BadRecord { index: 2, .. }), "{err:?}");
    let msg = err.to_string();
    assert!(msg.contains("record 2") && msg.contains("\"qty\"") && msg.contains("many"), "{msg}");
    assert!(msg.contains("nothing of this batch was written"), "{msg}");
    assert_eq!(live(db, &d).await, content, "table content changed by a refused batch");
    assert_eq!(metas(db, "bad").await, meta, "bookkeeping changed by a refused batch");
    assert!(feed(db, &rid).await.is_empty());
    assert_eq!(counters(db, &rid).await, [0, 0, 0, 0]);

    // other refusals name the record too: missing key, duplicate key, wrong timestamp
    let mut missing_key = batch.clone();
    missing_key[2] = item(2, true);
    missing_key[7].remove("sku");
    let err = merge::merge(db, req(&app, Some(&rid), &d), &missing_key).await.expect_err("missing key");
    assert!(err.to_string().contains("record 7") && err.to_string().contains("\"sku\""), "{err}");
    let mut bad_ts = missing_key.clone();
    bad_ts[7] = item(7, true);
    bad_ts[25].insert("seen".into(), json!("31/01/2026"));
    let err = merge::merge(db, req(&app, Some(&rid), &d), &bad_ts).await.expect_err("bad timestamp");
    assert!(err.to_string().contains("record 25") && err.to_string().contains("\"seen\""), "{err}");
    assert_eq!(live(db, &d).await, content);
    assert_eq!(metas(db, "bad").await, meta);

    // text the database itself may refuse (NUL is invalid in PostgreSQL text)
    // must not leave half a batch behind either
    let mut nul = bad_ts.clone();
    nul[25] = item(100, false);
    nul[20].insert("title".into(), json!("nul \u{0} inside"));
    match merge::merge(db, req(&app, Some(&rid), &d), &nul).await {
        Ok(s) => {
            assert_eq!(s, summary(1, 25, 5, 0));
            assert_eq!(live(db, &d).await, canonical(&d, &nul));
        }
        Err(e) => {
            eprintln!("NUL text refused by {:?}: {e}", db.backend());
            assert_eq!(live(db, &d).await, content, "a failed merge left a partial batch: {e}");
            assert_eq!(metas(db, "bad").await, meta);
            assert!(feed(db, &rid).await.is_empty());
            assert_eq!(counters(db, &rid).await, [0, 0, 0, 0]);
        }
    }
}

/// A first load into an empty table prepares its records step by step
/// while they are copied (PostgreSQL): a bad record or a repeated key far
/// into the batch must still be named and leave the table empty and as it
/// was. The key's unique index is there after the first load (PostgreSQL
/// builds it then; SQLite's table has it from the start).
async fn a_first_load_refuses_a_bad_record_in_a_later_step(t: &TestDb) {
    let db = &t.db;
    let app = new_app(db, "firstload").await;
    let d = items_decl("first_load");
    merge::ensure_table(db, &app, &d).await.expect("ensure_table");
    let rows: Vec<_> = (0..12_000).map(|i| item(i, false)).collect();
    let rid = new_run(db, &app).await;
    let before = unique_indexes(db, "first_load").await;
    assert_eq!(before, i64::from(db.backend() == dc_core::db::Backend::Sqlite), "the key's index before any row");

    let mut bad = rows.clone();
    bad[11_500].insert("qty".into(), json!("many"));
    let err = merge::merge(db, req(&app, Some(&rid), &d), &bad).await.expect_err("bad record");
    assert!(matches!(&err, MergeError::BadRecord { index: 11_500, .. }), "{err:?}");
    let mut twice = rows.clone();
    twice[11_600] = item(10, true);
    let err = merge::merge(db, req(&app, Some(&rid), &d), &twice).await.expect_err("repeated key");
    let msg = err.to_string();
    assert!(matches!(&err, MergeError::BadRecord { index: 11_600, .. }), "{err:?}");
    assert!(msg.contains("appears more than once"), "{msg}");
    assert!(live(db, &d).await.is_empty(), "a refused first load left rows behind");
    assert_eq!(unique_indexes(db, "first_load").await, before, "a refused first load changed the key's index");
    assert!(feed(db, &rid).await.is_empty());
    assert_eq!(counters(db, &rid).await, [0, 0, 0, 0]);

    let s = merge::merge(db, req(&app, Some(&rid), &d), &rows).await.expect("first load");
    assert_eq!(s, summary(12_000, 0, 0, 0));
    assert_eq!(live(db, &d).await, canonical(&d, &rows));
    assert_eq!(feed(db, &rid).await.len(), 12_000);
    assert_eq!(counters(db, &rid).await, [12_000, 0, 0, 0]);
    assert_eq!(unique_indexes(db, "first_load").await, 1);
    let again = merge::merge(db, req(&app, Some(&rid), &d), &rows).await.expect("re-merge");
    assert_eq!(again, summary(0, 0, 0, 12_000));
}

async fn unicode_normalization_decides_unchanged(t: &TestDb) {
    let db = &t.db;
    let app = new_app(db, "unicode").await;
    let d = crate::common::decl(json!({
        "name": "uni", "key": ["sku"],
        "columns": [
            {"name": "sku", "type": "text", "nullable": false},
            {"name": "title", "type": "text"},
            {"name": "meta", "type": "json"}
        ]
    }));
    merge::ensure_table(db, &app, &d).await.expect("ensure_table");
    let composed = obj(json!({"sku": "a", "title": "Caf\u{e9}", "meta": {"city": "Z\u{fc}rich"}}));
    let decomposed = obj(json!({"sku": "a", "title": "Cafe\u{301}", "meta": {"city": "Zu\u{308}rich"}}));
    let with = |form| {
        let mut r = req(&app, None, &d);
        r.form = form;
        r
    };

    let s = merge::merge(db, with(UnicodeForm::Nfc), std::slice::from_ref(&composed)).await.expect("first");
    assert_eq!(s, summary(1, 0, 0, 0));
    let m = metas(db, "uni").await;
    let s = merge::merge(db, with(UnicodeForm::Nfc), std::slice::from_ref(&decomposed)).await.expect("nfc");
    assert_eq!(s, summary(0, 0, 0, 1), "NFC: composed and decomposed forms are the same text");
    assert_eq!(metas(db, "uni").await, m);
    assert_eq!(live(db, &d).await["[\"a\"]"]["title"], json!("Caf\u{e9}"), "unchanged row keeps its stored text");

    // NFD hashes differently from NFC, but again treats both spellings alike
    let s = merge::merge(db, with(UnicodeForm::Nfd), std::slice::from_ref(&decomposed)).await.expect("nfd");
    assert_eq!(s, summary(0, 1, 0, 0), "switching the form rehashes the row");
    let s = merge::merge(db, with(UnicodeForm::Nfd), std::slice::from_ref(&composed)).await.expect("nfd again");
    assert_eq!(s, summary(0, 0, 0, 1));

    // no normalization: the two spellings differ
    let s = merge::merge(db, with(UnicodeForm::None), std::slice::from_ref(&composed)).await.expect("none 1");
    assert_eq!(s.inserted + s.deleted, 0);
    let s = merge::merge(db, with(UnicodeForm::None), std::slice::from_ref(&decomposed)).await.expect("none 2");
    assert_eq!(s, summary(0, 1, 0, 0), "form None: decomposed text is a change");
    assert_eq!(live(db, &d).await["[\"a\"]"]["title"], json!("Cafe\u{301}"));
    let s = merge::merge(db, with(UnicodeForm::None), std::slice::from_ref(&decomposed)).await.expect("none 3");
    assert_eq!(s, summary(0, 0, 0, 1));

    let all = live(db, &d).await;
    assert_eq!(all.len(), 1, "{all:?}");
}

/// Text the database cannot store (NUL characters: PostgreSQL `text` and
/// `jsonb` reject them) must either be stored faithfully or be refused like any
/// other bad record — naming the record and field, with nothing written — and
/// never fail with an anonymous database error.
async fn unstorable_text_is_refused_naming_record_and_field(t: &TestDb) {
    let db = &t.db;
    let app = new_app(db, "nul").await;
    let d = crate::common::decl(json!({
        "name": "nul_text", "key": ["sku"],
        "columns": [
            {"name": "sku", "type": "text", "nullable": false},
            {"name": "title", "type": "text"},
            {"name": "meta", "type": "json"}
        ]
    }));
    merge::ensure_table(db, &app, &d).await.expect("ensure_table");
    let base: Vec<_> = (0..5).map(|i| obj(json!({"sku": format!("s{i}"), "title": "t", "meta": {"i": i}}))).collect();
    merge::merge(db, req(&app, None, &d), &base).await.expect("first");
    let before = live(db, &d).await;

    for (field, value) in [("title", json!("a\u{0}b")), ("meta", json!({"note": "a\u{0}b"}))] {
        let mut batch = base.clone();
        batch[3].insert(field.into(), value.clone());
        match merge::merge(db, req(&app, None, &d), &batch).await {
            Ok(s) => {
                assert_eq!(s, summary(0, 1, 0, 4));
                assert_eq!(live(db, &d).await["[\"s3\"]"][field], value, "stored, so it must read back unchanged");
                merge::merge(db, req(&app, None, &d), &base).await.expect("restore");
            }
            Err(e) => {
                assert_eq!(live(db, &d).await, before, "{e}");
                assert!(
                    matches!(&e, MergeError::BadRecord { index: 3, .. })
                        && e.to_string().contains(&format!("{field:?}")),
                    "{:?}: a {field} value with a NUL character was refused without naming record 3 and field {field:?}: {e}",
                    db.backend()
                );
            }
        }
    }
}
