//! `shimlessctl` against a real `shimlessd`: output attached, exit codes passed through, JSON,
//! and errors that name what was wrong.

use integration::bundle::BundleBuilder;
use integration::child::Child;
use integration::shimlessd::Shimlessd;
use integration::{Need, require};
use std::process::{Command, Output, Stdio};

struct Running {
    _daemon: Child,
    dir: tempfile::TempDir,
}

fn daemon() -> Option<Running> {
    require(&[
        Need::Root,
        Need::Program("runc"),
        Need::File("/bin/busybox"),
    ])?;
    let dir = tempfile::tempdir().unwrap();
    let daemon = Shimlessd::new(env!("CARGO_BIN_EXE_shimlessd"))
        .in_dir(dir.path())
        .start(&dir.path().join("d.log"))
        .unwrap();
    Some(Running {
        _daemon: daemon,
        dir,
    })
}

fn ctl(d: &Running, args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_shimlessctl"))
        .arg("--socket")
        .arg(Shimlessd::socket_in(d.dir.path()))
        .args(["--namespace", "ctl-test"])
        .args(args)
        .stdin(Stdio::null())
        .output()
        .unwrap()
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

fn bundle(script: &str) -> integration::bundle::Bundle {
    BundleBuilder::new()
        .args(["sh", "-c", script])
        .build()
        .unwrap()
}

fn path(b: &integration::bundle::Bundle) -> &str {
    b.path().to_str().unwrap()
}

#[test]
fn run_attaches_output_and_exits_with_the_containers_code() {
    let Some(d) = daemon() else { return };
    let b = bundle("echo out-line; echo err-line >&2; exit 7");
    let out = ctl(&d, &["run", "r1", "--bundle", path(&b)]);
    assert_eq!(out.status.code(), Some(7), "{}", text(&out.stderr));
    assert_eq!(text(&out.stdout), "out-line\n");
    assert_eq!(text(&out.stderr), "err-line\n");
    // stdin attached with -i reaches the container, and its end ends the container's input.
    let cat = bundle("tr a-z A-Z; exit 5");
    let mut child = Command::new(env!("CARGO_BIN_EXE_shimlessctl"))
        .arg("--socket")
        .arg(Shimlessd::socket_in(d.dir.path()))
        .args([
            "--namespace",
            "ctl-test",
            "run",
            "-i",
            "r2",
            "--bundle",
            path(&cat),
        ])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    std::io::Write::write_all(&mut child.stdin.take().unwrap(), b"shout\n").unwrap();
    let out2 = child.wait_with_output().unwrap();
    assert_eq!(out2.status.code(), Some(5));
    assert_eq!(text(&out2.stdout), "SHOUT\n");
    // run deletes what it ran.
    let gone = ctl(&d, &["state", "r1"]);
    assert_eq!(gone.status.code(), Some(1));
    assert!(
        text(&gone.stderr).contains("NotFound"),
        "{}",
        text(&gone.stderr)
    );
}

#[test]
fn ps_exec_kill_wait_and_delete_by_hand() {
    let Some(d) = daemon() else { return };
    let b = bundle("sleep 1000");
    let run = ctl(&d, &["run", "-d", "svc", "--bundle", path(&b)]);
    assert!(run.status.success(), "{}", text(&run.stderr));
    let ps = ctl(&d, &["--json", "ps"]);
    let rows: serde_json::Value = serde_json::from_slice(&ps.stdout).unwrap();
    assert_eq!(rows[0]["id"], "svc");
    assert_eq!(rows[0]["status"], "running");
    assert_eq!(rows[0]["namespace"], "ctl-test");
    let table = text(&ctl(&d, &["ps"]).stdout);
    assert!(table.starts_with("NAMESPACE"), "{table}");
    assert!(
        table.contains("svc") && table.contains("running"),
        "{table}"
    );
    let exec = ctl(
        &d,
        &[
            "exec",
            "svc",
            "--exec-id",
            "e1",
            "--",
            "sh",
            "-c",
            "echo in-exec; exit 4",
        ],
    );
    assert_eq!(exec.status.code(), Some(4), "{}", text(&exec.stderr));
    assert_eq!(text(&exec.stdout), "in-exec\n");
    let bad = ctl(&d, &["kill", "svc", "--signal", "BOGUS"]);
    assert_eq!(bad.status.code(), Some(1));
    assert!(
        text(&bad.stderr).contains("unknown signal \"BOGUS\""),
        "{}",
        text(&bad.stderr)
    );
    let early = ctl(&d, &["delete", "svc"]);
    assert_eq!(early.status.code(), Some(1));
    assert!(
        text(&early.stderr).contains("FailedPrecondition"),
        "{}",
        text(&early.stderr)
    );
    assert!(
        ctl(&d, &["kill", "svc", "--signal", "KILL"])
            .status
            .success()
    );
    let wait = ctl(&d, &["--json", "wait", "svc"]);
    assert_eq!(wait.status.code(), Some(137));
    let waited: serde_json::Value = serde_json::from_slice(&wait.stdout).unwrap();
    assert_eq!(waited["exit_status"], 137);
    let deleted = ctl(&d, &["delete", "svc"]);
    assert!(deleted.status.success(), "{}", text(&deleted.stderr));
    assert_eq!(text(&ctl(&d, &["--json", "ps"]).stdout).trim(), "[]");
}

#[test]
fn a_missing_daemon_is_named_with_what_to_do() {
    let out = Command::new(env!("CARGO_BIN_EXE_shimlessctl"))
        .args(["--socket", "/nonexistent/shimless.sock", "ps"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let err = text(&out.stderr);
    assert!(
        err.contains("cannot reach shimlessd at /nonexistent/shimless.sock")
            && err.contains("--socket"),
        "{err}"
    );
}

#[test]
fn status_shows_a_daemon_running_without_exitwatch_as_degraded() {
    let Some(healthy) = daemon() else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    // Not bpffs: exitwatch cannot pin there, and the daemon runs without it.
    let pins = dir.path().join("not-bpffs");
    let mut cmd = Shimlessd::new(env!("CARGO_BIN_EXE_shimlessd"))
        .in_dir(dir.path())
        .command();
    cmd.arg("--bpf-pin-dir").arg(&pins);
    let log = dir.path().join("d.log");
    let started = Child::start(cmd, &log, "serving on").unwrap();
    let degraded = Running {
        _daemon: started,
        dir,
    };
    let out = ctl(&degraded, &["status"]);
    assert_eq!(out.status.code(), Some(3), "{out:?}");
    let stdout = text(&out.stdout);
    assert!(stdout.contains("DEGRADED"), "{stdout}");
    assert!(stdout.contains("warning: "), "{stdout}");
    let out = ctl(&degraded, &["--json", "status"]);
    let value: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(value["degraded"], true, "{value}");
    let logged = std::fs::read_to_string(&log).unwrap();
    assert!(
        logged.contains("warning: running WITHOUT exitwatch"),
        "{logged}"
    );
    if require(&[Need::Btf, Need::Bpffs]).is_some() {
        let out = ctl(&healthy, &["status"]);
        assert_eq!(out.status.code(), Some(0), "{out:?}");
        assert!(text(&out.stdout).contains("kept in the kernel: yes"));
    }
}
