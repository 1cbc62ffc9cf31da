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

#[path = "peer/go_shim.rs"]
mod go_shim;

/// containerd's Containers and Tasks services (client side), from `benches/proto/`.
#[allow(missing_docs, clippy::all, clippy::pedantic)]
mod api {
    pub mod containers {
        include!(concat!(
            env!("OUT_DIR"),
            "/bench/containerd.services.containers.v1.rs"
        ));
    }
    pub mod tasks {
        include!(concat!(
            env!("OUT_DIR"),
            "/bench/containerd.services.tasks.v1.rs"
        ));
    }
}

use api::containers::containers_client::ContainersClient;
use api::containers::{Container, CreateContainerRequest, DeleteContainerRequest, container};
use api::tasks::tasks_client::TasksClient;
use api::tasks::{CreateTaskRequest, DeleteTaskRequest, KillRequest, StartRequest, WaitRequest};
use integration::containerd::{Containerd, ContainerdConfig, Version, processes_naming};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};
use task_service::grpc::Channel;

/// The containerd namespace of the benchmark (also the parent of its containers' cgroups).
const NS: &str = "shimless-bench";
const STOCK: &str = "io.containerd.runc.v2";
const SHIMLESS: &str = "io.containerd.shimless.v2";
const SPEC_TYPE: &str = "types.containerd.io/opencontainers/runtime-spec/1/Spec";
const RUNC_OPTIONS_TYPE: &str = "containerd.runc.v1.Options";
const SHIM_BIN: &str = env!("CARGO_BIN_EXE_containerd-shim-shimless-v2");
/// How many containers are started (and removed) at once in the memory part.
const FILL_PARALLEL: usize = 16;
/// The concurrency of the concurrent lifecycle.
const CONCURRENCY: usize = 16;

#[derive(Debug, Clone)]
struct Args {
    sizes: Vec<usize>,
    seq: usize,
    conc: usize,
    rounds: usize,
    crun: bool,
    /// shimless's `containerd_protocol` (`ttrpc` or `grpc`), when given.
    protocol: Option<String>,
    /// A directory (a tmpfs, as a node's `/run`) for shimless's records, else the bench's own.
    state_in: Option<PathBuf>,
    /// Where the plot goes (none for containerd 2.1 unless `--svg` is given).
    svg: Option<PathBuf>,
    /// Which containerd (`--containerd 1.7|2.1`).
    containerd: Version,
}

fn parse_args() -> Result<Args, String> {
    let workspace = Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .unwrap_or(Path::new("."))
        .to_owned();
    let mut args = Args {
        sizes: vec![10, 100, 1000],
        seq: 50,
        conc: 160,
        rounds: 2,
        crun: false,
        protocol: None,
        state_in: None,
        svg: None,
        containerd: Version::V1_7,
    };
    let mut svg = None;
    let mut it = std::env::args().skip(1);
    while let Some(arg) = it.next() {
        let mut value = |name: &str| {
            it.next()
                .ok_or_else(|| format!("{name} needs a value (see the module docs)"))
        };
        let number = |name: &str, v: String| {
            v.parse::<usize>()
                .map_err(|_| format!("{name} {v:?}: expected a whole number"))
        };
        match arg.as_str() {
            "--sizes" => {
                let v = value("--sizes")?;
                args.sizes = v
                    .split(',')
                    .filter(|n| !n.trim().is_empty())
                    .map(|n| number("--sizes", n.trim().to_string()))
                    .collect::<Result<_, _>>()?;
            }
            "--seq" => args.seq = number("--seq", value("--seq")?)?,
            "--conc" => args.conc = number("--conc", value("--conc")?)?,
            "--rounds" => args.rounds = number("--rounds", value("--rounds")?)?.max(1),
            "--crun" => args.crun = true,
            "--containerd-protocol" => args.protocol = Some(value("--containerd-protocol")?),
            "--svg" => svg = Some(PathBuf::from(value("--svg")?)),
            "--containerd" => {
                let v = value("--containerd")?;
                args.containerd = v.parse().map_err(|e| format!("--containerd: {e}"))?;
            }
            "--state-in" => args.state_in = Some(PathBuf::from(value("--state-in")?)),
            // cargo bench passes `--bench`; libtest-style flags are not ours.
            _ => {}
        }
    }
    args.svg = match (svg, args.containerd) {
        (Some(path), _) => Some(path),
        (None, Version::V1_7) => Some(workspace.join("docs/shimless-vs-stock.svg")),
        (None, _) => None,
    };
    Ok(args)
}

