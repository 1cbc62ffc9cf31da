//! Which containerd runs: the system's 1.7 or the unpacked 2.1.9, and what each needs.

use std::path::{Path, PathBuf};

use crate::Need;

/// What a test of the private containerd needs: pass it to [`require`](crate::require).
///
/// ```
/// use integration::containerd::NEEDS;
/// // In a #[test]: skip (or fail under CI) without root, containerd, ctr, runc or busybox.
/// let Some(()) = integration::require(NEEDS) else { return };
/// ```
pub const NEEDS: &[Need] = &[
    Need::Root,
    Need::Program("containerd"),
    Need::Program("ctr"),
    Need::Program("containerd-shim-runc-v2"),
    Need::Program("runc"),
    Need::File(crate::bundle::BUSYBOX),
];

/// Where `scripts/install-deps` unpacks Debian forky's containerd 2.1.9 (`containerd`, `ctr`,
/// `containerd-shim-runc-v2`), which is never installed: the system's containerd stays 1.7.
pub const CONTAINERD_2_1_BIN: &str = "/var/cache/shimless/containerd-2.1.9/usr/bin";

/// What a test of the private containerd 2.1 needs: [`NEEDS`] and the unpacked 2.1.9.
///
/// ```
/// use integration::containerd::{NEEDS_2_1, Version};
/// assert_eq!(Version::V2_1.needs(), NEEDS_2_1);
/// ```
pub const NEEDS_2_1: &[Need] = &[
    Need::Root,
    Need::File("/var/cache/shimless/containerd-2.1.9/usr/bin/containerd"),
    Need::File("/var/cache/shimless/containerd-2.1.9/usr/bin/ctr"),
    Need::File("/var/cache/shimless/containerd-2.1.9/usr/bin/containerd-shim-runc-v2"),
    Need::Program("runc"),
    Need::File(crate::bundle::BUSYBOX),
];

/// Which containerd a [`Containerd`](super::Containerd) runs: the system's 1.7 (config version
/// 2) or the 2.1.9 that `scripts/install-deps` unpacks (config version 3, where CRI's plugins
/// are `io.containerd.cri.v1.runtime` and `io.containerd.cri.v1.images` and a runtime names its
/// `sandboxer`). Its `ctr` and stock runc shim are used with it.
///
/// ```
/// use integration::containerd::Version;
/// assert_eq!(Version::V1_7.config_version(), 2);
/// assert_eq!(Version::V2_1.config_version(), 3);
/// assert_eq!(Version::V2_1.program("ctr").to_str(), Some("/var/cache/shimless/containerd-2.1.9/usr/bin/ctr"));
/// assert_eq!(Version::V1_7.program("ctr").to_str(), Some("ctr"));
/// assert_eq!("2.1".parse::<Version>(), Ok(Version::V2_1));
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum Version {
    /// The system's containerd 1.7 (from `PATH`).
    #[default]
    V1_7,
    /// containerd 2.1.9 from [`CONTAINERD_2_1_BIN`].
    V2_1,
}

impl Version {
    /// Both, oldest first: what the tests run against.
    pub const ALL: [Version; 2] = [Version::V1_7, Version::V2_1];

    /// The directory of its binaries, or `None` for the ones on `PATH`.
    pub fn bin_dir(self) -> Option<&'static Path> {
        match self {
            Version::V1_7 => None,
            Version::V2_1 => Some(Path::new(CONTAINERD_2_1_BIN)),
        }
    }

    /// The program `name` (`containerd`, `ctr`) of this version.
    pub fn program(self, name: &str) -> PathBuf {
        match self.bin_dir() {
            Some(dir) => dir.join(name),
            None => PathBuf::from(name),
        }
    }

    /// The `version` of its `config.toml`.
    pub fn config_version(self) -> u32 {
        match self {
            Version::V1_7 => 2,
            Version::V2_1 => 3,
        }
    }

    /// What a test of it needs: pass it to [`require`](crate::require).
    pub fn needs(self) -> &'static [Need] {
        match self {
            Version::V1_7 => NEEDS,
            Version::V2_1 => NEEDS_2_1,
        }
    }

    /// A short label for names and messages: `1.7`, `2.1`.
    pub fn label(self) -> &'static str {
        match self {
            Version::V1_7 => "1.7",
            Version::V2_1 => "2.1",
        }
    }
}

impl std::fmt::Display for Version {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "containerd {}", self.label())
    }
}

/// A containerd version that [`Version`] does not know.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("containerd version {0:?} is not one of 1.7, 2.1")]
pub struct UnknownVersion(pub String);

impl std::str::FromStr for Version {
    type Err = UnknownVersion;
    fn from_str(s: &str) -> Result<Version, UnknownVersion> {
        match s.trim_start_matches('v') {
            "1.7" | "1" => Ok(Version::V1_7),
            "2.1" | "2" => Ok(Version::V2_1),
            _ => Err(UnknownVersion(s.to_string())),
        }
    }
}
