//! Accepting that never gives up: an accept error is about the moment (no descriptor left, no
//! memory, a peer that reset before it was accepted), not about the socket.
//!
//! Returning the error would end the accept loop: on a namespace socket every later containerd
//! connection would be refused, and on the front's public socket the front would exit, after
//! which containerd runs `shim delete` for every task of the node. grpc-go and ttrpc-go both
//! retry instead, sleeping 5 ms after the first failure and doubling up to 1 s; so does this.

use smol::net::unix::{UnixListener, UnixStream};
use std::time::Duration;

/// Raises the soft `RLIMIT_NOFILE` to the hard limit, so that running out of descriptors comes
/// as late as the system allows (every containerd connection, pidfd and FIFO reader costs one).
/// Best effort: a limit that cannot be raised is left as it is.
///
/// ```
/// task_service::grpc::accept::raise_nofile_limit();
/// let limit = rustix::process::getrlimit(rustix::process::Resource::Nofile);
/// assert_eq!(limit.current, limit.maximum);
/// ```
pub fn raise_nofile_limit() {
    use rustix::process::{Resource, Rlimit, getrlimit, setrlimit};
    if let Some(max) = getrlimit(Resource::Nofile).maximum {
        let raised = Rlimit {
            current: Some(max),
            maximum: Some(max),
        };
        let _ = setrlimit(Resource::Nofile, raised);
    }
}

/// The first pause after a failed accept.
pub const FIRST_PAUSE: Duration = Duration::from_millis(5);
/// The longest pause between two failed accepts.
pub const MAX_PAUSE: Duration = Duration::from_secs(1);

/// The next connection on `listener`, however many accepts fail first. Failures are logged
/// (with `who` naming the socket's owner) when a run of them starts, and when it ends.
///
/// ```no_run
/// let listener = task_service::grpc::listen::bind("/run/shimless/shimless.sock")?;
/// smol::block_on(async {
///     let stream = task_service::grpc::accept::next(&listener, "shimlessd").await;
///     drop(stream);
/// });
/// # Ok::<(), std::io::Error>(())
/// ```
pub async fn next(listener: &UnixListener, who: &str) -> UnixStream {
    let mut pause = None::<Duration>;
    let mut failures = 0u64;
    loop {
        match listener.accept().await {
            Ok((stream, _)) => {
                if failures > 0 {
                    tracing::info!(
                        "{who}: accepting on {} works again after {failures} failed accepts",
                        local(listener)
                    );
                }
                return stream;
            }
            Err(e) => {
                if failures == 0 {
                    tracing::warn!(
                        "{who}: warning: accept on {} failed ({e}); retrying with backoff \
                         (raise the open-file limit if this is EMFILE)",
                        local(listener)
                    );
                }
                failures += 1;
                let next = pause.map_or(FIRST_PAUSE, |p| (p * 2).min(MAX_PAUSE));
                pause = Some(next);
                smol::Timer::after(next).await;
            }
        }
    }
}

fn local(listener: &UnixListener) -> String {
    listener
        .local_addr()
        .ok()
        .and_then(|a| a.as_pathname().map(|p| p.display().to_string()))
        .unwrap_or_else(|| "its socket".into())
}
