//! Drivers that touch real cgroups: v1, v2 and hybrid, detected at runtime.
//!
//! [`Cgroups`] works below a configurable root (a relative path inside every hierarchy), so a
//! test or a service can keep to its own subtree. Paths given to its methods are relative to
//! that root and may not contain `..`.
//!
//! - v1: one directory per mounted controller hierarchy (`cpu`, `cpuacct`, `memory`, `pids`,
//!   `freezer`); freeze through `freezer.state`; kill-all by freeze → SIGKILL each → thaw.
//! - v2: one directory; controllers delegated down through `cgroup.subtree_control`, so only
//!   leaf cgroups hold processes; freeze through `cgroup.freeze`; kill-all through
//!   `cgroup.kill`.
//! - hybrid (v1 controllers plus a controller-less cgroup2 at `unified`, as systemd's hybrid
//!   mode mounts it): settings, stats and freezing on v1, and the directory mirrored in the
//!   unified hierarchy so that kill-all can use its atomic `cgroup.kill`.
//!
//! ```no_run
//! use cgroupfold::fs::Cgroups;
//! use cgroupfold::math::CgroupConfig;
//! let cg = Cgroups::detect()?.with_root(&format!("example-{}", std::process::id()))?;
//! cg.create("pod")?;
//! cg.apply("pod", &CgroupConfig::UNLIMITED)?;
//! cg.add_pid("pod", std::process::id())?;
//! println!("{:?}", cg.stats("pod")?);
//! # Ok::<(), cgroupfold::fs::FsError>(())
//! ```

mod error;
mod files;
mod membership;
mod mounts;
mod stats;
mod v1;
mod v2;

pub use error::FsError;
pub use membership::{Membership, ProcessCgroups};
pub use mounts::{Mounts, V1_CONTROLLERS};
pub use stats::Stats;

use crate::math::CgroupConfig;
use std::path::{Component, Path, PathBuf};
use std::time::{Duration, Instant};

/// How long [`Cgroups::remove`] retries `rmdir` while the kernel says the cgroup is busy.
pub const REMOVE_TIMEOUT: Duration = Duration::from_secs(5);
/// How long [`Cgroups::kill_all`] waits for the cgroup to empty.
pub const KILL_TIMEOUT: Duration = Duration::from_secs(5);

/// Which cgroup hierarchies a [`Cgroups`] drives.
///
/// ```
/// use cgroupfold::fs::Mode;
/// assert_ne!(Mode::V1, Mode::Hybrid);
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Mode {
    /// Controllers on v1 hierarchies only.
    V1,
    /// The unified hierarchy only.
    V2,
    /// v1 controllers, plus the cgroup2 hierarchy for membership and `cgroup.kill`.
    Hybrid,
}

/// A cgroup driver rooted at a subtree of this host's hierarchies.
///
/// ```no_run
/// let cg = cgroupfold::fs::Cgroups::detect()?;
/// println!("{:?}", cg.mode());
/// # Ok::<(), cgroupfold::fs::FsError>(())
/// ```
#[derive(Debug, Clone)]
pub struct Cgroups {
    mode: Mode,
    v1: v1::V1,
    v2: Option<v2::V2>,
    root: PathBuf,
}

fn check(path: &str) -> Result<PathBuf, FsError> {
    let p = Path::new(path);
    let plain = !path.is_empty() && p.components().all(|c| matches!(c, Component::Normal(_)));
    if !plain || path.contains("//") || path.ends_with('/') {
        return Err(FsError::BadPath {
            path: path.to_owned(),
        });
    }
    Ok(p.to_owned())
}

pub(crate) fn sigkill(pid: u32) {
    if let Some(pid) = i32::try_from(pid)
        .ok()
        .and_then(rustix::process::Pid::from_raw)
    {
        // ESRCH (already gone) is the outcome we want anyway.
        let _ = rustix::process::kill_process(pid, rustix::process::Signal::KILL);
    }
}

impl Cgroups {
    /// Detects the host's mode from `/proc/self/mountinfo`.
    pub fn detect() -> Result<Self, FsError> {
        let m = Mounts::read()?;
        let mode = match (m.v1.is_empty(), m.unified.is_some()) {
            (false, true) => Mode::Hybrid,
            (false, false) => Mode::V1,
            (true, true) => Mode::V2,
            (true, false) => return Err(FsError::NoCgroupMount),
        };
        Cgroups::with_mode(&m, mode)
    }

