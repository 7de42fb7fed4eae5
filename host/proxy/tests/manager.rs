//! The proxy manager against real proxies on loopback (`dc_e2e::proxy`):
//! traffic provably goes through them (they count it, the target sees their
//! `Via`), rotation per request and per session, judges with failover that
//! tell each proxy's exit (the proxies connect out from 127.0.0.2 and
//! 127.0.0.3), exits reserved in a real SQLite database, a proxy that always
//! answers 403 retired, and BrightData's super-proxy stood in for by a
//! proxy that requires authentication and records the user names.

#![allow(clippy::unwrap_used)]

use std::sync::Arc;
use std::time::Duration;

use chrono::Utc;
use dc_core::proxy_store::{self, Candidate, Holder};
use dc_core::settings::ProxyRotate;
use dc_core::{Database, Settings};
use dc_e2e::HttpSink;
use dc_e2e::proxy::{Judge, ProxyConfig, TestProxy};
use dc_proxy::brightdata::BrightData;
use dc_proxy::{ManagerOptions, ProxyError, ProxyManager, ProxyProvider, StaticProvider};

async fn sqlite() -> (Database, tempfile::TempDir) {
    let dir = tempfile::tempdir().unwrap();
    let url = format!("sqlite://{}/t.db", dir.path().display());
    let db = Database::connect_url(&url, &Settings::default()).await.unwrap();
    db.migrate().await.unwrap();
    (db, dir)
}

fn opts(run: &str, rotate: ProxyRotate, judges: Vec<String>) -> ManagerOptions {
    ManagerOptions {
        rotate,
        judges,
        ban_statuses: vec![403, 429],
        retire_below: 0.2,
        timeout: Duration::from_secs(10),
        user_agent: "dc-proxy-test".into(),
        runtime_id: run.into(),
        host_name: "test-host".into(),
        now: Utc::now(),
        ttl: Duration::from_secs(600),
    }
}

fn two_proxies() -> (TestProxy, TestProxy) {
    (
        TestProxy::start(ProxyConfig::new("proxy-a", "127.0.0.2")),
        TestProxy::start(ProxyConfig::new("proxy-b", "127.0.0.3")),
    )
}

fn static_of(urls: &[&str]) -> Arc<dyn ProxyProvider> {
    Arc::new(StaticProvider::new(urls.iter().map(|u| u.to_string()).collect(), None, None, None))
}

