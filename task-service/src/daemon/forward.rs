//! Task events to containerd: `containerd.services.events.v1.Events/Forward` on the gRPC address
//! that each container's `containerd-shim-shimless-v2 start` registered.
//!
//! One forwarding task per containerd address sends that containerd's events one at a time, in
//! publication order (so in order per container), and retries each with backoff while
//! containerd is away: an exit that happens while containerd restarts is delivered when it is
//! back. Registrations are kept in small files beside the state directory, so a restarted daemon
//! still knows where each container's events go.

use crate::api::containerd::services::events::v1 as pb;
use crate::events::{EventBus, Received, TaskEvent};
use crate::ids::{ContainerId, Namespace};
use crate::lock::lock;
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

type Key = (Namespace, ContainerId);

/// Where each container's events go, persisted as `<dir>/<namespace>/<id>` holding the address.
#[derive(Debug)]
pub(crate) struct Publishers {
    dir: PathBuf,
    map: Mutex<HashMap<Key, String>>,
}

impl Publishers {
    /// The registrations of `state_dir`'s daemon, read back from `<state_dir>.publishers/`.
    pub fn open(state_dir: &Path) -> Publishers {
        let mut name = state_dir.file_name().unwrap_or_default().to_os_string();
        name.push(".publishers");
        let dir = state_dir.with_file_name(name);
        let mut map = HashMap::new();
        for ns_entry in std::fs::read_dir(&dir).into_iter().flatten().flatten() {
            let Ok(ns) = Namespace::new(ns_entry.file_name().to_string_lossy()) else {
                continue;
            };
            for entry in std::fs::read_dir(ns_entry.path())
                .into_iter()
                .flatten()
                .flatten()
            {
                let Ok(id) = ContainerId::new(entry.file_name().to_string_lossy()) else {
                    continue;
                };
                if let Ok(address) = std::fs::read_to_string(entry.path()) {
                    map.insert((ns.clone(), id), address);
                }
            }
        }
        Publishers {
            dir,
            map: Mutex::new(map),
        }
    }

    /// Records that (`ns`, `id`)'s events go to `address` (a socket path).
    pub fn register(&self, ns: &Namespace, id: &ContainerId, address: &str) -> std::io::Result<()> {
        let ns_dir = self.dir.join(ns.as_str());
        std::fs::create_dir_all(&ns_dir)?;
        let tmp = ns_dir.join(format!(".{}.tmp", id.as_str()));
        std::fs::write(&tmp, address)?;
        std::fs::rename(&tmp, ns_dir.join(id.as_str()))?;
        lock(&self.map).insert((ns.clone(), id.clone()), address.to_string());
        Ok(())
    }

    fn get(&self, ns: &Namespace, id: &str) -> Option<String> {
        let id = ContainerId::new(id).ok()?;
        lock(&self.map).get(&(ns.clone(), id)).cloned()
    }

    fn remove(&self, ns: &Namespace, id: &str) {
        let Ok(id) = ContainerId::new(id) else { return };
        let _ = std::fs::remove_file(self.dir.join(ns.as_str()).join(id.as_str()));
        lock(&self.map).remove(&(ns.clone(), id));
    }
}

/// Subscribes to `bus` (call it before anything is published that must reach containerd: the
/// bus keeps what is published before its first subscriber) and forwards every event of a
/// container with a registered publisher, for as long as the bus lives.
pub(crate) fn spawn(
    bus: &EventBus,
    publishers: Arc<Publishers>,
    ex: &Arc<smol::Executor<'static>>,
) {
    let mut sub = bus.subscribe();
    let ex2 = ex.clone();
    ex.spawn(async move {
        // One unbounded queue per containerd: while a containerd is away its events wait here.
        let mut queues: HashMap<String, smol::channel::Sender<pb::Envelope>> = HashMap::new();
        while let Some(received) = sub.next().await {
            let envelope = match received {
                Received::Event(envelope) => envelope,
                Received::Lagged(n) => {
                    eprintln!("shimlessd: event forwarder fell {n} events behind; they are lost");
                    continue;
                }
            };
            let (ns, id) = (&envelope.namespace, envelope.event.container_id());
            let Some(address) = publishers.get(ns, id) else {
                continue;
            };
            if matches!(envelope.event, TaskEvent::Delete(_)) {
                publishers.remove(ns, id);
            }
            let queue = queues.entry(address.clone()).or_insert_with(|| {
                let (tx, rx) = smol::channel::unbounded();
                ex2.spawn(drain(address.clone(), rx)).detach();
                tx
            });
            let _ = queue.try_send(envelope.to_wire());
        }
    })
    .detach();
}

/// Sends the events of `queue` to containerd at `address`, oldest first, each until it is taken.
async fn drain(address: String, queue: smol::channel::Receiver<pb::Envelope>) {
    let path = address
        .strip_prefix("unix://")
        .unwrap_or(&address)
        .to_string();
    let mut client = None;
    let mut backoff = Duration::from_millis(50);
    while let Ok(envelope) = queue.recv().await {
        loop {
            if client.is_none() {
                match crate::grpc::connect(&path).await {
                    Ok(channel) => {
                        client = Some(pb::events_client::EventsClient::with_origin(
                            channel,
                            http::Uri::from_static("http://localhost"),
                        ))
                    }
                    Err(_) => {
                        smol::Timer::after(backoff).await;
                        backoff = (backoff * 2).min(Duration::from_secs(2));
                        continue;
                    }
                }
            }
            let Some(events) = client.as_mut() else {
                continue;
            };
            let mut request = tonic::Request::new(pb::ForwardRequest {
                envelope: Some(envelope.clone()),
            });
            request.set_timeout(Duration::from_secs(10));
            match events.forward(request).await {
                Ok(_) => {
                    backoff = Duration::from_millis(50);
                    break;
                }
                Err(status) if retryable(status.code()) => {
                    client = None;
                    smol::Timer::after(backoff).await;
                    backoff = (backoff * 2).min(Duration::from_secs(2));
                }
                Err(status) => {
                    // containerd refused this event for good (a bad namespace or topic):
                    // retrying cannot help, and holding it would hold every later event.
                    eprintln!(
                        "shimlessd: containerd at {address} refused a {} event: {}",
                        envelope.topic,
                        status.message()
                    );
                    break;
                }
            }
        }
    }
}

fn retryable(code: tonic::Code) -> bool {
    matches!(
        code,
        tonic::Code::Unavailable
            | tonic::Code::Unknown
            | tonic::Code::DeadlineExceeded
            | tonic::Code::Cancelled
            | tonic::Code::ResourceExhausted
            | tonic::Code::Aborted
            | tonic::Code::Internal
    )
}
