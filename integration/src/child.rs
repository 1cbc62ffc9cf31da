//! A program under test as a child process: [`Child`], started and waited for until it logs
//! that it is ready.

use std::path::{Path, PathBuf};
use std::process::{self, Command, Stdio};
use std::time::{Duration, Instant};

/// A program (a daemon, the front) started by a test: its stderr goes to a log file, it is ready once the log holds
/// one more `marker` line than before, and it is killed (SIGKILL) and reaped when dropped.
///
/// ```no_run
/// use integration::child::Child;
/// let mut cmd = std::process::Command::new("shimlessd");
/// cmd.args(["--socket", "/tmp/s.sock"]);
/// let daemon = Child::start(cmd, "/tmp/shimlessd.log".as_ref(), "serving on")?;
/// println!("pid {}", daemon.pid());
/// # Ok::<(), std::io::Error>(())
/// ```
#[derive(Debug)]
pub struct Child {
    child: Option<process::Child>,
    log: PathBuf,
}

impl Child {
    /// Spawns `command` with stderr appended to `log` and waits up to 2 minutes for `marker`.
    pub fn start(mut command: Command, log: &Path, marker: &str) -> std::io::Result<Child> {
        let before = count(log, marker);
        let err = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(log)?;
        let child = command.stdout(Stdio::null()).stderr(err).spawn()?;
        let mut started = Child {
            child: Some(child),
            log: log.to_owned(),
        };
        let deadline = Instant::now() + Duration::from_secs(120);
        while count(log, marker) == before {
            let exited = started
                .child
                .as_mut()
                .and_then(|c| c.try_wait().ok().flatten());
            if exited.is_some() || Instant::now() > deadline {
                return Err(std::io::Error::other(format!(
                    "{:?} did not print {marker:?} ({}):\n{}",
                    command.get_program(),
                    match exited {
                        Some(status) => format!("it exited: {status}"),
                        None => "timed out".into(),
                    },
                    std::fs::read_to_string(log).unwrap_or_default()
                )));
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        Ok(started)
    }

    /// Its PID.
    pub fn pid(&self) -> u32 {
        self.child.as_ref().map_or(0, process::Child::id)
    }

    /// The last log line containing `what`, if any.
    pub fn last_line(&self, what: &str) -> Option<String> {
        std::fs::read_to_string(&self.log)
            .ok()?
            .lines()
            .rfind(|l| l.contains(what))
            .map(str::to_string)
    }

    /// Kills it with SIGKILL and reaps it.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

impl Drop for Child {
    fn drop(&mut self) {
        self.kill();
    }
}

fn count(log: &Path, marker: &str) -> usize {
    std::fs::read_to_string(log)
        .unwrap_or_default()
        .matches(marker)
        .count()
}
