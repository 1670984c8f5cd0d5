//! Where the CA's signing key and certificate come from: a self-signed root generated on first
//! start and kept in the state directory, or Istio's plug-in CA files.
//!
//! Plug-in (`cacerts/`): `ca-cert.pem` + `ca-key.pem` are the signing CA (usually an
//! intermediate), `root-cert.pem` the trust anchor(s), `cert-chain.pem` the chain from the
//! signing CA up to the root. Workloads receive leaf + `cert-chain.pem` (roots left out of the
//! TLS chain, sent separately), as Istio's plug-in CA does.

use std::fs::{self, DirBuilder, OpenOptions};
use std::io::{self, Write};
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::time::Duration;

use paymesh_tls::{Authority, CertError, SignError, TrustBundle, TrustDomain, certs_from_pem};
use rcgen::KeyPair;
use rustls_pki_types::CertificateDer;
use tracing::{info, warn};
use x509_parser::prelude::{FromDer, X509Certificate};

/// Plug-in CA file names, as Istio reads them from its `cacerts` secret.
pub const CA_CERT_FILE: &str = "ca-cert.pem";
/// See [`CA_CERT_FILE`].
pub const CA_KEY_FILE: &str = "ca-key.pem";
/// See [`CA_CERT_FILE`].
pub const ROOT_CERT_FILE: &str = "root-cert.pem";
/// See [`CA_CERT_FILE`].
pub const CERT_CHAIN_FILE: &str = "cert-chain.pem";

/// Lifetime of a generated self-signed root: ten years, as Istio's self-signed CA.
const SELF_SIGNED_ROOT_TTL: Duration = Duration::from_secs(10 * 365 * 24 * 3600);

/// Where the CA's signing key comes from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RootSource {
    /// A self-signed root kept in `state_dir` (`ca-cert.pem`, `ca-key.pem` with mode 0600),
    /// generated on first start.
    SelfSigned {
        /// The CA's state directory (locally `.paymesh/ca`).
        state_dir: PathBuf,
    },
    /// Istio's plug-in CA files in `cacerts_dir`.
    PlugIn {
        /// The directory holding `ca-cert.pem`, `ca-key.pem`, `root-cert.pem`, `cert-chain.pem`.
        cacerts_dir: PathBuf,
    },
}

/// Why the CA's key material could not be loaded or created.
#[derive(Debug, thiserror::Error)]
pub enum RootError {
    /// A file or directory could not be read or written.
    #[error("{}: {source}", path.display())]
    Io {
        /// The file or directory.
        path: PathBuf,
        /// The I/O error.
        #[source]
        source: io::Error,
    },
    /// The key file is not a usable PKCS#8 key.
    #[error("{}: not a usable private key (PKCS#8 PEM `BEGIN PRIVATE KEY` is supported; convert others with `openssl pkcs8 -topk8 -nocrypt`): {source}", path.display())]
    Key {
        /// The key file.
        path: PathBuf,
        /// What rcgen reported.
        #[source]
        source: rcgen::Error,
    },
    /// A certificate file is malformed.
    #[error("{}: {source}", path.display())]
    Cert {
        /// The certificate file.
        path: PathBuf,
        /// What is wrong.
        #[source]
        source: CertError,
    },
    /// `ca-cert.pem` holds more or less than one certificate.
    #[error("{}: expected exactly one certificate, found {found}", path.display())]
    NotOneCert {
        /// The certificate file.
        path: PathBuf,
        /// How many it holds.
        found: usize,
    },
    /// The signing certificate was not issued for the signing key.
    #[error("{} does not belong to the key in {}", cert.display(), key.display())]
    KeyMismatch {
        /// The certificate.
        cert: PathBuf,
        /// The key.
        key: PathBuf,
    },
    /// The signing certificate is not a CA certificate.
    #[error("{}: not a CA certificate (basicConstraints CA:TRUE is required)", path.display())]
    NotCa {
        /// The certificate file.
        path: PathBuf,
    },
    /// The state directory has a root certificate but lost its key.
    #[error("{}: the root certificate is there but its key {} is missing; restore it, or remove both to start a new root", dir.display(), CA_KEY_FILE)]
    MissingKey {
        /// The state directory.
        dir: PathBuf,
    },
    /// The self-signed root could not be generated.
    #[error("generating the self-signed root: {0}")]
    Generate(#[source] SignError),
}

/// Loads (or, for a fresh self-signed state directory, creates) the signing authority.
pub(crate) fn load(source: &RootSource, trust_domain: &TrustDomain) -> Result<Authority, RootError> {
    match source {
        RootSource::SelfSigned { state_dir } => self_signed(state_dir, trust_domain),
        RootSource::PlugIn { cacerts_dir } => plug_in(cacerts_dir),
    }
}

fn io_error(path: &Path) -> impl FnOnce(io::Error) -> RootError + '_ {
    move |source| RootError::Io { path: path.to_owned(), source }
}

fn read(path: &Path) -> Result<String, RootError> {
    fs::read_to_string(path).map_err(io_error(path))
}

fn read_certs(path: &Path) -> Result<Vec<CertificateDer<'static>>, RootError> {
    certs_from_pem(&read(path)?).map_err(|source| RootError::Cert { path: path.to_owned(), source })
}

fn read_key(path: &Path) -> Result<KeyPair, RootError> {
    KeyPair::from_pem(&read(path)?).map_err(|source| RootError::Key { path: path.to_owned(), source })
}

