//! The daemon's configuration: `/etc/shimless/config.toml`, every key optional.
//!
//! Built-in defaults are the paths of the architecture (socket `/run/shimless/shimless.sock`,
//! state `/run/shimless/state`, runc roots `/run/shimless/runc/<namespace>`, eBPF pins
//! `/sys/fs/bpf/shimless`), so the daemon runs with no file at all. A file that exists is read
//! strictly: an unknown key or a value of the wrong type is an error that names it, rather than
//! a setting silently ignored.

use serde::Deserialize;
use std::path::{Path, PathBuf};

/// Where the configuration is read from by default.
pub const DEFAULT_PATH: &str = "/etc/shimless/config.toml";

/// The environment variable naming another configuration file for the binaries that containerd
/// starts (`containerd-shim-shimless-v2` inherits containerd's environment).
pub const PATH_ENV: &str = "SHIMLESS_CONFIG";

/// The configuration file to read: `$SHIMLESS_CONFIG` if set, else [`DEFAULT_PATH`].
///
/// ```
/// let path = task_service::config::default_path();
/// assert!(path.is_absolute() || std::env::var_os("SHIMLESS_CONFIG").is_some());
/// ```
pub fn default_path() -> PathBuf {
    std::env::var_os(PATH_ENV)
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(DEFAULT_PATH))
}

/// Everything the daemon can be told.
///
/// ```
/// let config = task_service::config::Config::from_toml(r#"
///     socket = "/tmp/shimless.sock"
///     allowed_uids = [0, 1000]
/// "#)?;
/// assert_eq!(config.socket, std::path::Path::new("/tmp/shimless.sock"));
/// assert_eq!(config.allowed_uids, [0, 1000]);
/// assert_eq!(config.runtime, "runc"); // the rest keep their defaults
/// # Ok::<(), task_service::config::ConfigError>(())
/// ```
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Config {
    /// The gRPC socket containerd and `shimlessctl` connect to.
    pub socket: PathBuf,
    /// Where container records live (`<state_dir>/<namespace>/<id>.json`).
    pub state_dir: PathBuf,
    /// The parent of each namespace's runc `--root`.
    pub runc_root: PathBuf,
    /// The OCI runtime binary used unless a container asks for another: `runc` or `crun`, or a
    /// path.
    pub runtime: String,
    /// The bpffs directory where exitwatch pins its maps and program.
    pub bpf_pin_dir: PathBuf,
    /// The uids allowed to call the socket.
    pub allowed_uids: Vec<u32>,
    /// The largest gRPC message accepted, in bytes.
    pub max_message_bytes: usize,
    /// How many events a slow event subscriber may fall behind before losing the oldest.
    pub event_capacity: usize,
    /// The daemon's private socket when it runs behind the front (`shimless-front`), which then
    /// owns `socket` and every containerd connection.
    pub daemon_socket: PathBuf,
    /// Where the front and the daemon that `containerd-shim-shimless-v2 start` launches write
    /// their logs (`front.log`, `shimlessd.log`).
    pub log_dir: PathBuf,
    /// The size at which the front's and the daemon's log is renamed to `<name>.1` and started
    /// afresh (see [`crate::logcap`]), in bytes: each takes at most `log_keep + 1` times this on
    /// disk.
    pub log_max_bytes: u64,
    /// How many rotated copies of each log are kept (`<name>.1` newest, ... `<name>.N`).
    pub log_keep: u32,
    /// The least severe log events written: `error`, `warn`, `info` (default: no line per
    /// successful call), `debug` (a line per call) or `trace` (see [`crate::logging`]).
    pub log_level: crate::logging::LogLevel,
    /// How log lines are written: `text` (default) or `json` (one object per line).
    pub log_format: crate::logging::LogFormat,
    /// Where the daemon serves its metrics in Prometheus's text format: `unix:/PATH` or a
    /// loopback `IP:PORT` (see [`crate::metrics`]). Unset (the default): not served.
    pub metrics_address: Option<crate::metrics::address::MetricsAddress>,
    /// Where the front serves its own metrics (reconnects, held calls, daemon restarts), in the
    /// same form. Unset (the default): not served.
    pub front_metrics_address: Option<crate::metrics::address::MetricsAddress>,
    /// Whether the front starts `shimlessd` and starts it again whenever it exits. Turn it off
    /// when something else (a systemd unit) runs the daemon on `daemon_socket`.
    pub supervise: bool,
    /// How long the front waits before starting an exited daemon again, in milliseconds.
    pub restart_delay_ms: u64,
    /// How long the front holds a call that has no deadline while the daemon is away, in
    /// milliseconds, before answering `UNAVAILABLE`.
    pub hold_ms: u64,
    /// What containerd speaks to the front: `ttrpc` (default; what containerd's own shims
    /// speak) or `grpc` (containerd 1.7's gRPC client drops a connection that sees no call for
    /// 30 minutes and then takes the task's shim for dead).
    pub containerd_protocol: crate::front::Protocol,
    /// The basename of an exec's `args[0]` that the daemon answers itself, with no process
    /// and no runtime call: `shimless-probe file PATH VALIDITY` checks PATH's mtime inside the
    /// container (see `fileprobe::run_command`). Empty turns the marker off.
    pub probe_command: String,
    /// Which pods run in one cgroup (their pod's) when the pod carries no
    /// `shimless.io/cgroup` annotation: `never` (default), `when-lossless` or `always` (see
    /// [`crate::fold`]).
    pub fold: crate::fold::FoldPolicy,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            socket: PathBuf::from("/run/shimless/shimless.sock"),
            state_dir: PathBuf::from("/run/shimless/state"),
            runc_root: PathBuf::from("/run/shimless/runc"),
            runtime: "runc".into(),
            bpf_pin_dir: PathBuf::from("/sys/fs/bpf/shimless"),
            allowed_uids: vec![0],
            max_message_bytes: 16 * 1024 * 1024,
            event_capacity: 4096,
            daemon_socket: PathBuf::from("/run/shimless/daemon.sock"),
            log_dir: PathBuf::from("/var/log/shimless"),
            log_max_bytes: 16 << 20,
            log_keep: 3,
            log_level: crate::logging::LogLevel::Info,
            log_format: crate::logging::LogFormat::Text,
            metrics_address: None,
            front_metrics_address: None,
            supervise: true,
            restart_delay_ms: 200,
            hold_ms: 60_000,
            containerd_protocol: crate::front::Protocol::Ttrpc,
            probe_command: "shimless-probe".into(),
            fold: crate::fold::FoldPolicy::Never,
        }
    }
}

