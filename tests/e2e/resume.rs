//! Resuming a run (`dc-host run APP --resume RUNTIME_ID`, issue #10): the
//! example crawler runs against a loopback copy of the fixture site that
//! counts the requests for every path and holds the requests for some product
//! pages until the test lets them through. The first run is killed (SIGKILL
//! of its worker) or stopped while both collecting threads wait on held pages
//! and every page they finished is saved; the resumed run then ends with the
//! same rows as an uninterrupted run, and no page the first run finished is
//! fetched again. Also the refusals: an unknown run, a successful run, another
//! app's run, arguments, another plugin version, a run resumed already.

use std::collections::HashMap;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::PathBuf;
use std::process::Stdio;
use std::sync::{Arc, Condvar, Mutex};
use std::time::Duration;

use dc_e2e::{
    FixtureSite, Host, KillOnDrop, RequestHead, both_backends, plugin_lib, send_signal, wait_pid_exit, workspace,
};
use serde_json::Value;

/// Pages of the fixture site the crawler reaches (see `crawl.rs`).
const PAGES: usize = 317;
const APP: &str = "demo/fixtures/crawl";
/// Bounds a broken test only; every wait below ends on its event.
const LIMIT: Duration = Duration::from_secs(120);

#[derive(Default)]
struct SiteState {
    /// Requests per path.
    hits: HashMap<String, u32>,
    /// Paths of the requests being held now.
    held: Vec<String>,
    /// Held requests are let through (and no more are held).
    open: bool,
}

/// The fixture site served from this process: counts requests per path and
/// holds the requests for product pages numbered `hold_from` and up until
/// [`CountingSite::open`].
struct CountingSite {
    base_url: String,
    state: Arc<(Mutex<SiteState>, Condvar)>,
}

fn held(path: &str, hold_from: u32) -> bool {
    path.strip_prefix("/catalogue/item-")
        .and_then(|p| p.strip_suffix(".html"))
        .and_then(|n| n.parse::<u32>().ok())
        .is_some_and(|n| n >= hold_from)
}

fn answer(mut stream: TcpStream, root: PathBuf, hold_from: u32, state: Arc<(Mutex<SiteState>, Condvar)>) {
    let Some(RequestHead { path, .. }) = RequestHead::read(&mut BufReader::new(stream.try_clone().expect("clone")))
    else {
        return;
    };
    // the host's politeness limiter asks for robots.txt before the first page:
    // none here, and not a page of the crawl, so not counted
    if path == "/robots.txt" {
        let _ = write!(stream, "HTTP/1.1 404 Not Found\r\ncontent-length: 0\r\nconnection: close\r\n\r\n");
        return;
    }
    {
        let (lock, cv) = &*state;
        let mut s = lock.lock().expect("lock");
        *s.hits.entry(path.clone()).or_default() += 1;
        if held(&path, hold_from) && !s.open {
            s.held.push(path.clone());
            cv.notify_all();
            while !s.open {
                s = cv.wait(s).expect("lock");
            }
        }
    }
    let file = if path.ends_with('/') { format!("{path}index.html") } else { path.clone() };
    let (status, body) = match std::fs::read(root.join(file.trim_start_matches('/'))) {
        Ok(b) if !path.contains("..") => ("200 OK", b),
        _ => ("404 Not Found", b"not here".to_vec()),
    };
    let _ = write!(
        stream,
        "HTTP/1.1 {status}\r\ncontent-type: text/html; charset=utf-8\r\ncontent-length: {}\r\nconnection: close\r\n\r\n",
        body.len()
    );
    let _ = stream.write_all(&body);
    let _ = stream.flush();
}

impl CountingSite {
    fn start(hold_from: u32) -> CountingSite {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind a loopback port");
        let base_url = format!("http://{}/", listener.local_addr().expect("address"));
        let state: Arc<(Mutex<SiteState>, Condvar)> = Arc::default();
        let root = workspace().join("tests/fixtures/catalogue");
        let st = state.clone();
        std::thread::spawn(move || {
            for stream in listener.incoming() {
                let Ok(stream) = stream else { continue };
                let (root, st) = (root.clone(), st.clone());
                std::thread::spawn(move || answer(stream, root, hold_from, st));
            }
        });
        CountingSite { base_url, state }
    }

    /// Waits until `n` requests are held.
    fn wait_held(&self, n: usize) -> Vec<String> {
        let (lock, cv) = &*self.state;
        let s = lock.lock().expect("lock");
        let (s, t) = cv.wait_timeout_while(s, LIMIT, |s| s.held.len() < n).expect("lock");
        assert!(!t.timed_out(), "{n} requests were not held within {LIMIT:?}: {:?}", s.held);
        s.held.clone()
    }