fn mib(kib: u64) -> f64 {
    kib as f64 / 1024.0
}

/// Removes, when dropped, what shimless left: the front and the daemon (every process whose
/// command line names `config`), the containers in its runc roots, its eBPF pins, and the
/// benchmark's empty cgroups.
struct ShimlessCleanup {
    config: PathBuf,
    runc_root: PathBuf,
    pin_dir: PathBuf,
}

impl ShimlessCleanup {
    /// Kills the front and the daemon (the next shim `start` starts them again).
    fn kill_processes(&self) {
        for _ in 0..50 {
            let pids = processes_naming(&self.config);
            if pids.is_empty() {
                return;
            }
            for pid in pids {
                if let Some(pid) = rustix::process::Pid::from_raw(pid as i32) {
                    let _ = rustix::process::kill_process(pid, rustix::process::Signal::KILL);
                }
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }
}

impl Drop for ShimlessCleanup {
    fn drop(&mut self) {
        self.kill_processes();
        // Every namespace directory, whichever namespace shimless filed the containers under.
        for entry in std::fs::read_dir(&self.runc_root)
            .into_iter()
            .flatten()
            .flatten()
        {
            for runtime in ["runc", "crun"] {
                integration::bundle::delete_all(runtime, &entry.path());
            }
        }
        let _ = std::fs::remove_dir_all(&self.pin_dir);
        remove_empty_cgroups();
    }
}

/// Removes the benchmark's cgroups (`/<NS>/<id>` under `/sys/fs/cgroup/*`) that are empty, and
/// what crun 1.8.1 makes under `/sys/fs/cgroup/hugetlb`, which on this machine is a plain
/// directory rather than a mounted hierarchy (crun creates `<NS>/<id>/cgroup.procs` there as
/// ordinary files and leaves them). On a real cgroup file system `rmdir` removes only cgroups
/// without processes or children; elsewhere the whole `<NS>` directory goes.
fn remove_empty_cgroups() {
    const CGROUP_SUPER_MAGIC: i64 = 0x0027_e0eb;
    const CGROUP2_SUPER_MAGIC: i64 = 0x6367_7270;
    for hierarchy in std::fs::read_dir("/sys/fs/cgroup")
        .into_iter()
        .flatten()
        .flatten()
    {
        let parent = hierarchy.path().join(NS);
        if !parent.is_dir() {
            continue;
        }
        let is_cgroupfs = rustix::fs::statfs(&parent).is_ok_and(|fs| {
            let kind = fs.f_type;
            kind == CGROUP_SUPER_MAGIC || kind == CGROUP2_SUPER_MAGIC
        });
        if !is_cgroupfs {
            let _ = std::fs::remove_dir_all(&parent);
            continue;
        }
        for child in std::fs::read_dir(&parent).into_iter().flatten().flatten() {
            if child.file_type().is_ok_and(|t| t.is_dir()) {
                let _ = std::fs::remove_dir(child.path());
            }
        }
        let _ = std::fs::remove_dir(&parent);
    }
}

/// The PIDs of this run's `shimless-front` and `shimlessd`.
fn shimless_pids(config: &Path) -> (Vec<u32>, Vec<u32>) {
    let mut front = Vec::new();
    let mut daemon = Vec::new();
    for pid in processes_naming(config) {
        let cmdline = std::fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
        let argv0 = cmdline.split(|b| *b == 0).next().unwrap_or_default();
        let argv0 = String::from_utf8_lossy(argv0);
        if argv0.ends_with("shimless-front") {
            front.push(pid);
        } else if argv0.ends_with("shimlessd") {
            daemon.push(pid);
        }
    }
    (front, daemon)
}

/// The PIDs of the stock shims of `containerd`.
fn stock_shim_pids(containerd: &Containerd) -> Vec<u32> {
    containerd
        .shim_pids()
        .into_iter()
        .filter(|pid| {
            let cmdline = std::fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
            let argv0 = cmdline.split(|b| *b == 0).next().unwrap_or_default();
            String::from_utf8_lossy(argv0).ends_with("containerd-shim-runc-v2")
        })
        .collect()
}

/// PSS and private memory summed over `pids`, in KiB.
fn memory_sum(pids: &[u32]) -> (u64, u64) {
    pids.iter()
        .filter_map(|pid| go_shim::memory_kib(*pid))
        .fold((0, 0), |(p, q), (pss, private)| (p + pss, q + private))
}

/// A client of one containerd: containers, tasks, and how to make one container.
#[derive(Clone)]
struct Client {
    containers: ContainersClient<Channel>,
    tasks: TasksClient<Channel>,
    rootfs: PathBuf,
    /// `BinaryName` for the runc options (`crun`), or none.
    binary: Option<String>,
}

fn namespaced<T>(msg: T) -> tonic::Request<T> {
    let mut req = tonic::Request::new(msg);
    req.metadata_mut().insert(
        "containerd-namespace",
        tonic::metadata::MetadataValue::from_static(NS),
    );
    req.set_timeout(Duration::from_secs(120));
    req
}

impl Client {
    async fn connect(socket: &Path, rootfs: PathBuf) -> Result<Client, String> {
        let channel = task_service::grpc::connect(socket)
            .await
            .map_err(|e| format!("connect to {}: {e}", socket.display()))?;
        let origin: http::Uri = "http://localhost".parse().map_err(|e| format!("{e}"))?;
        Ok(Client {
            containers: ContainersClient::with_origin(channel.clone(), origin.clone()),
            tasks: TasksClient::with_origin(channel, origin),
            rootfs,
            binary: None,
        })
    }

    /// The OCI spec (JSON) of container `id`.
    fn spec(&self, id: &str) -> Vec<u8> {
        serde_json::json!({
            "ociVersion": "1.1.0",
            "process": {
                "terminal": false,
                "user": {"uid": 0, "gid": 0},
                "args": ["sleep", "1000000"],
                "env": ["PATH=/bin"],
                "cwd": "/",
                "noNewPrivileges": true,
            },
            "root": {"path": self.rootfs, "readonly": true},
            "hostname": "bench",
            "mounts": [
                {"destination": "/proc", "type": "proc", "source": "proc",
                 "options": ["nosuid", "noexec", "nodev"]},
                {"destination": "/dev", "type": "tmpfs", "source": "tmpfs",
                 "options": ["nosuid", "strictatime", "mode=755", "size=65536k"]},
            ],
            "linux": {
                "namespaces": [{"type": "pid"}, {"type": "ipc"}, {"type": "uts"}, {"type": "mount"}],
                "cgroupsPath": format!("/{NS}/{id}"),
            },
        })
        .to_string()
        .into_bytes()
    }

    fn runtime_options(&self) -> Option<prost_types::Any> {
        use prost::Message;
        let binary = self.binary.as_ref()?;
        let options = task_service::api::containerd::runc::v1::Options {
            binary_name: binary.clone(),
            ..Default::default()
        };
        Some(prost_types::Any {
            type_url: RUNC_OPTIONS_TYPE.into(),
            value: options.encode_to_vec(),
        })
    }

    /// Creates and starts container `id` through `runtime`.
    async fn run(&mut self, id: &str, runtime: &str) -> Result<(), String> {
        let container = Container {
            id: id.into(),
            runtime: Some(container::Runtime {
                name: runtime.into(),
                options: self.runtime_options(),
            }),
            spec: Some(prost_types::Any {
                type_url: SPEC_TYPE.into(),
                value: self.spec(id),
            }),
            ..Default::default()
        };
        self.containers
            .create(namespaced(CreateContainerRequest {
                container: Some(container),
            }))
            .await
            .map_err(|e| format!("Containers.Create {id}: {}", e.message()))?;
        self.tasks
            .create(namespaced(CreateTaskRequest {
                container_id: id.into(),
                ..Default::default()
            }))
            .await
            .map_err(|e| format!("Tasks.Create {id} ({runtime}): {}", e.message()))?;
        self.tasks
            .start(namespaced(StartRequest {
                container_id: id.into(),
                exec_id: String::new(),
            }))
            .await
            .map_err(|e| format!("Tasks.Start {id}: {}", e.message()))?;
        Ok(())
    }

    /// Kills (SIGKILL) container `id`, waits for its exit, deletes its task and itself.
    async fn remove(&mut self, id: &str) -> Result<(), String> {
        self.tasks
            .kill(namespaced(KillRequest {
                container_id: id.into(),
                signal: 9,
                ..Default::default()
            }))
            .await
            .map_err(|e| format!("Tasks.Kill {id}: {}", e.message()))?;
        let exit = self
            .tasks
            .wait(namespaced(WaitRequest {
                container_id: id.into(),
                exec_id: String::new(),
            }))
            .await
            .map_err(|e| format!("Tasks.Wait {id}: {}", e.message()))?
            .into_inner();
        if exit.exit_status != 137 {
            return Err(format!(
                "{id} exited with {} after SIGKILL, not 137",
                exit.exit_status
            ));
        }
        self.tasks
            .delete(namespaced(DeleteTaskRequest {
                container_id: id.into(),
            }))
            .await
            .map_err(|e| format!("Tasks.Delete {id}: {}", e.message()))?;
        self.containers
            .delete(namespaced(DeleteContainerRequest { id: id.into() }))
            .await
            .map_err(|e| format!("Containers.Delete {id}: {}", e.message()))?;
        Ok(())
    }
}

/// Runs `job(i)` for every i in 0..n, `parallel` at a time; the first error stops new jobs.
async fn for_each<F, Fut>(n: usize, parallel: usize, job: F) -> Result<(), String>
where
    F: Fn(usize) -> Fut,
    Fut: std::future::Future<Output = Result<(), String>>,
{
    let next = AtomicUsize::new(0);
    let failed = std::sync::Mutex::new(None::<String>);
    let worker = || async {
        loop {
            let i = next.fetch_add(1, Ordering::Relaxed);
            if i >= n || failed.lock().map(|f| f.is_some()).unwrap_or(true) {
                return;
            }
            if let Err(e) = job(i).await {
                if let Ok(mut f) = failed.lock() {
                    f.get_or_insert(e);
                }
                return;
            }
        }
    };
    let mut workers: Vec<_> = (0..parallel.max(1)).map(|_| Box::pin(worker())).collect();
    futures_lite::future::poll_fn(|cx| {
        workers.retain_mut(|w| w.as_mut().poll(cx).is_pending());
        if workers.is_empty() {
            std::task::Poll::Ready(())
        } else {
            std::task::Poll::Pending
        }
    })
    .await;
    drop(workers);
    match failed.into_inner() {
        Ok(Some(e)) => Err(e),
        _ => Ok(()),
    }
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

/// One lifecycle run: `n` containers, `parallel` at a time, through `runtime`.
async fn lifecycle(
    client: &Client,
    runtime: &str,
    tag: &str,
    n: usize,
    parallel: usize,
) -> Result<Duration, String> {
    let started = Instant::now();
    for_each(n, parallel, |i| {
        let mut client = client.clone();
        let id = format!("{tag}-{i}");
        async move {
            client.run(&id, runtime).await?;
            client.remove(&id).await
        }
    })
    .await?;
    Ok(started.elapsed())
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

fn print_memory(rows: &[MemoryRow]) {
    println!();
    println!(
        "| N | stock shims | stock total PSS MiB (private) | stock per shim MiB | shimless front + daemon PSS MiB (private) | front | daemon | stock / shimless |"
    );
    println!("|---:|---:|---:|---:|---:|---:|---:|---:|");
    for r in rows {
        let per = if r.stock_shims > 0 {
            mib(r.stock_pss) / r.stock_shims as f64
        } else {
            0.0
        };
        println!(
            "| {} | {} | {:.1} ({:.1}) | {:.2} | {:.1} ({:.1}) | {:.1} | {:.1} | {:.0}× |",
            r.n,
            r.stock_shims,
            mib(r.stock_pss),
            mib(r.stock_private),
            per,
            mib(r.shimless_pss()),
            mib(r.front_private + r.daemon_private),
            mib(r.front_pss),
            mib(r.daemon_pss),
            r.stock_pss as f64 / r.shimless_pss().max(1) as f64
        );
    }
    if let Some(base) = rows.iter().find(|r| r.n == 10) {
        for r in rows.iter().filter(|r| r.n > 10) {
            let per = (r.front_pss as f64 - base.front_pss as f64) / (r.n - 10) as f64;
            println!(
                "front PSS per containerd connection (N = 10 → {}): {:.1} KiB; daemon per container: {:.1} KiB",
                r.n,
                per,
                (r.daemon_pss as f64 - base.daemon_pss as f64) / (r.n - 10) as f64
            );
        }
    }
}

fn print_rates(rates: &Rates) {
    println!();
    println!("| lifecycle | stock containers/s | shimless containers/s | shimless / stock |");
    println!("|---|---:|---:|---:|");
    for (label, stock, shimless) in rates {
        println!(
            "| {label} ({} each) | {:.1} | {:.1} | {:.2}× |",
            stock.containers,
            stock.per_second(),
            shimless.per_second(),
            shimless.per_second() / stock.per_second()
        );
    }
}

fn plot(path: &Path, rows: &[MemoryRow], rates: &Rates) -> Result<(), Box<dyn std::error::Error>> {
    use plotters::prelude::*;
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir)?;
    }
    let root = SVGBackend::new(path, (1100, 480)).into_drawing_area();
    root.fill(&WHITE)?;
    let (left, right) = root.split_horizontally(560);
    let stock_color = RGBColor(204, 85, 0);
    let shimless_color = RGBColor(0, 114, 178);

    if !rows.is_empty() {
        let max_n = rows.iter().map(|r| r.n).max().unwrap_or(10) as f64;
        let min_n = rows.iter().map(|r| r.n).min().unwrap_or(10) as f64;
        let max_mib = rows
            .iter()
            .map(|r| mib(r.stock_pss.max(r.shimless_pss())))
            .fold(1.0, f64::max);
        let min_mib = rows
            .iter()
            .map(|r| mib(r.stock_pss.min(r.shimless_pss())))
            .fold(max_mib, f64::min)
            .max(0.1);
        let mut chart = ChartBuilder::on(&left)
            .caption("Memory (PSS) vs running containers", ("sans-serif", 20))
            .margin(15)
            .x_label_area_size(45)
            .y_label_area_size(60)
            .build_cartesian_2d(
                ((min_n * 0.8)..(max_n * 1.25)).log_scale(),
                ((min_mib * 0.5)..(max_mib * 2.0)).log_scale(),
            )?;
        chart
            .configure_mesh()
            .light_line_style(WHITE)
            .x_label_formatter(&|n| format!("{n:.0}"))
            .y_label_formatter(&|m| format!("{m:.0}"))
            .x_desc("running containers (N), log scale")
            .y_desc("PSS, MiB, log scale")
            .draw()?;
        let series = [
            (
                "stock: sum of containerd-shim-runc-v2",
                stock_color,
                rows.iter()
                    .map(|r| (r.n as f64, mib(r.stock_pss)))
                    .collect::<Vec<_>>(),
            ),
            (
                "shimless: front + daemon",
                shimless_color,
                rows.iter()
                    .map(|r| (r.n as f64, mib(r.shimless_pss())))
                    .collect(),
            ),
        ];
        for (name, color, points) in series {
            chart
                .draw_series(LineSeries::new(points.clone(), color.stroke_width(2)))?
                .label(name)
                .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], color));
            chart.draw_series(points.iter().map(|p| Circle::new(*p, 4, color.filled())))?;
            chart.draw_series(points.iter().map(|&(x, y)| {
                Text::new(
                    format!("{y:.0}"),
                    (x, y * 1.25),
                    ("sans-serif", 13).into_font(),
                )
            }))?;
        }
        chart
            .configure_series_labels()
            .position(SeriesLabelPosition::UpperLeft)
            .background_style(WHITE.mix(0.8))
            .border_style(BLACK)
            .draw()?;
    }

    if !rates.is_empty() {
        let max_rate = rates
            .iter()
            .map(|(_, s, l)| s.per_second().max(l.per_second()))
            .fold(1.0, f64::max);
        let groups = rates.len();
        let labels: Vec<String> = rates.iter().map(|(l, _, _)| l.clone()).collect();
        let mut chart = ChartBuilder::on(&right)
            .caption("Lifecycle throughput (create→delete)", ("sans-serif", 20))
            .margin(15)
            .x_label_area_size(45)
            .y_label_area_size(60)
            .build_cartesian_2d(0.0..groups as f64, 0.0..max_rate * 1.2)?;
        chart
            .configure_mesh()
            .disable_x_mesh()
            .light_line_style(WHITE)
            .x_labels(groups * 2 + 1)
            .x_label_formatter(&|x| {
                let i = x.floor() as usize;
                if (x - x.floor() - 0.5).abs() < 0.01 && i < labels.len() {
                    labels[i].clone()
                } else {
                    String::new()
                }
            })
            .y_desc("containers per second")
            .draw()?;
        for (i, (_, stock, shimless)) in rates.iter().enumerate() {
            let x = i as f64;
            for (offset, color, value) in [
                (0.12, stock_color, stock.per_second()),
                (0.52, shimless_color, shimless.per_second()),
            ] {
                chart.draw_series(std::iter::once(Rectangle::new(
                    [(x + offset, 0.0), (x + offset + 0.36, value)],
                    color.filled(),
                )))?;
                chart.draw_series(std::iter::once(Text::new(
                    format!("{value:.1}"),
                    (x + offset + 0.05, value + max_rate * 0.04),
                    ("sans-serif", 13).into_font(),
                )))?;
            }
        }
        for (name, color) in [("stock", stock_color), ("shimless", shimless_color)] {
            chart
                .draw_series(std::iter::empty::<Rectangle<(f64, f64)>>())?
                .label(name)
                .legend(move |(x, y)| {
                    Rectangle::new([(x, y - 5), (x + 15, y + 5)], color.filled())
                });
        }
        chart
            .configure_series_labels()
            .position(SeriesLabelPosition::UpperLeft)
            .background_style(WHITE.mix(0.8))
            .border_style(BLACK)
            .draw()?;
    }
    root.present()?;
    Ok(())
}

