//! One socket, three services: calls whose path names containerd's Events service or
//! shimless's Admin service go to that one, every other call to the Task service (which answers
//! `UNIMPLEMENTED` for unknown methods).

use super::Daemon;
use super::subscribe::Events;
use crate::api::containerd::services::events::v1::events_server::EventsServer;
use crate::api::containerd::task::v3::task_server::TaskServer;
use crate::api::shimless::v1::admin_server::AdminServer;
use std::convert::Infallible;
use std::task::{Context, Poll};
use tonic::body::Body;
use tower_service::Service;

/// The daemon's gRPC surface, for [`grpc::serve`](crate::grpc::serve): containerd's
/// `containerd.task.v3.Task`, the `Subscribe` call of `containerd.services.events.v1.Events`,
/// and shimless's own `shimless.v1.Admin`.
///
/// Made by [`Daemon::into_router`].
#[derive(Debug, Clone)]
pub struct Router {
    task: TaskServer<Daemon>,
    events: EventsServer<Events>,
    admin: AdminServer<Daemon>,
}

impl Daemon {
    /// The whole gRPC surface for [`grpc::serve`](crate::grpc::serve): the Task service with
    /// the configured message size limit, `Events/Subscribe` on the daemon's events, and the
    /// Admin service.
    ///
    /// ```no_run
    /// # fn f(daemon: task_service::daemon::Daemon) {
    /// let router = daemon.into_router();
    /// # }
    /// ```
    pub fn into_router(self) -> Router {
        let events = EventsServer::new(Events {
            bus: self.inner.events.clone(),
        });
        let admin = AdminServer::new(self.clone());
        Router {
            admin,
            task: self.into_server(),
            events,
        }
    }
}

const EVENTS_PREFIX: &str = "/containerd.services.events.v1.Events/";
const ADMIN_PREFIX: &str = "/shimless.v1.Admin/";

impl Service<http::Request<hyper::body::Incoming>> for Router {
    type Response = http::Response<Body>;
    type Error = Infallible;
    type Future = futures_lite::future::Boxed<Result<Self::Response, Infallible>>;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        // Both generated servers are always ready.
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, req: http::Request<hyper::body::Incoming>) -> Self::Future {
        let path = req.uri().path();
        if path.starts_with(EVENTS_PREFIX) {
            Box::pin(self.events.call(req))
        } else if path.starts_with(ADMIN_PREFIX) {
            Box::pin(self.admin.call(req))
        } else {
            Box::pin(self.task.call(req))
        }
    }
}
