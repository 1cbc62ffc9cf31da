//! The daemon end to end: real runc containers driven through the gRPC Task API.

use integration::bundle::BundleBuilder;
use integration::{Need, require};
use task_service::api::containerd::task::v3::*;
use task_service::api::containerd::v1::types::Status as TaskStatus;
use task_service::config::Config;
use task_service::daemon::Daemon;
use task_service::events::{Received, TaskEvent};

mod common;
use common::client;

const NS: &str = "shimless-test";

fn ns<T>(msg: T) -> Request<T> {
    common::request(NS, msg)
}
use tonic::{Code, Request};

struct Running {
    dir: tempfile::TempDir,
    socket: std::path::PathBuf,
    daemon: Daemon,
}

fn start_daemon() -> Option<Running> {
    require(&[
        Need::Root,
        Need::Program("runc"),
        Need::File("/bin/busybox"),
    ])?;
    let dir = tempfile::tempdir().unwrap();
    let config = Config {
        socket: dir.path().join("shimless.sock"),
        state_dir: dir.path().join("state"),
        runc_root: dir.path().join("runc"),
        ..Config::default()
    };
    let daemon = common::serve_in_process(&config);
    Some(Running {
        socket: config.socket,
        dir,
        daemon,
    })
}

#[test]
fn a_container_runs_exits_and_is_deleted_with_its_true_code() {
    let Some(d) = start_daemon() else { return };
    let bundle = BundleBuilder::new()
        .args(["sh", "-c", "echo hello from the container; exit 7"])
        .build()
        .unwrap();
    let log = d.dir.path().join("out.log");
    let mut events = d.daemon.events().subscribe();
    smol::block_on(async {
        let mut c = client(&d.socket).await;
        let create = CreateTaskRequest {
            id: "c1".into(),
            bundle: bundle.path().display().to_string(),
            stdout: format!("file://{}", log.display()),
            ..Default::default()
        };
        let pid = c.create(ns(create)).await.unwrap().into_inner().pid;
        assert!(pid > 0);
        let state = c
            .state(ns(StateRequest {
                id: "c1".into(),
                ..Default::default()
            }))
            .await
            .unwrap()
            .into_inner();
        assert_eq!((state.status, state.pid), (TaskStatus::Created as i32, pid));
        assert_eq!(
            c.start(ns(StartRequest {
                id: "c1".into(),
                ..Default::default()
            }))
            .await
            .unwrap()
            .into_inner()
            .pid,
            pid
        );
        let waited = common::wait(&mut c, NS, "c1").await;
        assert_eq!(waited.exit_status, 7);
        let state = c
            .state(ns(StateRequest {
                id: "c1".into(),
                ..Default::default()
            }))
            .await
            .unwrap()
            .into_inner();
        assert_eq!(
            (state.status, state.exit_status),
            (TaskStatus::Stopped as i32, 7)
        );
        let deleted = common::delete(&mut c, NS, "c1").await;
        assert_eq!((deleted.pid, deleted.exit_status), (pid, 7));
        let gone = c
            .state(ns(StateRequest {
                id: "c1".into(),
                ..Default::default()
            }))
            .await
            .unwrap_err();
        assert_eq!(gone.code(), Code::NotFound);
    });
    assert_eq!(
        std::fs::read_to_string(&log).unwrap(),
        "hello from the container\n"
    );
    let topics: Vec<&str> = std::iter::from_fn(|| match events.try_next() {
        Some(Received::Event(e)) => Some(e.event.topic()),
        _ => None,
    })
    .collect();
    assert_eq!(
        topics,
        [
            "/tasks/create",
            "/tasks/start",
            "/tasks/exit",
            "/tasks/delete"
        ]
    );
    assert!(
        !d.dir.path().join("state/shimless-test/c1.json").exists(),
        "the record is removed"
    );
}

