//! containerd (1.7, or 2.1 with `--containerd 2.1`) with its stock shim (`containerd-shim-runc-v2`, one Go process per container)
//! vs the same containerd with shimless (`containerd-shim-shimless-v2`, which leaves one
//! `shimless-front` and one `shimlessd` for all containers), side by side in one run.
//!
//! One private containerd (see `integration::containerd`) with this build's binaries first on
//! its `PATH` and `SHIMLESS_CONFIG` naming a private shimless configuration. Containers are made
//! through containerd's own gRPC API (Containers and Tasks, `benches/proto/`), not with `ctr`,
//! whose own start would hide the shims' cost: a busybox rootfs shared read-only, `sleep`, no
//! stdio, pid/ipc/uts/mount namespaces, a cgroup each.
//!
//! 1. Memory: N running containers through each runtime; the PSS (and private memory) summed
//!    over every `containerd-shim-runc-v2` of this containerd vs over `shimless-front` and
//!    `shimlessd` (started afresh for each N), and the front's growth per containerd
//!    connection (containerd holds one per task).
//! 2. Lifecycle throughput: create + start + kill (SIGKILL) + wait + delete task + delete
//!    container, one at a time and 16 at a time, stock and shimless alternated.
//! 3. A plot of both (SVG) at `docs/shimless-vs-stock.svg` in the workspace.
//!
//! ```text
//! cargo bench -p task-service --bench containerd -- --sizes 10,100,1000 --seq 50 --conc 160 \
//!     --rounds 2 --crun
//! ```
//!
//! Every flag is optional (those values are the defaults, but for `--crun`, which adds the
//! lifecycle with crun as the OCI runtime on both sides: runc options `BinaryName = "crun"`);
//! `--containerd-protocol grpc` sets shimless's `containerd_protocol` (ttrpc by default);
//! `--svg <path>` writes the plot elsewhere (cargo runs benches in the crate's directory);
//! `--containerd 2.1` runs the containerd 2.1.9 that `scripts/install-deps` unpacks (and its
//! own stock shim) instead of the system's 1.7, and writes the plot only where `--svg` says;
//! `--state-in /dev/shm` keeps shimless's records on a tmpfs, as a node's `/run` is (here `/run`
//! is on the disk); `--sizes ""` skips the memory part.
//! Needs root, the chosen containerd with its `ctr` and `containerd-shim-runc-v2`, and runc;
//! skips otherwise.
//!
//! Everything it started is removed when it ends, also on failure: tasks, containers and
//! shims (by the containerd harness), then the front and the daemon (every process whose
//! command line names this run's shimless configuration), shimless's runc state and eBPF pins,
//! the containers' empty cgroups.

#[path = "containerd/args.rs"]
mod args;
#[path = "containerd/cleanup.rs"]
mod cleanup;
#[path = "containerd/client.rs"]
mod client;
#[path = "peer/go_shim.rs"]
mod go_shim;
#[path = "containerd/report.rs"]
mod report;
#[path = "containerd/setup.rs"]
mod setup;

#[path = "containerd/api.rs"]
mod api;

use api::{RUNC_OPTIONS_TYPE, SHIM_BIN, SHIMLESS, SPEC_TYPE, STOCK};
use args::{Args, parse_args};
use cleanup::{ShimlessCleanup, memory_sum, shimless_pids, stock_shim_pids};
use client::{Client, for_each, lifecycle};
use integration::containerd::{Containerd, ContainerdConfig};
use report::{plot, print_memory, print_rates};
use setup::{Setup, load_average};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

/// The containerd namespace of the benchmark (also the parent of its containers' cgroups).
const NS: &str = "shimless-bench";
/// How many containers are started (and removed) at once in the memory part.
const FILL_PARALLEL: usize = 16;
/// The concurrency of the concurrent lifecycle.
const CONCURRENCY: usize = 16;

fn mib(kib: u64) -> f64 {
    kib as f64 / 1024.0
}

/// Memory figures at one N.
#[derive(Debug, Clone, Copy)]
struct MemoryRow {
    n: usize,
    stock_shims: usize,
    stock_pss: u64,
    stock_private: u64,
    front_pss: u64,
    front_private: u64,
    daemon_pss: u64,
    daemon_private: u64,
}

