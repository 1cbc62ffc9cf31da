//! The runtime options of a `Create`: containerd's `containerd.runc.v1.Options`, as a
//! containerd config's `[...runtimes.<name>.options]` table sets them (`BinaryName`,
//! `SystemdCgroup`, ...).
//!
//! Options shimless can honour are returned typed; options it cannot honour are refused with an
//! error naming the option and why, never silently ignored.

use crate::api::containerd::runc::v1::Options;
use prost::Message;
use std::path::PathBuf;

/// The `Any` type URL containerd uses for these options.
pub const TYPE_URL: &str = "containerd.runc.v1.Options";

/// What a container asked of its runtime, checked.
///
/// ```
/// use prost::Message;
/// use task_service::api::containerd::runc::v1::Options;
/// use task_service::options::RuntimeOptions;
///
/// let any = prost_types::Any {
///     type_url: "containerd.runc.v1.Options".into(),
///     value: Options { binary_name: "crun".into(), ..Default::default() }.encode_to_vec(),
/// };
/// let opts = RuntimeOptions::from_any(Some(&any), false)?;
/// assert_eq!(opts.binary.as_deref(), Some("crun"));
/// assert_eq!(RuntimeOptions::from_any(None, false)?, RuntimeOptions::default());
/// # Ok::<(), task_service::options::OptionsError>(())
/// ```
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RuntimeOptions {
    /// The runtime binary (`runc`, `crun`, or an absolute path); `None` = the daemon's default.
    pub binary: Option<String>,
    /// The parent of the runtime's `--root` (the namespace is appended, as containerd does);
    /// `None` = the daemon's configured `runc_root`.
    pub root: Option<PathBuf>,
    /// Use the systemd cgroup driver (`--systemd-cgroup`).
    pub systemd_cgroup: bool,
    /// `runc create --no-pivot`.
    pub no_pivot_root: bool,
    /// `runc create --no-new-keyring`.
    pub no_new_keyring: bool,
    /// Owner of the container's IO FIFOs (they are chowned at `Create`; see
    /// [`crate::stdio::IoOwner`]).
    pub io_uid: u32,
    /// Group of the container's IO FIFOs.
    pub io_gid: u32,
}

/// An option shimless cannot honour, or options it cannot read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum OptionsError {
    /// The options are not `containerd.runc.v1.Options`.
    #[error(
        "runtime options of type {0:?} are not supported: shimless takes {TYPE_URL} \
         (runtime_type io.containerd.runc.v2)"
    )]
    WrongType(String),
    /// The bytes do not decode.
    #[error("runtime options do not decode as {TYPE_URL}: {0}")]
    Malformed(String),
    /// An option's value cannot be honoured.
    #[error("runtime option {option} = {value:?} cannot be honoured: {why}")]
    Unsupported {
        /// The option as containerd's config spells it.
        option: &'static str,
        /// Its value.
        value: String,
        /// Why, and what to do.
        why: &'static str,
    },
}

impl RuntimeOptions {
    /// Reads the options of a `CreateTaskRequest`. `host_has_systemd` says whether systemd is
    /// the init system here (see [`host_has_systemd`]); `SystemdCgroup = true` needs it.
    pub fn from_any(
        any: Option<&prost_types::Any>,
        host_has_systemd: bool,
    ) -> Result<RuntimeOptions, OptionsError> {
        let Some(any) = any else {
            return Ok(RuntimeOptions::default());
        };
        let name = any.type_url.rsplit('/').next().unwrap_or_default();
        if name != TYPE_URL {
            return Err(OptionsError::WrongType(any.type_url.clone()));
        }
        let o = Options::decode(any.value.as_slice())
            .map_err(|e| OptionsError::Malformed(e.to_string()))?;
        let unsupported =
            |option, value: String, why| Err(OptionsError::Unsupported { option, value, why });
        if !o.shim_cgroup.is_empty() {
            return unsupported(
                "ShimCgroup",
                o.shim_cgroup,
                "shimless runs no shim process per container; leave it unset",
            );
        }
        if !o.criu_image_path.is_empty() || !o.criu_work_path.is_empty() {
            let value = format!("{} {}", o.criu_image_path, o.criu_work_path)
                .trim()
                .to_string();
            return unsupported(
                "CriuImagePath/CriuWorkPath",
                value,
                "checkpoint/restore is not supported by shimless",
            );
        }
        if !o.task_api_address.is_empty() || o.task_api_version != 0 {
            return unsupported(
                "TaskAPIAddress",
                o.task_api_address,
                "shimless serves the task API itself",
            );
        }
        if o.systemd_cgroup && !host_has_systemd {
            return unsupported(
                "SystemdCgroup",
                "true".into(),
                "this host does not run systemd as init (no /run/systemd/system); set SystemdCgroup = false",
            );
        }
        let binary = match o.binary_name.as_str() {
            "" => None,
            name if name.contains('\0') => {
                return unsupported("BinaryName", o.binary_name, "contains a NUL byte");
            }
            name if name.contains('/') && !name.starts_with('/') => {
                return unsupported(
                    "BinaryName",
                    o.binary_name,
                    "must be a bare name found on PATH, or an absolute path",
                );
            }
            name => Some(name.to_string()),
        };
        let root = match o.root.as_str() {
            "" => None,
            root if root.starts_with('/') && !root.contains('\0') => Some(PathBuf::from(root)),
            _ => return unsupported("Root", o.root, "must be an absolute path"),
        };
        Ok(RuntimeOptions {
            binary,
            root,
            systemd_cgroup: o.systemd_cgroup,
            no_pivot_root: o.no_pivot_root,
            no_new_keyring: o.no_new_keyring,
            io_uid: o.io_uid,
            io_gid: o.io_gid,
        })
    }

