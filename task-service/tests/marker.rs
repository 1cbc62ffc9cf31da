//! The probe marker through the Task API, call by call: an exec of `shimless-probe` in a real
//! runc container, answered by the daemon with no process (PID 0), its output in the exec's
//! stdout/stderr, its code through `Wait`, `State` and `Delete`, its events in a real exec's
//! order; `Kill` and a second `Start` answered as for an exited exec; a container that stopped
//! between `Exec` and `Start`, and one stopped before `Exec`; `probe_command = ""` turns the
//! marker off; a start that cannot be saved fails and still reports the exit.

use integration::bundle::{Bundle, BundleBuilder};
use integration::{Need, require};
use std::path::PathBuf;
use std::time::{Duration, SystemTime};
use task_service::api::containerd::task::v3::*;
use task_service::api::containerd::v1::types::Status as TaskStatus;
use task_service::config::Config;
use task_service::daemon::Daemon;
use task_service::events::{Received, TaskEvent};
use tonic::{Code, Request};

mod common;
use common::{Client, client};

const NS: &str = "shimless-marker";

fn ns<T>(msg: T) -> Request<T> {
    common::request(NS, msg)
}

struct Running {
    dir: tempfile::TempDir,
    socket: PathBuf,
    daemon: Daemon,
}

fn start_daemon(probe_command: &str) -> Option<Running> {
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
        probe_command: probe_command.into(),
        ..Config::default()
    };
    let daemon = common::serve_in_process(&config);
    Some(Running {
        socket: config.socket,
        dir,
        daemon,
    })
}

/// A running `sleep` container `id` whose root has `/fresh` (now) and `/old` (100 s ago).
async fn probed_container(c: &mut Client, id: &str) -> Bundle {
    let bundle = BundleBuilder::new()
        .args(["sleep", "100000"])
        .build()
        .unwrap();
    std::fs::write(bundle.rootfs().join("fresh"), b"").unwrap();
    let old = std::fs::File::create(bundle.rootfs().join("old")).unwrap();
    old.set_modified(SystemTime::now() - Duration::from_secs(100))
        .unwrap();
    common::create(c, NS, id, bundle.path()).await;
    common::start(c, NS, id).await;
    bundle
}

/// An `Exec` request for `args`, its stdout and stderr to files under `dir`.
fn exec_request(
    dir: &std::path::Path,
    id: &str,
    exec_id: &str,
    args: &[&str],
) -> ExecProcessRequest {
    let process = oci_spec::runtime::ProcessBuilder::default()
        .args(args.iter().map(|s| s.to_string()).collect::<Vec<_>>())
        .cwd("/")
        .env(vec!["PATH=/bin".to_string()])
        .build()
        .unwrap();
    ExecProcessRequest {
        id: id.into(),
        exec_id: exec_id.into(),
        stdout: format!("file://{}", dir.join(format!("{exec_id}.out")).display()),
        stderr: format!("file://{}", dir.join(format!("{exec_id}.err")).display()),
        spec: Some(prost_types::Any {
            type_url: "types.containerd.io/opencontainers/runtime-spec/1/Process".into(),
            value: serde_json::to_vec(&process).unwrap(),
        }),
        ..Default::default()
    }
}

fn exec_ref(id: &str, exec_id: &str) -> (String, String) {
    (id.to_string(), exec_id.to_string())
}

async fn start_exec(c: &mut Client, id: &str, exec_id: &str) -> Result<u32, tonic::Status> {
    let (id, exec_id) = exec_ref(id, exec_id);
    Ok(c.start(ns(StartRequest { id, exec_id }))
        .await?
        .into_inner()
        .pid)
}

async fn wait_exec(c: &mut Client, id: &str, exec_id: &str) -> u32 {
    let (id, exec_id) = exec_ref(id, exec_id);
    c.wait(ns(WaitRequest { id, exec_id }))
        .await
        .unwrap()
        .into_inner()
        .exit_status
}

async fn state_exec(
    c: &mut Client,
    id: &str,
    exec_id: &str,
) -> Result<StateResponse, tonic::Status> {
    let (id, exec_id) = exec_ref(id, exec_id);
    Ok(c.state(ns(StateRequest { id, exec_id }))
        .await?
        .into_inner())
}

