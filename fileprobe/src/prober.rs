//! The node-wide scheduler: every probe on one timer, changes out as a stream of events.
//!
//! Containers live in a slab (a `Vec` of slots, found by name through one `HashMap` only when
//! probes are added, removed or restarted); each slot holds up to one probe per kind. Due times
//! are rounded up to the next 100 ms tick of the prober's clock and kept in a `BTreeMap` from
//! tick to a `Vec` of small `Copy` entries (due time, generation, slot, kind): adding is
//! O(log t) for t occupied ticks (at most ten per second of the longest period), and a batch is
//! one contiguous `Vec`. (A binary heap keyed by exact due time spent more CPU in cold
//! sift-downs than the checks themselves once 10,000 jittered probes were spread over a
//! second.) Removing clears the slot so its entry, whose generation no longer matches, is
//! dropped when its tick comes. There is no task or thread per probe.
//!
//! The prober sleeps on a single `async-io` timer until the earliest occupied tick, then takes
//! every probe of the ticks that have come and runs their checks as one batch on the `blocking`
//! pool; each check is one `statx` through a [`CachedPath`], or none when the prober's inotify
//! [`ChangeWatch`] (drained on the prober's thread at each tick) has seen no change of the file
//! since its last `statx`. So a probe runs at most 100 ms after
//! its due time and never before it; the next run is due one period after the previous due
//! time, so the rounding does not accumulate. Why 100 ms: each batch costs a timer wake-up and
//! a hand-off to a pool thread (~100 µs of CPU on the test VM); with jittered probes a 10 ms
//! tick meant ~100 batches a second and, for 10,000 probes at a 1 s period, 5.0 % of a core
//! against 4.0 % with 100 ms ticks. Kubelet's periods are whole seconds, so 100 ms of lateness
//! is well inside its own scheduling noise.
//!
//! Why the pool and not inline: a check is normally a microsecond, but a probe file on a hung
//! FUSE or NFS mount can block in the kernel for minutes, and inline that would stall the
//! caller's executor and every other probe. So the batch runs on one pool thread while the
//! prober watches it: the worker publishes which check it is in and since when; if that check
//! passes its `timeoutSeconds`, the prober reports it as a Timeout failure, abandons that thread
//! (it returns whenever the kernel lets it) and hands the rest of the batch to a new pool thread.
//! A check that finishes but took longer than its timeout is a Timeout failure as well. While
//! the abandoned thread is still stuck, later ticks of that probe fail with Timeout at once
//! instead of tying up another thread, so a dead mount costs one thread, not one per period.
//! The cost of all this is one thread hand-off per batch, not per check; the price is that
//! while a check hangs, probes due after its batch started wait (at most its `timeoutSeconds`)
//! before the next batch starts.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::os::fd::OwnedFd;
use std::pin::Pin;
use std::sync::{Arc, Mutex, MutexGuard};
use std::task::{Context, Poll, Waker};
use std::time::{Duration, Instant, SystemTime};

use futures_lite::{FutureExt, Stream};

use crate::clock::Clock;
use crate::{
    CachedPath, ChangeWatch, FileProbe, Machine, ManualClock, ProbeFailure, ProbeKind, ProbeResult,
    WatchStats, first_due,
};

/// Due times are rounded up to a multiple of this since the prober started; one tick, one batch.
const TICK: Duration = Duration::from_millis(100);

/// Emptied tick `Vec`s kept for reuse.
const SPARE_VECS: usize = 64;

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
    /// When the container started (for `initialDelaySeconds`), on the prober's clock.
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
    /// Checks abandoned because they hung past their timeout.
    pub hung: u64,
    /// Checks that asked the kernel (a `statx`, or `openat2` + `statx`); see
    /// [`crate::WatchStats`].
    pub statx_calls: u64,
    /// Checks answered from a cached mtime that no inotify event had voided (no syscall).
    pub cached_checks: u64,
    /// Directories watched with inotify now.
    pub watches: u64,
    /// Times a probe directory could not be watched (its probes then `statx` every check).
    pub unwatched: u64,
}

impl Counters {
    fn with_watch(mut self, w: WatchStats) -> Self {
        self.statx_calls = w.statx_calls;
        self.cached_checks = w.cached_checks;
        self.watches = w.watches;
        self.unwatched = w.unwatched;
        self
    }
}

