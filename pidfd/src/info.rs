//! `PIDFD_GET_INFO` (Linux 6.13+) with `PIDFD_INFO_EXIT` (6.15+): the exit status of a process
//! that is not our child, kept by the kernel for as long as someone holds a pidfd to it.
//!
//! rustix has no wrapper for this ioctl yet, so this module is the crate's one `unsafe` block.

use rustix::fd::AsFd;
use rustix::io::Errno;
use rustix::ioctl::{Updater, ioctl, opcode};
use std::sync::atomic::{AtomicU8, Ordering};

/// `struct pidfd_info` as of Linux 6.15 (`PIDFD_INFO_SIZE_VER0`, 64 bytes). Newer kernels append
/// fields; the ioctl's size argument tells the kernel how much of it we know, and it fills no
/// more than that.
#[repr(C)]
#[derive(Debug, Default, Clone, Copy)]
pub(crate) struct PidfdInfo {
    pub mask: u64,
    pub cgroupid: u64,
    pub pid: u32,
    pub tgid: u32,
    pub ppid: u32,
    pub ruid: u32,
    pub rgid: u32,
    pub euid: u32,
    pub egid: u32,
    pub suid: u32,
    pub sgid: u32,
    pub fsuid: u32,
    pub fsgid: u32,
    /// The raw wait status, valid when `mask` has `PIDFD_INFO_EXIT`.
    pub exit_code: i32,
}

const PIDFS_IOCTL_MAGIC: u8 = 0xff;
const PIDFD_GET_INFO: rustix::ioctl::Opcode =
    opcode::read_write::<PidfdInfo>(PIDFS_IOCTL_MAGIC, 11);
/// The mask bit asking for (and, on return, confirming) the exit status.
pub(crate) const PIDFD_INFO_EXIT: u64 = 1 << 3;

/// What one `PIDFD_GET_INFO` call said.
#[derive(Debug)]
pub(crate) enum Reply {
    /// The process has been reaped; this is its raw wait status.
    Exited(i32),
    /// The process is running, or is a zombie its parent has not reaped yet.
    NotReaped,
    /// The kernel cannot give exit statuses through pidfds.
    Unsupported,
}

// 0 = not probed yet, 1 = the kernel has PIDFD_INFO_EXIT, 2 = it does not.
static SUPPORT: AtomicU8 = AtomicU8::new(0);
const SUPPORTED: u8 = 1;
const UNSUPPORTED: u8 = 2;

/// Asks the kernel for the exit status behind `pidfd`. The answer about kernel support is
/// remembered after the first call that settles it.
pub(crate) fn exit_status(pidfd: impl AsFd) -> Result<Reply, Errno> {
    if SUPPORT.load(Ordering::Relaxed) == UNSUPPORTED {
        return Ok(Reply::Unsupported);
    }
    let mut info = PidfdInfo {
        mask: PIDFD_INFO_EXIT,
        ..PidfdInfo::default()
    };
    // SAFETY: PIDFD_GET_INFO is _IOWR(0xFF, 11, struct pidfd_info); `PidfdInfo` is that struct's
    // first version (64 bytes, #[repr(C)], all plain integers, so any bytes the kernel writes
    // are a valid value), and the opcode encodes exactly its size, so the kernel reads and writes
    // only within `info`, which outlives the call.
    let result = unsafe { ioctl(pidfd, Updater::<PIDFD_GET_INFO, PidfdInfo>::new(&mut info)) };
    match result {
        Ok(()) if info.mask & PIDFD_INFO_EXIT != 0 => {
            SUPPORT.store(SUPPORTED, Ordering::Relaxed);
            Ok(Reply::Exited(info.exit_code))
        }
        Ok(()) => Ok(Reply::NotReaped),
        // Before 6.13 there is no PIDFD_GET_INFO at all.
        Err(Errno::NOTTY | Errno::INVAL) => {
            SUPPORT.store(UNSUPPORTED, Ordering::Relaxed);
            Ok(Reply::Unsupported)
        }
        // 6.13 and 6.14 know the ioctl but keep no exit status: a reaped process is just gone.
        Err(Errno::SRCH) => {
            SUPPORT.store(UNSUPPORTED, Ordering::Relaxed);
            Ok(Reply::Unsupported)
        }
        Err(e) => Err(e),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pidfd_info_has_the_kernels_first_version_size() {
        assert_eq!(std::mem::size_of::<PidfdInfo>(), 64);
        assert_eq!(std::mem::offset_of!(PidfdInfo, exit_code), 60);
    }

    #[test]
    fn opcode_matches_the_kernel_header() {
        // _IOWR(0xFF, 11, 64 bytes) = dir 3 << 30 | size 64 << 16 | type 0xff << 8 | nr 11
        assert_eq!(PIDFD_GET_INFO as u64, 0xc040_ff0b);
    }
}
