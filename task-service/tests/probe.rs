//! The probe marker through CRI, as an unmodified kubelet uses it: `ExecSync` of
//! `shimless-probe file /probe-dir/probe VALIDITY` in a pod whose container touches
//! `/probe-dir/probe` (an emptyDir-like host directory mounted there) every 2 s, against a
//! private containerd (1.7 and 2.1) whose handler `unified` is shimless on a wrapper runtime
//! that notes every call.
//!
//! - the seed's scenario: fresh → exit 0 with the age line; touching stops → exit 1 with
//!   `/probe-dir/probe modified Ns ago, validity 4s` once validity has passed; a missing file,
//!   paths that try to leave the container (`..`, an absolute symlink, a magic link) and a
//!   bad command line, each with its code and text; the runtime is never called for a marker
//!   exec (a real exec beside it is noted once); containerd publishes `exec-added`,
//!   `exec-started`, `exit` for it, as for the real exec;
//! - 200 concurrent marker execs: all answered 0, and no exec left in shimless's record, no
//!   FIFO left in containerd's state, no descriptor left open in `shimlessd`;
//! - a stopped container: the marker gets the same answer a real exec gets;
//! - the stock runtime (containerd-shim-runc-v2) with the static `shimless-probe` binary
//!   mounted into the container: the same codes and the same output as the marker.

use integration::containerd::{CRI_NAMESPACE, Containerd, ContainerdConfig, Runtime, Version};
use integration::image::Image;
use integration::{Need, require};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

#[macro_use]
mod common;
use common::shimless::Shimless;

/// Kubernetes' CRI, package `runtime.v1` (the subset in `proto/k8s/cri/runtime_v1.proto`).
mod runtime {
    pub mod v1 {
        #![allow(dead_code, clippy::all)]
        include!(concat!(env!("OUT_DIR"), "/runtime.v1.rs"));
    }
}

use runtime::v1::runtime_service_client::RuntimeServiceClient;
use runtime::v1::*;

type Cri = RuntimeServiceClient<task_service::grpc::Channel>;

const BUSYBOX: &str = "docker.io/shimless/busybox:probe";
const PAUSE: &str = "registry.k8s.io/pause:3.9";
/// shimless, on the noting wrapper runtime.
const UNIFIED: &str = "unified";
/// CRI's default runtime: the stock runc shim.
const STOCK: &str = "";
/// How long a state change may take before a test gives up (a bound, not a speed claim).
const PATIENCE: Duration = Duration::from_secs(60);
/// The probe's validity in these tests, in seconds (the container touches every 2 s).
const VALIDITY: &str = "4";
/// Where the pods see the static `shimless-probe` binary.
const PROBE_BIN: &str = "/probe-bin/shimless-probe";

/// A private containerd with CRI, `unified` (shimless behind a wrapper runtime that writes
/// each call's arguments to `calls`) and busybox. Dropped in field order.
struct Rig {
    containerd: Containerd,
    shimless: Shimless,
    dir: tempfile::TempDir,
}

impl Rig {
    fn new(version: Version) -> Option<Rig> {
        let mut needs = version.needs().to_vec();
        needs.extend([Need::Btf, Need::Bpffs]);
        require(&needs)?;
        rustix::process::set_child_subreaper(rustix::process::Pid::from_raw(1)).unwrap();
        let dir = tempfile::tempdir().unwrap();
        let wrapper = dir.path().join("noting-runc");
        std::fs::write(
            &wrapper,
            format!(
                "#!/bin/sh\necho \"$*\" >> {}\nexec runc \"$@\"\n",
                dir.path().join("calls").display()
            ),
        )
        .unwrap();
        std::fs::set_permissions(
            &wrapper,
            std::os::unix::fs::PermissionsExt::from_mode(0o755),
        )
        .unwrap();
        let metrics = dir.path().join("metrics.sock");
        let shimless = Shimless::new(&format!("metrics_address = \"unix:{}\"", metrics.display()))
            .cleans(CRI_NAMESPACE);
        let shim = Shimless::bin_dir().join("containerd-shim-shimless-v2");
        let containerd = Containerd::start(
            ContainerdConfig::new()
                .version(version)
                .cri(PAUSE)
                .runtime(
                    Runtime::new(UNIFIED, "io.containerd.runc.v2")
                        .path(&shim)
                        .sandbox_mode("podsandbox")
                        .option("SystemdCgroup", false)
                        .option("BinaryName", wrapper.display().to_string())
                        .pod_annotations(["shimless.io/*"]),
                )
                .path_prepend(Shimless::bin_dir())
                .env("SHIMLESS_CONFIG", shimless.config().display().to_string()),
        )
        .expect("start containerd with CRI");
        let image = Image::busybox(BUSYBOX)
            .write_tar(&containerd.dir().join("busybox.tar"))
            .expect("write the image");
        containerd
            .import(CRI_NAMESPACE, image.path())
            .expect("import busybox");
        containerd
            .wait_cri_knows(&image)
            .expect("CRI knows busybox");
        Some(Rig {
            containerd,
            shimless,
            dir,
        })
    }

