//! The container model: what state each process is in and which requests that state allows.
//!
//! Pure bookkeeping, no I/O: the daemon asks the model whether a request is allowed before it
//! runs anything, and tells it what happened after. Wrong requests get a typed
//! [`Refused`] that maps to gRPC `FAILED_PRECONDITION` or `NOT_FOUND`.

mod container;
mod process;

pub use container::{Container, ExitReport};
pub use process::{Exit, Process, ProcessState, Refused};
