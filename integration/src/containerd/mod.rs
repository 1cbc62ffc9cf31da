//! A private containerd for tests: its own root, state, sockets and config in a temporary
//! directory, started by the test and leaving nothing behind.
//!
//! [`Containerd::start`] writes a `config.toml` (version 2 for containerd 1.7, version 3 for
//! 2.x: see [`Version`]) from a [`ContainerdConfig`] into a
//! new directory under `/tmp` (ext4 here, which overlayfs accepts as its backing directory),
//! starts `containerd --config` with its output in `containerd.log` beside it, and returns once
//! `ctr version` answers and the chosen snapshotter (and CRI, when enabled) loaded. Nothing is
//! installed and no registry is used: images come from [`image`](crate::image) tarballs through
//! [`Containerd::import`].
//!
//! Dropping it (or [`Containerd::stop`]) kills every task in every namespace and deletes the
//! containers, stops containerd, kills any process still naming its socket (shims, `ctr`s),
//! removes what runc kept for those shims, lazily unmounts whatever is mounted under its
//! directory and removes the directory — also when the test panicked.
//!
//! # What the containers share with the host
//!
//! Two things are keyed by namespace and container ID alone, not by containerd: runc's state
//! (`/run/containerd/runc/<namespace>/<id>`, the stock shim's default) and the cgroup
//! (`/<namespace>/<id>`) that `ctr run` and CRI give a container. Give each `ctr` test a
//! namespace no other running test uses; the clean-up removes those per-namespace directories
//! once they are empty (all but [`CRI_NAMESPACE`]'s, which CRI tests share and whose container
//! IDs are random).
//!
//! # Runtimes
//!
//! [`Runtime`]s are written under `[plugins."io.containerd.grpc.v1.cri".containerd.runtimes]`,
//! which is where CRI looks a `runtime_handler` up. `ctr run` does not read that table: it takes
//! `--runtime <runtime_type>` (containerd then runs `containerd-shim-<name>-<version>` found on
//! its `PATH`, see [`ContainerdConfig::path_prepend`]) or `--runtime <absolute path of a shim
//! binary>`; ctr 1.7 has no `--runtime-path`.
//!
//! # Example
//!
//! ```no_run
//! use integration::containerd::{Containerd, ContainerdConfig};
//! use integration::image::Image;
//!
//! let containerd = Containerd::start(ContainerdConfig::new())?;
//! let image = Image::busybox("docker.io/shimless/busybox:test")
//!     .write_tar(&containerd.dir().join("busybox.tar"))?;
//! containerd.import("my-test", image.path())?;
//! let out = containerd
//!     .ctr("my-test")
//!     .args(["run", "--rm", image.name(), "hello", "echo", "hello"])
//!     .output()?;
//! assert_eq!(out.stdout, b"hello\n");
//! // dropped: tasks, containers, shims, mounts and the directory are gone
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

mod cleanup;
mod config;
mod ctr;
mod error;
mod runtime;
mod toml;
mod version;

pub use cleanup::{mounts_under, processes_naming};
pub use config::ContainerdConfig;
pub use error::ContainerdError;
pub use runtime::Runtime;
pub use toml::TomlValue;
pub use version::{CONTAINERD_2_1_BIN, NEEDS, NEEDS_2_1, UnknownVersion, Version};

use std::ffi::OsString;
use std::io;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::image::Image;

/// How long [`Containerd::start`] waits for `ctr version` to answer.
pub const READY_TIMEOUT: Duration = Duration::from_secs(30);

/// How long containerd gets to exit after SIGTERM before it is killed.
pub const STOP_TIMEOUT: Duration = Duration::from_secs(10);

/// The containerd namespace CRI keeps its pods, containers and images in.
pub const CRI_NAMESPACE: &str = "k8s.io";

/// The runc shim's default state directory; runc keeps `<namespace>/<id>` under it.
const RUNC_ROOT: &str = "/run/containerd/runc";

/// A private containerd: started by [`Containerd::start`], cleaned away when dropped.
///
/// ```no_run
/// use integration::containerd::{Containerd, ContainerdConfig};
/// let mut containerd = Containerd::start(ContainerdConfig::new())?;
/// println!("serving on {}", containerd.socket().display());
/// containerd.restart()?; // containerd only: shims and tasks live on
/// containerd.stop()?; // or just drop it
/// # Ok::<(), integration::containerd::ContainerdError>(())
/// ```
#[derive(Debug)]
pub struct Containerd {
    dir: Option<tempfile::TempDir>,
    path: PathBuf,
    config: ContainerdConfig,
    child: Option<Child>,
}

