//! [`Daemon`]: the containers of every namespace, and the Task service over them.

use super::errors;
use super::exits::{self, Exits, Source};
use super::record::Record;
use super::recovery::Recovery;
use crate::api::containerd::events as ev;
use crate::api::containerd::task::v3::task_server::Task;
use crate::api::containerd::task::v3::*;
use crate::api::containerd::v1::types::{ProcessInfo, Status as TaskStatus};
use crate::api::timestamp;
use crate::config::Config;
use crate::console::Console;
use crate::events::{EventBus, TaskEvent};
use crate::ids::{ContainerId, Namespace};
use crate::model::{Container, Exit, ProcessState};
use crate::options::{RuntimeOptions, host_has_systemd};
use crate::state::StateStore;
use crate::stdio::{self, Endpoint};
use pidfd::PidFd;
use runc_driver::{CreateOpts, Io, Runc, Stdio};
use std::collections::{HashMap, HashSet};
use std::os::fd::OwnedFd;
use std::path::PathBuf;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::SystemTime;
use tonic::{Request, Response, Status};

type Key = (Namespace, ContainerId);

/// One container the daemon manages.
struct Entry {
    record: Mutex<Record>,
    runc: Runc,
    /// Resolved once, when its init exits.
    init_exit: async_lock::OnceCell<Exit>,
    /// Held by `Start` from `runc start` until `TaskStart` is published, and taken by the exit
    /// watcher before it reports: an init that exits at once is still reported after its start.
    start_gate: async_lock::Mutex<()>,
    /// Readers that keep its output FIFOs from ever lacking one (see [`crate::stdio`]).
    _keepalive: Vec<OwnedFd>,
    /// Exec processes added but not started yet: their spec and stdio.
    pending_execs: Mutex<HashMap<String, PendingExec>>,
    /// Per exec: its exit once known (what `Wait` with an exec id awaits), and keepalives.
    execs: Mutex<HashMap<String, Arc<ExecSlot>>>,
    /// The init's terminal, if it has one.
    console: Mutex<Option<Console>>,
    /// Orders saves of the record with each other and with `Delete`'s removal; holds the
    /// sequence number of the last snapshot written, so an older snapshot never overwrites a
    /// newer one.
    save_lock: async_lock::Mutex<u64>,
    /// Numbers snapshots of the record, taken under its lock.
    snapshots: std::sync::atomic::AtomicU64,
    /// The init's memory cgroup, read when its exit is reported (`TaskOOM`).
    memory_cgroup: Option<super::oom::MemoryCgroup>,
}

/// A copy of a container's record, numbered in the order its changes were made.
struct Snapshot {
    seq: u64,
    record: Record,
}

/// An exec between `Exec` and `Start`.
struct PendingExec {
    process: oci_spec::runtime::Process,
    stdio: [String; 3],
    terminal: bool,
}

/// A started (or at least added) exec's exit and stdio keepalive.
#[derive(Default)]
struct ExecSlot {
    exit: async_lock::OnceCell<Exit>,
    keepalive: Mutex<Vec<OwnedFd>>,
    console: Mutex<Option<Console>>,
}

/// Every container of the node, served as containerd's Task API.
///
/// ```no_run
/// use std::sync::Arc;
/// use task_service::{config::Config, grpc, service::Daemon};
/// let ex = Arc::new(smol::Executor::new());
/// let config = Config::default();
/// let daemon = Daemon::new(config.clone(), ex.clone())?;
/// smol::block_on(ex.run(async {
///     let listener = grpc::listen::bind(&config.socket)?;
///     grpc::serve(listener, daemon.into_server(), ex.clone(), grpc::ServeConfig::default()).await
/// }))?;
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Clone)]
pub struct Daemon {
    inner: Arc<Inner>,
}

struct Inner {
    config: Config,
    store: StateStore,
    events: EventBus,
    ex: Arc<smol::Executor<'static>>,
    containers: Mutex<HashMap<Key, Arc<Entry>>>,
    runtimes: Mutex<HashMap<(PathBuf, PathBuf, bool), Runc>>,
    exits: Exits,
    warnings: Vec<String>,
    /// Keys with a `Create` in progress.
    creating: Mutex<HashSet<Key>>,
    /// Where each container's events go (containerd's address, from the shim's `start`).
    publishers: Arc<super::forward::Publishers>,
}

/// A key claimed by a `Create` in progress; released when dropped.
struct Reservation {
    daemon: Daemon,
    key: Key,
}

impl Drop for Reservation {
    fn drop(&mut self) {
        lock(&self.daemon.inner.creating).remove(&self.key);
    }
}

impl Entry {
    fn new(
        record: Record,
        runc: Runc,
        keepalive: Vec<OwnedFd>,
        memory_cgroup: Option<super::oom::MemoryCgroup>,
    ) -> Arc<Entry> {
        Arc::new(Entry {
            record: Mutex::new(record),
            runc,
            init_exit: async_lock::OnceCell::new(),
            start_gate: async_lock::Mutex::new(()),
            _keepalive: keepalive,
            pending_execs: Mutex::new(HashMap::new()),
            execs: Mutex::new(HashMap::new()),
            console: Mutex::new(None),
            save_lock: async_lock::Mutex::new(0),
            snapshots: std::sync::atomic::AtomicU64::new(0),
            memory_cgroup,
        })
    }
}

impl std::fmt::Debug for Daemon {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Daemon")
            .field("socket", &self.inner.config.socket)
            .finish_non_exhaustive()
    }
}

impl Daemon {
    /// A daemon with no containers yet (call [`Daemon::recover`] next to take back those of a
    /// previous run). Makes this process a child subreaper, so container inits become its
    /// children (and their exit statuses its to collect); loads exitwatch under the configured
    /// pin directory (see [`Daemon::warnings`] if it could not); runs exit watchers on `ex`.
    pub fn new(config: Config, ex: Arc<smol::Executor<'static>>) -> std::io::Result<Daemon> {
        rustix::process::set_child_subreaper(rustix::process::Pid::from_raw(1))?;
        let (exits, warning) = Exits::open(&config.bpf_pin_dir);
        Ok(Daemon {
            inner: Arc::new(Inner {
                store: StateStore::new(&config.state_dir),
                events: EventBus::new(config.event_capacity),
                publishers: Arc::new(super::forward::Publishers::open(&config.state_dir)),
                config,
                ex,
                containers: Mutex::new(HashMap::new()),
                runtimes: Mutex::new(HashMap::new()),
                exits,
                warnings: warning.into_iter().collect(),
                creating: Mutex::new(HashSet::new()),
            }),
        })
    }

    /// What the daemon could not set up but runs without (today: exitwatch, when the kernel or
    /// privileges do not allow it).
    pub fn warnings(&self) -> &[String] {
        &self.inner.warnings
    }

    /// Whether exit codes are recorded in the kernel (exitwatch loaded).
    pub fn kernel_recording(&self) -> bool {
        self.inner.exits.kernel_recording()
    }

