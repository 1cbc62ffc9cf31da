//! Multi-threaded processes: the exit is recorded once, when the last thread goes, with the
//! status `waitpid` reports. The threaded helpers are this test binary, re-executed in a mode.
//!
//! `harness = false`: the helpers need the process's real main thread (the thread-group
//! leader), which libtest would keep for itself.

mod common;

use exitwatch::ExitWatch;
use std::io::{BufRead, Write};
use std::process::{Command, Stdio};
use std::time::Duration;

const MODE_ENV: &str = "EXITWATCH_TEST_THREADS";

/// Helper modes. Each prints "ready" and waits for a line on stdin, so it is tracked before
/// anything exits.
fn helper(mode: &str) {
    println!("ready");
    std::io::stdout().flush().unwrap();
    let mut go = String::new();
    std::io::stdin().lock().read_line(&mut go).unwrap();
    match mode {
        // A thread other than the leader calls exit(7): the whole group goes.
        "nonleader-exit" => {
            std::thread::spawn(|| std::process::exit(7));
            std::thread::sleep(Duration::from_secs(60));
        }
        // The leader leaves with a thread exit; the last thread then calls exit(9).
        "leader-thread-exit" => {
            std::thread::spawn(|| {
                std::thread::sleep(Duration::from_millis(200));
                std::process::exit(9);
            });
            // The kernel's side of pthread_exit, without its unwinding (which Rust frames refuse):
            // only this thread, the leader, ends.
            // SAFETY: a raw `exit` of the calling thread; nothing on its stack is used again,
            // and the other thread only sleeps and exits the process.
            unsafe { libc::syscall(libc::SYS_exit, 0) };
            unreachable!("SYS_exit returned")
        }
        // A thread exits early; much later the process exits 3.
        "early-thread" => {
            std::thread::spawn(|| {}).join().unwrap();
            std::thread::sleep(Duration::from_millis(100));
            std::process::exit(3);
        }
        other => panic!("unknown mode {other}"),
    }
}

fn main() {
    if let Ok(mode) = std::env::var(MODE_ENV) {
        helper(&mode);
        return;
    }
    threaded_exits_are_recorded_once_as_waitpid_sees_them();
}

fn threaded_exits_are_recorded_once_as_waitpid_sees_them() {
    let Some(dir) = common::pin_dir("threads") else {
        println!("test result: ok. 0 passed; 0 failed; 1 ignored");
        return;
    };
    let mut watch = ExitWatch::open_or_load(&dir).unwrap();
    for (cookie, (mode, want)) in [
        ("nonleader-exit", 7 << 8),
        ("leader-thread-exit", 9 << 8),
        ("early-thread", 3 << 8),
    ]
    .into_iter()
    .enumerate()
    {
        let mut child = Command::new(std::env::current_exe().unwrap())
            .env(MODE_ENV, mode)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .unwrap();
        let mut out = std::io::BufReader::new(child.stdout.take().unwrap());
        let mut line = String::new();
        while !line.contains("ready") {
            line.clear();
            assert!(
                out.read_line(&mut line).unwrap() > 0,
                "{mode}: helper died early"
            );
        }
        watch.track(child.id(), cookie as u64).unwrap();
        child.stdin.take().unwrap().write_all(b"go\n").unwrap();
        let waited = common::reap(&mut child);
        assert_eq!(waited, want, "{mode}: waitpid");
        let exit = watch
            .take(child.id())
            .unwrap()
            .unwrap_or_else(|| panic!("{mode}: not recorded"));
        assert_eq!(
            (exit.wait_status as i32, exit.cookie),
            (waited, cookie as u64),
            "{mode}"
        );
        assert_eq!(
            watch.take(child.id()).unwrap(),
            None,
            "{mode}: recorded once"
        );
    }
    assert_eq!(watch.stats().unwrap().recorded_total, 3);
    watch.unload().unwrap();
    println!("test threaded_exits_are_recorded_once_as_waitpid_sees_them ... ok");
    println!("test result: ok. 1 passed; 0 failed; 0 ignored");
}
