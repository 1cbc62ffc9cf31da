//! [`ProberHandle`]: commands to a prober from other threads and tasks.

use std::sync::{Arc, Mutex, MutexGuard};
use std::task::Waker;

use super::event::{Counters, Target};
use crate::{FileProbe, ProbeKind};

/// A command from a [`ProberHandle`].
#[derive(Debug)]
pub(super) enum Command {
    Add(String, Box<FileProbe>, Target),
    Remove(String, ProbeKind),
    Restart(String, Target),
}

#[derive(Debug, Default)]
pub(super) struct SharedState {
    pub(super) commands: Vec<Command>,
    pub(super) waker: Option<Waker>,
    pub(super) handles: usize,
    pub(super) closed: bool,
    pub(super) counters: Counters,
}

#[derive(Debug, Default)]
pub(super) struct Shared {
    pub(super) state: Mutex<SharedState>,
}

impl Shared {
    pub(super) fn lock(&self) -> MutexGuard<'_, SharedState> {
        // Every update under this lock is a push, a take or a counter copy: never torn.
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// Adds, removes and restarts probes of a [`Prober`](crate::Prober) from any thread or task, also
/// while the prober's consumer is awaiting events. Cloneable; commands are applied in order the
/// next time the prober is polled (each wakes it). While any handle is alive the prober's stream
/// does not end when it runs out of probes.
///
/// ```
/// use std::{sync::Arc, time::Instant};
/// use fileprobe::{ProbeKind, ProbeResult, ProbeSpec, Prober, Target};
/// use futures_lite::StreamExt;
/// let dir = tempfile::tempdir().unwrap();
/// std::fs::write(dir.path().join("probe"), b"").unwrap();
/// let root = Arc::new(fileprobe::open_root(dir.path().to_str().unwrap()).unwrap());
/// let probe = ProbeSpec::from_yaml("file: {path: /probe, validity: 30}").unwrap()
///     .validate(ProbeKind::Readiness).unwrap();
/// let mut prober = Prober::new();
/// let handle = prober.handle();
/// let adder = std::thread::spawn(move || {
///     handle.add("web", probe, Target { id: "c1".into(), root, started_at: Instant::now() });
/// });
/// let ev = futures_lite::future::block_on(prober.next()).unwrap();
/// assert_eq!(ev.result, ProbeResult::Success);
/// adder.join().unwrap();
/// ```
#[derive(Debug)]
pub struct ProberHandle {
    pub(super) shared: Arc<Shared>,
}

impl Clone for ProberHandle {
    fn clone(&self) -> Self {
        self.shared.lock().handles += 1;
        ProberHandle {
            shared: self.shared.clone(),
        }
    }
}

impl Drop for ProberHandle {
    fn drop(&mut self) {
        let waker = {
            let mut s = self.shared.lock();
            s.handles -= 1;
            if s.handles == 0 { s.waker.take() } else { None }
        };
        // The last handle gone: the prober may now end its stream.
        if let Some(w) = waker {
            w.wake();
        }
    }
}

impl ProberHandle {
    fn send(&self, command: Command) -> bool {
        let waker = {
            let mut s = self.shared.lock();
            if s.closed {
                return false;
            }
            s.commands.push(command);
            s.waker.take()
        };
        if let Some(w) = waker {
            w.wake();
        }
        true
    }

    /// Queues [`Prober::add`](crate::Prober::add); `false` if the prober was dropped.
    ///
    /// ```
    /// # use std::{sync::Arc, time::Instant};
    /// # let root = Arc::new(fileprobe::open_root("/tmp").unwrap());
    /// let probe = fileprobe::ProbeSpec::from_yaml("file: {path: /p, validity: 3}").unwrap()
    ///     .validate(fileprobe::ProbeKind::Liveness).unwrap();
    /// let handle = fileprobe::Prober::new().handle(); // the prober is dropped at once
    /// assert!(!handle.add("web", probe, fileprobe::Target { id: "c1".into(), root, started_at: Instant::now() }));
    /// ```
    pub fn add(&self, container: &str, probe: FileProbe, target: Target) -> bool {
        self.send(Command::Add(container.to_owned(), Box::new(probe), target))
    }

    /// Queues [`Prober::remove`](crate::Prober::remove); `false` if the prober was dropped (whether
    /// the probe existed is not known here).
    ///
    /// ```
    /// let prober = fileprobe::Prober::new();
    /// assert!(prober.handle().remove("web", fileprobe::ProbeKind::Startup));
    /// ```
    pub fn remove(&self, container: &str, kind: ProbeKind) -> bool {
        self.send(Command::Remove(container.to_owned(), kind))
    }

    /// Queues [`Prober::restart`](crate::Prober::restart); `false` if the prober was dropped.
    ///
    /// ```
    /// let prober = fileprobe::Prober::new();
    /// let root = std::sync::Arc::new(fileprobe::open_root("/tmp").unwrap());
    /// assert!(prober.handle().restart("web", fileprobe::Target { id: "c2".into(), root,
    ///     started_at: std::time::Instant::now() }));
    /// ```
    pub fn restart(&self, container: &str, target: Target) -> bool {
        self.send(Command::Restart(container.to_owned(), target))
    }

    /// The prober's counters as of its last batch or event.
    ///
    /// ```
    /// assert_eq!(fileprobe::Prober::new().handle().counters().runs, 0);
    /// ```
    pub fn counters(&self) -> Counters {
        self.shared.lock().counters
    }
}
