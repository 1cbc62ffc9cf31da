//! What a shim adds to the runtime's own cost, per container: create + start + kill + wait +
//! delete through containerd's Task API with the stock shim (`containerd-shim-runc-v2`) and
//! with shimless, on one private containerd, vs the same runtime calls made directly
//! (`<runtime> create/start/kill KILL`, reap, `delete`) on the same spec; one at a time and 16
//! at a time, with runc and with crun; the three rotated in each round.
//!
//! ```text
//! cargo bench -p task-service --bench overhead -- --seq 40 --conc 96 --rounds 2 \
//!     --runtimes runc,crun --state-in /dev/shm
//! ```
//!
//! Every flag is optional (those are the defaults but for `--state-in`, which keeps shimless's
//! records on a tmpfs, as a node's `/run` is; here `/run` is on the disk). `--containerd 2.1`
//! runs the containerd 2.1.9 that `scripts/install-deps` unpacks instead of the system's 1.7;
//! `--svg <path>` writes the plot elsewhere than `docs/overhead.svg` (only written for 1.7
//! unless `--svg` is given). The containerd side's cost includes containerd's own work
//! (its metadata, the bundle it writes, its events): what a node pays per container with
//! each shim. Needs root, containerd with its stock shim, runc (crun is skipped, saying so,
//! when missing); skips otherwise. Everything it started is removed when it ends.

#[allow(dead_code)]
#[path = "containerd/cleanup.rs"]
mod cleanup;
#[path = "containerd/client.rs"]
mod client;
#[path = "peer/go_shim.rs"]
mod go_shim;
// `Setup::cleanup` only acts when dropped.
#[allow(dead_code)]
#[path = "containerd/setup.rs"]
mod setup;

#[path = "overhead/alone.rs"]
mod alone;
#[path = "overhead/args.rs"]
mod args;
#[path = "overhead/report.rs"]
mod report;

#[path = "containerd/api.rs"]
mod api;

use alone::Alone;
use api::{RUNC_OPTIONS_TYPE, SHIM_BIN, SHIMLESS, SPEC_TYPE, STOCK};
use args::{Args, parse_args};
use client::{Client, for_each, lifecycle};
use integration::containerd::{Containerd, ContainerdConfig};
use setup::{Setup, load_average};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// The containerd namespace of the benchmark (also the parent of its containers' cgroups).
const NS: &str = "shimless-overhead";
/// The concurrency of the concurrent lifecycle.
const CONCURRENCY: usize = 16;

/// Containers made and the wall time they took, summed over rounds.
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct Cost {
    containers: usize,
    elapsed: Duration,
}

impl Cost {
    fn add(&mut self, n: usize, took: Duration) {
        self.containers += n;
        self.elapsed += took;
    }

    /// Wall milliseconds per container (at concurrency c, the run's time divided by its
    /// containers: what the node spends per container when c go at once).
    pub(crate) fn ms(&self) -> f64 {
        self.elapsed.as_secs_f64() * 1e3 / self.containers.max(1) as f64
    }
}

/// One line of the table: a runtime at a concurrency, and the three ways to run it.
#[derive(Debug, Clone)]
pub(crate) struct Row {
    pub(crate) runtime: String,
    pub(crate) concurrency: usize,
    pub(crate) alone: Cost,
    pub(crate) stock: Cost,
    pub(crate) shimless: Cost,
}

/// The three ways to make a container, in the order of the first round.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Way {
    Alone,
    Stock,
    Shimless,
}

impl Way {
    fn short(self) -> &'static str {
        match self {
            Way::Alone => "alone",
            Way::Stock => "stock",
            Way::Shimless => "shimless",
        }
    }
}

fn main() {
    let args = match parse_args() {
        Ok(args) => args,
        Err(e) => {
            eprintln!("overhead bench: {e}");
            std::process::exit(2);
        }
    };
    if let Some(why) = setup::missing(args.containerd) {
        println!("overhead bench skipped: {why}");
        return;
    }
    // The runtime-alone side reaps its containers' inits, as a shim does.
    if let Err(e) = rustix::process::set_child_subreaper(rustix::process::Pid::from_raw(1)) {
        eprintln!("overhead bench: cannot become the child subreaper: {e}");
        std::process::exit(1);
    }
    let result = run(&args);
    while let Ok(Some(_)) = rustix::process::wait(rustix::process::WaitOptions::NOHANG) {}
    if let Err(e) = result {
        eprintln!("overhead bench failed: {e}");
        std::process::exit(1);
    }
}

