//! `shimless.v1.Health`: a degraded daemon says so. Running without exitwatch (no BTF, no
//! bpffs, a pin directory bpffs refused, no privilege) is a state an operator must be able to
//! see (`shimlessctl status`), not only a line in a log at start. The answer also says what the
//! daemon holds now: containers by namespace and state, exitwatch's maps, the forward queues,
//! its latest warnings and errors.

use crate::api::shimless::v1::health_server::{Health, HealthServer};
use crate::api::shimless::v1::{StatusRequest, StatusResponse};
use std::convert::Infallible;
use std::task::{Context, Poll};
use tonic::body::Body;
use tower_service::Service;

/// What `Health/Status` answers: fixed at start, with what the daemon holds read at each call.
#[derive(Debug, Clone)]
pub struct HealthStatus {
    answer: StatusResponse,
    daemon: super::Daemon,
}

impl HealthStatus {
    /// The state of `daemon`, taken before it is turned into its router.
    ///
    /// ```no_run
    /// # fn f(daemon: task_service::daemon::Daemon) {
    /// let status = task_service::daemon::HealthStatus::of(&daemon);
    /// let served = status.around(daemon.into_router());
    /// # }
    /// ```
    pub fn of(daemon: &super::Daemon) -> HealthStatus {
        let started_at = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap_or_default()
            .as_secs();
        HealthStatus {
            answer: StatusResponse {
                kernel_exit_records: daemon.kernel_recording(),
                warnings: daemon.warnings().to_vec(),
                pid: std::process::id(),
                protocol_version: crate::version::PROTOCOL,
                version: crate::version::build(),
                started_at,
                ..Default::default()
            },
            daemon: daemon.clone(),
        }
    }

    /// Whether the daemon runs degraded (without kernel exit records), and why, as one line
    /// for its log; `None` when it is not.
    ///
    /// ```no_run
    /// # fn f(daemon: task_service::daemon::Daemon) {
    /// if let Some(line) = task_service::daemon::HealthStatus::of(&daemon).degraded() {
    ///     tracing::warn!("shimlessd: warning: {line}");
    /// }
    /// # }
    /// ```
    pub fn degraded(&self) -> Option<String> {
        (!self.answer.kernel_exit_records).then(|| {
            format!(
                "running WITHOUT exitwatch: exits that happen while shimlessd is down will be \
                 reported with 255, not their code ({})",
                if self.answer.warnings.is_empty() {
                    "no reason given".to_string()
                } else {
                    self.answer.warnings.join("; ")
                }
            )
        })
    }

    /// `service` with `shimless.v1.Health` answered beside it.
    pub fn around<S>(self, service: S) -> WithHealth<S> {
        WithHealth {
            inner: service,
            health: HealthServer::new(self),
        }
    }
}

#[tonic::async_trait]
impl Health for HealthStatus {
    async fn status(
        &self,
        _req: tonic::Request<StatusRequest>,
    ) -> Result<tonic::Response<StatusResponse>, tonic::Status> {
        let mut answer = self.answer.clone();
        self.daemon.fill_status(&mut answer);
        Ok(tonic::Response::new(answer))
    }
}

const HEALTH_PREFIX: &str = "/shimless.v1.Health/";

/// A gRPC service with `shimless.v1.Health` beside it (see [`HealthStatus::around`]).
#[derive(Debug, Clone)]
pub struct WithHealth<S> {
    inner: S,
    health: HealthServer<HealthStatus>,
}

impl<S> Service<http::Request<hyper::body::Incoming>> for WithHealth<S>
where
    S: Service<
            http::Request<hyper::body::Incoming>,
            Response = http::Response<Body>,
            Error = Infallible,
        > + Send,
    S::Future: Send + 'static,
{
    type Response = http::Response<Body>;
    type Error = Infallible;
    type Future = futures_lite::future::Boxed<Result<Self::Response, Infallible>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: http::Request<hyper::body::Incoming>) -> Self::Future {
        if req.uri().path().starts_with(HEALTH_PREFIX) {
            Box::pin(self.health.call(req))
        } else {
            Box::pin(self.inner.call(req))
        }
    }
}
