//! The config store: the `-f` paths and the `--pods` file, watched, validated, versioned.
//!
//! A poll loop fingerprints every watched file (path, size, mtime) every [`POLL_INTERVAL`];
//! once a change has held still for one more poll (so a half-written file is not read), it
//! loads everything on a blocking thread and runs `paymesh analyze`'s validation and
//! analyzers over it ([`evaluate`]). No Error-level message: the new [`Accepted`] state, with
//! the next version, is published on a watch channel. Otherwise the change is rejected with
//! analyze's lines, the last good state stays, and [`ConfigStore::rejection`] says why, as
//! istiod's validating webhook refuses a bad resource and keeps serving the old one.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, SystemTime};

use arc_swap::ArcSwapOption;
use paymesh_config::analyze::{self, Context, Level, MeshConfig, Message, messages, output};
use paymesh_config::load::{self, Problem};
use paymesh_config::{Loaded, Store};
use tokio::sync::watch;
use tokio::task::JoinHandle;
use tracing::{info, warn};

use crate::registry::{Registry, WorkloadSource};

/// How often the watched files are looked at.
pub const POLL_INTERVAL: Duration = Duration::from_millis(100);

/// Where Istio's control plane lives: its root namespace for mesh-wide policy.
pub const ISTIO_NAMESPACE: &str = "istio-system";

/// What to watch.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Sources {
    /// Istio and Kubernetes config: files or directories.
    pub config: Vec<PathBuf>,
    /// The running pods (a `kind: List` of Pods), when any.
    pub pods: Option<PathBuf>,
    /// The SPIFFE trust domain identities are named in.
    pub trust_domain: String,
}

/// An accepted config: the resources, the registry built from them, and their version.
#[derive(Debug)]
pub struct Accepted {
    /// Increases by one with every accepted change, from 1.
    pub version: u64,
    /// The resources.
    pub store: Store,
    /// Services and running pods.
    pub registry: Registry,
}

/// A refused change.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rejection {
    /// When it was refused.
    pub at: SystemTime,
    /// Why: `paymesh analyze`'s lines (`Error [IST0101] (VirtualService ns/name file:line) ...`)
    /// and the files that could not be read.
    pub messages: Vec<String>,
}

/// Why the first config could not be loaded.
#[derive(Debug, thiserror::Error)]
#[error("the configuration is not valid:\n{}", .0.join("\n"))]
pub struct InvalidConfig(pub Vec<String>);

/// The watched config: the current accepted state and the last rejection.
#[derive(Debug)]
pub struct ConfigStore {
    accepted: watch::Sender<Arc<Accepted>>,
    rejection: ArcSwapOption<Rejection>,
    rejections: AtomicU64,
    sources: Sources,
}

impl ConfigStore {
    /// Loads the sources once; an invalid first config is an error listing why.
    pub fn load(sources: Sources) -> Result<Arc<Self>, InvalidConfig> {
        let store = evaluate(&sources).map_err(InvalidConfig)?;
        let registry = Registry::new(&store, &sources.trust_domain, WorkloadSource::Pods);
        let (accepted, _) = watch::channel(Arc::new(Accepted { version: 1, store, registry }));
        Ok(Arc::new(ConfigStore {
            accepted,
            rejection: ArcSwapOption::empty(),
            rejections: AtomicU64::new(0),
            sources,
        }))
    }

    /// The current accepted config.
    pub fn current(&self) -> Arc<Accepted> {
        Arc::clone(&self.accepted.borrow())
    }

    /// Notified on every accepted change.
    pub fn subscribe(&self) -> watch::Receiver<Arc<Accepted>> {
        self.accepted.subscribe()
    }

    /// The last refused change since the last accepted one.
    pub fn rejection(&self) -> Option<Arc<Rejection>> {
        self.rejection.load_full()
    }

    /// How many changes were refused since start.
    pub fn rejections_total(&self) -> u64 {
        self.rejections.load(Ordering::Relaxed)
    }

    /// Starts the poll loop; it runs until the handle is aborted.
    pub fn watch(self: &Arc<Self>) -> JoinHandle<()> {
        tokio::spawn(Arc::clone(self).poll_loop())
    }

    async fn poll_loop(self: Arc<Self>) {
        let files = self.watched_files();
        let mut seen = fingerprint_blocking(files.clone()).await;
        let mut interval = tokio::time::interval(POLL_INTERVAL);
        interval.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut pending: Option<Fingerprint> = None;
        loop {
            interval.tick().await;
            let now = fingerprint_blocking(files.clone()).await;
            match pending.take() {
                // The change held still for one poll: read it.
                Some(candidate) if candidate == now => {
                    seen = now;
                    self.reload().await;
                }
                _ if now != seen => pending = Some(now),
                _ => {}
            }
        }
    }

