//! CPU per probe: file probe vs kubelet-style exec probe (`runc exec`) vs HTTP GET, side by
//! side; then 10,000 file probes at a 1 s period on one `Prober` for 30 s.
//!
//! Run as root (the exec probe needs runc and a real container):
//! `cargo bench -p fileprobe --bench probes`; `FILEPROBE_BENCH=load` runs only the
//! 10,000-probe loads, `FILEPROBE_SPREAD=true|false` only those of one first-run pattern, and
//! `FILEPROBE_LOAD=<spread>,<inotify>` (e.g. `false,true`) one load in this process (for
//! profiling). Each load of the table runs in a child process (this binary again with
//! `FILEPROBE_LOAD` set), so its RSS is its own; inotify and the statx fallback alternate.
//!
//! CPU is read from `/proc/self/stat` (utime + stime + cutime + cstime, in clock ticks), so
//! the exec probe's cost includes the runc processes it waits for and the HTTP probe's includes
//! the in-process server thread.

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use fileprobe::{ProbeKind, ProbeSpec, Prober, Target};

const TICK: f64 = 0.01; // USER_HZ is 100 on Linux

/// Own + waited-for children CPU seconds.
fn cpu_seconds() -> f64 {
    let stat = std::fs::read_to_string("/proc/self/stat").expect("read /proc/self/stat");
    let rest = stat.rsplit_once(") ").expect("stat format").1;
    let f: Vec<u64> = rest
        .split(' ')
        .skip(11)
        .take(4)
        .map(|s| s.parse().unwrap_or(0))
        .collect();
    f.iter().sum::<u64>() as f64 * TICK
}

fn rss_kib() -> u64 {
    let s = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    s.lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches(" kB").trim().parse().ok())
        .unwrap_or(0)
}

/// CPU seconds per call of `f`, over `n` calls.
fn per_probe(n: u32, mut f: impl FnMut()) -> f64 {
    let c0 = cpu_seconds();
    for _ in 0..n {
        f();
    }
    (cpu_seconds() - c0) / f64::from(n)
}

/// (full resolution per check, cached parent directory) CPU seconds per check.
fn file_probe() -> (f64, f64) {
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir(dir.path().join("probe-dir")).unwrap();
    std::fs::write(dir.path().join("probe-dir/probe"), b"").unwrap();
    let root = fileprobe::open_root(dir.path().to_str().unwrap()).unwrap();
    let v = Duration::from_secs(30);
    let full = per_probe(200_000, || {
        fileprobe::check_at(&root, "/probe-dir/probe", v, SystemTime::now()).unwrap();
    });
    let mut cached = fileprobe::CachedPath::new("/probe-dir/probe").unwrap();
    let cached = per_probe(1_000_000, || {
        cached.check(&root, v, SystemTime::now()).unwrap();
    });
    (full, cached)
}

fn http_probe() -> f64 {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    std::thread::spawn(move || {
        for s in listener.incoming() {
            let Ok(mut s) = s else { continue };
            let mut buf = [0u8; 1024];
            let _ = s.read(&mut buf);
            let _ =
                s.write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nConnection: close\r\n\r\nok");
        }
    });
    // Kubelet's HTTP prober opens a new connection per probe (keep-alive off).
    per_probe(5_000, || {
        let mut s = TcpStream::connect(addr).unwrap();
        s.write_all(b"GET / HTTP/1.1\r\nHost: 127.0.0.1\r\nUser-Agent: kube-probe/1.33\r\nConnection: close\r\n\r\n").unwrap();
        let mut out = Vec::new();
        s.read_to_end(&mut out).unwrap();
        assert!(out.starts_with(b"HTTP/1.1 200"));
    })
}

