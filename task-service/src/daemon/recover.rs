//! Taking back a previous run's containers: [`Daemon::recover`] and what it found,
//! [`Recovery`].
//!
//! Every record is one of: a `Create` the daemon died in (its runtime container removed), a
//! `Delete` it died in (finished), or a container to take back: a live init re-opened by PID
//! and start time and watched again, or one that exited while no daemon ran, reported with
//! exitwatch's status (else as lost, code 255). Runtime containers without a record are
//! removed.

use super::Daemon;
use super::container::{Entry, Key};
use super::errors;
use super::exits;
use super::oom::MemoryCgroup;
use super::record::Record;
use crate::ids::{ContainerId, Namespace};
use crate::lock::lock;
use crate::model::ProcessState;
use crate::stdio::{self, Endpoint};
use pidfd::{PidFd, ProcessIdentity};
use runc_driver::Runc;
use std::collections::{HashMap, HashSet};
use std::fmt;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;
use tonic::Status;

/// How long recovery waits for a runtime call of an interrupted `Create` to end.
const RUNTIME_CALLS_TIMEOUT: Duration = Duration::from_secs(30);

/// The outcome of [`Daemon::recover`]: every container of the previous
/// run, sorted into what happened to it. Names are `namespace/id`.
///
/// ```
/// let mut r = task_service::daemon::Recovery::default();
/// r.exited_while_down.push(("default/web".into(), 137));
/// assert_eq!(r.to_string(), "adopted 0 running, 1 exited while down (default/web: 137)");
/// ```
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Recovery {
    /// Live containers taken back (re-opened by PID and start time).
    pub adopted: Vec<String>,
    /// Containers whose init exited while no daemon ran, with the exit code containerd gets
    /// (from exitwatch's kernel record).
    pub exited_while_down: Vec<(String, u32)>,
    /// Containers already stopped before the restart, kept for `Wait`/`Delete`.
    pub stopped: Vec<String>,
    /// Containers whose init is gone with no record of how: reported with code 255.
    pub lost: Vec<String>,
    /// Deletes interrupted by the restart (the runtime had removed the container, the record
    /// was still there): finished by removing the record.
    pub finished_deletes: Vec<String>,
    /// Runtime containers with no record (the daemon stopped between `runc create` and the
    /// record's write): deleted with `--force`.
    pub orphans_removed: Vec<String>,
    /// Records that could not be read, left in place for a human, with the reason.
    pub unreadable: Vec<String>,
}

impl fmt::Display for Recovery {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "adopted {} running, {} exited while down",
            self.adopted.len(),
            self.exited_while_down.len()
        )?;
        if !self.exited_while_down.is_empty() {
            let exits: Vec<String> = self
                .exited_while_down
                .iter()
                .map(|(name, code)| format!("{name}: {code}"))
                .collect();
            write!(f, " ({})", exits.join(", "))?;
        }
        let lists = [
            ("already stopped", &self.stopped),
            ("lost (code 255)", &self.lost),
            ("interrupted deletes finished", &self.finished_deletes),
            ("orphans removed", &self.orphans_removed),
            ("unreadable records", &self.unreadable),
        ];
        for (what, list) in lists {
            if !list.is_empty() {
                write!(f, ", {} {what} ({})", list.len(), list.join(", "))?;
            }
        }
        Ok(())
    }
}

impl Recovery {
    /// Sorts every list, so that a report reads the same whatever the order of the records.
    fn sort(&mut self) {
        for list in [
            &mut self.adopted,
            &mut self.stopped,
            &mut self.lost,
            &mut self.finished_deletes,
            &mut self.orphans_removed,
        ] {
            list.sort();
        }
        self.exited_while_down.sort();
    }
}

/// A runtime root to reconcile: the binary (and cgroup manager) to list it with, the namespace
/// it serves, and the ids it should hold.
struct Root {
    binary: PathBuf,
    systemd_cgroup: bool,
    ns: Namespace,
    ids: HashSet<String>,
}

/// Every runtime root to reconcile, keyed by root alone: the same root must not be listed twice
/// with different binaries.
type Roots = HashMap<PathBuf, Root>;

/// A recovered process: its id (an exec's), state and identity.
type Process = (String, ProcessState, Option<ProcessIdentity>);

