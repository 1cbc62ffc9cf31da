//! runc-driver against the bare runtime, side by side in one run.
//!
//! Run: `cargo bench -p runc-driver --bench driver` (root; runc, crun and busybox-static).
//!
//! 1. Per-call overhead: `state` of a running container through the driver versus
//!    `std::process::Command` running `runc --root R state ID` and reading its output (and
//!    the same with `--log FILE --log-format json`), taking turns call by call; then the
//!    driver and the direct call again in alternating blocks of 30 consecutive calls; medians.
//! 2. Throughput of create + start + delete --force at concurrency 1 and 8, runc and crun.

use integration::bundle::{BundleBuilder, prepare_crun};
use runc_driver::{CreateOpts, Runc};
use std::path::Path;
use std::time::{Duration, Instant};

const STATE_CALLS: usize = 600;
const WARMUP: usize = 20;
const LIFECYCLES: usize = 48;

fn main() {
    if !rustix::process::geteuid().is_root() {
        eprintln!("the runc-driver benchmark needs root");
        return;
    }
    prepare_crun().unwrap();
    // Container inits are re-parented to us; each is reaped by PID once deleted.
    rustix::process::set_child_subreaper(rustix::process::Pid::from_raw(1)).unwrap();
    let bundle = BundleBuilder::new()
        .args(["sleep", "3600"])
        .build()
        .unwrap();

    println!("load average at the start: {}", load_average());
    println!(
        "| runtime | measure | driver | direct | ratio driver/direct | direct with the driver's `--log` flags |"
    );
    println!("|---|---|---:|---:|---:|---:|");
    for runtime in ["runc", "crun"] {
        let root = tempfile::tempdir().unwrap();
        let runc = Runc::builder()
            .binary(runtime)
            .root(root.path())
            .build()
            .unwrap();
        let on = Running {
            runtime,
            root: root.path(),
            id: format!("bench-{runtime}"),
        };
        let created =
            smol::block_on(runc.run_detached(&on.id, bundle.path(), CreateOpts::default()))
                .unwrap();
        state_call_by_call(&runc, &on);
        state_in_blocks(&runc, &on);
        smol::block_on(runc.delete(&on.id, true)).unwrap();
        reap(created.pid);
        for concurrency in [1usize, 8] {
            lifecycles(&runc, runtime, bundle.path(), concurrency);
        }
    }
    println!("load average at the end: {}", load_average());
}

/// A running container of one runtime, whose `state` is asked.
struct Running<'a> {
    runtime: &'a str,
    root: &'a Path,
    id: String,
}

impl Running<'_> {
    /// `<runtime> --root R state ID` run directly, its output parsed; how long it took. With
    /// `log`, the flags the driver used to add to every call, to tell the runtime's cost of
    /// writing a JSON log file from the driver's own.
    fn direct_state(&self, log: Option<&Path>) -> Duration {
        let t = Instant::now();
        let mut cmd = std::process::Command::new(self.runtime);
        cmd.arg("--root").arg(self.root);
        if let Some(log) = log {
            cmd.arg("--log").arg(log).args(["--log-format", "json"]);
        }
        let out = cmd.args(["state", &self.id]).output().unwrap();
        assert!(out.status.success());
        let _: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
        if let Some(log) = log {
            let _ = std::fs::remove_file(log);
        }
        t.elapsed()
    }

    /// `state` through the driver; how long it took.
    fn driver_state(&self, runc: &Runc) -> Duration {
        let t = Instant::now();
        smol::block_on(runc.state(&self.id)).unwrap();
        t.elapsed()
    }
}

