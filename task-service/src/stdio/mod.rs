//! A process's stdin, stdout and stderr, as containerd names them in `Create` and `Exec`.
//!
//! containerd creates one FIFO per stream (under `/run/containerd/fifo/...`), opens its own end,
//! and passes the paths; an empty string means "no such stream". Other forms are URIs:
//! `file:///path` appends the stream to a file.
//!
//! # Why FIFOs are handed to the container directly
//!
//! The Go shim copies between pipes and the FIFOs in its own goroutines. shimless has no process
//! per container, and a copy loop inside the daemon would stop whenever the daemon restarts,
//! leaving containers blocked on full pipes. So the container gets the FIFO itself: the write
//! end for stdout/stderr and the read end for stdin. containerd reads and writes its ends as it
//! always does, and sees end-of-file when the container (the only writer) exits.
//!
//! The daemon additionally holds a *reader* on each output FIFO ([`OpenStdio::keepalive`]):
//! while containerd is away (restarting), a container's write never fails with `EPIPE` for
//! lack of readers; it fills the FIFO's buffer and waits, as with the Go shim. A reader does
//! not delay end-of-file, which depends on writers only. The daemon holds no writer on stdin,
//! so closing stdin from containerd reaches the container.

mod endpoint;
mod error;
mod keepalive;
mod open;
mod owner;

pub use endpoint::{Endpoint, Stream};
pub use error::StdioError;
pub use keepalive::keepalive;
pub use open::{OpenStdio, open, open_as};
pub use owner::IoOwner;
