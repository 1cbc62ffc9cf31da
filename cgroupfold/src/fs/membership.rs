//! Which cgroups a process is in, from `/proc/<pid>/cgroup`.

use super::FsError;
use std::path::PathBuf;

/// One line of `/proc/<pid>/cgroup`: `hierarchy-id:controllers:path`.
///
/// ```
/// use cgroupfold::fs::Membership;
/// let m = Membership::parse_line("4:memory,pids:/k8s.io/abc").unwrap();
/// assert_eq!((m.hierarchy, m.path.as_str()), (4, "/k8s.io/abc"));
/// assert_eq!(m.controllers, ["memory", "pids"]);
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Membership {
    /// The hierarchy id (0 for the cgroup2 hierarchy).
    pub hierarchy: u32,
    /// The controllers bound to the hierarchy (`memory`, `cpu`, `name=systemd`, ...); empty for
    /// cgroup2.
    pub controllers: Vec<String>,
    /// The cgroup's path from the hierarchy's root, starting with `/`.
    pub path: String,
}

impl Membership {
    /// Parses one line; `None` if it is not `id:controllers:path` with a numeric id.
    ///
    /// ```
    /// use cgroupfold::fs::Membership;
    /// assert!(Membership::parse_line("0::/").unwrap().controllers.is_empty());
    /// assert_eq!(Membership::parse_line("memory:/x"), None);
    /// ```
    pub fn parse_line(line: &str) -> Option<Membership> {
        let mut fields = line.splitn(3, ':');
        let hierarchy = fields.next()?.parse().ok()?;
        let controllers = fields.next()?;
        let path = fields.next()?.to_string();
        let controllers = controllers
            .split(',')
            .filter(|c| !c.is_empty())
            .map(str::to_string)
            .collect();
        Some(Membership {
            hierarchy,
            controllers,
            path,
        })
    }
}

/// Every cgroup one process is in: the parsed `/proc/<pid>/cgroup`.
///
/// ```
/// use cgroupfold::fs::ProcessCgroups;
/// let table = "10:hugetlb:/\n4:memory:/k8s.io/abc\n0::/k8s.io/abc\n";
/// let table = ProcessCgroups::parse(table).unwrap();
/// assert_eq!(table.v1_path("memory"), Some("/k8s.io/abc"));
/// assert_eq!(table.v1_path("cpu"), None);
/// assert_eq!(table.unified_path(), Some("/k8s.io/abc"));
/// ```
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct ProcessCgroups {
    /// The lines, in the kernel's order.
    pub memberships: Vec<Membership>,
}

impl ProcessCgroups {
    /// Reads `/proc/<pid>/cgroup`. A process that is gone gives [`FsError::Io`] with
    /// `NotFound`.
    ///
    /// ```
    /// let me = cgroupfold::fs::ProcessCgroups::read(std::process::id())?;
    /// assert!(!me.memberships.is_empty());
    /// # Ok::<(), cgroupfold::fs::FsError>(())
    /// ```
    pub fn read(pid: u32) -> Result<Self, FsError> {
        let path = PathBuf::from(format!("/proc/{pid}/cgroup"));
        match std::fs::read_to_string(&path) {
            Ok(text) => Self::parse(&text).map_err(|e| match e {
                FsError::Parse { content, .. } => FsError::Parse { path, content },
                e => e,
            }),
            Err(source) => Err(FsError::Io {
                op: "read",
                path,
                source,
            }),
        }
    }

    /// Parses the text of a `/proc/<pid>/cgroup` file; a line that is not
    /// `id:controllers:path` is a [`FsError::Parse`] naming it.
    ///
    /// ```
    /// use cgroupfold::fs::{FsError, ProcessCgroups};
    /// assert!(matches!(ProcessCgroups::parse("garbage\n"), Err(FsError::Parse { .. })));
    /// ```
    pub fn parse(text: &str) -> Result<Self, FsError> {
        let memberships = text
            .lines()
            .filter(|l| !l.trim().is_empty())
            .map(|line| {
                Membership::parse_line(line).ok_or_else(|| FsError::Parse {
                    path: PathBuf::from("/proc/<pid>/cgroup"),
                    content: line.to_string(),
                })
            })
            .collect::<Result<_, _>>()?;
        Ok(ProcessCgroups { memberships })
    }

    /// The path in the v1 hierarchy that `controller` (`memory`, `cpu`, ...) is bound to.
    ///
    /// ```
    /// let t = cgroupfold::fs::ProcessCgroups::parse("3:cpu,cpuacct:/a\n").unwrap();
    /// assert_eq!(t.v1_path("cpuacct"), Some("/a"));
    /// ```
    pub fn v1_path(&self, controller: &str) -> Option<&str> {
        self.memberships
            .iter()
            .find(|m| m.controllers.iter().any(|c| c == controller))
            .map(|m| m.path.as_str())
    }

    /// The path in the cgroup2 hierarchy (the `0::` line), if the process has one.
    ///
    /// ```
    /// let t = cgroupfold::fs::ProcessCgroups::parse("0::/init.scope\n").unwrap();
    /// assert_eq!(t.unified_path(), Some("/init.scope"));
    /// ```
    pub fn unified_path(&self) -> Option<&str> {
        self.memberships
            .iter()
            .find(|m| m.hierarchy == 0 && m.controllers.is_empty())
            .map(|m| m.path.as_str())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_hybrid_table_gives_v1_and_unified_paths() {
        let t = ProcessCgroups::parse(
            "12:pids:/k8s.io/c\n4:memory:/k8s.io/c\n1:name=systemd:/user.slice\n0::/k8s.io/c\n",
        )
        .unwrap();
        assert_eq!(t.memberships.len(), 4);
        assert_eq!(t.v1_path("pids"), Some("/k8s.io/c"));
        assert_eq!(t.v1_path("name=systemd"), Some("/user.slice"));
        assert_eq!(t.v1_path("freezer"), None);
        assert_eq!(t.unified_path(), Some("/k8s.io/c"));
    }

    #[test]
    fn paths_keep_their_colons_and_bad_lines_are_named() {
        let t = ProcessCgroups::parse("0::/a:b\n").unwrap();
        assert_eq!(t.unified_path(), Some("/a:b"));
        match ProcessCgroups::parse("0::/\nx:memory:/\n") {
            Err(FsError::Parse { content, .. }) => assert_eq!(content, "x:memory:/"),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn own_table_is_readable_and_a_missing_process_is_an_io_error() {
        assert!(
            !ProcessCgroups::read(std::process::id())
                .unwrap()
                .memberships
                .is_empty()
        );
        match ProcessCgroups::read(u32::MAX) {
            Err(FsError::Io { source, .. }) => {
                assert_eq!(source.kind(), std::io::ErrorKind::NotFound)
            }
            other => panic!("{other:?}"),
        }
    }
}
