//! `kill -9` of the daemon, for real: `shimlessd` runs as a child process with 100 containers,
//! is killed while exits happen, containers exit while it is down, and the next `shimlessd`
//! must report every exit with its true code, adopt the live ones, finish an interrupted
//! delete, leave alone a runtime container it has no record of, and leave no container of its
//! own behind once all are deleted.

use integration::bundle::Bundle;
use integration::child::Child;
use integration::shimlessd::Shimlessd;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};
use task_service::api::containerd::task::v3::*;
use task_service::api::containerd::v1::types::Status as TaskStatus;
use task_service::client::Client;
use task_service::events::TaskEvent;
use tonic::{Code, Request};

mod common;
use common::client;
use common::processes::{reap_children, runc_ids};

const NS: &str = "restart-test";

fn ns<T>(msg: T) -> Request<T> {
    common::request(NS, msg)
}

struct Paths {
    dir: tempfile::TempDir,
}

impl Paths {
    fn socket(&self) -> PathBuf {
        self.dir.path().join("s.sock")
    }
    fn runc_root(&self) -> PathBuf {
        self.dir.path().join("runc")
    }
    fn state(&self) -> PathBuf {
        self.dir.path().join("state")
    }
}

/// Removes whatever a failed run left in the runtime root, so a failure leaks nothing.
struct ForceDelete(PathBuf);

impl Drop for ForceDelete {
    fn drop(&mut self) {
        integration::bundle::delete_all("runc", &self.0);
    }
}

/// Starts `shimlessd` on the test's paths and waits until it serves.
fn daemon(paths: &Paths, log: &Path) -> Child {
    Shimlessd::new(env!("CARGO_BIN_EXE_shimlessd"))
        .socket(paths.socket())
        .state_dir(paths.state())
        .runc_root(paths.runc_root())
        .start(log)
        .unwrap()
}

