//! Library errors as gRPC statuses: the right code, and the message naming the value.

use tonic::Status;

pub(crate) fn runc(e: runc_driver::Error) -> Status {
    use runc_driver::Error as E;
    let message = e.to_string();
    match e {
        E::NotFound { .. } => Status::not_found(message),
        E::AlreadyExists { .. } => Status::already_exists(message),
        E::InvalidState { .. } => Status::failed_precondition(message),
        E::InvalidArgument { .. } => Status::invalid_argument(message),
        E::Timeout { .. } => Status::deadline_exceeded(message),
        E::Unsupported { .. } => Status::unimplemented(message),
        _ => Status::internal(message),
    }
}

pub(crate) fn refused(e: crate::model::Refused) -> Status {
    use crate::model::Refused as R;
    match e {
        R::NoSuchExec(_) => Status::not_found(e.to_string()),
        R::ExecExists(_) => Status::already_exists(e.to_string()),
        R::WrongState { .. } | R::NotRunning(_) => Status::failed_precondition(e.to_string()),
    }
}

pub(crate) fn internal(what: &str, e: impl std::fmt::Display) -> Status {
    Status::internal(format!("{what}: {e}"))
}

/// `UNIMPLEMENTED` for a feature shimless does not offer yet, naming it.
pub(crate) fn unimplemented(what: &str) -> Status {
    Status::unimplemented(format!("{what} is not supported by shimless yet"))
}

/// `INVALID_ARGUMENT` with the error's own message (it names the value).
pub(crate) fn invalid(e: impl std::fmt::Display) -> Status {
    Status::invalid_argument(e.to_string())
}

/// A failed signal as containerd-shim-runc-v2 answers it (`checkKillError` in containerd's
/// `pkg/process/utils.go`): a process that has already exited, or a container that is gone, is
/// `NOT_FOUND`. CRI's `StopContainer` (and the task delete behind `StopPodSandbox`) ignores
/// exactly that code, so a container that exits as its pod stops must not fail the stop.
pub(crate) fn kill(e: runc_driver::Error) -> Status {
    use runc_driver::Error as E;
    let message = e.to_string();
    match e {
        E::NotFound { .. } => Status::not_found(message),
        E::InvalidState { .. } | E::Runtime { .. } if means_finished(&message) => {
            Status::not_found(format!("process already finished: {message}"))
        }
        e => runc(e),
    }
}

/// `NOT_FOUND` for signalling a process that has exited (the words containerd uses).
pub(crate) fn already_finished(what: &str) -> Status {
    Status::not_found(format!("process already finished: {what} has exited"))
}

/// Whether a runtime's or the kernel's message says the process is gone: the wordings
/// `checkKillError` matches ("container not running", "no such process", Go's "os: process
/// already finished"), and crun's "is not running".
fn means_finished(message: &str) -> bool {
    let m = message.to_ascii_lowercase();
    [
        "container not running",
        "is not running",
        "no such process",
        "process already finished",
    ]
    .iter()
    .any(|p| m.contains(p))
}

#[cfg(test)]
mod tests {
    use super::*;
    use tonic::Code;

    fn runtime(message: &str) -> runc_driver::Error {
        runc_driver::Error::Runtime {
            command: "kill",
            message: message.into(),
            exit: "exit status: 1".into(),
        }
    }

    #[test]
    fn a_kill_of_a_finished_process_is_not_found_as_containerd_shim_runc_v2_answers() {
        let not_running = runc_driver::Error::InvalidState {
            command: "kill",
            id: "c1".into(),
            message: "container not running".into(),
        };
        let gone = runc_driver::Error::NotFound {
            command: "kill",
            id: "c1".into(),
            message: "container does not exist".into(),
        };
        for e in [
            not_running,
            gone,
            runtime("kill container: no such process"),
            runtime("No such process"),
            runtime("os: process already finished"),
            runtime("the container `c1` is not running"),
        ] {
            assert_eq!(kill(e).code(), Code::NotFound);
        }
        assert_eq!(kill(runtime("permission denied")).code(), Code::Internal);
    }
}
