//! Which protocol containerd speaks on a namespace socket, and where that socket is.

use std::path::PathBuf;

/// What containerd speaks on a namespace's socket.
///
/// ```
/// use task_service::front::Protocol;
/// assert_eq!("ttrpc".parse::<Protocol>(), Ok(Protocol::Ttrpc));
/// assert_eq!(Protocol::Grpc.as_str(), "grpc");
/// assert!("http".parse::<Protocol>().is_err());
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Protocol {
    /// containerd's ttrpc (what its own Go shims speak): no idle timeout on the client side.
    Ttrpc,
    /// gRPC (`containerd.task.v3.Task`); containerd 1.7's gRPC client gives up a connection
    /// that sees no call for 30 minutes, and takes the shim for dead.
    Grpc,
}

impl Protocol {
    /// The name containerd's bootstrap JSON uses.
    pub fn as_str(self) -> &'static str {
        match self {
            Protocol::Ttrpc => "ttrpc",
            Protocol::Grpc => "grpc",
        }
    }
}

impl std::str::FromStr for Protocol {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "ttrpc" | "" => Ok(Protocol::Ttrpc),
            "grpc" => Ok(Protocol::Grpc),
            other => Err(format!("protocol {other:?} is not ttrpc or grpc")),
        }
    }
}

/// The socket of containerd namespace `namespace` under `namespace_dir`, for `protocol`.
///
/// ```
/// use task_service::front::{namespace_socket, Protocol};
/// assert_eq!(
///     namespace_socket("/run/shimless/ns".as_ref(), "k8s.io", Protocol::Grpc),
///     std::path::PathBuf::from("/run/shimless/ns/k8s.io.sock")
/// );
/// assert_eq!(
///     namespace_socket("/run/shimless/ns".as_ref(), "k8s.io", Protocol::Ttrpc),
///     std::path::PathBuf::from("/run/shimless/ns/k8s.io.ttrpc.sock")
/// );
/// ```
pub fn namespace_socket(
    namespace_dir: &std::path::Path,
    namespace: &str,
    protocol: Protocol,
) -> PathBuf {
    match protocol {
        Protocol::Grpc => namespace_dir.join(format!("{namespace}.sock")),
        Protocol::Ttrpc => namespace_dir.join(format!("{namespace}.ttrpc.sock")),
    }
}