    async fn cri(&self) -> Cri {
        RuntimeServiceClient::with_origin(
            task_service::grpc::connect(&self.containerd.socket())
                .await
                .expect("connect to containerd"),
            "http://localhost".parse().unwrap(),
        )
    }

    /// The wrapper runtime's calls so far, one line each.
    fn runtime_calls(&self) -> Vec<String> {
        std::fs::read_to_string(self.dir.path().join("calls"))
            .unwrap_or_default()
            .lines()
            .map(str::to_string)
            .collect()
    }

    fn logs_tail(&self) -> String {
        format!(
            "containerd: {}\nshimlessd: {}",
            self.containerd.log_tail(30),
            self.shimless.log("shimlessd.log"),
        )
    }

    /// A host-network pod `name` of `handler` whose container touches `/probe-dir/probe`
    /// every 2 s until `/probe-dir/stop` exists, with the static binary at [`PROBE_BIN`].
    async fn probe_pod(&self, cri: &mut Cri, handler: &str, name: &str) -> Pod {
        self.probe_pod_with(cri, handler, name, Default::default())
            .await
    }

    /// [`Rig::probe_pod`] with pod `annotations`.
    async fn probe_pod_with(
        &self,
        cri: &mut Cri,
        handler: &str,
        name: &str,
        annotations: std::collections::HashMap<String, String>,
    ) -> Pod {
        let probe_dir = self.dir.path().join(name);
        std::fs::create_dir_all(&probe_dir).unwrap();
        let logs = self.dir.path().join(format!("{name}-logs"));
        std::fs::create_dir_all(&logs).unwrap();
        let config = PodSandboxConfig {
            metadata: Some(PodSandboxMetadata {
                name: name.into(),
                uid: format!("uid-{name}"),
                namespace: "default".into(),
                attempt: 0,
            }),
            log_directory: logs.display().to_string(),
            annotations: annotations.clone(),
            linux: Some(host_network()),
            ..Default::default()
        };
        let id = cri
            .run_pod_sandbox(RunPodSandboxRequest {
                config: Some(config.clone()),
                runtime_handler: handler.into(),
            })
            .await
            .unwrap_or_else(|e| panic!("RunPodSandbox {name}: {e}\n{}", self.logs_tail()))
            .into_inner()
            .pod_sandbox_id;
        let bin = static_probe();
        // With daemon-run probes the container ignores SIGTERM, so that a liveness kill has
        // to end with the SIGKILL after the grace.
        let ignore_term = if annotations.is_empty() {
            ""
        } else {
            "trap '' TERM; "
        };
        let touch = format!(
            "{ignore_term}while [ ! -e /probe-dir/stop ]; do touch /probe-dir/probe; sleep 2; \
             done; exec sleep 100000"
        );
        let container = ContainerConfig {
            metadata: Some(ContainerMetadata {
                name: name.into(),
                attempt: 0,
            }),
            image: Some(ImageSpec {
                image: BUSYBOX.into(),
                ..Default::default()
            }),
            command: vec!["sh".into(), "-c".into(), touch],
            log_path: format!("{name}.log"),
            mounts: vec![
                Mount {
                    container_path: "/probe-dir".into(),
                    host_path: probe_dir.display().to_string(),
                    readonly: false,
                },
                Mount {
                    container_path: "/probe-bin".into(),
                    host_path: bin.parent().unwrap().display().to_string(),
                    readonly: true,
                },
            ],
            linux: Some(LinuxContainerConfig::default()),
            ..Default::default()
        };
        let container = cri
            .create_container(CreateContainerRequest {
                pod_sandbox_id: id.clone(),
                config: Some(container),
                sandbox_config: Some(config),
            })
            .await
            .unwrap_or_else(|e| panic!("CreateContainer {name}: {e}\n{}", self.logs_tail()))
            .into_inner()
            .container_id;
        cri.start_container(StartContainerRequest {
            container_id: container.clone(),
        })
        .await
        .expect("StartContainer");
        let deadline = Instant::now() + PATIENCE;
        while !probe_dir.join("probe").exists() {
            assert!(
                Instant::now() < deadline,
                "{name} never touched its probe file"
            );
            async_io::Timer::after(Duration::from_millis(50)).await;
        }
        Pod {
            id,
            container,
            probe_dir,
        }
    }
}