    fn open(&self) {
        let (lock, cv) = &*self.state;
        lock.lock().expect("lock").open = true;
        cv.notify_all();
    }

    fn hits(&self) -> HashMap<String, u32> {
        self.state.0.lock().expect("lock").hits.clone()
    }

    fn args(&self) -> String {
        serde_json::json!({"start_url": self.base_url}).to_string()
    }
}

impl Drop for CountingSite {
    fn drop(&mut self) {
        // let held requests (of a worker still alive after a failed test) go
        self.open();
    }
}

fn crawl_host(new_host: fn() -> Host) -> Host {
    let mut host = new_host();
    // a held request must not time out and be retried while the test waits
    host.env.push(("DC_RUNS_HTTP_TIMEOUT_SECS".into(), "600".into()));
    host.install(&plugin_lib("dc_plugin_crawl"), "crawl.so");
    host.ok(&["reload"]);
    host
}

/// The crawl's rows as (path, title, links, bytes), sorted.
fn rows(host: &Host) -> Vec<(String, String, i64, i64)> {
    let rows = host.json(&["data", "head", "crawl_pages", "--limit", "1000", "--json"]);
    let mut out: Vec<_> = rows
        .as_array()
        .expect("rows")
        .iter()
        .map(|r| {
            (
                r["path"].as_str().unwrap_or_default().to_string(),
                r["title"].as_str().unwrap_or_default().to_string(),
                r["links"].as_i64().unwrap_or(-1),
                r["bytes"].as_i64().unwrap_or(-1),
            )
        })
        .collect();
    out.sort();
    out
}

/// The lines the first run writes on stderr (its worker's console log passes
/// through the supervisor), copied to a file for failure messages and sent
/// to the test as they come.
pub(crate) struct StderrLines {
    rx: std::sync::mpsc::Receiver<String>,
    seen: Vec<String>,
}

impl StderrLines {
    pub(crate) fn follow(stderr: std::process::ChildStderr, copy: PathBuf) -> StderrLines {
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let mut file = std::fs::File::create(copy).expect("stderr copy");
            for line in BufReader::new(stderr).lines() {
                let Ok(line) = line else { break };
                let _ = writeln!(file, "{line}");
                // keep draining after the test stopped listening: a full pipe would block the run
                let _ = tx.send(line);
            }
        });
        StderrLines { rx, seen: Vec::new() }
    }

    /// Blocks until a line satisfies `done` (each line is checked once, as it
    /// arrives); `LIMIT` only bounds a broken test.
    pub(crate) fn wait_for(&mut self, what: &str, done: impl Fn(&str) -> bool) {
        loop {
            match self.rx.recv_timeout(LIMIT) {
                Ok(line) => {
                    let hit = done(&line);
                    self.seen.push(line);
                    if hit {
                        return;
                    }
                }
                Err(e) => panic!("{what}: no such line on the run's stderr ({e}); it wrote:\n{}", self.seen.join("\n")),
            }
        }
    }
}

/// The worker journal's count of items saved as done, from its debug event
/// (`work items saved saved_done=N`), in a line of the run's stderr.
fn saved_done(line: &str) -> Option<usize> {
    let rest = &line[line.find("saved_done=")? + "saved_done=".len()..];
    rest.split(|c: char| !c.is_ascii_digit()).next()?.parse().ok()
}

fn one(host: &Host, sql: &str) -> String {
    host.db_rows(sql).into_iter().next().unwrap_or_default()
}

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Interruption {
    /// SIGKILL of the worker's process group: its supervisor records FAILED.
    Kill,
    /// `dc-host runs stop`: the run ends STOPPED.
    Stop,
}

