//! Supervision: each process runs in its own process group with its output appended to its log
//! file, and is restarted with exponential backoff when it exits (paymesh-lifecycle's
//! [`Backoff`], 1 s doubling to 30 s, back to 1 s once a run lasted 60 s), until its
//! [`Handle`] is stopped: SIGTERM to its group, then SIGKILL after its deadline.
//!
//! Every start, exit and stop is recorded in the shared [`State`] and state.json rewritten, so
//! `paymesh exec`/`logs` and tests see PIDs and restart counts as they are.

use std::fs::{self, OpenOptions};
use std::io::Write as _;
use std::os::unix::fs::OpenOptionsExt as _;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use nix::sys::signal::{Signal, kill, killpg};
use nix::unistd::Pid;
use paymesh_lifecycle::Backoff;
use paymesh_lifecycle::drain::{self, Shutdown, Trigger};
use tokio::process::{Child, Command};
use tokio::task::JoinHandle;

use crate::mesh_http::{Http, HttpError};
use crate::state::{ProcessState, State};

/// Restart pauses: a crash is retried within a second, a crash loop settles at one try per 30 s.
const BACKOFF_FIRST: Duration = Duration::from_secs(1);
/// See [`BACKOFF_FIRST`].
const BACKOFF_MAX: Duration = Duration::from_secs(30);
/// A run at least this long resets the backoff.
const BACKOFF_RESET_AFTER: Duration = Duration::from_secs(60);
/// Proxy settings the supervisor's own environment must not leak into a pod.
const PROXY_VARS: [&str; 4] = ["HTTP_PROXY", "http_proxy", "NO_PROXY", "no_proxy"];

/// Why a process could not be started.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error("{label}: no command (the container has neither command nor args)")]
    NoCommand { label: String },
    #[error("{label}: opening its log {}: {source}", .path.display())]
    Log { label: String, path: PathBuf, source: std::io::Error },
    #[error("{label}: starting {program}: {source}")]
    Spawn { label: String, program: String, source: std::io::Error },
    #[error("{label}: asking the control plane for a bootstrap token: {source}")]
    Token { label: String, source: HttpError },
    #[error("{label}: writing the bootstrap token {}: {source}", .path.display())]
    TokenFile { label: String, path: PathBuf, source: std::io::Error },
}

/// The state every supervisor task updates, and where it is written.
#[derive(Debug)]
pub struct Shared {
    state: Mutex<State>,
    state_dir: PathBuf,
}

impl Shared {
    pub fn new(state: State, state_dir: PathBuf) -> Self {
        Self { state: Mutex::new(state), state_dir }
    }

    /// The state directory (absolute).
    pub fn state_dir(&self) -> &Path {
        &self.state_dir
    }

    /// Changes the state and rewrites state.json.
    pub fn update<R>(&self, change: impl FnOnce(&mut State) -> R) -> R {
        let mut state = self.state.lock().unwrap_or_else(PoisonError::into_inner);
        let result = change(&mut state);
        if let Err(e) = state.write(&self.state_dir) {
            eprintln!("paymesh up: writing {}: {e}", State::path(&self.state_dir).display());
        }
        result
    }

    /// A copy of the current state.
    pub fn snapshot(&self) -> State {
        self.state.lock().unwrap_or_else(PoisonError::into_inner).clone()
    }
}

/// Which process of the state a supervisor owns.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Slot {
    Control,
    App(usize),
    Proxy(usize),
}

impl Slot {
    fn of(self, state: &mut State) -> Option<&mut ProcessState> {
        match self {
            Slot::Control => state.control.as_mut().map(|c| &mut c.process),
            Slot::App(i) => state.pods.get_mut(i).and_then(|p| p.app.as_mut()),
            Slot::Proxy(i) => state.pods.get_mut(i).and_then(|p| p.proxy.as_mut()),
        }
    }
}