/// The signing certificate of `cert_path`, checked against `key` and for CA:TRUE.
fn signing_cert(
    cert_path: &Path,
    key_path: &Path,
    key: &KeyPair,
) -> Result<CertificateDer<'static>, RootError> {
    let mut certs = read_certs(cert_path)?;
    let cert = match certs.len() {
        1 => certs.remove(0),
        found => return Err(RootError::NotOneCert { path: cert_path.to_owned(), found }),
    };
    let cert_error = |e: x509_parser::nom::Err<x509_parser::error::X509Error>| RootError::Cert {
        path: cert_path.to_owned(),
        source: CertError::Parse(e.to_string()),
    };
    let (_, parsed) = X509Certificate::from_der(&cert).map_err(cert_error)?;
    if parsed.public_key().subject_public_key.data.as_ref() != key.public_key_raw() {
        return Err(RootError::KeyMismatch { cert: cert_path.to_owned(), key: key_path.to_owned() });
    }
    if !parsed.is_ca() {
        return Err(RootError::NotCa { path: cert_path.to_owned() });
    }
    Ok(cert)
}

fn authority(
    cert_path: &Path,
    cert: &CertificateDer<'_>,
    key: KeyPair,
    intermediates: Vec<CertificateDer<'static>>,
    trust: TrustBundle,
) -> Result<Authority, RootError> {
    Authority::new(cert, key, intermediates, trust)
        .map_err(|source| RootError::Cert { path: cert_path.to_owned(), source })
}

fn plug_in(dir: &Path) -> Result<Authority, RootError> {
    let (cert_path, key_path) = (dir.join(CA_CERT_FILE), dir.join(CA_KEY_FILE));
    let key = read_key(&key_path)?;
    let cert = signing_cert(&cert_path, &key_path, &key)?;
    let roots = read_certs(&dir.join(ROOT_CERT_FILE))?;
    let chain = read_certs(&dir.join(CERT_CHAIN_FILE))?;
    let trust = TrustBundle::new(roots.clone())
        .map_err(|source| RootError::Cert { path: dir.join(ROOT_CERT_FILE), source })?;
    let mut intermediates: Vec<CertificateDer<'static>> = Vec::new();
    if !roots.contains(&cert) {
        intermediates.push(cert.clone());
    }
    intermediates.extend(chain.into_iter().filter(|c| !roots.contains(c) && c != &cert));
    info!(dir = %dir.display(), intermediates = intermediates.len(), roots = roots.len(), "CA loaded plug-in certificates");
    authority(&cert_path, &cert, key, intermediates, trust)
}

fn self_signed(dir: &Path, trust_domain: &TrustDomain) -> Result<Authority, RootError> {
    let (cert_path, key_path) = (dir.join(CA_CERT_FILE), dir.join(CA_KEY_FILE));
    match (cert_path.exists(), key_path.exists()) {
        (true, true) => {
            warn_if_readable_by_others(&key_path);
            let key = read_key(&key_path)?;
            let cert = signing_cert(&cert_path, &key_path, &key)?;
            let trust = TrustBundle::new(vec![cert.clone()])
                .map_err(|source| RootError::Cert { path: cert_path.clone(), source })?;
            info!(dir = %dir.display(), "CA loaded its self-signed root");
            authority(&cert_path, &cert, key, Vec::new(), trust)
        }
        (true, false) => Err(RootError::MissingKey { dir: dir.to_owned() }),
        // No certificate was ever written, so nobody can trust a key left alone: start over.
        (false, _) => generate(dir, trust_domain),
    }
}

fn generate(dir: &Path, trust_domain: &TrustDomain) -> Result<Authority, RootError> {
    DirBuilder::new().recursive(true).mode(0o700).create(dir).map_err(io_error(dir))?;
    let (authority, key_pem) =
        Authority::generate_root(trust_domain, SELF_SIGNED_ROOT_TTL).map_err(RootError::Generate)?;
    write_atomically(&dir.join(CA_KEY_FILE), key_pem.as_bytes(), 0o600)?;
    write_atomically(&dir.join(CA_CERT_FILE), authority.trust().to_pem().as_bytes(), 0o644)?;
    info!(dir = %dir.display(), %trust_domain, "CA generated a self-signed root");
    Ok(authority)
}

/// Writes `path` through a temporary file created with `mode`, so a crash never leaves a
/// half-written file and the key is never readable by others, not even for a moment.
fn write_atomically(path: &Path, contents: &[u8], mode: u32) -> Result<(), RootError> {
    let tmp = path.with_extension("pem.tmp");
    let mut file = OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(mode)
        .open(&tmp)
        .map_err(io_error(&tmp))?;
    file.set_permissions(fs::Permissions::from_mode(mode)).map_err(io_error(&tmp))?;
    file.write_all(contents).map_err(io_error(&tmp))?;
    file.sync_all().map_err(io_error(&tmp))?;
    fs::rename(&tmp, path).map_err(io_error(path))
}

fn warn_if_readable_by_others(path: &Path) {
    if let Ok(meta) = fs::metadata(path)
        && meta.permissions().mode() & 0o077 != 0
    {
        warn!(path = %path.display(), mode = format!("{:o}", meta.permissions().mode() & 0o777), "CA key is readable by group or others; chmod 600 it");
    }
}
