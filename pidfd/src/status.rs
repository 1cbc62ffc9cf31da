//! How a process ended.

use serde::{Deserialize, Serialize};
use std::fmt;

/// How a process ended, as `waitpid` reports it.
///
/// ```
/// use shimless_pidfd::ExitStatus;
/// assert_eq!(ExitStatus::Exited(3).code_for_containerd(), 3);
/// let killed = ExitStatus::Signaled { signal: 9, core_dumped: false };
/// assert_eq!(killed.code_for_containerd(), 137);
/// assert_eq!(killed.to_string(), "killed by signal 9 (SIGKILL)");
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ExitStatus {
    /// The process called `exit` (or returned from `main`) with this code.
    Exited(u8),
    /// The process was terminated by a signal.
    Signaled {
        /// The signal number (1–64).
        signal: u8,
        /// Whether the kernel wrote a core dump.
        core_dumped: bool,
    },
}

impl ExitStatus {
    /// Decodes a raw wait status, the integer `waitpid(2)` stores in `*wstatus` (and that
    /// `PIDFD_INFO_EXIT` and eBPF records carry). Returns `None` for a status that does not
    /// describe a termination (a stopped or continued process).
    ///
    /// ```
    /// use shimless_pidfd::ExitStatus;
    /// assert_eq!(ExitStatus::from_wait_status(42 << 8), Some(ExitStatus::Exited(42)));
    /// assert_eq!(
    ///     ExitStatus::from_wait_status(11 | 0x80),
    ///     Some(ExitStatus::Signaled { signal: 11, core_dumped: true })
    /// );
    /// assert_eq!(ExitStatus::from_wait_status(0x137f), None); // stopped by SIGSTOP
    /// ```
    pub fn from_wait_status(status: i32) -> Option<Self> {
        let low = status & 0x7f;
        if low == 0 {
            return Some(ExitStatus::Exited(((status >> 8) & 0xff) as u8));
        }
        // 0x7f marks a stopped process; 0xffff a continued one.
        if low == 0x7f || status == 0xffff {
            return None;
        }
        Some(ExitStatus::Signaled {
            signal: low as u8,
            core_dumped: status & 0x80 != 0,
        })
    }

    /// The raw wait status that [`ExitStatus::from_wait_status`] decodes.
    ///
    /// ```
    /// use shimless_pidfd::ExitStatus;
    /// let s = ExitStatus::Signaled { signal: 15, core_dumped: false };
    /// assert_eq!(ExitStatus::from_wait_status(s.to_wait_status()), Some(s));
    /// ```
    pub fn to_wait_status(self) -> i32 {
        match self {
            ExitStatus::Exited(code) => i32::from(code) << 8,
            ExitStatus::Signaled {
                signal,
                core_dumped,
            } => i32::from(signal & 0x7f) | if core_dumped { 0x80 } else { 0 },
        }
    }

    /// The exit code containerd's runc shim reports: the code itself, or 128 + the signal
    /// number for a process killed by a signal (as shells do).
    ///
    /// ```
    /// use shimless_pidfd::ExitStatus;
    /// let s = ExitStatus::Signaled { signal: 15, core_dumped: false };
    /// assert_eq!(s.code_for_containerd(), 143);
    /// ```
    pub fn code_for_containerd(self) -> u32 {
        match self {
            ExitStatus::Exited(code) => u32::from(code),
            ExitStatus::Signaled { signal, .. } => 128 + u32::from(signal),
        }
    }

    /// Whether the process exited with code 0.
    ///
    /// ```
    /// assert!(shimless_pidfd::ExitStatus::Exited(0).success());
    /// ```
    pub fn success(self) -> bool {
        self == ExitStatus::Exited(0)
    }
}

impl fmt::Display for ExitStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match *self {
            ExitStatus::Exited(code) => write!(f, "exited with code {code}"),
            ExitStatus::Signaled {
                signal,
                core_dumped,
            } => {
                write!(f, "killed by signal {signal}")?;
                if let Some(name) = signal_name(signal) {
                    write!(f, " ({name})")?;
                }
                if core_dumped {
                    f.write_str(", core dumped")?;
                }
                Ok(())
            }
        }
    }
}

/// The conventional name of a standard Linux signal number (x86 and most architectures).
fn signal_name(signal: u8) -> Option<&'static str> {
    const NAMES: [&str; 31] = [
        "SIGHUP",
        "SIGINT",
        "SIGQUIT",
        "SIGILL",
        "SIGTRAP",
        "SIGABRT",
        "SIGBUS",
        "SIGFPE",
        "SIGKILL",
        "SIGUSR1",
        "SIGSEGV",
        "SIGUSR2",
        "SIGPIPE",
        "SIGALRM",
        "SIGTERM",
        "SIGSTKFLT",
        "SIGCHLD",
        "SIGCONT",
        "SIGSTOP",
        "SIGTSTP",
        "SIGTTIN",
        "SIGTTOU",
        "SIGURG",
        "SIGXCPU",
        "SIGXFSZ",
        "SIGVTALRM",
        "SIGPROF",
        "SIGWINCH",
        "SIGIO",
        "SIGPWR",
        "SIGSYS",
    ];
    NAMES.get(usize::from(signal).checked_sub(1)?).copied()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_exit_code_round_trips_through_the_wait_status() {
        for code in 0..=255u8 {
            let s = ExitStatus::Exited(code);
            assert_eq!(ExitStatus::from_wait_status(s.to_wait_status()), Some(s));
            assert_eq!(s.code_for_containerd(), u32::from(code));
        }
    }

    #[test]
    fn every_signal_round_trips_with_and_without_core() {
        for signal in 1..=64u8 {
            for core_dumped in [false, true] {
                let s = ExitStatus::Signaled {
                    signal,
                    core_dumped,
                };
                assert_eq!(ExitStatus::from_wait_status(s.to_wait_status()), Some(s));
                assert_eq!(s.code_for_containerd(), 128 + u32::from(signal));
            }
        }
    }

    #[test]
    fn stopped_and_continued_are_not_terminations() {
        assert_eq!(ExitStatus::from_wait_status((19 << 8) | 0x7f), None);
        assert_eq!(ExitStatus::from_wait_status(0xffff), None);
    }

    #[test]
    fn display_names_signals() {
        let s = ExitStatus::Signaled {
            signal: 11,
            core_dumped: true,
        };
        assert_eq!(s.to_string(), "killed by signal 11 (SIGSEGV), core dumped");
        let rt = ExitStatus::Signaled {
            signal: 40,
            core_dumped: false,
        };
        assert_eq!(rt.to_string(), "killed by signal 40");
    }

    #[test]
    fn serializes_readably() {
        let s = ExitStatus::Signaled {
            signal: 15,
            core_dumped: false,
        };
        let json = serde_json::to_string(&s).unwrap();
        assert_eq!(json, r#"{"signaled":{"signal":15,"core_dumped":false}}"#);
        assert_eq!(serde_json::from_str::<ExitStatus>(&json).unwrap(), s);
        assert_eq!(
            serde_json::to_string(&ExitStatus::Exited(3)).unwrap(),
            r#"{"exited":3}"#
        );
    }
}
