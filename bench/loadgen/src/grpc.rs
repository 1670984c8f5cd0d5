//! gRPC operations against `paymesh.echo.v1.Echo` (paymesh-echo's `--grpc-port`): a `Unary`
//! call, or one message and its answer on a long-lived bidirectional `Chat` stream.
//!
//! Channels dial the target address but carry the target's authority in `:authority`, so a
//! sidecar's outbound port can route them by service name. A call succeeds when the answer
//! carries the sequence number that was sent.

use std::net::SocketAddr;

use hyper_util::rt::TokioIo;
use paymesh_echo::proto::EchoMessage;
use paymesh_echo::proto::echo_client::EchoClient;
use tokio::net::TcpStream;
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tonic::Streaming;
use tonic::transport::{Channel, Endpoint};

use crate::engine::Op;
use crate::http::Target;

/// Opens `connections` channels (each one h2c connection) to `target`.
async fn channels(target: &Target, connections: usize) -> Result<Vec<Channel>, String> {
    let endpoint = Endpoint::from_shared(format!("http://{}", target.authority))
        .map_err(|e| format!("bad authority {}: {e}", target.authority))?;
    let mut out = Vec::with_capacity(connections);
    for _ in 0..connections.max(1) {
        let addr: SocketAddr = target.addr;
        let channel = endpoint
            .clone()
            .connect_with_connector(tower::service_fn(move |_| async move {
                let tcp = TcpStream::connect(addr).await?;
                let _ = tcp.set_nodelay(true);
                Ok::<_, std::io::Error>(TokioIo::new(tcp))
            }))
            .await
            .map_err(|e| format!("gRPC connect {addr}: {e}"))?;
        out.push(channel);
    }
    Ok(out)
}

fn message(seq: u64, payload: &str) -> EchoMessage {
    EchoMessage { seq, payload: payload.to_owned(), pod: String::new() }
}

/// A status with its source chain (tonic's message alone hides e.g. the h2 reason).
fn describe(status: &tonic::Status) -> String {
    let mut out = format!("{} {}", status.code(), status.message());
    let mut source = std::error::Error::source(status);
    while let Some(e) = source {
        out.push_str(": ");
        out.push_str(&e.to_string());
        source = e.source();
    }
    out
}

fn check(sent: u64, answer: &EchoMessage) -> Result<(), String> {
    if answer.seq == sent { Ok(()) } else { Err(format!("answer seq {} for {sent}", answer.seq)) }
}

/// A `Unary` call per operation.
pub struct Unary {
    client: EchoClient<Channel>,
    payload: String,
    seq: u64,
}

impl Unary {
    /// `workers` operations spread over `connections` channels to `target`.
    pub async fn open(
        target: &Target,
        connections: usize,
        workers: usize,
        payload: &str,
    ) -> Result<Vec<Self>, String> {
        let channels = channels(target, connections).await?;
        Ok((0..workers)
            .map(|i| Self {
                client: EchoClient::new(channels[i % channels.len()].clone()),
                payload: payload.to_owned(),
                seq: 0,
            })
            .collect())
    }
}

impl Op for Unary {
    async fn call(&mut self) -> Result<(), String> {
        self.seq += 1;
        let answer = self
            .client
            .unary(message(self.seq, &self.payload))
            .await
            .map_err(|s| format!("unary: {}", describe(&s)))?;
        check(self.seq, answer.get_ref())
    }
}

/// One message and its answer per operation, on a `Chat` stream opened before the run.
pub struct Chat {
    sender: mpsc::Sender<EchoMessage>,
    answers: Streaming<EchoMessage>,
    payload: String,
    seq: u64,
}

impl Chat {
    /// Opens one `Chat` stream per worker, spread over `connections` channels to `target`.
    pub async fn open(
        target: &Target,
        connections: usize,
        workers: usize,
        payload: &str,
    ) -> Result<Vec<Self>, String> {
        let channels = channels(target, connections).await?;
        let mut out = Vec::with_capacity(workers);
        for i in 0..workers {
            let mut client = EchoClient::new(channels[i % channels.len()].clone());
            // The stream opens with a first message already queued and its answer read here,
            // unmeasured: some proxies (nginx's grpc_pass) reset a stream whose request body
            // has not started yet.
            let (sender, receiver) = mpsc::channel(1);
            sender.send(message(0, payload)).await.map_err(|_| "chat stream closed".to_owned())?;
            let mut answers = client
                .chat(ReceiverStream::new(receiver))
                .await
                .map_err(|s| format!("opening chat: {}", describe(&s)))?
                .into_inner();
            match answers.message().await {
                Ok(Some(first)) => check(0, &first)?,
                Ok(None) => return Err("chat stream ended before its first answer".to_owned()),
                Err(s) => return Err(format!("chat: {}", describe(&s))),
            }
            out.push(Self { sender, answers, payload: payload.to_owned(), seq: 0 });
        }
        Ok(out)
    }
}

impl Op for Chat {
    async fn call(&mut self) -> Result<(), String> {
        self.seq += 1;
        self.sender
            .send(message(self.seq, &self.payload))
            .await
            .map_err(|_| "chat stream closed".to_owned())?;
        match self.answers.message().await {
            Ok(Some(answer)) => check(self.seq, &answer),
            Ok(None) => Err("chat stream ended".to_owned()),
            Err(s) => Err(format!("chat: {}", describe(&s))),
        }
    }
}
