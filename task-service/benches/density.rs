//! Density benchmark (not a timed test): what one `shimlessd` costs with 10, 100 and 1,000
//! running containers, next to the Go shim (`containerd-shim-runc-v2`, one per container) run
//! in the same process on a private containerd; then exit → `Wait` latency with 1,000 live
//! containers and 100 exiting at once.
//!
//! `cargo bench -p task-service --bench density [-- MAX] [--exit-rounds N] [--exit-only]` (as
//! root; MAX defaults to 1000). `SHIMLESS_BENCH_DIR` picks the file system the records live on
//! (default: the temporary directory), e.g. `/run` (ext4 on this VM, tmpfs on a node) or
//! `/dev/shm` (tmpfs). `--exit-rounds N` makes 100 containers exit at once N times (default 1);
//! `--exit-only` skips the Go shim's memory (for profiling the exit path);
//! `SHIMLESS_BENCH_DAEMON` runs another `shimlessd` binary (to compare two builds).
//!
//! Exit → `Wait` is timed three ways: from the moment the benchmark tells the containers to
//! exit (which includes their shells waking up and exiting on busy CPUs), and from the kernel's
//! own times of each exit, taken by a tracefs instance: when the process starts dying
//! (`sched_process_exit`) and when its parent is sent `SIGCHLD` (it is waitable, and its pidfd
//! readable: from here on the time is the daemon's).

#[path = "peer/exit_trace.rs"]
mod exit_trace;
#[path = "peer/go_shim.rs"]
mod go_shim;

use exit_trace::{ExitTrace, mono_now};

use integration::bundle::Bundle;
use integration::shimlessd::Shimlessd;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use task_service::api::containerd::task::v3::*;
use task_service::client::{Client, TaskClient, namespaced};
use tonic::Request;

const NS: &str = "density";

fn req<T>(msg: T) -> Request<T> {
    namespaced(NS, msg)
}

async fn client(socket: &Path) -> TaskClient {
    Client::connect(socket).await.unwrap().task()
}

/// `shimlessd` on private paths, and its containers force-removed whatever happens.
struct Service {
    daemon: integration::child::Child,
    dir: tempfile::TempDir,
}

impl Service {
    fn start() -> Service {
        let dir = match std::env::var_os("SHIMLESS_BENCH_DIR") {
            Some(parent) => tempfile::tempdir_in(parent).unwrap(),
            None => tempfile::tempdir().unwrap(),
        };
        let log = dir.path().join("shimlessd.log");
        // Another build of the daemon (to compare two builds in the same conditions).
        let binary = std::env::var_os("SHIMLESS_BENCH_DAEMON")
            .unwrap_or_else(|| env!("CARGO_BIN_EXE_shimlessd").into());
        let daemon = Shimlessd::new(binary)
            .in_dir(dir.path())
            .start(&log)
            .unwrap();
        Service { daemon, dir }
    }

    fn socket(&self) -> PathBuf {
        Shimlessd::socket_in(self.dir.path())
    }
}

impl Drop for Service {
    fn drop(&mut self) {
        integration::bundle::delete_all("runc", &self.dir.path().join("runc").join(NS));
        self.daemon.kill();
    }
}

fn mib(kib: u64) -> f64 {
    kib as f64 / 1024.0
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i]
}

/// Memory at one size: containers, PSS and private KiB.
type Row = (usize, u64, u64);

/// The Go shim's mean PSS and private KiB, and over how many shims.
type ShimMemory = (u64, u64, u64);

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let max: usize = args.iter().find_map(|a| a.parse().ok()).unwrap_or(1000);
    let rounds: usize = args
        .iter()
        .position(|a| a == "--exit-rounds")
        .and_then(|i| args.get(i + 1)?.parse().ok())
        .unwrap_or(1);
    let exit_only = args.iter().any(|a| a == "--exit-only");
    if !rustix::process::geteuid().is_root() || !Path::new("/bin/busybox").exists() {
        println!("density: needs root, runc and /bin/busybox (scripts/install-deps); skipped");
        return;
    }
    integration::raise_fd_limit(65536);
    rustix::process::set_child_subreaper(rustix::process::Pid::from_raw(1)).unwrap();
    let steps: Vec<usize> = [10, 100, 1000]
        .into_iter()
        .filter(|&s| s <= max)
        .chain((![10, 100, 1000].contains(&max)).then_some(max))
        .collect();

    let daemon = Service::start();
    let socket = daemon.socket();
    let empty = go_shim::memory_kib(daemon.daemon.pid()).unwrap();
    println!("shimlessd with 0 containers: PSS {:.2} MiB", mib(empty.0));
    let (bundles, pids, rows) = fill(&socket, daemon.daemon.pid(), &steps);
    if !exit_only {
        let shim = go_shim_memory(&bundles[0].rootfs());
        print_table(&rows, shim);
    }
    for round in 0..rounds {
        let end = bundles.len().saturating_sub(100 * round);
        let exiting = 100.min(end);
        if exiting == 0 {
            break;
        }
        exit_to_wait(
            &socket,
            daemon.daemon.pid(),
            &bundles,
            &pids,
            end - exiting..end,
        );
    }
    remove_all(&socket, bundles.len());
    drop(daemon);
    while let Ok(Some(_)) = rustix::process::wait(rustix::process::WaitOptions::NOHANG) {}
}

