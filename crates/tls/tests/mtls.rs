//! mTLS handshakes between configs built by `paymesh-tls`, over in-memory pipes, with
//! certificates from a throwaway rcgen CA: what each verifier accepts and refuses, and why.

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use paymesh_tls::{
    ClientAuth, Credential, CredentialStore, ExpectedIdentities, Identity, PrivateKey, TrustBundle,
    client_config, server_config,
};
use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer,
    KeyPair, KeyUsagePurpose, SanType, SerialNumber,
};
use rustls::pki_types::{CertificateDer, ServerName};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio_rustls::{TlsAcceptor, TlsConnector};

struct TestCa {
    cert: CertificateDer<'static>,
    issuer: Issuer<'static, KeyPair>,
}

impl TestCa {
    fn new(name: &str) -> Self {
        let key = KeyPair::generate().expect("key generation");
        let mut params = CertificateParams::default();
        params.distinguished_name = DistinguishedName::new();
        params.distinguished_name.push(DnType::CommonName, name);
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
        let cert = params.self_signed(&key).expect("self-signed root").der().clone();
        TestCa { cert, issuer: Issuer::new(params, key) }
    }

    fn trust(&self) -> TrustBundle {
        TrustBundle::new(vec![self.cert.clone()]).expect("root parses")
    }

    fn issue(&self, key: &PrivateKey, sans: &[&str], not_after: SystemTime) -> Vec<CertificateDer<'static>> {
        let mut params = CertificateParams::default();
        params.distinguished_name = DistinguishedName::new();
        params.subject_alt_names = sans
            .iter()
            .map(|san| match san.strip_prefix("dns:") {
                Some(dns) => SanType::DnsName(dns.try_into().expect("IA5 SAN")),
                None => SanType::URI((*san).try_into().expect("IA5 SAN")),
            })
            .collect();
        params.extended_key_usages =
            vec![ExtendedKeyUsagePurpose::ServerAuth, ExtendedKeyUsagePurpose::ClientAuth];
        params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        params.not_before = (SystemTime::now() - Duration::from_secs(3600)).into();
        params.not_after = not_after.into();
        params.serial_number = Some(SerialNumber::from_slice(&rand_serial()));
        vec![params.signed_by(key.key_pair(), &self.issuer).expect("signed leaf").der().clone()]
    }

    fn credential(&self, id: &str) -> Credential {
        let key = PrivateKey::generate().expect("key generation");
        let chain = self.issue(&key, &[id], SystemTime::now() + Duration::from_secs(3600));
        Credential::new(key, chain).expect("credential")
    }
}

fn rand_serial() -> [u8; 8] {
    let nanos =
        SystemTime::now().duration_since(SystemTime::UNIX_EPOCH).expect("after 1970").as_nanos() as u64;
    (nanos & 0x7fff_ffff_ffff_ffff).to_be_bytes()
}

fn id(s: &str) -> Identity {
    s.parse().expect("valid identity")
}

fn store(credential: Credential) -> Arc<CredentialStore> {
    let store = CredentialStore::new(credential.identity().clone());
    store.install(credential).expect("own identity installs");
    store
}

/// The outcome of one handshake plus a one-byte echo, per side; errors as text.
struct Outcome {
    server: Result<Option<Identity>, String>,
    client: Result<Option<Vec<u8>>, String>,
}