/// Why a configuration could not be used.
///
/// ```
/// let err = task_service::config::Config::from_toml("sockett = \"/x\"").unwrap_err();
/// assert!(err.to_string().contains("unknown field `sockett`"), "{err}");
/// ```
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ConfigError {
    /// The file exists but cannot be read.
    #[error("cannot read {path}: {source}")]
    Read {
        /// The file.
        path: PathBuf,
        /// The OS error.
        #[source]
        source: std::io::Error,
    },
    /// The text is not valid TOML for this configuration.
    #[error("{origin}: {message}")]
    Parse {
        /// The file, or `<inline>`.
        origin: String,
        /// The parser's message, naming the key and line.
        message: String,
    },
    /// A value parses but cannot work.
    #[error("{origin}: `{key}` {problem}")]
    Invalid {
        /// The file, or `<inline>`.
        origin: String,
        /// The offending key.
        key: &'static str,
        /// What is wrong with it.
        problem: &'static str,
    },
}

impl Config {
    /// Reads `path`; a missing file gives the defaults.
    ///
    /// ```
    /// let config = task_service::config::Config::load("/nonexistent/config.toml")?;
    /// assert_eq!(config, task_service::config::Config::default());
    /// # Ok::<(), task_service::config::ConfigError>(())
    /// ```
    pub fn load(path: impl AsRef<Path>) -> Result<Config, ConfigError> {
        let path = path.as_ref();
        match std::fs::read_to_string(path) {
            Ok(text) => Self::parse(&text, &path.display().to_string()),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(Config::default()),
            Err(source) => Err(ConfigError::Read {
                path: path.to_owned(),
                source,
            }),
        }
    }

    /// Where the front makes one socket per containerd namespace: `ns/` beside `socket`.
    ///
    /// ```
    /// let config = task_service::config::Config::default();
    /// assert_eq!(config.namespace_dir(), std::path::Path::new("/run/shimless/ns"));
    /// ```
    pub fn namespace_dir(&self) -> PathBuf {
        self.socket.parent().unwrap_or(Path::new("/")).join("ns")
    }

    /// Parses configuration text (keys not given keep their defaults).
    pub fn from_toml(text: &str) -> Result<Config, ConfigError> {
        Self::parse(text, "<inline>")
    }

