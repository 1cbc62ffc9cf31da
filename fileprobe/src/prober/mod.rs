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

mod batch;
mod entry;
mod event;
mod handle;
mod worker;

pub use event::{Counters, ProbeEvent, Target};
pub use handle::ProberHandle;

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use futures_lite::{FutureExt, Stream};

use crate::clock::Clock;
use crate::{CachedPath, ChangeWatch, FileProbe, Machine, ManualClock, ProbeKind, first_due};
use entry::{Entry, KINDS, Slot, kind_index};
use handle::{Command, Shared};
use worker::{CheckFn, InFlight, lock_progress, real_check};

/// Due times are rounded up to a multiple of this since the prober started; one tick, one batch.
const TICK: Duration = Duration::from_millis(100);

/// Emptied tick `Vec`s kept for reuse.
const SPARE_VECS: usize = 64;

/// A scheduled run: exact due time, generation, slot, kind index.
type Due = (Instant, u64, u32, u8);

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

impl Stream for Prober {
    type Item = ProbeEvent;

    fn poll_next(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<ProbeEvent>> {
        self.get_mut().poll_event(cx)
    }
}