impl MemoryRow {
    fn shimless_pss(&self) -> u64 {
        self.front_pss + self.daemon_pss
    }
}

/// Lifecycle throughput of one runtime in one mode, summed over rounds.
#[derive(Debug, Clone, Copy, Default)]
struct Throughput {
    containers: usize,
    elapsed: Duration,
}

impl Throughput {
    fn per_second(&self) -> f64 {
        self.containers as f64 / self.elapsed.as_secs_f64().max(1e-9)
    }
}

/// Starts `n` containers through `runtime`, measures, removes them; returns the PIDs'
/// memory as the measure closure says.
async fn fill(client: &Client, runtime: &str, tag: &str, n: usize) -> Result<Duration, String> {
    let started = Instant::now();
    for_each(n, FILL_PARALLEL, |i| {
        let mut client = client.clone();
        async move { client.run(&format!("{tag}-{i}"), runtime).await }
    })
    .await?;
    Ok(started.elapsed())
}

async fn drain(client: &Client, tag: &str, n: usize) -> Result<(), String> {
    for_each(n, FILL_PARALLEL, |i| {
        let mut client = client.clone();
        async move { client.remove(&format!("{tag}-{i}")).await }
    })
    .await
}

async fn memory(
    client: &Client,
    containerd: &Containerd,
    cleanup: &ShimlessCleanup,
    sizes: &[usize],
) -> Result<Vec<MemoryRow>, String> {
    let mut rows = Vec::new();
    for &n in sizes {
        let tag = format!("mem-stock-{n}");
        let took = fill(client, STOCK, &tag, n).await?;
        std::thread::sleep(Duration::from_secs(1));
        let shims = stock_shim_pids(containerd);
        let (stock_pss, stock_private) = memory_sum(&shims);
        println!(
            "  N = {n}: {} stock shims running (started in {:.1} s): PSS {:.1} MiB, private {:.1} MiB",
            shims.len(),
            took.as_secs_f64(),
            mib(stock_pss),
            mib(stock_private)
        );
        drain(client, &tag, n).await?;

        // A fresh front and daemon for each N: what they hold is what N containers cost.
        cleanup.kill_processes();
        let tag = format!("mem-shimless-{n}");
        let took = fill(client, SHIMLESS, &tag, n).await?;
        std::thread::sleep(Duration::from_secs(1));
        let (front, daemon) = shimless_pids(&cleanup.config);
        let (front_pss, front_private) = memory_sum(&front);
        let (daemon_pss, daemon_private) = memory_sum(&daemon);
        println!(
            "  N = {n}: shimless (started in {:.1} s): front {front:?} PSS {:.2} MiB private {:.2} MiB, \
             daemon {daemon:?} PSS {:.2} MiB private {:.2} MiB",
            took.as_secs_f64(),
            mib(front_pss),
            mib(front_private),
            mib(daemon_pss),
            mib(daemon_private)
        );
        drain(client, &tag, n).await?;
        rows.push(MemoryRow {
            n,
            stock_shims: shims.len(),
            stock_pss,
            stock_private,
            front_pss,
            front_private,
            daemon_pss,
            daemon_private,
        });
    }
    Ok(rows)
}

/// Throughput table rows: (label, stock, shimless).
type Rates = Vec<(String, Throughput, Throughput)>;

async fn throughput(
    client: &Client,
    args: &Args,
    label_suffix: &str,
    tag: &str,
) -> Result<Rates, String> {
    // Warm-up: the first shimless container starts the front and the daemon.
    lifecycle(client, STOCK, &format!("{tag}-warm-stock"), 2, 1).await?;
    lifecycle(client, SHIMLESS, &format!("{tag}-warm-shimless"), 2, 1).await?;
    let mut rates = Vec::new();
    for (mode, n, parallel) in [
        ("sequential", args.seq, 1),
        ("16 concurrent", args.conc, CONCURRENCY),
    ] {
        let mut stock = Throughput::default();
        let mut shimless = Throughput::default();
        for round in 0..args.rounds {
            // Alternated: the one that goes first changes each round.
            let order = if round % 2 == 0 {
                [STOCK, SHIMLESS]
            } else {
                [SHIMLESS, STOCK]
            };
            for runtime in order {
                let short = if runtime == STOCK {
                    "stock"
                } else {
                    "shimless"
                };
                let took = lifecycle(
                    client,
                    runtime,
                    &format!("{tag}-{short}-{}-{round}", n * 1000 + parallel),
                    n,
                    parallel,
                )
                .await?;
                println!(
                    "  {mode}{label_suffix}, round {round}, {short}: {n} in {:.2} s = {:.1}/s",
                    took.as_secs_f64(),
                    n as f64 / took.as_secs_f64()
                );
                let total = if runtime == STOCK {
                    &mut stock
                } else {
                    &mut shimless
                };
                total.containers += n;
                total.elapsed += took;
            }
        }
        rates.push((format!("{mode}{label_suffix}"), stock, shimless));
    }
    Ok(rates)
}

