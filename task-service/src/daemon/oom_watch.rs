//! Watching OOM kills while containers run, on cgroup v2, as containerd-shim-runc-v2 does: each
//! container's `memory.events` is watched with inotify, and `TaskOOM` is published as soon as its
//! `oom_kill` count grows.
//!
//! Reading the count only when the init exits (`oom.rs`) is not enough on a systemd node: runc's
//! systemd cgroup driver puts the container in a transient scope, and systemd removes the scope
//! and its cgroup as soon as its last process has exited, often before the daemon has read the
//! count. The kernel updates `memory.events` when it kills, before the killed process has even
//! exited, so the watcher reads it while the cgroup is still there.
//!
//! One inotify instance serves the node, read by one task on the daemon's executor (started with
//! the first watch): one watch per container, not a file descriptor, task or thread. The number
//! of watches is bounded ([`MAX_WATCHES`], and the kernel's `max_user_watches`); a container
//! beyond either is still reported at its exit, as on cgroup v1. Folded containers (whose
//! cgroup is their pod's) are not watched: whose kill a pod count is needs the exit's signal.
//! A watch is removed when its container is deleted; the kernel drops it itself when systemd
//! removes the cgroup (`IN_IGNORED`).

use super::Daemon;
use super::container::{Entry, Key};
use crate::api::containerd::events as ev;
use crate::events::TaskEvent;
use crate::lock::lock;
use async_io::Async;
use rustix::fs::inotify;
use std::collections::HashMap;
use std::mem::MaybeUninit;
use std::os::fd::OwnedFd;
use std::sync::{Arc, Mutex, Weak};

/// At most this many containers are watched at once (each watch costs the kernel about 1 KiB
/// of the user's inotify allowance).
pub(super) const MAX_WATCHES: usize = 65_536;

/// The node's OOM watches: the inotify instance once the first one is added, and which
/// container each watch descriptor stands for.
#[derive(Default)]
pub(super) struct OomWatches {
    state: Mutex<Option<Watching>>,
}

struct Watching {
    inotify: Arc<Async<OwnedFd>>,
    /// Watch descriptor to the containers whose `memory.events` it is (one, unless containers
    /// share a cgroup, in which case the kernel hands out the same descriptor).
    by_wd: HashMap<i32, Vec<Watched>>,
    by_key: HashMap<Key, i32>,
    /// Whether a refused watch was already logged (once per daemon, not per container).
    refusal_logged: bool,
}

struct Watched {
    key: Key,
    entry: Weak<Entry>,
}

impl Daemon {
    /// Starts watching the OOM kills of a container whose init runs (no-op off cgroup v2, for a
    /// folded container, or past the bounds: its kills are then read at its exit).
    pub(super) fn watch_oom(&self, key: &Key, entry: &Arc<Entry>) {
        let Some(file) = entry.memory_cgroup.as_ref().and_then(|m| m.events_file()) else {
            return;
        };
        if super::fold::joined(entry).is_some() {
            return;
        }
        let mut state = lock(&self.inner.oom_watches.state);
        if state.is_none() {
            match self.start_oom_watcher() {
                Ok(watching) => *state = Some(watching),
                Err(e) => {
                    eprintln!(
                        "shimless: cannot watch OOM kills with inotify ({e}); they are read at each exit"
                    );
                    return;
                }
            }
        }
        let Some(watching) = state.as_mut() else {
            return;
        };
        if watching.by_key.contains_key(key) {
            return;
        }
        let added = if watching.by_key.len() >= MAX_WATCHES {
            Err(format!("{MAX_WATCHES} containers are watched already"))
        } else {
            inotify::add_watch(
                watching.inotify.get_ref(),
                file,
                inotify::WatchFlags::MODIFY,
            )
            .map_err(|e| format!("{}: {e}", file.display()))
        };
        match added {
            Ok(wd) => {
                watching.by_key.insert(key.clone(), wd);
                watching.by_wd.entry(wd).or_default().push(Watched {
                    key: key.clone(),
                    entry: Arc::downgrade(entry),
                });
            }
            Err(why) if !watching.refusal_logged => {
                watching.refusal_logged = true;
                eprintln!(
                    "shimless: OOM kills of {}/{} are read at its exit only (no watch: {why}); further refusals are not logged",
                    key.0.as_str(),
                    key.1.as_str()
                );
            }
            Err(_) => {}
        }
    }

