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

use std::collections::HashMap;
use std::ffi::OsString;
use std::fmt::Write as _;
use std::io;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Output, Stdio};
use std::time::{Duration, Instant};

use crate::Need;
use crate::image::{Image, ImageError};

/// How long [`Containerd::start`] waits for `ctr version` to answer.
pub const READY_TIMEOUT: Duration = Duration::from_secs(30);

/// How long containerd gets to exit after SIGTERM before it is killed.
pub const STOP_TIMEOUT: Duration = Duration::from_secs(10);

/// The containerd namespace CRI keeps its pods, containers and images in.
pub const CRI_NAMESPACE: &str = "k8s.io";

/// What a test of the private containerd needs: pass it to [`require`](crate::require).
///
/// ```
/// use integration::containerd::NEEDS;
/// // In a #[test]: skip (or fail under CI) without root, containerd, ctr, runc or busybox.
/// let Some(()) = integration::require(NEEDS) else { return };
/// ```
pub const NEEDS: &[Need] = &[
    Need::Root,
    Need::Program("containerd"),
    Need::Program("ctr"),
    Need::Program("containerd-shim-runc-v2"),
    Need::Program("runc"),
    Need::File(crate::bundle::BUSYBOX),
];

/// Where `scripts/install-deps` unpacks Debian forky's containerd 2.1.9 (`containerd`, `ctr`,
/// `containerd-shim-runc-v2`), which is never installed: the system's containerd stays 1.7.
pub const CONTAINERD_2_1_BIN: &str = "/var/cache/shimless/containerd-2.1.9/usr/bin";

/// What a test of the private containerd 2.1 needs: [`NEEDS`] and the unpacked 2.1.9.
///
/// ```
/// use integration::containerd::{NEEDS_2_1, Version};
/// assert_eq!(Version::V2_1.needs(), NEEDS_2_1);
/// ```
pub const NEEDS_2_1: &[Need] = &[
    Need::Root,
    Need::File("/var/cache/shimless/containerd-2.1.9/usr/bin/containerd"),
    Need::File("/var/cache/shimless/containerd-2.1.9/usr/bin/ctr"),
    Need::File("/var/cache/shimless/containerd-2.1.9/usr/bin/containerd-shim-runc-v2"),
    Need::Program("runc"),
    Need::File(crate::bundle::BUSYBOX),
];

/// Which containerd a [`Containerd`] runs: the system's 1.7 (config version 2) or the 2.1.9
/// that `scripts/install-deps` unpacks (config version 3, where CRI's plugins are
/// `io.containerd.cri.v1.runtime` and `io.containerd.cri.v1.images` and a runtime names its
/// `sandboxer`). Its `ctr` and stock runc shim are used with it.
///
/// ```
/// use integration::containerd::Version;
/// assert_eq!(Version::V1_7.config_version(), 2);
/// assert_eq!(Version::V2_1.config_version(), 3);
/// assert_eq!(Version::V2_1.program("ctr").to_str(), Some("/var/cache/shimless/containerd-2.1.9/usr/bin/ctr"));
/// assert_eq!(Version::V1_7.program("ctr").to_str(), Some("ctr"));
/// assert_eq!("2.1".parse::<Version>(), Ok(Version::V2_1));
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum Version {
    /// The system's containerd 1.7 (from `PATH`).
    #[default]
    V1_7,
    /// containerd 2.1.9 from [`CONTAINERD_2_1_BIN`].
    V2_1,
}

impl Version {
    /// Both, oldest first: what the tests run against.
    pub const ALL: [Version; 2] = [Version::V1_7, Version::V2_1];

    /// The directory of its binaries, or `None` for the ones on `PATH`.
    pub fn bin_dir(self) -> Option<&'static Path> {
        match self {
            Version::V1_7 => None,
            Version::V2_1 => Some(Path::new(CONTAINERD_2_1_BIN)),
        }
    }

    /// The program `name` (`containerd`, `ctr`) of this version.
    pub fn program(self, name: &str) -> PathBuf {
        match self.bin_dir() {
            Some(dir) => dir.join(name),
            None => PathBuf::from(name),
        }
    }

    /// The `version` of its `config.toml`.
    pub fn config_version(self) -> u32 {
        match self {
            Version::V1_7 => 2,
            Version::V2_1 => 3,
        }
    }

    /// What a test of it needs: pass it to [`require`](crate::require).
    pub fn needs(self) -> &'static [Need] {
        match self {
            Version::V1_7 => NEEDS,
            Version::V2_1 => NEEDS_2_1,
        }
    }

    /// A short label for names and messages: `1.7`, `2.1`.
    pub fn label(self) -> &'static str {
        match self {
            Version::V1_7 => "1.7",
            Version::V2_1 => "2.1",
        }
    }
}

impl std::fmt::Display for Version {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "containerd {}", self.label())
    }
}

/// A containerd version that [`Version`] does not know.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("containerd version {0:?} is not one of 1.7, 2.1")]
pub struct UnknownVersion(pub String);

impl std::str::FromStr for Version {
    type Err = UnknownVersion;
    fn from_str(s: &str) -> Result<Version, UnknownVersion> {
        match s.trim_start_matches('v') {
            "1.7" | "1" => Ok(Version::V1_7),
            "2.1" | "2" => Ok(Version::V2_1),
            _ => Err(UnknownVersion(s.to_string())),
        }
    }
}

/// The runc shim's default state directory; runc keeps `<namespace>/<id>` under it.
const RUNC_ROOT: &str = "/run/containerd/runc";

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

