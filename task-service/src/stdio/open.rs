//! Opening the endpoints without blocking: containerd's FIFOs (with the daemon's keepalive
//! readers), regular files and character devices, handed to the container as blocking fds.

use rustix::fd::OwnedFd;
use rustix::fs::{Mode, OFlags};
use std::path::Path;

use super::owner::chown;
use super::{Endpoint, IoOwner, StdioError, Stream};

/// The opened streams: what to hand to the container, and what the daemon keeps.
#[derive(Debug, Default)]
pub struct OpenStdio {
    /// For the container, in order stdin, stdout, stderr; `None` means `/dev/null`.
    pub container: [Option<OwnedFd>; 3],
    /// Held by the daemon while the process lives: a reader per output FIFO (see the module
    /// docs). Dropping it after the process exits is right.
    pub keepalive: Vec<OwnedFd>,
}

/// Opens the three endpoints without ever blocking (a FIFO's open blocks until the other side
/// is open; here it never waits for containerd), FIFOs owned by root.
///
/// A plain path is usually containerd's FIFO, but containerd takes any path: as with the Go
/// shim, a path that is a regular file is appended to (`O_APPEND`, never truncated or written
/// from offset 0) and a character device (`/dev/null`, a terminal) is opened with `O_NOCTTY`,
/// so it can never become the daemon's controlling terminal. Anything else (a block device, a
/// directory, a socket) is refused, naming the stream and what the path is.
///
/// ```no_run
/// use task_service::stdio::{open, Endpoint};
/// let fifo = Endpoint::Fifo("/run/containerd/fifo/1/web-stdout".into());
/// let opened = open([&Endpoint::None, &fifo, &fifo])?;
/// assert!(opened.container[1].is_some());
/// # Ok::<(), task_service::stdio::StdioError>(())
/// ```
pub fn open(endpoints: [&Endpoint; 3]) -> Result<OpenStdio, StdioError> {
    open_as(endpoints, IoOwner::default())
}

/// [`open`], with the FIFOs handed to the container chowned to `owner` (see [`IoOwner`]).
///
/// ```no_run
/// use task_service::stdio::{open_as, Endpoint, IoOwner};
/// let fifo = Endpoint::Fifo("/run/containerd/fifo/1/web-stdout".into());
/// let opened = open_as([&Endpoint::None, &fifo, &fifo], IoOwner { uid: 1000, gid: 1000 })?;
/// assert!(opened.container[2].is_some());
/// # Ok::<(), task_service::stdio::StdioError>(())
/// ```
pub fn open_as(endpoints: [&Endpoint; 3], owner: IoOwner) -> Result<OpenStdio, StdioError> {
    let mut opened = OpenStdio::default();
    for (slot, (stream, endpoint)) in [Stream::Stdin, Stream::Stdout, Stream::Stderr]
        .into_iter()
        .zip(endpoints)
        .enumerate()
    {
        opened.container[slot] = match endpoint {
            Endpoint::None => None,
            Endpoint::File(path) => Some(open_path(
                stream,
                path,
                OFlags::WRONLY | OFlags::APPEND | OFlags::CREATE | OFlags::NOCTTY | OFlags::CLOEXEC,
            )?),
            Endpoint::Fifo(path) => match kind_of(stream, path)? {
                Kind::Fifo => {
                    let fd = open_fifo(stream, path, &mut opened.keepalive)?;
                    chown(stream, path, &fd, owner)?;
                    Some(fd)
                }
                Kind::Other => Some(open_other(stream, path)?),
            },
        };
    }
    Ok(opened)
}

/// What a plain stdio path is.
enum Kind {
    Fifo,
    /// A regular file or a character device.
    Other,
}

fn kind_of(stream: Stream, path: &Path) -> Result<Kind, StdioError> {
    use rustix::fs::FileType;
    let stat = rustix::fs::stat(path).map_err(|e| StdioError::Open {
        stream: stream.name(),
        path: path.to_owned(),
        source: e.into(),
    })?;
    let refused = |reason| StdioError::Invalid {
        stream: stream.name(),
        value: path.display().to_string(),
        reason,
    };
    match FileType::from_raw_mode(stat.st_mode) {
        FileType::Fifo => Ok(Kind::Fifo),
        FileType::RegularFile | FileType::CharacterDevice => Ok(Kind::Other),
        FileType::BlockDevice => Err(refused(
            "is a block device; stdio goes to a FIFO, a regular file or a character device",
        )),
        FileType::Directory => Err(refused(
            "is a directory; stdio goes to a FIFO, a regular file or a character device",
        )),
        _ => Err(refused(
            "is neither a FIFO, a regular file nor a character device",
        )),
    }
}

