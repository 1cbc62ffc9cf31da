//! The daemon at the edges containerd relies on (issue 13): `Kill` of a finished process,
//! a `Kill`'s reply before its exit, calls dropped at their deadline, a record that cannot be
//! saved, a bundle that blocks. Real runc, behind a wrapper runtime that can be made slow
//! before or after any command.

use integration::bundle::BundleBuilder;
use integration::{Need, require};
use std::future::Future;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};
use task_service::api::containerd::task::v3::*;
use task_service::api::containerd::v1::types::Status as TaskStatus;
use task_service::config::Config;
use task_service::daemon::Daemon;
use task_service::events::{Received, TaskEvent};
use tonic::{Code, Request};

mod common;
use common::client;

const NS: &str = "shimless-edges";

fn ns<T>(msg: T) -> Request<T> {
    common::request(NS, msg)
}

/// `msg` with a `grpc-timeout` of `limit`.
fn ns_within<T>(msg: T, limit: Duration) -> Request<T> {
    let mut req = ns(msg);
    req.set_timeout(limit);
    req
}

/// A runtime that runs runc, sleeping `<dir>/before-<command>` seconds before it and
/// `<dir>/after-<command>` seconds after it when those files exist.
const SLOW_RUNC: &str = r#"#!/bin/sh
dir=$(dirname "$0")
cmd=
for a; do
    case "$a" in create|start|exec|kill|delete|state) cmd=$a; break;; esac
done
[ -n "$cmd" ] && [ -f "$dir/before-$cmd" ] && sleep "$(cat "$dir/before-$cmd")"
runc "$@"
rc=$?
[ -n "$cmd" ] && [ -f "$dir/after-$cmd" ] && sleep "$(cat "$dir/after-$cmd")"
exit $rc
"#;

struct Running {
    dir: tempfile::TempDir,
    socket: PathBuf,
    daemon: Daemon,
}

impl Running {
    /// Makes the wrapper runtime sleep `seconds` before or after (`when`) `command`; `None`
    /// makes it fast again.
    fn slow(&self, when: &str, command: &str, seconds: Option<f32>) {
        let file = self.dir.path().join(format!("runtime/{when}-{command}"));
        match seconds {
            Some(s) => std::fs::write(file, s.to_string()).unwrap(),
            None => drop(std::fs::remove_file(file)),
        }
    }

    fn state_dir(&self) -> PathBuf {
        self.dir.path().join("state").join(NS)
    }
}

/// A daemon on the wrapper runtime, its executor on one thread (so that anything blocking it
/// freezes every call). Container ids start with `edges-`: runc names a bundle's cgroup after
/// its container, and other test binaries run at the same time.
fn start_daemon() -> Option<Running> {
    require(&[
        Need::Root,
        Need::Program("runc"),
        Need::File("/bin/busybox"),
    ])?;
    let dir = tempfile::tempdir().unwrap();
    let runtime = dir.path().join("runtime/runc-slow");
    std::fs::create_dir_all(runtime.parent().unwrap()).unwrap();
    std::fs::write(&runtime, SLOW_RUNC).unwrap();
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&runtime, std::fs::Permissions::from_mode(0o755)).unwrap();
    let config = Config {
        socket: dir.path().join("shimless.sock"),
        state_dir: dir.path().join("state"),
        runc_root: dir.path().join("runc"),
        runtime: runtime.display().to_string(),
        ..Config::default()
    };
    let daemon = common::serve_in_process(&config);
    Some(Running {
        socket: config.socket,
        dir,
        daemon,
    })
}

/// `fut`'s output, or a panic naming `what` if it takes longer than `limit`.
async fn within<T>(limit: Duration, what: &str, fut: impl Future<Output = T>) -> T {
    futures_lite::future::or(async { Some(fut.await) }, async {
        smol::Timer::after(limit).await;
        None
    })
    .await
    .unwrap_or_else(|| panic!("{what} did not finish within {limit:?}"))
}

fn kill(id: &str, exec_id: &str, signal: u32) -> KillRequest {
    KillRequest {
        id: id.into(),
        exec_id: exec_id.into(),
        signal,
        all: false,
    }
}

fn exec_request(id: &str, exec_id: &str, args: &[&str]) -> ExecProcessRequest {
    let process = oci_spec::runtime::ProcessBuilder::default()
        .args(args.iter().map(|a| a.to_string()).collect::<Vec<_>>())
        .cwd("/")
        .env(vec!["PATH=/bin".to_string()])
        .build()
        .unwrap();
    ExecProcessRequest {
        id: id.into(),
        exec_id: exec_id.into(),
        spec: Some(prost_types::Any {
            type_url: "types.containerd.io/opencontainers/runtime-spec/1/Process".into(),
            value: serde_json::to_vec(&process).unwrap(),
        }),
        ..Default::default()
    }
}

