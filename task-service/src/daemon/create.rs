//! `Create`: a container's bundle checked, its intent recorded, its init launched, tracked and
//! watched; any failure after the intent undoes everything it made.

use super::Daemon;
use super::container::{Entry, Key};
use super::errors;
use super::launch::{Failed, Launched, Spawn, open_stdio};
use super::oom::MemoryCgroup;
use super::outlive::Caller;
use super::record::Record;
use crate::api::containerd::events as ev;
use crate::api::containerd::task::v3::CreateTaskRequest;
use crate::events::TaskEvent;
use crate::lock::lock;
use crate::model::Container;
use crate::options::{RuntimeOptions, host_has_systemd};
use runc_driver::Runc;
use std::path::PathBuf;
use std::time::SystemTime;
use tonic::Status;

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

impl Daemon {
    /// Creates container `key` as `r` asks; its init's PID. Runs to its end even if the call
    /// is dropped (see `outlive`), and then undoes what it made: a `Create` cancelled at its
    /// deadline leaves no `creating` record, no rootfs mount, no runtime container. Reading the
    /// bundle, opening stdio, saving and mounting run on the blocking pool: a `config.json`
    /// that is a FIFO, or a slow disk, holds only its own call.
    pub(super) async fn create_container(
        &self,
        key: Key,
        r: CreateTaskRequest,
    ) -> Result<u32, Status> {
        let daemon = self.clone();
        self.outlive(|caller| async move { daemon.create_detached(key, r, &caller).await })
            .await
    }

    async fn create_detached(
        &self,
        key: Key,
        r: CreateTaskRequest,
        caller: &Caller,
    ) -> Result<u32, Status> {
        let _reservation = self.reserve(&key)?;
        let (bundle, opts, opened) = prepare(&r).await?;
        // containerd 2.x creates a pod's app containers without `start`: they inherit where
        // the sandbox's events go (daemon/forward.rs).
        let publishers = self.inner.publishers.clone();
        let (ns, id, at) = (key.0.clone(), key.1.clone(), bundle.clone());
        smol::unblock(move || publishers.adopt(&ns, &id, &at)).await;
        let runtime_root = self.runtime_root(&key.0, &opts);
        let runc = self.runc(&runtime_root, &opts)?;
        let fold = self.fold_at_create(&key, &bundle, runc.binary()).await?;
        let probes = self.probes_at_create(&bundle).await?;
        // The intent first: a daemon killed from here until the full record is saved leaves a
        // `creating` record, and the next daemon removes whatever the runtime made of it.
        let mut record = intent(&r, &bundle, &runc, runtime_root, &opts, fold);
        check_caller(caller, &key)?;
        self.save_unblocked(&key, &record).await?;
        if record.rootfs_mounted {
            let (target, mounts) = (bundle.clone(), r.rootfs.clone());
            let mounted = smol::unblock(move || crate::rootfs::mount_all(&target, &mounts)).await;
            if let Err(e) = mounted
                .map_err(errors::invalid)
                .and(check_caller(caller, &key))
            {
                self.abort_create(&key, &runc, &record, None).await;
                return Err(e);
            }
        }
        let spawn = Spawn::Init {
            bundle: &bundle,
            no_pivot: opts.no_pivot_root,
            no_new_keyring: opts.no_new_keyring,
        };
        let launched = match self.launch(&runc, &key.1, spawn, opened, r.terminal).await {
            Ok(launched) => launched,
            Err(Failed { status, made }) => {
                if made {
                    let _ = runc.delete(key.1.as_str(), true).await;
                }
                self.abort_create(&key, &runc, &record, None).await;
                return Err(status);
            }
        };
        let committed = self.commit_create(&key, &mut record, &launched).await;
        if let Err(status) = committed.and(check_caller(caller, &key)) {
            self.abort_create(&key, &runc, &record, Some(&launched))
                .await;
            return Err(status);
        }
        let pid = launched.pid;
        let folded = record.fold.as_ref().is_some_and(|f| f.resources.is_some());
        self.keep_probes(&key, probes);
        self.serve_created(key.clone(), r, record, runc, launched);
        if folded {
            // Kubelet's values for the pod with this container (runc/crun may have rewritten
            // the shared cgroup's limits: `RuntimeOp::Create`).
            self.apply_pod_values(&key).await;
        }
        Ok(pid as u32)
    }

    /// Saves `record` on the blocking pool.
    async fn save_unblocked(&self, key: &Key, record: &Record) -> Result<(), Status> {
        let (daemon, key, record) = (self.clone(), key.clone(), record.clone());
        smol::unblock(move || daemon.save(&key, &record)).await
    }

    /// Tracks the new init in the kernel and saves the full record: a container whose exit
    /// could not be known after a restart is not kept.
    async fn commit_create(
        &self,
        key: &Key,
        record: &mut Record,
        launched: &Launched,
    ) -> Result<(), Status> {
        let tracked = match &launched.identity {
            Some(identity) => self.track(key, None, identity),
            None => Err("the init is already gone".into()),
        };
        if let Err(e) = tracked {
            return Err(Status::resource_exhausted(format!(
                "cannot record the exit of container {:?} in the kernel ({e}); it was removed",
                key.1.as_str()
            )));
        }
        record.creating = false;
        record.identity = launched.identity;
        record.container = Container::new(Some(launched.pid));
        // Nothing may be left half-made: a failed save undoes the create.
        self.save_unblocked(key, record).await
    }

