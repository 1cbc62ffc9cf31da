//! Tests of event forwarding (`forward.rs`).

use super::*;
use std::sync::atomic::{AtomicUsize, Ordering};

/// containerd's Events service, losing its first `Forward` call (never answering it): a
/// fault a real containerd shows only under conditions a test cannot make on demand.
#[derive(Default, Clone)]
struct LosesFirstCall {
    calls: Arc<AtomicUsize>,
    delivered: Arc<Mutex<Vec<String>>>,
}

#[tonic::async_trait]
impl pb::events_server::Events for LosesFirstCall {
    async fn publish(
        &self,
        _: tonic::Request<pb::PublishRequest>,
    ) -> Result<tonic::Response<()>, tonic::Status> {
        Err(tonic::Status::unimplemented("publish"))
    }
    async fn forward(
        &self,
        req: tonic::Request<pb::ForwardRequest>,
    ) -> Result<tonic::Response<()>, tonic::Status> {
        if self.calls.fetch_add(1, Ordering::SeqCst) == 0 {
            futures_lite::future::pending::<()>().await;
        }
        let topic = req.into_inner().envelope.unwrap_or_default().topic;
        lock(&self.delivered).push(topic);
        Ok(tonic::Response::new(()))
    }
    type SubscribeStream = futures_lite::stream::Empty<Result<pb::Envelope, tonic::Status>>;
    async fn subscribe(
        &self,
        _: tonic::Request<pb::SubscribeRequest>,
    ) -> Result<tonic::Response<Self::SubscribeStream>, tonic::Status> {
        Err(tonic::Status::unimplemented("subscribe"))
    }
}

#[test]
fn a_call_containerd_never_answers_costs_a_retry_not_the_queue() {
    let dir = tempfile::tempdir().unwrap();
    let socket = dir.path().join("containerd.sock");
    let containerd = LosesFirstCall::default();
    let listener = crate::grpc::listen::bind(&socket).unwrap();
    let server = pb::events_server::EventsServer::new(containerd.clone());
    let me = rustix::process::geteuid().as_raw();
    std::thread::spawn(move || {
        let ex = Arc::new(smol::Executor::new());
        let config = crate::grpc::ServeConfig {
            allowed_uids: vec![me],
            ..Default::default()
        };
        let _ = smol::block_on(ex.run(crate::grpc::serve(listener, server, ex.clone(), config)));
    });
    let (tx, rx) = smol::channel::bounded(QUEUE_EVENTS);
    for (seq, topic) in [(1, "/tasks/exit"), (2, "/tasks/delete")] {
        let envelope = pb::Envelope {
            topic: topic.into(),
            ..Default::default()
        };
        tx.try_send((seq, envelope)).unwrap();
    }
    let taken = Arc::new(Mutex::new(Vec::new()));
    let address = format!("unix://{}", socket.display());
    let delivered = containerd.delivered.clone();
    let outcome = smol::block_on(futures_lite::future::or(
        async {
            let taken = taken.clone();
            let note = move |seq| lock(&taken).push(seq);
            drain(address, rx, Duration::from_millis(300), note).await;
            "the forwarder stopped"
        },
        async {
            let until = std::time::Instant::now() + Duration::from_secs(10);
            while lock(&delivered).len() < 2 && std::time::Instant::now() < until {
                smol::Timer::after(Duration::from_millis(20)).await;
            }
            "waited"
        },
    ));
    assert_eq!(outcome, "waited");
    assert_eq!(
        *lock(&delivered),
        ["/tasks/exit", "/tasks/delete"],
        "the event whose call was lost is sent again, then the next"
    );
    assert_eq!(containerd.calls.load(Ordering::SeqCst), 3);
    assert_eq!(*lock(&taken), [1, 2], "each marked taken once, in order");
}

fn key(ns: &str, id: &str) -> (Namespace, ContainerId) {
    (Namespace::new(ns).unwrap(), ContainerId::new(id).unwrap())
}