fn start_exec(id: &str, exec_id: &str) -> StartRequest {
    StartRequest {
        id: id.into(),
        exec_id: exec_id.into(),
    }
}

fn wait_exec(id: &str, exec_id: &str) -> WaitRequest {
    WaitRequest {
        id: id.into(),
        exec_id: exec_id.into(),
    }
}

#[test]
fn kill_of_a_process_that_has_exited_is_not_found_as_the_go_shim_answers() {
    let Some(d) = start_daemon() else { return };
    let bundle = BundleBuilder::new()
        .args(["sh", "-c", "sleep 1000"])
        .build()
        .unwrap();
    let done = BundleBuilder::new()
        .args(["sh", "-c", "exit 3"])
        .build()
        .unwrap();
    smol::block_on(async {
        let mut c = client(&d.socket).await;
        common::create(&mut c, NS, "edges-k1", bundle.path()).await;
        common::start(&mut c, NS, "edges-k1").await;
        c.exec(ns(exec_request("edges-k1", "quick", &["true"])))
            .await
            .unwrap();
        c.exec(ns(exec_request("edges-k1", "pending", &["true"])))
            .await
            .unwrap();
        let not_started = c
            .kill(ns(kill("edges-k1", "pending", 9)))
            .await
            .unwrap_err();
        assert_eq!(
            not_started.code(),
            Code::FailedPrecondition,
            "an exec not started yet: {not_started:?}"
        );
        c.start(ns(start_exec("edges-k1", "quick"))).await.unwrap();
        let waited = c.wait(ns(wait_exec("edges-k1", "quick"))).await.unwrap();
        assert_eq!(waited.into_inner().exit_status, 0);
        let exec_done = c.kill(ns(kill("edges-k1", "quick", 15))).await.unwrap_err();
        assert_eq!(exec_done.code(), Code::NotFound, "{exec_done:?}");

        common::create(&mut c, NS, "edges-k2", done.path()).await;
        common::start(&mut c, NS, "edges-k2").await;
        assert_eq!(common::wait(&mut c, NS, "edges-k2").await.exit_status, 3);
        for all in [false, true] {
            let req = KillRequest {
                all,
                ..kill("edges-k2", "", 9)
            };
            let init_done = c.kill(ns(req)).await.unwrap_err();
            assert_eq!(init_done.code(), Code::NotFound, "all={all}: {init_done:?}");
        }
        common::delete(&mut c, NS, "edges-k2").await;
        common::kill_wait_delete(&mut c, NS, "edges-k1").await;
    });
}

#[test]
fn kill_that_races_the_exit_is_not_found_not_runcs_container_not_running() {
    let Some(d) = start_daemon() else { return };
    let bundle = BundleBuilder::new()
        .args(["sh", "-c", "sleep 0.3"])
        .build()
        .unwrap();
    smol::block_on(async {
        let mut c = client(&d.socket).await;
        common::create(&mut c, NS, "edges-r1", bundle.path()).await;
        common::start(&mut c, NS, "edges-r1").await;
        // The init exits while the runtime is still on its way to signal it.
        d.slow("before", "kill", Some(2.0));
        let raced = c.kill(ns(kill("edges-r1", "", 15))).await.unwrap_err();
        d.slow("before", "kill", None);
        assert_eq!(raced.code(), Code::NotFound, "{raced:?}");
        assert_eq!(common::wait(&mut c, NS, "edges-r1").await.exit_status, 0);
        common::delete(&mut c, NS, "edges-r1").await;
    });
}

