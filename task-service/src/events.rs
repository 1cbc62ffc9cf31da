//! Task events (`containerd.events.Task*`), one per transition, on a local stream.
//!
//! Every state change of a container or exec publishes a [`TaskEvent`] to the daemon's
//! [`EventBus`]. Subscribers (`shimlessctl events`, and the forwarder to containerd's
//! `Events/Forward`) read [`Envelope`]s in publication order. Publishing never blocks the
//! daemon: a subscriber that falls more than the bus capacity behind loses the oldest events
//! and is told how many ([`Received::Lagged`]).
//!
//! The topic and `Any` type URL of each event are the ones containerd uses (`/tasks/exit` and
//! `containerd.events.TaskExit`, ...), so an envelope can be forwarded unchanged.

use crate::api::containerd::events as pb;
use crate::ids::Namespace;
use async_broadcast::{InactiveReceiver, RecvError, Sender, TryRecvError};
use prost::Message;
use std::time::SystemTime;

/// One task event, as containerd defines it.
///
/// ```
/// use task_service::api::containerd::events::TaskStart;
/// use task_service::events::TaskEvent;
/// let event = TaskEvent::Start(TaskStart { container_id: "web".into(), pid: 42 });
/// assert_eq!(event.topic(), "/tasks/start");
/// assert_eq!(event.to_any().type_url, "containerd.events.TaskStart");
/// assert_eq!(event.container_id(), "web");
/// ```
#[derive(Debug, Clone, PartialEq)]
#[allow(missing_docs)] // each variant is the containerd message of the same name
pub enum TaskEvent {
    Create(pb::TaskCreate),
    Start(pb::TaskStart),
    Exit(pb::TaskExit),
    Delete(pb::TaskDelete),
    ExecAdded(pb::TaskExecAdded),
    ExecStarted(pb::TaskExecStarted),
    Paused(pb::TaskPaused),
    Resumed(pb::TaskResumed),
    Oom(pb::TaskOom),
    Checkpointed(pb::TaskCheckpointed),
}

impl TaskEvent {
    /// containerd's topic for the event (`/tasks/create`, `/tasks/exit`, ...).
    pub fn topic(&self) -> &'static str {
        match self {
            TaskEvent::Create(_) => "/tasks/create",
            TaskEvent::Start(_) => "/tasks/start",
            TaskEvent::Exit(_) => "/tasks/exit",
            TaskEvent::Delete(_) => "/tasks/delete",
            TaskEvent::ExecAdded(_) => "/tasks/exec-added",
            TaskEvent::ExecStarted(_) => "/tasks/exec-started",
            TaskEvent::Paused(_) => "/tasks/paused",
            TaskEvent::Resumed(_) => "/tasks/resumed",
            TaskEvent::Oom(_) => "/tasks/oom",
            TaskEvent::Checkpointed(_) => "/tasks/checkpointed",
        }
    }

    /// The container the event is about.
    pub fn container_id(&self) -> &str {
        match self {
            TaskEvent::Create(e) => &e.container_id,
            TaskEvent::Start(e) => &e.container_id,
            TaskEvent::Exit(e) => &e.container_id,
            TaskEvent::Delete(e) => &e.container_id,
            TaskEvent::ExecAdded(e) => &e.container_id,
            TaskEvent::ExecStarted(e) => &e.container_id,
            TaskEvent::Paused(e) => &e.container_id,
            TaskEvent::Resumed(e) => &e.container_id,
            TaskEvent::Oom(e) => &e.container_id,
            TaskEvent::Checkpointed(e) => &e.container_id,
        }
    }

    /// The event packed as containerd packs it: the message's full protobuf name as type URL.
    pub fn to_any(&self) -> prost_types::Any {
        let (name, value) = match self {
            TaskEvent::Create(e) => ("TaskCreate", e.encode_to_vec()),
            TaskEvent::Start(e) => ("TaskStart", e.encode_to_vec()),
            TaskEvent::Exit(e) => ("TaskExit", e.encode_to_vec()),
            TaskEvent::Delete(e) => ("TaskDelete", e.encode_to_vec()),
            TaskEvent::ExecAdded(e) => ("TaskExecAdded", e.encode_to_vec()),
            TaskEvent::ExecStarted(e) => ("TaskExecStarted", e.encode_to_vec()),
            TaskEvent::Paused(e) => ("TaskPaused", e.encode_to_vec()),
            TaskEvent::Resumed(e) => ("TaskResumed", e.encode_to_vec()),
            TaskEvent::Oom(e) => ("TaskOOM", e.encode_to_vec()),
            TaskEvent::Checkpointed(e) => ("TaskCheckpointed", e.encode_to_vec()),
        };
        prost_types::Any {
            type_url: format!("containerd.events.{name}"),
            value,
        }
    }

    /// Decodes an event packed by [`TaskEvent::to_any`] (or by containerd: the type URL may
    /// carry a `types.googleapis.com/` prefix). `None` for another type or bad bytes.
    ///
    /// ```
    /// use task_service::api::containerd::events::TaskStart;
    /// use task_service::events::TaskEvent;
    /// let event = TaskEvent::Start(TaskStart { container_id: "web".into(), pid: 42 });
    /// assert_eq!(TaskEvent::from_any(&event.to_any()), Some(event));
    /// ```
    pub fn from_any(any: &prost_types::Any) -> Option<TaskEvent> {
        fn de<M: Message + Default>(bytes: &[u8]) -> Option<M> {
            M::decode(bytes).ok()
        }
        let name = any.type_url.rsplit('/').next()?;
        let v = any.value.as_slice();
        Some(match name.strip_prefix("containerd.events.")? {
            "TaskCreate" => TaskEvent::Create(de(v)?),
            "TaskStart" => TaskEvent::Start(de(v)?),
            "TaskExit" => TaskEvent::Exit(de(v)?),
            "TaskDelete" => TaskEvent::Delete(de(v)?),
            "TaskExecAdded" => TaskEvent::ExecAdded(de(v)?),
            "TaskExecStarted" => TaskEvent::ExecStarted(de(v)?),
            "TaskPaused" => TaskEvent::Paused(de(v)?),
            "TaskResumed" => TaskEvent::Resumed(de(v)?),
            "TaskOOM" => TaskEvent::Oom(de(v)?),
            "TaskCheckpointed" => TaskEvent::Checkpointed(de(v)?),
            _ => return None,
        })
    }
}

