//! `containerd-shim-shimless-v2` run the way containerd runs it, without containerd: `start`
//! (in the bundle directory, with containerd's flags and environment) and `delete`.
//!
//! - eight concurrent `start`s start one front and one daemon and all print the same bootstrap
//!   JSON (naming the namespace's socket), with `address` and `bootstrap.json` written in the
//!   bundle;
//! - `delete` of a running container kills and deletes it and prints a `DeleteResponse` with
//!   137; of an unknown container, prints 137 and touches nothing;
//! - bad command lines exit 1 naming what is wrong.

use integration::bundle::Bundle;
use prost::Message;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use task_service::api::containerd::task::v3::DeleteResponse;

mod common;
use common::shimless::Shimless;

const NS: &str = "shim-test";
const SHIM: &str = env!("CARGO_BIN_EXE_containerd-shim-shimless-v2");

/// A private shimless whose shim binary is run as containerd runs it.
struct Setup {
    shimless: Shimless,
}

impl Setup {
    fn new() -> Setup {
        Setup {
            shimless: Shimless::new("").cleans(NS),
        }
    }
    fn front_socket(&self) -> PathBuf {
        self.shimless.front_socket()
    }
    fn processes(&self, name: &str) -> Vec<u32> {
        self.shimless.processes(name)
    }
    fn shim(&self, cwd: &Path, args: &[&str]) -> Output {
        Command::new(SHIM)
            .args(args)
            .current_dir(cwd)
            .env("SHIMLESS_CONFIG", self.shimless.config())
            .env_remove("NAMESPACE")
            .env_remove("GRPC_ADDRESS")
            .output()
            .unwrap()
    }
}

#[test]
fn concurrent_starts_start_one_front_and_print_the_same_bootstrap() {
    let Some(()) = common::needs_daemon() else {
        return;
    };
    let setup = Setup::new();
    let bundles: Vec<tempfile::TempDir> = (0..8).map(|_| tempfile::tempdir().unwrap()).collect();
    let outputs: Vec<Output> = std::thread::scope(|s| {
        let handles: Vec<_> = bundles
            .iter()
            .enumerate()
            .map(|(i, b)| {
                let setup = &setup;
                let id = format!("c{i}");
                s.spawn(move || {
                    setup.shim(
                        b.path(),
                        &[
                            "-namespace",
                            NS,
                            "-address",
                            "/nonexistent/containerd.sock",
                            "-publish-binary",
                            "/usr/bin/containerd",
                            "-id",
                            &id,
                            "start",
                        ],
                    )
                })
            })
            .collect();
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    });
    let want = format!(
        "{{\"address\":\"unix://{}\",\"protocol\":\"ttrpc\",\"version\":2}}",
        setup
            .front_socket()
            .with_file_name("ns")
            .join(format!("{NS}.ttrpc.sock"))
            .display()
    );
    for (out, bundle) in outputs.iter().zip(&bundles) {
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        assert_eq!(String::from_utf8_lossy(&out.stdout), want);
        for file in ["address", "bootstrap.json"] {
            assert_eq!(
                std::fs::read_to_string(bundle.path().join(file)).unwrap(),
                want
            );
        }
    }
    assert_eq!(setup.processes("shimless-front").len(), 1);
    assert_eq!(setup.processes("shimlessd").len(), 1);
    // The logs name bundles and runtime errors: root's only.
    for log in ["front.log", "shimlessd.log"] {
        let path = setup.shimless.dir.path().join("logs").join(log);
        let mode = std::os::unix::fs::PermissionsExt::mode(
            &std::fs::metadata(&path).unwrap().permissions(),
        );
        assert_eq!(mode & 0o777, 0o600, "{}", path.display());
    }
}

