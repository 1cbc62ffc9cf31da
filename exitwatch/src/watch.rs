//! [`ExitWatch`]: load (or find) the program, track processes, read their exits.

use crate::attach::AttachMode;
use crate::error::Error;
use crate::record::{Exit, ExitRecord, Track};
use aya::maps::{Array, HashMap, Map, MapData, MapError};
use aya::programs::links::{FdLink, PinnedLink};
use aya::programs::loaded_programs;
use aya::{EbpfLoader, include_bytes_aligned};
use std::path::{Path, PathBuf};

static OBJECT: &[u8] = include_bytes_aligned!(concat!(env!("OUT_DIR"), "/exit_tracker.bpf.o"));

/// The default pin directory.
pub const DEFAULT_PIN_DIR: &str = "/sys/fs/bpf/shimless";
/// The layout version: pins live in `<pin_dir>/<LAYOUT>/`, so another layout never meets them.
pub const LAYOUT: &str = "exitwatch-v1";
/// How many processes can be tracked at once, and how many exits are kept (the oldest unread
/// exit is dropped beyond that: `exited_events` is an LRU map).
pub const CAPACITY: u32 = 65_536;

const TRACKING: &str = "tracing_tasks";
const EVENTS: &str = "exited_events";
const COUNTERS: &str = "exitwatch_counters";
const LINK: &str = "link";

/// Counts that describe the watch now.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Stats {
    /// Processes tracked and not yet exited.
    pub tracked: u32,
    /// Exits recorded and not yet taken.
    pub recorded: u32,
    /// Capacity of each map.
    pub capacity: u32,
    /// Exits recorded since the program was loaded.
    pub recorded_total: u64,
    /// Exits of a tracked PID whose start time did not match (another process had it).
    pub start_mismatches: u64,
}

/// The exit watch: the loaded (or found) program and its pinned maps.
///
/// ```no_run
/// let mut watch = exitwatch::ExitWatch::open_or_load(exitwatch::DEFAULT_PIN_DIR)?;
/// let child = std::process::Command::new("true").spawn()?;
/// watch.track(child.id(), 7)?;
/// // ... even if this process is killed now, the exit is recorded; a new ExitWatch reads it:
/// if let Some(exit) = watch.take(child.id())? {
///     println!("{} (cookie {}) ended: {:?}", exit.pid, exit.cookie, exit.status);
/// }
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
pub struct ExitWatch {
    tracking: HashMap<MapData, u32, Track>,
    events: HashMap<MapData, u32, ExitRecord>,
    counters: Array<MapData, u64>,
    dir: PathBuf,
}

impl std::fmt::Debug for ExitWatch {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ExitWatch")
            .field("dir", &self.dir)
            .finish_non_exhaustive()
    }
}

/// Opens the map pinned at `dir/name` and checks it has this version's key and value sizes.
fn open_checked(dir: &Path, name: &'static str, key: u32, value: u32) -> Result<MapData, Error> {
    let data = MapData::from_pin(dir.join(name)).map_err(bpf("open a pinned map"))?;
    let info = data.info().map_err(bpf("read a pinned map"))?;
    if (info.key_size(), info.value_size()) != (key, value) {
        return Err(Error::PinLayoutMismatch {
            map: name,
            expected: format!("key {key} B, value {value} B"),
            found: format!("key {} B, value {} B", info.key_size(), info.value_size()),
            dir: dir.into(),
        });
    }
    Ok(data)
}

/// Each map's name, key size and value size in this layout.
const MAPS: [(&str, u32, u32); 3] = [(TRACKING, 4, 16), (EVENTS, 4, 32), (COUNTERS, 4, 8)];

/// The pinned map `name`, layout-checked against [`MAPS`].
fn open_map(dir: &Path, name: &'static str) -> Result<Map, Error> {
    let (_, key, value) = MAPS
        .into_iter()
        .find(|(n, _, _)| *n == name)
        .ok_or_else(|| Error::Bpf {
            what: "find a map",
            source: format!("{name} is not one of this layout's maps").into(),
        })?;
    Map::from_map_data(open_checked(dir, name, key, value)?).map_err(bpf("open a pinned map"))
}

