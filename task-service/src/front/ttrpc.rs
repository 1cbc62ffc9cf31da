//! containerd's ttrpc on a namespace's socket, translated to gRPC calls to the daemon.
//!
//! A ttrpc frame is a 10-byte header — payload length and stream id (big-endian u32), type
//! (1 request, 2 response, 3 data) and flags — then a `ttrpc.Request` or `ttrpc.Response`. The
//! Task service's messages are the same in `containerd.task.v2` (what containerd 1.7 calls
//! over ttrpc) and `containerd.task.v3`, so a request's payload goes to the daemon unchanged as
//! `/containerd.task.v3.Task/<Method>`, through the same hold-and-replay path as gRPC calls.
//! Each request is answered as soon as its own call returns (a held `Wait` blocks nothing).
//!
//! Each connection keeps the requests it is answering, so that a handover to a new front
//! (see `handover`) can stop it at a message boundary and pass on what it read but has not
//! answered.

use super::{Shared, forward_buffered};
use crate::api::ttrpc::{Request, Response, Status};
use crate::ids::Namespace;
use bytes::{BufMut, Bytes, BytesMut};
use futures_lite::{AsyncReadExt, AsyncWriteExt};
use http_body_util::BodyExt;
use prost::Message;
use smol::net::unix::{UnixListener, UnixStream};
use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

const HEADER: usize = 10;
/// ttrpc's own limit on a message.
const MAX_MESSAGE: usize = 4 << 20;
const REQUEST: u8 = 1;
const RESPONSE: u8 = 2;

/// Accepts ttrpc connections on `listener`, every call marked with `namespace`.
pub(super) async fn accept(
    listener: UnixListener,
    namespace: Namespace,
    shared: Arc<Shared>,
) -> std::io::Result<()> {
    loop {
        let stream = shared.gate.accept(&listener, "shimless-front").await;
        if let Some(why) = shared.refuse(&stream) {
            tracing::warn!("shimless-front: refused a connection: {why}");
            continue;
        }
        resume(stream, namespace.clone(), &shared, Vec::new(), Vec::new());
    }
}

/// Serves a connection: `unread` holds bytes already read from it (a handed-over connection's
/// partial message), `pending` requests read but not yet answered, as `(stream id, request)`.
pub(super) fn resume(
    stream: UnixStream,
    namespace: Namespace,
    shared: &Arc<Shared>,
    unread: Vec<u8>,
    pending: Vec<(u32, Vec<u8>)>,
) {
    let conn = Arc::new(Conn {
        id: NEXT_CONN.fetch_add(1, Ordering::Relaxed),
        namespace,
        writer: async_lock::Mutex::new(stream.clone()),
        stream,
        state: Default::default(),
    });
    crate::lock::lock(&shared.conns).insert(conn.id, conn.clone());
    for (stream_id, request) in pending {
        dispatch(&conn, shared, stream_id, request);
    }
    shared
        .ex
        .spawn(read_loop(conn, shared.clone(), unread))
        .detach();
}

static NEXT_CONN: AtomicU64 = AtomicU64::new(0);

/// One containerd connection: its socket, the calls read from it and not yet answered, and
/// whether its reader stopped for a handover.
pub(super) struct Conn {
    id: u64,
    pub namespace: Namespace,
    pub stream: UnixStream,
    /// Held while a response is written, so a handover never cuts one in half.
    pub writer: async_lock::Mutex<UnixStream>,
    state: std::sync::Mutex<ConnState>,
}

#[derive(Default)]
struct ConnState {
    /// Requests being answered, by stream id: the request and whether it only reads.
    calls: HashMap<u32, (Vec<u8>, bool)>,
    /// The bytes read but not handled, once the reader stopped for a handover.
    stopped: Option<Vec<u8>>,
}

/// What a handover takes from a stopped connection.
pub(super) struct Claimed {
    /// Bytes read but not handled (less than a message).
    pub unread: Vec<u8>,
    /// Reads being answered, to be sent again by the next front: `(stream id, request)`.
    pub reads: Vec<(u32, Vec<u8>)>,
}

impl Conn {
    /// Whether the reader has stopped for a handover.
    pub fn stopped(&self) -> bool {
        crate::lock::lock(&self.state).stopped.is_some()
    }

    /// How many calls that change something are being answered.
    pub fn writes_in_flight(&self) -> usize {
        let state = crate::lock::lock(&self.state);
        state.calls.values().filter(|(_, read)| !read).count()
    }

