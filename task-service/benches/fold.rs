//! Folded vs unfolded pods through CRI (not a timed test): N pods of three busybox containers
//! folded (`shimless.io/cgroup: folded`) and N unfolded, interleaved on one private containerd
//! (1.7, or 2.1) with the runtime handler `unified` (shimless). Prints, per layout, the cgroup
//! directories the pods made (every hierarchy this host mounts, and per pod and hierarchy), the
//! pod start latency (RunPodSandbox through the third StartContainer) p50/p99, and the time to
//! stop and remove all its pods; then the ratios.
//!
//! `cargo bench -p task-service --bench fold [-- N] [--containerd 2.1]` (as root; N defaults
//! to 100).

#[path = "cri/pods.rs"]
#[allow(dead_code)] // shared with the cri and probes benches
mod pods;
#[path = "../tests/common/shimless.rs"]
#[allow(dead_code)] // the tests' private shimless installation; the bench uses part of it
mod shimless;

/// Kubernetes' CRI, package `runtime.v1` (the subset in `proto/k8s/cri/runtime_v1.proto`).
mod runtime {
    pub mod v1 {
        #![allow(dead_code, clippy::all)]
        include!(concat!(env!("OUT_DIR"), "/runtime.v1.rs"));
    }
}

use integration::containerd::{CRI_NAMESPACE, Containerd, Version};
use pods::{BUSYBOX, start_containerd};
use runtime::v1::runtime_service_client::RuntimeServiceClient;
use runtime::v1::*;
use shimless::Shimless;
use std::path::Path;
use std::time::{Duration, Instant};

type Cri = RuntimeServiceClient<task_service::grpc::Channel>;

/// The bench's top cgroup (kubelet's would be `/kubepods`).
fn root() -> String {
    format!("shimless-fold-bench-{}", std::process::id())
}

fn namespaces() -> NamespaceOption {
    NamespaceOption {
        network: NamespaceMode::Node as i32,
        pid: NamespaceMode::Container as i32,
        ipc: NamespaceMode::Pod as i32,
        ..Default::default()
    }
}

/// Container `c` of a bench pod: `sleep`, 0.5 CPU, 64 MiB, its own namespaces.
fn container_config(c: &str) -> ContainerConfig {
    ContainerConfig {
        metadata: Some(ContainerMetadata {
            name: c.into(),
            attempt: 0,
        }),
        image: Some(ImageSpec {
            image: BUSYBOX.into(),
            ..Default::default()
        }),
        command: vec!["sleep".into(), "1000000".into()],
        log_path: format!("{c}.log"),
        linux: Some(LinuxContainerConfig {
            resources: Some(LinuxContainerResources {
                cpu_period: 100_000,
                cpu_quota: 50_000,
                cpu_shares: 256,
                memory_limit_in_bytes: 64 << 20,
                ..Default::default()
            }),
            security_context: Some(LinuxContainerSecurityContext {
                namespace_options: Some(namespaces()),
                ..Default::default()
            }),
        }),
        ..Default::default()
    }
}

/// A host-network pod `name` under `<root>/<layout>/pod<name>` (containerd leaves an unfolded
/// pod's own directory behind, as kubelet removes it), three containers (250m/500m
/// CPU and 64 MiB each): RunPodSandbox, CreateContainer and StartContainer ×3; its sandbox id
/// and the time they took.
async fn start_pod(
    cri: &mut Cri,
    logs: &Path,
    name: &str,
    folded: bool,
    layout: &str,
) -> (String, Duration) {
    let log_dir = logs.join(name);
    std::fs::create_dir_all(&log_dir).unwrap();
    let config = PodSandboxConfig {
        metadata: Some(PodSandboxMetadata {
            name: name.into(),
            uid: name.into(),
            namespace: "bench".into(),
            attempt: 0,
        }),
        log_directory: log_dir.display().to_string(),
        annotations: if folded {
            [("shimless.io/cgroup".to_string(), "folded".to_string())].into()
        } else {
            Default::default()
        },
        linux: Some(LinuxPodSandboxConfig {
            cgroup_parent: format!("/{}/{layout}/pod{name}", root()),
            security_context: Some(LinuxSandboxSecurityContext {
                namespace_options: Some(namespaces()),
                ..Default::default()
            }),
            ..Default::default()
        }),
        ..Default::default()
    };
    let t0 = Instant::now();
    let pod = cri
        .run_pod_sandbox(RunPodSandboxRequest {
            config: Some(config.clone()),
            runtime_handler: "unified".into(),
        })
        .await
        .unwrap_or_else(|e| panic!("RunPodSandbox {name}: {e}"))
        .into_inner()
        .pod_sandbox_id;
    for c in ["a", "b", "c"] {
        let container = container_config(c);
        let id = cri
            .create_container(CreateContainerRequest {
                pod_sandbox_id: pod.clone(),
                config: Some(container),
                sandbox_config: Some(config.clone()),
            })
            .await
            .unwrap_or_else(|e| panic!("CreateContainer {name}/{c}: {e}"))
            .into_inner()
            .container_id;
        cri.start_container(StartContainerRequest { container_id: id })
            .await
            .unwrap_or_else(|e| panic!("StartContainer {name}/{c}: {e}"));
    }
    (pod, t0.elapsed())
}

