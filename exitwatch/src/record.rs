//! The map values, twins of `struct track` and `struct exit_record` in the BPF program.

use crate::error::Error;
use pidfd::ExitStatus;
use std::time::Duration;

/// `struct track`: the value of `tracing_tasks`.
#[repr(C)]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Track {
    pub cookie: u64,
    pub start_boottime: u64,
}

/// `struct exit_record`: the value of `exited_events`.
#[repr(C)]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct ExitRecord {
    pub wait_status: u32,
    pub last_tid: u32,
    pub exit_boot_ns: u64,
    pub start_boottime: u64,
    pub cookie: u64,
}

// SAFETY: both are #[repr(C)] structs of plain integers with no padding (checked by the size
// tests below), so every bit pattern is a valid value, as aya's `Pod` requires.
unsafe impl aya::Pod for Track {}
// SAFETY: as above.
unsafe impl aya::Pod for ExitRecord {}

/// One recorded exit.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Exit {
    /// The process (thread-group id in the initial PID namespace).
    pub pid: u32,
    /// The cookie given to [`ExitWatch::track`](crate::ExitWatch::track).
    pub cookie: u64,
    /// How it ended: [`wait_status`](Exit::wait_status) decoded by shimless-pidfd
    /// (`status.code_for_containerd()` gives containerd's code).
    pub status: ExitStatus,
    /// The raw wait status.
    pub wait_status: u32,
    /// When it exited, as time since boot (`CLOCK_BOOTTIME`).
    pub exited_after_boot: Duration,
    /// When it started, as time since boot.
    pub started_after_boot: Duration,
    /// The thread whose exit ended the process.
    pub last_tid: u32,
}

impl Exit {
    /// Decodes a record of `pid`; a wait status that is no termination (which exitwatch's
    /// program never writes) is [`Error::BadRecord`].
    pub(crate) fn from_record(pid: u32, r: ExitRecord) -> Result<Exit, Error> {
        let status =
            ExitStatus::from_wait_status(r.wait_status as i32).ok_or(Error::BadRecord {
                pid,
                wait_status: r.wait_status,
            })?;
        Ok(Exit {
            pid,
            cookie: r.cookie,
            status,
            wait_status: r.wait_status,
            exited_after_boot: Duration::from_nanos(r.exit_boot_ns),
            started_after_boot: Duration::from_nanos(r.start_boottime),
            last_tid: r.last_tid,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_rust_twins_have_the_c_layout() {
        assert_eq!(std::mem::size_of::<Track>(), 16);
        assert_eq!(std::mem::size_of::<ExitRecord>(), 32);
        assert_eq!(std::mem::offset_of!(ExitRecord, exit_boot_ns), 8);
        assert_eq!(std::mem::offset_of!(ExitRecord, cookie), 24);
    }

    fn decoded(wait_status: u32) -> Result<ExitStatus, Error> {
        let record = ExitRecord {
            wait_status,
            last_tid: 7,
            exit_boot_ns: 2,
            start_boottime: 1,
            cookie: 9,
        };
        Exit::from_record(7, record).map(|e| e.status)
    }

    #[test]
    fn statuses_decode_as_waitpid_would() {
        assert_eq!(decoded(0).unwrap(), ExitStatus::Exited(0));
        assert_eq!(decoded(255 << 8).unwrap(), ExitStatus::Exited(255));
        assert_eq!(
            decoded(9).unwrap(),
            ExitStatus::Signaled {
                signal: 9,
                core_dumped: false
            }
        );
        assert_eq!(
            decoded(0x8b).unwrap(),
            ExitStatus::Signaled {
                signal: 11,
                core_dumped: true
            }
        );
    }

    #[test]
    fn a_status_that_is_no_termination_is_a_typed_error() {
        match decoded(0x137f) {
            Err(Error::BadRecord { pid, wait_status }) => {
                assert_eq!((pid, wait_status), (7, 0x137f))
            }
            other => panic!("{other:?}"),
        }
    }
}
