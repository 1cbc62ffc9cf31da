//! What the runtime reports, typed.

use serde::Deserialize;
use std::collections::HashMap;

/// A container's status as the runtime reports it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Status {
    /// Being created.
    Creating,
    /// Created, waiting for `start`.
    Created,
    /// Running.
    Running,
    /// Being frozen.
    Pausing,
    /// Frozen.
    Paused,
    /// Its init process has exited.
    Stopped,
}

/// `runc state` of one container.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct State {
    /// The container id.
    pub id: String,
    /// Its init process (0 once stopped, for runc).
    #[serde(default)]
    pub pid: i32,
    /// Its status.
    pub status: Status,
    /// The bundle it was created from.
    pub bundle: String,
    /// When it was created (RFC 3339, as the runtime wrote it).
    pub created: String,
    /// The spec's annotations.
    #[serde(default)]
    pub annotations: HashMap<String, String>,
}

/// `runc events --stats`: resource usage of a container's cgroup.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
pub struct Stats {
    /// CPU time.
    #[serde(default)]
    pub cpu: CpuStats,
    /// Memory.
    #[serde(default)]
    pub memory: MemoryStats,
    /// Processes.
    #[serde(default)]
    pub pids: PidsStats,
    /// Block IO: bytes serviced, summed over devices.
    #[serde(default)]
    pub blkio: BlkioStats,
}

/// CPU usage.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
pub struct CpuStats {
    /// Cumulative usage.
    #[serde(default)]
    pub usage: CpuUsage,
}

/// Cumulative CPU time, in nanoseconds.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
pub struct CpuUsage {
    /// All CPU time.
    #[serde(default)]
    pub total: u64,
    /// In the kernel.
    #[serde(default)]
    pub kernel: u64,
    /// In user space.
    #[serde(default)]
    pub user: u64,
}

/// Memory usage.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
pub struct MemoryStats {
    /// Usage and limit.
    #[serde(default)]
    pub usage: MemoryEntry,
    /// Page cache.
    #[serde(default)]
    pub cache: u64,
}

/// One memory counter.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
pub struct MemoryEntry {
    /// Bytes in use.
    #[serde(default)]
    pub usage: u64,
    /// Peak bytes in use.
    #[serde(default)]
    pub max: u64,
    /// The limit in bytes.
    #[serde(default)]
    pub limit: u64,
    /// Times the limit was hit.
    #[serde(default)]
    pub failcnt: u64,
}

/// Process counts.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
pub struct PidsStats {
    /// Processes now.
    #[serde(default)]
    pub current: u64,
    /// The limit (0 = none).
    #[serde(default)]
    pub limit: u64,
}

/// Block IO.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
pub struct BlkioStats {
    /// Bytes per device and operation.
    #[serde(
        default,
        rename = "ioServiceBytesRecursive",
        deserialize_with = "null_as_empty"
    )]
    pub io_service_bytes_recursive: Vec<BlkioEntry>,
}

/// One block IO counter.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
pub struct BlkioEntry {
    /// Device major number.
    #[serde(default)]
    pub major: u64,
    /// Device minor number.
    #[serde(default)]
    pub minor: u64,
    /// `Read`, `Write`, `Total`, ...
    #[serde(default)]
    pub op: String,
    /// The count.
    #[serde(default)]
    pub value: u64,
}

fn null_as_empty<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Vec<BlkioEntry>, D::Error> {
    Ok(Option::<Vec<BlkioEntry>>::deserialize(d)?.unwrap_or_default())
}

/// `runc --version`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Version {
    /// `runc` or `crun`.
    pub runtime: String,
    /// Its version, e.g. `1.1.5+ds1`.
    pub version: String,
    /// The commit, if printed.
    pub commit: Option<String>,
    /// The OCI runtime spec version it implements, if printed.
    pub spec: Option<String>,
}

impl Version {
    pub(crate) fn parse(text: &str) -> Option<Version> {
        let mut lines = text.lines();
        let mut first = lines.next()?.split_whitespace();
        let runtime = first.next()?.to_string();
        if first.next()? != "version" {
            return None;
        }
        let version = first.next()?.to_string();
        let mut commit = None;
        let mut spec = None;
        for line in lines {
            if let Some(v) = line.strip_prefix("commit: ") {
                commit = Some(v.trim().to_string());
            } else if let Some(v) = line.strip_prefix("spec: ") {
                spec = Some(v.trim().to_string());
            }
        }
        Some(Version {
            runtime,
            version,
            commit,
            spec,
        })
    }
}

/// `runc features` (runc 1.1+): what the runtime supports.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Features {
    /// Oldest OCI spec version supported.
    #[serde(default)]
    pub oci_version_min: String,
    /// Newest OCI spec version supported.
    #[serde(default)]
    pub oci_version_max: String,
    /// Hook names supported.
    #[serde(default)]
    pub hooks: Vec<String>,
    /// Mount options supported.
    #[serde(default)]
    pub mount_options: Vec<String>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn both_version_formats_parse() {
        let runc = "runc version 1.1.5+ds1\ncommit: abc\nspec: 1.0.2-dev\ngo: go1.19.8\n";
        let v = Version::parse(runc).unwrap();
        assert_eq!(
            (v.runtime.as_str(), v.version.as_str(), v.spec.as_deref()),
            ("runc", "1.1.5+ds1", Some("1.0.2-dev"))
        );
        let crun = "crun version 1.8.1\ncommit: f8a0\nrundir: /run/crun\nspec: 1.0.0\n+SYSTEMD";
        let v = Version::parse(crun).unwrap();
        assert_eq!(
            (v.runtime.as_str(), v.commit.as_deref()),
            ("crun", Some("f8a0"))
        );
        assert_eq!(Version::parse("garbage"), None);
    }

    #[test]
    fn states_of_both_runtimes_parse() {
        let runc = r#"{"ociVersion":"1.0.2-dev","id":"c9","pid":6239,"status":"running","bundle":"/b","rootfs":"/b/rootfs","created":"2026-11-23T08:24:20Z","owner":""}"#;
        let crun = r#"{"ociVersion":"1.0.0","id":"c9","pid":6224,"status":"paused","bundle":"/b","rootfs":"rootfs","created":"2026-11-23T08:24:20Z","systemd-scope":"","owner":"root","annotations":{"a":"b"}}"#;
        let a: State = serde_json::from_str(runc).unwrap();
        let b: State = serde_json::from_str(crun).unwrap();
        assert_eq!((a.pid, a.status), (6239, Status::Running));
        assert_eq!(
            (b.status, b.annotations.get("a").map(String::as_str)),
            (Status::Paused, Some("b"))
        );
    }
}