fn interrupted_and_resumed(new_host: fn() -> Host, how: Interruption) {
    // the rows of an uninterrupted crawl of the same files
    let reference = crawl_host(new_host);
    let plain = FixtureSite::start();
    let args = serde_json::json!({"start_url": plain.base_url}).to_string();
    let full = reference.json(&["run", APP, "--args", &args, "--json"]);
    assert_eq!(full["status"], "SUCCESS", "{full}");
    let want = rows(&reference);
    assert_eq!(want.len(), PAGES);

    let host = crawl_host(new_host);
    let site = CountingSite::start(100);
    let stderr_path = host.dir.path().join("first-run.stderr");
    let mut first = KillOnDrop(
        host.command(&["run", APP, "--args", &site.args(), "--threads", "2", "--json"])
            .stdin(Stdio::null())
            // the journal says how many items it saved after each commit
            .env("DC_LOG", "warn,dc_runtime::journal=debug")
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("dc-host run starts"),
    );
    let mut stderr = StderrLines::follow(first.0.stderr.take().expect("stderr"), stderr_path.clone());
    // both threads wait on held product pages: nothing else can finish now
    let held_paths = site.wait_held(2);
    let rid = one(&host, "SELECT runtime_id FROM runtime");
    // every page the site answered has ended its collect: wait until all are saved as done
    let answered = site.hits().keys().filter(|p| !held_paths.contains(p)).count();
    stderr.wait_for("every answered page saved as done", |l| saved_done(l).is_some_and(|n| n >= answered));
    let finished: Vec<String> = host
        .db_rows(&format!("SELECT item FROM dc_run_items WHERE runtime_id = '{rid}' AND state = 'done'"))
        .iter()
        .map(|i| {
            let url: String = serde_json::from_str(i).expect("a URL item");
            format!("/{}", url.strip_prefix(&site.base_url).expect("on the site"))
        })
        .collect();
    assert!(finished.len() > 10 && finished.len() < PAGES - 100, "stopped half-way: {} pages done", finished.len());

    match how {
        Interruption::Kill => {
            let pid: i32 = one(&host, &format!("SELECT worker_pid FROM runtime WHERE runtime_id = '{rid}'"))
                .parse()
                .expect("the worker's pid");
            // the worker leads its process group
            send_signal(-pid, libc::SIGKILL);
            assert!(wait_pid_exit(pid, LIMIT), "the worker did not die");
            site.open();
        }
        Interruption::Stop => {
            host.ok(&["runs", "stop", &rid]);
            // the worker has seen the request before the held pages are let through
            stderr.wait_for("the worker noticed the stop", |l| l.contains("stop requested; asking the plugin to stop"));
            site.open();
        }
    }
    let mut out = Vec::new();
    first.0.stdout.take().expect("stdout").read_to_end(&mut out).expect("read the first run's output");
    let _ = first.0.wait();
    let ended: Value = serde_json::from_slice(&out).unwrap_or_else(|e| {
        panic!(
            "the first run printed no JSON ({e}); stderr: {}",
            std::fs::read_to_string(&stderr_path).unwrap_or_default()
        )
    });
    let want_status = if how == Interruption::Kill { "FAILED" } else { "STOPPED" };
    assert_eq!(ended["status"], want_status, "{ended}");
    assert_eq!(ended["inserted"], 0, "an interrupted run stores nothing: {ended}");

    let shown = host.json(&["runs", "show", &rid, "--json"]);
    assert_eq!(shown["resume"]["resumable"], true, "{shown}");
    let saved_done = shown["resume"]["items"]["done"].as_u64().expect("done count") as usize;
    // stopped, the held pages finished after the stop and were saved too
    let extra = if how == Interruption::Stop { 2 } else { 0 };
    assert_eq!(saved_done, finished.len() + extra, "{shown}");
    let text = host.ok(&["runs", "show", &rid]);
    assert!(text.contains(&format!("`dc-host run {APP} --resume {rid}`")), "{text}");

    let hits_before = site.hits();
    let resumed = host.json(&["run", APP, "--resume", &rid, "--json"]);
    assert_eq!(resumed["status"], "SUCCESS", "{resumed}");
    assert_eq!(resumed["resumed_from"], rid.as_str(), "{resumed}");
    assert_eq!(resumed["total_count"], PAGES as i64, "{resumed}");
    assert_eq!(resumed["inserted"], PAGES as i64, "the saved records are stored with the new ones: {resumed}");
    assert_eq!(rows(&host), want, "the same rows as an uninterrupted run");

    // no page the first run finished was fetched again; every other page once
    let hits = site.hits();
    assert_eq!(hits.len(), PAGES, "every page was fetched: {hits:?}");
    for p in &finished {
        assert_eq!(hits[p], 1, "{p} was finished by the first run and fetched again");
    }
    let again: Vec<&String> = hits.keys().filter(|p| hits[*p] > 1).collect();
    match how {
        // the two pages in flight at the kill are the only ones fetched twice
        Interruption::Kill => {
            let mut again: Vec<String> = again.into_iter().cloned().collect();
            again.sort();
            let mut in_flight = held_paths.clone();
            in_flight.sort();
            assert_eq!(again, in_flight, "{hits:?}");
        }
        Interruption::Stop => assert!(again.is_empty(), "fetched twice: {again:?}"),
    }
    let resumed_hits: u32 = hits.values().sum::<u32>() - hits_before.values().sum::<u32>();
    assert_eq!(resumed_hits as usize, PAGES - saved_done, "the resumed run fetched only what was not done");

    // a successful run keeps no items; the first run says who continued it
    let new_id = resumed["runtime_id"].as_str().expect("id");
    let shown = host.json(&["runs", "show", new_id, "--json"]);
    assert_eq!(shown["resume"]["items"]["done"], 0, "{shown}");
    assert_eq!(one(&host, "SELECT COUNT(*) FROM dc_run_items"), "0");
    let shown = host.json(&["runs", "show", &rid, "--json"]);
    assert_eq!(
        (shown["resume"]["resumed_by"].as_str(), &shown["resume"]["resumable"]),
        (Some(new_id), &Value::Bool(false))
    );
    let (_, text) = host.fails(&["run", APP, "--resume", &rid]);
    assert!(text.contains(&format!("run {rid} was already resumed by run {new_id}")), "{text}");
}