const KINDS: [ProbeKind; 3] = [
    ProbeKind::Readiness,
    ProbeKind::Liveness,
    ProbeKind::Startup,
];

fn kind_index(kind: ProbeKind) -> usize {
    match kind {
        ProbeKind::Readiness => 0,
        ProbeKind::Liveness => 1,
        ProbeKind::Startup => 2,
    }
}

#[derive(Debug)]
struct Entry {
    probe: FileProbe,
    machine: Machine,
    target: Target,
    generation: u64,
    last_failure: Option<ProbeFailure>,
    /// The cached path; `None` while its check is in flight (it travels with the job).
    path: Option<Box<CachedPath>>,
    /// The batch whose worker is still stuck in this probe's last check, if any: until it
    /// returns, this probe's ticks fail with Timeout at once instead of tying up another thread.
    stuck: Option<Arc<Mutex<Progress>>>,
}

#[derive(Debug)]
struct Slot {
    name: String,
    /// Boxed: most containers have one or two probes, and a slot stays small.
    probes: [Option<Box<Entry>>; 3],
}

/// A scheduled run: exact due time, generation, slot, kind index.
type Due = (Instant, u64, u32, u8);

/// A command from a [`ProberHandle`].
#[derive(Debug)]
enum Command {
    Add(String, Box<FileProbe>, Target),
    Remove(String, ProbeKind),
    Restart(String, Target),
}

#[derive(Debug, Default)]
struct SharedState {
    commands: Vec<Command>,
    waker: Option<Waker>,
    handles: usize,
    closed: bool,
    counters: Counters,
}

#[derive(Debug, Default)]
struct Shared {
    state: Mutex<SharedState>,
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, SharedState> {
        // Every update under this lock is a push, a take or a counter copy: never torn.
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// One check to run on the pool.
#[derive(Debug)]
struct Job {
    slot: u32,
    kind: u8,
    generation: u64,
    root: Arc<OwnedFd>,
    path: Box<CachedPath>,
    validity: Duration,
    timeout: Duration,
}

/// A finished (or timed-out) check.
#[derive(Debug)]
struct Done {
    slot: u32,
    kind: u8,
    generation: u64,
    /// Which root the check ran in (`Arc::as_ptr`), to drop results for a replaced root.
    root_id: usize,
    /// Keeps that root alive (so its address is not reused) until the result is applied.
    _root: Option<Arc<OwnedFd>>,
    /// `None` when the check was abandoned (its cache stays with the stuck thread).
    path: Option<Box<CachedPath>>,
    result: Result<(), ProbeFailure>,
    /// For an abandoned check: the batch whose worker is stuck in it.
    stuck: Option<Arc<Mutex<Progress>>>,
}

/// What the worker and the prober share about a batch in flight.
#[derive(Debug, Default)]
struct Progress {
    jobs: VecDeque<Job>,
    /// The check being run: (slot, kind, generation, root id, timeout, started).
    current: Option<(u32, u8, u64, usize, Duration, Instant)>,
    done: Vec<Done>,
    abandoned: bool,
    /// Set by an abandoned worker once its stuck check has returned.
    returned: bool,
}

#[derive(Debug)]
struct InFlight {
    progress: Arc<Mutex<Progress>>,
    task: blocking::Task<()>,
}

fn lock_progress(p: &Mutex<Progress>) -> MutexGuard<'_, Progress> {
    // Updates are pushes/pops of whole values: consistent even after a panic elsewhere.
    p.lock().unwrap_or_else(|e| e.into_inner())
}

/// The check a worker runs (replaced in unit tests to simulate a check stuck in the kernel).
type CheckFn =
    fn(&mut CachedPath, &OwnedFd, Duration, SystemTime) -> Result<Duration, ProbeFailure>;

fn real_check(
    path: &mut CachedPath,
    root: &OwnedFd,
    validity: Duration,
    now: SystemTime,
) -> Result<Duration, ProbeFailure> {
    path.check(root, validity, now)
}

/// How a worker tells the time of day for file ages.
#[derive(Debug, Clone, Copy)]
enum Wall {
    /// A manual clock's fixed wall time.
    Fixed(SystemTime),
    /// The system clock: `wall` was the time of day at `at`; later times are derived from the
    /// monotonic clock, so each check reads one clock.
    Since { wall: SystemTime, at: Instant },
}

/// The worker: runs the jobs in order, publishing the current one, until none are left or the
/// prober abandoned this thread.
fn run_batch(progress: Arc<Mutex<Progress>>, wall: Wall, check: CheckFn) {
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

/// Runs every file probe of a node on one timer; results come out as a [`Stream`] of
/// [`ProbeEvent`]s (or one at a time from [`Prober::next_event`]).
///
/// Probes can be added and removed directly (`&mut self`) or, while a consumer is awaiting
/// events, through a cloneable [`ProberHandle`] from any thread or task. The stream ends when
/// no probe is left and no handle is alive.
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
    clock: Clock,
    started: Instant,
    rng: fastrand::Rng,
    names: HashMap<String, u32>,
    slots: Vec<Option<Slot>>,
    free: Vec<u32>,
    probes: usize,
    /// Tick number (since `started`) → the runs due in it, in the order they were scheduled.
    wheel: BTreeMap<u64, Vec<Due>>,
    spare: Vec<Vec<Due>>,
    next_generation: u64,
    pending: VecDeque<ProbeEvent>,
    counters: Counters,
    shared: Arc<Shared>,
    due_timer: async_io::Timer,
    due_armed: Option<Instant>,
    hang_timer: async_io::Timer,
    hang_armed: Option<Instant>,
    in_flight: Option<InFlight>,
    check: CheckFn,
    watch: Arc<ChangeWatch>,
}

impl Default for Prober {
    fn default() -> Self {
        Self::new()
    }
}

impl Drop for Prober {
    fn drop(&mut self) {
        self.shared.lock().closed = true;
        if let Some(f) = &self.in_flight {
            lock_progress(&f.progress).abandoned = true;
        }
    }
}

impl Prober {
    /// An empty prober on the system clock; its start time decides whether first runs are
    /// jittered.
    ///
    /// ```
    /// assert_eq!(fileprobe::Prober::new().len(), 0);
    /// ```
    pub fn new() -> Self {
        Self::on(Clock::System)
    }

