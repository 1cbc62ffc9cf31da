//! The checks `scripts/node-vm` runs inside its node VM: Debian trixie, systemd as PID 1, pure
//! cgroup v2, and containerd.service with the seed's config (`SystemdCgroup = true`,
//! `runtime_path = /usr/local/bin/containerd-shim-shimless-v2`). This program plays kubelet
//! over CRI (`runtime.v1` on `/run/containerd/containerd.sock`) against that containerd, and
//! prints one line per check, `ok <name>` or `FAIL <name>: why`, and `info ...` lines with what
//! it measured. It exits non-zero when a check failed.
//!
//! It is made for that VM (it restarts containerd, kills `shimlessd`, leaves pods' systemd units
//! to be counted); on another machine it refuses to start.
//!
//! ```text
//! # in the node VM, as root (scripts/node-vm does it through a systemd unit):
//! /mnt/shimless/node-vm-checks
//! ```

use integration::image::Image;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

/// Kubernetes' CRI, package `runtime.v1` (the subset in `proto/k8s/cri/runtime_v1.proto`).
mod runtime {
    pub mod v1 {
        #![allow(dead_code, missing_docs, clippy::all)]
        include!(concat!(env!("OUT_DIR"), "/runtime.v1.rs"));
    }
}

use runtime::v1::runtime_service_client::RuntimeServiceClient;
use runtime::v1::*;

type Cri = RuntimeServiceClient<task_service::grpc::Channel>;

const SOCKET: &str = "/run/containerd/containerd.sock";
const BUSYBOX: &str = "docker.io/shimless/busybox:test";
/// The sandbox image the VM's containerd config names.
const PAUSE: &str = "registry.k8s.io/pause:3.9";
/// The seed's handler: shimless.
const UNIFIED: &str = "unified";
/// CRI's default handler: the stock runc shim.
const STOCK: &str = "";
/// Where pods' logs go.
const LOGS: &str = "/var/log/node-vm";
/// How long a state change may take under TCG before a check gives up (a bound, not a speed claim).
const PATIENCE: Duration = Duration::from_secs(180);

type Outcome = Result<(), String>;

fn main() {
    let hostname = std::fs::read_to_string("/etc/hostname").unwrap_or_default();
    if hostname.trim() != "node-vm" {
        eprintln!("node-vm: this program runs inside scripts/node-vm's VM only (hostname node-vm)");
        std::process::exit(2);
    }
    let failed = smol::block_on(run());
    std::process::exit(i32::from(failed > 0));
}

/// Every check in order; returns how many failed.
async fn run() -> usize {
    let mut report = Report::default();
    report.check("systemd_is_pid1", systemd_is_pid1());
    report.check("pure_cgroup_v2", pure_cgroup_v2());
    report.check("containerd_memlock_unlimited", containerd_memlock());
    if let Err(e) = import_images() {
        report.check("images_imported", Err(e));
        return report.failed;
    }
    report.check("images_imported", Ok(()));
    let mut cri = match connect().await {
        Ok(c) => c,
        Err(e) => {
            report.check("cri_connects", Err(e));
            return report.failed;
        }
    };
    single_pod(&mut report, &mut cri).await;
    report.check("oom_killed_from_memory_events", oom_killed(&mut cri).await);
    let pods = ten_pods(&mut report, &mut cri).await;
    // containerd's restart first: after `kill -9 shimlessd` containerd has been seen to delete
    // some tasks as if their shim died (see integration/README.md), which would blur it.
    let mut cri = restart_containerd(&mut report, cri, &pods).await;
    kill_shimlessd(&mut report, &mut cri, &pods).await;
    for pod in &pods {
        let _ = remove_pod(&mut cri, pod).await;
    }
    report.check("pods_leave_no_units", no_pod_units());
    report.failed
}

/// Prints each check's line as it completes.
#[derive(Default)]
struct Report {
    failed: usize,
}

impl Report {
    fn check(&mut self, name: &str, outcome: Outcome) {
        match outcome {
            Ok(()) => println!("ok {name}"),
            Err(why) => {
                self.failed += 1;
                println!("FAIL {name}: {}", why.replace('\n', " | "));
                if self.failed == 1 {
                    diagnostics();
                }
            }
        }
    }
}

