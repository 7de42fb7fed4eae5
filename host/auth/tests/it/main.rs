//! Integration tests of dc-auth over a real loopback HTTP server (axum on
//! 127.0.0.1:0, the router mounted at `/api/v1/auth` as the REST API mounts
//! it) and a reqwest client, on SQLite and on PostgreSQL (a scratch database
//! per test, dropped afterwards; the tests FAIL when the server is down).
//! Time-dependent checks use a manual clock, never sleeps.

#![allow(clippy::unwrap_used)]

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use chrono::Utc;
use dc_auth::authority::Authority;
use dc_auth::vault::KeyVault;
use dc_auth::{accounts, router};
use dc_core::access::{Authenticate, Role};
use dc_core::{Database, Settings};
use dc_e2e::pg::{PgScratch, scratch_url};
use dc_scheduler::{Clock as _, ManualClock};
use serde_json::Value;

/// Runs an async test body on a fresh SQLite database and on a fresh
/// PostgreSQL database.
macro_rules! both_backends {
    ($($name:ident),+ $(,)?) => {$(
        mod $name {
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn sqlite() {
                super::$name(crate::Backend::Sqlite).await;
            }

            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn postgres() {
                super::$name(crate::Backend::Postgres).await;
            }
        }
    )+};
}

#[derive(Clone, Copy)]
enum Backend {
    Sqlite,
    Postgres,
}

/// A database, an authority on it and its router served on loopback.
struct Served {
    _dir: tempfile::TempDir,
    _pg: Option<PgScratch>,
    db: Database,
    auth: Arc<Authority>,
    clock: Arc<ManualClock>,
    base: String,
    http: reqwest::Client,
}

impl Served {
    async fn start(backend: Backend, tune: impl FnOnce(&mut Settings)) -> Served {
        let dir = tempfile::tempdir().unwrap();
        let mut settings = Settings::default();
        settings.general.data_dir = dir.path().to_path_buf();
        let pg = match backend {
            Backend::Sqlite => None,
            Backend::Postgres => {
                let url = scratch_url("dc_auth_it").await;
                settings.database.url = Some(url.clone());
                Some(PgScratch::for_url(&url))
            }
        };
        // the rate limit has a test of its own
        settings.auth.token_rate_burst = 1000;
        tune(&mut settings);
        let db = Database::connect(&settings).await.unwrap();
        db.migrate().await.unwrap();
        let clock = Arc::new(ManualClock::new(Utc::now()));
        let vault = KeyVault::at(settings.secrets_file(), settings.secrets_key_file(), None);
        let auth = Arc::new(Authority::new(db.clone(), settings.auth.clone(), vault, clock.clone()));
        auth.ensure_signing_key().await.unwrap();
        let app = axum::Router::new().nest("/api/v1/auth", router(auth.clone()));
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move {
            axum::serve(listener, app.into_make_service_with_connect_info::<SocketAddr>()).await.unwrap();
        });
        let http = reqwest::Client::builder().timeout(Duration::from_secs(60)).build().unwrap();
        Served { _dir: dir, _pg: pg, db, auth, clock, base: format!("http://{addr}/api/v1/auth"), http }
    }

    /// POSTs a form to `path`; returns (status, headers, JSON body or Null).
    async fn post(&self, path: &str, form: &[(&str, &str)], basic: Option<(&str, &str)>) -> Reply {
        let mut req = self
            .http
            .post(format!("{}{path}", self.base))
            .header("content-type", "application/x-www-form-urlencoded")
            .body(serde_urlencoded::to_string(form).unwrap());
        if let Some((id, secret)) = basic {
            req = req.basic_auth(id, Some(secret));
        }
        let resp = req.send().await.unwrap();
        let status = resp.status().as_u16();
        let headers = resp.headers().clone();
        let bytes = resp.bytes().await.unwrap();
        let body = if bytes.is_empty() { Value::Null } else { serde_json::from_slice(&bytes).unwrap() };
        Reply { status, headers, body }
    }

    async fn login(&self, user: &str, password: &str) -> Reply {
        self.post("/token", &[("grant_type", "password"), ("username", user), ("password", password)], None).await
    }

    /// Advances the clock past the default `auth.subject_cache_secs`, so a
    /// change of a subject made through the database applies.
    fn past_subject_cache(&self) {
        self.clock.advance(Duration::from_secs(Settings::default().auth.subject_cache_secs));
    }

    async fn refresh(&self, token: &str) -> Reply {
        self.post("/token", &[("grant_type", "refresh_token"), ("refresh_token", token)], None).await
    }
}

