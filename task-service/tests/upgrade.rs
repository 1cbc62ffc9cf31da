//! Upgrading the front on a live node under a real containerd 1.7 (and 2.1 for the first test;
//! private, ttrpc toward the front): `shimlessctl upgrade` hands every socket and containerd connection to the new front
//! binary (see `task_service::front::handover`).
//!
//! - ten containers running, three of them with `ctr run` attached (a `Wait` held through
//!   containerd on the shim's connection): after the upgrade the task list is the same (same
//!   pids, all RUNNING), containerd saw no shim disconnect, the daemon is the same process, the
//!   front's generation grew; exits that happen after it reach the held `Wait`s and
//!   containerd's events with their true codes; a new container runs;
//! - fifty containers running, ten with `ctr run` attached, upgraded to a second build (the
//!   front and daemon copied with another build tag, so that they report another version):
//!   the front by `shimlessctl upgrade --binary`, with exits just before and during it, then
//!   the daemon by `kill`; both report the new version and run the new files, no task is
//!   deleted, containerd saw no shim disconnect, every held `Wait` returns its true code and
//!   containerd's events carry every exit once with its code (none 255);
//! - an upgrade to a binary that exits at once is refused with what it said; the old front
//!   goes on serving the running containers and new ones;
//! - an upgrade while containerd holds a gRPC connection is refused naming why, and the front
//!   goes on serving it;
//! - twenty upgrades in a row, back and forth between this build and a bumped one (the last by
//!   `SIGHUP`), while containers are run (`--rm`, their codes checked), exec'd into, and run
//!   and killed with `SIGKILL` (137) without pause: every command succeeds with its code, each
//!   upgrade is checked by the version the front reports, the kept tasks are unchanged and
//!   report their true codes, containerd saw no shim disconnect.

use integration::containerd::{Containerd, ContainerdConfig, Version};
use integration::image::Image;
use integration::{Need, require};
use std::collections::HashMap;
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};
use task_service::api::shimless::v1::{InfoRequest, InfoResponse};

mod common;
use common::shimless::Shimless;

const BUSYBOX: &str = "docker.io/shimless/busybox:test";
const SHIMLESS: &str = "io.containerd.shimless.v2";

/// A private containerd 1.7 that runs shimless, with busybox imported into `ns`.
struct Rig {
    containerd: Containerd,
    shimless: Shimless,
    ns: String,
}

impl Rig {
    fn new(ns: &str) -> Option<Rig> {
        Rig::with(ns, "")
    }

    /// With `shimless_extra` appended to shimless's configuration.
    fn with(ns: &str, shimless_extra: &str) -> Option<Rig> {
        Rig::on(Version::V1_7, ns, shimless_extra)
    }

    /// On containerd `version`; `ns` gets the version's suffix but on 1.7 (cgroups are keyed
    /// by namespace and id on the host, and tests run at once).
    fn on(version: Version, ns: &str, shimless_extra: &str) -> Option<Rig> {
        let ns = match version {
            Version::V1_7 => ns.to_string(),
            other => format!("{ns}-{}", other.label()),
        };
        let ns = ns.as_str();
        let config = ContainerdConfig::new().version(version);
        let mut needs = version.needs().to_vec();
        needs.extend([Need::Btf, Need::Bpffs]);
        require(&needs)?;
        rustix::process::set_child_subreaper(rustix::process::Pid::from_raw(1)).unwrap();
        let shimless = Shimless::new(shimless_extra).cleans(ns);
        let containerd = Containerd::start(
            config
                .path_prepend(Shimless::bin_dir())
                .env("SHIMLESS_CONFIG", shimless.config().display().to_string()),
        )
        .expect("start containerd");
        let image = Image::busybox(BUSYBOX)
            .write_tar(&containerd.dir().join("busybox.tar"))
            .expect("write the image");
        containerd.import(ns, image.path()).expect("import");
        Some(Rig {
            containerd,
            shimless,
            ns: ns.to_string(),
        })
    }

    fn ctr(&self) -> Command {
        self.containerd.ctr(&self.ns)
    }

    /// `ctr run` through shimless with `flags` between `run` and the image.
    fn run(&self, flags: &[&str], id: &str, cmd: &[String]) -> Output {
        self.run_command(flags, id, cmd).output().unwrap()
    }

