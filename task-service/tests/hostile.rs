//! Hostile input against a live `shimlessd`: ids, namespaces, bundles, stdio URIs, options,
//! mounts and sizes that no container may be made of. Each is answered with a typed error (the
//! gRPC code is asserted) and changes nothing on disk: the state directory's files and the
//! runtime's containers are the same before and after.

use integration::bundle::BundleBuilder;
use integration::child::Child;
use std::path::{Path, PathBuf};
use std::process::Command;
use task_service::api::containerd::task::v3::*;
use task_service::api::containerd::types::Mount;
use tonic::Code;

mod common;
use common::client;

const NS: &str = "hostile-test";

/// Every file under `dir` (recursively), sorted, with its size.
fn files(dir: &Path) -> Vec<(PathBuf, u64)> {
    let mut found = Vec::new();
    let mut stack = vec![dir.to_owned()];
    while let Some(dir) = stack.pop() {
        for entry in std::fs::read_dir(&dir).into_iter().flatten().flatten() {
            let meta = entry.metadata().unwrap();
            if meta.is_dir() {
                stack.push(entry.path());
            } else {
                found.push((entry.path(), meta.len()));
            }
        }
    }
    found.sort();
    found
}

fn runc_ids(root: &Path) -> String {
    let out = Command::new("runc")
        .arg("--root")
        .arg(root)
        .args(["list", "-q"])
        .output()
        .unwrap();
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn any(type_url: &str, value: Vec<u8>) -> Option<prost_types::Any> {
    Some(prost_types::Any {
        type_url: type_url.into(),
        value,
    })
}

fn runc_options(o: task_service::api::containerd::runc::v1::Options) -> Option<prost_types::Any> {
    any(
        "containerd.runc.v1.Options",
        prost::Message::encode_to_vec(&o),
    )
}

#[test]
fn hostile_input_gets_a_typed_error_and_changes_nothing_on_disk() {
    let Some(()) = common::needs_daemon() else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let (socket, state, runc_root) = (
        dir.path().join("s.sock"),
        dir.path().join("state"),
        dir.path().join("runc"),
    );
    let _cleanup = Cleanup(runc_root.join(NS));
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_shimlessd"));
    cmd.args(["--config", "/nonexistent/shimless.toml", "--socket"])
        .arg(&socket)
        .arg("--state-dir")
        .arg(&state)
        .arg("--runc-root")
        .arg(&runc_root);
    let _daemon = Child::start(cmd, &dir.path().join("shimlessd.log"), "serving on").unwrap();
    let good = BundleBuilder::new()
        .args(["sleep", "1000"])
        .build()
        .unwrap();
    let no_config = tempfile::tempdir().unwrap();
    let bad_config = tempfile::tempdir().unwrap();
    std::fs::write(bad_config.path().join("config.json"), b"{\"ociVersion\": [").unwrap();
    let good_path = good.path().display().to_string();
    let create = |id: &str, bundle: &str| CreateTaskRequest {
        id: id.into(),
        bundle: bundle.into(),
        ..Default::default()
    };
    let long = "x".repeat(77);
    let cases: Vec<(&str, &str, CreateTaskRequest, Code)> = vec![
        (
            "empty id",
            NS,
            create("", &good_path),
            Code::InvalidArgument,
        ),
        (
            "id with ..",
            NS,
            create("../etc", &good_path),
            Code::InvalidArgument,
        ),
        (
            "id with /",
            NS,
            create("a/b", &good_path),
            Code::InvalidArgument,
        ),
        (
            "id with NUL",
            NS,
            create("a\0b", &good_path),
            Code::InvalidArgument,
        ),
        (
            "id of 77",
            NS,
            create(&long, &good_path),
            Code::InvalidArgument,
        ),
        (
            "namespace ..",
            "..",
            create("c", &good_path),
            Code::InvalidArgument,
        ),
        (
            "namespace a/b",
            "a/b",
            create("c", &good_path),
            Code::InvalidArgument,
        ),
        (
            "namespace of 77",
            &long,
            create("c", &good_path),
            Code::InvalidArgument,
        ),
        (
            "relative bundle",
            NS,
            create("c", "bundle"),
            Code::InvalidArgument,
        ),
        (
            "missing bundle",
            NS,
            create("c", "/nonexistent/b"),
            Code::InvalidArgument,
        ),
        (
            "bundle without config.json",
            NS,
            create("c", &no_config.path().display().to_string()),
            Code::InvalidArgument,
        ),
        (
            "bundle with a broken config.json",
            NS,
            create("c", &bad_config.path().display().to_string()),
            Code::InvalidArgument,
        ),
        (
            "terminal the spec does not have",
            NS,
            CreateTaskRequest {
                terminal: true,
                ..create("c", &good_path)
            },
            Code::InvalidArgument,
        ),
    ];
    let mut cases = cases;
    let stdio = |uri: &str| CreateTaskRequest {
        stdout: uri.into(),
        ..create("c", &good_path)
    };
    for (what, uri) in [
        ("stdio of an unknown scheme", "http://example.com/x"),
        ("stdio binary:// of nothing", "binary:///nonexistent/logger"),
        ("relative stdio path", "relative/fifo"),
    ] {
        cases.push((what, NS, stdio(uri), Code::InvalidArgument));
    }
    let options = |options| CreateTaskRequest {
        options,
        ..create("c", &good_path)
    };
    use task_service::api::containerd::runc::v1::Options;
    for (what, o) in [
        (
            "options of another type",
            any("example.com/Other", vec![1, 2, 3]),
        ),
        (
            "options that do not decode",
            any("containerd.runc.v1.Options", vec![0xff; 64]),
        ),
        (
            "a relative Root",
            runc_options(Options {
                root: "relative".into(),
                ..Default::default()
            }),
        ),
        (
            "a relative BinaryName",
            runc_options(Options {
                binary_name: "bin/runc".into(),
                ..Default::default()
            }),
        ),
        (
            "checkpoint paths",
            runc_options(Options {
                criu_image_path: "/ci".into(),
                ..Default::default()
            }),
        ),
    ] {
        cases.push((what, NS, options(o), Code::InvalidArgument));
    }
    let mounts = |rootfs| CreateTaskRequest {
        rootfs,
        ..create("c", &good_path)
    };
    for (what, mount) in [
        (
            "a mount of no type",
            Mount {
                r#type: String::new(),
                source: "/x".into(),
                target: String::new(),
                options: vec![],
            },
        ),
        (
            "a mount with a target outside the rootfs",
            Mount {
                r#type: "bind".into(),
                source: "/etc".into(),
                target: "../../etc".into(),
                options: vec!["rbind".into()],
            },
        ),
    ] {
        cases.push((what, NS, mounts(vec![mount]), Code::InvalidArgument));
    }
    let before = (files(&state), runc_ids(&runc_root.join(NS)));
    let mut wrong = Vec::new();
    smol::block_on(async {
        let mut c = client(&socket).await;
        for (what, ns, req, want) in cases {
            let Ok(ns) = ns.parse() else {
                continue; // not even a header value
            };
            let mut request = tonic::Request::new(req);
            request.metadata_mut().insert("containerd-namespace", ns);
            match c.create(request).await {
                Err(s) if s.code() == want && !s.message().is_empty() => {}
                other => wrong.push(format!("{what}: want {want:?}, got {other:?}")),
            }
            let after = (files(&state), runc_ids(&runc_root.join(NS)));
            if after != before {
                wrong.push(format!("{what}: changed the disk: {before:?} -> {after:?}"));
            }
        }
        // Calls on what does not exist, with sizes out of range.
        let missing = [
            (
                "kill of nothing, signal 999",
                c.kill(common::request(
                    NS,
                    KillRequest {
                        id: "nothing".into(),
                        signal: 999,
                        ..Default::default()
                    },
                ))
                .await
                .map(drop),
            ),
            (
                "resize of nothing to 0x0",
                c.resize_pty(common::request(
                    NS,
                    ResizePtyRequest {
                        id: "nothing".into(),
                        ..Default::default()
                    },
                ))
                .await
                .map(drop),
            ),
            (
                "exec of a 1 MiB garbage spec into nothing",
                c.exec(common::request(
                    NS,
                    ExecProcessRequest {
                        id: "nothing".into(),
                        exec_id: "e".into(),
                        spec: any(
                            "types.containerd.io/opencontainers/runtime-spec/1/Process",
                            vec![b'{'; 1 << 20],
                        ),
                        ..Default::default()
                    },
                ))
                .await
                .map(drop),
            ),
        ];
        for (what, result) in missing {
            match result {
                Err(s) if matches!(s.code(), Code::NotFound | Code::InvalidArgument) => {}
                other => wrong.push(format!("{what}: want NotFound, got {other:?}")),
            }
        }
    });
    assert_eq!((files(&state), runc_ids(&runc_root.join(NS))), before);
    assert!(wrong.is_empty(), "{wrong:#?}");
}

struct Cleanup(PathBuf);

impl Drop for Cleanup {
    fn drop(&mut self) {
        integration::bundle::delete_all("runc", &self.0);
    }
}