impl Containerd {
    /// Writes the config into a new private directory, starts containerd and waits until it
    /// answers (at most [`READY_TIMEOUT`]); with CRI, also imports the pause image (unless
    /// told not to).
    pub fn start(config: ContainerdConfig) -> Result<Containerd, ContainerdError> {
        let dir = tempfile::Builder::new()
            .prefix("shimless-containerd-")
            .tempdir_in(&config.parent_dir)
            .map_err(|source| ContainerdError::Io {
                what: format!(
                    "create a private directory in {}",
                    config.parent_dir.display()
                ),
                source,
            })?;
        let path = dir.path().to_owned();
        let mut me = Containerd {
            dir: Some(dir),
            path,
            config,
            child: None,
        };
        for sub in ["root", "state", "opt", "cni/bin", "cni/net.d", "certs.d"] {
            let sub = me.path.join(sub);
            std::fs::create_dir_all(&sub).map_err(|source| ContainerdError::Io {
                what: format!("create {}", sub.display()),
                source,
            })?;
        }
        let toml = me.config.to_toml(&me.path);
        std::fs::write(me.config_path(), toml).map_err(|source| ContainerdError::Io {
            what: format!("write {}", me.config_path().display()),
            source,
        })?;
        me.start_daemon()?;
        if let Some(name) = me.config.sandbox_image.clone()
            && me.config.import_sandbox_image
        {
            let image = Image::pause(name).write_tar(&me.path.join("pause.tar"))?;
            me.import(CRI_NAMESPACE, image.path())?;
            me.wait_cri_knows(&image)?;
        }
        Ok(me)
    }

    /// The private directory (`root/`, `state/`, `config.toml`, `containerd.log`, sockets).
    pub fn dir(&self) -> &Path {
        &self.path
    }

    /// The gRPC socket (`--address` of `ctr`, `-address` of shims).
    pub fn socket(&self) -> PathBuf {
        self.path.join("containerd.sock")
    }

    /// The ttrpc socket.
    pub fn ttrpc_socket(&self) -> PathBuf {
        self.path.join("containerd.sock.ttrpc")
    }

    /// The `config.toml` written.
    pub fn config_path(&self) -> PathBuf {
        self.path.join("config.toml")
    }

    /// containerd's log (its stderr, appended across restarts).
    pub fn log_path(&self) -> PathBuf {
        self.path.join("containerd.log")
    }

    /// containerd's `root` directory (content, snapshots, metadata).
    pub fn root(&self) -> PathBuf {
        self.path.join("root")
    }

    /// containerd's `state` directory (task bundles, sockets).
    pub fn state(&self) -> PathBuf {
        self.path.join("state")
    }

    /// The config it was started with.
    pub fn config(&self) -> &ContainerdConfig {
        &self.config
    }

    /// containerd's PID while it runs.
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    /// The last `lines` lines of containerd's log.
    pub fn log_tail(&self, lines: usize) -> String {
        let log = std::fs::read_to_string(self.log_path()).unwrap_or_default();
        let all: Vec<&str> = log.lines().collect();
        all[all.len().saturating_sub(lines)..].join("\n")
    }

    /// Stops containerd (SIGTERM, then SIGKILL after [`STOP_TIMEOUT`]) and starts it again
    /// with the same directories and config; shims and their tasks live on, as they do when
    /// containerd restarts for real.
    pub fn restart(&mut self) -> Result<(), ContainerdError> {
        self.stop_daemon();
        self.start_daemon()
    }

    /// Stops containerd and starts `version` on the same root, state and sockets, with the
    /// same settings in the config form that version reads: a node's containerd upgraded in
    /// place (1.7 to 2.1) while shims and their tasks live on. `ctr` is the new version's from
    /// then on.
    ///
    /// ```no_run
    /// use integration::containerd::{Containerd, ContainerdConfig, Version};
    /// let mut containerd = Containerd::start(ContainerdConfig::new())?;
    /// containerd.upgrade(Version::V2_1)?;
    /// assert_eq!(containerd.config().containerd_version(), Version::V2_1);
    /// # Ok::<(), integration::containerd::ContainerdError>(())
    /// ```
    pub fn upgrade(&mut self, version: Version) -> Result<(), ContainerdError> {
        self.stop_daemon();
        self.config.version = version;
        let toml = self.config.to_toml(&self.path);
        std::fs::write(self.config_path(), toml).map_err(|source| ContainerdError::Io {
            what: format!("write {}", self.config_path().display()),
            source,
        })?;
        self.start_daemon()
    }