struct Pod {
    id: String,
    container: String,
    /// The host side of the pod's `/probe-dir`.
    probe_dir: PathBuf,
}

/// What an `ExecSync` answered: code, stdout, stderr.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Answer {
    code: i32,
    stdout: String,
    stderr: String,
}

async fn exec(cri: &mut Cri, container: &str, cmd: &[&str]) -> Result<Answer, tonic::Status> {
    let r = cri
        .exec_sync(ExecSyncRequest {
            container_id: container.into(),
            cmd: cmd.iter().map(|s| s.to_string()).collect(),
            timeout: 30,
        })
        .await?
        .into_inner();
    Ok(Answer {
        code: r.exit_code,
        stdout: String::from_utf8_lossy(&r.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&r.stderr).into_owned(),
    })
}

/// `shimless-probe file PATH VALIDITY` as `ExecSync` (args[0] a full path, as the stock runtime
/// needs to find the binary; the marker looks at its basename only).
async fn probe(cri: &mut Cri, container: &str, path: &str) -> Answer {
    exec(cri, container, &[PROBE_BIN, "file", path, VALIDITY])
        .await
        .expect("ExecSync of the probe")
}

/// Asserts `line` is `<path> modified <N>s ago, validity 4s` with N in `ages`.
fn assert_age_line(line: &str, path: &str, ages: std::ops::RangeInclusive<u64>) {
    let age = line
        .strip_prefix(&format!("{path} modified "))
        .and_then(|rest| rest.strip_suffix(&format!("s ago, validity {VALIDITY}s\n")))
        .and_then(|n| n.parse::<u64>().ok())
        .unwrap_or_else(|| panic!("not an age line for {path}: {line:?}"));
    assert!(ages.contains(&age), "age {age} not in {ages:?}: {line:?}");
}

/// The static `shimless-probe`, built once (`crt-static` on the host's gnu target, as the
/// fileprobe README documents) into the workspace's `target/static-probe`.
fn static_probe() -> PathBuf {
    static BUILT: std::sync::OnceLock<PathBuf> = std::sync::OnceLock::new();
    BUILT
        .get_or_init(|| {
            let workspace = Path::new(env!("CARGO_MANIFEST_DIR")).parent().unwrap();
            let target_dir = workspace.join("target/static-probe");
            let triple = "x86_64-unknown-linux-gnu";
            let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
            let out = Command::new(cargo)
                .current_dir(workspace)
                .env("RUSTFLAGS", "-C target-feature=+crt-static")
                .env("CARGO_TARGET_DIR", &target_dir)
                .args(["build", "--release", "-p", "fileprobe"])
                .args(["--bin", "shimless-probe", "--target", triple])
                .output()
                .expect("run cargo");
            assert!(
                out.status.success(),
                "building the static shimless-probe failed:\n{}",
                String::from_utf8_lossy(&out.stderr)
            );
            target_dir.join(triple).join("release/shimless-probe")
        })
        .clone()
}

/// A fresh file on the host, outside every container, for escape attempts to find.
fn host_file(rig: &Rig) -> PathBuf {
    let path = rig.dir.path().join("host-only");
    std::fs::write(&path, b"").unwrap();
    path
}

on_both!(
    the_marker_answers_exec_sync_like_the_seeds_file_probe_without_the_runtime,
    two_hundred_concurrent_marker_execs_leave_nothing_behind,
    a_stopped_container_gets_the_answer_a_real_exec_gets,
    the_stock_runtime_with_the_static_binary_answers_the_same,
    daemon_run_probes_keep_a_touched_pod_and_kill_it_once_touching_stops,
    a_bad_probes_annotation_is_refused_at_run_pod_sandbox_naming_the_field,
);

