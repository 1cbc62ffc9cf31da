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
            other => data.push(other.to_string()),
        }
    }
    if m.r#type == "rbind" {
        flags |= MountFlags::REC;
    }
    if bind {
        return mount_bind(&m.source, target, flags);
    }
    let mut chdir = None;
    if m.r#type == "overlay" && data.join(",").len() > PAGE_SIZE {
        let (common, compacted) = compact_lowerdir(&data).ok_or_else(|| too_long(&data))?;
        if compacted.join(",").len() > PAGE_SIZE {
            return Err(too_long(&compacted));
        }
        chdir = Some(common);
        data = compacted;
    }
    let data = std::ffi::CString::new(data.join(",")).map_err(std::io::Error::other)?;
    let (source, kind) = (m.source.clone(), m.r#type.clone());
    let target = target.to_owned();
    let mount = move || {
        let data = (!data.is_empty()).then_some(data.as_c_str());
        rustix::mount::mount(source.as_str(), &target, kind.as_str(), flags, data)
            .map_err(std::io::Error::from)
    };
    match chdir {
        None => mount(),
        Some(dir) => in_directory(&dir, mount),
    }
}

/// A bind mount keeps the flags asked for: a bind ignores them, so they are applied by a
/// remount of the bind (as containerd's mount helper does); without it a `nosuid`, `nodev` or
/// `noexec` rootfs would silently be none of them.
fn mount_bind(source: &str, target: &Path, flags: MountFlags) -> std::io::Result<()> {
    if flags.contains(MountFlags::REC) {
        rustix::mount::mount_bind_recursive(source, target)?;
    } else {
        rustix::mount::mount_bind(source, target)?;
    }
    let kept =
        flags & (MountFlags::RDONLY | MountFlags::NOSUID | MountFlags::NODEV | MountFlags::NOEXEC);
    if !kept.is_empty() {
        rustix::mount::mount_remount(target, MountFlags::BIND | kept, "")?;
    }
    Ok(())
}

/// The kernel takes at most a page of mount options.
const PAGE_SIZE: usize = 4096;

fn too_long(data: &[String]) -> std::io::Error {
    std::io::Error::new(
        std::io::ErrorKind::InvalidInput,
        format!(
            "overlay options are {} bytes, more than a page ({PAGE_SIZE}) even with their \
             lowerdirs made relative to a common parent: use fewer layers",
            data.join(",").len()
        ),
    )
}

/// containerd's mount helper's way with an overlay of many layers (`compactLowerdirOption` in
/// its `mount_linux.go`): the lowerdirs' longest common prefix, cut back to a directory (the
/// snapshots directory: snapshot ids are numbers, so the prefix may end inside one), becomes
/// the working directory of the mount, and each lowerdir is given relative to it. `None` when
/// there is nothing to compact (one lowerdir, no common parent but `/`).
fn compact_lowerdir(options: &[String]) -> Option<(PathBuf, Vec<String>)> {
    let index = options.iter().position(|o| o.starts_with("lowerdir="))?;
    let dirs: Vec<&str> = options[index]["lowerdir=".len()..].split(':').collect();
    if dirs.len() <= 1 {
        return None;
    }
    let mut prefix = dirs[0];
    for dir in &dirs[1..] {
        let common = prefix
            .bytes()
            .zip(dir.bytes())
            .take_while(|(a, b)| a == b)
            .count();
        prefix = &prefix[..common];
    }
    // containerd's `path.Dir`: the parent of what the prefix names, even if it ends in '/'.
    let parent = Path::new(prefix.trim_end_matches('/')).parent()?;
    if parent == Path::new("/") || parent.as_os_str().is_empty() {
        return None;
    }
    let common = format!("{}/", parent.display());
    let relative: Option<Vec<&str>> = dirs
        .iter()
        .map(|d| d.strip_prefix(common.as_str()).filter(|r| !r.is_empty()))
        .collect();
    let mut compacted: Vec<String> = options.to_vec();
    compacted.remove(index);
    compacted.push(format!("lowerdir={}", relative?.join(":")));
    Some((parent.to_owned(), compacted))
}