/// A value in a runtime's `options` table.
///
/// ```
/// use integration::containerd::TomlValue;
/// assert_eq!(TomlValue::from(false).to_toml(), "false");
/// assert_eq!(TomlValue::from("crun").to_toml(), "\"crun\"");
/// assert_eq!(TomlValue::from(7).to_toml(), "7");
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TomlValue {
    /// A string, written as a TOML basic string.
    String(String),
    /// A boolean.
    Bool(bool),
    /// An integer.
    Integer(i64),
}

impl TomlValue {
    /// The value as TOML source.
    pub fn to_toml(&self) -> String {
        match self {
            TomlValue::String(s) => toml_string(s),
            TomlValue::Bool(b) => b.to_string(),
            TomlValue::Integer(i) => i.to_string(),
        }
    }
}

impl From<&str> for TomlValue {
    fn from(s: &str) -> Self {
        TomlValue::String(s.to_string())
    }
}

impl From<String> for TomlValue {
    fn from(s: String) -> Self {
        TomlValue::String(s)
    }
}

impl From<bool> for TomlValue {
    fn from(b: bool) -> Self {
        TomlValue::Bool(b)
    }
}

impl From<i64> for TomlValue {
    fn from(i: i64) -> Self {
        TomlValue::Integer(i)
    }
}

impl From<i32> for TomlValue {
    fn from(i: i32) -> Self {
        TomlValue::Integer(i.into())
    }
}

/// A runtime registered for CRI, as the seed writes `unified`:
///
/// ```
/// use integration::containerd::Runtime;
/// let unified = Runtime::new("unified", "io.containerd.runc.v2")
///     .path("/usr/local/bin/containerd-shim-shimless-v2")
///     .sandbox_mode("podsandbox")
///     .option("SystemdCgroup", false);
/// let toml = unified.to_toml();
/// assert!(toml.contains("[plugins.\"io.containerd.grpc.v1.cri\".containerd.runtimes.\"unified\"]"));
/// assert!(toml.contains("runtime_path = \"/usr/local/bin/containerd-shim-shimless-v2\""));
/// assert!(toml.contains("SystemdCgroup = false"));
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Runtime {
    name: String,
    runtime_type: String,
    runtime_path: Option<PathBuf>,
    sandbox_mode: Option<String>,
    options: Vec<(String, TomlValue)>,
}

impl Runtime {
    /// A runtime CRI knows as `name` (the RuntimeClass handler) of type `runtime_type` (e.g.
    /// `io.containerd.runc.v2`).
    pub fn new(name: impl Into<String>, runtime_type: impl Into<String>) -> Self {
        Runtime {
            name: name.into(),
            runtime_type: runtime_type.into(),
            runtime_path: None,
            sandbox_mode: None,
            options: Vec::new(),
        }
    }

    /// The shim binary to run instead of the one `runtime_type` names (`runtime_path`).
    pub fn path(mut self, path: impl Into<PathBuf>) -> Self {
        self.runtime_path = Some(path.into());
        self
    }

    /// CRI's `sandbox_mode` (`podsandbox` runs a pause container per pod).
    pub fn sandbox_mode(mut self, mode: impl Into<String>) -> Self {
        self.sandbox_mode = Some(mode.into());
        self
    }

    /// An entry of the runtime's `options` table (`BinaryName`, `SystemdCgroup`, `Root`, ...).
    pub fn option(mut self, key: impl Into<String>, value: impl Into<TomlValue>) -> Self {
        self.options.push((key.into(), value.into()));
        self
    }

    /// The runtime's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The runtime's tables as TOML source for containerd 1.7 (config version 2).
    pub fn to_toml(&self) -> String {
        self.to_toml_for(Version::V1_7)
    }

    /// The runtime's tables as TOML source for `version`'s config: version 3 keeps runtimes
    /// under `io.containerd.cri.v1.runtime` and calls `sandbox_mode` `sandboxer`.
    ///
    /// ```
    /// use integration::containerd::{Runtime, Version};
    /// let toml = Runtime::new("unified", "io.containerd.runc.v2")
    ///     .sandbox_mode("podsandbox")
    ///     .to_toml_for(Version::V2_1);
    /// assert!(toml.contains("[plugins.\"io.containerd.cri.v1.runtime\".containerd.runtimes.\"unified\"]"));
    /// assert!(toml.contains("sandboxer = \"podsandbox\""));
    /// ```
    pub fn to_toml_for(&self, version: Version) -> String {
        let (plugin, mode_key) = match version.config_version() {
            2 => ("io.containerd.grpc.v1.cri", "sandbox_mode"),
            _ => ("io.containerd.cri.v1.runtime", "sandboxer"),
        };
        let table = format!(
            "plugins.\"{plugin}\".containerd.runtimes.{}",
            toml_string(&self.name)
        );
        let mut out = format!(
            "[{table}]\n  runtime_type = {}\n",
            toml_string(&self.runtime_type)
        );
        if let Some(path) = &self.runtime_path {
            let _ = writeln!(
                out,
                "  runtime_path = {}",
                toml_string(&path.to_string_lossy())
            );
        }
        if let Some(mode) = &self.sandbox_mode {
            let _ = writeln!(out, "  {mode_key} = {}", toml_string(mode));
        }
        if !self.options.is_empty() {
            let _ = writeln!(out, "[{table}.options]");
            for (key, value) in &self.options {
                let _ = writeln!(out, "  {} = {}", toml_key(key), value.to_toml());
            }
        }
        out
    }
}