    fn parse(text: &str, origin: &str) -> Result<Config, ConfigError> {
        let config: Config = toml::from_str(text).map_err(|e| ConfigError::Parse {
            origin: origin.into(),
            message: e.to_string(),
        })?;
        let invalid = |key, problem| {
            Err(ConfigError::Invalid {
                origin: origin.into(),
                key,
                problem,
            })
        };
        for (key, path) in [
            ("socket", &config.socket),
            ("state_dir", &config.state_dir),
            ("runc_root", &config.runc_root),
            ("bpf_pin_dir", &config.bpf_pin_dir),
            ("daemon_socket", &config.daemon_socket),
            ("log_dir", &config.log_dir),
        ] {
            if !path.is_absolute() {
                return invalid(key, "must be an absolute path");
            }
        }
        if let Err(problem) = check_bpf_pin_dir(&config.bpf_pin_dir) {
            return invalid("bpf_pin_dir", problem);
        }
        if config.runtime.is_empty() {
            return invalid(
                "runtime",
                "must name a runtime binary (runc, crun or a path)",
            );
        }
        if config.allowed_uids.is_empty() {
            return invalid("allowed_uids", "must allow at least one uid (0 for root)");
        }
        if config.max_message_bytes < 64 * 1024 {
            return invalid(
                "max_message_bytes",
                "must be at least 65536 (containerd sends OCI specs)",
            );
        }
        if config.log_max_bytes < 4096 {
            return invalid("log_max_bytes", "must be at least 4096");
        }
        if !(1..=100).contains(&config.log_keep) {
            return invalid("log_keep", "must be between 1 and 100");
        }
        if config.metrics_address.is_some()
            && config.metrics_address == config.front_metrics_address
        {
            return invalid(
                "front_metrics_address",
                "must differ from `metrics_address` (the daemon serves there)",
            );
        }
        if config.probe_command.contains('/') {
            return invalid(
                "probe_command",
                "must be a basename such as \"shimless-probe\" (no '/'), or empty to turn it off",
            );
        }
        if config.event_capacity == 0 {
            return invalid("event_capacity", "must be at least 1");
        }
        if config.daemon_socket == config.socket {
            return invalid(
                "daemon_socket",
                "must differ from `socket` (the front listens there)",
            );
        }
        Ok(config)
    }
}

/// Whether bpffs would take `dir` as the place to pin exitwatch: bpffs refuses a name with a
/// `.` in it (its lookup answers `EPERM`, which the daemon could only log as "Operation not
/// permitted" and then run without kernel exit records). The rule applies to the part of `dir`
/// inside bpffs: below `/sys/fs/bpf`, or below the deepest existing directory of `dir` that is
/// a bpffs mount.
///
/// ```
/// use task_service::config::check_bpf_pin_dir;
/// assert!(check_bpf_pin_dir("/sys/fs/bpf/shimless".as_ref()).is_ok());
/// assert!(check_bpf_pin_dir("/sys/fs/bpf/shimless.v1".as_ref()).unwrap_err().contains("'.'"));
/// ```
pub fn check_bpf_pin_dir(dir: &Path) -> Result<(), &'static str> {
    const RULE: &str = "must have no '.' in its names below the bpffs mount: bpffs refuses \
                        such names (EPERM) and exitwatch could not pin its maps there";
    let inside = match dir.strip_prefix("/sys/fs/bpf") {
        Ok(rest) => rest.to_owned(),
        Err(_) => match bpffs_mount_above(dir) {
            Some(mount) => dir.strip_prefix(mount).unwrap_or(dir).to_owned(),
            None => return Ok(()),
        },
    };
    let dotted = inside
        .components()
        .any(|c| c.as_os_str().as_encoded_bytes().contains(&b'.'));
    if dotted { Err(RULE) } else { Ok(()) }
}

