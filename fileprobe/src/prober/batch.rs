//! The prober's side of a batch: take the runs whose tick has come, gate them through their
//! state machines, answer what the cache can, hand the rest to a pool thread, watch it for
//! hung checks, and feed the results back.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::{Duration, Instant, SystemTime};

use futures_lite::FutureExt;

use super::entry::{Entry, kind_index, record};
use super::worker::{Done, InFlight, Job, Progress, Wall, lock_progress, run_batch};
use super::{Due, ProbeEvent, Prober, TICK};
use crate::{CachedPath, ChangeWatch, ProbeKind, ProbeResult};

/// What gating one batch's due runs decided.
#[derive(Debug, Default)]
struct Gated {
    /// Checks for the pool thread.
    jobs: VecDeque<Job>,
    /// Startup probes answered from the cache: they gate the other probes, so they are applied
    /// after this batch's gating, as a result from the pool would be.
    startup_done: Vec<Done>,
    /// Probes whose last check is still stuck in the kernel: Timeout at once.
    stuck_now: Vec<Done>,
    /// The next run of every probe that was due.
    again: Vec<Due>,
    /// Changes from other probes answered from the cache.
    events: VecDeque<ProbeEvent>,
    runs: u64,
    failures: u64,
    skips: u64,
}

impl Gated {
    /// How probe `e` (slot `slot`, kind `k`, cleared to run) runs: a Timeout while its last
    /// check is stuck, an answer from its cached mtime (no syscall, so it cannot hang: run here
    /// instead of on the pool), or a job for the pool.
    fn plan(
        &mut self,
        e: &mut Entry,
        name: &str,
        slot: u32,
        k: u8,
        wall_now: SystemTime,
        watch: &Arc<ChangeWatch>,
    ) {
        let root_id = Arc::as_ptr(&e.target.root) as usize;
        if let Some(stuck) = &e.stuck {
            if lock_progress(stuck).returned {
                e.stuck = None;
            } else {
                let timeout = e.probe.timeout;
                let done = Done::timed_out(slot, k, e.generation, root_id, timeout, None);
                self.stuck_now.push(done);
                return;
            }
        }
        if let Some(p) = e.path.as_mut()
            && p.cached(e.probe.validity, wall_now).is_some()
        {
            if usize::from(k) == kind_index(ProbeKind::Startup) {
                self.startup_done
                    .push(Done::answered(slot, k, e.generation, root_id));
            } else {
                self.runs += 1;
                record(e, name, k, Ok(()), &mut self.events);
            }
            return;
        }
        let fresh = || CachedPath::with_watch(&e.probe.path, watch.clone()).map(Box::new);
        let Some(path) = e.path.take().or_else(fresh) else {
            // Unreachable for validated probes (no NUL byte); report it rather than panic.
            self.runs += 1;
            self.failures += 1;
            return;
        };
        self.jobs.push_back(Job {
            slot,
            kind: k,
            generation: e.generation,
            root: e.target.root.clone(),
            path,
            validity: e.probe.validity,
            timeout: e.probe.timeout,
        });
    }
}

impl Prober {
    /// Takes every run of the ticks that have come by `now`, reschedules each, and hands the
    /// checks the state machines let run to a pool thread.
    pub(super) fn start_batch(&mut self, now: Instant) {
        let due_runs = self.take_due(now);
        // Every change made before this point is seen by this batch's checks. A read of an
        // inotify fd never waits for a file system, so this is safe on the caller's executor.
        self.watch.drain();
        let wall_now = self.clock.wall().unwrap_or_else(SystemTime::now);
        let mut gated = Gated {
            again: Vec::with_capacity(due_runs.len()),
            ..Gated::default()
        };
        for &run in &due_runs {
            self.gate(run, now, wall_now, &mut gated);
        }
        self.recycle(due_runs);
        self.finish_gating(gated);
    }

    /// The runs of every tick that has come by `now`, in the order they were scheduled.
    fn take_due(&mut self, now: Instant) -> Vec<Due> {
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
        due_runs
    }

    /// One due run: dropped if its probe was removed or replaced since; else rescheduled one
    /// period on, and, if its state machine lets it run, planned into `gated`.
    fn gate(&mut self, run: Due, now: Instant, wall_now: SystemTime, gated: &mut Gated) {
        let (due, generation, slot, k) = run;
        let next_generation = self.next_generation + 1;
        let Some(Some(s)) = self.slots.get_mut(slot as usize) else {
            return;
        };
        let startup_ok = s.probes[kind_index(ProbeKind::Startup)]
            .as_ref()
            .is_none_or(|e| e.machine.result() == ProbeResult::Success);
        let Some(e) = s.probes[usize::from(k)].as_mut() else {
            return;
        };
        if e.generation != generation {
            return;
        }
        self.next_generation = next_generation;
        e.generation = next_generation;
        // Fixed rate like kubelet's ticker, but never schedule into the past.
        let next = (due + e.probe.period).max(now);
        gated.again.push((next, next_generation, slot, k));
        if e.machine.gate(now, startup_ok).is_err() {
            gated.skips += 1;
            return;
        }
        gated.plan(e, &s.name, slot, k, wall_now, &self.watch);
    }

    /// Applies what gating decided: counters, events, the next runs, the results known
    /// without a pool thread, then the jobs for one.
    fn finish_gating(&mut self, gated: Gated) {
        self.counters.runs += gated.runs;
        self.counters.failures += gated.failures;
        self.counters.skips += gated.skips;
        self.pending.extend(gated.events);
        for run in gated.again {
            self.schedule(run);
        }
        if !gated.startup_done.is_empty() {
            self.apply(gated.startup_done);
        }
        if !gated.stuck_now.is_empty() {
            self.apply(gated.stuck_now);
        }
        if gated.jobs.is_empty() {
            // A batch answered wholly from the cache has no worker to publish its counters.
            self.publish_counters();
        } else {
            self.dispatch(gated.jobs);
        }
    }

    pub(super) fn dispatch(&mut self, jobs: VecDeque<Job>) {
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
    pub(super) fn poll_in_flight(&mut self, cx: &mut Context<'_>) -> Poll<()> {
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
                let stuck = Some(f.progress.clone());
                done.push(Done::timed_out(
                    slot, kind, generation, root_id, timeout, stuck,
                ));
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
    pub(super) fn apply(&mut self, done: Vec<Done>) {
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
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{ProbeFailure, ProbeSpec, Target, open_root};
    use std::os::fd::OwnedFd;

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
