//! A client channel: HTTP/2 over a unix socket, usable by tonic-generated clients.

use futures_lite::future::Boxed;
use smol_hyper::rt::FuturesIo;
use std::path::Path;
use std::task::{Context, Poll};
use tonic::body::Body;

/// An HTTP/2 connection to a gRPC server on a unix socket, for tonic-generated clients.
///
/// [`crate::client::Client`] wraps it with the daemon's clients; another generated client takes
/// it with `with_origin(channel, "http://localhost")`: the HTTP/2 `:authority` must be a
/// valid host name (servers such as hyper's reject a socket path), and `localhost` is what
/// grpc-go, and so containerd, sends.
///
/// ```no_run
/// use task_service::api::containerd::task::v3::{task_client::TaskClient, ConnectRequest};
/// smol::block_on(async {
///     let channel = task_service::grpc::connect("/run/shimless/shimless.sock").await?;
///     let mut client = TaskClient::with_origin(channel, "http://localhost".parse().unwrap());
///     let reply = client.connect(ConnectRequest { id: "web".into() }).await?;
///     println!("{:?}", reply.into_inner());
///     Ok::<(), Box<dyn std::error::Error>>(())
/// })?;
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Debug, Clone)]
pub struct Channel {
    sender: hyper::client::conn::http2::SendRequest<Body>,
}

/// Connects to the gRPC server at the unix socket `path`; the connection is driven by a task on
/// smol's global executor and closes when every clone of the [`Channel`] is dropped.
///
/// See [`Channel`] for an example.
pub async fn connect(path: impl AsRef<Path>) -> std::io::Result<Channel> {
    let stream = smol::net::unix::UnixStream::connect(path).await?;
    let (sender, connection) = hyper::client::conn::http2::Builder::new(GlobalExecutor)
        .handshake(FuturesIo::new(stream))
        .await
        .map_err(std::io::Error::other)?;
    smol::spawn(async move {
        let _ = connection.await;
    })
    .detach();
    Ok(Channel { sender })
}

impl Channel {
    /// A channel over a connection made elsewhere (the front's link to the daemon).
    pub(crate) fn from_sender(sender: hyper::client::conn::http2::SendRequest<Body>) -> Channel {
        Channel { sender }
    }
}

impl tower_service::Service<http::Request<Body>> for Channel {
    type Response = http::Response<hyper::body::Incoming>;
    type Error = hyper::Error;
    type Future = Boxed<Result<Self::Response, Self::Error>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.sender.poll_ready(cx)
    }

    fn call(&mut self, request: http::Request<Body>) -> Self::Future {
        Box::pin(self.sender.send_request(request))
    }
}

/// Runs hyper's background futures on smol's global executor, as the connection itself.
#[derive(Debug, Clone, Copy)]
struct GlobalExecutor;

impl<F> hyper::rt::Executor<F> for GlobalExecutor
where
    F: std::future::Future + Send + 'static,
    F::Output: Send + 'static,
{
    fn execute(&self, future: F) {
        smol::spawn(future).detach();
    }
}
