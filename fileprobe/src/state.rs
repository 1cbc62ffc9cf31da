//! Kubelet's per-probe state machine, pure: every time is passed in, nothing reads a clock.
//!
//! It mirrors kubelet's prober worker: the initial result per kind (readiness Failure, liveness
//! Success, startup Unknown); liveness and readiness wait while the startup probe has not
//! succeeded; a run happens only once `initialDelaySeconds` have passed since the container
//! started; the reported result flips only after `successThreshold` / `failureThreshold`
//! consecutive identical raw results; after a liveness or startup Failure the probe is on hold
//! until a new container id appears (kubelet restarts the container); and when the prober starts
//! after the container, the first run is delayed by a random fraction of the period (the caller
//! passes the fraction, so the machine stays deterministic).

use std::time::{Duration, Instant};

use crate::{FileProbe, ProbeKind};

/// A probe's reported result, as kubelet's results manager holds it.
///
/// ```
/// assert_eq!(fileprobe::ProbeResult::initial(fileprobe::ProbeKind::Readiness), fileprobe::ProbeResult::Failure);
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ProbeResult {
    /// Not known yet (a startup probe before its first verdict).
    Unknown,
    /// The probe passes.
    Success,
    /// The probe fails.
    Failure,
}

impl ProbeResult {
    /// The value kubelet reports before a probe of `kind` has run for a new container.
    ///
    /// ```
    /// use fileprobe::{ProbeKind, ProbeResult};
    /// assert_eq!(ProbeResult::initial(ProbeKind::Liveness), ProbeResult::Success);
    /// assert_eq!(ProbeResult::initial(ProbeKind::Startup), ProbeResult::Unknown);
    /// ```
    pub fn initial(kind: ProbeKind) -> Self {
        match kind {
            ProbeKind::Readiness => ProbeResult::Failure,
            ProbeKind::Liveness => ProbeResult::Success,
            ProbeKind::Startup => ProbeResult::Unknown,
        }
    }
}

/// Why a due tick did not run the check.
///
/// ```
/// let s = fileprobe::Skip::OnHold;
/// assert_eq!(format!("{s:?}"), "OnHold");
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Skip {
    /// A liveness or startup Failure was reported; waiting for a new container id.
    OnHold,
    /// The container's startup probe has not succeeded yet.
    AwaitingStartup,
    /// `initialDelaySeconds` since the container's start have not passed.
    InitialDelay,
}

/// One probe of one container: thresholds, counters and the reported result.
///
/// ```
/// use std::time::{Duration, Instant};
/// use fileprobe::{Machine, ProbeKind, ProbeResult, ProbeSpec};
/// let p = ProbeSpec::from_yaml("file: {path: /p, validity: 5}\nfailureThreshold: 2").unwrap()
///     .validate(ProbeKind::Liveness).unwrap();
/// let t0 = Instant::now();
/// let mut m = Machine::new(&p, "c1", t0);
/// assert_eq!(m.gate(t0, true), Ok(()));
/// assert_eq!(m.record(false), None); // one failure: still Success
/// assert_eq!(m.record(false), Some(ProbeResult::Failure));
/// assert_eq!(m.gate(t0 + Duration::from_secs(1), true), Err(fileprobe::Skip::OnHold));
/// ```
#[derive(Debug, Clone)]
pub struct Machine {
    kind: ProbeKind,
    initial_delay: Duration,
    success_threshold: u32,
    failure_threshold: u32,
    container: String,
    started_at: Instant,
    result: ProbeResult,
    last_raw: Option<bool>,
    run: u32,
    on_hold: bool,
}

impl Machine {
    /// A machine for `probe` on container `container`, which started at `started_at`.
    ///
    /// ```
    /// let p = fileprobe::ProbeSpec::from_yaml("file: {path: /p, validity: 5}").unwrap()
    ///     .validate(fileprobe::ProbeKind::Readiness).unwrap();
    /// let m = fileprobe::Machine::new(&p, "c1", std::time::Instant::now());
    /// assert_eq!(m.result(), fileprobe::ProbeResult::Failure);
    /// ```
    pub fn new(probe: &FileProbe, container: &str, started_at: Instant) -> Self {
        Machine {
            kind: probe.kind,
            initial_delay: probe.initial_delay,
            success_threshold: probe.success_threshold,
            failure_threshold: probe.failure_threshold,
            container: container.to_owned(),
            started_at,
            result: ProbeResult::initial(probe.kind),
            last_raw: None,
            run: 0,
            on_hold: false,
        }
    }

    /// The result kubelet would report now.
    ///
    /// ```
    /// # let p = fileprobe::ProbeSpec::from_yaml("file: {path: /p, validity: 5}").unwrap().validate(fileprobe::ProbeKind::Startup).unwrap();
    /// let m = fileprobe::Machine::new(&p, "c1", std::time::Instant::now());
    /// assert_eq!(m.result(), fileprobe::ProbeResult::Unknown);
    /// ```
    pub fn result(&self) -> ProbeResult {
        self.result
    }