/// Runs `f` on a thread of its own whose working directory is `dir`, leaving the daemon's
/// unchanged: the thread unshares its file-system attributes first (`CLONE_FS`), as
/// containerd's `mountAt` does, and ends afterwards.
fn in_directory(
    dir: &Path,
    f: impl FnOnce() -> std::io::Result<()> + Send + 'static,
) -> std::io::Result<()> {
    let dir = dir.to_owned();
    std::thread::spawn(move || {
        // SAFETY: CLONE_FS only gives this thread its own root, working directory and umask;
        // it does not touch the descriptor table (CLONE_FILES), which is what makes
        // `unshare` unsafe in general. The thread ends when `f` returns.
        unsafe { rustix::thread::unshare_unsafe(rustix::thread::UnshareFlags::FS) }?;
        rustix::process::chdir(&dir)?;
        f()
    })
    .join()
    .map_err(|_| std::io::Error::other("the mounting thread panicked"))?
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

#[cfg(test)]
mod tests {
    use super::*;

    fn opts(list: &[&str]) -> Vec<String> {
        list.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn lowerdirs_are_made_relative_to_their_common_parent_as_containerd_does() {
        let snapshots = "/var/lib/containerd/io.containerd.snapshotter.v1.overlayfs/snapshots";
        let options = opts(&[
            &format!("lowerdir={snapshots}/12/fs:{snapshots}/1/fs:{snapshots}/10/fs"),
            &format!("upperdir={snapshots}/13/fs"),
            "index=off",
        ]);
        let (dir, compacted) = compact_lowerdir(&options).unwrap();
        assert_eq!(dir, Path::new(snapshots));
        assert_eq!(
            compacted,
            opts(&[
                &format!("upperdir={snapshots}/13/fs"),
                "index=off",
                "lowerdir=12/fs:1/fs:10/fs"
            ])
        );
        // Nothing to gain: one layer, or nothing in common but the root.
        assert!(compact_lowerdir(&opts(&["lowerdir=/a/1"])).is_none());
        assert!(compact_lowerdir(&opts(&["lowerdir=/a/1:/b/2"])).is_none());
    }

    #[test]
    fn an_overlay_of_more_layers_than_a_page_holds_mounts() {
        let Some(()) = integration::require(&[integration::Need::Root]) else {
            return;
        };
        let dir = tempfile::tempdir().unwrap();
        // containerd's layout with a long root: the options are several pages long.
        let snapshots = dir.path().join(format!("{}/snapshots", "r".repeat(120)));
        let mut lowers = Vec::new();
        for n in 1..=60 {
            let fs = snapshots.join(format!("{n}/fs"));
            std::fs::create_dir_all(&fs).unwrap();
            std::fs::write(fs.join(format!("layer{n}")), "").unwrap();
            lowers.push(fs.display().to_string());
        }
        let (upper, work) = (snapshots.join("61/fs"), snapshots.join("61/work"));
        std::fs::create_dir_all(&upper).unwrap();
        std::fs::create_dir_all(&work).unwrap();
        let overlay = Mount {
            r#type: "overlay".into(),
            source: "overlay".into(),
            target: String::new(),
            options: vec![
                format!("lowerdir={}", lowers.join(":")),
                format!("upperdir={}", upper.display()),
                format!("workdir={}", work.display()),
            ],
        };
        assert!(overlay.options.join(",").len() > PAGE_SIZE);
        let bundle = dir.path().join("bundle");
        let cwd = std::env::current_dir().unwrap();
        let mounted = mount_all(&bundle, &[overlay]);
        assert_eq!(
            std::env::current_dir().unwrap(),
            cwd,
            "the daemon's cwd moved"
        );
        let seen = (1..=60)
            .filter(|n| bundle.join(format!("rootfs/layer{n}")).exists())
            .count();
        unmount_all(&bundle);
        mounted.unwrap();
        assert_eq!(seen, 60);
    }

    #[test]
    fn a_bind_mounted_rootfs_keeps_nosuid_nodev_and_noexec() {
        let Some(()) = integration::require(&[integration::Need::Root]) else {
            return;
        };
        let dir = tempfile::tempdir().unwrap();
        let source = dir.path().join("image");
        std::fs::create_dir_all(&source).unwrap();
        let bind = Mount {
            r#type: "bind".into(),
            source: source.display().to_string(),
            target: String::new(),
            options: opts(&["rbind", "nosuid", "nodev", "noexec"]),
        };
        let bundle = dir.path().join("bundle");
        mount_all(&bundle, &[bind]).unwrap();
        let flags = rustix::fs::statvfs(bundle.join("rootfs")).map(|s| s.f_flag);
        unmount_all(&bundle);
        let flags = flags.unwrap();
        use rustix::fs::StatVfsMountFlags as F;
        assert!(
            flags.contains(F::NOSUID | F::NODEV | F::NOEXEC),
            "{flags:?}"
        );
        assert!(!flags.contains(F::RDONLY), "{flags:?}");
    }
}
