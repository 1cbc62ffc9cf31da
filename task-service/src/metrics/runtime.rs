//! Runtime invocations (`runc create`, `crun kill`, ...) by command and result, with latency:
//! a fixed table of atomics fed by `runc_driver::Observer`.

use super::Counter;
use super::exposition::{Exposition, Kind};
use super::histogram::Histogram;
use std::time::Duration;

/// The commands counted on their own row (anything else counts under `other`).
const COMMANDS: [&str; 16] = [
    "create", "run", "exec", "start", "kill", "delete", "pause", "resume", "state", "list", "ps",
    "update", "events", "features", "version", "other",
];

#[derive(Debug)]
struct Row {
    succeeded: Counter,
    failed: Counter,
    latency: Histogram,
}

/// Every runtime command's counts and latency.
///
/// ```
/// use std::time::Duration;
/// use task_service::metrics::runtime::Runtime;
/// static RUNTIME: Runtime = Runtime::new();
/// RUNTIME.record("create", Duration::from_millis(80), true);
/// assert_eq!(RUNTIME.count("create", true), 1);
/// assert_eq!(RUNTIME.count("create", false), 0);
/// ```
#[derive(Debug)]
pub struct Runtime {
    rows: [Row; COMMANDS.len()],
}

impl Default for Runtime {
    fn default() -> Self {
        Runtime::new()
    }
}

fn row_of(command: &str) -> usize {
    COMMANDS
        .iter()
        .position(|c| *c == command)
        .unwrap_or(COMMANDS.len() - 1)
}

impl Runtime {
    /// No invocations yet (usable in a `static`).
    pub const fn new() -> Runtime {
        Runtime {
            rows: [const {
                Row {
                    succeeded: Counter::new(),
                    failed: Counter::new(),
                    latency: Histogram::new(),
                }
            }; COMMANDS.len()],
        }
    }

    /// Counts one `command` that ran for `took` and succeeded or not.
    pub fn record(&self, command: &str, took: Duration, succeeded: bool) {
        let row = &self.rows[row_of(command)];
        if succeeded {
            row.succeeded.inc();
        } else {
            row.failed.inc();
        }
        row.latency.observe(took);
    }

    /// How many `command`s succeeded (or failed).
    pub fn count(&self, command: &str, succeeded: bool) -> u64 {
        let row = &self.rows[row_of(command)];
        if succeeded {
            row.succeeded.get()
        } else {
            row.failed.get()
        }
    }

    /// `shimless_runtime_invocations_total{command,result}` and
    /// `shimless_runtime_duration_seconds{command}`, for the commands that ran.
    pub fn render(&self, out: &mut Exposition) {
        let total = "shimless_runtime_invocations_total";
        out.family(
            total,
            Kind::Counter,
            "OCI runtime commands run, by command and result.",
        );
        for (command, row) in COMMANDS.iter().zip(&self.rows) {
            for (result, count) in [("success", &row.succeeded), ("failure", &row.failed)] {
                if row.latency.count() > 0 {
                    let labels = [("command", *command), ("result", result)];
                    out.sample(total, &labels, count.get() as f64);
                }
            }
        }
        let seconds = "shimless_runtime_duration_seconds";
        out.family(
            seconds,
            Kind::Histogram,
            "How long OCI runtime commands ran, by command.",
        );
        for (command, row) in COMMANDS.iter().zip(&self.rows) {
            if row.latency.count() > 0 {
                row.latency.render(out, seconds, &[("command", command)]);
            }
        }
    }
}