fn main() {
    let args = match parse_args() {
        Ok(args) => args,
        Err(e) => {
            eprintln!("containerd bench: {e}");
            std::process::exit(2);
        }
    };
    if let Some(why) = setup::missing(args.containerd) {
        println!("containerd bench skipped: {why}");
        return;
    }
    if let Err(e) = run(&args) {
        eprintln!("containerd bench failed: {e}");
        std::process::exit(1);
    }
}

fn run(args: &Args) -> Result<(), String> {
    let dir = tempfile::Builder::new()
        .prefix("shimless-bench-")
        .tempdir()
        .map_err(|e| format!("create a temporary directory: {e}"))?;
    let d = dir.path();
    let setup = Setup::write(d, args.state_in.as_deref(), args.protocol.as_deref())?;
    let bin_dir = Path::new(SHIM_BIN)
        .parent()
        .ok_or("the shim binary has no directory")?
        .to_owned();
    let bundle = integration::bundle::BundleBuilder::new()
        .build()
        .map_err(|e| format!("make the busybox rootfs: {e}"))?;
    // Dropped before `setup` (declared after it): tasks and containers go while the front
    // still answers, then containerd and the stock shims.
    let containerd = Containerd::start(
        ContainerdConfig::new()
            .version(args.containerd)
            .path_prepend(&bin_dir)
            .env(
                task_service::config::PATH_ENV,
                setup.config.display().to_string(),
            ),
    )
    .map_err(|e| format!("start containerd: {e}"))?;
    println!(
        "{} in {} with {} first on its PATH, SHIMLESS_CONFIG={}",
        args.containerd,
        containerd.dir().display(),
        bin_dir.display(),
        setup.config.display()
    );
    println!("load average before: {}", load_average());
    let result = smol::block_on(measure(args, &containerd, &setup.cleanup, bundle.rootfs()));
    println!("load average after: {}", load_average());
    let (rows, rates) = result.inspect_err(|_| {
        eprintln!(
            "containerd log tail:\n{}\nfront/daemon logs in {}",
            containerd.log_tail(20),
            d.join("logs").display()
        );
    })?;
    if let Some(svg) = &args.svg {
        plot(svg, &rows, &rates).map_err(|e| format!("plot {}: {e}", svg.display()))?;
        println!("plot: {}", svg.display());
    }
    drop(containerd);
    drop(setup);
    Ok(())
}

/// Both parts, printed as they finish: memory at each size, then lifecycle rates.
async fn measure(
    args: &Args,
    containerd: &Containerd,
    cleanup: &ShimlessCleanup,
    rootfs: PathBuf,
) -> Result<(Vec<MemoryRow>, Rates), String> {
    let client = Client::connect(&containerd.socket(), rootfs).await?;
    println!("memory (sizes {:?}):", args.sizes);
    let rows = memory(&client, containerd, cleanup, &args.sizes).await?;
    print_memory(&rows);
    println!();
    println!(
        "lifecycle ({} sequential, {} at {CONCURRENCY} concurrent, {} rounds alternated):",
        args.seq, args.conc, args.rounds
    );
    let mut rates = throughput(&client, args, "", "life").await?;
    if args.crun {
        match integration::bundle::prepare_crun() {
            Ok(()) => {
                let mut crun = client.clone();
                crun.binary = Some("crun".into());
                rates.extend(throughput(&crun, args, " (crun)", "crun").await?);
            }
            Err(e) => println!("crun not measured: {e}"),
        }
    }
    print_rates(&rates);
    Ok((rows, rates))
}