/// StopPodSandbox and RemovePodSandbox of every pod; the time it took.
async fn remove_pods(cri: &mut Cri, pods: &[String]) -> Duration {
    let t0 = Instant::now();
    for pod in pods {
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
    }
    t0.elapsed()
}

/// Directories below `dir` (itself not counted).
fn count_dirs(dir: &Path) -> usize {
    std::fs::read_dir(dir).map_or(0, |entries| {
        entries
            .flatten()
            .filter(|e| e.file_type().is_ok_and(|t| t.is_dir()))
            .map(|e| 1 + count_dirs(&e.path()))
            .sum()
    })
}

/// The cgroup directories below `<root>/<layout>` in every hierarchy, and how many hierarchies.
fn cgroups(layout: &str) -> (usize, usize) {
    let cg = cgroupfold::fs::Cgroups::detect().expect("cgroups");
    let dirs = cg.dirs(&format!("{}/{layout}", root())).unwrap();
    (dirs.iter().map(|d| count_dirs(d)).sum(), dirs.len())
}

fn remove_tree(dir: &Path) {
    if let Ok(entries) = std::fs::read_dir(dir) {
        for e in entries.flatten() {
            if e.file_type().is_ok_and(|t| t.is_dir()) {
                remove_tree(&e.path());
            }
        }
    }
    let _ = std::fs::remove_dir(dir);
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    sorted[((sorted.len() as f64 - 1.0) * p).round() as usize]
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

fn containerd_version(args: &[String]) -> Version {
    let value = args.iter().enumerate().find_map(|(i, a)| {
        a.strip_prefix("--containerd=")
            .map(str::to_string)
            .or_else(|| (a == "--containerd").then(|| args.get(i + 1).cloned().unwrap_or_default()))
    });
    match value.map(|v| v.parse::<Version>()) {
        None => Version::V1_7,
        Some(Ok(version)) => version,
        Some(Err(e)) => {
            eprintln!("fold bench: {e}");
            std::process::exit(2);
        }
    }
}

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let n: usize = args.iter().find_map(|a| a.parse().ok()).unwrap_or(100);
    let version = containerd_version(&args);
    let mut needs = version.needs().to_vec();
    needs.extend([integration::Need::Btf, integration::Need::Bpffs]);
    if integration::require(&needs).is_none() {
        eprintln!("fold bench: needs root, {version} and runc; skipped");
        return;
    }
    rustix::process::set_child_subreaper(rustix::process::Pid::from_raw(1)).unwrap();
    let shimless = Shimless::new("").cleans(CRI_NAMESPACE);
    let containerd = start_containerd(version, &shimless);
    let logs = tempfile::tempdir().unwrap();
    let cores = std::thread::available_parallelism().map_or(0, |n| n.get());
    println!(
        "{version}: {n} pods × 3 containers per layout, interleaved; {cores} cores; load average before: {}",
        load_average()
    );
    let mut runs = smol::block_on(run_layouts(&containerd, logs.path(), n));
    runs[0].start.sort();
    runs[1].start.sort();
    print_table(&runs, n);
    println!("load average after: {}", load_average());
    drop(containerd);
    drop(shimless);
    if let Ok(cg) = cgroupfold::fs::Cgroups::detect() {
        for dir in cg.dirs(&root()).unwrap_or_default() {
            remove_tree(&dir);
        }
    }
}