#[test]
fn delete_kills_and_deletes_a_running_container_and_ignores_an_unknown_one() {
    let Some(()) = common::needs_daemon() else {
        return;
    };
    rustix::process::set_child_subreaper(rustix::process::Pid::from_raw(1)).unwrap();
    let setup = Setup::new();
    let bundle = Bundle::exit_on_demand().unwrap();
    let start = setup.shim(bundle.path(), &["-namespace", NS, "-id", "victim", "start"]);
    assert!(
        start.status.success(),
        "{}",
        String::from_utf8_lossy(&start.stderr)
    );
    let pid = smol::block_on(async {
        let mut c = common::client(&setup.front_socket()).await;
        common::create(&mut c, NS, "victim", bundle.path()).await;
        common::start(&mut c, NS, "victim").await
    });
    let bundle_arg = bundle.path().display().to_string();
    let out = setup.shim(
        Path::new("/"),
        &[
            "-namespace",
            NS,
            "-id",
            "victim",
            "-bundle",
            &bundle_arg,
            "delete",
        ],
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let reply = DeleteResponse::decode(&out.stdout[..]).unwrap();
    assert_eq!(reply.exit_status, 137);
    assert_eq!(reply.pid, pid);
    assert!(reply.exited_at.is_some());
    let listed = Command::new("runc")
        .arg("--root")
        .arg(setup.shimless.runc_root(NS))
        .args(["list", "-q"])
        .output()
        .unwrap();
    assert_eq!(String::from_utf8_lossy(&listed.stdout).trim(), "");

    let out = setup.shim(
        Path::new("/"),
        &["-namespace", NS, "-id", "nobody", "delete"],
    );
    assert!(out.status.success());
    let reply = DeleteResponse::decode(&out.stdout[..]).unwrap();
    assert_eq!((reply.pid, reply.exit_status), (0, 137));
}

#[test]
fn bad_command_lines_exit_1_naming_the_problem() {
    let setup = Setup::new();
    let cases: [(&[&str], &str); 4] = [
        (
            &["-bogus", "start"],
            "flag provided but not defined: -bogus",
        ),
        (&["-id"], "flag needs an argument: -id"),
        (
            &["-id", "x", "stop"],
            "action \"stop\" is not one of start, delete",
        ),
        (&["-namespace", "default", "start"], "-id is required"),
    ];
    for (args, want) in cases {
        let out = setup.shim(setup.shimless.dir.path(), args);
        assert_eq!(out.status.code(), Some(1), "{args:?}");
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(err.contains(want), "{args:?}: {err}");
        assert!(out.stdout.is_empty(), "{args:?}");
    }
    let out = setup.shim(setup.shimless.dir.path(), &["-v"]);
    assert!(String::from_utf8_lossy(&out.stdout).starts_with("containerd-shim-shimless-v2 "));
}

#[test]
fn delete_without_front_or_daemon_cleans_up_with_the_runtime_directly() {
    let Some(()) = common::needs_daemon() else {
        return;
    };
    rustix::process::set_child_subreaper(rustix::process::Pid::from_raw(1)).unwrap();
    let setup = Setup::new();
    let bundle = Bundle::exit_on_demand().unwrap();
    let start = setup.shim(bundle.path(), &["-namespace", NS, "-id", "orphan", "start"]);
    assert!(start.status.success(), "{start:?}");
    let pid = smol::block_on(async {
        let mut c = common::client(&setup.front_socket()).await;
        common::create(&mut c, NS, "orphan", bundle.path()).await;
        common::start(&mut c, NS, "orphan").await
    });
    for name in ["shimless-front", "shimlessd"] {
        for p in setup.processes(name) {
            Command::new("kill")
                .args(["-9", &p.to_string()])
                .status()
                .unwrap();
        }
    }
    let record = setup
        .shimless
        .dir
        .path()
        .join("state")
        .join(NS)
        .join("orphan.json");
    assert!(record.exists());
    let out = setup.shim(
        Path::new("/"),
        &["-namespace", NS, "-id", "orphan", "delete"],
    );
    assert!(out.status.success(), "{out:?}");
    let reply = DeleteResponse::decode(&out.stdout[..]).unwrap();
    assert_eq!(reply.exit_status, 137);
    let listed = Command::new("runc")
        .arg("--root")
        .arg(setup.shimless.runc_root(NS))
        .args(["list", "-q"])
        .output()
        .unwrap();
    assert_eq!(String::from_utf8_lossy(&listed.stdout).trim(), "");
    assert!(!record.exists(), "the record is removed");
    // The container's init is gone (reaped here: we are its subreaper).
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
    loop {
        let _ = rustix::process::wait(rustix::process::WaitOptions::NOHANG);
        if !Path::new(&format!("/proc/{pid}")).exists() {
            break;
        }
        assert!(std::time::Instant::now() < deadline, "{pid} still runs");
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
}
