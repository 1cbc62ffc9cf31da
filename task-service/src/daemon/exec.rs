//! Exec processes: `Exec` adds one (its spec is kept in memory), `Start` with an exec id
//! launches it through the same path as an init (or, for the probe marker, answers it without
//! a process: see `probe_exec`).

use super::Daemon;
use super::container::{Entry, Key, PendingExec};
use super::errors;
use super::launch::{Launched, Spawn, open_stdio};
use super::outlive::Caller;
use crate::api::containerd::events as ev;
use crate::api::containerd::task::v3::ExecProcessRequest;
use crate::events::TaskEvent;
use crate::lock::lock;
use crate::model::Exit;
use crate::stdio::Endpoint;
use std::sync::Arc;
use tonic::Status;

impl Daemon {
    /// Adds exec `r.exec_id` to container `key`: checked, recorded, announced; started later.
    /// A call dropped while the record is saved (see `outlive`) still ends with the exec either
    /// added or not, never recorded without its spec.
    pub(super) async fn add_exec(&self, key: Key, r: ExecProcessRequest) -> Result<(), Status> {
        let daemon = self.clone();
        self.outlive(|_| async move { daemon.add_exec_now(key, r).await })
            .await
    }

    async fn add_exec_now(&self, key: Key, r: ExecProcessRequest) -> Result<(), Status> {
        let entry = self.entry(&key)?;
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
            .map_err(errors::invalid)?;
        let snapshot = {
            let mut record = lock(&entry.record);
            record
                .container
                .add_exec(&r.exec_id, None)
                .map_err(errors::refused)?;
            entry.snapshot(&record)
        };
        if let Err(e) = self.persist(&key, &entry, snapshot).await {
            let _ = lock(&entry.record).container.delete_exec(&r.exec_id);
            return Err(e);
        }
        let pending = PendingExec {
            process,
            stdio: [r.stdin, r.stdout, r.stderr],
            terminal: r.terminal,
        };
        lock(&entry.pending_execs).insert(r.exec_id.clone(), pending);
        lock(&entry.execs).insert(r.exec_id.clone(), Arc::default());
        self.publish(
            &key.0,
            TaskEvent::ExecAdded(ev::TaskExecAdded {
                container_id: key.1.to_string(),
                exec_id: r.exec_id,
            }),
        );
        Ok(())
    }

    /// Starts a pending exec: launched, tracked in the kernel, recorded, announced, watched.
    /// Runs to its end even if the call is dropped (see `outlive`): once the runtime has made
    /// the process it is always watched, so it is reaped and its `Wait` (and a held init exit)
    /// released; if it cannot be recorded, or nobody waits for the answer any more, it is
    /// killed rather than left running unknown.
    pub(super) async fn start_exec(
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
        if self.is_probe_exec(&pending) {
            return self.start_probe_exec(key, entry, exec_id, pending).await;
        }
        let (daemon, key, entry, exec_id) = (
            self.clone(),
            key.clone(),
            entry.clone(),
            exec_id.to_string(),
        );
        self.outlive(|caller| async move {
            let stdio = pending.stdio.clone();
            // An exec's FIFOs go to the container's IoUid/IoGid, as the Go shim's do.
            let owner = lock(&entry.record).io_owner;
            let opened =
                smol::unblock(move || open_stdio(stdio.each_ref().map(String::as_str), owner))
                    .await?;
            if caller.gone() {
                // Nothing made yet: the exec stays pending, a later Start may still run it.
                lock(&entry.pending_execs).insert(exec_id.clone(), pending);
                return Err(Status::deadline_exceeded(format!(
                    "exec {exec_id:?}: the call was dropped before the exec was launched"
                )));
            }
            let spawn = Spawn::Exec {
                process: &pending.process,
            };
            let launched = daemon
                .launch(&entry.runc, &key.1, spawn, opened, pending.terminal)
                .await
                .map_err(|failed| failed.status)?;
            daemon
                .commit_exec(&key, &entry, &exec_id, launched, &caller)
                .await
        })
        .await
    }

    /// Takes a launched exec in: recorded and saved, watched, announced with
    /// `TaskExecStarted` before its exit can be (the signal gate is held until then). An exec
    /// that cannot be recorded or saved, or whose caller is gone, is killed and still watched.
    async fn commit_exec(
        &self,
        key: &Key,
        entry: &Arc<Entry>,
        exec_id: &str,
        launched: Launched,
        caller: &Caller,
    ) -> Result<u32, Status> {
        let _gate = entry.signal_gate.lock().await;
        if let Some(identity) = &launched.identity
            && let Err(e) = self.track(key, Some(exec_id), identity)
        {
            tracing::warn!(
                "shimless: exec {exec_id} of {}: not tracked in the kernel: {e}",
                key.1.as_str()
            );
        }
        let pid = launched.pid;
        // An exec that ended before the kernel tracked it has its status in its zombie only
        // (the daemon's child): reaped now (the pidfd keeps the status for the watcher), it is
        // saved with the start, so a daemon killed before the watcher reports it does not
        // report 255.
        let early = launched.pidfd.try_wait().ok().flatten().map(|status| Exit {
            status,
            at: std::time::SystemTime::now(),
        });
        let slot = lock(&entry.execs)
            .entry(exec_id.to_string())
            .or_default()
            .clone();
        *lock(&slot.keepalive) = launched.keepalive;
        *lock(&slot.console) = launched.console;
        let recorded = {
            let mut record = lock(&entry.record);
            if let Some(process) = record.container.execs.get_mut(exec_id) {
                process.pid = Some(pid);
            }
            let started = record.container.start_exec(exec_id);
            if let Some(identity) = launched.identity {
                record.exec_identities.insert(exec_id.to_string(), identity);
            }
            if let Some(exit) = early {
                record.early_exits.insert(exec_id.to_string(), exit);
            }
            started
                .map_err(errors::refused)
                .map(|()| entry.snapshot(&record))
        };
        let saved = match recorded {
            Ok(snapshot) => self.persist(key, entry, snapshot).await.map(drop),
            Err(status) => Err(status),
        };
        let outcome = match saved {
            Ok(()) if caller.gone() => Err(Status::deadline_exceeded(format!(
                "exec {exec_id:?}: the call was dropped before the exec was started; it was killed"
            ))),
            other => other,
        };
        if outcome.is_err() {
            // Killed, and watched below: its exit is reported, its Wait and the init's held exit
            // released, nothing left behind.
            let _ = launched.pidfd.send_signal(pidfd::Signal::KILL);
        }
        self.watch_exit(
            key.clone(),
            entry.clone(),
            Some(exec_id.to_string()),
            launched.pidfd,
        );
        outcome?;
        self.publish(
            &key.0,
            TaskEvent::ExecStarted(ev::TaskExecStarted {
                container_id: key.1.to_string(),
                exec_id: exec_id.to_string(),
                pid: pid as u32,
            }),
        );
        Ok(pid as u32)
    }
}
