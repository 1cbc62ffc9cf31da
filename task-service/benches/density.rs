//! Density benchmark (not a timed test): what shimless (`shimless-front` + `shimlessd`) costs
//! with up to N running containers, next to the Go shim (`containerd-shim-runc-v2`, one per
//! container) measured in the same run on a private containerd; at the largest size, the
//! latency of `State` and `Pids`, exit → `Wait` with 100 exiting at once, the daemon's
//! recovery after `kill -9` with 100 exits happening while it is down, and the eBPF exit
//! watch's occupancy.
//!
//! ```text
//! cargo bench -p task-service --bench density -- 5000 --stock 200 --state-in /dev/shm
//! ```
//!
//! `N` (default 1000) is the largest size; the sizes measured are 10, 100, 1000, 2000, 5000 up
//! to N, and N. `--stock K` (default 20) runs K Go shims for their mean memory (from which the
//! size where they would fill this machine's memory is computed); `--parallel P` (default 8)
//! starts P containers at a time; `--state-in DIR` keeps shimless's records in DIR (`/dev/shm`:
//! a tmpfs, as a node's `/run`); `--svg PATH` writes the plot elsewhere than
//! `docs/density.svg` (`SHIMLESS_BENCH_DIR=DIR` is the same as `--state-in DIR`);
//! `--exit-rounds R` (default 1) makes 100 containers exit at once R times;
//! `SHIMLESS_BENCH_DAEMON=PATH` runs another `shimlessd` build (to compare two builds).
//!
//! Exit → `Wait` is timed from the moment the benchmark tells the containers to exit (which
//! includes their shells waking up and exiting on busy CPUs), and from the kernel's own times of
//! each exit, taken by a tracefs instance: when the process starts dying (`sched_process_exit`)
//! and when its parent is sent `SIGCHLD` (it is waitable, its pidfd readable: from there on
//! the time is the daemon's). The smallest container: busybox `sh` reading a FIFO, one rootfs shared
//! read-only, no network namespace. Needs root, runc and `/bin/busybox`; skips otherwise.

#[path = "density/bundles.rs"]
mod bundles;
#[path = "peer/exit_trace.rs"]
mod exit_trace;
#[path = "peer/go_shim.rs"]
mod go_shim;
#[path = "density/report.rs"]
mod report;
#[path = "density/service.rs"]
mod service;

use bundles::Bundles;
use exit_trace::{ExitTrace, mono_now};
use service::Service;
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};
use task_service::api::containerd::task::v3::*;
use task_service::api::containerd::v1::types::Status;
use task_service::client::{Client, TaskClient, namespaced};
use tonic::Request;

const NS: &str = "density";
/// How many containers exit at once in the exit → Wait measure, and while the daemon is down.
const EXITING: usize = 100;
/// How many `State` (and `Pids`) calls the latency figures are taken from.
const CALLS: usize = 300;

fn req<T>(msg: T) -> Request<T> {
    let mut req = namespaced(NS, msg);
    req.set_timeout(Duration::from_secs(300));
    req
}

fn id(i: usize) -> String {
    format!("d{i:05}")
}

async fn client(socket: &Path) -> Result<TaskClient, String> {
    Ok(Client::connect(socket)
        .await
        .map_err(|e| format!("connect to {}: {e}", socket.display()))?
        .task())
}

pub(crate) fn mib(kib: u64) -> f64 {
    kib as f64 / 1024.0
}

pub(crate) fn percentile(sorted: &[Duration], p: f64) -> Duration {
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i]
}

/// The bench's flags.
struct Args {
    max: usize,
    stock: usize,
    parallel: usize,
    state_in: Option<PathBuf>,
    svg: PathBuf,
    exit_rounds: usize,
}