/// Set once the stock pods are gone (diagnostics say whether a failure came before).
static STOCK_DONE: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);

/// What the node looked like, after a failure: processes with their cgroups, the daemon's and
/// the front's logs, containerd's journal.
fn diagnostics() {
    for script in [
        "ps -eo pid,ppid,stat,etimes,cgroup:100,args",
        "tail -n 60 /var/log/shimless/shimlessd.log",
        "tail -n 20 /var/log/shimless/front.log",
        "journalctl -q -u containerd --no-pager -n 40",
        "systemctl list-units --no-legend --plain 'cri-containerd-*'",
        "journalctl -q --no-pager -o short-monotonic -n 80 _PID=1",
        "journalctl -q --no-pager -o short-monotonic -k -n 30",
    ] {
        println!("| $ {script}");
        for line in sh(script).unwrap_or_else(|e| e).lines() {
            println!("| {line}");
        }
    }
}

fn info(what: impl std::fmt::Display) {
    println!("info {what}");
}

fn ensure(cond: bool, why: impl FnOnce() -> String) -> Outcome {
    if cond { Ok(()) } else { Err(why()) }
}

/// Runs `sh -c script`; its stdout, or why it failed.
fn sh(script: &str) -> Result<String, String> {
    let out = Command::new("sh")
        .args(["-c", script])
        .output()
        .map_err(|e| format!("{script}: {e}"))?;
    if out.status.success() {
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    } else {
        Err(format!(
            "{script}: {} {}",
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        ))
    }
}

fn systemd_is_pid1() -> Outcome {
    let comm = std::fs::read_to_string("/proc/1/comm").map_err(|e| e.to_string())?;
    ensure(comm.trim() == "systemd", || format!("PID 1 is {comm:?}"))?;
    let state = sh("systemctl is-active containerd.service").unwrap_or_else(|e| e);
    ensure(state.trim() == "active", || {
        format!("containerd.service: {state}")
    })?;
    let reached = sh("systemctl show -P ActiveEnterTimestampMonotonic multi-user.target")?;
    if let Ok(us) = reached.trim().parse::<u64>() {
        info(format!(
            "multi-user.target reached {:.1} s after the kernel started",
            us as f64 / 1e6
        ));
    }
    Ok(())
}

fn pure_cgroup_v2() -> Outcome {
    let mounts = std::fs::read_to_string("/proc/mounts").map_err(|e| e.to_string())?;
    let cgroup: Vec<&str> = mounts
        .lines()
        .filter(|l| {
            l.split_whitespace()
                .nth(2)
                .is_some_and(|t| t.starts_with("cgroup"))
        })
        .collect();
    ensure(
        cgroup.len() == 1 && cgroup[0].starts_with("cgroup2 /sys/fs/cgroup cgroup2"),
        || format!("cgroup mounts: {cgroup:?}"),
    )
}

fn containerd_memlock() -> Outcome {
    let pid = sh("systemctl show -P MainPID containerd.service")?;
    let limits = std::fs::read_to_string(format!("/proc/{}/limits", pid.trim()))
        .map_err(|e| e.to_string())?;
    let line = limits
        .lines()
        .find(|l| l.starts_with("Max locked memory"))
        .unwrap_or_default();
    ensure(line.split_whitespace().nth(3) == Some("unlimited"), || {
        format!("containerd's {line:?}")
    })
}

/// Writes the busybox and pause images and imports them into CRI's namespace, waiting until CRI
/// has taken them in (no registry: the VM has loopback only).
fn import_images() -> Outcome {
    let dir = Path::new("/var/tmp/node-vm-images");
    std::fs::create_dir_all(dir).map_err(|e| e.to_string())?;
    for image in [Image::busybox(BUSYBOX), Image::pause(PAUSE)] {
        let tar = dir.join(format!("{}.tar", image.name().replace(['/', ':'], "_")));
        let image = image.write_tar(&tar).map_err(|e| e.to_string())?;
        sh(&format!("ctr -n k8s.io images import {}", tar.display()))?;
        let deadline = Instant::now() + PATIENCE;
        while !sh("ctr -n k8s.io images ls -q")?
            .lines()
            .any(|r| r == image.config_digest())
        {
            ensure(Instant::now() < deadline, || {
                format!("CRI never took {} in", image.name())
            })?;
            std::thread::sleep(Duration::from_millis(100));
        }
    }
    Ok(())
}

