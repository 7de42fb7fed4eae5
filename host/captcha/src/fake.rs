//! A loopback imitation of anti-captcha.com's documented wire protocol (the
//! real service cannot be reached from tests): an axum server answering
//! `POST /createTask`, `/getTaskResult` and `/getBalance` as the API
//! documentation describes, scripted by [`Script`] (accepted key, polls that
//! answer "processing", cost, errors), and recording every request body so a
//! test can assert the exact JSON the client sent. Cargo feature `fake`.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex};

use axum::{Json, Router, extract::State, routing::post};
use serde_json::{Value, json};

/// How the fake service behaves.
#[derive(Debug, Clone)]
pub struct Script {
    client_key: String,
    processing_polls: u32,
    cost: String,
    balance: f64,
    create_errors: VecDeque<String>,
    result_error: Option<String>,
}

impl Script {
    /// Accepts `client_key`; each task answers "processing" twice, then
    /// "ready" costing $0.0015 (sent as the string `"0.001500"`, as the
    /// documentation shows); the balance is $3.
    pub fn new(client_key: &str) -> Script {
        Script {
            client_key: client_key.into(),
            processing_polls: 2,
            cost: "0.001500".into(),
            balance: 3.0,
            create_errors: VecDeque::new(),
            result_error: None,
        }
    }

    /// Polls of each task answered "processing" before "ready".
    pub fn processing_polls(mut self, n: u32) -> Script {
        self.processing_polls = n;
        self
    }

    /// The cost of each solved task, as the service writes it.
    pub fn cost(mut self, cost: &str) -> Script {
        self.cost = cost.into();
        self
    }

    /// The account balance.
    pub fn balance(mut self, balance: f64) -> Script {
        self.balance = balance;
        self
    }

    /// Error codes the next `createTask` calls answer, one per call.
    pub fn create_errors(mut self, codes: &[&str]) -> Script {
        self.create_errors = codes.iter().map(|c| c.to_string()).collect();
        self
    }

    /// The error code `getTaskResult` answers instead of a result.
    pub fn result_error(mut self, code: &str) -> Script {
        self.result_error = Some(code.into());
        self
    }
}

#[derive(Default)]
struct Tasks {
    /// taskId → (task, polls answered)
    tasks: Vec<(Value, u32)>,
    requests: Vec<(String, Value)>,
}

struct Fake {
    script: Mutex<Script>,
    tasks: Mutex<Tasks>,
}

/// The running fake service.
pub struct FakeAntiCaptcha {
    /// `http://127.0.0.1:PORT` (the client's base URL).
    pub base_url: String,
    state: Arc<Fake>,
    server: tokio::task::JoinHandle<()>,
}

/// anti-captcha's documented numeric id of an error code.
fn error_id(code: &str) -> u64 {
    match code {
        "ERROR_KEY_DOES_NOT_EXIST" => 1,
        "ERROR_NO_SLOT_AVAILABLE" => 2,
        "ERROR_ZERO_CAPTCHA_FILESIZE" => 3,
        "ERROR_ZERO_BALANCE" => 10,
        "ERROR_CAPTCHA_UNSOLVABLE" => 12,
        "ERROR_NO_SUCH_METHOD" => 14,
        "ERROR_NO_SUCH_CAPCHA_ID" => 16,
        "ERROR_TASK_ABSENT" => 22,
        "ERROR_TASK_NOT_SUPPORTED" => 23,
        "ERROR_RECAPTCHA_INVALID_SITEKEY" => 31,
        _ => 99,
    }
}

