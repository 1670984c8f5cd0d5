//! The gRPC echo service (`paymesh.echo.v1.Echo`), served in h2c on `--grpc-port`.
//!
//! `Unary` answers its message; `Chat` is a bidirectional stream that answers every message as it
//! arrives and ends when the client ends its side. Every answer names the pod, so a test sees
//! which pod the mesh routed it to.

use std::pin::Pin;

use tokio::net::TcpListener;
use tokio_stream::wrappers::TcpListenerStream;
use tokio_stream::{Stream, StreamExt as _};
use tonic::{Request, Response, Status, Streaming};

use crate::proto::EchoMessage;
use crate::proto::echo_server::{Echo, EchoServer};

/// The service: stamps answers with `pod`.
#[derive(Debug, Clone)]
pub struct EchoService {
    pod: String,
}

impl EchoService {
    /// A service answering as `pod`.
    pub fn new(pod: String) -> Self {
        Self { pod }
    }

    fn answer(&self, mut message: EchoMessage) -> EchoMessage {
        message.pod.clone_from(&self.pod);
        message
    }
}

/// The response stream of `Chat`.
pub type ChatStream = Pin<Box<dyn Stream<Item = Result<EchoMessage, Status>> + Send + 'static>>;

#[tonic::async_trait]
impl Echo for EchoService {
    async fn unary(&self, request: Request<EchoMessage>) -> Result<Response<EchoMessage>, Status> {
        Ok(Response::new(self.answer(request.into_inner())))
    }

    type ChatStream = ChatStream;

    async fn chat(&self, request: Request<Streaming<EchoMessage>>) -> Result<Response<ChatStream>, Status> {
        let service = self.clone();
        let answers = request.into_inner().map(move |message| message.map(|m| service.answer(m)));
        Ok(Response::new(Box::pin(answers)))
    }
}

/// Serves `service` on the already bound `listener` until `shutdown` completes.
pub async fn serve(
    listener: TcpListener,
    service: EchoService,
    shutdown: impl Future<Output = ()> + Send,
) -> Result<(), tonic::transport::Error> {
    tonic::transport::Server::builder()
        .add_service(EchoServer::new(service))
        .serve_with_incoming_shutdown(TcpListenerStream::new(listener), shutdown)
        .await
}
