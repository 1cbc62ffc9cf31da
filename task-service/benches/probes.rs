//! Probe benchmark (not a timed test): N pods, one probe each per second, on one private
//! containerd (1.7, or 2.1 with `--containerd 2.1`), four ways side by side:
//!
//! - (a) the stock shim (containerd-shim-runc-v2) with the exec probe `cat /probe-dir/probe`
//!   through CRI `ExecSync`;
//! - (b) shimless (`unified`) with the same real exec;
//! - (c) shimless with the marker `shimless-probe file /probe-dir/probe 10` (no process);
//! - (d) shimless running the probe itself (pod annotation `shimless.io/probes`, a readiness
//!   file probe every second): no `ExecSync` at all.
//!
//! Each pod's container touches `/probe-dir/probe` (a host directory) every 2 s. Each way runs
//! for the same duration, one after the other, with the (a), (b) and (c) pods running all
//! along, and the (d) pods added for (d) only. Its cost is the CPU time of containerd and of
//! everything containerd starts for it (the runc shims and the runc processes they reap,
//! shimless's front and daemon and the runc processes and exec'd commands they reap), read as
//! utime+stime+cutime+cstime from `/proc/<pid>/stat` at both ends: the containers' own work
//! (the touch loops, whose children their shell reaps) is not counted. Per way: CPU seconds,
//! `ExecSync` p50/p99, failed probes (an error, a non-zero code, or longer than the 1 s
//! timeout; for (d), the daemon's failed checks), and the CPU (containerd's, what it started,
//! their total) with the total relative to (a).
//!
//! `cargo bench -p task-service --bench probes [-- N [SECONDS]] [--containerd 2.1]` (as root;
//! N defaults to 100, SECONDS to 60).

#[path = "cri/pods.rs"]
#[allow(dead_code)] // shared with the cri bench
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

use integration::containerd::{CRI_NAMESPACE, Containerd};
use pods::{Cri, PodSpec, containerd_version, load_average, ms, percentile, start_containerd};
use runtime::v1::ExecSyncRequest;
use shimless::Shimless;
use std::collections::HashMap;
use std::path::Path;
use std::time::{Duration, Instant};
use task_service::api::shimless::v1::{ProberCounters, ProbesRequest};

/// The probe command of (a) and (b), and the marker of (c).
const CAT: [&str; 2] = ["cat", "/probe-dir/probe"];
const MARKER: [&str; 4] = ["shimless-probe", "file", "/probe-dir/probe", "10"];

/// What one way cost.
struct Figures {
    /// containerd's own CPU, and that of what it started (shims, shimless, what they reaped).
    cpu: (Duration, Duration),
    latencies: Vec<Duration>,
    probes: u64,
    failed: u64,
}

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let numbers: Vec<u64> = args
        .iter()
        .filter(|a| !a.starts_with('-'))
        .filter_map(|a| a.parse().ok())
        .collect();
    let n = numbers.first().copied().unwrap_or(100) as usize;
    let secs = numbers.get(1).copied().unwrap_or(60);
    let version = containerd_version(&args, "probes");
    let mut needs = version.needs().to_vec();
    needs.extend([integration::Need::Btf, integration::Need::Bpffs]);
    if integration::require(&needs).is_none() {
        eprintln!("probes bench: needs root, {version} and runc; skipped");
        return;
    }
    rustix::process::set_child_subreaper(rustix::process::Pid::from_raw(1)).unwrap();
    let shimless = Shimless::new("").cleans(CRI_NAMESPACE);
    let containerd = start_containerd(version, &shimless);
    let cores = std::thread::available_parallelism().map_or(0, |n| n.get());
    println!(
        "{version}: {n} pods per way, one probe per pod per second, {secs} s per way; {cores} \
         cores; load average before: {}",
        load_average()
    );
    let dirs = tempfile::tempdir().unwrap();
    let window = Duration::from_secs(secs);
    let rows = smol::block_on(async {
        let mut cri = pods::connect(&containerd).await;
        let stock = start_pods(&mut cri, dirs.path(), "s", "", n, false).await;
        let unified = start_pods(&mut cri, dirs.path(), "u", "unified", n, false).await;
        settle().await;
        let a = exec_probes(&containerd, &shimless, &cri, &stock, &CAT, window).await;
        let b = exec_probes(&containerd, &shimless, &cri, &unified, &CAT, window).await;
        let c = exec_probes(&containerd, &shimless, &cri, &unified, &MARKER, window).await;
        start_pods(&mut cri, dirs.path(), "d", "unified", n, true).await;
        settle().await;
        let d = daemon_probes(&containerd, &shimless, window).await;
        [
            ("(a) stock shim, exec `cat`", a),
            ("(b) shimless, exec `cat`", b),
            ("(c) shimless, marker exec", c),
            ("(d) shimless, daemon-run", d),
        ]
    });
    report(&rows, n);
    println!("load average after: {}", load_average());
    drop(containerd);
    drop(shimless);
}

