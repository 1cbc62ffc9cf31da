//! CRI benchmark (not a timed test): N pods (sandbox + one busybox container each, host
//! network) through containerd's CRI plugin (1.7, or 2.1) with the runtime handler `unified` (shimless)
//! and N with the default runtime (one `containerd-shim-runc-v2` per pod), interleaved on one
//! private containerd in the same run. Prints the pod start latency (RunPodSandbox through
//! StartContainer) p50/p99 of each, and, with all 2N pods running, the PSS of shimless's front
//! and daemon next to the total PSS of the runc shims.
//!
//! `cargo bench -p task-service --bench cri [-- N] [--containerd 2.1]` (as root; N defaults to
//! 50; `--containerd 2.1` runs the 2.1.9 that `scripts/install-deps` unpacks instead of the
//! system's 1.7, with the version 3 config). `--exec K` then times K CRI `ExecSync` calls
//! (`true`, as an exec probe runs) in a container of each runtime, alternating, and prints
//! p50/p99 of each and their ratio.

#[path = "peer/go_shim.rs"]
mod go_shim;
#[path = "../tests/common/shimless.rs"]
#[allow(dead_code)] // the tests' private shimless installation; the bench uses part of it
mod shimless;

#[path = "cri/pods.rs"]
#[allow(dead_code)] // shared with the probes bench
mod pods;

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
use std::path::Path;
use std::time::{Duration, Instant};

/// RunPodSandbox, CreateContainer, StartContainer of a host-network pod; the time they took,
/// and the container's id.
async fn start_pod(cri: &mut Cri, logs: &Path, name: &str, handler: &str) -> (Duration, String) {
    let (id, took) = pods::start_pod(cri, logs, PodSpec::sleeping(name, handler)).await;
    (took, id)
}

/// A process's proportional set size, in KiB (`Pss:` of `/proc/<pid>/smaps_rollup`).
fn pss_kib(pid: u32) -> u64 {
    go_shim::memory_kib(pid).map_or(0, |(pss, _)| pss)
}

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let n: usize = args.iter().find_map(|a| a.parse().ok()).unwrap_or(50);
    let version = containerd_version(&args, "cri");
    let mut needs = version.needs().to_vec();
    needs.extend([integration::Need::Btf, integration::Need::Bpffs]);
    if integration::require(&needs).is_none() {
        eprintln!("cri bench: needs root, {version} and runc; skipped");
        return;
    }
    rustix::process::set_child_subreaper(rustix::process::Pid::from_raw(1)).unwrap();
    let shimless = Shimless::new("").cleans(CRI_NAMESPACE);
    let containerd = start_containerd(version, &shimless);
    let cores = std::thread::available_parallelism().map_or(0, |n| n.get());
    println!(
        "{version}: {n} pods per runtime, interleaved; {cores} cores; load average before: {}",
        load_average()
    );
    let logs = tempfile::tempdir().unwrap();
    let (unified, stock, warm) = smol::block_on(start_pods(&containerd, logs.path(), n));
    let execs = args
        .iter()
        .position(|a| a == "--exec")
        .and_then(|i| args.get(i + 1)?.parse().ok());
    if let Some(k) = execs {
        smol::block_on(exec_sync(&containerd, &warm, k));
    }
    wait_all_running(&containerd, n);
    std::thread::sleep(Duration::from_secs(2));
    report(&containerd, &shimless, n + 1, unified, stock);
    println!("load average after: {}", load_average());
    // containerd's clean-up deletes every task and container; then shimless's processes go.
    drop(containerd);
    drop(shimless);
}

/// The containers of the two untimed pods: shimless's, then the runc shim's.
type Warm = (String, String);

/// `n` pods through each runtime, alternating; each pod's start time, per runtime, and the
/// containers of the two warm-up pods.
async fn start_pods(
    containerd: &Containerd,
    logs: &Path,
    n: usize,
) -> (Vec<Duration>, Vec<Duration>, Warm) {
    let (mut unified, mut stock) = (Vec::new(), Vec::new());
    let mut cri = pods::connect(containerd).await;
    // One pod of each first, untimed: the first unified pod starts the front and daemon,
    // and both runtimes' first pod warms containerd's caches.
    let (_, warm_u) = start_pod(&mut cri, logs, "warm-u", "unified").await;
    let (_, warm_s) = start_pod(&mut cri, logs, "warm-s", "").await;
    for i in 0..n {
        let (took, _) = start_pod(&mut cri, logs, &format!("u{i}"), "unified").await;
        unified.push(took);
        let (took, _) = start_pod(&mut cri, logs, &format!("s{i}"), "").await;
        stock.push(took);
    }
    (unified, stock, (warm_u, warm_s))
}

