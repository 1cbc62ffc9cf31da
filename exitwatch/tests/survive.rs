//! The point of exitwatch: exits recorded while the loader is dead are read by the next one.

mod common;

use exitwatch::{ExitStatus, ExitWatch};
use std::io::{BufRead, Write};
use std::process::{Command, Stdio};

const LOADER_ENV: &str = "EXITWATCH_TEST_LOADER";

/// In loader mode (re-executed by the test): load, track the PIDs given, say so, and wait to be
/// killed.
#[test]
fn exit_codes_survive_the_loaders_sigkill() {
    if let Ok(spec) = std::env::var(LOADER_ENV) {
        let mut parts = spec.split(',');
        let dir = parts.next().unwrap();
        let mut watch = ExitWatch::open_or_load(dir).unwrap();
        for (i, pid) in parts.enumerate() {
            watch.track(pid.parse().unwrap(), 100 + i as u64).unwrap();
        }
        println!("tracking");
        std::io::stdout().flush().unwrap();
        std::thread::sleep(std::time::Duration::from_secs(600));
        return;
    }
    let Some(dir) = common::pin_dir("survive") else {
        return;
    };

    // Two targets that wait: one exits 42 when its stdin closes, one waits for SIGTERM.
    let mut exits_42 = Command::new("sh")
        .args(["-c", "read x; exit 42"])
        .stdin(Stdio::piped())
        .spawn()
        .unwrap();
    let mut sigterm = Command::new("sleep").arg("600").spawn().unwrap();
    let mut loader = Command::new(std::env::current_exe().unwrap())
        .args([
            "--exact",
            "exit_codes_survive_the_loaders_sigkill",
            "--nocapture",
        ])
        .env(
            LOADER_ENV,
            format!("{},{},{}", dir.display(), exits_42.id(), sigterm.id()),
        )
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut ready = String::new();
    let mut out = std::io::BufReader::new(loader.stdout.take().unwrap());
    while !ready.contains("tracking") {
        ready.clear();
        assert!(
            out.read_line(&mut ready).unwrap() > 0,
            "the loader died before tracking"
        );
    }
    loader.kill().unwrap(); // SIGKILL
    loader.wait().unwrap();

    // Both exit while no loader is alive.
    drop(exits_42.stdin.take());
    assert_eq!(common::reap(&mut exits_42), 42 << 8);
    rustix::process::kill_process(
        rustix::process::Pid::from_raw(sigterm.id() as i32).unwrap(),
        rustix::process::Signal::TERM,
    )
    .unwrap();
    assert_eq!(common::reap(&mut sigterm), 15);

    let mut watch = ExitWatch::open_or_load(&dir).unwrap();
    let a = watch
        .take(exits_42.id())
        .unwrap()
        .expect("exit 42 recorded");
    assert_eq!(
        (a.status, a.cookie, a.wait_status),
        (ExitStatus::Exited(42), 100, 42 << 8)
    );
    let b = watch.take(sigterm.id()).unwrap().expect("SIGTERM recorded");
    assert_eq!(
        (b.status, b.cookie),
        (
            ExitStatus::Signaled {
                signal: 15,
                core_dumped: false
            },
            101
        )
    );
    assert_eq!(b.status.code_for_containerd(), 143);
    assert!(b.exited_after_boot > b.started_after_boot);
    assert_eq!(watch.take(sigterm.id()).unwrap(), None, "taken once");
    watch.unload().unwrap();
    assert!(!dir.exists(), "unload removes the pins");
}

#[test]
fn an_untracked_process_is_never_recorded_and_untrack_stops_recording() {
    let Some(dir) = common::pin_dir("untracked") else {
        return;
    };
    let mut watch = ExitWatch::open_or_load(&dir).unwrap();
    let mut untracked = Command::new("true").spawn().unwrap();
    common::reap(&mut untracked);
    let mut untracked_later = Command::new("sleep").arg("0.2").spawn().unwrap();
    watch.track(untracked_later.id(), 9).unwrap();
    assert!(watch.untrack(untracked_later.id()).unwrap());
    assert!(!watch.untrack(untracked_later.id()).unwrap());
    common::reap(&mut untracked_later);
    assert_eq!(watch.take(untracked.id()).unwrap(), None);
    assert_eq!(watch.take(untracked_later.id()).unwrap(), None);
    let stats = watch.stats().unwrap();
    assert_eq!(
        (stats.tracked, stats.recorded, stats.capacity),
        (0, 0, exitwatch::CAPACITY)
    );
    // A process that is gone cannot be tracked.
    assert!(matches!(
        watch.track(untracked.id(), 1),
        Err(exitwatch::Error::Gone { .. })
    ));
    watch.unload().unwrap();
}
