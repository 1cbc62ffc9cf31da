//! Taking back a previous run's containers: [`Daemon::recover`] and what it found,
//! [`Recovery`].
//!
//! Every record is one of: a `Create` the daemon died in (its runtime container removed), a
//! `Delete` it died in (finished), or a container to take back: a live init re-opened by PID
//! and start time and watched again, or one that exited while no daemon ran, reported with
//! exitwatch's status (else as lost, code 255).
//!
//! A record of a newer format (a newer shimless wrote it, then the node was rolled back) is
//! refused before it is parsed: left on disk as it is, its container neither adopted nor
//! removed, and reported (`newer`).
//!
//! Nothing fails recovery as a whole but an unreadable state directory: an entry that cannot be
//! taken back (a stray file, a record whose runtime binary is gone, a root that cannot be
//! listed, a failed removal) is skipped and reported. A record that cannot be read is kept, and
//! its container rebuilt from the runtime's state and its bundle (`rebuild`). A process whose
//! pidfd cannot be re-opened for any reason but "no such process" is kept and re-opened later
//! (`reopen`), never taken as exited. Runtime containers that no record names are left alone:
//! shimless removes only what it has a record or an intent for.

use super::Daemon;
use super::container::{Entry, Key};
use super::errors;
use super::listing::Listings;
use super::oom::MemoryCgroup;
use super::record::Record;
use super::reopen::{self, Reopened};
use crate::ids::{ContainerId, Namespace};
use crate::lock::lock;
use crate::model::ProcessState;
use crate::state::StateError;
use crate::stdio::{self, Endpoint};
use pidfd::ProcessIdentity;
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
    /// `Create`s interrupted by the restart (a record still marked `creating`): whatever the
    /// runtime made of them was deleted with `--force`.
    pub orphans_removed: Vec<String>,
    /// Records that could not be read, kept for a human, with the reason. Their containers
    /// are rebuilt from the runtime's state when the runtime knows them (see `rebuilt`).
    pub unreadable: Vec<String>,
    /// Containers taken back from the runtime's state and their bundle, their record being
    /// unreadable (their stdio and execs are not known any more).
    pub rebuilt: Vec<String>,
    /// Processes whose pidfd could not be re-opened for a reason other than "gone" (e.g. no
    /// file descriptor left): kept as the record says and re-opened in the background.
    pub unverified: Vec<String>,
    /// Entries skipped, with why: stray files in the state directory, records whose runtime
    /// cannot be run, roots that cannot be listed, failed removals.
    pub skipped: Vec<String>,
    /// Runtime containers that no record or intent names, left alone: shimless did not make
    /// them (another runtime's, or containerd's own, under a shared root).
    pub left_alone: Vec<String>,
    /// Records of a newer format than this build reads, with why: left on disk as they are,
    /// and their containers left alone (neither taken back nor removed).
    pub newer: Vec<String>,
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
        for (what, list) in self.lists() {
            if !list.is_empty() {
                write!(f, ", {} {what} ({})", list.len(), list.join("; "))?;
            }
        }
        Ok(())
    }
}

