//! The daemon `shimlessd` serves: [`Daemon`], containerd's `containerd.task.v3.Task` for every
//! container of the node, on runc (or crun) through `runc-driver`.
//!
//! Every call but `Checkpoint` works (it answers `UNIMPLEMENTED` with a
//! message), with execs and terminals. Exits go through one pipeline: `waitid` as
//! the child subreaper, exitwatch's kernel record, `PIDFD_INFO_EXIT`, in that order.
//! [`Daemon::recover`] takes back the containers of a previous run; [`Recovery`] says what it
//! found. `Create`'s rootfs mounts are mounted on `<bundle>/rootfs` (see [`crate::rootfs`]).
//! An init that exits after OOM kills in its memory cgroup is reported with `TaskOOM` before
//! its `TaskExit` (what containerd's CRI needs to say `OOMKilled`; see `oom.rs`); on cgroup v2
//! each kill is reported as it happens, as containerd-shim-runc-v2 does (`oom_watch.rs`).
//!
//! The modules, by job: `container` (what the daemon holds per container), `persist` (saving
//! records), `launch` (the one spawn path of an init's `Create` and an exec's `Start`),
//! `create` and `exec` (those two calls; `probe_exec` answers an exec of `shimless-probe`
//! itself; `probes` runs the pod annotation's probes on the node's one prober), `watch` (waiting for exits and reporting them),
//! `lifecycle` (start, kill, pause, delete), `outlive` (a call's work that finishes, or
//! undoes itself, when the call is dropped at its deadline), `reaper` (orphans nobody waits
//! for), `stats` (containerd's metrics), `task` (the Task service, delegating to those), `admin`
//! (shimless's Admin service), `recover` (taking back a previous run's containers, with `listing`
//! for what the runtime says of them, `reopen`
//! for processes and `rebuild` for unreadable records), `router` and `subscribe` (the gRPC
//! surface), `exits`, `oom`, `forward` and `outbox` (exit sources, OOM counts, events to containerd and
//! their persisted outbox),
//! `oom_watch` (cgroup v2 OOM kills seen while containers run, as the Go shim sees them),
//! `health` (`shimless.v1.Health`: whether the daemon runs degraded), `errors` (library errors
//! as gRPC statuses), `gauges` (the metrics scrape).

mod admin;
mod container;
mod create;
mod errors;
mod exec;
mod exits;
mod fold;
mod forward;
mod gauges;
mod health;
mod launch;
mod lifecycle;
mod listing;
mod oom;
mod oom_watch;
mod outbox;
mod outlive;
mod persist;
mod probe_exec;
mod probes;
mod reaper;
mod rebuild;
mod record;
mod recover;
mod reopen;
mod router;
mod stats;
mod subscribe;
mod task;
mod watch;

pub use health::{HealthStatus, WithHealth};
pub use recover::Recovery;
pub use router::Router;

