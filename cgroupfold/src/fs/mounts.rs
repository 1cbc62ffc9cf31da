//! Where the cgroup hierarchies are mounted, from `/proc/self/mountinfo`.

use super::FsError;
use std::path::PathBuf;

/// The v1 controllers this crate drives.
pub const V1_CONTROLLERS: [&str; 5] = ["cpu", "cpuacct", "memory", "pids", "freezer"];

/// The cgroup mounts of this host.
///
/// ```
/// use cgroupfold::fs::Mounts;
/// let m = Mounts::parse("32 31 0:29 / /sys/fs/cgroup/cpu rw - cgroup cgroup rw,cpu\n\
///                        40 31 0:37 / /sys/fs/cgroup/unified rw - cgroup2 cgroup2 rw\n");
/// assert_eq!(m.v1_mount("cpu").unwrap().to_str(), Some("/sys/fs/cgroup/cpu"));
/// assert_eq!(m.unified.unwrap().to_str(), Some("/sys/fs/cgroup/unified"));
/// ```
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Mounts {
    /// v1 hierarchies: (controllers co-mounted there, mount point).
    pub v1: Vec<(Vec<String>, PathBuf)>,
    /// The cgroup2 mount, if any.
    pub unified: Option<PathBuf>,
    /// Other v1 hierarchies (`blkio`, `devices`, `cpuset`, `name=systemd`, ...): not driven,
    /// but runc creates a container's cgroup in them too, so removal cleans them.
    pub other_v1: Vec<PathBuf>,
}

impl Mounts {
    /// Reads this process's mount table.
    ///
    /// ```
    /// let m = cgroupfold::fs::Mounts::read().unwrap();
    /// assert!(!m.v1.is_empty() || m.unified.is_some());
    /// ```
    pub fn read() -> Result<Self, FsError> {
        let path = "/proc/self/mountinfo";
        let text = std::fs::read_to_string(path).map_err(|source| FsError::Io {
            op: "read",
            path: path.into(),
            source,
        })?;
        let m = Mounts::parse(&text);
        if m.v1.is_empty() && m.unified.is_none() {
            return Err(FsError::NoCgroupMount);
        }
        Ok(m)
    }

    /// Parses mountinfo text (see proc(5)): fields, `-`, fstype, source, super options.
    pub fn parse(text: &str) -> Self {
        let mut m = Mounts::default();
        for line in text.lines() {
            let Some((left, right)) = line.split_once(" - ") else {
                continue;
            };
            let Some(mount_point) = left.split_whitespace().nth(4) else {
                continue;
            };
            let mut r = right.split_whitespace();
            let (fstype, _source, opts) = (r.next(), r.next(), r.next().unwrap_or(""));
            match fstype {
                Some("cgroup2") if m.unified.is_none() => {
                    m.unified = Some(PathBuf::from(mount_point))
                }
                Some("cgroup") => {
                    let ctrls: Vec<String> = opts
                        .split(',')
                        .filter(|o| V1_CONTROLLERS.contains(o))
                        .map(str::to_owned)
                        .collect();
                    if ctrls.is_empty() {
                        m.other_v1.push(PathBuf::from(mount_point));
                    } else if !m.v1.iter().any(|(c, _)| c == &ctrls) {
                        m.v1.push((ctrls, PathBuf::from(mount_point)));
                    }
                }
                _ => {}
            }
        }
        m
    }

    /// The mount point of v1 controller `name`.
    pub fn v1_mount(&self, name: &str) -> Option<&PathBuf> {
        self.v1
            .iter()
            .find(|(c, _)| c.iter().any(|x| x == name))
            .map(|(_, p)| p)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn comounted_controllers_share_one_mount() {
        let m = Mounts::parse(
            "25 24 0:22 / /sys/fs/cgroup/cpu,cpuacct rw - cgroup cgroup rw,cpu,cpuacct\n\
             26 24 0:23 / /sys/fs/cgroup/memory rw - cgroup cgroup rw,memory\n\
             27 24 0:24 / /sys/fs/cgroup/systemd rw - cgroup cgroup rw,xattr,name=systemd\n",
        );
        assert_eq!(m.v1.len(), 2);
        assert_eq!(m.other_v1, [PathBuf::from("/sys/fs/cgroup/systemd")]);
        assert_eq!(m.v1_mount("cpuacct"), m.v1_mount("cpu"));
        assert_eq!(m.unified, None);
    }

    #[test]
    fn pure_v2_has_no_v1_mounts() {
        let m = Mounts::parse(
            "30 23 0:26 / /sys/fs/cgroup rw,nosuid - cgroup2 cgroup2 rw,nsdelegate\n",
        );
        assert!(m.v1.is_empty());
        assert_eq!(m.unified, Some(PathBuf::from("/sys/fs/cgroup")));
    }
}