/// Starts containers up to each of `steps`, printing the daemon's memory at each; their
/// bundles and init PIDs.
fn fill(socket: &Path, daemon: u32, steps: &[usize]) -> (Vec<Bundle>, Vec<u32>, Vec<Row>) {
    let mut bundles: Vec<Bundle> = Vec::new();
    let mut pids = Vec::new();
    let mut rows = Vec::new();
    let started = Instant::now();
    smol::block_on(async {
        let mut c = client(socket).await;
        for &step in steps {
            while bundles.len() < step {
                let i = bundles.len();
                let bundle = Bundle::exit_on_demand().unwrap();
                c.create(req(CreateTaskRequest {
                    id: format!("d{i:05}"),
                    bundle: bundle.path().display().to_string(),
                    ..Default::default()
                }))
                .await
                .unwrap();
                let started = c
                    .start(req(StartRequest {
                        id: format!("d{i:05}"),
                        ..Default::default()
                    }))
                    .await
                    .unwrap();
                pids.push(started.into_inner().pid);
                bundles.push(bundle);
            }
            std::thread::sleep(Duration::from_millis(500));
            let (pss, private) = go_shim::memory_kib(daemon).unwrap();
            println!(
                "shimlessd with {step} containers: PSS {:.2} MiB, private {:.2} MiB ({:.0} s)",
                mib(pss),
                mib(private),
                started.elapsed().as_secs_f64()
            );
            rows.push((step, pss, private));
        }
    });
    (bundles, pids, rows)
}

/// The peer, in the same run: 10 Go shims on a private containerd, each running a container
/// of `rootfs`; their mean memory.
fn go_shim_memory(rootfs: &Path) -> Option<ShimMemory> {
    let mut containerd = match go_shim::Containerd::start() {
        Ok(containerd) => containerd,
        Err(why) => {
            println!("Go shim not measured: {why}");
            return None;
        }
    };
    for k in 0..10 {
        if let Err(e) = containerd.run(&format!("peer{k}"), rootfs) {
            println!("Go shim: ctr run failed: {e}");
            return None;
        }
    }
    std::thread::sleep(Duration::from_millis(500));
    let mems: Vec<(u64, u64)> = containerd
        .shim_pids()
        .into_iter()
        .filter_map(go_shim::memory_kib)
        .collect();
    let n = mems.len() as u64;
    let shim = (n > 0).then(|| {
        (
            mems.iter().map(|m| m.0).sum::<u64>() / n,
            mems.iter().map(|m| m.1).sum::<u64>() / n,
            n,
        )
    });
    if let Some((pss, private, n)) = shim {
        println!(
            "containerd-shim-runc-v2 (mean of {n}, each with one container): PSS {:.2} MiB, private {:.2} MiB",
            mib(pss),
            mib(private)
        );
    }
    shim
}

/// The README's table, and the marginal cost of a container between the last two sizes.
fn print_table(rows: &[Row], shim: Option<ShimMemory>) {
    println!();
    println!("| containers | shimlessd PSS | N × Go shim PSS | ratio |");
    println!("|---:|---:|---:|---:|");
    for &(step, pss, _) in rows {
        match shim {
            Some((shim_pss, _, _)) => println!(
                "| {step} | {:.2} MiB | {:.1} MiB | {:.0}× |",
                mib(pss),
                mib(shim_pss * step as u64),
                (shim_pss * step as u64) as f64 / pss as f64
            ),
            None => println!("| {step} | {:.2} MiB | not measured | |", mib(pss)),
        }
    }
    if rows.len() >= 2 {
        let (a, b) = (rows[rows.len() - 2], rows[rows.len() - 1]);
        let per = (b.1 as f64 - a.1 as f64) / (b.0 - a.0) as f64;
        println!(
            "marginal cost per container ({} → {}): {:.1} KiB PSS",
            a.0, b.0, per
        );
    }
}