/// What one layout cost.
struct LayoutRun {
    name: &'static str,
    /// Each pod's start (RunPodSandbox and its three containers).
    start: Vec<Duration>,
    /// The cgroup directories of its pods, and in how many hierarchies.
    dirs: (usize, usize),
    /// Removing all its pods.
    removal: Duration,
}

/// `n` pods of each layout, alternating, after one untimed pod of each; then the cgroups
/// counted and every pod removed, layout by layout. Folded first.
async fn run_layouts(containerd: &Containerd, logs: &Path, n: usize) -> [LayoutRun; 2] {
    let mut cri = RuntimeServiceClient::with_origin(
        task_service::grpc::connect(&containerd.socket())
            .await
            .unwrap(),
        "http://localhost".parse().unwrap(),
    );
    // One pod of each first, untimed (the first starts the front and the daemon).
    let warm = [
        start_pod(&mut cri, logs, "warm-f", true, "warm").await.0,
        start_pod(&mut cri, logs, "warm-u", false, "warm").await.0,
    ];
    remove_pods(&mut cri, &warm).await;
    let (mut folded, mut unfolded) = (Vec::new(), Vec::new());
    let (mut folded_ids, mut unfolded_ids) = (Vec::new(), Vec::new());
    for i in 0..n {
        let (id, t) = start_pod(&mut cri, logs, &format!("f{i}"), true, "folded").await;
        folded.push(t);
        folded_ids.push(id);
        let (id, t) = start_pod(&mut cri, logs, &format!("u{i}"), false, "unfolded").await;
        unfolded.push(t);
        unfolded_ids.push(id);
    }
    let dirs = (cgroups("folded"), cgroups("unfolded"));
    [
        LayoutRun {
            name: "folded",
            start: folded,
            dirs: dirs.0,
            removal: remove_pods(&mut cri, &folded_ids).await,
        },
        LayoutRun {
            name: "unfolded",
            start: unfolded,
            dirs: dirs.1,
            removal: remove_pods(&mut cri, &unfolded_ids).await,
        },
    ]
}

/// The table of both layouts (start times sorted), and folded / unfolded ratios.
fn print_table(runs: &[LayoutRun; 2], n: usize) {
    let hierarchies = runs[0].dirs.1;
    // Each layout's parent directory (`<root>/<layout>`) is not counted; the pods' are.
    let per = |dirs: usize| dirs as f64 / (n * hierarchies.max(1)) as f64;
    println!(
        "\n| layout | pods | cgroup dirs ({hierarchies} hierarchies) | per pod and hierarchy | start p50 | start p99 | remove all |"
    );
    println!("|---|---:|---:|---:|---:|---:|---:|");
    for run in runs {
        let dirs = run.dirs.0;
        println!(
            "| {} | {n} | {dirs} | {:.1} | {:.0} ms | {:.0} ms | {:.0} ms |",
            run.name,
            per(dirs),
            ms(percentile(&run.start, 0.5)),
            ms(percentile(&run.start, 0.99)),
            ms(run.removal)
        );
    }
    let [f, u] = runs;
    println!(
        "\nfolded / unfolded: cgroups {:.2}, start p50 {:.2}, p99 {:.2}, removal {:.2}",
        f.dirs.0 as f64 / u.dirs.0.max(1) as f64,
        percentile(&f.start, 0.5).as_secs_f64() / percentile(&u.start, 0.5).as_secs_f64(),
        percentile(&f.start, 0.99).as_secs_f64() / percentile(&u.start, 0.99).as_secs_f64(),
        f.removal.as_secs_f64() / u.removal.as_secs_f64()
    );
}

/// The 1, 5 and 15 minute load averages.
fn load_average() -> String {
    let load = std::fs::read_to_string("/proc/loadavg").unwrap_or_default();
    load.split_whitespace()
        .take(3)
        .collect::<Vec<_>>()
        .join(" ")
}