    /// An empty prober on a [`ManualClock`]: due times, initial delays, jitter and file ages
    /// all follow that clock (check timeouts stay in real time).
    ///
    /// ```
    /// let clock = fileprobe::ManualClock::new();
    /// let prober = fileprobe::Prober::with_clock(clock.clone());
    /// assert!(prober.is_empty());
    /// ```
    pub fn with_clock(clock: ManualClock) -> Self {
        Self::on(Clock::Manual(clock))
    }

    fn on(clock: Clock) -> Self {
        Prober {
            started: clock.now(),
            clock,
            rng: fastrand::Rng::new(),
            names: HashMap::new(),
            slots: Vec::new(),
            free: Vec::new(),
            probes: 0,
            wheel: BTreeMap::new(),
            spare: Vec::new(),
            next_generation: 0,
            pending: VecDeque::new(),
            counters: Counters::default(),
            shared: Arc::new(Shared::default()),
            due_timer: async_io::Timer::never(),
            due_armed: None,
            hang_timer: async_io::Timer::never(),
            hang_armed: None,
            in_flight: None,
            check: real_check,
            watch: Arc::new(ChangeWatch::new()),
        }
    }

    /// Uses `watch` for the probes added from now on, instead of the prober's own
    /// [`ChangeWatch::new`]: [`ChangeWatch::disabled`] makes every check a `statx` (the
    /// fallback), [`ChangeWatch::with_limit`] caps the inotify watches.
    ///
    /// ```
    /// let prober = fileprobe::Prober::new().with_watch(fileprobe::ChangeWatch::disabled());
    /// assert_eq!(prober.counters().watches, 0);
    /// ```
    pub fn with_watch(mut self, watch: ChangeWatch) -> Self {
        self.watch = Arc::new(watch);
        self
    }

    /// Seeds the random jitter of first runs, for reproducible schedules: the `k`-th probe
    /// added after seeding with `s` that needs jitter waits `fastrand::Rng::with_seed(s)`'s
    /// `k`-th `f64()` of its period.
    ///
    /// ```
    /// let mut prober = fileprobe::Prober::new();
    /// prober.seed_jitter(7);
    /// ```
    pub fn seed_jitter(&mut self, seed: u64) {
        self.rng = fastrand::Rng::with_seed(seed);
    }