impl Daemon {
    /// Takes back the containers of a previous run from their records: live inits are
    /// re-opened by PID and start time (a PID now owned by another process is never adopted)
    /// and watched again; inits that exited while no daemon ran get their status from
    /// exitwatch and are reported once; interrupted deletes are finished; runtime containers
    /// without a record are removed. Call once, before serving.
    ///
    /// ```no_run
    /// # async fn f(daemon: task_service::daemon::Daemon) -> Result<(), tonic::Status> {
    /// let recovery = daemon.recover().await?;
    /// println!("{recovery}");
    /// # Ok(()) }
    /// ```
    pub async fn recover(&self) -> Result<Recovery, Status> {
        let mut report = Recovery::default();
        let keys = self
            .inner
            .store
            .list()
            .map_err(|e| errors::internal("list the records", e))?;
        let mut roots = self.namespace_roots();
        for (ns, id) in keys {
            let name = format!("{}/{}", ns.as_str(), id.as_str());
            let record: Record = match self.inner.store.load(&ns, &id) {
                Ok(Some(record)) => record,
                Ok(None) => continue,
                Err(e) => {
                    report.unreadable.push(format!("{name}: {e}"));
                    continue;
                }
            };
            note_root(&mut roots, &ns, &id, &record);
            self.recover_record((ns, id), name, record, &mut report)
                .await?;
        }
        self.remove_orphans(roots, &mut report).await?;
        report.sort();
        Ok(report)
    }

    /// The per-namespace runtime roots under the configured root, with the configured runtime.
    fn namespace_roots(&self) -> Roots {
        let mut roots = Roots::new();
        let Ok(dirs) = std::fs::read_dir(&self.inner.config.runc_root) else {
            return roots;
        };
        for dir in dirs.flatten() {
            if let Some(ns) = dir
                .file_name()
                .to_str()
                .and_then(|n| Namespace::new(n).ok())
            {
                let root = Root {
                    binary: PathBuf::from(&self.inner.config.runtime),
                    systemd_cgroup: false,
                    ns,
                    ids: HashSet::new(),
                };
                roots.insert(dir.path(), root);
            }
        }
        roots
    }

    /// Sorts one record into the report: an interrupted `Create` undone, an interrupted
    /// `Delete` finished, or the container taken back.
    async fn recover_record(
        &self,
        key: Key,
        name: String,
        record: Record,
        report: &mut Recovery,
    ) -> Result<(), Status> {
        let (ns, id) = &key;
        let runc = self.runc_for(&record.runtime, &record.runtime_root, record.systemd_cgroup)?;
        if record.creating {
            // Killed during its Create: the runtime call it made may still be running, and
            // removing its container before it is done would leave the one it makes just after.
            let _ = runc_driver::wait_for_runtime_calls(
                &record.runtime_root,
                id.as_str(),
                RUNTIME_CALLS_TIMEOUT,
            )
            .await;
            let _ = runc.delete(id.as_str(), true).await;
            self.drop_record(ns, id, &record)?;
            report
                .orphans_removed
                .push(format!("{name} (create interrupted)"));
            return Ok(());
        }
        let known = !matches!(
            runc.state(id.as_str()).await,
            Err(runc_driver::Error::NotFound { .. })
        );
        let init = &record.container.init;
        let live = match init.state {
            ProcessState::Stopped(_) => None,
            _ => record.identity.and_then(|i| PidFd::reopen(&i).ok()),
        };
        let deleting = !known
            && live.is_none()
            && matches!(init.state, ProcessState::Stopped(_) | ProcessState::Created);
        if deleting {
            self.drop_record(ns, id, &record)?;
            report.finished_deletes.push(name);
            return Ok(());
        }
        self.take_back(key, name, record, runc, live, report).await;
        Ok(())
    }

