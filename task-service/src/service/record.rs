//! What the daemon persists per container.

use crate::model::Container;
use pidfd::ProcessIdentity;
use serde::{Deserialize, Serialize};
use std::path::PathBuf;

/// One container's record, saved atomically on every transition.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct Record {
    pub bundle: PathBuf,
    pub stdin: String,
    pub stdout: String,
    pub stderr: String,
    pub terminal: bool,
    /// The runtime binary and root that manage it.
    pub runtime: PathBuf,
    pub runtime_root: PathBuf,
    /// The init process, as PID + start time (never trusted by PID alone).
    pub identity: Option<ProcessIdentity>,
    pub container: Container,
}
