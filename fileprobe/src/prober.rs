//! The node-wide scheduler: every probe on one timer, changes out as events.
//!
//! Probes live in a map keyed by (container, kind); their due times live in one binary heap.
//! Adding pushes one heap entry (O(log n)); removing bumps the entry's generation so its heap
//! entry is dropped when it surfaces (O(log n) amortised, no scan). [`Prober::next_event`] sleeps
//! on a single `async-io` timer until the earliest due time, runs every due check in one batch on
//! the `blocking` pool, feeds the results to each probe's [`Machine`], and yields the changes.
//! There is no task or thread per probe.
//!
//! Caveat: a batch runs its checks one after another, so the timeout is measured per check and
//! enforced after the fact (a check that took longer than `timeoutSeconds` is a Timeout failure);
//! a check stuck in the kernel delays its batch.

use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap, VecDeque};
use std::os::fd::OwnedFd;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use crate::{FileProbe, Machine, ProbeFailure, ProbeKind, ProbeResult, check_at, first_due};

/// A change of a probe's reported result.
///
/// ```
/// let e = fileprobe::ProbeEvent { container: "web".into(), kind: fileprobe::ProbeKind::Readiness,
///     result: fileprobe::ProbeResult::Success, reason: None };
/// assert_eq!(e.result, fileprobe::ProbeResult::Success);
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProbeEvent {
    /// The container's name as given to [`Prober::add`].
    pub container: String,
    /// Which probe changed.
    pub kind: ProbeKind,
    /// The new reported result.
    pub result: ProbeResult,
    /// The failure of the last run, when the new result is a Failure from a check.
    pub reason: Option<ProbeFailure>,
}

/// Where a container's probes look: its runtime id (a new id means a restart) and its root.
///
/// ```no_run
/// use std::{sync::Arc, time::Instant};
/// let t = fileprobe::Target { id: "abc".into(), root: Arc::new(fileprobe::open_container_root(42)?), started_at: Instant::now() };
/// # Ok::<(), fileprobe::ProbeFailure>(())
/// ```
#[derive(Debug, Clone)]
pub struct Target {
    /// The container id; when it changes, probes reset and holds are released.
    pub id: String,
    /// The container's root directory, e.g. from [`crate::open_container_root`].
    pub root: Arc<OwnedFd>,
    /// When the container started (for `initialDelaySeconds`).
    pub started_at: Instant,
}

/// Counters of a [`Prober`].
///
/// ```
/// assert_eq!(fileprobe::Counters::default().runs, 0);
/// ```
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Counters {
    /// Checks run.
    pub runs: u64,
    /// Checks that failed (any reason).
    pub failures: u64,
    /// Due ticks skipped by the state machine (hold, startup, initial delay).
    pub skips: u64,
    /// Events emitted.
    pub events: u64,
}

type Key = (String, ProbeKind);

#[derive(Debug)]
struct Entry {
    probe: FileProbe,
    machine: Machine,
    target: Target,
    generation: u64,
    last_failure: Option<ProbeFailure>,
}

/// Runs every file probe of a node on one timer.
///
/// ```
/// use std::{sync::Arc, time::{Duration, Instant}};
/// use fileprobe::{ProbeKind, ProbeResult, ProbeSpec, Prober, Target};
/// let dir = tempfile::tempdir().unwrap();
/// std::fs::write(dir.path().join("probe"), b"").unwrap();
/// let root = Arc::new(fileprobe::open_root(dir.path().to_str().unwrap()).unwrap());
/// let probe = ProbeSpec::from_yaml("file: {path: /probe, validity: 30}").unwrap()
///     .validate(ProbeKind::Readiness).unwrap();
/// let mut prober = Prober::new();
/// prober.add("web", probe, Target { id: "c1".into(), root, started_at: Instant::now() });
/// let ev = futures_lite::future::block_on(prober.next_event()).unwrap();
/// assert_eq!((ev.container.as_str(), ev.result), ("web", ProbeResult::Success));
/// ```
#[derive(Debug)]
pub struct Prober {
    started: Instant,
    entries: HashMap<Key, Entry>,
    heap: BinaryHeap<Reverse<(Instant, u64, Key)>>,
    next_generation: u64,
    pending: VecDeque<ProbeEvent>,
    counters: Counters,
}