    /// A handle to add and remove probes from any thread or task, also while a consumer is
    /// awaiting [`Prober::next_event`] or the stream.
    ///
    /// ```
    /// let prober = fileprobe::Prober::new();
    /// let handle = prober.handle();
    /// assert!(handle.remove("web", fileprobe::ProbeKind::Readiness));
    /// ```
    pub fn handle(&self) -> ProberHandle {
        self.shared.lock().handles += 1;
        ProberHandle {
            shared: self.shared.clone(),
        }
    }

    /// How many probes are scheduled (commands from handles count once the prober has been
    /// polled).
    ///
    /// ```
    /// assert!(fileprobe::Prober::new().is_empty());
    /// ```
    pub fn len(&self) -> usize {
        self.probes
    }

    /// Whether no probe is scheduled.
    ///
    /// ```
    /// assert!(fileprobe::Prober::new().is_empty());
    /// ```
    pub fn is_empty(&self) -> bool {
        self.probes == 0
    }

    /// The counters so far.
    ///
    /// ```
    /// assert_eq!(fileprobe::Prober::new().counters().events, 0);
    /// ```
    pub fn counters(&self) -> Counters {
        self.counters.with_watch(self.watch.stats())
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
        let fraction = if self.started > target.started_at {
            self.rng.f64()
        } else {
            0.0
        };
        // A due time in the past (a prober that has run a while) means "run at once".
        let due = first_due(self.started, target.started_at, probe.period, fraction);
        let generation = self.bump();
        let slot = match self.names.get(container) {
            Some(&slot) => slot,
            None => {
                let slot = Slot {
                    name: container.to_owned(),
                    probes: [None, None, None],
                };
                let i = match self.free.pop() {
                    Some(i) => {
                        self.slots[i as usize] = Some(slot);
                        i
                    }
                    None => {
                        self.slots.push(Some(slot));
                        u32::try_from(self.slots.len() - 1).unwrap_or(u32::MAX)
                    }
                };
                self.names.insert(container.to_owned(), i);
                i
            }
        };
        let k = kind_index(probe.kind);
        let machine = Machine::new(&probe, &target.id, target.started_at);
        let entry = Entry {
            path: CachedPath::with_watch(&probe.path, self.watch.clone()).map(Box::new),
            probe,
            machine,
            target,
            generation,
            last_failure: None,
            stuck: None,
        };
        if let Some(Some(s)) = self.slots.get_mut(slot as usize) {
            if s.probes[k].replace(Box::new(entry)).is_none() {
                self.probes += 1;
            }
            self.schedule((due, generation, slot, k as u8));
        }
    }

    /// Removes a probe; returns whether it existed. Its scheduled run is dropped lazily.
    ///
    /// ```
    /// assert!(!fileprobe::Prober::new().remove("web", fileprobe::ProbeKind::Readiness));
    /// ```
    pub fn remove(&mut self, container: &str, kind: ProbeKind) -> bool {
        let Some(&slot) = self.names.get(container) else {
            return false;
        };
        let Some(Some(s)) = self.slots.get_mut(slot as usize) else {
            return false;
        };
        let existed = s.probes[kind_index(kind)].take().is_some();
        if existed {
            self.probes -= 1;
        }
        if s.probes.iter().all(Option::is_none) {
            self.slots[slot as usize] = None;
            self.names.remove(container);
            self.free.push(slot);
        }
        existed
    }

    /// The container was restarted: every probe of `container` follows the new target, resets
    /// to its initial result (emitting that change) and is released from hold.
    ///
    /// ```
    /// fileprobe::Prober::new().restart("web", fileprobe::Target { id: "c2".into(),
    ///     root: std::sync::Arc::new(fileprobe::open_root("/tmp").unwrap()), started_at: std::time::Instant::now() });
    /// ```
    pub fn restart(&mut self, container: &str, target: Target) {
        let Some(&slot) = self.names.get(container) else {
            return;
        };
        let Some(Some(s)) = self.slots.get_mut(slot as usize) else {
            return;
        };
        for (k, e) in s.probes.iter_mut().enumerate() {
            let Some(e) = e else { continue };
            if let Some(result) = e.machine.new_container(&target.id, target.started_at) {
                self.pending.push_back(ProbeEvent {
                    container: s.name.clone(),
                    kind: KINDS[k],
                    result,
                    reason: None,
                });
            }
            e.target = target.clone();
            e.last_failure = None;
            if let Some(p) = &mut e.path {
                p.forget();
            }
        }
    }

