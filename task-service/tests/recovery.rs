//! Recovery that never deletes what it cannot prove is its own, and never fails as a whole, for
//! real: `shimlessd` runs as a child process with real runc containers, is killed, the state it
//! leaves is damaged the way a node damages it, and the next `shimlessd` must keep every live
//! container, skip and report what it cannot take back, and serve.
//!
//! - an unreadable record never costs a live container: it is kept (set aside), the container
//!   rebuilt from runc's state and its bundle, the record reported (log and `Admin/List`);
//! - a stray file, a record whose runtime binary is gone, another runtime's empty root and a
//!   failed removal are each skipped and reported, and the daemon serves;
//! - the `Root` option is namespaced, and containers in a root that no record names are left
//!   alone (containerd's own runc root, say);
//! - a pidfd that cannot be re-opened for want of descriptors (`prlimit`) is not an exit: the
//!   container is kept running and watched once descriptors are back;
//! - orphans re-parented to the daemon (a hook's background process) are reaped;
//! - a daemon that cannot start is restarted by the front ever more slowly, saying why.

use integration::bundle::{Bundle, BundleBuilder};
use integration::child::Child;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};
use task_service::api::containerd::task::v3::*;
use task_service::api::containerd::v1::types::Status as TaskStatus;
use task_service::api::shimless::v1::{ListRequest, ListResponse};

mod common;
use common::client;
use common::processes::{be_subreaper, reap_children, runc_ids, zombies_of};

const NS: &str = "recovery-test";

fn ns<T>(msg: T) -> tonic::Request<T> {
    common::request(NS, msg)
}

/// A private state directory, runtime root and socket.
struct Paths {
    dir: tempfile::TempDir,
}

impl Paths {
    fn new() -> Paths {
        Paths {
            dir: tempfile::tempdir().unwrap(),
        }
    }
    fn socket(&self) -> PathBuf {
        self.dir.path().join("s.sock")
    }
    fn runc_root(&self) -> PathBuf {
        self.dir.path().join("runc")
    }
    fn state(&self) -> PathBuf {
        self.dir.path().join("state")
    }
    fn record(&self, id: &str) -> PathBuf {
        self.state().join(NS).join(format!("{id}.json"))
    }
    fn log(&self) -> PathBuf {
        self.dir.path().join("shimlessd.log")
    }
}

/// The command of a `shimlessd` on the test's paths.
fn daemon_command(paths: &Paths) -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_shimlessd"));
    cmd.args(["--config", "/nonexistent/shimless.toml", "--socket"])
        .arg(paths.socket())
        .arg("--state-dir")
        .arg(paths.state())
        .arg("--runc-root")
        .arg(paths.runc_root());
    cmd
}

/// `shimlessd` on the test's paths, once it serves.
fn daemon(paths: &Paths) -> Child {
    Child::start(daemon_command(paths), &paths.log(), "serving on").unwrap()
}

/// Removes whatever a failed run left in the runtime roots, so a failure leaks nothing.
struct ForceDelete(Vec<PathBuf>);

impl Drop for ForceDelete {
    fn drop(&mut self) {
        for root in &self.0 {
            integration::bundle::delete_all("runc", root);
        }
    }
}

async fn admin_list(socket: &Path) -> ListResponse {
    let mut admin = task_service::client::Client::connect(socket)
        .await
        .unwrap()
        .admin();
    admin
        .list(ListRequest {
            namespace: String::new(),
        })
        .await
        .unwrap()
        .into_inner()
}

async fn state(c: &mut common::Client, id: &str) -> StateResponse {
    c.state(ns(StateRequest {
        id: id.into(),
        ..Default::default()
    }))
    .await
    .unwrap()
    .into_inner()
}

/// Creates and starts `id` from `bundle`; its PID.
async fn run(c: &mut common::Client, id: &str, bundle: &Path) -> u32 {
    common::create(c, NS, id, bundle).await;
    common::start(c, NS, id).await
}