fn the_marker_answers_exec_sync_like_the_seeds_file_probe_without_the_runtime(version: Version) {
    let Some(rig) = Rig::new(version) else {
        return;
    };
    smol::block_on(async {
        let mut cri = rig.cri().await;
        let pod = rig.probe_pod(&mut cri, UNIFIED, "seed").await;
        let c = pod.container.as_str();
        let calls_before = rig.runtime_calls();

        // Touched every 2 s: fresh. containerd sees the events a real exec gives, in order.
        let events = Events::record(&rig);
        let fresh = probe(&mut cri, c, "/probe-dir/probe").await;
        assert_eq!(fresh.code, 0, "{fresh:?}\n{}", rig.logs_tail());
        assert_age_line(&fresh.stdout, "/probe-dir/probe", 0..=3);
        assert_eq!(fresh.stderr, "");
        let one_exec = ["/tasks/exec-added", "/tasks/exec-started", "/tasks/exit"];
        assert_eq!(events.wait_topics(c, 3).await, one_exec);

        // Missing, and paths that try to leave the container: each resolved inside it.
        let missing = probe(&mut cri, c, "/probe-dir/nope").await;
        assert_eq!(missing.code, 1);
        assert_eq!(
            missing.stdout,
            "/probe-dir/nope does not exist inside the container\n"
        );
        let host = host_file(&rig);
        let dotdot = format!("/../../../..{}", host.display());
        let escaped = probe(&mut cri, c, &dotdot).await;
        assert_eq!(escaped.code, 1, "{escaped:?}");
        assert_eq!(
            escaped.stdout,
            format!("{dotdot} does not exist inside the container\n")
        );
        std::os::unix::fs::symlink(&host, pod.probe_dir.join("escape")).unwrap();
        let symlinked = probe(&mut cri, c, "/probe-dir/escape").await;
        assert_eq!(symlinked.code, 1, "{symlinked:?}");
        assert_eq!(
            symlinked.stdout,
            "/probe-dir/escape does not exist inside the container\n"
        );
        let magic = probe(&mut cri, c, "/proc/1/root/probe-dir/probe").await;
        assert_eq!(magic.code, 1, "{magic:?}");
        assert!(
            magic.stdout.starts_with(
                "/proc/1/root/probe-dir/probe cannot be resolved inside the container"
            ),
            "{magic:?}"
        );

        // Anything but `file PATH VALIDITY`: 2, the usage on stderr.
        let usage = exec(&mut cri, c, &["shimless-probe", "file", "/probe-dir/probe"])
            .await
            .expect("ExecSync");
        assert_eq!(usage.code, 2, "{usage:?}");
        assert_eq!(usage.stdout, "");
        assert!(usage.stderr.contains(fileprobe::USAGE), "{usage:?}");

        // The runtime was never called for any of those; a real exec beside them is.
        assert_eq!(rig.runtime_calls(), calls_before);
        let real = exec(&mut cri, c, &["cat", "/probe-dir/probe"])
            .await
            .unwrap();
        assert_eq!(real.code, 0, "{real:?}");
        // Seven execs (six markers, one real), each announced once with each topic.
        let topics = events.wait_topics(c, 7 * 3).await;
        for topic in one_exec {
            let n = topics.iter().filter(|t| *t == topic).count();
            assert_eq!(n, 7, "{topic}: {topics:?}");
        }
        assert_eq!(topics.len(), 7 * 3, "{topics:?}");
        let calls = rig.runtime_calls();
        let execs: Vec<_> = calls[calls_before.len()..]
            .iter()
            .filter(|l| l.split_whitespace().any(|w| w == "exec"))
            .collect();
        assert_eq!(execs.len(), 1, "{calls:?}");

        // Touching stops: 1 once validity has passed, with kubelet's line.
        std::fs::write(pod.probe_dir.join("stop"), b"").unwrap();
        async_io::Timer::after(Duration::from_secs(7)).await;
        let stale = probe(&mut cri, c, "/probe-dir/probe").await;
        assert_eq!(stale.code, 1, "{stale:?}");
        assert_age_line(&stale.stdout, "/probe-dir/probe", 5..=12);
        assert_eq!(stale.stderr, "");
        remove_pod(&mut cri, &pod).await;
    });
}

