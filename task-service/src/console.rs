//! Terminals: a process created with a pty (`terminal: true`) gets the pty's slave end from the
//! runtime, and the daemon holds the master. [`Console`] copies containerd's stdin FIFO into the
//! master and the master into containerd's stdout FIFO (a terminal merges stderr into it), and
//! resizes the window.
//!
//! Unlike plain stdio (handed to the container directly), a terminal needs a copier, so it lives
//! in the daemon: a restart of the daemon closes the master, and the terminal's processes see a
//! hang-up, as they would if the Go shim died.

use async_io::Async;
use futures_lite::{AsyncReadExt, AsyncWriteExt};
use rustix::fd::OwnedFd;
use std::fs::File;
use std::sync::{Arc, Mutex};

/// A pty master with its copiers. Dropping it stops them and closes the master.
///
/// ```no_run
/// # fn f(master: rustix::fd::OwnedFd, ex: &smol::Executor<'static>) -> std::io::Result<()> {
/// use task_service::console::Console;
/// let console = Console::attach(master, None, None, ex)?;
/// console.resize(40, 120)?;
/// # Ok(()) }
/// ```
#[derive(Debug)]
pub struct Console {
    master: Arc<Async<File>>,
    stdin: Mutex<Option<smol::Task<()>>>,
    /// A writer of our own on the stdin FIFO: a FIFO reader sees end-of-file whenever no writer
    /// is open, which before containerd opens its end would end the copy at once. Dropped by
    /// [`Console::close_stdin`].
    stdin_hold: Mutex<Option<OwnedFd>>,
    _stdout: Option<smol::Task<()>>,
}

impl Console {
    /// Starts copying `stdin` (the read end of containerd's stdin FIFO) into `master`, and
    /// `master` into `stdout` (the write end of its stdout FIFO), as tasks on `ex`.
    pub fn attach(
        master: OwnedFd,
        stdin: Option<OwnedFd>,
        stdout: Option<OwnedFd>,
        ex: &smol::Executor<'static>,
    ) -> std::io::Result<Console> {
        let stdin_hold = match &stdin {
            Some(fd) => {
                // The reader's own FIFO, opened again for writing through /proc.
                let path = format!("/proc/self/fd/{}", rustix::fd::AsRawFd::as_raw_fd(fd));
                Some(rustix::fs::open(
                    path,
                    rustix::fs::OFlags::WRONLY
                        | rustix::fs::OFlags::NONBLOCK
                        | rustix::fs::OFlags::CLOEXEC,
                    rustix::fs::Mode::empty(),
                )?)
            }
            None => None,
        };
        let master = Arc::new(Async::new(File::from(master))?);
        let stdin = match stdin {
            Some(fd) => {
                let mut from = Async::new(File::from(fd))?;
                let to = master.clone();
                Some(ex.spawn(async move {
                    let mut buf = vec![0u8; 8192];
                    while let Ok(n) = from.read(&mut buf).await {
                        if n == 0 || (&*to).write_all(&buf[..n]).await.is_err() {
                            break;
                        }
                    }
                }))
            }
            None => None,
        };
        let stdout = match stdout {
            Some(fd) => {
                let mut to = Async::new(File::from(fd))?;
                let from = master.clone();
                Some(ex.spawn(async move {
                    let mut buf = vec![0u8; 8192];
                    // The master reads EIO once every slave is closed: the process is gone.
                    while let Ok(n) = (&*from).read(&mut buf).await {
                        if n == 0 || to.write_all(&buf[..n]).await.is_err() {
                            break;
                        }
                    }
                    let _ = to.flush().await;
                }))
            }
            None => None,
        };
        Ok(Console {
            master,
            stdin: Mutex::new(stdin),
            stdin_hold: Mutex::new(stdin_hold),
            _stdout: stdout,
        })
    }

    /// Sets the window size (`ResizePty`): the process gets `SIGWINCH`.
    pub fn resize(&self, height: u16, width: u16) -> std::io::Result<()> {
        let size = rustix::termios::Winsize {
            ws_row: height,
            ws_col: width,
            ws_xpixel: 0,
            ws_ypixel: 0,
        };
        rustix::termios::tcsetwinsize(self.master.get_ref(), size)?;
        Ok(())
    }

    /// The window size, as (height, width).
    pub fn size(&self) -> std::io::Result<(u16, u16)> {
        let size = rustix::termios::tcgetwinsize(self.master.get_ref())?;
        Ok((size.ws_row, size.ws_col))
    }

    /// Stops copying stdin (`CloseIO`); the terminal gets an end-of-file character so that a
    /// reading shell sees the end of its input.
    pub fn close_stdin(&self) {
        let task = crate::lock::lock(&self.stdin).take();
        drop(task);
        crate::lock::lock(&self.stdin_hold).take();
        // VEOF (^D) at the start of a line is end of input for the slave's reader.
        let _ = rustix::io::write(self.master.get_ref(), &[0x04]);
    }
}
