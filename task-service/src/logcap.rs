//! Logs with a size cap: the front and the daemon write to `front.log` and `shimlessd.log`
//! (their stderr) for as long as the node runs, so each caps its own.
//!
//! Once a second, a process checks its stderr: when it is a regular file larger than the cap,
//! the file is renamed to `<name>.1` (replacing the previous one) and a new file is opened at
//! the old path and put in place of stdout and stderr (`dup2`). No byte is lost and no writer
//! ever sees an error: a line written during the switch lands in one file or the other. A
//! process's log thus takes at most twice the cap on disk. Output that is not a regular file (a
//! terminal, a pipe to journald) is left alone.

use rustix::fs::{Mode, OFlags};
use std::os::unix::ffi::OsStringExt;
use std::path::PathBuf;
use std::time::Duration;

/// How often the size is checked.
const EVERY: Duration = Duration::from_secs(1);

/// Starts capping this process's stderr (and stdout, when it is the same file) at `max_bytes`,
/// from a thread of its own.
///
/// ```no_run
/// task_service::logcap::cap_stderr(16 << 20);
/// eprintln!("this line goes to a log that never grows past 16 MiB (and one older copy)");
/// ```
pub fn cap_stderr(max_bytes: u64) {
    let _ = std::thread::Builder::new()
        .name("logcap".into())
        .spawn(move || {
            loop {
                std::thread::sleep(EVERY);
                if let Err(e) = rotate_if_over(max_bytes) {
                    eprintln!("warning: cannot rotate this process's log: {e}");
                    std::thread::sleep(Duration::from_secs(60));
                }
            }
        });
}

/// Renames stderr's file to `<path>.1` and puts a new file in its place, if it is a regular
/// file over `max_bytes`.
fn rotate_if_over(max_bytes: u64) -> std::io::Result<()> {
    let stderr = rustix::stdio::stderr();
    let stat = rustix::fs::fstat(stderr)?;
    let regular = rustix::fs::FileType::from_raw_mode(stat.st_mode).is_file();
    if !regular || (stat.st_size as u64) <= max_bytes {
        return Ok(());
    }
    let target = rustix::fs::readlink("/proc/self/fd/2", Vec::new())?;
    let path = PathBuf::from(std::ffi::OsString::from_vec(target.into_bytes()));
    if !path.is_absolute() {
        return Ok(());
    }
    let same_stdout = rustix::fs::fstat(rustix::stdio::stdout())
        .is_ok_and(|out| (out.st_dev, out.st_ino) == (stat.st_dev, stat.st_ino));
    let mut old = path.clone().into_os_string();
    old.push(".1");
    std::fs::rename(&path, &old)?;
    let fresh = rustix::fs::open(
        &path,
        OFlags::WRONLY | OFlags::APPEND | OFlags::CREATE | OFlags::CLOEXEC,
        Mode::from_raw_mode(0o600),
    )?;
    rustix::stdio::dup2_stderr(&fresh)?;
    if same_stdout {
        rustix::stdio::dup2_stdout(&fresh)?;
    }
    Ok(())
}
