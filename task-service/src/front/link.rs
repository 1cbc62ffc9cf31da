//! The front's one HTTP/2 connection to the daemon, made again whenever the daemon comes back.
//!
//! Each new connection first asks the daemon its protocol version (`Health/Status`): a daemon
//! of a newer protocol than this front's ([`PROTOCOL`]) gets no call; every call is answered
//! `FAILED_PRECONDITION` naming both versions, at once rather than at its deadline.

use crate::api::shimless::v1::StatusRequest;
use crate::api::shimless::v1::health_client::HealthClient;
use crate::version::{Newer, PROTOCOL};
use smol_hyper::rt::{FuturesIo, SmolExecutor};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tonic::body::Body;

type Sender = hyper::client::conn::http2::SendRequest<Body>;

/// A shared connection to the daemon: every call is a stream on it.
pub(super) struct Link {
    path: PathBuf,
    ex: Arc<smol::Executor<'static>>,
    current: async_lock::Mutex<Option<Sender>>,
    /// Whether a connection was ever made (the next one is a reconnect).
    connected_before: std::sync::atomic::AtomicBool,
}

impl Link {
    pub fn new(path: PathBuf, ex: Arc<smol::Executor<'static>>) -> Link {
        Link {
            path,
            ex,
            current: async_lock::Mutex::new(None),
            connected_before: std::sync::atomic::AtomicBool::new(false),
        }
    }

    /// The executor the link's tasks run on.
    pub fn executor(&self) -> &smol::Executor<'static> {
        &self.ex
    }

    /// A sender on a live connection, connecting (and waiting for the daemon, until `until`) if
    /// there is none.
    pub async fn sender(&self, until: Instant) -> Result<Sender, tonic::Status> {
        let mut slot = futures_lite::future::or(async { Some(self.current.lock().await) }, async {
            smol::Timer::at(until).await;
            None
        })
        .await
        .ok_or_else(|| self.absent("another call is already waiting for it"))?;
        let mut pause = Duration::from_millis(10);
        let mut held = None;
        loop {
            if let Some(sender) = slot.as_ref()
                && !sender.is_closed()
            {
                return Ok(sender.clone());
            }
            *slot = None;
            match self.connect().await {
                Ok(sender) => {
                    if self
                        .connected_before
                        .swap(true, std::sync::atomic::Ordering::Relaxed)
                    {
                        crate::metrics::FRONT.reconnects.inc();
                    }
                    *slot = Some(sender.clone());
                    return Ok(sender);
                }
                Err(Refused::Newer(newer)) => {
                    let why = format!(
                        "{newer}; this shimless-front speaks version {}: upgrade it \
                         (`shimlessctl upgrade`) to a build that speaks version {}",
                        newer.supported, newer.found
                    );
                    tracing::warn!("shimless-front: {why}");
                    return Err(tonic::Status::failed_precondition(why));
                }
                Err(Refused::Io(e)) => {
                    held.get_or_insert_with(|| crate::metrics::FRONT.hold());
                    if Instant::now() + pause >= until {
                        return Err(self.absent(&e.to_string()));
                    }
                    smol::Timer::after(pause).await;
                    pause = (pause * 2).min(Duration::from_millis(200));
                }
            }
        }
    }

    /// Drops the current connection if it has closed (after a call on it failed).
    pub async fn forget_if_closed(&self) {
        let mut slot = self.current.lock().await;
        if slot.as_ref().is_some_and(Sender::is_closed) {
            *slot = None;
        }
    }

    async fn connect(&self) -> Result<Sender, Refused> {
        let stream = smol::net::unix::UnixStream::connect(&self.path).await?;
        let (sender, connection) =
            hyper::client::conn::http2::Builder::new(SmolExecutor::new(self.ex.clone()))
                .timer(smol_hyper::rt::SmolTimer::new())
                .handshake(FuturesIo::new(stream))
                .await
                .map_err(std::io::Error::other)?;
        self.ex
            .spawn(async move {
                let _ = connection.await;
            })
            .detach();
        self.check_protocol(&sender).await?;
        Ok(sender)
    }

    /// Refuses a daemon whose protocol is newer than this front's. A daemon that does not
    /// serve `Health` (none does not) would be version 1.
    async fn check_protocol(&self, sender: &Sender) -> Result<(), Refused> {
        let channel = crate::grpc::Channel::from_sender(sender.clone());
        let mut health = HealthClient::with_origin(channel, crate::client::origin());
        let found = match health.status(StatusRequest {}).await {
            Ok(status) => status.into_inner().protocol_version,
            Err(status) if status.code() == tonic::Code::Unimplemented => 1,
            Err(status) => return Err(Refused::Io(std::io::Error::other(status))),
        };
        let what = format!(
            "the front-daemon protocol of shimlessd at {}",
            self.path.display()
        );
        Newer::check(&what, found, PROTOCOL).map_err(Refused::Newer)
    }

    fn absent(&self, why: &str) -> tonic::Status {
        tonic::Status::unavailable(format!(
            "shimlessd is not answering on {} ({why}); the front waited for it until the call's \
             deadline",
            self.path.display()
        ))
    }
}

/// Why a connection to the daemon was not made.
enum Refused {
    /// The daemon is not there (yet): try again.
    Io(std::io::Error),
    /// It speaks a newer protocol: no use trying again.
    Newer(Newer),
}

impl From<std::io::Error> for Refused {
    fn from(e: std::io::Error) -> Refused {
        Refused::Io(e)
    }
}
