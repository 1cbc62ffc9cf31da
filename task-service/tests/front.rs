//! The front, for real: `shimless-front` in front of a `shimlessd` that is killed with `kill -9`
//! and started again, one client connection held across it all.
//!
//! - a `Wait` in flight when the daemon dies is answered by the next daemon with the true exit
//!   code (it only reads, so the front sends it again), and a call made while the daemon is
//!   down waits for it;
//! - a `Create` inside the daemon when it dies gets `UNAVAILABLE` (never sent twice), and the
//!   connection stays usable;
//! - a call whose deadline passes while the daemon is away gets `UNAVAILABLE` naming why;
//! - with `supervise = true` the front starts the daemon itself and starts it again after
//!   `kill -9`.

use integration::bundle::Bundle;
use integration::daemon::Daemon;
use integration::{Need, require};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};
use task_service::api::containerd::task::v3::*;
use task_service::api::containerd::v1::types::Status as TaskStatus;
use tonic::Code;

mod common;
use common::{client, request};

const NS: &str = "front-test";

struct Paths {
    dir: tempfile::TempDir,
}

impl Paths {
    fn new() -> Paths {
        Paths {
            dir: tempfile::tempdir().unwrap(),
        }
    }
    fn front(&self) -> PathBuf {
        self.dir.path().join("front.sock")
    }
    fn daemon(&self) -> PathBuf {
        self.dir.path().join("daemon.sock")
    }
    fn runc_root(&self) -> PathBuf {
        self.dir.path().join("runc")
    }
    /// A configuration file for both binaries.
    fn config(&self, supervise: bool) -> PathBuf {
        let d = self.dir.path().display();
        let text = format!(
            "socket = \"{d}/front.sock\"\ndaemon_socket = \"{d}/daemon.sock\"\n\
             state_dir = \"{d}/state\"\nrunc_root = \"{d}/runc\"\nlog_dir = \"{d}/logs\"\n\
             supervise = {supervise}\nrestart_delay_ms = 100\nhold_ms = 30000\n"
        );
        let path = self.dir.path().join("shimless.toml");
        std::fs::write(&path, text).unwrap();
        path
    }
}

/// Removes whatever a failed run left in the runtime root.
struct ForceDelete(PathBuf);

impl Drop for ForceDelete {
    fn drop(&mut self) {
        integration::bundle::delete_all("runc", &self.0);
    }
}

fn daemon(paths: &Paths, config: &Path) -> Daemon {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_shimlessd"));
    cmd.arg("--config")
        .arg(config)
        .arg("--socket")
        .arg(paths.daemon());
    let log = paths.dir.path().join("shimlessd.log");
    Daemon::start(cmd, &log, "serving on").unwrap()
}

fn front(paths: &Paths, config: &Path) -> Daemon {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_shimless-front"));
    cmd.arg("--config").arg(config);
    let log = paths.dir.path().join("front.log");
    Daemon::start(cmd, &log, "serving on").unwrap()
}

fn needs() -> Option<()> {
    require(&[
        Need::Root,
        Need::Btf,
        Need::Bpffs,
        Need::Program("runc"),
        Need::File("/bin/busybox"),
    ])
}

#[test]
fn a_daemon_killed_behind_the_front_is_invisible_to_a_held_connection() {
    let Some(()) = needs() else { return };
    rustix::process::set_child_subreaper(rustix::process::Pid::from_raw(1)).unwrap();
    let paths = Paths::new();
    let config = paths.config(false);
    let _cleanup = ForceDelete(paths.runc_root().join(NS));
    let mut first = daemon(&paths, &config);
    let _front = front(&paths, &config);
    let exits = Bundle::exit_on_demand().unwrap();
    let stays = Bundle::exit_on_demand().unwrap();

    smol::block_on(async {
        // One connection for the whole test, as containerd holds one per task.
        let mut c = client(&paths.front()).await;
        common::create(&mut c, NS, "exits", exits.path()).await;
        common::start(&mut c, NS, "exits").await;
        common::create(&mut c, NS, "stays", stays.path()).await;
        common::start(&mut c, NS, "stays").await;

        let mut waiter = c.clone();
        let wait = smol::spawn(async move { common::wait(&mut waiter, NS, "exits").await });
        // Let the Wait reach the daemon before it dies.
        smol::Timer::after(Duration::from_millis(300)).await;
        first.kill();
        exits.tell_exit(42).unwrap();

        // Made while no daemon answers: held until one does.
        let mut asker = c.clone();
        let state = smol::spawn(async move {
            asker
                .state(request(
                    NS,
                    StateRequest {
                        id: "stays".into(),
                        ..Default::default()
                    },
                ))
                .await
        });
        // A deadline that passes while the daemon is away.
        let mut hurried = request(
            NS,
            StateRequest {
                id: "stays".into(),
                ..Default::default()
            },
        );
        hurried.set_timeout(Duration::from_millis(200));
        let hurried = c.clone().state(hurried).await.unwrap_err();
        assert_eq!(hurried.code(), Code::Unavailable, "{hurried:?}");
        assert!(
            hurried.message().contains("not answering"),
            "{}",
            hurried.message()
        );

        let _second = daemon(&paths, &config);
        let waited = wait.await;
        assert_eq!(
            waited.exit_status, 42,
            "the Wait replayed to the next daemon"
        );
        let state = state.await.unwrap().into_inner();
        assert_eq!(state.status, TaskStatus::Running as i32);

        // The same connection goes on working.
        common::delete(&mut c, NS, "exits").await;
        common::kill_wait_delete(&mut c, NS, "stays").await;
        let gone = c
            .state(request(
                NS,
                StateRequest {
                    id: "stays".into(),
                    ..Default::default()
                },
            ))
            .await
            .unwrap_err();
        assert_eq!(gone.code(), Code::NotFound);
    });
}

