//! Which exit path this kernel gives the program, printed for `scripts/kernel-matrix`: how the
//! last thread is recognized (`group_dead` or `live == 0`) and which attach mode `Auto` takes.

mod common;

use exitwatch::{AttachMode, ExitStatus, ExitWatch};
use std::process::Command;

/// The `sched_process_exit` tracepoint's format, from tracefs (mounted by exitwatch if needed).
fn exit_tracepoint_format() -> String {
    ["/sys/kernel/tracing", "/sys/kernel/debug/tracing"]
        .iter()
        .find_map(|t| {
            std::fs::read_to_string(format!("{t}/events/sched/sched_process_exit/format")).ok()
        })
        .expect("the sched_process_exit tracepoint format in tracefs")
}

/// (major, minor) of the running kernel.
fn kernel_version() -> (u32, u32) {
    let release = std::fs::read_to_string("/proc/sys/kernel/osrelease").unwrap();
    let mut it = release
        .trim()
        .split(|c: char| !c.is_ascii_digit())
        .map(|n| n.parse().unwrap());
    (it.next().unwrap(), it.next().unwrap())
}

/// Loads in `mode` on a fresh pin directory, records one exit, unloads; `Err` names why not.
fn records_in(mode: AttachMode) -> Result<(), String> {
    let dir = common::pin_dir(&format!("path-{mode:?}")).ok_or("skipped")?;
    let mut watch = ExitWatch::open_or_load_with(&dir, mode).map_err(|e| {
        let _ = std::fs::remove_dir_all(&dir);
        e.to_string()
    })?;
    let mut child = Command::new("sh")
        .args(["-c", "read x; exit 9"])
        .stdin(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    watch.track(child.id(), 5).unwrap();
    drop(child.stdin.take());
    common::reap(&mut child);
    let exit = watch.take(child.id()).unwrap().expect("recorded");
    assert_eq!((exit.cookie, exit.status), (5, ExitStatus::Exited(9)));
    watch.unload().unwrap();
    Ok(())
}

#[test]
fn the_exit_path_this_kernel_takes_is_reported() {
    if common::pin_dir("path-probe").is_none() {
        return;
    }
    // Make sure tracefs is there: a first load mounts it when missing.
    records_in(AttachMode::RawTracePoint).expect("raw tracepoints attach on every kernel");
    let group_dead = exit_tracepoint_format().contains("group_dead");
    // The field came with 6.16; before it the program tests signal->live == 0.
    assert_eq!(
        group_dead,
        kernel_version() >= (6, 16),
        "{:?}",
        kernel_version()
    );
    let path = if group_dead {
        "group_dead"
    } else {
        "live == 0"
    };
    println!("exitwatch-exit-path: {path}");
    // Auto tries tp_btf, then the classic tracepoint, then the raw tracepoint.
    let order = [
        (AttachMode::BtfTracePoint, "tp_btf"),
        (AttachMode::TracePoint, "tracepoint"),
        (AttachMode::RawTracePoint, "raw_tp"),
    ];
    let mut auto = None;
    for (mode, name) in order {
        let got = records_in(mode);
        match &got {
            Ok(()) => println!("exitwatch-attach: {name} ok"),
            Err(e) => println!("exitwatch-attach: {name} failed: {e}"),
        }
        if got.is_ok() && auto.is_none() {
            auto = Some(name);
        }
    }
    let auto = auto.expect("one attach mode works");
    println!("exitwatch-auto: {auto}");
}

/// The fallback for a process that is not our child on kernels without `PIDFD_INFO_EXIT`
/// (before 6.15): its parent reaps it, and exitwatch still has its status (where the kernel has
/// `PIDFD_INFO_EXIT`, both agree).
#[test]
fn a_grandchild_reaped_by_its_own_parent_has_its_status_recorded() {
    use std::io::BufRead;
    let Some(dir) = common::pin_dir("grandchild") else {
        return;
    };
    let mut watch = ExitWatch::open_or_load(&dir).unwrap();
    let mut outer = Command::new("sh")
        // The grandchild exits when our end of the pipe closes, after it is tracked.
        .args([
            "-c",
            "exec 3<&0; sh -c 'read x <&3; exit 7' & echo $!; wait $!; exit 0",
        ])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let mut line = String::new();
    std::io::BufReader::new(outer.stdout.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    let pid: u32 = line.trim().parse().unwrap();
    let target = pidfd::PidFd::open(pid as i32).unwrap();
    watch.track(pid, 21).unwrap();
    drop(outer.stdin.take());
    assert_eq!(common::reap(&mut outer), 0, "the outer shell reaped it");
    let exit = watch.take(pid).unwrap().expect("recorded by exitwatch");
    assert_eq!((exit.cookie, exit.status), (21, ExitStatus::Exited(7)));
    match target.exit_info() {
        Ok(status) => {
            assert_eq!(status, exit.status);
            println!("pidfd-info-exit: yes, agrees with exitwatch");
        }
        Err(pidfd::Error::Unsupported { .. }) => {
            assert!(kernel_version() < (6, 15), "{:?}", kernel_version());
            println!("pidfd-info-exit: no, exitwatch gave the status");
        }
        Err(e) => panic!("{e}"),
    }
    watch.unload().unwrap();
}