    fn bump(&mut self) -> u64 {
        self.next_generation += 1;
        self.next_generation
    }

    /// Waits for the next change of any probe's result; `None` when no probe is scheduled and
    /// no [`ProberHandle`] is alive. Cancel-safe: dropping the future loses nothing (a batch in
    /// flight is kept and picked up by the next call).
    ///
    /// ```
    /// assert!(futures_lite::future::block_on(fileprobe::Prober::new().next_event()).is_none());
    /// ```
    pub async fn next_event(&mut self) -> Option<ProbeEvent> {
        futures_lite::future::poll_fn(|cx| self.poll_event(cx)).await
    }

    /// Polls for the next change of any probe's result (what [`Prober::next_event`] and the
    /// [`Stream`] impl do).
    ///
    /// ```
    /// let waker = std::task::Waker::noop();
    /// let mut cx = std::task::Context::from_waker(&waker);
    /// assert!(fileprobe::Prober::new().poll_event(&mut cx).is_ready());
    /// ```
    pub fn poll_event(&mut self, cx: &mut Context<'_>) -> Poll<Option<ProbeEvent>> {
        loop {
            let handles_alive = self.apply_commands(cx);
            if let Some(ev) = self.pending.pop_front() {
                self.counters.events += 1;
                self.publish_counters();
                return Poll::Ready(Some(ev));
            }
            if self.in_flight.is_some() {
                match self.poll_in_flight(cx) {
                    Poll::Ready(()) => {
                        self.publish_counters();
                        continue;
                    }
                    Poll::Pending => return Poll::Pending,
                }
            }
            if self.probes == 0 {
                // Only runs of removed probes can be left: drop them.
                while let Some((_, v)) = self.wheel.pop_first() {
                    self.recycle(v);
                }
                return if handles_alive {
                    Poll::Pending
                } else {
                    Poll::Ready(None)
                };
            }
            let Some((&tick, _)) = self.wheel.first_key_value() else {
                return Poll::Pending; // unreachable: every probe has a scheduled run
            };
            let due = self.tick_time(tick);
            let now = self.clock.now();
            if due > now {
                match &self.clock {
                    Clock::Manual(c) if c.is_auto() => {
                        c.advance_to(due);
                        continue;
                    }
                    Clock::Manual(c) => {
                        c.wake_on_advance(cx.waker());
                        return Poll::Pending;
                    }
                    Clock::System => {
                        if self.due_armed != Some(due) {
                            self.due_timer.set_at(due);
                            self.due_armed = Some(due);
                        }
                        if self.due_timer.poll(cx).is_pending() {
                            return Poll::Pending;
                        }
                        self.due_armed = None;
                    }
                }
            }
            self.start_batch(self.clock.now());
        }
    }

    /// Applies the handles' commands; returns whether any handle is alive. Registers the waker.
    fn apply_commands(&mut self, cx: &Context<'_>) -> bool {
        let (commands, alive) = {
            let mut s = self.shared.lock();
            if !s.waker.as_ref().is_some_and(|w| w.will_wake(cx.waker())) {
                s.waker = Some(cx.waker().clone());
            }
            (std::mem::take(&mut s.commands), s.handles > 0)
        };
        for c in commands {
            match c {
                Command::Add(name, probe, target) => self.add(&name, *probe, target),
                Command::Remove(name, kind) => {
                    self.remove(&name, kind);
                }
                Command::Restart(name, target) => self.restart(&name, target),
            }
        }
        alive
    }

    fn publish_counters(&self) {
        let c = self.counters();
        self.shared.lock().counters = c;
    }

    fn entry(&self, slot: u32, k: u8) -> Option<&Entry> {
        self.slots
            .get(slot as usize)?
            .as_ref()?
            .probes
            .get(usize::from(k))?
            .as_deref()
    }

    /// The tick a due time is rounded up to.
    fn tick_of(&self, due: Instant) -> u64 {
        let since = due.saturating_duration_since(self.started).as_nanos();
        let tick = since.div_ceil(TICK.as_nanos());
        u64::try_from(tick).unwrap_or(u64::MAX)
    }

    /// When a tick comes.
    fn tick_time(&self, tick: u64) -> Instant {
        let tick = u32::try_from(tick).unwrap_or(u32::MAX);
        self.started + TICK * tick
    }

