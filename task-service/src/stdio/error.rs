//! Why a stream could not be set up.

use std::path::PathBuf;

/// Why a stream could not be set up. Names the stream and the path.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum StdioError {
    /// The string is not a form shimless understands.
    #[error("{stream} {value:?}: {reason}")]
    Invalid {
        /// The stream.
        stream: &'static str,
        /// The string containerd sent.
        value: String,
        /// What is wrong with it.
        reason: &'static str,
    },
    /// Opening it failed.
    #[error("{stream}: cannot open {path}: {source}")]
    Open {
        /// The stream.
        stream: &'static str,
        /// The path.
        path: PathBuf,
        /// The OS error.
        #[source]
        source: std::io::Error,
    },
}