/// An event with when and in which namespace it happened.
#[derive(Debug, Clone, PartialEq)]
pub struct Envelope {
    /// When the daemon published it.
    pub timestamp: SystemTime,
    /// The containerd namespace of the container.
    pub namespace: Namespace,
    /// The event.
    pub event: TaskEvent,
}

impl Envelope {
    /// containerd's `Envelope`, as `Subscribe` streams it and `Forward` sends it.
    ///
    /// ```
    /// use task_service::api::containerd::events::TaskPaused;
    /// use task_service::events::{Envelope, TaskEvent};
    /// let envelope = Envelope {
    ///     timestamp: std::time::SystemTime::now(),
    ///     namespace: task_service::ids::Namespace::new("default")?,
    ///     event: TaskEvent::Paused(TaskPaused { container_id: "web".into() }),
    /// };
    /// let wire = envelope.to_wire();
    /// assert_eq!((wire.namespace.as_str(), wire.topic.as_str()), ("default", "/tasks/paused"));
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn to_wire(&self) -> crate::api::containerd::services::events::v1::Envelope {
        crate::api::containerd::services::events::v1::Envelope {
            timestamp: Some(crate::api::timestamp(self.timestamp)),
            namespace: self.namespace.to_string(),
            topic: self.event.topic().to_string(),
            event: Some(self.event.to_any()),
        }
    }
}

/// What a subscriber reads next.
#[derive(Debug, Clone, PartialEq)]
pub enum Received {
    /// The next event, in publication order.
    Event(Box<Envelope>),
    /// The subscriber fell behind and this many of the oldest events were dropped for it.
    Lagged(u64),
}

/// The daemon's event stream: publish from anywhere, subscribe any number of times.
///
/// ```
/// use task_service::api::containerd::events::TaskPaused;
/// use task_service::events::{EventBus, Received, TaskEvent};
/// use task_service::ids::Namespace;
///
/// let bus = EventBus::new(1024);
/// let mut sub = bus.subscribe();
/// bus.publish(Namespace::new("default")?, TaskEvent::Paused(TaskPaused { container_id: "web".into() }));
/// let Received::Event(envelope) = smol::block_on(sub.next()).unwrap() else { panic!() };
/// assert_eq!(envelope.event.topic(), "/tasks/paused");
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Debug, Clone)]
pub struct EventBus {
    sender: Sender<Envelope>,
    // Keeps the channel open while nobody subscribes, without holding events for anyone.
    _keep_open: InactiveReceiver<Envelope>,
    // Until the first subscriber comes, an active receiver holds what is published (up to the
    // capacity): the exits a restarted daemon recovers are published before anyone can
    // subscribe, and the first subscriber (containerd's forwarder) must still see them.
    backlog: std::sync::Arc<std::sync::Mutex<Option<async_broadcast::Receiver<Envelope>>>>,
}

impl EventBus {
    /// A bus on which each subscriber may fall `capacity` events behind before losing the
    /// oldest (at least 1).
    pub fn new(capacity: usize) -> Self {
        let (mut sender, receiver) = async_broadcast::broadcast(capacity.max(1));
        sender.set_overflow(true);
        EventBus {
            backlog: std::sync::Arc::new(std::sync::Mutex::new(Some(receiver.clone()))),
            sender,
            _keep_open: receiver.deactivate(),
        }
    }

    /// Publishes an event to every current subscriber, stamped now. Never blocks.
    pub fn publish(&self, namespace: Namespace, event: TaskEvent) {
        let envelope = Envelope {
            timestamp: SystemTime::now(),
            namespace,
            event,
        };
        // Fails only when nobody subscribes, and then nobody is waiting for it.
        let _ = self.sender.try_broadcast(envelope);
    }

