//! Exit → notified latency: pidfds on one async-io reactor versus a SIGCHLD handler that reaps
//! with `waitpid(-1, WNOHANG)` (how containerd's Go shim learns of exits), side by side in one
//! run, plus the memory each costs per watched process.
//!
//! Run: `cargo bench -p shimless-pidfd --bench exit_latency` (spawns up to 10,000 `sleep` processes).
//!
//! For each size N (1, 100, 10,000 watched processes) the bench kills min(N, 100) of them at
//! once with SIGKILL, several rounds, and measures from each `kill` to the moment the watcher
//! thread knows that process has exited (and has reaped it). Both mechanisms see the same kill
//! cost and the same kernel teardown; what differs is how the exit reaches user space.

// Children are reaped by the watcher under test (pidfd or SIGCHLD), which clippy cannot see.
#![allow(clippy::zombie_processes)]

use rustix::process::{Pid, Signal, WaitOptions, kill_process};
use shimless_pidfd::PidFd;
use std::collections::HashMap;
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

const SIZES: [usize; 3] = [1, 100, 10_000];
const AT_ONCE: usize = 100;
const SAMPLES: usize = 500;

fn main() {
    integration::raise_fd_limit(20_000);
    println!("exit -> notified latency, SIGKILL sent to `at once` processes back to back\n");
    println!(
        "| watched | at once | mechanism | samples | p50 µs | p99 µs | user memory / watched \
         | kernel slab / watched |"
    );
    println!("|---:|---:|---|---:|---:|---:|---:|---:|");
    for n in SIZES {
        let at_once = n.min(AT_ONCE);
        let a = sample(Mechanism::Pidfd, n, at_once);
        let b = sample(Mechanism::Sigchld, n, at_once);
        for r in [&a, &b] {
            println!(
                "| {n} | {at_once} | {} | {} | {:.1} | {:.1} | {} | {} |",
                r.mechanism.name(),
                r.latencies.len(),
                percentile(&r.latencies, 0.50),
                percentile(&r.latencies, 0.99),
                r.bytes_per_watched.map_or("-".into(), |b| format!("{b} B")),
                r.kernel_bytes_per_watched
                    .map_or("-".into(), |b| format!("{b} B")),
            );
        }
        println!(
            "| {n} | {at_once} | ratio pidfd / sigchld | | {:.2} | {:.2} | | |",
            percentile(&a.latencies, 0.50) / percentile(&b.latencies, 0.50),
            percentile(&a.latencies, 0.99) / percentile(&b.latencies, 0.99),
        );
    }
}

#[derive(Clone, Copy, PartialEq)]
enum Mechanism {
    Pidfd,
    Sigchld,
}

impl Mechanism {
    fn name(self) -> &'static str {
        match self {
            Mechanism::Pidfd => "pidfd + async-io",
            Mechanism::Sigchld => "SIGCHLD + waitpid(-1)",
        }
    }
}

struct Outcome {
    mechanism: Mechanism,
    latencies: Vec<f64>,
    bytes_per_watched: Option<u64>,
    kernel_bytes_per_watched: Option<u64>,
}

/// Repeats whole runs until there are `SAMPLES` latencies (one run for the largest size).
fn sample(mechanism: Mechanism, n: usize, at_once: usize) -> Outcome {
    let rounds_per_run = (SAMPLES / at_once).min(n / at_once).max(1);
    let mut total = run(mechanism, n, at_once, rounds_per_run);
    while total.latencies.len() < SAMPLES {
        total
            .latencies
            .extend(run(mechanism, n, at_once, rounds_per_run).latencies);
    }
    total.latencies.sort_by(f64::total_cmp);
    total
}

