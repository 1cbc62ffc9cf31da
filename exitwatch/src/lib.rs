//! Exit codes recorded in the kernel, surviving the process that asked.
//!
//! A supervisor that restarts — even after `kill -9` — loses the exit statuses of children that
//! died while it was away: their new parent reaps them, or nobody does. exitwatch records them
//! in the kernel instead: an eBPF program on the `sched_process_exit` tracepoint writes the
//! exit status of every *tracked* process into a BPF map pinned in bpffs, where the next
//! supervisor (or any other process) reads it.
//!
//! # How it works underneath
//!
//! - The program (`bpf/exit_tracker.bpf.c`) is C, compiled with clang as CO-RE, so it relocates
//!   against the running kernel's BTF. The compiled object is committed and embedded; `build.rs`
//!   rebuilds it when clang is installed, byte-identical to the committed one.
//! - Maps, pinned under `<pin_dir>/exitwatch-v1/`: `tracing_tasks` (tgid → cookie),
//!   `exited_events` (tgid → wait status, exit and start time, last thread, cookie; an LRU map,
//!   so it can never fill) and `exitwatch_counters`. The program's link is pinned last, so a
//!   crash mid-load leaves a state the next loader completes.
//! - The status is the one `waitpid` would give: recorded only when the whole thread group is
//!   dead (the tracepoint's `group_dead` on 6.16+, `signal->live == 0` before), from
//!   `signal->group_exit_code` after a group exit, else the leader's `exit_code`. Deleting the
//!   `tracing_tasks` entry claims the record, so each exit is recorded once.
//! - Loaders serialize on an `flock` of the pin directory; a second loader reuses the pinned
//!   link and maps, after checking their layout (a map pinned by another version is refused,
//!   never reused with the wrong value size) and that the link runs exitwatch's program.
//!
//! # Caveats
//!
//! - Keys are thread-group ids of the **initial PID namespace**. A supervisor inside a
//!   container must track host PIDs (e.g. from `/proc/<pid>/status`'s `NSpid`, or as runc's pid
//!   file gives them when run on the host).
//! - Track before the process can exit; an exit before `track` is not seen.
//! - No `aya-log`: it only decodes records written by Rust eBPF programs; the program reports
//!   through `exitwatch_counters` instead (see [`Stats`]).
//! - Needs root (or CAP_BPF + CAP_PERFMON), and a kernel with BTF.
//!
//! # Example
//!
//! ```no_run
//! use exitwatch::{ExitStatus, ExitWatch};
//! let mut watch = ExitWatch::open_or_load("/sys/fs/bpf/my-supervisor")?;
//! let child = std::process::Command::new("sh").args(["-c", "exit 42"]).spawn()?;
//! watch.track(child.id(), 1)?;
//! # std::thread::sleep(std::time::Duration::from_millis(100));
//! let exit = watch.take(child.id())?.expect("recorded");
//! assert_eq!(exit.status, ExitStatus::Exited(42));
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

mod attach;
mod error;
mod mounts;
mod record;
mod watch;

pub use attach::{AttachFailure, AttachMode};
pub use error::Error;
/// How a process ended: shimless-pidfd's decoder of wait statuses, re-exported so that
/// [`Exit::status`] needs no second dependency.
///
/// ```
/// use exitwatch::ExitStatus;
/// assert_eq!(ExitStatus::from_wait_status(42 << 8), Some(ExitStatus::Exited(42)));
/// ```
pub use pidfd::ExitStatus;
pub use record::Exit;
pub use watch::{CAPACITY, DEFAULT_PIN_DIR, ExitWatch, LAYOUT, Stats};
