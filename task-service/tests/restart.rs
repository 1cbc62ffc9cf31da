//! `kill -9` of the daemon, for real: `shimlessd` runs as a child process with 100 containers,
//! is killed while exits happen, containers exit while it is down, and the next `shimlessd`
//! must report every exit with its true code, adopt the live ones, finish an interrupted
//! delete, remove an orphan, and leave no runtime container behind once all are deleted.

use integration::bundle::{Bundle, BundleBuilder};
use integration::{Need, require};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};
use task_service::api::containerd::task::v3::task_client::TaskClient;
use task_service::api::containerd::task::v3::*;
use task_service::api::containerd::v1::types::Status as TaskStatus;
use task_service::grpc;
use tonic::{Code, Request};

const NS: &str = "restart-test";

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

/// Starts `shimlessd` and waits until it serves; returns it and its stderr so far.
fn daemon(paths: &Paths, log: &Path) -> Child {
    let before = serving_count(log);
    let err = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(log)
        .unwrap();
    let child = Command::new(env!("CARGO_BIN_EXE_shimlessd"))
        .args(["--config", "/nonexistent/shimless.toml", "--socket"])
        .arg(paths.socket())
        .arg("--state-dir")
        .arg(paths.state())
        .arg("--runc-root")
        .arg(paths.runc_root())
        .stderr(err)
        .stdout(Stdio::null())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(120);
    while serving_count(log) == before {
        let text = std::fs::read_to_string(log).unwrap_or_default();
        assert!(
            Instant::now() < deadline,
            "shimlessd did not start:\n{text}"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    child
}

fn serving_count(log: &Path) -> usize {
    std::fs::read_to_string(log)
        .unwrap_or_default()
        .matches("serving on")
        .count()
}

async fn client(socket: &Path) -> TaskClient<grpc::Channel> {
    TaskClient::with_origin(
        grpc::connect(socket).await.unwrap(),
        "http://localhost".parse().unwrap(),
    )
}

fn ns<T>(msg: T) -> Request<T> {
    let mut req = Request::new(msg);
    req.metadata_mut()
        .insert("containerd-namespace", NS.parse().unwrap());
    req
}

/// A container that blocks reading a FIFO in its rootfs and exits with the number written to it.
fn controlled_bundle() -> Bundle {
    let bundle = BundleBuilder::new()
        .args(["sh", "-c", "read code < /ctl; exit $code"])
        .build()
        .unwrap();
    rustix::fs::mknodat(
        rustix::fs::CWD,
        bundle.rootfs().join("ctl"),
        rustix::fs::FileType::Fifo,
        rustix::fs::Mode::from_raw_mode(0o600),
        0,
    )
    .unwrap();
    bundle
}

/// Makes a container exit with `code` (opening the FIFO waits for its reader: the container).
fn tell_exit(bundle: &Bundle, code: u8) {
    let mut fifo = std::fs::OpenOptions::new()
        .write(true)
        .open(bundle.rootfs().join("ctl"))
        .unwrap();
    writeln!(fifo, "{code}").unwrap();
}

/// Reaps every exited child (we are the subreaper the killed daemon's containers fall to, as
/// systemd would be on a node).
fn reap_children() {
    while let Ok(Some(_)) = rustix::process::wait(rustix::process::WaitOptions::NOHANG) {}
}

fn runc_ids(root: &Path) -> Vec<String> {
    let out = Command::new("runc")
        .arg("--root")
        .arg(root)
        .args(["list", "-q"])
        .output()
        .unwrap();
    let mut ids: Vec<String> = String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(str::to_string)
        .collect();
    ids.sort();
    ids
}

fn process_gone(pid: u32) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Err(_) => true,
        Ok(stat) => stat
            .rsplit_once(')')
            .is_some_and(|(_, rest)| rest.trim_start().starts_with('Z')),
    }
}

/// Removes whatever a failed run left in the runtime root, so a failure leaks nothing.
struct ForceDelete(PathBuf);

impl Drop for ForceDelete {
    fn drop(&mut self) {
        for id in runc_ids(&self.0) {
            let _ = Command::new("runc")
                .arg("--root")
                .arg(&self.0)
                .args(["delete", "--force", &id])
                .status();
        }
    }
}

