//! OCI bundles built from the host's static busybox, for tests that run real containers.
//!
//! A bundle is a temporary directory holding `config.json` (written with `oci-spec`, starting
//! from its default spec, which is what `runc spec` produces) and `rootfs/` with a copy of
//! `/bin/busybox` (Debian's `busybox-static`) and a symlink per applet, so `sh`, `sleep`,
//! `cat`, `touch`... all exist inside. It runs under both runc and crun as root.
//!
//! The directory is removed when the [`Bundle`] is dropped; a [`ContainerGuard`] deletes the
//! container from its runtime when dropped, so a test that panics leaks neither.

use oci_spec::runtime::{LinuxResources, ProcessBuilder, RootBuilder, Spec};
use std::io;
use std::path::{Path, PathBuf};
use std::process::Command;

/// The host binary every bundle is made of.
pub const BUSYBOX: &str = "/bin/busybox";

/// Builds a [`Bundle`].
///
/// ```no_run
/// use integration::bundle::BundleBuilder;
/// let bundle = BundleBuilder::new()
///     .args(["sh", "-c", "echo hello; sleep 60"])
///     .hostname("web")
///     .env("GREETING", "hello")
///     .build()?;
/// assert!(bundle.path().join("config.json").is_file());
/// assert!(bundle.rootfs().join("bin/sleep").exists());
/// # Ok::<(), std::io::Error>(())
/// ```
#[derive(Debug, Clone)]
pub struct BundleBuilder {
    args: Vec<String>,
    hostname: String,
    env: Vec<(String, String)>,
    terminal: bool,
    resources: Option<LinuxResources>,
}

impl Default for BundleBuilder {
    fn default() -> Self {
        BundleBuilder {
            args: vec!["sleep".into(), "3600".into()],
            hostname: "shimless-test".into(),
            env: Vec::new(),
            terminal: false,
            resources: None,
        }
    }
}

impl BundleBuilder {
    /// A bundle that runs `sleep 3600` without a terminal.
    pub fn new() -> Self {
        Self::default()
    }

    /// The process's argv (looked up in the rootfs's `/bin`).
    pub fn args<I, S>(mut self, args: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        self.args = args.into_iter().map(Into::into).collect();
        self
    }

    /// The container's hostname.
    pub fn hostname(mut self, hostname: impl Into<String>) -> Self {
        self.hostname = hostname.into();
        self
    }

    /// Adds an environment variable (after `PATH` and `TERM`).
    pub fn env(mut self, key: impl Into<String>, value: impl Into<String>) -> Self {
        self.env.push((key.into(), value.into()));
        self
    }

    /// Whether the process gets a terminal (the runtime then needs a console socket).
    pub fn terminal(mut self, terminal: bool) -> Self {
        self.terminal = terminal;
        self
    }

    /// Resource limits for the container's cgroup.
    pub fn resources(mut self, resources: LinuxResources) -> Self {
        self.resources = Some(resources);
        self
    }

    /// Writes the bundle into a new temporary directory.
    pub fn build(self) -> io::Result<Bundle> {
        let dir = tempfile::Builder::new()
            .prefix("shimless-bundle-")
            .tempdir()?;
        let rootfs = dir.path().join("rootfs");
        populate_rootfs(&rootfs)?;

        let mut spec = Spec::default();
        let mut env = vec![
            "PATH=/bin:/sbin:/usr/bin:/usr/sbin".to_string(),
            "TERM=xterm".to_string(),
        ];
        env.extend(self.env.iter().map(|(k, v)| format!("{k}={v}")));
        let process = ProcessBuilder::default()
            .args(self.args)
            .env(env)
            .cwd("/")
            .terminal(self.terminal)
            .build()
            .map_err(io::Error::other)?;
        // Keep the default spec's user, capabilities and rlimits.
        let mut merged = spec.process().clone().unwrap_or_default();
        merged.set_args(process.args().clone());
        merged.set_env(process.env().clone());
        merged.set_cwd(process.cwd().clone());
        merged.set_terminal(process.terminal());
        spec.set_process(Some(merged));
        spec.set_root(Some(
            RootBuilder::default()
                .path("rootfs")
                .readonly(false)
                .build()
                .map_err(io::Error::other)?,
        ));
        spec.set_hostname(Some(self.hostname));
        if let Some(resources) = self.resources
            && let Some(linux) = spec.linux_mut()
        {
            linux.set_resources(Some(resources));
        }
        spec.save(dir.path().join("config.json"))
            .map_err(io::Error::other)?;
        Ok(Bundle { dir })
    }
}