#[test]
fn a_marker_exec_is_an_exec_to_containerd_with_no_process() {
    let Some(d) = start_daemon("shimless-probe") else {
        return;
    };
    let out = d.dir.path().to_owned();
    let read = |name: &str| std::fs::read_to_string(out.join(name)).unwrap_or_default();
    let mut events = d.daemon.events().subscribe();
    smol::block_on(async {
        let mut c = client(&d.socket).await;
        let id = "marker1";
        let _bundle = probed_container(&mut c, id).await;

        // Stale: 1, kubelet's line on stdout; pid 0 everywhere.
        let args = ["/usr/bin/shimless-probe", "file", "/old", "30"];
        c.exec(ns(exec_request(&out, id, "old", &args)))
            .await
            .unwrap();
        assert_eq!(start_exec(&mut c, id, "old").await.unwrap(), 0);
        assert_eq!(wait_exec(&mut c, id, "old").await, 1);
        let state = state_exec(&mut c, id, "old").await.unwrap();
        assert_eq!(
            (state.status, state.exit_status, state.pid),
            (TaskStatus::Stopped as i32, 1, 0)
        );
        assert_eq!(read("old.out"), "/old modified 100s ago, validity 30s\n");
        assert_eq!(read("old.err"), "");
        // An exited exec: Kill is NOT_FOUND, a second Start FAILED_PRECONDITION.
        let kill = c
            .kill(ns(KillRequest {
                id: id.into(),
                exec_id: "old".into(),
                signal: 9,
                all: false,
            }))
            .await
            .unwrap_err();
        assert_eq!(kill.code(), Code::NotFound, "{kill:?}");
        let again = start_exec(&mut c, id, "old").await.unwrap_err();
        assert_eq!(again.code(), Code::FailedPrecondition, "{again:?}");
        let (i, e) = exec_ref(id, "old");
        let deleted = c
            .delete(ns(DeleteRequest { id: i, exec_id: e }))
            .await
            .unwrap()
            .into_inner();
        assert_eq!((deleted.pid, deleted.exit_status), (0, 1));
        let gone = state_exec(&mut c, id, "old").await.unwrap_err();
        assert_eq!(gone.code(), Code::NotFound, "{gone:?}");

        // Fresh: 0. A bad command line: 2, the usage on stderr.
        let args = ["shimless-probe", "file", "/fresh", "30"];
        c.exec(ns(exec_request(&out, id, "fresh", &args)))
            .await
            .unwrap();
        start_exec(&mut c, id, "fresh").await.unwrap();
        assert_eq!(wait_exec(&mut c, id, "fresh").await, 0);
        assert_eq!(read("fresh.out"), "/fresh modified 0s ago, validity 30s\n");
        let args = ["shimless-probe", "file", "/fresh"];
        c.exec(ns(exec_request(&out, id, "usage", &args)))
            .await
            .unwrap();
        start_exec(&mut c, id, "usage").await.unwrap();
        assert_eq!(wait_exec(&mut c, id, "usage").await, 2);
        assert_eq!(read("usage.out"), "");
        assert!(
            read("usage.err").contains(fileprobe::USAGE),
            "{}",
            read("usage.err")
        );

        // The init was never disturbed.
        let init = c
            .state(ns(StateRequest {
                id: id.into(),
                ..Default::default()
            }))
            .await
            .unwrap()
            .into_inner();
        assert_eq!(init.status, TaskStatus::Running as i32);
        common::kill_wait_delete(&mut c, NS, id).await;
    });
    let execs: Vec<(&str, String, u32)> = std::iter::from_fn(|| events.try_next())
        .filter_map(|r| match r {
            Received::Event(e) => Some(e),
            Received::Lagged(_) => None,
        })
        .filter_map(|e| match &e.event {
            TaskEvent::ExecAdded(a) => Some(("added", a.exec_id.clone(), 0)),
            TaskEvent::ExecStarted(s) => Some(("started", s.exec_id.clone(), s.pid)),
            TaskEvent::Exit(x) if x.id != x.container_id => {
                Some(("exit", x.id.clone(), x.exit_status))
            }
            _ => None,
        })
        .collect();
    let want: Vec<(&str, String, u32)> = [("old", 1), ("fresh", 0), ("usage", 2)]
        .into_iter()
        .flat_map(|(e, code)| {
            [
                ("added", e.to_string(), 0),
                ("started", e.to_string(), 0),
                ("exit", e.to_string(), code),
            ]
        })
        .collect();
    assert_eq!(execs, want);
}