use crate::config::Config;
use crate::events::{EventBus, TaskEvent};
use crate::ids::Namespace;
use crate::lock::lock;
use crate::options::RuntimeOptions;
use crate::state::StateStore;
use container::{Entry, Key};
use exits::Exits;
use runc_driver::Runc;
use std::collections::{HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use tonic::Status;

/// Every container of the node, served as containerd's Task API.
///
/// ```no_run
/// use std::sync::Arc;
/// use task_service::{config::Config, grpc, daemon::Daemon};
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
    publishers: Arc<forward::Publishers>,
    /// Hands events to containerd through each containerd's persisted outbox.
    forwarder: Arc<forward::Forwarder>,
    /// What the last recovery could not take back or check (see [`Recovery::problems`]),
    /// listed by `Admin/List` until the next restart.
    problems: Mutex<Vec<String>>,
    /// Reaps orphans re-parented to the daemon that nobody waits for.
    reaper: Arc<reaper::Reaper>,
    /// The probes of pod annotation `shimless.io/probes`, on the node's one prober.
    probes: probes::Probes,
    /// The cgroup v2 `memory.events` watches (`TaskOOM` while containers run).
    oom_watches: oom_watch::OomWatches,
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
        let publishers = Arc::new(forward::Publishers::open(&config.state_dir));
        let forwarder = forward::Forwarder::open(&config.state_dir, publishers.clone());
        let (probes, prober) = probes::Probes::new();
        let daemon = Daemon {
            inner: Arc::new(Inner {
                store: StateStore::new(&config.state_dir),
                events: EventBus::new(config.event_capacity),
                publishers,
                forwarder: Arc::new(forwarder),
                config,
                ex,
                containers: Mutex::new(HashMap::new()),
                runtimes: Mutex::new(HashMap::new()),
                exits,
                warnings: warning.into_iter().collect(),
                creating: Mutex::new(HashSet::new()),
                problems: Mutex::new(Vec::new()),
                reaper: Arc::default(),
                probes,
                oom_watches: oom_watch::OomWatches::default(),
            }),
        };
        daemon.run_prober(prober);
        Ok(daemon)
    }

    /// What the daemon could not set up but runs without (today: exitwatch, when the kernel or
    /// privileges do not allow it).
    pub fn warnings(&self) -> &[String] {
        &self.inner.warnings
    }

    /// Starts reaping the orphans that become the daemon's children and that nobody waits for
    /// (a hook's background process, a double fork): without it they stay zombies, as the
    /// daemon is their subreaper. Children with a waiter (container processes, runtime calls)
    /// are never taken from it. Call once, in the process that serves.
    ///
    /// ```no_run
    /// # let daemon: task_service::daemon::Daemon = todo!();
    /// daemon.reap_orphans()?;
    /// # Ok::<(), std::io::Error>(())
    /// ```
    pub fn reap_orphans(&self) -> std::io::Result<()> {
        self.inner.reaper.start()
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
    /// order, retried while containerd is away: first what a previous run handed over and
    /// containerd did not take (its persisted outbox), then what happens from now on. Call it
    /// before [`Daemon::recover`], so that the replayed events come before those recovery
    /// publishes.
    ///
    /// ```no_run
    /// # async fn f(daemon: task_service::daemon::Daemon) -> Result<(), tonic::Status> {
    /// daemon.forward_events();
    /// println!("{}", daemon.recover().await?);
    /// # Ok(()) }
    /// ```
    pub fn forward_events(&self) {
        self.inner.forwarder.start(&self.inner.ex);
    }

    /// The runtime root of a namespace: the container's `Root` option, else the configured
    /// root, with the namespace appended either way (as containerd's runc shim does), so that
    /// no two namespaces, and no other runtime's root given as `Root`, share a directory.
    fn runtime_root(&self, ns: &Namespace, opts: &RuntimeOptions) -> PathBuf {
        opts.root
            .as_deref()
            .unwrap_or(&self.inner.config.runc_root)
            .join(ns.as_str())
    }

    /// The driver for a container's runtime options under `root`, made once and shared.
    fn runc(&self, root: &Path, opts: &RuntimeOptions) -> Result<Runc, Status> {
        let binary = PathBuf::from(
            opts.binary
                .clone()
                .unwrap_or_else(|| self.inner.config.runtime.clone()),
        );
        self.runc_for(&binary, root, opts.systemd_cgroup)
    }

    /// The driver for a runtime binary and root, made once and shared.
    fn runc_for(&self, binary: &Path, root: &Path, systemd_cgroup: bool) -> Result<Runc, Status> {
        let key = (binary.to_owned(), root.to_owned(), systemd_cgroup);
        let mut runtimes = lock(&self.inner.runtimes);
        if let Some(runc) = runtimes.get(&key) {
            return Ok(runc.clone());
        }
        let runc = Runc::builder()
            .binary(binary)
            .root(root)
            .systemd_cgroup(systemd_cgroup)
            .observer(runc_driver::Observer::new(|command, took, ok| {
                crate::metrics::DAEMON.runtime.record(command, took, ok)
            }))
            .build()
            .map_err(errors::runc)?;
        runtimes.insert(key, runc.clone());
        Ok(runc)
    }

    /// The container under `key`, or `NOT_FOUND` naming it.
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

    /// Hands `event` to containerd's outbox (if its container has a publisher), then to the
    /// local subscribers.
    fn publish(&self, ns: &Namespace, event: TaskEvent) {
        self.inner.forwarder.submit(ns, &event);
        self.inner.events.publish(ns.clone(), event);
    }
}
