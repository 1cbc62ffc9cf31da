//! The Task calls `shimlessctl` makes, in the namespace of `--namespace`, and the commands
//! that are one call each (`create`, `start`, `state`, `kill`, `wait`, `delete`).

use crate::{Result, status};
use serde_json::json;
use std::path::{Path, PathBuf};
use task_service::api::containerd::task::v3::*;
use task_service::client::{Client, TaskClient, namespaced};
use tonic::Request;

/// The connection to the daemon, and how to ask and answer.
pub(crate) struct Ctl {
    pub(crate) client: Client,
    pub(crate) task: TaskClient,
    pub(crate) namespace: String,
    json: bool,
}

impl Ctl {
    /// Connects to the daemon's socket.
    pub(crate) async fn connect(socket: &Path, namespace: String, json: bool) -> Result<Ctl> {
        let client = Client::connect(socket).await.map_err(|e| {
            format!(
                "cannot reach shimlessd at {}: {e} (is it running? see --socket)",
                socket.display()
            )
        })?;
        Ok(Ctl {
            task: client.task(),
            client,
            namespace,
            json,
        })
    }

    pub(crate) fn req<T>(&self, msg: T) -> Request<T> {
        namespaced(&self.namespace, msg)
    }

    /// Prints `value` with `--json`, else `text`.
    pub(crate) fn print(&self, value: serde_json::Value, text: String) {
        if self.json {
            println!("{value}");
        } else {
            println!("{text}");
        }
    }

    pub(crate) fn json(&self) -> bool {
        self.json
    }
}

/// `shimlessctl create`: stdout and stderr to the given files or FIFOs.
pub(crate) async fn create_detached(
    ctl: &mut Ctl,
    id: &str,
    bundle: &Path,
    stdout: Option<PathBuf>,
    stderr: Option<PathBuf>,
) -> Result<i32> {
    let pid = create(ctl, id, bundle, String::new(), uri(stdout), uri(stderr)).await?;
    ctl.print(
        json!({"id": id, "pid": pid}),
        format!("created {id} (pid {pid})"),
    );
    Ok(0)
}

/// `shimlessctl start`.
pub(crate) async fn start_init(ctl: &mut Ctl, id: &str) -> Result<i32> {
    let pid = start(ctl, id, "").await?;
    ctl.print(
        json!({"id": id, "pid": pid}),
        format!("started {id} (pid {pid})"),
    );
    Ok(0)
}

/// `shimlessctl state`.
pub(crate) async fn state(ctl: &mut Ctl, id: &str, exec_id: String) -> Result<i32> {
    let s = ctl
        .task
        .state(ctl.req(StateRequest {
            id: id.into(),
            exec_id,
        }))
        .await
        .map_err(status)?
        .into_inner();
    let status = status_name(s.status);
    let exit = if status == "stopped" {
        format!(" (exit {})", s.exit_status)
    } else {
        String::new()
    };
    ctl.print(
        json!({"id": s.id, "pid": s.pid, "status": status, "exit_status": s.exit_status,
               "bundle": s.bundle, "stdout": s.stdout, "stderr": s.stderr,
               "exited_at": s.exited_at.map(|t| t.seconds)}),
        format!("{} pid {} {status}{exit} bundle {}", s.id, s.pid, s.bundle),
    );
    Ok(0)
}

/// `shimlessctl kill`.
pub(crate) async fn kill(
    ctl: &mut Ctl,
    id: &str,
    signal: &str,
    all: bool,
    exec_id: String,
) -> Result<i32> {
    let signal = parse_signal(signal)?;
    ctl.task
        .kill(ctl.req(KillRequest {
            id: id.into(),
            exec_id,
            signal,
            all,
        }))
        .await
        .map_err(status)?;
    ctl.print(
        json!({"id": id, "signal": signal}),
        format!("sent signal {signal} to {id}"),
    );
    Ok(0)
}

