//! The CA endpoint over real sockets: issuing with bootstrap tokens, rotation over mTLS, and
//! every refusal with its gRPC code and reason. Issued chains are checked with `openssl verify`.

#[path = "support/harness.rs"]
mod harness;

use std::time::{Duration, SystemTime};

use harness::{ACCOUNT, DEADLINE, Harness, PAYMENT, TempDir, id, openssl, store};
use paymesh_api::ca::pb::IstioCertificateRequest;
use paymesh_api::ca::pb::istio_certificate_service_client::IstioCertificateServiceClient;
use paymesh_api::ca::{BootstrapToken, CaClient, CaClientError};
use paymesh_tls::{Credential, MAX_CSR_BYTES, PrivateKey, cert_to_pem};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tonic::{Code, Request};

/// Writes the chain and the root into `dir` and runs `openssl verify` on the leaf.
fn openssl_verify(dir: &TempDir, credential: &Credential, root_pem: &str) -> (bool, String) {
    let (leaf, intermediates) = credential.chain().split_first().expect("leaf");
    std::fs::write(dir.path().join("leaf.pem"), cert_to_pem(leaf)).expect("write leaf");
    std::fs::write(dir.path().join("root.pem"), root_pem).expect("write root");
    let untrusted: String = intermediates.iter().map(cert_to_pem).collect();
    let mut args = vec!["verify", "-CAfile", "root.pem", "-purpose", "sslclient"];
    if !untrusted.is_empty() {
        std::fs::write(dir.path().join("untrusted.pem"), untrusted).expect("write intermediates");
        args.extend(["-untrusted", "untrusted.pem"]);
    }
    args.push("leaf.pem");
    openssl(dir.path(), &args)
}

fn refused(result: Result<Credential, CaClientError>) -> (Code, String) {
    match result {
        Err(CaClientError::Refused(status)) => (status.code(), status.message().to_owned()),
        other => panic!("expected a refusal, got {other:?}"),
    }
}

fn request_with_token(csr: String, token: &BootstrapToken) -> Request<IstioCertificateRequest> {
    let mut request = Request::new(IstioCertificateRequest { csr, validity_duration: 0, metadata: None });
    let value = format!("Bearer {}", token.expose()).parse().expect("ascii metadata");
    request.metadata_mut().insert("authorization", value);
    request
}

#[tokio::test]
async fn a_valid_token_gets_a_24h_certificate_that_openssl_verifies() {
    let ca = Harness::start(|_| {}).await;
    let before = SystemTime::now();
    let credential = ca.bootstrap(PAYMENT, None).await;
    assert_eq!(credential.identity(), &id(PAYMENT));
    assert_eq!(credential.chain().len(), 1, "self-signed root: the leaf alone");
    let lifetime = credential.leaf().not_after.duration_since(before).expect("in the future");
    assert!(lifetime > Duration::from_secs(24 * 3600 - 60) && lifetime <= Duration::from_secs(24 * 3600 + 1));
    assert!(credential.leaf().not_before < before, "backdated for clock skew");

    let dir = TempDir::new("verify");
    let (ok, out) = openssl_verify(&dir, &credential, &ca.ca.trust_bundle().to_pem());
    assert!(ok, "openssl verify: {out}");
    assert!(out.contains("leaf.pem: OK"), "{out}");
    let (ok, text) = openssl(dir.path(), &["x509", "-in", "leaf.pem", "-noout", "-text"]);
    assert!(ok, "{text}");
    assert!(text.contains(&format!("URI:{PAYMENT}")), "{text}");
    assert!(text.contains("X509v3 Subject Alternative Name: critical"), "{text}");
    assert!(text.contains("CA:FALSE"), "{text}");
    assert!(text.contains("TLS Web Server Authentication, TLS Web Client Authentication"), "{text}");
    ca.stop().await;
}

#[tokio::test]
async fn the_response_lists_leaf_then_root_one_pem_each() {
    let ca = Harness::start(|_| {}).await;
    let key = PrivateKey::generate().expect("key");
    let csr = key.csr(&id(ACCOUNT)).expect("csr").as_pem().to_owned();
    let response = ca.client(None).call(request_with_token(csr, &ca.token(ACCOUNT))).await.expect("issued");
    assert_eq!(response.cert_chain.len(), 2);
    assert!(
        response.cert_chain.iter().all(|pem| pem.starts_with("-----BEGIN CERTIFICATE-----")
            && pem.ends_with("-----END CERTIFICATE-----\n"))
    );
    assert_eq!(response.cert_chain[1], ca.ca.trust_bundle().to_pem());
    assert!(response.root_cert.is_none());
}