fn error(code: &str) -> Json<Value> {
    Json(json!({"errorId": error_id(code), "errorCode": code, "errorDescription": format!("fake: {code}")}))
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

impl Fake {
    /// Records the request; answers the key error for a wrong key.
    fn enter(&self, path: &str, body: &Value) -> Option<Json<Value>> {
        lock(&self.tasks).requests.push((path.into(), body.clone()));
        (body["clientKey"].as_str() != Some(lock(&self.script).client_key.as_str()))
            .then(|| error("ERROR_KEY_DOES_NOT_EXIST"))
    }
}

async fn create_task(State(f): State<Arc<Fake>>, Json(body): Json<Value>) -> Json<Value> {
    if let Some(e) = f.enter("/createTask", &body) {
        return e;
    }
    if let Some(code) = lock(&f.script).create_errors.pop_front() {
        return error(&code);
    }
    let task = &body["task"];
    let known = ["RecaptchaV2TaskProxyless", "RecaptchaV3TaskProxyless", "HCaptchaTaskProxyless", "ImageToTextTask"];
    match task["type"].as_str() {
        None => return error("ERROR_TASK_ABSENT"),
        Some(t) if !known.contains(&t) => return error("ERROR_TASK_NOT_SUPPORTED"),
        _ => {}
    }
    let mut tasks = lock(&f.tasks);
    tasks.tasks.push((task.clone(), 0));
    // ids that are not small, as the service's are
    Json(json!({"errorId": 0, "taskId": 7_654_320 + tasks.tasks.len() as u64}))
}

async fn get_task_result(State(f): State<Arc<Fake>>, Json(body): Json<Value>) -> Json<Value> {
    if let Some(e) = f.enter("/getTaskResult", &body) {
        return e;
    }
    let script = lock(&f.script).clone();
    if let Some(code) = &script.result_error {
        return error(code);
    }
    let Some(id) = body["taskId"].as_u64() else { return error("ERROR_NO_SUCH_CAPCHA_ID") };
    let mut tasks = lock(&f.tasks);
    let Some((task, polls)) =
        id.checked_sub(7_654_321).and_then(|i| usize::try_from(i).ok()).and_then(|i| tasks.tasks.get_mut(i))
    else {
        return error("ERROR_NO_SUCH_CAPCHA_ID");
    };
    if *polls < script.processing_polls {
        *polls += 1;
        return Json(json!({"errorId": 0, "status": "processing"}));
    }
    let solution = match task["type"].as_str() {
        Some("ImageToTextTask") => json!({"text": "text-of-image", "url": "http://127.0.0.1/1.jpg"}),
        Some("HCaptchaTaskProxyless") => {
            json!({"gRecaptchaResponse": format!("token-{id}"), "userAgent": "Mozilla/5.0 (fake)"})
        }
        _ => json!({"gRecaptchaResponse": format!("token-{id}")}),
    };
    Json(json!({"errorId": 0, "status": "ready", "solution": solution, "cost": script.cost,
        "ip": "127.0.0.1", "createTime": 1_472_205_564, "endTime": 1_472_205_570, "solveCount": "0"}))
}

async fn get_balance(State(f): State<Arc<Fake>>, Json(body): Json<Value>) -> Json<Value> {
    if let Some(e) = f.enter("/getBalance", &body) {
        return e;
    }
    Json(json!({"errorId": 0, "balance": lock(&f.script).balance}))
}

impl FakeAntiCaptcha {
    /// Starts the service on a free loopback port (on the current tokio runtime).
    pub async fn start(script: Script) -> FakeAntiCaptcha {
        let state = Arc::new(Fake { script: Mutex::new(script), tasks: Mutex::new(Tasks::default()) });
        let app = Router::new()
            .route("/createTask", post(create_task))
            .route("/getTaskResult", post(get_task_result))
            .route("/getBalance", post(get_balance))
            .with_state(state.clone());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind a loopback port");
        let base_url = format!("http://{}", listener.local_addr().expect("local address"));
        let server = tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        FakeAntiCaptcha { base_url, state, server }
    }

    /// Every request received: path and JSON body, in order.
    pub fn requests(&self) -> Vec<(String, Value)> {
        lock(&self.state.tasks).requests.clone()
    }
}

impl Drop for FakeAntiCaptcha {
    fn drop(&mut self) {
        self.server.abort();
    }
}