/// Gives the containers time to touch their files and the probes their first results.
async fn settle() {
    async_io::Timer::after(Duration::from_secs(3)).await;
}

/// `n` pods `<prefix><i>` of `handler` whose container touches `/probe-dir/probe` every 2 s
/// (with the daemon-run readiness probe if `annotated`); their container ids.
async fn start_pods(
    cri: &mut Cri,
    dir: &Path,
    prefix: &str,
    handler: &str,
    n: usize,
    annotated: bool,
) -> Vec<String> {
    let mut ids = Vec::with_capacity(n);
    for i in 0..n {
        let name = format!("{prefix}{i}");
        let probe_dir = dir.join("probe").join(&name);
        std::fs::create_dir_all(&probe_dir).unwrap();
        let mut annotations = HashMap::new();
        if annotated {
            let value = format!(
                r#"{{"{name}": {{"readinessProbe": {{"file": {{"path": "/probe-dir/probe", "validity": 10}}, "periodSeconds": 1}}}}}}"#
            );
            annotations.insert("shimless.io/probes".to_string(), value);
        }
        let pod = PodSpec {
            name: &name,
            handler,
            command: [
                "sh",
                "-c",
                "while true; do touch /probe-dir/probe; sleep 2; done",
            ]
            .map(String::from)
            .to_vec(),
            annotations,
            mounts: vec![("/probe-dir".into(), probe_dir.display().to_string())],
        };
        ids.push(pods::start_pod(cri, &dir.join("logs"), pod).await.0);
    }
    ids
}

/// The CPU time so far of containerd and of every process it started (see the module doc).
fn cpu_of(containerd: &Containerd, shimless: &Shimless) -> HashMap<u32, Duration> {
    let mut pids = containerd.shim_pids();
    pids.extend(shimless.processes("shimless-front"));
    pids.extend(shimless.processes("shimlessd"));
    pids.into_iter()
        .filter_map(|pid| Some((pid, process_cpu(pid)?)))
        .collect()
}

/// utime + stime + cutime + cstime of `pid`.
fn process_cpu(pid: u32) -> Option<Duration> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let (_, rest) = stat.rsplit_once(')')?;
    // After the command: state is field 3; utime..cstime are fields 14..17.
    let ticks: u64 = rest
        .split_whitespace()
        .skip(11)
        .take(4)
        .filter_map(|f| f.parse::<u64>().ok())
        .sum();
    Some(Duration::from_secs_f64(ticks as f64 / clock_ticks()))
}

fn clock_ticks() -> f64 {
    static TICKS: std::sync::OnceLock<f64> = std::sync::OnceLock::new();
    *TICKS.get_or_init(|| {
        std::process::Command::new("getconf")
            .arg("CLK_TCK")
            .output()
            .ok()
            .and_then(|o| String::from_utf8_lossy(&o.stdout).trim().parse().ok())
            .unwrap_or(100.0)
    })
}

/// A reading: containerd's CPU, and that of the processes it started.
type Reading = (Option<Duration>, HashMap<u32, Duration>);

fn read_cpu(containerd: &Containerd, shimless: &Shimless) -> Reading {
    (
        containerd.pid().and_then(process_cpu),
        cpu_of(containerd, shimless),
    )
}

/// CPU spent between two readings (containerd's, the rest's): each process's growth, and all
/// of a new one's.
fn spent(before: &Reading, after: &Reading) -> (Duration, Duration) {
    let own = after
        .0
        .unwrap_or_default()
        .saturating_sub(before.0.unwrap_or_default());
    let rest = after
        .1
        .iter()
        .map(|(pid, t)| t.saturating_sub(before.1.get(pid).copied().unwrap_or_default()))
        .sum();
    (own, rest)
}