#[test]
fn an_unreadable_record_never_costs_a_live_container() {
    let Some(()) = common::needs_daemon() else {
        return;
    };
    be_subreaper();
    let paths = Paths::new();
    let ns_root = paths.runc_root().join(NS);
    let _cleanup = ForceDelete(vec![ns_root.clone()]);
    let mut first = daemon(&paths);
    let damaged = Bundle::exit_on_demand().unwrap();
    let intact = Bundle::exit_on_demand().unwrap();
    let pid = smol::block_on(async {
        let mut c = client(&paths.socket()).await;
        run(&mut c, "intact", intact.path()).await;
        run(&mut c, "damaged", damaged.path()).await
    });
    first.kill();
    // A truncated record, as a full disk or a bad editor leaves it.
    let record = std::fs::read(paths.record("damaged")).unwrap();
    std::fs::write(paths.record("damaged"), &record[..record.len() / 2]).unwrap();

    let second = daemon(&paths);
    let recovered = second.last_line("recovered:").unwrap();
    assert!(
        recovered.contains("unreadable records kept (recovery-test/damaged: record"),
        "{recovered}"
    );
    assert!(
        recovered.contains("rebuilt from the runtime (recovery-test/damaged)"),
        "{recovered}"
    );
    assert_eq!(runc_ids(&ns_root), vec!["damaged", "intact"]);
    assert!(
        common::alive(pid),
        "the damaged record's container was killed"
    );
    let aside = paths.state().join(NS).join("damaged.json.unreadable");
    assert_eq!(std::fs::read(&aside).unwrap(), record[..record.len() / 2]);
    smol::block_on(async {
        let listed = admin_list(&paths.socket()).await;
        assert!(
            listed
                .problems
                .iter()
                .any(|p| p.starts_with("unreadable record kept: recovery-test/damaged: record")),
            "{:?}",
            listed.problems
        );
        let mut c = client(&paths.socket()).await;
        let st = state(&mut c, "damaged").await;
        assert_eq!((st.status, st.pid), (TaskStatus::Running as i32, pid));
        assert_eq!(st.bundle, damaged.path().display().to_string());
        // Its exit is still seen, with its code, and it is deleted as any other.
        damaged.tell_exit(7).unwrap();
        assert_eq!(common::wait(&mut c, NS, "damaged").await.exit_status, 7);
        common::delete(&mut c, NS, "damaged").await;
        common::kill_wait_delete(&mut c, NS, "intact").await;
    });
    assert_eq!(runc_ids(&ns_root), Vec::<String>::new());
    reap_children();
}