async fn handshake(server: rustls::ServerConfig, client: rustls::ClientConfig) -> Outcome {
    let (client_io, server_io) = tokio::io::duplex(64 * 1024);
    let acceptor = TlsAcceptor::from(Arc::new(server));
    let connector = TlsConnector::from(Arc::new(client));
    let server_side = async move {
        let mut tls = acceptor.accept(server_io).await.map_err(|e| e.to_string())?;
        let peer = tls
            .get_ref()
            .1
            .peer_certificates()
            .map(|certs| paymesh_tls::leaf_identity(&certs[0]).expect("peer identity"));
        let mut byte = [0u8; 1];
        tls.read_exact(&mut byte).await.map_err(|e| e.to_string())?;
        tls.write_all(&byte).await.map_err(|e| e.to_string())?;
        tls.flush().await.map_err(|e| e.to_string())?;
        Ok(peer)
    };
    let client_side = async move {
        let name = ServerName::try_from("10.0.0.1").expect("IP server name");
        let mut tls = connector.connect(name, client_io).await.map_err(|e| e.to_string())?;
        let alpn = tls.get_ref().1.alpn_protocol().map(<[u8]>::to_vec);
        tls.write_all(b"x").await.map_err(|e| e.to_string())?;
        let mut byte = [0u8; 1];
        tls.read_exact(&mut byte).await.map_err(|e| e.to_string())?;
        assert_eq!(&byte, b"x");
        Ok(alpn)
    };
    let (server, client) =
        tokio::time::timeout(Duration::from_secs(10), async { tokio::join!(server_side, client_side) })
            .await
            .expect("handshake finishes within 10 s");
    Outcome { server, client }
}

const PAYMENT: &str = "spiffe://cluster.local/ns/payments/sa/payment-service";
const ACCOUNT: &str = "spiffe://cluster.local/ns/payments/sa/account-service";

fn inbound(ca: &TestCa, credential: Credential) -> rustls::ServerConfig {
    server_config(store(credential), &ca.trust(), ClientAuth::Required).expect("server config")
}

fn outbound(ca: &TestCa, credential: Credential, expect: &str) -> rustls::ClientConfig {
    client_config(Some(store(credential)), &ca.trust(), ExpectedIdentities::one(id(expect)))
        .expect("client config")
}

#[tokio::test]
async fn mutual_tls_between_two_workloads_negotiates_h2_and_names_the_client() {
    let ca = TestCa::new("root");
    let outcome =
        handshake(inbound(&ca, ca.credential(ACCOUNT)), outbound(&ca, ca.credential(PAYMENT), ACCOUNT)).await;
    assert_eq!(outcome.server.expect("handshake"), Some(id(PAYMENT)));
    assert_eq!(outcome.client.expect("handshake"), Some(b"h2".to_vec()));
}

#[tokio::test]
async fn client_expecting_another_identity_refuses_the_server() {
    let ca = TestCa::new("root");
    let other = "spiffe://cluster.local/ns/payments/sa/saga-service";
    let outcome =
        handshake(inbound(&ca, ca.credential(ACCOUNT)), outbound(&ca, ca.credential(PAYMENT), other)).await;
    let err = outcome.client.expect_err("must be refused");
    assert!(
        err.contains(&format!("server identity {ACCOUNT} is not one of the expected identities {other}")),
        "{err}"
    );
    assert!(outcome.server.is_err());
}

#[tokio::test]
async fn any_of_several_expected_identities_is_accepted() {
    let ca = TestCa::new("root");
    let expected = ExpectedIdentities::any_of([id(PAYMENT), id(ACCOUNT)]).expect("non-empty");
    let client =
        client_config(Some(store(ca.credential(PAYMENT))), &ca.trust(), expected).expect("client config");
    let outcome = handshake(inbound(&ca, ca.credential(ACCOUNT)), client).await;
    assert_eq!(outcome.server.expect("handshake"), Some(id(PAYMENT)));
    assert!(ExpectedIdentities::any_of([]).is_none());
}

#[tokio::test]
async fn server_refuses_a_client_certificate_from_another_root() {
    let ca = TestCa::new("root");
    let rogue = TestCa::new("rogue root");
    let client = client_config(
        Some(store(rogue.credential(PAYMENT))),
        &ca.trust(),
        ExpectedIdentities::one(id(ACCOUNT)),
    )
    .expect("client config");
    let outcome = handshake(inbound(&ca, ca.credential(ACCOUNT)), client).await;
    let err = outcome.server.expect_err("must be refused");
    assert!(err.contains("UnknownIssuer"), "{err}");
    assert!(outcome.client.is_err());
}

