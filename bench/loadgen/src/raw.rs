//! Operations below HTTP: a TCP echo round trip on a kept-open connection (optionally opened
//! through an HTTP `CONNECT` tunnel, which is how an app reaches a TCP service through paymesh's
//! outbound port), a new TCP connection per HTTP/1.1 request (connection set-up cost through a
//! pair), and a full TLS handshake with a client certificate (the cost of mTLS accepts).
//!
//! The TLS client does not verify the server's chain or name: it measures the server's cost of
//! accepting a handshake, and mesh server certificates carry SPIFFE IDs rather than DNS names.
//! TLS session resumption is off, so every handshake is a full one.

use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::WebPkiSupportedAlgorithms;
use rustls::pki_types::pem::PemObject as _;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName, UnixTime};
use rustls::{ClientConfig, DigitallySignedStruct, SignatureScheme};
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;

/// Most bytes read while waiting for a CONNECT answer's header or a closed connection's reply.
const MAX_REPLY: usize = 64 * 1024;

async fn dial(addr: SocketAddr) -> Result<TcpStream, String> {
    let tcp = TcpStream::connect(addr).await.map_err(|e| format!("connect {addr}: {e}"))?;
    let _ = tcp.set_nodelay(true);
    Ok(tcp)
}

/// Sends `CONNECT authority` and reads the answer's header; anything but 200 is an error.
async fn connect_tunnel(tcp: &mut TcpStream, authority: &str) -> Result<(), String> {
    let head = format!("CONNECT {authority} HTTP/1.1\r\nHost: {authority}\r\n\r\n");
    tcp.write_all(head.as_bytes()).await.map_err(|e| format!("writing CONNECT: {e}"))?;
    let mut reply = Vec::with_capacity(256);
    let mut byte = [0u8; 1];
    while !reply.ends_with(b"\r\n\r\n") {
        if reply.len() >= MAX_REPLY {
            return Err("CONNECT answer header too long".to_owned());
        }
        match tcp.read(&mut byte).await {
            Ok(0) => return Err("connection closed before the CONNECT answer".to_owned()),
            Ok(_) => reply.push(byte[0]),
            Err(e) => return Err(format!("reading CONNECT answer: {e}")),
        }
    }
    let status_line = reply.split(|b| *b == b'\r').next().unwrap_or_default();
    if status_line.starts_with(b"HTTP/1.1 200") || status_line.starts_with(b"HTTP/1.0 200") {
        Ok(())
    } else {
        Err(format!("CONNECT answered {}", String::from_utf8_lossy(status_line)))
    }
}

/// Writes a payload and reads the same bytes back, on a connection kept open between calls.
pub struct TcpEcho {
    addr: SocketAddr,
    tunnel: Option<String>,
    payload: Vec<u8>,
    buf: Vec<u8>,
    stream: Option<TcpStream>,
}

impl TcpEcho {
    /// A worker echoing `size` bytes via `addr`, through `CONNECT tunnel` when given.
    pub fn new(addr: SocketAddr, tunnel: Option<String>, size: usize) -> Self {
        let payload = (0..size.max(1)).map(|i| b'a' + (i % 26) as u8).collect::<Vec<_>>();
        let buf = vec![0; payload.len()];
        Self { addr, tunnel, payload, buf, stream: None }
    }

    /// Connects (and tunnels) now, so set-up is not part of the first measured call.
    pub async fn connect(&mut self) -> Result<(), String> {
        let mut tcp = dial(self.addr).await?;
        if let Some(authority) = &self.tunnel {
            connect_tunnel(&mut tcp, authority).await?;
        }
        self.stream = Some(tcp);
        Ok(())
    }

    async fn round_trip(&mut self) -> Result<(), String> {
        if self.stream.is_none() {
            self.connect().await?;
        }
        let Some(tcp) = self.stream.as_mut() else { return Err("not connected".to_owned()) };
        tcp.write_all(&self.payload).await.map_err(|e| format!("tcp write: {e}"))?;
        tcp.read_exact(&mut self.buf).await.map_err(|e| format!("tcp read: {e}"))?;
        if self.buf == self.payload { Ok(()) } else { Err("echo differs from what was sent".to_owned()) }
    }
}

impl crate::engine::Op for TcpEcho {
    async fn call(&mut self) -> Result<(), String> {
        let outcome = self.round_trip().await;
        if outcome.is_err() {
            self.stream = None;
        }
        outcome
    }
}

/// One new TCP connection per request: `GET path` with `Connection: close`, read to EOF.
pub struct ConnectPerRequest {
    addr: SocketAddr,
    request: Vec<u8>,
    reply: Vec<u8>,
}