    fn schedule(&mut self, run: Due) {
        let tick = self.tick_of(run.0);
        let spare = &mut self.spare;
        self.wheel
            .entry(tick)
            .or_insert_with(|| spare.pop().unwrap_or_default())
            .push(run);
    }

    fn recycle(&mut self, mut v: Vec<Due>) {
        if self.spare.len() < SPARE_VECS {
            v.clear();
            self.spare.push(v);
        }
    }

    /// Takes every run of the ticks that have come by `now`, reschedules each, and hands the
    /// checks the state machines let run to a pool thread.
    fn start_batch(&mut self, now: Instant) {
        let mut due_runs = Vec::new();
        while let Some(entry) = self.wheel.first_entry() {
            if self.started + TICK * u32::try_from(*entry.key()).unwrap_or(u32::MAX) > now {
                break;
            }
            let v = entry.remove();
            if due_runs.is_empty() {
                due_runs = v;
            } else {
                due_runs.extend_from_slice(&v);
                self.recycle(v);
            }
        }
        // Every change made before this point is seen by this batch's checks. A read of an
        // inotify fd never waits for a file system, so this is safe on the caller's executor.
        self.watch.drain();
        let wall_now = self.clock.wall().unwrap_or_else(SystemTime::now);
        let mut jobs = VecDeque::new();
        let mut stuck_now = Vec::new();
        let mut startup_done = Vec::new();
        let mut again = Vec::with_capacity(due_runs.len());
        for &(due, generation, slot, k) in &due_runs {
            let next_generation = self.next_generation + 1;
            let Some(Some(s)) = self.slots.get_mut(slot as usize) else {
                continue;
            };
            let startup_ok = s.probes[kind_index(ProbeKind::Startup)]
                .as_ref()
                .is_none_or(|e| e.machine.result() == ProbeResult::Success);
            let Some(e) = s.probes[usize::from(k)].as_mut() else {
                continue;
            };
            if e.generation != generation {
                continue;
            }
            self.next_generation = next_generation;
            e.generation = next_generation;
            // Fixed rate like kubelet's ticker, but never schedule into the past.
            let next = (due + e.probe.period).max(now);
            again.push((next, next_generation, slot, k));
            if e.machine.gate(now, startup_ok).is_err() {
                self.counters.skips += 1;
                continue;
            }
            if let Some(stuck) = &e.stuck {
                if lock_progress(stuck).returned {
                    e.stuck = None;
                } else {
                    let timeout = e.probe.timeout;
                    let root_id = Arc::as_ptr(&e.target.root) as usize;
                    stuck_now.push((slot, k, next_generation, root_id, timeout));
                    continue;
                }
            }
            // Answered from the cached mtime: no syscall, so it cannot hang; run it here
            // instead of handing it to the pool.
            if let Some(p) = e.path.as_mut()
                && p.cached(e.probe.validity, wall_now).is_some()
            {
                if usize::from(k) == kind_index(ProbeKind::Startup) {
                    // Gates the other probes: applied after this batch's gating, as a result
                    // from the pool would be.
                    startup_done.push(Done {
                        slot,
                        kind: k,
                        generation: next_generation,
                        root_id: Arc::as_ptr(&e.target.root) as usize,
                        _root: None,
                        path: None,
                        result: Ok(()),
                        stuck: None,
                    });
                } else {
                    self.counters.runs += 1;
                    record(e, &s.name, k, Ok(()), &mut self.pending);
                }
                continue;
            }
            let watch = &self.watch;
            let fresh = || CachedPath::with_watch(&e.probe.path, watch.clone()).map(Box::new);
            let Some(path) = e.path.take().or_else(fresh) else {
                // Unreachable for validated probes (no NUL byte); report it rather than panic.
                self.counters.runs += 1;
                self.counters.failures += 1;
                continue;
            };
            jobs.push_back(Job {
                slot,
                kind: k,
                generation: next_generation,
                root: e.target.root.clone(),
                path,
                validity: e.probe.validity,
                timeout: e.probe.timeout,
            });
        }
        self.recycle(due_runs);
        for run in again {
            self.schedule(run);
        }
        if !startup_done.is_empty() {
            self.apply(startup_done);
        }
        if !stuck_now.is_empty() {
            let done = stuck_now
                .into_iter()
                .map(|(slot, kind, generation, root_id, timeout)| Done {
                    slot,
                    kind,
                    generation,
                    root_id,
                    _root: None,
                    path: None,
                    result: Err(ProbeFailure::Timeout { timeout }),
                    stuck: None,
                })
                .collect();
            self.apply(done);
        }
        if jobs.is_empty() {
            // A batch answered wholly from the cache has no worker to publish its counters.
            self.publish_counters();
        } else {
            self.dispatch(jobs);
        }
    }

