//! shimless under containerd's CRI plugin (1.7 and 2.1), driven the way kubelet drives it: the tests play
//! kubelet over CRI (`runtime.v1`, compiled from `proto/k8s/cri/runtime_v1.proto` and spoken
//! over our own HTTP/2-on-smol channel) against a private containerd whose CRI knows shimless as
//! the runtime handler `unified`, configured exactly as the seed writes it
//! (`runtime_type = "io.containerd.runc.v2"`, `runtime_path` = `containerd-shim-shimless-v2`,
//! `sandbox_mode = "podsandbox"`, `options.SystemdCgroup = false`).
//!
//! - one pod end to end: RunPodSandbox (host network: no CNI needed), CreateContainer,
//!   StartContainer, ContainerStatus, ExecSync, the CRI log file, ReopenContainerLog,
//!   StopContainer (the exit code), RemoveContainer, StopPodSandbox, RemovePodSandbox — and the
//!   tasks are served by shimless (no runc shim for them; runc state in shimless's root);
//! - ten pods: no shim process added from the first to the tenth, all containers RUNNING;
//!   pods of the default runtime (the stock runc shim) run beside them;
//! - a handler whose options say `SystemdCgroup = true` on this machine (no systemd as init):
//!   RunPodSandbox fails naming SystemdCgroup;
//! - a container over its memory limit is reported `OOMKilled`, and containerd's own event stream
//!   (`ctr events`) shows its create, start, oom, exit and delete, once each;
//! - a container that exits at the moment its pod is stopped, 50 times (10 times on the stock
//!   runc shim, the reference): `StopPodSandbox` always succeeds (shimless answers a `Kill` of
//!   an exited process `NOT_FOUND`, and the reply before the exit), and containerd never logs a
//!   reply on an inactive stream.
//! - a node upgraded in place from containerd 1.7 to 2.1 (20 tasks, three of them CRI pods,
//!   four exiting while no containerd runs) keeps every task, manageable, with true exit codes.
//!
//! Every other test runs against containerd 1.7 and 2.1 (`<test>::containerd_1_7`, `::containerd_2_1`):
//! 2.x starts a pod's app containers without `<shim> start`, reusing the sandbox's bootstrap.

use integration::containerd::{CRI_NAMESPACE, Containerd, ContainerdConfig, Runtime, Version};
use integration::image::Image;
use integration::{Need, require};
use std::path::{Path, PathBuf};
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

const BUSYBOX: &str = "docker.io/shimless/busybox:test";
const PAUSE: &str = "registry.k8s.io/pause:3.9";
/// The seed's handler: shimless.
const UNIFIED: &str = "unified";
/// A handler like `unified` whose options ask for systemd cgroups.
const UNIFIED_SYSTEMD: &str = "unified-systemd";
/// CRI's default runtime: the stock runc shim.
const DEFAULT: &str = "";
/// How long a state change may take before a test gives up (a bound, not a speed claim).
const PATIENCE: Duration = Duration::from_secs(60);

/// A private containerd with CRI, the `unified` runtime (shimless) and busybox known to CRI.
/// Dropped in field order: containerd (its tasks) first, then shimless's processes, then the
/// pods' log directory.
struct Rig {
    containerd: Containerd,
    shimless: Shimless,
    logs: tempfile::TempDir,
}

impl Rig {
    fn new(version: Version) -> Option<Rig> {
        Rig::with_namespaces(version, &[])
    }

    /// Also cleans what shimless's runtime keeps for containers of `namespaces` (`ctr`'s).
    fn with_namespaces(version: Version, namespaces: &[&str]) -> Option<Rig> {
        let mut needs = version.needs().to_vec();
        needs.extend([Need::Btf, Need::Bpffs]);
        require(&needs)?;
        rustix::process::set_child_subreaper(rustix::process::Pid::from_raw(1)).unwrap();
        let mut shimless = Shimless::new("").cleans(CRI_NAMESPACE);
        for ns in namespaces {
            shimless = shimless.cleans(ns);
        }
        let shim = Shimless::bin_dir().join("containerd-shim-shimless-v2");
        let containerd = Containerd::start(
            ContainerdConfig::new()
                .version(version)
                .cri(PAUSE)
                .runtime(
                    Runtime::new(UNIFIED, "io.containerd.runc.v2")
                        .path(&shim)
                        .sandbox_mode("podsandbox")
                        .option("SystemdCgroup", false),
                )
                .runtime(
                    Runtime::new(UNIFIED_SYSTEMD, "io.containerd.runc.v2")
                        .path(&shim)
                        .sandbox_mode("podsandbox")
                        .option("SystemdCgroup", true),
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
            logs: tempfile::tempdir().unwrap(),
        })
    }

