//! Where the CA's key comes from: a self-signed root persisted in the state directory, or
//! Istio's plug-in CA files (made here with `openssl`, an RSA intermediate under an EC root,
//! as `istio/tools/certs` makes them).

#[path = "support/harness.rs"]
mod harness;

use std::os::unix::fs::PermissionsExt;
use std::path::Path;

use harness::{Harness, PAYMENT, TempDir, id, openssl, store};
use paymesh_control::ca::{Ca, CaConfig, CaError, RootError, RootSource};
use paymesh_tls::{TrustBundle, TrustDomain, cert_to_pem};

fn run(dir: &Path, args: &[&str]) {
    let (ok, out) = openssl(dir, args);
    assert!(ok, "openssl {args:?}: {out}");
}

/// `dir/cacerts` with `root-cert.pem` (EC P-256 root), `ca-cert.pem` + `ca-key.pem` (RSA-2048
/// intermediate), `cert-chain.pem` (intermediate, root). Returns the `cacerts` path.
fn plug_in_files(dir: &Path) -> std::path::PathBuf {
    let cacerts = dir.join("cacerts");
    std::fs::create_dir_all(&cacerts).expect("cacerts dir");
    let ec = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes"];
    let mut root = vec!["req", "-x509"];
    root.extend(ec);
    root.extend([
        "-keyout",
        "root-key.pem",
        "-out",
        "root-cert.pem",
        "-days",
        "10",
        "-subj",
        "/O=Istio/CN=Root CA",
        "-addext",
        "basicConstraints=critical,CA:TRUE",
        "-addext",
        "keyUsage=critical,keyCertSign,cRLSign",
    ]);
    run(&cacerts, &root);
    run(
        &cacerts,
        &[
            "req",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-keyout",
            "ca-key.pem",
            "-out",
            "ca.csr",
            "-subj",
            "/O=Istio/CN=Intermediate CA/L=cluster1",
        ],
    );
    std::fs::write(
        cacerts.join("ext.cnf"),
        "basicConstraints=critical,CA:TRUE,pathlen:0\nkeyUsage=critical,keyCertSign,cRLSign,digitalSignature\n\
         subjectKeyIdentifier=hash\nauthorityKeyIdentifier=keyid:always\n",
    )
    .expect("ext.cnf");
    run(
        &cacerts,
        &[
            "x509",
            "-req",
            "-in",
            "ca.csr",
            "-CA",
            "root-cert.pem",
            "-CAkey",
            "root-key.pem",
            "-CAcreateserial",
            "-out",
            "ca-cert.pem",
            "-days",
            "5",
            "-extfile",
            "ext.cnf",
        ],
    );
    let chain = [
        std::fs::read_to_string(cacerts.join("ca-cert.pem")).expect("ca-cert"),
        std::fs::read_to_string(cacerts.join("root-cert.pem")).expect("root-cert"),
    ]
    .concat();
    std::fs::write(cacerts.join("cert-chain.pem"), chain).expect("cert-chain");
    cacerts
}

fn ca_from(cacerts: &Path) -> Result<Ca, CaError> {
    Ca::new(CaConfig::new(TrustDomain::default(), RootSource::PlugIn { cacerts_dir: cacerts.to_owned() }))
}

#[tokio::test]
async fn plug_in_ca_issues_leaves_that_chain_to_the_plug_in_root() {
    let dir = TempDir::new("plugin");
    let cacerts = plug_in_files(dir.path());
    let ca = Harness::start_with(dir, RootSource::PlugIn { cacerts_dir: cacerts.clone() }, |_| {}).await;
    let root_pem = std::fs::read_to_string(cacerts.join("root-cert.pem")).expect("root");
    assert_eq!(ca.ca.trust_bundle().certs(), TrustBundle::from_pem(&root_pem).expect("root").certs());

    let credential = ca.bootstrap(PAYMENT, None).await;
    assert_eq!(credential.chain().len(), 2, "leaf + intermediate; the root travels separately");
    let intermediate = std::fs::read_to_string(cacerts.join("ca-cert.pem")).expect("ca-cert");
    assert_eq!(cert_to_pem(&credential.chain()[1]), intermediate);

    std::fs::write(cacerts.join("leaf.pem"), cert_to_pem(&credential.chain()[0])).expect("leaf");
    let (ok, out) = openssl(
        &cacerts,
        &[
            "verify",
            "-CAfile",
            "root-cert.pem",
            "-untrusted",
            "ca-cert.pem",
            "-purpose",
            "sslserver",
            "leaf.pem",
        ],
    );
    assert!(ok && out.contains("leaf.pem: OK"), "{out}");
    let (ok, issuer) = openssl(&cacerts, &["x509", "-in", "leaf.pem", "-noout", "-issuer"]);
    assert!(ok && issuer.contains("CN = Intermediate CA"), "{issuer}");
    // Without the intermediate the leaf does not verify: it really is signed by the plug-in CA.
    let (ok, out) = openssl(&cacerts, &["verify", "-CAfile", "root-cert.pem", "leaf.pem"]);
    assert!(!ok, "{out}");

    // Rotation under the plug-in root (the client presents leaf + intermediate).
    let rotated = ca.client(Some(store(credential))).certify(&id(PAYMENT), None).await.expect("rotation");
    assert_eq!(rotated.identity(), &id(PAYMENT));
    ca.stop().await;
}

