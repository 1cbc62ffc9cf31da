//! Shared by exitwatch's test binaries.
#![allow(dead_code)]

use integration::{Need, require};
use std::path::PathBuf;

/// A unique pin directory on bpffs for one test, or `None` (skip) without root/BTF.
pub fn pin_dir(test: &str) -> Option<PathBuf> {
    require(&[Need::Root, Need::Btf, Need::Bpffs])?;
    Some(PathBuf::from(format!(
        "/sys/fs/bpf/exitwatch-test-{test}-{}",
        std::process::id()
    )))
}

/// Reaps a child spawned with `std::process::Command` and returns its raw wait status.
pub fn reap(child: &mut std::process::Child) -> i32 {
    use std::os::unix::process::ExitStatusExt;
    child.wait().unwrap().into_raw()
}

/// Whether the running kernel is older than `major.minor`.
pub fn kernel_older_than(major: u32, minor: u32) -> bool {
    let release = std::fs::read_to_string("/proc/sys/kernel/osrelease").unwrap();
    let mut parts = release
        .split(|c: char| !c.is_ascii_digit())
        .filter_map(|p| p.parse::<u32>().ok());
    (parts.next().unwrap_or(0), parts.next().unwrap_or(0)) < (major, minor)
}