#[test]
fn a_container_created_without_start_inherits_its_sandboxs_containerd() {
    let dir = tempfile::tempdir().unwrap();
    let state = dir.path().join("state");
    let publishers = Publishers::open(&state);
    let (ns, sandbox) = key("k8s.io", "pause1");
    publishers
        .register(&ns, &sandbox, "/a/containerd.sock")
        .unwrap();
    let (other_ns, other) = key("elsewhere", "x");
    publishers
        .register(&other_ns, &other, "/b/containerd.sock")
        .unwrap();

    // containerd 2.x writes the sandbox's ID into the app container's bundle.
    let bundle = dir.path().join("app1");
    std::fs::create_dir_all(&bundle).unwrap();
    std::fs::write(bundle.join("sandbox"), "pause1").unwrap();
    let (_, app) = key("k8s.io", "app1");
    assert_eq!(
        publishers.adopt(&ns, &app, &bundle).as_deref(),
        Some("/a/containerd.sock")
    );
    assert_eq!(
        publishers.get(&ns, "app1").as_deref(),
        Some("/a/containerd.sock")
    );
    // Once registered, adopting again changes nothing.
    assert_eq!(publishers.adopt(&ns, &app, &bundle), None);

    // A sandbox without a registration: the namespace's last containerd.
    let orphan = dir.path().join("app2");
    std::fs::create_dir_all(&orphan).unwrap();
    std::fs::write(orphan.join("sandbox"), "unknown-sandbox\n").unwrap();
    let (_, app2) = key("k8s.io", "app2");
    assert_eq!(
        publishers.adopt(&ns, &app2, &orphan).as_deref(),
        Some("/a/containerd.sock")
    );

    // No `sandbox` file (shimlessctl's containers): left alone.
    let plain = dir.path().join("plain");
    std::fs::create_dir_all(&plain).unwrap();
    let (_, mine) = key("k8s.io", "mine");
    assert_eq!(publishers.adopt(&ns, &mine, &plain), None);
    assert_eq!(publishers.get(&ns, "mine"), None);

    // A restarted daemon reads all of it back.
    let again = Publishers::open(&state);
    assert_eq!(
        again.get(&ns, "app1").as_deref(),
        Some("/a/containerd.sock")
    );
    assert_eq!(
        again.get(&other_ns, "x").as_deref(),
        Some("/b/containerd.sock")
    );
    assert_eq!(
        lock(&again.namespaces).get(&ns).map(String::as_str),
        Some("/a/containerd.sock")
    );
    assert_eq!(again.get(&ns, NAMESPACE_FILE), None);
}

#[test]
fn concurrent_registrations_in_one_namespace_all_succeed() {
    // Every registration also writes the namespace's file: their temporary files must not
    // collide (a shared one made some fail with ENOENT at 16 concurrent starts).
    let dir = tempfile::tempdir().unwrap();
    let publishers = Publishers::open(&dir.path().join("state"));
    let ns = Namespace::new("busy").unwrap();
    std::thread::scope(|s| {
        for t in 0..8 {
            let (publishers, ns) = (&publishers, &ns);
            s.spawn(move || {
                for i in 0..50 {
                    let id = ContainerId::new(format!("c{t}-{i}")).unwrap();
                    publishers.register(ns, &id, "/c.sock").unwrap();
                }
            });
        }
    });
    assert_eq!(lock(&publishers.map).len(), 400);
}

#[test]
fn a_newer_outbox_is_kept_aside_whole_and_never_overwritten_by_a_new_one() {
    let dir = tempfile::tempdir().unwrap();
    let state = dir.path().join("state");
    let outboxes = dir.path().join("state.outbox");
    let address = "/run/containerd/containerd.sock";
    let mut outbox = Outbox::create(&outboxes, address).unwrap();
    outbox.append(pb::Envelope {
        topic: "/tasks/exit".into(),
        ..Default::default()
    });
    drop(outbox);
    let path = std::fs::read_dir(&outboxes)
        .unwrap()
        .next()
        .unwrap()
        .unwrap()
        .path();
    let newer = u64::from(crate::version::OUTBOX_FORMAT) + 1;
    super::super::outbox::set_header_format(&path, newer);
    let bytes = std::fs::read(&path).unwrap();

    let publishers = Arc::new(Publishers::open(&state));
    let (ns, id) = key("default", "web");
    publishers.register(&ns, &id, address).unwrap();
    let forwarder = Arc::new(Forwarder::open(&state, publishers));
    let aside = path.with_extension(format!("newer-v{newer}"));
    assert_eq!(std::fs::read(&aside).unwrap(), bytes, "kept whole");
    // An event for the same containerd makes a new outbox beside it.
    forwarder.submit(
        &ns,
        &TaskEvent::Start(crate::api::containerd::events::TaskStart {
            container_id: "web".into(),
            pid: 1,
        }),
    );
    assert!(path.exists());
    assert_eq!(std::fs::read(&aside).unwrap(), bytes, "never overwritten");
}
