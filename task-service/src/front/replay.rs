//! Which calls the front may send again to a restarted daemon, and the buffering that allows it.
//!
//! A call that only reads (`Wait`, `State`, `Pids`, `Connect`, `Stats`) gives the same answer
//! from the next daemon, which recovers every container and every exit; sending it again makes
//! a daemon restart invisible to the caller. `Wait` matters most: containerd keeps one open per
//! task for its whole life. Calls that change something are never sent twice.

use bytes::Bytes;
use http_body_util::BodyExt;

/// The largest request body kept for a replay (a read's request is a few dozen bytes).
pub const MAX_REPLAY_BYTES: usize = 64 * 1024;

const REPLAYABLE: &[&str] = &[
    "/containerd.task.v3.Task/Wait",
    "/containerd.task.v3.Task/State",
    "/containerd.task.v3.Task/Pids",
    "/containerd.task.v3.Task/Connect",
    "/containerd.task.v3.Task/Stats",
    "/shimless.v1.Admin/List",
];

/// Whether the call at this HTTP/2 path only reads, so may be sent to the daemon again.
///
/// ```
/// use task_service::front::replay::is_replayable;
/// assert!(is_replayable("/containerd.task.v3.Task/Wait"));
/// assert!(!is_replayable("/containerd.task.v3.Task/Kill"));
/// ```
pub fn is_replayable(path: &str) -> bool {
    REPLAYABLE.contains(&path)
}

/// Reads a whole request body, refusing one larger than `limit` bytes.
///
/// ```
/// let body = http_body_util::Full::new(bytes::Bytes::from_static(b"abc"));
/// let got = smol::block_on(task_service::front::replay::collect(body, 16)).unwrap();
/// assert_eq!(&got[..], b"abc");
/// let body = http_body_util::Full::new(bytes::Bytes::from_static(b"abc"));
/// assert!(smol::block_on(task_service::front::replay::collect(body, 2)).is_err());
/// ```
pub async fn collect<B>(body: B, limit: usize) -> Result<Bytes, tonic::Status>
where
    B: http_body::Body<Data = Bytes>,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    let limited = http_body_util::Limited::new(body, limit);
    match limited.collect().await {
        Ok(collected) => Ok(collected.to_bytes()),
        Err(e) => Err(tonic::Status::invalid_argument(format!(
            "cannot read the request (at most {limit} bytes for a read call): {e}"
        ))),
    }
}
