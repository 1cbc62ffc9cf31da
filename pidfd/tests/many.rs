//! Ten thousand processes watched at once on one reactor, all notified.

// Children here are reaped through their pidfd (`PidFd::wait`), which clippy cannot see.
#![allow(clippy::zombie_processes)]

use futures_lite::future;
use shimless_pidfd::{ExitStatus, PidFd};
use std::process::{Command, Stdio};
use std::time::Duration;

const PROCESSES: usize = 10_000;

#[test]
fn ten_thousand_watched_processes_are_all_notified() {
    // One pidfd per process plus a few.
    let want = (PROCESSES + 1_000) as u64;
    let now = integration::raise_fd_limit(want);
    assert!(
        now.is_none_or(|n| n >= want),
        "need {want} open files, the limit is {now:?}"
    );

    // Every child blocks reading one shared pipe; closing its write end ends them all at once.
    let (read, write) = rustix::pipe::pipe_with(rustix::pipe::PipeFlags::CLOEXEC).unwrap();
    let mut children = Vec::with_capacity(PROCESSES);
    let mut pidfds = Vec::with_capacity(PROCESSES);
    for _ in 0..PROCESSES {
        let stdin = read.try_clone().unwrap();
        let child = Command::new("cat")
            .stdin(Stdio::from(stdin))
            .stdout(Stdio::null())
            .spawn()
            .unwrap();
        pidfds.push(PidFd::from_child(&child).unwrap());
        children.push(child);
    }
    drop(read);

    let ex = smol::LocalExecutor::new();
    let tasks: Vec<_> = pidfds
        .iter()
        .map(|pidfd| {
            ex.spawn(async move {
                pidfd.exited().await.unwrap();
                pidfd.try_wait().unwrap()
            })
        })
        .collect();

    let statuses = smol::block_on(ex.run(async {
        // Let every task register its pidfd before the processes exit.
        for _ in 0..4 {
            future::yield_now().await;
        }
        assert!(
            pidfds.iter().all(|p| !p.has_exited()),
            "nothing may exit before the signal"
        );
        drop(write);
        let all = async {
            let mut statuses = Vec::with_capacity(PROCESSES);
            for task in tasks {
                statuses.push(task.await);
            }
            Some(statuses)
        };
        future::or(all, async {
            smol::Timer::after(Duration::from_secs(120)).await;
            None
        })
        .await
    }))
    .expect("every process must be notified within 120 s");

    assert_eq!(statuses.len(), PROCESSES);
    assert!(
        statuses.iter().all(|s| *s == Some(ExitStatus::Exited(0))),
        "all reaped with 0"
    );
}
