//! Watching a process until it exits, and reporting its exit: the status resolved through the
//! exit pipeline (see `exits`), the model's releases published, the record saved, exitwatch's
//! copy dropped.

use super::Daemon;
use super::container::{Entry, Key};
use super::exits::{self, Source};
use super::outbox::ExitKey;
use crate::api::containerd::events as ev;
use crate::api::timestamp;
use crate::events::TaskEvent;
use crate::lock::lock;
use crate::model::Exit;
use pidfd::PidFd;
use std::sync::Arc;
use std::time::SystemTime;

impl Daemon {
    /// Waits for a process (the init, or the exec `exec_id`) to exit, resolves its status
    /// through the exit pipeline, and records and reports it.
    pub(super) fn watch_exit(
        &self,
        key: Key,
        entry: Arc<Entry>,
        exec_id: Option<String>,
        pidfd: PidFd,
    ) {
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
                    tracing::warn!(
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
    /// first (into its containerd's outbox), then saved, and only then dropped from exitwatch
    /// and settled in the outbox, so a daemon killed anywhere in between has it sent after the
    /// restart once: from the outbox if it is there, else published by recovery.
    pub(super) async fn init_exited(&self, key: &Key, entry: &Entry, exit: Exit) {
        self.unschedule_probes(key);
        let _gate = entry.start_gate.lock().await;
        // After any `Kill` in progress has answered (see `Entry::signal_gate`).
        let signals = entry.signal_gate.lock().await;
        let (reports, snapshot) = {
            let mut record = lock(&entry.record);
            let reports = record.container.init_exited(exit);
            (reports, entry.snapshot(&record))
        };
        let pid = snapshot.record.container.init.pid;
        // Before the exit is published (containerd deletes the task, and runc its cgroup, on
        // it): OOM kills in the container's cgroup make it `OOMKilled` for CRI. On cgroup v2
        // the OOM watcher may have published them already (`claim` keeps it to once).
        if let Some(memory) = entry.memory_cgroup.as_ref()
            && let Some(kills) = memory.oom_kills()
            && kills > 0
            && super::fold::claims_oom(entry, kills, &exit)
            && memory.claim(kills)
        {
            self.publish(
                &key.0,
                TaskEvent::Oom(ev::TaskOom {
                    container_id: key.1.to_string(),
                }),
            );
        }
        self.report_exits(key, entry, &reports).await;
        drop(signals);
        // Waiters are released before the save (file I/O); a Delete may come in between, and
        // a container deleted meanwhile (or a created one deleted with --force, which exits
        // after its record is gone) is not written back.
        let saved = self.persist(key, entry, snapshot).await;
        self.settle_exits(key, &reports, &saved);
        if let Ok(true) = saved
            && let Some(pid) = pid
        {
            self.inner.exits.forget(pid);
        }
    }

    /// Records an exec exit and reports it (with the container's held init exit, if this was
    /// the last live exec).
    pub(super) async fn exec_exited(&self, key: &Key, entry: &Entry, exec_id: &str, exit: Exit) {
        // After any `Kill` in progress has answered, and after the exec's `Start` has published
        // `TaskExecStarted` (see `Entry::signal_gate`).
        let signals = entry.signal_gate.lock().await;
        let (reports, snapshot) = {
            let mut record = lock(&entry.record);
            record.early_exits.remove(exec_id);
            let reports = record
                .container
                .exec_exited(exec_id, exit)
                .unwrap_or_default();
            (reports, entry.snapshot(&record))
        };
        let pid = snapshot
            .record
            .container
            .execs
            .get(exec_id)
            .and_then(|p| p.pid);
        self.report_exits(key, entry, &reports).await;
        drop(signals);
        let saved = self.persist(key, entry, snapshot).await;
        self.settle_exits(key, &reports, &saved);
        if let Ok(true) = saved
            && let Some(pid) = pid
        {
            self.inner.exits.forget(pid);
        }
    }

    /// Once the record says the processes of `reports` exited (saved, or its container gone),
    /// the outboxes need not keep their exits as evidence for recovery.
    fn settle_exits(
        &self,
        key: &Key,
        reports: &[crate::model::ExitReport],
        saved: &Result<bool, tonic::Status>,
    ) {
        if saved.is_ok() && !reports.is_empty() {
            let keys: Vec<ExitKey> = reports.iter().map(|r| exit_key(key, r)).collect();
            self.inner.forwarder.settle(&keys);
        }
    }

    /// Publishes exits the model released (but those an outbox already holds), and resolves
    /// their waiters.
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
            // A daemon killed after handing this exit over, before saving it: its outbox
            // sends it (again, if containerd took it); publishing it would be a duplicate.
            if self
                .inner
                .forwarder
                .handed_over(&exit_key(key, report))
                .is_some()
            {
                continue;
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
}

/// How an outbox knows the exit of `report`: as its `TaskExit` names it.
pub(super) fn exit_key(key: &Key, report: &crate::model::ExitReport) -> ExitKey {
    let id = report.exec_id.as_deref().unwrap_or(key.1.as_str());
    let pid = report.pid.unwrap_or(0) as u32;
    ExitKey::new(key.0.as_str(), key.1.as_str(), id, pid)
}
