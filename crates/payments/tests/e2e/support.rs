//! Real processes for the end-to-end tests: each service is the `payments` binary started
//! with its own environment on 127.0.0.1 and an ephemeral port, read from its
//! `<service> listening on <addr>` line, polled on `/ready` with a deadline, and killed by
//! PID when its guard drops (also when the test fails; the logs' tails are printed then).

use std::io::{BufRead as _, BufReader};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use reqwest::StatusCode;
use serde_json::{Value, json};

use crate::postgres::PgCluster;
use crate::proxy::FaultProxy;

/// Which database the stateful services use.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    /// An SQLite file per service in the test's temp dir.
    Sqlite,
    /// A throwaway PostgreSQL cluster, one database per service.
    Postgres,
}

/// One running service process; killed (SIGKILL) and reaped on drop.
pub struct ServiceProcess {
    /// The service name (`account-service`, ...).
    pub name: &'static str,
    /// Where it listens.
    pub addr: SocketAddr,
    /// Its environment (kept to restart it the same way).
    pub env: Vec<(String, String)>,
    /// Its stderr log.
    pub log: PathBuf,
    child: Child,
}

impl ServiceProcess {
    /// Starts `payments <name>` with exactly `env` (plus BIND_ADDR and, unless given, PORT=0)
    /// and waits for its address and `/ready`.
    pub fn start(name: &'static str, env: Vec<(String, String)>, dir: &Path) -> Self {
        let log = dir.join(format!("{name}.log"));
        let stderr = std::fs::OpenOptions::new().create(true).append(true).open(&log).expect("open log file");
        let mut command = Command::new(env!("CARGO_BIN_EXE_payments"));
        command
            .arg(name)
            .env_clear()
            .env("BIND_ADDR", "127.0.0.1")
            .env("RUST_LOG", "info,sqlx=warn")
            .env("SHUTDOWN_GRACE", "3s")
            .envs(env.iter().map(|(k, v)| (k, v)))
            .current_dir(dir)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(stderr);
        if !env.iter().any(|(k, _)| k == "PORT") {
            command.env("PORT", "0");
        }
        let mut child = command.spawn().expect("spawn the payments binary");
        let stdout = child.stdout.take().expect("piped stdout");
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                let _ = tx.send(line);
            }
        });
        let announced = rx.recv_timeout(Duration::from_secs(30));
        let mut process = Self { name, addr: "127.0.0.1:1".parse().expect("placeholder"), env, log, child };
        let line = match announced {
            Ok(line) => line,
            Err(_) => panic!("{name} did not announce its address; log:\n{}", process.log_tail()),
        };
        let addr = line.rsplit(' ').next().and_then(|a| a.parse().ok());
        process.addr = addr.unwrap_or_else(|| panic!("unexpected first line from {name}: {line:?}"));
        process.wait_ready();
        process
    }

    fn wait_ready(&mut self) {
        let url = format!("http://{}/ready", self.addr);
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if let Ok(Some(status)) = self.child.try_wait() {
                panic!("{} exited with {status} before ready; log:\n{}", self.name, self.log_tail());
            }
            let ready = http_status(&url);
            if ready == Some(200) {
                return;
            }
            assert!(Instant::now() < deadline, "{} not ready in 30s; log:\n{}", self.name, self.log_tail());
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// The base URL.
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// The PID.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// SIGKILL and reap.
    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// Waits for the process to exit on its own, up to `timeout`.
    pub fn wait_exit(&mut self, timeout: Duration) -> Option<std::process::ExitStatus> {
        let deadline = Instant::now() + timeout;
        while Instant::now() < deadline {
            if let Ok(Some(status)) = self.child.try_wait() {
                return Some(status);
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        None
    }

    /// The last 40 lines of the log.
    pub fn log_tail(&self) -> String {
        let text = std::fs::read_to_string(&self.log).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        lines[lines.len().saturating_sub(40)..].join("\n")
    }
}

impl Drop for ServiceProcess {
    fn drop(&mut self) {
        if std::thread::panicking() {
            eprintln!("---- {} ({}) log tail ----\n{}", self.name, self.log.display(), self.log_tail());
        }
        self.kill();
    }
}

/// The status of a blocking `GET url` (readiness polling without a runtime), or `None` when
/// nothing answered.
fn http_status(url: &str) -> Option<u16> {
    use std::io::{Read as _, Write as _};
    let rest = url.strip_prefix("http://")?;
    let (host, path) = rest.split_once('/').map_or((rest, "/".to_owned()), |(h, p)| (h, format!("/{p}")));
    let mut stream = std::net::TcpStream::connect(host).ok()?;
    stream.set_read_timeout(Some(Duration::from_secs(2))).ok()?;
    write!(stream, "GET {path} HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n").ok()?;
    let mut head = [0u8; 12];
    stream.read_exact(&mut head).ok()?;
    std::str::from_utf8(&head[9..12]).ok()?.parse().ok()
}

/// Options of a stack.
#[derive(Debug, Clone, Default)]
pub struct Options {
    /// Route every call between services through a fault-injecting proxy (`HTTP_PROXY`), with
    /// service URLs by name (`http://account-service:8083`), as in the mesh.
    pub proxy: bool,
    /// Extra env for the saga-service.
    pub saga_env: Vec<(&'static str, String)>,
    /// Extra env for the payment-service.
    pub payment_env: Vec<(&'static str, String)>,
}

/// The four services, wired together, with their databases.
pub struct Stack {
    /// account-service.
    pub account: ServiceProcess,
    /// validation-service.
    pub validation: ServiceProcess,
    /// saga-service.
    pub saga: ServiceProcess,
    /// payment-service.
    pub payment: ServiceProcess,
    /// The proxy between the services, when asked for.
    pub proxy: Option<FaultProxy>,
    /// HTTP client for the test.
    pub http: reqwest::Client,
    /// Keeps the PostgreSQL cluster (when used) alive.
    _pg: Option<PgCluster>,
    /// Logs and SQLite files.
    pub dir: tempfile::TempDir,
}

/// Tenant `small` has a single-payment limit of 1,000 minor units; `blocked-1` is blocked.
pub const SMALL_TENANT_LIMIT: i64 = 1_000;

impl Stack {
    /// Starts the stack on `backend`.
    pub async fn start(backend: Backend, options: Options) -> Self {
        let dir = tempfile::tempdir().expect("temp dir");
        let (pg, account_db, saga_db) = match backend {
            Backend::Sqlite => (
                None,
                format!("sqlite://{}/account.db?mode=rwc", dir.path().display()),
                format!("sqlite://{}/saga.db?mode=rwc", dir.path().display()),
            ),
            Backend::Postgres => {
                let pg = PgCluster::start();
                let account = pg.create_database("account");
                let saga = pg.create_database("saga");
                (Some(pg), account, saga)
            }
        };
        let blocked = dir.path().join("blocked.txt");
        std::fs::write(&blocked, "# blocked for the tests\nblocked-1\n").expect("write blocked list");
        let d = dir.path();
        let account = ServiceProcess::start("account-service", vec![("DATABASE_URL".into(), account_db)], d);
        let validation = ServiceProcess::start(
            "validation-service",
            vec![
                ("BLOCKED_ACCOUNTS_FILE".into(), blocked.display().to_string()),
                ("TENANT_LIMITS".into(), format!("small={SMALL_TENANT_LIMIT}")),
            ],
            d,
        );
        let proxy = if options.proxy {
            let proxy = FaultProxy::start().await;
            proxy.route("account-service:8083", account.addr);
            proxy.route("validation-service:8082", validation.addr);
            Some(proxy)
        } else {
            None
        };
        let mut saga_env = vec![
            ("DATABASE_URL".to_owned(), saga_db),
            ("RECOVERY_INTERVAL".to_owned(), "1s".to_owned()),
            ("RETRY_BACKOFF".to_owned(), "10ms".to_owned()),
            ("SAGA_WAIT".to_owned(), "20s".to_owned()),
        ];
        match &proxy {
            Some(p) => {
                saga_env.push(("ACCOUNT_SERVICE_URL".into(), "http://account-service:8083".into()));
                saga_env.push(("HTTP_PROXY".into(), p.url()));
            }
            None => saga_env.push(("ACCOUNT_SERVICE_URL".into(), account.url())),
        }
        saga_env.extend(options.saga_env.iter().map(|(k, v)| ((*k).to_owned(), v.clone())));
        let saga = ServiceProcess::start("saga-service", saga_env, d);
        let mut payment_env = vec![("OUTBOUND_TIMEOUT".to_owned(), "30s".to_owned())];
        match &proxy {
            Some(p) => {
                p.route("saga-service:8084", saga.addr);
                payment_env.push(("VALIDATION_SERVICE_URL".into(), "http://validation-service:8082".into()));
                payment_env.push(("SAGA_SERVICE_URL".into(), "http://saga-service:8084".into()));
                payment_env.push(("HTTP_PROXY".into(), p.url()));
            }
            None => {
                payment_env.push(("VALIDATION_SERVICE_URL".into(), validation.url()));
                payment_env.push(("SAGA_SERVICE_URL".into(), saga.url()));
            }
        }
        payment_env.extend(options.payment_env.iter().map(|(k, v)| ((*k).to_owned(), v.clone())));
        let payment = ServiceProcess::start("payment-service", payment_env, d);
        let http =
            reqwest::Client::builder().no_proxy().timeout(Duration::from_secs(120)).build().expect("client");
        Self { account, validation, saga, payment, proxy, http, _pg: pg, dir }
    }

    /// Opens an account of `tenant` with an opening balance.
    pub async fn open_account(&self, tenant: &str, id: &str, currency: &str, balance: i64) {
        let response = self
            .http
            .post(format!("{}/v1/accounts", self.account.url()))
            .header("x-tenant-id", tenant)
            .json(&json!({"id": id, "currency": currency, "opening_balance_minor": balance}))
            .send()
            .await
            .expect("account-service answers");
        assert_eq!(response.status(), StatusCode::CREATED, "open {id}: {:?}", response.text().await);
    }

    /// Closes an (empty) account.
    pub async fn close_account(&self, tenant: &str, id: &str) {
        let response = self
            .http
            .post(format!("{}/v1/accounts/{id}/close", self.account.url()))
            .header("x-tenant-id", tenant)
            .send()
            .await
            .expect("account-service answers");
        assert_eq!(response.status(), StatusCode::OK, "close {id}: {:?}", response.text().await);
    }

    /// An account's balance.
    pub async fn balance(&self, id: &str) -> i64 {
        let body = get_json(&self.http, &format!("{}/v1/accounts/{id}", self.account.url())).await;
        body["balance_minor"].as_i64().unwrap_or_else(|| panic!("no balance for {id}: {body}"))
    }

    /// `POST /v1/payments`; the status and the JSON body.
    pub async fn pay(
        &self,
        tenant: &str,
        key: &str,
        from: &str,
        to: &str,
        amount: i64,
    ) -> (StatusCode, Value) {
        let body = json!({"from_account": from, "to_account": to, "amount_minor": amount, "currency": "EUR"});
        self.post_payment(tenant, key, &body).await
    }

    /// `POST /v1/payments` with any JSON body.
    pub async fn post_payment(&self, tenant: &str, key: &str, body: &Value) -> (StatusCode, Value) {
        let response = self
            .http
            .post(format!("{}/v1/payments", self.payment.url()))
            .header("x-tenant-id", tenant)
            .header("idempotency-key", key)
            .json(body)
            .send()
            .await
            .expect("payment-service answers");
        let status = response.status();
        (status, response.json().await.unwrap_or(Value::Null))
    }

    /// The ledger's self-check.
    pub async fn ledger_check(&self) -> Value {
        get_json(&self.http, &format!("{}/v1/ledger/check", self.account.url())).await
    }

    /// A saga as the saga-service shows it.
    pub async fn saga(&self, id: &str) -> Value {
        get_json(&self.http, &format!("{}/v1/sagas/{id}", self.saga.url())).await
    }

    /// A saga's state, or `None` when the saga-service never recorded it (404).
    pub async fn saga_state(&self, id: &str) -> Option<Value> {
        let url = format!("{}/v1/sagas/{id}", self.saga.url());
        let response = self.http.get(&url).send().await.unwrap_or_else(|e| panic!("GET {url}: {e}"));
        if response.status() == StatusCode::NOT_FOUND {
            return None;
        }
        assert_eq!(response.status(), StatusCode::OK, "GET {url}");
        let body: Value = response.json().await.unwrap_or(Value::Null);
        Some(body["state"].clone())
    }

    /// SIGKILLs the saga-service and starts it again on the same port and database.
    pub fn restart_saga_after_kill(&mut self) {
        self.saga.kill();
        let mut env = self.saga.env.clone();
        env.retain(|(k, _)| k != "PORT");
        env.push(("PORT".to_owned(), self.saga.addr.port().to_string()));
        self.saga = ServiceProcess::start("saga-service", env, self.dir.path());
    }
}

/// `GET url` → JSON body (asserting 200).
pub async fn get_json(http: &reqwest::Client, url: &str) -> Value {
    let response = http.get(url).send().await.unwrap_or_else(|e| panic!("GET {url}: {e}"));
    let status = response.status();
    let body: Value = response.json().await.unwrap_or(Value::Null);
    assert_eq!(status, StatusCode::OK, "GET {url}: {body}");
    body
}

/// Asserts the error shape `{code, message}` with the given status and code.
pub fn assert_error(got: &(StatusCode, Value), status: u16, code: &str) {
    assert_eq!(got.0.as_u16(), status, "unexpected answer {}", got.1);
    assert_eq!(got.1["code"], code, "unexpected answer {}", got.1);
    assert!(got.1["message"].as_str().is_some_and(|m| !m.is_empty()), "no message in {}", got.1);
}