/// `shimlessctl wait`: exits with the container's code.
pub(crate) async fn wait_init(ctl: &mut Ctl, id: &str) -> Result<i32> {
    let code = wait(ctl, id, "").await?;
    ctl.print(json!({"id": id, "exit_status": code}), code.to_string());
    Ok(code as i32)
}

/// `shimlessctl delete`.
pub(crate) async fn delete_init(ctl: &mut Ctl, id: &str) -> Result<i32> {
    let d = delete(ctl, id, "").await.map_err(status)?;
    ctl.print(
        json!({"id": id, "pid": d.pid, "exit_status": d.exit_status}),
        format!("deleted {id} (exit {})", d.exit_status),
    );
    Ok(0)
}

fn uri(path: Option<PathBuf>) -> String {
    path.map(|p| p.display().to_string()).unwrap_or_default()
}

/// `Create` with the three stdio values as containerd passes them (empty: none).
pub(crate) async fn create(
    ctl: &mut Ctl,
    id: &str,
    bundle: &Path,
    stdin: String,
    stdout: String,
    stderr: String,
) -> Result<u32> {
    let bundle = std::path::absolute(bundle)?;
    let r = ctl
        .task
        .create(ctl.req(CreateTaskRequest {
            id: id.into(),
            bundle: bundle.display().to_string(),
            stdin,
            stdout,
            stderr,
            ..Default::default()
        }))
        .await
        .map_err(status)?;
    Ok(r.into_inner().pid)
}

pub(crate) async fn start(ctl: &mut Ctl, id: &str, exec_id: &str) -> Result<u32> {
    let r = ctl
        .task
        .start(ctl.req(StartRequest {
            id: id.into(),
            exec_id: exec_id.into(),
        }))
        .await
        .map_err(status)?;
    Ok(r.into_inner().pid)
}

pub(crate) async fn wait(ctl: &mut Ctl, id: &str, exec_id: &str) -> Result<u32> {
    let r = ctl
        .task
        .wait(ctl.req(WaitRequest {
            id: id.into(),
            exec_id: exec_id.into(),
        }))
        .await
        .map_err(status)?;
    Ok(r.into_inner().exit_status)
}

/// `Delete` of the init (`exec_id` empty) or an exec.
pub(crate) async fn delete(
    ctl: &mut Ctl,
    id: &str,
    exec_id: &str,
) -> std::result::Result<DeleteResponse, tonic::Status> {
    let req = ctl.req(DeleteRequest {
        id: id.into(),
        exec_id: exec_id.into(),
    });
    Ok(ctl.task.delete(req).await?.into_inner())
}

fn status_name(status: i32) -> &'static str {
    use task_service::api::containerd::v1::types::Status;
    match Status::try_from(status) {
        Ok(Status::Created) => "created",
        Ok(Status::Running) => "running",
        Ok(Status::Stopped) => "stopped",
        Ok(Status::Paused) => "paused",
        Ok(Status::Pausing) => "pausing",
        _ => "unknown",
    }
}

/// A signal by number (`9`) or name (`KILL`, `SIGKILL`, `term`).
fn parse_signal(text: &str) -> Result<u32> {
    if let Ok(n) = text.parse::<u32>() {
        return if (1..=64).contains(&n) {
            Ok(n)
        } else {
            Err(format!("signal {n} is not between 1 and 64").into())
        };
    }
    let name = text.to_ascii_uppercase();
    let name = name.strip_prefix("SIG").unwrap_or(&name);
    let known = [
        ("HUP", 1),
        ("INT", 2),
        ("QUIT", 3),
        ("ABRT", 6),
        ("KILL", 9),
        ("USR1", 10),
        ("SEGV", 11),
        ("USR2", 12),
        ("PIPE", 13),
        ("ALRM", 14),
        ("TERM", 15),
        ("CONT", 18),
        ("STOP", 19),
    ];
    known
        .iter()
        .find(|(n, _)| *n == name)
        .map(|(_, v)| *v)
        .ok_or_else(|| format!("unknown signal {text:?} (use a number or a name like TERM)").into())
}
