//! A container: its init process and its execs, and the order in which their exits are told.

use super::process::{Exit, Process, ProcessState, Refused};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// An exit ready to be reported (as `TaskExit` and to waiters).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExitReport {
    /// `None` for the init process, else the exec id.
    pub exec_id: Option<String>,
    /// The process's PID.
    pub pid: Option<i32>,
    /// How and when it ended.
    pub exit: Exit,
}

/// A container's processes.
///
/// containerd expects a container's init exit to come after the exits of its execs (the Go
/// shim holds it back the same way): an exec can outlive init for a moment when they do not
/// share a PID namespace teardown, and a `TaskExit` for init makes containerd tear the task
/// down. So [`Container::init_exited`] holds the init exit while any exec is still alive, and
/// [`Container::exec_exited`] releases it with the last exec's exit.
///
/// ```
/// use pidfd::ExitStatus;
/// use task_service::model::{Container, Exit};
/// let at = std::time::SystemTime::UNIX_EPOCH;
/// let mut c = Container::new(Some(100));
/// c.init.start()?;
/// c.add_exec("sh", Some(101))?;
/// c.start_exec("sh")?;
/// // init dies first: nothing is reported yet, the exec is still alive
/// assert!(c.init_exited(Exit { status: ExitStatus::Exited(0), at }).is_empty());
/// // the exec's exit releases both, exec first
/// let told = c.exec_exited("sh", Exit { status: ExitStatus::Exited(1), at })?;
/// assert_eq!(told.iter().map(|r| r.exec_id.as_deref()).collect::<Vec<_>>(), [Some("sh"), None]);
/// # Ok::<(), task_service::model::Refused>(())
/// ```
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Container {
    /// The container's init process.
    pub init: Process,
    /// Exec processes by id.
    pub execs: BTreeMap<String, Process>,
    /// The init exit, held back while execs still run.
    #[serde(default)]
    held_init_exit: Option<Exit>,
}

impl Container {
    /// A created container whose init has `pid`.
    pub fn new(init_pid: Option<i32>) -> Self {
        Container {
            init: Process::new(init_pid),
            execs: BTreeMap::new(),
            held_init_exit: None,
        }
    }

    /// Registers a new exec; the container must be running.
    pub fn add_exec(&mut self, exec_id: &str, pid: Option<i32>) -> Result<(), Refused> {
        match self.init.state {
            ProcessState::Running => {}
            other => return Err(Refused::NotRunning(other.name())),
        }
        if self.execs.contains_key(exec_id) {
            return Err(Refused::ExecExists(exec_id.into()));
        }
        self.execs.insert(exec_id.into(), Process::new(pid));
        Ok(())
    }

    /// The exec `exec_id`.
    pub fn exec(&self, exec_id: &str) -> Result<&Process, Refused> {
        self.execs
            .get(exec_id)
            .ok_or_else(|| Refused::NoSuchExec(exec_id.into()))
    }

    /// Starts the exec `exec_id`.
    pub fn start_exec(&mut self, exec_id: &str) -> Result<(), Refused> {
        self.exec_mut(exec_id)?.start()
    }

    fn exec_mut(&mut self, exec_id: &str) -> Result<&mut Process, Refused> {
        self.execs
            .get_mut(exec_id)
            .ok_or_else(|| Refused::NoSuchExec(exec_id.into()))
    }

    fn execs_alive(&self) -> bool {
        self.execs
            .values()
            .any(|p| matches!(p.state, ProcessState::Running | ProcessState::Paused))
    }

    /// Records init's exit and returns what may be reported now: nothing while execs run (the
    /// exit is held), else the init exit. A repeated exit is ignored.
    pub fn init_exited(&mut self, exit: Exit) -> Vec<ExitReport> {
        if self.init.exit().is_some() || self.held_init_exit.is_some() {
            return Vec::new();
        }
        if self.execs_alive() {
            self.held_init_exit = Some(exit);
            return Vec::new();
        }
        self.init.exited(exit);
        vec![ExitReport {
            exec_id: None,
            pid: self.init.pid,
            exit,
        }]
    }

