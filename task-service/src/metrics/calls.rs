//! Calls served, by method and gRPC status code, and their latency: a fixed table of atomics,
//! one row per method the daemon serves (anything else counts under `other`).

use super::exposition::{Exposition, Kind};
use super::histogram::Histogram;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

/// The methods counted on their own row, as `(service, method)`.
const METHODS: [(&str, &str); 22] = [
    ("containerd.task.v3.Task", "Create"),
    ("containerd.task.v3.Task", "Start"),
    ("containerd.task.v3.Task", "Delete"),
    ("containerd.task.v3.Task", "Pids"),
    ("containerd.task.v3.Task", "Pause"),
    ("containerd.task.v3.Task", "Resume"),
    ("containerd.task.v3.Task", "Checkpoint"),
    ("containerd.task.v3.Task", "Kill"),
    ("containerd.task.v3.Task", "Exec"),
    ("containerd.task.v3.Task", "ResizePty"),
    ("containerd.task.v3.Task", "CloseIO"),
    ("containerd.task.v3.Task", "Update"),
    ("containerd.task.v3.Task", "Wait"),
    ("containerd.task.v3.Task", "Stats"),
    ("containerd.task.v3.Task", "Connect"),
    ("containerd.task.v3.Task", "Shutdown"),
    ("containerd.task.v3.Task", "State"),
    ("containerd.services.events.v1.Events", "Subscribe"),
    ("shimless.v1.Admin", "List"),
    ("shimless.v1.Admin", "RegisterPublisher"),
    ("shimless.v1.Health", "Status"),
    ("other", "other"),
];

/// gRPC's status codes by number, as their names.
const CODES: [&str; 17] = [
    "OK",
    "CANCELLED",
    "UNKNOWN",
    "INVALID_ARGUMENT",
    "DEADLINE_EXCEEDED",
    "NOT_FOUND",
    "ALREADY_EXISTS",
    "PERMISSION_DENIED",
    "RESOURCE_EXHAUSTED",
    "FAILED_PRECONDITION",
    "ABORTED",
    "OUT_OF_RANGE",
    "UNIMPLEMENTED",
    "INTERNAL",
    "UNAVAILABLE",
    "DATA_LOSS",
    "UNAUTHENTICATED",
];

/// The name of gRPC code `code` (`UNKNOWN` for a number gRPC does not define).
///
/// ```
/// assert_eq!(task_service::metrics::calls::code_name(5), "NOT_FOUND");
/// assert_eq!(task_service::metrics::calls::code_name(99), "UNKNOWN");
/// ```
pub fn code_name(code: u32) -> &'static str {
    CODES.get(code as usize).copied().unwrap_or("UNKNOWN")
}

/// The `(service, method)` of a gRPC path such as `/containerd.task.v3.Task/Create`, as
/// counted: a path the daemon does not serve is `("other", "other")`.
///
/// ```
/// use task_service::metrics::calls::method_of;
/// assert_eq!(method_of("/containerd.task.v3.Task/Kill"), ("containerd.task.v3.Task", "Kill"));
/// assert_eq!(method_of("/x.Y/Z"), ("other", "other"));
/// ```
pub fn method_of(path: &str) -> (&'static str, &'static str) {
    METHODS[row_of(path)]
}

fn row_of(path: &str) -> usize {
    let path = path.strip_prefix('/').unwrap_or(path);
    METHODS
        .iter()
        .position(|(service, method)| {
            path.strip_prefix(service)
                .and_then(|rest| rest.strip_prefix('/'))
                == Some(method)
        })
        .unwrap_or(METHODS.len() - 1)
}

#[derive(Debug)]
struct Row {
    codes: [AtomicU64; CODES.len()],
    latency: Histogram,
}

/// Every method's counts and latency.
///
/// ```
/// use std::time::Duration;
/// use task_service::metrics::calls::Calls;
/// static CALLS: Calls = Calls::new();
/// CALLS.record("/containerd.task.v3.Task/Create", 0, Duration::from_millis(40));
/// CALLS.record("/containerd.task.v3.Task/Create", 6, Duration::from_millis(1));
/// assert_eq!(CALLS.count("/containerd.task.v3.Task/Create", 0), 1);
/// assert_eq!(CALLS.count("/containerd.task.v3.Task/Create", 6), 1);
/// ```
#[derive(Debug)]
pub struct Calls {
    rows: [Row; METHODS.len()],
}

impl Default for Calls {
    fn default() -> Self {
        Calls::new()
    }
}

impl Calls {
    /// No calls yet (usable in a `static`).
    pub const fn new() -> Calls {
        Calls {
            rows: [const {
                Row {
                    codes: [const { AtomicU64::new(0) }; CODES.len()],
                    latency: Histogram::new(),
                }
            }; METHODS.len()],
        }
    }

    /// Counts one call of `path` answered with gRPC code `code` after `took`.
    pub fn record(&self, path: &str, code: u32, took: Duration) {
        let row = &self.rows[row_of(path)];
        let code = (code as usize).min(CODES.len() - 1);
        row.codes[code].fetch_add(1, Ordering::Relaxed);
        row.latency.observe(took);
    }

    /// How many calls of `path` were answered with `code`.
    pub fn count(&self, path: &str, code: u32) -> u64 {
        self.rows[row_of(path)]
            .codes
            .get(code as usize)
            .map_or(0, |c| c.load(Ordering::Relaxed))
    }

    /// `<prefix>_calls_total{service,method,code}` and `<prefix>_call_duration_seconds`, for
    /// the methods that were called.
    pub fn render(&self, out: &mut Exposition, prefix: &str) {
        let total = format!("{prefix}_calls_total");
        out.family(
            &total,
            Kind::Counter,
            "Calls answered, by gRPC service, method and status code.",
        );
        for ((service, method), row) in METHODS.iter().zip(&self.rows) {
            for (code, count) in CODES.iter().zip(&row.codes) {
                let count = count.load(Ordering::Relaxed);
                if count > 0 {
                    let labels = [("service", *service), ("method", *method), ("code", *code)];
                    out.sample(&total, &labels, count as f64);
                }
            }
        }
        let seconds = format!("{prefix}_call_duration_seconds");
        out.family(
            &seconds,
            Kind::Histogram,
            "How long calls took to answer, by gRPC service and method (a held Wait counts \
             until its exit).",
        );
        for ((service, method), row) in METHODS.iter().zip(&self.rows) {
            if row.latency.count() > 0 {
                let labels = [("service", *service), ("method", *method)];
                row.latency.render(out, &seconds, &labels);
            }
        }
    }
}
