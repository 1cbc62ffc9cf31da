//! Work that outlives its call: a handler's future is dropped when the call's deadline passes
//! or its client goes away, at whatever `.await` it was in. A `Create` or an exec's `Start`
//! dropped after the runtime made the process would strand it (a `creating` record, mounts, a
//! zombie exec whose `Wait` never returns); so these run as a task of their own, which finishes
//! or undoes what it made, and asks [`Caller::gone`] before it commits.

use super::Daemon;
use std::future::Future;
use tonic::Status;

/// Whether the call that started a piece of work still waits for its answer.
pub(super) struct Caller {
    answer: smol::channel::Sender<()>,
}

impl Caller {
    /// Whether the call was dropped (its deadline passed, its client went away): nobody will
    /// hear the answer, so what the work made must be undone rather than kept.
    pub(super) fn gone(&self) -> bool {
        self.answer.is_closed()
    }
}

impl Daemon {
    /// Runs `work` on the daemon's executor as a task of its own and answers with its result;
    /// dropping the returned future does not stop `work`.
    pub(super) async fn outlive<T, W, F>(&self, work: W) -> Result<T, Status>
    where
        W: FnOnce(Caller) -> F,
        F: Future<Output = Result<T, Status>> + Send + 'static,
        T: Send + 'static,
    {
        let (tx, rx) = smol::channel::bounded(1);
        let (gone_tx, gone_rx) = smol::channel::bounded::<()>(1);
        let work = work(Caller { answer: gone_tx });
        self.inner
            .ex
            .spawn(async move {
                let _ = tx.send(work.await).await;
            })
            .detach();
        let answer = rx.recv().await;
        drop(gone_rx);
        answer.unwrap_or_else(|_| Err(Status::internal("the call's task ended without an answer")))
    }
}
