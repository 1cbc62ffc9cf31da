//! Probes the daemon runs itself, from the pod annotation `shimless.io/probes`
//! ([`crate::probes`]), on `fileprobe`'s one [`Prober`] for the node (one timer, no task or
//! thread per probe).
//!
//! A container's probes are read at `Create` (a bad annotation is refused there, before
//! anything is saved), scheduled once its init is started (`Start`, or recovery of a running
//! container, whose first runs kubelet-style wait a random fraction of their period), removed
//! from the scheduler when its init exits and forgotten at `Delete`. The prober's result changes
//! come out on one task: a liveness or startup probe that reports Failure kills the container
//! as kubelet stops it, `SIGTERM` to its init, then `SIGKILL` once the probe's
//! `terminationGracePeriodSeconds` (default 30 s) have passed without its exit; that exit goes
//! to containerd like any other. `shimless-probe readiness|startup|liveness` marker execs are
//! answered from the current result ([`Daemon::probe_answer`]), and `Admin/Probes` lists them.

use super::Daemon;
use super::container::{Entry, Key};
use crate::api::shimless::v1::{ProbeSummary, ProberCounters};
use crate::api::timestamp;
use crate::lock::lock;
use crate::probes::{CONTAINER_NAME, ContainerProbes, PodProbes};
use fileprobe::{ProbeEvent, ProbeKind, ProbeResult, Prober, ProberHandle, Target};
use std::collections::HashMap;
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, Weak};
use std::time::{Duration, Instant, SystemTime};
use tonic::Status;

/// Every daemon-run probe of the node: the scheduler's handle and what each container asked for.
pub(super) struct Probes {
    handle: ProberHandle,
    table: Mutex<HashMap<Key, Configured>>,
    /// Containers killed by a probe since the daemon started.
    kills: AtomicU64,
}

/// One container's probes and what they reported.
struct Configured {
    /// The container's name in its pod (the annotation's key).
    name: String,
    probes: ContainerProbes,
    scheduled: bool,
    /// Per probe (as in `probes`): its last reported result and counters.
    states: Vec<ProbeState>,
}

/// What one probe has reported.
#[derive(Clone)]
struct ProbeState {
    result: ProbeResult,
    reason: Option<String>,
    since: SystemTime,
    changes: u64,
    failures: u64,
    kills: u64,
}

/// A marker exec's answer: exit code and its output.
pub(super) struct Answer {
    pub(super) code: u8,
    pub(super) stdout: String,
    pub(super) stderr: String,
}

/// The scheduler's name of a container: namespace and id (a namespace holds no `/`).
fn prober_name(key: &Key) -> String {
    format!("{}/{}", key.0.as_str(), key.1.as_str())
}

/// The key a scheduler name stands for.
fn key_of(name: &str) -> Option<Key> {
    let (ns, id) = name.split_once('/')?;
    Some((
        crate::ids::Namespace::new(ns.to_owned()).ok()?,
        crate::ids::ContainerId::new(id.to_owned()).ok()?,
    ))
}

fn kind_word(kind: ProbeKind) -> &'static str {
    match kind {
        ProbeKind::Readiness => "readiness",
        ProbeKind::Liveness => "liveness",
        ProbeKind::Startup => "startup",
    }
}

/// The kind a marker's first argument names (`readiness`, `liveness`, `startup`).
pub(super) fn kind_of_word(word: &str) -> Option<ProbeKind> {
    [
        ProbeKind::Readiness,
        ProbeKind::Liveness,
        ProbeKind::Startup,
    ]
    .into_iter()
    .find(|k| kind_word(*k) == word)
}

fn result_word(result: ProbeResult) -> &'static str {
    match result {
        ProbeResult::Unknown => "Unknown",
        ProbeResult::Success => "Success",
        ProbeResult::Failure => "Failure",
    }
}

impl Probes {
    /// The node's prober (to run with [`Daemon::run_prober`]) and its handle, with no probe.
    pub(super) fn new() -> (Probes, Prober) {
        let prober = Prober::new();
        let probes = Probes {
            handle: prober.handle(),
            table: Mutex::new(HashMap::new()),
            kills: AtomicU64::new(0),
        };
        (probes, prober)
    }
}

impl Daemon {
    /// Runs the node's prober on the daemon's executor: each result change goes to
    /// [`Daemon::on_probe_event`]. Ends when the daemon is dropped.
    pub(super) fn run_prober(&self, mut prober: Prober) {
        let weak: Weak<super::Inner> = Arc::downgrade(&self.inner);
        self.inner
            .ex
            .spawn(async move {
                while let Some(event) = prober.next_event().await {
                    let Some(inner) = weak.upgrade() else { break };
                    Daemon { inner }.on_probe_event(event);
                }
            })
            .detach();
    }

