//! Clients of shimless's gRPC services (the daemon's, and the front's, which forwards them):
//! [`Client`] connects once to a unix socket and hands out the Task, Admin and Events clients
//! over that one HTTP/2 connection; [`namespaced`] puts a message in a containerd namespace.
//!
//! `shimlessctl`, the shim's `delete`, the tests, the benches and the demo all talk to
//! `shimlessd` through it.
//!
//! ```no_run
//! use task_service::api::containerd::task::v3::ConnectRequest;
//! use task_service::client::{Client, namespaced};
//! smol::block_on(async {
//!     let client = Client::connect("/run/shimless/shimless.sock").await?;
//!     let request = namespaced("k8s.io", ConnectRequest { id: "web".into() });
//!     let reply = client.task().connect(request).await?;
//!     println!("{:?}", reply.into_inner());
//!     Ok::<(), Box<dyn std::error::Error>>(())
//! })?;
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

use crate::api::containerd::services::events::v1::events_client;
use crate::api::containerd::task::v3::task_client;
use crate::api::shimless::v1::{admin_client, front_client, health_client};
use crate::grpc::{self, Channel};
use std::path::Path;
use tonic::Request;

/// containerd's `containerd.task.v3.Task` client.
pub type TaskClient = task_client::TaskClient<Channel>;
/// shimless's `shimless.v1.Admin` client (`List`, `RegisterPublisher`).
pub type AdminClient = admin_client::AdminClient<Channel>;
/// shimless's `shimless.v1.Front` client (`Listen`: the socket of a namespace), served by the
/// front only.
pub type FrontClient = front_client::FrontClient<Channel>;
/// shimless's `shimless.v1.Health` client (`Status`).
pub type HealthClient = health_client::HealthClient<Channel>;
/// containerd's `containerd.services.events.v1.Events` client (the daemon serves `Subscribe`).
pub type EventsClient = events_client::EventsClient<Channel>;

/// One connection to a shimless socket, and the clients of its services.
///
/// ```no_run
/// # async fn f() -> std::io::Result<()> {
/// let client = task_service::client::Client::connect("/run/shimless/shimless.sock").await?;
/// let (mut task, mut admin) = (client.task(), client.admin());
/// # Ok(()) }
/// ```
#[derive(Debug, Clone)]
pub struct Client {
    channel: Channel,
}

impl Client {
    /// Connects to the gRPC server on the unix socket `socket` (see [`grpc::connect`]).
    pub async fn connect(socket: impl AsRef<Path>) -> std::io::Result<Client> {
        Ok(Client {
            channel: grpc::connect(socket).await?,
        })
    }

    /// The Task client.
    pub fn task(&self) -> TaskClient {
        TaskClient::with_origin(self.channel.clone(), origin())
    }

    /// The Admin client.
    pub fn admin(&self) -> AdminClient {
        AdminClient::with_origin(self.channel.clone(), origin())
    }

    /// The Events client.
    pub fn events(&self) -> EventsClient {
        EventsClient::with_origin(self.channel.clone(), origin())
    }

    /// The Front client (the front's own socket only).
    pub fn front(&self) -> FrontClient {
        FrontClient::with_origin(self.channel.clone(), origin())
    }

    /// The Health client (`shimless.v1.Health`: whether the daemon runs degraded).
    pub fn health(&self) -> HealthClient {
        HealthClient::with_origin(self.channel.clone(), origin())
    }

    /// The connection itself, for another generated client.
    pub fn channel(&self) -> &Channel {
        &self.channel
    }
}

/// The origin every client uses: the HTTP/2 `:authority` must be a host name (servers such as
/// hyper's reject a socket path), and `localhost` is what grpc-go, and so containerd, sends.
///
/// ```
/// assert_eq!(task_service::client::origin().host(), Some("localhost"));
/// ```
pub fn origin() -> http::Uri {
    http::Uri::from_static("http://localhost")
}

/// `msg` as a request in containerd namespace `ns`: its `containerd-namespace` header (a name
/// that cannot be a header value is left out, and the daemon takes a request without one as
/// namespace `default`'s).
///
/// ```
/// let req = task_service::client::namespaced("k8s.io", ());
/// assert_eq!(req.metadata().get("containerd-namespace").unwrap(), "k8s.io");
/// ```
pub fn namespaced<T>(ns: &str, msg: T) -> Request<T> {
    let mut req = Request::new(msg);
    if let Ok(ns) = ns.parse() {
        req.metadata_mut().insert("containerd-namespace", ns);
    }
    req
}
