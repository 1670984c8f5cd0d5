//! Where a push's time goes, measured in this process with the control plane's own library
//! on one thread: loading and analysing the whole config (the first load; a change re-parses
//! only what changed), compiling one proxy's whole config, JSON-encoding it and decoding it (the
//! proxy's side), and what the push server does instead: compile and encode each scope's
//! outbound part once, then splice each proxy's snapshot (checked byte-equal to the whole one);
//! and for deltas, diffing one scope's outbound part against another compile of it (every item
//! compared, nothing to send: the diff's upper bound) and splicing each proxy's delta.

use std::path::PathBuf;
use std::time::{Duration, Instant};

use anyhow::Context as _;
use paymesh_api::ProxyConfig;
use paymesh_api::model::ProxyKind;
use std::collections::HashMap;

use paymesh_control::compile::scope::{self, Outbound, OutboundDelta, ScopeKey, SidecarHead, label_keys};
use paymesh_control::compile::{self, Inputs, Settings};
use paymesh_control::config_store::{ConfigStore, Sources};

use crate::generate::{Mesh, PodRef};

/// Costs of the control plane's steps for one mesh.
#[derive(Debug, Clone, Copy)]
pub struct Breakdown {
    /// Load + validate + analyze + registry of the whole config.
    pub load: Duration,
    /// Mean compile time per proxy.
    pub compile: Duration,
    /// Mean JSON encode time per proxy.
    pub encode: Duration,
    /// Mean JSON decode time per proxy.
    pub decode: Duration,
    /// Distinct scopes among the proxies.
    pub scopes: usize,
    /// Mean compile + encode time of one scope's outbound part.
    pub outbound: Duration,
    /// Mean time to splice one proxy's snapshot from its scope's part.
    pub splice: Duration,
    /// Mean time to diff one scope's outbound part against another compile of it.
    pub diff: Duration,
    /// Mean time to build one proxy's head and splice its delta.
    pub delta_splice: Duration,
}

/// Measures [`Breakdown`] for `mesh`, compiling for each of `pods`.
pub fn measure(mesh: &Mesh, pods: &[PodRef]) -> anyhow::Result<Breakdown> {
    let sources = Sources {
        config: vec![mesh.config_dir.clone()],
        pods: Some(mesh.pods_file.clone()),
        trust_domain: "cluster.local".into(),
    };
    let started = Instant::now();
    let store = ConfigStore::load(sources).map_err(|e| anyhow::anyhow!("config invalid: {:?}", e.0))?;
    let load = started.elapsed();
    let current = store.current();
    let settings = Settings {
        trust_domain: "cluster.local".into(),
        cert_ttl_secs: 86_400,
        gateway_port_offset: 0,
        credentials_dir: PathBuf::from("credentials"),
        root_namespace: "istio-system".into(),
    };
    let keys = label_keys(&current.store);
    let mut outbound: HashMap<ScopeKey, Outbound> = HashMap::new();
    let started = Instant::now();
    for pod in pods {
        let proxy = current.registry.workload(&pod.namespace, &pod.name).context("pod registered")?;
        let key = ScopeKey::of(proxy, &keys);
        if let std::collections::hash_map::Entry::Vacant(slot) = outbound.entry(key) {
            let inputs =
                Inputs { store: &current.store, registry: &current.registry, settings: &settings, proxy };
            slot.insert(Outbound::compile(&inputs).context("outbound part")?);
        }
    }
    let outbound_total = started.elapsed();
    let (mut compiling, mut encoding, mut decoding) = (Duration::ZERO, Duration::ZERO, Duration::ZERO);
    let mut splicing = Duration::ZERO;
    for pod in pods {
        let started = Instant::now();
        let config = compile::compile(
            &current.store,
            &current.registry,
            &settings,
            &pod.namespace,
            &pod.name,
            ProxyKind::Sidecar,
            current.version,
        )
        .with_context(|| format!("compiling for {}", pod.name))?;
        let compiled = Instant::now();
        let json = config.encode().context("encoding")?;
        let encoded = Instant::now();
        let decoded = ProxyConfig::decode(&json).context("decoding")?;
        let done = Instant::now();
        anyhow::ensure!(decoded == config, "decode(encode(config)) differs for {}", pod.name);
        compiling += compiled - started;
        encoding += encoded - compiled;
        decoding += done - encoded;
        let proxy = current.registry.workload(&pod.namespace, &pod.name).context("pod registered")?;
        let part = outbound.get(&ScopeKey::of(proxy, &keys)).context("scope compiled")?;
        let started = Instant::now();
        let spliced = scope::encode_sidecar(
            &current.store,
            &current.registry,
            &settings,
            &pod.namespace,
            &pod.name,
            current.version,
            part,
        )
        .context("splicing")?;
        splicing += started.elapsed();
        anyhow::ensure!(spliced.json == json, "the spliced snapshot of {} differs", pod.name);
    }
    let (diff, delta_splice) = measure_deltas(&current, &settings, pods, &keys, &outbound)?;
    let n = u32::try_from(pods.len().max(1)).unwrap_or(u32::MAX);
    let scopes = outbound.len();
    Ok(Breakdown {
        load,
        compile: compiling / n,
        encode: encoding / n,
        decode: decoding / n,
        scopes,
        outbound: outbound_total / u32::try_from(scopes.max(1)).unwrap_or(u32::MAX),
        splice: splicing / n,
        diff,
        delta_splice,
    })
}