/// `runc exec <id> true` against a busybox container, through the runc-driver crate.
fn exec_probe() -> Option<f64> {
    if !rustix::process::geteuid().is_root() {
        eprintln!("exec probe skipped: needs root (runc)");
        return None;
    }
    let bundle = integration::bundle::BundleBuilder::new().build().ok()?;
    let state = tempfile::tempdir().ok()?;
    let id = format!("fileprobe-bench-{}", std::process::id());
    let _guard = integration::bundle::ContainerGuard::new("runc", state.path(), id.clone());
    let runc = runc_driver::Runc::builder()
        .root(state.path())
        .build()
        .ok()?;
    futures_lite::future::block_on(async {
        runc.run_detached(&id, bundle.path(), runc_driver::CreateOpts::default())
            .await
            .ok()?;
        let process = oci_spec::runtime::ProcessBuilder::default()
            .args(vec!["true".to_string()])
            .cwd("/")
            .build()
            .ok()?;
        let c0 = cpu_seconds();
        let n = 100;
        for _ in 0..n {
            let done = runc
                .exec(&id, &process, runc_driver::ExecOpts::default())
                .await
                .ok()?;
            assert_eq!(done.exit_code, Some(0));
        }
        Some((cpu_seconds() - c0) / f64::from(n))
    })
}

/// CPU seconds per cached check when cycling through 10,000 distinct files, each through its own
/// cached directory fd, as the scheduler does (cold caches), without any scheduling.
fn distinct_files() -> f64 {
    const N: usize = 10_000;
    let dir = tempfile::tempdir().unwrap();
    for i in 0..N {
        std::fs::write(dir.path().join(format!("p{i}")), b"").unwrap();
    }
    let root = fileprobe::open_root(dir.path().to_str().unwrap()).unwrap();
    let mut paths: Vec<_> = (0..N)
        .map(|i| fileprobe::CachedPath::new(&format!("/p{i}")).unwrap())
        .collect();
    let v = Duration::from_secs(3600);
    let mut i = 0;
    per_probe(30 * N as u32, || {
        paths[i % N].check(&root, v, SystemTime::now()).unwrap();
        i += 1;
    })
}

/// Own CPU seconds of the calling thread.
fn thread_cpu_seconds() -> f64 {
    let stat = std::fs::read_to_string("/proc/thread-self/stat").unwrap_or_default();
    let Some((_, rest)) = stat.rsplit_once(") ") else {
        return 0.0;
    };
    let f: Vec<u64> = rest
        .split(' ')
        .skip(11)
        .take(2)
        .map(|s| s.parse().unwrap_or(0))
        .collect();
    f.iter().sum::<u64>() as f64 * TICK
}

