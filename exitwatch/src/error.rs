//! What can go wrong, and what to do about it.

use std::path::PathBuf;

/// An exitwatch failure; each variant says what to do.
///
/// ```
/// let e = exitwatch::Error::NoBtf;
/// assert!(e.to_string().contains("CONFIG_DEBUG_INFO_BTF"));
/// ```
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The kernel has no BTF, which the CO-RE program needs.
    #[error(
        "the kernel has no BTF (/sys/kernel/btf/vmlinux): it must be built with CONFIG_DEBUG_INFO_BTF=y"
    )]
    NoBtf,
    /// Loading or pinning was refused.
    #[error("not permitted to {what}: run as root, or with CAP_BPF and CAP_PERFMON")]
    PermissionDenied {
        /// What was refused.
        what: &'static str,
    },
    /// bpffs is not mounted where the pins go, and mounting it failed.
    #[error(
        "{path} is not on a bpffs mount and mounting one failed ({reason}): mount -t bpf bpf /sys/fs/bpf"
    )]
    BpffsNotMounted {
        /// The pin directory.
        path: PathBuf,
        /// Why mounting failed.
        reason: String,
    },
    /// `tracing_tasks` is full.
    #[error(
        "cannot track pid {pid}: {capacity} processes are tracked already; untrack finished ones"
    )]
    MapFull {
        /// The refused PID.
        pid: u32,
        /// The map's capacity.
        capacity: u32,
    },
    /// The pinned maps were made by another version of exitwatch.
    #[error(
        "pinned map {map} has {found} but this exitwatch needs {expected}: another version pinned \
         it; unload it (remove {dir}) or use another pin directory"
    )]
    PinLayoutMismatch {
        /// The map.
        map: &'static str,
        /// What this version needs (`key 4 B, value 32 B`).
        expected: String,
        /// What the pin has.
        found: String,
        /// The pin directory.
        dir: PathBuf,
    },
    /// The pinned link runs a program that is not exitwatch's.
    #[error("the link pinned at {path} runs program {found:?}, not exitwatch's: remove the pin")]
    ForeignLink {
        /// The link pin.
        path: PathBuf,
        /// The program's name.
        found: String,
    },
    /// The process is not running (or its PID was reused while tracking it).
    #[error("process {pid} is gone: it cannot be tracked")]
    Gone {
        /// The PID.
        pid: u32,
    },
    /// No attach mode worked.
    #[error("cannot attach to sched_process_exit: {0}")]
    Attach(String),
    /// Another eBPF operation failed.
    #[error("{what}: {reason}")]
    Bpf {
        /// The operation.
        what: &'static str,
        /// aya's message.
        reason: String,
    },
    /// A file operation failed.
    #[error("{what} {path}: {source}")]
    Io {
        /// The operation.
        what: &'static str,
        /// The path.
        path: PathBuf,
        /// The OS error.
        #[source]
        source: std::io::Error,
    },
}