    /// Takes the answering of every call in flight from the tasks answering them (which then
    /// drop their answers): the reads are returned to be sent again, the writes are answered
    /// `UNAVAILABLE` here. Then holds the writer for good, with the bytes not yet handled.
    pub async fn claim(&self) -> (async_lock::MutexGuard<'_, UnixStream>, Claimed) {
        let mut out = self.writer.lock().await;
        let (calls, unread) = {
            let mut state = crate::lock::lock(&self.state);
            let calls: Vec<_> = state.calls.drain().collect();
            (calls, state.stopped.clone().unwrap_or_default())
        };
        let mut reads = Vec::new();
        for (stream_id, (request, read)) in calls {
            if read {
                reads.push((stream_id, request));
                continue;
            }
            let answer = failed(
                tonic::Code::Unavailable,
                "shimless-front was being upgraded and did not finish this call within its drain \
                 time; it may have taken effect: check the task's state and retry"
                    .into(),
            );
            let _ = out
                .write_all(&frame(stream_id, &answer.encode_to_vec()))
                .await;
        }
        (out, Claimed { unread, reads })
    }

    /// Gives back what [`Conn::claim`] took, after a handover that did not happen.
    pub fn unclaim(self: &Arc<Self>, shared: &Arc<Shared>, reads: Vec<(u32, Vec<u8>)>) {
        for (stream_id, request) in reads {
            dispatch(self, shared, stream_id, request);
        }
    }

    async fn reply(&self, stream_id: u32, response: &[u8]) {
        let mut out = self.writer.lock().await;
        if crate::lock::lock(&self.state)
            .calls
            .remove(&stream_id)
            .is_none()
        {
            // A handover took this call over.
            return;
        }
        let _ = out.write_all(&frame(stream_id, response)).await;
    }
}

fn frame(stream_id: u32, message: &[u8]) -> Vec<u8> {
    let mut frame = Vec::with_capacity(HEADER + message.len());
    frame.extend_from_slice(&(message.len() as u32).to_be_bytes());
    frame.extend_from_slice(&stream_id.to_be_bytes());
    frame.extend_from_slice(&[RESPONSE, 0]);
    frame.extend_from_slice(message);
    frame
}

/// Reads requests until the peer goes away, one message at a time, and answers each from a
/// task of its own; stops at a message boundary while the front is paused for a handover.
async fn read_loop(conn: Arc<Conn>, shared: Arc<Shared>, mut buf: Vec<u8>) {
    let mut reader = conn.stream.clone();
    loop {
        if shared.gate.is_paused() {
            crate::lock::lock(&conn.state).stopped = Some(std::mem::take(&mut buf));
            shared.gate.until(false).await;
            buf = crate::lock::lock(&conn.state)
                .stopped
                .take()
                .unwrap_or_default();
            continue;
        }
        let wanted = match next_frame(&mut buf) {
            Next::Frame(header, payload) => {
                if header[8] == REQUEST {
                    let stream_id =
                        u32::from_be_bytes([header[4], header[5], header[6], header[7]]);
                    dispatch(&conn, &shared, stream_id, payload);
                }
                continue;
            }
            Next::Wants(n) => n,
            // Not ttrpc, or a peer we cannot follow: drop the connection.
            Next::Refused => break,
        };
        let old = buf.len();
        buf.resize(old + wanted, 0);
        let read =
            futures_lite::future::or(async { Some(reader.read(&mut buf[old..]).await) }, async {
                shared.gate.until(true).await;
                None
            })
            .await;
        match read {
            Some(Ok(0)) | Some(Err(_)) => break,
            Some(Ok(n)) => buf.truncate(old + n),
            None => buf.truncate(old),
        }
    }
    crate::lock::lock(&shared.conns).remove(&conn.id);
}

enum Next {
    /// A whole message: its header and payload.
    Frame([u8; HEADER], Vec<u8>),
    /// This many more bytes are needed for the next message.
    Wants(usize),
    /// A message larger than ttrpc allows.
    Refused,
}

/// Takes the first whole message off `buf`.
fn next_frame(buf: &mut Vec<u8>) -> Next {
    if buf.len() < HEADER {
        return Next::Wants(HEADER - buf.len());
    }
    let length = u32::from_be_bytes([buf[0], buf[1], buf[2], buf[3]]) as usize;
    if length > MAX_MESSAGE {
        return Next::Refused;
    }
    if buf.len() < HEADER + length {
        return Next::Wants(HEADER + length - buf.len());
    }
    let mut header = [0u8; HEADER];
    header.copy_from_slice(&buf[..HEADER]);
    let payload = buf[HEADER..HEADER + length].to_vec();
    buf.drain(..HEADER + length);
    Next::Frame(header, payload)
}