    fn run_command(&self, flags: &[&str], id: &str, cmd: &[String]) -> Command {
        let mut c = self.ctr();
        c.args(["run", "--runtime", SHIMLESS])
            .args(flags)
            .args([BUSYBOX, id])
            .args(cmd);
        c
    }

    /// `ctr <args>`, which must succeed; its stdout.
    fn ok(&self, args: &[&str]) -> String {
        let out = self.ctr().args(args).output().unwrap();
        assert!(
            out.status.success(),
            "ctr {args:?}: {}\ncontainerd: {}\nfront: {}",
            String::from_utf8_lossy(&out.stderr),
            self.containerd.log_tail(20),
            self.shimless.log("front.log")
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// `ctr task ls` as id → (pid, status).
    fn tasks(&self) -> HashMap<String, (u32, String)> {
        self.ok(&["task", "ls"])
            .lines()
            .skip(1)
            .filter_map(|l| {
                let mut f = l.split_whitespace();
                let id = f.next()?.to_string();
                let pid = f.next()?.parse().ok()?;
                Some((id, (pid, f.next()?.to_string())))
            })
            .collect()
    }

    /// `shimlessctl upgrade [extra]` against this shimless.
    fn upgrade(&self, extra: &[&str]) -> Output {
        Command::new(env!("CARGO_BIN_EXE_shimlessctl"))
            .arg("--socket")
            .arg(self.shimless.front_socket())
            .arg("upgrade")
            .args(extra)
            .output()
            .unwrap()
    }

    /// The front's `Info`.
    fn info(&self) -> InfoResponse {
        smol::block_on(async {
            let client = task_service::client::Client::connect(self.shimless.front_socket())
                .await
                .expect("connect to the front");
            client
                .front()
                .info(InfoRequest {})
                .await
                .expect("Info")
                .into_inner()
        })
    }

    /// The lines of containerd's log that say it took the shim of one of `ids` for dead (it
    /// then runs `<shim> delete`). A task deleted on purpose has such lines too, as its
    /// connection closes; `ids` are those never deleted.
    fn shim_deaths(&self, ids: &[String]) -> Vec<String> {
        self.containerd
            .log_tail(100_000)
            .lines()
            .filter(|l| l.contains("shim disconnected"))
            .filter(|l| ids.iter().any(|id| l.contains(&format!(" id={id} "))))
            .map(str::to_string)
            .collect()
    }
}

/// `ctr events`, recorded until dropped.
struct Events {
    child: Child,
    path: std::path::PathBuf,
}

impl Events {
    fn start(rig: &Rig) -> Events {
        let path = rig.shimless.dir.path().join("events");
        let file = std::fs::File::create(&path).unwrap();
        let child = rig
            .ctr()
            .arg("events")
            .stdout(file)
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        std::thread::sleep(Duration::from_millis(300));
        Events { child, path }
    }

    /// The exit status of each `/tasks/exit` of an init, by container id.
    fn exits(&self) -> Vec<(String, u32)> {
        std::fs::read_to_string(&self.path)
            .unwrap_or_default()
            .lines()
            .filter(|l| l.contains(" /tasks/exit "))
            .filter_map(|l| {
                let v: serde_json::Value = serde_json::from_str(&l[l.find('{')?..]).ok()?;
                (v["container_id"] == v["id"]).then(|| {
                    (
                        v["id"].as_str().unwrap_or("").to_string(),
                        v["exit_status"].as_u64().unwrap_or(0) as u32,
                    )
                })
            })
            .collect()
    }
}

impl Drop for Events {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A directory bind-mounted at `/trigger`: a file `<id>` there makes that container exit with
/// the code written in it.
struct Triggers(tempfile::TempDir);

impl Triggers {
    fn new() -> Triggers {
        Triggers(tempfile::tempdir().unwrap())
    }
    fn mount(&self) -> String {
        format!(
            "type=bind,src={},dst=/trigger,options=rbind:rw",
            self.0.path().display()
        )
    }
    fn command(id: &str) -> Vec<String> {
        vec![
            "sh".into(),
            "-c".into(),
            format!("while [ ! -s /trigger/{id} ]; do sleep 0.05; done; exit $(cat /trigger/{id})"),
        ]
    }
    fn fire(&self, id: &str, code: u8) {
        let tmp = self.0.path().join(format!(".{id}"));
        std::fs::write(&tmp, format!("{code}\n")).unwrap();
        std::fs::rename(tmp, self.0.path().join(id)).unwrap();
    }
}

/// The front and the daemon copied into `dir` with the build tag `tag` written over this
/// build's (see `task_service::version::build`): a second build, as far as anything running
/// can tell (the front starts the `shimlessd` beside it).
fn bumped_build(dir: &std::path::Path, tag: &str) -> std::path::PathBuf {
    use task_service::version::{BUILD_TAG_LEN, BUILD_TAG_MARK};
    assert!(tag.len() <= BUILD_TAG_LEN);
    std::fs::create_dir_all(dir).unwrap();
    for name in ["shimless-front", "shimlessd"] {
        let mut bytes = std::fs::read(Shimless::bin_dir().join(name)).unwrap();
        let mark = BUILD_TAG_MARK.as_bytes();
        let at: Vec<usize> = bytes
            .windows(mark.len())
            .enumerate()
            .filter(|(_, w)| *w == mark)
            .map(|(i, _)| i + mark.len())
            .collect();
        assert_eq!(at.len(), 1, "{name}: one build tag");
        let slot = &mut bytes[at[0]..at[0] + BUILD_TAG_LEN];
        slot.fill(0);
        slot[..tag.len()].copy_from_slice(tag.as_bytes());
        let path = dir.join(name);
        std::fs::write(&path, bytes).unwrap();
        std::fs::set_permissions(&path, std::os::unix::fs::PermissionsExt::from_mode(0o755))
            .unwrap();
    }
    dir.to_owned()
}

/// The version a build tagged `tag` reports.
fn version_of(tag: &str) -> String {
    format!("{}+{tag}", env!("CARGO_PKG_VERSION"))
}

/// `ctr run -d` of `ids` (each waiting for its trigger), four at a time.
fn run_detached(rig: &Rig, triggers: &Triggers, ids: &[String]) {
    std::thread::scope(|scope| {
        for chunk in ids.chunks(ids.len().div_ceil(4)) {
            scope.spawn(move || {
                for id in chunk {
                    let out = rig.run(
                        &["-d", "--mount", &triggers.mount()],
                        id,
                        &Triggers::command(id),
                    );
                    assert!(out.status.success(), "{id}: {out:?}");
                }
            });
        }
    });
}

/// The daemon's `Health/Status`, asked on its own socket; `None` while it does not answer.
fn daemon_status(rig: &Rig) -> Option<task_service::api::shimless::v1::StatusResponse> {
    smol::block_on(async {
        let client = task_service::client::Client::connect(rig.shimless.daemon_socket())
            .await
            .ok()?;
        let request = task_service::api::shimless::v1::StatusRequest {};
        Some(client.health().status(request).await.ok()?.into_inner())
    })
}

fn wait_until(what: &str, limit: Duration, mut done: impl FnMut() -> bool) {
    let deadline = Instant::now() + limit;
    while !done() {
        assert!(Instant::now() < deadline, "{what}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn an_upgrade_with_ten_running_is_invisible_to_containerd() {
    ten_running(Version::V1_7);
}

#[test]
fn an_upgrade_with_ten_running_is_invisible_to_containerd_2_1() {
    ten_running(Version::V2_1);
}

fn ten_running(version: Version) {
    let Some(rig) = Rig::on(version, "shimless-upgrade", "") else {
        return;
    };
    let triggers = Triggers::new();
    let events = Events::start(&rig);
    let detached: Vec<String> = (0..7).map(|i| format!("u{i}")).collect();
    for id in &detached {
        let out = rig.run(
            &["-d", "--mount", &triggers.mount()],
            id,
            &Triggers::command(id),
        );
        assert!(out.status.success(), "{id}: {out:?}");
    }
    // Attached: `ctr run` waits through containerd, which holds a Wait on the shim.
    let attached: Vec<(String, Child)> = (0..3)
        .map(|i| {
            let id = format!("w{i}");
            let child = rig
                .run_command(
                    &["--mount", &triggers.mount()],
                    &id,
                    &Triggers::command(&id),
                )
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .unwrap();
            (id, child)
        })
        .collect();
    wait_until("ten running", Duration::from_secs(60), || {
        rig.tasks().values().filter(|(_, s)| s == "RUNNING").count() == 10
    });
    let before = rig.tasks();
    let front = rig.info();
    let daemons = rig.shimless.processes("shimlessd");
    assert_eq!(front.generation, 0);
    assert_eq!(daemons.len(), 1, "{daemons:?}");

    let out = rig.upgrade(&[]);
    assert!(
        out.status.success(),
        "{out:?}\nfront: {}",
        rig.shimless.log("front.log")
    );
    assert!(
        String::from_utf8_lossy(&out.stdout).contains("generation 1"),
        "{out:?}"
    );

    let after = rig.info();
    assert_eq!(after.generation, 1);
    // Replaced in place: the same process, now running the new binary.
    assert_eq!(after.pid, front.pid);
    let cmdline = std::fs::read(format!("/proc/{}/cmdline", after.pid)).unwrap();
    assert!(
        String::from_utf8_lossy(&cmdline).contains("--handover-fd"),
        "{cmdline:?}"
    );
    assert_eq!(
        rig.shimless.processes("shimlessd"),
        daemons,
        "the daemon is untouched"
    );
    let log = rig.shimless.log("front.log");
    assert!(log.contains("connection(s) handed over"), "{log}");
    // The three attached `ctr run`s each hold a Wait (containerd 1.7 holds none for detached
    // tasks): read by the old front, sent again by the new one.
    let handing = log.lines().find(|l| l.contains("handing")).unwrap_or("");
    let resent: usize = handing
        .split_once(" (")
        .and_then(|(_, rest)| rest.split_whitespace().next()?.parse().ok())
        .unwrap_or(0);
    assert_eq!(resent, 3, "{handing}");
    // How long containerd's connections went unread (`--nocapture` shows it).
    for line in log.lines().filter(|l| l.contains("unread for")) {
        println!("{line}");
    }
    assert!(handing.contains("handing 10 connection(s)"), "{handing}");
    assert_eq!(rig.tasks(), before, "the task list is unchanged");

    // Exits after the upgrade: true codes to the held Waits and to containerd's events.
    for (i, (id, _)) in attached.iter().enumerate() {
        triggers.fire(id, 30 + i as u8);
    }
    for (i, id) in detached.iter().take(2).enumerate() {
        triggers.fire(id, 40 + i as u8);
    }
    for (i, (id, mut child)) in attached.into_iter().enumerate() {
        let deadline = Instant::now() + Duration::from_secs(30);
        let status = loop {
            if let Some(status) = child.try_wait().unwrap() {
                break status;
            }
            assert!(Instant::now() < deadline, "{id}'s ctr run did not return");
            std::thread::sleep(Duration::from_millis(50));
        };
        assert_eq!(status.code(), Some(30 + i as i32), "{id}");
    }
    wait_until("five exits", Duration::from_secs(30), || {
        events.exits().len() >= 5
    });
    let exits = events.exits();
    for (i, id) in ["w0", "w1", "w2"].iter().enumerate() {
        assert!(
            exits.contains(&(id.to_string(), 30 + i as u32)),
            "{exits:?}"
        );
    }
    for (i, id) in detached.iter().take(2).enumerate() {
        assert!(exits.contains(&(id.clone(), 40 + i as u32)), "{exits:?}");
    }
    assert_eq!(exits.len(), 5, "each exit once: {exits:?}");

    // The others still run; a new container runs and reports its code.
    let tasks = rig.tasks();
    for id in &detached[2..] {
        assert_eq!(tasks[id], before[id], "{id}");
    }
    let out = rig.run(
        &["--rm"],
        "u-new",
        &["sh".into(), "-c".into(), "exit 7".into()],
    );
    assert_eq!(out.status.code(), Some(7), "{out:?}");
    assert_eq!(rig.shim_deaths(&detached), Vec::<String>::new());
    assert_eq!(rig.tasks().len(), 7, "{:?}", rig.tasks());
}

#[test]
fn fifty_running_upgraded_to_a_bumped_build_front_then_daemon_lose_nothing() {
    let Some(rig) = Rig::new("shimless-upgrade-50") else {
        return;
    };
    let triggers = Triggers::new();
    let events = Events::start(&rig);
    let detached: Vec<String> = (0..40).map(|i| format!("d{i}")).collect();
    run_detached(&rig, &triggers, &detached);
    // Attached: `ctr run` waits through containerd, which holds a Wait on the shim.
    let attached: Vec<(String, Child)> = (0..10)
        .map(|i| {
            let id = format!("w{i}");
            let child = rig
                .run_command(
                    &["--mount", &triggers.mount()],
                    &id,
                    &Triggers::command(&id),
                )
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .unwrap();
            (id, child)
        })
        .collect();
    wait_until("fifty running", Duration::from_secs(240), || {
        rig.tasks().values().filter(|(_, s)| s == "RUNNING").count() == 50
    });
    let before = rig.tasks();
    let front = rig.info();
    let daemon = daemon_status(&rig).expect("the daemon answers");
    assert_eq!(front.version, task_service::version::build());
    assert_eq!(daemon.version, task_service::version::build());
    let tag = format!("bumped-{}", std::process::id());
    let bumped = bumped_build(&rig.shimless.dir.path().join("bumped"), &tag);

    // Exits just before and during the front's upgrade.
    triggers.fire("d0", 50);
    triggers.fire("d1", 51);
    let binary = bumped.join("shimless-front");
    let out = std::thread::scope(|scope| {
        scope.spawn(|| {
            for (i, id) in ["d2", "d3", "d4"].iter().enumerate() {
                triggers.fire(id, 52 + i as u8);
            }
        });
        rig.upgrade(&["--binary", &binary.display().to_string()])
    });
    assert!(
        out.status.success(),
        "{out:?}\nfront: {}",
        rig.shimless.log("front.log")
    );
    assert!(
        String::from_utf8_lossy(&out.stdout).contains(&version_of(&tag)),
        "{out:?}"
    );
    // The same process, now the bumped binary.
    let after = rig.info();
    assert_eq!((after.pid, after.generation), (front.pid, 1));
    assert_eq!(after.version, version_of(&tag));
    assert_eq!(after.binary, binary.display().to_string());
    assert_eq!(
        std::fs::read_link(format!("/proc/{}/exe", after.pid)).unwrap(),
        binary
    );

    // Then the daemon, as after any restart: the front starts the one beside it.
    rustix::process::kill_process(
        rustix::process::Pid::from_raw(daemon.pid as i32).unwrap(),
        rustix::process::Signal::TERM,
    )
    .unwrap();
    wait_until("the bumped daemon serves", Duration::from_secs(60), || {
        daemon_status(&rig).is_some_and(|s| s.version == version_of(&tag) && s.pid != daemon.pid)
    });
    let daemon = daemon_status(&rig).unwrap();
    assert_eq!(
        std::fs::read_link(format!("/proc/{}/exe", daemon.pid)).unwrap(),
        bumped.join("shimlessd")
    );

    // Exits after both upgrades: true codes to the held Waits and to containerd's events.
    for (i, (id, _)) in attached.iter().enumerate() {
        triggers.fire(id, 30 + i as u8);
    }
    for (i, id) in detached[5..10].iter().enumerate() {
        triggers.fire(id, 40 + i as u8);
    }
    for (i, (id, mut child)) in attached.into_iter().enumerate() {
        let deadline = Instant::now() + Duration::from_secs(60);
        let status = loop {
            if let Some(status) = child.try_wait().unwrap() {
                break status;
            }
            assert!(Instant::now() < deadline, "{id}'s ctr run did not return");
            std::thread::sleep(Duration::from_millis(50));
        };
        assert_eq!(status.code(), Some(30 + i as i32), "{id}'s held Wait");
    }
    let mut expected: Vec<(String, u32)> = (0..10)
        .map(|i| (format!("w{i}"), 30 + i))
        .chain((0..5).map(|i| (format!("d{i}"), 50 + i)))
        .chain((0..5).map(|i| (format!("d{}", i + 5), 40 + i)))
        .collect();
    expected.sort();
    wait_until("twenty exits", Duration::from_secs(60), || {
        events.exits().len() >= expected.len()
    });
    let mut exits = events.exits();
    exits.sort();
    assert_eq!(exits, expected, "each exit once, with its code, none 255");

    // No task deleted: the fired ones stopped, the thirty others as they were.
    let tasks = rig.tasks();
    assert_eq!(tasks.len(), 40, "{tasks:?}");
    for id in &detached[..10] {
        assert_eq!(tasks[id].1, "STOPPED", "{id}");
    }
    for id in &detached[10..] {
        assert_eq!(tasks[id], before[id], "{id}");
    }
    assert_eq!(rig.shim_deaths(&detached), Vec::<String>::new());
    let out = rig.run(
        &["--rm"],
        "d-new",
        &["sh".into(), "-c".into(), "exit 7".into()],
    );
    assert_eq!(out.status.code(), Some(7), "{out:?}");
}

#[test]
fn an_upgrade_to_a_binary_that_exits_at_once_leaves_the_old_front_serving() {
    let Some(rig) = Rig::new("shimless-upgrade-bad") else {
        return;
    };
    let triggers = Triggers::new();
    let out = rig.run(
        &["-d", "--mount", &triggers.mount()],
        "b0",
        &Triggers::command("b0"),
    );
    assert!(out.status.success(), "{out:?}");
    let before = rig.info();
    let broken = rig.shimless.dir.path().join("broken-front");
    std::fs::write(
        &broken,
        "#!/bin/sh\necho 'cannot start: broken build' >&2\nexit 1\n",
    )
    .unwrap();
    std::fs::set_permissions(&broken, std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();

    let out = rig.upgrade(&["--binary", &broken.display().to_string()]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{out:?}");
    assert!(stderr.contains("without saying it was ready"), "{stderr}");
    assert!(stderr.contains("cannot start: broken build"), "{stderr}");
    assert!(stderr.contains("the old front goes on serving"), "{stderr}");

    let after = rig.info();
    assert_eq!(
        (after.pid, after.generation),
        (before.pid, before.generation)
    );
    assert!(
        after.last_upgrade_error.contains("broken-front"),
        "{after:?}"
    );
    // Still serving: the running container's exit, and a new container.
    triggers.fire("b0", 9);
    wait_until("b0 stopped", Duration::from_secs(30), || {
        rig.tasks().get("b0").is_some_and(|(_, s)| s == "STOPPED")
    });
    let out = rig.run(
        &["--rm"],
        "b1",
        &["sh".into(), "-c".into(), "exit 4".into()],
    );
    assert_eq!(out.status.code(), Some(4), "{out:?}");
    // A binary that is not there at all is refused the same way.
    let out = rig.upgrade(&["--binary", "/nonexistent/shimless-front"]);
    assert_eq!(out.status.code(), Some(1), "{out:?}");
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("cannot run the new front"),
        "{out:?}"
    );
    assert_eq!(rig.info().generation, 0);
    assert_eq!(rig.shim_deaths(&["b0".to_string()]), Vec::<String>::new());
}

/// How many upgrades `twenty_upgrades_in_a_row_under_churn_lose_nothing` makes.
const UPGRADES: u32 = 20;

/// `ctr run --rm` of a container that sleeps, killed with `SIGKILL` once it runs: its `ctr run`
/// must return 137.
fn run_and_kill(rig: &Rig, id: &str) -> Result<(), String> {
    let mut child = rig
        .run_command(&["--rm"], id, &["sleep".into(), "1000".into()])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(60);
    while rig.tasks().get(id).is_none_or(|(_, s)| s != "RUNNING") {
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            return Err(format!("{id} never ran"));
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    let out = rig
        .ctr()
        .args(["task", "kill", "-s", "SIGKILL", id])
        .output()
        .unwrap();
    if !out.status.success() {
        let _ = child.kill();
        let _ = child.wait();
        return Err(format!("kill {id}: {out:?}"));
    }
    let status = child.wait().unwrap();
    match status.code() {
        Some(137) => Ok(()),
        other => Err(format!("run {id} killed: exit {other:?}")),
    }
}

#[test]
fn twenty_upgrades_in_a_row_under_churn_lose_nothing() {
    let Some(rig) = Rig::new("shimless-upgrade-churn") else {
        return;
    };
    let triggers = Triggers::new();
    let keep: Vec<String> = (0..3).map(|i| format!("k{i}")).collect();
    for id in &keep {
        let out = rig.run(
            &["-d", "--mount", &triggers.mount()],
            id,
            &Triggers::command(id),
        );
        assert!(out.status.success(), "{id}: {out:?}");
    }
    let before = rig.tasks();
    let stop = std::sync::atomic::AtomicBool::new(false);
    let done = std::sync::atomic::AtomicUsize::new(0);
    std::thread::scope(|scope| {
        // Churn: containers created, exec'd into, waited for and deleted, without pause.
        let churn = scope.spawn(|| {
            let mut failures = Vec::new();
            let mut i = 0;
            while !stop.load(std::sync::atomic::Ordering::SeqCst) {
                let code: i32 = i % 50 + 1;
                let id = format!("c{i}");
                let script = format!("exit {code}");
                let out = rig.run(&["--rm"], &id, &["sh".into(), "-c".into(), script]);
                if out.status.code() != Some(code) {
                    failures.push(format!("run {id}: {out:?}"));
                }
                let exec_id = format!("e{i}");
                let out = rig
                    .ctr()
                    .args([
                        "task",
                        "exec",
                        "--exec-id",
                        &exec_id,
                        "k0",
                        "sh",
                        "-c",
                        "exit 3",
                    ])
                    .output()
                    .unwrap();
                if out.status.code() != Some(3) {
                    failures.push(format!("exec {exec_id}: {out:?}"));
                }
                if let Err(failure) = run_and_kill(&rig, &format!("x{i}")) {
                    failures.push(failure);
                }
                done.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                i += 1;
            }
            failures
        });
        // Back and forth between this build and a bumped one, each upgrade checked by the
        // version the front reports.
        let tag = format!("bumped-{}", std::process::id());
        let bumped = bumped_build(&rig.shimless.dir.path().join("bumped"), &tag);
        let builds = [
            (bumped.join("shimless-front"), version_of(&tag)),
            (
                Shimless::bin_dir().join("shimless-front"),
                task_service::version::build(),
            ),
        ];
        for round in 1..UPGRADES {
            std::thread::sleep(Duration::from_millis(500));
            let (binary, version) = &builds[(round as usize - 1) % 2];
            let out = rig.upgrade(&["--binary", &binary.display().to_string()]);
            assert!(
                out.status.success(),
                "upgrade {round}: {out:?}\nfront: {}",
                rig.shimless.log("front.log")
            );
            let info = rig.info();
            assert_eq!((info.generation, &info.version), (round, version));
        }
        // The last by signal: to the binary the front runs.
        std::thread::sleep(Duration::from_millis(500));
        let front = rig.info().pid;
        rustix::process::kill_process(
            rustix::process::Pid::from_raw(front as i32).unwrap(),
            rustix::process::Signal::HUP,
        )
        .unwrap();
        wait_until("SIGHUP upgraded the front", Duration::from_secs(30), || {
            std::thread::sleep(Duration::from_millis(100));
            rig.info().generation == UPGRADES
        });
        std::thread::sleep(Duration::from_millis(500));
        stop.store(true, std::sync::atomic::Ordering::SeqCst);
        let failures = churn.join().unwrap();
        assert_eq!(
            failures,
            Vec::<String>::new(),
            "{}",
            rig.shimless.log("front.log")
        );
    });
    let done = done.load(std::sync::atomic::Ordering::SeqCst);
    assert!(done >= 5, "{done}");
    println!("{done} run+exec+kill rounds across {UPGRADES} upgrades");
    for line in rig
        .shimless
        .log("front.log")
        .lines()
        .filter(|l| l.contains("unread for"))
    {
        println!("{line}");
    }
    assert_eq!(
        rig.tasks(),
        before,
        "only the three kept tasks, as they were"
    );
    for (i, id) in keep.iter().enumerate() {
        triggers.fire(id, 60 + i as u8);
    }
    wait_until("the kept three stopped", Duration::from_secs(30), || {
        rig.tasks().values().all(|(_, s)| s == "STOPPED")
    });
    assert_eq!(rig.shim_deaths(&keep), Vec::<String>::new());
    for (i, id) in keep.iter().enumerate() {
        let out = rig.ctr().args(["task", "rm", id]).output().unwrap();
        assert!(
            String::from_utf8_lossy(&out.stderr).contains(&format!("exit code {}", 60 + i)),
            "{out:?}"
        );
    }
}

#[test]
fn an_upgrade_with_a_grpc_connection_open_is_refused_and_the_front_serves_on() {
    let Some(rig) = Rig::with("shimless-upgrade-grpc", "containerd_protocol = \"grpc\"") else {
        return;
    };
    let triggers = Triggers::new();
    let out = rig.run(
        &["-d", "--mount", &triggers.mount()],
        "g0",
        &Triggers::command("g0"),
    );
    assert!(out.status.success(), "{out:?}");
    let out = rig.upgrade(&[]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{out:?}");
    assert!(stderr.contains("1 gRPC connection(s)"), "{stderr}");
    assert_eq!(rig.info().generation, 0);
    triggers.fire("g0", 12);
    wait_until("g0 stopped", Duration::from_secs(30), || {
        rig.tasks().get("g0").is_some_and(|(_, s)| s == "STOPPED")
    });
    let out = rig.ctr().args(["task", "rm", "g0"]).output().unwrap();
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("exit code 12"),
        "{out:?}"
    );
}
