//! [`ProcessLimit`]: how many runtime processes run at once.
//!
//! Every call forks a runtime (`runc` is a Go binary of ~10 MiB resident while it runs). A node
//! daemon that starts hundreds of calls at once (a restart's recovery, a burst of pod deletions,
//! `Stats` for every container) would otherwise run hundreds of runtimes at once, and a runtime
//! that hangs would hold a process each time it is called. A call waits for a slot before it
//! spawns; the slot is released when the runtime exits (or is killed at its timeout). A call
//! whose runtime stays attached to a process (an `exec` without `detach`) holds its slot while
//! that process runs: a service should run such calls detached, as shimless does.

use std::sync::{Arc, OnceLock};

/// A bound on concurrent runtime processes, shared by every driver built with it (clones share
/// the bound).
///
/// ```
/// use runc_driver::{ProcessLimit, Runc};
/// let limit = ProcessLimit::new(8);
/// let a = Runc::builder().binary("/bin/true").process_limit(limit.clone()).build()?;
/// let b = Runc::builder().binary("/bin/true").root("/tmp/other").process_limit(limit).build()?;
/// // a and b together run at most 8 runtime processes at a time.
/// assert_eq!(ProcessLimit::shared().max(), ProcessLimit::DEFAULT_MAX);
/// # Ok::<(), runc_driver::Error>(())
/// ```
#[derive(Debug, Clone)]
pub struct ProcessLimit {
    slots: Arc<async_lock::Semaphore>,
    max: usize,
}

impl ProcessLimit {
    /// The bound of [`ProcessLimit::shared`]: enough to keep two dozen cores busy with
    /// runtime calls, small enough that a burst cannot fork the node out of memory.
    pub const DEFAULT_MAX: usize = 64;

    /// A new bound of `max` processes (at least 1).
    ///
    /// ```
    /// assert_eq!(runc_driver::ProcessLimit::new(0).max(), 1);
    /// ```
    pub fn new(max: usize) -> ProcessLimit {
        let max = max.max(1);
        ProcessLimit {
            slots: Arc::new(async_lock::Semaphore::new(max)),
            max,
        }
    }

    /// The bound every driver gets unless its builder is given another: one per process,
    /// [`DEFAULT_MAX`](Self::DEFAULT_MAX) runtimes at a time.
    ///
    /// ```
    /// let limit = runc_driver::ProcessLimit::shared();
    /// assert_eq!(limit.max(), 64);
    /// ```
    pub fn shared() -> ProcessLimit {
        static SHARED: OnceLock<ProcessLimit> = OnceLock::new();
        SHARED
            .get_or_init(|| ProcessLimit::new(Self::DEFAULT_MAX))
            .clone()
    }

    /// How many runtime processes may run at once.
    ///
    /// ```
    /// assert_eq!(runc_driver::ProcessLimit::new(3).max(), 3);
    /// ```
    pub fn max(&self) -> usize {
        self.max
    }

    /// Waits for a slot; it is free again when the returned guard is dropped.
    pub(crate) async fn slot(&self) -> async_lock::SemaphoreGuardArc {
        self.slots.acquire_arc().await
    }
}