#[tokio::test]
async fn a_csr_for_another_identity_is_permission_denied() {
    let ca = Harness::start(|_| {}).await;
    let key = PrivateKey::generate().expect("key");
    let csr = key.csr(&id(ACCOUNT)).expect("csr").as_pem().to_owned();
    let status =
        ca.client(None).call(request_with_token(csr, &ca.token(PAYMENT))).await.expect_err("other identity");
    assert_eq!(status.code(), Code::PermissionDenied);
    assert!(
        status.message().contains(&format!("CSR asks for [\"{ACCOUNT}\"], but the caller is {PAYMENT}")),
        "{status:?}"
    );
}

#[tokio::test]
async fn a_reused_token_is_unauthenticated() {
    let ca = Harness::start(|_| {}).await;
    let token = ca.token(PAYMENT);
    let client = ca.client(None);
    client.certify(&id(PAYMENT), Some(&token)).await.expect("first use");
    let (code, message) = refused(client.certify(&id(PAYMENT), Some(&token)).await);
    assert_eq!(code, Code::Unauthenticated);
    assert_eq!(message, "bootstrap token of pod payments/payment-service-0 was already used");
}

#[tokio::test]
async fn forged_or_missing_credentials_are_unauthenticated() {
    let ca = Harness::start(|_| {}).await;
    let real = ca.token(PAYMENT);
    let (head, last) = real.expose().split_at(real.expose().len() - 1);
    let forged = BootstrapToken::new(format!("{head}{}", if last == "0" { "1" } else { "0" }));
    let client = ca.client(None);
    assert_eq!(
        refused(client.certify(&id(PAYMENT), Some(&forged)).await),
        (Code::Unauthenticated, "bootstrap token is unknown".to_owned())
    );
    assert_eq!(
        refused(client.certify(&id(PAYMENT), None).await),
        (Code::Unauthenticated, "no client certificate and no `authorization: Bearer` token".to_owned())
    );
    // The guesses did not burn the real token.
    assert_eq!(client.certify(&id(PAYMENT), Some(&real)).await.expect("real token").identity(), &id(PAYMENT));
}

#[tokio::test]
async fn rotation_over_mtls_gives_a_new_certificate_for_the_same_identity_only() {
    let ca = Harness::start(|_| {}).await;
    let first = ca.bootstrap(PAYMENT, None).await;
    let first_serial = first.leaf().serial.clone();
    let current = store(first);
    let client = ca.client(Some(current.clone()));
    let second = client.certify(&id(PAYMENT), None).await.expect("rotation");
    assert_eq!(second.identity(), &id(PAYMENT));
    assert_ne!(second.leaf().serial, first_serial);
    assert_ne!(second.key().public_key_raw(), current.current().expect("installed").key().public_key_raw());
    // The certificate proves payment-service; it can't get account-service a certificate.
    let (code, message) = refused(client.certify(&id(ACCOUNT), None).await);
    assert_eq!(code, Code::PermissionDenied);
    assert!(message.contains(&format!("but the caller is {PAYMENT}")), "{message}");
    // A token for another identity alongside the certificate changes nothing: the certificate wins.
    let (code, _) = refused(client.certify(&id(ACCOUNT), Some(&ca.token(ACCOUNT))).await);
    assert_eq!(code, Code::PermissionDenied);
}