    /// The daemon's event stream.
    pub fn events(&self) -> &EventBus {
        &self.inner.events
    }

    /// Starts forwarding task events to containerd (`Events/Forward` on the address each
    /// container's shim `start` registered with `shimless.v1.Admin/RegisterPublisher`), in
    /// order, retried while containerd is away. Call it before [`Daemon::recover`], so that the
    /// exits recovered there reach containerd too.
    ///
    /// ```no_run
    /// # async fn f(daemon: task_service::service::Daemon) -> Result<(), tonic::Status> {
    /// daemon.forward_events();
    /// println!("{}", daemon.recover().await?);
    /// # Ok(()) }
    /// ```
    pub fn forward_events(&self) {
        super::forward::spawn(
            &self.inner.events,
            self.inner.publishers.clone(),
            &self.inner.ex,
        );
    }

    /// The whole gRPC surface for [`grpc::serve`](crate::grpc::serve): the Task service with
    /// the configured message size limit, and `Events/Subscribe` on the daemon's events.
    pub fn into_router(self) -> super::Router {
        let events = super::subscribe::Events {
            bus: self.inner.events.clone(),
        };
        let admin = crate::api::shimless::v1::admin_server::AdminServer::new(self.clone());
        super::Router {
            admin,
            task: self.into_server(),
            events: crate::api::containerd::services::events::v1::events_server::EventsServer::new(
                events,
            ),
        }
    }

    /// The tonic server for [`grpc::serve`](crate::grpc::serve), with the configured message
    /// size limit.
    pub fn into_server(self) -> task_server::TaskServer<Daemon> {
        let limit = self.inner.config.max_message_bytes;
        task_server::TaskServer::new(self).max_decoding_message_size(limit)
    }

    /// The runtime root of a namespace: the container's `Root` option, else the configured
    /// per-namespace directory.
    fn runtime_root(&self, ns: &Namespace, opts: &RuntimeOptions) -> PathBuf {
        opts.root
            .clone()
            .unwrap_or_else(|| self.inner.config.runc_root.join(ns.as_str()))
    }

    /// The driver for a runtime binary and root, made once and shared.
    fn runc(&self, root: &std::path::Path, opts: &RuntimeOptions) -> Result<Runc, Status> {
        let binary = PathBuf::from(
            opts.binary
                .clone()
                .unwrap_or_else(|| self.inner.config.runtime.clone()),
        );
        self.runc_for(&binary, root, opts.systemd_cgroup)
    }

    fn runc_for(
        &self,
        binary: &std::path::Path,
        root: &std::path::Path,
        systemd_cgroup: bool,
    ) -> Result<Runc, Status> {
        let key = (binary.to_owned(), root.to_owned(), systemd_cgroup);
        let mut runtimes = lock(&self.inner.runtimes);
        if let Some(runc) = runtimes.get(&key) {
            return Ok(runc.clone());
        }
        let runc = Runc::builder()
            .binary(binary)
            .root(root)
            .systemd_cgroup(systemd_cgroup)
            .build()
            .map_err(errors::runc)?;
        runtimes.insert(key, runc.clone());
        Ok(runc)
    }

    fn entry(&self, key: &Key) -> Result<Arc<Entry>, Status> {
        let containers = lock(&self.inner.containers);
        containers.get(key).cloned().ok_or_else(|| {
            Status::not_found(format!(
                "no container {:?} in namespace {:?}",
                key.1.as_str(),
                key.0.as_str()
            ))
        })
    }

    fn save(&self, key: &Key, record: &Record) -> Result<(), Status> {
        self.inner
            .store
            .save(&key.0, &key.1, record)
            .map_err(|e| errors::internal("save the record", e))
    }

    /// Takes a numbered copy of the record; call with its lock held (pass the guard's target).
    fn snapshot(entry: &Entry, record: &Record) -> Snapshot {
        Snapshot {
            seq: entry
                .snapshots
                .fetch_add(1, std::sync::atomic::Ordering::SeqCst)
                + 1,
            record: record.clone(),
        }
    }

    /// Saves a snapshot unless a newer one was saved already or the container was deleted
    /// meanwhile; on the blocking pool (a save fsyncs twice).
    async fn persist(&self, key: &Key, entry: &Entry, snapshot: Snapshot) -> Result<bool, Status> {
        let mut written = entry.save_lock.lock().await;
        if !self.is_current(key, entry) || snapshot.seq <= *written {
            return Ok(false);
        }
        self.save_off_executor(key, snapshot.record).await?;
        *written = snapshot.seq;
        Ok(true)
    }

    /// Whether `entry` is still the container under `key` (not deleted meanwhile).
    fn is_current(&self, key: &Key, entry: &Entry) -> bool {
        lock(&self.inner.containers)
            .get(key)
            .is_some_and(|e| std::ptr::eq(Arc::as_ptr(e), entry))
    }

    /// Saves on the blocking pool: a save fsyncs twice, and a burst of exits must not queue
    /// behind each other's fsyncs on the executor's threads.
    async fn save_off_executor(&self, key: &Key, record: Record) -> Result<(), Status> {
        let store = self.inner.store.clone();
        let (ns, id) = key.clone();
        smol::unblock(move || store.save(&ns, &id, &record))
            .await
            .map_err(|e| errors::internal("save the record", e))
    }

    fn publish(&self, ns: &Namespace, event: TaskEvent) {
        self.inner.events.publish(ns.clone(), event);
    }

    /// Waits for a process (the init, or the exec `exec_id`) to exit, resolves its status
    /// through the exit pipeline, and records and reports it.
    fn watch_exit(&self, key: Key, entry: Arc<Entry>, exec_id: Option<String>, pidfd: PidFd) {
        let daemon = self.clone();
        self.inner
            .ex
            .spawn(async move {
                let _ = pidfd.exited().await;
                let identity = {
                    let record = lock(&entry.record);
                    match &exec_id {
                        None => record.identity,
                        Some(exec_id) => record.exec_identities.get(exec_id).copied(),
                    }
                };
                let cookie = exits::cookie(key.0.as_str(), key.1.as_str(), exec_id.as_deref());
                let (status, source) = daemon
                    .inner
                    .exits
                    .resolve(&pidfd, identity.as_ref(), cookie)
                    .await;
                if source == Source::Lost {
                    eprintln!(
                        "shimless: the exit status of {}/{}{} (pid {}) is lost: reported as 255",
                        key.0.as_str(),
                        key.1.as_str(),
                        exec_id
                            .as_deref()
                            .map(|e| format!(" exec {e}"))
                            .unwrap_or_default(),
                        pidfd.pid()
                    );
                }
                let exit = Exit {
                    status,
                    at: SystemTime::now(),
                };
                match exec_id {
                    None => daemon.init_exited(&key, &entry, exit).await,
                    Some(exec_id) => daemon.exec_exited(&key, &entry, &exec_id, exit).await,
                }
            })
            .detach();
    }

