//! The audit log (`dc_core::audit`) on both backends: entries come back
//! newest first, filtered by subject and time, paged by id without gaps or
//! repeats, and over-long texts are cut.

use chrono::{Duration, TimeZone, Utc};
use dc_core::audit::{self, AuditQuery, MAX_TEXT, NewAuditEntry};

use crate::common::TestDb;

async fn entries_filter_and_page_newest_first(t: &TestDb) {
    let t0 = Utc.with_ymd_and_hms(2026, 11, 27, 8, 0, 0).single().expect("time");
    for i in 0..7i64 {
        let subject = if i % 2 == 0 { "ada" } else { "otto" };
        audit::record(
            &t.db,
            NewAuditEntry {
                at: t0 + Duration::minutes(i),
                subject: Some(subject.into()),
                role: Some("admin".into()),
                method: "POST".into(),
                route: "/api/v1/apps/{app_id}/commands".into(),
                target: Some(format!("app{i}")),
                status: 202,
                client_addr: Some("127.0.0.1:5000".into()),
                request_id: Some(format!("req-{i}")),
            },
        )
        .await
        .expect("record");
    }
    // a failed login: no role, a name cut to MAX_TEXT
    audit::record(
        &t.db,
        NewAuditEntry {
            at: t0 + Duration::minutes(10),
            subject: Some("x".repeat(5000)),
            method: "POST".into(),
            route: "/api/v1/auth/token".into(),
            status: 400,
            ..NewAuditEntry::default()
        },
    )
    .await
    .expect("record");

    let all = audit::page(&t.db, &AuditQuery { limit: 100, ..AuditQuery::default() }).await.expect("page");
    assert_eq!(all.len(), 8);
    assert!(all.windows(2).all(|w| w[0].id > w[1].id), "newest first");
    assert_eq!(all[0].subject.as_deref().map(str::len), Some(MAX_TEXT));
    assert_eq!((all[0].role.as_deref(), all[0].status), (None, 400));
    assert_eq!(all[1].target.as_deref(), Some("app6"));
    assert_eq!(all[1].at, t0 + Duration::minutes(6));

    let ada = audit::page(&t.db, &AuditQuery { subject: Some("ada".into()), limit: 100, ..AuditQuery::default() })
        .await
        .expect("page");
    let targets: Vec<_> = ada.iter().filter_map(|r| r.target.as_deref()).collect();
    assert_eq!(targets, ["app6", "app4", "app2", "app0"]);

    let window = AuditQuery {
        since: Some(t0 + Duration::minutes(2)),
        until: Some(t0 + Duration::minutes(5)),
        limit: 100,
        ..AuditQuery::default()
    };
    let rows = audit::page(&t.db, &window).await.expect("page");
    let targets: Vec<_> = rows.iter().filter_map(|r| r.target.as_deref()).collect();
    assert_eq!(targets, ["app4", "app3", "app2"], "since inclusive, until exclusive");

    // pages of 3 by id: every entry once
    let mut seen = Vec::new();
    let mut before = None;
    loop {
        let q = AuditQuery { before_id: before, limit: 3, ..AuditQuery::default() };
        let rows = audit::page(&t.db, &q).await.expect("page");
        if rows.is_empty() {
            break;
        }
        before = rows.last().map(|r| r.id);
        seen.extend(rows.into_iter().map(|r| r.id));
    }
    assert_eq!(seen, all.iter().map(|r| r.id).collect::<Vec<_>>());
}

both_backends!(entries_filter_and_page_newest_first);
