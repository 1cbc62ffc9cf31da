//! Dropping `exited()` futures leaves no fd and no reactor registration behind.

// Children here are reaped through their pidfd (`PidFd::wait`), which clippy cannot see.
#![allow(clippy::zombie_processes)]

use futures_lite::future;
use shimless_pidfd::{PidFd, Signal};
use std::process::Command;

/// (open fds, fds registered in this process's epoll sets)
fn fds_and_registrations() -> (usize, usize) {
    let mut fds = 0;
    let mut registrations = 0;
    for entry in std::fs::read_dir("/proc/self/fdinfo").unwrap().flatten() {
        fds += 1;
        if let Ok(info) = std::fs::read_to_string(entry.path()) {
            registrations += info.lines().filter(|l| l.starts_with("tfd:")).count();
        }
    }
    (fds, registrations)
}

#[test]
fn dropped_exited_futures_leak_nothing() {
    let child = Command::new("sleep").arg("60").spawn().unwrap();
    let pidfd = PidFd::from_child(&child).unwrap();

    // Start async-io's reactor so that its own fds are in the baseline.
    assert!(future::block_on(future::poll_once(pidfd.exited())).is_none());
    let before = fds_and_registrations();

    let mut pending: Vec<_> = (0..1_000).map(|_| Box::pin(pidfd.exited())).collect();
    for fut in &mut pending {
        assert!(
            future::block_on(future::poll_once(fut)).is_none(),
            "process is alive"
        );
    }
    let during = fds_and_registrations();
    // The measurement can see registrations: 1,000 waiting futures hold 1,000 of them.
    assert!(
        during.1 >= before.1 + 1_000,
        "before {before:?}, during {during:?}"
    );

    drop(pending);
    assert_eq!(
        fds_and_registrations(),
        before,
        "dropping the futures must release everything"
    );

    pidfd.send_signal(Signal::KILL).unwrap();
    pidfd.wait().unwrap();
}
