//! `Create`: a container's bundle checked, its intent recorded, its init launched, tracked and
//! watched; any failure after the intent undoes everything it made.

use super::Daemon;
use super::container::{Entry, Key};
use super::errors;
use super::launch::{Failed, Launched, Spawn, open_stdio};
use super::oom::MemoryCgroup;
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
    /// Creates container `key` as `r` asks; its init's PID.
    pub(super) async fn create_container(
        &self,
        key: Key,
        r: CreateTaskRequest,
    ) -> Result<u32, Status> {
        let bundle = check_request(&r)?;
        let _reservation = self.reserve(&key)?;
        let opts = RuntimeOptions::from_any(r.options.as_ref(), host_has_systemd())
            .map_err(errors::invalid)?;
        let opened = open_stdio([r.stdin.as_str(), r.stdout.as_str(), r.stderr.as_str()])?;
        let runtime_root = self.runtime_root(&key.0, &opts);
        let runc = self.runc(&runtime_root, &opts)?;
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
            rootfs_mounted: !r.rootfs.is_empty(),
            systemd_cgroup: opts.systemd_cgroup,
            creating: true,
            identity: None,
            container: Container::new(None),
            exec_identities: Default::default(),
            created_at: SystemTime::now(),
        };
        self.save(&key, &record)?;
        if record.rootfs_mounted
            && let Err(e) = crate::rootfs::mount_all(&bundle, &r.rootfs)
        {
            self.abort_create(&key, &runc, &record, false).await;
            return Err(errors::invalid(e));
        }
        let spawn = Spawn::Init {
            bundle: &bundle,
            no_pivot: opts.no_pivot_root,
            no_new_keyring: opts.no_new_keyring,
        };
        let launched = match self.launch(&runc, &key.1, spawn, opened, r.terminal).await {
            Ok(launched) => launched,
            Err(Failed { status, made }) => {
                self.abort_create(&key, &runc, &record, made).await;
                return Err(status);
            }
        };
        if let Err(status) = self.commit_create(&key, &mut record, &launched) {
            self.abort_create(&key, &runc, &record, true).await;
            return Err(status);
        }
        let pid = launched.pid;
        self.serve_created(key, r, record, runc, launched);
        Ok(pid as u32)
    }

    /// Tracks the new init in the kernel and saves the full record: a container whose exit
    /// could not be known after a restart is not kept.
    fn commit_create(
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
        self.save(key, record)
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
