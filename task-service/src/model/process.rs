//! One process (a container's init, or an exec) and its lifecycle.

use pidfd::ExitStatus;
use serde::{Deserialize, Serialize};
use std::time::SystemTime;

/// How and when a process ended.
///
/// ```
/// use pidfd::ExitStatus;
/// let exit = task_service::model::Exit { status: ExitStatus::Exited(3), at: std::time::SystemTime::now() };
/// assert_eq!(exit.code_for_containerd(), 3);
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Exit {
    /// How it ended.
    pub status: ExitStatus,
    /// When the daemon learned it.
    pub at: SystemTime,
}

impl Exit {
    /// The code containerd expects (128 + signal for a signal): `pidfd::ExitStatus` decodes it,
    /// this only passes it on.
    pub fn code_for_containerd(&self) -> u32 {
        self.status.code_for_containerd()
    }
}

/// Where a process is in its life. The states are containerd's (`containerd.v1.types.Status`).
///
/// ```
/// use task_service::model::ProcessState;
/// assert_eq!(ProcessState::Created.name(), "created");
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ProcessState {
    /// `runc create` (or an exec) done, not started.
    Created,
    /// Started and not known to have exited.
    Running,
    /// Frozen by a pause.
    Paused,
    /// Exited; its status is known.
    Stopped(Exit),
}

impl ProcessState {
    /// The state's lowercase name, as messages and `shimlessctl` print it.
    pub fn name(&self) -> &'static str {
        match self {
            ProcessState::Created => "created",
            ProcessState::Running => "running",
            ProcessState::Paused => "paused",
            ProcessState::Stopped(_) => "stopped",
        }
    }
}

/// A request the current state does not allow.
///
/// ```
/// use task_service::model::{Process, Refused};
/// let mut p = Process::new(Some(10));
/// p.start().unwrap();
/// assert_eq!(
///     p.start().unwrap_err().to_string(),
///     "cannot start: the process is running (it must be created)"
/// );
/// ```
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Refused {
    /// The request does not fit the process's state.
    #[error("cannot {action}: the process is {state} (it must be {needed})")]
    WrongState {
        /// The request: `start`, `pause`, `delete`, ...
        action: &'static str,
        /// The state it found.
        state: &'static str,
        /// The state(s) it needs.
        needed: &'static str,
    },
    /// No such exec in this container.
    #[error("container has no exec process {0:?}")]
    NoSuchExec(String),
    /// An exec with this id exists already.
    #[error("container already has an exec process {0:?}")]
    ExecExists(String),
    /// Execs can only join a running container.
    #[error("cannot exec in a container that is {0} (it must be running)")]
    NotRunning(&'static str),
}

/// One process: its PID (once known) and state.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Process {
    /// Host PID, once the runtime has created it.
    pub pid: Option<i32>,
    /// Where it is in its life.
    pub state: ProcessState,
}

impl Process {
    /// A created, not yet started process.
    pub fn new(pid: Option<i32>) -> Self {
        Process {
            pid,
            state: ProcessState::Created,
        }
    }

    fn refuse(&self, action: &'static str, needed: &'static str) -> Refused {
        Refused::WrongState {
            action,
            state: self.state.name(),
            needed,
        }
    }

    /// Created → Running.
    pub fn start(&mut self) -> Result<(), Refused> {
        match self.state {
            ProcessState::Created => {
                self.state = ProcessState::Running;
                Ok(())
            }
            _ => Err(self.refuse("start", "created")),
        }
    }

    /// Running → Paused.
    pub fn pause(&mut self) -> Result<(), Refused> {
        match self.state {
            ProcessState::Running => {
                self.state = ProcessState::Paused;
                Ok(())
            }
            _ => Err(self.refuse("pause", "running")),
        }
    }

    /// Paused → Running.
    pub fn resume(&mut self) -> Result<(), Refused> {
        match self.state {
            ProcessState::Paused => {
                self.state = ProcessState::Running;
                Ok(())
            }
            _ => Err(self.refuse("resume", "paused")),
        }
    }

    /// Records the exit. The first exit recorded wins; a second is ignored and returns `false`,
    /// so every exit is reported once however many sources saw it.
    pub fn exited(&mut self, exit: Exit) -> bool {
        match self.state {
            ProcessState::Stopped(_) => false,
            _ => {
                self.state = ProcessState::Stopped(exit);
                true
            }
        }
    }

    /// Whether the process may be deleted: it never started, or it has exited.
    pub fn check_delete(&self) -> Result<(), Refused> {
        match self.state {
            ProcessState::Created | ProcessState::Stopped(_) => Ok(()),
            _ => Err(self.refuse("delete", "created or stopped")),
        }
    }

    /// Whether signals can be delivered: not once it has exited.
    pub fn check_kill(&self) -> Result<(), Refused> {
        match self.state {
            ProcessState::Stopped(_) => Err(self.refuse("kill", "created, running or paused")),
            _ => Ok(()),
        }
    }

    /// The exit, if it has exited.
    pub fn exit(&self) -> Option<Exit> {
        match self.state {
            ProcessState::Stopped(exit) => Some(exit),
            _ => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn exit(code: u8) -> Exit {
        Exit {
            status: ExitStatus::Exited(code),
            at: SystemTime::UNIX_EPOCH,
        }
    }

    #[test]
    fn the_lifecycle_allows_exactly_containerds_transitions() {
        let mut p = Process::new(Some(1));
        assert!(p.check_delete().is_ok(), "a created process may be deleted");
        assert!(p.pause().is_err() && p.resume().is_err());
        p.start().unwrap();
        assert!(p.check_delete().is_err() && p.start().is_err() && p.resume().is_err());
        p.pause().unwrap();
        assert!(p.pause().is_err() && p.start().is_err());
        assert!(p.check_kill().is_ok(), "a paused process can be killed");
        p.resume().unwrap();
        assert!(p.exited(exit(7)));
        assert_eq!(p.exit(), Some(exit(7)));
        assert!(p.check_delete().is_ok());
        assert!(p.check_kill().is_err() && p.pause().is_err() && p.start().is_err());
    }

    #[test]
    fn the_first_exit_wins_and_later_ones_are_ignored() {
        let mut p = Process::new(Some(1));
        p.start().unwrap();
        assert!(p.exited(exit(1)));
        assert!(!p.exited(exit(2)));
        assert_eq!(p.exit(), Some(exit(1)));
    }

    #[test]
    fn refusals_say_what_was_found_and_what_was_needed() {
        let p = Process::new(None);
        let err = Process {
            state: ProcessState::Running,
            ..p
        }
        .check_delete()
        .unwrap_err();
        assert_eq!(
            err.to_string(),
            "cannot delete: the process is running (it must be created or stopped)"
        );
    }
}