#[test]
fn kill_9_of_the_daemon_loses_no_exit_and_leaks_no_container() {
    let Some(()) = common::needs_daemon() else {
        return;
    };
    integration::raise_fd_limit(8192);
    rustix::process::set_child_subreaper(rustix::process::Pid::from_raw(1)).unwrap();
    let paths = Paths {
        dir: tempfile::tempdir().unwrap(),
    };
    let log = paths.dir.path().join("shimlessd.log");
    let _cleanup = ForceDelete(paths.runc_root().join(NS));
    let mut first = daemon(&paths, &log);

    // 100 containers: 30 exit just as the daemon dies, 30 exit while it is down, 30 stay up,
    // 10 are created but not started.
    let bundles: Vec<Bundle> = (0..100)
        .map(|_| Bundle::exit_on_demand().unwrap())
        .collect();
    let id = |i: usize| format!("c{i:03}");
    let mut pids = Vec::new();
    // Stands in for containerd's Events service: each container's events are forwarded there.
    let sink = common::sink::EventSink::start();
    smol::block_on(async {
        let mut c = client(&paths.socket()).await;
        let mut admin = Client::connect(&paths.socket()).await.unwrap().admin();
        for i in 0..bundles.len() {
            admin
                .register_publisher(task_service::api::shimless::v1::RegisterPublisherRequest {
                    namespace: NS.into(),
                    id: id(i),
                    address: sink.socket.display().to_string(),
                })
                .await
                .unwrap();
        }
        for (i, bundle) in bundles.iter().enumerate() {
            let pid = c
                .create(ns(CreateTaskRequest {
                    id: id(i),
                    bundle: bundle.path().display().to_string(),
                    ..Default::default()
                }))
                .await
                .unwrap()
                .into_inner()
                .pid;
            pids.push(pid);
            if i < 90 {
                common::start(&mut c, NS, id(i)).await;
            }
        }
        // One stopped container whose delete will be "interrupted": the runtime forgets it
        // while the daemon is down, the record stays.
        let gone = Bundle::exit_on_demand().unwrap();
        common::create(&mut c, NS, "deleting", gone.path()).await;
        common::start(&mut c, NS, "deleting").await;
        gone.tell_exit(3).unwrap();
        let waited = common::wait(&mut c, NS, "deleting").await;
        assert_eq!(waited.exit_status, 3);
    });
    let ns_root = paths.runc_root().join(NS);

    // Exits racing the kill: codes 1..=30.
    for (i, bundle) in bundles.iter().enumerate().take(30) {
        bundle.tell_exit((i + 1) as u8).unwrap();
    }
    first.kill();

    // While it is down: 30 more exit (codes 31..=60), one delete is finished by the runtime,
    // and a container that no record names appears (another runtime's, in a shared root).
    for (i, bundle) in bundles.iter().enumerate().take(60).skip(30) {
        bundle.tell_exit((i + 1) as u8).unwrap();
    }
    let status = Command::new("runc")
        .arg("--root")
        .arg(&ns_root)
        .args(["delete", "deleting"])
        .status()
        .unwrap();
    assert!(status.success());
    let orphan = Bundle::exit_on_demand().unwrap();
    let status = Command::new("runc")
        .arg("--root")
        .arg(&ns_root)
        .args(["create", "--bundle"])
        .arg(orphan.path())
        .arg("orphan")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .status()
        .unwrap();
    assert!(status.success());
    let deadline = Instant::now() + Duration::from_secs(60);
    while !pids[..60].iter().all(|&p| !common::alive(p)) {
        assert!(Instant::now() < deadline, "containers did not exit");
        std::thread::sleep(Duration::from_millis(20));
    }
    reap_children();
    let unreaped: Vec<String> = pids[..60]
        .iter()
        .filter_map(|p| std::fs::read_to_string(format!("/proc/{p}/stat")).ok())
        .collect();
    assert!(unreaped.is_empty(), "not reaped: {unreaped:?}");

    // What the first daemon forwarded; the rest comes from the second.
    let forwarded_before = sink.received().len();
    let mut second = daemon(&paths, &log);
    let recovered = second.last_line("recovered:").unwrap();
    assert!(
        recovered.contains("interrupted deletes finished (restart-test/deleting)"),
        "{recovered}"
    );
    // No record or intent names it: not shimless's to remove (see tests/recovery.rs).
    assert!(
        recovered.contains("runtime containers left alone (orphan in "),
        "{recovered}"
    );
    assert!(!recovered.contains("lost"), "{recovered}");

    // Every exit of the 60 reaches containerd with its code, whichever daemon sent it: those
    // recovery publishes, and those the first daemon handed over (its outbox) but containerd
    // had not taken when it died; at most the one in flight at the kill twice.
    smol::block_on(async {
        // Those the report lists, e.g. "60 exited while down (restart-test/c000: 1, ...)",
        // carry their true code.
        let listed = recovered
            .split_once(" exited while down (")
            .map(|(_, rest)| rest.split_once(')').unwrap().0)
            .unwrap_or("");
        let listed: Vec<(String, u32)> = listed
            .split(", ")
            .filter(|e| !e.is_empty())
            .map(|e| {
                let (name, code) = e.split_once(": ").unwrap();
                (
                    name.rsplit('/').next().unwrap().to_string(),
                    code.parse().unwrap(),
                )
            })
            .collect();
        assert!(
            listed.len() >= 30,
            "at least those exiting while down: {recovered}"
        );
        for (id, code) in &listed {
            let i: usize = id[1..].parse().unwrap();
            assert_eq!(*code, (i + 1) as u32, "{id}");
        }
        let want: Vec<(String, u32)> = (0..60).map(|i| (id(i), (i + 1) as u32)).collect();
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let mut exits: Vec<(String, u32)> = sink
                .received()
                .iter()
                .filter(|e| e.namespace == NS)
                .filter_map(|e| match e.event.as_ref().and_then(TaskEvent::from_any) {
                    Some(TaskEvent::Exit(exit)) => Some((exit.container_id, exit.exit_status)),
                    _ => None,
                })
                .filter(|(id, _)| id.as_str() < "c060")
                .collect();
            exits.sort();
            let mut once = exits.clone();
            once.dedup();
            if once.len() >= want.len() {
                assert_eq!(once, want, "each exit forwarded with its code");
                // Forwarding is one event at a time: the one containerd took as the daemon
                // died, before the daemon saw the answer, is the only one sent again.
                assert!(
                    exits.len() - once.len() <= 1,
                    "more than the one event in flight sent twice: {exits:?}"
                );
                break;
            }
            assert!(Instant::now() < deadline, "exits not forwarded: {exits:?}");
            smol::Timer::after(Duration::from_millis(50)).await;
        }
        let after: Vec<_> = sink.received().split_off(forwarded_before);
        assert!(
            after.iter().all(|e| e.topic == "/tasks/exit"),
            "only exits after the restart: {:?}",
            after.iter().map(|e| &e.topic).collect::<Vec<_>>()
        );
    });

    smol::block_on(async {
        let mut c = client(&paths.socket()).await;
        // Every exit, whenever it happened, with its true code.
        for i in 0..60 {
            let waited = common::wait(&mut c, NS, id(i)).await;
            assert_eq!(waited.exit_status, (i + 1) as u32, "{}", id(i));
        }
        // The live ones were adopted and still run; their exits are seen by the new daemon.
        #[allow(clippy::needless_range_loop)]
        for i in 60..90 {
            let state = c
                .state(ns(StateRequest {
                    id: id(i),
                    ..Default::default()
                }))
                .await
                .unwrap()
                .into_inner();
            assert_eq!(
                (state.status, state.pid),
                (TaskStatus::Running as i32, pids[i])
            );
        }
        for (i, bundle) in bundles.iter().enumerate().take(75).skip(60) {
            bundle.tell_exit((i + 1) as u8).unwrap();
        }
        for i in 75..90 {
            c.kill(ns(KillRequest {
                id: id(i),
                signal: 9,
                ..Default::default()
            }))
            .await
            .unwrap();
        }
        for i in 60..90 {
            let want = if i < 75 { (i + 1) as u32 } else { 137 };
            let waited = common::wait(&mut c, NS, id(i)).await;
            assert_eq!(waited.exit_status, want, "{}", id(i));
        }
        // Created ones can still be started, and run.
        #[allow(clippy::needless_range_loop)]
        for i in 90..100 {
            common::start(&mut c, NS, id(i)).await;
            bundles[i].tell_exit(42).unwrap();
            let waited = common::wait(&mut c, NS, id(i)).await;
            assert_eq!(waited.exit_status, 42);
        }
        let gone = c
            .state(ns(StateRequest {
                id: "deleting".into(),
                ..Default::default()
            }))
            .await
            .unwrap_err();
        assert_eq!(gone.code(), Code::NotFound);
        for i in 0..100 {
            common::delete(&mut c, NS, id(i)).await;
        }
    });
    assert_eq!(
        runc_ids(&ns_root),
        vec!["orphan".to_string()],
        "leaked runtime containers"
    );
    let records = std::fs::read_dir(paths.state().join(NS)).unwrap().count();
    assert_eq!(records, 0, "leftover records");
    second.kill();
    reap_children();
}