/// What the private containerd is started with.
///
/// ```
/// use integration::containerd::{ContainerdConfig, Runtime};
/// let config = ContainerdConfig::new()
///     .cri("registry.k8s.io/pause:3.9")
///     .runtime(Runtime::new("unified", "io.containerd.runc.v2"))
///     .log_level("debug");
/// let toml = config.to_toml(std::path::Path::new("/tmp/ctrd"));
/// assert!(toml.contains("sandbox_image = \"registry.k8s.io/pause:3.9\""));
/// assert!(toml.contains("address = \"/tmp/ctrd/containerd.sock\""));
/// assert!(!toml.contains("disabled_plugins = [\"io.containerd.grpc.v1.cri\"]"));
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ContainerdConfig {
    sandbox_image: Option<String>,
    import_sandbox_image: bool,
    restrict_oom_score_adj: Option<bool>,
    default_runtime: String,
    runtimes: Vec<Runtime>,
    snapshotter: String,
    log_level: String,
    path_prepend: Vec<PathBuf>,
    env: Vec<(String, String)>,
    parent_dir: PathBuf,
    version: Version,
}

impl Default for ContainerdConfig {
    fn default() -> Self {
        ContainerdConfig {
            sandbox_image: None,
            import_sandbox_image: true,
            restrict_oom_score_adj: None,
            default_runtime: "runc".into(),
            runtimes: Vec::new(),
            snapshotter: "overlayfs".into(),
            log_level: "info".into(),
            path_prepend: Vec::new(),
            env: Vec::new(),
            parent_dir: PathBuf::from("/tmp"),
            version: Version::V1_7,
        }
    }
}

impl ContainerdConfig {
    /// CRI disabled, overlayfs, log level `info`, under `/tmp`.
    pub fn new() -> Self {
        Self::default()
    }

    /// Enables the CRI plugin with `sandbox_image` as its pause image. CRI runs without CNI:
    /// its CNI directories are empty ones in the private directory, so host-network pods work
    /// and others fail at network setup. [`Containerd::start`] builds an
    /// [`Image::pause`] of that name and imports it into [`CRI_NAMESPACE`] (see
    /// [`import_sandbox_image`](Self::import_sandbox_image)).
    pub fn cri(mut self, sandbox_image: impl Into<String>) -> Self {
        self.sandbox_image = Some(sandbox_image.into());
        self
    }

    /// Whether `start` imports a pause image named as CRI's `sandbox_image` (default: yes).
    pub fn import_sandbox_image(mut self, import: bool) -> Self {
        self.import_sandbox_image = import;
        self
    }

    /// CRI's `restrict_oom_score_adj`. By default it is set when this process lacks
    /// `CAP_SYS_RESOURCE` (as in this workplace's sandbox): CRI gives pause containers
    /// `oom_score_adj` -998, which only that capability may set, and runc then fails every
    /// sandbox with "can't get final child's PID from pipe: EOF"; restricted, CRI keeps
    /// containers at or above containerd's own score.
    pub fn restrict_oom_score_adj(mut self, restrict: bool) -> Self {
        self.restrict_oom_score_adj = Some(restrict);
        self
    }

    /// CRI's `default_runtime_name` (default `runc`, the stock `io.containerd.runc.v2`).
    pub fn default_runtime(mut self, name: impl Into<String>) -> Self {
        self.default_runtime = name.into();
        self
    }

    /// Registers a runtime for CRI (a `runc` runtime of type `io.containerd.runc.v2` is always
    /// there unless one named `runc` is given).
    pub fn runtime(mut self, runtime: Runtime) -> Self {
        self.runtimes.push(runtime);
        self
    }

    /// The snapshotter for CRI and for `ctr` commands from [`Containerd::ctr`] (default
    /// `overlayfs`).
    pub fn snapshotter(mut self, name: impl Into<String>) -> Self {
        self.snapshotter = name.into();
        self
    }

    /// containerd's log level (`info` by default; `debug` shows every shim call).
    pub fn log_level(mut self, level: impl Into<String>) -> Self {
        self.log_level = level.into();
        self
    }

    /// Puts `dir` before the inherited `PATH` of containerd, so that `ctr run --runtime
    /// io.containerd.<name>.v2` finds `containerd-shim-<name>-v2` there.
    pub fn path_prepend(mut self, dir: impl Into<PathBuf>) -> Self {
        self.path_prepend.push(dir.into());
        self
    }

    /// Sets an environment variable for containerd, and so for the shims it runs (they inherit
    /// its environment): e.g. `SHIMLESS_CONFIG` for `containerd-shim-shimless-v2`.
    ///
    /// ```
    /// let config = integration::containerd::ContainerdConfig::new()
    ///     .env("SHIMLESS_CONFIG", "/tmp/shimless.toml");
    /// assert_eq!(config.env_vars(), [("SHIMLESS_CONFIG".to_string(), "/tmp/shimless.toml".to_string())]);
    /// ```
    pub fn env(mut self, key: impl Into<String>, value: impl Into<String>) -> Self {
        self.env.push((key.into(), value.into()));
        self
    }

    /// The environment variables set with [`env`](Self::env).
    pub fn env_vars(&self) -> &[(String, String)] {
        &self.env
    }

    /// The directory the private directory is made in (default `/tmp`; overlayfs needs a
    /// backing file system it accepts, such as ext4 or xfs).
    pub fn parent_dir(mut self, dir: impl Into<PathBuf>) -> Self {
        self.parent_dir = dir.into();
        self
    }

