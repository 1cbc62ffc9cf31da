//! The pause every reader and accept loop of the front obeys during a handover: once paused,
//! no new connection is accepted and no new ttrpc request is read, each loop stopping at a
//! message boundary; a resume (after a handover that did not happen) lets them go on.

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};

/// Paused or not, and a way to await the change.
#[derive(Default)]
pub(super) struct Gate {
    paused: AtomicBool,
    changed: event_listener::Event,
    /// Accept loops that run, and those parked by a pause.
    loops: AtomicUsize,
    parked: AtomicUsize,
}

impl Gate {
    pub fn is_paused(&self) -> bool {
        self.paused.load(Ordering::SeqCst)
    }

    pub fn set(&self, paused: bool) {
        self.paused.store(paused, Ordering::SeqCst);
        self.changed.notify(usize::MAX);
    }

    /// Returns once the gate is `paused` (at once if it already is).
    pub async fn until(&self, paused: bool) {
        loop {
            if self.is_paused() == paused {
                return;
            }
            let listener = self.changed.listen();
            if self.is_paused() == paused {
                return;
            }
            listener.await;
        }
    }

    /// Whether every accept loop is parked.
    pub fn loops_parked(&self) -> bool {
        self.parked.load(Ordering::SeqCst) >= self.loops.load(Ordering::SeqCst)
    }

    /// The next connection on `listener`, accepted only while the gate is open: a pause parks
    /// the loop until the gate opens again.
    pub async fn accept(
        &self,
        listener: &smol::net::unix::UnixListener,
        who: &str,
    ) -> smol::net::unix::UnixStream {
        loop {
            if self.is_paused() {
                self.parked.fetch_add(1, Ordering::SeqCst);
                self.until(false).await;
                self.parked.fetch_sub(1, Ordering::SeqCst);
                continue;
            }
            let accepted = futures_lite::future::or(
                async { Some(crate::grpc::accept::next(listener, who).await) },
                async {
                    self.until(true).await;
                    None
                },
            )
            .await;
            if let Some(stream) = accepted {
                return stream;
            }
        }
    }

    /// Counts one more accept loop (for [`Gate::loops_parked`]).
    pub fn count_loop(&self) {
        self.loops.fetch_add(1, Ordering::SeqCst);
    }
}