fn two_hundred_concurrent_marker_execs_leave_nothing_behind(version: Version) {
    let Some(rig) = Rig::new(version) else {
        return;
    };
    smol::block_on(async {
        let mut cri = rig.cri().await;
        let pod = rig.probe_pod(&mut cri, UNIFIED, "many").await;
        // One marker exec first, so that whatever is made once (pool threads) exists.
        assert_eq!(
            probe(&mut cri, &pod.container, "/probe-dir/probe")
                .await
                .code,
            0
        );
        let daemon = rig.shimless.processes("shimlessd");
        assert_eq!(daemon.len(), 1, "{daemon:?}");
        let fds_before = open_fds(daemon[0]);
        let fifos_before = fifos_under(&rig.containerd.state());
        let tasks: Vec<_> = (0..200)
            .map(|_| {
                let (mut cri, container) = (cri.clone(), pod.container.clone());
                smol::spawn(async move { probe(&mut cri, &container, "/probe-dir/probe").await })
            })
            .collect();
        for task in tasks {
            let answer = task.await;
            assert_eq!(answer.code, 0, "{answer:?}\n{}", rig.logs_tail());
            assert_age_line(&answer.stdout, "/probe-dir/probe", 0..=3);
        }
        // Nothing left: containerd deleted every exec, and shimless holds none of them.
        let record = rig
            .shimless
            .dir
            .path()
            .join("state")
            .join(CRI_NAMESPACE)
            .join(format!("{}.json", pod.container));
        let record: serde_json::Value =
            serde_json::from_str(&std::fs::read_to_string(&record).unwrap()).unwrap();
        assert_eq!(
            record["container"]["execs"],
            serde_json::json!({}),
            "{record}"
        );
        assert_eq!(fifos_under(&rig.containerd.state()), fifos_before);
        let fds_after = open_fds(daemon[0]);
        assert!(
            fds_after <= fds_before + 4,
            "shimlessd had {fds_before} descriptors open, now {fds_after}"
        );
        remove_pod(&mut cri, &pod).await;
    });
}

fn a_stopped_container_gets_the_answer_a_real_exec_gets(version: Version) {
    let Some(rig) = Rig::new(version) else {
        return;
    };
    smol::block_on(async {
        let mut cri = rig.cri().await;
        let pod = rig.probe_pod(&mut cri, UNIFIED, "stopped").await;
        cri.stop_container(StopContainerRequest {
            container_id: pod.container.clone(),
            timeout: 1,
        })
        .await
        .expect("StopContainer");
        let marker = exec(
            &mut cri,
            &pod.container,
            &["shimless-probe", "file", "/probe-dir/probe", VALIDITY],
        )
        .await
        .expect_err("a marker exec in a stopped container");
        let real = exec(&mut cri, &pod.container, &["cat", "/probe-dir/probe"])
            .await
            .expect_err("a real exec in a stopped container");
        assert_eq!(marker.code(), real.code(), "{marker:?} / {real:?}");
        assert_eq!(marker.message(), real.message());
        remove_pod(&mut cri, &pod).await;
    });
}

fn the_stock_runtime_with_the_static_binary_answers_the_same(version: Version) {
    let Some(rig) = Rig::new(version) else {
        return;
    };
    smol::block_on(async {
        let mut cri = rig.cri().await;
        let ours = rig.probe_pod(&mut cri, UNIFIED, "marker").await;
        let stock = rig.probe_pod(&mut cri, STOCK, "stock").await;
        let fresh = probe(&mut cri, &stock.container, "/probe-dir/probe").await;
        assert_eq!(fresh.code, 0, "{fresh:?}\n{}", rig.logs_tail());
        assert_age_line(&fresh.stdout, "/probe-dir/probe", 0..=3);
        for args in [
            &[PROBE_BIN, "file", "/probe-dir/nope", VALIDITY][..],
            &[
                PROBE_BIN,
                "file",
                "/../../../etc/../probe-dir/nope",
                VALIDITY,
            ],
            &[PROBE_BIN, "file", "/proc/1/root/probe-dir/probe", VALIDITY],
            &[PROBE_BIN, "file", "/probe-dir/probe"],
            &[PROBE_BIN, "file", "/probe-dir/probe", "soon"],
            &[PROBE_BIN, "check"],
        ] {
            let a = exec(&mut cri, &ours.container, args).await.unwrap();
            let b = exec(&mut cri, &stock.container, args).await.unwrap();
            assert_eq!(a, b, "{args:?}");
            assert_ne!(a.code, 0, "{args:?}: {a:?}");
        }
        for pod in [&ours, &stock] {
            std::fs::write(pod.probe_dir.join("stop"), b"").unwrap();
        }
        async_io::Timer::after(Duration::from_secs(7)).await;
        for pod in [&ours, &stock] {
            let stale = probe(&mut cri, &pod.container, "/probe-dir/probe").await;
            assert_eq!(stale.code, 1, "{stale:?}");
            assert_age_line(&stale.stdout, "/probe-dir/probe", 5..=12);
        }
        remove_pod(&mut cri, &ours).await;
        remove_pod(&mut cri, &stock).await;
    });
}

