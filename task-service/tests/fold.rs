//! Folded pods through CRI, on a private containerd whose `unified` runtime (shimless) passes
//! the `shimless.io/*` pod annotations, with the cgroupfs driver on this host's hierarchies.
//!
//! - five folded pods (annotation `shimless.io/cgroup: folded`) and five unfolded ones (no
//!   annotation: the default `fold = "never"`), three containers each, side by side: per pod
//!   the directories that exist in every hierarchy, the folded pod cgroup's values against
//!   kubelet's formulas (`cgroupfold::math`), the containers' processes in the pod cgroup, what
//!   `Admin/List` (`shimlessctl ps`) says of each pod, and the unfolded containers' specs and
//!   cgroups as containerd made them;
//! - `Kill` with `all`, `Pause` and `Resume`, and `StopContainer` + `RemoveContainer` of one
//!   container of a folded pod leave its siblings running and the pod's values in place;
//! - a pod whose annotation says neither `folded` nor `unfolded` is refused at RunPodSandbox
//!   with an error naming the annotation.

use cgroupfold::math::{Bytes, MilliCpu, PodResources, Resources, pod_cgroup};
use integration::containerd::{CRI_NAMESPACE, Containerd, ContainerdConfig, Runtime, Version};
use integration::image::Image;
use integration::{Need, require};
use std::path::PathBuf;
use std::time::{Duration, Instant};
use task_service::api::containerd::task::v3::{
    KillRequest, PauseRequest, PidsRequest, ResumeRequest, UpdateTaskRequest,
};
use task_service::api::shimless::v1::{ListRequest, TaskSummary};
use task_service::client::namespaced;

#[macro_use]
mod common;
use common::shimless::Shimless;

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
const UNIFIED: &str = "unified";
const PATIENCE: Duration = Duration::from_secs(60);
/// Pods per layout (the 20 is the benchmark's business; 5 keeps the test short).
const PODS: usize = 5;

/// A private containerd with CRI and shimless as `unified`, passing shimless's pod annotations.
struct Rig {
    containerd: Containerd,
    shimless: Shimless,
    logs: tempfile::TempDir,
    /// The test's own top cgroup (kubelet's would be `/kubepods`), unique per test.
    root: String,
}

impl Rig {
    fn new(version: Version, name: &str) -> Option<Rig> {
        Rig::with_config(version, name, "")
    }

