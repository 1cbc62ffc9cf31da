//! `delete`: containerd's clean-up of one container whose shim it believes dead.

use super::{ShimError, log, namespaced};
use crate::api::containerd::task::v3::{DeleteRequest, DeleteResponse, KillRequest, WaitRequest};
use crate::config::Config;
use prost::Message;
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

/// Without the daemon: `<runtime> --root <runc_root>/<ns> delete --force <id>`, the record
/// removed, and the answer containerd's own shims give (killed: 137, now).
fn directly(config: &Config, ns: &str, id: &str) -> Result<DeleteResponse, ShimError> {
    let root = config.runc_root.join(ns);
    let out = std::process::Command::new(&config.runtime)
        .arg("--root")
        .arg(&root)
        .args(["delete", "--force", id])
        .output()
        .map_err(|e| ShimError::Cleanup {
            id: id.into(),
            why: format!("cannot run {}: {e}", config.runtime),
        })?;
    let stderr = String::from_utf8_lossy(&out.stderr);
    if !out.status.success() && !stderr.contains("does not exist") && !stderr.contains("not found")
    {
        return Err(ShimError::Cleanup {
            id: id.into(),
            why: format!("{} delete --force: {}", config.runtime, stderr.trim()),
        });
    }
    let record = config.state_dir.join(ns).join(format!("{id}.json"));
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
