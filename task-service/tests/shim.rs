//! `containerd-shim-shimless-v2` run the way containerd runs it, without containerd: `start`
//! (in the bundle directory, with containerd's flags and environment) and `delete`.
//!
//! - eight concurrent `start`s start one front and one daemon and all print the same bootstrap
//!   JSON (naming the namespace's socket), with `address` and `bootstrap.json` written in the
//!   bundle;
//! - `delete` of a running container kills and deletes it and prints a `DeleteResponse` with
//!   137; of an unknown container, prints 137 and touches nothing;
//! - bad command lines exit 1 naming what is wrong;
//! - `start` as containerd 2.3 runs it (an encoded `BootstrapParams` on stdin) answers an
//!   encoded `BootstrapResult`; with the older stdin (the options `Any`) it answers JSON; with
//!   `containerd_protocol = "grpc"` toward 2.x it is refused naming the option.

use integration::bundle::Bundle;
use prost::Message;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use task_service::api::containerd::runtime::bootstrap::v1::{
    BootstrapParams, BootstrapResult, Extension,
};
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
            // What containerd.service (Type=notify) leaves in containerd's environment.
            .env("NOTIFY_SOCKET", "/run/systemd/notify")
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
    // systemd's notify socket never reaches the front, the daemon (nor runc): runc would bind
    // one in the container's state directory, a path too long for a unix socket.
    for name in ["shimless-front", "shimlessd"] {
        let pid = setup.processes(name)[0];
        let environ = std::fs::read(format!("/proc/{pid}/environ")).unwrap();
        assert!(
            !environ
                .split(|b| *b == 0)
                .any(|var| var.starts_with(b"NOTIFY_SOCKET=")),
            "{name} has NOTIFY_SOCKET in its environment"
        );
    }
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

/// Runs the shim as containerd 2.3's `shim.Command` does for `start`: its flags, its
/// environment, the bundle as working directory, an encoded `BootstrapParams` on stdin, and
/// stdout and stderr read together as the answer.
fn start_as_containerd_2_3(shimless: &Shimless, bundle: &Path, id: &str, stdin: &[u8]) -> Output {
    use std::io::Write;
    let grpc = "/run/containerd-2.3/containerd.sock";
    let ttrpc = "/run/containerd-2.3/containerd.sock.ttrpc";
    let mut child = Command::new(SHIM)
        .args(["-namespace", NS, "-address", grpc, "-publish-binary"])
        .args(["/usr/bin/containerd", "-id", id, "start"])
        .current_dir(bundle)
        .env("SHIMLESS_CONFIG", shimless.config())
        .env("GOMAXPROCS", "2")
        .env("MAX_SHIM_VERSION", "2")
        .env("TTRPC_ADDRESS", ttrpc)
        .env("GRPC_ADDRESS", grpc)
        .env("NAMESPACE", NS)
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    child.stdin.take().unwrap().write_all(stdin).unwrap();
    let mut out = child.wait_with_output().unwrap();
    let stderr = std::mem::take(&mut out.stderr);
    out.stdout.extend(stderr);
    out
}

fn bootstrap_params(id: &str) -> BootstrapParams {
    let options = prost_types::Any {
        type_url: "containerd.runc.v1.Options".into(),
        value: task_service::api::containerd::runc::v1::Options {
            binary_name: "runc".into(),
            ..Default::default()
        }
        .encode_to_vec(),
    };
    BootstrapParams {
        instance_id: id.into(),
        namespace: NS.into(),
        log_level: 0,
        containerd_version: "v2.3.0".into(),
        containerd_ttrpc_address: "/run/containerd-2.3/containerd.sock.ttrpc".into(),
        containerd_grpc_address: "/run/containerd-2.3/containerd.sock".into(),
        containerd_binary: "/usr/bin/containerd".into(),
        extensions: vec![Extension {
            value: Some(options),
        }],
        socket_dir: None,
    }
}

#[test]
fn containerd_2_3s_bootstrap_params_get_a_bootstrap_result_and_older_forms_json() {
    let Some(()) = common::needs_daemon() else {
        return;
    };
    let setup = Setup::new();
    let bundle = tempfile::tempdir().unwrap();
    let params = bootstrap_params("boot23");
    let out = start_as_containerd_2_3(
        &setup.shimless,
        bundle.path(),
        "boot23",
        &params.encode_to_vec(),
    );
    assert!(out.status.success(), "{out:?}");
    // containerd 2.3 decodes the answer as a BootstrapResult first.
    let result = BootstrapResult::decode(out.stdout.as_slice()).expect("a BootstrapResult");
    let socket = setup
        .front_socket()
        .with_file_name("ns")
        .join(format!("{NS}.ttrpc.sock"));
    assert_eq!(
        (
            result.version,
            result.address.as_str(),
            result.protocol.as_str()
        ),
        (3, &*format!("unix://{}", socket.display()), "ttrpc"),
        "{result:?}"
    );
    assert!(socket.exists());
    // bootstrap.json keeps the JSON form (2.x before 2.3 reads it back, and so does 2.3).
    let json: serde_json::Value =
        serde_json::from_slice(&std::fs::read(bundle.path().join("bootstrap.json")).unwrap())
            .unwrap();
    assert_eq!(json["version"], 3);
    assert_eq!(json["address"], result.address);

    // containerd 1.7 to 2.2 write the options Any (or nothing): the answer stays JSON.
    let older = tempfile::tempdir().unwrap();
    let any = params.extensions[0].value.clone().unwrap();
    let out = start_as_containerd_2_3(&setup.shimless, older.path(), "older", &any.encode_to_vec());
    assert!(out.status.success(), "{out:?}");
    let json: serde_json::Value = serde_json::from_slice(&out.stdout).expect("JSON");
    assert_eq!(json["protocol"], "ttrpc");

    // gRPC toward containerd 2.x is refused, naming the option, before anything starts.
    let grpc = Shimless::new("containerd_protocol = \"grpc\"");
    let refused = tempfile::tempdir().unwrap();
    let out = start_as_containerd_2_3(&grpc, refused.path(), "g", &params.encode_to_vec());
    assert_eq!(out.status.code(), Some(1), "{out:?}");
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("containerd_protocol = \"grpc\""), "{text}");
    assert!(grpc.processes("shimless-front").is_empty());
}