fn parse_args() -> Result<Args, String> {
    let mut args = Args {
        max: 1000,
        stock: 20,
        parallel: 8,
        state_in: std::env::var_os("SHIMLESS_BENCH_DIR").map(PathBuf::from),
        svg: Path::new(env!("CARGO_MANIFEST_DIR"))
            .parent()
            .unwrap_or(Path::new("."))
            .join("docs/density.svg"),
        exit_rounds: 1,
    };
    let mut it = std::env::args().skip(1);
    while let Some(arg) = it.next() {
        let mut value = |name: &str| it.next().ok_or_else(|| format!("{name} needs a value"));
        let number = |name: &str, v: String| {
            v.parse::<usize>()
                .map_err(|_| format!("{name} {v:?}: expected a whole number"))
        };
        match arg.as_str() {
            "--stock" => args.stock = number("--stock", value("--stock")?)?,
            "--parallel" => args.parallel = number("--parallel", value("--parallel")?)?.max(1),
            "--state-in" => args.state_in = Some(PathBuf::from(value("--state-in")?)),
            "--svg" => args.svg = PathBuf::from(value("--svg")?),
            "--exit-rounds" => {
                args.exit_rounds = number("--exit-rounds", value("--exit-rounds")?)?.max(1)
            }
            other => {
                if let Ok(n) = other.parse::<usize>() {
                    args.max = n.max(1);
                }
                // cargo bench passes `--bench`; libtest-style flags are not ours.
            }
        }
    }
    Ok(args)
}

/// One measured size: containers, the front's and the daemon's PSS (KiB), the exit watch's
/// tracked processes, and the seconds since the fill began.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Row {
    pub(crate) n: usize,
    pub(crate) front_pss: u64,
    pub(crate) daemon_pss: u64,
    pub(crate) tracked: Option<u32>,
    /// The daemon's open file descriptors (bounded by its `RLIMIT_NOFILE`).
    pub(crate) daemon_fds: usize,
    pub(crate) seconds: f64,
}

impl Row {
    pub(crate) fn pss(&self) -> u64 {
        self.front_pss + self.daemon_pss
    }
}

fn main() {
    let args = match parse_args() {
        Ok(args) => args,
        Err(e) => {
            eprintln!("density: {e}");
            std::process::exit(2);
        }
    };
    if !rustix::process::geteuid().is_root()
        || !Path::new("/bin/busybox").exists()
        || integration::find_program("runc").is_none()
    {
        println!("density: needs root, runc and /bin/busybox (scripts/install-deps); skipped");
        return;
    }
    if let Err(e) = limits(args.max) {
        eprintln!("density: {e}");
        std::process::exit(1);
    }
    // Containers whose daemon was killed are reparented here, not to PID 1 (which does not
    // reap on this machine); the new daemon takes their exits from the kernel's record.
    if let Err(e) = rustix::process::set_child_subreaper(rustix::process::Pid::from_raw(1)) {
        eprintln!("density: cannot become the child subreaper: {e}");
        std::process::exit(1);
    }
    let result = run(&args);
    while let Ok(Some(_)) = rustix::process::wait(rustix::process::WaitOptions::NOHANG) {}
    if let Err(e) = result {
        eprintln!("density failed: {e}");
        std::process::exit(1);
    }
}

/// Checks and prints the limits that bound N on this machine; raises `RLIMIT_NOFILE` (which
/// the daemon inherits) when it is too low.
fn limits(max: usize) -> Result<(), String> {
    let want = (max as u64 * 4 + 4096).max(65536);
    integration::raise_fd_limit(want);
    let nofile = rustix::process::getrlimit(rustix::process::Resource::Nofile).current;
    let read = |p: &str| {
        std::fs::read_to_string(p)
            .ok()
            .and_then(|v| v.trim().parse::<u64>().ok())
    };
    let pid_max = read("/proc/sys/kernel/pid_max");
    let threads = read("/proc/sys/kernel/threads-max");
    let tasks = std::fs::read_dir("/proc").map_or(0, |d| d.count()) as u64;
    println!(
        "limits: RLIMIT_NOFILE {nofile:?}, pid_max {pid_max:?} ({tasks} entries in /proc now), \
         threads-max {threads:?}, exit watch capacity {}",
        exitwatch::CAPACITY
    );
    if max as u64 > exitwatch::CAPACITY as u64 {
        return Err(format!(
            "{max} containers exceed the exit watch's capacity ({}): pass a smaller N",
            exitwatch::CAPACITY
        ));
    }
    if let Some(pid_max) = pid_max
        && max as u64 * 2 + tasks > pid_max
    {
        return Err(format!(
            "{max} containers (and a runtime call each) need more PIDs than pid_max {pid_max} \
             leaves ({tasks} in use): raise /proc/sys/kernel/pid_max or pass a smaller N"
        ));
    }
    Ok(())
}