/// The pod annotation `shimless.io/probes` for container `name`: readiness (validity 4 s) and
/// liveness (validity 16 s, two failures, 1 s grace), both every second: once touching stops,
/// readiness fails some 10 s before liveness kills.
fn probes_annotation(name: &str) -> std::collections::HashMap<String, String> {
    let probe = |validity: u32, extra: &str| {
        format!(
            r#"{{"file": {{"path": "/probe-dir/probe", "validity": {validity}}}, "periodSeconds": 1{extra}}}"#
        )
    };
    let value = format!(
        r#"{{"{name}": {{"readinessProbe": {}, "livenessProbe": {}}}}}"#,
        probe(4, ""),
        probe(
            16,
            r#", "failureThreshold": 2, "terminationGracePeriodSeconds": 1"#
        )
    );
    [("shimless.io/probes".to_string(), value)].into()
}

/// `shimlessctl --json probes` of the CRI namespace: the probe rows and the counters.
fn probes_listing(rig: &Rig) -> serde_json::Value {
    let out = Command::new(env!("CARGO_BIN_EXE_shimlessctl"))
        .arg("--socket")
        .arg(rig.shimless.front_socket())
        .args(["-n", CRI_NAMESPACE, "--json", "probes"])
        .output()
        .expect("run shimlessctl");
    assert!(out.status.success(), "{out:?}");
    serde_json::from_slice(&out.stdout).expect("JSON")
}

/// The probe rows of [`probes_listing`].
fn listed_probes(rig: &Rig) -> Vec<serde_json::Value> {
    probes_listing(rig)["probes"]
        .as_array()
        .cloned()
        .unwrap_or_default()
}

/// Polls `ExecSync` of `cmd` until it exits with `code` (bounded); the answer.
async fn exec_until(cri: &mut Cri, container: &str, cmd: &[&str], code: i32) -> Answer {
    let deadline = Instant::now() + PATIENCE;
    loop {
        let answer = exec(cri, container, cmd).await.expect("ExecSync");
        if answer.code == code || Instant::now() > deadline {
            return answer;
        }
        async_io::Timer::after(Duration::from_millis(200)).await;
    }
}

