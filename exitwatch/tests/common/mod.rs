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