impl Default for Prober {
    fn default() -> Self {
        Self::new()
    }
}

impl Prober {
    /// An empty prober; its start time decides whether first runs are jittered.
    ///
    /// ```
    /// assert_eq!(fileprobe::Prober::new().len(), 0);
    /// ```
    pub fn new() -> Self {
        Prober {
            started: Instant::now(),
            entries: HashMap::new(),
            heap: BinaryHeap::new(),
            next_generation: 0,
            pending: VecDeque::new(),
            counters: Counters::default(),
        }
    }

    /// How many probes are scheduled.
    ///
    /// ```
    /// assert!(fileprobe::Prober::new().is_empty());
    /// ```
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// Whether no probe is scheduled.
    ///
    /// ```
    /// assert!(fileprobe::Prober::new().is_empty());
    /// ```
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// The counters so far.
    ///
    /// ```
    /// assert_eq!(fileprobe::Prober::new().counters().events, 0);
    /// ```
    pub fn counters(&self) -> Counters {
        self.counters
    }

    /// Adds (or replaces) the probe of `probe.kind` for `container`. O(log n).
    ///
    /// The first run is due now, or after a random fraction of the period when the container
    /// started before this prober (kubelet's spreading after a restart).
    ///
    /// ```
    /// # use std::{sync::Arc, time::Instant};
    /// # let root = Arc::new(fileprobe::open_root("/tmp").unwrap());
    /// let probe = fileprobe::ProbeSpec::from_yaml("file: {path: /p, validity: 3}").unwrap()
    ///     .validate(fileprobe::ProbeKind::Liveness).unwrap();
    /// let mut prober = fileprobe::Prober::new();
    /// prober.add("web", probe, fileprobe::Target { id: "c1".into(), root, started_at: Instant::now() });
    /// assert_eq!(prober.len(), 1);
    /// ```
    pub fn add(&mut self, container: &str, probe: FileProbe, target: Target) {
        let due = first_due(
            self.started,
            target.started_at,
            probe.period,
            fastrand::f64(),
        );
        let generation = self.bump();
        let key = (container.to_owned(), probe.kind);
        let machine = Machine::new(&probe, &target.id, target.started_at);
        self.heap.push(Reverse((due, generation, key.clone())));
        let entry = Entry {
            probe,
            machine,
            target,
            generation,
            last_failure: None,
        };
        self.entries.insert(key, entry);
    }

    /// Removes a probe; returns whether it existed. O(1) here, its heap entry is dropped lazily.
    ///
    /// ```
    /// assert!(!fileprobe::Prober::new().remove("web", fileprobe::ProbeKind::Readiness));
    /// ```
    pub fn remove(&mut self, container: &str, kind: ProbeKind) -> bool {
        self.entries.remove(&(container.to_owned(), kind)).is_some()
    }

    /// The container was restarted: every probe of `container` follows the new target, resets
    /// to its initial result (emitting that change) and is released from hold.
    ///
    /// ```
    /// fileprobe::Prober::new().restart("web", fileprobe::Target { id: "c2".into(),
    ///     root: std::sync::Arc::new(fileprobe::open_root("/tmp").unwrap()), started_at: std::time::Instant::now() });
    /// ```
    pub fn restart(&mut self, container: &str, target: Target) {
        for ((name, kind), e) in &mut self.entries {
            if name == container {
                if let Some(result) = e.machine.new_container(&target.id, target.started_at) {
                    let ev = ProbeEvent {
                        container: name.clone(),
                        kind: *kind,
                        result,
                        reason: None,
                    };
                    self.pending.push_back(ev);
                }
                e.target = target.clone();
                e.last_failure = None;
            }
        }
    }

