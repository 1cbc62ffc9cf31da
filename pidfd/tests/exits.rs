//! Exit statuses of real processes, seen through every source the crate has.

// Children here are reaped through their pidfd (`PidFd::wait`), which clippy cannot see.
#![allow(clippy::zombie_processes)]

use shimless_pidfd::{Error, ExitStatus, PidFd, Signal};
use std::process::{Command, Stdio};

fn sh(script: &str) -> std::process::Child {
    Command::new("sh")
        .args(["-c", script])
        .stdin(Stdio::null())
        .spawn()
        .expect("spawn sh")
}

#[test]
fn every_exit_code_from_0_to_255_is_reported_exactly() {
    for code in 0..=255u8 {
        let child = sh(&format!("exit {code}"));
        let pidfd = PidFd::from_child(&child).unwrap();
        assert_eq!(
            pidfd.wait().unwrap(),
            ExitStatus::Exited(code),
            "exit {code}"
        );
        assert_eq!(pidfd.wait().unwrap().code_for_containerd(), u32::from(code));
    }
}

#[test]
fn sigterm_and_sigkill_are_reported_as_signals_with_the_containerd_code() {
    for (signal, containerd) in [(Signal::TERM, 143), (Signal::KILL, 137)] {
        let child = sh("sleep 60");
        let pidfd = PidFd::from_child(&child).unwrap();
        pidfd.send_signal(signal).unwrap();
        let status = pidfd.wait().unwrap();
        let raw = signal.as_raw() as u8;
        assert_eq!(
            status,
            ExitStatus::Signaled {
                signal: raw,
                core_dumped: false
            }
        );
        assert_eq!(status.code_for_containerd(), containerd);
    }
}

#[test]
fn sigsegv_reports_the_core_flag_the_kernel_reports() {
    // With RLIMIT_CORE unlimited and a writable cwd, a kernel whose core_pattern is non-empty
    // dumps core; with RLIMIT_CORE 0 it never does. Check both against the kernel's word.
    let dir = tempfile::tempdir().unwrap();
    let pattern = std::fs::read_to_string("/proc/sys/kernel/core_pattern").unwrap_or_default();
    for (limit, expect_core) in [("0", false), ("unlimited", !pattern.trim().is_empty())] {
        let child = Command::new("sh")
            .args(["-c", &format!("ulimit -c {limit}; kill -SEGV $$")])
            .current_dir(dir.path())
            .spawn()
            .unwrap();
        let pidfd = PidFd::from_child(&child).unwrap();
        let status = pidfd.wait().unwrap();
        assert_eq!(
            status,
            ExitStatus::Signaled {
                signal: 11,
                core_dumped: expect_core
            },
            "{limit}"
        );
        assert_eq!(status.code_for_containerd(), 139);
        if let Ok(info) = pidfd.exit_info() {
            assert_eq!(
                info, status,
                "PIDFD_INFO_EXIT agrees with waitid for ulimit -c {limit}"
            );
        }
    }
}

#[test]
fn exit_info_agrees_with_wait_for_the_same_process() {
    let cases: [(&str, ExitStatus); 4] = [
        ("exit 0", ExitStatus::Exited(0)),
        ("exit 42", ExitStatus::Exited(42)),
        (
            "kill -TERM $$",
            ExitStatus::Signaled {
                signal: 15,
                core_dumped: false,
            },
        ),
        (
            "kill -KILL $$",
            ExitStatus::Signaled {
                signal: 9,
                core_dumped: false,
            },
        ),
    ];
    for (script, expected) in cases {
        let child = sh(script);
        let pidfd = PidFd::from_child(&child).unwrap();
        futures_lite::future::block_on(pidfd.exited()).unwrap();
        // Exited but not reaped: the kernel has no status to give a non-parent yet.
        match pidfd.exit_info() {
            Err(Error::NotYetReaped { pid }) => assert_eq!(pid, pidfd.pid()),
            Err(Error::Unsupported { .. }) => {}
            other => panic!("before the reap: {other:?}"),
        }
        let waited = pidfd.wait().unwrap();
        assert_eq!(waited, expected, "{script}");
        match pidfd.exit_info() {
            Ok(info) => assert_eq!(info, waited, "{script}"),
            Err(Error::Unsupported {
                feature,
                min_kernel,
            }) => {
                assert_eq!((feature, min_kernel), ("PIDFD_INFO_EXIT", "6.15"));
                assert!(
                    kernel_older_than(6, 15),
                    "6.15+ must support PIDFD_INFO_EXIT"
                );
            }
            Err(e) => panic!("after the reap: {e}"),
        }
    }
}

#[test]
fn exit_info_of_a_live_process_is_not_yet_reaped() {
    let child = sh("sleep 60");
    let pidfd = PidFd::from_child(&child).unwrap();
    assert!(matches!(
        pidfd.exit_info(),
        Err(Error::NotYetReaped { .. } | Error::Unsupported { .. })
    ));
    pidfd.send_signal(Signal::KILL).unwrap();
    pidfd.wait().unwrap();
}