    /// The probes a new container asks for, from its spec's annotations: a sandbox's are
    /// checked (the whole pod's annotation, refused naming the field) and none kept; an app
    /// container gets those under its name.
    pub(super) async fn probes_at_create(
        &self,
        bundle: &Path,
    ) -> Result<Option<(String, ContainerProbes)>, Status> {
        let config = bundle.join("config.json");
        let annotations = smol::unblock(move || {
            oci_spec::runtime::Spec::load(&config).map(|s| s.annotations().clone())
        })
        .await
        .map_err(|e| Status::invalid_argument(format!("{}: {e}", bundle.display())))?
        .unwrap_or_default();
        let pod = PodProbes::from_annotations(&annotations)
            .map_err(|e| Status::invalid_argument(e.to_string()))?;
        let (Some(pod), Some(name)) = (pod, annotations.get(CONTAINER_NAME)) else {
            return Ok(None);
        };
        Ok(pod.container(name).map(|p| (name.clone(), p.clone())))
    }

    /// Keeps a created container's probes until it starts.
    pub(super) fn keep_probes(&self, key: &Key, probes: Option<(String, ContainerProbes)>) {
        let Some((name, probes)) = probes.filter(|(_, p)| !p.probes().is_empty()) else {
            return;
        };
        let now = SystemTime::now();
        let states = probes
            .probes()
            .iter()
            .map(|p| ProbeState {
                result: ProbeResult::initial(p.probe.kind),
                reason: None,
                since: now,
                changes: 0,
                failures: 0,
                kills: 0,
            })
            .collect();
        let configured = Configured {
            name,
            probes,
            scheduled: false,
            states,
        };
        lock(&self.inner.probes.table).insert(key.clone(), configured);
    }

    /// Schedules a started container's probes, looking inside its root; `started_at` is when
    /// its init started (for `initialDelaySeconds`).
    pub(super) fn schedule_probes(&self, key: &Key, entry: &Entry, started_at: Instant) {
        let mut table = lock(&self.inner.probes.table);
        let Some(c) = table.get_mut(key).filter(|c| !c.scheduled) else {
            return;
        };
        let root = match super::probe_exec::container_root(entry) {
            Ok(root) => Arc::new(root),
            Err(e) => {
                tracing::warn!(
                    "shimless: probes of {}: the container's root cannot be opened ({}); not run",
                    prober_name(key),
                    e.message()
                );
                return;
            }
        };
        let target = Target {
            id: key.1.to_string(),
            root,
            started_at,
        };
        let name = prober_name(key);
        for p in c.probes.probes() {
            self.inner
                .probes
                .handle
                .add(&name, p.probe.clone(), target.clone());
        }
        c.scheduled = true;
    }

    /// Takes a recovered live container's probes back from its bundle's spec; a running one's
    /// are scheduled with their first runs spread over a period, as kubelet does after a
    /// restart (a created one's wait for its `Start`).
    pub(super) async fn recover_probes(&self, key: &Key, entry: &Entry) {
        let (bundle, created_at, running) = {
            let record = lock(&entry.record);
            let running = record.container.init.state == crate::model::ProcessState::Running;
            (record.bundle.clone(), record.created_at, running)
        };
        match self.probes_at_create(&bundle).await {
            Ok(probes) => self.keep_probes(key, probes),
            Err(e) => {
                tracing::warn!(
                    "shimless: probes of {} not taken back: {}",
                    prober_name(key),
                    e.message()
                );
                return;
            }
        }
        if !running {
            return;
        }
        let age = SystemTime::now()
            .duration_since(created_at)
            .unwrap_or_default();
        let started_at = Instant::now().checked_sub(age).unwrap_or_else(Instant::now);
        self.schedule_probes(key, entry, started_at);
    }

    /// Takes a container's probes off the scheduler (its init exited); their last results stay
    /// listed until `Delete`.
    pub(super) fn unschedule_probes(&self, key: &Key) {
        let mut table = lock(&self.inner.probes.table);
        let Some(c) = table.get_mut(key).filter(|c| c.scheduled) else {
            return;
        };
        let name = prober_name(key);
        for p in c.probes.probes() {
            self.inner.probes.handle.remove(&name, p.probe.kind);
        }
        c.scheduled = false;
    }

    /// Forgets a deleted container's probes.
    pub(super) fn forget_probes(&self, key: &Key) {
        self.unschedule_probes(key);
        lock(&self.inner.probes.table).remove(key);
    }

    /// A probe's result changed: noted, and a liveness or startup Failure kills the container.
    fn on_probe_event(&self, event: ProbeEvent) {
        let Some(key) = key_of(&event.container) else {
            return;
        };
        let key = {
            let mut table = lock(&self.inner.probes.table);
            let Some(c) = table.get_mut(&key).filter(|c| c.scheduled) else {
                return;
            };
            let Some(i) = c
                .probes
                .probes()
                .iter()
                .position(|p| p.probe.kind == event.kind)
            else {
                return;
            };
            let state = &mut c.states[i];
            state.result = event.result;
            state.reason = event.reason.as_ref().map(ToString::to_string);
            state.since = SystemTime::now();
            state.changes += 1;
            if event.result != ProbeResult::Failure || event.kind == ProbeKind::Readiness {
                if event.result == ProbeResult::Failure {
                    state.failures += 1;
                }
                return;
            }
            state.failures += 1;
            state.kills += 1;
            let grace = c.probes.probes()[i].grace;
            (key, grace)
        };
        let (key, grace) = key;
        self.inner.probes.kills.fetch_add(1, Ordering::Relaxed);
        tracing::warn!(
            "shimless: {}: {} failed ({}): killing it (SIGTERM, SIGKILL after {}s)",
            prober_name(&key),
            event.kind,
            event
                .reason
                .as_ref()
                .map_or_else(|| "no reason".to_string(), ToString::to_string),
            grace.as_secs()
        );
        let daemon = self.clone();
        self.inner
            .ex
            .spawn(async move { daemon.kill_for_probe(key, grace).await })
            .detach();
    }