    /// A CRI client on containerd's socket.
    async fn cri(&self) -> Cri {
        RuntimeServiceClient::with_origin(
            task_service::grpc::connect(&self.containerd.socket())
                .await
                .expect("connect to containerd"),
            "http://localhost".parse().unwrap(),
        )
    }

    /// Where pod `name` keeps its containers' logs.
    fn log_dir(&self, name: &str) -> PathBuf {
        self.logs.path().join(name)
    }

    /// What kubelet sends for a host-network pod `name`.
    fn pod_config(&self, name: &str) -> PodSandboxConfig {
        let log_dir = self.log_dir(name);
        std::fs::create_dir_all(&log_dir).unwrap();
        PodSandboxConfig {
            metadata: Some(PodSandboxMetadata {
                name: name.into(),
                uid: format!("uid-{name}"),
                namespace: "default".into(),
                attempt: 0,
            }),
            // Left empty as kubelet does for host-network pods (they share the node's UTS
            // namespace, where runc refuses to set a hostname).
            log_directory: log_dir.display().to_string(),
            linux: Some(LinuxPodSandboxConfig {
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
            }),
            ..Default::default()
        }
    }

    /// A busybox container `name` running `cmd`, logging to `<name>.log` in its pod's log
    /// directory.
    fn container_config(name: &str, cmd: &[&str]) -> ContainerConfig {
        ContainerConfig {
            metadata: Some(ContainerMetadata {
                name: name.into(),
                attempt: 0,
            }),
            image: Some(ImageSpec {
                image: BUSYBOX.into(),
                ..Default::default()
            }),
            command: cmd.iter().map(|s| s.to_string()).collect(),
            log_path: format!("{name}.log"),
            linux: Some(LinuxContainerConfig::default()),
            ..Default::default()
        }
    }

    /// The diagnostics a failed assertion shows.
    fn logs_tail(&self) -> String {
        format!(
            "containerd: {}\nshimlessd: {}\nfront: {}",
            self.containerd.log_tail(30),
            self.shimless.log("shimlessd.log"),
            self.shimless.log("front.log")
        )
    }
}

/// A pod as kubelet makes it: RunPodSandbox, CreateContainer, StartContainer.
struct Pod {
    id: String,
    config: PodSandboxConfig,
    container: String,
}

async fn run_pod(
    cri: &mut Cri,
    config: PodSandboxConfig,
    handler: &str,
) -> Result<String, tonic::Status> {
    Ok(cri
        .run_pod_sandbox(RunPodSandboxRequest {
            config: Some(config),
            runtime_handler: handler.into(),
        })
        .await?
        .into_inner()
        .pod_sandbox_id)
}

async fn create_container(
    cri: &mut Cri,
    pod: &str,
    pod_config: &PodSandboxConfig,
    config: ContainerConfig,
) -> String {
    cri.create_container(CreateContainerRequest {
        pod_sandbox_id: pod.into(),
        config: Some(config),
        sandbox_config: Some(pod_config.clone()),
    })
    .await
    .expect("CreateContainer")
    .into_inner()
    .container_id
}

async fn start_container(cri: &mut Cri, id: &str) {
    cri.start_container(StartContainerRequest {
        container_id: id.into(),
    })
    .await
    .expect("StartContainer");
}

/// A pod of `handler` with one container `name` running `cmd`, started.
async fn start_pod(rig: &Rig, cri: &mut Cri, handler: &str, name: &str, cmd: &[&str]) -> Pod {
    let config = rig.pod_config(name);
    let id = run_pod(cri, config.clone(), handler)
        .await
        .unwrap_or_else(|e| {
            panic!(
                "RunPodSandbox {name} ({handler:?}): {e}\n{}",
                rig.logs_tail()
            )
        });
    let container = create_container(cri, &id, &config, Rig::container_config(name, cmd)).await;
    start_container(cri, &container).await;
    Pod {
        id,
        config,
        container,
    }
}