/// `k` CRI `ExecSync`s of `true` in each of the two containers, alternating (after two
/// untimed ones each); the p50 and p99 of each runtime, and their ratio.
async fn exec_sync(containerd: &Containerd, (unified, stock): &Warm, k: usize) {
    let mut cri = pods::connect(containerd).await;
    let mut once = async |id: &str| {
        let t0 = Instant::now();
        let reply = cri
            .exec_sync(ExecSyncRequest {
                container_id: id.into(),
                cmd: vec!["true".into()],
                timeout: 10,
            })
            .await
            .unwrap_or_else(|e| panic!("ExecSync in {id}: {e}"))
            .into_inner();
        assert_eq!(reply.exit_code, 0, "ExecSync in {id}: {reply:?}");
        t0.elapsed()
    };
    for _ in 0..2 {
        once(unified).await;
        once(stock).await;
    }
    let (mut u, mut s) = (Vec::new(), Vec::new());
    for _ in 0..k {
        u.push(once(unified).await);
        s.push(once(stock).await);
    }
    u.sort();
    s.sort();
    println!("\n| CRI ExecSync `true`, {k} each, alternating | p50 | p99 |");
    println!("|---|---:|---:|");
    for (name, v) in [("`unified` (shimless)", &u), ("default (runc shim)", &s)] {
        println!(
            "| {name} | {:.1} ms | {:.1} ms |",
            ms(percentile(v, 0.5)),
            ms(percentile(v, 0.99))
        );
    }
    println!(
        "ExecSync p50 shimless / runc shim = {:.2}, p99 = {:.2}; load average: {}",
        ms(percentile(&u, 0.5)) / ms(percentile(&s, 0.5)),
        ms(percentile(&u, 0.99)) / ms(percentile(&s, 0.99)),
        load_average()
    );
}

/// Waits until every container is RUNNING: the tasks containerd lists (sandboxes and
/// containers of `n` pods and the warm-up pod, per runtime).
fn wait_all_running(containerd: &Containerd, n: usize) {
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        let tasks = containerd.tasks(CRI_NAMESPACE).unwrap();
        let running = tasks.values().filter(|s| *s == "RUNNING").count();
        if running == 4 * (n + 1) {
            return;
        }
        assert!(Instant::now() < deadline, "only {running} tasks running");
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// The table: shim processes, their PSS and pod start times, per runtime.
fn report(
    containerd: &Containerd,
    shimless: &Shimless,
    pods: usize,
    mut unified: Vec<Duration>,
    mut stock: Vec<Duration>,
) {
    let shimless_pids: Vec<u32> = ["shimless-front", "shimlessd"]
        .iter()
        .flat_map(|name| shimless.processes(name))
        .collect();
    let shimless_kib: u64 = shimless_pids.iter().map(|&p| pss_kib(p)).sum();
    let runc_shims: Vec<u32> = containerd
        .shim_pids()
        .into_iter()
        .filter(|pid| {
            std::fs::read(format!("/proc/{pid}/cmdline"))
                .is_ok_and(|c| String::from_utf8_lossy(&c).contains("containerd-shim-runc-v2"))
        })
        .collect();
    let runc_kib: u64 = runc_shims.iter().map(|&p| pss_kib(p)).sum();
    unified.sort();
    stock.sort();
    println!("\n| runtime | pods | shim processes | their PSS | per pod | start p50 | start p99 |");
    println!("|---|---:|---:|---:|---:|---:|---:|");
    println!(
        "| `unified` (shimless) | {pods} | {} (front + daemon) | {:.1} MiB | {:.2} MiB | {:.0} ms | {:.0} ms |",
        shimless_pids.len(),
        shimless_kib as f64 / 1024.0,
        shimless_kib as f64 / 1024.0 / pods as f64,
        ms(percentile(&unified, 0.5)),
        ms(percentile(&unified, 0.99)),
    );
    println!(
        "| default (runc shim) | {pods} | {} | {:.1} MiB | {:.2} MiB | {:.0} ms | {:.0} ms |",
        runc_shims.len(),
        runc_kib as f64 / 1024.0,
        runc_kib as f64 / 1024.0 / pods as f64,
        ms(percentile(&stock, 0.5)),
        ms(percentile(&stock, 0.99)),
    );
    println!(
        "\nmemory: runc shims / shimless = {:.1}x; start p50: unified / default = {:.2}",
        runc_kib as f64 / shimless_kib.max(1) as f64,
        percentile(&unified, 0.5).as_secs_f64() / percentile(&stock, 0.5).as_secs_f64()
    );
}
