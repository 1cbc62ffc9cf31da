//! A PID given to a new process is never mistaken for the old one.
//!
//! To reuse a PID on purpose and without racing the rest of the machine, the scenario runs in a
//! fresh PID namespace (`unshare --pid --fork --mount-proc`, needs root), where this test binary
//! is PID 1 and nobody else allocates PIDs: kill and reap a process, set `ns_last_pid` so the
//! next process gets the same PID, and check what the old handle and identity do.

// Children here are reaped through their pidfd (`PidFd::wait`), which clippy cannot see.
#![allow(clippy::zombie_processes)]

use integration::{Need, require};
use shimless_pidfd::{Error, ExitStatus, PidFd, Signal};
use std::process::Command;
use std::time::Duration;

const SCENARIO_ENV: &str = "PIDFD_TEST_REUSE_SCENARIO";
const TEST_NAME: &str = "a_reused_pid_is_refused_by_reopen_and_send_signal";

#[test]
fn a_reused_pid_is_refused_by_reopen_and_send_signal() {
    if std::env::var_os(SCENARIO_ENV).is_some() {
        scenario_in_new_pid_namespace();
        return;
    }
    let Some(()) = require(&[Need::Root, Need::Program("unshare")]) else {
        return;
    };
    let out = Command::new("unshare")
        .args(["--pid", "--fork", "--mount-proc"])
        .arg(std::env::current_exe().unwrap())
        .args(["--exact", TEST_NAME, "--nocapture", "--test-threads=1"])
        .env(SCENARIO_ENV, "1")
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "scenario failed:\n{stdout}\n{stderr}");
    assert!(
        stdout.contains("scenario: PID reused"),
        "scenario did not run:\n{stdout}\n{stderr}"
    );
}

fn scenario_in_new_pid_namespace() {
    assert_eq!(
        std::process::id(),
        1,
        "the scenario must be PID 1 of its own namespace"
    );

    let old = Command::new("sleep").arg("60").spawn().unwrap();
    let old_pid = old.id() as i32;
    let old_fd = PidFd::from_child(&old).unwrap();
    let old_identity = old_fd.identity().unwrap();
    old_fd.send_signal(Signal::KILL).unwrap();
    assert_eq!(
        old_fd.wait().unwrap(),
        ExitStatus::Signaled {
            signal: 9,
            core_dumped: false
        }
    );

    // Start times count clock ticks (usually 10 ms): let one pass so the two differ.
    std::thread::sleep(Duration::from_millis(30));
    std::fs::write("/proc/sys/kernel/ns_last_pid", format!("{}", old_pid - 1)).unwrap();
    let new = Command::new("sleep").arg("60").spawn().unwrap();
    assert_eq!(
        new.id() as i32,
        old_pid,
        "ns_last_pid must hand out the old PID again"
    );
    let new_fd = PidFd::from_child(&new).unwrap();

    // The stored identity names the dead process, not the one that now has its PID.
    assert!(matches!(PidFd::reopen(&old_identity), Err(Error::Gone { pid }) if pid == old_pid));
    // The old handle still refers to the dead process: no signal reaches the new one.
    assert!(matches!(
        old_fd.send_signal(Signal::KILL),
        Err(Error::Gone { .. })
    ));
    assert!(matches!(old_fd.identity(), Err(Error::Gone { .. })));
    std::thread::sleep(Duration::from_millis(50));
    assert_eq!(
        new_fd.try_wait().unwrap(),
        None,
        "the new process must be untouched"
    );

    // The new process has its own identity, which does reopen.
    let new_identity = new_fd.identity().unwrap();
    assert_ne!(new_identity, old_identity);
    assert_eq!(PidFd::reopen(&new_identity).unwrap().pid(), old_pid);

    new_fd.send_signal(Signal::TERM).unwrap();
    assert_eq!(
        new_fd.wait().unwrap(),
        ExitStatus::Signaled {
            signal: 15,
            core_dumped: false
        }
    );
    println!("scenario: PID reused ({old_pid}) and refused");
}
