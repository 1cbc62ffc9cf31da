//! [`Runc`]: the global configuration, and the engine every command runs through.

use crate::error::Error;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

/// Which runtime a [`Runc`] drives; they differ in a few behaviours the docs point out.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Flavor {
    /// runc (or a binary that behaves like it).
    Runc,
    /// crun.
    Crun,
}

/// A runtime binary and its global options (`--root`, `--log`, `--systemd-cgroup`, `--debug`),
/// plus a default timeout per command. Cheap to clone; commands take `&self` and may run
/// concurrently.
///
/// ```no_run
/// use runc_driver::Runc;
/// let runc = Runc::builder().binary("crun").root("/run/my-crun").build()?;
/// let states = futures_lite::future::block_on(runc.list())?;
/// # Ok::<(), runc_driver::Error>(())
/// ```
#[derive(Debug, Clone)]
pub struct Runc {
    pub(crate) inner: Arc<Inner>,
}

#[derive(Debug)]
pub(crate) struct Inner {
    pub(crate) binary: PathBuf,
    pub(crate) flavor: Flavor,
    pub(crate) root: Option<PathBuf>,
    pub(crate) log: Option<PathBuf>,
    pub(crate) systemd_cgroup: bool,
    pub(crate) debug: bool,
    pub(crate) timeout: Duration,
    /// Per-call logs, pid files and console sockets live here.
    pub(crate) scratch: tempfile::TempDir,
    pub(crate) counter: AtomicU64,
    pub(crate) limit: crate::ProcessLimit,
    pub(crate) observer: Option<crate::Observer>,
}

/// Builds a [`Runc`].
#[derive(Debug, Clone)]
pub struct RuncBuilder {
    binary: PathBuf,
    root: Option<PathBuf>,
    log: Option<PathBuf>,
    systemd_cgroup: bool,
    debug: bool,
    timeout: Duration,
    limit: Option<crate::ProcessLimit>,
    observer: Option<crate::Observer>,
}

impl Default for RuncBuilder {
    fn default() -> Self {
        RuncBuilder {
            binary: PathBuf::from("runc"),
            root: None,
            log: None,
            systemd_cgroup: false,
            debug: false,
            timeout: Duration::from_secs(30),
            limit: None,
            observer: None,
        }
    }
}

impl RuncBuilder {
    /// The runtime binary: a name looked up on `PATH` (`runc`, `crun`) or a path.
    pub fn binary(mut self, binary: impl Into<PathBuf>) -> Self {
        self.binary = binary.into();
        self
    }

    /// `--root`: where the runtime keeps container state.
    pub fn root(mut self, root: impl Into<PathBuf>) -> Self {
        self.root = Some(root.into());
        self
    }

    /// A file every command's JSON log is appended to, besides being read for errors.
    pub fn log(mut self, log: impl Into<PathBuf>) -> Self {
        self.log = Some(log.into());
        self
    }

    /// `--systemd-cgroup`.
    pub fn systemd_cgroup(mut self, on: bool) -> Self {
        self.systemd_cgroup = on;
        self
    }

    /// `--debug`.
    pub fn debug(mut self, on: bool) -> Self {
        self.debug = on;
        self
    }

    /// The default limit for one command (30 s unless set). A command that runs longer is
    /// killed with its process group and fails with [`Error::Timeout`].
    pub fn timeout(mut self, timeout: Duration) -> Self {
        self.timeout = timeout;
        self
    }

    /// The bound on runtime processes this driver shares (default: [`ProcessLimit::shared`],
    /// one for the whole process). A call waits for a slot before it spawns the runtime.
    ///
    /// [`ProcessLimit::shared`]: crate::ProcessLimit::shared
    pub fn process_limit(mut self, limit: crate::ProcessLimit) -> Self {
        self.limit = Some(limit);
        self
    }

    /// Tells `observer` of every command this driver runs (see [`Observer`](crate::Observer)).
    pub fn observer(mut self, observer: crate::Observer) -> Self {
        self.observer = Some(observer);
        self
    }

    /// Resolves the binary (on `PATH` for a bare name) and checks it is executable.
    pub fn build(self) -> Result<Runc, Error> {
        let binary = resolve(&self.binary)?;
        let name = binary
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        let flavor = if name.contains("crun") {
            Flavor::Crun
        } else {
            Flavor::Runc
        };
        let scratch = tempfile::Builder::new()
            .prefix("runc-driver-")
            .permissions(crate::private::dir_permissions())
            .tempdir()
            .map_err(|source| Error::Io {
                command: "setup",
                what: "create a scratch directory",
                source,
            })?;
        Ok(Runc {
            inner: Arc::new(Inner {
                binary,
                flavor,
                root: self.root,
                log: self.log,
                systemd_cgroup: self.systemd_cgroup,
                debug: self.debug,
                timeout: self.timeout,
                scratch,
                counter: AtomicU64::new(0),
                limit: self.limit.unwrap_or_else(crate::ProcessLimit::shared),
                observer: self.observer,
            }),
        })
    }
}

fn resolve(binary: &Path) -> Result<PathBuf, Error> {
    let candidates: Vec<PathBuf> = if binary.components().count() > 1 || binary.is_absolute() {
        vec![binary.to_owned()]
    } else {
        let path = std::env::var_os("PATH").unwrap_or_default();
        std::env::split_paths(&path)
            .map(|dir| dir.join(binary))
            .collect()
    };
    for candidate in &candidates {
        if candidate.is_file() && rustix::fs::access(candidate, rustix::fs::Access::EXEC_OK).is_ok()
        {
            return Ok(candidate.clone());
        }
    }
    let source = std::io::Error::new(std::io::ErrorKind::NotFound, "not found or not executable");
    Err(Error::Spawn {
        path: binary.to_owned(),
        source,
    })
}

impl Runc {
    /// A driver for `binary` (`runc`, `crun`, or a path) with default options.
    ///
    /// ```no_run
    /// let runc = runc_driver::Runc::new("runc")?;
    /// # Ok::<(), runc_driver::Error>(())
    /// ```
    pub fn new(binary: impl Into<PathBuf>) -> Result<Runc, Error> {
        RuncBuilder::default().binary(binary).build()
    }

    /// Starts building a driver (default binary `runc`).
    pub fn builder() -> RuncBuilder {
        RuncBuilder::default()
    }

    /// The resolved runtime binary.
    pub fn binary(&self) -> &Path {
        &self.inner.binary
    }

    /// Which runtime this is.
    pub fn flavor(&self) -> Flavor {
        self.inner.flavor
    }

    /// A fresh path in the driver's scratch directory.
    pub(crate) fn scratch_path(&self, what: &str) -> PathBuf {
        let n = self.inner.counter.fetch_add(1, Ordering::Relaxed);
        self.inner.scratch.path().join(format!("{what}-{n}"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_missing_binary_is_a_spawn_error_naming_it() {
        match Runc::new("no-such-runtime-here") {
            Err(Error::Spawn { path, .. }) => assert_eq!(path, Path::new("no-such-runtime-here")),
            other => panic!("{other:?}"),
        }
        match Runc::new("/etc/passwd") {
            Err(Error::Spawn { path, .. }) => assert_eq!(path, Path::new("/etc/passwd")),
            other => panic!("{other:?}"),
        }
    }
}