#[tokio::test]
async fn server_refuses_a_client_without_certificate() {
    let ca = TestCa::new("root");
    let client =
        client_config(None, &ca.trust(), ExpectedIdentities::one(id(ACCOUNT))).expect("client config");
    let outcome = handshake(inbound(&ca, ca.credential(ACCOUNT)), client).await;
    let err = outcome.server.expect_err("must be refused");
    assert!(err.contains("peer sent no certificates"), "{err}");
}

#[tokio::test]
async fn server_refuses_a_client_of_another_trust_domain() {
    let ca = TestCa::new("root");
    let foreign = "spiffe://other.domain/ns/payments/sa/payment-service";
    let outcome =
        handshake(inbound(&ca, ca.credential(ACCOUNT)), outbound(&ca, ca.credential(foreign), ACCOUNT)).await;
    let err = outcome.server.expect_err("must be refused");
    assert!(
        err.contains(&format!("client identity {foreign} is not in trust domain cluster.local")),
        "{err}"
    );
}

#[tokio::test]
async fn optional_client_auth_lets_a_client_without_certificate_in() {
    let ca = TestCa::new("root");
    let server = server_config(store(ca.credential(ACCOUNT)), &ca.trust(), ClientAuth::Optional)
        .expect("server config");
    let client =
        client_config(None, &ca.trust(), ExpectedIdentities::one(id(ACCOUNT))).expect("client config");
    let outcome = handshake(server, client).await;
    assert_eq!(outcome.server.expect("server handshake"), None);
    outcome.client.expect("client handshake");
}

#[tokio::test]
async fn server_certificates_without_exactly_one_spiffe_uri_are_refused() {
    let ca = TestCa::new("root");
    let cases: [(&[&str], &str); 3] = [
        (&[ACCOUNT, PAYMENT], "exactly one SPIFFE URI SAN"),
        (&["dns:account-service.payments.svc"], "exactly one SPIFFE URI SAN; found []"),
        (&["https://account-service/"], "exactly one SPIFFE URI SAN"),
    ];
    for (sans, want) in cases {
        let key = PrivateKey::generate().expect("key generation");
        let chain = ca.issue(&key, sans, SystemTime::now() + Duration::from_secs(600));
        // A store refuses such a credential outright...
        assert!(
            Credential::new(
                PrivateKey::from_pkcs8_pem(&key.to_pkcs8_pem()).expect("pem round-trips"),
                chain.clone()
            )
            .is_err()
        );
        // ...and a client refuses a server presenting it.
        let server = rustls::ServerConfig::builder_with_provider(paymesh_tls::crypto_provider())
            .with_safe_default_protocol_versions()
            .expect("TLS versions")
            .with_no_client_auth()
            .with_single_cert(chain, key.to_der())
            .expect("server cert");
        let client =
            client_config(None, &ca.trust(), ExpectedIdentities::one(id(ACCOUNT))).expect("client config");
        let err = handshake(server, client).await.client.expect_err("must be refused");
        assert!(err.contains(want), "{sans:?}: {err}");
    }
}

#[tokio::test]
async fn expired_server_certificate_is_refused() {
    let ca = TestCa::new("root");
    let key = PrivateKey::generate().expect("key generation");
    let chain = ca.issue(&key, &[ACCOUNT], SystemTime::now() - Duration::from_secs(60));
    let server = inbound(&ca, Credential::new(key, chain).expect("credential"));
    let err = handshake(server, outbound(&ca, ca.credential(PAYMENT), ACCOUNT))
        .await
        .client
        .expect_err("must be refused");
    assert!(err.contains("certificate expired"), "{err}");
}

