//! Faults that must stay local (issue 13), caused for real against the binaries:
//!
//! - a front out of file descriptors (`prlimit`) refuses connections for a while and then
//!   serves again: an accept error is never fatal;
//! - a second `shimlessd` on the same state directory is refused, naming the directory, and the
//!   first one keeps its socket and its containers;
//! - a `shimlessd` killed with `kill -9` while it spawns runtimes is replaced at once: the next
//!   one, started right after, is never refused by the state lock (20 times);
//! - subscribers that stop reading, behind the front, lose their own events and nothing else:
//!   the front's one connection to the daemon stays up for everyone else;
//! - `containerd-shim-shimless-v2 delete` without a daemon cleans up a container with the
//!   runtime root it was created with (runtime option `Root`), not the configured default.

use integration::Need;
use integration::bundle::Bundle;
use integration::child::Child;
use prost::Message;
use std::path::Path;
use std::process::Command;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::{Duration, Instant};
use task_service::api::containerd::task::v3::*;
use task_service::api::shimless::v1::ListenRequest;

mod common;
use common::shimless::Shimless;

const NS: &str = "isolation-test";

fn front(s: &Shimless, nofile: Option<u32>) -> Child {
    let front = env!("CARGO_BIN_EXE_shimless-front");
    let mut cmd = match nofile {
        Some(n) => {
            let mut cmd = Command::new("prlimit");
            cmd.arg(format!("--nofile={n}:{n}")).arg(front);
            cmd
        }
        None => Command::new(front),
    };
    cmd.arg("--config").arg(s.config());
    Child::start(cmd, &s.dir.path().join("front.log"), "serving on").unwrap()
}

fn daemon(s: &Shimless, socket: &Path, log: &str) -> Child {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_shimlessd"));
    cmd.arg("--config")
        .arg(s.config())
        .arg("--socket")
        .arg(socket);
    Child::start(cmd, &s.dir.path().join(log), "serving on").unwrap()
}

async fn listen(socket: &Path) -> Result<String, String> {
    let mut front = task_service::client::Client::connect(socket)
        .await
        .map_err(|e| e.to_string())?
        .front();
    front
        .listen(ListenRequest {
            namespace: NS.into(),
            protocol: "ttrpc".into(),
        })
        .await
        .map(|r| r.into_inner().socket)
        .map_err(|e| e.to_string())
}