    /// Records an init exit and reports what the model releases: each exit is published
    /// first, then saved, and only then dropped from exitwatch, so a crash anywhere in between
    /// reports it again after the restart rather than never.
    async fn init_exited(&self, key: &Key, entry: &Entry, exit: Exit) {
        let _gate = entry.start_gate.lock().await;
        let (reports, snapshot) = {
            let mut record = lock(&entry.record);
            let reports = record.container.init_exited(exit);
            (reports, Self::snapshot(entry, &record))
        };
        let pid = snapshot.record.container.init.pid;
        // Before the exit is published (containerd deletes the task, and runc its cgroup, on
        // it): OOM kills in the container's cgroup make it `OOMKilled` for CRI.
        if let Some(kills) = entry.memory_cgroup.as_ref().and_then(|m| m.oom_kills())
            && kills > 0
        {
            self.publish(
                &key.0,
                TaskEvent::Oom(ev::TaskOom {
                    container_id: key.1.to_string(),
                }),
            );
        }
        self.report_exits(key, entry, &reports).await;
        // Waiters are released before the save (it fsyncs); a Delete may come in between, and
        // a container deleted meanwhile (or a created one deleted with --force, which exits
        // after its record is gone) is not written back.
        if let Ok(true) = self.persist(key, entry, snapshot).await
            && let Some(pid) = pid
        {
            self.inner.exits.forget(pid);
        }
    }

    /// Records an exec exit and reports it (with the container's held init exit, if this was
    /// the last live exec).
    async fn exec_exited(&self, key: &Key, entry: &Entry, exec_id: &str, exit: Exit) {
        let (reports, snapshot) = {
            let mut record = lock(&entry.record);
            let reports = record
                .container
                .exec_exited(exec_id, exit)
                .unwrap_or_default();
            (reports, Self::snapshot(entry, &record))
        };
        let pid = snapshot
            .record
            .container
            .execs
            .get(exec_id)
            .and_then(|p| p.pid);
        self.report_exits(key, entry, &reports).await;
        if let Ok(true) = self.persist(key, entry, snapshot).await
            && let Some(pid) = pid
        {
            self.inner.exits.forget(pid);
        }
    }

    /// Publishes exits the model released, and resolves their waiters.
    async fn report_exits(&self, key: &Key, entry: &Entry, reports: &[crate::model::ExitReport]) {
        for report in reports {
            match &report.exec_id {
                None => {
                    let _ = entry.init_exit.set(report.exit).await;
                }
                Some(exec_id) => {
                    let slot = lock(&entry.execs).get(exec_id).cloned();
                    if let Some(slot) = slot {
                        let _ = slot.exit.set(report.exit).await;
                        lock(&slot.keepalive).clear();
                    }
                }
            }
            self.publish(
                &key.0,
                TaskEvent::Exit(ev::TaskExit {
                    container_id: key.1.to_string(),
                    id: report.exec_id.clone().unwrap_or_else(|| key.1.to_string()),
                    pid: report.pid.unwrap_or(0) as u32,
                    exit_status: report.exit.code_for_containerd(),
                    exited_at: Some(timestamp(report.exit.at)),
                    exit_reason: 0,
                }),
            );
        }
    }

    /// Starts a pending exec: `runc exec --detach`, pidfd, kernel tracking, record, event.
    async fn start_exec(
        &self,
        key: &Key,
        entry: &Arc<Entry>,
        exec_id: &str,
    ) -> Result<u32, Status> {
        let pending = lock(&entry.pending_execs).remove(exec_id).ok_or_else(|| {
            let started = lock(&entry.record).container.exec(exec_id).is_ok();
            if started {
                Status::failed_precondition(format!("exec {exec_id:?} was started already"))
            } else {
                Status::not_found(format!("container has no exec process {exec_id:?}"))
            }
        })?;
        let [i, o, e] = Endpoint::parse_all(pending.stdio.each_ref().map(String::as_str))
            .map_err(|e| Status::invalid_argument(e.to_string()))?;
        let opened =
            stdio::open([&i, &o, &e]).map_err(|e| Status::invalid_argument(e.to_string()))?;
        let (stdio, for_console) = split_stdio(opened.container, pending.terminal);
        let opts = runc_driver::ExecOpts {
            detach: true,
            console: pending.terminal,
            stdio,
        };
        let mut executed = entry
            .runc
            .exec(key.1.as_str(), &pending.process, opts)
            .await
            .map_err(errors::runc)?;
        let console = match (for_console, executed.console.take()) {
            (Some((stdin, stdout)), Some(master)) => Some(
                Console::attach(master, stdin, stdout, &self.inner.ex)
                    .map_err(|e| errors::internal("attach the exec's terminal", e))?,
            ),
            _ => None,
        };
        let pid = executed
            .pid
            .ok_or_else(|| Status::internal("runc exec --detach gave no pid"))?;
        let pidfd =
            PidFd::open(pid).map_err(|e| errors::internal("open a pidfd for the exec", e))?;
        let identity = pidfd.identity().ok();
        if let Some(identity) = &identity {
            let cookie = exits::cookie(key.0.as_str(), key.1.as_str(), Some(exec_id));
            if let Err(e) = self.inner.exits.track(identity, cookie) {
                eprintln!(
                    "shimless: exec {exec_id} of {}: not tracked in the kernel: {e}",
                    key.1.as_str()
                );
            }
        }
        let slot = lock(&entry.execs)
            .entry(exec_id.to_string())
            .or_default()
            .clone();
        *lock(&slot.keepalive) = opened.keepalive;
        *lock(&slot.console) = console;
        let snapshot = {
            let mut record = lock(&entry.record);
            if let Ok(process) = record.container.execs.get_mut(exec_id).ok_or(()) {
                process.pid = Some(pid);
            }
            record
                .container
                .start_exec(exec_id)
                .map_err(errors::refused)?;
            if let Some(identity) = identity {
                record.exec_identities.insert(exec_id.to_string(), identity);
            }
            Self::snapshot(entry, &record)
        };
        self.persist(key, entry, snapshot).await?;
        self.publish(
            &key.0,
            TaskEvent::ExecStarted(ev::TaskExecStarted {
                container_id: key.1.to_string(),
                exec_id: exec_id.to_string(),
                pid: pid as u32,
            }),
        );
        self.watch_exit(key.clone(), entry.clone(), Some(exec_id.to_string()), pidfd);
        Ok(pid as u32)
    }

    /// Claims `key` for a `Create` in progress: refused if the container exists or another
    /// `Create` of it is under way (whose undo must never remove this one's container).
    fn reserve(&self, key: &Key) -> Result<Reservation, Status> {
        let exists = || {
            Status::already_exists(format!(
                "container {:?} exists in namespace {:?}",
                key.1.as_str(),
                key.0.as_str()
            ))
        };
        if lock(&self.inner.containers).contains_key(key) {
            return Err(exists());
        }
        if !lock(&self.inner.creating).insert(key.clone()) {
            return Err(exists());
        }
        Ok(Reservation {
            daemon: self.clone(),
            key: key.clone(),
        })
    }

