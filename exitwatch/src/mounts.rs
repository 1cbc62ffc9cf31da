//! bpffs, mounted when missing.

use crate::error::Error;
use std::path::Path;

const BPF_FS_MAGIC: u64 = 0xcafe_4a11;

/// Makes sure `pin_dir` is on a bpffs, mounting one at `/sys/fs/bpf` when that is where the
/// pins go and nothing is mounted there.
pub(crate) fn ensure_bpffs(pin_dir: &Path) -> Result<(), Error> {
    let on_bpffs = |p: &Path| rustix::fs::statfs(p).is_ok_and(|s| s.f_type as u64 == BPF_FS_MAGIC);
    // The deepest existing ancestor decides.
    let existing = pin_dir
        .ancestors()
        .find(|p| p.exists())
        .unwrap_or(Path::new("/"));
    if on_bpffs(existing) {
        return Ok(());
    }
    let root = Path::new("/sys/fs/bpf");
    if pin_dir.starts_with(root) && existing == root || existing == Path::new("/sys/fs") {
        rustix::mount::mount("bpf", root, "bpf", rustix::mount::MountFlags::empty(), None)
            .map_err(|e| Error::BpffsNotMounted {
                path: pin_dir.into(),
                reason: e.to_string(),
            })?;
        if on_bpffs(root) {
            return Ok(());
        }
    }
    Err(Error::BpffsNotMounted {
        path: pin_dir.into(),
        reason: "not under a bpffs mount".into(),
    })
}
