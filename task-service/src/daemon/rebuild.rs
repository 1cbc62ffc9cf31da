//! Taking back a container whose record cannot be read: its runtime still knows it.
//!
//! An unreadable record (truncated JSON, a disk error) must never cost a live container. Its
//! container is looked up in the runtime roots of its namespace; if the runtime knows it, a
//! record is rebuilt from the runtime's state (init PID, status, bundle) and the bundle
//! (terminal, mounted rootfs), the unreadable file is set aside as `<id>.json.unreadable` for a
//! human, and the container is taken back as any other. What only the lost record knew (stdio
//! URIs, execs) stays lost. If no runtime knows it, the file is left where it is.

use super::Daemon;
use super::container::Key;
use super::record::Record;
use super::recover::{Recovery, Roots, note_root};
use super::reopen::Reopened;
use crate::model::{Container, ProcessState};
use pidfd::PidFd;
use runc_driver::{Runc, State, Status as RuntimeStatus};
use std::path::{Path, PathBuf};
use std::time::SystemTime;

impl Daemon {
    /// Rebuilds and takes back the container of the unreadable record `key` if a runtime root
    /// of its namespace knows it; reports what it did (or why not) in `report`.
    pub(super) async fn rebuild(&self, key: Key, roots: &mut Roots, report: &mut Recovery) {
        let name = format!("{}/{}", key.0, key.1);
        let Some((root, runc, state)) = self.find_in_roots(&key, roots).await else {
            report.skipped.push(format!(
                "{name}: no runtime root of namespace {} knows it; its unreadable record was \
                 left in place",
                key.0
            ));
            return;
        };
        let record = rebuilt_record(&runc, root, &state);
        note_root(roots, &key.0, &key.1, &record, true);
        let aside = self.inner.store.set_aside(&key.0, &key.1, "unreadable");
        if let Err(e) = aside.and_then(|_| self.inner.store.save(&key.0, &key.1, &record)) {
            report.skipped.push(format!("{name}: not rebuilt: {e}"));
            return;
        }
        let live = match record.identity {
            Some(_) => PidFd::open(state.pid).map_or(Reopened::Gone, Reopened::Live),
            None => Reopened::Gone,
        };
        report.rebuilt.push(name.clone());
        self.take_back(key, name, record, runc, live, report).await;
    }

    /// The first runtime root of `key`'s namespace whose runtime knows the container: the root,
    /// its driver and the container's state.
    async fn find_in_roots(&self, key: &Key, roots: &Roots) -> Option<(PathBuf, Runc, State)> {
        let mut candidates: Vec<_> = roots.iter().filter(|(_, r)| r.ns == key.0).collect();
        candidates.sort_by(|a, b| a.0.cmp(b.0));
        for (path, root) in candidates {
            let Ok(runc) = self.runc_for(&root.binary, path, root.systemd_cgroup) else {
                continue;
            };
            if let Ok(state) = runc.state(key.1.as_str()).await {
                return Some((path.clone(), runc, state));
            }
        }
        None
    }
}

/// A record from what the runtime says of the container and what its bundle holds.
fn rebuilt_record(runc: &Runc, root: PathBuf, state: &State) -> Record {
    let bundle = PathBuf::from(&state.bundle);
    let alive = state.pid > 0 && !matches!(state.status, RuntimeStatus::Stopped);
    let identity = alive
        .then(|| PidFd::open(state.pid).ok()?.identity().ok())
        .flatten();
    let mut container = Container::new((state.pid > 0).then_some(state.pid));
    if !matches!(
        state.status,
        RuntimeStatus::Created | RuntimeStatus::Creating
    ) {
        let _ = container.init.start();
    }
    if matches!(state.status, RuntimeStatus::Paused) {
        let _ = container.init.pause();
    }
    debug_assert!(!matches!(container.init.state, ProcessState::Stopped(_)));
    Record {
        fold: None,
        format: Default::default(),
        terminal: spec_terminal(&bundle),
        rootfs_mounted: is_mount_point(&bundle.join("rootfs")),
        bundle,
        stdin: String::new(),
        stdout: String::new(),
        stderr: String::new(),
        runtime: runc.binary().to_owned(),
        runtime_root: root,
        creating: false,
        systemd_cgroup: false,
        identity,
        container,
        exec_identities: Default::default(),
        io_owner: Default::default(),
        early_exits: Default::default(),
        created_at: SystemTime::now(),
    }
}

/// Whether the bundle's `config.json` gives its process a terminal (false if unreadable).
fn spec_terminal(bundle: &Path) -> bool {
    oci_spec::runtime::Spec::load(bundle.join("config.json"))
        .ok()
        .and_then(|spec| spec.process().as_ref().and_then(|p| p.terminal()))
        .unwrap_or(false)
}

/// Whether `path` is a mount point of this mount namespace (then the daemon mounted the
/// rootfs, and unmounts it at `Delete`).
fn is_mount_point(path: &Path) -> bool {
    let Ok(mountinfo) = std::fs::read_to_string("/proc/self/mountinfo") else {
        return false;
    };
    let wanted = path.to_string_lossy();
    mountinfo
        .lines()
        .filter_map(|line| line.split(' ').nth(4))
        .any(|point| point == wanted)
}
