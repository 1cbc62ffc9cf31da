//! Who a process is, beyond its PID: the PID plus the time it started.

use crate::Error;
use serde::{Deserialize, Serialize};
use std::fmt;
use std::io;

/// A process named so that PID reuse cannot fool whoever stored it: its PID and its start time
/// (field 22 of `/proc/<pid>/stat`, in clock ticks since boot). Two processes that share a PID
/// never share a start time, because a PID is only reused after its previous owner is reaped.
///
/// Obtain one with [`PidFd::identity`](crate::PidFd::identity), persist it (it is
/// serializable), and turn it back into a handle with [`PidFd::reopen`](crate::PidFd::reopen),
/// which fails with [`Error::Gone`](crate::Error::Gone) if the PID now names another process.
///
/// ```
/// use shimless_pidfd::ProcessIdentity;
/// let id = ProcessIdentity { pid: 1234, start_time: 56789 };
/// let json = serde_json::to_string(&id).unwrap();
/// assert_eq!(json, r#"{"pid":1234,"start_time":56789}"#);
/// assert_eq!(serde_json::from_str::<ProcessIdentity>(&json).unwrap(), id);
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct ProcessIdentity {
    /// The PID, in the PID namespace of whoever took the identity.
    pub pid: i32,
    /// Start time in clock ticks after boot (`/proc/<pid>/stat` field 22).
    pub start_time: u64,
}

impl fmt::Display for ProcessIdentity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "pid {} started at tick {}", self.pid, self.start_time)
    }
}

/// The start time of process `pid` (field 22 of `/proc/<pid>/stat`, in clock ticks since
/// boot): with the PID, what tells this process from any later owner of the PID.
///
/// Read without a handle, the value may belong to a process that reused the PID since you
/// learned it; [`PidFd::identity`](crate::PidFd::identity) reads it race-free. Reading it twice
/// and comparing tells whether the PID changed owner in between. Fails with
/// [`Error::Gone`] when no process has the PID, [`Error::InvalidPid`] for `pid <= 0`.
///
/// ```
/// use shimless_pidfd::{Error, start_time};
/// let me = std::process::id() as i32;
/// let ticks = start_time(me)?;
/// assert_eq!(start_time(me)?, ticks);
/// assert!(matches!(start_time(0), Err(Error::InvalidPid { pid: 0 })));
/// # Ok::<(), Error>(())
/// ```
pub fn start_time(pid: i32) -> Result<u64, Error> {
    if pid <= 0 {
        return Err(Error::InvalidPid { pid });
    }
    let stat =
        std::fs::read_to_string(format!("/proc/{pid}/stat")).map_err(|e| match e.kind() {
            io::ErrorKind::NotFound => Error::Gone { pid },
            _ => Error::io("read /proc/<pid>/stat", pid, e),
        })?;
    parse_start_time(&stat).ok_or_else(|| {
        let bad = io::Error::new(io::ErrorKind::InvalidData, "no start time in field 22");
        Error::io("parse /proc/<pid>/stat", pid, bad)
    })
}

/// Field 22 of a `/proc/<pid>/stat` line. The command name (field 2) is in parentheses and may
/// itself hold spaces and parentheses, so fields are counted after its *last* `)`.
fn parse_start_time(stat: &str) -> Option<u64> {
    let after_comm = &stat[stat.rfind(')')? + 1..];
    // After the command come fields 3, 4, ...; field 22 is the 20th of them.
    after_comm.split_ascii_whitespace().nth(19)?.parse().ok()
}

/// The PID that `/proc/self/fdinfo/<fd>` reports for a pidfd: `Some(pid)` while the process
/// exists (running or zombie), `None` once it has been reaped (the kernel prints `-1`), which
/// tells whether the PID can have been reused since the pidfd was opened.
pub(crate) fn fdinfo_pid(fd: i32) -> io::Result<Option<i32>> {
    let info = std::fs::read_to_string(format!("/proc/self/fdinfo/{fd}"))?;
    let line = info
        .lines()
        .find_map(|l| l.strip_prefix("Pid:"))
        .ok_or_else(|| {
            io::Error::new(
                io::ErrorKind::InvalidData,
                "fdinfo of a pidfd has no Pid: line",
            )
        })?;
    let pid: i32 = line
        .trim()
        .parse()
        .map_err(|_| io::Error::new(io::ErrorKind::InvalidData, "bad Pid: line in fdinfo"))?;
    Ok((pid > 0).then_some(pid))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn start_time_is_field_22_even_with_parentheses_in_the_name() {
        let stat = "77 (a) b (c)) S 1 77 77 0 -1 4194560 100 0 0 0 1 2 0 0 20 0 1 0 987654 \
                    1000 100 18446744073709551615";
        assert_eq!(parse_start_time(stat), Some(987_654));
    }

    #[test]
    fn truncated_stat_is_rejected() {
        assert_eq!(parse_start_time("77 (x) S 1 2"), None);
        assert_eq!(parse_start_time("no parenthesis"), None);
    }

    #[test]
    fn own_start_time_is_readable_and_stable() {
        let me = std::process::id() as i32;
        let a = start_time(me).unwrap();
        assert!(a > 0);
        assert_eq!(start_time(me).unwrap(), a);
    }
}
