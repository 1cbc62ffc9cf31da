//! Logs with a size cap: the front and the daemon write to `front.log` and `shimlessd.log`
//! (their stderr) for as long as the node runs, so each caps its own.
//!
//! Once a second, a process checks its stderr: when it is a regular file larger than the cap,
//! the older copies move up one (`<name>.1` to `<name>.2`, ..., the oldest of `keep` dropped),
//! the file is renamed to `<name>.1`, and a new file is opened at the old path and put in place
//! of stdout and stderr (`dup2`). No byte is lost and no writer ever sees an error: a line
//! written during the switch lands in one file or the other. A process's log thus takes at most
//! `keep + 1` times the cap on disk. Output that is not a regular file (a terminal, a pipe to
//! journald) is left alone.

use rustix::fs::{Mode, OFlags};
use std::os::unix::ffi::OsStringExt;
use std::path::{Path, PathBuf};
use std::time::Duration;

/// How often the size is checked.
const EVERY: Duration = Duration::from_secs(1);

/// Starts capping this process's stderr (and stdout, when it is the same file) at `max_bytes`,
/// keeping `keep` older copies (at least one), from a thread of its own.
///
/// ```no_run
/// task_service::logcap::cap_stderr(16 << 20, 3);
/// eprintln!("this line goes to a log that never grows past 16 MiB (and three older copies)");
/// ```
pub fn cap_stderr(max_bytes: u64, keep: u32) {
    let keep = keep.max(1);
    let _ = std::thread::Builder::new()
        .name("logcap".into())
        .spawn(move || {
            loop {
                std::thread::sleep(EVERY);
                if let Err(e) = rotate_if_over(max_bytes, keep) {
                    tracing::warn!("warning: cannot rotate this process's log: {e}");
                    std::thread::sleep(Duration::from_secs(60));
                }
            }
        });
}

/// Renames stderr's file to `<path>.1` (after moving the older copies up) and puts a new file
/// in its place, if it is a regular file over `max_bytes`.
fn rotate_if_over(max_bytes: u64, keep: u32) -> std::io::Result<()> {
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
    shift_copies(&path, keep)?;
    std::fs::rename(&path, copy(&path, 1))?;
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

/// `<path>.<n>`.
fn copy(path: &Path, n: u32) -> PathBuf {
    let mut name = path.as_os_str().to_owned();
    name.push(format!(".{n}"));
    PathBuf::from(name)
}

/// Moves `<path>.<n>` to `<path>.<n+1>` for every n below `keep`, oldest first, so that
/// `<path>.1` is free and at most `keep` copies remain once `path` takes its place.
fn shift_copies(path: &Path, keep: u32) -> std::io::Result<()> {
    for n in (1..keep).rev() {
        match std::fs::rename(copy(path, n), copy(path, n + 1)) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => return Err(e),
            _ => {}
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn copies_move_up_and_the_oldest_beyond_keep_is_replaced() {
        let dir = tempfile::tempdir().unwrap();
        let log = dir.path().join("d.log");
        for round in 1..=5u32 {
            std::fs::write(&log, format!("round {round}")).unwrap();
            shift_copies(&log, 3).unwrap();
            std::fs::rename(&log, copy(&log, 1)).unwrap();
        }
        let read = |n| std::fs::read_to_string(copy(&log, n)).unwrap();
        assert_eq!(
            (read(1), read(2), read(3)),
            ("round 5".into(), "round 4".into(), "round 3".into())
        );
        assert!(!copy(&log, 4).exists());
    }
}
