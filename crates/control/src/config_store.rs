//! The config store: the `-f` paths and the `--pods` file, watched, validated, versioned.
//!
//! A poll loop fingerprints every watched file (path, size, mtime) every [`POLL_INTERVAL`];
//! once a change has held still for one more poll (so a half-written file is not read), it
//! loads everything on a blocking thread and runs `paymesh analyze`'s validation and
//! analyzers over it ([`evaluate`]). No Error-level message: the new [`Accepted`] state, with
//! the next version, is published on a watch channel. Otherwise the change is rejected with
//! analyze's lines, the last good state stays, and [`ConfigStore::rejection`] says why, as
//! istiod's validating webhook refuses a bad resource and keeps serving the old one. The pods
//! file is the supervisor's, not the operator's: a pods change is accepted against the last
//! good config even while a config edit stays rejected, so restarted pods keep being served.
//!
//! Files are parsed only when their content changed ([`files::FileCache`]); validation and
//! every analyzer still run over the whole config on each change.
//!
//! Versions are [`Version`]s, `<boot unix ms>-<n>`: a restarted control plane's versions
//! compare greater than any version the previous run sent, so a proxy never sees one go back.

use std::fmt;
use std::path::PathBuf;
use std::str::FromStr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use arc_swap::ArcSwapOption;
use paymesh_config::Store;
use paymesh_config::analyze::{self, Context, Level, MeshConfig, Message, output};
use paymesh_config::load;
use paymesh_config::resource::Resource;
use tokio::sync::watch;
use tokio::task::JoinHandle;
use tracing::{info, warn};

use crate::compile::unsupported::{self, Unsupported};
use crate::registry::{Registry, WorkloadSource};

pub mod files;

use files::{FileCache, SharedLoaded};

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

/// A config version: the control plane's start time and a counter of accepted changes.
///
/// Written `<boot unix ms>-<n>` (`1764377934123-2`) and ordered by `boot`, then `n`, both as
/// numbers: every accepted change increases `n`, and a restarted control plane starts over at
/// `n = 1` under a later `boot`, so versions sent to a proxy only ever increase.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Version {
    /// When this control plane started, unix milliseconds.
    pub boot: u64,
    /// Accepted changes since start, from 1.
    pub n: u64,
}

impl Version {
    /// The first version of a control plane started now.
    pub fn first() -> Self {
        let boot = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX));
        Version { boot, n: 1 }
    }

    /// The version after this one.
    pub fn next(self) -> Self {
        Version { boot: self.boot, n: self.n.saturating_add(1) }
    }
}

impl fmt::Display for Version {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}-{}", self.boot, self.n)
    }
}

/// A version string that is not `<boot>-<n>`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("version {0:?} is not <boot unix ms>-<n>")]
pub struct BadVersion(String);

impl FromStr for Version {
    type Err = BadVersion;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let bad = || BadVersion(s.to_owned());
        let (boot, n) = s.split_once('-').ok_or_else(bad)?;
        Ok(Version { boot: boot.parse().map_err(|_| bad())?, n: n.parse().map_err(|_| bad())? })
    }
}

/// An accepted config: the resources, the registry built from them, and their version.
#[derive(Debug)]
pub struct Accepted {
    /// Increases with every accepted change (see [`Version`]).
    pub version: Version,
    /// The resources.
    pub store: Store,
    /// Services and running pods.
    pub registry: Registry,
    /// Fields the compiler leaves out (`/debug/configz`).
    pub unsupported: Vec<Unsupported>,
}

/// The parts of an [`Accepted`] config built off the async workers.
#[derive(Debug)]
struct Prepared {
    store: Store,
    registry: Registry,
    unsupported: Vec<Unsupported>,
    /// Reading and parsing, then validation and analysis, then the registry (for the log).
    took: [Duration; 3],
}

impl Prepared {
    fn new(store: Store, trust_domain: &str, read: Duration, analyzed: Duration) -> Self {
        let started = Instant::now();
        let registry = Registry::new(&store, trust_domain, WorkloadSource::Pods);
        let unsupported = unsupported::scan(&store);
        Prepared { store, registry, unsupported, took: [read, analyzed, started.elapsed()] }
    }

    fn accept(self, version: Version) -> Accepted {
        for u in &self.unsupported {
            warn!(%version, resource = %u.resource, field = %u.field, reason = %u.reason, "config field not acted on");
        }
        Accepted { version, store: self.store, registry: self.registry, unsupported: self.unsupported }
    }
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
    /// What the watched files looked like when the first config was read.
    baseline: Mutex<Option<Fingerprint>>,
    /// The last accepted config's resources from the config paths (pods excluded) and the
    /// pods file's fingerprint then: a pods change is checked against these.
    last_good: Mutex<LastGood>,
    /// Parsed files of the config paths and of the pods file.
    files: Mutex<Files>,
}

