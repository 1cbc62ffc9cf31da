//! Metrics in Prometheus's text format: the counters the daemon and the front keep (atomics in
//! `static`s, no registry), what each renders at a scrape, and the endpoint that serves them.
//!
//! Counters are per process: a restarted daemon starts again from zero, which Prometheus's
//! `rate()` and `increase()` take as a reset. What must survive a daemon restart (how many
//! restarts there were) is counted by the front.
//!
//! - `calls`: calls by method and code, with latency histograms;
//! - `runtime`: OCI runtime commands by command and result, with latency histograms;
//! - `histogram`, `exposition`: the format;
//! - `address`, `http`: where and how a scrape is answered.

pub mod address;
pub mod calls;
pub mod exposition;
pub mod histogram;
pub mod http;
pub mod runtime;

use exposition::{Exposition, Kind};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// A counter of events (usable in a `static`).
///
/// ```
/// static SEEN: task_service::metrics::Counter = task_service::metrics::Counter::new();
/// SEEN.add(2);
/// assert_eq!(SEEN.get(), 2);
/// ```
#[derive(Debug, Default)]
pub struct Counter(AtomicU64);

impl Counter {
    /// Zero.
    pub const fn new() -> Counter {
        Counter(AtomicU64::new(0))
    }

    /// Counts `n` more.
    pub fn add(&self, n: u64) {
        self.0.fetch_add(n, Ordering::Relaxed);
    }

    /// Counts one more.
    pub fn inc(&self) {
        self.add(1);
    }

    /// The count.
    pub fn get(&self) -> u64 {
        self.0.load(Ordering::Relaxed)
    }

    /// Counts `n` fewer (for a gauge kept in a `Counter`, such as calls held now).
    pub fn sub(&self, n: u64) {
        self.0.fetch_sub(n, Ordering::Relaxed);
    }

    /// Sets the value (for a gauge kept in a `Counter`, such as a last duration in µs).
    pub fn set(&self, n: u64) {
        self.0.store(n, Ordering::Relaxed);
    }
}

/// Where an exit status came from, as the `source` label says it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ExitSource {
    /// `waitid` on the daemon's own child (it is the subreaper).
    Waitid,
    /// exitwatch's eBPF record (an exit while the daemon was away, or of a process it could
    /// not wait for).
    Ebpf,
    /// `PIDFD_INFO_EXIT` (Linux 6.15+).
    PidfdInfo,
    /// No source knew it: reported as 255.
    Lost,
}

const EXIT_SOURCES: [(ExitSource, &str); 4] = [
    (ExitSource::Waitid, "waitid"),
    (ExitSource::Ebpf, "ebpf"),
    (ExitSource::PidfdInfo, "pidfd_info"),
    (ExitSource::Lost, "lost"),
];

/// The daemon's counters.
#[derive(Debug)]
pub struct DaemonCounters {
    /// Calls served.
    pub calls: calls::Calls,
    /// OCI runtime commands run.
    pub runtime: runtime::Runtime,
    exits: [Counter; 4],
    /// Recoveries run by this process (0 or 1: one at start).
    pub recoveries: Counter,
    /// How long the last recovery took, in microseconds.
    pub recovery_micros: Counter,
    /// Events dropped by the forwarder (a containerd away for its whole outbox).
    pub forward_dropped: Counter,
    /// `track` refusals of exitwatch because its map was full.
    pub map_full: Counter,
    /// Exec probes answered by the daemon itself (`shimless-probe`), by result.
    pub probes_ok: Counter,
    /// Exec probes that failed (the file was stale or missing, or the check could not run).
    pub probes_failed: Counter,
}

/// The daemon's counters: one daemon per process.
pub static DAEMON: DaemonCounters = DaemonCounters {
    calls: calls::Calls::new(),
    runtime: runtime::Runtime::new(),
    exits: [const { Counter::new() }; 4],
    recoveries: Counter::new(),
    recovery_micros: Counter::new(),
    forward_dropped: Counter::new(),
    map_full: Counter::new(),
    probes_ok: Counter::new(),
    probes_failed: Counter::new(),
};

impl DaemonCounters {
    /// Counts an exit whose status came from `source`.
    pub fn exit(&self, source: ExitSource) {
        let i = EXIT_SOURCES
            .iter()
            .position(|(s, _)| *s == source)
            .expect("every source is listed");
        self.exits[i].inc();
    }

    /// Counts a finished recovery that took `took`.
    pub fn recovered(&self, took: Duration) {
        self.recoveries.inc();
        self.recovery_micros.set(took.as_micros() as u64);
    }

