//! The daemon's scrape: the counters of [`crate::metrics::DAEMON`] and what is read at scrape
//! time (containers by state, exitwatch's maps, the forward queues).

use super::Daemon;
use crate::lock::lock;
use crate::metrics::exposition::{Exposition, Kind};
use crate::model::ProcessState;
use std::collections::BTreeMap;
use std::time::SystemTime;

impl Daemon {
    /// The daemon's metrics in Prometheus's text format (what its metrics endpoint serves;
    /// see `task-service/README.md` for each family). `started` is when the process started.
    ///
    /// ```no_run
    /// # fn f(daemon: task_service::daemon::Daemon) {
    /// let text = daemon.metrics_text(std::time::SystemTime::now());
    /// assert!(text.contains("shimless_containers"));
    /// # }
    /// ```
    pub fn metrics_text(&self, started: SystemTime) -> String {
        let mut out = Exposition::default();
        crate::metrics::process_info(&mut out, "shimless_daemon", started);
        crate::metrics::DAEMON.render(&mut out);
        self.render_containers(&mut out);
        self.render_exitwatch(&mut out);
        self.render_forward(&mut out);
        self.render_probes(&mut out);
        out.finish()
    }

    /// What `Health/Status` says beyond what is fixed at start: containers, exitwatch's maps,
    /// the forward queues, the latest warnings and errors.
    pub(super) fn fill_status(&self, answer: &mut crate::api::shimless::v1::StatusResponse) {
        use crate::api::shimless::v1::{ContainerCount, LogLine};
        answer.containers = self
            .container_counts()
            .into_iter()
            .map(|((namespace, state), count)| ContainerCount {
                namespace,
                state: state.into(),
                count: count as u32,
            })
            .collect();
        if let Some(stats) = self.inner.exits.stats() {
            answer.exitwatch_pin_dir = self.inner.config.bpf_pin_dir.display().to_string();
            answer.exitwatch_tracked = stats.tracked;
            answer.exitwatch_recorded = stats.recorded;
            answer.exitwatch_capacity = stats.capacity;
            answer.exitwatch_attach = match self.inner.exits.attach_mode() {
                Some(exitwatch::AttachMode::BtfTracePoint) => "tp_btf",
                Some(exitwatch::AttachMode::TracePoint) => "tracepoint",
                Some(exitwatch::AttachMode::RawTracePoint) => "raw_tp",
                Some(exitwatch::AttachMode::Auto) | None => "",
            }
            .into();
        }
        answer.forward_queue = self
            .inner
            .forwarder
            .pending()
            .iter()
            .map(|(_, n)| *n as u64)
            .sum();
        answer.forward_dropped = crate::metrics::DAEMON.forward_dropped.get();
        answer.last_errors = crate::logging::recent_problems()
            .into_iter()
            .map(|(at, level, message)| LogLine {
                at: at
                    .duration_since(std::time::UNIX_EPOCH)
                    .unwrap_or_default()
                    .as_secs(),
                level: level.into(),
                message,
            })
            .collect();
    }

    /// Every container the daemon holds, by namespace and its init's state, and those whose
    /// `Create` is under way as `creating`.
    fn container_counts(&self) -> BTreeMap<(String, &'static str), u64> {
        let mut counts: BTreeMap<(String, &'static str), u64> = BTreeMap::new();
        let entries: Vec<_> = lock(&self.inner.containers)
            .iter()
            .map(|((ns, _), entry)| (ns.to_string(), entry.clone()))
            .collect();
        for (ns, entry) in entries {
            let state = match lock(&entry.record).container.init.state {
                ProcessState::Created => "created",
                ProcessState::Running => "running",
                ProcessState::Paused => "paused",
                ProcessState::Stopped(_) => "stopped",
            };
            *counts.entry((ns, state)).or_default() += 1;
        }
        for (ns, _) in lock(&self.inner.creating).iter() {
            *counts.entry((ns.to_string(), "creating")).or_default() += 1;
        }
        counts
    }

    /// `shimless_containers{namespace,state}` (see [`Daemon::container_counts`]).
    fn render_containers(&self, out: &mut Exposition) {
        let counts = self.container_counts();
        let name = "shimless_containers";
        out.family(
            name,
            Kind::Gauge,
            "Containers the daemon holds, by containerd namespace and their init's state.",
        );
        for ((ns, state), count) in counts {
            out.sample(name, &[("namespace", &ns), ("state", state)], count as f64);
        }
    }

    /// Whether exitwatch is loaded and how full its maps are.
    fn render_exitwatch(&self, out: &mut Exposition) {
        let exits = &self.inner.exits;
        out.single(
            "shimless_exitwatch_loaded",
            Kind::Gauge,
            "1 when exitwatch records exit codes in the kernel, 0 when the daemon runs without it.",
            if exits.kernel_recording() { 1.0 } else { 0.0 },
        );
        let Some(stats) = exits.stats() else {
            return;
        };
        let map = "shimless_exitwatch_map_entries";
        out.family(
            map,
            Kind::Gauge,
            "Entries in exitwatch's maps: processes tracked, exits recorded and not yet taken.",
        );
        out.sample(map, &[("map", "tracking")], f64::from(stats.tracked));
        out.sample(map, &[("map", "exited")], f64::from(stats.recorded));
        out.single(
            "shimless_exitwatch_map_capacity",
            Kind::Gauge,
            "How many entries each of exitwatch's maps holds at most.",
            f64::from(stats.capacity),
        );
    }

    /// `shimless_forward_queue_events{containerd}`: events each containerd has not taken yet.
    fn render_forward(&self, out: &mut Exposition) {
        let name = "shimless_forward_queue_events";
        out.family(
            name,
            Kind::Gauge,
            "Events waiting for containerd to take them, by containerd address.",
        );
        for (address, pending) in self.inner.forwarder.pending() {
            out.sample(name, &[("containerd", &address)], pending as f64);
        }
    }

    /// The daemon-run probes (pod annotation `shimless.io/probes`): how many by kind and
    /// current result, and the node's prober's counters.
    fn render_probes(&self, out: &mut Exposition) {
        let (rows, counters) = self.probe_list("");
        let mut by: BTreeMap<(String, String), u64> = BTreeMap::new();
        for row in rows {
            *by.entry((row.kind, row.result)).or_default() += 1;
        }
        let name = "shimless_daemon_probes";
        out.family(
            name,
            Kind::Gauge,
            "Daemon-run probes, by kind and current result.",
        );
        for ((kind, result), n) in by {
            out.sample(name, &[("kind", &kind), ("result", &result)], n as f64);
        }
        for (name, help, value) in [
            (
                "shimless_daemon_probe_runs_total",
                "Checks made by the node's prober for daemon-run probes.",
                counters.runs,
            ),
            (
                "shimless_daemon_probe_failures_total",
                "Checks of daemon-run probes that failed.",
                counters.failures,
            ),
            (
                "shimless_daemon_probe_kills_total",
                "Containers killed because a liveness or startup probe failed.",
                counters.kills,
            ),
        ] {
            out.single(name, Kind::Counter, help, value as f64);
        }
    }
}
