//! `delete`: containerd's clean-up of one container whose shim it believes dead.

use super::{ShimError, log, namespaced};
use crate::api::containerd::task::v3::{DeleteRequest, DeleteResponse, KillRequest, WaitRequest};
use crate::config::Config;
use prost::Message;
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

/// containerd gives the whole `delete` 5 s (`io.containerd.timeout.shim.cleanup`).
const STEP: Duration = Duration::from_millis(1500);

pub(super) fn delete(flags: &super::Flags, config: &Config) -> Result<Vec<u8>, ShimError> {
    if flags.id.is_empty() {
        return Err(ShimError::Missing("id"));
    }
    let ns = if flags.namespace.is_empty() {
        "default"
    } else {
        flags.namespace.as_str()
    };
    let through_daemon = smol::block_on(via_daemon(config, ns, &flags.id));
    let response = match through_daemon {
        Ok(Some(response)) => response,
        // The daemon answers and has no such container (containerd runs `delete` after every
        // task's connection closes, deleted or not): nothing is left to clean up.
        Ok(None) => killed_now(),
        Err(why) => {
            log(&format!(
                "delete {ns}/{}: the daemon did not answer ({why}); using the runtime directly",
                flags.id
            ));
            directly(config, ns, &flags.id)?
        }
    };
    Ok(response.encode_to_vec())
}

/// Kill, wait and delete through the front; `Ok(None)` when the daemon does not know the
/// container.
async fn via_daemon(config: &Config, ns: &str, id: &str) -> Result<Option<DeleteResponse>, String> {
    let mut task = crate::client::Client::connect(&config.socket)
        .await
        .map_err(|e| e.to_string())?
        .task();
    let kill = KillRequest {
        id: id.into(),
        exec_id: String::new(),
        signal: 9,
        all: true,
    };
    // Refused when it already stopped: then there is nothing to kill.
    let _ = task.kill(namespaced(ns, kill, STEP)).await;
    let wait = WaitRequest {
        id: id.into(),
        exec_id: String::new(),
    };
    let _ = task.wait(namespaced(ns, wait, STEP)).await;
    let delete = DeleteRequest {
        id: id.into(),
        exec_id: String::new(),
    };
    match task.delete(namespaced(ns, delete, STEP)).await {
        Ok(reply) => Ok(Some(reply.into_inner())),
        Err(status) if status.code() == tonic::Code::NotFound => Ok(None),
        Err(status) => Err(status.message().to_string()),
    }
}

/// What `delete` needs of a container's record: the runtime that manages it. Read alone, so a
/// record of an older or newer daemon (other fields) still gives it.
#[derive(Debug, serde::Deserialize)]
struct Managed {
    runtime: PathBuf,
    runtime_root: PathBuf,
    #[serde(default)]
    systemd_cgroup: bool,
    /// Where the daemon mounted the rootfs, if it did (the Go shim unmounts it on delete too).
    #[serde(default)]
    bundle: Option<PathBuf>,
    #[serde(default)]
    rootfs_mounted: bool,
}

/// The runtime binary, root and cgroup driver of `ns`/`id`: the ones its record names (a
/// container created with runtime options `BinaryName`, `Root` or `SystemdCgroup` lives
/// there, as the Go shim reads them back from the bundle's `options.json`), else the
/// configured defaults.
fn managed_by(config: &Config, record: &Path, ns: &str) -> Managed {
    let defaults = || Managed {
        runtime: PathBuf::from(&config.runtime),
        runtime_root: config.runc_root.join(ns),
        systemd_cgroup: false,
        bundle: None,
        rootfs_mounted: false,
    };
    match std::fs::read(record) {
        Ok(bytes) => serde_json::from_slice(&bytes).unwrap_or_else(|e| {
            log(&format!(
                "delete: record {} does not parse ({e}); using the configured runtime and root",
                record.display()
            ));
            defaults()
        }),
        Err(_) => defaults(),
    }
}

/// Without the daemon: `<runtime> --root <root> delete --force <id>` with the container's own
/// runtime and root, the record removed, and the answer containerd's own shims give (killed:
/// 137, now).
fn directly(config: &Config, ns: &str, id: &str) -> Result<DeleteResponse, ShimError> {
    let record = config.state_dir.join(ns).join(format!("{id}.json"));
    let managed = managed_by(config, &record, ns);
    let mut command = std::process::Command::new(&managed.runtime);
    command.arg("--root").arg(&managed.runtime_root);
    if managed.systemd_cgroup {
        command.arg("--systemd-cgroup");
    }
    let runtime = managed.runtime.display();
    let out = command
        .args(["delete", "--force", id])
        .output()
        .map_err(|e| ShimError::Cleanup {
            id: id.into(),
            why: format!("cannot run {runtime}: {e}"),
        })?;
    let stderr = String::from_utf8_lossy(&out.stderr);
    if !out.status.success() && !stderr.contains("does not exist") && !stderr.contains("not found")
    {
        return Err(ShimError::Cleanup {
            id: id.into(),
            why: format!(
                "{runtime} --root {} delete --force: {}",
                managed.runtime_root.display(),
                stderr.trim()
            ),
        });
    }
    if let (true, Some(bundle)) = (managed.rootfs_mounted, &managed.bundle) {
        crate::rootfs::unmount_all(bundle);
    }
    if let Err(e) = std::fs::remove_file(&record)
        && e.kind() != std::io::ErrorKind::NotFound
    {
        return Err(ShimError::Cleanup {
            id: id.into(),
            why: format!("cannot remove {}: {e}", record.display()),
        });
    }
    Ok(killed_now())
}

/// The answer containerd's own shims give for a container they killed: 137, now.
fn killed_now() -> DeleteResponse {
    DeleteResponse {
        pid: 0,
        exit_status: 128 + 9,
        exited_at: Some(crate::api::timestamp(SystemTime::now())),
    }
}
