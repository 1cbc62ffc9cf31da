//! What can go wrong, and what to do about it.

use crate::attach::{AttachFailure, is_permission_denied};
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
    /// Loading or attaching was refused for lack of privilege (`EPERM`).
    #[error("not permitted to {what}: run as root, or with CAP_BPF and CAP_PERFMON")]
    PermissionDenied {
        /// What was refused.
        what: &'static str,
        /// The refusal, as aya or the OS reported it.
        #[source]
        source: Box<dyn std::error::Error + Send + Sync + 'static>,
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
    /// A recorded wait status describes no termination: something other than exitwatch's
    /// program wrote the map.
    #[error(
        "the exit recorded for pid {pid} has wait status {wait_status:#x}, which ends no process: \
         something other than exitwatch wrote {dir}; unload and load again",
        dir = "exited_events"
    )]
    BadRecord {
        /// The PID the record is for.
        pid: u32,
        /// The raw status found.
        wait_status: u32,
    },
    /// No attach mode worked: each mode tried failed, for a reason other than privilege.
    #[error("cannot attach to sched_process_exit: {}", list(.earlier, .last))]
    Attach {
        /// The failures of the modes tried before the last one
        /// ([`AttachMode::Auto`](crate::AttachMode::Auto) tries three).
        earlier: Vec<AttachFailure>,
        /// The last mode's failure.
        #[source]
        last: Box<AttachFailure>,
    },
    /// Another eBPF operation failed.
    #[error("{what}: {source}")]
    Bpf {
        /// The operation.
        what: &'static str,
        /// aya's error.
        #[source]
        source: Box<dyn std::error::Error + Send + Sync + 'static>,
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

fn list(earlier: &[AttachFailure], last: &AttachFailure) -> String {
    earlier
        .iter()
        .chain(std::iter::once(last))
        .map(ToString::to_string)
        .collect::<Vec<_>>()
        .join("; ")
}

impl Error {
    /// The error for a failed attach: [`Error::PermissionDenied`] if any attempt was refused
    /// for lack of privilege, else [`Error::Attach`] with every attempt.
    pub(crate) fn from_attach_failures(mut failures: Vec<AttachFailure>) -> Error {
        if let Some(i) = failures
            .iter()
            .position(AttachFailure::is_permission_denied)
        {
            return Error::PermissionDenied {
                what: "attach the eBPF program",
                source: Box::new(failures.swap_remove(i)),
            };
        }
        match failures.pop() {
            Some(last) => Error::Attach {
                earlier: failures,
                last: Box::new(last),
            },
            None => Error::Bpf {
                what: "attach the eBPF program",
                source: "no attach mode to try".into(),
            },
        }
    }

    /// The error for a failed load of the object: [`Error::PermissionDenied`] on `EPERM`.
    pub(crate) fn from_load(source: aya::EbpfError) -> Error {
        if is_permission_denied(&source) {
            Error::PermissionDenied {
                what: "load the eBPF program",
                source: Box::new(source),
            }
        } else {
            Error::Bpf {
                what: "load the eBPF object",
                source: Box::new(source),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::AttachMode;

    fn failure(mode: AttachMode, errno: i32) -> AttachFailure {
        AttachFailure {
            mode,
            step: "attach",
            source: Box::new(aya::sys::SyscallError {
                call: "bpf_link_create",
                io_error: std::io::Error::from_raw_os_error(errno),
            }),
        }
    }

    #[test]
    fn eperm_deep_in_the_chain_is_permission_denied_and_keeps_its_source() {
        let e = Error::from_attach_failures(vec![
            failure(AttachMode::BtfTracePoint, 22),
            failure(AttachMode::TracePoint, 1),
        ]);
        match &e {
            Error::PermissionDenied { source, .. } => {
                assert!(source.to_string().starts_with("TracePoint attach"))
            }
            other => panic!("{other:?}"),
        }
        assert!(std::error::Error::source(&e).is_some());
    }

    #[test]
    fn other_failures_are_all_kept_in_order() {
        let e = Error::from_attach_failures(vec![
            failure(AttachMode::BtfTracePoint, 22),
            failure(AttachMode::RawTracePoint, 2),
        ]);
        match &e {
            Error::Attach { earlier, last } => {
                assert_eq!(earlier.len(), 1);
                assert_eq!(earlier[0].mode, AttachMode::BtfTracePoint);
                assert_eq!(last.mode, AttachMode::RawTracePoint);
            }
            other => panic!("{other:?}"),
        }
        let text = e.to_string();
        assert!(
            text.contains("BtfTracePoint attach") && text.contains("; RawTracePoint attach"),
            "{text}"
        );
    }
}