/// Exit → Wait latency: Wait is pending for the containers of `exiting`, then they all exit
/// at once.
fn exit_to_wait(
    socket: &Path,
    daemon: u32,
    bundles: &[Bundle],
    pids: &[u32],
    exiting: std::ops::Range<usize>,
) {
    let live = exiting.end;
    let trace = ExitTrace::start(daemon)
        .map_err(|why| println!("kernel exit times not taken: {why}"))
        .ok();
    let done: Arc<Mutex<Vec<(usize, Duration)>>> = Arc::default();
    let waiter = {
        let done = done.clone();
        let socket = socket.to_owned();
        let exiting = exiting.clone();
        std::thread::spawn(move || {
            smol::block_on(async {
                let c = client(&socket).await;
                let calls = exiting.map(|i| {
                    let mut c = c.clone();
                    let done = done.clone();
                    async move {
                        c.wait(req(WaitRequest {
                            id: format!("d{i:05}"),
                            ..Default::default()
                        }))
                        .await
                        .unwrap();
                        done.lock().unwrap().push((i, mono_now()));
                    }
                });
                join_all(calls.collect()).await;
            })
        })
    };
    std::thread::sleep(Duration::from_millis(500));
    let mut told = vec![Duration::ZERO; live];
    for i in exiting.clone() {
        told[i] = mono_now();
        bundles[i].tell_exit(3).unwrap();
    }
    waiter.join().unwrap();
    let done = done.lock().unwrap().clone();
    let n = exiting.len();
    print_latencies(
        &format!("told to exit → Wait return, {n} exiting at once among {live} live"),
        done.iter().map(|&(i, at)| at.checked_sub(told[i])),
    );
    let Some(trace) = trace else { return };
    let times = trace.times();
    let of = |i: usize| times.get(&pids[i]).copied().unwrap_or_default();
    print_latencies(
        "  from the kernel's sched_process_exit (dying) → Wait return",
        done.iter().map(|&(i, at)| at.checked_sub(of(i).dying?)),
    );
    print_latencies(
        "  from SIGCHLD to shimlessd (waitable, pidfd readable) → Wait return",
        done.iter().map(|&(i, at)| at.checked_sub(of(i).waitable?)),
    );
    print_latencies(
        "  of which the kernel: sched_process_exit → SIGCHLD",
        done.iter()
            .map(|&(i, _)| of(i).waitable?.checked_sub(of(i).dying?)),
    );
}

/// Prints p50, p99 and max of `latencies` (those known), and how many were not.
fn print_latencies(what: &str, latencies: impl Iterator<Item = Option<Duration>>) {
    let all: Vec<Option<Duration>> = latencies.collect();
    let mut known: Vec<Duration> = all.iter().flatten().copied().collect();
    known.sort();
    if known.is_empty() {
        println!("{what}: no sample");
        return;
    }
    let missing = all.len() - known.len();
    println!(
        "{what}: p50 {:.2} ms, p99 {:.2} ms, max {:.2} ms{}",
        percentile(&known, 0.5).as_secs_f64() * 1e3,
        percentile(&known, 0.99).as_secs_f64() * 1e3,
        known.last().unwrap().as_secs_f64() * 1e3,
        if missing > 0 {
            format!(" ({missing} without a kernel time)")
        } else {
            String::new()
        }
    );
}

/// Kills, waits for and deletes containers `d00000..` through the API.
fn remove_all(socket: &Path, n: usize) {
    smol::block_on(async {
        let mut c = client(socket).await;
        for i in 0..n {
            let id = format!("d{i:05}");
            let _ = c
                .kill(req(KillRequest {
                    id: id.clone(),
                    signal: 9,
                    ..Default::default()
                }))
                .await;
            let _ = c
                .wait(req(WaitRequest {
                    id: id.clone(),
                    ..Default::default()
                }))
                .await;
            let _ = c
                .delete(req(DeleteRequest {
                    id,
                    ..Default::default()
                }))
                .await;
        }
    });
}

/// Runs every future to completion, concurrently, on the current task.
async fn join_all(futures: Vec<impl std::future::Future<Output = ()>>) {
    let mut futures: Vec<_> = futures.into_iter().map(Box::pin).collect();
    futures_lite::future::poll_fn(move |cx| {
        futures.retain_mut(|f| f.as_mut().poll(cx).is_pending());
        if futures.is_empty() {
            std::task::Poll::Ready(())
        } else {
            std::task::Poll::Pending
        }
    })
    .await
}