    /// Who the container's stdio FIFOs are given to (`IoUid`/`IoGid`).
    ///
    /// ```
    /// use task_service::options::RuntimeOptions;
    /// let opts = RuntimeOptions { io_uid: 1000, io_gid: 1000, ..Default::default() };
    /// assert_eq!(opts.io_owner(), task_service::stdio::IoOwner { uid: 1000, gid: 1000 });
    /// ```
    pub fn io_owner(&self) -> crate::stdio::IoOwner {
        crate::stdio::IoOwner {
            uid: self.io_uid,
            gid: self.io_gid,
        }
    }
}

/// Whether systemd is this host's init system (the test systemd itself uses: the directory
/// `/run/systemd/system` exists).
///
/// ```
/// let _ = task_service::options::host_has_systemd();
/// ```
pub fn host_has_systemd() -> bool {
    std::path::Path::new("/run/systemd/system").is_dir()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn any(o: Options) -> prost_types::Any {
        prost_types::Any {
            type_url: TYPE_URL.into(),
            value: o.encode_to_vec(),
        }
    }

    #[test]
    fn honoured_options_come_through() {
        let o = Options {
            no_pivot_root: true,
            no_new_keyring: true,
            io_uid: 1000,
            io_gid: 1001,
            binary_name: "/usr/bin/crun".into(),
            root: "/run/my-runc".into(),
            systemd_cgroup: true,
            ..Default::default()
        };
        let got = RuntimeOptions::from_any(Some(&any(o)), true).unwrap();
        assert_eq!(
            got,
            RuntimeOptions {
                binary: Some("/usr/bin/crun".into()),
                root: Some("/run/my-runc".into()),
                systemd_cgroup: true,
                no_pivot_root: true,
                no_new_keyring: true,
                io_uid: 1000,
                io_gid: 1001,
            }
        );
    }

    #[test]
    fn a_type_url_with_the_google_prefix_is_accepted() {
        let a = prost_types::Any {
            type_url: format!("type.googleapis.com/{TYPE_URL}"),
            value: vec![],
        };
        assert_eq!(
            RuntimeOptions::from_any(Some(&a), false).unwrap(),
            RuntimeOptions::default()
        );
    }

    #[test]
    fn what_cannot_be_honoured_is_refused_by_name() {
        let cases = [
            (
                Options {
                    systemd_cgroup: true,
                    ..Default::default()
                },
                "SystemdCgroup",
                "does not run systemd",
            ),
            (
                Options {
                    shim_cgroup: "/shim".into(),
                    ..Default::default()
                },
                "ShimCgroup",
                "no shim process",
            ),
            (
                Options {
                    criu_image_path: "/ck".into(),
                    ..Default::default()
                },
                "CriuImagePath",
                "checkpoint",
            ),
            (
                Options {
                    task_api_address: "unix:///x".into(),
                    ..Default::default()
                },
                "TaskAPIAddress",
                "itself",
            ),
            (
                Options {
                    binary_name: "bin/runc".into(),
                    ..Default::default()
                },
                "BinaryName",
                "absolute path",
            ),
            (
                Options {
                    root: "relative".into(),
                    ..Default::default()
                },
                "Root",
                "absolute path",
            ),
        ];
        for (o, option, why) in cases {
            let err = RuntimeOptions::from_any(Some(&any(o)), false)
                .unwrap_err()
                .to_string();
            assert!(
                err.contains(&format!("runtime option {option}")) && err.contains(why),
                "{err}"
            );
        }
    }

    #[test]
    fn foreign_or_garbled_options_are_refused() {
        let foreign = prost_types::Any {
            type_url: "io.example.Other".into(),
            value: vec![],
        };
        assert!(matches!(
            RuntimeOptions::from_any(Some(&foreign), false),
            Err(OptionsError::WrongType(_))
        ));
        let garbled = prost_types::Any {
            type_url: TYPE_URL.into(),
            value: vec![0xff, 0xff, 0xff],
        };
        assert!(matches!(
            RuntimeOptions::from_any(Some(&garbled), false),
            Err(OptionsError::Malformed(_))
        ));
    }
}
