//! The front keeps `shimlessd` running: it starts it, starts it again whenever it exits (ever
//! more slowly while it keeps exiting soon after its start, saying why it exited), and reaps
//! the container processes that a dead daemon leaves behind.
//!
//! The front makes itself the child subreaper, so when the daemon dies its orphaned container
//! inits become the front's children (not PID 1's, which on some machines never reaps). Their
//! exit statuses are not lost by being reaped here: the next daemon reads them from exitwatch's
//! kernel record or `PIDFD_INFO_EXIT`.

use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};
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
    /// How long to wait before starting it again after it exits; doubled after each exit
    /// that comes soon after its start, up to [`MAX_RESTART_DELAY`] (see [`Backoff`]).
    pub restart_delay: Duration,
}

impl Supervisor {
    /// Makes this process the child subreaper, starts the daemon, and keeps it running from a
    /// thread of its own for the life of the process. Fails only if the first start fails.
    pub fn start(self) -> std::io::Result<()> {
        self.start_adopting(None).map(drop)
    }

    /// [`Supervisor::start`], but taking over `daemon` (the pid of a daemon this process
    /// already runs as its child, after an upgrade of the front by `execve`) instead of starting
    /// one, if it still is this process's child. Returns the pid of the daemon being supervised,
    /// kept current across restarts.
    ///
    /// ```no_run
    /// # let supervisor = task_service::front::supervise::Supervisor {
    /// #     program: "/usr/local/bin/shimlessd".into(), args: vec![],
    /// #     log: "/var/log/shimless/shimlessd.log".into(),
    /// #     restart_delay: std::time::Duration::from_millis(200),
    /// # };
    /// let daemon = supervisor.start_adopting(Some(4242))?;
    /// println!("supervising shimlessd pid {}", daemon.load(std::sync::atomic::Ordering::SeqCst));
    /// # Ok::<(), std::io::Error>(())
    /// ```
    pub fn start_adopting(self, daemon: Option<u32>) -> std::io::Result<Arc<AtomicU32>> {
        rustix::process::set_child_subreaper(rustix::process::Pid::from_raw(1))?;
        let first = match daemon.filter(|pid| is_own_child(*pid)) {
            Some(pid) => pid,
            None => self.spawn()?,
        };
        let current = Arc::new(AtomicU32::new(first));
        let shared = current.clone();
        std::thread::Builder::new()
            .name("supervise".into())
            .spawn(move || self.run(first, &shared))?;
        Ok(current)
    }

    fn spawn(&self) -> std::io::Result<u32> {
        if let Some(dir) = self.log.parent() {
            std::fs::create_dir_all(dir)?;
        }
        // Under journald the daemon writes to the front's journal stream; else to its own log.
        let (stdout, stderr) = if crate::logging::under_journal() {
            (
                std::process::Stdio::inherit(),
                std::process::Stdio::inherit(),
            )
        } else {
            let log = open_log(&self.log)?;
            (log.try_clone()?.into(), log.into())
        };
        let child = std::process::Command::new(&self.program)
            .args(&self.args)
            .stdin(std::process::Stdio::null())
            .stdout(stdout)
            .stderr(stderr)
            .current_dir("/")
            // Never systemd's notify socket for runc (see `shim::start`), even when the front
            // runs under a Type=notify unit.
            .env_remove("NOTIFY_SOCKET")
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

    fn run(self, mut daemon: u32, current: &AtomicU32) {
        let mut backoff = Backoff::new(self.restart_delay);
        loop {
            match rustix::process::wait(rustix::process::WaitOptions::empty()) {
                Ok(Some((pid, status))) if pid.as_raw_nonzero().get() as u32 == daemon => {
                    let delay = backoff.delay();
                    tracing::warn!(
                        "shimless-front: shimlessd (pid {daemon}) {} after {:.1?}{}; {}; \
                         starting it again in {delay:?}",
                        how_it_ended(&status),
                        backoff.ran_for(),
                        last_words(&self.log),
                        backoff.streak(),
                    );
                    std::thread::sleep(delay);
                    daemon = loop {
                        match self.spawn() {
                            Ok(pid) => break pid,
                            Err(e) => {
                                let delay = backoff.delay();
                                tracing::warn!("shimless-front: {e}; trying again in {delay:?}");
                                std::thread::sleep(delay);
                            }
                        }
                    };
                    current.store(daemon, Ordering::SeqCst);
                    crate::metrics::FRONT.daemon_restarts.inc();
                    backoff.started();
                    tracing::info!("shimless-front: shimlessd started again (pid {daemon})");
                }
                // An orphaned container process: its status is the daemon's to read elsewhere.
                Ok(_) => {}
                Err(rustix::io::Errno::INTR) => {}
                Err(e) => {
                    tracing::warn!("shimless-front: wait failed: {e}");
                    std::thread::sleep(Duration::from_secs(1));
                }
            }
        }
    }
}

/// Whether `pid` is a child of this process (running, or a zombie yet to be reaped).
fn is_own_child(pid: u32) -> bool {
    let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
        return false;
    };
    // After the command's `)`: state, then the parent's pid.
    stat.rsplit_once(')')
        .and_then(|(_, rest)| rest.split_whitespace().nth(1)?.parse::<u32>().ok())
        == Some(std::process::id())
}