#[test]
fn a_killed_container_reports_128_plus_the_signal_and_bad_requests_get_their_codes() {
    let Some(d) = start_daemon() else { return };
    let bundle = BundleBuilder::new().args(["sleep", "600"]).build().unwrap();
    let mut events = d.daemon.events().subscribe();
    smol::block_on(async {
        let mut c = client(&d.socket).await;
        let create = |id: &str| CreateTaskRequest {
            id: id.into(),
            bundle: bundle.path().display().to_string(),
            ..Default::default()
        };
        c.create(ns(create("k1"))).await.unwrap();
        assert!(
            d.dir.path().join("state/shimless-test/k1.json").exists(),
            "the record is saved"
        );
        assert_eq!(
            c.create(ns(create("k1"))).await.unwrap_err().code(),
            Code::AlreadyExists
        );
        assert_eq!(
            c.create(ns(create("../x"))).await.unwrap_err().code(),
            Code::InvalidArgument
        );
        let relative = CreateTaskRequest {
            id: "k2".into(),
            bundle: "rel".into(),
            ..Default::default()
        };
        assert_eq!(
            c.create(ns(relative)).await.unwrap_err().code(),
            Code::InvalidArgument
        );
        let bad_io = CreateTaskRequest {
            stdout: "relative.fifo".into(),
            ..create("k3")
        };
        let err = c.create(ns(bad_io)).await.unwrap_err();
        assert_eq!(err.code(), Code::InvalidArgument);
        assert!(err.message().contains("stdout"), "{}", err.message());
        let unknown = c
            .start(ns(StartRequest {
                id: "nope".into(),
                ..Default::default()
            }))
            .await
            .unwrap_err();
        assert_eq!(unknown.code(), Code::NotFound);

        common::start(&mut c, NS, "k1").await;
        let running = c
            .delete(ns(DeleteRequest {
                id: "k1".into(),
                ..Default::default()
            }))
            .await
            .unwrap_err();
        assert_eq!(
            running.code(),
            Code::FailedPrecondition,
            "{}",
            running.message()
        );
        c.pause(ns(PauseRequest { id: "k1".into() })).await.unwrap();
        let state = c
            .state(ns(StateRequest {
                id: "k1".into(),
                ..Default::default()
            }))
            .await
            .unwrap()
            .into_inner();
        assert_eq!(state.status, TaskStatus::Paused as i32);
        assert_eq!(
            c.pause(ns(PauseRequest { id: "k1".into() }))
                .await
                .unwrap_err()
                .code(),
            Code::FailedPrecondition
        );
        c.resume(ns(ResumeRequest { id: "k1".into() }))
            .await
            .unwrap();
        let pids = c
            .pids(ns(PidsRequest { id: "k1".into() }))
            .await
            .unwrap()
            .into_inner();
        assert_eq!(pids.processes.len(), 1);

        c.kill(ns(KillRequest {
            id: "k1".into(),
            signal: 9,
            ..Default::default()
        }))
        .await
        .unwrap();
        let waited = common::wait(&mut c, NS, "k1").await;
        assert_eq!(waited.exit_status, 137);
        common::delete(&mut c, NS, "k1").await;
        let exec = c
            .exec(ns(ExecProcessRequest {
                id: "k1".into(),
                ..Default::default()
            }))
            .await
            .unwrap_err();
        assert_eq!(exec.code(), Code::NotFound, "exec in a deleted container");
    });
    let exit = std::iter::from_fn(|| events.try_next()).find_map(|r| match r {
        Received::Event(e) => match e.event {
            TaskEvent::Exit(exit) => Some(exit),
            _ => None,
        },
        Received::Lagged(_) => None,
    });
    assert_eq!(
        exit.map(|e| (e.container_id, e.exit_status)),
        Some(("k1".to_string(), 137))
    );
}