#[test]
fn a_container_that_stopped_gets_no_probe_answer() {
    let Some(d) = start_daemon("shimless-probe") else {
        return;
    };
    let out = d.dir.path().to_owned();
    smol::block_on(async {
        let mut c = client(&d.socket).await;
        let id = "marker2";
        let _bundle = probed_container(&mut c, id).await;
        let marker = ["shimless-probe", "file", "/fresh", "30"];
        // Added while running, started after the init died: refused, the exec left added.
        c.exec(ns(exec_request(&out, id, "late", &marker)))
            .await
            .unwrap();
        c.kill(ns(KillRequest {
            id: id.into(),
            signal: 9,
            ..Default::default()
        }))
        .await
        .unwrap();
        common::wait(&mut c, NS, id).await;
        let late = start_exec(&mut c, id, "late").await.unwrap_err();
        assert_eq!(late.code(), Code::FailedPrecondition, "{late:?}");
        assert!(late.message().contains("stopped"), "{late:?}");
        let state = state_exec(&mut c, id, "late").await.unwrap();
        assert_eq!(state.status, TaskStatus::Created as i32);
        // Exec into the stopped container: the marker and a real exec get the same answer.
        let refused = c
            .exec(ns(exec_request(&out, id, "m", &marker)))
            .await
            .unwrap_err();
        let real = c
            .exec(ns(exec_request(&out, id, "r", &["cat", "/fresh"])))
            .await
            .unwrap_err();
        assert_eq!(
            (refused.code(), refused.message()),
            (real.code(), real.message())
        );
        assert_eq!(refused.code(), Code::FailedPrecondition);
        common::delete(&mut c, NS, id).await;
    });
}

#[test]
fn an_empty_probe_command_runs_the_exec_as_any_other() {
    let Some(d) = start_daemon("") else {
        return;
    };
    let out = d.dir.path().to_owned();
    smol::block_on(async {
        let mut c = client(&d.socket).await;
        let id = "marker3";
        let _bundle = probed_container(&mut c, id).await;
        // No such binary in the container: the runtime is asked, and fails to find it.
        let args = ["shimless-probe", "file", "/fresh", "30"];
        c.exec(ns(exec_request(&out, id, "off", &args)))
            .await
            .unwrap();
        let started = start_exec(&mut c, id, "off").await;
        assert!(started.is_err(), "{started:?}");
        assert!(
            started.unwrap_err().message().contains("shimless-probe"),
            "the runtime's error names the missing binary"
        );
        common::kill_wait_delete(&mut c, NS, id).await;
    });
}

#[test]
fn a_marker_whose_start_cannot_be_saved_fails_and_still_exits() {
    let Some(d) = start_daemon("shimless-probe") else {
        return;
    };
    if require(&[Need::Program("chattr")]).is_none() {
        return;
    }
    let out = d.dir.path().to_owned();
    let records = d.dir.path().join("state").join(NS);
    // Nothing can be created or renamed in an immutable directory: every save fails.
    let immutable = |on: bool| {
        let flag = if on { "+i" } else { "-i" };
        let status = std::process::Command::new("chattr")
            .arg(flag)
            .arg(&records)
            .status()
            .expect("chattr runs");
        assert!(status.success(), "chattr {flag} {}", records.display());
    };
    smol::block_on(async {
        let mut c = client(&d.socket).await;
        let id = "marker4";
        let _bundle = probed_container(&mut c, id).await;
        let args = ["shimless-probe", "file", "/old", "30"];
        c.exec(ns(exec_request(&out, id, "unsaved", &args)))
            .await
            .unwrap();
        immutable(true);
        let started = start_exec(&mut c, id, "unsaved").await;
        immutable(false);
        let failed = started.unwrap_err();
        assert_eq!(failed.code(), Code::Internal, "{failed:?}");
        assert!(failed.message().contains("save"), "{}", failed.message());
        // Not left running: its exit is there for Wait.
        let waited = smol::future::or(
            async { Some(wait_exec(&mut c, id, "unsaved").await) },
            async {
                async_io::Timer::after(Duration::from_secs(10)).await;
                None
            },
        )
        .await;
        assert_eq!(waited, Some(1));
        common::kill_wait_delete(&mut c, NS, id).await;
    });
}