/// The three ways take turns call by call, in a rotating order, so that the load of a shared
/// machine (which drifts over seconds) hits them alike.
fn state_call_by_call(runc: &Runc, on: &Running) {
    let mut driver = Vec::new();
    let mut direct = Vec::new();
    let mut direct_logged = Vec::new();
    let log = on.root.join("bench-log.json");
    for _ in 0..WARMUP {
        on.driver_state(runc);
        on.direct_state(None);
    }
    for n in 0..STATE_CALLS {
        for turn in 0..3 {
            match (n + turn) % 3 {
                0 => driver.push(on.driver_state(runc)),
                1 => direct.push(on.direct_state(None)),
                _ => direct_logged.push(on.direct_state(Some(&log))),
            }
        }
    }
    let (d, s, l) = (
        median(&mut driver),
        median(&mut direct),
        median(&mut direct_logged),
    );
    println!(
        "| {} | `state`, median of {STATE_CALLS}, call by call | {:.2} ms | {:.2} ms | {:.3} | {:.2} ms |",
        on.runtime,
        ms(d),
        ms(s),
        d.as_secs_f64() / s.as_secs_f64(),
        ms(l)
    );
}

/// The same comparison in runs of consecutive calls of one way (blocks of 30, the ways
/// alternating). Call by call, every driver call follows a direct one, during which async-io's
/// own thread took over the reactor (nobody was in `block_on`); the driver's call then learns
/// of the runtime's exit through that thread, one extra wake-up. Here most driver calls follow
/// a driver call, as in an async program that keeps calling the driver.
fn state_in_blocks(runc: &Runc, on: &Running) {
    let mut driver_runs = Vec::new();
    let mut direct_runs = Vec::new();
    for _ in 0..STATE_CALLS / 60 {
        for _ in 0..30 {
            driver_runs.push(on.driver_state(runc));
        }
        for _ in 0..30 {
            direct_runs.push(on.direct_state(None));
        }
    }
    let (d, s) = (median(&mut driver_runs), median(&mut direct_runs));
    println!(
        "| {} | `state`, median of {}, blocks of 30 | {:.2} ms | {:.2} ms | {:.3} | |",
        on.runtime,
        driver_runs.len(),
        ms(d),
        ms(s),
        d.as_secs_f64() / s.as_secs_f64(),
    );
}

/// create + start + delete --force of LIFECYCLES containers, `concurrency` at a time.
fn lifecycles(runc: &Runc, runtime: &str, bundle: &Path, concurrency: usize) {
    let started = Instant::now();
    let ex = smol::Executor::new();
    let per_task = LIFECYCLES / concurrency;
    let tasks: Vec<_> = (0..concurrency)
        .map(|t| {
            let runc = runc.clone();
            let bundle = bundle.to_owned();
            ex.spawn(async move {
                for n in 0..per_task {
                    let id = format!("bench-{t}-{n}");
                    let c = runc
                        .create(&id, &bundle, CreateOpts::default())
                        .await
                        .unwrap();
                    runc.start(&id).await.unwrap();
                    runc.delete(&id, true).await.unwrap();
                    reap(c.pid);
                }
            })
        })
        .collect();
    // One thread is enough: the driver waits on runtime processes, 8 of them in flight.
    smol::block_on(ex.run(async {
        for task in tasks {
            task.await;
        }
    }));
    let elapsed = started.elapsed();
    println!(
        "| {runtime} | create+start+delete, concurrency {concurrency} | {:.1} /s | | |",
        LIFECYCLES as f64 / elapsed.as_secs_f64()
    );
}

/// The 1, 5 and 15 minute load averages, to say how busy the machine was.
fn load_average() -> String {
    let text = std::fs::read_to_string("/proc/loadavg").unwrap_or_default();
    text.split_whitespace()
        .take(3)
        .collect::<Vec<_>>()
        .join(" ")
}

fn reap(pid: i32) {
    if let Some(pid) = rustix::process::Pid::from_raw(pid) {
        let _ = rustix::process::waitpid(Some(pid), rustix::process::WaitOptions::empty());
    }
}

fn median(samples: &mut [Duration]) -> Duration {
    samples.sort();
    samples[samples.len() / 2]
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1e3
}