/// Where a proxy's bootstrap token comes from, fetched before every start (the proxy deletes
/// the file once read, and each token is single-use).
#[derive(Debug, Clone)]
pub struct TokenSource {
    pub http: Http,
    pub monitoring: std::net::SocketAddr,
    pub admin_token: String,
    pub namespace: String,
    pub service_account: String,
    pub pod: String,
    pub path: PathBuf,
}

/// What to run: the command and log come from the state's slot.
#[derive(Debug, Clone)]
pub struct Spec {
    /// `pod/app`, `pod/proxy`, `paymesh-control`: for messages.
    pub label: String,
    pub slot: Slot,
    pub env: Vec<(String, String)>,
    /// Working directory; `None` inherits the supervisor's.
    pub cwd: Option<PathBuf>,
    /// SIGTERM → SIGKILL.
    pub stop_deadline: Duration,
    pub token: Option<TokenSource>,
}

/// A supervised process: stop it to end supervision.
#[derive(Debug)]
pub struct Handle {
    stop: Trigger,
    task: JoinHandle<()>,
}

impl Handle {
    /// SIGTERM, wait up to the deadline, SIGKILL; returns once the process is gone.
    pub async fn stop(self) {
        self.stop.trigger();
        let _ = self.task.await;
    }
}

/// Starts the process once (errors are returned) and supervises it from then on.
pub async fn spawn(shared: Arc<Shared>, spec: Spec) -> Result<Handle, StartError> {
    let child = start(&shared, &spec).await?;
    let (stop, stopped) = drain::channel();
    let task = tokio::spawn(supervise(shared, spec, child, stopped));
    Ok(Handle { stop, task })
}

async fn supervise(shared: Arc<Shared>, spec: Spec, mut child: Child, stopped: Shutdown) {
    let mut backoff = Backoff::new(BACKOFF_FIRST, BACKOFF_MAX);
    loop {
        let started = Instant::now();
        tokio::select! {
            status = child.wait() => {
                if started.elapsed() >= BACKOFF_RESET_AFTER {
                    backoff.reset();
                }
                let mut pause = backoff.next_pause();
                let status = status.map_or_else(|e| e.to_string(), |s| s.to_string());
                // Only this task changes its slot's count, so the number is known before the
                // log line, and the log line lands before state.json shows the restart.
                let mut snapshot = shared.snapshot();
                let restarts = spec.slot.of(&mut snapshot).map_or(1, |p| p.restarts + 1);
                let message = format!("{} exited ({status}); restart #{restarts} in {}s", spec.label, pause.as_secs());
                eprintln!("paymesh up: {message}");
                note(&shared, &spec, &format!("--- paymesh: {message} ---"));
                shared.update(|state| {
                    if let Some(p) = spec.slot.of(state) {
                        p.pid = None;
                        p.restarts = restarts;
                    }
                });
                // Restart, backing off, until it starts or supervision is stopped.
                loop {
                    tokio::select! {
                        () = tokio::time::sleep(pause) => {}
                        () = stopped.clone().signaled() => return,
                    }
                    match start(&shared, &spec).await {
                        Ok(next) => {
                            child = next;
                            break;
                        }
                        Err(e) => {
                            pause = backoff.next_pause();
                            eprintln!("paymesh up: {e}; retrying in {}s", pause.as_secs());
                        }
                    }
                }
            }
            () = stopped.clone().signaled() => {
                terminate(&mut child, spec.stop_deadline, &spec.label).await;
                shared.update(|state| {
                    if let Some(process) = spec.slot.of(state) {
                        process.pid = None;
                    }
                });
                return;
            }
        }
    }
}