#[tokio::test]
async fn an_expired_certificate_cannot_rotate() {
    let ca = Harness::start(|_| {}).await;
    let short = ca.bootstrap(PAYMENT, Some(Duration::from_secs(2))).await;
    let not_after = short.leaf().not_after;
    let current = store(short);
    // Open a connection while the certificate is valid: it rotates fine.
    let client = ca.client(Some(current.clone()));
    client.certify(&id(PAYMENT), None).await.expect("rotation while valid");
    // Wait (bounded) until the certificate has expired.
    let deadline = SystemTime::now() + DEADLINE;
    while SystemTime::now() <= not_after + Duration::from_secs(1) {
        assert!(SystemTime::now() < deadline, "certificate did not expire in time");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // The same HTTP/2 connection outlived the certificate: the CA checks the clock per request.
    let (code, message) = refused(client.certify(&id(PAYMENT), None).await);
    assert_eq!(code, Code::Unauthenticated);
    assert!(message.contains(&format!("client certificate of {PAYMENT} is not valid now")), "{message}");
    // A new connection with the expired certificate fails the TLS handshake.
    let fresh = ca.client(Some(current));
    let err = fresh.certify(&id(PAYMENT), None).await.expect_err("expired");
    // TLS 1.3 clients learn of the refusal after their side of the handshake: the call then
    // fails as a broken transport rather than a gRPC status from the CA.
    let broken = |code| matches!(code, Code::Unavailable | Code::Unknown);
    assert!(matches!(err, CaClientError::Refused(ref status) if broken(status.code())), "{err}");
}

#[tokio::test]
async fn requested_validity_is_honoured_up_to_the_maximum() {
    let ca = Harness::start(|config| {
        config.max_ttl = Duration::from_secs(3600);
        config.default_ttl = Duration::from_secs(1800);
    })
    .await;
    let credential = ca.bootstrap(PAYMENT, Some(Duration::from_secs(600))).await;
    let lifetime = credential.leaf().not_after.duration_since(SystemTime::now()).expect("future");
    assert!(lifetime <= Duration::from_secs(600) && lifetime > Duration::from_secs(590), "{lifetime:?}");
    let client = CaClient::new(ca.client_config(Some(Duration::from_secs(7200))), None).expect("client");
    let (code, message) = refused(client.certify(&id(PAYMENT), Some(&ca.token(PAYMENT))).await);
    assert_eq!(code, Code::InvalidArgument);
    assert_eq!(message, "requested validity of 7200s is longer than the maximum of 3600s");
}

#[tokio::test]
async fn garbage_and_oversized_requests_fail_cleanly_and_the_ca_keeps_serving() {
    let ca = Harness::start(|_| {}).await;
    // Raw garbage on the TLS port: the handshake fails, the connection closes.
    let mut raw = tokio::net::TcpStream::connect(ca.addr).await.expect("connect");
    raw.write_all(b"\x16\x03\x01\xff\xffGARBAGE-GARBAGE-GARBAGE\r\n\r\n").await.expect("write");
    let mut sink = Vec::new();
    let read = tokio::time::timeout(DEADLINE, raw.read_to_end(&mut sink)).await.expect("closed in time");
    assert!(read.is_err() || sink.len() < 64, "server answered garbage with {} bytes", sink.len());

    // Plaintext gRPC to the TLS port fails.
    let plain = tonic::transport::Endpoint::from_shared(format!("http://{}", ca.addr))
        .expect("uri")
        .timeout(DEADLINE);
    let outcome = match plain.connect().await {
        Ok(channel) => {
            let mut grpc = IstioCertificateServiceClient::new(channel);
            grpc.create_certificate(IstioCertificateRequest::default()).await.map(|_| ())
        }
        Err(e) => Err(tonic::Status::unavailable(e.to_string())),
    };
    assert!(outcome.is_err(), "plaintext call succeeded");

    let client = ca.client(None);
    // Not PEM at all.
    let status = client
        .call(request_with_token("\u{1}\u{2}not a csr".to_owned(), &ca.token(PAYMENT)))
        .await
        .expect_err("garbage CSR");
    assert_eq!(status.code(), Code::InvalidArgument);
    assert!(status.message().starts_with("CSR is not one PEM `CERTIFICATE REQUEST` block"), "{status:?}");
    // A CSR over the CSR limit but under the message limit.
    let big = format!(
        "-----BEGIN CERTIFICATE REQUEST-----\n{}\n-----END CERTIFICATE REQUEST-----\n",
        "A".repeat(MAX_CSR_BYTES)
    );
    let status =
        client.call(request_with_token(big.clone(), &ca.token(PAYMENT))).await.expect_err("oversized CSR");
    assert_eq!(status.code(), Code::InvalidArgument);
    assert_eq!(status.message(), format!("CSR is {} bytes; at most {MAX_CSR_BYTES} are accepted", big.len()));
    // A message over the gRPC limit.
    let huge = "A".repeat(256 * 1024);
    let status =
        client.call(request_with_token(huge, &ca.token(PAYMENT))).await.expect_err("oversized message");
    assert_eq!(status.code(), Code::OutOfRange, "{status:?}");

    // Others are still served, on the same client and on a new one.
    assert_eq!(ca.bootstrap(ACCOUNT, None).await.identity(), &id(ACCOUNT));
    assert_eq!(
        client.certify(&id(PAYMENT), Some(&ca.token(PAYMENT))).await.expect("still serving").identity(),
        &id(PAYMENT)
    );
    ca.stop().await;
}