/// containerd's FIFO: the container's end, plus the daemon's reader for an output stream.
fn open_fifo(
    stream: Stream,
    path: &Path,
    keepalive: &mut Vec<OwnedFd>,
) -> Result<OwnedFd, StdioError> {
    // A reader's open of a FIFO waits for a writer unless non-blocking.
    let read = OFlags::RDONLY | OFlags::NONBLOCK | OFlags::CLOEXEC;
    if stream == Stream::Stdin {
        let fd = open_path(stream, path, read)?;
        return blocking(stream, path, fd);
    }
    // Our reader first: then the writer's open cannot fail for want of a reader.
    let reader = open_path(stream, path, read)?;
    let writer = open_path(
        stream,
        path,
        OFlags::WRONLY | OFlags::NONBLOCK | OFlags::CLOEXEC,
    )?;
    keepalive.push(reader);
    blocking(stream, path, writer)
}

/// A regular file or a character device given as a plain path: appended to (output) or read
/// (stdin), never made the controlling terminal. Its type is checked again on the open file, so
/// a path swapped for a block device after [`kind_of`] looked is refused too.
fn open_other(stream: Stream, path: &Path) -> Result<OwnedFd, StdioError> {
    let access = if stream == Stream::Stdin {
        OFlags::RDONLY
    } else {
        OFlags::WRONLY | OFlags::APPEND
    };
    // Non-blocking: opening a serial line would wait for its carrier.
    let fd = open_path(
        stream,
        path,
        access | OFlags::NOCTTY | OFlags::NONBLOCK | OFlags::CLOEXEC,
    )?;
    let mode = rustix::fs::fstat(&fd).map(|s| rustix::fs::FileType::from_raw_mode(s.st_mode));
    match mode {
        Ok(rustix::fs::FileType::RegularFile | rustix::fs::FileType::CharacterDevice) => {
            blocking(stream, path, fd)
        }
        _ => Err(StdioError::Invalid {
            stream: stream.name(),
            value: path.display().to_string(),
            reason: "changed into something that is not a regular file or a character device",
        }),
    }
}

fn open_path(stream: Stream, path: &Path, flags: OFlags) -> Result<OwnedFd, StdioError> {
    rustix::fs::open(path, flags, Mode::from_raw_mode(0o640)).map_err(|e| StdioError::Open {
        stream: stream.name(),
        path: path.to_owned(),
        source: e.into(),
    })
}

