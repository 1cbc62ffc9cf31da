//! The front keeps `shimlessd` running: it starts it, starts it again whenever it exits, and
//! reaps the container processes that a dead daemon leaves behind.
//!
//! The front makes itself the child subreaper, so when the daemon dies its orphaned container
//! inits become the front's children (not PID 1's, which on some machines never reaps). Their
//! exit statuses are not lost by being reaped here: the next daemon reads them from exitwatch's
//! kernel record or `PIDFD_INFO_EXIT`.

use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::time::Duration;

/// How to run the daemon.
///
/// ```no_run
/// use task_service::front::supervise::Supervisor;
/// Supervisor {
///     program: "/usr/local/bin/shimlessd".into(),
///     args: vec!["--socket".into(), "/run/shimless/daemon.sock".into()],
///     log: "/var/log/shimless/shimlessd.log".into(),
///     restart_delay: std::time::Duration::from_millis(200),
/// }
/// .start()?;
/// # Ok::<(), std::io::Error>(())
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Supervisor {
    /// The `shimlessd` binary.
    pub program: PathBuf,
    /// Its arguments.
    pub args: Vec<OsString>,
    /// Where its output is appended.
    pub log: PathBuf,
    /// How long to wait before starting it again after it exits.
    pub restart_delay: Duration,
}

impl Supervisor {
    /// Makes this process the child subreaper, starts the daemon, and keeps it running from a
    /// thread of its own for the life of the process. Fails only if the first start fails.
    pub fn start(self) -> std::io::Result<()> {
        rustix::process::set_child_subreaper(rustix::process::Pid::from_raw(1))?;
        let first = self.spawn()?;
        std::thread::Builder::new()
            .name("supervise".into())
            .spawn(move || self.run(first))?;
        Ok(())
    }

    fn spawn(&self) -> std::io::Result<u32> {
        if let Some(dir) = self.log.parent() {
            std::fs::create_dir_all(dir)?;
        }
        let log = open_log(&self.log)?;
        let child = std::process::Command::new(&self.program)
            .args(&self.args)
            .stdin(std::process::Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log)
            .current_dir("/")
            .spawn()
            .map_err(|e| {
                std::io::Error::new(
                    e.kind(),
                    format!("cannot start {}: {e}", self.program.display()),
                )
            })?;
        // Reaped below, with the orphans; dropping the handle neither waits nor kills.
        Ok(child.id())
    }

    fn run(self, mut daemon: u32) {
        loop {
            match rustix::process::wait(rustix::process::WaitOptions::empty()) {
                Ok(Some((pid, status))) if pid.as_raw_nonzero().get() as u32 == daemon => {
                    let how = match (status.exit_status(), status.terminating_signal()) {
                        (Some(code), _) => format!("exited with {code}"),
                        (_, Some(signal)) => format!("was killed by signal {signal}"),
                        _ => "ended".to_string(),
                    };
                    eprintln!(
                        "shimless-front: shimlessd (pid {daemon}) {how}; starting it again in {:?}",
                        self.restart_delay
                    );
                    std::thread::sleep(self.restart_delay);
                    daemon = loop {
                        match self.spawn() {
                            Ok(pid) => break pid,
                            Err(e) => {
                                eprintln!("shimless-front: {e}; trying again in 1 s");
                                std::thread::sleep(Duration::from_secs(1));
                            }
                        }
                    };
                    eprintln!("shimless-front: shimlessd started again (pid {daemon})");
                }
                // An orphaned container process: its status is the daemon's to read elsewhere.
                Ok(_) => {}
                Err(rustix::io::Errno::INTR) => {}
                Err(e) => {
                    eprintln!("shimless-front: wait failed: {e}");
                    std::thread::sleep(Duration::from_secs(1));
                }
            }
        }
    }
}

fn open_log(path: &Path) -> std::io::Result<std::fs::File> {
    // Root's only: the daemon's log names bundles, stdio paths and runtime errors.
    std::os::unix::fs::OpenOptionsExt::mode(
        std::fs::OpenOptions::new().create(true).append(true),
        0o600,
    )
    .open(path)
}

/// Finds a sibling binary: next to the running executable first (an install puts them side by
/// side), then on `PATH`.
///
/// ```
/// let sh = task_service::front::supervise::find_binary("sh");
/// assert!(sh.is_some());
/// ```
pub fn find_binary(name: &str) -> Option<PathBuf> {
    let beside = std::env::current_exe()
        .ok()
        .and_then(|exe| exe.parent().map(|dir| dir.join(name)));
    if let Some(path) = beside.filter(|p| p.is_file()) {
        return Some(path);
    }
    std::env::split_paths(&std::env::var_os("PATH")?)
        .map(|dir| dir.join(name))
        .find(|p| p.is_file())
}
