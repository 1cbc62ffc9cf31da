//! The bundles run for real, under runc and crun.

use integration::bundle::{BundleBuilder, ContainerGuard, prepare_crun};
use integration::{Need, require};
use std::process::Command;

fn run_to_completion(runtime: &str, args: &[&str], hostname: &str) -> String {
    let bundle = BundleBuilder::new()
        .args(args.iter().copied())
        .hostname(hostname)
        .env("GREETING", "hi")
        .build()
        .unwrap();
    let root = tempfile::tempdir().unwrap();
    let id = format!("integration-{runtime}-{}", std::process::id());
    let _guard = ContainerGuard::new(runtime, root.path(), &id);
    let out = Command::new(runtime)
        .arg("--root")
        .arg(root.path())
        .args(["run", "--bundle"])
        .arg(bundle.path())
        .arg(&id)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{runtime} run: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

#[test]
fn a_busybox_bundle_runs_under_runc_and_crun_with_its_hostname_and_env() {
    let Some(()) = require(&[
        Need::Root,
        Need::Program("runc"),
        Need::Program("crun"),
        Need::File("/bin/busybox"),
    ]) else {
        return;
    };
    prepare_crun().unwrap();
    for runtime in ["runc", "crun"] {
        let out = run_to_completion(
            runtime,
            &[
                "sh",
                "-c",
                "hostname; echo $GREETING; touch /tmp/x && echo ok",
            ],
            "box1",
        );
        assert_eq!(out, "box1\nhi\nok\n", "{runtime}");
    }
}

#[test]
fn a_dropped_bundle_leaves_no_directory() {
    let Some(()) = require(&[Need::File("/bin/busybox")]) else {
        return;
    };
    let bundle = BundleBuilder::new().build().unwrap();
    let path = bundle.path().to_owned();
    assert!(path.join("rootfs/bin/sh").exists());
    let config: serde_json::Value =
        serde_json::from_slice(&std::fs::read(path.join("config.json")).unwrap()).unwrap();
    assert_eq!(
        config["process"]["args"],
        serde_json::json!(["sleep", "3600"])
    );
    assert_eq!(config["root"]["path"], "rootfs");
    drop(bundle);
    assert!(!path.exists());
}