    /// Stops watching a container's OOM kills (at its deletion).
    pub(super) fn unwatch_oom(&self, key: &Key) {
        let mut state = lock(&self.inner.oom_watches.state);
        let Some(watching) = state.as_mut() else {
            return;
        };
        let Some(wd) = watching.by_key.remove(key) else {
            return;
        };
        let Some(list) = watching.by_wd.get_mut(&wd) else {
            return;
        };
        list.retain(|w| &w.key != key);
        if list.is_empty() {
            watching.by_wd.remove(&wd);
            // Fails when the kernel dropped the watch already (the cgroup is gone): nothing to do.
            let _ = inotify::remove_watch(watching.inotify.get_ref(), wd);
        }
    }

    /// Makes the inotify instance and starts the task that reads it.
    fn start_oom_watcher(&self) -> std::io::Result<Watching> {
        let fd = inotify::init(inotify::CreateFlags::CLOEXEC | inotify::CreateFlags::NONBLOCK)?;
        let inotify = Arc::new(Async::new(fd)?);
        let daemon = Arc::downgrade(&self.inner);
        let reader = inotify.clone();
        self.inner
            .ex
            .spawn(async move {
                let mut buf = vec![MaybeUninit::<u8>::uninit(); 8192];
                while reader.readable().await.is_ok() {
                    let events = drain(reader.get_ref(), &mut buf);
                    let Some(inner) = daemon.upgrade() else {
                        return;
                    };
                    Daemon { inner }.oom_events(&events);
                }
            })
            .detach();
        Ok(Watching {
            inotify,
            by_wd: HashMap::new(),
            by_key: HashMap::new(),
            refusal_logged: false,
        })
    }

    /// Handles what the kernel reported: a changed `memory.events` is read, and new kills are
    /// published; a watch the kernel dropped is forgotten.
    fn oom_events(&self, events: &[(i32, inotify::ReadFlags)]) {
        for &(wd, flags) in events {
            let targets: Vec<(Key, Arc<Entry>)> = {
                let mut state = lock(&self.inner.oom_watches.state);
                let Some(watching) = state.as_mut() else {
                    return;
                };
                if flags.contains(inotify::ReadFlags::IGNORED) {
                    if let Some(list) = watching.by_wd.remove(&wd) {
                        for w in list {
                            watching.by_key.remove(&w.key);
                        }
                    }
                    continue;
                }
                let live = |list: &Vec<Watched>| -> Vec<(Key, Arc<Entry>)> {
                    list.iter()
                        .filter_map(|w| Some((w.key.clone(), w.entry.upgrade()?)))
                        .collect()
                };
                if flags.contains(inotify::ReadFlags::QUEUE_OVERFLOW) {
                    // Events were lost: every watched container is read again.
                    watching.by_wd.values().flat_map(live).collect()
                } else {
                    watching.by_wd.get(&wd).map(live).unwrap_or_default()
                }
            };
            for (key, entry) in targets {
                self.oom_changed(&key, &entry);
            }
        }
    }

    /// Publishes `TaskOOM` if the container's cgroup counts kills not published yet.
    fn oom_changed(&self, key: &Key, entry: &Arc<Entry>) {
        let Some(memory) = entry.memory_cgroup.as_ref() else {
            return;
        };
        let Some(kills) = memory.oom_kills() else {
            return;
        };
        // A container deleted meanwhile gets no event after its `TaskDelete`.
        let current = lock(&self.inner.containers)
            .get(key)
            .is_some_and(|e| Arc::ptr_eq(e, entry));
        if current && memory.claim(kills) {
            self.publish(
                &key.0,
                TaskEvent::Oom(ev::TaskOom {
                    container_id: key.1.to_string(),
                }),
            );
        }
    }
}

/// Every event queued on the (non-blocking) inotify instance now: watch descriptor and flags.
fn drain(fd: &OwnedFd, buf: &mut [MaybeUninit<u8>]) -> Vec<(i32, inotify::ReadFlags)> {
    let mut events = Vec::new();
    let mut reader = inotify::Reader::new(fd, buf);
    loop {
        match reader.next() {
            Ok(event) => events.push((event.wd(), event.events())),
            Err(rustix::io::Errno::INTR) => continue,
            // AGAIN: nothing more queued. Anything else (none is expected from a read of an
            // inotify instance) ends this round too; the next wake reads again.
            Err(_) => return events,
        }
    }
}
