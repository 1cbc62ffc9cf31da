//! Gating for tests that need root, eBPF or outside programs.

use std::fmt;
use std::path::{Path, PathBuf};

/// The environment variable that turns every skip into a failure (CI sets it to `1`).
pub const REQUIRE_PRIVILEGED: &str = "SHIMLESS_REQUIRE_PRIVILEGED";

/// Something a test needs from the machine.
///
/// ```
/// use integration::Need;
/// assert_eq!(Need::Program("runc").to_string(), "the `runc` program on PATH");
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Need {
    /// Effective uid 0.
    Root,
    /// Kernel BTF at `/sys/kernel/btf/vmlinux` (CO-RE eBPF programs need it).
    Btf,
    /// A mounted bpffs at `/sys/fs/bpf`, or root so that the test can mount it.
    Bpffs,
    /// An executable of this name on `PATH` (`runc`, `crun`, `containerd`, `clang`, ...).
    Program(&'static str),
    /// A file that must exist, such as `/bin/busybox`.
    File(&'static str),
    /// A kernel image for [`crate::vm`]: `$SHIMLESS_VM_KERNEL`, else the one
    /// `scripts/install-deps` puts at `/var/cache/shimless/kernels/vmlinuz-bookworm`.
    VmKernel,
}

impl fmt::Display for Need {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Need::Root => f.write_str("root (euid 0)"),
            Need::Btf => f.write_str("kernel BTF at /sys/kernel/btf/vmlinux"),
            Need::Bpffs => f.write_str("bpffs at /sys/fs/bpf (or root to mount it)"),
            Need::Program(name) => write!(f, "the `{name}` program on PATH"),
            Need::File(path) => write!(f, "the file {path}"),
            Need::VmKernel => write!(
                f,
                "a kernel image for VMs at ${} or {} (scripts/install-deps fetches it)",
                crate::vm::KERNEL_ENV,
                crate::vm::DEFAULT_KERNEL
            ),
        }
    }
}

/// The needs a test had that the machine does not meet.
///
/// ```
/// use integration::{Need, Unmet};
/// let unmet = Unmet(vec![Need::File("/no/such/file")]);
/// assert_eq!(unmet.to_string(), "missing: the file /no/such/file");
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Unmet(pub Vec<Need>);

impl fmt::Display for Unmet {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("missing: ")?;
        for (i, need) in self.0.iter().enumerate() {
            if i > 0 {
                f.write_str(", ")?;
            }
            write!(f, "{need}")?;
        }
        Ok(())
    }
}

impl Need {
    /// Whether this machine meets the need right now.
    ///
    /// ```
    /// use integration::Need;
    /// assert!(Need::File("/").is_met());
    /// assert!(!Need::Program("surely-not-a-program-here").is_met());
    /// ```
    pub fn is_met(&self) -> bool {
        match self {
            Need::Root => rustix::process::geteuid().is_root(),
            Need::Btf => Path::new("/sys/kernel/btf/vmlinux").exists(),
            Need::Bpffs => {
                is_bpffs(Path::new("/sys/fs/bpf")) || rustix::process::geteuid().is_root()
            }
            Need::Program(name) => find_program(name).is_some(),
            Need::File(path) => Path::new(path).exists(),
            Need::VmKernel => crate::vm::kernel().is_file(),
        }
    }
}

/// Finds `name` on `PATH` as an executable file.
///
/// ```
/// assert!(integration::find_program("sh").is_some());
/// ```
pub fn find_program(name: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .map(|dir| dir.join(name))
        .find(|candidate| {
            rustix::fs::access(candidate, rustix::fs::Access::EXEC_OK).is_ok()
                && candidate.is_file()
        })
}

fn is_bpffs(path: &Path) -> bool {
    // BPF_FS_MAGIC from include/uapi/linux/magic.h
    const BPF_FS_MAGIC: u64 = 0xcafe_4a11;
    rustix::fs::statfs(path).is_ok_and(|s| s.f_type as u64 == BPF_FS_MAGIC)
}

/// Whether `SHIMLESS_REQUIRE_PRIVILEGED` asks that no test be skipped.
///
/// ```
/// // true only when the variable is set to something other than "", "0" or "false"
/// let _ = integration::require_privileged_env();
/// ```
pub fn require_privileged_env() -> bool {
    std::env::var(REQUIRE_PRIVILEGED).is_ok_and(|v| !matches!(v.as_str(), "" | "0" | "false"))
}

/// Checks a test's needs: `Some(())` when all are met; otherwise prints a skip line naming the
/// test and what is missing and returns `None` — or, under `SHIMLESS_REQUIRE_PRIVILEGED=1`,
/// panics so that the skip fails the run.
///
/// The test's name is taken from the current thread's name, which the libtest harness sets to
/// the test path.
///
/// ```
/// use integration::{require, Need};
/// // "/" always exists, so this never skips.
/// assert!(require(&[Need::File("/")]).is_some());
/// ```
#[must_use = "return from the test when this is None"]
pub fn require(needs: &[Need]) -> Option<()> {
    let unmet: Vec<Need> = needs.iter().copied().filter(|n| !n.is_met()).collect();
    if unmet.is_empty() {
        return Some(());
    }
    let unmet = Unmet(unmet);
    let thread = std::thread::current();
    let test = thread.name().unwrap_or("<unnamed test>");
    if require_privileged_env() {
        panic!("{test}: cannot run ({unmet}) and {REQUIRE_PRIVILEGED}=1 forbids skipping");
    }
    eprintln!("SKIP {test}: {unmet} (set {REQUIRE_PRIVILEGED}=1 to make this a failure)");
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn met_needs_do_not_skip() {
        assert_eq!(require(&[Need::File("/"), Need::Program("sh")]), Some(()));
    }

    #[test]
    fn unmet_needs_are_all_named() {
        let needs = [
            Need::File("/"),
            Need::File("/no/such"),
            Need::Program("no-such-prog"),
        ];
        let unmet: Vec<Need> = needs.iter().copied().filter(|n| !n.is_met()).collect();
        assert_eq!(
            Unmet(unmet).to_string(),
            "missing: the file /no/such, the `no-such-prog` program on PATH"
        );
    }

    #[test]
    fn a_missing_need_skips_or_fails_as_the_environment_says() {
        let outcome = std::panic::catch_unwind(|| require(&[Need::File("/no/such/file")]));
        if require_privileged_env() {
            let panic = outcome.expect_err("must fail when skipping is forbidden");
            let msg = panic.downcast_ref::<String>().expect("string panic");
            assert!(msg.contains("/no/such/file"), "{msg}");
        } else {
            assert_eq!(outcome.expect("must not panic"), None);
        }
    }
}