    /// A driver for `mode` over these mounts (for example [`Mode::V2`] over a hybrid host's
    /// `unified` mount, or [`Mode::V1`] ignoring it).
    ///
    /// ```no_run
    /// use cgroupfold::fs::{Cgroups, Mode, Mounts};
    /// let v2 = Cgroups::with_mode(&Mounts::read()?, Mode::V2)?;
    /// # Ok::<(), cgroupfold::fs::FsError>(())
    /// ```
    pub fn with_mode(mounts: &Mounts, mode: Mode) -> Result<Self, FsError> {
        let v1 = match mode {
            Mode::V2 => v1::V1 {
                mounts: Vec::new(),
                others: Vec::new(),
            },
            _ => v1::V1 {
                mounts: mounts.v1.clone(),
                others: mounts.other_v1.clone(),
            },
        };
        let v2 = if mode == Mode::V1 {
            None
        } else {
            mounts.unified.clone().map(|mount| v2::V2 { mount })
        };
        if (mode != Mode::V2 && v1.mounts.is_empty()) || (mode != Mode::V1 && v2.is_none()) {
            return Err(FsError::NoCgroupMount);
        }
        Ok(Cgroups {
            mode,
            v1,
            v2,
            root: PathBuf::new(),
        })
    }

    /// The same driver, working below `root` in every hierarchy.
    ///
    /// ```
    /// # let m = cgroupfold::fs::Mounts::parse("1 1 0:1 / /sys/fs/cgroup rw - cgroup2 cgroup2 rw\n");
    /// # let cg = cgroupfold::fs::Cgroups::with_mode(&m, cgroupfold::fs::Mode::V2).unwrap();
    /// assert!(cg.clone().with_root("../etc").is_err());
    /// assert!(cg.with_root("mine-42").is_ok());
    /// ```
    pub fn with_root(mut self, root: &str) -> Result<Self, FsError> {
        self.root = check(root)?;
        Ok(self)
    }

    /// The mode this driver runs in.
    pub fn mode(&self) -> Mode {
        self.mode
    }

    /// The directories `path` is in, one per hierarchy.
    ///
    /// ```
    /// # let m = cgroupfold::fs::Mounts::parse("1 1 0:1 / /sys/fs/cgroup rw - cgroup2 cgroup2 rw\n");
    /// # let cg = cgroupfold::fs::Cgroups::with_mode(&m, cgroupfold::fs::Mode::V2).unwrap();
    /// let cg = cg.with_root("r").unwrap();
    /// assert_eq!(cg.dirs("a/b").unwrap(), [std::path::PathBuf::from("/sys/fs/cgroup/r/a/b")]);
    /// ```
    pub fn dirs(&self, path: &str) -> Result<Vec<PathBuf>, FsError> {
        let rel = self.rel(path)?;
        let mut out: Vec<PathBuf> = self.v1.mounts.iter().map(|(_, m)| m.join(&rel)).collect();
        out.extend(self.v2.iter().map(|v| v.mount.join(&rel)));
        Ok(out)
    }

    fn rel(&self, path: &str) -> Result<PathBuf, FsError> {
        Ok(self.root.join(check(path)?))
    }

    /// Creates `path` (and missing parents) in every hierarchy. On v2, controllers are
    /// delegated to the children of each ancestor, which a populated ancestor refuses
    /// ([`FsError::NotALeaf`]).
    pub fn create(&self, path: &str) -> Result<(), FsError> {
        let rel = self.rel(path)?;
        if self.mode != Mode::V2 {
            self.v1.create(&rel)?;
        }
        match &self.v2 {
            Some(v2) => v2.create(&rel),
            None => Ok(()),
        }
    }

    /// Writes `cfg` (shares/weight, quota, memory limit, pids limit) to `path`.
    pub fn apply(&self, path: &str, cfg: &CgroupConfig) -> Result<(), FsError> {
        let rel = self.rel(path)?;
        match (&self.mode, &self.v2) {
            (Mode::V2, Some(v2)) => v2.apply(&rel, cfg),
            _ => self.v1.apply(&rel, cfg),
        }
    }