/// The longest pause between two starts of a daemon that keeps exiting.
pub const MAX_RESTART_DELAY: Duration = Duration::from_secs(30);

/// How long a daemon must run for its next exit to count as a first failure again.
pub const STABLE_AFTER: Duration = Duration::from_secs(60);

/// The pause before each restart of the daemon: the configured delay after a daemon that ran
/// for [`STABLE_AFTER`] or more, doubled after each exit that came sooner, up to
/// [`MAX_RESTART_DELAY`]. A daemon that cannot start (bad state, bad config) is thus retried
/// ever more slowly, not hundreds of times a minute.
///
/// ```
/// use std::time::Duration;
/// use task_service::front::supervise::Backoff;
/// let mut b = Backoff::new(Duration::from_millis(200));
/// assert_eq!(b.delay(), Duration::from_millis(200));
/// assert_eq!(b.delay(), Duration::from_millis(400));
/// assert_eq!(b.delay(), Duration::from_millis(800));
/// for _ in 0..20 { b.delay(); }
/// assert_eq!(b.delay(), task_service::front::supervise::MAX_RESTART_DELAY);
/// assert_eq!(b.streak(), "24 exits in a row within 60s of their start");
/// ```
#[derive(Debug, Clone)]
pub struct Backoff {
    first: Duration,
    failures: u32,
    started: std::time::Instant,
}

impl Backoff {
    /// A backoff starting at `first`, for a daemon started now.
    pub fn new(first: Duration) -> Backoff {
        Backoff {
            first,
            failures: 0,
            started: std::time::Instant::now(),
        }
    }

    /// The pause before the next start, after an exit (or a failed start) now.
    pub fn delay(&mut self) -> Duration {
        if self.started.elapsed() >= STABLE_AFTER {
            self.failures = 0;
            self.started = std::time::Instant::now();
        }
        let factor = 1u32 << self.failures.min(16);
        self.failures = self.failures.saturating_add(1);
        self.first
            .saturating_mul(factor)
            .clamp(self.first, MAX_RESTART_DELAY.max(self.first))
    }

    /// Notes that the daemon was started again now.
    pub fn started(&mut self) {
        self.started = std::time::Instant::now();
    }

    /// How long the daemon ran before this exit.
    pub fn ran_for(&self) -> Duration {
        self.started.elapsed()
    }

    /// How many exits came in a row, each soon after its start, as a log line says it.
    pub fn streak(&self) -> String {
        match self.failures {
            0 | 1 => "its first exit in a while".to_string(),
            n => format!("{n} exits in a row within {STABLE_AFTER:?} of their start"),
        }
    }
}

/// How a wait status says the daemon ended: `exited with 1`, `was killed by signal 9`.
fn how_it_ended(status: &rustix::process::WaitStatus) -> String {
    match (status.exit_status(), status.terminating_signal()) {
        (Some(code), _) => format!("exited with {code}"),
        (_, Some(signal)) => format!("was killed by signal {signal}"),
        _ => "ended".to_string(),
    }
}

/// The daemon's last log line (what it said as it exited), as ` (last words: "...")`, or
/// nothing if the log has none.
fn last_words(log: &Path) -> String {
    use std::io::{Read, Seek, SeekFrom};
    let Ok(mut file) = std::fs::File::open(log) else {
        return String::new();
    };
    let len = file.metadata().map(|m| m.len()).unwrap_or(0);
    let mut tail = Vec::new();
    let read = file
        .seek(SeekFrom::Start(len.saturating_sub(4096)))
        .and_then(|_| file.read_to_end(&mut tail));
    if read.is_err() {
        return String::new();
    }
    let text = String::from_utf8_lossy(&tail);
    match text.lines().rev().find(|l| !l.trim().is_empty()) {
        Some(line) => format!(
            " (last words: {:?})",
            crate::logging::message_of(line.trim())
        ),
        None => String::new(),
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