fn run(mechanism: Mechanism, n: usize, at_once: usize, rounds: usize) -> Outcome {
    let children: Vec<i32> = (0..n)
        .map(|_| {
            let child = Command::new("sleep")
                .arg("1000")
                .stdin(Stdio::null())
                .spawn()
                .expect("spawn sleep");
            child.id() as i32
        })
        .collect();

    let (tx, rx) = mpsc::channel::<(i32, Instant)>();
    let (ready_tx, ready_rx) = mpsc::channel::<()>();
    let rss_before = rss_bytes();
    let mut kernel_bytes_per_watched = None;
    let watcher = match mechanism {
        Mechanism::Pidfd => {
            let slab_before = slab_bytes();
            let pidfds: Vec<PidFd> = children.iter().map(|&p| PidFd::open(p).unwrap()).collect();
            if n >= 1_000 {
                kernel_bytes_per_watched =
                    Some(slab_bytes().saturating_sub(slab_before) / n as u64);
            }
            std::thread::spawn(move || watch_pidfds(pidfds, tx, ready_tx))
        }
        Mechanism::Sigchld => {
            let pids = children.clone();
            std::thread::spawn(move || watch_sigchld(pids, tx, ready_tx))
        }
    };
    ready_rx.recv().unwrap();
    let rss_after = rss_bytes();
    let bytes_per_watched = (n >= 1_000).then(|| rss_after.saturating_sub(rss_before) / n as u64);

    let mut latencies = Vec::with_capacity(rounds * at_once);
    let mut next = 0;
    for _ in 0..rounds {
        let batch = &children[next..next + at_once];
        next += at_once;
        let mut sent = HashMap::with_capacity(at_once);
        for &pid in batch {
            sent.insert(pid, Instant::now());
            kill_process(Pid::from_raw(pid).unwrap(), Signal::KILL).unwrap();
        }
        for _ in 0..at_once {
            let (pid, seen) = rx
                .recv_timeout(Duration::from_secs(30))
                .expect("exit not seen");
            latencies.push(seen.duration_since(sent[&pid]).as_secs_f64() * 1e6);
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    // Tear down: kill the rest; the watcher reaps them and then returns.
    for &pid in &children[next..] {
        kill_process(Pid::from_raw(pid).unwrap(), Signal::KILL).unwrap();
    }
    watcher.join().unwrap();
    latencies.sort_by(f64::total_cmp);
    Outcome {
        mechanism,
        latencies,
        bytes_per_watched,
        kernel_bytes_per_watched,
    }
}

/// One thread, one async-io reactor driven by `block_on`, one task per process.
fn watch_pidfds(pidfds: Vec<PidFd>, tx: mpsc::Sender<(i32, Instant)>, ready: mpsc::Sender<()>) {
    let registered = std::cell::Cell::new(0);
    let registered = &registered;
    let ex = smol::LocalExecutor::new();
    let tasks: Vec<_> = pidfds
        .iter()
        .map(|pidfd| {
            let tx = tx.clone();
            ex.spawn(async move {
                let mut exited = std::pin::pin!(pidfd.exited());
                if futures_lite::future::poll_once(&mut exited).await.is_none() {
                    registered.set(registered.get() + 1);
                    exited.await.unwrap();
                }
                let seen = Instant::now();
                pidfd.try_wait().unwrap().expect("exited, so reapable");
                let _ = tx.send((pidfd.pid(), seen));
            })
        })
        .collect();
    smol::block_on(ex.run(async {
        // Say we are ready only once every task has its pidfd registered with the reactor.
        while registered.get() < pidfds.len() {
            futures_lite::future::yield_now().await;
        }
        ready.send(()).unwrap();
        for task in tasks {
            task.await;
        }
    }));
}

/// The Go shim's way: a SIGCHLD handler, then `waitpid(-1, WNOHANG)` until nothing is left.
fn watch_sigchld(pids: Vec<i32>, tx: mpsc::Sender<(i32, Instant)>, ready: mpsc::Sender<()>) {
    use futures_lite::StreamExt;
    let mut watched: HashMap<i32, ()> = pids.iter().map(|&p| (p, ())).collect();
    let mut signals = async_signal::Signals::new([async_signal::Signal::Child]).unwrap();
    ready.send(()).unwrap();
    smol::block_on(async {
        while !watched.is_empty() {
            signals.next().await;
            while let Ok(Some((pid, _status))) = rustix::process::wait(WaitOptions::NOHANG) {
                let seen = Instant::now();
                if watched.remove(&pid.as_raw_nonzero().get()).is_some() {
                    let _ = tx.send((pid.as_raw_nonzero().get(), seen));
                }
            }
        }
    });
}

fn percentile(sorted: &[f64], q: f64) -> f64 {
    sorted[((sorted.len() - 1) as f64 * q).round() as usize]
}

fn rss_bytes() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap();
    let kb: u64 = status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse().ok())
        .unwrap_or(0);
    kb * 1024
}

/// Kernel slab memory (`Slab:` in /proc/meminfo): where pidfd files, pidfs inodes and epoll
/// items live. Machine-wide, so other activity adds noise.
fn slab_bytes() -> u64 {
    let meminfo = std::fs::read_to_string("/proc/meminfo").unwrap();
    let kb: u64 = meminfo
        .lines()
        .find_map(|l| l.strip_prefix("Slab:"))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse().ok())
        .unwrap_or(0);
    kb * 1024
}
