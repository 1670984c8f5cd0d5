//! Gateway TLS credentials for local mode: Kubernetes would hold them in the Secret a
//! Gateway server's `credentialName` names; locally they are files under
//! `<state>/credentials/<name>/tls.crt|tls.key`, the control plane's `--credentials-dir`.
//!
//! A credential that is not there yet gets a self-signed certificate for the server's hosts, so
//! HTTPS on the local ingress works out of the box (`curl -k`); put a real certificate and key
//! in those two files to use your own.

use std::fs;
use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

use anyhow::Context;
use paymesh_config::networking::gateway::ServerTlsMode;
use paymesh_config::resource::Spec;
use paymesh_config::store::Store;
use paymesh_control::compile::gateway::valid_credential_name;

/// Where the control plane finds gateway credentials.
pub fn credentials_dir(state_dir: &Path) -> PathBuf {
    state_dir.join("credentials")
}

/// Creates a self-signed certificate for every SIMPLE-mode `credentialName` that has no files
/// yet; returns the names it created.
pub fn ensure(store: &Store, state_dir: &Path) -> anyhow::Result<Vec<String>> {
    let mut created = Vec::new();
    for (_, gateway) in store.typed("Gateway", Spec::gateway) {
        for server in &gateway.servers {
            let Some(tls) = server.tls.as_ref().filter(|t| t.mode == ServerTlsMode::Simple) else {
                continue;
            };
            let name = tls.credential_name.as_str();
            // The control plane refuses other names (they could climb out of the directory).
            if !valid_credential_name(name) || created.iter().any(|c| c == name) {
                continue;
            }
            let dir = credentials_dir(state_dir).join(name);
            if dir.join("tls.crt").is_file() && dir.join("tls.key").is_file() {
                continue;
            }
            let mut hosts: Vec<String> =
                server.hosts.iter().map(|h| h.host().as_str().to_owned()).filter(|h| h != "*").collect();
            hosts.push("localhost".to_owned());
            let certified = rcgen::generate_simple_self_signed(hosts)
                .with_context(|| format!("self-signed certificate for credential {name}"))?;
            fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
            write_file(&dir.join("tls.crt"), certified.cert.pem().as_bytes(), 0o644)?;
            write_file(&dir.join("tls.key"), certified.signing_key.serialize_pem().as_bytes(), 0o600)?;
            created.push(name.to_owned());
        }
    }
    Ok(created)
}

fn write_file(path: &Path, contents: &[u8], mode: u32) -> anyhow::Result<()> {
    let mut file = fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(mode)
        .open(path)
        .with_context(|| format!("writing {}", path.display()))?;
    file.write_all(contents).with_context(|| format!("writing {}", path.display()))
}