    fn dispatch(&mut self, jobs: VecDeque<Job>) {
        let progress = Arc::new(Mutex::new(Progress {
            jobs,
            ..Progress::default()
        }));
        let wall = match self.clock.wall() {
            Some(t) => Wall::Fixed(t),
            None => Wall::Since {
                wall: SystemTime::now(),
                at: Instant::now(),
            },
        };
        let worker = progress.clone();
        let check = self.check;
        let task = blocking::unblock(move || run_batch(worker, wall, check));
        self.in_flight = Some(InFlight { progress, task });
        self.hang_armed = None;
    }

    /// Drives the batch in flight: `Ready` once its results are applied (or a hung check was
    /// failed and the rest re-dispatched).
    fn poll_in_flight(&mut self, cx: &mut Context<'_>) -> Poll<()> {
        let Some(f) = &mut self.in_flight else {
            return Poll::Ready(());
        };
        if f.task.poll(cx).is_ready() {
            let done = std::mem::take(&mut lock_progress(&f.progress).done);
            self.in_flight = None;
            self.apply(done);
            return Poll::Ready(());
        }
        // Still running: is the current check past its timeout?
        let real_now = Instant::now();
        let (deadline, hung) = {
            let mut p = lock_progress(&f.progress);
            match &p.current {
                Some((.., timeout, started)) if real_now >= *started + *timeout => {
                    p.abandoned = true;
                    let hung = p.current.take();
                    let done = std::mem::take(&mut p.done);
                    let rest = std::mem::take(&mut p.jobs);
                    (None, Some((hung, done, rest)))
                }
                Some((.., timeout, started)) => (Some(*started + *timeout), None),
                // Between checks or not started yet (pool busy): look again after 1 s, the
                // smallest timeoutSeconds.
                None => (Some(real_now + Duration::from_secs(1)), None),
            }
        };
        if let Some((hung, mut done, rest)) = hung {
            if let Some((slot, kind, generation, root_id, timeout, _)) = hung {
                self.counters.hung += 1;
                done.push(Done {
                    slot,
                    kind,
                    generation,
                    root_id,
                    _root: None,
                    path: None,
                    result: Err(ProbeFailure::Timeout { timeout }),
                    stuck: Some(f.progress.clone()),
                });
            }
            self.in_flight = None;
            self.apply(done);
            if !rest.is_empty() {
                self.dispatch(rest);
            }
            return Poll::Ready(());
        }
        if let Some(deadline) = deadline {
            if self.hang_armed != Some(deadline) {
                self.hang_timer.set_at(deadline);
                self.hang_armed = Some(deadline);
            }
            if self.hang_timer.poll(cx).is_ready() {
                self.hang_armed = None;
                cx.waker().wake_by_ref();
            }
        }
        Poll::Pending
    }

    /// Feeds finished checks to their state machines and queues the changes.
    fn apply(&mut self, done: Vec<Done>) {
        for d in done {
            self.counters.runs += 1;
            if d.result.is_err() {
                self.counters.failures += 1;
            }
            let Some(Some(s)) = self.slots.get_mut(d.slot as usize) else {
                continue;
            };
            let Some(e) = s
                .probes
                .get_mut(usize::from(d.kind))
                .and_then(Option::as_mut)
            else {
                continue;
            };
            // Removed and re-added, or restarted onto a new root meanwhile: stale result.
            if e.generation != d.generation || Arc::as_ptr(&e.target.root) as usize != d.root_id {
                continue;
            }
            // An answer from the cache left the path where it is.
            if d.path.is_some() {
                e.path = d.path;
            }
            if d.stuck.is_some() {
                e.stuck = d.stuck;
            }
            record(e, &s.name, d.kind, d.result, &mut self.pending);
        }
    }