/// One start: token (proxies), log file, spawn in a new process group, record the PID.
async fn start(shared: &Shared, spec: &Spec) -> Result<Child, StartError> {
    let process = shared.update(|state| spec.slot.of(state).cloned());
    let Some((program, args)) = process.as_ref().and_then(|p| p.command.split_first()) else {
        return Err(StartError::NoCommand { label: spec.label.clone() });
    };
    let log_path = process.as_ref().map(|p| p.log.clone()).unwrap_or_default();
    if let Some(token) = &spec.token {
        fetch_token(&spec.label, token).await?;
    }
    let log = open_log(&log_path).map_err(|source| StartError::Log {
        label: spec.label.clone(),
        path: log_path.clone(),
        source,
    })?;
    let log_err = log.try_clone().map_err(|source| StartError::Log {
        label: spec.label.clone(),
        path: log_path.clone(),
        source,
    })?;
    let mut command = Command::new(program);
    command.args(args).stdin(Stdio::null()).stdout(log).stderr(log_err).process_group(0);
    for var in PROXY_VARS {
        command.env_remove(var);
    }
    command.envs(spec.env.iter().map(|(k, v)| (k, v)));
    if let Some(cwd) = &spec.cwd {
        command.current_dir(cwd);
    }
    let child = command.spawn().map_err(|source| StartError::Spawn {
        label: spec.label.clone(),
        program: program.clone(),
        source,
    })?;
    let pid = child.id();
    shared.update(|state| {
        if let Some(process) = spec.slot.of(state) {
            process.pid = pid;
        }
    });
    Ok(child)
}

async fn fetch_token(label: &str, source: &TokenSource) -> Result<(), StartError> {
    let token = source
        .http
        .bootstrap_token(
            source.monitoring,
            &source.admin_token,
            &source.namespace,
            &source.service_account,
            &source.pod,
        )
        .await
        .map_err(|e| StartError::Token { label: label.to_owned(), source: e })?;
    write_secret(&source.path, token.as_bytes()).map_err(|e| StartError::TokenFile {
        label: label.to_owned(),
        path: source.path.clone(),
        source: e,
    })
}

/// Writes `bytes` to a new file readable only by its owner (replacing any old one).
pub fn write_secret(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    if let Some(dir) = path.parent() {
        fs::create_dir_all(dir)?;
    }
    match fs::remove_file(path) {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => return Err(e),
        _ => {}
    }
    let mut file = OpenOptions::new().write(true).create_new(true).mode(0o600).open(path)?;
    file.write_all(bytes)
}

fn open_log(path: &Path) -> std::io::Result<fs::File> {
    if let Some(dir) = path.parent() {
        fs::create_dir_all(dir)?;
    }
    OpenOptions::new().create(true).append(true).open(path)
}

/// Appends a supervisor line to the process's log.
fn note(shared: &Shared, spec: &Spec, line: &str) {
    let path = shared.update(|state| spec.slot.of(state).map(|p| p.log.clone()));
    if let Some(mut file) = path.and_then(|p| open_log(&p).ok()) {
        let _ = writeln!(file, "{line}");
    }
}

/// SIGTERM to the process group, SIGKILL to it after `deadline`.
async fn terminate(child: &mut Child, deadline: Duration, label: &str) {
    let Some(pid) = child.id().and_then(|id| i32::try_from(id).ok()) else { return };
    let group = Pid::from_raw(pid);
    let _ = killpg(group, Signal::SIGTERM);
    if tokio::time::timeout(deadline, child.wait()).await.is_err() {
        eprintln!("paymesh up: {label} still running {}s after SIGTERM; killing it", deadline.as_secs());
        let _ = killpg(group, Signal::SIGKILL);
        let _ = child.wait().await;
    }
}

/// SIGKILL to the process group led by `pid`.
pub fn kill_group(pid: u32) {
    if let Ok(pid) = i32::try_from(pid) {
        let _ = killpg(Pid::from_raw(pid), Signal::SIGKILL);
    }
}

/// Whether a process with this PID exists.
pub fn alive(pid: u32) -> bool {
    i32::try_from(pid).is_ok_and(|pid| kill(Pid::from_raw(pid), None).is_ok())
}
