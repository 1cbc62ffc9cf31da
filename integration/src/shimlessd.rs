//! `shimlessd` under test: [`Shimlessd`] builds its command line (a configuration file, or
//! private paths given as flags) and starts it as a [`Child`] that is ready once it serves.

use crate::child::Child;
use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::process::Command;

/// What `shimlessd` logs once it serves.
pub const READY: &str = "serving on";

/// A `shimlessd` command line for a test, bench or demo.
///
/// Without [`Shimlessd::config`] it runs with no configuration file (every setting its
/// default, or the flag given here).
///
/// ```no_run
/// use integration::shimlessd::Shimlessd;
/// let dir = tempfile::tempdir()?;
/// let daemon = Shimlessd::new("shimlessd").in_dir(dir.path()).start(&dir.path().join("d.log"))?;
/// println!("shimlessd {} on {}", daemon.pid(), Shimlessd::socket_in(dir.path()).display());
/// # Ok::<(), std::io::Error>(())
/// ```
#[derive(Debug, Clone)]
pub struct Shimlessd {
    binary: OsString,
    config: Option<PathBuf>,
    socket: Option<PathBuf>,
    state_dir: Option<PathBuf>,
    runc_root: Option<PathBuf>,
}

impl Shimlessd {
    /// The daemon binary `binary` (in a test of task-service, `env!("CARGO_BIN_EXE_shimlessd")`).
    pub fn new(binary: impl Into<OsString>) -> Shimlessd {
        Shimlessd {
            binary: binary.into(),
            config: None,
            socket: None,
            state_dir: None,
            runc_root: None,
        }
    }

    /// Its socket, state directory and runtime root under `dir`: [`Shimlessd::socket_in`],
    /// `dir/state` and `dir/runc`.
    ///
    /// ```
    /// let d = integration::shimlessd::Shimlessd::new("shimlessd").in_dir("/tmp/t".as_ref());
    /// let args: Vec<_> = d.command().get_args().map(|a| a.to_owned()).collect();
    /// assert!(args.contains(&"/tmp/t/state".into()));
    /// ```
    pub fn in_dir(self, dir: &Path) -> Shimlessd {
        self.socket(Shimlessd::socket_in(dir))
            .state_dir(dir.join("state"))
            .runc_root(dir.join("runc"))
    }

    /// The socket [`Shimlessd::in_dir`] gives it: `dir/s.sock`.
    ///
    /// ```
    /// use integration::shimlessd::Shimlessd;
    /// assert_eq!(Shimlessd::socket_in("/tmp/t".as_ref()), std::path::Path::new("/tmp/t/s.sock"));
    /// ```
    pub fn socket_in(dir: &Path) -> PathBuf {
        dir.join("s.sock")
    }

    /// Reads configuration file `path` (`--config`).
    pub fn config(mut self, path: impl Into<PathBuf>) -> Shimlessd {
        self.config = Some(path.into());
        self
    }

    /// Serves on `path` (`--socket`).
    pub fn socket(mut self, path: impl Into<PathBuf>) -> Shimlessd {
        self.socket = Some(path.into());
        self
    }

    /// Keeps its records in `path` (`--state-dir`).
    pub fn state_dir(mut self, path: impl Into<PathBuf>) -> Shimlessd {
        self.state_dir = Some(path.into());
        self
    }

    /// Runs the runtime with root `path`/`<namespace>` (`--runc-root`).
    pub fn runc_root(mut self, path: impl Into<PathBuf>) -> Shimlessd {
        self.runc_root = Some(path.into());
        self
    }

    /// The command line.
    ///
    /// ```
    /// let d = integration::shimlessd::Shimlessd::new("shimlessd").socket("/tmp/s.sock");
    /// let args: Vec<_> = d.command().get_args().map(|a| a.to_string_lossy().into_owned()).collect();
    /// assert_eq!(args, ["--config", "/nonexistent/shimless.toml", "--socket", "/tmp/s.sock"]);
    /// ```
    pub fn command(&self) -> Command {
        let mut command = Command::new(&self.binary);
        let config = self
            .config
            .clone()
            .unwrap_or_else(|| PathBuf::from("/nonexistent/shimless.toml"));
        command.arg("--config").arg(config);
        let flags = [
            ("--socket", &self.socket),
            ("--state-dir", &self.state_dir),
            ("--runc-root", &self.runc_root),
        ];
        for (flag, value) in flags {
            if let Some(value) = value {
                command.arg(flag).arg(value);
            }
        }
        command
    }

    /// Starts it with its stderr appended to `log`, and waits until it serves (see
    /// [`Child::start`]).
    pub fn start(&self, log: &Path) -> std::io::Result<Child> {
        Child::start(self.command(), log, READY)
    }
}