fn run(args: &Args) -> Result<(), String> {
    let mut steps: Vec<usize> = [10, 100, 1000, 2000, 5000]
        .into_iter()
        .filter(|&s| s < args.max)
        .collect();
    steps.push(args.max);
    println!("load average before: {}", load_average());
    let mut service = Service::start(args.state_in.as_deref())?;
    let bundles = Bundles::new(Path::new("/tmp"))?;
    let (front, daemon) = service.pids();
    let empty = pss(front) + pss(daemon);
    println!(
        "front + daemon with 0 containers: PSS {:.2} MiB",
        mib(empty)
    );
    let socket = service.socket();
    let outcome = (|| {
        let rows = fill(&socket, &service, &bundles, &steps, args.parallel)?;
        let n = *steps.last().unwrap_or(&0);
        let calls = smol::block_on(call_latencies(&socket, n))?;
        let daemon = service.pids().1;
        let mut exit_wait = Vec::new();
        for round in 0..args.exit_rounds {
            let end = n.saturating_sub(round * EXITING);
            let exiting = end.saturating_sub(EXITING)..end;
            exit_wait.extend(exit_to_wait(&socket, &bundles, daemon, exiting)?);
        }
        exit_wait.sort();
        // Once with every container alive (adoption alone), once with exits while down (among
        // those that did not exit above).
        let alive = n.saturating_sub(EXITING * args.exit_rounds);
        let adopt = restart(&mut service, &socket, &bundles, (n, alive), 0)?;
        let exits = EXITING.min(n.saturating_sub(EXITING * args.exit_rounds));
        let restart = vec![
            adopt,
            restart(&mut service, &socket, &bundles, (n, alive), exits)?,
        ];
        let watch = service.exit_watch().ok();
        Ok::<_, String>((rows, calls, exit_wait, restart, watch))
    })();
    let result = outcome.and_then(|(rows, calls, exit_wait, restart, watch)| {
        let stock = go_shim_memory(&bundles, args.stock);
        let figures = report::Figures {
            empty,
            rows,
            calls,
            exit_wait,
            restart,
            watch,
            stock,
            memory_total: mem_total_kib(),
        };
        report::print(&figures);
        report::plot(&args.svg, &figures).map_err(|e| format!("plot: {e}"))?;
        println!("plot: {}", args.svg.display());
        Ok(())
    });
    let n = *steps.last().unwrap_or(&0);
    let removed = Instant::now();
    remove_all(&socket, n, args.parallel);
    println!(
        "removed {n} containers in {:.1} s; load average after: {}",
        removed.elapsed().as_secs_f64(),
        load_average()
    );
    drop(service);
    drop(bundles);
    result
}

/// PSS of a process, KiB (0 when it is gone).
fn pss(pid: u32) -> u64 {
    go_shim::memory_kib(pid).map_or(0, |m| m.0)
}

