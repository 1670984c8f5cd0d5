//! Workload-to-workload mTLS with certificates the CA really issued: `paymesh-tls` inbound and
//! outbound configs over real sockets, what they refuse, and credential rotation under an open
//! connection.

#[path = "support/harness.rs"]
mod harness;

use harness::{ACCOUNT, Harness, PAYMENT, connect, echo, echo_server, id, next_accepted, store};
use paymesh_tls::{ClientAuth, ExpectedIdentities, LeafInfo, client_config, server_config};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

const SAGA: &str = "spiffe://cluster.local/ns/payments/sa/saga-service";

#[tokio::test]
async fn two_issued_certificates_make_an_mtls_connection() {
    let ca = Harness::start(|_| {}).await;
    let account = store(ca.bootstrap(ACCOUNT, None).await);
    let payment = store(ca.bootstrap(PAYMENT, None).await);
    let trust = ca.ca.trust_bundle();
    let (addr, mut reports, _server) =
        echo_server(server_config(account, trust, ClientAuth::Required).expect("server config")).await;
    let client =
        client_config(Some(payment), trust, ExpectedIdentities::one(id(ACCOUNT))).expect("client config");
    let mut tls = connect(client, addr).await.expect("handshake");
    assert_eq!(echo(&mut tls, b"pay 10 EUR").await.expect("echo"), b"pay 10 EUR");
    assert_eq!(next_accepted(&mut reports).await, Ok(Some(id(PAYMENT))));
    assert_eq!(tls.get_ref().1.alpn_protocol(), Some(&b"h2"[..]));
    let server_leaf = &tls.get_ref().1.peer_certificates().expect("server certificate")[0];
    assert_eq!(LeafInfo::parse(server_leaf).expect("leaf").identity, id(ACCOUNT));
}

#[tokio::test]
async fn a_client_certificate_from_another_root_is_refused() {
    let ca = Harness::start(|_| {}).await;
    let rogue = Harness::start(|_| {}).await;
    let account = store(ca.bootstrap(ACCOUNT, None).await);
    let impostor = store(rogue.bootstrap(PAYMENT, None).await);
    let trust = ca.ca.trust_bundle();
    let (addr, mut reports, _server) =
        echo_server(server_config(account, trust, ClientAuth::Required).expect("server config")).await;
    let client =
        client_config(Some(impostor), trust, ExpectedIdentities::one(id(ACCOUNT))).expect("client config");
    // TLS 1.3: the client may finish its half before the server's verdict arrives.
    let outcome = match connect(client, addr).await {
        Ok(mut tls) => echo(&mut tls, b"x").await.map(|_| ()),
        Err(e) => Err(e),
    };
    assert!(outcome.is_err(), "the impostor got an echo");
    let refused = next_accepted(&mut reports).await.expect_err("server refuses");
    assert!(refused.contains("invalid peer certificate"), "{refused}");
}

#[tokio::test]
async fn a_server_with_an_unexpected_identity_is_refused() {
    let ca = Harness::start(|_| {}).await;
    let account = store(ca.bootstrap(ACCOUNT, None).await);
    let payment = store(ca.bootstrap(PAYMENT, None).await);
    let trust = ca.ca.trust_bundle();
    let (addr, _reports, _server) =
        echo_server(server_config(account, trust, ClientAuth::Required).expect("server config")).await;
    let client =
        client_config(Some(payment), trust, ExpectedIdentities::one(id(SAGA))).expect("client config");
    let err = connect(client, addr).await.expect_err("wrong server").to_string();
    assert!(
        err.contains(&format!("server identity {ACCOUNT} is not one of the expected identities {SAGA}")),
        "{err}"
    );
}

#[tokio::test]
async fn plaintext_to_the_mtls_port_is_refused() {
    let ca = Harness::start(|_| {}).await;
    let account = store(ca.bootstrap(ACCOUNT, None).await);
    let (addr, mut reports, _server) = echo_server(
        server_config(account, ca.ca.trust_bundle(), ClientAuth::Required).expect("server config"),
    )
    .await;
    let mut tcp = tokio::net::TcpStream::connect(addr).await.expect("connect");
    tcp.write_all(b"GET / HTTP/1.1\r\nHost: account-service\r\n\r\n").await.expect("write");
    let mut answer = Vec::new();
    let read =
        tokio::time::timeout(harness::DEADLINE, tcp.read_to_end(&mut answer)).await.expect("closed in time");
    assert!(read.is_err() || !String::from_utf8_lossy(&answer).contains("HTTP/1.1"), "{answer:?}");
    let refused = next_accepted(&mut reports).await.expect_err("not TLS");
    assert!(refused.contains("corrupt message") || refused.contains("InvalidContentType"), "{refused}");
}

#[tokio::test]
async fn rotating_the_server_credential_keeps_open_connections_and_serves_new_ones_the_new_certificate() {
    let ca = Harness::start(|_| {}).await;
    let first = ca.bootstrap(ACCOUNT, None).await;
    let first_serial = first.leaf().serial.clone();
    let account = store(first);
    let payment = store(ca.bootstrap(PAYMENT, None).await);
    let trust = ca.ca.trust_bundle();
    let server = server_config(account.clone(), trust, ClientAuth::Required).expect("server config");
    let (addr, mut reports, _server) = echo_server(server).await;
    let client =
        || client_config(Some(payment.clone()), trust, ExpectedIdentities::one(id(ACCOUNT))).expect("client");

    let mut open = connect(client(), addr).await.expect("first connection");
    assert_eq!(echo(&mut open, b"before").await.expect("echo"), b"before");
    assert_eq!(next_accepted(&mut reports).await, Ok(Some(id(PAYMENT))));

    // Rotate over mTLS with the current certificate, and install the result.
    let rotated = ca.client(Some(account.clone())).certify(&id(ACCOUNT), None).await.expect("rotation");
    let second_serial = rotated.leaf().serial.clone();
    assert_ne!(second_serial, first_serial);
    account.install(rotated).expect("same identity installs");

    assert_eq!(echo(&mut open, b"during").await.expect("open connection survives"), b"during");
    let mut fresh = connect(client(), addr).await.expect("new connection");
    assert_eq!(echo(&mut fresh, b"new").await.expect("echo"), b"new");
    let serial_of = |tls: &tokio_rustls::client::TlsStream<tokio::net::TcpStream>| {
        LeafInfo::parse(&tls.get_ref().1.peer_certificates().expect("server certificate")[0])
            .expect("leaf")
            .serial
    };
    assert_eq!(serial_of(&fresh), second_serial, "new handshakes get the new certificate");
    assert_eq!(serial_of(&open), first_serial, "the open connection keeps its session");
    assert_eq!(echo(&mut open, b"after").await.expect("still open"), b"after");
}