    /// Moves process `pid` (all its threads) into `path`. On v2 a cgroup that delegates
    /// controllers to child cgroups takes no process ([`FsError::NotALeaf`]).
    pub fn add_pid(&self, path: &str, pid: u32) -> Result<(), FsError> {
        let rel = self.rel(path)?;
        if self.mode != Mode::V2 {
            self.v1.add_pid(&rel, pid)?;
        }
        match &self.v2 {
            Some(v2) => v2.add_pid(&rel, pid),
            None => Ok(()),
        }
    }

    /// The processes directly in `path` (not in its children).
    pub fn pids(&self, path: &str) -> Result<Vec<u32>, FsError> {
        let rel = self.rel(path)?;
        match (&self.mode, &self.v2) {
            (Mode::V2, Some(v2)) => v2.pids(&rel),
            _ => self.v1.pids(&rel),
        }
    }

    /// Usage counters of `path`.
    pub fn stats(&self, path: &str) -> Result<Stats, FsError> {
        let rel = self.rel(path)?;
        match (&self.mode, &self.v2) {
            (Mode::V2, Some(v2)) => v2.stats(&rel),
            _ => self.v1.stats(&rel),
        }
    }

    /// Freezes (`true`) or thaws (`false`) every process in `path`, waiting until the kernel
    /// reports the new state.
    pub fn set_frozen(&self, path: &str, frozen: bool) -> Result<(), FsError> {
        let rel = self.rel(path)?;
        match (&self.mode, &self.v2) {
            (Mode::V2, Some(v2)) => v2.freeze(&rel, frozen),
            _ => self.v1.freeze(&rel, frozen),
        }
    }

    /// SIGKILLs every process in `path` and in the cgroups below it, and waits until they are
    /// all gone (v2 `cgroup.kill` reaches the subtree; v1 and old v2 kernels are made to
    /// match). A frozen cgroup is killed
    /// too (on hybrid hosts its v1 freezer is thawed so that the kills land; a frozen v1
    /// *ancestor* must be thawed by the caller).
    pub fn kill_all(&self, path: &str) -> Result<(), FsError> {
        let rel = self.rel(path)?;
        match &self.v2 {
            Some(v2) if v2.has_kill(&rel) => {
                v2.kill(&rel)?;
                if self.mode == Mode::Hybrid {
                    // v1-frozen tasks do not act on SIGKILL until thawed (v2-frozen ones do).
                    self.v1.thaw_now(&rel)?;
                }
                v2.wait_empty(&rel)
            }
            Some(v2) if self.mode == Mode::V2 => {
                // Kernels before 5.14: freeze the subtree so nothing forks, kill each, thaw.
                let dir = v2.mount.join(&rel);
                files::wait_until(&dir, KILL_TIMEOUT, "processes survived SIGKILL", || {
                    v2.freeze(&rel, true)?;
                    files::read_pids_tree(&dir)?.into_iter().for_each(sigkill);
                    v2.freeze(&rel, false)?;
                    Ok(files::read_pids_tree(&dir)?.is_empty())
                })
            }
            _ => self.v1.kill_all(&rel),
        }
    }

    /// Removes `path` and its children in every hierarchy (on v1 also in the hierarchies this
    /// driver does not configure, where runc creates the same path), retrying while busy (up to
    /// [`REMOVE_TIMEOUT`]). Removing what does not exist succeeds.
    pub fn remove(&self, path: &str) -> Result<(), FsError> {
        self.remove_rel(&self.rel(path)?)
    }

    /// Removes the driver's root itself (and everything below it).
    pub fn remove_root(&self) -> Result<(), FsError> {
        if self.root.as_os_str().is_empty() {
            return Err(FsError::BadPath {
                path: String::new(),
            });
        }
        self.remove_rel(&self.root.clone())
    }

    fn remove_rel(&self, rel: &Path) -> Result<(), FsError> {
        let deadline = Instant::now() + REMOVE_TIMEOUT;
        if self.mode != Mode::V2 {
            self.v1.remove(rel, deadline)?;
        }
        match &self.v2 {
            Some(v2) => v2.remove(rel, deadline),
            None => Ok(()),
        }
    }
}