    /// The container id this machine currently follows.
    ///
    /// ```
    /// # let p = fileprobe::ProbeSpec::from_yaml("file: {path: /p, validity: 5}").unwrap().validate(fileprobe::ProbeKind::Startup).unwrap();
    /// let m = fileprobe::Machine::new(&p, "c1", std::time::Instant::now());
    /// assert_eq!(m.container(), "c1");
    /// ```
    pub fn container(&self) -> &str {
        &self.container
    }

    /// Whether a tick at `now` runs the check; `startup_succeeded` is the container's startup
    /// probe state (pass `true` when it has none). Startup probes ignore it.
    ///
    /// ```
    /// # use std::time::{Duration, Instant};
    /// # let p = fileprobe::ProbeSpec::from_yaml("file: {path: /p, validity: 5}\ninitialDelaySeconds: 5").unwrap().validate(fileprobe::ProbeKind::Readiness).unwrap();
    /// let t0 = Instant::now();
    /// let m = fileprobe::Machine::new(&p, "c1", t0);
    /// assert_eq!(m.gate(t0, true), Err(fileprobe::Skip::InitialDelay));
    /// assert_eq!(m.gate(t0 + Duration::from_secs(5), false), Err(fileprobe::Skip::AwaitingStartup));
    /// ```
    pub fn gate(&self, now: Instant, startup_succeeded: bool) -> Result<(), Skip> {
        if self.on_hold {
            return Err(Skip::OnHold);
        }
        if self.kind != ProbeKind::Startup && !startup_succeeded {
            return Err(Skip::AwaitingStartup);
        }
        if now.saturating_duration_since(self.started_at) < self.initial_delay {
            return Err(Skip::InitialDelay);
        }
        Ok(())
    }

    /// Records one raw check result (`true` = success); returns the new reported result if it
    /// changed.
    ///
    /// ```
    /// # let p = fileprobe::ProbeSpec::from_yaml("file: {path: /p, validity: 5}").unwrap().validate(fileprobe::ProbeKind::Readiness).unwrap();
    /// let mut m = fileprobe::Machine::new(&p, "c1", std::time::Instant::now());
    /// assert_eq!(m.record(true), Some(fileprobe::ProbeResult::Success));
    /// assert_eq!(m.record(true), None);
    /// ```
    pub fn record(&mut self, success: bool) -> Option<ProbeResult> {
        if self.last_raw == Some(success) {
            self.run = self.run.saturating_add(1);
        } else {
            self.last_raw = Some(success);
            self.run = 1;
        }
        let threshold = if success {
            self.success_threshold
        } else {
            self.failure_threshold
        };
        if self.run < threshold {
            return None;
        }
        let new = if success {
            ProbeResult::Success
        } else {
            ProbeResult::Failure
        };
        if new == ProbeResult::Failure && self.kind != ProbeKind::Readiness {
            // Kubelet kills the container; nothing more to probe until a new one appears.
            self.on_hold = true;
            self.run = 0;
        }
        (new != self.result).then(|| {
            self.result = new;
            new
        })
    }

    /// A new container id (kubelet restarted the container): back to the initial result, counters
    /// cleared, hold released. Returns the reset result if it differs from the reported one.
    ///
    /// ```
    /// # use std::time::Instant;
    /// # let p = fileprobe::ProbeSpec::from_yaml("file: {path: /p, validity: 5}").unwrap().validate(fileprobe::ProbeKind::Readiness).unwrap();
    /// let mut m = fileprobe::Machine::new(&p, "c1", Instant::now());
    /// m.record(true);
    /// assert_eq!(m.new_container("c2", Instant::now()), Some(fileprobe::ProbeResult::Failure));
    /// ```
    pub fn new_container(&mut self, container: &str, started_at: Instant) -> Option<ProbeResult> {
        if container == self.container {
            return None;
        }
        self.container = container.to_owned();
        self.started_at = started_at;
        self.last_raw = None;
        self.run = 0;
        self.on_hold = false;
        let initial = ProbeResult::initial(self.kind);
        (initial != self.result).then(|| {
            self.result = initial;
            initial
        })
    }
}

/// When the first tick of a probe is due: at once, unless the prober started after the
/// container, in which case kubelet spreads restarts by waiting `fraction` (in `[0, 1)`) of a
/// period.
///
/// ```
/// use std::time::{Duration, Instant};
/// let t0 = Instant::now();
/// let late = t0 + Duration::from_secs(100);
/// let p = Duration::from_secs(10);
/// assert_eq!(fileprobe::first_due(t0, t0, p, 0.5), t0);
/// assert_eq!(fileprobe::first_due(late, t0, p, 0.5), late + Duration::from_secs(5));
/// ```
pub fn first_due(
    prober_start: Instant,
    container_start: Instant,
    period: Duration,
    fraction: f64,
) -> Instant {
    if prober_start > container_start {
        prober_start + period.mul_f64(fraction.clamp(0.0, 1.0))
    } else {
        prober_start
    }
}