    /// Undoes a failed `Create`: the runtime's container (if it made one), the rootfs mounts,
    /// the record.
    async fn abort_create(&self, key: &Key, runc: &Runc, record: &Record, created: bool) {
        if created {
            let _ = runc.delete(key.1.as_str(), true).await;
        }
        if record.rootfs_mounted {
            crate::rootfs::unmount_all(&record.bundle);
        }
        let _ = self.inner.store.remove(&key.0, &key.1);
    }

    /// Runs `f` on the terminal of the init (`exec_id` empty) or of an exec.
    fn with_console<T>(
        &self,
        entry: &Entry,
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
            let console = lock(&entry.console);
            return console.as_ref().map(f).ok_or_else(no_terminal);
        }
        let slot = lock(&entry.execs).get(exec_id).cloned().ok_or_else(|| {
            Status::not_found(format!("container has no exec process {exec_id:?}"))
        })?;
        let console = lock(&slot.console);
        console.as_ref().map(f).ok_or_else(no_terminal)
    }

    /// Takes back a recovered container's execs: live ones are watched again, ones that exited
    /// while no daemon ran are reported (from exitwatch, else lost), and finished ones keep
    /// their exit for `Wait`. Execs added but never started are dropped (their spec was not
    /// persisted): containerd sees them as gone.
    async fn recover_execs(
        &self,
        key: &Key,
        entry: &Arc<Entry>,
        execs: Vec<(String, ProcessState, Option<pidfd::ProcessIdentity>)>,
    ) {
        for (exec_id, state, identity) in execs {
            let slot: Arc<ExecSlot> = Arc::default();
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

    /// Takes back the containers of a previous run from their records: live inits are
    /// re-opened by PID and start time (a PID now owned by another process is never adopted)
    /// and watched again; inits that exited while no daemon ran get their status from
    /// exitwatch and are reported once; interrupted deletes are finished; runtime containers
    /// without a record are removed. Call once, before serving.
    ///
    /// ```no_run
    /// # async fn f(daemon: task_service::service::Daemon) -> Result<(), tonic::Status> {
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
        // Every runtime root to reconcile, with the namespace it serves and the ids it should hold.
        // Keyed by root alone: the same root must not be listed twice with different binaries.
        let mut roots: HashMap<PathBuf, (PathBuf, bool, Namespace, HashSet<String>)> =
            HashMap::new();
        if let Ok(dirs) = std::fs::read_dir(&self.inner.config.runc_root) {
            for dir in dirs.flatten() {
                if let Some(ns) = dir
                    .file_name()
                    .to_str()
                    .and_then(|n| Namespace::new(n).ok())
                {
                    let binary = PathBuf::from(&self.inner.config.runtime);
                    roots.insert(dir.path(), (binary, false, ns, HashSet::new()));
                }
            }
        }
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
            let runc =
                self.runc_for(&record.runtime, &record.runtime_root, record.systemd_cgroup)?;
            let root = roots.entry(record.runtime_root.clone()).or_insert_with(|| {
                (
                    record.runtime.clone(),
                    record.systemd_cgroup,
                    ns.clone(),
                    HashSet::new(),
                )
            });
            // The binary that made the records is the one to list the root with.
            (root.0, root.1) = (record.runtime.clone(), record.systemd_cgroup);
            root.3.insert(id.to_string());
            if record.creating {
                // Killed during its Create: the runtime call it made may still be running.
                wait_for_runtime_calls(&record.runtime_root, id.as_str()).await;
                let _ = runc.delete(id.as_str(), true).await;
                self.drop_record(&ns, &id, &record)?;
                report
                    .orphans_removed
                    .push(format!("{name} (create interrupted)"));
                continue;
            }
            let known = !matches!(
                runc.state(id.as_str()).await,
                Err(runc_driver::Error::NotFound { .. })
            );
            let key = (ns.clone(), id.clone());
            let init = record.container.init.clone();
            let live = match init.state {
                ProcessState::Stopped(_) => None,
                _ => record.identity.and_then(|i| PidFd::reopen(&i).ok()),
            };
            let deleting = !known
                && live.is_none()
                && matches!(init.state, ProcessState::Stopped(_) | ProcessState::Created);
            if deleting {
                self.drop_record(&ns, &id, &record)?;
                report.finished_deletes.push(name);
                continue;
            }
            // Only a live process needs its output FIFOs kept open (they were valid at Create).
            let endpoints = [&record.stdin, &record.stdout, &record.stderr].map(String::as_str);
            let keepalive = match (&live, Endpoint::parse_all(endpoints)) {
                (Some(_), Ok([i, o, e])) => stdio::keepalive([&i, &o, &e]),
                _ => Vec::new(),
            };
            let identity = record.identity;
            let execs: Vec<_> = record
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
                .and_then(|pidfd| super::oom::MemoryCgroup::of(pidfd.pid()));
            let entry = Entry::new(record, runc, keepalive, memory_cgroup);
            lock(&self.inner.containers).insert(key.clone(), entry.clone());
            self.recover_execs(&key, &entry, execs).await;
            match (init.state, live) {
                (ProcessState::Stopped(exit), _) => {
                    let _ = entry.init_exit.set(exit).await;
                    report.stopped.push(name);
                }
                (_, Some(pidfd)) => {
                    report.adopted.push(name);
                    self.watch_exit(key, entry, None, pidfd);
                }
                (_, None) => {
                    let cookie = exits::cookie(ns.as_str(), id.as_str(), None);
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
        for (root, (binary, systemd, ns, ids)) in roots {
            let runc = self.runc_for(&binary, &root, systemd)?;
            let Ok(states) = runc.list().await else {
                continue;
            };
            for state in states {
                if ids.contains(&state.id) {
                    continue;
                }
                if runc.delete(&state.id, true).await.is_ok() {
                    report
                        .orphans_removed
                        .push(format!("{}/{}", ns.as_str(), state.id));
                }
            }
        }
        for list in [
            &mut report.adopted,
            &mut report.stopped,
            &mut report.lost,
            &mut report.finished_deletes,
            &mut report.orphans_removed,
        ] {
            list.sort();
        }
        report.exited_while_down.sort();
        Ok(report)
    }

    /// Forgets a container whose runtime side is gone: its rootfs mounts and its record.
    fn drop_record(&self, ns: &Namespace, id: &ContainerId, record: &Record) -> Result<(), Status> {
        if record.rootfs_mounted {
            crate::rootfs::unmount_all(&record.bundle);
        }
        self.inner
            .store
            .remove(ns, id)
            .map_err(|e| errors::internal("remove the record", e))
    }

    /// Pause or resume: checked against the model, done by the runtime, then recorded and
    /// published.
    async fn set_paused(&self, key: Key, paused: bool) -> Result<(), Status> {
        let entry = self.entry(&key)?;
        let change = |p: &mut crate::model::Process| if paused { p.pause() } else { p.resume() };
        {
            let record = lock(&entry.record);
            change(&mut record.container.init.clone()).map_err(errors::refused)?;
        }
        let id = key.1.as_str();
        let done = if paused {
            entry.runc.pause(id).await
        } else {
            entry.runc.resume(id).await
        };
        done.map_err(errors::runc)?;
        let snapshot = {
            let mut record = lock(&entry.record);
            let _ = change(&mut record.container.init);
            Self::snapshot(&entry, &record)
        };
        self.persist(&key, &entry, snapshot).await?;
        let container_id = key.1.to_string();
        let event = if paused {
            TaskEvent::Paused(ev::TaskPaused { container_id })
        } else {
            TaskEvent::Resumed(ev::TaskResumed { container_id })
        };
        self.publish(&key.0, event);
        Ok(())
    }
}

/// Locks a mutex; a panic while it was held leaves the data usable (every critical section here
/// is a plain read or write), so poisoning is not an error.
pub(super) fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}

fn key_of<T>(req: &Request<T>, id: &str) -> Result<Key, Status> {
    let ns = req
        .metadata()
        .get("containerd-namespace")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("default");
    let ns = Namespace::new(ns).map_err(|e| Status::invalid_argument(e.to_string()))?;
    let id = ContainerId::new(id).map_err(|e| Status::invalid_argument(e.to_string()))?;
    Ok((ns, id))
}

/// Waits (up to 30 s) until no process runs the runtime on container `id` under `root`: a
/// killed daemon's `runc create` goes on without it, and removing its container before it is
/// done would leave a container made just after.
async fn wait_for_runtime_calls(root: &std::path::Path, id: &str) {
    let root = root.as_os_str().as_encoded_bytes().to_vec();
    let id = id.as_bytes().to_vec();
    let busy = move || {
        std::fs::read_dir("/proc")
            .into_iter()
            .flatten()
            .flatten()
            .any(|entry| {
                let cmdline = std::fs::read(entry.path().join("cmdline")).unwrap_or_default();
                let args: Vec<&[u8]> = cmdline.split(|b| *b == 0).collect();
                args.contains(&root.as_slice()) && args.contains(&id.as_slice())
            })
    };
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    while busy() && std::time::Instant::now() < deadline {
        async_io::Timer::after(std::time::Duration::from_millis(20)).await;
    }
}

/// The process's stdio from the opened streams: the streams themselves, or with a terminal
/// `/dev/null` (the process's stdio is the pty) and the stdin and stdout FIFOs for the copier.
type ConsoleEnds = Option<(Option<OwnedFd>, Option<OwnedFd>)>;

fn split_stdio(opened: [Option<OwnedFd>; 3], terminal: bool) -> (Stdio, ConsoleEnds) {
    let [i, o, e] = opened;
    if terminal {
        return (Stdio::default(), Some((i, o)));
    }
    let io = |fd: Option<OwnedFd>| fd.map_or(Io::Null, Io::Fd);
    let stdio = Stdio {
        stdin: io(i),
        stdout: io(o),
        stderr: io(e),
    };
    (stdio, None)
}

fn task_status(state: &ProcessState) -> TaskStatus {
    match state {
        ProcessState::Created => TaskStatus::Created,
        ProcessState::Running => TaskStatus::Running,
        ProcessState::Paused => TaskStatus::Paused,
        ProcessState::Stopped(_) => TaskStatus::Stopped,
    }
}

fn unimplemented<T>(what: &str) -> Result<Response<T>, Status> {
    Err(Status::unimplemented(format!(
        "{what} is not supported by shimless yet"
    )))
}

#[tonic::async_trait]
impl Task for Daemon {
    async fn create(
        &self,
        req: Request<CreateTaskRequest>,
    ) -> Result<Response<CreateTaskResponse>, Status> {
        let key = key_of(&req, &req.get_ref().id)?;
        let r = req.into_inner();
        crate::rootfs::check(&r.rootfs).map_err(|e| Status::invalid_argument(e.to_string()))?;
        if !r.checkpoint.is_empty() {
            return unimplemented("restoring from a checkpoint");
        }
        let bundle = PathBuf::from(&r.bundle);
        if !bundle.is_absolute() {
            return Err(Status::invalid_argument(format!(
                "bundle {:?} must be an absolute path",
                r.bundle
            )));
        }
        // The spec is read before anything runs: a bundle without a valid config.json, or whose
        // process disagrees with the request about a terminal, is refused here with the reason
        // rather than by the runtime halfway through.
        let config = bundle.join("config.json");
        let spec = oci_spec::runtime::Spec::load(&config).map_err(|e| {
            Status::invalid_argument(format!(
                "bundle {:?}: {} is not a usable OCI spec: {e}",
                r.bundle,
                config.display()
            ))
        })?;
        let spec_terminal = spec
            .process()
            .as_ref()
            .and_then(|p| p.terminal())
            .unwrap_or(false);
        if spec_terminal != r.terminal {
            return Err(Status::invalid_argument(format!(
                "bundle {:?}: the request says terminal={} but config.json's process.terminal is {}",
                r.bundle, r.terminal, spec_terminal
            )));
        }
        let _reservation = self.reserve(&key)?;
        let opts = RuntimeOptions::from_any(r.options.as_ref(), host_has_systemd())
            .map_err(|e| Status::invalid_argument(e.to_string()))?;
        let [stdin, stdout, stderr] =
            Endpoint::parse_all([r.stdin.as_str(), r.stdout.as_str(), r.stderr.as_str()])
                .map_err(|e| Status::invalid_argument(e.to_string()))?;
        let opened = stdio::open_as([&stdin, &stdout, &stderr], opts.io_owner())
            .map_err(|e| Status::invalid_argument(e.to_string()))?;
        let (stdio, for_console) = split_stdio(opened.container, r.terminal);
        let runtime_root = self.runtime_root(&key.0, &opts);
        let runc = self.runc(&runtime_root, &opts)?;
        let create = CreateOpts {
            no_pivot: opts.no_pivot_root,
            no_new_keyring: opts.no_new_keyring,
            console: r.terminal,
            stdio,
            ..CreateOpts::default()
        };
        let rootfs_mounted = !r.rootfs.is_empty();
        // The intent first: a daemon killed from here until the full record is saved leaves a
        // `creating` record, and the next daemon removes whatever the runtime made of it.
        let mut record = Record {
            bundle: bundle.clone(),
            stdin: r.stdin.clone(),
            stdout: r.stdout.clone(),
            stderr: r.stderr.clone(),
            terminal: r.terminal,
            runtime: runc.binary().to_owned(),
            runtime_root,
            rootfs_mounted,
            systemd_cgroup: opts.systemd_cgroup,
            creating: true,
            identity: None,
            container: Container::new(None),
            exec_identities: Default::default(),
            created_at: SystemTime::now(),
        };
        self.save(&key, &record)?;
        if rootfs_mounted && let Err(e) = crate::rootfs::mount_all(&bundle, &r.rootfs) {
            self.abort_create(&key, &runc, &record, false).await;
            return Err(Status::invalid_argument(e.to_string()));
        }
        let mut created = match runc.create(key.1.as_str(), &bundle, create).await {
            Ok(created) => created,
            Err(e) => {
                self.abort_create(&key, &runc, &record, false).await;
                return Err(errors::runc(e));
            }
        };
        let console = match (for_console, created.console.take()) {
            (Some((stdin, stdout)), Some(master)) => {
                match Console::attach(master, stdin, stdout, &self.inner.ex) {
                    Ok(console) => Some(console),
                    Err(e) => {
                        self.abort_create(&key, &runc, &record, true).await;
                        return Err(errors::internal("attach the terminal", e));
                    }
                }
            }
            _ => None,
        };
        let pidfd = match PidFd::open(created.pid) {
            Ok(pidfd) => pidfd,
            Err(e) => {
                self.abort_create(&key, &runc, &record, true).await;
                return Err(errors::internal("open a pidfd for the init", e));
            }
        };
        let identity = pidfd.identity().ok();
        let cookie = exits::cookie(key.0.as_str(), key.1.as_str(), None);
        let tracked = match &identity {
            Some(identity) => self.inner.exits.track(identity, cookie),
            None => Err("the init is already gone".into()),
        };
        if let Err(e) = tracked {
            self.abort_create(&key, &runc, &record, true).await;
            return Err(Status::resource_exhausted(format!(
                "cannot record the exit of container {:?} in the kernel ({e}); it was removed",
                key.1.as_str()
            )));
        }
        record.creating = false;
        record.identity = identity;
        record.container = Container::new(Some(created.pid));
        if let Err(e) = self.save(&key, &record) {
            // Nothing may be left half-made: undo the create.
            self.abort_create(&key, &runc, &record, true).await;
            return Err(e);
        }
        let memory_cgroup = super::oom::MemoryCgroup::of(created.pid);
        let entry = Entry::new(record, runc, opened.keepalive, memory_cgroup);
        *lock(&entry.console) = console;
        lock(&self.inner.containers).insert(key.clone(), entry.clone());
        self.publish(
            &key.0,
            TaskEvent::Create(ev::TaskCreate {
                container_id: key.1.to_string(),
                bundle: r.bundle,
                rootfs: Vec::new(),
                io: Some(ev::TaskIo {
                    stdin: r.stdin,
                    stdout: r.stdout,
                    stderr: r.stderr,
                    terminal: r.terminal,
                }),
                checkpoint: String::new(),
                pid: created.pid as u32,
            }),
        );
        // Only now, so that even an init that dies at once is reported after its create.
        self.watch_exit(key.clone(), entry, None, pidfd);
        Ok(Response::new(CreateTaskResponse {
            pid: created.pid as u32,
        }))
    }

    async fn start(&self, req: Request<StartRequest>) -> Result<Response<StartResponse>, Status> {
        let key = key_of(&req, &req.get_ref().id)?;
        let entry = self.entry(&key)?;
        let exec_id = &req.get_ref().exec_id;
        if !exec_id.is_empty() {
            let pid = self.start_exec(&key, &entry, exec_id).await?;
            return Ok(Response::new(StartResponse { pid }));
        }
        let pid = {
            let record = lock(&entry.record);
            let mut check = record.container.init.clone();
            check.start().map_err(errors::refused)?;
            record.container.init.pid.unwrap_or(0)
        };
        let _gate = entry.start_gate.lock().await;
        entry
            .runc
            .start(key.1.as_str())
            .await
            .map_err(errors::runc)?;
        let snapshot = {
            let mut record = lock(&entry.record);
            // The init may already have exited and been recorded; only a created one starts.
            if record.container.init.state == ProcessState::Created {
                let _ = record.container.init.start();
            }
            Self::snapshot(&entry, &record)
        };
        self.persist(&key, &entry, snapshot).await?;
        self.publish(
            &key.0,
            TaskEvent::Start(ev::TaskStart {
                container_id: key.1.to_string(),
                pid: pid as u32,
            }),
        );
        Ok(Response::new(StartResponse { pid: pid as u32 }))
    }

    async fn state(&self, req: Request<StateRequest>) -> Result<Response<StateResponse>, Status> {
        let key = key_of(&req, &req.get_ref().id)?;
        let exec_id = req.get_ref().exec_id.clone();
        let entry = self.entry(&key)?;
        let record = lock(&entry.record);
        let process = if exec_id.is_empty() {
            &record.container.init
        } else {
            record.container.exec(&exec_id).map_err(errors::refused)?
        };
        let exit = process.exit();
        Ok(Response::new(StateResponse {
            id: key.1.to_string(),
            bundle: record.bundle.display().to_string(),
            pid: process.pid.unwrap_or(0) as u32,
            status: task_status(&process.state) as i32,
            stdin: record.stdin.clone(),
            stdout: record.stdout.clone(),
            stderr: record.stderr.clone(),
            terminal: record.terminal,
            exit_status: exit.map_or(0, |e| e.code_for_containerd()),
            exited_at: exit.map(|e| timestamp(e.at)),
            exec_id,
        }))
    }

    async fn kill(&self, req: Request<KillRequest>) -> Result<Response<()>, Status> {
        let key = key_of(&req, &req.get_ref().id)?;
        let entry = self.entry(&key)?;
        let r = req.into_inner();
        if !r.exec_id.is_empty() {
            let identity = {
                let record = lock(&entry.record);
                let exec = record.container.exec(&r.exec_id).map_err(errors::refused)?;
                exec.check_kill().map_err(errors::refused)?;
                record.exec_identities.get(&r.exec_id).copied()
            };
            let identity = identity.ok_or_else(|| {
                Status::failed_precondition(format!("exec {:?} is not started", r.exec_id))
            })?;
            let signal = u8::try_from(r.signal)
                .ok()
                .and_then(|s| pidfd::Signal::from_named_raw(i32::from(s)))
                .ok_or_else(|| {
                    Status::invalid_argument(format!("signal {} is out of range", r.signal))
                })?;
            let pidfd = PidFd::reopen(&identity)
                .map_err(|e| Status::not_found(format!("exec {:?} is gone: {e}", r.exec_id)))?;
            pidfd
                .send_signal(signal)
                .map_err(|e| errors::internal("signal the exec", e))?;
            return Ok(Response::new(()));
        }
        lock(&entry.record)
            .container
            .init
            .check_kill()
            .map_err(errors::refused)?;
        let signal = i32::try_from(r.signal).map_err(|_| {
            Status::invalid_argument(format!("signal {} is out of range", r.signal))
        })?;
        entry
            .runc
            .kill(key.1.as_str(), signal, r.all)
            .await
            .map_err(errors::runc)?;
        Ok(Response::new(()))
    }

    async fn wait(&self, req: Request<WaitRequest>) -> Result<Response<WaitResponse>, Status> {
        let key = key_of(&req, &req.get_ref().id)?;
        let entry = self.entry(&key)?;
        let exec_id = &req.get_ref().exec_id;
        let exit = if exec_id.is_empty() {
            *entry.init_exit.wait().await
        } else {
            lock(&entry.record)
                .container
                .exec(exec_id)
                .map_err(errors::refused)?;
            let slot = lock(&entry.execs)
                .entry(exec_id.clone())
                .or_default()
                .clone();
            *slot.exit.wait().await
        };
        Ok(Response::new(WaitResponse {
            exit_status: exit.code_for_containerd(),
            exited_at: Some(timestamp(exit.at)),
        }))
    }

    async fn delete(
        &self,
        req: Request<DeleteRequest>,
    ) -> Result<Response<DeleteResponse>, Status> {
        let key = key_of(&req, &req.get_ref().id)?;
        let entry = self.entry(&key)?;
        let exec_id = req.get_ref().exec_id.clone();
        if !exec_id.is_empty() {
            let (process, record) = {
                let mut record = lock(&entry.record);
                let process = record
                    .container
                    .delete_exec(&exec_id)
                    .map_err(errors::refused)?;
                record.exec_identities.remove(&exec_id);
                (process, Self::snapshot(&entry, &record))
            };
            lock(&entry.pending_execs).remove(&exec_id);
            lock(&entry.execs).remove(&exec_id);
            self.persist(&key, &entry, record).await?;
            let exit = process.exit();
            return Ok(Response::new(DeleteResponse {
                pid: process.pid.unwrap_or(0) as u32,
                exit_status: exit.map_or(0, |e| e.code_for_containerd()),
                exited_at: exit.map(|e| timestamp(e.at)),
            }));
        }
        let (pid, exit, never_started) = {
            let record = lock(&entry.record);
            record
                .container
                .init
                .check_delete()
                .map_err(errors::refused)?;
            let init = &record.container.init;
            (
                init.pid.unwrap_or(0),
                init.exit(),
                init.state == ProcessState::Created,
            )
        };
        // A created, never started container still has its init waiting: force removes it.
        match entry.runc.delete(key.1.as_str(), never_started).await {
            Ok(()) | Err(runc_driver::Error::NotFound { .. }) => {}
            Err(e) => return Err(errors::runc(e)),
        }
        let (bundle, rootfs_mounted) = {
            let record = lock(&entry.record);
            (record.bundle.clone(), record.rootfs_mounted)
        };
        if rootfs_mounted {
            crate::rootfs::unmount_all(&bundle);
        }
        {
            let _saving = entry.save_lock.lock().await;
            self.inner
                .store
                .remove(&key.0, &key.1)
                .map_err(|e| errors::internal("remove the record", e))?;
            lock(&self.inner.containers).remove(&key);
        }
        if pid != 0 {
            self.inner.exits.forget(pid);
        }
        let exit_status = exit.map_or(0, |e| e.code_for_containerd());
        let exited_at = exit.map(|e| timestamp(e.at));
        self.publish(
            &key.0,
            TaskEvent::Delete(ev::TaskDelete {
                container_id: key.1.to_string(),
                pid: pid as u32,
                exit_status,
                exited_at,
                id: String::new(),
            }),
        );
        Ok(Response::new(DeleteResponse {
            pid: pid as u32,
            exit_status,
            exited_at,
        }))
    }

    async fn pids(&self, req: Request<PidsRequest>) -> Result<Response<PidsResponse>, Status> {
        let key = key_of(&req, &req.get_ref().id)?;
        let entry = self.entry(&key)?;
        let (stopped, init_pid) = {
            let record = lock(&entry.record);
            let init = &record.container.init;
            (
                matches!(init.state, ProcessState::Stopped(_)),
                init.pid.unwrap_or(0),
            )
        };
        if stopped {
            // A stopped task still lists its init: a restarted containerd 1.7 takes a task
            // whose shim reports no process for one that was never created, and deletes it
            // ("cleaning leaked shim process") before anyone could read its exit status.
            return Ok(Response::new(PidsResponse {
                processes: vec![ProcessInfo {
                    pid: init_pid as u32,
                    info: None,
                }],
            }));
        }
        let pids = entry.runc.ps(key.1.as_str()).await.map_err(errors::runc)?;
        let processes = pids
            .into_iter()
            .map(|pid| ProcessInfo {
                pid: pid as u32,
                info: None,
            })
            .collect();
        Ok(Response::new(PidsResponse { processes }))
    }

    async fn pause(&self, req: Request<PauseRequest>) -> Result<Response<()>, Status> {
        let key = key_of(&req, &req.get_ref().id)?;
        self.set_paused(key, true).await.map(Response::new)
    }

    async fn resume(&self, req: Request<ResumeRequest>) -> Result<Response<()>, Status> {
        let key = key_of(&req, &req.get_ref().id)?;
        self.set_paused(key, false).await.map(Response::new)
    }

    async fn update(&self, req: Request<UpdateTaskRequest>) -> Result<Response<()>, Status> {
        let key = key_of(&req, &req.get_ref().id)?;
        let entry = self.entry(&key)?;
        let r = req.into_inner();
        let any = r
            .resources
            .ok_or_else(|| Status::invalid_argument("update without resources"))?;
        // containerd packs the OCI LinuxResources as JSON.
        let resources: oci_spec::runtime::LinuxResources = serde_json::from_slice(&any.value)
            .map_err(|e| {
                Status::invalid_argument(format!(
                    "resources ({}) are not OCI LinuxResources JSON: {e}",
                    any.type_url
                ))
            })?;
        entry
            .runc
            .update(key.1.as_str(), &resources)
            .await
            .map_err(errors::runc)?;
        Ok(Response::new(()))
    }

    async fn connect(
        &self,
        req: Request<ConnectRequest>,
    ) -> Result<Response<ConnectResponse>, Status> {
        let key = key_of(&req, &req.get_ref().id)?;
        let task_pid = self
            .entry(&key)
            .ok()
            .and_then(|e| lock(&e.record).container.init.pid);
        Ok(Response::new(ConnectResponse {
            shim_pid: std::process::id(),
            task_pid: task_pid.unwrap_or(0) as u32,
            version: format!("shimless {}", env!("CARGO_PKG_VERSION")),
        }))
    }

    async fn shutdown(&self, _req: Request<ShutdownRequest>) -> Result<Response<()>, Status> {
        // containerd calls this after deleting each task; one daemon serves every container, so
        // it never stops here.
        Ok(Response::new(()))
    }

    async fn exec(&self, req: Request<ExecProcessRequest>) -> Result<Response<()>, Status> {
        let key = key_of(&req, &req.get_ref().id)?;
        let entry = self.entry(&key)?;
        let r = req.into_inner();
        crate::ids::ContainerId::new(&r.exec_id)
            .map_err(|e| Status::invalid_argument(format!("exec id {:?}: {e}", r.exec_id)))?;
        let spec = r
            .spec
            .ok_or_else(|| Status::invalid_argument("exec without a process spec"))?;
        let process: oci_spec::runtime::Process =
            serde_json::from_slice(&spec.value).map_err(|e| {
                Status::invalid_argument(format!(
                    "exec spec ({}) is not an OCI Process in JSON: {e}",
                    spec.type_url
                ))
            })?;
        Endpoint::parse_all([r.stdin.as_str(), r.stdout.as_str(), r.stderr.as_str()])
            .map_err(|e| Status::invalid_argument(e.to_string()))?;
        let record = {
            let mut record = lock(&entry.record);
            record
                .container
                .add_exec(&r.exec_id, None)
                .map_err(errors::refused)?;
            Self::snapshot(&entry, &record)
        };
        if let Err(e) = self.persist(&key, &entry, record).await {
            let _ = lock(&entry.record).container.delete_exec(&r.exec_id);
            return Err(e);
        }
        lock(&entry.pending_execs).insert(
            r.exec_id.clone(),
            PendingExec {
                process,
                stdio: [r.stdin, r.stdout, r.stderr],
                terminal: r.terminal,
            },
        );
        lock(&entry.execs).insert(r.exec_id.clone(), Arc::default());
        self.publish(
            &key.0,
            TaskEvent::ExecAdded(ev::TaskExecAdded {
                container_id: key.1.to_string(),
                exec_id: r.exec_id,
            }),
        );
        Ok(Response::new(()))
    }

    async fn resize_pty(&self, req: Request<ResizePtyRequest>) -> Result<Response<()>, Status> {
        let key = key_of(&req, &req.get_ref().id)?;
        let entry = self.entry(&key)?;
        let r = req.into_inner();
        let (height, width) = match (u16::try_from(r.height), u16::try_from(r.width)) {
            (Ok(h), Ok(w)) => (h, w),
            _ => {
                return Err(Status::invalid_argument(format!(
                    "window {}x{} is larger than a terminal can be (65535)",
                    r.width, r.height
                )));
            }
        };
        let resized = self.with_console(&entry, &r.exec_id, |c| c.resize(height, width))?;
        resized.map_err(|e| errors::internal("resize the terminal", e))?;
        Ok(Response::new(()))
    }

    async fn close_io(&self, req: Request<CloseIoRequest>) -> Result<Response<()>, Status> {
        let key = key_of(&req, &req.get_ref().id)?;
        let entry = self.entry(&key)?;
        let r = req.into_inner();
        if !r.stdin {
            return Ok(Response::new(()));
        }
        // Without a terminal the process holds containerd's stdin FIFO itself and the daemon
        // holds no writer: containerd closing its end is what the process sees. Nothing to do.
        match self.with_console(&entry, &r.exec_id, |c| c.close_stdin()) {
            Ok(()) | Err(_) => Ok(Response::new(())),
        }
    }

    async fn stats(&self, req: Request<StatsRequest>) -> Result<Response<StatsResponse>, Status> {
        use crate::api::io::containerd::cgroups::v1 as m;
        use prost::Message;
        let key = key_of(&req, &req.get_ref().id)?;
        let entry = self.entry(&key)?;
        let stats = entry
            .runc
            .stats(key.1.as_str())
            .await
            .map_err(errors::runc)?;
        let usage = &stats.memory.usage;
        let metrics = m::Metrics {
            pids: Some(m::PidsStat {
                current: stats.pids.current,
                limit: stats.pids.limit,
            }),
            cpu: Some(m::CpuStat {
                usage: Some(m::CpuUsage {
                    total: stats.cpu.usage.total,
                    kernel: stats.cpu.usage.kernel,
                    user: stats.cpu.usage.user,
                }),
            }),
            memory: Some(m::MemoryStat {
                cache: stats.memory.cache,
                usage: Some(m::MemoryEntry {
                    limit: usage.limit,
                    usage: usage.usage,
                    max: usage.max,
                    failcnt: usage.failcnt,
                }),
            }),
        };
        Ok(Response::new(StatsResponse {
            stats: Some(prost_types::Any {
                type_url: "io.containerd.cgroups.v1.Metrics".into(),
                value: metrics.encode_to_vec(),
            }),
        }))
    }

    async fn checkpoint(
        &self,
        _req: Request<CheckpointTaskRequest>,
    ) -> Result<Response<()>, Status> {
        let criu = std::env::var_os("PATH")
            .is_some_and(|p| std::env::split_paths(&p).any(|d| d.join("criu").is_file()));
        let why = if criu {
            "Checkpoint (criu is installed, but shimless does not drive it yet)"
        } else {
            "Checkpoint (it needs criu, which is not installed)"
        };
        unimplemented(why)
    }
}

#[tonic::async_trait]
impl crate::api::shimless::v1::admin_server::Admin for Daemon {
    async fn list(
        &self,
        req: Request<crate::api::shimless::v1::ListRequest>,
    ) -> Result<Response<crate::api::shimless::v1::ListResponse>, Status> {
        use crate::api::shimless::v1::{ListResponse, TaskSummary};
        let only = req.into_inner().namespace;
        let entries: Vec<(Key, Arc<Entry>)> = lock(&self.inner.containers)
            .iter()
            .filter(|((ns, _), _)| only.is_empty() || ns.as_str() == only)
            .map(|(k, e)| (k.clone(), e.clone()))
            .collect();
        let mut tasks: Vec<TaskSummary> = entries
            .into_iter()
            .map(|((ns, id), entry)| {
                let record = lock(&entry.record);
                let init = &record.container.init;
                let exit = init.exit();
                TaskSummary {
                    namespace: ns.to_string(),
                    id: id.to_string(),
                    pid: init.pid.unwrap_or(0) as u32,
                    status: init.state.name().to_string(),
                    exit_status: exit.map_or(0, |e| e.code_for_containerd()),
                    created_at: Some(timestamp(record.created_at)),
                    exited_at: exit.map(|e| timestamp(e.at)),
                    bundle: record.bundle.display().to_string(),
                    execs: record.container.execs.len() as u32,
                }
            })
            .collect();
        tasks.sort_by(|a, b| (&a.namespace, &a.id).cmp(&(&b.namespace, &b.id)));
        Ok(Response::new(ListResponse { tasks }))
    }

    async fn register_publisher(
        &self,
        req: Request<crate::api::shimless::v1::RegisterPublisherRequest>,
    ) -> Result<Response<()>, Status> {
        let req = req.into_inner();
        let ns = Namespace::new(req.namespace.clone())
            .map_err(|e| Status::invalid_argument(format!("namespace {:?}: {e}", req.namespace)))?;
        let id = ContainerId::new(req.id.clone())
            .map_err(|e| Status::invalid_argument(format!("id {:?}: {e}", req.id)))?;
        let path = req.address.strip_prefix("unix://").unwrap_or(&req.address);
        if !path.starts_with('/') {
            return Err(Status::invalid_argument(format!(
                "publisher address {:?} is not an absolute unix socket path (containerd's \
                 -address)",
                req.address
            )));
        }
        let publishers = self.inner.publishers.clone();
        let address = path.to_string();
        smol::unblock(move || publishers.register(&ns, &id, &address))
            .await
            .map_err(|e| errors::internal("save the publisher", e))?;
        Ok(Response::new(()))
    }
}
