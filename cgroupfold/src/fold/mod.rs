//! Folded containers: the OCI-spec rewrite, and what not to ask the runtime.
//!
//! A folded container lives in its pod's cgroup with its siblings. runc 1.1.5 joins such a
//! cgroup with a deprecation warning (1.2 refuses); crun 1.8.1 joins silently. Several runtime
//! commands then act on every process of the cgroup; [`RuntimeOp`] lists them with the
//! [`Replacement`] the service uses, and [`container_pids`], [`stop_container`] and
//! [`continue_container`] implement the per-container ones by PID namespace.
//!
//! ```
//! use cgroupfold::fold::{RuntimeOp, fold_spec};
//! let mut spec = oci_spec::runtime::Spec::default();
//! fold_spec(&mut spec, "/kubepods/besteffort/podu").unwrap();
//! for op in RuntimeOp::ALL {
//!     println!("{op:?}: {}", op.replacement());
//! }
//! ```

mod ops;
mod procs;
mod spec;

pub use ops::{Observed, Replacement, RuntimeOp, observed};
pub use procs::{container_pids, continue_container, stop_container};
pub use spec::{FoldError, fold_spec};
