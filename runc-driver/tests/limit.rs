//! The bound on concurrent runtime processes, with a wrapper runtime that is slow on purpose
//! and records how many copies of itself run at once.

use runc_driver::{ProcessLimit, Runc};
use std::os::unix::fs::PermissionsExt;
use std::time::Duration;

#[test]
fn no_more_runtimes_run_at_once_than_the_limit_and_every_call_gets_its_turn() {
    let dir = tempfile::tempdir().unwrap();
    let running = dir.path().join("running");
    std::fs::create_dir(&running).unwrap();
    let peak = dir.path().join("peak");
    let runtime = dir.path().join("slow-runc");
    // Each run marks itself in `running`, notes how many marks it sees, waits, and leaves.
    std::fs::write(
        &runtime,
        format!(
            "#!/bin/sh\ntouch {r}/$$\nls {r} | wc -l >> {p}\nsleep 0.3\nrm {r}/$$\necho '[]'\n",
            r = running.display(),
            p = peak.display()
        ),
    )
    .unwrap();
    std::fs::set_permissions(&runtime, std::fs::Permissions::from_mode(0o755)).unwrap();
    let limit = ProcessLimit::new(2);
    let a = Runc::builder()
        .binary(&runtime)
        .process_limit(limit.clone())
        .build()
        .unwrap();
    let b = Runc::builder()
        .binary(&runtime)
        .root(dir.path().join("other-root"))
        .process_limit(limit)
        .build()
        .unwrap();
    let started = std::time::Instant::now();
    let results = futures_lite::future::block_on(async {
        let calls: Vec<_> = (0..6)
            .map(|i| {
                let runc = if i % 2 == 0 { a.clone() } else { b.clone() };
                smol::spawn(async move { runc.list().await })
            })
            .collect();
        let mut results = Vec::new();
        for call in calls {
            results.push(call.await);
        }
        results
    });
    assert!(results.iter().all(|r| r.is_ok()), "{results:?}");
    let seen: Vec<usize> = std::fs::read_to_string(&peak)
        .unwrap()
        .lines()
        .map(|l| l.trim().parse().unwrap())
        .collect();
    assert_eq!(seen.len(), 6, "every call ran: {seen:?}");
    assert!(
        seen.iter().all(|&n| n <= 2),
        "more than 2 at once: {seen:?}"
    );
    // Six 0.3 s runs two at a time take three rounds.
    assert!(
        started.elapsed() >= Duration::from_millis(850),
        "{:?}",
        started.elapsed()
    );
}
