//! Typed errors, with the runtime's own message.

use std::path::PathBuf;
use std::time::Duration;

/// What went wrong running the runtime. Every variant says which command, and carries the
/// runtime's own error message where it gave one (from its `--log-format json` log).
///
/// ```
/// use runc_driver::Error;
/// let e = Error::NotFound { command: "state", id: "web".into(), message: "container does not exist".into() };
/// assert_eq!(e.to_string(), "runc state: no container \"web\": container does not exist");
/// ```
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// An argument was refused before anything ran.
    #[error("invalid {what} {value:?}: {rule}")]
    InvalidArgument {
        /// What the argument is: `container id`, `bundle`, ...
        what: &'static str,
        /// The value given.
        value: String,
        /// The rule it broke.
        rule: &'static str,
    },
    /// The runtime binary could not be started.
    #[error("cannot run the OCI runtime {path}: {source} (install runc or crun, or give its path)")]
    Spawn {
        /// The binary tried.
        path: PathBuf,
        /// The OS error.
        #[source]
        source: std::io::Error,
    },
    /// No container with that id.
    #[error("runc {command}: no container {id:?}: {message}")]
    NotFound {
        /// The command.
        command: &'static str,
        /// The container id.
        id: String,
        /// The runtime's message.
        message: String,
    },
    /// A container with that id exists already.
    #[error("runc {command}: container {id:?} already exists: {message}")]
    AlreadyExists {
        /// The command.
        command: &'static str,
        /// The container id.
        id: String,
        /// The runtime's message.
        message: String,
    },
    /// The container is not in a state that allows the command (start a running container,
    /// pause a stopped one, delete a running one without force, ...).
    #[error("runc {command}: container {id:?} is in the wrong state: {message}")]
    InvalidState {
        /// The command.
        command: &'static str,
        /// The container id.
        id: String,
        /// The runtime's message.
        message: String,
    },
    /// The command did not finish in time; it and its process group were killed.
    #[error("runc {command} did not finish within {after:?} and was killed")]
    Timeout {
        /// The command.
        command: &'static str,
        /// The limit.
        after: Duration,
    },
    /// Any other failure of the runtime.
    #[error("runc {command} failed ({exit}): {message}")]
    Runtime {
        /// The command.
        command: &'static str,
        /// The runtime's last error message (or its stderr).
        message: String,
        /// How it exited, e.g. `exit status: 1`.
        exit: String,
    },
    /// This runtime has no such command (crun 1.8 has no `events` or `features`).
    #[error("{runtime} has no `{command}` command")]
    Unsupported {
        /// The command.
        command: &'static str,
        /// The runtime binary.
        runtime: String,
    },
    /// Talking to the runtime failed (pipes, the console socket, temporary files, output that
    /// does not parse).
    #[error("runc {command}: {what}: {source}")]
    Io {
        /// The command.
        command: &'static str,
        /// What was being done.
        what: &'static str,
        /// The error.
        #[source]
        source: std::io::Error,
    },
}

/// Sorts a failed command's message into a typed error. runc and crun word the same failures
/// differently; both wordings are listed (seen on runc 1.1 and crun 1.8).
pub(crate) fn classify(command: &'static str, id: &str, message: String, exit: String) -> Error {
    let m = message.as_str();
    let id = id.to_string();
    let not_found = m.contains("container does not exist")
        || (m.contains("No such file or directory")
            && (m.contains("/status`")
                || m.contains("cannot open directory")
                || m.contains("/state.json")));
    let exists = m.contains("already exists");
    let wrong_state = [
        "cannot start an already running container",
        "cannot start a container that has stopped",
        "container not running",
        "container not paused",
        "is not running",
        "is not paused",
        "that is not stopped",
        "is not in `created` or `stopped` state",
        "cannot exec in a stopped container",
        "exec.fifo`: No such file or directory",
        "not in created state",
    ]
    .iter()
    .any(|p| m.contains(p));
    if not_found {
        Error::NotFound {
            command,
            id,
            message,
        }
    } else if exists {
        Error::AlreadyExists {
            command,
            id,
            message,
        }
    } else if wrong_state {
        Error::InvalidState {
            command,
            id,
            message,
        }
    } else {
        Error::Runtime {
            command,
            message,
            exit,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn kind(message: &str) -> &'static str {
        match classify("x", "c1", message.into(), "exit status: 1".into()) {
            Error::NotFound { .. } => "not found",
            Error::AlreadyExists { .. } => "exists",
            Error::InvalidState { .. } => "state",
            Error::Runtime { .. } => "runtime",
            _ => "other",
        }
    }

    #[test]
    fn runc_and_crun_wordings_map_to_the_same_kinds() {
        let cases = [
            ("container does not exist", "not found"),
            (
                "error opening file `/run/crun/c1/status`: No such file or directory",
                "not found",
            ),
            (
                "cannot open directory '/run/crun/c1': No such file or directory",
                "not found",
            ),
            (
                "runc create failed: container with given ID already exists",
                "exists",
            ),
            ("container `c1` already exists", "exists"),
            ("cannot start an already running container", "state"),
            (
                "cannot open `/run/crun/c1/exec.fifo`: No such file or directory",
                "state",
            ),
            ("container not running", "state"),
            ("the container `c1` is not running", "state"),
            (
                "cannot delete container c1 that is not stopped: paused",
                "state",
            ),
            (
                "the container `c1` is not in `created` or `stopped` state",
                "state",
            ),
            ("exec failed: cannot exec in a stopped container", "state"),
            (
                "runc create failed: unable to start container process: exec: \"nope\"",
                "runtime",
            ),
        ];
        for (message, want) in cases {
            assert_eq!(kind(message), want, "{message}");
        }
    }
}
