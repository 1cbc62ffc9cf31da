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
        outlive(&self.inner.ex, work).await
    }
}

/// Runs `work` on `ex` as a task of its own and answers with its result; dropping the returned
/// future does not stop `work`, and makes its [`Caller::gone`] true.
async fn outlive<T, W, F>(ex: &smol::Executor<'static>, work: W) -> Result<T, Status>
where
    W: FnOnce(Caller) -> F,
    F: Future<Output = Result<T, Status>> + Send + 'static,
    T: Send + 'static,
{
    let (tx, rx) = smol::channel::bounded(1);
    // Held by this future only: when it is dropped, the work's sender sees the channel closed.
    let (gone_tx, _waiting) = smol::channel::bounded::<()>(1);
    let work = work(Caller { answer: gone_tx });
    ex.spawn(async move {
        let _ = tx.send(work.await).await;
    })
    .detach();
    rx.recv()
        .await
        .unwrap_or_else(|_| Err(Status::internal("the call's task ended without an answer")))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;
    use std::sync::atomic::{AtomicBool, Ordering};
    use std::time::Duration;

    #[test]
    fn work_finishes_after_its_call_is_dropped_and_knows_its_caller_is_gone() {
        let ex = smol::Executor::new();
        let (finished, saw_gone) = (
            Arc::new(AtomicBool::new(false)),
            Arc::new(AtomicBool::new(false)),
        );
        let (f, g) = (finished.clone(), saw_gone.clone());
        let (release, released) = smol::channel::bounded::<()>(1);
        smol::block_on(ex.run(async {
            let call = outlive(&ex, move |caller| async move {
                let _ = released.recv().await;
                g.store(caller.gone(), Ordering::SeqCst);
                f.store(true, Ordering::SeqCst);
                Ok(1)
            });
            // The call's deadline passes first: its future is dropped mid-work.
            let timed_out = futures_lite::future::or(async { Some(call.await) }, async {
                smol::Timer::after(Duration::from_millis(50)).await;
                None
            })
            .await;
            assert!(timed_out.is_none());
            release.send(()).await.unwrap();
            for _ in 0..200 {
                if finished.load(Ordering::SeqCst) {
                    break;
                }
                smol::Timer::after(Duration::from_millis(5)).await;
            }
        }));
        assert!(finished.load(Ordering::SeqCst), "the work ran to its end");
        assert!(saw_gone.load(Ordering::SeqCst), "and knew nobody waited");
    }

    #[test]
    fn a_waiting_caller_gets_the_answer_and_is_not_gone() {
        let ex = smol::Executor::new();
        let answer =
            smol::block_on(ex.run(outlive(&ex, |caller| async move { Ok(caller.gone()) })));
        assert!(!answer.unwrap(), "the caller still waits");
    }
}