    /// A new subscriber, which sees the events published from now on; the first subscriber
    /// also gets what was published before it (up to the capacity), so nothing published at
    /// start-up is lost.
    pub fn subscribe(&self) -> Subscription {
        let backlog = crate::lock::lock(&self.backlog).take();
        Subscription {
            receiver: backlog.unwrap_or_else(|| self.sender.new_receiver()),
        }
    }
}

/// One subscriber's view of an [`EventBus`].
#[derive(Debug)]
pub struct Subscription {
    receiver: async_broadcast::Receiver<Envelope>,
}

impl Subscription {
    /// Waits for the next event; `None` once the bus is gone.
    pub async fn next(&mut self) -> Option<Received> {
        match self.receiver.recv_direct().await {
            Ok(envelope) => Some(Received::Event(Box::new(envelope))),
            Err(RecvError::Overflowed(n)) => Some(Received::Lagged(n)),
            Err(RecvError::Closed) => None,
        }
    }

    /// The next event if one is waiting, without waiting.
    pub fn try_next(&mut self) -> Option<Received> {
        match self.receiver.try_recv() {
            Ok(envelope) => Some(Received::Event(Box::new(envelope))),
            Err(TryRecvError::Overflowed(n)) => Some(Received::Lagged(n)),
            Err(TryRecvError::Empty | TryRecvError::Closed) => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn paused(id: &str) -> TaskEvent {
        TaskEvent::Paused(pb::TaskPaused {
            container_id: id.into(),
        })
    }

    #[test]
    fn every_variant_has_containerds_topic_and_type_url() {
        let all = [
            (
                TaskEvent::Create(Default::default()),
                "/tasks/create",
                "TaskCreate",
            ),
            (
                TaskEvent::Start(Default::default()),
                "/tasks/start",
                "TaskStart",
            ),
            (
                TaskEvent::Exit(Default::default()),
                "/tasks/exit",
                "TaskExit",
            ),
            (
                TaskEvent::Delete(Default::default()),
                "/tasks/delete",
                "TaskDelete",
            ),
            (
                TaskEvent::ExecAdded(Default::default()),
                "/tasks/exec-added",
                "TaskExecAdded",
            ),
            (
                TaskEvent::ExecStarted(Default::default()),
                "/tasks/exec-started",
                "TaskExecStarted",
            ),
            (
                TaskEvent::Paused(Default::default()),
                "/tasks/paused",
                "TaskPaused",
            ),
            (
                TaskEvent::Resumed(Default::default()),
                "/tasks/resumed",
                "TaskResumed",
            ),
            (TaskEvent::Oom(Default::default()), "/tasks/oom", "TaskOOM"),
            (
                TaskEvent::Checkpointed(Default::default()),
                "/tasks/checkpointed",
                "TaskCheckpointed",
            ),
        ];
        for (event, topic, name) in all {
            assert_eq!(event.topic(), topic);
            assert_eq!(event.to_any().type_url, format!("containerd.events.{name}"));
        }
    }

    #[test]
    fn the_payload_decodes_back() {
        let exit = pb::TaskExit {
            container_id: "c".into(),
            pid: 9,
            exit_status: 137,
            ..Default::default()
        };
        let any = TaskEvent::Exit(exit.clone()).to_any();
        assert_eq!(pb::TaskExit::decode(any.value.as_slice()).unwrap(), exit);
    }

    #[test]
    fn subscribers_see_events_in_order_and_a_slow_one_is_told_what_it_lost() {
        let bus = EventBus::new(4);
        let ns = Namespace::new("default").unwrap();
        let mut fast = bus.subscribe();
        let mut slow = bus.subscribe();
        for i in 0..6 {
            bus.publish(ns.clone(), paused(&format!("c{i}")));
            if let Some(Received::Event(e)) = fast.try_next() {
                assert_eq!(e.event.container_id(), format!("c{i}"));
            } else {
                panic!("fast subscriber missed c{i}");
            }
        }
        assert_eq!(slow.try_next(), Some(Received::Lagged(2)));
        let rest: Vec<String> = std::iter::from_fn(|| match slow.try_next() {
            Some(Received::Event(e)) => Some(e.event.container_id().to_string()),
            _ => None,
        })
        .collect();
        assert_eq!(rest, ["c2", "c3", "c4", "c5"]);
    }

    #[test]
    fn the_first_subscriber_gets_what_was_published_before_it_and_later_ones_do_not() {
        let bus = EventBus::new(8);
        let ns = Namespace::new("default").unwrap();
        bus.publish(ns.clone(), paused("early"));
        let mut first = bus.subscribe();
        let mut second = bus.subscribe();
        bus.publish(ns, paused("late"));
        let ids = |sub: &mut Subscription| {
            std::iter::from_fn(|| sub.try_next())
                .map(|r| match r {
                    Received::Event(e) => e.event.container_id().to_string(),
                    Received::Lagged(n) => format!("lagged {n}"),
                })
                .collect::<Vec<_>>()
        };
        assert_eq!(ids(&mut first), ["early", "late"]);
        assert_eq!(ids(&mut second), ["late"]);
    }
}