fn bpf(what: &'static str) -> impl FnOnce(MapError) -> Error {
    move |e| Error::Bpf {
        what,
        source: Box::new(e),
    }
}

impl ExitWatch {
    /// Finds the program and maps pinned under `pin_dir`, or loads, attaches and pins them
    /// (attach mode [`AttachMode::Auto`]). Idempotent, and safe to call from several processes
    /// at once: an exclusive `flock` on `pin_dir` serializes loaders.
    pub fn open_or_load(pin_dir: impl AsRef<Path>) -> Result<ExitWatch, Error> {
        Self::open_or_load_with(pin_dir, AttachMode::Auto)
    }

    /// As [`ExitWatch::open_or_load`], with the attach mode for a fresh load.
    pub fn open_or_load_with(
        pin_dir: impl AsRef<Path>,
        mode: AttachMode,
    ) -> Result<ExitWatch, Error> {
        let base = pin_dir.as_ref();
        if !Path::new("/sys/kernel/btf/vmlinux").exists() {
            return Err(Error::NoBtf);
        }
        crate::mounts::ensure_bpffs(base)?;
        std::fs::create_dir_all(base).map_err(|source| Error::Io {
            what: "create",
            path: base.into(),
            source,
        })?;
        let lock = rustix::fs::open(
            base,
            rustix::fs::OFlags::RDONLY
                | rustix::fs::OFlags::DIRECTORY
                | rustix::fs::OFlags::CLOEXEC,
            rustix::fs::Mode::empty(),
        )
        .map_err(|e| Error::Io {
            what: "open",
            path: base.into(),
            source: e.into(),
        })?;
        rustix::fs::flock(&lock, rustix::fs::FlockOperation::LockExclusive).map_err(|e| {
            Error::Io {
                what: "lock",
                path: base.into(),
                source: e.into(),
            }
        })?;
        let dir = base.join(LAYOUT);
        std::fs::create_dir_all(&dir).map_err(|source| Error::Io {
            what: "create",
            path: dir.clone(),
            source,
        })?;
        let watch = match Self::open_pinned(&dir)? {
            Some(watch) => watch,
            None => Self::load(&dir, mode)?,
        };
        drop(lock);
        Ok(watch)
    }

    /// The pinned state, if a complete one (link and maps) is there.
    fn open_pinned(dir: &Path) -> Result<Option<ExitWatch>, Error> {
        let link_path = dir.join(LINK);
        if !link_path.exists() {
            return Ok(None);
        }
        let link: FdLink = match PinnedLink::from_pin(&link_path) {
            Ok(pinned) => pinned.into(),
            Err(_) => {
                // A pin that no longer opens (a stale file): load afresh.
                let _ = std::fs::remove_file(&link_path);
                return Ok(None);
            }
        };
        let name = program_name(&link)?;
        if !name.starts_with("exitwatch_") {
            return Err(Error::ForeignLink {
                path: link_path,
                found: name,
            });
        }
        Self::open_maps(dir).map(Some)
    }

    fn open_maps(dir: &Path) -> Result<ExitWatch, Error> {
        Ok(ExitWatch {
            tracking: HashMap::try_from(open_map(dir, TRACKING)?).map_err(bpf(TRACKING))?,
            events: HashMap::try_from(open_map(dir, EVENTS)?).map_err(bpf(EVENTS))?,
            counters: Array::try_from(open_map(dir, COUNTERS)?).map_err(bpf(COUNTERS))?,
            dir: dir.into(),
        })
    }