fn populate_rootfs(rootfs: &Path) -> io::Result<()> {
    for sub in [
        "bin",
        "dev",
        "etc",
        "proc",
        "sys",
        "tmp",
        "root",
        "probe-dir",
    ] {
        std::fs::create_dir_all(rootfs.join(sub))?;
    }
    // A copy, not a hard link: a container may write to its rootfs, never to the host's binary.
    std::fs::copy(BUSYBOX, rootfs.join("bin/busybox"))?;
    let list = Command::new(BUSYBOX).arg("--list").output()?;
    if !list.status.success() {
        return Err(io::Error::other(format!(
            "{BUSYBOX} --list failed: {}",
            list.status
        )));
    }
    for applet in String::from_utf8_lossy(&list.stdout)
        .lines()
        .filter(|a| !a.is_empty() && *a != "busybox")
    {
        std::os::unix::fs::symlink("busybox", rootfs.join("bin").join(applet))?;
    }
    std::fs::write(rootfs.join("etc/passwd"), "root:x:0:0:root:/root:/bin/sh\n")?;
    std::fs::write(rootfs.join("etc/group"), "root:x:0:\n")?;
    Ok(())
}

/// A bundle directory; removed with everything in it when dropped.
#[derive(Debug)]
pub struct Bundle {
    dir: tempfile::TempDir,
}

impl Bundle {
    /// The bundle directory (absolute), to pass as `--bundle`.
    pub fn path(&self) -> &Path {
        self.dir.path()
    }

    /// The container's root filesystem, `<bundle>/rootfs`.
    pub fn rootfs(&self) -> PathBuf {
        self.dir.path().join("rootfs")
    }

    /// A container that waits, without using CPU, for an exit code written to the FIFO `/ctl`
    /// in its rootfs, and exits with it: see [`Bundle::tell_exit`]. What tests and benchmarks
    /// use to make many containers exit at chosen moments with chosen codes.
    ///
    /// ```no_run
    /// let bundle = integration::bundle::Bundle::exit_on_demand()?;
    /// // ... create and start it ...
    /// bundle.tell_exit(42)?; // the container exits with 42
    /// # Ok::<(), std::io::Error>(())
    /// ```
    pub fn exit_on_demand() -> io::Result<Bundle> {
        let bundle = BundleBuilder::new()
            .args(["sh", "-c", "read code < /ctl; exit $code"])
            .build()?;
        rustix::fs::mknodat(
            rustix::fs::CWD,
            bundle.rootfs().join("ctl"),
            rustix::fs::FileType::Fifo,
            rustix::fs::Mode::from_raw_mode(0o600),
            0,
        )?;
        Ok(bundle)
    }

    /// Makes an [`exit_on_demand`](Bundle::exit_on_demand) container exit with `code`. The
    /// open waits for the container to be reading (it is, once started).
    pub fn tell_exit(&self, code: u8) -> io::Result<()> {
        let mut fifo = std::fs::OpenOptions::new()
            .write(true)
            .open(self.rootfs().join("ctl"))?;
        std::io::Write::write_all(&mut fifo, format!("{code}\n").as_bytes())
    }
}