fn daemon_run_probes_keep_a_touched_pod_and_kill_it_once_touching_stops(version: Version) {
    let Some(rig) = Rig::new(version) else {
        return;
    };
    smol::block_on(async {
        let mut cri = rig.cri().await;
        let name = "daemon-run";
        let pod = rig
            .probe_pod_with(&mut cri, UNIFIED, name, probes_annotation(name))
            .await;
        let c = pod.container.as_str();
        let readiness = ["shimless-probe", "readiness"];
        let liveness = ["shimless-probe", "liveness"];

        // Touched every 2 s: ready once the first check has run, and it stays so.
        let ready = exec_until(&mut cri, c, &readiness, 0).await;
        assert_eq!(ready.code, 0, "{ready:?}\n{}", rig.logs_tail());
        assert_eq!(ready.stdout, "readinessProbe: Success\n");
        let rows = listed_probes(&rig);
        assert_eq!(rows.len(), 2, "{rows:?}");
        for row in &rows {
            assert_eq!(row["id"], c, "{row}");
            assert_eq!(row["container"], name, "{row}");
            assert_eq!(row["state"], "running", "{row}");
            assert_eq!(row["path"], "/probe-dir/probe", "{row}");
        }
        let watched_until = Instant::now() + Duration::from_secs(10);
        while Instant::now() < watched_until {
            for cmd in [&readiness, &liveness] {
                let a = exec(&mut cri, c, cmd).await.expect("ExecSync");
                assert_eq!(a.code, 0, "{cmd:?}: {a:?}\n{}", rig.logs_tail());
            }
            let state = container_state(&mut cri, c).await;
            assert_eq!(state.state, ContainerState::ContainerRunning as i32);
            async_io::Timer::after(Duration::from_millis(500)).await;
        }
        // The marker's answers come from the daemon's results: the runtime is not called.
        let calls = rig.runtime_calls();
        assert_eq!(exec(&mut cri, c, &readiness).await.unwrap().code, 0);
        assert_eq!(rig.runtime_calls(), calls);

        // kill -9 of the daemon: the next one takes the probes back from the bundle.
        let daemon = rig.shimless.processes("shimlessd");
        assert_eq!(daemon.len(), 1, "{daemon:?}");
        rustix::process::kill_process(
            rustix::process::Pid::from_raw(daemon[0] as i32).unwrap(),
            rustix::process::Signal::KILL,
        )
        .unwrap();
        let ready = exec_until(&mut cri, c, &readiness, 0).await;
        assert_eq!(ready.code, 0, "{ready:?}\n{}", rig.logs_tail());
        assert_ne!(rig.shimless.processes("shimlessd"), daemon);
        let rows = listed_probes(&rig);
        assert_eq!(rows.len(), 2, "{rows:?}");
        assert!(rows.iter().all(|r| r["state"] == "running"), "{rows:?}");

        // Touching stops: readiness fails first (validity 4 s), then liveness (8 s) kills it.
        std::fs::write(pod.probe_dir.join("stop"), b"").unwrap();
        let unready = exec(&mut cri, c, &readiness).await.expect("ExecSync");
        let unready = if unready.code == 1 {
            unready
        } else {
            exec_until(&mut cri, c, &readiness, 1).await
        };
        assert_eq!(unready.code, 1, "{unready:?}");
        assert!(
            unready
                .stdout
                .starts_with("readinessProbe: Failure (/probe-dir/probe last modified "),
            "{unready:?}"
        );
        // sh and sleep, as PID 1, ignore SIGTERM: SIGKILL after the 1 s grace.
        let deadline = Instant::now() + PATIENCE;
        let exited = loop {
            let status = container_state(&mut cri, c).await;
            if status.state == ContainerState::ContainerExited as i32 {
                break status;
            }
            assert!(
                Instant::now() < deadline,
                "not killed: {status:?}\n{}",
                rig.logs_tail()
            );
            async_io::Timer::after(Duration::from_millis(200)).await;
        };
        assert_eq!(exited.exit_code, 128 + 9, "{exited:?}");
        // One kill, by the liveness probe, with the grace chosen (CRI deletes the task at its
        // exit, which forgets its probes: the node's counter keeps the kill).
        let listing = probes_listing(&rig);
        assert_eq!(listing["counters"]["kills"], 1, "{listing}");
        // The daemon's scrape says the same (the daemon was restarted above: its counters
        // start again at zero, and the kill came after).
        let scraped = scrape(&rig.dir.path().join("metrics.sock"));
        assert!(
            scraped.contains("\nshimless_daemon_probe_kills_total 1\n"),
            "{scraped}"
        );
        let runs = scraped
            .lines()
            .find_map(|l| l.strip_prefix("shimless_daemon_probe_runs_total "))
            .and_then(|v| v.parse::<f64>().ok());
        assert!(runs.is_some_and(|r| r >= 1.0), "{scraped}");
        let log = rig.shimless.log("shimlessd.log");
        let line = format!("{CRI_NAMESPACE}/{c}: livenessProbe failed");
        assert_eq!(log.matches(&line).count(), 1, "{log}");
        assert!(log.contains("SIGKILL after 1s"), "{log}");

        // Removed with the container: nothing listed, no record left.
        remove_pod(&mut cri, &pod).await;
        assert_eq!(listed_probes(&rig), Vec::<serde_json::Value>::new());
        let state = rig.shimless.dir.path().join("state").join(CRI_NAMESPACE);
        assert!(!state.join(format!("{c}.json")).exists());
    });
}

/// One scrape of the daemon's metrics endpoint at unix socket `socket` (HTTP/1.0 GET).
fn scrape(socket: &Path) -> String {
    use std::io::{Read, Write};
    let mut s = std::os::unix::net::UnixStream::connect(socket).expect("connect to metrics");
    s.write_all(b"GET /metrics HTTP/1.0\r\n\r\n").unwrap();
    let mut text = String::new();
    s.read_to_string(&mut text).unwrap();
    text
}

fn a_bad_probes_annotation_is_refused_at_run_pod_sandbox_naming_the_field(version: Version) {
    let Some(rig) = Rig::new(version) else {
        return;
    };
    smol::block_on(async {
        let mut cri = rig.cri().await;
        let name = "bad-probes";
        let bad = r#"{"bad-probes": {"livenessProbe": {"file": {"path": "/p", "validity": 0}}}}"#;
        let config = PodSandboxConfig {
            metadata: Some(PodSandboxMetadata {
                name: name.into(),
                uid: format!("uid-{name}"),
                namespace: "default".into(),
                attempt: 0,
            }),
            annotations: [("shimless.io/probes".to_string(), bad.to_string())].into(),
            linux: Some(host_network()),
            ..Default::default()
        };
        let refused = cri
            .run_pod_sandbox(RunPodSandboxRequest {
                config: Some(config),
                runtime_handler: UNIFIED.into(),
            })
            .await
            .expect_err("a pod with a bad shimless.io/probes");
        let msg = refused.message();
        assert!(msg.contains("shimless.io/probes"), "{msg}");
        assert!(msg.contains("livenessProbe.file.validity"), "{msg}");
        // Nothing left: no record, no runtime container.
        let state = rig.shimless.dir.path().join("state").join(CRI_NAMESPACE);
        let records = std::fs::read_dir(&state)
            .map(|d| d.flatten().count())
            .unwrap_or(0);
        assert_eq!(records, 0, "records left in {}", state.display());
        let runc = rig.shimless.runc_root(CRI_NAMESPACE);
        let left = std::fs::read_dir(&runc)
            .map(|d| d.flatten().count())
            .unwrap_or(0);
        assert_eq!(left, 0, "runtime containers left in {}", runc.display());
    });
}

