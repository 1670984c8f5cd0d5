//! A proxy's config at one version, compiled but not yet encoded ([`Built`]), and its two
//! encodings: whole (`Snapshot.config_json`) or as a delta against the config the proxy runs
//! (`Snapshot.delta_json`).
//!
//! A sidecar's [`Built`] is its own small head and an `Arc` of its scope's shared outbound
//! part, so a stream can keep the one its proxy last ACKed for the next delta without holding
//! a copy of a config. The outbound part of a delta is computed once per (base part, new part)
//! pair in the current generation (`Scopes::delta_slot`) and shared by every stream of that
//! scope; a gateway's config is small and compiled whole, so its delta is computed per stream.

use std::sync::Arc;

use paymesh_api::ConfigDelta;
use paymesh_api::delta::DeltaError;
use paymesh_api::model::{ProxyConfig, ProxyKind};

use super::{Discovery, Target};
use crate::compile::scope::{Outbound, OutboundDelta, SidecarHead, SpliceError};
use crate::compile::{self, CompileError, Inputs, content_digest};
use crate::config_store::{Accepted, Version};

/// A proxy's config at one version.
#[derive(Debug, Clone)]
pub(super) struct Built {
    /// The version.
    pub version: Version,
    /// A digest of the content, the version left out.
    pub digest: u64,
    config: Config,
}

/// The content of a [`Built`].
#[derive(Debug, Clone)]
enum Config {
    /// A sidecar: its own head and its scope's shared part.
    Sidecar { head: Arc<SidecarHead>, outbound: Arc<Outbound> },
    /// A gateway, compiled whole.
    Whole(Arc<ProxyConfig>),
}

