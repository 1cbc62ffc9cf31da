//! What the daemon holds per container: [`Entry`], its record and the state that lives only in
//! memory (exit cells, pending execs, terminals, stdio keepalives).

use super::oom::MemoryCgroup;
use super::record::Record;
use crate::console::Console;
use crate::ids::{ContainerId, Namespace};
use crate::lock::lock;
use crate::model::Exit;
use std::collections::HashMap;
use std::os::fd::OwnedFd;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use tonic::Status;

/// A container's name: its namespace and id.
pub(super) type Key = (Namespace, ContainerId);

/// One container the daemon manages.
pub(super) struct Entry {
    pub(super) record: Mutex<Record>,
    pub(super) runc: runc_driver::Runc,
    /// Resolved once, when its init exits.
    pub(super) init_exit: async_lock::OnceCell<Exit>,
    /// Held by `Start` from `runc start` until `TaskStart` is published, and taken by the exit
    /// watcher before it reports: an init that exits at once is still reported after its start.
    pub(super) start_gate: async_lock::Mutex<()>,
    /// Held by `Kill` across the signal (and by an exec's `Start` until `TaskExecStarted`), and
    /// taken by the exit watcher before it publishes an exit: containerd gets a `Kill`'s reply
    /// before the exit that signal caused, as containerd-shim-runc-v2 orders them (its process
    /// lock is held across `runc kill`, and its reaper's exit waits behind it). CRI deletes the
    /// task on the exit and closes the connection; a `Kill` still pending would fail then.
    pub(super) signal_gate: async_lock::Mutex<()>,
    /// Readers that keep its output FIFOs from ever lacking one (see [`crate::stdio`]).
    _keepalive: Vec<OwnedFd>,
    /// Exec processes added but not started yet: their spec and stdio.
    pub(super) pending_execs: Mutex<HashMap<String, PendingExec>>,
    /// Per exec: its exit once known (what `Wait` with an exec id awaits), and keepalives.
    pub(super) execs: Mutex<HashMap<String, Arc<ExecSlot>>>,
    /// The init's terminal, if it has one.
    pub(super) console: Mutex<Option<Console>>,
    /// Orders saves of the record with each other and with `Delete`'s removal; holds the
    /// sequence number of the last snapshot written, so an older snapshot never overwrites a
    /// newer one.
    pub(super) save_lock: async_lock::Mutex<u64>,
    /// Numbers snapshots of the record, taken under its lock.
    snapshots: AtomicU64,
    /// The init's memory cgroup, read when its exit is reported (`TaskOOM`).
    pub(super) memory_cgroup: Option<MemoryCgroup>,
}

/// A copy of a container's record, numbered in the order its changes were made.
pub(super) struct Snapshot {
    pub(super) seq: u64,
    pub(super) record: Record,
}

/// An exec between `Exec` and `Start`.
pub(super) struct PendingExec {
    pub(super) process: oci_spec::runtime::Process,
    pub(super) stdio: [String; 3],
    pub(super) terminal: bool,
}

/// A started (or at least added) exec's exit and stdio keepalive.
#[derive(Default)]
pub(super) struct ExecSlot {
    pub(super) exit: async_lock::OnceCell<Exit>,
    pub(super) keepalive: Mutex<Vec<OwnedFd>>,
    pub(super) console: Mutex<Option<Console>>,
}

impl Entry {
    pub(super) fn new(
        record: Record,
        runc: runc_driver::Runc,
        keepalive: Vec<OwnedFd>,
        memory_cgroup: Option<MemoryCgroup>,
    ) -> Arc<Entry> {
        Arc::new(Entry {
            record: Mutex::new(record),
            runc,
            init_exit: async_lock::OnceCell::new(),
            start_gate: async_lock::Mutex::new(()),
            signal_gate: async_lock::Mutex::new(()),
            _keepalive: keepalive,
            pending_execs: Mutex::new(HashMap::new()),
            execs: Mutex::new(HashMap::new()),
            console: Mutex::new(None),
            save_lock: async_lock::Mutex::new(0),
            snapshots: AtomicU64::new(0),
            memory_cgroup,
        })
    }

    /// Takes a numbered copy of the record; call with its lock held (pass the guard's target).
    pub(super) fn snapshot(&self, record: &Record) -> Snapshot {
        Snapshot {
            seq: self.snapshots.fetch_add(1, Ordering::SeqCst) + 1,
            record: record.clone(),
        }
    }

    /// Runs `f` on the terminal of the init (`exec_id` empty) or of an exec.
    pub(super) fn with_console<T>(
        &self,
        exec_id: &str,
        f: impl FnOnce(&Console) -> T,
    ) -> Result<T, Status> {
        let no_terminal = || {
            Status::failed_precondition(if exec_id.is_empty() {
                "the container's process has no terminal".to_string()
            } else {
                format!("exec {exec_id:?} has no terminal")
            })
        };
        if exec_id.is_empty() {
            let console = lock(&self.console);
            return console.as_ref().map(f).ok_or_else(no_terminal);
        }
        let slot = lock(&self.execs).get(exec_id).cloned().ok_or_else(|| {
            Status::not_found(format!("container has no exec process {exec_id:?}"))
        })?;
        let console = lock(&slot.console);
        console.as_ref().map(f).ok_or_else(no_terminal)
    }
}