#[test]
fn a_kills_reply_comes_before_the_exit_it_causes() {
    let Some(d) = start_daemon() else { return };
    let bundle = BundleBuilder::new()
        .args(["sh", "-c", "sleep 1000"])
        .build()
        .unwrap();
    let mut events = d.daemon.events().subscribe();
    smol::block_on(async {
        let mut c = client(&d.socket).await;
        common::create(&mut c, NS, "edges-o1", bundle.path()).await;
        common::start(&mut c, NS, "edges-o1").await;
        // The runtime signals at once but answers a second later, as a loaded runc can.
        d.slow("after", "kill", Some(1.0));
        let killed = async {
            c.kill(ns(kill("edges-o1", "", 9))).await.unwrap();
            Instant::now()
        };
        let exit_seen = async {
            loop {
                match events.next().await {
                    Some(Received::Event(e)) if matches!(e.event, TaskEvent::Exit(_)) => {
                        return Instant::now();
                    }
                    Some(_) => {}
                    None => panic!("the event stream ended"),
                }
            }
        };
        let (replied, exited) = within(
            Duration::from_secs(20),
            "the kill and its exit",
            futures_lite::future::zip(killed, exit_seen),
        )
        .await;
        d.slow("after", "kill", None);
        // A reply arrives over the socket a little after the daemon sends it; the exit must
        // not be published before the reply was sent (the wrapper's second makes that plain).
        assert!(
            exited + Duration::from_millis(300) >= replied,
            "the exit was published {:?} before the kill's reply",
            replied - exited
        );
        assert_eq!(common::wait(&mut c, NS, "edges-o1").await.exit_status, 137);
        common::delete(&mut c, NS, "edges-o1").await;
    });
}

/// Sets or clears the immutable flag of `path` (`chattr`): nothing can be created, renamed or
/// removed in an immutable directory, so every save of a record there fails.
fn immutable(path: &Path, on: bool) {
    let flag = if on { "+i" } else { "-i" };
    let status = std::process::Command::new("chattr")
        .arg(flag)
        .arg(path)
        .status()
        .expect("chattr runs");
    assert!(status.success(), "chattr {flag} {}", path.display());
}

#[test]
fn an_exec_whose_start_cannot_be_saved_is_killed_and_its_exit_reported() {
    let Some(d) = start_daemon() else { return };
    if require(&[Need::Program("chattr")]).is_none() {
        return;
    }
    let bundle = BundleBuilder::new()
        .args(["sh", "-c", "sleep 1000"])
        .build()
        .unwrap();
    smol::block_on(async {
        let mut c = client(&d.socket).await;
        common::create(&mut c, NS, "edges-s1", bundle.path()).await;
        common::start(&mut c, NS, "edges-s1").await;
        c.exec(ns(exec_request("edges-s1", "e1", &["sleep", "1000"])))
            .await
            .unwrap();
        immutable(&d.state_dir(), true);
        let started = c.start(ns(start_exec("edges-s1", "e1"))).await;
        immutable(&d.state_dir(), false);
        let failed = started.unwrap_err();
        assert_eq!(failed.code(), Code::Internal, "{failed:?}");
        assert!(failed.message().contains("save"), "{}", failed.message());
        let waited = within(
            Duration::from_secs(10),
            "Wait of the exec whose start failed",
            c.wait(ns(wait_exec("edges-s1", "e1"))),
        )
        .await
        .unwrap()
        .into_inner();
        assert_eq!(waited.exit_status, 137, "killed, not left running");
        c.kill(ns(kill("edges-s1", "", 9))).await.unwrap();
        let init = within(
            Duration::from_secs(10),
            "Wait of the init (its exit is not held by the exec)",
            common::wait(&mut c, NS, "edges-s1"),
        )
        .await;
        assert_eq!(init.exit_status, 137);
        common::delete(&mut c, NS, "edges-s1").await;
    });
}

#[test]
fn an_exec_start_dropped_at_its_deadline_strands_nothing() {
    let Some(d) = start_daemon() else { return };
    let bundle = BundleBuilder::new()
        .args(["sh", "-c", "sleep 1000"])
        .build()
        .unwrap();
    smol::block_on(async {
        let mut c = client(&d.socket).await;
        common::create(&mut c, NS, "edges-x1", bundle.path()).await;
        common::start(&mut c, NS, "edges-x1").await;
        c.exec(ns(exec_request("edges-x1", "e1", &["sleep", "1000"])))
            .await
            .unwrap();
        // runc has made the process when the call's deadline passes.
        d.slow("after", "exec", Some(3.0));
        let dropped = c
            .start(ns_within(
                start_exec("edges-x1", "e1"),
                Duration::from_secs(1),
            ))
            .await
            .unwrap_err();
        d.slow("after", "exec", None);
        assert_eq!(dropped.code(), Code::DeadlineExceeded, "{dropped:?}");
        let waited = within(
            Duration::from_secs(10),
            "Wait of the exec whose Start was dropped",
            c.wait(ns(wait_exec("edges-x1", "e1"))),
        )
        .await
        .unwrap()
        .into_inner();
        assert_eq!(waited.exit_status, 137, "nobody heard it start: killed");
        c.kill(ns(kill("edges-x1", "", 9))).await.unwrap();
        let init = within(
            Duration::from_secs(10),
            "Wait of the init",
            common::wait(&mut c, NS, "edges-x1"),
        )
        .await;
        assert_eq!(init.exit_status, 137);
        common::delete(&mut c, NS, "edges-x1").await;
    });
}

