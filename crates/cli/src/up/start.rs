//! Bringing the plan up, keeping it up, and taking it down.
//!
//! Order (Istio's, in one place): the control plane, ready; then every pod at once — its
//! sidecar with a fresh bootstrap token, ready (`/healthz/ready`), then its app; then the
//! status table. On SIGINT/SIGTERM, or when bringing up fails: apps stop first, then proxies
//! (a sidecar drains after its app), then the control plane; state.json is removed.

use std::net::SocketAddr;
use std::path::Path;
use std::process::ExitCode;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use anyhow::Context as _;
use paymesh_lifecycle::signal::Signals;
use tokio::task::JoinSet;

use super::plan::{self, Plan};
use super::supervise::{self, Handle, Shared, Slot, Spec, TokenSource};
use crate::mesh_http::Http;
use crate::state::{PodState, State};

/// How long the control plane has to answer `/ready`.
const CONTROL_READY_DEADLINE: Duration = Duration::from_secs(60);
/// How long a proxy has to get its first certificate and config.
const PROXY_READY_DEADLINE: Duration = Duration::from_secs(60);
/// How long an app has to accept connections on its first port (a warning, not a failure).
const APP_READY_DEADLINE: Duration = Duration::from_secs(30);
const APP_STOP_DEADLINE: Duration = Duration::from_secs(10);
/// More than the proxy's own 5 s drain.
const PROXY_STOP_DEADLINE: Duration = Duration::from_secs(10);
const CONTROL_STOP_DEADLINE: Duration = Duration::from_secs(5);
const POLL: Duration = Duration::from_millis(100);

/// What runs, by stop order.
#[derive(Debug, Default)]
struct Running {
    apps: Vec<Handle>,
    proxies: Vec<Handle>,
    control: Option<Handle>,
}

type SharedRunning = Arc<Mutex<Running>>;

pub fn run(plan: Plan) -> anyhow::Result<ExitCode> {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .context("starting the supervisor runtime")?;
    runtime.block_on(run_async(plan))
}

async fn run_async(plan: Plan) -> anyhow::Result<ExitCode> {
    let mut signals = Signals::install().context("installing the SIGINT and SIGTERM handlers")?;
    let state_dir = plan.state.state_dir.clone();
    prepare_dirs(&state_dir, &plan)?;
    let mut state = plan.state;
    state.supervisor_pid = Some(std::process::id());
    let shared = Arc::new(Shared::new(state, state_dir.clone()));
    shared.update(|_| ());
    let running: SharedRunning = Arc::default();
    let http = Http::new()?;

    let outcome = tokio::select! {
        result = bring_up(Arc::clone(&shared), Arc::clone(&running), http.clone()) => Some(result),
        () = signals.recv() => None,
    };
    let result = match outcome {
        Some(Ok(())) => {
            super::status::print(&shared.snapshot(), &http).await;
            println!("paymesh up: running; Ctrl-C stops everything");
            signals.recv().await;
            Ok(())
        }
        Some(Err(e)) => Err(e),
        None => {
            eprintln!("paymesh up: interrupted while starting");
            Ok(())
        }
    };
    println!("paymesh up: stopping (again to kill everything now)");
    let stopping = shut_down(&running);
    tokio::pin!(stopping);
    tokio::select! {
        () = &mut stopping => {}
        () = signals.recv() => {
            kill_everything(&shared);
            stopping.await;
        }
    }
    let _ = std::fs::remove_file(State::path(&state_dir));
    result.map(|()| {
        println!("paymesh up: stopped");
        ExitCode::SUCCESS
    })
}

fn prepare_dirs(state_dir: &Path, plan: &Plan) -> anyhow::Result<()> {
    let app_dirs =
        plan.state.pods.iter().filter(|pod| pod.app.is_some()).map(|pod| plan::app_dir(state_dir, pod));
    for dir in [plan::run_dir(state_dir), plan::ca_dir(state_dir), state_dir.join("logs")]
        .into_iter()
        .chain(app_dirs)
    {
        std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
    }
    let pods = plan::pods_file(state_dir);
    let text = serde_json::to_string_pretty(&plan.pods_manifest)?;
    std::fs::write(&pods, text).with_context(|| format!("writing {}", pods.display()))
}