#[derive(Debug)]
struct Reply {
    status: u16,
    headers: reqwest::header::HeaderMap,
    body: Value,
}

impl Reply {
    fn error(&self) -> &str {
        self.body["error"].as_str().unwrap_or_default()
    }

    fn str(&self, key: &str) -> String {
        self.body[key].as_str().unwrap_or_else(|| panic!("no {key} in {:?}", self.body)).to_string()
    }

    fn assert_no_store(&self) {
        assert_eq!(self.headers.get("cache-control").unwrap(), "no-store", "{self:?}");
    }
}

both_backends!(
    password_grant_issues_tokens_the_authority_accepts,
    client_credentials_via_basic_or_form,
    refresh_tokens_rotate_and_reuse_revokes_the_family,
    concurrent_uses_of_one_refresh_token_one_wins_and_the_family_is_revoked,
    revocation_and_removed_or_disabled_subjects,
    kept_tokens_and_subjects_follow_expiry_and_subject_changes,
);

async fn password_grant_issues_tokens_the_authority_accepts(backend: Backend) {
    let s = Served::start(backend, |_| {}).await;
    accounts::add_user(&s.db, "alice", Role::Operator, "correct horse").await.unwrap();

    let ok = s.login("alice", "correct horse").await;
    assert_eq!(ok.status, 200, "{ok:?}");
    ok.assert_no_store();
    assert_eq!(ok.body["token_type"], "Bearer");
    assert_eq!(ok.body["expires_in"], 900);
    assert_eq!(ok.str("refresh_token").len(), 43);
    let principal = s.auth.authenticate(&ok.str("access_token")).await.unwrap();
    assert_eq!((principal.subject.as_str(), principal.role), ("alice", Role::Operator));

    // a wrong password and an unknown user get the same answer
    let wrong = s.login("alice", "correct horsf").await;
    let nobody = s.login("mallory", "correct horse").await;
    for r in [&wrong, &nobody] {
        assert_eq!((r.status, r.error()), (400, "invalid_grant"), "{r:?}");
        assert_eq!(r.str("error_description"), "wrong user name or password");
        r.assert_no_store();
    }

    // malformed requests
    let r = s.post("/token", &[("username", "alice")], None).await;
    assert_eq!((r.status, r.error()), (400, "invalid_request"), "{r:?}");
    let r = s.post("/token", &[("grant_type", "authorization_code"), ("code", "x")], None).await;
    assert_eq!((r.status, r.error()), (400, "unsupported_grant_type"), "{r:?}");
    let r = s.post("/token", &[("grant_type", "password"), ("username", "alice")], None).await;
    assert_eq!((r.status, r.error()), (400, "invalid_request"), "{r:?}");
    assert!(r.str("error_description").contains("password"), "{r:?}");
    let r = s.post("/token", &[("grant_type", "password"), ("grant_type", "password"), ("username", "a")], None).await;
    assert_eq!((r.status, r.error()), (400, "invalid_request"), "repeated parameter: {r:?}");
    let json = s
        .http
        .post(format!("{}/token", s.base))
        .header("content-type", "application/json")
        .body(r#"{"grant_type":"password","username":"alice","password":"correct horse"}"#)
        .send()
        .await
        .unwrap();
    assert_eq!(json.status().as_u16(), 400);
    let body: Value = serde_json::from_slice(&json.bytes().await.unwrap()).unwrap();
    assert_eq!(body["error"], "invalid_request", "{body}");

    // a bearer token that is not ours
    let err = s.auth.authenticate("a.b.c").await.unwrap_err();
    assert!(err.0.contains("not a valid JWT"), "{err}");
}

async fn client_credentials_via_basic_or_form(backend: Backend) {
    let s = Served::start(backend, |_| {}).await;
    let c = accounts::add_client(&s.db, "ci", Role::Admin).await.unwrap();
    let (id, secret) = (c.client_id.as_str(), c.client_secret.as_str());

    let basic = s.post("/token", &[("grant_type", "client_credentials")], Some((id, secret))).await;
    assert_eq!(basic.status, 200, "{basic:?}");
    basic.assert_no_store();
    assert!(basic.body.get("refresh_token").is_none(), "no refresh token for services: {basic:?}");
    let p = s.auth.authenticate(&basic.str("access_token")).await.unwrap();
    assert_eq!((p.subject.as_str(), p.role), (id, Role::Admin));

    let form = s
        .post("/token", &[("grant_type", "client_credentials"), ("client_id", id), ("client_secret", secret)], None)
        .await;
    assert_eq!(form.status, 200, "{form:?}");

    let both = s.post("/token", &[("grant_type", "client_credentials"), ("client_id", id)], Some((id, secret))).await;
    assert_eq!((both.status, both.error()), (400, "invalid_request"), "{both:?}");

    let wrong = s.post("/token", &[("grant_type", "client_credentials")], Some((id, "not-the-secret"))).await;
    assert_eq!((wrong.status, wrong.error()), (401, "invalid_client"), "{wrong:?}");
    assert!(wrong.headers.get("www-authenticate").is_some(), "{wrong:?}");
    let unknown = s.post("/token", &[("grant_type", "client_credentials")], Some(("dcc_nobody", secret))).await;
    assert_eq!((unknown.status, unknown.error()), (401, "invalid_client"), "{unknown:?}");
}

async fn refresh_tokens_rotate_and_reuse_revokes_the_family(backend: Backend) {
    let s = Served::start(backend, |_| {}).await;
    accounts::add_user(&s.db, "bob", Role::Viewer, "bob's password").await.unwrap();
    let first = s.login("bob", "bob's password").await.str("refresh_token");
    // a second login is another family, untouched by what happens to the first
    let other = s.login("bob", "bob's password").await.str("refresh_token");

    let second = s.refresh(&first).await;
    assert_eq!(second.status, 200, "{second:?}");
    second.assert_no_store();
    let second_token = second.str("refresh_token");
    assert_ne!(second_token, first, "rotated on use");
    assert!(s.auth.authenticate(&second.str("access_token")).await.is_ok());

    // the first token again: reuse, the whole family (the second token too) is revoked
    let reuse = s.refresh(&first).await;
    assert_eq!((reuse.status, reuse.error()), (400, "invalid_grant"), "{reuse:?}");
    assert!(reuse.str("error_description").contains("already used"), "{reuse:?}");
    let after = s.refresh(&second_token).await;
    assert_eq!((after.status, after.error()), (400, "invalid_grant"), "{after:?}");
    assert!(after.str("error_description").contains("revoked"), "{after:?}");

    assert_eq!(s.refresh(&other).await.status, 200, "other families keep working");
    assert_eq!(s.refresh("not-a-token").await.error(), "invalid_grant");

    // an expired refresh token (the clock moves past refresh_ttl_secs)
    let fresh = s.login("bob", "bob's password").await.str("refresh_token");
    s.clock.advance(Duration::from_secs(14 * 24 * 3600 + 1));
    let expired = s.refresh(&fresh).await;
    assert!(expired.str("error_description").contains("expired"), "{expired:?}");

    // a refused refresh names the token's subject for the audit log whenever
    // the token is known: reused, revoked, expired; an unknown one names none
    let (r, subject) = s.auth.refresh_grant_of(&first).await;
    assert!(r.is_err());
    assert_eq!(subject.as_deref(), Some("bob"), "reused");
    assert_eq!(s.auth.refresh_grant_of(&second_token).await.1.as_deref(), Some("bob"), "revoked");
    assert_eq!(s.auth.refresh_grant_of(&fresh).await.1.as_deref(), Some("bob"), "expired");
    assert_eq!(s.auth.refresh_grant_of("not-a-token").await.1, None);
}

async fn concurrent_uses_of_one_refresh_token_one_wins_and_the_family_is_revoked(backend: Backend) {
    let s = Served::start(backend, |_| {}).await;
    accounts::add_user(&s.db, "carol", Role::Viewer, "carol's password").await.unwrap();
    for round in 0..3 {
        let token = s.login("carol", "carol's password").await.str("refresh_token");
        let (a, b) = tokio::join!(s.refresh(&token), s.refresh(&token));
        let winners: Vec<&Reply> = [&a, &b].into_iter().filter(|r| r.status == 200).collect();
        assert_eq!(winners.len(), 1, "round {round}: exactly one use wins: {a:?} {b:?}");
        let loser = if a.status == 200 { &b } else { &a };
        assert_eq!((loser.status, loser.error()), (400, "invalid_grant"), "{loser:?}");
        // the loser presented a used token: the winner's new token is revoked too
        let next = s.refresh(&winners[0].str("refresh_token")).await;
        assert_eq!((next.status, next.error()), (400, "invalid_grant"), "round {round}: {next:?}");
    }
    let live = dc_core::auth_store::live_refresh_families(&s.db, s.clock.now()).await.unwrap();
    assert!(live.is_empty(), "every family revoked: {live:?}");
}

async fn revocation_and_removed_or_disabled_subjects(backend: Backend) {
    let s = Served::start(backend, |_| {}).await;
    accounts::add_user(&s.db, "dave", Role::Admin, "dave's password").await.unwrap();
    let login = s.login("dave", "dave's password").await;
    let (access, refresh) = (login.str("access_token"), login.str("refresh_token"));

    // RFC 7009: a refresh token is revoked (with its family), unknown tokens are fine
    let r = s.post("/revoke", &[("token", &refresh), ("token_type_hint", "refresh_token")], None).await;
    assert_eq!(r.status, 200, "{r:?}");
    r.assert_no_store();
    assert!(s.refresh(&refresh).await.str("error_description").contains("revoked"));
    assert_eq!(s.post("/revoke", &[("token", "unknown")], None).await.status, 200);
    let r = s.post("/revoke", &[("token", &access)], None).await;
    assert_eq!((r.status, r.error()), (400, "unsupported_token_type"), "{r:?}");
    assert_eq!(s.post("/revoke", &[], None).await.error(), "invalid_request");

    // changes made by another process (the CLI) apply within
    // auth.subject_cache_secs: disabling refuses the unexpired token;
    // removing too, and a new user of the same name is not the one the token
    // was issued to
    assert_eq!(s.auth.authenticate(&access).await.unwrap().role, Role::Admin);
    accounts::set_user_disabled(&s.db, "dave", true).await.unwrap();
    s.past_subject_cache();
    let err = s.auth.authenticate(&access).await.unwrap_err();
    assert!(err.0.contains("disabled"), "{err}");
    assert_eq!(s.login("dave", "dave's password").await.error(), "invalid_grant");
    accounts::set_user_disabled(&s.db, "dave", false).await.unwrap();
    s.past_subject_cache();
    assert!(s.auth.authenticate(&access).await.is_ok());
    accounts::remove_user(&s.db, "dave").await.unwrap();
    s.past_subject_cache();
    let err = s.auth.authenticate(&access).await.unwrap_err();
    assert!(err.0.contains("removed"), "{err}");
    // added again a minute after the token was issued (beyond the leeway)
    let later = s.clock.now() + chrono::TimeDelta::seconds(60);
    let hash = dc_auth::password::hash("new password").unwrap();
    assert!(dc_core::auth_store::add_user(&s.db, "dave", Role::Admin, &hash, later).await.unwrap());
    s.past_subject_cache();
    let err = s.auth.authenticate(&access).await.unwrap_err();
    assert!(err.0.contains("before its subject was created"), "{err}");

    // removing a client refuses its tokens
    let c = accounts::add_client(&s.db, "svc", Role::Viewer).await.unwrap();
    let t = s
        .post("/token", &[("grant_type", "client_credentials")], Some((&c.client_id, &c.client_secret)))
        .await
        .str("access_token");
    assert!(s.auth.authenticate(&t).await.is_ok());
    assert_eq!(accounts::remove_client(&s.db, "svc").await.unwrap(), c.client_id);
    s.past_subject_cache();
    assert!(s.auth.authenticate(&t).await.is_err());
}

/// What the authority keeps between requests (verified tokens, subjects)
/// never outlives what it stands for: a kept token expires on time, a change
/// of the subject made elsewhere applies once `auth.subject_cache_secs` have
/// passed (and at once after a grant in this process read the subject), and
/// with 0 it applies to the very next request.
async fn kept_tokens_and_subjects_follow_expiry_and_subject_changes(backend: Backend) {
    let s = Served::start(backend, |st| st.auth.subject_cache_secs = 10).await;
    accounts::add_user(&s.db, "fay", Role::Operator, "fay's password").await.unwrap();
    let access = s.login("fay", "fay's password").await.str("access_token");
    for _ in 0..3 {
        assert_eq!(s.auth.authenticate(&access).await.unwrap().role, Role::Operator, "kept, and still accepted");
    }

    // a role change elsewhere: the kept role answers for at most 10 s
    let hash = dc_auth::password::hash("fay's password").unwrap();
    let long_ago = Utc::now() - chrono::TimeDelta::days(1);
    dc_core::auth_store::remove_user(&s.db, "fay", long_ago).await.unwrap();
    assert!(dc_core::auth_store::add_user(&s.db, "fay", Role::Viewer, &hash, long_ago).await.unwrap());
    s.clock.advance(Duration::from_secs(9));
    assert_eq!(s.auth.authenticate(&access).await.unwrap().role, Role::Operator, "within the bound");
    s.clock.advance(Duration::from_secs(1));
    assert_eq!(s.auth.authenticate(&access).await.unwrap().role, Role::Viewer, "read again after 10 s");

    // disabled elsewhere, then a login attempt here reads the subject fresh:
    // the kept token is refused at once, not 10 s later
    accounts::set_user_disabled(&s.db, "fay", true).await.unwrap();
    assert!(s.auth.authenticate(&access).await.is_ok(), "within the bound");
    assert_eq!(s.login("fay", "fay's password").await.error(), "invalid_grant");
    let err = s.auth.authenticate(&access).await.unwrap_err();
    assert!(err.0.contains("disabled"), "{err}");
    accounts::set_user_disabled(&s.db, "fay", false).await.unwrap();
    s.clock.advance(Duration::from_secs(10));
    assert!(s.auth.authenticate(&access).await.is_ok());

    // a kept token expires on time (exp 900 s + 30 s leeway after issue; 20 s have passed)
    s.clock.advance(Duration::from_secs(909));
    assert!(s.auth.authenticate(&access).await.is_ok(), "one second before");
    s.clock.advance(Duration::from_secs(1));
    let err = s.auth.authenticate(&access).await.unwrap_err();
    assert!(err.0.contains("expired"), "{err}");
    assert!(s.auth.authenticate(&access).await.unwrap_err().0.contains("expired"), "and stays refused");

    // with subject_cache_secs = 0 every request reads the subject
    let s = Served::start(backend, |st| st.auth.subject_cache_secs = 0).await;
    let c = accounts::add_client(&s.db, "svc", Role::Viewer).await.unwrap();
    let t = s
        .post("/token", &[("grant_type", "client_credentials")], Some((&c.client_id, &c.client_secret)))
        .await
        .str("access_token");
    assert!(s.auth.authenticate(&t).await.is_ok());
    accounts::remove_client(&s.db, "svc").await.unwrap();
    let err = s.auth.authenticate(&t).await.unwrap_err();
    assert!(err.0.contains("removed"), "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn key_rotation_keeps_old_tokens_valid_for_the_grace_period() {
    let s = Served::start(Backend::Sqlite, |st| {
        st.auth.access_ttl_secs = 600;
        st.auth.key_grace_secs = 1800;
    })
    .await;
    accounts::add_user(&s.db, "erin", Role::Viewer, "erin's password").await.unwrap();
    let old_token = s.login("erin", "erin's password").await.str("access_token");
    let old_kid = jsonwebtoken::decode_header(&old_token).unwrap().kid.unwrap();

    let rotation = s.auth.rotate_key().await.unwrap();
    assert_eq!(rotation.retired, vec![old_kid.clone()]);
    assert_ne!(rotation.kid, old_kid);
    let new_token = s.login("erin", "erin's password").await.str("access_token");
    assert_eq!(jsonwebtoken::decode_header(&new_token).unwrap().kid.unwrap(), rotation.kid, "the new key signs");
    // the old key's token still verifies within the grace period
    assert!(s.auth.authenticate(&old_token).await.is_ok());
    // the private half of the retired key is gone from the secrets store
    let vault = KeyVault::at(s._dir.path().join("secrets.json"), s._dir.path().join("secrets.key"), None);
    assert!(vault.get(&old_kid).unwrap().is_none());
    assert!(vault.get(&rotation.kid).unwrap().is_some());

    // past the grace period the old key is refused, and the next rotation drops it
    s.clock.advance(Duration::from_secs(1801));
    let err = s.auth.authenticate(&old_token).await.unwrap_err();
    assert!(err.0.contains("was replaced"), "{err}");
    let again = s.auth.rotate_key().await.unwrap();
    assert_eq!(again.dropped, vec![old_kid]);
    assert_eq!(again.retired, vec![rotation.kid.clone()]);
    let kids: Vec<String> = dc_core::auth_store::list_keys(&s.db).await.unwrap().into_iter().map(|k| k.kid).collect();
    assert_eq!(kids, vec![again.kid.clone(), rotation.kid]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_token_endpoint_is_rate_limited_per_client_address() {
    let s = Served::start(Backend::Sqlite, |st| {
        st.auth.token_rate_burst = 2;
        st.auth.token_rate_per_minute = 1;
    })
    .await;
    for _ in 0..2 {
        assert_eq!(s.login("nobody", "whatever1").await.error(), "invalid_grant");
    }
    let limited = s.login("nobody", "whatever1").await;
    assert_eq!(limited.status, 429, "{limited:?}");
    let retry: u64 = limited.headers.get("retry-after").unwrap().to_str().unwrap().parse().unwrap();
    assert!((1..=60).contains(&retry), "{retry}");
    limited.assert_no_store();
    // the revocation endpoint shares the budget
    assert_eq!(s.post("/revoke", &[("token", "x")], None).await.status, 429);
}