/// How many containers, how often each touches its file.
const N: usize = 10_000;
const TOUCH_EVERY: Duration = Duration::from_secs(20);
/// 30 s, or `FILEPROBE_LOAD_SECS` (a longer run shows the steady state of the directory
/// revalidation, every 64 checks, which a 30 s run at a 1 s period never reaches).
fn load_for() -> Duration {
    let secs = std::env::var("FILEPROBE_LOAD_SECS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(30);
    Duration::from_secs(secs)
}

/// One 10,000-probe load, as measured in its own process (so each load's RSS is its own).
#[derive(Debug, Clone, Copy, Default)]
struct Load {
    cpu: f64,
    rss_added: u64,
    rss_end: u64,
    toucher_cpu: f64,
    touches: u64,
    c: fileprobe::Counters,
}

/// N directories `c<i>` in `dir`, each with an empty `probe` file; the files.
fn probe_files(dir: &std::path::Path) -> Vec<std::path::PathBuf> {
    (0..N)
        .map(|i| {
            let d = dir.join(format!("c{i}"));
            std::fs::create_dir(&d).unwrap();
            let f = d.join("probe");
            std::fs::write(&f, b"").unwrap();
            f
        })
        .collect()
}

/// A thread touching the files in turn, each once every TOUCH_EVERY, until `stop`; it
/// returns its own CPU seconds and how many touches it made.
fn touch_in_turn(
    files: Vec<std::path::PathBuf>,
    stop: Arc<std::sync::atomic::AtomicBool>,
) -> std::thread::JoinHandle<(f64, u64)> {
    std::thread::spawn(move || {
        let t0 = Instant::now();
        let mut touched = 0u64;
        while !stop.load(std::sync::atomic::Ordering::Relaxed) {
            let due = (t0.elapsed().as_secs_f64() / TOUCH_EVERY.as_secs_f64() * N as f64) as u64;
            while touched < due {
                let f = &files[(touched % N as u64) as usize];
                let file = std::fs::File::options().write(true).open(f).unwrap();
                file.set_modified(SystemTime::now()).unwrap();
                touched += 1;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        (thread_cpu_seconds(), touched)
    })
}

/// 10,000 probes on one prober for 30 s, each container's file `/c<i>/probe` in its own
/// directory, touched every 20 s by a thread playing the 10,000 containers (500 touches a
/// second, spread evenly; its CPU is the containers', not the prober's, and is subtracted).
/// `spread`: the containers started before the prober (as after a kubelet restart), so first
/// runs are jittered over the period (~10 batches a second); otherwise all are due at the same
/// instant (one batch). `inotify`: the prober's own `ChangeWatch`, else
/// `ChangeWatch::disabled()` (a statx per check).
fn scheduler_load(spread: bool, inotify: bool) -> Load {
    let dir = tempfile::tempdir().unwrap();
    let files = probe_files(dir.path());
    let root = Arc::new(fileprobe::open_root(dir.path().to_str().unwrap()).unwrap());
    let rss0 = rss_kib();
    let watch = if inotify {
        fileprobe::ChangeWatch::new()
    } else {
        fileprobe::ChangeWatch::disabled()
    };
    let mut prober = Prober::new().with_watch(watch);
    // Started before the prober: jittered first runs; at or after it: due at once.
    let started_at = if spread {
        Instant::now()
            .checked_sub(Duration::from_secs(1))
            .expect("uptime over 1 s")
    } else {
        Instant::now()
    };
    for i in 0..N {
        let yaml = format!("file: {{path: /c{i}/probe, validity: 3600}}\nperiodSeconds: 1");
        let probe = ProbeSpec::from_yaml(&yaml)
            .unwrap()
            .validate(ProbeKind::Readiness)
            .unwrap();
        let target = Target {
            id: format!("c{i}"),
            root: root.clone(),
            started_at,
        };
        prober.add(&format!("pod{i}/c"), probe, target);
    }
    let rss_added = rss_kib();
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let toucher = touch_in_turn(files, stop.clone());
    let c0 = cpu_seconds();
    let t0 = Instant::now();
    async_io::block_on(async {
        let end = async_io::Timer::after(load_for());
        futures_lite::pin!(end);
        loop {
            let next = async { prober.next_event().await.is_some() };
            let stop = async {
                (&mut end).await;
                false
            };
            if !futures_lite::future::or(next, stop).await {
                break;
            }
        }
    });
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let (toucher_cpu, touches) = toucher.join().unwrap();
    let elapsed = t0.elapsed().as_secs_f64();
    let cpu = (cpu_seconds() - c0 - toucher_cpu) / elapsed * 100.0;
    Load {
        cpu,
        rss_added: rss_added.saturating_sub(rss0),
        rss_end: rss_kib().saturating_sub(rss0),
        toucher_cpu: toucher_cpu / elapsed * 100.0,
        touches,
        c: prober.counters(),
    }
}

/// Runs one load in a child process (`FILEPROBE_LOAD=<spread>,<inotify>`), so that its RSS is
/// not the memory an earlier load freed.
fn load_in_child(spread: bool, inotify: bool) -> Load {
    let out = std::process::Command::new(std::env::current_exe().unwrap())
        .env("FILEPROBE_LOAD", format!("{spread},{inotify}"))
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    let line = text
        .lines()
        .find_map(|l| l.strip_prefix("LOAD "))
        .unwrap_or_else(|| {
            panic!(
                "child load failed: {}",
                String::from_utf8_lossy(&out.stderr)
            )
        });
    let v: Vec<f64> = line.split(' ').map(|x| x.parse().unwrap_or(0.0)).collect();
    let u = |i: usize| v.get(i).copied().unwrap_or(0.0) as u64;
    Load {
        cpu: v[0],
        rss_added: u(1),
        rss_end: u(2),
        toucher_cpu: v[3],
        touches: u(4),
        c: fileprobe::Counters {
            runs: u(5),
            failures: u(6),
            statx_calls: u(7),
            cached_checks: u(8),
            watches: u(9),
            unwatched: u(10),
            ..Default::default()
        },
    }
}

fn child_load(spec: &str) {
    let (spread, inotify) = spec.split_once(',').unwrap_or(("false", "true"));
    let l = scheduler_load(spread == "true", inotify == "true");
    let c = l.c;
    println!(
        "LOAD {} {} {} {} {} {} {} {} {} {} {}",
        l.cpu,
        l.rss_added,
        l.rss_end,
        l.toucher_cpu,
        l.touches,
        c.runs,
        c.failures,
        c.statx_calls,
        c.cached_checks,
        c.watches,
        c.unwatched
    );
}

fn print_loads(only: Option<&str>) {
    println!();
    println!(
        "10,000 file probes, period 1 s, one Prober, {} s, each file touched every 20 s (one process per row):",
        load_for().as_secs()
    );
    println!(
        "| first runs | checks | CPU (% of one core) | RSS after adding | RSS at the end | checks run | statx | from cache | watches | failures | toucher CPU (touches) |"
    );
    println!("|---|---|---|---|---|---|---|---|---|---|---|");
    for spread in [false, true] {
        if only.is_some_and(|o| o != spread.to_string()) {
            continue;
        }
        for inotify in [true, false] {
            let l = load_in_child(spread, inotify);
            let how = if spread {
                "jittered over the period"
            } else {
                "all due together"
            };
            let mode = if inotify {
                "inotify (`ChangeWatch::new()`)"
            } else {
                "statx per check (`ChangeWatch::disabled()`)"
            };
            println!(
                "| {how} | {mode} | {:.2} % | +{} KiB | +{} KiB | {} | {} | {} | {} | {} | {:.2} % ({}) |",
                l.cpu,
                l.rss_added,
                l.rss_end,
                l.c.runs,
                l.c.statx_calls,
                l.c.cached_checks,
                l.c.watches,
                l.c.failures,
                l.toucher_cpu,
                l.touches
            );
        }
    }
}

fn main() {
    // One load, in a child process started by `print_loads`.
    if let Ok(spec) = std::env::var("FILEPROBE_LOAD") {
        child_load(&spec);
        return;
    }
    // For profiling the scheduler alone: `FILEPROBE_BENCH=load`.
    if std::env::var("FILEPROBE_BENCH").as_deref() == Ok("load") {
        let distinct = distinct_files();
        println!(
            "cached check over 10,000 distinct files: {:.2} µs",
            distinct * 1e6
        );
        let only = std::env::var("FILEPROBE_SPREAD").ok();
        print_loads(only.as_deref());
        return;
    }
    let (full, file) = file_probe();
    let http = http_probe();
    let exec = exec_probe();
    println!("| probe | CPU per probe | vs file probe |");
    println!("|---|---|---|");
    println!(
        "| file, cached directory (statx), as `Prober` runs it without inotify | {:.2} µs | 1× |",
        file * 1e6
    );
    println!(
        "| file, full resolution (openat2 + statx + close) | {:.2} µs | {:.1}× |",
        full * 1e6,
        full / file
    );
    println!(
        "| HTTP GET 127.0.0.1 (new connection) | {:.1} µs | {:.0}× |",
        http * 1e6,
        http / file
    );
    match exec {
        Some(e) => println!(
            "| exec (`runc exec <id> true`) | {:.2} ms | {:.0}× |",
            e * 1e3,
            e / file
        ),
        None => println!("| exec (`runc exec <id> true`) | not run (needs root and runc) | |"),
    }
    let distinct = distinct_files();
    println!(
        "| file, cached, cycling through 10,000 distinct files (no scheduler) | {:.2} µs | {:.1}× |",
        distinct * 1e6,
        distinct / file
    );
    print_loads(None);
}