/// Whether runc (under the daemon's root for the test namespace) knows container `id`.
fn runc_knows(d: &Running, id: &str) -> bool {
    let root = d.dir.path().join("runc").join(NS);
    std::process::Command::new("runc")
        .arg("--root")
        .arg(root)
        .args(["state", id])
        .output()
        .unwrap()
        .status
        .success()
}

#[test]
fn a_create_dropped_at_its_deadline_is_undone() {
    use task_service::api::containerd::types::Mount;
    let Some(d) = start_daemon() else { return };
    let image = BundleBuilder::new()
        .args(["sleep", "1000"])
        .build()
        .unwrap();
    let bundle = d.dir.path().join("bundle");
    std::fs::create_dir_all(bundle.join("rootfs")).unwrap();
    std::fs::copy(image.path().join("config.json"), bundle.join("config.json")).unwrap();
    let rootfs = vec![Mount {
        r#type: "bind".into(),
        source: image.rootfs().display().to_string(),
        target: String::new(),
        options: vec!["rbind".into(), "ro".into()],
    }];
    let create = CreateTaskRequest {
        id: "edges-d1".into(),
        bundle: bundle.display().to_string(),
        rootfs,
        ..Default::default()
    };
    smol::block_on(async {
        let mut c = client(&d.socket).await;
        d.slow("after", "create", Some(1.5));
        let dropped = c
            .create(ns_within(create.clone(), Duration::from_millis(400)))
            .await
            .unwrap_err();
        assert_eq!(dropped.code(), Code::DeadlineExceeded, "{dropped:?}");
        let record = d.state_dir().join("edges-d1.json");
        let deadline = Instant::now() + Duration::from_secs(15);
        while (record.exists() || bundle.join("rootfs/bin").exists() || runc_knows(&d, "edges-d1"))
            && Instant::now() < deadline
        {
            smol::Timer::after(Duration::from_millis(100)).await;
        }
        d.slow("after", "create", None);
        assert!(!record.exists(), "no `creating` record is left");
        assert_eq!(
            std::fs::read_dir(bundle.join("rootfs")).unwrap().count(),
            0,
            "the rootfs is unmounted"
        );
        assert!(!runc_knows(&d, "edges-d1"), "runc's container is deleted");
        // Undone entirely: the same Create succeeds now.
        c.create(ns(create)).await.unwrap();
        common::start(&mut c, NS, "edges-d1").await;
        common::kill_wait_delete(&mut c, NS, "edges-d1").await;
    });
}

fn mkfifo(path: &Path) {
    rustix::fs::mknodat(
        rustix::fs::CWD,
        path,
        rustix::fs::FileType::Fifo,
        rustix::fs::Mode::from_raw_mode(0o600),
        0,
    )
    .unwrap();
}

#[test]
fn creates_whose_config_is_a_fifo_hold_only_themselves_and_meet_their_deadline() {
    let Some(d) = start_daemon() else { return };
    let fifos: Vec<PathBuf> = (0..2)
        .map(|n| {
            let bundle = d.dir.path().join(format!("fifo-bundle-{n}"));
            std::fs::create_dir_all(&bundle).unwrap();
            mkfifo(&bundle.join("config.json"));
            bundle
        })
        .collect();
    smol::block_on(async {
        let c = client(&d.socket).await;
        let create = |n: usize| {
            let mut c = c.clone();
            let req = CreateTaskRequest {
                id: format!("edges-f{n}"),
                bundle: fifos[n].display().to_string(),
                ..Default::default()
            };
            async move {
                let started = Instant::now();
                let err = c
                    .create(ns_within(req, Duration::from_secs(1)))
                    .await
                    .unwrap_err();
                (err.code(), started.elapsed())
            }
        };
        let both = futures_lite::future::zip(create(0), create(1));
        let mut other = c.clone();
        let meanwhile = async {
            smol::Timer::after(Duration::from_millis(300)).await;
            let started = Instant::now();
            other
                .connect(ns(ConnectRequest { id: "any".into() }))
                .await
                .unwrap();
            started.elapsed()
        };
        let ((a, b), answered) = within(
            Duration::from_secs(10),
            "two Creates on FIFOs and a Connect",
            futures_lite::future::zip(both, meanwhile),
        )
        .await;
        for (code, took) in [a, b] {
            assert_eq!(code, Code::DeadlineExceeded);
            assert!(took < Duration::from_secs(5), "answered after {took:?}");
        }
        assert!(
            answered < Duration::from_secs(2),
            "Connect took {answered:?}"
        );
    });
    // Let the blocked readers go (a writer's open and close is an end of file to them).
    for bundle in &fifos {
        let _ = rustix::fs::open(
            bundle.join("config.json"),
            rustix::fs::OFlags::WRONLY | rustix::fs::OFlags::NONBLOCK,
            rustix::fs::Mode::empty(),
        );
    }
}