#[test]
fn kill_9_of_the_daemon_loses_no_exit_and_leaks_no_container() {
    let Some(()) = require(&[
        Need::Root,
        Need::Btf,
        Need::Bpffs,
        Need::Program("runc"),
        Need::File("/bin/busybox"),
    ]) else {
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
    let bundles: Vec<Bundle> = (0..100).map(|_| controlled_bundle()).collect();
    let id = |i: usize| format!("c{i:03}");
    let mut pids = Vec::new();
    smol::block_on(async {
        let mut c = client(&paths.socket()).await;
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
                c.start(ns(StartRequest {
                    id: id(i),
                    ..Default::default()
                }))
                .await
                .unwrap();
            }
        }
        // One stopped container whose delete will be "interrupted": the runtime forgets it
        // while the daemon is down, the record stays.
        let gone = controlled_bundle();
        c.create(ns(CreateTaskRequest {
            id: "deleting".into(),
            bundle: gone.path().display().to_string(),
            ..Default::default()
        }))
        .await
        .unwrap();
        c.start(ns(StartRequest {
            id: "deleting".into(),
            ..Default::default()
        }))
        .await
        .unwrap();
        tell_exit(&gone, 3);
        let waited = c
            .wait(ns(WaitRequest {
                id: "deleting".into(),
                ..Default::default()
            }))
            .await
            .unwrap()
            .into_inner();
        assert_eq!(waited.exit_status, 3);
    });
    let ns_root = paths.runc_root().join(NS);

    // Exits racing the kill: codes 1..=30.
    for (i, bundle) in bundles.iter().enumerate().take(30) {
        tell_exit(bundle, (i + 1) as u8);
    }
    first.kill().unwrap();
    first.wait().unwrap();

    // While it is down: 30 more exit (codes 31..=60), one delete is finished by the runtime,
    // and an orphan appears (as if the daemon died between `runc create` and its record).
    for (i, bundle) in bundles.iter().enumerate().take(60).skip(30) {
        tell_exit(bundle, (i + 1) as u8);
    }
    let status = Command::new("runc")
        .arg("--root")
        .arg(&ns_root)
        .args(["delete", "deleting"])
        .status()
        .unwrap();
    assert!(status.success());
    let orphan = controlled_bundle();
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
    while !pids[..60].iter().all(|&p| process_gone(p)) {
        assert!(Instant::now() < deadline, "containers did not exit");
        std::thread::sleep(Duration::from_millis(20));
    }
    reap_children();
    let unreaped: Vec<String> = pids[..60]
        .iter()
        .filter_map(|p| std::fs::read_to_string(format!("/proc/{p}/stat")).ok())
        .collect();
    assert!(unreaped.is_empty(), "not reaped: {unreaped:?}");

    let mut second = daemon(&paths, &log);
    let text = std::fs::read_to_string(&log).unwrap();
    let recovered = text.lines().rfind(|l| l.contains("recovered:")).unwrap();
    assert!(
        recovered.contains("interrupted deletes finished (restart-test/deleting)"),
        "{recovered}"
    );
    assert!(
        recovered.contains("orphans removed (restart-test/orphan)"),
        "{recovered}"
    );
    assert!(!recovered.contains("lost"), "{recovered}");

    smol::block_on(async {
        let mut c = client(&paths.socket()).await;
        // Every exit, whenever it happened, with its true code.
        for i in 0..60 {
            let waited = c
                .wait(ns(WaitRequest {
                    id: id(i),
                    ..Default::default()
                }))
                .await
                .unwrap()
                .into_inner();
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
            tell_exit(bundle, (i + 1) as u8);
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
            let waited = c
                .wait(ns(WaitRequest {
                    id: id(i),
                    ..Default::default()
                }))
                .await
                .unwrap()
                .into_inner();
            assert_eq!(waited.exit_status, want, "{}", id(i));
        }
        // Created ones can still be started, and run.
        #[allow(clippy::needless_range_loop)]
        for i in 90..100 {
            c.start(ns(StartRequest {
                id: id(i),
                ..Default::default()
            }))
            .await
            .unwrap();
            tell_exit(&bundles[i], 42);
            let waited = c
                .wait(ns(WaitRequest {
                    id: id(i),
                    ..Default::default()
                }))
                .await
                .unwrap()
                .into_inner();
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
            c.delete(ns(DeleteRequest {
                id: id(i),
                ..Default::default()
            }))
            .await
            .unwrap();
        }
    });
    assert_eq!(
        runc_ids(&ns_root),
        Vec::<String>::new(),
        "leaked runtime containers"
    );
    let records = std::fs::read_dir(paths.state().join(NS)).unwrap().count();
    assert_eq!(records, 0, "leftover records");
    second.kill().unwrap();
    second.wait().unwrap();
    reap_children();
}