/// Why a proxy gets a full snapshot instead of a delta.
#[derive(Debug, thiserror::Error)]
pub(super) enum NoDelta {
    /// The sidecar's delta could not be spliced.
    #[error(transparent)]
    Splice(#[from] SpliceError),
    /// The gateway's delta could not be computed.
    #[error(transparent)]
    Delta(#[from] DeltaError),
    /// The delta did not encode.
    #[error("delta did not encode: {0}")]
    Encode(#[from] paymesh_api::CodecError),
    /// The base and the new config are not of the same kind of proxy.
    #[error("the proxy changed kind")]
    KindChanged,
    /// The job panicked.
    #[error("computing the delta panicked")]
    Panicked,
}

impl Discovery {
    /// `target`'s config at `current`'s version. Compiling runs on the blocking pool (it walks
    /// the whole config), at most one job per core at once: a change for a thousand proxies
    /// queues here instead of starting a thousand threads. A sidecar's outbound part comes
    /// from its scope's shared slot, compiled by the first stream to ask.
    pub(super) async fn build(&self, current: Arc<Accepted>, target: Target) -> Result<Built, CompileError> {
        let unknown =
            || CompileError::UnknownPod { namespace: target.namespace.clone(), pod: target.pod.clone() };
        let version = current.version;
        if target.kind == ProxyKind::Gateway {
            let (settings, target) = (Arc::clone(&self.settings), target.clone());
            let config = self
                .blocking(unknown(), move || {
                    compile::compile(
                        &current.store,
                        &current.registry,
                        &settings,
                        &target.namespace,
                        &target.pod,
                        target.kind,
                        current.version,
                    )
                })
                .await?;
            let digest = content_digest(&config);
            return Ok(Built { version, digest, config: Config::Whole(Arc::new(config)) });
        }
        let proxy = current.registry.workload(&target.namespace, &target.pod).ok_or_else(unknown)?;
        let slot = self.scopes.slot(&current, proxy);
        let outbound = slot
            .get_or_try_init(|| {
                let (current, settings, target) =
                    (Arc::clone(&current), Arc::clone(&self.settings), target.clone());
                self.blocking(unknown(), move || {
                    let proxy =
                        current.registry.workload(&target.namespace, &target.pod).ok_or_else(|| {
                            CompileError::UnknownPod {
                                namespace: target.namespace.clone(),
                                pod: target.pod.clone(),
                            }
                        })?;
                    let inputs = Inputs {
                        store: &current.store,
                        registry: &current.registry,
                        settings: &settings,
                        proxy,
                    };
                    Outbound::compile(&inputs).map(Arc::new)
                })
            })
            .await
            .map(Arc::clone)?;
        let settings = Arc::clone(&self.settings);
        let part = Arc::clone(&outbound);
        let head = self
            .blocking(unknown(), move || {
                SidecarHead::compile(
                    &current.store,
                    &current.registry,
                    &settings,
                    &target.namespace,
                    &target.pod,
                    &part,
                )
            })
            .await?;
        let digest = head.digest(&outbound);
        Ok(Built { version, digest, config: Config::Sidecar { head: Arc::new(head), outbound } })
    }

    /// `built` encoded whole: `Snapshot.config_json`.
    pub(super) async fn encode_full(&self, built: &Built) -> Result<Vec<u8>, CompileError> {
        let (version, config) = (built.version.to_string(), built.config.clone());
        let failed = |node: &paymesh_api::model::Node, reason: String| CompileError::Encode {
            namespace: node.namespace.clone(),
            pod: node.pod.clone(),
            reason,
        };
        let panicked = CompileError::Encode {
            namespace: String::new(),
            pod: String::new(),
            reason: "encoding panicked".into(),
        };
        self.blocking(panicked, move || match &config {
            Config::Sidecar { head, outbound } => {
                head.encode(&version, outbound).map_err(|e| failed(&head.node, e.to_string()))
            }
            Config::Whole(config) => config.encode().map_err(|e| failed(&config.node, e.to_string())),
        })
        .await
    }

    /// The delta from `base` (what the proxy runs) to `built`: `Snapshot.delta_json`, `None`
    /// when nothing changed for the proxy.
    pub(super) async fn encode_delta(&self, base: &Built, built: &Built) -> Result<Option<Vec<u8>>, NoDelta> {
        let version = built.version.to_string();
        match (&base.config, &built.config) {
            (
                Config::Sidecar { head: base_head, outbound: base_part },
                Config::Sidecar { head, outbound },
            ) => {
                let slot = self.scopes.delta_slot(built.version, base_part.id(), outbound.id());
                let shared = slot
                    .get_or_try_init(|| {
                        let (base_part, outbound) = (Arc::clone(base_part), Arc::clone(outbound));
                        self.blocking(NoDelta::Panicked, move || {
                            Ok(Arc::new(OutboundDelta::between(&base_part, &outbound)?))
                        })
                    })
                    .await
                    .map(Arc::clone)?;
                let (base_head, head) = (Arc::clone(base_head), Arc::clone(head));
                self.blocking(NoDelta::Panicked, move || Ok(head.delta(&version, &base_head, &shared)?)).await
            }
            (Config::Whole(base), Config::Whole(config)) => {
                let (base, config) = (Arc::clone(base), Arc::clone(config));
                self.blocking(NoDelta::Panicked, move || {
                    let delta = ConfigDelta::between(&base, &config)?;
                    if delta.is_empty() {
                        return Ok(None);
                    }
                    Ok(Some(delta.encode()?))
                })
                .await
            }
            _ => Err(NoDelta::KindChanged),
        }
    }

    /// Runs `job` on the blocking pool once a compile slot is free; `panicked` if it panics
    /// (the compiler does not; if it ever did, the proxy is told, not left waiting).
    async fn blocking<T: Send + 'static, E: Send + 'static>(
        &self,
        panicked: E,
        job: impl FnOnce() -> Result<T, E> + Send + 'static,
    ) -> Result<T, E> {
        // Never closed: acquiring only waits.
        let _slot = self.compiling.acquire().await.ok();
        tokio::task::spawn_blocking(job).await.unwrap_or(Err(panicked))
    }
}

impl Built {
    /// A gateway's (or any whole) config, for tests.
    #[cfg(test)]
    pub fn whole(version: Version, config: ProxyConfig) -> Self {
        Built { version, digest: content_digest(&config), config: Config::Whole(Arc::new(config)) }
    }
}