    /// Holds a recovered container again, with its execs, and settles its init: kept stopped,
    /// adopted and watched, or reported as exited while no daemon ran.
    async fn take_back(
        &self,
        key: Key,
        name: String,
        record: Record,
        runc: Runc,
        live: Option<PidFd>,
        report: &mut Recovery,
    ) {
        // Only a live process needs its output FIFOs kept open (they were valid at Create).
        let endpoints = [&record.stdin, &record.stdout, &record.stderr].map(String::as_str);
        let keepalive = match (&live, Endpoint::parse_all(endpoints)) {
            (Some(_), Ok([i, o, e])) => stdio::keepalive([&i, &o, &e]),
            _ => Vec::new(),
        };
        let init_state = record.container.init.state;
        let identity = record.identity;
        let execs: Vec<Process> = record
            .container
            .execs
            .iter()
            .map(|(exec_id, p)| {
                let identity = record.exec_identities.get(exec_id).copied();
                (exec_id.clone(), p.state, identity)
            })
            .collect();
        let memory_cgroup = live
            .as_ref()
            .and_then(|pidfd| MemoryCgroup::of(pidfd.pid()));
        let entry = Entry::new(record, runc, keepalive, memory_cgroup);
        lock(&self.inner.containers).insert(key.clone(), entry.clone());
        self.recover_execs(&key, &entry, execs).await;
        match (init_state, live) {
            (ProcessState::Stopped(exit), _) => {
                let _ = entry.init_exit.set(exit).await;
                report.stopped.push(name);
            }
            (_, Some(pidfd)) => {
                report.adopted.push(name);
                self.watch_exit(key, entry, None, pidfd);
            }
            (_, None) => {
                let cookie = exits::cookie(key.0.as_str(), key.1.as_str(), None);
                let (exit, found) = self.inner.exits.while_down(identity.as_ref(), cookie);
                if found {
                    report
                        .exited_while_down
                        .push((name, exit.code_for_containerd()));
                } else {
                    report.lost.push(name);
                }
                self.init_exited(&key, &entry, exit).await;
            }
        }
    }

    /// Takes back a recovered container's execs: live ones are watched again, ones that exited
    /// while no daemon ran are reported (from exitwatch, else lost), and finished ones keep
    /// their exit for `Wait`. Execs added but never started are dropped (their spec was not
    /// persisted): containerd sees them as gone.
    async fn recover_execs(&self, key: &Key, entry: &Arc<Entry>, execs: Vec<Process>) {
        for (exec_id, state, identity) in execs {
            let slot: Arc<super::container::ExecSlot> = Arc::default();
            lock(&entry.execs).insert(exec_id.clone(), slot.clone());
            match state {
                ProcessState::Stopped(exit) => {
                    let _ = slot.exit.set(exit).await;
                }
                ProcessState::Created => {
                    let _ = lock(&entry.record).container.delete_exec(&exec_id);
                    lock(&entry.execs).remove(&exec_id);
                }
                ProcessState::Running | ProcessState::Paused => {
                    match identity.and_then(|i| PidFd::reopen(&i).ok()) {
                        Some(pidfd) => {
                            self.watch_exit(key.clone(), entry.clone(), Some(exec_id), pidfd)
                        }
                        None => {
                            let cookie =
                                exits::cookie(key.0.as_str(), key.1.as_str(), Some(&exec_id));
                            let (exit, _) = self.inner.exits.while_down(identity.as_ref(), cookie);
                            self.exec_exited(key, entry, &exec_id, exit).await;
                        }
                    }
                }
            }
        }
    }

    /// Removes the runtime containers that no record names (the daemon stopped between
    /// `runc create` and the record's write).
    async fn remove_orphans(&self, roots: Roots, report: &mut Recovery) -> Result<(), Status> {
        for (root, known) in roots {
            let runc = self.runc_for(&known.binary, &root, known.systemd_cgroup)?;
            let Ok(states) = runc.list().await else {
                continue;
            };
            for state in states {
                if known.ids.contains(&state.id) {
                    continue;
                }
                if runc.delete(&state.id, true).await.is_ok() {
                    report
                        .orphans_removed
                        .push(format!("{}/{}", known.ns.as_str(), state.id));
                }
            }
        }
        Ok(())
    }
}

/// Notes that `record`'s runtime root holds `id`; the binary that made the records is the one
/// to list the root with.
fn note_root(roots: &mut Roots, ns: &Namespace, id: &ContainerId, record: &Record) {
    let root = roots
        .entry(record.runtime_root.clone())
        .or_insert_with(|| Root {
            binary: record.runtime.clone(),
            systemd_cgroup: record.systemd_cgroup,
            ns: ns.clone(),
            ids: HashSet::new(),
        });
    root.binary = record.runtime.clone();
    root.systemd_cgroup = record.systemd_cgroup;
    root.ids.insert(id.to_string());
}