/// Force-deletes every container under a runtime root (`<runtime> --root <root> list -q`, then
/// `delete --force` each), errors ignored: the cleanup of a test or benchmark that may have
/// failed halfway.
///
/// ```no_run
/// integration::bundle::delete_all("runc", std::path::Path::new("/run/test-runc"));
/// ```
pub fn delete_all(runtime: &str, root: &Path) {
    let listed = std::process::Command::new(runtime)
        .arg("--root")
        .arg(root)
        .args(["list", "-q"])
        .output();
    let Ok(listed) = listed else { return };
    for id in String::from_utf8_lossy(&listed.stdout).lines() {
        let _ = std::process::Command::new(runtime)
            .arg("--root")
            .arg(root)
            .args(["delete", "--force", id])
            .status();
    }
}

/// Deletes a container from its runtime when dropped (`<runtime> --root <root> delete --force
/// <id>`, errors ignored), so a failing test leaks no container.
///
/// ```no_run
/// let _guard = integration::bundle::ContainerGuard::new("runc", "/run/test-runc", "c1");
/// // ... runc --root /run/test-runc create c1 ...; the guard removes it whatever happens.
/// ```
#[derive(Debug)]
pub struct ContainerGuard {
    runtime: PathBuf,
    root: PathBuf,
    id: String,
}

impl ContainerGuard {
    /// A guard for container `id` of `runtime` (a name on PATH or a path) under `root`.
    pub fn new(
        runtime: impl Into<PathBuf>,
        root: impl Into<PathBuf>,
        id: impl Into<String>,
    ) -> Self {
        ContainerGuard {
            runtime: runtime.into(),
            root: root.into(),
            id: id.into(),
        }
    }
}

impl Drop for ContainerGuard {
    fn drop(&mut self) {
        let _ = Command::new(&self.runtime)
            .arg("--root")
            .arg(&self.root)
            .args(["delete", "--force", &self.id])
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .status();
    }
}

/// Makes this machine's cgroups acceptable to crun, if needed, and says what it did.
///
/// Debian's crun refuses a hybrid setup whose v2 hierarchy (`/sys/fs/cgroup/unified`) holds any
/// controller ("cgroups in hybrid mode not supported, drop all controllers from cgroupv2"). On
/// these machines that controller is `hugetlb`; mounting it as a v1 hierarchy at
/// `/sys/fs/cgroup/hugetlb` moves it out of v2, after which both crun and runc run. Does
/// nothing when v2 already holds no controller or the machine is not hybrid. Needs root.
///
/// ```no_run
/// integration::bundle::prepare_crun()?;
/// # Ok::<(), std::io::Error>(())
/// ```
pub fn prepare_crun() -> io::Result<()> {
    // Tests of one binary run in parallel threads: one of them mounts, the others then find
    // nothing left to do.
    static ONE_AT_A_TIME: std::sync::Mutex<()> = std::sync::Mutex::new(());
    let _serial = ONE_AT_A_TIME
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    let controllers = Path::new("/sys/fs/cgroup/unified/cgroup.controllers");
    let Ok(held) = std::fs::read_to_string(controllers) else {
        return Ok(());
    };
    for controller in held.split_whitespace() {
        let target = Path::new("/sys/fs/cgroup").join(controller);
        std::fs::create_dir_all(&target)?;
        let options = std::ffi::CString::new(controller).map_err(io::Error::other)?;
        let mounted = rustix::mount::mount(
            "cgroup",
            &target,
            "cgroup",
            rustix::mount::MountFlags::empty(),
            options.as_c_str(),
        );
        // Another test process got there first.
        if mounted == Err(rustix::io::Errno::BUSY) {
            continue;
        }
        mounted.map_err(|e| {
            io::Error::other(format!(
                "mount the {controller} v1 hierarchy at {}: {e}",
                target.display()
            ))
        })?;
        eprintln!(
            "integration: mounted the {controller} cgroup v1 hierarchy at {} so that crun accepts \
             this hybrid machine (crun refuses controllers left in cgroup v2)",
            target.display()
        );
    }
    Ok(())
}