#[test]
fn a_newer_record_is_refused_and_kept_with_its_container_and_an_unversioned_one_recovered() {
    let Some(()) = common::needs_daemon() else {
        return;
    };
    be_subreaper();
    let paths = Paths::new();
    let ns_root = paths.runc_root().join(NS);
    let _cleanup = ForceDelete(vec![ns_root.clone()]);
    let mut first = daemon(&paths);
    let newer = Bundle::exit_on_demand().unwrap();
    let unversioned = Bundle::exit_on_demand().unwrap();
    let (newer_pid, unversioned_pid) = smol::block_on(async {
        let mut c = client(&paths.socket()).await;
        let n = run(&mut c, "newer", newer.path()).await;
        (n, run(&mut c, "unversioned", unversioned.path()).await)
    });
    first.kill();
    let edit = |id: &str, change: &dyn Fn(&mut serde_json::Map<String, serde_json::Value>)| {
        let text = std::fs::read(paths.record(id)).unwrap();
        let mut value: serde_json::Value = serde_json::from_slice(&text).unwrap();
        let record = value.as_object_mut().unwrap();
        assert_eq!(record["format"], task_service::version::RECORD_FORMAT);
        change(record);
        let text = serde_json::to_vec_pretty(&value).unwrap();
        std::fs::write(paths.record(id), &text).unwrap();
        text
    };
    // As a build before versions wrote it.
    edit("unversioned", &|r| {
        r.remove("format");
    });
    // As a newer build wrote it: a field this build would misread.
    let newer_text = edit("newer", &|r| {
        r.insert(
            "format".into(),
            (task_service::version::RECORD_FORMAT + 1).into(),
        );
        r.insert("bundle".into(), serde_json::json!({"path": "/elsewhere"}));
    });

    let second = daemon(&paths);
    let recovered = second.last_line("recovered:").unwrap();
    assert!(recovered.contains("adopted 1 running"), "{recovered}");
    let refused = format!(
        "newer records refused and kept (recovery-test/newer: record {} is of version {}, newer \
         than the {} this shimless reads",
        paths.record("newer").display(),
        task_service::version::RECORD_FORMAT + 1,
        task_service::version::RECORD_FORMAT
    );
    assert!(recovered.contains(&refused), "{recovered}");
    assert!(!recovered.contains("left alone"), "{recovered}");
    // Kept as it was, not set aside or rebuilt; its container runs on, untouched.
    assert_eq!(std::fs::read(paths.record("newer")).unwrap(), newer_text);
    let ns_state = paths.state().join(NS);
    let mut files: Vec<String> = std::fs::read_dir(&ns_state)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    files.sort();
    assert_eq!(files, ["newer.json", "unversioned.json"]);
    assert_eq!(runc_ids(&ns_root), vec!["newer", "unversioned"]);
    assert!(
        common::alive(newer_pid),
        "the newer record's container was killed"
    );
    smol::block_on(async {
        let listed = admin_list(&paths.socket()).await;
        assert!(
            listed
                .problems
                .iter()
                .any(|p| p.starts_with("newer record refused and kept: recovery-test/newer: ")),
            "{:?}",
            listed.problems
        );
        let mut c = client(&paths.socket()).await;
        let err = c
            .state(ns(StateRequest {
                id: "newer".into(),
                ..Default::default()
            }))
            .await
            .unwrap_err();
        assert_eq!(err.code(), tonic::Code::NotFound, "{err:?}");
        // The unversioned record's container is taken back: its exit seen with its code.
        let st = state(&mut c, "unversioned").await;
        assert_eq!(
            (st.status, st.pid),
            (TaskStatus::Running as i32, unversioned_pid)
        );
        unversioned.tell_exit(7).unwrap();
        assert_eq!(common::wait(&mut c, NS, "unversioned").await.exit_status, 7);
        common::delete(&mut c, NS, "unversioned").await;
    });
    assert_eq!(runc_ids(&ns_root), vec!["newer"]);
    assert!(common::alive(newer_pid));
    // What the newer shimless would have done; here, the test's own clean-up.
    newer.tell_exit(0).unwrap();
    wait_until("the newer record's container exits", || {
        reap_children();
        !common::alive(newer_pid)
    });
    reap_children();
}

#[test]
fn one_odd_entry_never_stops_recovery() {
    let Some(()) = common::needs_daemon() else {
        return;
    };
    be_subreaper();
    let paths = Paths::new();
    let ns_root = paths.runc_root().join(NS);
    let _cleanup = ForceDelete(vec![ns_root.clone()]);
    let mut first = daemon(&paths);
    let live = Bundle::exit_on_demand().unwrap();
    let orphaned = Bundle::exit_on_demand().unwrap();
    let done = Bundle::exit_on_demand().unwrap();
    let pid = smol::block_on(async {
        let mut c = client(&paths.socket()).await;
        run(&mut c, "orphaned", orphaned.path()).await;
        run(&mut c, "done", done.path()).await;
        done.tell_exit(3).unwrap();
        assert_eq!(common::wait(&mut c, NS, "done").await.exit_status, 3);
        run(&mut c, "live", live.path()).await
    });
    first.kill();
    let ns_state = paths.state().join(NS);
    // Strays: an editor's backup, a placeholder, fsck's directory.
    std::fs::write(ns_state.join("live.json~"), b"{").unwrap();
    std::fs::write(ns_state.join(".keep"), b"").unwrap();
    std::fs::create_dir(paths.state().join("lost+found")).unwrap();
    // A record whose runtime binary is gone.
    let text = std::fs::read_to_string(paths.record("orphaned")).unwrap();
    let runc = which("runc");
    let text = text.replace(&format!("\"{}\"", runc.display()), "\"/nonexistent/runc\"");
    assert!(text.contains("/nonexistent/runc"), "{text}");
    std::fs::write(paths.record("orphaned"), text).unwrap();
    // Another runtime's empty root beside ours.
    std::fs::create_dir_all(paths.runc_root().join("other-runtime")).unwrap();
    // A removal that fails: the delete of `done` was finished by hand, and its record cannot
    // be removed (a read-only directory, as `chattr +i` makes it).
    let status = Command::new("runc")
        .arg("--root")
        .arg(&ns_root)
        .args(["delete", "done"])
        .status()
        .unwrap();
    assert!(status.success());
    let immutable = Immutable::set(&ns_state);

    let second = daemon(&paths);
    let recovered = second.last_line("recovered:").unwrap();
    drop(immutable);
    assert!(recovered.contains("adopted 1 running"), "{recovered}");
    for skipped in [
        "live.json~",
        ".keep",
        "lost+found",
        "recovery-test/orphaned: ",
        "recovery-test/done: ",
    ] {
        assert!(recovered.contains(skipped), "{skipped}: {recovered}");
    }
    smol::block_on(async {
        let listed = admin_list(&paths.socket()).await;
        let skipped = listed
            .problems
            .iter()
            .filter(|p| p.starts_with("skipped: "))
            .count();
        assert_eq!(skipped, 5, "{:?}", listed.problems);
        let mut c = client(&paths.socket()).await;
        let st = state(&mut c, "live").await;
        assert_eq!((st.status, st.pid), (TaskStatus::Running as i32, pid));
        common::kill_wait_delete(&mut c, NS, "live").await;
    });
    // The skipped container was not touched.
    assert_eq!(runc_ids(&ns_root), vec!["orphaned"]);
    reap_children();
}