#[test]
fn a_create_inside_a_dying_daemon_is_unavailable_and_never_sent_twice() {
    let Some(()) = needs() else { return };
    rustix::process::set_child_subreaper(rustix::process::Pid::from_raw(1)).unwrap();
    let paths = Paths::new();
    let config = paths.config(false);
    let _cleanup = ForceDelete(paths.runc_root().join(NS));
    let mut first = daemon(&paths, &config);
    let _front = front(&paths, &config);
    // A createRuntime hook that takes 5 s keeps `runc create`, so the Create, in the daemon.
    let slow = Bundle::exit_on_demand().unwrap();
    let spec_path = slow.path().join("config.json");
    let mut spec: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&spec_path).unwrap()).unwrap();
    spec["hooks"] = serde_json::json!({
        "createRuntime": [{"path": "/bin/busybox", "args": ["sleep", "5"]}]
    });
    std::fs::write(&spec_path, spec.to_string()).unwrap();

    smol::block_on(async {
        let mut c = client(&paths.front()).await;
        let mut creator = c.clone();
        let bundle = slow.path().to_owned();
        let create = smol::spawn(async move {
            creator
                .create(request(
                    NS,
                    CreateTaskRequest {
                        id: "slow".into(),
                        bundle: bundle.display().to_string(),
                        ..Default::default()
                    },
                ))
                .await
        });
        smol::Timer::after(Duration::from_millis(1500)).await;
        first.kill();
        let err = create.await.unwrap_err();
        assert_eq!(err.code(), Code::Unavailable, "{err:?}");
        assert!(
            err.message().contains("not sent again"),
            "{}",
            err.message()
        );

        // The next daemon finds the interrupted create and removes it; the connection is the
        // same one.
        let _second = daemon(&paths, &config);
        let listed = c
            .state(request(
                NS,
                StateRequest {
                    id: "slow".into(),
                    ..Default::default()
                },
            ))
            .await
            .unwrap_err();
        assert_eq!(listed.code(), Code::NotFound, "{listed:?}");
        let other = Bundle::exit_on_demand().unwrap();
        common::create(&mut c, NS, "after", other.path()).await;
        common::start(&mut c, NS, "after").await;
        common::kill_wait_delete(&mut c, NS, "after").await;
    });
}

/// PIDs of the `shimlessd`s started with `config`.
fn daemons_of(config: &Path) -> Vec<u32> {
    let mut pids = Vec::new();
    for entry in std::fs::read_dir("/proc").unwrap().flatten() {
        let Ok(pid) = entry.file_name().to_string_lossy().parse::<u32>() else {
            continue;
        };
        let cmdline = std::fs::read(entry.path().join("cmdline")).unwrap_or_default();
        let cmdline = String::from_utf8_lossy(&cmdline).replace('\0', " ");
        if cmdline.contains("shimlessd") && cmdline.contains(&*config.to_string_lossy()) {
            let stat = std::fs::read_to_string(entry.path().join("stat")).unwrap_or_default();
            let zombie = stat
                .rsplit_once(')')
                .is_some_and(|(_, rest)| rest.trim_start().starts_with('Z'));
            if !zombie {
                pids.push(pid);
            }
        }
    }
    pids
}

/// Kills the daemons a test's front started (the front's own kill leaves them orphaned).
struct KillDaemons(PathBuf);

impl Drop for KillDaemons {
    fn drop(&mut self) {
        for pid in daemons_of(&self.0) {
            let _ = Command::new("kill").args(["-9", &pid.to_string()]).status();
        }
    }
}

#[test]
fn a_supervising_front_starts_the_daemon_and_starts_it_again_after_kill_9() {
    let Some(()) = needs() else { return };
    rustix::process::set_child_subreaper(rustix::process::Pid::from_raw(1)).unwrap();
    let paths = Paths::new();
    let config = paths.config(true);
    let _cleanup = ForceDelete(paths.runc_root().join(NS));
    let _front = front(&paths, &config);
    let _daemons = KillDaemons(config.clone());
    let bundle = Bundle::exit_on_demand().unwrap();

    smol::block_on(async {
        let mut c = client(&paths.front()).await;
        // Held by the front until the daemon it started has recovered and serves.
        common::create(&mut c, NS, "sup", bundle.path()).await;
        common::start(&mut c, NS, "sup").await;
        let first = daemons_of(&config);
        assert_eq!(first.len(), 1, "one daemon: {first:?}");
        Command::new("kill")
            .args(["-9", &first[0].to_string()])
            .status()
            .unwrap();
        bundle.tell_exit(7).unwrap();
        assert_eq!(common::wait(&mut c, NS, "sup").await.exit_status, 7);
        let deadline = Instant::now() + Duration::from_secs(20);
        let second = loop {
            let now = daemons_of(&config);
            if now.len() == 1 && now != first {
                break now;
            }
            assert!(Instant::now() < deadline, "no new daemon: {now:?}");
            smol::Timer::after(Duration::from_millis(50)).await;
        };
        assert_ne!(second, first);
        let log = std::fs::read_to_string(paths.dir.path().join("logs/front.log"))
            .unwrap_or_default()
            + &std::fs::read_to_string(paths.dir.path().join("front.log")).unwrap_or_default();
        assert!(log.contains("was killed by signal 9"), "{log}");
        common::delete(&mut c, NS, "sup").await;
    });
}
