//! Kubelet-semantics file probes for thousands of containers.
//!
//! The seed's lightweight probe replaces an exec or HTTP probe with one `statx`: the container
//! touches a file periodically and the probe succeeds iff the file's modification time is within
//! `validity` seconds of now. This crate gives
//!
//! - [`ProbeSpec`]: the probe as written in a pod spec (YAML or JSON), validated with kubelet's
//!   defaults and rules into a [`FileProbe`];
//! - [`check_at`] / [`check`]: the check itself, resolving the path **inside the container's
//!   root** with `openat2(RESOLVE_IN_ROOT | RESOLVE_NO_MAGICLINKS)` and reading the mtime with
//!   `statx`; [`check`] runs it off the executor with a timeout (runtime-agnostic: `blocking` +
//!   `async-io`). [`CachedPath`] does the same check as one `statx` through a cached in-root fd
//!   of the parent directory, falling back to the full resolution whenever in doubt; with a
//!   [`ChangeWatch`] (one inotify instance, a watch per directory) a check of a file that has
//!   not changed since its last `statx` needs no syscall at all.
//! - [`run_command`]: the `shimless-probe file PATH VALIDITY` command as a typed
//!   [`ProbeOutcome`] (exit code 0/1/2 and a one-line reason), the one code path of the
//!   `shimless-probe` binary (root `/`) and of `shimlessd`'s answer to an exec of it (the
//!   container's root);
//! - [`Machine`]: kubelet's per-probe state machine (initial results, startup gating, thresholds,
//!   hold after a liveness/startup failure until a new container id), pure on an injected clock;
//! - [`Prober`]: every probe of a node on one `async-io` timer (100 ms ticks in an ordered map), due
//!   checks run as one batch on the `blocking` pool, result changes out as a `Stream` of
//!   [`ProbeEvent`]s; [`ProberHandle`] adds and removes probes from anywhere while a consumer
//!   awaits; [`ManualClock`] makes schedules deterministic in tests.
//!
//! Caveats: a future mtime counts as fresh; `openat2` needs Linux 5.6 or later; inside
//! [`Prober`] a check stuck past `timeoutSeconds` is failed and its pool thread abandoned, and
//! other probes wait at most that long.
//!
//! # Example
//!
//! ```
//! use std::time::SystemTime;
//! use fileprobe::{ProbeKind, ProbeSpec};
//!
//! let dir = tempfile::tempdir().unwrap();
//! std::fs::write(dir.path().join("probe"), b"").unwrap();
//! let probe = ProbeSpec::from_yaml("file: {path: /probe, validity: 30}")
//!     .unwrap()
//!     .validate(ProbeKind::Readiness)
//!     .unwrap();
//! let root = fileprobe::open_root(dir.path().to_str().unwrap()).unwrap();
//! assert!(fileprobe::check_at(&root, &probe.path, probe.validity, SystemTime::now()).is_ok());
//! ```

mod check;
mod clock;
mod command;
mod config;
mod prober;
mod state;
mod watch;

pub use check::{
    CachedPath, ProbeFailure, check, check_at, mtime_at, open_container_root, open_root,
};
pub use clock::ManualClock;
pub use command::{ProbeCommand, ProbeOutcome, USAGE, UsageError, run_command};
pub use config::{ConfigError, FileAction, FileProbe, ProbeKind, ProbeSpec};
pub use prober::{Counters, ProbeEvent, Prober, ProberHandle, Target};
pub use state::{Machine, ProbeResult, Skip, first_due};
pub use watch::{ChangeWatch, WatchStats};
