//! Proxy exit reservations (`dc_core::proxy_store`) on both backends: 100
//! concurrent reservations from separate pools never hand one exit out twice,
//! a run's end releases its exits, and an expired reservation gives its exit up.

use chrono::{Duration, TimeZone, Utc};
use dc_core::RuntimeId;
use dc_core::proxy_store::{self, Candidate, Holder};

use crate::common::TestDb;

fn exits(n: usize) -> Vec<Candidate> {
    (0..n).map(|i| Candidate { exit_key: format!("ip:10.0.0.{i}"), proxy: format!("http://10.0.0.{i}:3128") }).collect()
}

async fn concurrent_reservations_never_share_an_exit(t: &TestDb) {
    let now = Utc.with_ymd_and_hms(2026, 11, 26, 12, 0, 0).single().expect("time");
    // 100 runs want an exit from a pool of 40, all at once, through 4 pools
    // (as separate workers would): 40 win one each, 60 find none
    let pools = [t.db.clone(), t.reconnect().await, t.reconnect().await, t.reconnect().await];
    let candidates = exits(40);
    let mut tasks = Vec::new();
    for run in 0..100 {
        let db = pools[run % pools.len()].clone();
        let candidates = candidates.clone();
        tasks.push(tokio::spawn(async move {
            let id = RuntimeId::from(format!("run{run:03}"));
            let holder = Holder { runtime_id: &id, host_name: "h", now, expires_at: now + Duration::hours(1) };
            proxy_store::reserve_first(&db, &candidates, holder).await.expect("reserve")
        }));
    }
    let mut got = Vec::new();
    for t in tasks {
        if let Some(i) = t.await.expect("task") {
            got.push(i);
        }
    }
    assert_eq!(got.len(), 40, "every exit is handed out: {got:?}");
    got.sort_unstable();
    got.dedup();
    assert_eq!(got.len(), 40, "no exit is handed out twice");
    let active = proxy_store::active(&t.db).await.expect("active");
    assert_eq!(active.len(), 40);
    let mut runs: Vec<&str> = active.iter().map(|r| r.runtime_id.as_str()).collect();
    runs.sort_unstable();
    runs.dedup();
    assert_eq!(runs.len(), 40, "each winner holds one exit");
}

async fn a_run_end_releases_its_exits_and_expiry_frees_the_rest(t: &TestDb) {
    let now = Utc.with_ymd_and_hms(2026, 11, 26, 12, 0, 0).single().expect("time");
    let c = exits(2);
    let (ra, rb, rc) = (RuntimeId::from("a"), RuntimeId::from("b"), RuntimeId::from("c"));
    let a = Holder { runtime_id: &ra, host_name: "h", now, expires_at: now + Duration::minutes(10) };
    assert!(proxy_store::reserve(&t.db, &c[0], a).await.expect("reserve"));
    assert!(proxy_store::reserve(&t.db, &c[1], a).await.expect("reserve"));
    let b = Holder { runtime_id: &rb, ..a };
    assert_eq!(proxy_store::reserve_first(&t.db, &c, b).await.expect("reserve"), None, "both held by a");
    // a ends: its exits are free again, and b gets the first
    assert_eq!(proxy_store::release_run(&t.db, &ra, now, "run ended").await.expect("release"), 2);
    assert_eq!(proxy_store::reserve_first(&t.db, &c, b).await.expect("reserve"), Some(0));
    let rows = proxy_store::of_run(&t.db, &ra).await.expect("rows");
    assert!(rows.iter().all(|r| r.release_reason.as_deref() == Some("run ended") && r.released_at == Some(now)));
    // b's reservation expires at +10 min: before that it holds, at expiry the exit is free
    let c_early = Holder {
        runtime_id: &rc,
        host_name: "h",
        now: now + Duration::minutes(9),
        expires_at: now + Duration::hours(1),
    };
    assert_eq!(proxy_store::reserve_first(&t.db, &c[..1], c_early).await.expect("reserve"), None);
    let c_late = Holder { now: now + Duration::minutes(10), ..c_early };
    assert_eq!(proxy_store::reserve_first(&t.db, &c[..1], c_late).await.expect("reserve"), Some(0));
    let b_rows = proxy_store::of_run(&t.db, &rb).await.expect("rows");
    assert_eq!(b_rows[0].release_reason.as_deref(), Some("expired"));
    // expire() frees whatever is past its time in one go
    assert_eq!(proxy_store::expire(&t.db, now + Duration::hours(2)).await.expect("expire"), 1);
    assert!(proxy_store::active(&t.db).await.expect("active").is_empty());
}

both_backends!(concurrent_reservations_never_share_an_exit, a_run_end_releases_its_exits_and_expiry_frees_the_rest);
