//! shimless as a node runs it, on private paths: `shimless-front` (not supervising) in front
//! of a `shimlessd` the bench starts, kills with SIGKILL and starts again; its own eBPF pins.

use integration::child::Child;
use integration::shimlessd::Shimlessd;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

/// The front and the daemon; their containers force-removed and pins removed when dropped.
pub(crate) struct Service {
    dir: tempfile::TempDir,
    _state: Option<tempfile::TempDir>,
    front: Child,
    daemon: Child,
    pin_dir: PathBuf,
}

impl Service {
    /// Writes the configuration (records under `state_in` when given) and starts the daemon,
    /// then the front.
    pub(crate) fn start(state_in: Option<&Path>) -> Result<Service, String> {
        let dir = tempfile::Builder::new()
            .prefix("shimless-density-")
            .tempdir()
            .map_err(|e| format!("create a temporary directory: {e}"))?;
        let state = match state_in {
            Some(parent) => Some(
                tempfile::Builder::new()
                    .prefix("shimless-density-state-")
                    .tempdir_in(parent)
                    .map_err(|e| format!("create a directory in {}: {e}", parent.display()))?,
            ),
            None => None,
        };
        let d = dir.path();
        let pin_dir = PathBuf::from(format!(
            "/sys/fs/bpf/shimless-density-{}",
            std::process::id()
        ));
        let config = format!(
            "socket = \"{0}/run/front.sock\"\ndaemon_socket = \"{0}/run/daemon.sock\"\n\
             state_dir = \"{1}\"\nrunc_root = \"{0}/runc\"\nlog_dir = \"{0}/logs\"\n\
             bpf_pin_dir = \"{2}\"\nsupervise = false\nhold_ms = 120000\n",
            d.display(),
            state
                .as_ref()
                .map_or_else(|| d.join("state"), |s| s.path().to_owned())
                .display(),
            pin_dir.display()
        );
        std::fs::write(d.join("shimless.toml"), config)
            .map_err(|e| format!("write {}/shimless.toml: {e}", d.display()))?;
        let daemon = start_daemon(d)?;
        let mut front = Command::new(env!("CARGO_BIN_EXE_shimless-front"));
        front.arg("--config").arg(d.join("shimless.toml"));
        let front = Child::start(front, &d.join("front.log"), "serving on")
            .map_err(|e| format!("start shimless-front: {e}"))?;
        Ok(Service {
            dir,
            _state: state,
            front,
            daemon,
            pin_dir,
        })
    }

    /// The front's socket, where clients (containerd) connect.
    pub(crate) fn socket(&self) -> PathBuf {
        self.dir.path().join("run/front.sock")
    }

    /// The front's and the daemon's PIDs.
    pub(crate) fn pids(&self) -> (u32, u32) {
        (self.front.pid(), self.daemon.pid())
    }

    /// Kills the daemon with SIGKILL (the front stays, holding calls).
    pub(crate) fn kill_daemon(&mut self) {
        self.daemon.kill();
    }

    /// Starts the daemon again; the time from its spawn until it serves.
    pub(crate) fn restart_daemon(&mut self) -> Result<Duration, String> {
        let started = Instant::now();
        self.daemon = start_daemon(self.dir.path())?;
        Ok(started.elapsed())
    }

    /// The exit watch's counts (tracked processes, recorded exits, capacity), read from the
    /// daemon's pinned maps.
    pub(crate) fn exit_watch(&self) -> Result<exitwatch::Stats, String> {
        exitwatch::ExitWatch::open_or_load(&self.pin_dir)
            .and_then(|w| w.stats())
            .map_err(|e| format!("read the exit watch in {}: {e}", self.pin_dir.display()))
    }
}

fn start_daemon(d: &Path) -> Result<Child, String> {
    // Another build of the daemon, to compare two builds in the same conditions.
    let binary = std::env::var_os("SHIMLESS_BENCH_DAEMON")
        .unwrap_or_else(|| env!("CARGO_BIN_EXE_shimlessd").into());
    Shimlessd::new(binary)
        .config(d.join("shimless.toml"))
        .socket(d.join("run/daemon.sock"))
        .start(&d.join("shimlessd.log"))
        .map_err(|e| format!("start shimlessd: {e}"))
}

impl Drop for Service {
    fn drop(&mut self) {
        for ns in std::fs::read_dir(self.dir.path().join("runc"))
            .into_iter()
            .flatten()
            .flatten()
        {
            integration::bundle::delete_all("runc", &ns.path());
        }
        self.daemon.kill();
        self.front.kill();
        let _ = std::fs::remove_dir_all(&self.pin_dir);
    }
}
