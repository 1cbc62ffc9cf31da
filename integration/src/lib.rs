//! Test support for the shimless workspace.
//!
//! This crate is what every other crate's tests lean on: it is a dev-dependency only and never a
//! build dependency of a leaf crate. It holds
//!
//! - [`require`]: the one gate for tests that need privileges or outside programs (root, eBPF,
//!   runc, crun, containerd, clang). Run by hand, a test whose needs are missing prints why it
//!   skips and returns; with `SHIMLESS_REQUIRE_PRIVILEGED=1` (what CI sets) the same skip is a
//!   test failure, so CI can never pass by skipping.
//! - [`bundle`]: OCI bundles built from the host's static busybox, a guard that deletes a test's
//!   container whatever happens, and the preparation crun needs on hybrid-cgroup machines;
//! - [`child`]: a program under test (a daemon, the front) as a child process, ready once it
//!   logs a marker, killed when dropped;
//! - [`shimlessd`]: the daemon's command line for a test (configuration file or private paths),
//!   started as such a child;
//! - [`image`]: OCI image-layout tarballs of busybox (and a pause image) for `ctr images import`;
//! - [`containerd`]: a private containerd (own root, state, sockets, config; CRI optional)
//!   that leaves no task, shim, mount or file behind;
//! - [`raise_fd_limit`] for tests that hold thousands of descriptors;
//! - [`vm`]: one program run inside a Debian kernel under qemu (pure cgroup v2, other kernels).
//!
//! # Example
//!
//! ```
//! use integration::{require, Need};
//!
//! // In a #[test]: return early (or fail under CI) when the machine cannot run it.
//! let Some(_) = require(&[Need::Root]) else { return };
//! assert!(rustix::process::geteuid().is_root());
//! ```

pub mod bundle;
pub mod child;
pub mod containerd;
pub mod image;
mod limits;
mod require;
pub mod shimlessd;
pub mod vm;

pub use limits::raise_fd_limit;

pub use require::{Need, REQUIRE_PRIVILEGED, Unmet, find_program, require, require_privileged_env};
