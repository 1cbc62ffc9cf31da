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
    let mut watch = ExitWatch::open_or_load_with(&dir, mode).map_err(|e| e.to_string())?;
    let mut child = Command::new("sh")
        .args(["-c", "sleep 0.1; exit 9"])
        .spawn()
        .unwrap();
    watch.track(child.id(), 5).unwrap();
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
