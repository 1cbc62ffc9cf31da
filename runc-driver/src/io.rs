//! Where the runtime's (and so, for detached commands, the container's) stdin, stdout and
//! stderr go.

use std::os::fd::OwnedFd;

/// One stream's destination.
#[derive(Debug)]
pub enum Io {
    /// `/dev/null`.
    Null,
    /// This descriptor, handed to the runtime (and, for `create`, `run -d` and `exec -d`, to
    /// the container).
    Fd(OwnedFd),
    /// A pipe whose other end the call returns (see [`Pipes`]).
    Pipe,
}

/// The three streams of a command that starts a process.
///
/// ```
/// use runc_driver::{Io, Stdio};
/// let stdio = Stdio { stdin: Io::Null, stdout: Io::Pipe, stderr: Io::Pipe };
/// # let _ = stdio;
/// ```
#[derive(Debug)]
pub struct Stdio {
    /// Standard input.
    pub stdin: Io,
    /// Standard output.
    pub stdout: Io,
    /// Standard error.
    pub stderr: Io,
}

impl Default for Stdio {
    /// All three to `/dev/null`.
    fn default() -> Self {
        Stdio {
            stdin: Io::Null,
            stdout: Io::Null,
            stderr: Io::Null,
        }
    }
}

/// The caller's ends of the streams it asked to be pipes.
#[derive(Debug, Default)]
pub struct Pipes {
    /// Write here to feed the process's stdin.
    pub stdin: Option<OwnedFd>,
    /// Read the process's stdout here.
    pub stdout: Option<OwnedFd>,
    /// Read the process's stderr here.
    pub stderr: Option<OwnedFd>,
}

impl Stdio {
    /// Splits into what the runtime gets, and the caller's pipe ends.
    pub(crate) fn open(self) -> std::io::Result<(Stdio, Pipes)> {
        let mut pipes = Pipes::default();
        let wire = |io: Io, child_reads: bool, slot: &mut Option<OwnedFd>| -> std::io::Result<Io> {
            Ok(match io {
                Io::Pipe => {
                    let (read, write) = rustix::pipe::pipe_with(rustix::pipe::PipeFlags::CLOEXEC)?;
                    let (ours, theirs) = if child_reads {
                        (write, read)
                    } else {
                        (read, write)
                    };
                    *slot = Some(ours);
                    Io::Fd(theirs)
                }
                other => other,
            })
        };
        let stdin = wire(self.stdin, true, &mut pipes.stdin)?;
        let stdout = wire(self.stdout, false, &mut pipes.stdout)?;
        let stderr = wire(self.stderr, false, &mut pipes.stderr)?;
        Ok((
            Stdio {
                stdin,
                stdout,
                stderr,
            },
            pipes,
        ))
    }

    /// The std versions. Call after [`Stdio::open`], which turns every [`Io::Pipe`] into the
    /// runtime's end of a pipe; a pipe left unopened would have no reader, so it becomes
    /// `/dev/null`.
    pub(crate) fn into_std(self) -> [std::process::Stdio; 3] {
        let conv = |io: Io| match io {
            Io::Fd(fd) => std::process::Stdio::from(fd),
            Io::Null | Io::Pipe => std::process::Stdio::null(),
        };
        [conv(self.stdin), conv(self.stdout), conv(self.stderr)]
    }
}