#[test]
fn a_grandchild_reaped_by_its_own_parent_is_seen_through_exit_info() {
    // The outer shell starts the target in the background, prints its PID and reaps it; the
    // target is not our child, so only exited() and exit_info() can tell us about it.
    let mut outer = Command::new("sh")
        .args([
            "-c",
            "sh -c 'sleep 0.3; exit 7' & echo $!; wait $!; sleep 0.2",
        ])
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut line = String::new();
    std::io::BufRead::read_line(
        &mut std::io::BufReader::new(outer.stdout.take().unwrap()),
        &mut line,
    )
    .unwrap();
    let target = PidFd::open(line.trim().parse().unwrap()).unwrap();
    assert!(matches!(target.try_wait(), Err(Error::NotChild { .. })));

    futures_lite::future::block_on(target.exited()).unwrap();
    assert!(target.has_exited());
    assert!(matches!(
        target.send_signal(Signal::TERM),
        Err(Error::Gone { .. })
    ));

    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    let status = loop {
        match target.exit_info() {
            Err(Error::NotYetReaped { .. }) if std::time::Instant::now() < deadline => {
                std::thread::sleep(std::time::Duration::from_millis(5))
            }
            other => break other,
        }
    };
    match status {
        Ok(status) => assert_eq!(status, ExitStatus::Exited(7)),
        Err(Error::Unsupported { .. }) => assert!(kernel_older_than(6, 15)),
        Err(e) => panic!("{e}"),
    }
    assert!(outer.wait().unwrap().success());
}

#[test]
fn identity_survives_serialization_and_refuses_a_dead_process() {
    let child = sh("sleep 60");
    let pidfd = PidFd::from_child(&child).unwrap();
    let identity = pidfd.identity().unwrap();
    assert_eq!(identity.pid, child.id() as i32);
    let stored: shimless_pidfd::ProcessIdentity =
        serde_json::from_str(&serde_json::to_string(&identity).unwrap()).unwrap();
    let reopened = PidFd::reopen(&stored).unwrap();
    assert_eq!(reopened.identity().unwrap(), identity);

    // A different start time is a different process, whatever the PID says.
    let impostor = shimless_pidfd::ProcessIdentity {
        start_time: identity.start_time + 1,
        ..identity
    };
    assert!(matches!(PidFd::reopen(&impostor), Err(Error::Gone { pid }) if pid == identity.pid));

    reopened.send_signal(Signal::KILL).unwrap();
    // A zombie still owns its PID: its identity is still readable, and still the same.
    futures_lite::future::block_on(pidfd.exited()).unwrap();
    assert_eq!(pidfd.identity().unwrap(), identity);
    pidfd.wait().unwrap();
    // Reaped: the PID is free and the identity names nothing.
    assert!(matches!(pidfd.identity(), Err(Error::Gone { .. })));
    assert!(matches!(PidFd::reopen(&identity), Err(Error::Gone { .. })));
}

#[test]
fn bad_pids_are_refused_with_a_typed_error() {
    for pid in [0, -1, i32::MIN] {
        assert!(matches!(PidFd::open(pid), Err(Error::InvalidPid { pid: p }) if p == pid));
    }
    // pid_max is at most 2^22: this PID cannot exist.
    assert!(matches!(
        PidFd::open(i32::MAX),
        Err(Error::Gone { pid: i32::MAX })
    ));
    let impossible = shimless_pidfd::ProcessIdentity {
        pid: -5,
        start_time: 1,
    };
    assert!(matches!(
        PidFd::reopen(&impossible),
        Err(Error::InvalidPid { pid: -5 })
    ));
}

#[test]
fn waiting_on_a_non_child_is_refused() {
    let me = PidFd::open(std::process::id() as i32).unwrap();
    assert!(matches!(me.try_wait(), Err(Error::NotChild { .. })));
    let init = PidFd::open(1).unwrap();
    assert!(matches!(init.wait(), Err(Error::NotChild { pid: 1 })));
}

#[test]
fn exited_resolves_under_tokio_and_smol_alike() {
    let child = sh("sleep 0.1; exit 5");
    let pidfd = PidFd::from_child(&child).unwrap();
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(pidfd.exited()).unwrap();
    assert_eq!(pidfd.wait().unwrap(), ExitStatus::Exited(5));

    let child = sh("sleep 0.1; exit 6");
    let pidfd = PidFd::from_child(&child).unwrap();
    smol::block_on(pidfd.exited()).unwrap();
    assert_eq!(pidfd.wait().unwrap(), ExitStatus::Exited(6));
}

#[test]
fn two_exited_futures_on_one_handle_both_resolve() {
    let child = sh("sleep 0.2");
    let pidfd = PidFd::from_child(&child).unwrap();
    let (a, b) = smol::block_on(futures_lite::future::zip(pidfd.exited(), pidfd.exited()));
    a.unwrap();
    b.unwrap();
    assert!(pidfd.wait().unwrap().success());
}

fn kernel_older_than(major: u32, minor: u32) -> bool {
    let release = rustix::system::uname()
        .release()
        .to_string_lossy()
        .into_owned();
    let mut parts = release
        .split(|c: char| !c.is_ascii_digit())
        .filter_map(|p| p.parse::<u32>().ok());
    let (have_major, have_minor) = (parts.next().unwrap_or(0), parts.next().unwrap_or(0));
    (have_major, have_minor) < (major, minor)
}
