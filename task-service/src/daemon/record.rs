//! What the daemon persists per container.

use crate::model::Container;
use pidfd::ProcessIdentity;
use serde::{Deserialize, Serialize};
use std::path::PathBuf;

/// One container's record, saved atomically on every transition.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct Record {
    /// Written first, as [`RECORD_FORMAT`](crate::version::RECORD_FORMAT); absent in a record
    /// written before versions existed (version 1).
    #[serde(default)]
    pub format: Format,
    pub bundle: PathBuf,
    pub stdin: String,
    pub stdout: String,
    pub stderr: String,
    pub terminal: bool,
    /// The runtime binary and root that manage it.
    pub runtime: PathBuf,
    pub runtime_root: PathBuf,
    /// Whether the daemon mounted `Create`'s rootfs mounts on `<bundle>/rootfs` (and must
    /// unmount them on delete).
    #[serde(default)]
    pub rootfs_mounted: bool,
    /// Saved before the runtime is asked to create the container and cleared once it has: a
    /// record still `creating` after a restart is a `Create` the daemon died in.
    #[serde(default)]
    pub creating: bool,
    /// Whether the runtime manages its cgroup through systemd.
    #[serde(default)]
    pub systemd_cgroup: bool,
    /// The init process, as PID + start time (never trusted by PID alone).
    pub identity: Option<ProcessIdentity>,
    pub container: Container,
    /// Started exec processes, as PID + start time, by exec id.
    #[serde(default)]
    pub exec_identities: std::collections::BTreeMap<String, ProcessIdentity>,
    /// Exits of execs that ended before the kernel tracked them, taken by their `Start`
    /// until the watcher reports them (what exitwatch holds for the others), by exec id.
    #[serde(default)]
    pub early_exits: std::collections::BTreeMap<String, crate::model::Exit>,
    /// Who its stdio FIFOs, and its execs', are given to (runtime options `IoUid`/`IoGid`;
    /// root in a record written before they were kept).
    #[serde(default)]
    pub io_owner: crate::stdio::IoOwner,
    /// When the container was created (for `shimlessctl ps`'s age).
    #[serde(default = "std::time::SystemTime::now")]
    pub created_at: std::time::SystemTime,
    /// Set for every container of a folded pod: its pod, pod cgroup and resources.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fold: Option<crate::fold::Folding>,
}

/// A record's format version. In memory a record is always of the current version: the store
/// refuses a newer one before it is parsed, and an older one is read into today's fields (each
/// field added since has a default) and written back as the current version.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) struct Format;

impl Serialize for Format {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_u32(crate::version::RECORD_FORMAT)
    }
}

impl<'de> Deserialize<'de> for Format {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Format, D::Error> {
        let found = u32::deserialize(d)?;
        crate::version::Newer::check("the record", found, crate::version::RECORD_FORMAT)
            .map_err(serde::de::Error::custom)?;
        Ok(Format)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record() -> Record {
        Record {
            format: Format,
            bundle: "/b".into(),
            stdin: String::new(),
            stdout: String::new(),
            stderr: String::new(),
            terminal: false,
            runtime: "runc".into(),
            runtime_root: "/r".into(),
            rootfs_mounted: false,
            creating: false,
            systemd_cgroup: false,
            identity: None,
            container: Container::new(Some(42)),
            exec_identities: Default::default(),
            early_exits: Default::default(),
            io_owner: Default::default(),
            created_at: std::time::SystemTime::UNIX_EPOCH,
            fold: None,
        }
    }

    #[test]
    fn a_record_is_written_with_the_current_format_first() {
        let text = serde_json::to_string(&record()).unwrap();
        let expected = format!("{{\"format\":{},", crate::version::RECORD_FORMAT);
        assert!(text.starts_with(&expected), "{text}");
    }

    #[test]
    fn an_unversioned_record_reads_as_version_1_and_is_written_back_as_the_current_one() {
        let mut value = serde_json::to_value(record()).unwrap();
        value.as_object_mut().unwrap().remove("format");
        let old: Record = serde_json::from_value(value).unwrap();
        assert_eq!(old.container.init.pid, Some(42));
        let again = serde_json::to_value(&old).unwrap();
        assert_eq!(again["format"], crate::version::RECORD_FORMAT);
    }

    #[test]
    fn a_newer_record_does_not_parse() {
        let mut value = serde_json::to_value(record()).unwrap();
        value["format"] = (crate::version::RECORD_FORMAT + 1).into();
        let err = serde_json::from_value::<Record>(value).unwrap_err();
        assert!(err.to_string().contains("newer than the"), "{err}");
    }
}