/// Creates and starts containers `d00000..` up to each of `steps`, `parallel` at a time,
/// measuring memory and the exit watch at each.
fn fill(
    socket: &Path,
    service: &Service,
    bundles: &Bundles,
    steps: &[usize],
    parallel: usize,
) -> Result<Vec<Row>, String> {
    let started = Instant::now();
    let mut rows = Vec::new();
    let mut made = 0;
    for &step in steps {
        smol::block_on(for_each(
            made..step,
            parallel,
            socket,
            |mut c, i| async move {
                let bundle = bundles.make(&id(i))?;
                c.create(req(CreateTaskRequest {
                    id: id(i),
                    bundle: bundle.display().to_string(),
                    ..Default::default()
                }))
                .await
                .map_err(|e| format!("Create {}: {}", id(i), e.message()))?;
                c.start(req(StartRequest {
                    id: id(i),
                    ..Default::default()
                }))
                .await
                .map_err(|e| format!("Start {}: {}", id(i), e.message()))?;
                Ok(())
            },
        ))?;
        made = step;
        std::thread::sleep(Duration::from_millis(500));
        let (front, daemon) = service.pids();
        let watch = service.exit_watch();
        let row = Row {
            n: step,
            front_pss: pss(front),
            daemon_pss: pss(daemon),
            tracked: watch.as_ref().ok().map(|w| w.tracked),
            daemon_fds: std::fs::read_dir(format!("/proc/{daemon}/fd")).map_or(0, |d| d.count()),
            seconds: started.elapsed().as_secs_f64(),
        };
        println!(
            "{step} containers: front PSS {:.2} MiB, daemon PSS {:.2} MiB, daemon fds {}, exit watch {} ({:.0} s)",
            mib(row.front_pss),
            mib(row.daemon_pss),
            row.daemon_fds,
            match &watch {
                Ok(w) => format!("{} tracked / {} capacity", w.tracked, w.capacity),
                Err(e) => e.clone(),
            },
            row.seconds
        );
        rows.push(row);
    }
    Ok(rows)
}

/// Runs `job(client, i)` for each i of `range`, `parallel` at a time on one connection; the
/// first error stops new jobs and is returned.
async fn for_each<F, Fut>(
    range: std::ops::Range<usize>,
    parallel: usize,
    socket: &Path,
    job: F,
) -> Result<(), String>
where
    F: Fn(TaskClient, usize) -> Fut,
    Fut: std::future::Future<Output = Result<(), String>>,
{
    let c = client(socket).await?;
    let next = AtomicUsize::new(range.start);
    let failed = Mutex::new(None::<String>);
    let worker = || async {
        loop {
            let i = next.fetch_add(1, Ordering::Relaxed);
            if i >= range.end || failed.lock().map(|f| f.is_some()).unwrap_or(true) {
                return;
            }
            if let Err(e) = job(c.clone(), i).await {
                if let Ok(mut f) = failed.lock() {
                    f.get_or_insert(e);
                }
                return;
            }
        }
    };
    join_all((0..parallel.max(1)).map(|_| worker()).collect()).await;
    match failed.into_inner() {
        Ok(Some(e)) => Err(e),
        _ => Ok(()),
    }
}

/// `State` and `Pids` latency with `n` containers: `CALLS` of each, one at a time, spread over
/// the containers.
async fn call_latencies(socket: &Path, n: usize) -> Result<report::Calls, String> {
    let mut c = client(socket).await?;
    let mut state = Vec::new();
    let mut pids = Vec::new();
    for k in 0..CALLS {
        let i = (k * 7919) % n;
        let t = Instant::now();
        let answer = c
            .state(req(StateRequest {
                id: id(i),
                ..Default::default()
            }))
            .await
            .map_err(|e| format!("State {}: {}", id(i), e.message()))?
            .into_inner();
        state.push(t.elapsed());
        if answer.status != Status::Running as i32 {
            return Err(format!(
                "State {}: status {}, not running",
                id(i),
                answer.status
            ));
        }
        let t = Instant::now();
        let answer = c
            .pids(req(PidsRequest { id: id(i) }))
            .await
            .map_err(|e| format!("Pids {}: {}", id(i), e.message()))?
            .into_inner();
        pids.push(t.elapsed());
        if answer.processes.is_empty() {
            return Err(format!("Pids {}: no process", id(i)));
        }
    }
    state.sort();
    pids.sort();
    Ok(report::Calls { n, state, pids })
}