    fn watched_files(&self) -> Vec<PathBuf> {
        self.sources.config.iter().chain(&self.sources.pods).cloned().collect()
    }

    async fn reload(&self) {
        let sources = self.sources.clone();
        let evaluated = tokio::task::spawn_blocking(move || {
            let store = evaluate(&sources)?;
            let registry = Registry::new(&store, &sources.trust_domain, WorkloadSource::Pods);
            Ok::<_, Vec<String>>((store, registry))
        })
        .await;
        match evaluated {
            Ok(Ok((store, registry))) => {
                let version = self.current().version + 1;
                self.rejection.store(None);
                self.accepted.send_replace(Arc::new(Accepted { version, store, registry }));
                info!(version, "config change accepted");
            }
            Ok(Err(messages)) => {
                warn!(count = messages.len(), first = %messages.first().map_or("", String::as_str), "config change rejected; keeping the last good config");
                self.rejections.fetch_add(1, Ordering::Relaxed);
                self.rejection.store(Some(Arc::new(Rejection { at: SystemTime::now(), messages })));
            }
            Err(error) => warn!(%error, "config load task failed"),
        }
    }
}

/// Loads `sources` and runs validation and every analyzer, as `paymesh analyze` does: the
/// store when nothing reaches Error level, else the Error lines (and unreadable files).
pub fn evaluate(sources: &Sources) -> Result<Store, Vec<String>> {
    let paths: Vec<&Path> = sources.config.iter().chain(&sources.pods).map(PathBuf::as_path).collect();
    let Loaded { resources, errors } = load::load_paths(&paths);
    let mesh = MeshConfig::default();
    // Analysis sees Istio's built-in ingress gateway as `istioctl analyze` does; the registry
    // does not (the real gateway pod comes with the pods file).
    let mut analyzed = resources.clone();
    analyze::gateway::builtin::add_missing(&mut analyzed, &mesh, ISTIO_NAMESPACE);
    let (analysis_store, _) = Store::new(analyzed);
    let (store, duplicates) = Store::new(resources);
    let ctx = Context { store: &analysis_store, mesh: &mesh, istio_namespace: ISTIO_NAMESPACE };
    let mut found = analyze::run(&ctx, &analyze::all());
    let mut unreadable = Vec::new();
    for error in errors.into_iter().chain(duplicates) {
        match (&error.problem, &error.resource) {
            (Problem::Schema(field), Some(resource)) => {
                let mut message = messages::schema_validation_error(field);
                message.origin = Some(analyze::Origin {
                    resource: resource.clone(),
                    location: Some(error.location.clone()),
                });
                found.push(message);
            }
            _ => unreadable.push(format!("error: {error}")),
        }
    }
    let errors: Vec<Message> = found.into_iter().filter(|m| m.kind.level == Level::Error).collect();
    let mut lines: Vec<String> = output::log(&errors).lines().map(str::to_owned).collect();
    lines.extend(unreadable);
    if lines.is_empty() { Ok(store) } else { Err(lines) }
}

/// What the watched files look like: every file under the paths with its size and mtime.
type Fingerprint = Vec<(PathBuf, u64, Option<SystemTime>)>;

async fn fingerprint_blocking(paths: Vec<PathBuf>) -> Fingerprint {
    tokio::task::spawn_blocking(move || fingerprint(&paths)).await.unwrap_or_default()
}

fn fingerprint(paths: &[PathBuf]) -> Fingerprint {
    let mut out = Vec::new();
    let mut todo: Vec<PathBuf> = paths.to_vec();
    // Bounded: a symlink loop must not make the walk endless.
    let mut budget = 100_000usize;
    while let Some(path) = todo.pop() {
        budget = budget.saturating_sub(1);
        if budget == 0 {
            break;
        }
        match std::fs::metadata(&path) {
            Ok(meta) if meta.is_dir() => {
                if let Ok(entries) = std::fs::read_dir(&path) {
                    todo.extend(entries.filter_map(|e| e.ok().map(|e| e.path())));
                }
            }
            Ok(meta) => out.push((path, meta.len(), meta.modified().ok())),
            Err(_) => out.push((path, 0, None)),
        }
    }
    out.sort();
    out
}
