//! Dropped calls leave no zombie runtime process and no container behind.

mod common;

use common::{RUNTIMES, bundle, env, id, reap_orphans, zombie_children_in_session};
use futures_lite::future;
use runc_driver::CreateOpts;
use std::future::Future;
use std::time::Duration;

/// Runs `call`, or drops it after `after` if it has not finished by then.
async fn maybe_cancel<T>(call: impl Future<Output = T>, after: Option<Duration>) -> Option<T> {
    match after {
        None => Some(call.await),
        Some(after) => {
            future::or(async { Some(call.await) }, async {
                async_io::Timer::after(after).await;
                None
            })
            .await
        }
    }
}

/// Calls per runtime; every third is dropped part-way (after 0–15 ms, so some die before the
/// runtime started, some while it works, some after it finished). Every tenth call creates a
/// container (and deletes it when the create completed); the others query a running one.
const CALLS: usize = 1_000;

#[test]
fn cancelled_calls_leave_no_zombie_and_no_container() {
    for runtime in RUNTIMES {
        let Some(env) = env(runtime) else { return };
        let runc = &env.runc;
        let b = bundle(&["sleep", "600"]);
        // Container inits are re-parented to us (a subreaper) and are ours to reap; anything
        // else left as a zombie child would be a runtime process the driver failed to reap.
        let mut container_inits = std::collections::HashSet::new();
        let target = id(&format!("target-{runtime}"));
        smol::block_on(async {
            let running = runc
                .run_detached(&target, b.path(), CreateOpts::default())
                .await
                .unwrap();
            container_inits.insert(running.pid);
            for n in 0..CALLS {
                let cancel_after = (n % 3 == 0).then(|| Duration::from_millis((n % 16) as u64));
                if n % 10 == 0 {
                    let c = id(&format!("cancel-{runtime}-{n}"));
                    let create = runc.create(&c, b.path(), CreateOpts::default());
                    if let Some(created) = maybe_cancel(create, cancel_after).await {
                        container_inits.insert(created.unwrap().pid);
                        runc.delete(&c, true).await.unwrap();
                    }
                } else if n % 2 == 0 {
                    if let Some(state) = maybe_cancel(runc.state(&target), cancel_after).await {
                        assert_eq!(state.unwrap().pid, running.pid);
                    }
                } else if let Some(pids) = maybe_cancel(runc.ps(&target), cancel_after).await {
                    assert!(pids.unwrap().contains(&running.pid));
                }
            }
            runc.delete(&target, true).await.unwrap();
        });
        // Killed runtime processes are reaped on a background thread; give it a moment.
        std::thread::sleep(Duration::from_millis(500));
        let unreaped: Vec<_> = zombie_children_in_session()
            .into_iter()
            .filter(|(pid, _)| !container_inits.contains(pid))
            .collect();
        assert!(
            unreaped.is_empty(),
            "{runtime}: zombie runtime processes left: {unreaped:?}"
        );
        let left = smol::block_on(runc.list()).unwrap();
        assert!(
            left.is_empty(),
            "{runtime}: containers left: {:?}",
            left.iter().map(|s| &s.id).collect::<Vec<_>>()
        );
        reap_orphans();
    }
}