/// Exit → Wait latency: Wait is pending for the last `EXITING` containers, then they all exit
/// Exit → Wait latency: Wait is pending for the containers of `exiting`, then they all exit
/// at once. Prints the latencies from the kernel's exit times too (`daemon`: the process
/// that is sent `SIGCHLD`).
fn exit_to_wait(
    socket: &Path,
    bundles: &Bundles,
    daemon: u32,
    exiting: std::ops::Range<usize>,
) -> Result<Vec<Duration>, String> {
    let pids = smol::block_on(init_pids(socket, exiting.clone()))?;
    let trace = ExitTrace::start(daemon)
        .map_err(|why| println!("kernel exit times not taken: {why}"))
        .ok();
    let done: Mutex<Vec<(usize, Duration)>> = Mutex::default();
    let told: Mutex<HashMap<usize, Duration>> = Mutex::default();
    std::thread::scope(|s| {
        let waiter = s.spawn(|| {
            smol::block_on(for_each(exiting.clone(), EXITING, socket, |mut c, i| {
                let done = &done;
                async move {
                    let exit = c
                        .wait(req(WaitRequest {
                            id: id(i),
                            ..Default::default()
                        }))
                        .await
                        .map_err(|e| format!("Wait {}: {}", id(i), e.message()))?
                        .into_inner();
                    let at = mono_now();
                    if exit.exit_status != 3 {
                        return Err(format!("{} exited with {}, not 3", id(i), exit.exit_status));
                    }
                    done.lock().map_err(|_| "poisoned")?.push((i, at));
                    Ok(())
                }
            }))
        });
        // The Waits are sent before the exits (their replies can only come after).
        std::thread::sleep(Duration::from_millis(500));
        for i in exiting.clone() {
            let at = mono_now();
            bundles.tell_exit(&id(i), 3)?;
            told.lock().map_err(|_| "poisoned")?.insert(i, at);
        }
        waiter.join().map_err(|_| "the Wait thread panicked")?
    })?;
    let told = told.into_inner().map_err(|_| "poisoned")?;
    let done = done.into_inner().map_err(|_| "poisoned")?;
    let mut latencies: Vec<Duration> = done
        .iter()
        .filter_map(|(i, at)| at.checked_sub(*told.get(i)?))
        .collect();
    latencies.sort();
    print_latencies(
        &format!(
            "told to exit → Wait return, {} exiting at once",
            exiting.len()
        ),
        latencies.iter().map(|d| Some(*d)),
    );
    if let Some(trace) = trace {
        print_kernel_shares(&trace, &pids, &done);
    }
    Ok(latencies)
}

/// The init pid of each container of `range` (from `State`).
async fn init_pids(
    socket: &Path,
    range: std::ops::Range<usize>,
) -> Result<HashMap<usize, u32>, String> {
    let mut c = client(socket).await?;
    let mut pids = HashMap::new();
    for i in range {
        let state = c
            .state(req(StateRequest {
                id: id(i),
                ..Default::default()
            }))
            .await
            .map_err(|e| format!("State {}: {}", id(i), e.message()))?
            .into_inner();
        pids.insert(i, state.pid);
    }
    Ok(pids)
}

/// Exit → Wait from the kernel's times of each exit, and the kernel's own share.
fn print_kernel_shares(trace: &ExitTrace, pids: &HashMap<usize, u32>, done: &[(usize, Duration)]) {
    let times = trace.times();
    let of = |i: usize| {
        pids.get(&i)
            .and_then(|pid| times.get(pid))
            .copied()
            .unwrap_or_default()
    };
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
    let Some(max) = known.last() else {
        println!("{what}: no sample");
        return;
    };
    let missing = all.len() - known.len();
    println!(
        "{what}: p50 {:.2} ms, p99 {:.2} ms, max {:.2} ms{}",
        percentile(&known, 0.5).as_secs_f64() * 1e3,
        percentile(&known, 0.99).as_secs_f64() * 1e3,
        max.as_secs_f64() * 1e3,
        if missing > 0 {
            format!(" ({missing} without a kernel time)")
        } else {
            String::new()
        }
    );
}

