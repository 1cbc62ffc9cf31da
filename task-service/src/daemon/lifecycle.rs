//! A container's transitions after `Create`: start, kill, pause and resume, delete; each
//! checked against the model, done by the runtime, then recorded and published.

use super::Daemon;
use super::container::{Entry, Key};
use super::errors;
use crate::api::containerd::events as ev;
use crate::api::containerd::task::v3::DeleteResponse;
use crate::api::timestamp;
use crate::events::TaskEvent;
use crate::lock::lock;
use crate::model::ProcessState;
use pidfd::PidFd;
use std::sync::Arc;
use tonic::Status;

impl Daemon {
    /// Starts a created init (`runc start`); its PID. `TaskStart` is published before the
    /// init's exit can be (the exit watcher waits for the start gate). A started process cannot
    /// be un-started, so a call dropped meanwhile (see `outlive`) still ends with the record
    /// saying running and `TaskStart` published, never with a running init recorded as created.
    pub(super) async fn start_init(&self, key: &Key, entry: &Arc<Entry>) -> Result<u32, Status> {
        let (daemon, key, entry) = (self.clone(), key.clone(), entry.clone());
        self.outlive(|_| async move { daemon.start_init_now(&key, &entry).await })
            .await
    }

    async fn start_init_now(&self, key: &Key, entry: &Entry) -> Result<u32, Status> {
        let started_at = std::time::Instant::now();
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
            entry.snapshot(&record)
        };
        self.persist(key, entry, snapshot).await?;
        self.publish(
            &key.0,
            TaskEvent::Start(ev::TaskStart {
                container_id: key.1.to_string(),
                pid: pid as u32,
            }),
        );
        self.schedule_probes(key, entry, started_at);
        Ok(pid as u32)
    }

    /// Signals an exec's process through a pidfd re-opened by PID and start time. An exec that
    /// has exited is `NOT_FOUND`, one not started yet `FAILED_PRECONDITION` (as
    /// containerd-shim-runc-v2 answers); the signal gate is held across the signal.
    pub(super) async fn kill_exec(
        &self,
        entry: &Entry,
        exec_id: &str,
        signal: u32,
    ) -> Result<(), Status> {
        let signal = u8::try_from(signal)
            .ok()
            .and_then(|s| pidfd::Signal::from_named_raw(i32::from(s)))
            .ok_or_else(|| Status::invalid_argument(format!("signal {signal} is out of range")))?;
        let _gate = entry.signal_gate.lock().await;
        let identity = {
            let record = lock(&entry.record);
            let exec = record.container.exec(exec_id).map_err(errors::refused)?;
            if exec.check_kill().is_err() {
                return Err(errors::already_finished(&format!("exec {exec_id:?}")));
            }
            record.exec_identities.get(exec_id).copied()
        };
        let identity = identity.ok_or_else(|| {
            Status::failed_precondition(format!("exec {exec_id:?} is not started"))
        })?;
        let pidfd = PidFd::reopen(&identity)
            .map_err(|e| errors::already_finished(&format!("exec {exec_id:?} ({e})")))?;
        match pidfd.send_signal(signal) {
            Ok(()) => Ok(()),
            Err(e @ pidfd::Error::Gone { .. }) => {
                Err(errors::already_finished(&format!("exec {exec_id:?} ({e})")))
            }
            Err(e) => Err(errors::internal("signal the exec", e)),
        }
    }

    /// Signals the init (or, with `all`, every process of the container) through the runtime.
    /// An init that has exited is `NOT_FOUND`, as is runtime's "container not running" (see
    /// [`errors::kill`]); the signal gate is held across `runc kill`, so the exit it causes is
    /// published after this call's reply.
    pub(super) async fn kill_init(
        &self,
        key: &Key,
        entry: &Entry,
        signal: u32,
        all: bool,
    ) -> Result<(), Status> {
        let signal = i32::try_from(signal)
            .map_err(|_| Status::invalid_argument(format!("signal {signal} is out of range")))?;
        let _gate = entry.signal_gate.lock().await;
        if lock(&entry.record).container.init.check_kill().is_err() {
            return Err(errors::already_finished(&format!(
                "the init of container {:?}",
                key.1.as_str()
            )));
        }
        // A folded container's `kill --all` would reach its siblings in the pod cgroup: the
        // runtime signals the init only, the rest of its PID namespace is signalled here.
        let folded = super::fold::joined(entry).filter(|_| all);
        entry
            .runc
            .kill(key.1.as_str(), signal, all && folded.is_none())
            .await
            .map_err(errors::kill)?;
        match folded {
            Some((pod, init)) => super::fold::signal_container(pod, init, signal).await,
            None => Ok(()),
        }
    }

    /// Pause or resume.
    pub(super) async fn set_paused(&self, key: Key, paused: bool) -> Result<(), Status> {
        let entry = self.entry(&key)?;
        let change = |p: &mut crate::model::Process| if paused { p.pause() } else { p.resume() };
        {
            let record = lock(&entry.record);
            change(&mut record.container.init.clone()).map_err(errors::refused)?;
        }
        let id = key.1.as_str();
        if let Some((pod, init)) = super::fold::joined(&entry) {
            // The freezer would stop the whole pod cgroup: stop this container's processes.
            super::fold::stop_container(pod, init, paused).await?;
        } else {
            let done = if paused {
                entry.runc.pause(id).await
            } else {
                entry.runc.resume(id).await
            };
            done.map_err(errors::runc)?;
        }
        let snapshot = {
            let mut record = lock(&entry.record);
            let _ = change(&mut record.container.init);
            entry.snapshot(&record)
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

    /// Deletes a stopped (or never started) exec: what it held, and its record.
    pub(super) async fn delete_exec(
        &self,
        key: &Key,
        entry: &Entry,
        exec_id: &str,
    ) -> Result<DeleteResponse, Status> {
        let (process, snapshot) = {
            let mut record = lock(&entry.record);
            let process = record
                .container
                .delete_exec(exec_id)
                .map_err(errors::refused)?;
            record.exec_identities.remove(exec_id);
            (process, entry.snapshot(&record))
        };
        lock(&entry.pending_execs).remove(exec_id);
        lock(&entry.execs).remove(exec_id);
        self.persist(key, entry, snapshot).await?;
        let exit = process.exit();
        Ok(DeleteResponse {
            pid: process.pid.unwrap_or(0) as u32,
            exit_status: exit.map_or(0, |e| e.code_for_containerd()),
            exited_at: exit.map(|e| timestamp(e.at)),
        })
    }

    /// Deletes a stopped (or never started) container: the runtime's container, the rootfs
    /// mounts, the record, what exitwatch holds; then `TaskDelete`.
    pub(super) async fn delete_container(
        &self,
        key: &Key,
        entry: &Entry,
    ) -> Result<DeleteResponse, Status> {
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
            smol::unblock(move || crate::rootfs::unmount_all(&bundle)).await;
        }
        self.forget_container(key, entry).await?;
        self.forget_probes(key);
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
        Ok(DeleteResponse {
            pid: pid as u32,
            exit_status,
            exited_at,
        })
    }
}