#[test]
fn a_front_out_of_descriptors_serves_again_once_they_are_back() {
    let Some(()) = integration::require(&[Need::Root, Need::Program("prlimit")]) else {
        return;
    };
    let s = Shimless::new("supervise = false");
    let mut front = front(&s, Some(64));
    // Each accepted connection costs the front a descriptor: hold more than it has.
    let held: Vec<_> = (0..120)
        .filter_map(|_| std::os::unix::net::UnixStream::connect(s.front_socket()).ok())
        .collect();
    let log = s.dir.path().join("front.log");
    let deadline = Instant::now() + Duration::from_secs(10);
    while !std::fs::read_to_string(&log)
        .unwrap_or_default()
        .contains("failed")
        && common::alive(front.pid())
    {
        assert!(
            Instant::now() < deadline,
            "the front never ran out of descriptors"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    // Give a failing accept loop time to give up, as it used to.
    std::thread::sleep(Duration::from_millis(300));
    drop(held);
    assert!(
        common::alive(front.pid()),
        "the front exited on an accept error: {}",
        std::fs::read_to_string(&log).unwrap_or_default()
    );
    let socket = smol::block_on(async {
        let until = Instant::now() + Duration::from_secs(10);
        loop {
            match listen(&s.front_socket()).await {
                Ok(socket) => break socket,
                Err(e) if Instant::now() > until => panic!("the front does not serve: {e}"),
                Err(_) => {
                    smol::Timer::after(Duration::from_millis(50)).await;
                }
            }
        }
    });
    assert!(socket.ends_with("isolation-test.ttrpc.sock"), "{socket}");
    let text = std::fs::read_to_string(&log).unwrap();
    assert!(
        text.contains("EMFILE") || text.contains("Too many open files"),
        "{text}"
    );
    front.kill();
}

#[test]
fn a_second_daemon_on_the_same_state_directory_is_refused_and_the_first_keeps_serving() {
    let Some(()) = common::needs_daemon() else {
        return;
    };
    rustix::process::set_child_subreaper(rustix::process::Pid::from_raw(1)).unwrap();
    let s = Shimless::new("supervise = false").cleans(NS);
    let _first = daemon(&s, &s.daemon_socket(), "first.log");
    let bundle = Bundle::exit_on_demand().unwrap();
    smol::block_on(async {
        let mut c = common::client(&s.daemon_socket()).await;
        common::create(&mut c, NS, "kept", bundle.path()).await;
        common::start(&mut c, NS, "kept").await;
    });
    let other_socket = s.dir.path().join("run/second.sock");
    let second = Command::new(env!("CARGO_BIN_EXE_shimlessd"))
        .arg("--config")
        .arg(s.config())
        .arg("--socket")
        .arg(&other_socket)
        .output()
        .unwrap();
    assert_eq!(second.status.code(), Some(1), "{second:?}");
    let stderr = String::from_utf8_lossy(&second.stderr);
    let state_dir = s.dir.path().join("state").display().to_string();
    assert!(
        stderr.contains("another shimlessd") && stderr.contains(&state_dir),
        "{stderr}"
    );
    assert!(
        !other_socket.exists(),
        "the refused daemon bound its socket"
    );
    // The same refusal when the second one would take over the first one's socket.
    let third = Command::new(env!("CARGO_BIN_EXE_shimlessd"))
        .arg("--config")
        .arg(s.config())
        .arg("--socket")
        .arg(s.daemon_socket())
        .output()
        .unwrap();
    assert_eq!(third.status.code(), Some(1), "{third:?}");
    smol::block_on(async {
        let mut c = common::client(&s.daemon_socket()).await;
        let state = c
            .state(common::request(
                NS,
                StateRequest {
                    id: "kept".into(),
                    ..Default::default()
                },
            ))
            .await
            .unwrap()
            .into_inner();
        assert_eq!(
            state.status,
            task_service::api::containerd::v1::types::Status::Running as i32
        );
    });
    bundle.tell_exit(0).unwrap();
}

/// Keeps 12 `Pids` calls (each a `runc ps`) in flight on `socket` until `stop`, through
/// daemon restarts; counts the answers.
fn hammer_pids(
    socket: std::path::PathBuf,
    id: &'static str,
    stop: Arc<AtomicBool>,
    answered: Arc<AtomicUsize>,
) -> std::thread::JoinHandle<()> {
    std::thread::spawn(move || {
        smol::block_on(async {
            while !stop.load(Ordering::Relaxed) {
                let Ok(client) = task_service::client::Client::connect(&socket).await else {
                    smol::Timer::after(Duration::from_millis(10)).await;
                    continue;
                };
                let workers = (0..12).map(|_| {
                    let mut c = client.task();
                    let (stop, answered) = (stop.clone(), answered.clone());
                    smol::spawn(async move {
                        while !stop.load(Ordering::Relaxed) {
                            let pids = PidsRequest { id: id.into() };
                            if c.pids(common::request(NS, pids)).await.is_err() {
                                return;
                            }
                            answered.fetch_add(1, Ordering::Relaxed);
                        }
                    })
                });
                for worker in workers.collect::<Vec<_>>() {
                    worker.await;
                }
            }
        })
    })
}

#[test]
fn a_daemon_killed_while_it_spawns_runtimes_is_replaced_at_once_20_times() {
    let Some(()) = common::needs_daemon() else {
        return;
    };
    rustix::process::set_child_subreaper(rustix::process::Pid::from_raw(1)).unwrap();
    let s = Shimless::new("supervise = false").cleans(NS);
    let mut running = daemon(&s, &s.daemon_socket(), "respawn.log");
    let bundle = Bundle::exit_on_demand().unwrap();
    smol::block_on(async {
        let mut c = common::client(&s.daemon_socket()).await;
        common::create(&mut c, NS, "respawn", bundle.path()).await;
        common::start(&mut c, NS, "respawn").await;
    });
    let stop = Arc::new(AtomicBool::new(false));
    let answered = Arc::new(AtomicUsize::new(0));
    let hammer = hammer_pids(s.daemon_socket(), "respawn", stop.clone(), answered.clone());
    // Busy CPUs, as on a loaded node: a runtime just forked waits longer for its `exec`.
    let spinners: Vec<_> = (0..4)
        .map(|_| {
            let stop = stop.clone();
            std::thread::spawn(move || {
                while !stop.load(Ordering::Relaxed) {
                    std::hint::spin_loop();
                }
            })
        })
        .collect();
    for round in 0..20 {
        // Killed while `runc ps` calls are being spawned, answered and spawned again.
        let before = answered.load(Ordering::Relaxed);
        let deadline = Instant::now() + Duration::from_secs(120);
        while answered.load(Ordering::Relaxed) < before + 3 {
            assert!(
                Instant::now() < deadline,
                "round {round}: no Pids answered:\n{}",
                std::fs::read_to_string(s.dir.path().join("respawn.log")).unwrap_or_default()
            );
            std::thread::yield_now();
        }
        running.kill();
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_shimlessd"));
        cmd.arg("--config")
            .arg(s.config())
            .arg("--socket")
            .arg(s.daemon_socket());
        match Child::start(cmd, &s.dir.path().join("respawn.log"), "serving on") {
            Ok(next) => running = next,
            Err(e) => panic!("round {round}: the next daemon did not start: {e}"),
        }
    }
    stop.store(true, Ordering::Relaxed);
    hammer.join().unwrap();
    spinners.into_iter().for_each(|t| t.join().unwrap());
    let log = std::fs::read_to_string(s.dir.path().join("respawn.log")).unwrap();
    assert!(!log.contains("another shimlessd"), "{log}");
    bundle.tell_exit(0).unwrap();
    smol::block_on(async {
        let mut c = common::client(&s.daemon_socket()).await;
        assert_eq!(common::wait(&mut c, NS, "respawn").await.exit_status, 0);
        common::delete(&mut c, NS, "respawn").await;
    });
}

#[test]
fn shim_delete_without_a_daemon_uses_the_containers_own_runtime_root() {
    let Some(()) = common::needs_daemon() else {
        return;
    };
    rustix::process::set_child_subreaper(rustix::process::Pid::from_raw(1)).unwrap();
    let s = Shimless::new("supervise = false").cleans(NS);
    let own_root = s.dir.path().join("own-root");
    let mut first = daemon(&s, &s.daemon_socket(), "shimlessd.log");
    let bundle = Bundle::exit_on_demand().unwrap();
    let options = task_service::api::containerd::runc::v1::Options {
        root: own_root.display().to_string(),
        ..Default::default()
    };
    let pid = smol::block_on(async {
        let mut c = common::client(&s.daemon_socket()).await;
        c.create(common::request(
            NS,
            CreateTaskRequest {
                id: "rooted".into(),
                bundle: bundle.path().display().to_string(),
                options: Some(prost_types::Any {
                    type_url: task_service::options::TYPE_URL.into(),
                    value: options.encode_to_vec(),
                }),
                ..Default::default()
            },
        ))
        .await
        .unwrap();
        common::start(&mut c, NS, "rooted").await
    });
    first.kill();
    let out = Command::new(env!("CARGO_BIN_EXE_containerd-shim-shimless-v2"))
        .args(["-namespace", NS, "-id", "rooted", "delete"])
        .current_dir("/")
        .env("SHIMLESS_CONFIG", s.config())
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    let reply = DeleteResponse::decode(&out.stdout[..]).unwrap();
    assert_eq!(reply.exit_status, 137);
    let listed = |root: &Path| {
        let out = Command::new("runc")
            .arg("--root")
            .arg(root)
            .args(["list", "-q"])
            .output()
            .unwrap();
        String::from_utf8_lossy(&out.stdout).trim().to_string()
    };
    // Wherever under `Root` the runtime keeps it (containerd appends the namespace).
    let left = listed(&own_root) + &listed(&own_root.join(NS));
    if !left.is_empty() {
        integration::bundle::delete_all("runc", &own_root);
        integration::bundle::delete_all("runc", &own_root.join(NS));
    }
    assert_eq!(left, "", "the container was left running in its own root");
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let _ = rustix::process::wait(rustix::process::WaitOptions::NOHANG);
        if !Path::new(&format!("/proc/{pid}")).exists() {
            break;
        }
        assert!(Instant::now() < deadline, "{pid} still runs");
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// The real daemon (its Task and Events services, its event bus) in this process behind the
/// real front, both on private sockets; the events are published on the daemon's bus directly,
/// because the tens of thousands it takes would need as many container lifecycles.
#[test]
fn stalled_subscribers_lose_their_own_events_and_the_link_stays_up() {
    use task_service::api::containerd::services::events::v1::SubscribeRequest;
    use task_service::events::TaskEvent;
    let dir = tempfile::tempdir().unwrap();
    let me = rustix::process::geteuid().as_raw();
    let config = task_service::config::Config {
        socket: dir.path().join("daemon.sock"),
        state_dir: dir.path().join("state"),
        runc_root: dir.path().join("runc"),
        bpf_pin_dir: dir.path().join("no-bpf"),
        allowed_uids: vec![me],
        event_capacity: 1 << 20,
        ..Default::default()
    };
    let ex = std::sync::Arc::new(smol::Executor::new());
    for _ in 0..2 {
        let ex = ex.clone();
        std::thread::spawn(move || smol::block_on(ex.run(futures_lite::future::pending::<()>())));
    }
    let daemon = task_service::daemon::Daemon::new(config.clone(), ex.clone()).unwrap();
    let bus = daemon.events().clone();
    let listener = task_service::grpc::listen::bind(&config.socket).unwrap();
    let serve = task_service::grpc::ServeConfig {
        allowed_uids: vec![me],
        ..Default::default()
    };
    ex.spawn(task_service::grpc::serve(
        listener,
        daemon.into_router(),
        ex.clone(),
        serve,
    ))
    .detach();
    let front_socket = dir.path().join("front.sock");
    let mut front_config =
        task_service::front::FrontConfig::new(&config.socket, dir.path().join("ns"));
    front_config.allowed_uids = vec![me];
    let listener = task_service::grpc::listen::bind(&front_socket).unwrap();
    ex.spawn(task_service::front::serve(
        listener,
        front_config,
        ex.clone(),
    ))
    .detach();

    smol::block_on(async {
        // Each subscriber on a connection of its own, as separate `shimlessctl events` are.
        let subscribe = || async {
            let mut events = task_service::client::Client::connect(&front_socket)
                .await
                .unwrap()
                .events();
            events
                .subscribe(SubscribeRequest::default())
                .await
                .unwrap()
                .into_inner()
        };
        let mut healthy = subscribe().await;
        let stalled = [subscribe().await, subscribe().await];
        let received = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let reader: smol::Task<Result<(), String>> = {
            let received = received.clone();
            smol::spawn(async move {
                loop {
                    match healthy.message().await {
                        Ok(Some(_)) => {
                            received.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                        }
                        Ok(None) => return Err("the stream ended".to_string()),
                        Err(status) => return Err(format!("{status:?}")),
                    }
                }
            })
        };
        const EVENTS: usize = 100_000;
        let ns = task_service::ids::Namespace::new(NS).unwrap();
        for batch in 0..EVENTS / 1000 {
            for i in 0..1000 {
                bus.publish(
                    ns.clone(),
                    TaskEvent::Start(task_service::api::containerd::events::TaskStart {
                        container_id: format!("c{}", batch * 1000 + i),
                        pid: 1,
                    }),
                );
            }
            // Let the healthy subscriber keep up, so that only the stalled ones fall behind.
            let until = Instant::now() + Duration::from_secs(20);
            while received.load(std::sync::atomic::Ordering::SeqCst) < (batch + 1) * 1000 {
                if reader.is_finished() || Instant::now() > until {
                    break;
                }
                smol::Timer::after(Duration::from_millis(2)).await;
            }
            let got = received.load(std::sync::atomic::Ordering::SeqCst);
            assert!(
                !reader.is_finished() && got >= (batch + 1) * 1000,
                "the healthy subscriber's stream failed or stopped after {got} events"
            );
        }
        assert_eq!(received.load(std::sync::atomic::Ordering::SeqCst), EVENTS);
        // A new call through the front still reaches the daemon.
        let mut c = common::client(&front_socket).await;
        let err = c
            .state(common::request(
                NS,
                StateRequest {
                    id: "nobody".into(),
                    ..Default::default()
                },
            ))
            .await
            .unwrap_err();
        assert_eq!(err.code(), tonic::Code::NotFound, "{err:?}");
        // A stalled subscriber that reads at last gets its queue, then why the rest is lost.
        let [mut late, _other] = stalled;
        let mut got = 0;
        let end = loop {
            match late.message().await {
                Ok(Some(_)) => got += 1,
                other => break other,
            }
        };
        let status = end.unwrap_err();
        assert_eq!(status.code(), tonic::Code::DataLoss, "{status:?}");
        assert!(got < EVENTS, "{got}");
        drop(reader);
    });
}

#[test]
fn a_log_over_its_cap_is_rotated_and_the_daemon_goes_on_writing() {
    let Some(()) = common::needs_daemon() else {
        return;
    };
    let s = Shimless::new("supervise = false\nlog_max_bytes = 65536").cleans(NS);
    let _daemon = daemon(&s, &s.daemon_socket(), "capped.log");
    let log = s.dir.path().join("capped.log");
    // As if the daemon had logged for weeks.
    let mut file = std::fs::OpenOptions::new().append(true).open(&log).unwrap();
    std::io::Write::write_all(&mut file, &vec![b'x'; 200_000]).unwrap();
    let rotated = s.dir.path().join("capped.log.1");
    let deadline = Instant::now() + Duration::from_secs(10);
    while !rotated.exists() {
        assert!(Instant::now() < deadline, "the log was never rotated");
        std::thread::sleep(Duration::from_millis(50));
    }
    let old = std::fs::read_to_string(&rotated).unwrap();
    assert!(
        old.contains("serving on") && old.len() > 200_000,
        "{}",
        old.len()
    );
    // What the daemon writes now goes to a fresh file at the old path.
    smol::block_on(async {
        let mut c = common::client(&s.daemon_socket()).await;
        let bundle = Bundle::exit_on_demand().unwrap();
        common::create(&mut c, NS, "logged", bundle.path()).await;
        // A deliberate warning: a second Create of the same id.
        let _ = c
            .create(common::request(
                NS,
                CreateTaskRequest {
                    id: "logged".into(),
                    bundle: bundle.path().display().to_string(),
                    ..Default::default()
                },
            ))
            .await;
        common::delete(&mut c, NS, "logged").await;
    });
    let fresh = std::fs::metadata(&log).unwrap().len();
    assert!(fresh < 65536, "{fresh}");
}
