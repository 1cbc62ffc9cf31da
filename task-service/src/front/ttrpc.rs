//! containerd's ttrpc on a namespace's socket, translated to gRPC calls to the daemon.
//!
//! A ttrpc frame is a 10-byte header — payload length and stream id (big-endian u32), type
//! (1 request, 2 response, 3 data) and flags — then a `ttrpc.Request` or `ttrpc.Response`. The
//! Task service's messages are the same in `containerd.task.v2` (what containerd 1.7 calls
//! over ttrpc) and `containerd.task.v3`, so a request's payload goes to the daemon unchanged as
//! `/containerd.task.v3.Task/<Method>`, through the same hold-and-replay path as gRPC calls.
//! Each request is answered as soon as its own call returns (a held `Wait` blocks nothing).

use super::{Shared, forward_buffered};
use crate::api::ttrpc::{Request, Response, Status};
use crate::ids::Namespace;
use bytes::{BufMut, Bytes, BytesMut};
use futures_lite::{AsyncReadExt, AsyncWriteExt};
use http_body_util::BodyExt;
use prost::Message;
use smol::net::unix::{UnixListener, UnixStream};
use std::sync::Arc;
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
        let stream = crate::grpc::accept::next(&listener, "shimless-front").await;
        if let Some(why) = shared.refuse(&stream) {
            eprintln!("shimless-front: refused a connection: {why}");
            continue;
        }
        shared
            .ex
            .spawn(serve(stream, namespace.clone(), shared.clone()))
            .detach();
    }
}

/// Reads requests until the peer goes away; answers each from a task of its own.
async fn serve(stream: UnixStream, namespace: Namespace, shared: Arc<Shared>) {
    let writer = Arc::new(async_lock::Mutex::new(stream.clone()));
    let mut reader = stream;
    let mut header = [0u8; HEADER];
    loop {
        if reader.read_exact(&mut header).await.is_err() {
            return;
        }
        let length = u32::from_be_bytes([header[0], header[1], header[2], header[3]]) as usize;
        let stream_id = u32::from_be_bytes([header[4], header[5], header[6], header[7]]);
        if length > MAX_MESSAGE {
            // Not ttrpc, or a peer we cannot follow: drop the connection.
            return;
        }
        let mut payload = vec![0u8; length];
        if reader.read_exact(&mut payload).await.is_err() {
            return;
        }
        if header[8] != REQUEST {
            continue;
        }
        let shared = shared.clone();
        let writer = writer.clone();
        let namespace = namespace.clone();
        shared
            .ex
            .clone()
            .spawn(async move {
                let response = answer(&shared, &namespace, &payload).await.encode_to_vec();
                let mut frame = Vec::with_capacity(HEADER + response.len());
                frame.extend_from_slice(&(response.len() as u32).to_be_bytes());
                frame.extend_from_slice(&stream_id.to_be_bytes());
                frame.extend_from_slice(&[RESPONSE, 0]);
                frame.extend_from_slice(&response);
                let mut out = writer.lock().await;
                let _ = out.write_all(&frame).await;
            })
            .detach();
    }
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