/// Answers one request from a task of its own.
fn dispatch(conn: &Arc<Conn>, shared: &Arc<Shared>, stream_id: u32, payload: Vec<u8>) {
    let read = Request::decode(&payload[..]).is_ok_and(|r| {
        super::replay::is_replayable(&format!("/containerd.task.v3.Task/{}", r.method))
    });
    crate::lock::lock(&conn.state)
        .calls
        .insert(stream_id, (payload.clone(), read));
    let conn = conn.clone();
    let shared2 = shared.clone();
    shared
        .ex
        .spawn(async move {
            let response = answer(&shared2, &conn.namespace, &payload)
                .await
                .encode_to_vec();
            conn.reply(stream_id, &response).await;
        })
        .detach();
}

fn failed(code: tonic::Code, message: String) -> Response {
    Response {
        status: Some(Status {
            code: code as i32,
            message,
        }),
        payload: Vec::new(),
    }
}

/// One ttrpc request, sent to the daemon as a gRPC call.
async fn answer(shared: &Shared, namespace: &Namespace, payload: &[u8]) -> Response {
    let request = match task_request(payload) {
        Ok(request) => request,
        Err(refused) => return refused,
    };
    let (parts, body) = match as_grpc(&request, namespace) {
        Ok(call) => call,
        Err(refused) => return refused,
    };
    let deadline =
        (request.timeout_nano > 0).then(|| Duration::from_nanos(request.timeout_nano as u64));
    let response = forward_buffered(&shared.link, &shared.config, parts, body, deadline).await;
    let (head, body) = response.into_parts();
    match body.collect().await {
        Ok(collected) => from_grpc(&head.headers, collected),
        Err(e) => failed(
            tonic::Code::Unavailable,
            format!("shimlessd's answer was cut off: {e}"),
        ),
    }
}

/// Decodes a ttrpc request, refusing any service but containerd's Task service.
fn task_request(payload: &[u8]) -> Result<Request, Response> {
    let request = Request::decode(payload).map_err(|e| {
        failed(
            tonic::Code::InvalidArgument,
            format!("not a ttrpc request: {e}"),
        )
    })?;
    match request.service.as_str() {
        "containerd.task.v2.Task" | "containerd.task.v3.Task" => Ok(request),
        other => Err(failed(
            tonic::Code::Unimplemented,
            format!("service {other:?} is not served here (only containerd's Task service)"),
        )),
    }
}

/// The same call as task v3 over gRPC: its head (namespace stamped on) and its framed body.
fn as_grpc(
    request: &Request,
    namespace: &Namespace,
) -> Result<(http::request::Parts, Bytes), Response> {
    let mut body = BytesMut::with_capacity(5 + request.payload.len());
    body.put_u8(0);
    body.put_u32(request.payload.len() as u32);
    body.put_slice(&request.payload);
    let uri = format!(
        "http://localhost/containerd.task.v3.Task/{}",
        request.method
    );
    let namespace_value = http::HeaderValue::from_str(namespace.as_str())
        .map_err(|_| failed(tonic::Code::Internal, "namespace header".into()))?;
    let built = http::Request::builder()
        .method(http::Method::POST)
        .uri(uri)
        .header("content-type", "application/grpc")
        .header("te", "trailers")
        .header("containerd-namespace", namespace_value)
        .body(())
        .map_err(|e| {
            failed(
                tonic::Code::InvalidArgument,
                format!("method {:?}: {e}", request.method),
            )
        })?;
    Ok((built.into_parts().0, body.freeze()))
}

/// The daemon's gRPC answer as a ttrpc response. A failure comes as trailers, or alone in the
/// headers ("trailers-only").
fn from_grpc(headers: &http::HeaderMap, collected: http_body_util::Collected<Bytes>) -> Response {
    let trailers = collected.trailers().cloned();
    let data: Bytes = collected.to_bytes();
    let status = trailers
        .as_ref()
        .and_then(tonic::Status::from_header_map)
        .or_else(|| tonic::Status::from_header_map(headers));
    match status {
        Some(status) if status.code() != tonic::Code::Ok => {
            failed(status.code(), status.message().to_string())
        }
        _ if data.len() >= 5 => Response {
            status: Some(Status {
                code: 0,
                message: String::new(),
            }),
            payload: data[5..].to_vec(),
        },
        _ => failed(
            tonic::Code::Internal,
            format!(
                "shimlessd answered {} bytes, not a gRPC message",
                data.len()
            ),
        ),
    }
}