impl Recovery {
    /// The named lists beyond the adopted and exited ones, as the report prints them.
    fn lists(&self) -> [(&'static str, &Vec<String>); 10] {
        [
            ("already stopped", &self.stopped),
            ("lost (code 255)", &self.lost),
            ("interrupted deletes finished", &self.finished_deletes),
            ("orphans removed", &self.orphans_removed),
            ("unreadable records kept", &self.unreadable),
            ("rebuilt from the runtime", &self.rebuilt),
            ("not verified yet", &self.unverified),
            ("skipped", &self.skipped),
            ("runtime containers left alone", &self.left_alone),
            ("newer records refused and kept", &self.newer),
        ]
    }

    /// What an operator must look at: unreadable records, unverified processes, skipped
    /// entries, foreign runtime containers and records of a newer format, one line each (what `shimlessctl ps` prints).
    ///
    /// ```
    /// let mut r = task_service::daemon::Recovery::default();
    /// r.skipped.push("/run/shimless/state/default/x.json~: not a record".into());
    /// assert_eq!(r.problems(), vec!["skipped: /run/shimless/state/default/x.json~: not a record"]);
    /// ```
    pub fn problems(&self) -> Vec<String> {
        let lists = [
            ("unreadable record kept", &self.unreadable),
            ("not verified yet", &self.unverified),
            ("skipped", &self.skipped),
            ("runtime container left alone", &self.left_alone),
            ("newer record refused and kept", &self.newer),
        ];
        lists
            .into_iter()
            .flat_map(|(what, list)| list.iter().map(move |item| format!("{what}: {item}")))
            .collect()
    }

    /// Sorts every list, so that a report reads the same whatever the order of the records.
    fn sort(&mut self) {
        for list in [
            &mut self.adopted,
            &mut self.stopped,
            &mut self.lost,
            &mut self.finished_deletes,
            &mut self.orphans_removed,
            &mut self.unreadable,
            &mut self.rebuilt,
            &mut self.unverified,
            &mut self.skipped,
            &mut self.left_alone,
            &mut self.newer,
        ] {
            list.sort();
        }
        self.exited_while_down.sort();
    }
}

/// A runtime root to reconcile: the binary (and cgroup manager) to list it with, the namespace
/// it serves, and the ids it should hold.
pub(super) struct Root {
    pub(super) binary: PathBuf,
    pub(super) systemd_cgroup: bool,
    pub(super) ns: Namespace,
    ids: HashSet<String>,
}

/// Every runtime root to reconcile, keyed by root alone: the same root must not be listed twice
/// with different binaries.
pub(super) type Roots = HashMap<PathBuf, Root>;

/// A recovered process: its id (an exec's), state and identity.
type Process = (String, ProcessState, Option<ProcessIdentity>);

impl Daemon {
    /// Takes back the containers of a previous run from their records: live inits are
    /// re-opened by PID and start time (a PID now owned by another process is never adopted)
    /// and watched again; inits that exited while no daemon ran get their status from
    /// exitwatch and are reported once; interrupted creates are undone and interrupted deletes
    /// finished. One entry that cannot be taken back is skipped and reported, never fatal: the
    /// only error is a state directory that cannot be read. Call once, before serving; what
    /// needs a human stays visible in `Admin/List` ([`Recovery::problems`]).
    ///
    /// ```no_run
    /// # async fn f(daemon: task_service::daemon::Daemon) -> Result<(), tonic::Status> {
    /// let recovery = daemon.recover().await?;
    /// println!("{recovery}");
    /// # Ok(()) }
    /// ```
    pub async fn recover(&self) -> Result<Recovery, Status> {
        let mut report = Recovery::default();
        let listing = self
            .inner
            .store
            .listing()
            .map_err(|e| errors::internal("list the records", e))?;
        report
            .skipped
            .extend(listing.strays.iter().map(ToString::to_string));
        let mut roots = self.namespace_roots();
        let mut unreadable = Vec::new();
        let mut refused = HashSet::new();
        let mut listings = Listings::default();
        for (ns, id) in listing.records {
            let name = format!("{}/{}", ns.as_str(), id.as_str());
            let record: Record = match self.inner.store.load(&ns, &id) {
                Ok(Some(record)) => record,
                Ok(None) => continue,
                Err(e @ StateError::Newer { .. }) => {
                    report.newer.push(format!("{name}: {e}"));
                    refused.insert((ns, id.to_string()));
                    continue;
                }
                Err(e) => {
                    report.unreadable.push(format!("{name}: {e}"));
                    unreadable.push((ns, id));
                    continue;
                }
            };
            let noted = (ns.clone(), id.clone(), record.clone());
            let recovered = self
                .recover_record((ns, id), name.clone(), record, &mut listings, &mut report)
                .await;
            if let Err(e) = &recovered {
                report.skipped.push(format!("{name}: {}", e.message()));
            }
            note_root(&mut roots, &noted.0, &noted.1, &noted.2, recovered.is_ok());
        }
        for key in unreadable {
            self.rebuild(key, &mut roots, &mut report).await;
        }
        self.note_foreign(roots, &refused, &mut report).await;
        // Every record now says what the outboxes held as evidence of exits handed over.
        self.inner.forwarder.settle_all();
        report.sort();
        *lock(&self.inner.problems) = report.problems();
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
    /// `Delete` finished, or the container taken back. An error skips this record only.
    async fn recover_record(
        &self,
        key: Key,
        name: String,
        record: Record,
        listings: &mut Listings,
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
        let mut record = record;
        let created = record.container.init.state == ProcessState::Created;
        if created {
            // Killed during its Start: a `runc start` it ran may still be on its way, and the
            // runtime's state read before it ends would keep a running init recorded as
            // created (a later Start then fails against a running container).
            let _ = runc_driver::wait_for_runtime_calls(
                &record.runtime_root,
                id.as_str(),
                RUNTIME_CALLS_TIMEOUT,
            )
            .await;
        }
        let runtime = (
            record.runtime.clone(),
            record.runtime_root.clone(),
            record.systemd_cgroup,
        );
        let known = listings.of(&runc, runtime, id.as_str(), created).await;
        if let Some(state) = &known.state {
            started_while_down(&mut record, state);
        }
        let known = known.exists;
        let init = &record.container.init;
        let live = match init.state {
            ProcessState::Stopped(_) => Reopened::Gone,
            _ => reopen::reopen(record.identity.as_ref()).await,
        };
        let deleting = !known
            && matches!(live, Reopened::Gone)
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
    /// adopted and watched, kept to be verified later, or reported as exited while no daemon
    /// ran.
    pub(super) async fn take_back(
        &self,
        key: Key,
        name: String,
        record: Record,
        runc: Runc,
        live: Reopened,
        report: &mut Recovery,
    ) {
        // Only a live process needs its output FIFOs kept open (they were valid at Create).
        let endpoints = [&record.stdin, &record.stdout, &record.stderr].map(String::as_str);
        let keepalive = match (&live, Endpoint::parse_all(endpoints)) {
            (Reopened::Live(_), Ok([i, o, e])) => stdio::keepalive([&i, &o, &e]),
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
        let memory_cgroup = match &live {
            Reopened::Live(pidfd) => MemoryCgroup::of(pidfd.pid()),
            _ => None,
        };
        let entry = Entry::new(record, runc, keepalive, memory_cgroup);
        lock(&self.inner.containers).insert(key.clone(), entry.clone());
        self.recover_execs(&key, &entry, execs, report).await;
        match (init_state, live) {
            (ProcessState::Stopped(exit), _) => {
                let _ = entry.init_exit.set(exit).await;
                report.stopped.push(name);
            }
            (_, Reopened::Live(pidfd)) => {
                report.adopted.push(name);
                self.recover_probes(&key, &entry).await;
                self.watch_oom(&key, &entry);
                self.watch_exit(key, entry, None, pidfd);
            }
            (_, Reopened::Unknown(why)) => {
                report.unverified.push(format!("{name}: {why}"));
                self.reopen_later(key, entry, None, identity);
            }
            (_, Reopened::Gone) => {
                let (exit, found) =
                    self.exit_while_unwatched(&key, &entry, None, identity.as_ref());
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
    /// while no daemon ran are reported (from exitwatch, else lost), ones that cannot be
    /// re-opened for now are kept and re-opened later, and finished ones keep their exit for
    /// `Wait`. Execs added but never started are dropped (their spec was not persisted):
    /// containerd sees them as gone.
    async fn recover_execs(
        &self,
        key: &Key,
        entry: &Arc<Entry>,
        execs: Vec<Process>,
        report: &mut Recovery,
    ) {
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
                    match reopen::reopen(identity.as_ref()).await {
                        Reopened::Live(pidfd) => {
                            self.watch_exit(key.clone(), entry.clone(), Some(exec_id), pidfd)
                        }
                        Reopened::Unknown(why) => {
                            let name = format!("{}/{} exec {exec_id}", key.0, key.1);
                            report.unverified.push(format!("{name}: {why}"));
                            self.reopen_later(key.clone(), entry.clone(), Some(exec_id), identity);
                        }
                        Reopened::Gone => {
                            let exec = Some(exec_id.as_str());
                            let (exit, _) =
                                self.exit_while_unwatched(key, entry, exec, identity.as_ref());
                            self.exec_exited(key, entry, &exec_id, exit).await;
                        }
                    }
                }
            }
        }
    }

    /// Reports the runtime containers that no record names, and leaves them alone: shimless
    /// removes only what it has a record or an intent for (a root may be shared with another
    /// runtime, or be containerd's own). A root that cannot be listed is reported too.
    async fn note_foreign(
        &self,
        roots: Roots,
        refused: &HashSet<(Namespace, String)>,
        report: &mut Recovery,
    ) {
        for (root, known) in roots {
            let listed = match self.runc_for(&known.binary, &root, known.systemd_cgroup) {
                Ok(runc) => runc.list().await.map_err(|e| e.to_string()),
                Err(e) => Err(e.message().to_string()),
            };
            let states = match listed {
                Ok(states) => states,
                Err(e) => {
                    let what = format!("runtime root {} (not listed): {e}", root.display());
                    report.skipped.push(what);
                    continue;
                }
            };
            for state in states {
                let newer = refused.contains(&(known.ns.clone(), state.id.clone()));
                if !known.ids.contains(&state.id) && !newer {
                    report
                        .left_alone
                        .push(format!("{} in {}", state.id, root.display()));
                }
            }
        }
    }
}

/// Notes that `record`'s runtime root holds `id`. The binary of a record that was taken back
/// (`usable`) is the one to list the root with; a skipped record's (its binary may be gone)
/// only if no other names the root.
pub(super) fn note_root(
    roots: &mut Roots,
    ns: &Namespace,
    id: &ContainerId,
    record: &Record,
    usable: bool,
) {
    let root = roots
        .entry(record.runtime_root.clone())
        .or_insert_with(|| Root {
            binary: record.runtime.clone(),
            systemd_cgroup: record.systemd_cgroup,
            ns: ns.clone(),
            ids: HashSet::new(),
        });
    if usable {
        root.binary = record.runtime.clone();
        root.systemd_cgroup = record.systemd_cgroup;
    }
    root.ids.insert(id.to_string());
}

/// A `Start` the daemon died in may have started the init after its record was saved as
/// created: what the runtime says wins (a created init that runs is started, or paused).
fn started_while_down(record: &mut Record, state: &runc_driver::State) {
    use runc_driver::Status as Runtime;
    let init = &mut record.container.init;
    if init.state != ProcessState::Created {
        return;
    }
    if matches!(
        state.status,
        Runtime::Running | Runtime::Pausing | Runtime::Paused
    ) {
        let _ = init.start();
    }
    if matches!(state.status, Runtime::Pausing | Runtime::Paused) {
        let _ = init.pause();
    }
}