async fn connect() -> Result<Cri, String> {
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
struct Pod {
    name: String,
    uid: String,
    id: String,
    container: String,
}

impl Pod {
    fn log(&self) -> PathBuf {
        Path::new(LOGS).join(&self.name).join("c.log")
    }
}

/// What kubelet with the systemd cgroup driver sends for a host-network best-effort pod.
fn pod_config(name: &str, uid: &str) -> PodSandboxConfig {
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
async fn start_pod(cri: &mut Cri, handler: &str, name: &str, cmd: &str) -> Result<Pod, String> {
    start_pod_with(cri, handler, name, cmd, None).await
}

/// [`start_pod`] with the container's resources.
async fn start_pod_with(
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
async fn remove_pod(cri: &mut Cri, pod: &Pod) -> Outcome {
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
async fn status(cri: &mut Cri, id: &str) -> Result<(ContainerStatus, Option<u32>), String> {
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
async fn wait_state(
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

/// The cgroup (v2) path of `pid`.
fn cgroup_of(pid: u32) -> String {
    std::fs::read_to_string(format!("/proc/{pid}/cgroup"))
        .unwrap_or_default()
        .lines()
        .find_map(|l| l.strip_prefix("0::"))
        .unwrap_or_default()
        .to_owned()
}

/// The systemd scopes and slices loaded now.
fn units() -> Result<Vec<String>, String> {
    Ok(
        sh("systemctl list-units --type=scope,slice --all --plain --no-legend")?
            .lines()
            .filter_map(|l| l.split_whitespace().next().map(str::to_owned))
            .collect(),
    )
}

/// The PIDs of processes whose executable's file name satisfies `pred`.
fn processes(pred: impl Fn(&str) -> bool) -> Vec<u32> {
    let Ok(dir) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    dir.flatten()
        .filter_map(|e| e.file_name().to_str()?.parse::<u32>().ok())
        .filter(|pid| {
            std::fs::read_link(format!("/proc/{pid}/exe")).is_ok_and(|exe| {
                exe.file_name()
                    .and_then(|n| n.to_str())
                    .is_some_and(|n| pred(n.trim_end_matches(" (deleted)")))
            })
        })
        .collect()
}

/// shimless's processes and every shim: what a pod could add.
fn shim_like() -> Vec<u32> {
    processes(|n| n.starts_with("containerd-shim") || n == "shimlessd" || n == "shimless-front")
}

/// One shimless pod end to end: running in its systemd scope, exec, logs, stop, remove.
async fn single_pod(report: &mut Report, cri: &mut Cri) {
    let pod = match start_pod(cri, UNIFIED, "single", "echo hello; exec sleep 3600").await {
        Ok(p) => p,
        Err(e) => {
            report.check("pod_runs_in_systemd_scope", Err(e));
            return;
        }
    };
    report.check("pod_runs_in_systemd_scope", pod_in_scope(cri, &pod).await);
    report.check("exec", exec(cri, &pod).await);
    report.check("logs", logs(&pod).await);
    report.check("stop_and_remove", stop_and_remove(cri, &pod).await);
}

async fn pod_in_scope(cri: &mut Cri, pod: &Pod) -> Outcome {
    wait_state(cri, &pod.container, ContainerState::ContainerRunning).await?;
    let (_, pid) = status(cri, &pod.container).await?;
    let pid = pid.ok_or("no pid in ContainerStatus's verbose info")?;
    let cgroup = cgroup_of(pid);
    info(format!("a shimless container's cgroup: {cgroup}"));
    let slice = format!("kubepods-besteffort-pod{}.slice", pod.uid.replace('-', "_"));
    let scope = format!("cri-containerd-{}.scope", pod.container);
    ensure(
        cgroup.contains(&format!(
            "/kubepods.slice/kubepods-besteffort.slice/{slice}/{scope}"
        )),
        || format!("container {pid} is in {cgroup:?}, not in {slice}/{scope}"),
    )?;
    let state = sh(&format!("systemctl is-active {scope}")).unwrap_or_else(|e| e);
    ensure(state.trim() == "active", || format!("{scope}: {state}"))
}

async fn exec(cri: &mut Cri, pod: &Pod) -> Outcome {
    let reply = cri
        .exec_sync(ExecSyncRequest {
            container_id: pod.container.clone(),
            cmd: ["sh", "-c", "echo out; echo err >&2; exit 3"]
                .map(String::from)
                .to_vec(),
            timeout: 60,
        })
        .await
        .map_err(|e| format!("ExecSync: {e}"))?
        .into_inner();
    ensure(
        (
            reply.exit_code,
            reply.stdout.as_slice(),
            reply.stderr.as_slice(),
        ) == (3, b"out\n", b"err\n"),
        || format!("ExecSync gave {reply:?}"),
    )
}

async fn logs(pod: &Pod) -> Outcome {
    let deadline = Instant::now() + PATIENCE;
    loop {
        let text = std::fs::read_to_string(pod.log()).unwrap_or_default();
        // `<RFC 3339 time> stdout F hello`
        if text.lines().any(|l| {
            let f: Vec<&str> = l.splitn(4, ' ').collect();
            f.len() == 4 && f[0].contains('T') && f[1] == "stdout" && f[2] == "F" && f[3] == "hello"
        }) {
            return Ok(());
        }
        ensure(Instant::now() < deadline, || {
            format!(
                "no `stdout F hello` line in {}: {text:?}",
                pod.log().display()
            )
        })?;
        async_io::Timer::after(Duration::from_millis(200)).await;
    }
}

async fn stop_and_remove(cri: &mut Cri, pod: &Pod) -> Outcome {
    cri.stop_container(StopContainerRequest {
        container_id: pod.container.clone(),
        timeout: 10,
    })
    .await
    .map_err(|e| format!("StopContainer: {e}"))?;
    let (s, _) = status(cri, &pod.container).await?;
    ensure(
        s.state == ContainerState::ContainerExited as i32 && s.exit_code == 143,
        || format!("after StopContainer (SIGTERM to sleep): {s:?}"),
    )?;
    remove_pod(cri, pod).await?;
    let left: Vec<String> = units()?
        .into_iter()
        .filter(|u| u.contains(&pod.container) || u.contains(&pod.id))
        .collect();
    ensure(left.is_empty(), || {
        format!("units left after removal: {left:?}")
    })
}

/// A container over its 16 MiB memory limit is reported `OOMKilled` with 137 (shimless reads
/// the kill from the scope's `memory.events` on cgroup v2).
async fn oom_killed(cri: &mut Cri) -> Outcome {
    let limit = LinuxContainerResources {
        memory_limit_in_bytes: 16 << 20,
        memory_swap_limit_in_bytes: 16 << 20,
        ..Default::default()
    };
    let fill = "echo filling; x=$(dd if=/dev/zero bs=1048576 count=64 2>/dev/null | tr '\\0' a); echo survived";
    let pod = start_pod_with(cri, UNIFIED, "oom", fill, Some(limit)).await?;
    let s = wait_state(cri, &pod.container, ContainerState::ContainerExited).await?;
    let outcome = ensure(
        (s.reason.as_str(), s.exit_code) == ("OOMKilled", 137),
        || format!("{s:?}"),
    );
    remove_pod(cri, &pod).await?;
    outcome
}

/// Ten shimless pods: no shim process added from the first to the tenth; systemd units per pod
/// compared with the stock runc shim's.
async fn ten_pods(report: &mut Report, cri: &mut Cri) -> Vec<Pod> {
    let units_before = units().unwrap_or_default().len();
    let mut pods = Vec::new();
    let mut after_first = Vec::new();
    let mut failure = None;
    for i in 0..10 {
        match start_pod(cri, UNIFIED, &format!("unified-{i}"), "exec sleep 3600").await {
            Ok(p) => pods.push(p),
            Err(e) => {
                failure = Some(e);
                break;
            }
        }
        if i == 0 {
            after_first = shim_like();
        }
    }
    let outcome = match failure {
        Some(e) => Err(e),
        None => ten_pods_outcome(cri, &pods, &after_first).await,
    };
    report.check("ten_pods_add_no_shim_process", outcome);
    let shimless_units = units()
        .unwrap_or_default()
        .len()
        .saturating_sub(units_before);
    report.check(
        "units_per_pod_as_the_stock_shim",
        stock_units(cri, shimless_units, pods.len()).await,
    );
    pods
}

async fn ten_pods_outcome(cri: &mut Cri, pods: &[Pod], after_first: &[u32]) -> Outcome {
    for pod in pods {
        wait_state(cri, &pod.container, ContainerState::ContainerRunning).await?;
    }
    pids_of(cri, pods).await?;
    let after_tenth = shim_like();
    info(format!(
        "shim-like processes after the 1st shimless pod: {}, after the 10th: {}",
        after_first.len(),
        after_tenth.len()
    ));
    for pid in &after_tenth {
        info(format!(
            "{} runs in {}",
            std::fs::read_to_string(format!("/proc/{pid}/comm"))
                .unwrap_or_default()
                .trim(),
            cgroup_of(*pid)
        ));
    }
    ensure(after_first.len() == after_tenth.len(), || {
        format!("shim processes went from {after_first:?} to {after_tenth:?}")
    })
}

/// Starts 3 stock pods and compares the systemd units they add per pod with shimless's.
async fn stock_units(cri: &mut Cri, shimless_units: usize, shimless_pods: usize) -> Outcome {
    ensure(shimless_pods == 10, || {
        "the ten shimless pods did not all start".into()
    })?;
    let before = units()?.len();
    let shims_before = shim_like().len();
    let mut stock = Vec::new();
    for i in 0..3 {
        stock.push(start_pod(cri, STOCK, &format!("stock-{i}"), "exec sleep 3600").await?);
    }
    for pod in &stock {
        wait_state(cri, &pod.container, ContainerState::ContainerRunning).await?;
    }
    let stock_units = units()?.len() - before;
    let stock_shims = shim_like().len() - shims_before;
    for pod in &stock {
        remove_pod(cri, pod).await?;
    }
    STOCK_DONE.store(true, std::sync::atomic::Ordering::Relaxed);
    info(format!(
        "systemd scopes+slices added: 10 shimless pods {shimless_units} ({:.1}/pod, incl. kubepods slices), 3 stock pods {stock_units} ({:.1}/pod); stock shim processes added: {stock_shims}",
        shimless_units as f64 / 10.0,
        stock_units as f64 / 3.0
    ));
    ensure(stock_shims == 3, || {
        format!("3 stock pods added {stock_shims} shim processes (expected one each)")
    })?;
    // Beyond the kubepods slices the first pod creates, each pod adds its slice and two scopes.
    ensure(shimless_units <= 10 * 3 + 2 && stock_units == 3 * 3, || {
        format!("units added: shimless {shimless_units} for 10 pods, stock {stock_units} for 3")
    })
}

/// The pods whose container still runs.
async fn running(cri: &mut Cri, pods: &[Pod]) -> Vec<Pod> {
    let mut live = Vec::new();
    for pod in pods {
        if let Ok((s, _)) = status(cri, &pod.container).await
            && s.state == ContainerState::ContainerRunning as i32
        {
            live.push(pod.clone());
        }
    }
    info(format!(
        "{} of {} pods still running",
        live.len(),
        pods.len()
    ));
    live
}

/// `kill -9 shimlessd`: an exit that happens meanwhile is reported with its code, and the
/// pods still running keep running.
async fn kill_shimlessd(report: &mut Report, cri: &mut Cri, pods: &[Pod]) {
    let live = running(cri, pods).await;
    let pods = &live[..];
    let before = pids_of(cri, pods).await;
    let exiting = match start_pod(cri, UNIFIED, "exits-7", "sleep 5; exit 7").await {
        Ok(p) => p,
        Err(e) => {
            report.check("kill_9_shimlessd_exit_reported", Err(e));
            return;
        }
    };
    report.check(
        "kill_9_shimlessd_exit_reported",
        kill_and_wait_exit(cri, &exiting).await,
    );
    let outcome = match before {
        Ok(before) => pids_of(cri, pods).await.and_then(|after| {
            ensure(before == after, || {
                format!("container PIDs changed: {before:?} -> {after:?}")
            })
        }),
        Err(e) => Err(format!("before the kill: {e}")),
    };
    report.check("kill_9_shimlessd_containers_keep_running", outcome);
    let _ = remove_pod(cri, &exiting).await;
}

async fn kill_and_wait_exit(cri: &mut Cri, exiting: &Pod) -> Outcome {
    wait_state(cri, &exiting.container, ContainerState::ContainerRunning).await?;
    let daemons = processes(|n| n == "shimlessd");
    ensure(daemons.len() == 1, || {
        format!("shimlessd processes: {daemons:?}")
    })?;
    sh(&format!("kill -9 {}", daemons[0]))?;
    let s = wait_state(cri, &exiting.container, ContainerState::ContainerExited).await?;
    ensure(s.exit_code == 7, || {
        format!("the exit during the daemon's restart: {s:?}")
    })
}

/// The init PID of each pod's container, all RUNNING.
async fn pids_of(cri: &mut Cri, pods: &[Pod]) -> Result<BTreeMap<String, u32>, String> {
    let mut pids = BTreeMap::new();
    for pod in pods {
        let (s, pid) = status(cri, &pod.container).await?;
        ensure(s.state == ContainerState::ContainerRunning as i32, || {
            format!("{} is not running: {s:?}", pod.name)
        })?;
        let pid = pid.ok_or_else(|| format!("no pid for {}", pod.name))?;
        ensure(Path::new(&format!("/proc/{pid}")).exists(), || {
            format!(
                "{}'s pid {pid} is gone (after the stock pods: {})",
                pod.name,
                STOCK_DONE.load(std::sync::atomic::Ordering::Relaxed)
            )
        })?;
        pids.insert(pod.name.clone(), pid);
    }
    Ok(pids)
}

/// `systemctl restart containerd` leaves every container, the front and the daemon running;
/// `systemctl stop`, an exit while containerd is down, `start`: the exit is reported.
/// Runs on the pods still running (the checks before may have lost some), at least two.
async fn restart_containerd(report: &mut Report, mut cri: Cri, pods: &[Pod]) -> Cri {
    let live = running(&mut cri, pods).await;
    let pods = &live[..];
    let outcome = match pods.len() {
        0 | 1 => Err("fewer than two pods still run".to_owned()),
        _ => restart_outcome(&mut cri, pods).await,
    };
    report.check("systemctl_restart_containerd_keeps_containers", outcome);
    let mut cri = connect().await.unwrap_or(cri);
    let outcome = stop_start_outcome(&mut cri, pods).await;
    report.check("exit_while_containerd_is_stopped_is_reported", outcome);
    connect().await.unwrap_or(cri)
}

async fn restart_outcome(cri: &mut Cri, pods: &[Pod]) -> Result<(), String> {
    let before = pids_of(cri, pods).await?;
    let shimless_before = processes(|n| n == "shimlessd" || n == "shimless-front");
    sh("systemctl restart containerd")?;
    *cri = connect().await?;
    let after = pids_of(cri, pods).await?;
    ensure(before == after, || {
        format!("container PIDs: {before:?} -> {after:?}")
    })?;
    let shimless_after = processes(|n| n == "shimlessd" || n == "shimless-front");
    ensure(shimless_before == shimless_after, || {
        format!("front and daemon: {shimless_before:?} -> {shimless_after:?}")
    })
}

async fn stop_start_outcome(cri: &mut Cri, pods: &[Pod]) -> Result<(), String> {
    let (victim, rest) = pods.split_first().ok_or("no pods")?;
    let before = pids_of(cri, rest).await?;
    let (_, pid) = status(cri, &victim.container).await?;
    let pid = pid.ok_or("no pid")?;
    sh("systemctl stop containerd")?;
    let killed = sh(&format!("kill -9 {pid}"));
    sh("systemctl start containerd")?;
    killed?;
    *cri = connect().await?;
    let s = wait_state(cri, &victim.container, ContainerState::ContainerExited).await?;
    ensure(s.exit_code == 137, || {
        format!("the exit while containerd was down: {s:?}")
    })?;
    let after = pids_of(cri, rest).await?;
    ensure(before == after, || {
        format!("container PIDs: {before:?} -> {after:?}")
    })
}

/// After every pod is removed no container scope is left (the pods' slices are kubelet's to
/// remove, as with the stock shim).
fn no_pod_units() -> Outcome {
    let left: Vec<String> = units()?
        .into_iter()
        .filter(|u| u.starts_with("cri-containerd-"))
        .collect();
    ensure(left.is_empty(), || format!("left: {left:?}"))
}
