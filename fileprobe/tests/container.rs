//! A probe against a live runc container's `/proc/<pid>/root`.

use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use fileprobe::{ProbeFailure, ProbeKind, ProbeResult, ProbeSpec, Prober, Target, check_at};
use integration::bundle::{BundleBuilder, ContainerGuard};
use integration::{Need, require};

#[test]
fn probe_resolves_inside_a_live_container_root_and_fails_once_it_is_gone() {
    let Some(()) = require(&[
        Need::Root,
        Need::Program("runc"),
        Need::File("/bin/busybox"),
    ]) else {
        return;
    };
    let bundle = BundleBuilder::new()
        .args(["sh", "-c", "while true; do touch /probe; sleep 1; done"])
        .build()
        .unwrap();
    let state = tempfile::tempdir().unwrap();
    let id = format!("fileprobe-{}", std::process::id());
    let guard = ContainerGuard::new("runc", state.path().join("state"), id.clone());
    let pid_file = state.path().join("pid");
    let log = std::fs::File::create(state.path().join("stderr")).unwrap();
    let status = Command::new("runc")
        .arg("--root")
        .arg(state.path().join("state"))
        .args(["run", "-d", "--pid-file"])
        .arg(&pid_file)
        .arg("--bundle")
        .arg(bundle.path())
        .arg(&id)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(log)
        .status()
        .unwrap();
    let stderr = std::fs::read_to_string(state.path().join("stderr")).unwrap();
    assert!(status.success(), "runc run: {stderr}");
    let pid: u32 = std::fs::read_to_string(&pid_file)
        .unwrap()
        .trim()
        .parse()
        .unwrap();

    // A fresh host file at a path the container does not have: must never be the one statted.
    let host = state.path().join("host-probe");
    std::fs::write(&host, b"").unwrap();
    let root = Arc::new(fileprobe::open_container_root(pid).unwrap());
    let validity = Duration::from_secs(5);
    let mut found = false;
    for _ in 0..50 {
        if check_at(&*root, "/probe", validity, SystemTime::now()).is_ok() {
            found = true;
            break;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    assert!(found, "the container's /probe never became fresh");
    let host_path = host.to_str().unwrap();
    assert!(matches!(
        check_at(&*root, host_path, validity, SystemTime::now()),
        Err(ProbeFailure::Missing { .. })
    ));

    let probe = ProbeSpec::from_yaml("file: {path: /probe, validity: 5}\nperiodSeconds: 1")
        .unwrap()
        .validate(ProbeKind::Readiness)
        .unwrap();
    let mut prober = Prober::new();
    prober.add(
        "busybox",
        probe,
        Target {
            id: id.clone(),
            root,
            started_at: Instant::now(),
        },
    );
    let ev = futures_lite::future::block_on(prober.next_event()).unwrap();
    assert_eq!(
        (ev.container.as_str(), ev.result),
        ("busybox", ProbeResult::Success)
    );

    drop(guard); // runc delete --force: the container is gone
    assert!(matches!(
        fileprobe::open_container_root(pid),
        Err(ProbeFailure::ContainerGone { .. })
    ));
}
