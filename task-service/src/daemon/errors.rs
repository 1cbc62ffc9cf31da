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