#[test]
fn an_exec_runs_with_its_own_output_and_exit_and_init_waits_for_it() {
    let Some(d) = start_daemon() else { return };
    let bundle = BundleBuilder::new()
        .args(["sh", "-c", "sleep 1000"])
        .build()
        .unwrap();
    let log = d.dir.path().join("exec.log");
    smol::block_on(async {
        let mut c = client(&d.socket).await;
        let id = || "ex1".to_string();
        common::create(&mut c, NS, id(), bundle.path()).await;
        common::start(&mut c, NS, id()).await;
        let process = oci_spec::runtime::ProcessBuilder::default()
            .args(vec![
                "sh".to_string(),
                "-c".into(),
                "echo from the exec; exit 5".into(),
            ])
            .cwd("/")
            .env(vec!["PATH=/bin".to_string()])
            .build()
            .unwrap();
        let exec = |exec_id: &str, spec: Vec<u8>| ExecProcessRequest {
            id: id(),
            exec_id: exec_id.into(),
            stdout: format!("file://{}", log.display()),
            spec: Some(prost_types::Any {
                type_url: "types.containerd.io/opencontainers/runtime-spec/1/Process".into(),
                value: spec,
            }),
            ..Default::default()
        };
        // Bad input first: a spec that is not a Process, and an exec id with a slash.
        let bad = c
            .exec(ns(exec("e1", b"{not json".to_vec())))
            .await
            .unwrap_err();
        assert_eq!(bad.code(), Code::InvalidArgument, "{bad:?}");
        let json = serde_json::to_vec(&process).unwrap();
        let bad = c.exec(ns(exec("a/b", json.clone()))).await.unwrap_err();
        assert_eq!(bad.code(), Code::InvalidArgument, "{bad:?}");
        c.exec(ns(exec("e1", json.clone()))).await.unwrap();
        let again = c.exec(ns(exec("e1", json))).await.unwrap_err();
        assert_eq!(again.code(), Code::AlreadyExists, "{again:?}");
        let pid = c
            .start(ns(StartRequest {
                id: id(),
                exec_id: "e1".into(),
            }))
            .await
            .unwrap()
            .into_inner()
            .pid;
        assert!(pid > 0);
        let waited = c
            .wait(ns(WaitRequest {
                id: id(),
                exec_id: "e1".into(),
            }))
            .await
            .unwrap()
            .into_inner();
        assert_eq!(waited.exit_status, 5);
        let state = c
            .state(ns(StateRequest {
                id: id(),
                exec_id: "e1".into(),
            }))
            .await
            .unwrap()
            .into_inner();
        assert_eq!(
            (state.status, state.exit_status, state.pid),
            (TaskStatus::Stopped as i32, 5, pid)
        );
        assert_eq!(
            std::fs::read_to_string(&log).unwrap(),
            "from the exec\n",
            "the exec's own stdout"
        );
        let init = c
            .state(ns(StateRequest {
                id: id(),
                ..Default::default()
            }))
            .await
            .unwrap()
            .into_inner();
        assert_eq!(init.status, TaskStatus::Running as i32, "init unaffected");
        let deleted = c
            .delete(ns(DeleteRequest {
                id: id(),
                exec_id: "e1".into(),
            }))
            .await
            .unwrap()
            .into_inner();
        assert_eq!((deleted.pid, deleted.exit_status), (pid, 5));
        c.kill(ns(KillRequest {
            id: id(),
            signal: 9,
            ..Default::default()
        }))
        .await
        .unwrap();
        let waited = common::wait(&mut c, NS, id()).await;
        assert_eq!(waited.exit_status, 137);
        common::delete(&mut c, NS, id()).await;
    });
}