/// containerd away, a container exits (its record saved as stopped), the daemon is killed with
/// the exit still in its outbox, a new daemon starts, containerd comes back: the exit reaches
/// containerd exactly once, after the container's earlier events. (From memory alone the
/// exit was lost: the record said stopped, so recovery did not publish it again.)
#[test]
fn an_exit_containerd_never_took_survives_kill_9_and_reaches_it_once() {
    let Some(()) = common::needs_daemon() else {
        return;
    };
    rustix::process::set_child_subreaper(rustix::process::Pid::from_raw(1)).unwrap();
    let paths = Paths {
        dir: tempfile::tempdir().unwrap(),
    };
    let log = paths.dir.path().join("shimlessd.log");
    let _cleanup = ForceDelete(paths.runc_root().join(NS));
    let containerd_dir = tempfile::tempdir().unwrap();
    let address = common::sink::EventSink::socket_in(&containerd_dir);
    let id = format!("away-{}", std::process::id());
    let bundle = Bundle::exit_on_demand().unwrap();
    let mut first = daemon(&paths, &log);
    smol::block_on(async {
        let mut admin = Client::connect(&paths.socket()).await.unwrap().admin();
        admin
            .register_publisher(task_service::api::shimless::v1::RegisterPublisherRequest {
                namespace: NS.into(),
                id: id.clone(),
                address: address.display().to_string(),
            })
            .await
            .unwrap();
        let mut c = client(&paths.socket()).await;
        common::create(&mut c, NS, &id, bundle.path()).await;
        common::start(&mut c, NS, &id).await;
        bundle.tell_exit(7).unwrap();
        assert_eq!(common::wait(&mut c, NS, &id).await.exit_status, 7);
    });
    // The record says stopped: recovery has no reason to publish the exit again.
    let record = paths.state().join(NS).join(format!("{id}.json"));
    let deadline = Instant::now() + Duration::from_secs(10);
    while !std::fs::read_to_string(&record).is_ok_and(|r| r.contains("\"stopped\"")) {
        assert!(Instant::now() < deadline, "the exit was never saved");
        std::thread::sleep(Duration::from_millis(10));
    }
    first.kill();
    reap_children();

    let mut second = daemon(&paths, &log);
    let recovered = second.last_line("recovered:").unwrap();
    assert!(
        recovered.contains(&format!("already stopped ({NS}/{id})")),
        "{recovered}"
    );
    let sink = common::sink::EventSink::start_in(containerd_dir);
    let mine = |sink: &common::sink::EventSink| -> Vec<(String, Option<u32>)> {
        sink.received()
            .iter()
            .filter_map(|e| e.event.as_ref().and_then(TaskEvent::from_any))
            .filter(|e| e.container_id() == id)
            .map(|e| {
                let code = match &e {
                    TaskEvent::Exit(exit) => Some(exit.exit_status),
                    _ => None,
                };
                (e.topic().to_string(), code)
            })
            .collect()
    };
    let deadline = Instant::now() + Duration::from_secs(30);
    while !mine(&sink).iter().any(|(topic, _)| topic == "/tasks/exit") {
        assert!(
            Instant::now() < deadline,
            "the exit never reached containerd: {:?}",
            mine(&sink)
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    // Time for a second copy to arrive, if one were sent.
    std::thread::sleep(Duration::from_millis(500));
    assert_eq!(
        mine(&sink),
        [
            ("/tasks/create".to_string(), None),
            ("/tasks/start".to_string(), None),
            ("/tasks/exit".to_string(), Some(7)),
        ],
        "each event once, in order"
    );
    smol::block_on(async {
        let mut c = client(&paths.socket()).await;
        assert_eq!(common::wait(&mut c, NS, &id).await.exit_status, 7);
        common::delete(&mut c, NS, &id).await;
    });
    second.kill();
    reap_children();
}

/// A runtime that returns from `exec` half a second after runc did: the exec has ended by the
/// time the daemon tracks it in the kernel.
const LATE_EXEC_RUNC: &str =
    "#!/bin/sh\nrunc \"$@\"\nrc=$?\ncase \" $* \" in *\" exec \"*) sleep 0.5;; esac\nexit $rc\n";

/// An exec that ended before the daemon tracked it in the kernel, and the daemon killed as soon
/// as the exec's `Start` answered: the next daemon still has its code (kept with the start),
/// never 255. (Before, the watcher saved its exit after the answer, and a kill in the
/// millisecond between lost it; this test cannot hit that millisecond on demand, so it guards
/// the path that no longer has it: the exit saved with the start, read back by recovery.)
#[test]
fn an_exec_that_ended_before_it_was_tracked_keeps_its_code_across_kill_9() {
    let Some(()) = common::needs_daemon() else {
        return;
    };
    rustix::process::set_child_subreaper(rustix::process::Pid::from_raw(1)).unwrap();
    let paths = Paths {
        dir: tempfile::tempdir().unwrap(),
    };
    let log = paths.dir.path().join("shimlessd.log");
    let _cleanup = ForceDelete(paths.runc_root().join(NS));
    let runtime = paths.dir.path().join("runc-late-exec");
    std::fs::write(&runtime, LATE_EXEC_RUNC).unwrap();
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&runtime, std::fs::Permissions::from_mode(0o755)).unwrap();
    let start = || {
        let mut command = Shimlessd::new(env!("CARGO_BIN_EXE_shimlessd"))
            .socket(paths.socket())
            .state_dir(paths.state())
            .runc_root(paths.runc_root())
            .command();
        command.arg("--runtime").arg(&runtime);
        Child::start(command, &log, "serving on").unwrap()
    };
    let bundle = integration::bundle::BundleBuilder::new()
        .args(["sh", "-c", "sleep 1000"])
        .build()
        .unwrap();
    let id = format!("early-{}", std::process::id());
    let mut first = start();
    let process = oci_spec::runtime::ProcessBuilder::default()
        .args(vec!["sh".to_string(), "-c".into(), "exit 4".into()])
        .cwd("/")
        .env(vec!["PATH=/bin".to_string()])
        .build()
        .unwrap();
    smol::block_on(async {
        let mut c = client(&paths.socket()).await;
        common::create(&mut c, NS, &id, bundle.path()).await;
        common::start(&mut c, NS, &id).await;
        c.exec(ns(ExecProcessRequest {
            id: id.clone(),
            exec_id: "e1".into(),
            spec: Some(prost_types::Any {
                type_url: "types.containerd.io/opencontainers/runtime-spec/1/Process".into(),
                value: serde_json::to_vec(&process).unwrap(),
            }),
            ..Default::default()
        }))
        .await
        .unwrap();
        c.start(ns(StartRequest {
            id: id.clone(),
            exec_id: "e1".into(),
        }))
        .await
        .unwrap();
        first.kill();
    });
    reap_children();
    let _second = start();
    smol::block_on(async {
        let mut c = client(&paths.socket()).await;
        let waited = c
            .wait(ns(WaitRequest {
                id: id.clone(),
                exec_id: "e1".into(),
            }))
            .await
            .unwrap()
            .into_inner();
        assert_eq!(waited.exit_status, 4, "the exec's own code, not 255");
        common::kill_wait_delete(&mut c, NS, &id).await;
    });
    reap_children();
}

/// Runs create → start → kill → wait → delete in a loop until the daemon goes away, and returns
/// how many lifecycles completed.
fn churn(socket: PathBuf, bundle: PathBuf, round: usize) -> std::thread::JoinHandle<usize> {
    std::thread::spawn(move || {
        smol::block_on(async {
            let Ok(client) = Client::connect(&socket).await else {
                return 0;
            };
            let mut c = client.task();
            let mut done = 0;
            loop {
                let id = format!("r{round}-{done}");
                let step = async {
                    c.create(ns(CreateTaskRequest {
                        id: id.clone(),
                        bundle: bundle.display().to_string(),
                        ..Default::default()
                    }))
                    .await?;
                    c.start(ns(StartRequest {
                        id: id.clone(),
                        ..Default::default()
                    }))
                    .await?;
                    c.kill(ns(KillRequest {
                        id: id.clone(),
                        signal: 9,
                        ..Default::default()
                    }))
                    .await?;
                    c.wait(ns(WaitRequest {
                        id: id.clone(),
                        ..Default::default()
                    }))
                    .await?;
                    c.delete(ns(DeleteRequest {
                        id: id.clone(),
                        ..Default::default()
                    }))
                    .await?;
                    Ok::<(), tonic::Status>(())
                };
                if step.await.is_err() {
                    return done;
                }
                done += 1;
            }
        })
    })
}

#[test]
fn kill_9_at_arbitrary_points_of_create_and_delete_leaks_nothing() {
    let Some(()) = common::needs_daemon() else {
        return;
    };
    rustix::process::set_child_subreaper(rustix::process::Pid::from_raw(1)).unwrap();
    let paths = Paths {
        dir: tempfile::tempdir().unwrap(),
    };
    let log = paths.dir.path().join("shimlessd.log");
    let ns_root = paths.runc_root().join(NS);
    let _cleanup = ForceDelete(ns_root.clone());
    let bundle = integration::bundle::BundleBuilder::new()
        .args(["sleep", "1000"])
        .build()
        .unwrap();
    let mut completed = 0;
    // Kill points spread over a lifecycle (runc create+start+delete takes ~100-200 ms here).
    for (round, delay_ms) in [37u64, 71, 113, 151, 197, 239, 281, 331]
        .into_iter()
        .enumerate()
    {
        let mut d = daemon(&paths, &log);
        let worker = churn(paths.socket(), bundle.path().to_owned(), round);
        std::thread::sleep(Duration::from_millis(300 + delay_ms));
        d.kill();
        completed += worker.join().unwrap();
        reap_children();
    }
    // A last daemon reconciles, and every container it knows is deleted through the API.
    let _last = daemon(&paths, &log);
    // Let runtime calls the killed daemons left running finish before looking.
    std::thread::sleep(Duration::from_millis(500));
    smol::block_on(async {
        use task_service::api::shimless::v1::ListRequest;
        let mut admin = Client::connect(&paths.socket()).await.unwrap().admin();
        let tasks = admin
            .list(ListRequest {
                namespace: NS.into(),
            })
            .await
            .unwrap()
            .into_inner()
            .tasks;
        let mut c = client(&paths.socket()).await;
        for t in tasks {
            let _ = c
                .kill(ns(KillRequest {
                    id: t.id.clone(),
                    signal: 9,
                    ..Default::default()
                }))
                .await;
            common::wait(&mut c, NS, t.id.clone()).await;
            common::delete(&mut c, NS, t.id.clone()).await;
        }
    });
    reap_children();
    let text = std::fs::read_to_string(&log).unwrap();
    assert!(completed > 0, "no lifecycle completed at all:\n{text}");
    assert_eq!(
        runc_ids(&ns_root),
        Vec::<String>::new(),
        "leaked runtime containers; daemon log:\n{text}"
    );
    let records = std::fs::read_dir(paths.state().join(NS))
        .map(|d| d.count())
        .unwrap_or(0);
    assert_eq!(records, 0, "leftover records");
}