/// `chattr +i` on a directory for as long as it lives (or mode 0500 where the file system has
/// no such attribute).
struct Immutable(PathBuf);

impl Immutable {
    fn set(dir: &Path) -> Immutable {
        let ok = Command::new("chattr")
            .arg("+i")
            .arg(dir)
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|s| s.success());
        assert!(ok, "chattr +i {} failed", dir.display());
        Immutable(dir.to_owned())
    }
}

impl Drop for Immutable {
    fn drop(&mut self) {
        let _ = Command::new("chattr").arg("-i").arg(&self.0).status();
    }
}

fn which(program: &str) -> PathBuf {
    std::env::split_paths(&std::env::var_os("PATH").unwrap())
        .map(|dir| dir.join(program))
        .find(|p| p.is_file())
        .unwrap()
}

#[test]
fn a_root_option_is_namespaced_and_foreign_containers_are_left_alone() {
    let Some(()) = common::needs_daemon() else {
        return;
    };
    be_subreaper();
    let paths = Paths::new();
    // Another runtime's root, e.g. containerd's own runc root (/run/containerd/runc).
    let foreign = paths.dir.path().join("containerd-runc");
    let foreign_ns = foreign.join(NS);
    let _cleanup = ForceDelete(vec![foreign_ns.clone(), foreign.clone()]);
    let theirs = BundleBuilder::new()
        .args(["sleep", "1000"])
        .build()
        .unwrap();
    let status = Command::new("runc")
        .arg("--root")
        .arg(&foreign_ns)
        .args(["run", "--detach", "--bundle"])
        .arg(theirs.path())
        .arg("theirs")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .status()
        .unwrap();
    assert!(status.success());
    let mut first = daemon(&paths);
    let ours = BundleBuilder::new()
        .args(["sleep", "1000"])
        .build()
        .unwrap();
    let options = prost_types::Any {
        type_url: "containerd.runc.v1.Options".into(),
        value: prost::Message::encode_to_vec(&task_service::api::containerd::runc::v1::Options {
            root: foreign.display().to_string(),
            ..Default::default()
        }),
    };
    smol::block_on(async {
        let mut c = client(&paths.socket()).await;
        c.create(ns(CreateTaskRequest {
            id: "ours".into(),
            bundle: ours.path().display().to_string(),
            options: Some(options),
            ..Default::default()
        }))
        .await
        .unwrap();
        common::start(&mut c, NS, "ours").await;
    });
    // Namespaced as containerd does: <Root>/<namespace>.
    assert_eq!(runc_ids(&foreign_ns), vec!["ours", "theirs"]);
    assert_eq!(runc_ids(&foreign), Vec::<String>::new());
    first.kill();
    let second = daemon(&paths);
    let recovered = second.last_line("recovered:").unwrap();
    assert!(recovered.contains("adopted 1 running"), "{recovered}");
    assert!(
        recovered.contains("runtime containers left alone (theirs in "),
        "{recovered}"
    );
    assert_eq!(runc_ids(&foreign_ns), vec!["ours", "theirs"]);
    smol::block_on(async {
        let mut c = client(&paths.socket()).await;
        common::kill_wait_delete(&mut c, NS, "ours").await;
    });
    assert_eq!(runc_ids(&foreign_ns), vec!["theirs"]);
    reap_children();
}