    /// Which containerd to run (default: the system's 1.7); its `ctr` and stock runc shim
    /// come with it.
    ///
    /// ```
    /// use integration::containerd::{ContainerdConfig, Version};
    /// let config = ContainerdConfig::new().version(Version::V2_1);
    /// assert_eq!(config.containerd_version(), Version::V2_1);
    /// assert!(config.to_toml("/tmp/x".as_ref()).starts_with("version = 3\n"));
    /// ```
    pub fn version(mut self, version: Version) -> Self {
        self.version = version;
        self
    }

    /// The containerd chosen.
    pub fn containerd_version(&self) -> Version {
        self.version
    }

    /// The snapshotter chosen.
    pub fn snapshotter_name(&self) -> &str {
        &self.snapshotter
    }

    /// CRI's pause image, when CRI is enabled.
    pub fn sandbox_image(&self) -> Option<&str> {
        self.sandbox_image.as_deref()
    }

    /// The `config.toml` for a private containerd in `dir`, in the form its version reads.
    pub fn to_toml(&self, dir: &Path) -> String {
        let mut out = match self.version.config_version() {
            2 => self.to_toml_v2(dir),
            _ => self.to_toml_v3(dir),
        };
        let mut runtimes = self.runtimes.clone();
        if !runtimes.iter().any(|r| r.name == "runc") {
            runtimes.insert(0, Runtime::new("runc", "io.containerd.runc.v2"));
        }
        for runtime in &runtimes {
            let _ = write!(out, "\n{}", runtime.to_toml_for(self.version));
        }
        out
    }

    /// The top-level tables both versions share: root, state, sockets, log level, opt, NRI off.
    fn common_toml(&self, out: &mut String, dir: &Path) {
        let p = |name: &str| toml_string(&dir.join(name).to_string_lossy());
        let _ = writeln!(out, "root = {}", p("root"));
        let _ = writeln!(out, "state = {}", p("state"));
        if self.sandbox_image.is_none() {
            let cri: &[&str] = match self.version.config_version() {
                2 => &["io.containerd.grpc.v1.cri"],
                _ => &[
                    "io.containerd.grpc.v1.cri",
                    "io.containerd.cri.v1.runtime",
                    "io.containerd.cri.v1.images",
                ],
            };
            let list: Vec<String> = cri.iter().map(|id| toml_string(id)).collect();
            let _ = writeln!(out, "disabled_plugins = [{}]", list.join(", "));
        }
        let _ = writeln!(out, "\n[grpc]\n  address = {}", p("containerd.sock"));
        let _ = writeln!(out, "\n[ttrpc]\n  address = {}", p("containerd.sock.ttrpc"));
        let _ = writeln!(out, "\n[debug]\n  level = {}", toml_string(&self.log_level));
        let _ = writeln!(
            out,
            "\n[plugins.\"io.containerd.internal.v1.opt\"]\n  path = {}",
            p("opt")
        );
        let _ = writeln!(
            out,
            "\n[plugins.\"io.containerd.nri.v1.nri\"]\n  disable = true"
        );
    }

    /// containerd 2.x's form: CRI split into `io.containerd.cri.v1.images` (snapshotter, the
    /// pinned sandbox image, registry), `io.containerd.cri.v1.runtime` (runtimes, CNI, security
    /// switches) and `io.containerd.grpc.v1.cri` (the streaming server).
    fn to_toml_v3(&self, dir: &Path) -> String {
        let p = |name: &str| toml_string(&dir.join(name).to_string_lossy());
        let mut out = String::from("version = 3\n");
        self.common_toml(&mut out, dir);
        let Some(image) = &self.sandbox_image else {
            return out;
        };
        let images = "plugins.\"io.containerd.cri.v1.images\"";
        let _ = writeln!(out, "\n[{images}]");
        let _ = writeln!(out, "  snapshotter = {}", toml_string(&self.snapshotter));
        let _ = writeln!(out, "[{images}.pinned_images]");
        let _ = writeln!(out, "  sandbox = {}", toml_string(image));
        let _ = writeln!(out, "[{images}.registry]");
        let _ = writeln!(out, "  config_path = {}", p("certs.d"));
        let runtime = "plugins.\"io.containerd.cri.v1.runtime\"";
        let _ = writeln!(out, "\n[{runtime}]");
        let _ = writeln!(out, "  disable_apparmor = true");
        let _ = writeln!(out, "  enable_selinux = false");
        let _ = writeln!(out, "  enable_cdi = false");
        let restrict = self
            .restrict_oom_score_adj
            .unwrap_or_else(|| !has_cap_sys_resource());
        let _ = writeln!(out, "  restrict_oom_score_adj = {restrict}");
        let _ = writeln!(out, "[{runtime}.cni]");
        let _ = writeln!(out, "  bin_dirs = [{}]", p("cni/bin"));
        let _ = writeln!(out, "  conf_dir = {}", p("cni/net.d"));
        let _ = writeln!(out, "[{runtime}.containerd]");
        let _ = writeln!(
            out,
            "  default_runtime_name = {}",
            toml_string(&self.default_runtime)
        );
        let _ = writeln!(out, "\n[plugins.\"io.containerd.grpc.v1.cri\"]");
        let _ = writeln!(out, "  stream_server_address = \"127.0.0.1\"");
        let _ = writeln!(out, "  stream_server_port = \"0\"");
        out
    }