/// The container expects ordinary blocking stdio.
fn blocking(stream: Stream, path: &Path, fd: OwnedFd) -> Result<OwnedFd, StdioError> {
    let flags = rustix::fs::fcntl_getfl(&fd)
        .and_then(|f| rustix::fs::fcntl_setfl(&fd, f - OFlags::NONBLOCK));
    flags.map_err(|e| StdioError::Open {
        stream: stream.name(),
        path: path.to_owned(),
        source: e.into(),
    })?;
    Ok(fd)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::{Read, Write};

    fn mkfifo(path: &Path) {
        rustix::fs::mknodat(
            rustix::fs::CWD,
            path,
            rustix::fs::FileType::Fifo,
            Mode::from_raw_mode(0o600),
            0,
        )
        .unwrap();
    }

    #[test]
    fn output_reaches_containerds_reader_and_ends_with_the_writer() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("out");
        mkfifo(&path);
        // containerd's side: a non-blocking reader opened before Create.
        let mut containerd = std::fs::File::from(
            rustix::fs::open(&path, OFlags::RDONLY | OFlags::NONBLOCK, Mode::empty()).unwrap(),
        );
        let fifo = Endpoint::Fifo(path.clone());
        let mut opened = open([&Endpoint::None, &fifo, &Endpoint::None]).unwrap();
        let mut container = std::fs::File::from(opened.container[1].take().unwrap());
        container.write_all(b"hello\n").unwrap();
        drop(container); // the process exits
        let mut got = Vec::new();
        containerd.read_to_end(&mut got).unwrap();
        assert_eq!(
            got, b"hello\n",
            "the daemon's keepalive reader must not delay end-of-file"
        );
        assert_eq!(opened.keepalive.len(), 1);
    }

    #[test]
    fn output_survives_containerd_going_away() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("out");
        mkfifo(&path);
        let containerd =
            rustix::fs::open(&path, OFlags::RDONLY | OFlags::NONBLOCK, Mode::empty()).unwrap();
        let fifo = Endpoint::Fifo(path.clone());
        let mut opened = open([&Endpoint::None, &fifo, &Endpoint::None]).unwrap();
        drop(containerd); // containerd restarts
        let mut container = std::fs::File::from(opened.container[1].take().unwrap());
        // Without the daemon's reader this write would fail with EPIPE.
        container.write_all(b"still here\n").unwrap();
        // containerd comes back, reopens its end and reads what was written meanwhile.
        let mut back = std::fs::File::from(
            rustix::fs::open(&path, OFlags::RDONLY | OFlags::NONBLOCK, Mode::empty()).unwrap(),
        );
        drop(opened.keepalive);
        drop(container);
        let mut got = String::new();
        back.read_to_string(&mut got).unwrap();
        assert_eq!(got, "still here\n");
    }

    #[test]
    fn stdin_opens_without_a_writer_and_sees_containerds_close() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("in");
        mkfifo(&path);
        let fifo = Endpoint::Fifo(path.clone());
        let mut opened = open([&fifo, &Endpoint::None, &Endpoint::None]).unwrap();
        assert!(
            opened.keepalive.is_empty(),
            "no daemon-held writer on stdin"
        );
        let mut container = std::fs::File::from(opened.container[0].take().unwrap());
        let mut containerd = std::fs::OpenOptions::new().write(true).open(&path).unwrap();
        containerd.write_all(b"input").unwrap();
        drop(containerd); // CloseIO
        let mut got = String::new();
        container.read_to_string(&mut got).unwrap();
        assert_eq!(got, "input");
    }

    #[test]
    fn a_plain_path_that_is_a_regular_file_is_appended_to_not_overwritten() {
        let dir = tempfile::tempdir().unwrap();
        let log = dir.path().join("log");
        std::fs::write(&log, "old\n").unwrap();
        let path = Endpoint::parse(Stream::Stdout, log.to_str().unwrap()).unwrap();
        let mut opened = open([&Endpoint::None, &path, &Endpoint::None]).unwrap();
        assert!(opened.keepalive.is_empty(), "no reader is held on a file");
        std::fs::File::from(opened.container[1].take().unwrap())
            .write_all(b"new\n")
            .unwrap();
        assert_eq!(std::fs::read_to_string(&log).unwrap(), "old\nnew\n");
    }

    #[test]
    fn block_devices_and_directories_are_refused_and_character_devices_taken() {
        let dir = tempfile::tempdir().unwrap();
        let err = open([
            &Endpoint::None,
            &Endpoint::Fifo(dir.path().into()),
            &Endpoint::None,
        ])
        .unwrap_err()
        .to_string();
        assert!(
            err.starts_with("stdout") && err.contains("is a directory"),
            "{err}"
        );
        let null = Endpoint::Fifo("/dev/null".into());
        let opened = open([&null, &null, &null]).unwrap();
        assert!(opened.container.iter().all(Option::is_some));
        let Some(()) = integration::require(&[integration::Need::Root]) else {
            return;
        };
        // A node for loop0: writing a container's output there would overwrite a disk.
        let disk = dir.path().join("disk");
        rustix::fs::mknodat(
            rustix::fs::CWD,
            &disk,
            rustix::fs::FileType::BlockDevice,
            Mode::from_raw_mode(0o600),
            rustix::fs::makedev(7, 0),
        )
        .unwrap();
        let err = open([&Endpoint::None, &Endpoint::None, &Endpoint::Fifo(disk)])
            .unwrap_err()
            .to_string();
        assert!(
            err.starts_with("stderr") && err.contains("block device"),
            "{err}"
        );
    }

    #[test]
    fn fifos_are_given_to_io_uid_and_io_gid() {
        let Some(()) = integration::require(&[integration::Need::Root]) else {
            return;
        };
        let dir = tempfile::tempdir().unwrap();
        let (out, input) = (dir.path().join("out"), dir.path().join("in"));
        mkfifo(&out);
        mkfifo(&input);
        let owner = IoOwner {
            uid: 1000,
            gid: 1001,
        };
        let _opened = open_as(
            [
                &Endpoint::Fifo(input.clone()),
                &Endpoint::Fifo(out.clone()),
                &Endpoint::None,
            ],
            owner,
        )
        .unwrap();
        for path in [&out, &input] {
            let stat = rustix::fs::stat(path).unwrap();
            assert_eq!(
                (stat.st_uid, stat.st_gid),
                (1000, 1001),
                "{}",
                path.display()
            );
        }
    }

    #[test]
    fn file_uris_append_and_missing_fifos_are_named() {
        let dir = tempfile::tempdir().unwrap();
        let log = dir.path().join("log");
        std::fs::write(&log, "old\n").unwrap();
        let file = Endpoint::File(log.clone());
        let mut opened = open([&Endpoint::None, &file, &Endpoint::None]).unwrap();
        std::fs::File::from(opened.container[1].take().unwrap())
            .write_all(b"new\n")
            .unwrap();
        assert_eq!(std::fs::read_to_string(&log).unwrap(), "old\nnew\n");

        let missing = Endpoint::Fifo(dir.path().join("nope"));
        let err = open([&Endpoint::None, &Endpoint::None, &missing])
            .unwrap_err()
            .to_string();
        assert!(
            err.starts_with("stderr: cannot open") && err.contains("nope"),
            "{err}"
        );
    }
}