async fn bring_up(shared: Arc<Shared>, running: SharedRunning, http: Http) -> anyhow::Result<()> {
    let state = shared.snapshot();
    let control = match &state.control {
        Some(control) => {
            let admin_token = admin_token()?;
            let path = plan::admin_token_file(&state.state_dir);
            supervise::write_secret(&path, admin_token.as_bytes())
                .with_context(|| format!("writing {}", path.display()))?;
            let spec = Spec {
                label: "paymesh-control".into(),
                slot: Slot::Control,
                env: Vec::new(),
                cwd: None,
                stop_deadline: CONTROL_STOP_DEADLINE,
                token: None,
            };
            let handle = supervise::spawn(Arc::clone(&shared), spec).await?;
            lock(&running).control = Some(handle);
            let log = control.process.log.display().to_string();
            let monitoring = control.monitoring_addr;
            wait_until(CONTROL_READY_DEADLINE, || http.control_ready(monitoring)).await.with_context(
                || format!("the control plane did not answer http://{monitoring}/ready; see {log}"),
            )?;
            println!("paymesh up: control plane ready (grpc={} monitoring={monitoring})", control.grpc_addr);
            Some((monitoring, admin_token))
        }
        None => None,
    };

    let mut pods = JoinSet::new();
    for (index, pod) in state.pods.iter().enumerate() {
        let token = match (&control, &pod.proxy) {
            (Some((monitoring, admin_token)), Some(_)) => Some(TokenSource {
                http: http.clone(),
                monitoring: *monitoring,
                admin_token: admin_token.clone(),
                namespace: pod.namespace.clone(),
                service_account: pod.service_account.clone(),
                pod: pod.name.clone(),
                path: plan::token_file(&state.state_dir, pod),
            }),
            _ => None,
        };
        pods.spawn(start_pod(
            Arc::clone(&shared),
            Arc::clone(&running),
            http.clone(),
            index,
            pod.clone(),
            token,
        ));
    }
    while let Some(joined) = pods.join_next().await {
        joined.context("a pod's start task failed")??;
    }
    Ok(())
}

/// One pod: the proxy, ready, then the app.
async fn start_pod(
    shared: Arc<Shared>,
    running: SharedRunning,
    http: Http,
    index: usize,
    pod: PodState,
    token: Option<TokenSource>,
) -> anyhow::Result<()> {
    if let Some(proxy) = &pod.proxy {
        let spec = Spec {
            label: format!("{}/proxy", pod.name),
            slot: Slot::Proxy(index),
            env: Vec::new(),
            cwd: None,
            stop_deadline: PROXY_STOP_DEADLINE,
            token,
        };
        let handle = supervise::spawn(Arc::clone(&shared), spec).await?;
        lock(&running).proxies.push(handle);
        let ip = pod.ip.into();
        wait_until(PROXY_READY_DEADLINE, || http.proxy_ready(ip)).await.with_context(|| {
            format!(
                "{}'s proxy is not ready ({}:15021/healthz/ready); see {}",
                pod.name,
                pod.ip,
                proxy.log.display()
            )
        })?;
    }
    if pod.app.is_some() {
        let spec = Spec {
            label: format!("{}/app", pod.name),
            slot: Slot::App(index),
            env: pod.env.iter().map(|(k, v)| (k.clone(), v.clone())).collect(),
            cwd: Some(plan::app_dir(shared.state_dir(), &pod)),
            stop_deadline: APP_STOP_DEADLINE,
            token: None,
        };
        let handle = supervise::spawn(Arc::clone(&shared), spec).await?;
        lock(&running).apps.push(handle);
        if let Some(&port) = pod.ports.first() {
            let addr = SocketAddr::from((pod.ip, port));
            let listening = wait_until(APP_READY_DEADLINE, || async move {
                tokio::net::TcpStream::connect(addr).await.is_ok()
            })
            .await;
            if listening.is_err() {
                eprintln!(
                    "paymesh up: warning: {} does not accept connections on {addr} after {}s",
                    pod.name,
                    APP_READY_DEADLINE.as_secs()
                );
            }
        }
    }
    Ok(())
}

/// Stops apps, then proxies, then the control plane; each group in parallel.
async fn shut_down(running: &SharedRunning) {
    let Running { apps, proxies, control } = std::mem::take(&mut *lock(running));
    for group in [apps, proxies, control.into_iter().collect()] {
        let mut stopping = JoinSet::new();
        for handle in group {
            stopping.spawn(handle.stop());
        }
        while stopping.join_next().await.is_some() {}
    }
}

/// The second signal: SIGKILL every process group state.json records, now.
fn kill_everything(shared: &Shared) {
    eprintln!("paymesh up: killing everything");
    let state = shared.snapshot();
    let processes = state
        .control
        .iter()
        .map(|c| &c.process)
        .chain(state.pods.iter().flat_map(|p| p.app.iter().chain(p.proxy.iter())));
    for pid in processes.filter_map(|p| p.pid) {
        supervise::kill_group(pid);
    }
}

fn lock(running: &SharedRunning) -> std::sync::MutexGuard<'_, Running> {
    running.lock().unwrap_or_else(PoisonError::into_inner)
}

/// Polls `ready` until it holds or `deadline` passes.
async fn wait_until<F, Fut>(deadline: Duration, mut ready: F) -> anyhow::Result<()>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = bool>,
{
    let until = Instant::now() + deadline;
    loop {
        if ready().await {
            return Ok(());
        }
        if Instant::now() >= until {
            anyhow::bail!("not ready after {}s", deadline.as_secs());
        }
        tokio::time::sleep(POLL).await;
    }
}

/// 32 random bytes from the OS, hex: the control plane's admin secret.
fn admin_token() -> anyhow::Result<String> {
    use std::io::Read as _;
    let mut bytes = [0u8; 32];
    std::fs::File::open("/dev/urandom")
        .and_then(|mut f| f.read_exact(&mut bytes))
        .context("reading /dev/urandom for the admin token")?;
    Ok(bytes.iter().map(|b| format!("{b:02x}")).collect())
}