    fn load(dir: &Path, mode: AttachMode) -> Result<ExitWatch, Error> {
        // Maps pinned by a loader that died before pinning its link are reused by name: check
        // that they have this version's layout first.
        for (name, key, value) in MAPS {
            if dir.join(name).exists() {
                open_checked(dir, name, key, value)?;
            }
        }
        let mut ebpf = EbpfLoader::new()
            .default_map_pin_directory(dir)
            .load(OBJECT)
            .map_err(Error::from_load)?;
        let link = crate::attach::attach(&mut ebpf, mode).map_err(Error::from_attach_failures)?;
        // The link is pinned last: a crash before this leaves maps only, which the next loader
        // reuses (checked above); a crash after it leaves a complete state.
        link.pin(dir.join(LINK)).map_err(|e| Error::Bpf {
            what: "pin the link",
            source: Box::new(e),
        })?;
        // Everything is pinned now: open it the same way a later loader will.
        Self::open_maps(dir)
    }

    /// How the program is attached: read from the pinned link's program, so it is right for a
    /// watch this process found pinned as much as for one it loaded. `None` when the link
    /// cannot be read (e.g. it was unpinned meanwhile).
    ///
    /// ```no_run
    /// use exitwatch::{AttachMode, ExitWatch};
    /// let watch = ExitWatch::open_or_load_with("/sys/fs/bpf/shimless", AttachMode::RawTracePoint)?;
    /// // A fresh load attaches as asked; a pinned program keeps the mode it was loaded with.
    /// println!("{:?}", watch.attach_mode());
    /// # Ok::<(), exitwatch::Error>(())
    /// ```
    pub fn attach_mode(&self) -> Option<AttachMode> {
        let link: FdLink = PinnedLink::from_pin(self.dir.join(LINK)).ok()?.into();
        match program_name(&link).ok()?.as_str() {
            "exitwatch_btf" => Some(AttachMode::BtfTracePoint),
            "exitwatch_tp" => Some(AttachMode::TracePoint),
            "exitwatch_raw" => Some(AttachMode::RawTracePoint),
            _ => None,
        }
    }

    /// Starts recording the exit of process `pid` (a PID of the initial PID namespace; from
    /// inside a container's PID namespace, use the host PID), tagged with `cookie`.
    ///
    /// Track a process before it can exit — e.g. a container created but not started — since
    /// an exit before `track` is not recorded. The process is checked to be alive, and to be
    /// the same process (start time) before and after it was registered; else [`Error::Gone`].
    pub fn track(&mut self, pid: u32, cookie: u64) -> Result<(), Error> {
        let before = start_time(pid).ok_or(Error::Gone { pid })?;
        self.tracking
            .insert(
                pid,
                Track {
                    cookie,
                    start_boottime: 0,
                },
                0,
            )
            .map_err(|e| match e {
                MapError::SyscallError(ref s) if s.io_error.raw_os_error() == Some(7) => {
                    Error::MapFull {
                        pid,
                        capacity: CAPACITY,
                    }
                }
                e => Error::Bpf {
                    what: "track",
                    source: Box::new(e),
                },
            })?;
        match start_time(pid) {
            Some(after) if after == before => Ok(()),
            // Exited in between: then its exit was recorded, which is what tracking is for.
            None if self.events.get(&pid, 0).is_ok() => Ok(()),
            _ => {
                let _ = self.tracking.remove(&pid);
                Err(Error::Gone { pid })
            }
        }
    }

    /// Stops tracking `pid`; `false` if it was not tracked.
    pub fn untrack(&mut self, pid: u32) -> Result<bool, Error> {
        match self.tracking.remove(&pid) {
            Ok(()) => Ok(true),
            Err(MapError::KeyNotFound) => Ok(false),
            // aya reports a delete of a missing key as the syscall's ENOENT.
            Err(MapError::SyscallError(ref e)) if e.io_error.raw_os_error() == Some(2) => Ok(false),
            Err(e) => Err(Error::Bpf {
                what: "untrack",
                source: Box::new(e),
            }),
        }
    }

