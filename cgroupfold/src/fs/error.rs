//! The driver's typed errors.

use std::io;
use std::path::PathBuf;

/// Why a cgroup operation failed.
///
/// ```
/// use cgroupfold::fs::FsError;
/// let e = FsError::BadPath { path: "../x".into() };
/// assert!(e.to_string().contains("../x"));
/// ```
#[derive(Debug, thiserror::Error)]
pub enum FsError {
    /// No cgroup filesystem is mounted where the driver looked.
    #[error(
        "no cgroup hierarchy found in /proc/self/mountinfo: mount cgroup v1 controllers or cgroup2"
    )]
    NoCgroupMount,
    /// A path that would escape the driver's root, or is empty.
    #[error(
        "cgroup path {path:?} is not a relative path of plain names: no '..', no leading '/', no empty parts"
    )]
    BadPath {
        /// The refused path.
        path: String,
    },
    /// A setting needs a controller this host does not offer for the cgroup.
    #[error(
        "controller {controller} is not available at {path}: enable it (v2 cgroup.subtree_control) or mount it (v1)"
    )]
    ControllerUnavailable {
        /// The controller (`cpu`, `memory`, `pids`, `freezer`).
        controller: &'static str,
        /// The cgroup directory.
        path: PathBuf,
    },
    /// cgroup v2's "no internal processes" rule: below the root, a cgroup either holds
    /// processes or delegates controllers to child cgroups (v1 allows both).
    ///
    /// ```
    /// use cgroupfold::fs::FsError;
    /// let e = FsError::NotALeaf { path: "/sys/fs/cgroup/pod".into(), what: "it holds processes" };
    /// assert!(e.to_string().contains("/sys/fs/cgroup/pod"));
    /// ```
    #[error(
        "cgroup v2 lets {path} hold processes or delegate controllers to child cgroups, not both ({what}): keep processes in leaf cgroups (move them into a child first, or remove the children)"
    )]
    NotALeaf {
        /// The cgroup directory.
        path: PathBuf,
        /// Which of the two it already does.
        what: &'static str,
    },
    /// A file or directory operation failed.
    #[error("{op} {path}: {source}")]
    Io {
        /// What was being done (`write`, `read`, `mkdir`, `rmdir`).
        op: &'static str,
        /// The file or directory.
        path: PathBuf,
        /// The OS error.
        source: io::Error,
    },
    /// A cgroup file held something the driver could not parse.
    #[error("unexpected content {content:?} in {path}")]
    Parse {
        /// The file.
        path: PathBuf,
        /// What it held.
        content: String,
    },
    /// The cgroup still had processes (or was still freezing) when time ran out.
    #[error("cgroup {path} still busy after {waited_ms} ms: {what}")]
    Busy {
        /// The cgroup directory.
        path: PathBuf,
        /// How long the driver waited.
        waited_ms: u64,
        /// What it was waiting for.
        what: &'static str,
    },
}