fn mkfifo(path: &std::path::Path) {
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
fn a_terminal_container_gets_its_window_size_input_and_output_through_the_pty() {
    let Some(d) = start_daemon() else { return };
    let bundle = BundleBuilder::new()
        .args(["sh", "-c", "stty size; read line; echo got:$line; exit 3"])
        .terminal(true)
        .build()
        .unwrap();
    let (stdin, stdout) = (d.dir.path().join("in"), d.dir.path().join("out"));
    mkfifo(&stdin);
    mkfifo(&stdout);
    // containerd's side: its stdout reader is open before Create.
    let out = rustix::fs::open(
        &stdout,
        rustix::fs::OFlags::RDONLY | rustix::fs::OFlags::NONBLOCK,
        rustix::fs::Mode::empty(),
    )
    .unwrap();
    smol::block_on(async {
        let mut c = client(&d.socket).await;
        c.create(ns(CreateTaskRequest {
            id: "tty1".into(),
            bundle: bundle.path().display().to_string(),
            terminal: true,
            stdin: stdin.display().to_string(),
            stdout: stdout.display().to_string(),
            ..Default::default()
        }))
        .await
        .unwrap();
        let too_big = c
            .resize_pty(ns(ResizePtyRequest {
                id: "tty1".into(),
                exec_id: String::new(),
                width: 70000,
                height: 10,
            }))
            .await
            .unwrap_err();
        assert_eq!(too_big.code(), Code::InvalidArgument, "{too_big:?}");
        c.resize_pty(ns(ResizePtyRequest {
            id: "tty1".into(),
            exec_id: String::new(),
            width: 100,
            height: 24,
        }))
        .await
        .unwrap();
        common::start(&mut c, NS, "tty1").await;
        let mut input = std::fs::OpenOptions::new()
            .write(true)
            .open(&stdin)
            .unwrap();
        std::io::Write::write_all(&mut input, b"hello\n").unwrap();
        let waited = common::wait(&mut c, NS, "tty1").await;
        assert_eq!(waited.exit_status, 3);
    });
    // Everything the pty printed, up to the copier's end-of-file.
    let flags = rustix::fs::fcntl_getfl(&out).unwrap();
    rustix::fs::fcntl_setfl(&out, flags - rustix::fs::OFlags::NONBLOCK).unwrap();
    let mut text = String::new();
    std::io::Read::read_to_string(&mut std::fs::File::from(out), &mut text).unwrap();
    assert!(
        text.contains("24 100"),
        "window size seen by stty: {text:?}"
    );
    assert!(
        text.contains("got:hello"),
        "input through the pty: {text:?}"
    );
    smol::block_on(async {
        let mut c = client(&d.socket).await;
        common::delete(&mut c, NS, "tty1").await;
    });
}

/// The value of a cgroup v1 file of `pid`'s cgroup under `controller`.
fn cgroup_value(pid: u32, controller: &str, file: &str) -> String {
    let cgroups = std::fs::read_to_string(format!("/proc/{pid}/cgroup")).unwrap();
    let path = cgroups
        .lines()
        .find_map(|l| {
            let mut parts = l.splitn(3, ':');
            let (_, ctrls, path) = (parts.next()?, parts.next()?, parts.next()?);
            ctrls
                .split(',')
                .any(|c| c == controller)
                .then(|| path.to_string())
        })
        .unwrap();
    std::fs::read_to_string(format!("/sys/fs/cgroup/{controller}{path}/{file}"))
        .unwrap()
        .trim()
        .to_string()
}

#[test]
fn update_changes_the_containers_cgroup_and_bad_resources_are_refused() {
    let Some(d) = start_daemon() else { return };
    if integration::require(&[Need::File("/sys/fs/cgroup/pids")]).is_none() {
        return;
    }
    let bundle = BundleBuilder::new()
        .args(["sh", "-c", "sleep 1000"])
        .build()
        .unwrap();
    smol::block_on(async {
        let mut c = client(&d.socket).await;
        let pid = c
            .create(ns(CreateTaskRequest {
                id: "up1".into(),
                bundle: bundle.path().display().to_string(),
                ..Default::default()
            }))
            .await
            .unwrap()
            .into_inner()
            .pid;
        common::start(&mut c, NS, "up1").await;
        let resources = |json: &str| UpdateTaskRequest {
            id: "up1".into(),
            resources: Some(prost_types::Any {
                type_url: "types.containerd.io/opencontainers/runtime-spec/1/LinuxResources".into(),
                value: json.as_bytes().to_vec(),
            }),
            annotations: Default::default(),
        };
        c.update(ns(resources(
            r#"{"pids":{"limit":77},"cpu":{"shares":512}}"#,
        )))
        .await
        .unwrap();
        assert_eq!(cgroup_value(pid, "pids", "pids.max"), "77");
        assert_eq!(cgroup_value(pid, "cpu", "cpu.shares"), "512");
        let bad = c.update(ns(resources("{\"pids\":"))).await.unwrap_err();
        assert_eq!(bad.code(), Code::InvalidArgument, "{bad:?}");
        assert!(
            bad.message().contains("LinuxResources"),
            "{}",
            bad.message()
        );
        let none = c
            .update(ns(UpdateTaskRequest {
                id: "up1".into(),
                ..Default::default()
            }))
            .await
            .unwrap_err();
        assert_eq!(none.code(), Code::InvalidArgument, "{none:?}");
        assert_eq!(
            cgroup_value(pid, "pids", "pids.max"),
            "77",
            "unchanged by bad input"
        );
        let stats = c
            .stats(ns(StatsRequest { id: "up1".into() }))
            .await
            .unwrap()
            .into_inner()
            .stats
            .unwrap();
        assert_eq!(stats.type_url, "io.containerd.cgroups.v1.Metrics");
        let metrics =
            <task_service::api::io::containerd::cgroups::v1::Metrics as prost::Message>::decode(
                stats.value.as_slice(),
            )
            .unwrap();
        let pids = metrics.pids.unwrap();
        assert_eq!(
            pids.limit, 77,
            "the updated limit, read back through runc events"
        );
        assert!(pids.current >= 1, "{pids:?}");
        assert!(metrics.memory.unwrap().usage.unwrap().usage > 0);
        common::kill_wait_delete(&mut c, NS, "up1").await;
    });
}

#[test]
fn connect_shutdown_checkpoint_and_bad_bundles() {
    let Some(d) = start_daemon() else { return };
    let bundle = BundleBuilder::new()
        .args(["sh", "-c", "sleep 1000"])
        .build()
        .unwrap();
    smol::block_on(async {
        let mut c = client(&d.socket).await;
        // A bundle without config.json, and one whose spec disagrees about a terminal.
        let empty = tempfile::tempdir().unwrap();
        let bad = c
            .create(ns(CreateTaskRequest {
                id: "b1".into(),
                bundle: empty.path().display().to_string(),
                ..Default::default()
            }))
            .await
            .unwrap_err();
        assert_eq!(bad.code(), Code::InvalidArgument);
        assert!(bad.message().contains("config.json"), "{}", bad.message());
        let bad = c
            .create(ns(CreateTaskRequest {
                id: "b1".into(),
                bundle: bundle.path().display().to_string(),
                terminal: true,
                ..Default::default()
            }))
            .await
            .unwrap_err();
        assert_eq!(bad.code(), Code::InvalidArgument);
        assert!(bad.message().contains("terminal=true"), "{}", bad.message());
        let pid = c
            .create(ns(CreateTaskRequest {
                id: "b1".into(),
                bundle: bundle.path().display().to_string(),
                ..Default::default()
            }))
            .await
            .unwrap()
            .into_inner()
            .pid;
        let connected = c
            .connect(ns(ConnectRequest { id: "b1".into() }))
            .await
            .unwrap()
            .into_inner();
        assert_eq!(
            (connected.shim_pid, connected.task_pid),
            (std::process::id(), pid),
            "the daemon is the shim"
        );
        let checkpoint = c
            .checkpoint(ns(CheckpointTaskRequest {
                id: "b1".into(),
                ..Default::default()
            }))
            .await
            .unwrap_err();
        assert_eq!(checkpoint.code(), Code::Unimplemented);
        assert!(
            checkpoint.message().contains("criu"),
            "{}",
            checkpoint.message()
        );
        // containerd calls Shutdown after each delete: the daemon must keep serving.
        c.shutdown(ns(ShutdownRequest {
            id: "b1".into(),
            now: true,
        }))
        .await
        .unwrap();
        let state = c
            .state(ns(StateRequest {
                id: "b1".into(),
                ..Default::default()
            }))
            .await
            .unwrap()
            .into_inner();
        assert_eq!(state.status, TaskStatus::Created as i32);
        common::delete(&mut c, NS, "b1").await;
    });
}

#[test]
fn rootfs_mounts_from_create_are_mounted_for_the_container_and_unmounted_on_delete() {
    use task_service::api::containerd::types::Mount;
    let Some(d) = start_daemon() else { return };
    let image = BundleBuilder::new()
        .args(["sh", "-c", "echo written > /marker; exit 6"])
        .build()
        .unwrap();
    // containerd's layout: a bundle with config.json and an empty rootfs, plus the snapshot.
    let bundle = d.dir.path().join("bundle");
    std::fs::create_dir_all(bundle.join("rootfs")).unwrap();
    std::fs::copy(image.path().join("config.json"), bundle.join("config.json")).unwrap();
    let (upper, work) = (d.dir.path().join("upper"), d.dir.path().join("work"));
    std::fs::create_dir_all(&upper).unwrap();
    std::fs::create_dir_all(&work).unwrap();
    let overlay = |lower: &std::path::Path| Mount {
        r#type: "overlay".into(),
        source: "overlay".into(),
        target: String::new(),
        options: vec![
            format!("lowerdir={}", lower.display()),
            format!("upperdir={}", upper.display()),
            format!("workdir={}", work.display()),
        ],
    };
    let create = |rootfs: Vec<Mount>| CreateTaskRequest {
        id: "ov1".into(),
        bundle: bundle.display().to_string(),
        rootfs,
        ..Default::default()
    };
    smol::block_on(async {
        let mut c = client(&d.socket).await;
        let mut targeted = overlay(&image.rootfs());
        targeted.target = "/etc".into();
        let bad = c.create(ns(create(vec![targeted]))).await.unwrap_err();
        assert_eq!(bad.code(), Code::InvalidArgument);
        assert!(bad.message().contains("has a target"), "{}", bad.message());
        let missing = c
            .create(ns(create(vec![overlay(std::path::Path::new(
                "/nonexistent/lower",
            ))])))
            .await
            .unwrap_err();
        assert_eq!(missing.code(), Code::InvalidArgument);
        assert!(
            missing.message().contains("mounting overlay"),
            "{}",
            missing.message()
        );
        let gone = c
            .state(ns(StateRequest {
                id: "ov1".into(),
                ..Default::default()
            }))
            .await
            .unwrap_err();
        assert_eq!(
            gone.code(),
            Code::NotFound,
            "a failed create leaves nothing"
        );
        c.create(ns(create(vec![overlay(&image.rootfs())])))
            .await
            .unwrap();
        assert!(
            bundle.join("rootfs/bin/busybox").exists(),
            "the snapshot is mounted"
        );
        common::start(&mut c, NS, "ov1").await;
        let waited = common::wait(&mut c, NS, "ov1").await;
        assert_eq!(waited.exit_status, 6);
        common::delete(&mut c, NS, "ov1").await;
    });
    assert_eq!(
        std::fs::read_dir(bundle.join("rootfs")).unwrap().count(),
        0,
        "unmounted on delete"
    );
    assert_eq!(
        std::fs::read_to_string(upper.join("marker")).unwrap(),
        "written\n",
        "the container wrote through the overlay"
    );
    assert!(
        !image.rootfs().join("marker").exists(),
        "the lower layer is untouched"
    );
}

#[test]
fn close_io_ends_a_terminal_process_input() {
    let Some(d) = start_daemon() else { return };
    let bundle = BundleBuilder::new()
        .args(["sh", "-c", "cat > /dev/null; echo input-ended; exit 2"])
        .terminal(true)
        .build()
        .unwrap();
    let stdin = d.dir.path().join("in2");
    mkfifo(&stdin);
    smol::block_on(async {
        let mut c = client(&d.socket).await;
        c.create(ns(CreateTaskRequest {
            id: "tty2".into(),
            bundle: bundle.path().display().to_string(),
            terminal: true,
            stdin: stdin.display().to_string(),
            ..Default::default()
        }))
        .await
        .unwrap();
        common::start(&mut c, NS, "tty2").await;
        // containerd's writer stays open: only CloseIO can end the input.
        let _writer = std::fs::OpenOptions::new()
            .write(true)
            .open(&stdin)
            .unwrap();
        c.close_io(ns(CloseIoRequest {
            id: "tty2".into(),
            exec_id: String::new(),
            stdin: true,
        }))
        .await
        .unwrap();
        assert_eq!(common::wait(&mut c, NS, "tty2").await.exit_status, 2);
        let no_tty = c
            .resize_pty(ns(ResizePtyRequest {
                id: "tty2".into(),
                exec_id: "nope".into(),
                width: 80,
                height: 24,
            }))
            .await
            .unwrap_err();
        assert_eq!(no_tty.code(), Code::NotFound, "{no_tty:?}");
        common::delete(&mut c, NS, "tty2").await;
    });
}

#[test]
fn an_execs_fifos_are_given_to_the_containers_io_uid_and_io_gid() {
    use std::os::unix::fs::MetadataExt;
    let Some(d) = start_daemon() else { return };
    let bundle = BundleBuilder::new()
        .args(["sh", "-c", "sleep 1000"])
        .build()
        .unwrap();
    let (init_out, exec_out) = (d.dir.path().join("init.out"), d.dir.path().join("exec.out"));
    mkfifo(&init_out);
    mkfifo(&exec_out);
    let owner = |path: &std::path::Path| {
        let meta = std::fs::metadata(path).unwrap();
        (meta.uid(), meta.gid())
    };
    assert_eq!(owner(&exec_out), (0, 0), "made by root");
    let options = task_service::api::containerd::runc::v1::Options {
        io_uid: 1000,
        io_gid: 1001,
        ..Default::default()
    };
    let id = format!("ioowner-{}", std::process::id());
    smol::block_on(async {
        let mut c = client(&d.socket).await;
        c.create(ns(CreateTaskRequest {
            id: id.clone(),
            bundle: bundle.path().display().to_string(),
            stdout: init_out.display().to_string(),
            options: Some(prost_types::Any {
                type_url: "containerd.runc.v1.Options".into(),
                value: prost::Message::encode_to_vec(&options),
            }),
            ..Default::default()
        }))
        .await
        .unwrap();
        // runc then gives the FIFO's user to the process's (root here), keeping the group, as
        // it does for the Go shim's pipes (`fixStdioPermissions`): IoUid is for a user
        // namespace whose root is IoUid.
        assert_eq!(owner(&init_out), (0, 1001), "the init's FIFO");
        common::start(&mut c, NS, &id).await;
        // An exec running as IoUid/IoGid: runc leaves a FIFO that is its user's alone, so the
        // group tells whether the daemon gave it away (runc would make it (1000, 0) alone).
        let user = oci_spec::runtime::UserBuilder::default()
            .uid(1000u32)
            .gid(1001u32)
            .build()
            .unwrap();
        let process = oci_spec::runtime::ProcessBuilder::default()
            .user(user)
            .args(vec!["sh".to_string(), "-c".into(), "exit 3".into()])
            .cwd("/")
            .env(vec!["PATH=/bin".to_string()])
            .build()
            .unwrap();
        c.exec(ns(ExecProcessRequest {
            id: id.clone(),
            exec_id: "e1".into(),
            stdout: exec_out.display().to_string(),
            spec: Some(prost_types::Any {
                type_url: "types.containerd.io/opencontainers/runtime-spec/1/Process".into(),
                value: serde_json::to_vec(&process).unwrap(),
            }),
            ..Default::default()
        }))
        .await
        .unwrap();
        assert_eq!(owner(&exec_out), (0, 0), "not opened before Start");
        c.start(ns(StartRequest {
            id: id.clone(),
            exec_id: "e1".into(),
        }))
        .await
        .unwrap();
        assert_eq!(
            owner(&exec_out),
            (1000, 1001),
            "the exec's FIFO, as the init's"
        );
        let waited = c
            .wait(ns(WaitRequest {
                id: id.clone(),
                exec_id: "e1".into(),
            }))
            .await
            .unwrap()
            .into_inner();
        assert_eq!(waited.exit_status, 3);
        common::kill_wait_delete(&mut c, NS, &id).await;
    });
}

/// Whether this host runs pure cgroup v2 (the root of `/sys/fs/cgroup` is a cgroup2 mount).
fn pure_cgroup_v2() -> bool {
    std::path::Path::new("/sys/fs/cgroup/cgroup.controllers").exists()
}

/// An OOM kill of a process the init survives is reported once, before the init's exit: on
/// cgroup v2 while the init still runs (the `memory.events` watch, as containerd-shim-runc-v2
/// does; a systemd scope is gone once its last process has exited), on cgroup v1 at the exit.
#[test]
fn an_oom_kill_is_reported_once_and_on_cgroup_v2_while_the_init_runs() {
    let Some(d) = start_daemon() else { return };
    if !pure_cgroup_v2() && integration::require(&[Need::File("/sys/fs/cgroup/memory")]).is_none() {
        return;
    }
    let id = format!("oom-{}", std::process::id());
    let memory = oci_spec::runtime::LinuxMemoryBuilder::default()
        .limit(16i64 << 20)
        .swap(16i64 << 20)
        .build()
        .unwrap();
    let resources = oci_spec::runtime::LinuxResourcesBuilder::default()
        .memory(memory)
        .build()
        .unwrap();
    // A child shell holds 64 MiB in a variable and is killed; the init says so and lives on.
    let bundle = BundleBuilder::new()
        .args([
            "sh",
            "-c",
            "sh -c 'x=$(dd if=/dev/zero bs=1048576 count=64 2>/dev/null | tr \"\\0\" a)'; \
             echo inner $?; exec sleep 600",
        ])
        .resources(resources)
        .build()
        .unwrap();
    let log = d.dir.path().join("oom.log");
    let mut events = d.daemon.events().subscribe();
    let mut topics = Vec::new();
    smol::block_on(async {
        let mut c = client(&d.socket).await;
        c.create(ns(CreateTaskRequest {
            id: id.clone(),
            bundle: bundle.path().display().to_string(),
            stdout: format!("file://{}", log.display()),
            ..Default::default()
        }))
        .await
        .unwrap();
        common::start(&mut c, NS, id.clone()).await;
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(120);
        while std::fs::read_to_string(&log).unwrap_or_default().is_empty() {
            assert!(
                std::time::Instant::now() < deadline,
                "the child never ended"
            );
            async_io::Timer::after(std::time::Duration::from_millis(50)).await;
        }
        assert_eq!(std::fs::read_to_string(&log).unwrap(), "inner 137\n");
        if pure_cgroup_v2() {
            // The kill is published while the init runs.
            while !topics.contains(&"/tasks/oom") {
                let next = smol::future::or(events.next(), async {
                    async_io::Timer::at(deadline).await;
                    None
                })
                .await;
                match next {
                    Some(Received::Event(e)) => topics.push(e.event.topic()),
                    other => panic!("no /tasks/oom while the init runs: {other:?}, {topics:?}"),
                }
            }
            let state = c
                .state(ns(StateRequest {
                    id: id.clone(),
                    ..Default::default()
                }))
                .await
                .unwrap()
                .into_inner();
            assert_eq!(state.status, TaskStatus::Running as i32);
        }
        c.kill(ns(KillRequest {
            id: id.clone(),
            signal: 9,
            ..Default::default()
        }))
        .await
        .unwrap();
        assert_eq!(common::wait(&mut c, NS, id.clone()).await.exit_status, 137);
        common::delete(&mut c, NS, id.clone()).await;
    });
    topics.extend(std::iter::from_fn(|| match events.try_next() {
        Some(Received::Event(e)) => Some(e.event.topic()),
        _ => None,
    }));
    assert_eq!(
        topics,
        [
            "/tasks/create",
            "/tasks/start",
            "/tasks/oom",
            "/tasks/exit",
            "/tasks/delete"
        ]
    );
}