    /// Stops a container as kubelet does: `SIGTERM`, then `SIGKILL` if it has not exited
    /// within `grace`. Its exit is reported by its watcher, as any exit.
    async fn kill_for_probe(&self, key: Key, grace: Duration) {
        let Ok(entry) = self.entry(&key) else { return };
        if self.kill_init(&key, &entry, 15, false).await.is_err() {
            return; // already exited
        }
        let exited = async {
            entry.init_exit.wait().await;
            true
        };
        let waited = async {
            async_io::Timer::after(grace).await;
            false
        };
        if !futures_lite::future::or(exited, waited).await {
            let _ = self.kill_init(&key, &entry, 9, false).await;
        }
    }

    /// A marker exec's answer for `shimless-probe <kind>`: 0 when the daemon's probe of that
    /// kind reports Success, 1 otherwise (with the result and reason), 2 when the container has
    /// no such probe.
    pub(super) fn probe_answer(&self, key: &Key, kind: ProbeKind) -> Answer {
        let table = lock(&self.inner.probes.table);
        let found = table.get(key).and_then(|c| {
            let i = c
                .probes
                .probes()
                .iter()
                .position(|p| p.probe.kind == kind)?;
            Some(c.states[i].clone())
        });
        let Some(state) = found else {
            return Answer {
                code: 2,
                stdout: String::new(),
                stderr: format!(
                    "shimless-probe {}: this container has no {kind} in the pod annotation {}\n",
                    kind_word(kind),
                    crate::probes::ANNOTATION
                ),
            };
        };
        let mut line = format!("{kind}: {}", result_word(state.result));
        if let Some(reason) = &state.reason {
            line.push_str(&format!(" ({reason})"));
        }
        line.push('\n');
        Answer {
            code: if state.result == ProbeResult::Success {
                0
            } else {
                1
            },
            stdout: line,
            stderr: String::new(),
        }
    }

    /// Every daemon-run probe (of `namespace`, or all when empty) and the prober's counters.
    pub(super) fn probe_list(&self, namespace: &str) -> (Vec<ProbeSummary>, ProberCounters) {
        let table = lock(&self.inner.probes.table);
        let mut rows = Vec::new();
        for (key, c) in table
            .iter()
            .filter(|(k, _)| namespace.is_empty() || k.0.as_str() == namespace)
        {
            for (p, s) in c.probes.probes().iter().zip(&c.states) {
                rows.push(ProbeSummary {
                    namespace: key.0.to_string(),
                    id: key.1.to_string(),
                    container: c.name.clone(),
                    kind: p.probe.kind.to_string(),
                    path: p.probe.path.clone(),
                    period_seconds: p.probe.period.as_secs(),
                    validity_seconds: p.probe.validity.as_secs(),
                    state: if c.scheduled { "running" } else { "idle" }.into(),
                    result: result_word(s.result).into(),
                    reason: s.reason.clone().unwrap_or_default(),
                    changes: s.changes,
                    failures: s.failures,
                    kills: s.kills,
                    since: Some(timestamp(s.since)),
                });
            }
        }
        rows.sort_by(|a, b| (&a.namespace, &a.id, &a.kind).cmp(&(&b.namespace, &b.id, &b.kind)));
        let n = self.inner.probes.handle.counters();
        let counters = ProberCounters {
            runs: n.runs,
            failures: n.failures,
            skips: n.skips,
            events: n.events,
            hung: n.hung,
            statx_calls: n.statx_calls,
            cached_checks: n.cached_checks,
            watches: n.watches,
            kills: self.inner.probes.kills.load(Ordering::Relaxed),
        };
        (rows, counters)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn marker_words_name_the_three_kinds() {
        for kind in [
            ProbeKind::Readiness,
            ProbeKind::Liveness,
            ProbeKind::Startup,
        ] {
            assert_eq!(kind_of_word(kind_word(kind)), Some(kind));
        }
        assert_eq!(kind_of_word("file"), None);
        assert_eq!(kind_of_word("Readiness"), None);
    }

    #[test]
    fn a_scheduler_name_gives_its_key_back() {
        let key = key_of("k8s.io/abc").unwrap();
        assert_eq!((key.0.as_str(), key.1.as_str()), ("k8s.io", "abc"));
        assert_eq!(prober_name(&key), "k8s.io/abc");
        assert!(key_of("no-slash").is_none());
    }
}