#[test]
fn plug_in_files_that_do_not_fit_together_are_refused() {
    let dir = TempDir::new("plugin-bad");
    let cacerts = plug_in_files(dir.path());

    // A PKCS#1 key: ring reads PKCS#8 only, and the error says how to convert.
    run(&cacerts, &["rsa", "-in", "ca-key.pem", "-traditional", "-out", "ca-key-pkcs1.pem"]);
    std::fs::rename(cacerts.join("ca-key.pem"), cacerts.join("ca-key-pkcs8.pem")).expect("rename");
    std::fs::copy(cacerts.join("ca-key-pkcs1.pem"), cacerts.join("ca-key.pem")).expect("copy");
    let err = ca_from(&cacerts).expect_err("PKCS#1").to_string();
    assert!(
        err.contains("ca-key.pem: not a usable private key") && err.contains("openssl pkcs8 -topk8"),
        "{err}"
    );

    // The key of another certificate.
    std::fs::copy(cacerts.join("root-key.pem"), cacerts.join("ca-key.pem")).expect("copy");
    let err = ca_from(&cacerts).expect_err("mismatch").to_string();
    assert!(err.contains("ca-cert.pem does not belong to the key in") && err.contains("ca-key.pem"), "{err}");
    std::fs::copy(cacerts.join("ca-key-pkcs8.pem"), cacerts.join("ca-key.pem")).expect("restore");
    ca_from(&cacerts).expect("the matching files load");

    // A root-cert.pem that is not the intermediate's root: the self-check catches it.
    let other = TempDir::new("plugin-other");
    let other_cacerts = plug_in_files(other.path());
    std::fs::copy(other_cacerts.join("root-cert.pem"), cacerts.join("root-cert.pem")).expect("copy");
    let err = ca_from(&cacerts).expect_err("foreign root");
    assert!(matches!(err, CaError::SelfCheck(_)), "{err}");
    // Both roots are named "Root CA": webpki finds the name, then the signature fails.
    assert!(err.to_string().contains("does not verify against the mesh roots"), "{err}");

    // A missing file names itself.
    std::fs::remove_file(cacerts.join("cert-chain.pem")).expect("remove");
    let err = ca_from(&cacerts).expect_err("missing file").to_string();
    assert!(err.contains("cert-chain.pem: No such file"), "{err}");
}

#[test]
fn self_signed_root_is_generated_once_and_kept_with_a_private_key() {
    let dir = TempDir::new("self-signed");
    let state = dir.path().join("state/ca");
    let config =
        || CaConfig::new(TrustDomain::default(), RootSource::SelfSigned { state_dir: state.clone() });
    let first = Ca::new(config()).expect("generated");
    let mode = |name: &str| std::fs::metadata(state.join(name)).expect("exists").permissions().mode() & 0o777;
    assert_eq!(mode("ca-key.pem"), 0o600);
    assert_eq!(mode("ca-cert.pem"), 0o644);
    assert_eq!(std::fs::metadata(&state).expect("dir").permissions().mode() & 0o777, 0o700);
    let key = std::fs::read_to_string(state.join("ca-key.pem")).expect("key");
    assert!(key.starts_with("-----BEGIN PRIVATE KEY-----"));
    assert!(!format!("{first:?}").contains(key.lines().nth(1).expect("key body")));

    let second = Ca::new(config()).expect("loaded");
    assert_eq!(first.trust_bundle().certs(), second.trust_bundle().certs(), "the same root after a restart");
    let (ok, text) =
        openssl(&state, &["x509", "-in", "ca-cert.pem", "-noout", "-subject", "-ext", "basicConstraints"]);
    assert!(ok && text.contains("O = cluster.local") && text.contains("CA:TRUE"), "{text}");

    // A key left alone (crash before the certificate was written) starts a new root.
    std::fs::remove_file(state.join("ca-cert.pem")).expect("remove cert");
    let third = Ca::new(config()).expect("regenerated");
    assert_ne!(third.trust_bundle().certs(), first.trust_bundle().certs());
    // A certificate whose key is gone is an error, never silently replaced.
    std::fs::remove_file(state.join("ca-key.pem")).expect("remove key");
    let err = Ca::new(config()).expect_err("missing key");
    assert!(matches!(err, CaError::Root(RootError::MissingKey { .. })), "{err}");
}

#[test]
fn ttl_settings_are_checked() {
    let dir = TempDir::new("ttl");
    let mut config =
        CaConfig::new(TrustDomain::default(), RootSource::SelfSigned { state_dir: dir.path().join("ca") });
    config.default_ttl = std::time::Duration::from_millis(500);
    let err = Ca::new(config).expect_err("sub-second TTL").to_string();
    assert_eq!(
        err,
        "CA configuration: default TTL 0.5s must be at least 1s and at most the maximum 7776000s"
    );
}