/// The deepest existing directory of `dir` (itself included) that is on bpffs.
fn bpffs_mount_above(dir: &Path) -> Option<&Path> {
    const BPF_FS_MAGIC: u64 = 0xcafe_4a11;
    let on_bpffs = |p: &Path| rustix::fs::statfs(p).is_ok_and(|s| s.f_type as u64 == BPF_FS_MAGIC);
    let deepest = dir.ancestors().find(|p| p.exists())?;
    if !on_bpffs(deepest) {
        return None;
    }
    // Climb to the mount's root: the highest ancestor still on bpffs.
    deepest.ancestors().take_while(|p| on_bpffs(p)).last()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_empty_file_is_the_defaults() {
        assert_eq!(Config::from_toml("").unwrap(), Config::default());
    }

    #[test]
    fn log_and_metrics_keys_parse_and_bad_values_name_the_key() {
        let config = Config::from_toml(
            "log_level = \"debug\"\nlog_format = \"json\"\nlog_keep = 5\n\
             metrics_address = \"unix:/run/shimless/metrics.sock\"",
        )
        .unwrap();
        assert_eq!(config.log_level, crate::logging::LogLevel::Debug);
        assert_eq!(config.log_format, crate::logging::LogFormat::Json);
        assert_eq!(config.log_keep, 5);
        assert_eq!(
            config.metrics_address.map(|a| a.to_string()),
            Some("unix:/run/shimless/metrics.sock".into())
        );
        assert_eq!(Config::default().metrics_address, None);
        for (text, want) in [
            ("log_level = \"loud\"", "log_level"),
            ("log_format = \"xml\"", "log_format"),
            (
                "metrics_address = \"10.0.0.1:9464\"",
                "not a loopback address",
            ),
        ] {
            let err = Config::from_toml(text).unwrap_err().to_string();
            assert!(err.contains(want), "{text}: {err}");
        }
    }

    #[test]
    fn a_wrong_type_names_the_key() {
        let err = Config::from_toml("allowed_uids = \"root\"")
            .unwrap_err()
            .to_string();
        assert!(err.contains("allowed_uids"), "{err}");
    }

    #[test]
    fn unusable_values_are_refused_with_the_key_and_the_rule() {
        let cases = [
            (
                "socket = \"relative.sock\"",
                "`socket` must be an absolute path",
            ),
            (
                "state_dir = \"state\"",
                "`state_dir` must be an absolute path",
            ),
            ("runtime = \"\"", "`runtime` must name a runtime binary"),
            (
                "allowed_uids = []",
                "`allowed_uids` must allow at least one uid",
            ),
            (
                "max_message_bytes = 10",
                "`max_message_bytes` must be at least 65536",
            ),
            ("event_capacity = 0", "`event_capacity` must be at least 1"),
            (
                "probe_command = \"/bin/shimless-probe\"",
                "`probe_command` must be a basename",
            ),
            (
                "daemon_socket = \"/run/shimless/shimless.sock\"",
                "`daemon_socket` must differ from `socket`",
            ),
            ("log_dir = \"logs\"", "`log_dir` must be an absolute path"),
            ("log_keep = 0", "`log_keep` must be between 1 and 100"),
            (
                "metrics_address = \"127.0.0.1:9464\"\nfront_metrics_address = \"127.0.0.1:9464\"",
                "`front_metrics_address` must differ from `metrics_address`",
            ),
            (
                "bpf_pin_dir = \"/sys/fs/bpf/shimless.test\"",
                "`bpf_pin_dir` must have no '.' in its names below the bpffs mount",
            ),
        ];
        for (text, want) in cases {
            let err = Config::from_toml(text).unwrap_err().to_string();
            assert!(err.starts_with("<inline>: "), "{err}");
            assert!(err.contains(want), "{text}: {err}");
        }
    }

    #[test]
    fn only_names_inside_a_bpffs_mount_must_be_without_dots() {
        let Some(()) = integration::require(&[integration::Need::Root]) else {
            return;
        };
        // A temporary directory's own name has a '.' (".tmpXXXX"): above the mount, allowed.
        let dir = tempfile::tempdir().unwrap();
        let mount = dir.path().join("bpf");
        std::fs::create_dir(&mount).unwrap();
        rustix::mount::mount(
            "bpf",
            &mount,
            "bpf",
            rustix::mount::MountFlags::empty(),
            None,
        )
        .unwrap();
        let ok = check_bpf_pin_dir(&mount.join("shimless"));
        let refused = check_bpf_pin_dir(&mount.join("shimless.v1/maps"));
        let _ = rustix::mount::unmount(&mount, rustix::mount::UnmountFlags::DETACH);
        assert_eq!(ok, Ok(()));
        assert!(refused.unwrap_err().contains("bpffs refuses"));
    }

    #[test]
    fn a_file_is_read_and_a_missing_one_is_the_defaults() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("config.toml");
        std::fs::write(&path, "runtime = \"crun\"\n").unwrap();
        assert_eq!(Config::load(&path).unwrap().runtime, "crun");
        std::fs::write(&path, "runtime = [\n").unwrap();
        let err = Config::load(&path).unwrap_err().to_string();
        assert!(err.starts_with(&path.display().to_string()), "{err}");
        assert_eq!(
            Config::load(dir.path().join("absent.toml")).unwrap(),
            Config::default()
        );
    }
}
