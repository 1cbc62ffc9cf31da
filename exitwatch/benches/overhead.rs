//! What exitwatch costs, side by side with not having it, in one run.
//!
//! Run: `cargo bench -p exitwatch --bench overhead` (root, BTF).
//!
//! 1. A fork/exit-heavy workload (10,000 `fork` + `_exit`, timed by a forking shell loop, and
//!    1,000 `/bin/true` spawns), alternately without and with the program attached; ratio.
//! 2. `track` + `take` per call.
//! 3. The program's own cost per `sched_process_exit`, from the kernel's BPF run-time stats
//!    (`BPF_ENABLE_STATS`): a figure wall-clock noise cannot blur.
//! 4. Kernel memory of the maps at 65,536 entries (`memlock` of each map, from fdinfo).

use exitwatch::ExitWatch;
use std::process::Command;
use std::time::{Duration, Instant};

const ROUNDS: usize = 5;

fn forks() -> Duration {
    // busybox-free and libc-free: the shell forks a subshell that exits at once, 10,000 times.
    let t = Instant::now();
    let ok = Command::new("sh")
        .args([
            "-c",
            "i=0; while [ $i -lt 10000 ]; do (exit 0); i=$((i+1)); done",
        ])
        .status()
        .unwrap();
    assert!(ok.success());
    t.elapsed()
}

fn spawns() -> Duration {
    let t = Instant::now();
    for _ in 0..1_000 {
        assert!(Command::new("/bin/true").status().unwrap().success());
    }
    t.elapsed()
}

fn main() {
    if !rustix::process::geteuid().is_root() {
        eprintln!("the exitwatch benchmark needs root");
        return;
    }
    let dir = format!("/sys/fs/bpf/exitwatch-bench-{}", std::process::id());
    workloads(&dir);
    let mut watch = ExitWatch::open_or_load(&dir).unwrap();
    program_cost();
    call_cost(&mut watch);
    map_memory(&watch);
    watch.unload().unwrap();
}

/// Each workload timed alternately without and with the program attached; medians and ratio.
fn workloads(dir: &str) {
    println!("| workload | without exitwatch | with exitwatch | ratio |");
    println!("|---|---:|---:|---:|");
    for (name, work) in [
        (
            "10,000 fork + exit (sh subshells)",
            forks as fn() -> Duration,
        ),
        ("1,000 `/bin/true` spawns", spawns),
    ] {
        let (mut off, mut on) = (Vec::new(), Vec::new());
        for _ in 0..ROUNDS {
            off.push(work());
            let watch = ExitWatch::open_or_load(dir).unwrap();
            on.push(work());
            watch.unload().unwrap();
        }
        off.sort();
        on.sort();
        let (a, b) = (off[ROUNDS / 2], on[ROUNDS / 2]);
        println!(
            "| {name} (median of {ROUNDS}) | {:.1} ms | {:.1} ms | {:.3} |",
            a.as_secs_f64() * 1e3,
            b.as_secs_f64() * 1e3,
            b.as_secs_f64() / a.as_secs_f64()
        );
    }
}

/// The attached program's own run time per invocation, from the kernel's BPF stats, over
/// 10,000 forks.
fn program_cost() {
    let _stats = aya::sys::enable_stats(aya::sys::Stats::RunTime).unwrap();
    let program = || {
        aya::programs::loaded_programs()
            .filter_map(Result::ok)
            .filter(|p| p.name_as_str().is_some_and(|n| n.starts_with("exitwatch_")))
            .max_by_key(|p| p.id())
            .unwrap()
    };
    let before = program();
    let wall = forks();
    let after = program();
    let runs = after.run_count() - before.run_count();
    let ns = (after.run_time() - before.run_time()).as_nanos() as f64 / runs.max(1) as f64;
    let per_fork = wall.as_secs_f64() * 1e9 / 10_000.0;
    println!("\n| program cost | value |\n|---|---:|");
    println!("| invocations during 10,000 fork + exit | {runs} |");
    println!("| run time per invocation (kernel BPF stats) | {ns:.0} ns |");
    println!(
        "| share of a fork + exit cycle ({per_fork:.0} ns here) | {:.3} % |",
        100.0 * ns * runs as f64 / 10_000.0 / per_fork
    );
}

/// `track` + `untrack` and `take` per call.
fn call_cost(watch: &mut ExitWatch) {
    let me = std::process::id();
    let n = 20_000u32;
    let t = Instant::now();
    for i in 0..n {
        watch.track(me, u64::from(i)).unwrap();
        watch.untrack(me).unwrap();
    }
    let per_track = t.elapsed() / n;
    let t = Instant::now();
    for _ in 0..n {
        assert!(watch.take(me).unwrap().is_none());
    }
    let per_take = t.elapsed() / n;
    println!("\n| call | time per call |\n|---|---:|");
    println!(
        "| `track` + `untrack` (reads /proc/<pid>/stat twice) | {:.1} µs |",
        per_track.as_secs_f64() * 1e6
    );
    println!(
        "| `take` of an absent exit | {:.1} µs |",
        per_take.as_secs_f64() * 1e6
    );
}

/// Each pinned map's size and kernel memory (`memlock` from its fdinfo).
fn map_memory(watch: &ExitWatch) {
    println!("\n| map | entries | kernel memory (memlock) |\n|---|---:|---:|");
    for map in ["tracing_tasks", "exited_events", "exitwatch_counters"] {
        let path = watch.pin_dir().join(map);
        // A pin opens as a map fd only through BPF_OBJ_GET, which MapData::from_pin does.
        let data = aya::maps::MapData::from_pin(&path).unwrap();
        let raw = std::os::fd::AsRawFd::as_raw_fd(&std::os::fd::AsFd::as_fd(data.fd()));
        let info = std::fs::read_to_string(format!("/proc/self/fdinfo/{raw}")).unwrap();
        let field = |k: &str| {
            info.lines()
                .find_map(|l| l.strip_prefix(k))
                .map(|v| v.trim().to_string())
                .unwrap_or_default()
        };
        let memlock: f64 = field("memlock:").parse().unwrap_or(0.0);
        println!(
            "| `{map}` | {} | {:.1} MiB |",
            field("max_entries:"),
            memlock / (1024.0 * 1024.0)
        );
    }
}