fn main() {
    let args = match parse_args() {
        Ok(args) => args,
        Err(e) => {
            eprintln!("containerd bench: {e}");
            std::process::exit(2);
        }
    };
    if !rustix::process::geteuid().is_root() {
        println!("containerd bench skipped: needs root");
        return;
    }
    for program in ["containerd", "ctr", "containerd-shim-runc-v2"] {
        let path = args.containerd.program(program);
        if !path.is_absolute() && integration::find_program(program).is_none()
            || path.is_absolute() && !path.exists()
        {
            println!(
                "containerd bench skipped: {} of {} is not installed",
                path.display(),
                args.containerd
            );
            return;
        }
    }
    if integration::find_program("runc").is_none() {
        println!("containerd bench skipped: runc is not installed");
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
    // shimless's records where a node keeps them: `/run` is a tmpfs on a systemd node (here it
    // is on the ext4 disk, where each record's fsync waits for the journal).
    let state_dir = match &args.state_in {
        Some(parent) => Some(
            tempfile::Builder::new()
                .prefix("shimless-bench-state-")
                .tempdir_in(parent)
                .map_err(|e| format!("create a directory in {}: {e}", parent.display()))?,
        ),
        None => None,
    };
    let state = state_dir
        .as_ref()
        .map_or_else(|| d.join("state"), |s| s.path().to_owned());
    let config = d.join("shimless.toml");
    let cleanup = ShimlessCleanup {
        config: config.clone(),
        runc_root: d.join("runc"),
        pin_dir: PathBuf::from(format!("/sys/fs/bpf/shimless-bench-{}", std::process::id())),
    };
    std::fs::write(
        &config,
        format!(
            "socket = \"{0}/run/front.sock\"\ndaemon_socket = \"{0}/run/daemon.sock\"\n\
             state_dir = \"{3}\"\nrunc_root = \"{0}/runc\"\nlog_dir = \"{0}/logs\"\n\
             bpf_pin_dir = \"{1}\"\n{2}",
            d.display(),
            cleanup.pin_dir.display(),
            args.protocol
                .as_ref()
                .map(|p| format!("containerd_protocol = \"{p}\"\n"))
                .unwrap_or_default(),
            state.display()
        ),
    )
    .map_err(|e| format!("write {}: {e}", config.display()))?;
    let bin_dir = Path::new(SHIM_BIN)
        .parent()
        .ok_or("the shim binary has no directory")?
        .to_owned();
    let bundle = integration::bundle::BundleBuilder::new()
        .build()
        .map_err(|e| format!("make the busybox rootfs: {e}"))?;
    // Dropped before `cleanup` (declared after it): tasks and containers go while the front
    // still answers, then containerd and the stock shims.
    let containerd = Containerd::start(
        ContainerdConfig::new()
            .version(args.containerd)
            .path_prepend(&bin_dir)
            .env(task_service::config::PATH_ENV, config.display().to_string()),
    )
    .map_err(|e| format!("start containerd: {e}"))?;
    println!(
        "{} in {} with {} first on its PATH, SHIMLESS_CONFIG={}",
        args.containerd,
        containerd.dir().display(),
        bin_dir.display(),
        config.display()
    );
    let load = std::fs::read_to_string("/proc/loadavg").unwrap_or_default();
    println!("load average before: {}", load.trim());

    let result = smol::block_on(async {
        let client = Client::connect(&containerd.socket(), bundle.rootfs()).await?;
        println!("memory (sizes {:?}):", args.sizes);
        let rows = memory(&client, &containerd, &cleanup, &args.sizes).await?;
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
        Ok::<_, String>((rows, rates))
    });
    let load = std::fs::read_to_string("/proc/loadavg").unwrap_or_default();
    println!("load average after: {}", load.trim());
    let (rows, rates) = match result {
        Ok(r) => r,
        Err(e) => {
            eprintln!(
                "containerd log tail:\n{}\nfront/daemon logs in {}",
                containerd.log_tail(20),
                d.join("logs").display()
            );
            return Err(e);
        }
    };
    if let Some(svg) = &args.svg {
        plot(svg, &rows, &rates).map_err(|e| format!("plot {}: {e}", svg.display()))?;
        println!("plot: {}", svg.display());
    }
    drop(containerd);
    drop(cleanup);
    Ok(())
}