fn killed_and_resumed(new_host: fn() -> Host) {
    interrupted_and_resumed(new_host, Interruption::Kill);
}

fn stopped_and_resumed(new_host: fn() -> Host) {
    interrupted_and_resumed(new_host, Interruption::Stop);
}

fn resume_refuses_what_it_cannot_continue(new_host: fn() -> Host) {
    let host = crawl_host(new_host);
    host.install(&plugin_lib("dc_plugin_catalogue"), "catalogue.so");
    host.ok(&["reload"]);
    let site = FixtureSite::start();

    let (_, text) = host.fails(&["run", APP, "--resume", "0123456789abcdef0123456789abcdef"]);
    assert!(text.contains("no run \"0123456789abcdef0123456789abcdef\""), "{text}");

    let args = serde_json::json!({"start_url": site.base_url}).to_string();
    let ok = host.json(&["run", APP, "--args", &args, "--json"]);
    assert_eq!(ok["status"], "SUCCESS", "{ok}");
    let ok_id = ok["runtime_id"].as_str().expect("id");
    let (_, text) = host.fails(&["run", APP, "--resume", ok_id]);
    assert!(text.contains(&format!("run {ok_id} ended SUCCESS: there is nothing to resume")), "{text}");

    let other = host.json(&["run", "demo/fixtures/catalogue", "--args", &site.args(), "--json"]);
    let other_id = other["runtime_id"].as_str().expect("id");
    let (_, text) = host.fails(&["run", APP, "--resume", other_id]);
    assert!(text.contains(&format!("run {other_id} is a run of demo/fixtures/catalogue, not of {APP}")), "{text}");

    // a crawl whose only page cannot be fetched fails, with its item saved
    let gone = serde_json::json!({"start_url": "http://127.0.0.1:9/"}).to_string();
    let failed = host.json(&["run", APP, "--args", &gone, "--json"]);
    assert_eq!(failed["status"], "FAILED", "{failed}");
    let failed_id = failed["runtime_id"].as_str().expect("id");
    let shown = host.json(&["runs", "show", failed_id, "--json"]);
    assert_eq!(
        (shown["resume"]["resumable"].as_bool(), shown["resume"]["items"]["failed"].as_i64()),
        (Some(true), Some(1))
    );

    let (_, text) = host.fails(&["run", APP, "--resume", failed_id, "--args", &args]);
    assert!(text.contains(&format!("continues with the arguments of run {failed_id}; leave out --args")), "{text}");

    // as if the run had used another version of the plugin
    host.db_exec(&format!(
        "UPDATE runtime SET plugin_version = '0.9.0', plugin_hash = 'abcdef0123456789' WHERE runtime_id = '{failed_id}'"
    ));
    let (_, text) = host.fails(&["run", APP, "--resume", failed_id]);
    assert!(
        text.contains(&format!(
            "run {failed_id} ran {APP} 0.9.0 (plugin file abcdef012345), but the active version is 1.0.0"
        )),
        "{text}"
    );
    // with runs.persist_frontier off a run saves nothing to resume from
    let out = host
        .command(&["run", APP, "--args", &gone, "--json"])
        .env("DC_RUNS_PERSIST_FRONTIER", "false")
        .stdin(Stdio::null())
        .output()
        .expect("dc-host runs");
    let unsaved: Value = serde_json::from_slice(&out.stdout).expect("JSON");
    assert_eq!(unsaved["status"], "FAILED", "{unsaved}");
    let unsaved_id = unsaved["runtime_id"].as_str().expect("id");
    assert_eq!(one(&host, &format!("SELECT COUNT(*) FROM dc_run_items WHERE runtime_id = '{unsaved_id}'")), "0");
    let (_, text) = host.fails(&["run", APP, "--resume", unsaved_id]);
    assert!(text.contains(&format!("run {unsaved_id} saved no work items to resume from")), "{text}");

    // nothing was created by the refusals
    assert_eq!(one(&host, "SELECT COUNT(*) FROM runtime WHERE resumed_from IS NOT NULL"), "0");
}

both_backends!(killed_and_resumed, stopped_and_resumed, resume_refuses_what_it_cannot_continue);