#[derive(Debug, Default)]
struct LastGood {
    config: Vec<Arc<Resource>>,
    pods: Fingerprint,
}

#[derive(Debug, Default)]
struct Files {
    config: FileCache,
    pods: FileCache,
}

impl Files {
    fn load(&mut self, sources: &Sources) -> (SharedLoaded, SharedLoaded) {
        let pods = match &sources.pods {
            Some(path) => self.pods.load(&[path]),
            None => SharedLoaded::default(),
        };
        (self.config.load(&sources.config), pods)
    }
}

/// What one reload produced.
enum Outcome {
    /// Config and pods both accepted.
    Accepted(Prepared, LastGood),
    /// The config change is refused, but the pods change is accepted against the last good
    /// config.
    PodsOnly(Prepared, Fingerprint, Vec<String>),
    /// Refused.
    Rejected(Vec<String>),
}

impl ConfigStore {
    /// Loads the sources once; an invalid first config is an error listing why.
    /// Blocking: run it off the async workers.
    pub fn load(sources: Sources) -> Result<Arc<Self>, InvalidConfig> {
        // Fingerprint first: an edit made while this load runs differs from it and is read.
        let baseline = fingerprint(&watched_files(&sources));
        let pods_fingerprint = fingerprint(&sources.pods.iter().cloned().collect::<Vec<_>>());
        let mut files = Files::default();
        let (config, pods) = files.load(&sources);
        let config_resources = config.resources.clone();
        let store = check(config, pods).map_err(InvalidConfig)?;
        let first = Prepared::new(store, &sources.trust_domain, Duration::ZERO, Duration::ZERO)
            .accept(Version::first());
        let (accepted, _) = watch::channel(Arc::new(first));
        Ok(Arc::new(ConfigStore {
            accepted,
            rejection: ArcSwapOption::empty(),
            rejections: AtomicU64::new(0),
            sources,
            baseline: Mutex::new(Some(baseline)),
            last_good: Mutex::new(LastGood { config: config_resources, pods: pods_fingerprint }),
            files: Mutex::new(files),
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

    /// How many files were parsed since start: a file whose content did not change is not
    /// parsed again.
    pub fn files_parsed(&self) -> u64 {
        let files = self.files.lock().unwrap_or_else(PoisonError::into_inner);
        files.config.parses() + files.pods.parses()
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
        let files = watched_files(&self.sources);
        let baseline = self.baseline.lock().unwrap_or_else(PoisonError::into_inner).take();
        let mut seen = match baseline {
            Some(baseline) => baseline,
            None => fingerprint_blocking(files.clone()).await,
        };
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

    async fn reload(self: &Arc<Self>) {
        let this = Arc::clone(self);
        let outcome = tokio::task::spawn_blocking(move || this.evaluate_change()).await;
        let accept = |prepared: Prepared| {
            let version = self.current().version.next();
            let [read, analyzed, registry] = prepared.took.map(|d| d.as_millis());
            self.accepted.send_replace(Arc::new(prepared.accept(version)));
            (version, read, analyzed, registry)
        };
        match outcome {
            Ok(Outcome::Accepted(store, last_good)) => {
                *self.last_good.lock().unwrap_or_else(PoisonError::into_inner) = last_good;
                self.rejection.store(None);
                let (version, read_ms, analyze_ms, registry_ms) = accept(store);
                info!(%version, read_ms, analyze_ms, registry_ms, "config change accepted");
            }
            Ok(Outcome::PodsOnly(store, pods, messages)) => {
                self.last_good.lock().unwrap_or_else(PoisonError::into_inner).pods = pods;
                self.reject(messages);
                let (version, read_ms, analyze_ms, registry_ms) = accept(store);
                info!(%version, read_ms, analyze_ms, registry_ms, "pods change accepted against the last good config; the config change stays rejected");
            }
            Ok(Outcome::Rejected(messages)) => self.reject(messages),
            Err(error) => warn!(%error, "config load task failed"),
        }
    }

    fn reject(&self, messages: Vec<String>) {
        warn!(count = messages.len(), first = %messages.first().map_or("", String::as_str), "config change rejected; keeping the last good config");
        self.rejections.fetch_add(1, Ordering::Relaxed);
        self.rejection.store(Some(Arc::new(Rejection { at: SystemTime::now(), messages })));
    }

    /// Blocking: loads and checks the watched files; on a refusal, a changed pods file is
    /// checked against the last good config.
    fn evaluate_change(&self) -> Outcome {
        let pods_fingerprint = fingerprint(&self.sources.pods.iter().cloned().collect::<Vec<_>>());
        let started = Instant::now();
        let (config, pods) = self.files.lock().unwrap_or_else(PoisonError::into_inner).load(&self.sources);
        let read = started.elapsed();
        let config_resources = config.resources.clone();
        let pods_readable = pods.errors.is_empty();
        let pods_resources = pods.resources.clone();
        let checked = check(config, pods);
        let analyzed = started.elapsed().saturating_sub(read);
        let messages = match checked {
            Ok(store) => {
                let prepared = Prepared::new(store, &self.sources.trust_domain, read, analyzed);
                return Outcome::Accepted(
                    prepared,
                    LastGood { config: config_resources, pods: pods_fingerprint },
                );
            }
            Err(messages) => messages,
        };
        let good = {
            let last = self.last_good.lock().unwrap_or_else(PoisonError::into_inner);
            (pods_readable && last.pods != pods_fingerprint).then(|| last.config.clone())
        };
        let Some(good) = good else { return Outcome::Rejected(messages) };
        let pods = SharedLoaded { resources: pods_resources, errors: Vec::new() };
        match check(SharedLoaded { resources: good, errors: Vec::new() }, pods) {
            Ok(store) => Outcome::PodsOnly(
                Prepared::new(store, &self.sources.trust_domain, read, analyzed),
                pods_fingerprint,
                messages,
            ),
            Err(_) => Outcome::Rejected(messages),
        }
    }
}

fn watched_files(sources: &Sources) -> Vec<PathBuf> {
    sources.config.iter().chain(&sources.pods).cloned().collect()
}

/// Loads `sources` and runs validation and every analyzer, as `paymesh analyze` does: the
/// store when nothing reaches Error level, else the Error lines (and unreadable files).
pub fn evaluate(sources: &Sources) -> Result<Store, Vec<String>> {
    let pods = sources.pods.as_ref().map(|p| load::load_paths(&[p])).unwrap_or_default();
    check(load::load_paths(&sources.config).into(), pods.into())
}

/// Validation and analysis of the config and pods loaded.
fn check(config: SharedLoaded, pods: SharedLoaded) -> Result<Store, Vec<String>> {
    let SharedLoaded { mut resources, mut errors } = config;
    resources.extend(pods.resources);
    errors.extend(pods.errors);
    let mesh = MeshConfig::default();
    // Analysis sees Istio's built-in ingress gateway as `istioctl analyze` does; the registry
    // does not (the real gateway pod comes with the pods file).
    let mut analyzed = resources.clone();
    analyze::gateway::builtin::add_missing(&mut analyzed, &mesh, ISTIO_NAMESPACE);
    let (analysis_store, _) = Store::from_shared(analyzed);
    let (store, duplicates) = Store::from_shared(resources);
    let ctx = Context { store: &analysis_store, mesh: &mesh, istio_namespace: ISTIO_NAMESPACE };
    let mut found = analyze::run(&ctx, &analyze::all());
    let (schema, unreadable) = analyze::schema_messages(errors.into_iter().chain(duplicates));
    found.extend(schema);
    let errors: Vec<Message> = found.into_iter().filter(|m| m.kind.level == Level::Error).collect();
    let mut lines: Vec<String> = output::log(&errors).lines().map(str::to_owned).collect();
    lines.extend(unreadable.iter().map(|error| format!("error: {error}")));
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

#[cfg(test)]
mod tests {
    use super::Version;

    #[test]
    fn versions_order_by_boot_then_count_as_numbers() {
        let v = |s: &str| s.parse::<Version>().expect("version");
        assert!(v("1000-10") > v("1000-9"), "numbers, not strings");
        assert!(v("1001-1") > v("1000-99"), "a restart is later than anything before it");
        assert_eq!(v("1000-2").to_string(), "1000-2");
        assert_eq!(v("1000-2").next(), v("1000-3"));
        for bad in ["", "7", "a-1", "1-", "-1", "1-2-3"] {
            assert!(bad.parse::<Version>().is_err(), "{bad}");
        }
        let first = Version::first();
        assert_eq!(first.n, 1);
        assert!(first.boot > 1_700_000_000_000, "unix milliseconds");
    }
}
