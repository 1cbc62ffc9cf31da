//! Pods through CRI: connect, start, inspect and remove.

use super::*;

pub(crate) async fn connect() -> Result<Cri, String> {
    let deadline = Instant::now() + PATIENCE;
    loop {
        match task_service::grpc::connect(SOCKET).await {
            Ok(channel) => {
                let mut cri =
                    RuntimeServiceClient::with_origin(channel, "http://localhost".parse().unwrap());
                match cri.version(VersionRequest::default()).await {
                    Ok(_) => return Ok(cri),
                    Err(e) if Instant::now() > deadline => return Err(e.to_string()),
                    Err(_) => {}
                }
            }
            Err(e) if Instant::now() > deadline => return Err(format!("{SOCKET}: {e}")),
            Err(_) => {}
        }
        async_io::Timer::after(Duration::from_millis(200)).await;
    }
}

/// A pod as kubelet makes it, with one container.
#[derive(Clone)]
pub(crate) struct Pod {
    pub(crate) name: String,
    pub(crate) uid: String,
    pub(crate) id: String,
    pub(crate) container: String,
}

impl Pod {
    pub(crate) fn log(&self) -> PathBuf {
        Path::new(LOGS).join(&self.name).join("c.log")
    }
}

/// What kubelet with the systemd cgroup driver sends for a host-network best-effort pod.
pub(crate) fn pod_config(name: &str, uid: &str) -> PodSandboxConfig {
    let log_dir = Path::new(LOGS).join(name);
    let _ = std::fs::create_dir_all(&log_dir);
    PodSandboxConfig {
        metadata: Some(PodSandboxMetadata {
            name: name.into(),
            uid: uid.into(),
            namespace: "default".into(),
            attempt: 0,
        }),
        log_directory: log_dir.display().to_string(),
        linux: Some(LinuxPodSandboxConfig {
            cgroup_parent: format!("kubepods-besteffort-pod{}.slice", uid.replace('-', "_")),
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

/// RunPodSandbox, CreateContainer and StartContainer of a busybox container running `cmd`.
pub(crate) async fn start_pod(
    cri: &mut Cri,
    handler: &str,
    name: &str,
    cmd: &str,
) -> Result<Pod, String> {
    start_pod_with(cri, handler, name, cmd, None).await
}

/// [`start_pod`] with the container's resources.
pub(crate) async fn start_pod_with(
    cri: &mut Cri,
    handler: &str,
    name: &str,
    cmd: &str,
    resources: Option<LinuxContainerResources>,
) -> Result<Pod, String> {
    let uid = format!("uid-{name}-{}", std::process::id());
    let config = pod_config(name, &uid);
    let id = cri
        .run_pod_sandbox(RunPodSandboxRequest {
            config: Some(config.clone()),
            runtime_handler: handler.into(),
        })
        .await
        .map_err(|e| format!("RunPodSandbox {name}: {e}"))?
        .into_inner()
        .pod_sandbox_id;
    let container = cri
        .create_container(CreateContainerRequest {
            pod_sandbox_id: id.clone(),
            config: Some(ContainerConfig {
                metadata: Some(ContainerMetadata {
                    name: "c".into(),
                    attempt: 0,
                }),
                image: Some(ImageSpec {
                    image: BUSYBOX.into(),
                    ..Default::default()
                }),
                command: vec!["sh".into(), "-c".into(), cmd.into()],
                log_path: "c.log".into(),
                linux: Some(LinuxContainerConfig {
                    resources,
                    ..Default::default()
                }),
                ..Default::default()
            }),
            sandbox_config: Some(config),
        })
        .await
        .map_err(|e| format!("CreateContainer in {name}: {e}"))?
        .into_inner()
        .container_id;
    cri.start_container(StartContainerRequest {
        container_id: container.clone(),
    })
    .await
    .map_err(|e| format!("StartContainer in {name}: {e}"))?;
    Ok(Pod {
        name: name.into(),
        uid,
        id,
        container,
    })
}

/// StopContainer, RemoveContainer, StopPodSandbox, RemovePodSandbox.
pub(crate) async fn remove_pod(cri: &mut Cri, pod: &Pod) -> Outcome {
    let err = |what: &str| {
        let what = what.to_owned();
        move |e: tonic::Status| format!("{what} {}: {e}", pod.name)
    };
    cri.stop_container(StopContainerRequest {
        container_id: pod.container.clone(),
        timeout: 10,
    })
    .await
    .map_err(err("StopContainer"))?;
    cri.remove_container(RemoveContainerRequest {
        container_id: pod.container.clone(),
    })
    .await
    .map_err(err("RemoveContainer"))?;
    cri.stop_pod_sandbox(StopPodSandboxRequest {
        pod_sandbox_id: pod.id.clone(),
    })
    .await
    .map_err(err("StopPodSandbox"))?;
    cri.remove_pod_sandbox(RemovePodSandboxRequest {
        pod_sandbox_id: pod.id.clone(),
    })
    .await
    .map_err(err("RemovePodSandbox"))?;
    Ok(())
}

/// ContainerStatus, and the container's init PID from its verbose info.
pub(crate) async fn status(
    cri: &mut Cri,
    id: &str,
) -> Result<(ContainerStatus, Option<u32>), String> {
    let reply = cri
        .container_status(ContainerStatusRequest {
            container_id: id.into(),
            verbose: true,
        })
        .await
        .map_err(|e| format!("ContainerStatus {id}: {e}"))?
        .into_inner();
    let pid = reply
        .info
        .get("info")
        .and_then(|j| serde_json::from_str::<serde_json::Value>(j).ok())
        .and_then(|v| v.get("pid")?.as_u64())
        .and_then(|p| u32::try_from(p).ok())
        .filter(|p| *p > 0);
    Ok((reply.status.ok_or("no status in the reply")?, pid))
}

/// Polls ContainerStatus until the container is in `state`.
pub(crate) async fn wait_state(
    cri: &mut Cri,
    id: &str,
    state: ContainerState,
) -> Result<ContainerStatus, String> {
    let deadline = Instant::now() + PATIENCE;
    loop {
        let (s, _) = status(cri, id).await?;
        if s.state == state as i32 {
            return Ok(s);
        }
        ensure(Instant::now() < deadline, || {
            format!("{id} never got to {state:?}: {s:?}")
        })?;
        async_io::Timer::after(Duration::from_millis(200)).await;
    }
}