/// The number of descriptors process `pid` holds.
fn open_fds(pid: u32) -> usize {
    std::fs::read_dir(format!("/proc/{pid}/fd"))
        .unwrap()
        .count()
}

/// The soft and hard `RLIMIT_NOFILE` of process `pid`, from `/proc/<pid>/limits`.
fn fd_limits(pid: u32) -> (String, String) {
    let limits = std::fs::read_to_string(format!("/proc/{pid}/limits")).unwrap_or_default();
    let line = limits
        .lines()
        .find(|l| l.starts_with("Max open files"))
        .unwrap_or_default();
    let fields: Vec<&str> = line.split_whitespace().collect();
    let at = |i: usize| fields.get(i).copied().unwrap_or_default().to_string();
    (at(3), at(4))
}

/// Sets the soft descriptor limit of process `pid` (no privilege needed up to its hard limit).
fn set_soft_fd_limit(pid: u32, soft: &str) {
    let status = Command::new("prlimit")
        .arg("--pid")
        .arg(pid.to_string())
        .arg(format!("--nofile={soft}:"))
        .status()
        .unwrap();
    assert!(status.success());
}

/// Waits up to a minute for `done`.
fn wait_until(what: &str, done: impl Fn() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(60);
    while !done() {
        assert!(Instant::now() < deadline, "timed out: {what}");
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// The PID of the `shimlessd` serving on `socket`, once it runs.
fn daemon_pid(socket: &Path) -> u32 {
    let socket = socket.display().to_string();
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let found = std::fs::read_dir("/proc")
            .unwrap()
            .flatten()
            .filter_map(|e| e.file_name().to_str()?.parse::<u32>().ok())
            .find(|pid| {
                let cmdline = std::fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
                let text = String::from_utf8_lossy(&cmdline);
                text.contains("shimlessd") && text.contains(&socket)
            });
        if let Some(pid) = found {
            return pid;
        }
        assert!(Instant::now() < deadline, "no shimlessd on {socket}");
        std::thread::sleep(Duration::from_millis(10));
    }
}

#[test]
fn a_pidfd_that_cannot_be_reopened_for_want_of_descriptors_is_no_exit() {
    let Some(()) = common::needs_daemon() else {
        return;
    };
    integration::raise_fd_limit(8192);
    be_subreaper();
    let paths = Paths::new();
    let ns_root = paths.runc_root().join(NS);
    let _cleanup = ForceDelete(vec![ns_root.clone()]);
    const N: usize = 24;
    let bundle = BundleBuilder::new()
        .args(["sleep", "1000"])
        .build()
        .unwrap();
    let mut first = daemon(&paths);
    let id = |i: usize| format!("c{i:02}");
    smol::block_on(async {
        let mut c = client(&paths.socket()).await;
        for i in 0..N {
            run(&mut c, &id(i), bundle.path()).await;
        }
    });
    // What a daemon needs beside one pidfd per container (the least seen: a runtime call in
    // flight holds a few more for a moment).
    let base = (0..10)
        .map(|_| {
            std::thread::sleep(Duration::from_millis(30));
            open_fds(first.pid())
        })
        .min()
        .unwrap()
        - N;
    first.kill();
    // Recovery is held at its first record and at its last (interrupted creates, sorted first
    // and last, whose runtime calls still run) while the soft descriptor limit is lowered
    // under the daemon's feet and raised again (`shimlessd` raises it to the hard limit as it
    // starts, so `prlimit` comes after that; and it needs descriptors again to serve).
    let interrupted = std::fs::read_to_string(paths.record(&id(0)))
        .unwrap()
        .replace("\"creating\": false", "\"creating\": true");
    assert!(interrupted.contains("\"creating\": true"), "{interrupted}");
    let mut runtime_calls = Vec::new();
    for blocker in ["a0-blocker", "zz-blocker"] {
        std::fs::write(paths.record(blocker), &interrupted).unwrap();
        let call = Command::new("sh")
            .args(["-c", "sleep 120; true", "sh"])
            .arg(&ns_root)
            .arg(blocker)
            .spawn()
            .unwrap();
        runtime_calls.push(call);
        // Until the shell has exec'd, its cmdline is still this test's and recovery would not
        // see the call at all.
        wait_until("the runtime call is visible", || {
            !runc_driver::runtime_calls(&ns_root, blocker).is_empty()
        });
    }
    let log = paths.log();
    // Started with a soft limit below the hard one, so that its raising the limit can be seen
    // (this machine's soft limit may already equal the hard one).
    let daemon = daemon_command(&paths);
    let mut cmd = Command::new("prlimit");
    cmd.arg("--nofile=1024:")
        .arg("--")
        .arg(daemon.get_program())
        .args(daemon.get_args());
    let starting = std::thread::spawn(move || Child::start(cmd, &log, "serving on").unwrap());
    let pid = daemon_pid(&paths.socket());
    let limit = base + N / 3;
    wait_until("shimlessd raised its limit", || {
        let exe = std::fs::read_link(format!("/proc/{pid}/exe")).unwrap_or_default();
        let (soft, hard) = fd_limits(pid);
        exe.ends_with("shimlessd") && soft == hard && !soft.is_empty()
    });
    set_soft_fd_limit(pid, &limit.to_string());
    let mut first_blocker = runtime_calls.remove(0);
    first_blocker.kill().unwrap();
    first_blocker.wait().unwrap();
    // Descriptors run out part-way; the records after that take 30 ms each to give up on.
    wait_until("descriptors ran out", || open_fds(pid) + 2 >= limit);
    std::thread::sleep(Duration::from_secs(3));
    set_soft_fd_limit(pid, &fd_limits(pid).1);
    let mut last_blocker = runtime_calls.remove(0);
    last_blocker.kill().unwrap();
    last_blocker.wait().unwrap();
    let second = starting.join().unwrap();
    let recovered = second.last_line("recovered:").unwrap();
    assert!(recovered.contains(" not verified yet ("), "{recovered}");
    assert!(!recovered.contains("lost"), "{recovered}");
    // Descriptors are back: the kept processes are re-opened and watched.
    let deadline = Instant::now() + Duration::from_secs(30);
    while second.last_line("after recovery").is_none() {
        assert!(
            Instant::now() < deadline,
            "nothing re-opened ({:?}, {} fds): {}",
            fd_limits(pid),
            open_fds(pid),
            std::fs::read_to_string(paths.log()).unwrap()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    smol::block_on(async {
        let mut c = client(&paths.socket()).await;
        for i in 0..N {
            let st = state(&mut c, &id(i)).await;
            assert_eq!(st.status, TaskStatus::Running as i32, "{}", id(i));
        }
        for i in 0..N {
            c.kill(ns(KillRequest {
                id: id(i),
                signal: 9,
                ..Default::default()
            }))
            .await
            .unwrap();
        }
        for i in 0..N {
            let waited = common::wait(&mut c, NS, id(i)).await;
            assert_eq!(waited.exit_status, 137, "{}", id(i));
            common::delete(&mut c, NS, id(i)).await;
        }
    });
    assert_eq!(runc_ids(&ns_root), Vec::<String>::new());
    reap_children();
}

#[test]
fn orphans_reparented_to_the_daemon_are_reaped() {
    let Some(()) = common::needs_daemon() else {
        return;
    };
    be_subreaper();
    let paths = Paths::new();
    let ns_root = paths.runc_root().join(NS);
    let _cleanup = ForceDelete(vec![ns_root.clone()]);
    let daemon = daemon(&paths);
    // A hook that leaves a background process behind: it outlives the hook and runc, and is
    // re-parented to the daemon, their subreaper.
    let bundle = BundleBuilder::new()
        .args(["sleep", "1000"])
        .build()
        .unwrap();
    let config = bundle.path().join("config.json");
    let mut spec: serde_json::Value =
        serde_json::from_slice(&std::fs::read(&config).unwrap()).unwrap();
    let hook = serde_json::json!([{"path": "/bin/sh", "args": ["sh", "-c", "sleep 0.3 &"]}]);
    spec["hooks"] = serde_json::json!({ "createRuntime": hook, "poststart": hook });
    std::fs::write(&config, serde_json::to_vec(&spec).unwrap()).unwrap();
    smol::block_on(async {
        let mut c = client(&paths.socket()).await;
        run(&mut c, "hooked", bundle.path()).await;
        // Execs that end at once are their waiter's, never the reaper's.
        for i in 0..5 {
            let exec_id = format!("e{i}");
            let process = serde_json::json!({
                "args": ["/bin/sh", "-c", format!("exit {i}")], "cwd": "/",
                "env": ["PATH=/bin"], "user": {"uid": 0, "gid": 0}
            });
            c.exec(ns(ExecProcessRequest {
                id: "hooked".into(),
                exec_id: exec_id.clone(),
                spec: Some(prost_types::Any {
                    type_url: "types.containerd.io/opencontainers/runtime-spec/1/Process".into(),
                    value: serde_json::to_vec(&process).unwrap(),
                }),
                ..Default::default()
            }))
            .await
            .unwrap();
            c.start(ns(StartRequest {
                id: "hooked".into(),
                exec_id: exec_id.clone(),
            }))
            .await
            .unwrap();
            let waited = c
                .wait(ns(WaitRequest {
                    id: "hooked".into(),
                    exec_id,
                }))
                .await
                .unwrap()
                .into_inner();
            assert_eq!(waited.exit_status, i);
        }
    });
    // The hooks' sleeps end 0.3 s in; the reaper gives a zombie 2 s to be claimed.
    let deadline = Instant::now() + Duration::from_secs(10);
    let mut zombies = zombies_of(daemon.pid());
    while !zombies.is_empty() && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(200));
        zombies = zombies_of(daemon.pid());
    }
    assert_eq!(zombies, Vec::<u32>::new(), "zombies left under the daemon");
    let reaped = std::fs::read_to_string(paths.log()).unwrap();
    assert!(reaped.contains("reaped orphan pid"), "{reaped}");
    smol::block_on(async {
        let mut c = client(&paths.socket()).await;
        common::kill_wait_delete(&mut c, NS, "hooked").await;
    });
    assert_eq!(runc_ids(&ns_root), Vec::<String>::new());
    reap_children();
}

#[test]
fn a_daemon_that_cannot_start_is_restarted_ever_more_slowly_saying_why() {
    let Some(()) = common::needs_daemon() else {
        return;
    };
    be_subreaper();
    // A state directory that is a file: no daemon can recover from it.
    let s = common::shimless::Shimless::new("supervise = true\nrestart_delay_ms = 100");
    std::fs::write(s.dir.path().join("state"), b"not a directory").unwrap();
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_shimless-front"));
    cmd.arg("--config").arg(s.config());
    let log = s.dir.path().join("front.log");
    let front = Child::start(cmd, &log, "serving on").unwrap();
    std::thread::sleep(Duration::from_secs(5));
    let text = std::fs::read_to_string(&log).unwrap();
    drop(front);
    let restarts = text.matches("starting it again in").count();
    // 0.1 + 0.2 + 0.4 + 0.8 + 1.6 s: about 5 in 5 s (24 without a backoff).
    assert!((3..=7).contains(&restarts), "{restarts} restarts:\n{text}");
    // The daemon's last words name the state directory it could not use (the lock on it is
    // taken before recovery reads it, so that is where a file in its place fails).
    let state = s.dir.path().join("state");
    assert!(
        text.contains(&format!(
            "last words: \"shimlessd: cannot lock state directory {}",
            state.display()
        )),
        "{text}"
    );
    assert!(text.contains("exits in a row"), "{text}");
}
