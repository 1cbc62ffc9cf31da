//! Reading and writing cgroup control files, with the path in every error.

use super::FsError;
use std::io::Write;
use std::path::Path;

pub(crate) fn write(dir: &Path, file: &str, value: &str) -> Result<(), FsError> {
    let path = dir.join(file);
    // No O_CREAT/O_TRUNC: control files exist or the controller is absent, and a single write()
    // is what the kernel parses.
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .open(&path)
        .map_err(|source| FsError::Io {
            op: "open",
            path: path.clone(),
            source,
        })?;
    f.write_all(value.as_bytes()).map_err(|source| FsError::Io {
        op: "write",
        path,
        source,
    })
}

pub(crate) fn read(dir: &Path, file: &str) -> Result<String, FsError> {
    let path = dir.join(file);
    std::fs::read_to_string(&path).map_err(|source| FsError::Io {
        op: "read",
        path,
        source,
    })
}

pub(crate) fn read_u64(dir: &Path, file: &str) -> Result<u64, FsError> {
    let s = read(dir, file)?;
    s.trim().parse().map_err(|_| FsError::Parse {
        path: dir.join(file),
        content: s,
    })
}

/// The value of `key` in a flat-keyed file such as `memory.events` or `cpu.stat`.
pub(crate) fn read_key(dir: &Path, file: &str, key: &str) -> Result<Option<u64>, FsError> {
    let s = read(dir, file)?;
    for line in s.lines() {
        let mut parts = line.split_whitespace();
        if parts.next() == Some(key) {
            let v = parts.next().unwrap_or("");
            return v.parse().map(Some).map_err(|_| FsError::Parse {
                path: dir.join(file),
                content: line.to_owned(),
            });
        }
    }
    Ok(None)
}

pub(crate) fn read_pids(dir: &Path) -> Result<Vec<u32>, FsError> {
    let s = read(dir, "cgroup.procs")?;
    s.lines()
        .map(|l| {
            l.trim().parse().map_err(|_| FsError::Parse {
                path: dir.join("cgroup.procs"),
                content: l.to_owned(),
            })
        })
        .collect()
}

/// The processes in `dir` and in every cgroup below it (what v2's `cgroup.kill` reaches).
pub(crate) fn read_pids_tree(dir: &Path) -> Result<Vec<u32>, FsError> {
    let mut pids = read_pids(dir)?;
    let entries = std::fs::read_dir(dir).map_err(|source| FsError::Io {
        op: "readdir",
        path: dir.to_owned(),
        source,
    })?;
    for entry in entries.flatten() {
        if entry.file_type().is_ok_and(|t| t.is_dir()) {
            pids.extend(read_pids_tree(&entry.path())?);
        }
    }
    Ok(pids)
}

pub(crate) fn mkdir_all(dir: &Path) -> Result<(), FsError> {
    std::fs::create_dir_all(dir).map_err(|source| FsError::Io {
        op: "mkdir",
        path: dir.to_owned(),
        source,
    })
}

/// Removes `dir` and its child cgroups, deepest first, retrying `rmdir` while the kernel says
/// EBUSY (processes still exiting, or v1 memory charges being reparented) until `deadline`.
pub(crate) fn rmdir_tree(dir: &Path, deadline: std::time::Instant) -> Result<(), FsError> {
    let entries = match std::fs::read_dir(dir) {
        Ok(e) => e,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
        Err(source) => {
            return Err(FsError::Io {
                op: "readdir",
                path: dir.to_owned(),
                source,
            });
        }
    };
    for entry in entries.flatten() {
        if entry.file_type().is_ok_and(|t| t.is_dir()) {
            rmdir_tree(&entry.path(), deadline)?;
        }
    }
    let mut pause = std::time::Duration::from_millis(1);
    loop {
        match std::fs::remove_dir(dir) {
            Ok(()) => return Ok(()),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
            Err(e) if e.raw_os_error() == Some(16) && std::time::Instant::now() < deadline => {
                std::thread::sleep(pause);
                pause = (pause * 2).min(std::time::Duration::from_millis(50));
            }
            Err(e) if e.raw_os_error() == Some(16) => {
                return Err(FsError::Busy {
                    path: dir.to_owned(),
                    waited_ms: super::REMOVE_TIMEOUT.as_millis() as u64,
                    what: "rmdir kept returning EBUSY",
                });
            }
            Err(source) => {
                return Err(FsError::Io {
                    op: "rmdir",
                    path: dir.to_owned(),
                    source,
                });
            }
        }
    }
}

/// Polls `done` until it holds or `timeout` passes.
pub(crate) fn wait_until(
    dir: &Path,
    timeout: std::time::Duration,
    what: &'static str,
    mut done: impl FnMut() -> Result<bool, FsError>,
) -> Result<(), FsError> {
    let start = std::time::Instant::now();
    let mut pause = std::time::Duration::from_micros(200);
    loop {
        if done()? {
            return Ok(());
        }
        if start.elapsed() > timeout {
            return Err(FsError::Busy {
                path: dir.to_owned(),
                waited_ms: timeout.as_millis() as u64,
                what,
            });
        }
        std::thread::sleep(pause);
        pause = (pause * 2).min(std::time::Duration::from_millis(20));
    }
}
