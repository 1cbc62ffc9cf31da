//! Why the private containerd could not be started, driven or cleaned up.

use std::io;
use std::path::PathBuf;
use std::process::ExitStatus;

use crate::image::ImageError;

/// Why the private containerd could not be started, driven or cleaned up.
///
/// ```
/// use integration::containerd::ContainerdError;
/// let err = ContainerdError::Leftover("mount /tmp/x/rootfs".into());
/// assert!(err.to_string().contains("/tmp/x/rootfs"));
/// ```
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ContainerdError {
    /// A program could not be run at all.
    #[error(
        "cannot run {program}: {source} (is containerd installed? `apt-get install containerd`)"
    )]
    Spawn {
        /// `containerd` or `ctr`.
        program: String,
        /// Why.
        #[source]
        source: io::Error,
    },
    /// containerd exited, did not answer in time or lacks a plugin the config asked for.
    #[error("the private containerd is not ready: {reason}\n--- tail of {log} ---\n{log_tail}")]
    NotReady {
        /// What went wrong.
        reason: String,
        /// containerd's log file.
        log: PathBuf,
        /// Its last lines.
        log_tail: String,
    },
    /// A `ctr` command failed.
    #[error("`{command}` failed ({status}): {stderr}")]
    Ctr {
        /// The command line.
        command: String,
        /// Its exit status.
        status: ExitStatus,
        /// What it printed on stderr.
        stderr: String,
    },
    /// The image for CRI's `sandbox_image` could not be built.
    #[error("building the pause image: {0}")]
    Image(#[from] ImageError),
    /// A file of the private containerd could not be written or removed.
    #[error("{what}: {source}")]
    Io {
        /// What was being done, with the path.
        what: String,
        /// Why it failed.
        #[source]
        source: io::Error,
    },
    /// The clean-up left something behind (processes, mounts, the directory).
    #[error("the private containerd's clean-up left {0} behind")]
    Leftover(String),
}
