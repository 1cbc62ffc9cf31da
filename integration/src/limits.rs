//! Process limits that big tests and benchmarks need raised.

use rustix::process::{Resource, Rlimit, getrlimit, setrlimit};

/// Raises this process's open-file limit to at least `want` descriptors (the hard limit too,
/// when running as root), or as far as the hard limit allows otherwise. Returns the soft limit
/// now in force (`None` = unlimited).
///
/// ```
/// let now = integration::raise_fd_limit(256);
/// assert!(now.is_none_or(|n| n >= 256));
/// ```
pub fn raise_fd_limit(want: u64) -> Option<u64> {
    let limit = getrlimit(Resource::Nofile);
    if limit.current.is_some_and(|c| c < want) {
        let maximum = limit.maximum.map(|m| m.max(want));
        let raised = setrlimit(
            Resource::Nofile,
            Rlimit {
                current: Some(want),
                maximum,
            },
        );
        if raised.is_err() {
            let _ = setrlimit(
                Resource::Nofile,
                Rlimit {
                    current: limit.maximum,
                    ..limit
                },
            );
        }
    }
    getrlimit(Resource::Nofile).current
}