    fn bump(&mut self) -> u64 {
        self.next_generation += 1;
        self.next_generation
    }

    /// Waits for the next change of any probe's result; `None` when no probe is scheduled.
    ///
    /// ```
    /// assert!(futures_lite::future::block_on(fileprobe::Prober::new().next_event()).is_none());
    /// ```
    pub async fn next_event(&mut self) -> Option<ProbeEvent> {
        loop {
            if let Some(ev) = self.pending.pop_front() {
                self.counters.events += 1;
                return Some(ev);
            }
            let Reverse((due, generation, key)) = self.heap.peek()?.clone();
            if self
                .entries
                .get(&key)
                .is_none_or(|e| e.generation != generation)
            {
                self.heap.pop();
                continue;
            }
            async_io::Timer::at(due).await;
            self.run_due(Instant::now()).await;
        }
    }

    /// Runs every check due at `now` as one batch and queues the resulting changes.
    async fn run_due(&mut self, now: Instant) {
        let mut batch = Vec::new();
        while let Some(Reverse((due, generation, _))) = self.heap.peek() {
            if *due > now {
                break;
            }
            let (due, generation, key) = (*due, *generation, self.heap.pop().expect("peeked").0.2);
            let Some(entry) = self.entries.get(&key) else {
                continue;
            };
            if entry.generation != generation {
                continue;
            }
            // Fixed rate like kubelet's ticker, but never schedule into the past.
            let next = (due + entry.probe.period).max(now);
            let generation = self.bump();
            let startup_ok = self.startup_succeeded(&key.0);
            let entry = self.entries.get_mut(&key).expect("present");
            entry.generation = generation;
            self.heap.push(Reverse((next, generation, key.clone())));
            match entry.machine.gate(now, startup_ok) {
                Ok(()) => batch.push((
                    key,
                    entry.target.root.clone(),
                    entry.probe.path.clone(),
                    entry.probe.validity,
                    entry.probe.timeout,
                )),
                Err(_) => self.counters.skips += 1,
            }
        }
        if batch.is_empty() {
            return;
        }
        let results = blocking::unblock(move || {
            batch
                .into_iter()
                .map(|(key, root, path, validity, timeout)| {
                    let start = Instant::now();
                    let mut r = check_at(&*root, &path, validity, SystemTime::now()).map(|_| ());
                    if start.elapsed() > timeout {
                        r = Err(ProbeFailure::Timeout { timeout });
                    }
                    (key, r)
                })
                .collect::<Vec<_>>()
        })
        .await;
        for (key, r) in results {
            self.counters.runs += 1;
            let Some(entry) = self.entries.get_mut(&key) else {
                continue;
            };
            let success = r.is_ok();
            if let Err(f) = r {
                self.counters.failures += 1;
                entry.last_failure = Some(f);
            }
            if let Some(result) = entry.machine.record(success) {
                let reason = if result == ProbeResult::Failure {
                    entry.last_failure.clone()
                } else {
                    None
                };
                let (container, kind) = key;
                self.pending.push_back(ProbeEvent {
                    container,
                    kind,
                    result,
                    reason,
                });
            }
        }
    }

    fn startup_succeeded(&self, container: &str) -> bool {
        self.entries
            .get(&(container.to_owned(), ProbeKind::Startup))
            .is_none_or(|e| e.machine.result() == ProbeResult::Success)
    }

    /// Time until the earliest due probe (for callers that multiplex), `None` if empty.
    ///
    /// ```
    /// assert!(fileprobe::Prober::new().next_due().is_none());
    /// ```
    pub fn next_due(&self) -> Option<Duration> {
        self.heap
            .peek()
            .map(|Reverse((due, _, _))| due.saturating_duration_since(Instant::now()))
    }
}
