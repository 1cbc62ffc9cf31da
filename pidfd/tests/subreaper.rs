//! The arrangement the crate docs recommend for orphans on machines whose PID 1 does not reap:
//! a supervisor that is a child subreaper inherits its descendants' orphans and reaps them.

// Children here are reaped through their pidfd (`PidFd::wait`), which clippy cannot see.
#![allow(clippy::zombie_processes)]

use futures_lite::future;
use shimless_pidfd::{Error, ExitStatus, PidFd};
use std::io::BufRead;
use std::process::{Command, Stdio};

#[test]
fn an_orphaned_grandchild_is_reparented_to_the_subreaper_and_reaped() {
    rustix::process::set_child_subreaper(rustix::process::Pid::from_raw(1)).unwrap();

    // The shell starts the grandchild in the background and exits at once, orphaning it.
    let mut outer = Command::new("sh")
        .args(["-c", "sh -c 'sleep 0.3; exit 9' & echo $!"])
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut line = String::new();
    std::io::BufReader::new(outer.stdout.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    assert!(outer.wait().unwrap().success());

    let orphan = PidFd::open(line.trim().parse().unwrap()).unwrap();
    future::block_on(orphan.exited()).unwrap();
    // Re-parented to us, so we may reap it, and the kernel then also keeps its status.
    assert_eq!(orphan.wait().unwrap(), ExitStatus::Exited(9));
    match orphan.exit_info() {
        Ok(status) => assert_eq!(status, ExitStatus::Exited(9)),
        Err(Error::Unsupported { .. }) => {}
        Err(e) => panic!("{e}"),
    }
}