    /// Takes a created container in: held, announced with `TaskCreate`, its init watched.
    fn serve_created(
        &self,
        key: Key,
        r: CreateTaskRequest,
        record: Record,
        runc: Runc,
        launched: Launched,
    ) {
        let memory_cgroup = MemoryCgroup::of(launched.pid);
        let entry = Entry::new(record, runc, launched.keepalive, memory_cgroup);
        *lock(&entry.console) = launched.console;
        lock(&self.inner.containers).insert(key.clone(), entry.clone());
        self.watch_oom(&key, &entry);
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
                pid: launched.pid as u32,
            }),
        );
        // Only now, so that even an init that dies at once is reported after its create.
        self.watch_exit(key, entry, None, launched.pidfd);
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

    /// Undoes a failed `Create`: the runtime's container and its init (if `launched`: killed,
    /// reaped, no longer tracked), the rootfs mounts, the record.
    async fn abort_create(
        &self,
        key: &Key,
        runc: &Runc,
        record: &Record,
        launched: Option<&Launched>,
    ) {
        if let Some(launched) = launched {
            let _ = runc.delete(key.1.as_str(), true).await;
            // The init is the daemon's child (its runtime has exited): reap it, or it stays a
            // zombie. `delete --force` killed it; the limit is for a runtime that did not.
            let _ = launched.pidfd.send_signal(pidfd::Signal::KILL);
            let exited = launched.pidfd.exited();
            let limit = async_io::Timer::after(std::time::Duration::from_secs(5));
            futures_lite::future::or(async { exited.await.map(drop) }, async {
                limit.await;
                Ok(())
            })
            .await
            .ok();
            let _ = launched.pidfd.wait();
            self.inner.exits.forget(launched.pid);
        }
        let (bundle, mounted) = (record.bundle.clone(), record.rootfs_mounted);
        let (store, (ns, id)) = (self.inner.store.clone(), key.clone());
        smol::unblock(move || {
            if mounted {
                crate::rootfs::unmount_all(&bundle);
            }
            let _ = store.remove(&ns, &id);
        })
        .await;
    }
}

/// Refuses to go on with a `Create` whose caller is gone (see `outlive`).
fn check_caller(caller: &Caller, key: &Key) -> Result<(), Status> {
    if caller.gone() {
        return Err(Status::deadline_exceeded(format!(
            "the Create of container {:?} was dropped (its deadline passed); it was undone",
            key.1.as_str()
        )));
    }
    Ok(())
}

/// The record a `Create` saves first, marked `creating` (its intent): the next daemon removes
/// whatever the runtime made of a create it did not finish.
fn intent(
    r: &CreateTaskRequest,
    bundle: &std::path::Path,
    runc: &Runc,
    runtime_root: PathBuf,
    opts: &RuntimeOptions,
    fold: Option<crate::fold::Folding>,
) -> Record {
    Record {
        format: Default::default(),
        bundle: bundle.to_owned(),
        stdin: r.stdin.clone(),
        stdout: r.stdout.clone(),
        stderr: r.stderr.clone(),
        terminal: r.terminal,
        runtime: runc.binary().to_owned(),
        runtime_root,
        rootfs_mounted: !r.rootfs.is_empty(),
        systemd_cgroup: opts.systemd_cgroup,
        creating: true,
        identity: None,
        container: Container::new(None),
        exec_identities: Default::default(),
        io_owner: opts.io_owner(),
        early_exits: Default::default(),
        created_at: SystemTime::now(),
        fold,
    }
}

/// What a `Create` needs before the intent is saved, read and opened on the blocking pool:
/// the checked bundle path, the runtime options and the opened stdio.
async fn prepare(
    r: &CreateTaskRequest,
) -> Result<(PathBuf, RuntimeOptions, crate::stdio::OpenStdio), Status> {
    let r = r.clone();
    smol::unblock(move || {
        let bundle = check_request(&r)?;
        let opts = RuntimeOptions::from_any(r.options.as_ref(), host_has_systemd())
            .map_err(errors::invalid)?;
        let opened = open_stdio(
            [r.stdin.as_str(), r.stdout.as_str(), r.stderr.as_str()],
            opts.io_owner(),
        )?;
        Ok((bundle, opts, opened))
    })
    .await
}

/// Checks a `Create` before anything runs; the bundle's path. A bundle without a valid
/// config.json, or whose process disagrees with the request about a terminal, is refused here
/// with the reason rather than by the runtime halfway through.
fn check_request(r: &CreateTaskRequest) -> Result<PathBuf, Status> {
    crate::rootfs::check(&r.rootfs).map_err(errors::invalid)?;
    if !r.checkpoint.is_empty() {
        return Err(errors::unimplemented("restoring from a checkpoint"));
    }
    let bundle = PathBuf::from(&r.bundle);
    if !bundle.is_absolute() {
        return Err(Status::invalid_argument(format!(
            "bundle {:?} must be an absolute path",
            r.bundle
        )));
    }
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
    Ok(bundle)
}