    /// Writes the process-wide families (calls, runtime commands, exits, recoveries, forward
    /// drops, exitwatch refusals, probes) to `out`.
    pub fn render(&self, out: &mut Exposition) {
        self.calls.render(out, "shimless_daemon");
        self.runtime.render(out);
        let exits = "shimless_exits_total";
        out.family(
            exits,
            Kind::Counter,
            "Container process exits reported, by where the status came from.",
        );
        for ((_, label), count) in EXIT_SOURCES.iter().zip(&self.exits) {
            out.sample(exits, &[("source", label)], count.get() as f64);
        }
        out.single(
            "shimless_recoveries_total",
            Kind::Counter,
            "Recoveries of a previous run's containers done by this daemon process.",
            self.recoveries.get() as f64,
        );
        out.single(
            "shimless_recovery_duration_seconds",
            Kind::Gauge,
            "How long this daemon's recovery took.",
            self.recovery_micros.get() as f64 / 1e6,
        );
        out.single(
            "shimless_forward_dropped_events_total",
            Kind::Counter,
            "Events that could not be kept for containerd (its outbox was full or unwritable).",
            self.forward_dropped.get() as f64,
        );
        out.single(
            "shimless_exitwatch_map_full_total",
            Kind::Counter,
            "Processes exitwatch could not track because its map was full.",
            self.map_full.get() as f64,
        );
        let probes = "shimless_probes_total";
        out.family(
            probes,
            Kind::Counter,
            "Exec probes the daemon answered itself, by kind and result.",
        );
        for (result, count) in [
            ("success", &self.probes_ok),
            ("failure", &self.probes_failed),
        ] {
            out.sample(
                probes,
                &[("kind", "file"), ("result", result)],
                count.get() as f64,
            );
        }
    }
}

/// The front's counters.
#[derive(Debug)]
pub struct FrontCounters {
    /// Times the front started the daemon again after it exited.
    pub daemon_restarts: Counter,
    /// Times the front's link to the daemon was made again.
    pub reconnects: Counter,
    /// Calls held now while the daemon is away (see [`FrontCounters::hold`]).
    pub held: Counter,
    /// Calls ever held while the daemon was away.
    pub held_total: Counter,
}

/// The front's counters: one front per process.
pub static FRONT: FrontCounters = FrontCounters {
    daemon_restarts: Counter::new(),
    reconnects: Counter::new(),
    held: Counter::new(),
    held_total: Counter::new(),
};

/// A call held while the daemon is away: counted in `held` until dropped.
#[derive(Debug)]
pub struct Held(());

impl Drop for Held {
    fn drop(&mut self) {
        FRONT.held.sub(1);
    }
}

impl FrontCounters {
    /// Counts a call held from now until the returned guard is dropped.
    ///
    /// ```
    /// use task_service::metrics::FRONT;
    /// let held = FRONT.hold();
    /// assert!(FRONT.held.get() >= 1);
    /// drop(held);
    /// ```
    pub fn hold(&'static self) -> Held {
        self.held.inc();
        self.held_total.inc();
        Held(())
    }

    /// Writes the front's families to `out`.
    pub fn render(&self, out: &mut Exposition) {
        out.single(
            "shimless_front_daemon_restarts_total",
            Kind::Counter,
            "Times the front started shimlessd again after it exited.",
            self.daemon_restarts.get() as f64,
        );
        out.single(
            "shimless_front_reconnects_total",
            Kind::Counter,
            "Times the front connected to shimlessd again after losing it.",
            self.reconnects.get() as f64,
        );
        out.single(
            "shimless_front_held_calls",
            Kind::Gauge,
            "Calls held now, waiting for shimlessd to be back.",
            self.held.get() as f64,
        );
        out.single(
            "shimless_front_held_calls_total",
            Kind::Counter,
            "Calls that had to wait for shimlessd to be back.",
            self.held_total.get() as f64,
        );
    }
}

/// `<prefix>_build_info{version}` and `<prefix>_start_time_seconds`: which binary runs, since
/// when (a restart shows as a new start time).
///
/// ```
/// use task_service::metrics::{exposition::Exposition, process_info};
/// let mut out = Exposition::default();
/// process_info(&mut out, "shimless_daemon", std::time::SystemTime::now());
/// assert!(out.finish().contains("shimless_daemon_build_info{version=\""));
/// ```
pub fn process_info(out: &mut Exposition, prefix: &str, started: SystemTime) {
    let info = format!("{prefix}_build_info");
    out.family(
        &info,
        Kind::Gauge,
        "Always 1; the running binary's version.",
    );
    out.sample(&info, &[("version", env!("CARGO_PKG_VERSION"))], 1.0);
    let since = started
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default()
        .as_secs_f64();
    out.single(
        &format!("{prefix}_start_time_seconds"),
        Kind::Gauge,
        "When this process started, in seconds since the Unix epoch.",
        since,
    );
}