#[test]
fn a_start_dropped_at_its_deadline_still_ends_running_and_announced() {
    let Some(d) = start_daemon() else { return };
    let bundle = BundleBuilder::new()
        .args(["sh", "-c", "sleep 1000"])
        .build()
        .unwrap();
    let mut events = d.daemon.events().subscribe();
    smol::block_on(async {
        let mut c = client(&d.socket).await;
        common::create(&mut c, NS, "edges-st1", bundle.path()).await;
        d.slow("after", "start", Some(1.5));
        let dropped = c
            .start(ns_within(
                StartRequest {
                    id: "edges-st1".into(),
                    ..Default::default()
                },
                Duration::from_millis(400),
            ))
            .await
            .unwrap_err();
        d.slow("after", "start", None);
        assert_eq!(dropped.code(), Code::DeadlineExceeded, "{dropped:?}");
        let deadline = Instant::now() + Duration::from_secs(15);
        let status = loop {
            let state = c
                .state(ns(StateRequest {
                    id: "edges-st1".into(),
                    ..Default::default()
                }))
                .await
                .unwrap()
                .into_inner();
            if state.status != TaskStatus::Created as i32 || Instant::now() > deadline {
                break state.status;
            }
            smol::Timer::after(Duration::from_millis(100)).await;
        };
        assert_eq!(
            status,
            TaskStatus::Running as i32,
            "the init runs: so says State"
        );
        // Published after the record is saved, so a moment after State says running.
        within(Duration::from_secs(10), "TaskStart", async {
            while !matches!(
                events.next().await,
                Some(Received::Event(e)) if matches!(e.event, TaskEvent::Start(_))
            ) {}
        })
        .await;
        common::kill_wait_delete(&mut c, NS, "edges-st1").await;
    });
}

#[test]
fn an_exec_that_ends_before_it_is_tracked_has_its_exit_saved_before_start_answers() {
    let Some(d) = start_daemon() else { return };
    let bundle = BundleBuilder::new()
        .args(["sh", "-c", "sleep 1000"])
        .build()
        .unwrap();
    let id = "edges-early1";
    smol::block_on(async {
        let mut c = client(&d.socket).await;
        common::create(&mut c, NS, id, bundle.path()).await;
        common::start(&mut c, NS, id).await;
        let mut events = d.daemon.events().subscribe();
        c.exec(ns(exec_request(id, "e1", &["sh", "-c", "exit 4"])))
            .await
            .unwrap();
        // The runtime returns long after the exec has ended: the daemon tracks a dead process.
        d.slow("after", "exec", Some(0.5));
        c.start(ns(start_exec(id, "e1"))).await.unwrap();
        d.slow("after", "exec", None);
        // A daemon killed now must still know the code: the record has it already (taken by
        // the Start, or the watcher's save that follows it).
        let record = std::fs::read(d.state_dir().join(format!("{id}.json"))).unwrap();
        let record: serde_json::Value = serde_json::from_slice(&record).unwrap();
        let state = &record["container"]["execs"]["e1"]["state"];
        let saved = [
            &record["early_exits"]["e1"]["status"]["exited"],
            &state["stopped"]["status"]["exited"],
        ];
        assert!(saved.contains(&&serde_json::json!(4)), "saved as {record}");
        let waited = c.wait(ns(wait_exec(id, "e1"))).await.unwrap().into_inner();
        assert_eq!(waited.exit_status, 4);
        // containerd sees it started, then exited, once (after the container's own events:
        // the first subscriber also gets what came before it).
        let mut seen = Vec::new();
        while let Some(Received::Event(e)) = events.try_next() {
            if e.event.container_id() == id && e.event.topic().contains("exec")
                || matches!(&e.event, TaskEvent::Exit(x) if x.id == "e1")
            {
                seen.push(e.event.topic());
            }
        }
        assert_eq!(
            seen,
            ["/tasks/exec-added", "/tasks/exec-started", "/tasks/exit"]
        );
        common::kill_wait_delete(&mut c, NS, id).await;
    });
}