    /// With `extra` lines in shimless's configuration.
    fn with_config(version: Version, name: &str, extra: &str) -> Option<Rig> {
        let mut needs = version.needs().to_vec();
        needs.extend([Need::Btf, Need::Bpffs]);
        require(&needs)?;
        rustix::process::set_child_subreaper(rustix::process::Pid::from_raw(1)).unwrap();
        let shimless = Shimless::new(extra).cleans(CRI_NAMESPACE);
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
            logs: tempfile::tempdir().unwrap(),
            // Per version too: both versions of a test run at once and must not share a pod
            // cgroup.
            root: format!(
                "shimless-fold-{name}-{}-{}",
                version.label().replace('.', ""),
                std::process::id()
            ),
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

    /// The pod cgroup of pod `name`, as kubelet names it (cgroupfs driver), without the
    /// leading `/`.
    fn pod_cgroup(&self, name: &str) -> String {
        format!("{}/burstable/pod{name}", self.root)
    }

    /// A host-network pod `name` in its own pid namespace per container, annotated
    /// `shimless.io/cgroup: <fold>` if given.
    fn pod_config(&self, name: &str, fold: Option<&str>) -> PodSandboxConfig {
        let log_dir = self.logs.path().join(name);
        std::fs::create_dir_all(&log_dir).unwrap();
        PodSandboxConfig {
            metadata: Some(PodSandboxMetadata {
                name: name.into(),
                uid: name.into(),
                namespace: "default".into(),
                attempt: 0,
            }),
            log_directory: log_dir.display().to_string(),
            annotations: fold
                .map(|v| [("shimless.io/cgroup".to_string(), v.to_string())].into())
                .unwrap_or_default(),
            linux: Some(LinuxPodSandboxConfig {
                cgroup_parent: format!("/{}", self.pod_cgroup(name)),
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

    fn diagnostics(&self) -> String {
        format!(
            "containerd: {}\nshimlessd: {}",
            self.containerd.log_tail(30),
            self.shimless.log("shimlessd.log"),
        )
    }

    /// What `Admin/List` (`shimlessctl ps`) says of every container.
    async fn listed(&self) -> Vec<TaskSummary> {
        let client = task_service::client::Client::connect(self.shimless.front_socket())
            .await
            .expect("connect to the front");
        client
            .admin()
            .list(ListRequest {
                namespace: CRI_NAMESPACE.into(),
            })
            .await
            .expect("Admin/List")
            .into_inner()
            .tasks
    }

    /// A Task client in containerd's CRI namespace, through the front (as containerd calls).
    async fn task(&self) -> task_service::client::TaskClient {
        task_service::client::Client::connect(self.shimless.front_socket())
            .await
            .expect("connect to the front")
            .task()
    }
}

impl Drop for Rig {
    fn drop(&mut self) {
        // Whatever a failed test left of the test's cgroups (containers are gone by now only
        // if containerd stopped them; leftovers are empty directories, removed leaves first).
        if let Ok(cg) = cgroupfold::fs::Cgroups::detect() {
            for dir in cg.dirs(&self.root).unwrap_or_default() {
                remove_tree(&dir);
            }
        }
    }
}

fn remove_tree(dir: &std::path::Path) {
    if let Ok(entries) = std::fs::read_dir(dir) {
        for e in entries.flatten() {
            if e.file_type().is_ok_and(|t| t.is_dir()) {
                remove_tree(&e.path());
            }
        }
    }
    let _ = std::fs::remove_dir(dir);
}

/// The three containers of every test pod, with kubelet's requests and limits.
fn containers() -> [(&'static str, Resources); 3] {
    let r = |req: u64, lim: u64, mem: u64| Resources {
        cpu_request: Some(MilliCpu(req)),
        cpu_limit: Some(MilliCpu(lim)),
        memory_request: None,
        memory_limit: Some(Bytes::mib(mem)),
    };
    [
        ("web", r(250, 500, 64)),
        ("side", r(500, 1000, 32)),
        ("log", r(100, 200, 16)),
    ]
}

/// What kubelet sends for container `name` with resources `r` (its `cpu.shares`, quota and
/// memory limit, computed by kubelet's formulas).
fn container_config(name: &str, r: &Resources) -> ContainerConfig {
    let own = cgroupfold::math::container_cgroup(r);
    ContainerConfig {
        metadata: Some(ContainerMetadata {
            name: name.into(),
            attempt: 0,
        }),
        image: Some(ImageSpec {
            image: BUSYBOX.into(),
            ..Default::default()
        }),
        command: ["sleep", "100000"].iter().map(|s| s.to_string()).collect(),
        log_path: format!("{name}.log"),
        linux: Some(LinuxContainerConfig {
            resources: Some(LinuxContainerResources {
                cpu_period: cgroupfold::math::CFS_PERIOD_US as i64,
                cpu_quota: own.cpu_quota.v1_quota_us(),
                cpu_shares: own.cpu_shares as i64,
                memory_limit_in_bytes: own.memory.v1_limit_in_bytes() as i64,
                ..Default::default()
            }),
            // Its own pid namespace, as kubelet asks unless the pod shares one (a folded
            // container needs it: its processes are told from its siblings' by it).
            security_context: Some(LinuxContainerSecurityContext {
                namespace_options: Some(NamespaceOption {
                    network: NamespaceMode::Node as i32,
                    pid: NamespaceMode::Container as i32,
                    ipc: NamespaceMode::Pod as i32,
                    ..Default::default()
                }),
                ..Default::default()
            }),
        }),
        ..Default::default()
    }
}

/// A started pod: its sandbox id and its containers' ids by name.
struct Pod {
    name: String,
    id: String,
    containers: Vec<(String, String)>,
}

async fn start_pod(rig: &Rig, cri: &mut Cri, name: &str, fold: Option<&str>) -> Pod {
    let config = rig.pod_config(name, fold);
    let id = cri
        .run_pod_sandbox(RunPodSandboxRequest {
            config: Some(config.clone()),
            runtime_handler: UNIFIED.into(),
        })
        .await
        .unwrap_or_else(|e| panic!("RunPodSandbox {name}: {e}\n{}", rig.diagnostics()))
        .into_inner()
        .pod_sandbox_id;
    let mut made = Vec::new();
    for (cname, r) in containers() {
        let cid = cri
            .create_container(CreateContainerRequest {
                pod_sandbox_id: id.clone(),
                config: Some(container_config(cname, &r)),
                sandbox_config: Some(config.clone()),
            })
            .await
            .unwrap_or_else(|e| {
                panic!("CreateContainer {name}/{cname}: {e}\n{}", rig.diagnostics())
            })
            .into_inner()
            .container_id;
        cri.start_container(StartContainerRequest {
            container_id: cid.clone(),
        })
        .await
        .unwrap_or_else(|e| panic!("StartContainer {name}/{cname}: {e}\n{}", rig.diagnostics()));
        made.push((cname.to_string(), cid));
    }
    Pod {
        name: name.into(),
        id,
        containers: made,
    }
}

async fn state(cri: &mut Cri, id: &str) -> i32 {
    cri.container_status(ContainerStatusRequest {
        container_id: id.into(),
        verbose: false,
    })
    .await
    .expect("ContainerStatus")
    .into_inner()
    .status
    .expect("a status")
    .state
}

async fn wait_running(rig: &Rig, cri: &mut Cri, id: &str) {
    let deadline = Instant::now() + PATIENCE;
    while state(cri, id).await != ContainerState::ContainerRunning as i32 {
        assert!(
            Instant::now() < deadline,
            "{id} never ran\n{}",
            rig.diagnostics()
        );
        async_io::Timer::after(Duration::from_millis(50)).await;
    }
}

async fn remove_pod(cri: &mut Cri, pod: &Pod) {
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

/// The v1 hierarchy directory of `path` for `controller` (e.g. `memory`).
fn v1_dir(controller: &str, path: &str) -> PathBuf {
    let mounts = cgroupfold::fs::Mounts::read().expect("mountinfo");
    mounts
        .v1_mount(controller)
        .unwrap_or_else(|| panic!("no v1 {controller} hierarchy"))
        .join(path)
}

fn read_u64(dir: &std::path::Path, file: &str) -> u64 {
    let text = std::fs::read_to_string(dir.join(file))
        .unwrap_or_else(|e| panic!("{}/{file}: {e}", dir.display()));
    text.trim()
        .parse()
        .unwrap_or_else(|e| panic!("{}/{file} = {text:?}: {e}", dir.display()))
}

fn read_i64(dir: &std::path::Path, file: &str) -> i64 {
    let text = std::fs::read_to_string(dir.join(file)).unwrap();
    text.trim().parse().unwrap()
}

/// The child directories of `path` in every hierarchy this host mounts (v1 controllers,
/// `name=` hierarchies, the unified one), each as (hierarchy, children); `None` where `path`
/// does not exist.
fn children(path: &str) -> Vec<(PathBuf, Option<usize>)> {
    let cg = cgroupfold::fs::Cgroups::detect().expect("cgroups");
    cg.dirs(path)
        .unwrap()
        .into_iter()
        .map(|dir| {
            let n = std::fs::read_dir(&dir).ok().map(|entries| {
                entries
                    .flatten()
                    .filter(|e| e.file_type().is_ok_and(|t| t.is_dir()))
                    .count()
            });
            (dir, n)
        })
        .collect()
}

/// The processes in `path`'s memory cgroup.
fn procs(path: &str) -> Vec<u32> {
    let text =
        std::fs::read_to_string(v1_dir("memory", path).join("cgroup.procs")).unwrap_or_default();
    text.lines().filter_map(|l| l.trim().parse().ok()).collect()
}

/// The pids of the processes running `sleep 100000` in pod cgroup `pod` (its subtree).
fn sleepers(pod: &str) -> Vec<u32> {
    let mut pids = Vec::new();
    for entry in std::fs::read_dir("/proc").unwrap().flatten() {
        let Ok(pid) = entry.file_name().to_string_lossy().parse::<u32>() else {
            continue;
        };
        let cmd = std::fs::read(entry.path().join("cmdline")).unwrap_or_default();
        if cmd != b"sleep\x00100000\x00" {
            continue;
        }
        let cgroups = std::fs::read_to_string(entry.path().join("cgroup")).unwrap_or_default();
        if cgroups
            .lines()
            .any(|l| l.contains(":memory:") && l.contains(&format!("/{pod}")))
        {
            pids.push(pid);
        }
    }
    pids.sort();
    pids
}

/// Waits (bounded) until exactly `n` processes run `sleep 100000` in pod cgroup `pod`: a
/// started container's init may not have exec'd its command yet, a killed one may not be gone.
fn wait_sleepers(pod: &str, n: usize) -> Vec<u32> {
    let deadline = Instant::now() + PATIENCE;
    loop {
        let now = sleepers(pod);
        if now.len() == n {
            return now;
        }
        assert!(
            Instant::now() < deadline,
            "{n} sleeps in {pod}, not {now:?}"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn folded_and_unfolded_pods_side_by_side(version: Version) {
    let Some(rig) = Rig::new(version, "side") else {
        return;
    };
    smol::block_on(async {
        let mut cri = rig.cri().await;
        let mut folded = Vec::new();
        let mut unfolded = Vec::new();
        for i in 0..PODS {
            folded.push(start_pod(&rig, &mut cri, &format!("f{i}"), Some("folded")).await);
            unfolded.push(start_pod(&rig, &mut cri, &format!("u{i}"), None).await);
        }
        for pod in folded.iter().chain(&unfolded) {
            for (_, id) in &pod.containers {
                wait_running(&rig, &mut cri, id).await;
            }
        }
        let kubelet = pod_cgroup(&PodResources {
            containers: containers().iter().map(|(_, r)| *r).collect(),
            ..Default::default()
        });
        // Kubelet's sums: 850m of requests, 1700m of limits, 112 MiB.
        assert_eq!(
            (kubelet.cpu_shares, kubelet.cpu_quota.v1_quota_us()),
            (870, 170_000)
        );
        assert_eq!(kubelet.memory.v1_limit_in_bytes(), 112 << 20);

        for pod in &folded {
            let path = rig.pod_cgroup(&pod.name);
            // One cgroup per hierarchy: the pod's, with no child.
            for (dir, n) in children(&path) {
                assert_eq!(n, Some(0), "{}\n{}", dir.display(), rig.diagnostics());
            }
            let cpu = v1_dir("cpu", &path);
            let memory = v1_dir("memory", &path);
            assert_eq!(read_u64(&cpu, "cpu.shares"), kubelet.cpu_shares);
            assert_eq!(read_i64(&cpu, "cpu.cfs_quota_us"), 170_000);
            assert_eq!(read_u64(&memory, "memory.limit_in_bytes"), 112 << 20);
            // The sandbox's two processes (the test's pause image is a shell looping on
            // `sleep 3600`) and the three containers' sleeps, all in the pod cgroup itself.
            let cmdlines: Vec<String> = procs(&path).iter().map(|p| cmdline(*p)).collect();
            assert_eq!(cmdlines.len(), 5, "{cmdlines:?}");
            assert_eq!(
                cmdlines.iter().filter(|c| c.contains("sleep 3600")).count(),
                2
            );
            let sleeps = wait_sleepers(&path, 3);
            for pid in &sleeps {
                assert!(procs(&path).contains(pid), "{pid} in {path}");
            }
        }
        for pod in &unfolded {
            let path = rig.pod_cgroup(&pod.name);
            // The sandbox's and one per container, below the pod's, as containerd made them.
            assert_eq!(
                std::fs::read_dir(v1_dir("memory", &path))
                    .unwrap()
                    .flatten()
                    .filter(|e| e.file_type().unwrap().is_dir())
                    .count(),
                4
            );
            assert_eq!(procs(&path), Vec::<u32>::new());
            for ((_, r), (_, id)) in containers().iter().zip(&pod.containers) {
                let own = v1_dir("memory", &format!("{path}/{id}"));
                let want = cgroupfold::math::container_cgroup(r);
                assert_eq!(
                    read_u64(&own, "memory.limit_in_bytes"),
                    want.memory.v1_limit_in_bytes()
                );
                assert_eq!(procs(&format!("{path}/{id}")).len(), 1);
            }
        }

        // `shimlessctl ps` (Admin/List): folded containers name their pod cgroup and what
        // folding gives up (the three memory limits, the three quotas and the shares split);
        // unfolded ones name nothing.
        let listed = rig.listed().await;
        for pod in &folded {
            let want = format!("/{}", rig.pod_cgroup(&pod.name));
            for id in pod.containers.iter().map(|(_, id)| id).chain([&pod.id]) {
                let t = listed.iter().find(|t| &t.id == id).expect("listed");
                assert_eq!(t.pod_cgroup, want);
                assert_eq!(t.fold_losses.len(), 7, "{:?}", t.fold_losses);
                // Rewritten: the pod's cgroup, no limits of its own.
                let text = std::fs::read(PathBuf::from(&t.bundle).join("config.json")).unwrap();
                let bundle: serde_json::Value = serde_json::from_slice(&text).unwrap();
                assert_eq!(bundle["linux"]["cgroupsPath"], want.as_str());
                assert!(
                    bundle["linux"]["resources"].get("memory").is_none(),
                    "{bundle}"
                );
                assert!(
                    t.fold_losses
                        .iter()
                        .any(|l| l.contains("cpu.shares split between 3")),
                    "{:?}",
                    t.fold_losses
                );
            }
        }
        for pod in &unfolded {
            for id in pod.containers.iter().map(|(_, id)| id).chain([&pod.id]) {
                let t = listed.iter().find(|t| &t.id == id).expect("listed");
                assert_eq!((t.pod_cgroup.as_str(), t.fold_losses.len()), ("", 0));
                // Its spec as containerd wrote it (the same document containerd keeps in its
                // metadata): its own cgroup, its own limits.
                let text = std::fs::read(PathBuf::from(&t.bundle).join("config.json")).unwrap();
                let bundle: serde_json::Value = serde_json::from_slice(&text).unwrap();
                let info = rig
                    .containerd
                    .ctr_ok(CRI_NAMESPACE, &["containers", "info", id])
                    .unwrap();
                let info: serde_json::Value = serde_json::from_str(&info).unwrap();
                assert_eq!(
                    bundle, info["Spec"],
                    "{id}'s config.json is containerd's spec"
                );
                let spec =
                    oci_spec::runtime::Spec::load(PathBuf::from(&t.bundle).join("config.json"))
                        .unwrap();
                let linux = spec.linux().as_ref().unwrap();
                assert_eq!(
                    linux.cgroups_path().as_ref().unwrap().display().to_string(),
                    format!("/{}/{id}", rig.pod_cgroup(&pod.name))
                );
            }
        }

        for pod in folded.iter().chain(&unfolded) {
            remove_pod(&mut cri, pod).await;
        }
        for pod in folded.iter().chain(&unfolded) {
            let path = rig.pod_cgroup(&pod.name);
            assert_eq!(
                procs(&path),
                Vec::<u32>::new(),
                "{path} empty after removal"
            );
        }
    });
}

fn one_folded_container_killed_paused_and_removed_leaves_its_siblings(version: Version) {
    let Some(rig) = Rig::new(version, "one") else {
        return;
    };
    smol::block_on(async {
        let mut cri = rig.cri().await;
        let pod = start_pod(&rig, &mut cri, "k0", Some("folded")).await;
        for (_, id) in &pod.containers {
            wait_running(&rig, &mut cri, id).await;
        }
        let path = rig.pod_cgroup(&pod.name);
        let memory = v1_dir("memory", &path);
        assert_eq!(read_u64(&memory, "memory.limit_in_bytes"), 112 << 20);
        let before = wait_sleepers(&path, 3);
        let mut task = rig.task().await;
        let [(_, web), (_, side), (_, log)] = &pod.containers[..] else {
            unreachable!()
        };

        // Pids of `web`: its own process only (`runc ps` would list the whole pod cgroup).
        let pids = task
            .pids(namespaced(CRI_NAMESPACE, PidsRequest { id: web.clone() }))
            .await
            .expect("Pids")
            .into_inner()
            .processes;
        assert_eq!(pids.len(), 1, "{pids:?}");
        assert!(before.contains(&pids[0].pid), "{pids:?} in {before:?}");

        // Update `web` to a 128 MiB limit: the pod's limit becomes kubelet's sum again
        // (128 + 32 + 16 MiB), not `web`'s own (what `runc update` would write).
        let resources = serde_json::json!({
            "cpu": {"shares": 256, "quota": 50000, "period": 100000},
            "memory": {"limit": 128i64 << 20},
        });
        task.update(namespaced(
            CRI_NAMESPACE,
            UpdateTaskRequest {
                id: web.clone(),
                resources: Some(prost_types::Any {
                    type_url: "types.containerd.io/opencontainers/runtime-spec/1/LinuxResources"
                        .into(),
                    value: serde_json::to_vec(&resources).unwrap(),
                }),
                annotations: Default::default(),
            },
        ))
        .await
        .expect("Update");
        assert_eq!(read_u64(&memory, "memory.limit_in_bytes"), 176 << 20);
        let limit = read_u64(&memory, "memory.limit_in_bytes");

        // Pause `web`: only its process stops; resume: it runs again.
        task.pause(namespaced(CRI_NAMESPACE, PauseRequest { id: web.clone() }))
            .await
            .expect("Pause");
        let stopped: Vec<u32> = before
            .iter()
            .copied()
            .filter(|p| proc_state(*p) == 'T')
            .collect();
        assert_eq!(stopped.len(), 1, "one of {before:?} stopped");
        task.resume(namespaced(CRI_NAMESPACE, ResumeRequest { id: web.clone() }))
            .await
            .expect("Resume");
        assert!(
            before.iter().all(|p| proc_state(*p) != 'T'),
            "all running again"
        );

        // Kill `side` with all: only its process goes; the pod keeps its values.
        task.kill(namespaced(
            CRI_NAMESPACE,
            KillRequest {
                id: side.clone(),
                exec_id: String::new(),
                signal: 9,
                all: true,
            },
        ))
        .await
        .expect("Kill all");
        let deadline = Instant::now() + PATIENCE;
        while state(&mut cri, side).await != ContainerState::ContainerExited as i32 {
            assert!(Instant::now() < deadline, "{side} never exited");
            async_io::Timer::after(Duration::from_millis(50)).await;
        }
        wait_sleepers(&path, 2);
        assert_eq!(
            state(&mut cri, web).await,
            ContainerState::ContainerRunning as i32
        );
        assert_eq!(
            state(&mut cri, log).await,
            ContainerState::ContainerRunning as i32
        );

        // Stop and remove `log`: `web` still runs, in its pod cgroup, with the pod's limit.
        cri.stop_container(StopContainerRequest {
            container_id: log.clone(),
            timeout: 2,
        })
        .await
        .expect("StopContainer");
        for id in [side, log] {
            cri.remove_container(RemoveContainerRequest {
                container_id: id.clone(),
            })
            .await
            .expect("RemoveContainer");
        }
        assert_eq!(
            state(&mut cri, web).await,
            ContainerState::ContainerRunning as i32
        );
        wait_sleepers(&path, 1);
        assert_eq!(read_u64(&memory, "memory.limit_in_bytes"), limit);
        assert_eq!(
            procs(&path).len(),
            3,
            "the sandbox's two processes and web's"
        );
        remove_pod(&mut cri, &pod).await;
    });
}

/// Two containers of 16 MiB each in a folded pod (so the pod's limit is 32 MiB): `hog` holds
/// 64 MiB in a shell variable and is OOM-killed; it alone is `OOMKilled`, its sibling runs on,
/// and when the sibling is then SIGKILLed by `StopContainer` it is not taken for OOM-killed.
fn an_oom_kill_in_a_folded_pod_is_reported_for_its_container_only(version: Version) {
    let Some(rig) = Rig::new(version, "oom") else {
        return;
    };
    smol::block_on(async {
        let mut cri = rig.cri().await;
        let config = rig.pod_config("o0", Some("folded"));
        let pod = cri
            .run_pod_sandbox(RunPodSandboxRequest {
                config: Some(config.clone()),
                runtime_handler: UNIFIED.into(),
            })
            .await
            .expect("RunPodSandbox")
            .into_inner()
            .pod_sandbox_id;
        let small = Resources {
            memory_limit: Some(Bytes::mib(16)),
            ..Default::default()
        };
        let mut ids = Vec::new();
        for name in ["calm", "hog"] {
            let mut c = container_config(name, &small);
            if name == "hog" {
                c.command = [
                    "sh",
                    "-c",
                    "sleep 1; x=$(dd if=/dev/zero bs=1048576 count=64 2>/dev/null | tr '\\0' a); \
                     echo survived",
                ]
                .iter()
                .map(|s| s.to_string())
                .collect();
            }
            let id = cri
                .create_container(CreateContainerRequest {
                    pod_sandbox_id: pod.clone(),
                    config: Some(c),
                    sandbox_config: Some(config.clone()),
                })
                .await
                .expect("CreateContainer")
                .into_inner()
                .container_id;
            cri.start_container(StartContainerRequest {
                container_id: id.clone(),
            })
            .await
            .expect("StartContainer");
            ids.push(id);
        }
        let path = rig.pod_cgroup("o0");
        assert_eq!(
            read_u64(&v1_dir("memory", &path), "memory.limit_in_bytes"),
            32 << 20
        );
        let (calm, hog) = (&ids[0], &ids[1]);
        let deadline = Instant::now() + PATIENCE;
        let status = loop {
            let s = cri
                .container_status(ContainerStatusRequest {
                    container_id: hog.clone(),
                    verbose: false,
                })
                .await
                .expect("ContainerStatus")
                .into_inner()
                .status
                .unwrap();
            if s.state == ContainerState::ContainerExited as i32 {
                break s;
            }
            assert!(Instant::now() < deadline, "the hog never exited");
            async_io::Timer::after(Duration::from_millis(50)).await;
        };
        assert_eq!(
            (status.reason.as_str(), status.exit_code),
            ("OOMKilled", 137),
            "{status:?}\n{}",
            rig.diagnostics()
        );
        assert_eq!(
            state(&mut cri, calm).await,
            ContainerState::ContainerRunning as i32
        );
        // `sleep` as its namespace's init ignores SIGTERM: StopContainer ends with SIGKILL.
        cri.stop_container(StopContainerRequest {
            container_id: calm.clone(),
            timeout: 1,
        })
        .await
        .expect("StopContainer");
        let calm_status = cri
            .container_status(ContainerStatusRequest {
                container_id: calm.clone(),
                verbose: false,
            })
            .await
            .expect("ContainerStatus")
            .into_inner()
            .status
            .unwrap();
        assert_eq!(calm_status.exit_code, 137, "{calm_status:?}");
        assert_ne!(calm_status.reason, "OOMKilled", "{calm_status:?}");
        cri.stop_pod_sandbox(StopPodSandboxRequest {
            pod_sandbox_id: pod.clone(),
        })
        .await
        .expect("StopPodSandbox");
        cri.remove_pod_sandbox(RemovePodSandboxRequest {
            pod_sandbox_id: pod.clone(),
        })
        .await
        .expect("RemovePodSandbox");
    });
}

/// A folded pod's decision is in the records: after `shimlessd` is killed (the front starts it
/// again), a new container of the pod still joins the pod cgroup, and the pod's values are
/// computed again over all four containers.
fn a_folded_pod_stays_folded_across_a_daemon_restart(version: Version) {
    let Some(rig) = Rig::new(version, "restart") else {
        return;
    };
    smol::block_on(async {
        let mut cri = rig.cri().await;
        let pod = start_pod(&rig, &mut cri, "r0", Some("folded")).await;
        for (_, id) in &pod.containers {
            wait_running(&rig, &mut cri, id).await;
        }
        let old = rig.shimless.processes("shimlessd");
        assert_eq!(old.len(), 1, "{old:?}");
        rustix::process::kill_process(
            rustix::process::Pid::from_raw(old[0] as i32).unwrap(),
            rustix::process::Signal::KILL,
        )
        .unwrap();
        let deadline = Instant::now() + PATIENCE;
        loop {
            let now = rig.shimless.processes("shimlessd");
            if !now.is_empty() && now != old {
                break;
            }
            assert!(Instant::now() < deadline, "shimlessd never came back");
            async_io::Timer::after(Duration::from_millis(50)).await;
        }
        let late = Resources {
            cpu_request: Some(MilliCpu(100)),
            cpu_limit: Some(MilliCpu(200)),
            memory_request: None,
            memory_limit: Some(Bytes::mib(16)),
        };
        let config = rig.pod_config("r0", Some("folded"));
        let id = cri
            .create_container(CreateContainerRequest {
                pod_sandbox_id: pod.id.clone(),
                config: Some(container_config("late", &late)),
                sandbox_config: Some(config),
            })
            .await
            .expect("CreateContainer after the restart")
            .into_inner()
            .container_id;
        cri.start_container(StartContainerRequest {
            container_id: id.clone(),
        })
        .await
        .unwrap_or_else(|e| {
            panic!(
                "StartContainer after the restart: {e}\n{}",
                rig.diagnostics()
            )
        });
        let path = rig.pod_cgroup("r0");
        for (dir, n) in children(&path) {
            assert_eq!(n, Some(0), "{}", dir.display());
        }
        wait_sleepers(&path, 4);
        let mut all: Vec<Resources> = containers().iter().map(|(_, r)| *r).collect();
        all.push(late);
        let kubelet = pod_cgroup(&PodResources {
            containers: all,
            ..Default::default()
        });
        assert_eq!(kubelet.memory.v1_limit_in_bytes(), 128 << 20);
        assert_eq!(
            read_u64(&v1_dir("memory", &path), "memory.limit_in_bytes"),
            128 << 20
        );
        assert_eq!(
            read_u64(&v1_dir("cpu", &path), "cpu.shares"),
            kubelet.cpu_shares
        );
        let listed = rig.listed().await;
        let t = listed.iter().find(|t| t.id == id).expect("listed");
        assert_eq!(t.pod_cgroup, format!("/{path}"));
        remove_pod(&mut cri, &pod).await;
    });
}

/// `fold = "when-lossless"` and no annotation: the first container joins the pod cgroup (a
/// pod of one loses nothing); the second, whose `cpu.shares` split with the first would be
/// lost, keeps the cgroup containerd gave it, below the pod's; the pod's values are kubelet's
/// over both, and what the joined container gives up by it is listed.
fn when_lossless_a_container_that_would_lose_a_limit_keeps_its_cgroup(version: Version) {
    let Some(rig) = Rig::with_config(version, "lossless", "fold = \"when-lossless\"") else {
        return;
    };
    smol::block_on(async {
        let mut cri = rig.cri().await;
        let config = rig.pod_config("l0", None);
        let pod = cri
            .run_pod_sandbox(RunPodSandboxRequest {
                config: Some(config.clone()),
                runtime_handler: UNIFIED.into(),
            })
            .await
            .expect("RunPodSandbox")
            .into_inner()
            .pod_sandbox_id;
        let mut ids = Vec::new();
        for (name, r) in &containers()[..2] {
            let id = cri
                .create_container(CreateContainerRequest {
                    pod_sandbox_id: pod.clone(),
                    config: Some(container_config(name, r)),
                    sandbox_config: Some(config.clone()),
                })
                .await
                .expect("CreateContainer")
                .into_inner()
                .container_id;
            cri.start_container(StartContainerRequest {
                container_id: id.clone(),
            })
            .await
            .expect("StartContainer");
            ids.push(id);
        }
        let path = rig.pod_cgroup("l0");
        let memory = v1_dir("memory", &path);
        let child_dirs: Vec<String> = std::fs::read_dir(&memory)
            .unwrap()
            .flatten()
            .filter(|e| e.file_type().unwrap().is_dir())
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .collect();
        assert_eq!(child_dirs, [ids[1].clone()], "only the second has its own");
        assert_eq!(procs(&format!("{path}/{}", ids[1])).len(), 1);
        wait_sleepers(&path, 2);
        assert_eq!(read_u64(&memory, "memory.limit_in_bytes"), 96 << 20);
        let listed = rig.listed().await;
        let web = listed.iter().find(|t| t.id == ids[0]).unwrap();
        let side = listed.iter().find(|t| t.id == ids[1]).unwrap();
        assert_eq!(web.pod_cgroup, format!("/{path}"));
        assert_eq!(side.pod_cgroup, "");
        assert!(
            web.fold_losses
                .iter()
                .any(|l| l.contains("memory limit 67108864")),
            "{:?}",
            web.fold_losses
        );
        cri.stop_pod_sandbox(StopPodSandboxRequest {
            pod_sandbox_id: pod.clone(),
        })
        .await
        .expect("StopPodSandbox");
        cri.remove_pod_sandbox(RemovePodSandboxRequest {
            pod_sandbox_id: pod.clone(),
        })
        .await
        .expect("RemovePodSandbox");
    });
}

fn cmdline(pid: u32) -> String {
    let raw = std::fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
    String::from_utf8_lossy(&raw).replace('\0', " ")
}

fn proc_state(pid: u32) -> char {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    stat.rsplit_once(')')
        .and_then(|(_, rest)| rest.trim_start().chars().next())
        .unwrap_or('?')
}

fn a_bad_fold_annotation_is_refused_at_run_pod_sandbox(version: Version) {
    let Some(rig) = Rig::new(version, "bad") else {
        return;
    };
    smol::block_on(async {
        let mut cri = rig.cri().await;
        let err = cri
            .run_pod_sandbox(RunPodSandboxRequest {
                config: Some(rig.pod_config("b0", Some("squashed"))),
                runtime_handler: UNIFIED.into(),
            })
            .await
            .expect_err("a bad annotation is refused");
        let msg = err.message();
        assert!(
            msg.contains("shimless.io/cgroup")
                && msg.contains("squashed")
                && msg.contains("\"folded\""),
            "{msg}"
        );
        assert_eq!(rig.containerd.tasks(CRI_NAMESPACE).unwrap().len(), 0);
    });
}

on_both!(
    folded_and_unfolded_pods_side_by_side,
    one_folded_container_killed_paused_and_removed_leaves_its_siblings,
    a_bad_fold_annotation_is_refused_at_run_pod_sandbox,
    an_oom_kill_in_a_folded_pod_is_reported_for_its_container_only,
    a_folded_pod_stays_folded_across_a_daemon_restart,
    when_lossless_a_container_that_would_lose_a_limit_keeps_its_cgroup,
);
