//! The map values, twins of `struct track` and `struct exit_record` in the BPF program.

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

/// How a process ended, decoded from the wait status the kernel recorded.
///
/// ```
/// use exitwatch::ExitStatus;
/// assert_eq!(ExitStatus::from_wait_status(42 << 8), ExitStatus::Exited(42));
/// assert_eq!(ExitStatus::from_wait_status(15).code_for_containerd(), 143);
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ExitStatus {
    /// It exited with this code.
    Exited(u8),
    /// A signal ended it.
    Signaled {
        /// The signal number.
        signal: u8,
        /// Whether it dumped core.
        core_dumped: bool,
    },
}

impl ExitStatus {
    /// Decodes what `waitpid` would store in `*wstatus` for a terminated process.
    pub fn from_wait_status(status: u32) -> ExitStatus {
        match status & 0x7f {
            0 => ExitStatus::Exited(((status >> 8) & 0xff) as u8),
            signal => ExitStatus::Signaled {
                signal: signal as u8,
                core_dumped: status & 0x80 != 0,
            },
        }
    }

    /// The exit code containerd reports: the code, or 128 + the signal.
    pub fn code_for_containerd(self) -> u32 {
        match self {
            ExitStatus::Exited(code) => u32::from(code),
            ExitStatus::Signaled { signal, .. } => 128 + u32::from(signal),
        }
    }
}

/// One recorded exit.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Exit {
    /// The process (thread-group id in the initial PID namespace).
    pub pid: u32,
    /// The cookie given to [`ExitWatch::track`](crate::ExitWatch::track).
    pub cookie: u64,
    /// How it ended.
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
    pub(crate) fn from_record(pid: u32, r: ExitRecord) -> Exit {
        Exit {
            pid,
            cookie: r.cookie,
            status: ExitStatus::from_wait_status(r.wait_status),
            wait_status: r.wait_status,
            exited_after_boot: Duration::from_nanos(r.exit_boot_ns),
            started_after_boot: Duration::from_nanos(r.start_boottime),
            last_tid: r.last_tid,
        }
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

    #[test]
    fn statuses_decode_as_waitpid_would() {
        assert_eq!(ExitStatus::from_wait_status(0), ExitStatus::Exited(0));
        assert_eq!(
            ExitStatus::from_wait_status(255 << 8),
            ExitStatus::Exited(255)
        );
        assert_eq!(
            ExitStatus::from_wait_status(9),
            ExitStatus::Signaled {
                signal: 9,
                core_dumped: false
            }
        );
        assert_eq!(
            ExitStatus::from_wait_status(0x8b),
            ExitStatus::Signaled {
                signal: 11,
                core_dumped: true
            }
        );
    }
}
