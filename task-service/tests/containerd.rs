//! shimless under a real containerd (private, started by the test), driven with `ctr` as a
//! user would: `--runtime io.containerd.shimless.v2` finds `containerd-shim-shimless-v2` on
//! containerd's PATH, or `--runtime <path of the binary>` (the seed's `runtime_path` form).
//! containerd talks ttrpc to the front (the default) and, in the `_over_grpc` tests, gRPC.
//!
//! Most tests run against both containerd 1.7 and 2.1 (`<test>::containerd_1_7`,
//! `<test>::containerd_2_1`); gRPC toward containerd runs on 1.7 only, and 2.1 is shown to be
//! refused at `start` naming the option; `-info` is checked against 2.1's
//! `ctr plugins inspect-runtime` and the stock shim's own `-info`.
//!
//! - every `ctr` flow: attached with stdout captured, `-t`, `--rm` with the exit code,
//!   detached, `task exec`, `kill -s`, `pause`/`resume`, `ps`, `metrics`, `rm`;
//! - 20 containers add no process beside the containers themselves (the seed's check), while
//!   stock containers each add a shim, and keep working beside them;
//! - `kill -9` of the daemon with 20 running and 5 exiting while it is down: containerd still
//!   lists 15 RUNNING, gets the 5 true exit codes, and no 255;
//! - a restart of containerd: it reconnects, the exit that happened meanwhile is forwarded to it
//!   once it is back and reported with its true code;
//! - runtime options (`containerd.runc.v1.Options`): `BinaryName` picks the runtime binary,
//!   `SystemdCgroup` without systemd is refused with a message naming it.

use integration::containerd::{Containerd, ContainerdConfig, Version};
use integration::image::Image;
use integration::{Need, require};
use prost::Message;
use std::path::PathBuf;
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};
use task_service::api::containerd::types::RuntimeInfo;

#[macro_use]
mod common;
use common::shimless::Shimless;

const BUSYBOX: &str = "docker.io/shimless/busybox:test";
const SHIMLESS: &str = "io.containerd.shimless.v2";

/// A private containerd that runs shimless, with busybox imported into `ns`. Dropped in field
/// order: containerd (its tasks) first, then shimless's processes.
struct Rig {
    containerd: Containerd,
    shimless: Shimless,
    ns: String,
}

impl Rig {
    fn new(version: Version, ns: &str, shimless_extra: &str) -> Option<Rig> {
        Rig::with(ns, shimless_extra, ContainerdConfig::new().version(version))
    }