/// A pod on the host's network (no CNI here) with its own PID namespace.
fn host_network() -> LinuxPodSandboxConfig {
    LinuxPodSandboxConfig {
        security_context: Some(LinuxSandboxSecurityContext {
            namespace_options: Some(NamespaceOption {
                network: NamespaceMode::Node as i32,
                pid: NamespaceMode::Container as i32,
                ipc: NamespaceMode::Pod as i32,
                ..Default::default()
            }),
            ..Default::default()
        }),
        ..Default::default()
    }
}

async fn container_state(cri: &mut Cri, id: &str) -> ContainerStatus {
    cri.container_status(ContainerStatusRequest {
        container_id: id.into(),
        verbose: false,
    })
    .await
    .expect("ContainerStatus")
    .into_inner()
    .status
    .expect("a status")
}

/// containerd's own event stream (`ctr -n k8s.io events`), recorded to a file until dropped.
struct Events {
    child: std::process::Child,
    path: PathBuf,
}

impl Events {
    fn record(rig: &Rig) -> Events {
        let path = rig.dir.path().join("events");
        let file = std::fs::File::create(&path).unwrap();
        let child = rig
            .containerd
            .ctr(CRI_NAMESPACE)
            .arg("events")
            .stdout(file)
            .stderr(std::process::Stdio::null())
            .spawn()
            .unwrap();
        // `ctr events` subscribes as it starts; give it that moment.
        std::thread::sleep(Duration::from_millis(300));
        Events { child, path }
    }

    /// The task topics (`/tasks/exit`, ...) containerd published for container `id`, in order.
    fn topics_of(&self, id: &str) -> Vec<String> {
        let needle = format!("\"container_id\":\"{id}\"");
        std::fs::read_to_string(&self.path)
            .unwrap_or_default()
            .lines()
            .filter(|l| l.contains(&needle))
            .filter_map(|l| l.split_whitespace().find(|f| f.starts_with("/tasks/")))
            .map(str::to_string)
            .collect()
    }

    /// Waits (bounded) until `id` has at least `count` topics; returns them.
    async fn wait_topics(&self, id: &str, count: usize) -> Vec<String> {
        let deadline = Instant::now() + PATIENCE;
        loop {
            let topics = self.topics_of(id);
            if topics.len() >= count || Instant::now() > deadline {
                return topics;
            }
            async_io::Timer::after(Duration::from_millis(50)).await;
        }
    }
}

impl Drop for Events {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// StopContainer, RemoveContainer, StopPodSandbox, RemovePodSandbox.
async fn remove_pod(cri: &mut Cri, pod: &Pod) {
    cri.stop_container(StopContainerRequest {
        container_id: pod.container.clone(),
        timeout: 1,
    })
    .await
    .expect("StopContainer");
    cri.remove_container(RemoveContainerRequest {
        container_id: pod.container.clone(),
    })
    .await
    .expect("RemoveContainer");
    cri.stop_pod_sandbox(StopPodSandboxRequest {
        pod_sandbox_id: pod.id.clone(),
    })
    .await
    .expect("StopPodSandbox");
    cri.remove_pod_sandbox(RemovePodSandboxRequest {
        pod_sandbox_id: pod.id.clone(),
    })
    .await
    .expect("RemovePodSandbox");
}

/// How many descriptors process `pid` has open.
fn open_fds(pid: u32) -> usize {
    std::fs::read_dir(format!("/proc/{pid}/fd"))
        .unwrap()
        .count()
}

/// How many FIFOs there are under `dir`.
fn fifos_under(dir: &Path) -> usize {
    use std::os::unix::fs::FileTypeExt;
    let Ok(entries) = std::fs::read_dir(dir) else {
        return 0;
    };
    entries
        .flatten()
        .map(|e| match e.file_type() {
            Ok(t) if t.is_dir() => fifos_under(&e.path()),
            Ok(t) if t.is_fifo() => 1,
            _ => 0,
        })
        .sum()
}