/// `kill -9` of the daemon with `n` containers, `0..alive` of them running (those after exited
/// already);
/// `exiting` of them (the first ones) exit (codes 1..) while it is down; it is started again. Its time to serve, the time until every exit was returned by
/// `Wait` and every other container's `State` answered, and how many exits were lost (a wrong
/// code, or no answer).
fn restart(
    service: &mut Service,
    socket: &Path,
    bundles: &Bundles,
    (n, alive): (usize, usize),
    exiting: usize,
) -> Result<report::Restart, String> {
    let code = |i: usize| (1 + i % 200) as u8;
    service.kill_daemon();
    for i in 0..exiting {
        bundles.tell_exit(&id(i), code(i))?;
    }
    let started = Instant::now();
    let serving = service.restart_daemon()?;
    let lost = AtomicUsize::new(0);
    smol::block_on(for_each(0..exiting, exiting.max(1), socket, |mut c, i| {
        let lost = &lost;
        async move {
            let exit = c
                .wait(req(WaitRequest {
                    id: id(i),
                    ..Default::default()
                }))
                .await;
            if exit.ok().map(|e| e.into_inner().exit_status) != Some(u32::from(code(i))) {
                lost.fetch_add(1, Ordering::Relaxed);
            }
            Ok(())
        }
    }))?;
    let exits = started.elapsed();
    smol::block_on(for_each(
        exiting..alive,
        16,
        socket,
        |mut c, i| async move {
            let state = c
                .state(req(StateRequest {
                    id: id(i),
                    ..Default::default()
                }))
                .await
                .map_err(|e| format!("State {} after the restart: {}", id(i), e.message()))?
                .into_inner();
            if state.status != Status::Running as i32 {
                return Err(format!(
                    "{} is {} after the restart, not running",
                    id(i),
                    state.status
                ));
            }
            Ok(())
        },
    ))?;
    Ok(report::Restart {
        n,
        exited: exiting,
        serving,
        exits,
        all_states: started.elapsed(),
        lost: lost.into_inner(),
    })
}

/// Kills, waits for and deletes containers `d00000..` through the API, `parallel` at a time.
fn remove_all(socket: &Path, n: usize, parallel: usize) {
    let _ = smol::block_on(for_each(0..n, parallel, socket, |mut c, i| async move {
        let _ = c
            .kill(req(KillRequest {
                id: id(i),
                signal: 9,
                ..Default::default()
            }))
            .await;
        let _ = c
            .wait(req(WaitRequest {
                id: id(i),
                ..Default::default()
            }))
            .await;
        let _ = c
            .delete(req(DeleteRequest {
                id: id(i),
                ..Default::default()
            }))
            .await;
        Ok(())
    }));
}

/// The peer, in the same run: `k` Go shims on a private containerd, each running a container
/// of the shared rootfs; their mean PSS (KiB) and how many were measured.
fn go_shim_memory(bundles: &Bundles, k: usize) -> Option<(u64, usize)> {
    if k == 0 {
        return None;
    }
    let mut containerd = match go_shim::Containerd::start() {
        Ok(containerd) => containerd,
        Err(why) => {
            println!("Go shim not measured: {why}");
            return None;
        }
    };
    let started = Instant::now();
    for i in 0..k {
        if let Err(e) = containerd.run(&format!("peer{i}"), bundles.rootfs()) {
            println!("Go shim: ctr run failed after {i}: {e}");
            break;
        }
    }
    std::thread::sleep(Duration::from_millis(500));
    let mems: Vec<u64> = containerd
        .shim_pids()
        .into_iter()
        .filter_map(go_shim::memory_kib)
        .map(|m| m.0)
        .collect();
    let n = mems.len();
    let mean = (n > 0).then(|| mems.iter().sum::<u64>() / n as u64)?;
    println!(
        "containerd-shim-runc-v2: {n} running (started in {:.0} s), mean PSS {:.2} MiB, total {:.1} MiB",
        started.elapsed().as_secs_f64(),
        mib(mean),
        mib(mems.iter().sum())
    );
    Some((mean, n))
}

/// The machine's memory, KiB (`MemTotal`).
fn mem_total_kib() -> u64 {
    std::fs::read_to_string("/proc/meminfo")
        .ok()
        .and_then(|m| {
            m.lines()
                .find(|l| l.starts_with("MemTotal:"))
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|v| v.parse().ok())
        })
        .unwrap_or(0)
}

/// The load averages, as `/proc/loadavg` says them.
fn load_average() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .unwrap_or_default()
        .trim()
        .to_owned()
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
