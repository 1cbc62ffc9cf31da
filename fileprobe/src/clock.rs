//! The time a [`crate::Prober`] schedules by: the system clock, or a [`ManualClock`] for tests.

use std::sync::{Arc, Mutex, MutexGuard};
use std::task::Waker;
use std::time::{Duration, Instant, SystemTime};

/// A clock that moves only when told to, for deterministic scheduler tests.
///
/// It gives both the monotonic time that decides when probes are due and the wall-clock time
/// that file ages are measured against; [`ManualClock::advance`] moves both. In
/// [auto-advance](ManualClock::auto_advance) mode a [`crate::Prober`] that has nothing to do
/// until its next due time jumps the clock there instead of sleeping, so a test reads events in
/// virtual time as fast as the checks run. Timeouts of checks are always measured in real time
/// (they guard real syscalls).
///
/// ```
/// use std::time::Duration;
/// let clock = fileprobe::ManualClock::new();
/// let t0 = clock.now();
/// clock.advance(Duration::from_secs(5));
/// assert_eq!(clock.now() - t0, Duration::from_secs(5));
/// ```
#[derive(Debug, Clone)]
pub struct ManualClock {
    inner: Arc<Mutex<ManualState>>,
}

#[derive(Debug)]
struct ManualState {
    now: Instant,
    wall: SystemTime,
    auto: bool,
    wakers: Vec<Waker>,
}

impl Default for ManualClock {
    fn default() -> Self {
        Self::new()
    }
}

impl ManualClock {
    /// A clock stopped at the current instant and wall-clock time; it moves only by
    /// [`ManualClock::advance`].
    ///
    /// ```
    /// let clock = fileprobe::ManualClock::new();
    /// assert_eq!(clock.now(), clock.now());
    /// ```
    pub fn new() -> Self {
        ManualClock {
            inner: Arc::new(Mutex::new(ManualState {
                now: Instant::now(),
                wall: SystemTime::now(),
                auto: false,
                wakers: Vec::new(),
            })),
        }
    }

    /// Like [`ManualClock::new`], but a prober waiting for its next due time jumps the clock to
    /// it at once.
    ///
    /// ```
    /// assert!(fileprobe::ManualClock::auto_advance().is_auto());
    /// ```
    pub fn auto_advance() -> Self {
        let clock = Self::new();
        clock.lock().auto = true;
        clock
    }

    /// Whether this clock auto-advances.
    ///
    /// ```
    /// assert!(!fileprobe::ManualClock::new().is_auto());
    /// ```
    pub fn is_auto(&self) -> bool {
        self.lock().auto
    }

    /// The current monotonic time.
    ///
    /// ```
    /// let c = fileprobe::ManualClock::new();
    /// assert!(c.now() <= std::time::Instant::now());
    /// ```
    pub fn now(&self) -> Instant {
        self.lock().now
    }

    /// The current wall-clock time (what file mtimes are compared with).
    ///
    /// ```
    /// let c = fileprobe::ManualClock::new();
    /// assert!(c.wall() <= std::time::SystemTime::now());
    /// ```
    pub fn wall(&self) -> SystemTime {
        self.lock().wall
    }

    /// Moves both times forward by `by` and wakes the probers waiting on this clock.
    ///
    /// ```
    /// let c = fileprobe::ManualClock::new();
    /// let w = c.wall();
    /// c.advance(std::time::Duration::from_secs(1));
    /// assert_eq!(c.wall().duration_since(w).unwrap().as_secs(), 1);
    /// ```
    pub fn advance(&self, by: Duration) {
        let wakers = {
            let mut s = self.lock();
            s.now += by;
            s.wall += by;
            std::mem::take(&mut s.wakers)
        };
        wakers.into_iter().for_each(Waker::wake);
    }

    /// Moves the clock to `to` if that is later; for auto-advance.
    pub(crate) fn advance_to(&self, to: Instant) {
        let now = self.now();
        if to > now {
            self.advance(to - now);
        }
    }

    /// Wakes `waker` on the next [`ManualClock::advance`].
    pub(crate) fn wake_on_advance(&self, waker: &Waker) {
        let mut s = self.lock();
        if !s.wakers.iter().any(|w| w.will_wake(waker)) {
            s.wakers.push(waker.clone());
        }
    }

    fn lock(&self) -> MutexGuard<'_, ManualState> {
        // The state stays consistent even if a holder panicked: every update is one assignment.
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// What a prober reads time from.
#[derive(Debug, Clone)]
pub(crate) enum Clock {
    System,
    Manual(ManualClock),
}

impl Clock {
    pub(crate) fn now(&self) -> Instant {
        match self {
            Clock::System => Instant::now(),
            Clock::Manual(c) => c.now(),
        }
    }

    /// The wall time for a check, `None` meaning "read `SystemTime::now()` at the check".
    pub(crate) fn wall(&self) -> Option<SystemTime> {
        match self {
            Clock::System => None,
            Clock::Manual(c) => Some(c.wall()),
        }
    }
}
