//! Task events to containerd: `containerd.services.events.v1.Events/Forward` on the gRPC address
//! that each container's `containerd-shim-shimless-v2 start` registered.
//!
//! Each event is appended to its containerd's persisted outbox (see `outbox`) before it is
//! queued, and marked taken once containerd accepted it: a daemon killed with events not yet
//! taken sends them after its restart, in order, before anything new. One forwarding task per
//! containerd address sends that containerd's events one at a time, in publication order (so
//! in order per container), and retries each with backoff while containerd is away: an exit
//! that happens while containerd restarts is delivered when it is back. Both are bounded: a
//! containerd's outbox holds [`QUEUE_EVENTS`] events not taken (one that stays away longer
//! loses the newest, each loss logged, rather than growing without limit), and each attempt
//! (connect and `Forward`) has [`DEADLINE`], enforced here: a containerd that accepts and
//! never answers costs a retry, not its whole queue forever. Registrations are kept in small
//! files beside the state directory, so a restarted daemon still knows where each
//! container's events go.
//!
//! containerd 2.x runs `<shim> start` only for a pod's sandbox: for the pod's other containers it
//! reuses the sandbox's bootstrap (version 3), writes the sandbox's ID into the container's
//! bundle (`sandbox`) and calls `Create` directly. [`Publishers::adopt`] gives such a container
//! its sandbox's registration (or, failing that, the last one of its namespace), so its events
//! reach containerd whatever path created it.

use super::outbox::{ExitKey, LoadError, Outbox};
use crate::api::containerd::events::TaskExit;
use crate::api::containerd::services::events::v1 as pb;
use crate::events::TaskEvent;
use crate::ids::{ContainerId, Namespace};
use crate::lock::lock;
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

type Key = (Namespace, ContainerId);

/// How many events wait for one containerd while it is away: a restart's worth of exits of a
/// full node, many times over.
pub(crate) const QUEUE_EVENTS: usize = 16_384;

/// How long one attempt to hand containerd an event may take, connecting included (sent as
/// the call's `grpc-timeout` too).
pub(crate) const DEADLINE: Duration = Duration::from_secs(10);

/// The file, in a namespace's directory, holding the address its last `start` registered (not a
/// valid container ID: those never begin with a dot).
const NAMESPACE_FILE: &str = ".namespace";

/// Where each container's events go, persisted as `<dir>/<namespace>/<id>` holding the address,
/// and the last address registered in each namespace (`<dir>/<namespace>/.namespace`).
#[derive(Debug)]
pub(crate) struct Publishers {
    dir: PathBuf,
    map: Mutex<HashMap<Key, String>>,
    namespaces: Mutex<HashMap<Namespace, String>>,
}

impl Publishers {
    /// The registrations of `state_dir`'s daemon, read back from `<state_dir>.publishers/`.
    pub fn open(state_dir: &Path) -> Publishers {
        let mut name = state_dir.file_name().unwrap_or_default().to_os_string();
        name.push(".publishers");
        let dir = state_dir.with_file_name(name);
        let mut map = HashMap::new();
        let mut namespaces = HashMap::new();
        for ns_entry in std::fs::read_dir(&dir).into_iter().flatten().flatten() {
            let Ok(ns) = Namespace::new(ns_entry.file_name().to_string_lossy()) else {
                continue;
            };
            if let Ok(address) = std::fs::read_to_string(ns_entry.path().join(NAMESPACE_FILE)) {
                namespaces.insert(ns.clone(), address);
            }
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
            namespaces: Mutex::new(namespaces),
        }
    }

    /// Records that (`ns`, `id`)'s events go to `address` (a socket path), and that `address`
    /// is now the namespace's containerd.
    pub fn register(&self, ns: &Namespace, id: &ContainerId, address: &str) -> std::io::Result<()> {
        self.write(ns, id.as_str(), address)?;
        self.write(ns, NAMESPACE_FILE, address)?;
        lock(&self.map).insert((ns.clone(), id.clone()), address.to_string());
        lock(&self.namespaces).insert(ns.clone(), address.to_string());
        Ok(())
    }