    /// containerd 1.7's form (version 2): everything of CRI under `io.containerd.grpc.v1.cri`.
    fn to_toml_v2(&self, dir: &Path) -> String {
        let p = |name: &str| toml_string(&dir.join(name).to_string_lossy());
        let mut out = String::from("version = 2\n");
        self.common_toml(&mut out, dir);
        if let Some(image) = &self.sandbox_image {
            let cri = "plugins.\"io.containerd.grpc.v1.cri\"";
            let _ = writeln!(out, "\n[{cri}]");
            let _ = writeln!(out, "  sandbox_image = {}", toml_string(image));
            let _ = writeln!(out, "  disable_apparmor = true");
            let _ = writeln!(out, "  enable_selinux = false");
            let _ = writeln!(out, "  enable_cdi = false");
            let restrict = self
                .restrict_oom_score_adj
                .unwrap_or_else(|| !has_cap_sys_resource());
            let _ = writeln!(out, "  restrict_oom_score_adj = {restrict}");
            let _ = writeln!(out, "  stream_server_address = \"127.0.0.1\"");
            let _ = writeln!(out, "  stream_server_port = \"0\"");
            let _ = writeln!(out, "[{cri}.cni]");
            let _ = writeln!(out, "  bin_dir = {}", p("cni/bin"));
            let _ = writeln!(out, "  conf_dir = {}", p("cni/net.d"));
            let _ = writeln!(out, "[{cri}.registry]");
            let _ = writeln!(out, "  config_path = {}", p("certs.d"));
            let _ = writeln!(out, "[{cri}.containerd]");
            let _ = writeln!(out, "  snapshotter = {}", toml_string(&self.snapshotter));
            let _ = writeln!(
                out,
                "  default_runtime_name = {}",
                toml_string(&self.default_runtime)
            );
        }
        out
    }
}

/// Whether this process may lower `oom_score_adj` (`CAP_SYS_RESOURCE` in its effective set).
fn has_cap_sys_resource() -> bool {
    const CAP_SYS_RESOURCE: u32 = 24;
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|status| {
            let hex = status.lines().find_map(|l| l.strip_prefix("CapEff:"))?;
            u64::from_str_radix(hex.trim(), 16).ok()
        })
        .is_some_and(|caps| caps & (1 << CAP_SYS_RESOURCE) != 0)
}

/// A TOML basic string.
fn toml_string(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 2);
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            c if c.is_control() => {
                let _ = write!(out, "\\u{:04X}", c as u32);
            }
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

