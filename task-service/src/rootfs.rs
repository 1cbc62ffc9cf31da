//! The rootfs mounts containerd sends in `Create` (its snapshotter's view of the image, usually
//! one `overlay` or `bind` mount), mounted on `<bundle>/rootfs` before the runtime runs and
//! unmounted when the container is deleted.

use crate::api::containerd::types::Mount;
use rustix::mount::{MountFlags, UnmountFlags};
use std::path::{Path, PathBuf};

/// A rootfs mount that cannot be made; the message names the mount and the reason.
///
/// ```
/// use task_service::api::containerd::types::Mount;
/// let bad = Mount { r#type: "overlay".into(), source: "overlay".into(), target: "/etc".into(), options: vec![] };
/// let err = task_service::rootfs::check(&[bad]).unwrap_err();
/// assert!(err.to_string().contains("target"), "{err}");
/// ```
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum RootfsError {
    /// The request's mounts cannot be honoured as given.
    #[error("rootfs mount {index} ({kind} from {from:?}): {problem}")]
    Invalid {
        /// Its position in the request.
        index: usize,
        /// Its type.
        kind: String,
        /// Its source.
        from: String,
        /// What is wrong.
        problem: &'static str,
    },
    /// The kernel refused a mount.
    #[error("mounting {kind} from {from:?} on {target}: {error}")]
    Mount {
        /// Its type.
        kind: String,
        /// Its source.
        from: String,
        /// Where.
        target: PathBuf,
        /// The OS error.
        error: std::io::Error,
    },
}

/// Checks the mounts before anything touches the disk: each needs a type and a source, and
/// mounts on the bundle's rootfs itself (an empty `target`), as containerd sends them.
pub fn check(mounts: &[Mount]) -> Result<(), RootfsError> {
    for (index, m) in mounts.iter().enumerate() {
        let invalid = |problem| RootfsError::Invalid {
            index,
            kind: m.r#type.clone(),
            from: m.source.clone(),
            problem,
        };
        if m.r#type.is_empty() {
            return Err(invalid("has no type"));
        }
        if m.source.is_empty() {
            return Err(invalid("has no source"));
        }
        if !m.target.is_empty() {
            return Err(invalid(
                "has a target; rootfs mounts go on the bundle's rootfs itself",
            ));
        }
        let nul = |t: &str| t.contains('\0');
        if nul(&m.r#type) || nul(&m.source) || m.options.iter().any(|o| nul(o)) {
            return Err(invalid("contains a NUL byte"));
        }
    }
    Ok(())
}

/// Mounts `mounts` in order on `<bundle>/rootfs` (created if missing). On failure, whatever
/// was mounted is unmounted again.
///
/// ```no_run
/// use task_service::api::containerd::types::Mount;
/// let overlay = Mount {
///     r#type: "overlay".into(),
///     source: "overlay".into(),
///     target: String::new(),
///     options: vec!["lowerdir=/l".into(), "upperdir=/u".into(), "workdir=/w".into()],
/// };
/// task_service::rootfs::mount_all(std::path::Path::new("/run/b/web"), &[overlay])?;
/// # Ok::<(), task_service::rootfs::RootfsError>(())
/// ```
pub fn mount_all(bundle: &Path, mounts: &[Mount]) -> Result<(), RootfsError> {
    check(mounts)?;
    let target = bundle.join("rootfs");
    let _ = std::fs::create_dir_all(&target);
    for (done, m) in mounts.iter().enumerate() {
        if let Err(error) = mount_one(&target, m) {
            for _ in 0..done {
                let _ = rustix::mount::unmount(&target, UnmountFlags::DETACH);
            }
            return Err(RootfsError::Mount {
                kind: m.r#type.clone(),
                from: m.source.clone(),
                target,
                error,
            });
        }
    }
    Ok(())
}

fn mount_one(target: &Path, m: &Mount) -> std::io::Result<()> {
    let mut flags = MountFlags::empty();
    let mut data = Vec::new();
    let mut bind = m.r#type == "bind" || m.r#type == "rbind";
    for option in &m.options {
        match option.as_str() {
            "ro" => flags |= MountFlags::RDONLY,
            "rw" => {}
            "bind" => bind = true,
            "rbind" => {
                bind = true;
                flags |= MountFlags::REC;
            }
            "nosuid" => flags |= MountFlags::NOSUID,
            "nodev" => flags |= MountFlags::NODEV,
            "noexec" => flags |= MountFlags::NOEXEC,
            other => data.push(other),
        }
    }
    if m.r#type == "rbind" {
        flags |= MountFlags::REC;
    }
    if bind {
        if flags.contains(MountFlags::REC) {
            rustix::mount::mount_bind_recursive(&m.source, target)?;
        } else {
            rustix::mount::mount_bind(&m.source, target)?;
        }
        if flags.contains(MountFlags::RDONLY) {
            rustix::mount::mount_remount(target, MountFlags::BIND | MountFlags::RDONLY, "")?;
        }
        return Ok(());
    }
    let data = std::ffi::CString::new(data.join(",")).map_err(std::io::Error::other)?;
    let data = (!data.is_empty()).then_some(data.as_c_str());
    rustix::mount::mount(m.source.as_str(), target, m.r#type.as_str(), flags, data)?;
    Ok(())
}

/// Unmounts `<bundle>/rootfs` until nothing is mounted there (lazily, so a process still
/// holding a file cannot make the delete fail). A rootfs that is not a mount point is fine.
pub fn unmount_all(bundle: &Path) {
    let target = bundle.join("rootfs");
    for _ in 0..8 {
        if rustix::mount::unmount(&target, UnmountFlags::DETACH).is_err() {
            break;
        }
    }
}