    /// Stops containerd only (SIGTERM, then SIGKILL after [`STOP_TIMEOUT`]): shims and tasks
    /// keep running, and [`start_daemon`](Self::start_daemon) brings it back.
    pub fn stop_daemon(&mut self) {
        let Some(mut child) = self.child.take() else {
            return;
        };
        if let Some(pid) = rustix::process::Pid::from_raw(child.id() as i32) {
            let _ = rustix::process::kill_process(pid, rustix::process::Signal::TERM);
        }
        let deadline = Instant::now() + STOP_TIMEOUT;
        while Instant::now() < deadline {
            if child.try_wait().ok().flatten().is_some() {
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = child.kill();
        let _ = child.wait();
    }

    /// Starts containerd (when it is not running) and waits until it answers.
    pub fn start_daemon(&mut self) -> Result<(), ContainerdError> {
        if let Some(child) = &mut self.child {
            if child.try_wait().ok().flatten().is_none() {
                return Ok(());
            }
            // It died by itself: start it again.
            self.child = None;
        }
        let log_path = self.log_path();
        let io_err = |source| ContainerdError::Io {
            what: format!("open {}", log_path.display()),
            source,
        };
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&log_path)
            .map_err(io_err)?;
        let err = log.try_clone().map_err(io_err)?;
        let mut cmd = Command::new(self.config.version.program("containerd"));
        cmd.arg("--config")
            .arg(self.config_path())
            .stdin(Stdio::null())
            .stdout(log)
            .stderr(err);
        // The version's own stock shim (`containerd-shim-runc-v2`) comes before the system's.
        let own_dir = self.config.version.bin_dir().map(Path::to_path_buf);
        if !self.config.path_prepend.is_empty() || own_dir.is_some() {
            let inherited = std::env::var_os("PATH").unwrap_or_default();
            let dirs = self
                .config
                .path_prepend
                .iter()
                .cloned()
                .chain(own_dir)
                .chain(std::env::split_paths(&inherited));
            let path: OsString = std::env::join_paths(dirs).map_err(|e| ContainerdError::Io {
                what: "join containerd's PATH".into(),
                source: io::Error::other(e),
            })?;
            cmd.env("PATH", path);
        }
        cmd.envs(self.config.env.iter().map(|(k, v)| (k, v)));
        let child = cmd.spawn().map_err(|source| ContainerdError::Spawn {
            program: self
                .config
                .version
                .program("containerd")
                .display()
                .to_string(),
            source,
        })?;
        self.child = Some(child);
        self.wait_ready()
    }

    fn not_ready(&self, reason: String) -> ContainerdError {
        ContainerdError::NotReady {
            reason,
            log: self.log_path(),
            log_tail: self.log_tail(30),
        }
    }

    fn wait_ready(&mut self) -> Result<(), ContainerdError> {
        let deadline = Instant::now() + READY_TIMEOUT;
        loop {
            if let Some(status) = self
                .child
                .as_mut()
                .and_then(|c| c.try_wait().ok().flatten())
            {
                self.child = None;
                return Err(self.not_ready(format!("containerd exited: {status}")));
            }
            let mut version = self.ctr("default");
            version
                .args(["--timeout", "2s", "version"])
                .stdout(Stdio::null())
                .stderr(Stdio::null());
            if version.status().is_ok_and(|s| s.success()) {
                break;
            }
            if Instant::now() > deadline {
                return Err(self.not_ready(format!(
                    "`ctr version` did not answer within {READY_TIMEOUT:?}"
                )));
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let plugins = self
            .ctr_ok("default", &["plugins", "ls"])
            .map_err(|e| self.not_ready(e.to_string()))?;
        let mut wanted = vec![(
            "io.containerd.snapshotter.v1",
            self.config.snapshotter.as_str(),
        )];
        if self.config.sandbox_image.is_some() {
            wanted.push(("io.containerd.grpc.v1", "cri"));
        }
        for (kind, id) in wanted {
            let status = plugins.lines().find_map(|line| {
                let fields: Vec<&str> = line.split_whitespace().collect();
                (fields.first() == Some(&kind) && fields.get(1) == Some(&id))
                    .then(|| fields.last().copied().unwrap_or_default().to_string())
            });
            if status.as_deref() != Some("ok") {
                return Err(self.not_ready(format!(
                    "plugin {kind} {id} is {} (see the log for why)",
                    status.as_deref().unwrap_or("missing")
                )));
            }
        }
        Ok(())
    }

    /// Cleans everything away (see the [module docs](self)) and says what could not be.
    pub fn stop(mut self) -> Result<(), ContainerdError> {
        self.clean_up()
    }
}

impl Drop for Containerd {
    fn drop(&mut self) {
        if let Err(e) = self.clean_up() {
            eprintln!("integration::containerd: {e}");
        }
    }
}