/// StopContainer, RemoveContainer, StopPodSandbox, RemovePodSandbox.
async fn remove_pod(cri: &mut Cri, pod: &Pod) {
    cri.stop_container(StopContainerRequest {
        container_id: pod.container.clone(),
        timeout: 10,
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

async fn container_status(cri: &mut Cri, id: &str) -> runtime::v1::ContainerStatus {
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

/// Polls ContainerStatus (bounded) until the container is in `state`.
async fn wait_state(
    rig: &Rig,
    cri: &mut Cri,
    id: &str,
    state: runtime::v1::ContainerState,
) -> runtime::v1::ContainerStatus {
    let deadline = Instant::now() + PATIENCE;
    loop {
        let status = container_status(cri, id).await;
        if status.state == state as i32 {
            return status;
        }
        assert!(
            Instant::now() < deadline,
            "container {id} never got to {state:?}: {status:?}\n{}",
            rig.logs_tail()
        );
        async_io::Timer::after(Duration::from_millis(50)).await;
    }
}

/// The messages of a CRI log file (`<RFC 3339 time> <stream> <F|P> <message>` per line) for
/// `stream`, checking each line's shape.
fn log_messages(path: &Path, stream: &str) -> Vec<String> {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    text.lines()
        .filter_map(|line| {
            let mut fields = line.splitn(4, ' ');
            let (time, s, tag, msg) = (
                fields.next()?,
                fields.next()?,
                fields.next()?,
                fields.next().unwrap_or(""),
            );
            assert!(
                time.len() > 20 && time.as_bytes()[4] == b'-' && time.contains('T'),
                "a CRI log line starts with an RFC 3339 time: {line:?}"
            );
            assert!(tag == "F" || tag == "P", "{line:?}");
            (s == stream).then(|| msg.to_string())
        })
        .collect()
}

/// Waits (bounded) until `path`'s stdout messages include `want`; returns them.
async fn wait_log(rig: &Rig, path: &Path, want: &str) -> Vec<String> {
    let deadline = Instant::now() + PATIENCE;
    loop {
        let messages = log_messages(path, "stdout");
        if messages.iter().any(|m| m == want) {
            return messages;
        }
        assert!(
            Instant::now() < deadline,
            "{want:?} never reached {}: {messages:?}\n{}",
            path.display(),
            rig.logs_tail()
        );
        async_io::Timer::after(Duration::from_millis(50)).await;
    }
}

/// containerd's own event stream (`ctr -n k8s.io events`), recorded to a file until dropped.
struct Events {
    child: std::process::Child,
    path: PathBuf,
}

impl Events {
    fn record(rig: &Rig) -> Events {
        Events::record_in(rig, CRI_NAMESPACE)
    }

    fn record_in(rig: &Rig, ns: &str) -> Events {
        let path = rig.logs.path().join(format!("events-{ns}"));
        let file = std::fs::File::create(&path).unwrap();
        let child = rig
            .containerd
            .ctr(ns)
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

    /// Waits (bounded) until `id` has all of `want` among its topics; returns them.
    async fn wait_topics(&self, rig: &Rig, id: &str, want: &[&str]) -> Vec<String> {
        let deadline = Instant::now() + PATIENCE;
        loop {
            let topics = self.topics_of(id);
            if want.iter().all(|w| topics.iter().any(|t| t == w)) {
                return topics;
            }
            assert!(
                Instant::now() < deadline,
                "containerd's events for {id}: {topics:?}, want {want:?}\nall: {}\n{}",
                std::fs::read_to_string(&self.path).unwrap_or_default(),
                rig.logs_tail()
            );
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

/// The command lines of this containerd's stock runc shims.
fn runc_shims(rig: &Rig) -> Vec<String> {
    rig.containerd
        .shim_pids()
        .into_iter()
        .filter_map(|pid| {
            let cmdline = std::fs::read(format!("/proc/{pid}/cmdline")).ok()?;
            let cmdline = String::from_utf8_lossy(&cmdline).replace('\0', " ");
            cmdline
                .contains("containerd-shim-runc-v2")
                .then_some(cmdline)
        })
        .collect()
}

on_both!(
    one_pod_through_cri_like_kubelet_with_runtime_class_unified,
    ten_pods_add_no_shim_and_default_runtime_pods_work_beside,
    systemd_cgroup_without_systemd_fails_the_sandbox_naming_it,
    a_container_over_its_memory_limit_is_reported_oom_killed,
    stop_pod_sandbox_succeeds_when_its_container_exits_at_that_moment_fifty_times,
);

fn one_pod_through_cri_like_kubelet_with_runtime_class_unified(version: Version) {
    let Some(rig) = Rig::new(version) else {
        return;
    };
    smol::block_on(async {
        let mut cri = rig.cri().await;
        let version = cri
            .version(VersionRequest::default())
            .await
            .expect("Version")
            .into_inner();
        assert_eq!(version.runtime_name, "containerd");
        assert_eq!(version.runtime_api_version, "v1");

        let pod = start_pod(
            &rig,
            &mut cri,
            UNIFIED,
            "web",
            &[
                "sh",
                "-c",
                "trap 'echo bye; exit 7' TERM; echo one; echo two; \
                 while :; do sleep 0.1; done",
            ],
        )
        .await;
        let sandbox = cri
            .pod_sandbox_status(PodSandboxStatusRequest {
                pod_sandbox_id: pod.id.clone(),
                verbose: false,
            })
            .await
            .expect("PodSandboxStatus")
            .into_inner()
            .status
            .unwrap();
        assert_eq!(sandbox.state, PodSandboxState::SandboxReady as i32);
        assert_eq!(sandbox.runtime_handler, UNIFIED);

        let status = wait_state(
            &rig,
            &mut cri,
            &pod.container,
            ContainerState::ContainerRunning,
        )
        .await;
        let log = rig.log_dir("web").join("web.log");
        assert_eq!(status.log_path, log.display().to_string());
        assert_eq!(status.image.unwrap().image, BUSYBOX);

        // Served by shimless: its daemon runs, runc's state for the pause and the container is
        // in shimless's runc root, and containerd started no runc shim for them.
        assert!(!rig.shimless.processes("shimlessd").is_empty());
        let runc_root = rig.shimless.runc_root(CRI_NAMESPACE);
        for id in [&pod.id, &pod.container] {
            assert!(
                runc_root.join(id).join("state.json").exists(),
                "{id} in {}",
                runc_root.display()
            );
        }
        assert_eq!(runc_shims(&rig), Vec::<String>::new());

        // ExecSync: exit code and both streams.
        let exec = cri
            .exec_sync(ExecSyncRequest {
                container_id: pod.container.clone(),
                cmd: vec![
                    "sh".into(),
                    "-c".into(),
                    "echo out; echo err >&2; exit 3".into(),
                ],
                timeout: 30,
            })
            .await
            .expect("ExecSync")
            .into_inner();
        assert_eq!(exec.exit_code, 3);
        assert_eq!(String::from_utf8_lossy(&exec.stdout), "out\n");
        assert_eq!(String::from_utf8_lossy(&exec.stderr), "err\n");

        // The log file, in CRI's format, written by containerd from shimless's fifos.
        let messages = wait_log(&rig, &log, "two").await;
        assert_eq!(messages, ["one", "two"]);

        // Log rotation as kubelet does it: rename, then ReopenContainerLog; what the container
        // writes next goes to a new file of the old name.
        let rotated = log.with_extension("log.1");
        std::fs::rename(&log, &rotated).unwrap();
        cri.reopen_container_log(ReopenContainerLogRequest {
            container_id: pod.container.clone(),
        })
        .await
        .expect("ReopenContainerLog");
        assert!(log.exists(), "ReopenContainerLog makes {}", log.display());

        // StopContainer: SIGTERM, which the container traps and exits 7 on.
        cri.stop_container(StopContainerRequest {
            container_id: pod.container.clone(),
            timeout: 30,
        })
        .await
        .expect("StopContainer");
        let status = wait_state(
            &rig,
            &mut cri,
            &pod.container,
            ContainerState::ContainerExited,
        )
        .await;
        assert_eq!(status.exit_code, 7);
        assert_eq!(status.reason, "Error");
        assert!(status.finished_at >= status.started_at && status.started_at > 0);
        assert_eq!(wait_log(&rig, &log, "bye").await, ["bye"]);
        assert_eq!(log_messages(&rotated, "stdout"), ["one", "two"]);

        cri.remove_container(RemoveContainerRequest {
            container_id: pod.container.clone(),
        })
        .await
        .expect("RemoveContainer");
        let gone = cri
            .container_status(ContainerStatusRequest {
                container_id: pod.container.clone(),
                verbose: false,
            })
            .await
            .expect_err("a removed container has no status");
        assert_eq!(gone.code(), tonic::Code::NotFound, "{gone:?}");
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
        assert!(!runc_root.join(&pod.id).exists());
        assert!(!runc_root.join(&pod.container).exists());
        assert_eq!(rig.containerd.tasks(CRI_NAMESPACE).unwrap().len(), 0);
    });
}

fn ten_pods_add_no_shim_and_default_runtime_pods_work_beside(version: Version) {
    let Some(rig) = Rig::new(version) else {
        return;
    };
    smol::block_on(async {
        let mut cri = rig.cri().await;
        let cmd = ["sh", "-c", "echo ready; exec sleep 100000"];
        let mut pods = vec![start_pod(&rig, &mut cri, UNIFIED, "pod-0", &cmd).await];
        wait_state(
            &rig,
            &mut cri,
            &pods[0].container,
            ContainerState::ContainerRunning,
        )
        .await;
        let with_one = rig.shimless.shim_processes(&rig.containerd);
        assert_eq!(with_one.len(), 2, "the front and the daemon: {with_one:?}");
        for i in 1..10 {
            pods.push(start_pod(&rig, &mut cri, UNIFIED, &format!("pod-{i}"), &cmd).await);
        }
        for pod in &pods {
            wait_state(
                &rig,
                &mut cri,
                &pod.container,
                ContainerState::ContainerRunning,
            )
            .await;
        }
        assert_eq!(
            rig.shimless.shim_processes(&rig.containerd),
            with_one,
            "ten pods, still the same two processes"
        );
        assert_eq!(runc_shims(&rig), Vec::<String>::new());
        let tasks = rig.containerd.tasks(CRI_NAMESPACE).unwrap();
        assert_eq!(
            tasks.values().filter(|s| *s == "RUNNING").count(),
            20,
            "ten sandboxes and ten containers: {tasks:?}"
        );

        // Pods of the default runtime: each brings the stock runc shim, and works.
        let mut stock = Vec::new();
        for i in 0..2 {
            stock.push(start_pod(&rig, &mut cri, DEFAULT, &format!("stock-{i}"), &cmd).await);
        }
        for pod in &stock {
            wait_state(
                &rig,
                &mut cri,
                &pod.container,
                ContainerState::ContainerRunning,
            )
            .await;
            let log = rig
                .log_dir(&pod.config.metadata.as_ref().unwrap().name)
                .join(format!(
                    "{}.log",
                    pod.config.metadata.as_ref().unwrap().name
                ));
            wait_log(&rig, &log, "ready").await;
        }
        assert_eq!(runc_shims(&rig).len(), 2, "a runc shim per stock pod");
        let exec = cri
            .exec_sync(ExecSyncRequest {
                container_id: stock[0].container.clone(),
                cmd: vec!["sh".into(), "-c".into(), "echo stock; exit 4".into()],
                timeout: 30,
            })
            .await
            .expect("ExecSync in a stock pod")
            .into_inner();
        assert_eq!(
            (exec.exit_code, exec.stdout.as_slice()),
            (4, &b"stock\n"[..])
        );

        // The shimless pods are unaffected, and all go away cleanly.
        for pod in &pods {
            let status = container_status(&mut cri, &pod.container).await;
            assert_eq!(status.state, ContainerState::ContainerRunning as i32);
        }
        for pod in stock.iter().chain(&pods) {
            remove_pod(&mut cri, pod).await;
        }
        assert_eq!(rig.containerd.tasks(CRI_NAMESPACE).unwrap().len(), 0);
    });
}

fn systemd_cgroup_without_systemd_fails_the_sandbox_naming_it(version: Version) {
    if task_service::options::host_has_systemd() {
        eprintln!("systemd runs this machine: SystemdCgroup = true is honoured, nothing to refuse");
        return;
    }
    let Some(rig) = Rig::new(version) else {
        return;
    };
    smol::block_on(async {
        let mut cri = rig.cri().await;
        let err = run_pod(&mut cri, rig.pod_config("sd"), UNIFIED_SYSTEMD)
            .await
            .expect_err("SystemdCgroup = true with no systemd must fail");
        assert!(err.message().contains("SystemdCgroup"), "{err:?}");
        // Nothing of it left running.
        let tasks = rig.containerd.tasks(CRI_NAMESPACE).unwrap();
        assert!(!tasks.values().any(|s| s == "RUNNING"), "{tasks:?}");
        // The runtime still serves pods of the other handler.
        let pod = start_pod(&rig, &mut cri, UNIFIED, "after", &["sleep", "100000"]).await;
        wait_state(
            &rig,
            &mut cri,
            &pod.container,
            ContainerState::ContainerRunning,
        )
        .await;
        remove_pod(&mut cri, &pod).await;
    });
}

fn a_container_over_its_memory_limit_is_reported_oom_killed(version: Version) {
    let Some(rig) = Rig::new(version) else {
        return;
    };
    let events = Events::record(&rig);
    smol::block_on(async {
        let mut cri = rig.cri().await;
        let config = rig.pod_config("oom");
        let pod = run_pod(&mut cri, config.clone(), UNIFIED)
            .await
            .expect("RunPodSandbox");
        // 16 MiB of memory (and no more with swap); the shell then holds 64 MiB in a variable.
        let mut container = Rig::container_config(
            "oom",
            &[
                "sh",
                "-c",
                "echo filling; x=$(dd if=/dev/zero bs=1048576 count=64 2>/dev/null | tr '\\0' a); \
                 echo survived",
            ],
        );
        container.linux = Some(LinuxContainerConfig {
            resources: Some(LinuxContainerResources {
                memory_limit_in_bytes: 16 << 20,
                memory_swap_limit_in_bytes: 16 << 20,
                ..Default::default()
            }),
            ..Default::default()
        });
        let id = create_container(&mut cri, &pod, &config, container).await;
        start_container(&mut cri, &id).await;
        let status = wait_state(&rig, &mut cri, &id, ContainerState::ContainerExited).await;
        let log = rig.log_dir("oom").join("oom.log");
        assert_eq!(
            (status.reason.as_str(), status.exit_code),
            ("OOMKilled", 137),
            "{status:?}\nlog: {:?}",
            log_messages(&log, "stdout")
        );
        assert_eq!(log_messages(&log, "stdout"), ["filling"]);

        // Every event of the app container reached containerd's own stream (containerd 2.x
        // created it without `start`, reusing the sandbox's bootstrap), once each.
        cri.remove_container(RemoveContainerRequest {
            container_id: id.clone(),
        })
        .await
        .expect("RemoveContainer");
        let all = [
            "/tasks/create",
            "/tasks/start",
            "/tasks/oom",
            "/tasks/exit",
            "/tasks/delete",
        ];
        let topics = events.wait_topics(&rig, &id, &all).await;
        for topic in all {
            let n = topics.iter().filter(|t| *t == topic).count();
            assert_eq!(n, 1, "{topic} in {topics:?}");
        }
        let order: Vec<usize> = all
            .iter()
            .map(|w| topics.iter().position(|t| t == w).unwrap())
            .collect();
        assert!(order.windows(2).all(|w| w[0] < w[1]), "{topics:?}");
    });
}

/// A pod of `handler` whose one container blocks reading the FIFO `<trigger>/go` (mounted at
/// `/trigger`) and exits 3 once a writer closes it; running when this returns.
async fn start_triggered_pod(
    rig: &Rig,
    cri: &mut Cri,
    handler: &str,
    name: &str,
    trigger: &Path,
) -> Pod {
    let config = rig.pod_config(name);
    let id = run_pod(cri, config.clone(), handler)
        .await
        .unwrap_or_else(|e| panic!("RunPodSandbox {name}: {e}\n{}", rig.logs_tail()));
    let mut container = Rig::container_config(name, &["sh", "-c", "read x < /trigger/go; exit 3"]);
    container.mounts = vec![runtime::v1::Mount {
        container_path: "/trigger".into(),
        host_path: trigger.display().to_string(),
        readonly: true,
    }];
    let container = create_container(cri, &id, &config, container).await;
    start_container(cri, &container).await;
    wait_state(rig, cri, &container, ContainerState::ContainerRunning).await;
    Pod {
        id,
        config,
        container,
    }
}

/// Stops `times` pods of `handler` whose container exits at the moment its pod is stopped (the
/// exit on its way to CRI when `StopPodSandbox` arrives); the stops that failed.
async fn stop_pods_as_their_containers_exit(
    rig: &Rig,
    cri: &mut Cri,
    handler: &str,
    times: usize,
) -> Vec<String> {
    let mut failures = Vec::new();
    for i in 0..times {
        let name = format!(
            "exiting-{}-{i}",
            if handler.is_empty() { "stock" } else { handler }
        );
        let trigger = rig.logs.path().join(format!("{name}-trigger"));
        std::fs::create_dir_all(&trigger).unwrap();
        rustix::fs::mknodat(
            rustix::fs::CWD,
            trigger.join("go"),
            rustix::fs::FileType::Fifo,
            rustix::fs::Mode::from_raw_mode(0o600),
            0,
        )
        .unwrap();
        let pod = start_triggered_pod(rig, cri, handler, &name, &trigger).await;
        // The writer's open waits for the container's read end; its close is the container's
        // end of file, and the container exits at once.
        let go = trigger.join("go");
        smol::unblock(move || drop(std::fs::OpenOptions::new().write(true).open(go))).await;
        let stopped = cri
            .stop_pod_sandbox(StopPodSandboxRequest {
                pod_sandbox_id: pod.id.clone(),
            })
            .await;
        if let Err(e) = stopped {
            failures.push(format!("{name}: {:?} {}", e.code(), e.message()));
            // Stop again to clean up: by now CRI has seen the exit.
            let _ = cri
                .stop_pod_sandbox(StopPodSandboxRequest {
                    pod_sandbox_id: pod.id.clone(),
                })
                .await;
        }
        let removed = cri
            .remove_pod_sandbox(RemovePodSandboxRequest {
                pod_sandbox_id: pod.id.clone(),
            })
            .await;
        if let Err(e) = removed {
            failures.push(format!("{name}: remove: {:?} {}", e.code(), e.message()));
        }
    }
    failures
}

fn stop_pod_sandbox_succeeds_when_its_container_exits_at_that_moment_fifty_times(version: Version) {
    let Some(rig) = Rig::new(version) else {
        return;
    };
    smol::block_on(async {
        let mut cri = rig.cri().await;
        // The stock runc shim first, as the reference for what containerd expects.
        let stock = stop_pods_as_their_containers_exit(&rig, &mut cri, DEFAULT, 10).await;
        assert_eq!(stock, Vec::<String>::new(), "the stock runc shim");
        let unified = stop_pods_as_their_containers_exit(&rig, &mut cri, UNIFIED, 50).await;
        assert_eq!(
            unified,
            Vec::<String>::new(),
            "shimless: {} failures in 50 pods\n{}",
            unified.len(),
            rig.logs_tail()
        );
    });
    let log = std::fs::read_to_string(rig.containerd.log_path()).unwrap_or_default();
    let inactive: Vec<&str> = log
        .lines()
        .filter(|l| l.contains("inactive stream"))
        .collect();
    assert_eq!(
        inactive,
        Vec::<&str>::new(),
        "containerd dropped replies (a Wait given up early)"
    );
}

/// The command of a container that waits for `/trigger/<name>` and exits with the code in it.
fn triggered(name: &str) -> Vec<String> {
    vec![
        "sh".into(),
        "-c".into(),
        format!("while [ ! -s /trigger/{name} ]; do sleep 0.05; done; exit $(cat /trigger/{name})"),
    ]
}

/// Writes `code` into `dir/<name>` at once (a rename), which makes that container exit.
fn fire(dir: &Path, name: &str, code: u8) {
    let tmp = dir.join(format!(".{name}"));
    std::fs::write(&tmp, format!("{code}\n")).unwrap();
    std::fs::rename(tmp, dir.join(name)).unwrap();
}

/// `ctr task ls` of `ns`: container ID to PID.
fn task_pids(rig: &Rig, ns: &str) -> std::collections::HashMap<String, u32> {
    rig.containerd
        .ctr_ok(ns, &["task", "ls"])
        .unwrap()
        .lines()
        .skip(1)
        .filter_map(|l| {
            let mut f = l.split_whitespace();
            Some((f.next()?.to_string(), f.next()?.parse().ok()?))
        })
        .collect()
}

/// Waits (bounded) until `ns`'s tasks satisfy `check`.
fn wait_tasks(
    rig: &Rig,
    ns: &str,
    what: &str,
    check: impl Fn(&std::collections::HashMap<String, String>) -> bool,
) {
    let deadline = Instant::now() + PATIENCE;
    loop {
        let tasks = rig.containerd.tasks(ns).unwrap_or_default();
        if check(&tasks) {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "{what}: {tasks:?}\n{}",
            rig.logs_tail()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// A node upgraded in place from containerd 1.7 to 2.1 keeps its containers: 20 tasks (three
/// CRI pods, each a sandbox and a container, and 14 `ctr` containers) run under 1.7; it stops;
/// four exit while no containerd runs; 2.1.9 starts on the same root and state. Every task is
/// still there and manageable, and the four exits are reported with their true codes.
#[test]
fn upgrading_containerd_from_1_7_to_2_1_keeps_every_container() {
    const NS: &str = "shimless-upgrade";
    if integration::require(Version::V2_1.needs()).is_none() {
        return;
    }
    let Some(mut rig) = Rig::with_namespaces(Version::V1_7, &[NS]) else {
        return;
    };
    let triggers = tempfile::tempdir().unwrap();
    let trigger_mount = format!(
        "type=bind,src={},dst=/trigger,options=rbind:rw",
        triggers.path().display()
    );
    let image = Image::busybox(BUSYBOX)
        .write_tar(&rig.containerd.dir().join("busybox-ctr.tar"))
        .unwrap();
    rig.containerd.import(NS, image.path()).unwrap();
    let ctr_ids: Vec<String> = (0..14).map(|i| format!("u{i:02}")).collect();
    for id in &ctr_ids {
        let mut args = vec!["run", "-d", "--runtime", "io.containerd.shimless.v2"];
        args.extend(["--mount", &trigger_mount, BUSYBOX, id]);
        let cmd = triggered(id);
        args.extend(cmd.iter().map(String::as_str));
        rig.containerd.ctr_ok(NS, &args).unwrap();
    }
    let pods: Vec<Pod> = smol::block_on(async {
        let mut cri = rig.cri().await;
        let mut pods = Vec::new();
        for i in 0..3 {
            let name = format!("up-{i}");
            let config = rig.pod_config(&name);
            let id = run_pod(&mut cri, config.clone(), UNIFIED).await.unwrap();
            let mut container = Rig::container_config(&name, &[]);
            container.command = triggered(&name);
            container.mounts = vec![Mount {
                container_path: "/trigger".into(),
                host_path: triggers.path().display().to_string(),
                readonly: false,
            }];
            let container = create_container(&mut cri, &id, &config, container).await;
            start_container(&mut cri, &container).await;
            wait_state(&rig, &mut cri, &container, ContainerState::ContainerRunning).await;
            pods.push(Pod {
                id,
                config,
                container,
            });
        }
        pods
    });
    let mut pids = task_pids(&rig, NS);
    pids.extend(task_pids(&rig, CRI_NAMESPACE));
    assert_eq!(pids.len(), 20, "{pids:?}");

    // containerd 1.7 stops; four exit while no containerd runs.
    rig.containerd.stop_daemon();
    for (i, id) in ctr_ids.iter().take(3).enumerate() {
        fire(triggers.path(), id, 31 + i as u8);
    }
    fire(triggers.path(), "up-0", 34);
    let gone = [&ctr_ids[0], &ctr_ids[1], &ctr_ids[2], &pods[0].container];
    let deadline = Instant::now() + PATIENCE;
    while gone.iter().any(|id| common::alive(pids[*id])) {
        assert!(Instant::now() < deadline, "the four did not exit");
        std::thread::sleep(Duration::from_millis(20));
    }

    rig.containerd
        .upgrade(Version::V2_1)
        .expect("containerd 2.1 on 1.7's root and state");
    let version = rig.containerd.ctr_ok("default", &["version"]).unwrap();
    assert!(version.contains("2.1."), "{version}");

    // The ctr containers: 11 running, the 3 with their true codes, all manageable.
    wait_tasks(&rig, NS, "11 running, 3 stopped", |t| {
        t.len() == 14
            && t.values().filter(|s| *s == "RUNNING").count() == 11
            && t.values().filter(|s| *s == "STOPPED").count() == 3
    });
    for (i, id) in ctr_ids.iter().take(3).enumerate() {
        let out = rig
            .containerd
            .ctr(NS)
            .args(["task", "rm", id])
            .output()
            .unwrap();
        let warned = String::from_utf8_lossy(&out.stderr);
        assert!(
            warned.contains(&format!("exit code {}", 31 + i)),
            "{id}: {out:?}"
        );
    }
    let out = rig
        .containerd
        .ctr(NS)
        .args(["task", "exec", "--exec-id", "after", &ctr_ids[5]])
        .args(["sh", "-c", "echo upgraded; exit 6"])
        .output()
        .unwrap();
    assert_eq!(
        (out.status.code(), &*String::from_utf8_lossy(&out.stdout)),
        (Some(6), "upgraded\n"),
        "{out:?}"
    );
    let events = Events::record_in(&rig, NS);
    fire(triggers.path(), &ctr_ids[6], 46);
    wait_tasks(&rig, NS, "u06 stops", |t| {
        t.get(&ctr_ids[6]).map(String::as_str) == Some("STOPPED")
    });
    let out = rig
        .containerd
        .ctr(NS)
        .args(["task", "rm", &ctr_ids[6]])
        .output()
        .unwrap();
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("exit code 46"),
        "{out:?}"
    );
    // Its events reach 2.1's own stream: shimless forwards to the containerd now on the socket.
    smol::block_on(events.wait_topics(&rig, &ctr_ids[6], &["/tasks/exit", "/tasks/delete"]));
    // Only u06's: the exits queued while no containerd ran (and the exec's) may reach 2.1 after
    // the recording began, when the forwarder's retry comes round.
    let u06 = format!("\"container_id\":\"{}\"", ctr_ids[6]);
    let exits: Vec<String> = std::fs::read_to_string(&events.path)
        .unwrap()
        .lines()
        .filter(|l| l.contains("/tasks/exit") && l.contains(&u06))
        .map(str::to_string)
        .collect();
    assert!(
        exits.len() == 1 && exits[0].contains("\"exit_status\":46"),
        "{exits:?}"
    );

    // The pods: the one that exited meanwhile with its code, the others running and served.
    smol::block_on(async {
        let mut cri = rig.cri().await;
        let status = wait_state(
            &rig,
            &mut cri,
            &pods[0].container,
            ContainerState::ContainerExited,
        )
        .await;
        assert_eq!(status.exit_code, 34, "{status:?}");
        for pod in &pods[1..] {
            let status = container_status(&mut cri, &pod.container).await;
            assert_eq!(status.state, ContainerState::ContainerRunning as i32);
        }
        let exec = cri
            .exec_sync(ExecSyncRequest {
                container_id: pods[1].container.clone(),
                cmd: vec!["sh".into(), "-c".into(), "echo pod; exit 2".into()],
                timeout: 30,
            })
            .await
            .expect("ExecSync after the upgrade")
            .into_inner();
        assert_eq!((exec.exit_code, exec.stdout.as_slice()), (2, &b"pod\n"[..]));
        fire(triggers.path(), "up-1", 35);
        let status = wait_state(
            &rig,
            &mut cri,
            &pods[1].container,
            ContainerState::ContainerExited,
        )
        .await;
        assert_eq!(status.exit_code, 35, "{status:?}");
        for pod in &pods {
            remove_pod(&mut cri, pod).await;
        }
        // A new pod under 2.1 beside the old ones.
        let fresh = start_pod(
            &rig,
            &mut cri,
            UNIFIED,
            "after-upgrade",
            &["sleep", "100000"],
        )
        .await;
        wait_state(
            &rig,
            &mut cri,
            &fresh.container,
            ContainerState::ContainerRunning,
        )
        .await;
        remove_pod(&mut cri, &fresh).await;
    });
    assert!(rig.containerd.tasks(CRI_NAMESPACE).unwrap().is_empty());
}