    /// Gives (`ns`, `id`), which containerd is creating from `bundle`, a registration if it has
    /// none and containerd created it without `start`: containerd 2.x then names the pod's
    /// sandbox in the bundle's `sandbox` file, and the container's events go where the
    /// sandbox's go (or, if the sandbox has no registration, to the namespace's last
    /// containerd). A container with neither (one `shimlessctl` made) is left alone. Returns
    /// the address adopted.
    pub fn adopt(&self, ns: &Namespace, id: &ContainerId, bundle: &Path) -> Option<String> {
        if lock(&self.map).contains_key(&(ns.clone(), id.clone())) {
            return None;
        }
        let sandbox = std::fs::read_to_string(bundle.join("sandbox")).ok()?;
        let address = self
            .get(ns, sandbox.trim())
            .or_else(|| lock(&self.namespaces).get(ns).cloned())?;
        if let Err(e) = self.write(ns, id.as_str(), &address) {
            // Still forwarded while this daemon lives; only a restart would forget it.
            tracing::warn!(
                "shimlessd: cannot save where the events of {}/{} go: {e}",
                ns.as_str(),
                id.as_str()
            );
        }
        lock(&self.map).insert((ns.clone(), id.clone()), address.clone());
        Some(address)
    }

    /// Writes `<dir>/<ns>/<name>` through a temporary file of its own: concurrent `start`s of
    /// one namespace all write the namespace's file at once.
    fn write(&self, ns: &Namespace, name: &str, address: &str) -> std::io::Result<()> {
        static NEXT: AtomicU64 = AtomicU64::new(0);
        let ns_dir = self.dir.join(ns.as_str());
        std::fs::create_dir_all(&ns_dir)?;
        let n = NEXT.fetch_add(1, Ordering::Relaxed);
        let tmp = ns_dir.join(format!(".{name}.{n}.tmp"));
        std::fs::write(&tmp, address)?;
        std::fs::rename(&tmp, ns_dir.join(name))
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

/// The events of one containerd: its outbox, and the queue its forwarding task drains (once
/// forwarding has started).
struct Outlet {
    outbox: Outbox,
    queue: Option<smol::channel::Sender<(u64, pb::Envelope)>>,
    lost: u64,
}

/// Hands every event of a container with a registered publisher to its containerd: appended to
/// that containerd's outbox (see `outbox`), then queued, then sent by one task per containerd,
/// in order, and marked taken once containerd accepted it.
pub(crate) struct Forwarder {
    publishers: Arc<Publishers>,
    dir: PathBuf,
    outlets: Mutex<HashMap<String, Outlet>>,
    ex: std::sync::OnceLock<Arc<smol::Executor<'static>>>,
}

impl Forwarder {
    /// The forwarder of `state_dir`'s daemon, with the outboxes a previous run left in
    /// `<state_dir>.outbox/` read back (an outbox that cannot be read is renamed
    /// `*.unreadable` and logged; a record that cannot be read is skipped and logged).
    pub(crate) fn open(state_dir: &Path, publishers: Arc<Publishers>) -> Forwarder {
        let mut name = state_dir.file_name().unwrap_or_default().to_os_string();
        name.push(".outbox");
        let dir = state_dir.with_file_name(name);
        let mut outlets = HashMap::new();
        for entry in std::fs::read_dir(&dir).into_iter().flatten().flatten() {
            let path = entry.path();
            if path.extension().is_some() {
                continue; // a temporary file, or one already set aside
            }
            match Outbox::load(&path) {
                Ok((outbox, problems)) => {
                    for problem in problems {
                        tracing::warn!("shimlessd: warning: outbox {problem}");
                    }
                    let outlet = Outlet {
                        outbox,
                        queue: None,
                        lost: 0,
                    };
                    outlets.insert(outlet.outbox.address().to_string(), outlet);
                }
                Err(LoadError::Newer(newer)) => {
                    // Kept whole under a name no load reads, so that a new outbox for its
                    // containerd does not overwrite it.
                    let aside = path.with_extension(format!("newer-v{}", newer.found));
                    let _ = std::fs::rename(&path, &aside);
                    tracing::warn!(
                        "shimlessd: warning: {newer}; kept as {}, its events are not sent",
                        aside.display()
                    );
                }
                Err(e) => {
                    let aside = path.with_extension("unreadable");
                    let _ = std::fs::rename(&path, &aside);
                    tracing::warn!(
                        "shimlessd: warning: outbox {e}: its events are lost (kept as {})",
                        aside.display()
                    );
                }
            }
        }
        Forwarder {
            publishers,
            dir,
            outlets: Mutex::new(outlets),
            ex: std::sync::OnceLock::new(),
        }
    }

    /// Starts sending: first what the outboxes still hold, in order, then every event
    /// submitted. Call once.
    pub(crate) fn start(self: &Arc<Self>, ex: &Arc<smol::Executor<'static>>) {
        let _ = self.ex.set(ex.clone());
        let mut outlets = lock(&self.outlets);
        for (address, outlet) in outlets.iter_mut() {
            let queue = self.open_queue(address);
            for (seq, envelope) in outlet.outbox.pending() {
                let _ = queue.try_send((seq, envelope.clone()));
            }
            outlet.queue = Some(queue);
        }
    }

    /// Per containerd address, how many events it has not taken yet (its outbox's pending
    /// events): what a scrape reports as the forward queue.
    pub(crate) fn pending(&self) -> Vec<(String, usize)> {
        lock(&self.outlets)
            .iter()
            .map(|(address, outlet)| (address.clone(), outlet.outbox.pending_len()))
            .collect()
    }

    /// A new queue for `address`, with the task that drains it; `None` before [`start`].
    ///
    /// [`start`]: Forwarder::start
    fn open_queue(self: &Arc<Self>, address: &str) -> smol::channel::Sender<(u64, pb::Envelope)> {
        // The outbox holds at most QUEUE_EVENTS pending events, so sending never finds it full.
        let (tx, rx) = smol::channel::bounded(QUEUE_EVENTS);
        if let Some(ex) = self.ex.get() {
            let (me, address) = (self.clone(), address.to_string());
            let taken = {
                let address = address.clone();
                move |seq| me.taken(&address, seq)
            };
            ex.spawn(drain(address, rx, DEADLINE, taken)).detach();
        }
        tx
    }

    /// Hands `event` of a container of `ns` to its containerd, if it has one: appended to the
    /// outbox, then queued (each under one lock, so the queue's order is the outbox's). A
    /// full outbox loses the event, logged.
    pub(crate) fn submit(self: &Arc<Self>, ns: &Namespace, event: &TaskEvent) {
        let id = event.container_id();
        let Some(address) = self.publishers.get(ns, id) else {
            return;
        };
        if matches!(event, TaskEvent::Delete(_)) {
            self.publishers.remove(ns, id);
        }
        let envelope = crate::events::Envelope {
            timestamp: std::time::SystemTime::now(),
            namespace: ns.clone(),
            event: event.clone(),
        }
        .to_wire();
        let mut outlets = lock(&self.outlets);
        if !outlets.contains_key(&address) {
            match Outbox::create(&self.dir, &address) {
                Ok(outbox) => {
                    let outlet = Outlet {
                        outbox,
                        queue: None,
                        lost: 0,
                    };
                    outlets.insert(address.clone(), outlet);
                }
                Err(e) => {
                    crate::metrics::DAEMON.forward_dropped.inc();
                    tracing::warn!(
                        "shimlessd: cannot make the outbox of containerd at {address} in {}:                          {e}; its {} event is lost",
                        self.dir.display(),
                        envelope.topic
                    );
                    return;
                }
            }
        }
        let Some(outlet) = outlets.get_mut(&address) else {
            return;
        };
        if outlet.outbox.pending_len() >= QUEUE_EVENTS {
            outlet.lost += 1;
            crate::metrics::DAEMON.forward_dropped.inc();
            tracing::warn!(
                "shimlessd: warning: containerd at {address} has not taken {QUEUE_EVENTS}                  events; a {} event is lost ({} so far)",
                envelope.topic,
                outlet.lost
            );
            return;
        }
        let (seq, unsaved) = outlet.outbox.append(envelope.clone());
        if let Some(e) = unsaved {
            tracing::warn!(
                "shimlessd: warning: cannot save a {} event for containerd at {address}: {e}                  (sent from memory; a restart before it is taken would lose it)",
                envelope.topic
            );
        }
        if outlet.queue.is_none() && self.ex.get().is_some() {
            outlet.queue = Some(self.open_queue(&address));
        }
        if let Some(queue) = &outlet.queue {
            let _ = queue.try_send((seq, envelope));
        }
    }

    /// containerd at `address` took event `seq` (or refused it for good).
    fn taken(&self, address: &str, seq: u64) {
        if let Some(outlet) = lock(&self.outlets).get_mut(address) {
            outlet.outbox.ack(seq);
        }
    }

    /// The exit `key`, if an outbox holds it: handed over to containerd before the daemon
    /// died, so recovery must not publish it again.
    pub(crate) fn handed_over(&self, key: &ExitKey) -> Option<TaskExit> {
        lock(&self.outlets)
            .values()
            .find_map(|outlet| outlet.outbox.handed_over(key))
    }

    /// The exits `keys` are in their container's saved record now: the outboxes need not keep
    /// them as evidence.
    pub(crate) fn settle(&self, keys: &[ExitKey]) {
        let mut outlets = lock(&self.outlets);
        for outlet in outlets.values_mut() {
            for key in keys {
                outlet.outbox.settle(key);
            }
        }
    }

    /// Recovery has settled every record: no exit is kept as evidence any more.
    pub(crate) fn settle_all(&self) {
        for outlet in lock(&self.outlets).values_mut() {
            outlet.outbox.settle_all();
        }
    }
}

/// Sends the events of `queue` to containerd at `address`, oldest first, each until it is
/// taken (then `taken` is told its number); an attempt that takes longer than `deadline` is
/// abandoned and retried.
async fn drain(
    address: String,
    queue: smol::channel::Receiver<(u64, pb::Envelope)>,
    deadline: Duration,
    taken: impl Fn(u64),
) {
    let path = address
        .strip_prefix("unix://")
        .unwrap_or(&address)
        .to_string();
    let mut client = None;
    let mut backoff = Duration::from_millis(50);
    while let Ok((seq, envelope)) = queue.recv().await {
        loop {
            if client.is_none() {
                let connected = within(deadline, crate::grpc::connect(&path)).await;
                match connected.and_then(|c| c.map_err(|e| e.to_string())) {
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
            request.set_timeout(deadline);
            let answer = within(deadline, events.forward(request))
                .await
                .unwrap_or_else(|why| Err(tonic::Status::deadline_exceeded(why)));
            match answer {
                Ok(_) => {
                    backoff = Duration::from_millis(50);
                    taken(seq);
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
                    tracing::warn!(
                        "shimlessd: containerd at {address} refused a {} event: {}",
                        envelope.topic,
                        status.message()
                    );
                    taken(seq);
                    break;
                }
            }
        }
    }
}

/// `attempt`, or an error once `limit` has passed.
async fn within<T>(
    limit: Duration,
    attempt: impl std::future::Future<Output = T>,
) -> Result<T, String> {
    futures_lite::future::or(async { Ok(attempt.await) }, async {
        smol::Timer::after(limit).await;
        Err(format!("no answer within {limit:?}"))
    })
    .await
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

#[cfg(test)]
mod tests;