    /// Reads the recorded exit of `pid`, if there is one, and leaves it in place: for a
    /// supervisor that drops it with [`ExitWatch::take`] only once it has made the exit durable
    /// elsewhere, so that a crash in between finds it again.
    ///
    /// ```no_run
    /// let mut watch = exitwatch::ExitWatch::open_or_load("/sys/fs/bpf/exitwatch")?;
    /// if let Some(exit) = watch.peek(4242)? {
    ///     println!("{exit:?}"); // ... saved somewhere durable, then:
    ///     watch.take(4242)?;
    /// }
    /// # Ok::<(), exitwatch::Error>(())
    /// ```
    pub fn peek(&self, pid: u32) -> Result<Option<Exit>, Error> {
        match self.events.get(&pid, 0) {
            Ok(record) => Exit::from_record(pid, record).map(Some),
            Err(MapError::KeyNotFound) => Ok(None),
            Err(e) => Err(Error::Bpf {
                what: "read an exit",
                source: Box::new(e),
            }),
        }
    }

    /// Takes (reads and removes) the recorded exit of `pid`, if there is one.
    pub fn take(&mut self, pid: u32) -> Result<Option<Exit>, Error> {
        match self.events.get(&pid, 0) {
            Ok(record) => {
                let _ = self.events.remove(&pid);
                Exit::from_record(pid, record).map(Some)
            }
            Err(MapError::KeyNotFound) => Ok(None),
            Err(e) => Err(Error::Bpf {
                what: "read an exit",
                source: Box::new(e),
            }),
        }
    }

    /// Takes every recorded exit (what a restarted supervisor does first).
    pub fn drain(&mut self) -> Result<Vec<Exit>, Error> {
        let pids: Vec<u32> = self.events.keys().filter_map(Result::ok).collect();
        let mut exits = Vec::with_capacity(pids.len());
        for pid in pids {
            if let Some(exit) = self.take(pid)? {
                exits.push(exit);
            }
        }
        exits.sort_by_key(|e| e.exited_after_boot);
        Ok(exits)
    }

    /// Counts: tracked, recorded, capacity, and the program's counters.
    pub fn stats(&self) -> Result<Stats, Error> {
        let counter = |i| self.counters.get(&i, 0).map_err(bpf("read a counter"));
        Ok(Stats {
            tracked: self.tracking.keys().filter_map(Result::ok).count() as u32,
            recorded: self.events.keys().filter_map(Result::ok).count() as u32,
            capacity: CAPACITY,
            recorded_total: counter(0)?,
            start_mismatches: counter(1)?,
        })
    }

    /// The directory holding this version's pins.
    pub fn pin_dir(&self) -> &Path {
        &self.dir
    }

    /// Detaches the program and removes every pin (tracked processes are no longer watched).
    pub fn unload(self) -> Result<(), Error> {
        let dir = self.dir.clone();
        drop(self);
        if let Ok(link) = PinnedLink::from_pin(dir.join(LINK)) {
            link.unpin().map_err(|e| Error::Bpf {
                what: "unpin the link",
                source: Box::new(e),
            })?;
        }
        for name in [TRACKING, EVENTS, COUNTERS] {
            let _ = std::fs::remove_file(dir.join(name));
        }
        let _ = std::fs::remove_dir(&dir);
        if let Some(base) = dir.parent() {
            let _ = std::fs::remove_dir(base);
        }
        Ok(())
    }
}

/// The start time of `pid` (`/proc/<pid>/stat` field 22, through shimless-pidfd), or `None`
/// if no such process.
fn start_time(pid: u32) -> Option<u64> {
    pidfd::start_time(i32::try_from(pid).ok()?).ok()
}

/// The name of the program behind `link` (links of a tp_btf program report type
/// RawTracePoint: the program's name is what tells them apart); empty when it is not found.
fn program_name(link: &FdLink) -> Result<String, Error> {
    let info = link.info().map_err(|e| Error::Bpf {
        what: "read the pinned link",
        source: Box::new(e),
    })?;
    Ok(loaded_programs()
        .filter_map(Result::ok)
        .find(|p| p.id() == info.program_id())
        .and_then(|p| p.name_as_str().map(str::to_string))
        .unwrap_or_default())
}
