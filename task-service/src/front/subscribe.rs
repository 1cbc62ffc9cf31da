//! `Events/Subscribe` through the front: a subscriber that stops reading loses its own events,
//! nothing else.
//!
//! Every call of the node shares the front's one HTTP/2 connection to the daemon. A subscriber
//! that stops reading (a stopped `shimlessctl events`) used to stop the front reading its
//! stream on that connection, and the daemon's small event messages piled up there unread. h2
//! counts small DATA frames buffered unread against a budget per connection (its defence
//! against floods of tiny frames); a few stalled subscribers exhaust it, and h2 tears the whole
//! connection down (`GOAWAY ENHANCE_YOUR_CALM`, "too_many_data_frames"): every call in flight
//! fails.
//!
//! So the front always reads a subscription's stream at once, into a queue of its own of
//! [`QUEUE_MESSAGES`] whole gRPC messages per subscriber. A subscriber that lets its queue fill
//! gets what is queued, then the end of its stream with `DATA_LOSS` naming why (the daemon's
//! own answer to a subscriber that falls behind its bus), and the daemon's stream is cancelled.

use bytes::{Buf, Bytes, BytesMut};
use http_body_util::BodyExt;
use hyper::body::{Frame, Incoming};
use std::sync::{Arc, Mutex};
use tonic::body::Body;

/// The call whose answer is a stream of events.
pub(super) const PATH: &str = "/containerd.services.events.v1.Events/Subscribe";

/// How many event messages the front holds for one subscriber that does not read: about 1 MiB
/// of task events.
///
/// ```
/// assert_eq!(task_service::front::subscribe::QUEUE_MESSAGES, 4096);
/// ```
pub const QUEUE_MESSAGES: usize = 4096;

/// How a subscription's stream ends, once its queue is drained.
type Ending = Arc<Mutex<Option<http::HeaderMap>>>;

/// The daemon's answer to a `Subscribe`, read at once into a bounded queue on `ex`.
pub(super) fn decouple(
    response: http::Response<Incoming>,
    ex: &smol::Executor<'static>,
) -> http::Response<Body> {
    let (head, incoming) = response.into_parts();
    let (tx, rx) = smol::channel::bounded::<Bytes>(QUEUE_MESSAGES);
    let ending: Ending = Arc::default();
    ex.spawn(pump(incoming, tx, ending.clone())).detach();
    let frames = futures_lite::stream::unfold(Some((rx, ending)), |state| async move {
        let (rx, ending) = state?;
        match rx.recv().await {
            Ok(first) => {
                let batch = batch(first, &rx);
                Some((Ok(Frame::data(batch)), Some((rx, ending))))
            }
            Err(_) => {
                let trailers = ending
                    .lock()
                    .unwrap_or_else(std::sync::PoisonError::into_inner)
                    .take();
                let trailers = trailers.map(|t| Ok::<_, tonic::Status>(Frame::trailers(t)));
                trailers.map(|t| (t, None))
            }
        }
    });
    http::Response::from_parts(head, Body::new(http_body_util::StreamBody::new(frames)))
}

/// How many bytes of queued messages go to the subscriber in one DATA frame: h2's default
/// frame size.
const BATCH_BYTES: usize = 16 * 1024;

/// `first` and whatever else is queued, up to [`BATCH_BYTES`]: a subscriber catching up gets a
/// few large frames, not thousands of tiny ones (which its own h2 would count against the same
/// budget, and give up its connection over).
fn batch(first: Bytes, rx: &smol::channel::Receiver<Bytes>) -> Bytes {
    if rx.is_empty() {
        return first;
    }
    let mut out = BytesMut::from(&first[..]);
    while out.len() < BATCH_BYTES {
        match rx.try_recv() {
            Ok(next) => out.extend_from_slice(&next),
            Err(_) => break,
        }
    }
    out.freeze()
}

/// Reads the daemon's stream until it ends, the subscriber goes away, or its queue overflows.
async fn pump(mut incoming: Incoming, tx: smol::channel::Sender<Bytes>, ending: Ending) {
    let mut partial = BytesMut::new();
    let end = loop {
        let frame = match incoming.frame().await {
            None => break None,
            Some(Err(e)) => {
                let status = tonic::Status::unavailable(format!(
                    "the daemon's event stream broke off: {e}; subscribe again"
                ));
                break Some(trailers(&status));
            }
            Some(Ok(frame)) => frame,
        };
        let frame = match frame.into_data() {
            Ok(data) => data,
            Err(frame) => break frame.into_trailers().ok(),
        };
        partial.extend_from_slice(&frame);
        while let Some(message) = whole_message(&mut partial) {
            match tx.try_send(message) {
                Ok(()) => {}
                // The subscriber went away: nothing more to do.
                Err(smol::channel::TrySendError::Closed(_)) => return,
                Err(smol::channel::TrySendError::Full(_)) => {
                    let status = tonic::Status::data_loss(format!(
                        "this subscriber did not read its events and fell more than \
                         {QUEUE_MESSAGES} behind; later ones are lost: subscribe again"
                    ));
                    set(&ending, Some(trailers(&status)));
                    // Dropping the daemon's stream cancels it there.
                    return;
                }
            }
        }
    };
    set(&ending, end);
}

fn set(ending: &Ending, trailers: Option<http::HeaderMap>) {
    *ending
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner) = trailers;
}

fn trailers(status: &tonic::Status) -> http::HeaderMap {
    let mut map = http::HeaderMap::new();
    let _ = status.add_header(&mut map);
    map
}

/// Splits one whole gRPC message (a 5-byte prefix, then its length) off the front of `buf`.
fn whole_message(buf: &mut BytesMut) -> Option<Bytes> {
    if buf.len() < 5 {
        return None;
    }
    let len = (&buf[1..5]).get_u32() as usize;
    (buf.len() >= 5 + len).then(|| buf.split_to(5 + len).freeze())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn messages_are_split_whole_whatever_the_frames() {
        let mut buf = BytesMut::new();
        let message = |n: u8| [&[0u8, 0, 0, 0, 3][..], &[n; 3]].concat();
        let stream = [message(1), message(2)].concat();
        buf.extend_from_slice(&stream[..7]);
        assert_eq!(whole_message(&mut buf), None);
        buf.extend_from_slice(&stream[7..]);
        assert_eq!(whole_message(&mut buf).as_deref(), Some(&message(1)[..]));
        assert_eq!(whole_message(&mut buf).as_deref(), Some(&message(2)[..]));
        assert_eq!(whole_message(&mut buf), None);
        assert!(buf.is_empty());
    }
}