    /// Time until the prober next runs checks, on its clock (for callers that multiplex): the
    /// earliest due time rounded up to the 100 ms tick. `None` if empty.
    ///
    /// ```
    /// assert!(fileprobe::Prober::new().next_due().is_none());
    /// ```
    pub fn next_due(&self) -> Option<Duration> {
        let now = self.clock.now();
        let (tick, _) = self.wheel.iter().find(|(_, runs)| {
            runs.iter()
                .any(|&(_, g, slot, k)| self.entry(slot, k).is_some_and(|e| e.generation == g))
        })?;
        Some(self.tick_time(*tick).saturating_duration_since(now))
    }
}

/// Feeds one check's result to its probe's state machine and queues the change, if any.
fn record(
    e: &mut Entry,
    name: &str,
    kind: u8,
    result: Result<(), ProbeFailure>,
    pending: &mut VecDeque<ProbeEvent>,
) {
    let success = result.is_ok();
    if let Err(f) = result {
        e.last_failure = Some(f);
    }
    if let Some(result) = e.machine.record(success) {
        let reason = if result == ProbeResult::Failure {
            e.last_failure.clone()
        } else {
            None
        };
        pending.push_back(ProbeEvent {
            container: name.to_owned(),
            kind: KINDS[usize::from(kind)],
            result,
            reason,
        });
    }
}

impl Stream for Prober {
    type Item = ProbeEvent;

    fn poll_next(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<ProbeEvent>> {
        self.get_mut().poll_event(cx)
    }
}

/// Adds, removes and restarts probes of a [`Prober`] from any thread or task, also while the
/// prober's consumer is awaiting events. Cloneable; commands are applied in order the next time
/// the prober is polled (each wakes it). While any handle is alive the prober's stream does not
/// end when it runs out of probes.
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
    shared: Arc<Shared>,
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

    /// Queues [`Prober::add`]; `false` if the prober was dropped.
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

    /// Queues [`Prober::remove`]; `false` if the prober was dropped (whether the probe existed
    /// is not known here).
    ///
    /// ```
    /// let prober = fileprobe::Prober::new();
    /// assert!(prober.handle().remove("web", fileprobe::ProbeKind::Startup));
    /// ```
    pub fn remove(&self, container: &str, kind: ProbeKind) -> bool {
        self.send(Command::Remove(container.to_owned(), kind))
    }

    /// Queues [`Prober::restart`]; `false` if the prober was dropped.
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{ProbeSpec, open_root};

    /// Stands for a probe file on a hung mount: `/hang` blocks for 3 s, the rest is real.
    fn hanging_check(
        path: &mut CachedPath,
        root: &OwnedFd,
        validity: Duration,
        now: SystemTime,
    ) -> Result<Duration, ProbeFailure> {
        if path.path() == "/hang" {
            std::thread::sleep(Duration::from_secs(3));
        }
        path.check(root, validity, now)
    }

    #[test]
    fn a_hung_check_times_out_without_holding_back_the_rest_of_its_batch() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("hang"), b"").unwrap();
        std::fs::write(dir.path().join("ok"), b"").unwrap();
        let root = Arc::new(open_root(dir.path().to_str().unwrap()).unwrap());
        let mut prober = Prober::new();
        prober.check = hanging_check;
        let target = Target {
            id: "c".into(),
            root,
            started_at: Instant::now(),
        };
        let yaml = |p: &str| format!("file: {{path: {p}, validity: 60}}\nfailureThreshold: 1");
        let live = ProbeSpec::from_yaml(&yaml("/hang"))
            .unwrap()
            .validate(ProbeKind::Liveness)
            .unwrap();
        let ready = ProbeSpec::from_yaml(&yaml("/ok"))
            .unwrap()
            .validate(ProbeKind::Readiness)
            .unwrap();
        // Same due time: one batch, the hanging check first (the order they were scheduled).
        prober.add("hung", live, target.clone());
        prober.add("fine", ready, target);
        let mut events = Vec::new();
        futures_lite::future::block_on(async {
            while events.len() < 2 {
                events.push(prober.next_event().await.unwrap());
            }
        });
        let hung = events.iter().find(|e| e.container == "hung").unwrap();
        assert_eq!(hung.result, ProbeResult::Failure);
        assert_eq!(
            hung.reason,
            Some(ProbeFailure::Timeout {
                timeout: Duration::from_secs(1)
            })
        );
        let fine = events.iter().find(|e| e.container == "fine").unwrap();
        assert_eq!((fine.result, &fine.reason), (ProbeResult::Success, &None));
        let c = prober.counters();
        assert_eq!((c.hung, c.runs, c.failures), (1, 2, 1));
    }
}
