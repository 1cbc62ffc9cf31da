//! shimless's private configuration for one benchmark run (shared by the containerd and
//! overhead benches), and the machine's load as `/proc/loadavg` says it.

use super::cleanup::ShimlessCleanup;
use std::path::{Path, PathBuf};

/// shimless's private configuration for one run, and what removes its traces.
pub(crate) struct Setup {
    /// Where the records live when `--state-in` is given (removed when dropped).
    _state_dir: Option<tempfile::TempDir>,
    pub(crate) config: PathBuf,
    pub(crate) cleanup: ShimlessCleanup,
}

impl Setup {
    /// Writes the configuration in `d`: sockets, records, runc root, logs and eBPF pins of
    /// this run's own; the records in a new directory under `state_in` when given, and
    /// shimless's `containerd_protocol` when given.
    pub(crate) fn write(
        d: &Path,
        state_in: Option<&Path>,
        protocol: Option<&str>,
    ) -> Result<Setup, String> {
        // shimless's records where a node keeps them: `/run` is a tmpfs on a systemd node
        // (here it is on the ext4 disk, where each record's fsync waits for the journal).
        let state_dir = match state_in {
            Some(parent) => Some(
                tempfile::Builder::new()
                    .prefix("shimless-bench-state-")
                    .tempdir_in(parent)
                    .map_err(|e| format!("create a directory in {}: {e}", parent.display()))?,
            ),
            None => None,
        };
        let state = state_dir
            .as_ref()
            .map_or_else(|| d.join("state"), |s| s.path().to_owned());
        let config = d.join("shimless.toml");
        let cleanup = ShimlessCleanup {
            config: config.clone(),
            runc_root: d.join("runc"),
            pin_dir: PathBuf::from(format!("/sys/fs/bpf/shimless-bench-{}", std::process::id())),
        };
        std::fs::write(
            &config,
            format!(
                "socket = \"{0}/run/front.sock\"\ndaemon_socket = \"{0}/run/daemon.sock\"\n\
                 state_dir = \"{3}\"\nrunc_root = \"{0}/runc\"\nlog_dir = \"{0}/logs\"\n\
                 bpf_pin_dir = \"{1}\"\n{2}",
                d.display(),
                cleanup.pin_dir.display(),
                protocol
                    .map(|p| format!("containerd_protocol = \"{p}\"\n"))
                    .unwrap_or_default(),
                state.display()
            ),
        )
        .map_err(|e| format!("write {}: {e}", config.display()))?;
        Ok(Setup {
            _state_dir: state_dir,
            config,
            cleanup,
        })
    }
}

/// The load averages, as `/proc/loadavg` says them.
pub(crate) fn load_average() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .unwrap_or_default()
        .trim()
        .to_owned()
}

/// Why this machine cannot run a bench that drives `containerd` (not root, one of its programs
/// or runc missing), or `None` when it can.
pub(crate) fn missing(containerd: integration::containerd::Version) -> Option<String> {
    if !rustix::process::geteuid().is_root() {
        return Some("needs root".into());
    }
    for program in ["containerd", "ctr", "containerd-shim-runc-v2"] {
        let path = containerd.program(program);
        if !path.is_absolute() && integration::find_program(program).is_none()
            || path.is_absolute() && !path.exists()
        {
            return Some(format!(
                "{} of {containerd} is not installed",
                path.display()
            ));
        }
    }
    if integration::find_program("runc").is_none() {
        return Some("runc is not installed".into());
    }
    None
}