    /// `ns` gets the version's suffix (`-2.1`): cgroups are keyed by namespace and ID on the
    /// host, and the tests of both versions run at once.
    fn with(ns: &str, shimless_extra: &str, config: ContainerdConfig) -> Option<Rig> {
        let version = config.containerd_version();
        let mut needs = version.needs().to_vec();
        needs.extend([Need::Btf, Need::Bpffs]);
        require(&needs)?;
        let ns = match version {
            Version::V1_7 => ns.to_string(),
            other => format!("{ns}-{}", other.label()),
        };
        let ns = ns.as_str();
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

    fn version(&self) -> Version {
        self.containerd.config().containerd_version()
    }

    /// `ctr <args>`, which must succeed; its stdout.
    fn ok(&self, args: &[&str]) -> String {
        let out = self.ctr().args(args).output().unwrap();
        assert!(
            out.status.success(),
            "ctr {args:?}: {}\ncontainerd: {}",
            String::from_utf8_lossy(&out.stderr),
            self.containerd.log_tail(20)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// `ctr run` through shimless with `args` between `run` and the image.
    fn run(&self, flags: &[&str], id: &str, cmd: &[&str]) -> Output {
        let mut c = self.ctr();
        c.args(["run", "--runtime", SHIMLESS])
            .args(flags)
            .args([BUSYBOX, id])
            .args(cmd);
        c.output().unwrap()
    }

    fn tasks(&self) -> std::collections::HashMap<String, String> {
        self.containerd.tasks(&self.ns).expect("task ls")
    }

    /// Waits, bounded, until `check` holds for the task list.
    fn wait_tasks(
        &self,
        what: &str,
        check: impl Fn(&std::collections::HashMap<String, String>) -> bool,
    ) {
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            let tasks = self.tasks();
            if check(&tasks) {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "{what}: {tasks:?}\ncontainerd: {}\nshimlessd: {}\nfront: {}",
                self.containerd.log_tail(30),
                self.shimless.log("shimlessd.log"),
                self.shimless.log("front.log")
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// `ctr events`, recorded to a file until dropped.
    fn events(&self) -> Events {
        let path = self.shimless.dir.path().join(format!("events-{}", self.ns));
        let file = std::fs::File::create(&path).unwrap();
        let child = self
            .ctr()
            .arg("events")
            .stdout(file)
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        // `ctr events` subscribes as it starts; give it that moment.
        std::thread::sleep(Duration::from_millis(300));
        Events { child, path }
    }
}

struct Events {
    child: Child,
    path: PathBuf,
}

impl Events {
    /// The recorded lines of one topic.
    fn lines(&self, topic: &str) -> Vec<String> {
        std::fs::read_to_string(&self.path)
            .unwrap_or_default()
            .lines()
            .filter(|l| l.contains(&format!(" {topic} ")))
            .map(str::to_string)
            .collect()
    }
}

impl Drop for Events {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The exit status a `/tasks/exit` event line reports for container `id`'s init.
fn exit_status_of(lines: &[String], id: &str) -> Option<u32> {
    lines.iter().find_map(|l| {
        let json = &l[l.find('{')?..];
        let v: serde_json::Value = serde_json::from_str(json).ok()?;
        (v["container_id"] == id && v["id"] == id)
            .then(|| v["exit_status"].as_u64().unwrap_or(0) as u32)
    })
}

/// A directory bind-mounted at `/trigger` in containers: a file `<id>` there makes the
/// container of that id exit with the code written in it.
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
    /// The container command: wait for the trigger, exit with its code.
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

on_both!(
    ctr_runs_containers_through_shimless_in_every_way,
    twenty_containers_add_no_process_and_stock_containers_keep_working_beside,
    kill_9_of_the_daemon_with_20_running_is_invisible_to_containerd,
    a_restarted_containerd_reconnects_and_learns_an_exit_that_happened_meanwhile,
    runtime_options_pick_the_runtime_binary_and_refuse_what_cannot_be_honoured,
);

fn ctr_runs_containers_through_shimless_in_every_way(version: Version) {
    let Some(rig) = Rig::new(version, "shimless-ctr", "") else {
        return;
    };
    every_ctr_flow(&rig);
}

/// gRPC toward containerd works with 1.7 only: containerd 2.x's gRPC client to a shim starts
/// idle, and 2.x takes an idle connection for a dead shim (see the 2.1 test below).
#[test]
fn ctr_runs_containers_through_shimless_in_every_way_over_grpc() {
    let grpc = "containerd_protocol = \"grpc\"";
    let Some(rig) = Rig::new(Version::V1_7, "shimless-ctr-grpc", grpc) else {
        return;
    };
    every_ctr_flow(&rig);
}

#[test]
fn grpc_toward_containerd_2_1_is_refused_at_start_naming_the_option() {
    let grpc = "containerd_protocol = \"grpc\"";
    let Some(rig) = Rig::new(Version::V2_1, "shimless-grpc-2", grpc) else {
        return;
    };
    let out = rig.run(&["--rm"], "hello", &["echo", "hello"]);
    assert!(!out.status.success(), "{out:?}");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("containerd_protocol = \"grpc\"") && err.contains("\"ttrpc\""),
        "{err}"
    );
    assert!(rig.tasks().is_empty(), "{:?}", rig.tasks());
    // Refused before anything started: no daemon serves a container it would have lost.
    assert!(rig.shimless.processes("shimlessd").is_empty());
}

fn every_ctr_flow(rig: &Rig) {
    // Attached, stdout captured; --rm passes the exit code on.
    let out = rig.run(&["--rm"], "hello", &["echo", "hello from shimless"]);
    assert_eq!(
        String::from_utf8_lossy(&out.stdout),
        "hello from shimless\n"
    );
    assert_eq!(out.status.code(), Some(0));
    let out = rig.run(&["--rm"], "seven", &["sh", "-c", "exit 7"]);
    assert_eq!(out.status.code(), Some(7), "{out:?}");

    // The seed's runtime_path form: the binary by its path.
    let shim = Shimless::bin_dir().join("containerd-shim-shimless-v2");
    let out = rig
        .ctr()
        .args(["run", "--rm", "--runtime"])
        .arg(&shim)
        .args([BUSYBOX, "bypath", "echo", "by path"])
        .output()
        .unwrap();
    assert_eq!(String::from_utf8_lossy(&out.stdout), "by path\n", "{out:?}");

    // -t: ctr needs a terminal of its own, which `script` gives it.
    let ctr_line = format!(
        "{} --address {} -n {} run -t --rm --runtime {SHIMLESS} {BUSYBOX} tty sh -c 'tty; echo on-a-tty'",
        rig.version().program("ctr").display(),
        rig.containerd.socket().display(),
        rig.ns
    );
    let out = Command::new("script")
        .args(["-qec", &ctr_line, "/dev/null"])
        .env("CONTAINERD_SNAPSHOTTER", "overlayfs")
        .stdin(Stdio::null())
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.contains("/dev/console") || text.contains("/dev/pts"),
        "{text}"
    );
    assert!(text.contains("on-a-tty"), "{text}");
    assert_eq!(out.status.code(), Some(0), "{text}");

    // Detached, then exec, kill -s, pause/resume, ps, metrics, rm.
    let out = rig.run(
        &["-d"],
        "det",
        &[
            "sh",
            "-c",
            "trap 'exit 5' USR1; while :; do sleep 0.05; done",
        ],
    );
    assert!(out.status.success(), "{out:?}");
    assert_eq!(rig.tasks().get("det").map(String::as_str), Some("RUNNING"));
    let out = rig
        .ctr()
        .args([
            "task",
            "exec",
            "--exec-id",
            "e1",
            "det",
            "sh",
            "-c",
            "echo in-exec; exit 3",
        ])
        .output()
        .unwrap();
    assert_eq!(String::from_utf8_lossy(&out.stdout), "in-exec\n");
    assert_eq!(out.status.code(), Some(3));
    rig.ok(&["task", "pause", "det"]);
    assert_eq!(rig.tasks().get("det").map(String::as_str), Some("PAUSED"));
    rig.ok(&["task", "resume", "det"]);
    assert_eq!(rig.tasks().get("det").map(String::as_str), Some("RUNNING"));
    let ls = rig.ok(&["task", "ls"]);
    let pid = ls
        .lines()
        .find(|l| l.starts_with("det "))
        .and_then(|l| l.split_whitespace().nth(1))
        .unwrap()
        .to_string();
    let ps = rig.ok(&["task", "ps", "det"]);
    assert!(ps.lines().any(|l| l.starts_with(&pid)), "{pid} in {ps}");
    let metrics = rig.ok(&["task", "metrics", "det"]);
    assert!(metrics.contains("memory.usage_in_bytes"), "{metrics}");
    rig.ok(&["task", "kill", "-s", "USR1", "det"]);
    rig.wait_tasks("det stops", |t| {
        t.get("det").map(String::as_str) == Some("STOPPED")
    });
    let out = rig.ctr().args(["task", "rm", "det"]).output().unwrap();
    let warned = String::from_utf8_lossy(&out.stderr);
    assert!(warned.contains("exit code 5"), "{warned}");
    rig.ok(&["container", "rm", "det"]);
    assert!(rig.tasks().is_empty(), "{:?}", rig.tasks());
}

fn twenty_containers_add_no_process_and_stock_containers_keep_working_beside(version: Version) {
    let Some(rig) = Rig::new(version, "shimless-count", "") else {
        return;
    };
    let out = rig.run(&["-d"], "c00", &["sleep", "100000"]);
    assert!(out.status.success(), "{out:?}");
    let with_one = rig.shimless.shim_processes(&rig.containerd);
    assert_eq!(with_one.len(), 2, "the front and the daemon: {with_one:?}");
    for i in 1..20 {
        let id = format!("c{i:02}");
        let out = rig.run(&["-d"], &id, &["sleep", "100000"]);
        assert!(out.status.success(), "{id}: {out:?}");
    }
    let tasks = rig.tasks();
    assert_eq!(tasks.values().filter(|s| *s == "RUNNING").count(), 20);
    assert_eq!(
        rig.shimless.shim_processes(&rig.containerd),
        with_one,
        "no process per container"
    );

    // The stock runtime on the same containerd: one shim each, and it works.
    for i in 0..3 {
        let id = format!("stock{i}");
        let out = rig
            .ctr()
            .args(["run", "-d", BUSYBOX, &id, "sleep", "100000"])
            .output()
            .unwrap();
        assert!(out.status.success(), "{out:?}");
    }
    assert_eq!(
        rig.shimless.shim_processes(&rig.containerd).len(),
        with_one.len() + 3
    );
    let out = rig
        .ctr()
        .args(["run", "--rm", BUSYBOX, "stock-echo", "echo", "stock"])
        .output()
        .unwrap();
    assert_eq!(String::from_utf8_lossy(&out.stdout), "stock\n");
}

fn kill_9_of_the_daemon_with_20_running_is_invisible_to_containerd(version: Version) {
    // The front starts the daemon again 3 s after it dies: exits happen in between.
    let Some(rig) = Rig::new(version, "shimless-kill9", "restart_delay_ms = 3000") else {
        return;
    };
    kill_9_with_20_running(&rig);
}

#[test]
fn kill_9_of_the_daemon_with_20_running_is_invisible_to_containerd_over_grpc() {
    let extra = "restart_delay_ms = 3000\ncontainerd_protocol = \"grpc\"";
    let Some(rig) = Rig::new(Version::V1_7, "shimless-kill9-grpc", extra) else {
        return;
    };
    kill_9_with_20_running(&rig);
}

fn kill_9_with_20_running(rig: &Rig) {
    let triggers = Triggers::new();
    let events = rig.events();
    let ids: Vec<String> = (0..20).map(|i| format!("k{i:02}")).collect();
    for id in &ids {
        let cmd = Triggers::command(id);
        let cmd: Vec<&str> = cmd.iter().map(String::as_str).collect();
        let out = rig.run(&["-d", "--mount", &triggers.mount()], id, &cmd);
        assert!(out.status.success(), "{id}: {out:?}");
    }
    let pids: std::collections::HashMap<String, u32> = rig
        .ok(&["task", "ls"])
        .lines()
        .skip(1)
        .filter_map(|l| {
            let mut f = l.split_whitespace();
            Some((f.next()?.to_string(), f.next()?.parse().ok()?))
        })
        .collect();
    let daemons = rig.shimless.processes("shimlessd");
    assert_eq!(daemons.len(), 1, "{daemons:?}");
    Command::new("kill")
        .args(["-9", &daemons[0].to_string()])
        .status()
        .unwrap();
    // Five exit while no daemon runs.
    for (i, id) in ids.iter().take(5).enumerate() {
        triggers.fire(id, 20 + i as u8);
    }
    let deadline = Instant::now() + Duration::from_secs(2);
    while ids.iter().take(5).any(|id| common::alive(pids[id])) {
        assert!(Instant::now() < deadline, "the five did not exit");
        std::thread::sleep(Duration::from_millis(20));
    }
    assert!(
        rig.shimless.processes("shimlessd").is_empty(),
        "the exits must happen while the daemon is down"
    );

    rig.wait_tasks("15 running, 5 stopped", |t| {
        t.values().filter(|s| *s == "RUNNING").count() == 15
            && t.values().filter(|s| *s == "STOPPED").count() == 5
    });
    let deadline = Instant::now() + Duration::from_secs(30);
    while events.lines("/tasks/exit").len() < 5 {
        assert!(
            Instant::now() < deadline,
            "{:?}\nall events: {}\nshimlessd: {}",
            events.lines("/tasks/exit"),
            std::fs::read_to_string(&events.path).unwrap_or_default(),
            rig.shimless.log("shimlessd.log")
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    let exits = events.lines("/tasks/exit");
    for (i, id) in ids.iter().take(5).enumerate() {
        assert_eq!(exit_status_of(&exits, id), Some(20 + i as u32), "{exits:?}");
    }
    assert_eq!(exits.len(), 5, "{exits:?}");
    assert!(
        !exits.iter().any(|l| l.contains("\"exit_status\":255")),
        "{exits:?}"
    );
    assert!(
        !rig.containerd.log_tail(400).contains("shim disconnected"),
        "{}",
        rig.containerd.log_tail(40)
    );
    let log = rig.shimless.log("front.log");
    assert!(log.contains("was killed by signal 9"), "{log}");
    // The deletes report the same codes.
    let out = rig.ctr().args(["task", "rm", "k02"]).output().unwrap();
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("exit code 22"),
        "{out:?}"
    );
}

fn a_restarted_containerd_reconnects_and_learns_an_exit_that_happened_meanwhile(version: Version) {
    // At trace level containerd logs every event forwarded to it.
    let config = ContainerdConfig::new().version(version).log_level("trace");
    let Some(mut rig) = Rig::with("shimless-ctrd-restart", "", config) else {
        return;
    };
    let triggers = Triggers::new();
    for id in ["stays", "goes"] {
        let cmd = Triggers::command(id);
        let cmd: Vec<&str> = cmd.iter().map(String::as_str).collect();
        let out = rig.run(&["-d", "--mount", &triggers.mount()], id, &cmd);
        assert!(out.status.success(), "{id}: {out:?}");
    }
    rig.containerd.stop_daemon();
    triggers.fire("goes", 13);
    std::thread::sleep(Duration::from_millis(500));
    rig.containerd
        .start_daemon()
        .expect("start containerd again");
    rig.wait_tasks("stays runs, goes stopped", |t| {
        t.get("stays").map(String::as_str) == Some("RUNNING")
            && t.get("goes").map(String::as_str) == Some("STOPPED")
    });
    let out = rig.ctr().args(["task", "rm", "goes"]).output().unwrap();
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("exit code 13"),
        "{out:?}"
    );
    // The connection of the one still running works.
    let out = rig
        .ctr()
        .args([
            "task",
            "exec",
            "--exec-id",
            "after",
            "stays",
            "echo",
            "still here",
        ])
        .output()
        .unwrap();
    assert_eq!(String::from_utf8_lossy(&out.stdout), "still here\n");
}

fn runtime_options_pick_the_runtime_binary_and_refuse_what_cannot_be_honoured(version: Version) {
    // The seed's configuration registers shimless with `runtime_type = "io.containerd.runc.v2"`
    // and a `runtime_path`, so containerd hands it `containerd.runc.v1.Options`. `ctr` sets
    // those options only for that runtime name, so here containerd finds shimless under the
    // runc shim's name.
    let alias = tempfile::tempdir().unwrap();
    std::os::unix::fs::symlink(
        Shimless::bin_dir().join("containerd-shim-shimless-v2"),
        alias.path().join("containerd-shim-runc-v2"),
    )
    .unwrap();
    let config = ContainerdConfig::new()
        .version(version)
        .path_prepend(alias.path());
    let Some(rig) = Rig::with("shimless-options", "", config) else {
        return;
    };
    let run = |flags: &[&str], id: &str| {
        rig.ctr()
            .args(["run", "-d"])
            .args(flags)
            .args([BUSYBOX, id, "sleep", "100000"])
            .output()
            .unwrap()
    };
    // BinaryName: a runtime of the test's own, which notes each call and runs runc.
    let calls = alias.path().join("calls");
    let wrapper = alias.path().join("noting-runc");
    std::fs::write(
        &wrapper,
        format!(
            "#!/bin/sh\necho \"$*\" >> {}\nexec runc \"$@\"\n",
            calls.display()
        ),
    )
    .unwrap();
    std::fs::set_permissions(
        &wrapper,
        std::os::unix::fs::PermissionsExt::from_mode(0o755),
    )
    .unwrap();
    let out = run(
        &["--runc-binary", &wrapper.display().to_string()],
        "wrapped",
    );
    assert!(out.status.success(), "{out:?}");
    let noted = std::fs::read_to_string(&calls).unwrap_or_default();
    assert!(
        noted
            .lines()
            .any(|l| l.contains("create") && l.contains("wrapped")),
        "{noted}"
    );
    assert_eq!(
        rig.tasks().get("wrapped").map(String::as_str),
        Some("RUNNING")
    );
    assert_eq!(
        rig.shimless.processes("shimlessd").len(),
        1,
        "served by shimless"
    );

    // SystemdCgroup without systemd as init: refused, saying why, and nothing left running.
    if !task_service::options::host_has_systemd() {
        let out = run(
            &[
                "--runc-systemd-cgroup",
                "--cgroup",
                "system.slice:shimless:sd",
            ],
            "sd",
        );
        assert!(!out.status.success());
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(err.contains("SystemdCgroup"), "{err}");
        assert_ne!(
            rig.tasks().get("sd").map(String::as_str),
            Some("RUNNING"),
            "{:?}",
            rig.tasks()
        );
    }
}

#[test]
fn info_answers_containerd_2_1_as_the_runc_shim_does() {
    let Some(rig) = Rig::new(Version::V2_1, "shimless-info", "") else {
        return;
    };
    // containerd runs `<runtime> -info` with the options on stdin and decodes the answer.
    let inspect = |runtime: &str, extra: &[&str]| -> serde_json::Value {
        let out = rig.ok(
            &[&["plugins", "inspect-runtime", "--runtime", runtime], extra]
                .concat()
                .iter()
                .map(|s| &**s)
                .collect::<Vec<_>>(),
        );
        serde_json::from_str(&out).unwrap_or_else(|e| panic!("{e}: {out}"))
    };
    let shim = Shimless::bin_dir().join("containerd-shim-shimless-v2");
    let shim = shim.to_str().unwrap();
    let ours = inspect(shim, &[]);
    let stock = inspect("io.containerd.runc.v2", &[]);
    assert_eq!(ours["Name"], "io.containerd.shimless.v2", "{ours}");
    assert_eq!(stock["Name"], "io.containerd.runc.v2", "{stock}");
    assert_eq!(
        ours["Version"]["Version"],
        env!("CARGO_PKG_VERSION"),
        "{ours}"
    );
    // The same `runc features`, decoded by containerd from both.
    assert!(ours["Features"]["ociVersionMax"].is_string(), "{ours}");
    assert_eq!(ours["Features"], stock["Features"]);
    // Options, as containerd passes them (an encoded Any on stdin): read and given back, as
    // the stock shim does; crun 1.8 has no `features` command, and both still answer.
    for binary in ["runc", "crun"] {
        let options = prost_types::Any {
            type_url: "containerd.runc.v1.Options".into(),
            value: task_service::api::containerd::runc::v1::Options {
                binary_name: binary.into(),
                ..Default::default()
            }
            .encode_to_vec(),
        };
        let stock =
            integration::containerd::CONTAINERD_2_1_BIN.to_string() + "/containerd-shim-runc-v2";
        let [ours, stock] = [shim, stock.as_str()].map(|program| {
            let mut child = Command::new(program)
                .arg("-info")
                .stdin(Stdio::piped())
                .stdout(Stdio::piped())
                .stderr(Stdio::piped())
                .spawn()
                .unwrap();
            std::io::Write::write_all(&mut child.stdin.take().unwrap(), &options.encode_to_vec())
                .unwrap();
            let out = child.wait_with_output().unwrap();
            assert!(out.status.success(), "{program} -info: {out:?}");
            RuntimeInfo::decode(out.stdout.as_slice()).unwrap()
        });
        assert_eq!(ours.options, Some(options.clone()), "{binary}");
        assert_eq!(
            stock.options.as_ref().map(|o| &o.value),
            Some(&options.value)
        );
        let features = |info: &RuntimeInfo| {
            info.features.as_ref().map(|any| {
                let doc: serde_json::Value = serde_json::from_slice(&any.value).unwrap();
                (any.type_url.clone(), doc)
            })
        };
        assert_eq!(features(&ours), features(&stock), "{binary}");
        assert_eq!(
            features(&ours).is_some(),
            binary == "runc" || crun_has_features()
        );
    }
}

/// Whether this machine's crun answers `crun features` (1.9 and later).
fn crun_has_features() -> bool {
    Command::new("crun")
        .arg("features")
        .output()
        .is_ok_and(|o| o.status.success())
}