/// One `ExecSync` of `cmd` per container per second for `window` (first runs spread over the
/// first second; a run still going when its next is due makes that one wait, as kubelet's
/// worker does).
async fn exec_probes(
    containerd: &Containerd,
    shimless: &Shimless,
    cri: &Cri,
    ids: &[String],
    cmd: &[&str],
    window: Duration,
) -> Figures {
    let before = read_cpu(containerd, shimless);
    let start = Instant::now();
    let end = start + window;
    let n = ids.len().max(1) as u32;
    let tasks: Vec<_> = ids
        .iter()
        .enumerate()
        .map(|(i, id)| {
            let (mut cri, id) = (cri.clone(), id.clone());
            let cmd: Vec<String> = cmd.iter().map(|s| s.to_string()).collect();
            let first = start + Duration::from_secs(1) * i as u32 / n;
            smol::spawn(async move { probe_loop(&mut cri, &id, cmd, first, end).await })
        })
        .collect();
    let mut figures = Figures {
        cpu: Default::default(),
        latencies: Vec::new(),
        probes: 0,
        failed: 0,
    };
    for task in tasks {
        let (latencies, failed) = task.await;
        figures.probes += latencies.len() as u64;
        figures.failed += failed;
        figures.latencies.extend(latencies);
    }
    figures.cpu = spent(&before, &read_cpu(containerd, shimless));
    figures
}

/// One container's probes: their latencies and how many failed.
async fn probe_loop(
    cri: &mut Cri,
    id: &str,
    cmd: Vec<String>,
    mut due: Instant,
    end: Instant,
) -> (Vec<Duration>, u64) {
    let (mut latencies, mut failed) = (Vec::new(), 0);
    while due < end {
        async_io::Timer::at(due).await;
        let t0 = Instant::now();
        let answer = cri
            .exec_sync(ExecSyncRequest {
                container_id: id.into(),
                cmd: cmd.clone(),
                timeout: 1,
            })
            .await;
        let took = t0.elapsed();
        let ok = answer.is_ok_and(|r| r.into_inner().exit_code == 0);
        if !ok || took > Duration::from_secs(1) {
            failed += 1;
        }
        latencies.push(took);
        due += Duration::from_secs(1);
        due = due.max(Instant::now());
    }
    (latencies, failed)
}

/// (d): nothing but the daemon's own probes for `window`; their checks and failures from
/// `Admin/Probes`.
async fn daemon_probes(containerd: &Containerd, shimless: &Shimless, window: Duration) -> Figures {
    let before = read_cpu(containerd, shimless);
    let counters_before = prober_counters(shimless).await;
    async_io::Timer::after(window).await;
    let counters = prober_counters(shimless).await;
    Figures {
        cpu: spent(&before, &read_cpu(containerd, shimless)),
        latencies: Vec::new(),
        probes: counters.runs - counters_before.runs,
        failed: counters.failures - counters_before.failures,
    }
}

async fn prober_counters(shimless: &Shimless) -> ProberCounters {
    let client = task_service::client::Client::connect(shimless.front_socket())
        .await
        .expect("connect to shimless");
    client
        .admin()
        .probes(ProbesRequest::default())
        .await
        .expect("Admin/Probes")
        .into_inner()
        .counters
        .unwrap_or_default()
}

/// The table, with each way's CPU relative to (a).
fn report(rows: &[(&str, Figures)], n: usize) {
    let total = |f: &Figures| (f.cpu.0 + f.cpu.1).as_secs_f64();
    let base = total(&rows[0].1).max(1e-9);
    println!(
        "\n| {n} pods, 1 probe/s each | probes run | failed | CPU s, containerd | CPU s, what it \
         started | CPU s, total | total / (a) | ExecSync p50 | ExecSync p99 |"
    );
    println!("|---|---:|---:|---:|---:|---:|---:|---:|---:|");
    for (label, f) in rows {
        let mut sorted = f.latencies.clone();
        sorted.sort();
        let latency = |p| {
            if sorted.is_empty() {
                "-".to_string()
            } else {
                format!("{:.1} ms", ms(percentile(&sorted, p)))
            }
        };
        let cpu = total(f);
        println!(
            "| {label} | {} | {} | {:.2} | {:.2} | {cpu:.2} | {:.3} | {} | {} |",
            f.probes,
            f.failed,
            f.cpu.0.as_secs_f64(),
            f.cpu.1.as_secs_f64(),
            cpu / base,
            latency(0.5),
            latency(0.99)
        );
    }
}