/// Mean diff time per scope (each part against a second compile of it) and mean delta splice
/// time per proxy (its head built and its delta spliced; nothing changed, so nothing is sent).
fn measure_deltas(
    current: &paymesh_control::config_store::Accepted,
    settings: &Settings,
    pods: &[PodRef],
    keys: &std::collections::BTreeSet<String>,
    outbound: &HashMap<ScopeKey, Outbound>,
) -> anyhow::Result<(Duration, Duration)> {
    let mut again: HashMap<ScopeKey, Outbound> = HashMap::new();
    for pod in pods {
        let proxy = current.registry.workload(&pod.namespace, &pod.name).context("pod registered")?;
        let key = ScopeKey::of(proxy, keys);
        if let std::collections::hash_map::Entry::Vacant(slot) = again.entry(key) {
            let inputs = Inputs { store: &current.store, registry: &current.registry, settings, proxy };
            slot.insert(Outbound::compile(&inputs).context("outbound part")?);
        }
    }
    let started = Instant::now();
    let mut deltas = HashMap::new();
    for (key, part) in &again {
        let base = outbound.get(key).context("scope compiled")?;
        deltas.insert(key.clone(), OutboundDelta::between(base, part).context("diff")?);
    }
    let diff = started.elapsed() / u32::try_from(again.len().max(1)).unwrap_or(u32::MAX);
    let mut splicing = Duration::ZERO;
    for pod in pods {
        let proxy = current.registry.workload(&pod.namespace, &pod.name).context("pod registered")?;
        let key = ScopeKey::of(proxy, keys);
        let (base, part) = (outbound.get(&key).context("scope")?, again.get(&key).context("scope")?);
        let shared = deltas.get(&key).context("diffed")?;
        let (store, registry) = (&current.store, &current.registry);
        let base_head = SidecarHead::compile(store, registry, settings, &pod.namespace, &pod.name, base)?;
        let started = Instant::now();
        let head = SidecarHead::compile(store, registry, settings, &pod.namespace, &pod.name, part)?;
        let spliced = head.delta("2", &base_head, shared).context("delta splice")?;
        splicing += started.elapsed();
        anyhow::ensure!(spliced.is_none(), "a delta between two compiles of one version for {}", pod.name);
    }
    Ok((diff, splicing / u32::try_from(pods.len().max(1)).unwrap_or(u32::MAX)))
}
