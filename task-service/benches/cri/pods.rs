//! What the CRI benchmarks share: the CRI client, a private containerd with CRI and shimless as
//! `unified` (passing the `shimless.io/*` pod annotations), host-network pods, percentiles and
//! the command line's `--containerd`.

use super::runtime::v1::runtime_service_client::RuntimeServiceClient;
use super::runtime::v1::*;
use super::shimless::Shimless;
use integration::containerd::{CRI_NAMESPACE, Containerd, ContainerdConfig, Runtime, Version};
use integration::image::Image;
use std::collections::HashMap;
use std::path::Path;
use std::time::{Duration, Instant};

pub type Cri = RuntimeServiceClient<task_service::grpc::Channel>;

pub const BUSYBOX: &str = "docker.io/shimless/busybox:test";
const PAUSE: &str = "registry.k8s.io/pause:3.9";

/// One host-network pod of one busybox container.
pub struct PodSpec<'a> {
    pub name: &'a str,
    /// `unified`, or `""` for CRI's default (the stock runc shim).
    pub handler: &'a str,
    pub command: Vec<String>,
    pub annotations: HashMap<String, String>,
    /// (container path, host path), read-write.
    pub mounts: Vec<(String, String)>,
}

impl PodSpec<'_> {
    /// A pod whose container sleeps.
    pub fn sleeping<'a>(name: &'a str, handler: &'a str) -> PodSpec<'a> {
        PodSpec {
            name,
            handler,
            command: vec!["sleep".into(), "1000000".into()],
            annotations: HashMap::new(),
            mounts: Vec::new(),
        }
    }
}

/// A CRI client of `containerd`.
pub async fn connect(containerd: &Containerd) -> Cri {
    RuntimeServiceClient::with_origin(
        task_service::grpc::connect(&containerd.socket())
            .await
            .unwrap(),
        "http://localhost".parse().unwrap(),
    )
}

/// RunPodSandbox, CreateContainer, StartContainer; the container's id and the time they took.
pub async fn start_pod(cri: &mut Cri, logs: &Path, pod: PodSpec<'_>) -> (String, Duration) {
    let name = pod.name;
    let log_dir = logs.join(name);
    std::fs::create_dir_all(&log_dir).unwrap();
    let config = PodSandboxConfig {
        metadata: Some(PodSandboxMetadata {
            name: name.into(),
            uid: format!("uid-{name}"),
            namespace: "bench".into(),
            attempt: 0,
        }),
        log_directory: log_dir.display().to_string(),
        annotations: pod.annotations,
        linux: Some(LinuxPodSandboxConfig {
            security_context: Some(LinuxSandboxSecurityContext {
                namespace_options: Some(NamespaceOption {
                    network: NamespaceMode::Node as i32,
                    ..Default::default()
                }),
                ..Default::default()
            }),
            ..Default::default()
        }),
        ..Default::default()
    };
    let container = ContainerConfig {
        metadata: Some(ContainerMetadata {
            name: name.into(),
            attempt: 0,
        }),
        image: Some(ImageSpec {
            image: BUSYBOX.into(),
            ..Default::default()
        }),
        command: pod.command,
        log_path: format!("{name}.log"),
        mounts: pod
            .mounts
            .into_iter()
            .map(|(container_path, host_path)| Mount {
                container_path,
                host_path,
                readonly: false,
            })
            .collect(),
        ..Default::default()
    };
    let t0 = Instant::now();
    let sandbox = cri
        .run_pod_sandbox(RunPodSandboxRequest {
            config: Some(config.clone()),
            runtime_handler: pod.handler.into(),
        })
        .await
        .unwrap_or_else(|e| panic!("RunPodSandbox {name}: {e}"))
        .into_inner()
        .pod_sandbox_id;
    let id = cri
        .create_container(CreateContainerRequest {
            pod_sandbox_id: sandbox,
            config: Some(container),
            sandbox_config: Some(config),
        })
        .await
        .unwrap_or_else(|e| panic!("CreateContainer {name}: {e}"))
        .into_inner()
        .container_id;
    cri.start_container(StartContainerRequest {
        container_id: id.clone(),
    })
    .await
    .unwrap_or_else(|e| panic!("StartContainer {name}: {e}"));
    (id, t0.elapsed())
}

/// A private containerd with CRI, the `unified` runtime (shimless, passed the `shimless.io/*`
/// pod annotations) beside the default runc shim, and busybox imported.
pub fn start_containerd(version: Version, shimless: &Shimless) -> Containerd {
    let containerd = Containerd::start(
        ContainerdConfig::new()
            .version(version)
            .cri(PAUSE)
            .runtime(
                Runtime::new("unified", "io.containerd.runc.v2")
                    .path(Shimless::bin_dir().join("containerd-shim-shimless-v2"))
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
        .unwrap();
    containerd.import(CRI_NAMESPACE, image.path()).unwrap();
    containerd.wait_cri_knows(&image).unwrap();
    containerd
}

/// The value at fraction `p` of sorted samples.
pub fn percentile(sorted: &[Duration], p: f64) -> Duration {
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    sorted[((sorted.len() as f64 - 1.0) * p).round() as usize]
}

pub fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

/// `--containerd 1.7|2.1` (or `--containerd=2.1`) among `args`; 1.7 without it.
pub fn containerd_version(args: &[String], bench: &str) -> Version {
    let value = args.iter().enumerate().find_map(|(i, a)| {
        a.strip_prefix("--containerd=")
            .map(str::to_string)
            .or_else(|| (a == "--containerd").then(|| args.get(i + 1).cloned().unwrap_or_default()))
    });
    match value.map(|v| v.parse::<Version>()) {
        None => Version::V1_7,
        Some(Ok(version)) => version,
        Some(Err(e)) => {
            eprintln!("{bench} bench: {e}");
            std::process::exit(2);
        }
    }
}

/// The 1, 5 and 15 minute load averages.
pub fn load_average() -> String {
    let load = std::fs::read_to_string("/proc/loadavg").unwrap_or_default();
    load.split_whitespace()
        .take(3)
        .collect::<Vec<_>>()
        .join(" ")
}