#[tokio::test]
async fn a_server_without_credential_serves_nobody() {
    let ca = TestCa::new("root");
    let empty = CredentialStore::new(id(ACCOUNT));
    let server = server_config(empty, &ca.trust(), ClientAuth::Required).expect("server config");
    let outcome = handshake(server, outbound(&ca, ca.credential(PAYMENT), ACCOUNT)).await;
    assert!(outcome.server.expect_err("must be refused").contains("no server certificate chain resolved"));
}

#[tokio::test]
async fn store_installs_only_its_own_identity_and_new_handshakes_see_the_new_certificate() {
    let ca = TestCa::new("root");
    let first = ca.credential(ACCOUNT);
    let first_serial = first.leaf().serial.clone();
    let account = store(first);
    let err = account.install(ca.credential(PAYMENT)).expect_err("must be refused").to_string();
    assert!(err.contains(&format!("credential is for {PAYMENT}, but this store serves {ACCOUNT}")), "{err}");
    assert_eq!(account.current().expect("installed").leaf().serial, first_serial);

    let second = ca.credential(ACCOUNT);
    let second_serial = second.leaf().serial.clone();
    assert_ne!(second_serial, first_serial);
    account.install(second).expect("same identity installs");
    let server =
        server_config(Arc::clone(&account), &ca.trust(), ClientAuth::Required).expect("server config");
    let client = outbound(&ca, ca.credential(PAYMENT), ACCOUNT);
    let (client_io, server_io) = tokio::io::duplex(64 * 1024);
    let server_task =
        tokio::spawn(async move { TlsAcceptor::from(Arc::new(server)).accept(server_io).await });
    let name = ServerName::try_from("10.0.0.1").expect("IP server name");
    let tls = TlsConnector::from(Arc::new(client)).connect(name, client_io).await.expect("client handshake");
    let presented = &tls.get_ref().1.peer_certificates().expect("server certificate")[0];
    assert_eq!(paymesh_tls::LeafInfo::parse(presented).expect("leaf parses").serial, second_serial);
    server_task.await.expect("server task").expect("server handshake");
}

#[test]
fn credential_refuses_a_chain_issued_for_another_key() {
    let ca = TestCa::new("root");
    let key = PrivateKey::generate().expect("key generation");
    let chain = ca.issue(&key, &[ACCOUNT], SystemTime::now() + Duration::from_secs(60));
    let err = Credential::new(PrivateKey::generate().expect("key generation"), chain)
        .expect_err("must be refused")
        .to_string();
    assert_eq!(err, format!("certificate for {ACCOUNT} does not match the private key"));
    assert_eq!(
        Credential::new(key, vec![]).expect_err("must be refused").to_string(),
        "empty certificate chain"
    );
}

#[test]
fn trust_bundle_verifies_chains_and_names_the_identity() {
    let ca = TestCa::new("root");
    let rogue = TestCa::new("rogue");
    let credential = ca.credential(PAYMENT);
    assert_eq!(
        ca.trust().verify(credential.chain(), SystemTime::now()).expect("chain verifies"),
        id(PAYMENT)
    );
    let err =
        rogue.trust().verify(credential.chain(), SystemTime::now()).expect_err("must be refused").to_string();
    assert!(err.contains("UnknownIssuer"), "{err}");
    let later = SystemTime::now() + Duration::from_secs(7200);
    assert!(
        ca.trust()
            .verify(credential.chain(), later)
            .expect_err("must be refused")
            .to_string()
            .contains("certificate expired")
    );
    let pem = ca.trust().to_pem();
    assert_eq!(TrustBundle::from_pem(&pem).expect("bundle round-trips").certs(), ca.trust().certs());
    assert!(TrustBundle::from_pem("not pem").is_err());
    let debug = format!("{credential:?}");
    assert!(debug.contains(PAYMENT) && debug.contains("<redacted>"), "{debug}");
    assert!(credential.refresh_at() > credential.leaf().not_before);
    assert!(credential.refresh_at() < credential.leaf().not_after);
}