    /// Records an exec's exit and returns what may be reported now: that exit, followed by the
    /// held init exit if this was the last live exec. A repeated exit returns nothing.
    pub fn exec_exited(&mut self, exec_id: &str, exit: Exit) -> Result<Vec<ExitReport>, Refused> {
        let process = self.exec_mut(exec_id)?;
        let pid = process.pid;
        if !process.exited(exit) {
            return Ok(Vec::new());
        }
        let mut told = vec![ExitReport {
            exec_id: Some(exec_id.into()),
            pid,
            exit,
        }];
        if !self.execs_alive()
            && let Some(init_exit) = self.held_init_exit.take()
        {
            self.init.exited(init_exit);
            told.push(ExitReport {
                exec_id: None,
                pid: self.init.pid,
                exit: init_exit,
            });
        }
        Ok(told)
    }

    /// Removes a finished exec (containerd deletes execs after their exit).
    pub fn delete_exec(&mut self, exec_id: &str) -> Result<Process, Refused> {
        self.exec(exec_id)?.check_delete()?;
        self.execs
            .remove(exec_id)
            .ok_or_else(|| Refused::NoSuchExec(exec_id.into()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use pidfd::ExitStatus;
    use std::time::SystemTime;

    fn exit(code: u8) -> Exit {
        Exit {
            status: ExitStatus::Exited(code),
            at: SystemTime::UNIX_EPOCH,
        }
    }

    fn running() -> Container {
        let mut c = Container::new(Some(1));
        c.init.start().unwrap();
        c
    }

    #[test]
    fn init_exit_without_execs_is_reported_at_once() {
        let mut c = running();
        let told = c.init_exited(exit(0));
        assert_eq!(
            told,
            [ExitReport {
                exec_id: None,
                pid: Some(1),
                exit: exit(0)
            }]
        );
        assert!(c.init_exited(exit(9)).is_empty(), "reported once");
    }

    #[test]
    fn init_exit_waits_for_the_last_live_exec() {
        let mut c = running();
        for id in ["a", "b", "never-started"] {
            c.add_exec(id, Some(10)).unwrap();
        }
        c.start_exec("a").unwrap();
        c.start_exec("b").unwrap();
        assert!(c.init_exited(exit(0)).is_empty());
        assert_eq!(c.init.state, ProcessState::Running, "held, not yet stopped");
        let first = c.exec_exited("a", exit(1)).unwrap();
        assert_eq!(first.len(), 1);
        let last = c.exec_exited("b", exit(2)).unwrap();
        let order: Vec<_> = last.iter().map(|r| (r.exec_id.clone(), r.exit)).collect();
        assert_eq!(order, [(Some("b".to_string()), exit(2)), (None, exit(0))]);
        assert_eq!(c.init.exit(), Some(exit(0)));
    }

    #[test]
    fn exec_rules_are_enforced() {
        let mut c = Container::new(Some(1));
        assert_eq!(c.add_exec("a", None), Err(Refused::NotRunning("created")));
        c.init.start().unwrap();
        c.add_exec("a", None).unwrap();
        assert_eq!(c.add_exec("a", None), Err(Refused::ExecExists("a".into())));
        assert_eq!(c.start_exec("zz"), Err(Refused::NoSuchExec("zz".into())));
        c.start_exec("a").unwrap();
        assert!(
            c.delete_exec("a").is_err(),
            "a running exec cannot be deleted"
        );
        c.exec_exited("a", exit(0)).unwrap();
        assert_eq!(c.delete_exec("a").unwrap().exit(), Some(exit(0)));
        assert!(c.execs.is_empty());
    }

    #[test]
    fn a_container_record_survives_serialization_with_a_held_exit() {
        let mut c = running();
        c.add_exec("a", Some(2)).unwrap();
        c.start_exec("a").unwrap();
        c.init_exited(exit(5));
        let back: Container = serde_json::from_str(&serde_json::to_string(&c).unwrap()).unwrap();
        assert_eq!(back, c);
    }
}
