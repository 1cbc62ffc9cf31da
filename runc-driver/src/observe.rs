//! [`Observer`]: a hook told of every runtime invocation, for a caller's metrics.

use std::sync::Arc;
use std::time::Duration;

/// Called after each runtime command ends with its name (`create`, `start`, `kill`, ...), how
/// long the runtime ran (not counting the wait for a [`ProcessLimit`](crate::ProcessLimit)
/// slot), and whether it succeeded. A command whose future is dropped (cancelled) is not
/// reported.
///
/// ```
/// use std::sync::atomic::{AtomicU64, Ordering};
/// use std::sync::Arc;
/// let calls = Arc::new(AtomicU64::new(0));
/// let seen = calls.clone();
/// let observer = runc_driver::Observer::new(move |_command, _took, _ok| {
///     seen.fetch_add(1, Ordering::Relaxed);
/// });
/// let runc = runc_driver::Runc::builder().observer(observer);
/// ```
#[derive(Clone)]
pub struct Observer(Arc<dyn Fn(&'static str, Duration, bool) + Send + Sync>);

impl Observer {
    /// An observer calling `f(command, took, succeeded)`.
    pub fn new(f: impl Fn(&'static str, Duration, bool) + Send + Sync + 'static) -> Observer {
        Observer(Arc::new(f))
    }

    pub(crate) fn observe(&self, command: &'static str, took: Duration, succeeded: bool) {
        (self.0)(command, took, succeeded)
    }
}

impl std::fmt::Debug for Observer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Observer")
    }
}