fn run(args: &Args) -> Result<(), String> {
    let dir = tempfile::Builder::new()
        .prefix("shimless-overhead-")
        .tempdir()
        .map_err(|e| format!("create a temporary directory: {e}"))?;
    let d = dir.path();
    let setup = Setup::write(d, args.state_in.as_deref(), None)?;
    let bin_dir = Path::new(SHIM_BIN)
        .parent()
        .ok_or("the shim binary has no directory")?
        .to_owned();
    let bundle = integration::bundle::BundleBuilder::new()
        .build()
        .map_err(|e| format!("make the busybox rootfs: {e}"))?;
    // Dropped before `setup`: tasks and containers go while the front still answers.
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
        "{} in {}, shimless from {}; load average before: {}",
        args.containerd,
        containerd.dir().display(),
        bin_dir.display(),
        load_average()
    );
    let client = smol::block_on(Client::connect(&containerd.socket(), bundle.rootfs()))?;
    let mut rows = Vec::new();
    for runtime in &args.runtimes {
        if runtime == "crun" {
            if integration::find_program("crun").is_none() {
                println!("crun not measured: it is not installed (scripts/install-deps)");
                continue;
            }
            if let Err(e) = integration::bundle::prepare_crun() {
                println!("crun not measured: {e}");
                continue;
            }
        }
        let mut client = client.clone();
        client.binary = (runtime != "runc").then(|| runtime.clone());
        let alone = Arc::new(Alone::new(runtime, d)?);
        rows.extend(measure(args, &client, &alone).inspect_err(|_| {
            eprintln!(
                "containerd log tail:\n{}\nfront/daemon logs in {}",
                containerd.log_tail(20),
                d.join("logs").display()
            );
        })?);
    }
    println!("load average after: {}", load_average());
    report::print(&rows);
    if let Some(svg) = &args.svg {
        report::plot(svg, &rows).map_err(|e| format!("plot {}: {e}", svg.display()))?;
        println!("plot: {}", svg.display());
    }
    drop(containerd);
    drop(setup);
    Ok(())
}

/// Both concurrencies for one runtime: the three ways rotated in each round.
fn measure(args: &Args, client: &Client, alone: &Arc<Alone>) -> Result<Vec<Row>, String> {
    let runtime = alone.runtime.clone();
    // Warm-up: the first shimless container starts the front and the daemon.
    for way in [Way::Alone, Way::Stock, Way::Shimless] {
        one_run(client, alone, way, &format!("{runtime}-warm"), 2, 1)?;
    }
    let mut rows = Vec::new();
    for (n, concurrency) in [(args.seq, 1), (args.conc, CONCURRENCY)] {
        let mut row = Row {
            runtime: runtime.clone(),
            concurrency,
            alone: Cost::default(),
            stock: Cost::default(),
            shimless: Cost::default(),
        };
        let mut order = [Way::Alone, Way::Stock, Way::Shimless];
        for round in 0..args.rounds {
            for way in order {
                let tag = format!("{runtime}-c{concurrency}-r{round}");
                let took = one_run(client, alone, way, &tag, n, concurrency)?;
                println!(
                    "  {runtime}, {concurrency} at a time, round {round}, {}: {n} in {:.2} s = {:.1} ms each",
                    way.short(),
                    took.as_secs_f64(),
                    took.as_secs_f64() * 1e3 / n as f64
                );
                match way {
                    Way::Alone => row.alone.add(n, took),
                    Way::Stock => row.stock.add(n, took),
                    Way::Shimless => row.shimless.add(n, took),
                }
            }
            order.rotate_left(1);
        }
        rows.push(row);
    }
    Ok(rows)
}

/// `n` lifecycles, `parallel` at a time, one way; how long they took.
fn one_run(
    client: &Client,
    alone: &Arc<Alone>,
    way: Way,
    tag: &str,
    n: usize,
    parallel: usize,
) -> Result<Duration, String> {
    let tag = format!("{tag}-{}", way.short());
    smol::block_on(async {
        match way {
            Way::Stock => lifecycle(client, STOCK, &tag, n, parallel).await,
            Way::Shimless => lifecycle(client, SHIMLESS, &tag, n, parallel).await,
            Way::Alone => {
                let started = Instant::now();
                for_each(n, parallel, |i| {
                    let id = format!("{tag}-{i}");
                    let spec = client.spec(&id);
                    let alone = alone.clone();
                    smol::unblock(move || alone.lifecycle(&id, &spec))
                })
                .await?;
                Ok(started.elapsed())
            }
        }
    })
}

/// Where the plot goes by default: `docs/overhead.svg` in the workspace.
fn default_svg() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .unwrap_or(Path::new("."))
        .join("docs/overhead.svg")
}