/// Sends `n` GETs of `url` through leases of `m`, reporting each answer.
async fn get_n(m: &ProxyManager, url: &str, n: usize) -> Vec<(String, u16)> {
    let mut out = Vec::new();
    for _ in 0..n {
        let lease = m.lease().unwrap();
        let jar = Arc::new(reqwest::cookie::Jar::default());
        let r = m.new_client(&lease, dc_proxy::manager::DEFAULT_REDIRECTS, jar).unwrap().get(url).send().await;
        match r {
            Ok(r) => {
                let status = r.status().as_u16();
                let body = r.bytes().await.unwrap_or_default();
                m.report(&lease, Some((status, &body)));
                out.push((lease.proxy.clone(), status));
            }
            Err(_) => {
                m.report(&lease, None);
                out.push((lease.proxy.clone(), 0));
            }
        }
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn requests_rotate_through_two_proxies_and_the_target_sees_both() {
    let (db, _dir) = sqlite().await;
    let (a, b) = two_proxies();
    let target = HttpSink::start(0);
    let m = ProxyManager::start(static_of(&[&a.url, &b.url]), &db, opts("run1", ProxyRotate::Request, vec![]))
        .await
        .unwrap();
    let sent = get_n(&m, &target.url, 6).await;
    assert!(sent.iter().all(|(_, s)| *s == 200), "{sent:?}");
    // each proxy forwarded every other request
    assert_eq!(a.count_for(&target.url), 3);
    assert_eq!(b.count_for(&target.url), 3);
    // the sink records a request after answering it: wait for each record
    let vias: Vec<String> = (0..6)
        .map(|_| target.requests.recv_timeout(Duration::from_secs(30)).unwrap())
        .filter_map(|r| r.header("via").map(str::to_string))
        .collect();
    assert_eq!(vias, ["1.1 proxy-a", "1.1 proxy-b", "1.1 proxy-a", "1.1 proxy-b", "1.1 proxy-a", "1.1 proxy-b"]);
    let stats = m.stats();
    assert_eq!(stats.iter().map(|s| s.requests).collect::<Vec<_>>(), [3, 3]);
    // without judges each endpoint is its own exit, reserved for this run
    let active = proxy_store::active(&db).await.unwrap();
    let keys: Vec<&str> = active.iter().map(|r| r.exit_key.as_str()).collect();
    assert_eq!(keys, [format!("proxy:{}", a.url), format!("proxy:{}", b.url)]);
    assert!(active.iter().all(|r| r.runtime_id == "run1"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn judges_tell_each_exit_failing_over_when_one_is_down() {
    let (db, _dir) = sqlite().await;
    let (a, b) = two_proxies();
    let judge = Judge::start();
    let judges = vec![Judge::down_url(), judge.url.clone()];
    let m = ProxyManager::start(static_of(&[&a.url, &b.url]), &db, opts("run1", ProxyRotate::Request, judges))
        .await
        .unwrap();
    let exits: Vec<Option<String>> = m.stats().into_iter().map(|s| s.exit_ip).collect();
    assert_eq!(exits, [Some("127.0.0.2".to_string()), Some("127.0.0.3".to_string())]);
    assert_eq!(judge.asked().len(), 2, "the working judge answered each proxy once");
    assert_eq!(a.count_for(&judge.url), 1);
    let keys: Vec<String> = proxy_store::active(&db).await.unwrap().into_iter().map(|r| r.exit_key).collect();
    assert_eq!(keys, ["ip:127.0.0.2", "ip:127.0.0.3"], "the exit IP is what is reserved");

    // a third proxy with proxy-a's exit is the same exit: not used twice
    let a2 = TestProxy::start(ProxyConfig::new("proxy-a2", "127.0.0.2"));
    let other =
        ProxyManager::start(static_of(&[&a2.url]), &db, opts("run2", ProxyRotate::Request, vec![judge.url.clone()]))
            .await;
    let err = other.expect_err("exit held by run1").to_string();
    assert!(err.contains("another run holds"), "{err}");

    // with every judge down no proxy can be verified, and none is used
    let c = TestProxy::start(ProxyConfig::new("proxy-c", "127.0.0.4"));
    let err =
        ProxyManager::start(static_of(&[&c.url]), &db, opts("run3", ProxyRotate::Request, vec![Judge::down_url()]))
            .await
            .expect_err("unverifiable")
            .to_string();
    assert!(err.contains("could not be verified"), "{err}");
    assert_eq!(c.count_for("/ip"), 1, "the judge was asked through the proxy");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_proxy_that_answers_403_is_retired_and_the_run_goes_on_without_it() {
    let (db, _dir) = sqlite().await;
    let good = TestProxy::start(ProxyConfig::new("good", "127.0.0.2"));
    let banned = TestProxy::start(ProxyConfig { answer_status: Some(403), ..ProxyConfig::new("banned", "127.0.0.3") });
    let target = HttpSink::start(0);
    let m = ProxyManager::start(static_of(&[&good.url, &banned.url]), &db, opts("run1", ProxyRotate::Request, vec![]))
        .await
        .unwrap();
    let sent = get_n(&m, &target.url, 10).await;
    // good, banned, good, banned, good, banned (third ban: retired), then good only
    let statuses: Vec<u16> = sent.iter().map(|(_, s)| *s).collect();
    assert_eq!(statuses, [200, 403, 200, 403, 200, 403, 200, 200, 200, 200]);
    assert_eq!(banned.seen().len(), 3);
    assert_eq!(good.count_for(&target.url), 7);
    let stats = m.stats();
    assert!(stats[1].retired && stats[1].bans == 3 && stats[1].score < 0.2, "{stats:?}");
    assert!(!stats[0].retired && stats[0].good == 7, "{stats:?}");

    // once every proxy is retired, requests are refused rather than sent directly
    let only_banned =
        ProxyManager::start(static_of(&[&banned.url]), &db, opts("run2", ProxyRotate::Request, vec![])).await;
    let err = only_banned.expect_err("banned's exit is held by run1").to_string();
    assert!(err.contains("another run holds"), "{err}");
    proxy_store::release_run(&db, &"run1".into(), Utc::now(), "run ended").await.unwrap();
    let m =
        ProxyManager::start(static_of(&[&banned.url]), &db, opts("run2", ProxyRotate::Request, vec![])).await.unwrap();
    get_n(&m, &target.url, 3).await;
    let err = m.lease().expect_err("all retired");
    assert!(matches!(err, ProxyError::Unavailable(_)) && err.to_string().contains("not sent without a proxy"), "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rotation_per_session_keeps_each_thread_on_its_proxy() {
    let (db, _dir) = sqlite().await;
    let (a, b) = two_proxies();
    let target = HttpSink::start(0);
    let m = ProxyManager::start(static_of(&[&a.url, &b.url]), &db, opts("run1", ProxyRotate::Session, vec![]))
        .await
        .unwrap();
    let mut threads = Vec::new();
    for _ in 0..2 {
        let m = m.clone();
        let url = target.url.clone();
        threads.push(std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
            rt.block_on(get_n(&m, &url, 4)).into_iter().map(|(p, _)| p).collect::<Vec<_>>()
        }));
    }
    let used: Vec<Vec<String>> = threads.into_iter().map(|t| t.join().unwrap()).collect();
    for u in &used {
        assert!(u.iter().all(|p| p == &u[0]), "a thread kept its proxy: {u:?}");
    }
    assert_ne!(used[0][0], used[1][0], "the two threads got different proxies");
    assert_eq!((a.count_for(&target.url), b.count_for(&target.url)), (4, 4));
}

/// What a plugin's `proxy.*` host calls do: the thread's current proxy, a
/// rotation that moves it (and its traffic) to the other one, and a reported
/// ban that counts toward the health score, retires the proxy below the
/// threshold and moves the thread on — per session and per request.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_thread_reads_rotates_and_reports_its_proxy() {
    for rotate in [ProxyRotate::Session, ProxyRotate::Request] {
        let (db, _dir) = sqlite().await;
        let (a, b) = two_proxies();
        let target = HttpSink::start(0);
        let m = ProxyManager::start(static_of(&[&a.url, &b.url]), &db, opts("run1", rotate, vec![])).await.unwrap();
        let url = target.url.clone();
        // one plugin thread (the manager keeps each thread's proxy by thread id)
        std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
            let first = m.current().unwrap().proxy;
            let used = rt.block_on(get_n(&m, &url, 1));
            assert_eq!(used[0].0, first, "{rotate:?}: current names the proxy the next request takes");
            assert_eq!(m.current().unwrap().proxy, first);
            let second = m.rotate().unwrap().proxy;
            assert_ne!(second, first, "{rotate:?}");
            let used = rt.block_on(get_n(&m, &url, 1));
            assert_eq!(used[0].0, second, "{rotate:?}: the request followed the rotation");
            // bans until the second proxy's score falls below 0.2: retired, and the thread moved back
            let mut after = m.report_current(dc_proxy::health::Verdict::Ban).unwrap();
            assert_eq!(after.proxy, first, "{rotate:?}: a ban moves the thread on");
            let mut bans = 1;
            while !m.stats().iter().any(|s| s.proxy == second && s.retired) {
                m.rotate().unwrap();
                if m.current().unwrap().proxy == second {
                    after = m.report_current(dc_proxy::health::Verdict::Ban).unwrap();
                    bans += 1;
                }
                assert!(bans < 20, "{rotate:?}: never retired: {:?}", m.stats());
            }
            assert_eq!(after.proxy, first);
            assert_eq!(m.rotate().unwrap().proxy, first, "{rotate:?}: only the first proxy is left");
            let second_stats = m.stats().into_iter().find(|s| s.proxy == second).unwrap();
            assert_eq!(second_stats.bans, bans, "{second_stats:?}");
        })
        .join()
        .unwrap();
    }
}

fn brightdata(proxy: &TestProxy, sessions: u32) -> BrightData {
    BrightData {
        host: proxy.url.trim_start_matches("http://").to_string(),
        customer: "hl_c0ffee".into(),
        zone: "residential".into(),
        country: Some("us".into()),
        password: "zone-secret".into(),
        sessions,
    }
}

fn session_of(user: &str) -> &str {
    let prefix = "brd-customer-hl_c0ffee-zone-residential-country-us-session-";
    user.strip_prefix(prefix).unwrap_or_else(|| panic!("{user:?} is not a BrightData user name of this zone"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn brightdata_rotates_the_session_id_per_request_or_keeps_it_per_session() {
    let (db, _dir) = sqlite().await;
    // stands in for brd.superproxy.io: it wants credentials and records them
    let superproxy = TestProxy::start(ProxyConfig { require_auth: true, ..ProxyConfig::new("brd", "127.0.0.2") });
    let target = HttpSink::start(0);
    let m = ProxyManager::start(Arc::new(brightdata(&superproxy, 2)), &db, opts("run1", ProxyRotate::Request, vec![]))
        .await
        .unwrap();
    let sent = get_n(&m, &target.url, 5).await;
    assert!(sent.iter().all(|(_, s)| *s == 200), "{sent:?}");
    let seen = superproxy.seen();
    assert_eq!(seen.len(), 5);
    assert!(seen.iter().all(|s| s.password.as_deref() == Some("zone-secret")));
    let sessions: std::collections::BTreeSet<&str> =
        seen.iter().map(|s| session_of(s.user.as_deref().unwrap())).collect();
    assert_eq!(sessions.len(), 5, "a new session id for every request: {seen:?}");
    assert!(proxy_store::active(&db).await.unwrap().is_empty(), "a new exit per request needs no reservation");

    // per session: 2 sessions reserved, each thread keeps one
    let per_session =
        ProxyManager::start(Arc::new(brightdata(&superproxy, 2)), &db, opts("run2", ProxyRotate::Session, vec![]))
            .await
            .unwrap();
    get_n(&per_session, &target.url, 3).await;
    let users: Vec<String> = superproxy.seen()[5..].iter().map(|s| s.user.clone().unwrap()).collect();
    assert_eq!(users.len(), 3);
    assert!(users.iter().all(|u| u == &users[0]), "one thread, one session: {users:?}");
    let reserved = proxy_store::active(&db).await.unwrap();
    assert_eq!(reserved.len(), 2);
    assert!(
        reserved
            .iter()
            .all(|r| r.exit_key.starts_with("brd:hl_c0ffee:residential:rand") && !r.proxy.contains("zone-secret"))
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_proxy_another_run_holds_is_skipped() {
    let (db, _dir) = sqlite().await;
    let (a, b) = two_proxies();
    let now = Utc::now();
    let other = dc_core::RuntimeId::from("other");
    let holder = Holder { runtime_id: &other, host_name: "h", now, expires_at: now + chrono::Duration::hours(1) };
    let held = Candidate { exit_key: format!("proxy:{}", a.url), proxy: a.url.clone() };
    assert!(proxy_store::reserve(&db, &held, holder).await.unwrap());
    let m = ProxyManager::start(static_of(&[&a.url, &b.url]), &db, opts("run1", ProxyRotate::Request, vec![]))
        .await
        .unwrap();
    let stats = m.stats();
    assert_eq!(stats.len(), 1);
    assert_eq!(stats[0].proxy, b.url);
}
