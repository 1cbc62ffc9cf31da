//! The pool side of a batch: the worker that runs checks in order and publishes which one it is
//! in, so that the prober can abandon it when a check hangs.

use std::collections::VecDeque;
use std::os::fd::OwnedFd;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant, SystemTime};

use crate::{CachedPath, ProbeFailure};

/// One check to run on the pool.
#[derive(Debug)]
pub(super) struct Job {
    pub(super) slot: u32,
    pub(super) kind: u8,
    pub(super) generation: u64,
    pub(super) root: Arc<OwnedFd>,
    pub(super) path: Box<CachedPath>,
    pub(super) validity: Duration,
    pub(super) timeout: Duration,
}

/// A finished (or timed-out) check.
#[derive(Debug)]
pub(super) struct Done {
    pub(super) slot: u32,
    pub(super) kind: u8,
    pub(super) generation: u64,
    /// Which root the check ran in (`Arc::as_ptr`), to drop results for a replaced root.
    pub(super) root_id: usize,
    /// Keeps that root alive (so its address is not reused) until the result is applied.
    pub(super) _root: Option<Arc<OwnedFd>>,
    /// `None` when the check was abandoned (its cache stays with the stuck thread).
    pub(super) path: Option<Box<CachedPath>>,
    pub(super) result: Result<(), ProbeFailure>,
    /// For an abandoned check: the batch whose worker is stuck in it.
    pub(super) stuck: Option<Arc<Mutex<Progress>>>,
}

impl Done {
    /// A check that failed with Timeout without a result from the kernel: abandoned while it
    /// hung (`stuck` is its batch), or not run because the probe's last check is still stuck.
    pub(super) fn timed_out(
        slot: u32,
        kind: u8,
        generation: u64,
        root_id: usize,
        timeout: Duration,
        stuck: Option<Arc<Mutex<Progress>>>,
    ) -> Done {
        Done {
            slot,
            kind,
            generation,
            root_id,
            _root: None,
            path: None,
            result: Err(ProbeFailure::Timeout { timeout }),
            stuck,
        }
    }

    /// A success answered from the cached mtime (the path stays with its probe).
    pub(super) fn answered(slot: u32, kind: u8, generation: u64, root_id: usize) -> Done {
        Done {
            slot,
            kind,
            generation,
            root_id,
            _root: None,
            path: None,
            result: Ok(()),
            stuck: None,
        }
    }
}

/// What the worker and the prober share about a batch in flight.
#[derive(Debug, Default)]
pub(super) struct Progress {
    pub(super) jobs: VecDeque<Job>,
    /// The check being run: (slot, kind, generation, root id, timeout, started).
    pub(super) current: Option<(u32, u8, u64, usize, Duration, Instant)>,
    pub(super) done: Vec<Done>,
    pub(super) abandoned: bool,
    /// Set by an abandoned worker once its stuck check has returned.
    pub(super) returned: bool,
}

#[derive(Debug)]
pub(super) struct InFlight {
    pub(super) progress: Arc<Mutex<Progress>>,
    pub(super) task: blocking::Task<()>,
}

pub(super) fn lock_progress(p: &Mutex<Progress>) -> MutexGuard<'_, Progress> {
    // Updates are pushes/pops of whole values: consistent even after a panic elsewhere.
    p.lock().unwrap_or_else(|e| e.into_inner())
}

/// The check a worker runs (replaced in unit tests to simulate a check stuck in the kernel).
pub(super) type CheckFn =
    fn(&mut CachedPath, &OwnedFd, Duration, SystemTime) -> Result<Duration, ProbeFailure>;

pub(super) fn real_check(
    path: &mut CachedPath,
    root: &OwnedFd,
    validity: Duration,
    now: SystemTime,
) -> Result<Duration, ProbeFailure> {
    path.check(root, validity, now)
}

/// How a worker tells the time of day for file ages.
#[derive(Debug, Clone, Copy)]
pub(super) enum Wall {
    /// A manual clock's fixed wall time.
    Fixed(SystemTime),
    /// The system clock: `wall` was the time of day at `at`; later times are derived from the
    /// monotonic clock, so each check reads one clock.
    Since { wall: SystemTime, at: Instant },
}

/// The worker: runs the jobs in order, publishing the current one, until none are left or the
/// prober abandoned this thread.
pub(super) fn run_batch(progress: Arc<Mutex<Progress>>, wall: Wall, check: CheckFn) {
    let mut finished: Option<Done> = None;
    let mut started = Instant::now();
    loop {
        let mut job = {
            let mut p = lock_progress(&progress);
            if p.abandoned {
                p.returned = true;
                return;
            }
            p.current = None;
            if let Some(d) = finished.take() {
                p.done.push(d);
            }
            let Some(job) = p.jobs.pop_front() else {
                return;
            };
            let root_id = Arc::as_ptr(&job.root) as usize;
            p.current = Some((
                job.slot,
                job.kind,
                job.generation,
                root_id,
                job.timeout,
                started,
            ));
            job
        };
        let now = match wall {
            Wall::Fixed(t) => t,
            Wall::Since { wall, at } => wall + started.saturating_duration_since(at),
        };
        let mut result = check(&mut job.path, &job.root, job.validity, now).map(|_| ());
        let ended = Instant::now();
        if ended.saturating_duration_since(started) > job.timeout {
            result = Err(ProbeFailure::Timeout {
                timeout: job.timeout,
            });
        }
        started = ended;
        finished = Some(Done {
            slot: job.slot,
            kind: job.kind,
            generation: job.generation,
            root_id: Arc::as_ptr(&job.root) as usize,
            _root: Some(job.root),
            path: Some(job.path),
            result,
            stuck: None,
        });
    }
}
