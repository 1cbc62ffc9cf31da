//! One scheduled probe (its state machine, target and cached path) and the slot of a container.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex};

use super::event::{ProbeEvent, Target};
use super::worker::Progress;
use crate::{CachedPath, FileProbe, Machine, ProbeFailure, ProbeKind, ProbeResult};

pub(super) const KINDS: [ProbeKind; 3] = [
    ProbeKind::Readiness,
    ProbeKind::Liveness,
    ProbeKind::Startup,
];

pub(super) fn kind_index(kind: ProbeKind) -> usize {
    match kind {
        ProbeKind::Readiness => 0,
        ProbeKind::Liveness => 1,
        ProbeKind::Startup => 2,
    }
}

#[derive(Debug)]
pub(super) struct Entry {
    pub(super) probe: FileProbe,
    pub(super) machine: Machine,
    pub(super) target: Target,
    pub(super) generation: u64,
    pub(super) last_failure: Option<ProbeFailure>,
    /// The cached path; `None` while its check is in flight (it travels with the job).
    pub(super) path: Option<Box<CachedPath>>,
    /// The batch whose worker is still stuck in this probe's last check, if any: until it
    /// returns, this probe's ticks fail with Timeout at once instead of tying up another thread.
    pub(super) stuck: Option<Arc<Mutex<Progress>>>,
}

#[derive(Debug)]
pub(super) struct Slot {
    pub(super) name: String,
    /// Boxed: most containers have one or two probes, and a slot stays small.
    pub(super) probes: [Option<Box<Entry>>; 3],
}

/// Feeds one check's result to its probe's state machine and queues the change, if any.
pub(super) fn record(
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