impl ConnectPerRequest {
    /// A worker sending `GET path` with Host `authority` to `addr`.
    pub fn new(addr: SocketAddr, authority: &str, path: &str) -> Self {
        let request =
            format!("GET {path} HTTP/1.1\r\nHost: {authority}\r\nConnection: close\r\n\r\n").into_bytes();
        Self { addr, request, reply: Vec::with_capacity(4096) }
    }
}

impl crate::engine::Op for ConnectPerRequest {
    async fn call(&mut self) -> Result<(), String> {
        let mut tcp = dial(self.addr).await?;
        tcp.write_all(&self.request).await.map_err(|e| format!("writing request: {e}"))?;
        self.reply.clear();
        let mut limited = (&mut tcp).take(MAX_REPLY as u64);
        limited.read_to_end(&mut self.reply).await.map_err(|e| format!("reading reply: {e}"))?;
        if self.reply.starts_with(b"HTTP/1.1 2") || self.reply.starts_with(b"HTTP/1.0 2") {
            Ok(())
        } else {
            let line = self.reply.split(|b| *b == b'\r').next().unwrap_or_default();
            Err(format!("answer {:?}", String::from_utf8_lossy(line)))
        }
    }
}

/// Client certificate, key and handshake parameters for [`TlsHandshake`].
#[derive(Debug, Clone)]
pub struct TlsParams {
    /// PEM file with the client certificate (and chain).
    pub cert: std::path::PathBuf,
    /// PEM file with the client's private key.
    pub key: std::path::PathBuf,
    /// SNI sent.
    pub sni: String,
    /// ALPN protocols offered, in order.
    pub alpn: Vec<String>,
}

/// A full TLS 1.3 handshake with a client certificate, then close_notify and wait for the
/// server to close: the server has then verified the certificate (a rejected one answers with
/// an alert, which counts as an error).
pub struct TlsHandshake {
    addr: SocketAddr,
    connector: TlsConnector,
    sni: ServerName<'static>,
}

impl TlsHandshake {
    /// Builds the shared client configuration; every worker clones the result.
    pub fn new(addr: SocketAddr, params: &TlsParams) -> Result<Self, String> {
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let certs = load_certs(&params.cert)?;
        let key = PrivateKeyDer::from_pem_file(&params.key)
            .map_err(|e| format!("{}: {e}", params.key.display()))?;
        let mut config = ClientConfig::builder_with_provider(Arc::clone(&provider))
            .with_protocol_versions(&[&rustls::version::TLS13])
            .map_err(|e| format!("TLS versions: {e}"))?
            .dangerous()
            .with_custom_certificate_verifier(Arc::new(AnyServer(provider.signature_verification_algorithms)))
            .with_client_auth_cert(certs, key)
            .map_err(|e| format!("client certificate: {e}"))?;
        config.resumption = rustls::client::Resumption::disabled();
        config.alpn_protocols = params.alpn.iter().map(|p| p.as_bytes().to_vec()).collect();
        let sni = ServerName::try_from(params.sni.clone()).map_err(|e| format!("SNI {}: {e}", params.sni))?;
        Ok(Self { addr, connector: TlsConnector::from(Arc::new(config)), sni })
    }

    /// Another worker sharing the configuration.
    pub fn worker(&self) -> Self {
        Self { addr: self.addr, connector: self.connector.clone(), sni: self.sni.clone() }
    }
}

impl crate::engine::Op for TlsHandshake {
    async fn call(&mut self) -> Result<(), String> {
        let tcp = dial(self.addr).await?;
        let mut tls =
            self.connector.connect(self.sni.clone(), tcp).await.map_err(|e| format!("handshake: {e}"))?;
        tls.shutdown().await.map_err(|e| format!("close_notify: {e}"))?;
        let mut sink = Vec::new();
        match (&mut tls).take(MAX_REPLY as u64).read_to_end(&mut sink).await {
            Ok(_) => Ok(()),
            Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => Ok(()),
            Err(e) => Err(format!("server answered: {e}")),
        }
    }
}

fn load_certs(path: &Path) -> Result<Vec<CertificateDer<'static>>, String> {
    let certs = CertificateDer::pem_file_iter(path)
        .map_err(|e| format!("{}: {e}", path.display()))?
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| format!("{}: {e}", path.display()))?;
    if certs.is_empty() { Err(format!("{}: no certificate", path.display())) } else { Ok(certs) }
}

/// Accepts any server certificate but checks the handshake signatures (see the module doc).
#[derive(Debug)]
struct AnyServer(WebPkiSupportedAlgorithms);

impl ServerCertVerifier for AnyServer {
    fn verify_server_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(message, cert, dss, &self.0)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(message, cert, dss, &self.0)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.supported_schemes()
    }
}