/// A TOML key: bare when it can be, quoted otherwise.
fn toml_key(key: &str) -> String {
    if !key.is_empty()
        && key
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-')
    {
        key.to_string()
    } else {
        toml_string(key)
    }
}

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

    /// A `ctr` command preset with `--address` of this containerd, `-n namespace`, and
    /// `CONTAINERD_SNAPSHOTTER` set to the configured snapshotter: add the subcommand.
    ///
    /// ```no_run
    /// # let containerd = integration::containerd::Containerd::start(Default::default())?;
    /// let listed = containerd.ctr("my-test").args(["task", "ls"]).output()?;
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn ctr(&self, namespace: &str) -> Command {
        let mut cmd = Command::new(self.config.version.program("ctr"));
        cmd.arg("--address")
            .arg(self.socket())
            .args(["--namespace", namespace])
            .env("CONTAINERD_SNAPSHOTTER", &self.config.snapshotter)
            .stdin(Stdio::null());
        cmd
    }

    /// Runs `ctr -n namespace <args>` and returns its stdout, or an error with its stderr.
    ///
    /// ```no_run
    /// # let containerd = integration::containerd::Containerd::start(Default::default())?;
    /// let tasks = containerd.ctr_ok("my-test", &["task", "ls", "-q"])?;
    /// # Ok::<(), integration::containerd::ContainerdError>(())
    /// ```
    pub fn ctr_ok(&self, namespace: &str, args: &[&str]) -> Result<String, ContainerdError> {
        let mut cmd = self.ctr(namespace);
        cmd.args(args);
        let out = run(&mut cmd)?;
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    }

    /// Imports an image tarball (see [`image`](crate::image)) into `namespace` and unpacks it
    /// with the configured snapshotter.
    ///
    /// ```no_run
    /// # let containerd = integration::containerd::Containerd::start(Default::default())?;
    /// let image = integration::image::Image::busybox("docker.io/shimless/busybox:test")
    ///     .write_tar(&containerd.dir().join("busybox.tar"))?;
    /// containerd.import("my-test", image.path())?;
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn import(&self, namespace: &str, tarball: &Path) -> Result<(), ContainerdError> {
        let mut cmd = self.ctr(namespace);
        cmd.args([
            "images",
            "import",
            "--snapshotter",
            &self.config.snapshotter,
        ])
        .arg(tarball);
        run(&mut cmd).map(drop)
    }

    /// Waits (at most [`READY_TIMEOUT`]) until CRI has taken an image imported into
    /// [`CRI_NAMESPACE`] into its own store, which it shows by adding a reference named by the
    /// image's config digest (CRI's image ID) beside the image's name; before that, CRI may
    /// not find the image and try to pull it.
    ///
    /// ```no_run
    /// # let containerd = integration::containerd::Containerd::start(Default::default())?;
    /// let image = integration::image::Image::busybox("docker.io/shimless/busybox:test")
    ///     .write_tar(&containerd.dir().join("busybox.tar"))?;
    /// containerd.import(integration::containerd::CRI_NAMESPACE, image.path())?;
    /// containerd.wait_cri_knows(&image)?;
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn wait_cri_knows(&self, image: &Image) -> Result<(), ContainerdError> {
        let deadline = Instant::now() + READY_TIMEOUT;
        loop {
            let refs = self.ctr_ok(CRI_NAMESPACE, &["images", "ls", "-q"])?;
            if refs.lines().any(|r| r == image.config_digest()) {
                return Ok(());
            }
            if Instant::now() > deadline {
                return Err(self.not_ready(format!(
                    "CRI did not take {} in within {READY_TIMEOUT:?} (no {} reference)",
                    image.name(),
                    image.config_digest()
                )));
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// The namespaces containerd knows.
    pub fn namespaces(&self) -> Result<Vec<String>, ContainerdError> {
        Ok(self
            .ctr_ok("default", &["namespaces", "ls", "-q"])?
            .lines()
            .map(str::to_string)
            .collect())
    }

    /// Tasks of `namespace` with their status (`RUNNING`, `STOPPED`, ...), from `ctr task ls`.
    pub fn tasks(&self, namespace: &str) -> Result<HashMap<String, String>, ContainerdError> {
        Ok(self
            .ctr_ok(namespace, &["task", "ls"])?
            .lines()
            .skip(1)
            .filter_map(|line| {
                let mut fields = line.split_whitespace();
                let id = fields.next()?;
                let status = fields.nth(1)?;
                Some((id.to_string(), status.to_string()))
            })
            .collect())
    }

    /// The PIDs of processes other than containerd whose command line names its socket: the
    /// shims (and any `ctr` still talking to it).
    pub fn shim_pids(&self) -> Vec<u32> {
        let own = self.pid();
        processes_naming(&self.socket())
            .into_iter()
            .filter(|pid| Some(*pid) != own)
            .collect()
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

    fn clean_up(&mut self) -> Result<(), ContainerdError> {
        let Some(dir) = self.dir.take() else {
            return Ok(());
        };
        let mut left = Vec::new();
        // containerd may have been stopped by the test: bring it back to delete through it.
        let up = self.start_daemon().is_ok();
        let namespaces = if up {
            self.namespaces().unwrap_or_default()
        } else {
            Vec::new()
        };
        if up {
            for ns in &namespaces {
                self.delete_namespace_contents(ns);
            }
        }
        self.stop_daemon();

        // Whatever still names the socket: shims containerd could not shut, ctr commands.
        let socket = self.socket();
        let mut leftover_namespaces = Vec::new();
        for pid in processes_naming(&socket) {
            if let Some((ns, id)) = shim_namespace_and_id(pid) {
                // The runc shim's container: delete it through runc (which kills it).
                let _ = Command::new("runc")
                    .arg("--root")
                    .arg(Path::new(RUNC_ROOT).join(&ns))
                    .args(["delete", "--force", &id])
                    .stdout(Stdio::null())
                    .stderr(Stdio::null())
                    .status();
                leftover_namespaces.push(ns);
            }
            for victim in descendants(pid).into_iter().chain([pid]) {
                if let Some(victim) = rustix::process::Pid::from_raw(victim as i32) {
                    let _ = rustix::process::kill_process(victim, rustix::process::Signal::KILL);
                }
            }
        }
        let deadline = Instant::now() + Duration::from_secs(5);
        while !processes_naming(&socket).is_empty() && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(20));
        }
        let survivors = processes_naming(&socket);
        if !survivors.is_empty() {
            left.push(format!("processes {survivors:?}"));
        }

        remove_shim_sockets(&self.state());
        for ns in namespaces.iter().chain(&leftover_namespaces) {
            remove_empty_namespace_dirs(ns);
        }

        for _ in 0..3 {
            for mount in mounts_under(&self.path) {
                let _ = rustix::mount::unmount(&mount, rustix::mount::UnmountFlags::DETACH);
            }
        }
        let mounts = mounts_under(&self.path);
        if !mounts.is_empty() {
            left.push(format!("mounts {mounts:?}"));
        }
        if let Err(e) = dir.close() {
            left.push(format!("the directory {} ({e})", self.path.display()));
        }
        if left.is_empty() {
            Ok(())
        } else {
            Err(ContainerdError::Leftover(left.join(", ")))
        }
    }

    /// Kills and deletes every task, deletes every container of `ns`.
    fn delete_namespace_contents(&self, ns: &str) {
        // Bounded: a containerd that hangs must not hang the clean-up (and the test) with it.
        let bounded = |args: &[&str]| {
            let mut cmd = self.ctr(ns);
            cmd.args(["--timeout", "30s"])
                .args(args)
                .stdout(Stdio::piped())
                .stderr(Stdio::null());
            cmd.output()
                .map(|o| String::from_utf8_lossy(&o.stdout).into_owned())
                .unwrap_or_default()
        };
        for task in bounded(&["task", "ls", "-q"]).lines() {
            bounded(&["task", "kill", "--all", "--signal", "KILL", task]);
            bounded(&["task", "delete", "--force", task]);
        }
        for container in bounded(&["containers", "ls", "-q"]).lines() {
            bounded(&["containers", "delete", container]);
        }
    }
}

impl Drop for Containerd {
    fn drop(&mut self) {
        if let Err(e) = self.clean_up() {
            eprintln!("integration::containerd: {e}");
        }
    }
}

/// Runs a command, or says how it failed.
fn run(cmd: &mut Command) -> Result<Output, ContainerdError> {
    let line = format!(
        "{} {}",
        cmd.get_program().to_string_lossy(),
        cmd.get_args()
            .map(|a| a.to_string_lossy())
            .collect::<Vec<_>>()
            .join(" ")
    );
    let out = cmd.output().map_err(|source| ContainerdError::Spawn {
        program: cmd.get_program().to_string_lossy().into_owned(),
        source,
    })?;
    if !out.status.success() {
        return Err(ContainerdError::Ctr {
            command: line,
            status: out.status,
            stderr: String::from_utf8_lossy(&out.stderr).trim().to_string(),
        });
    }
    Ok(out)
}

/// The PIDs of the processes (this one excepted) whose command line contains `needle`:
/// after a [`Containerd`] is dropped, none should name its old socket.
///
/// ```
/// let none = integration::containerd::processes_naming("/surely/not/a/socket".as_ref());
/// assert!(none.is_empty());
/// ```
pub fn processes_naming(needle: &Path) -> Vec<u32> {
    let needle = needle.to_string_lossy();
    let me = std::process::id();
    let mut pids = Vec::new();
    for entry in std::fs::read_dir("/proc").into_iter().flatten().flatten() {
        let Ok(pid) = entry.file_name().to_string_lossy().parse::<u32>() else {
            continue;
        };
        if pid == me {
            continue;
        }
        let cmdline = std::fs::read(entry.path().join("cmdline")).unwrap_or_default();
        // Arguments are NUL-separated; the needle is one argument (or part of one).
        if cmdline
            .split(|b| *b == 0)
            .any(|arg| String::from_utf8_lossy(arg).contains(&*needle))
        {
            pids.push(pid);
        }
    }
    pids
}

/// The mount points at or under `dir`, deepest first, from `/proc/self/mountinfo`: after a
/// [`Containerd`] is dropped, none should remain under its directory.
///
/// ```
/// let none = integration::containerd::mounts_under("/surely/not/mounted".as_ref());
/// assert!(none.is_empty());
/// ```
pub fn mounts_under(dir: &Path) -> Vec<PathBuf> {
    let info = std::fs::read_to_string("/proc/self/mountinfo").unwrap_or_default();
    let mut mounts: Vec<PathBuf> = info
        .lines()
        .filter_map(|line| line.split(' ').nth(4))
        .map(|field| PathBuf::from(unescape_mountinfo(field)))
        .filter(|point| point.starts_with(dir))
        .collect();
    mounts.sort_by_key(|p| std::cmp::Reverse(p.components().count()));
    mounts.dedup();
    mounts
}

/// mountinfo writes space, tab, newline and backslash as `\ooo` octal escapes.
fn unescape_mountinfo(field: &str) -> String {
    let bytes = field.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let octal = bytes
            .get(i + 1..i + 4)
            .filter(|d| d.iter().all(|b| (b'0'..=b'7').contains(b)));
        if bytes[i] == b'\\'
            && let Some(digits) = octal
        {
            let code = digits.iter().fold(0u32, |n, d| n * 8 + u32::from(d - b'0'));
            out.push(code as u8);
            i += 4;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// The namespace and ID a shim was started with (`-namespace <ns> -id <id>`), if `pid` is one.
fn shim_namespace_and_id(pid: u32) -> Option<(String, String)> {
    let cmdline = std::fs::read(format!("/proc/{pid}/cmdline")).ok()?;
    let args: Vec<String> = cmdline
        .split(|b| *b == 0)
        .map(|a| String::from_utf8_lossy(a).into_owned())
        .collect();
    if !args.first()?.contains("containerd-shim") {
        return None;
    }
    let value = |flag: &str| {
        args.iter()
            .position(|a| a == flag)
            .and_then(|i| args.get(i + 1))
            .cloned()
    };
    Some((value("-namespace")?, value("-id")?))
}

/// Every descendant of `pid`, from the parent links in `/proc/<pid>/stat`.
fn descendants(pid: u32) -> Vec<u32> {
    let mut parents: Vec<(u32, u32)> = Vec::new();
    for entry in std::fs::read_dir("/proc").into_iter().flatten().flatten() {
        let Ok(child) = entry.file_name().to_string_lossy().parse::<u32>() else {
            continue;
        };
        let Ok(stat) = std::fs::read_to_string(entry.path().join("stat")) else {
            continue;
        };
        // The command name is in parentheses and may hold spaces: fields follow the last ')'.
        let ppid = stat
            .rsplit_once(')')
            .and_then(|(_, rest)| rest.split_whitespace().nth(1))
            .and_then(|p| p.parse::<u32>().ok());
        if let Some(ppid) = ppid {
            parents.push((child, ppid));
        }
    }
    let mut found = Vec::new();
    let mut frontier = vec![pid];
    while let Some(parent) = frontier.pop() {
        for &(child, ppid) in &parents {
            if ppid == parent && !found.contains(&child) {
                found.push(child);
                frontier.push(child);
            }
        }
    }
    found
}

/// Removes the sockets of shims containerd started (named in each task's `address` file under
/// `state`), which a killed shim leaves in `/run/containerd/s`.
fn remove_shim_sockets(state: &Path) {
    let tasks = state.join("io.containerd.runtime.v2.task");
    for ns in std::fs::read_dir(tasks).into_iter().flatten().flatten() {
        for task in std::fs::read_dir(ns.path()).into_iter().flatten().flatten() {
            let Ok(address) = std::fs::read_to_string(task.path().join("address")) else {
                continue;
            };
            let socket = address.trim().trim_start_matches("unix://");
            if socket.starts_with("/run/containerd/s/") {
                let _ = std::fs::remove_file(socket);
            }
        }
    }
}

/// Removes the per-namespace directories runc and `ctr run`'s cgroups leave once empty. Not
/// for [`CRI_NAMESPACE`], which every CRI test shares: removing its directories while another
/// test's runc creates a container under them could fail that create.
fn remove_empty_namespace_dirs(ns: &str) {
    if ns.is_empty() || ns.contains('/') || ns == "." || ns == ".." || ns == CRI_NAMESPACE {
        return;
    }
    let _ = std::fs::remove_dir(Path::new(RUNC_ROOT).join(ns));
    let _ = std::fs::remove_dir(Path::new("/sys/fs/cgroup").join(ns));
    for hierarchy in std::fs::read_dir("/sys/fs/cgroup")
        .into_iter()
        .flatten()
        .flatten()
    {
        // remove_dir only removes an empty cgroup: one in use stays.
        let _ = std::fs::remove_dir(hierarchy.path().join(ns));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn toml_strings_escape_quotes_backslashes_and_controls() {
        assert_eq!(toml_string("a\"b\\c\nd"), "\"a\\\"b\\\\c\\u000Ad\"");
        assert_eq!(toml_key("SystemdCgroup"), "SystemdCgroup");
        assert_eq!(toml_key("a.b"), "\"a.b\"");
    }

    #[test]
    fn mountinfo_escapes_are_decoded() {
        assert_eq!(unescape_mountinfo("/tmp/a\\040b"), "/tmp/a b");
        assert_eq!(unescape_mountinfo("/plain"), "/plain");
        assert_eq!(unescape_mountinfo("/end\\04"), "/end\\04");
    }

    #[test]
    fn without_cri_the_plugin_is_disabled_and_runc_is_still_registered() {
        let toml = ContainerdConfig::new().to_toml(Path::new("/tmp/x"));
        assert!(toml.contains("disabled_plugins = [\"io.containerd.grpc.v1.cri\"]"));
        assert!(toml.contains(
            "[plugins.\"io.containerd.grpc.v1.cri\".containerd.runtimes.\"runc\"]\n  \
             runtime_type = \"io.containerd.runc.v2\"\n"
        ));
        assert!(toml.contains("root = \"/tmp/x/root\""));
        assert!(toml.contains("[ttrpc]\n  address = \"/tmp/x/containerd.sock.ttrpc\""));
    }

    #[test]
    fn version_3_config_splits_cri_into_its_2x_plugins() {
        let toml = ContainerdConfig::new()
            .version(Version::V2_1)
            .cri("registry.k8s.io/pause:3.9")
            .restrict_oom_score_adj(true)
            .runtime(
                Runtime::new("unified", "io.containerd.runc.v2")
                    .sandbox_mode("podsandbox")
                    .option("SystemdCgroup", false),
            )
            .to_toml(Path::new("/tmp/x"));
        let parsed: toml::Table = toml.parse().expect("valid TOML");
        assert_eq!(parsed["version"].as_integer(), Some(3));
        let plugins = parsed["plugins"].as_table().unwrap();
        let images = &plugins["io.containerd.cri.v1.images"];
        assert_eq!(
            images["pinned_images"]["sandbox"].as_str(),
            Some("registry.k8s.io/pause:3.9")
        );
        assert_eq!(images["snapshotter"].as_str(), Some("overlayfs"));
        let runtime = &plugins["io.containerd.cri.v1.runtime"];
        assert_eq!(runtime["restrict_oom_score_adj"].as_bool(), Some(true));
        assert_eq!(
            runtime["cni"]["bin_dirs"].as_array().unwrap()[0].as_str(),
            Some("/tmp/x/cni/bin")
        );
        let unified = &runtime["containerd"]["runtimes"]["unified"];
        assert_eq!(unified["sandboxer"].as_str(), Some("podsandbox"));
        assert_eq!(unified["options"]["SystemdCgroup"].as_bool(), Some(false));
        assert_eq!(
            runtime["containerd"]["runtimes"]["runc"]["runtime_type"].as_str(),
            Some("io.containerd.runc.v2")
        );
        assert!(
            !plugins.contains_key("io.containerd.grpc.v1.cri") || {
                let cri = &plugins["io.containerd.grpc.v1.cri"];
                cri.get("containerd").is_none() && cri.get("sandbox_image").is_none()
            }
        );
        assert!(parsed.get("disabled_plugins").is_none());

        let without_cri = ContainerdConfig::new()
            .version(Version::V2_1)
            .to_toml(Path::new("/tmp/x"));
        let parsed: toml::Table = without_cri.parse().unwrap();
        let disabled = parsed["disabled_plugins"].as_array().unwrap();
        assert!(
            disabled
                .iter()
                .any(|p| p.as_str() == Some("io.containerd.cri.v1.runtime"))
        );
    }

    #[test]
    fn cri_config_points_cni_at_private_empty_directories() {
        let toml = ContainerdConfig::new()
            .cri("registry.k8s.io/pause:3.9")
            .restrict_oom_score_adj(true)
            .snapshotter("native")
            .runtime(
                Runtime::new("unified", "io.containerd.runc.v2")
                    .option("BinaryName", "crun")
                    .option("SystemdCgroup", false),
            )
            .to_toml(Path::new("/tmp/x"));
        for line in [
            "  sandbox_image = \"registry.k8s.io/pause:3.9\"",
            "  conf_dir = \"/tmp/x/cni/net.d\"",
            "  bin_dir = \"/tmp/x/cni/bin\"",
            "  snapshotter = \"native\"",
            "  default_runtime_name = \"runc\"",
            "  enable_cdi = false",
            "  restrict_oom_score_adj = true",
            "  BinaryName = \"crun\"",
            "  SystemdCgroup = false",
        ] {
            assert!(toml.lines().any(|l| l == line), "{line} missing in\n{toml}");
        }
        assert!(!toml.contains("disabled_plugins"));
    }
}
