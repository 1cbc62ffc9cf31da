//! containerd's `containerd.task.v3.Task` on [`Daemon`]: each handler names the container from
//! the request and delegates to the module whose job the call is.

use super::Daemon;
use super::container::Key;
use super::errors;
use super::stats;
use crate::api::containerd::task::v3::task_server::{Task, TaskServer};
use crate::api::containerd::task::v3::*;
use crate::api::containerd::v1::types::{ProcessInfo, Status as TaskStatus};
use crate::api::timestamp;
use crate::ids::{ContainerId, Namespace};
use crate::lock::lock;
use crate::model::ProcessState;
use tonic::{Request, Response, Status};

impl Daemon {
    /// The tonic server for [`grpc::serve`](crate::grpc::serve), with the configured message
    /// size limit.
    ///
    /// ```no_run
    /// # fn f(daemon: task_service::daemon::Daemon) {
    /// let server = daemon.into_server();
    /// # }
    /// ```
    pub fn into_server(self) -> TaskServer<Daemon> {
        let limit = self.inner.config.max_message_bytes;
        TaskServer::new(self).max_decoding_message_size(limit)
    }
}

/// The container a request names: its id, in the namespace of its `containerd-namespace`
/// header (`default` without one).
fn key_of<T: CallIds>(req: &Request<T>, id: &str) -> Result<Key, Status> {
    crate::grpc::observe::record_ids(id, req.get_ref().exec_id());
    let ns = req
        .metadata()
        .get("containerd-namespace")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("default");
    let ns = Namespace::new(ns).map_err(errors::invalid)?;
    let id = ContainerId::new(id).map_err(errors::invalid)?;
    Ok((ns, id))
}

/// The exec id a request names, for the call's log span (empty when it names none).
trait CallIds {
    fn exec_id(&self) -> &str {
        ""
    }
}

macro_rules! call_ids {
    (with exec: $($with:ty),*; without: $($without:ty),*) => {
        $(impl CallIds for $with {
            fn exec_id(&self) -> &str {
                &self.exec_id
            }
        })*
        $(impl CallIds for $without {})*
    };
}

call_ids!(
    with exec: StartRequest, StateRequest, KillRequest, WaitRequest, DeleteRequest,
        ExecProcessRequest, ResizePtyRequest, CloseIoRequest;
    without: CreateTaskRequest, PidsRequest, PauseRequest, ResumeRequest, UpdateTaskRequest,
        ConnectRequest, StatsRequest
);

fn task_status(state: &ProcessState) -> TaskStatus {
    match state {
        ProcessState::Created => TaskStatus::Created,
        ProcessState::Running => TaskStatus::Running,
        ProcessState::Paused => TaskStatus::Paused,
        ProcessState::Stopped(_) => TaskStatus::Stopped,
    }
}

#[tonic::async_trait]
impl Task for Daemon {
    async fn create(
        &self,
        req: Request<CreateTaskRequest>,
    ) -> Result<Response<CreateTaskResponse>, Status> {
        let key = key_of(&req, &req.get_ref().id)?;
        let pid = self.create_container(key, req.into_inner()).await?;
        Ok(Response::new(CreateTaskResponse { pid }))
    }

    async fn start(&self, req: Request<StartRequest>) -> Result<Response<StartResponse>, Status> {
        let key = key_of(&req, &req.get_ref().id)?;
        let entry = self.entry(&key)?;
        let exec_id = &req.get_ref().exec_id;
        let pid = if exec_id.is_empty() {
            self.start_init(&key, &entry).await?
        } else {
            self.start_exec(&key, &entry, exec_id).await?
        };
        Ok(Response::new(StartResponse { pid }))
    }

    async fn state(&self, req: Request<StateRequest>) -> Result<Response<StateResponse>, Status> {
        let key = key_of(&req, &req.get_ref().id)?;
        let exec_id = req.get_ref().exec_id.clone();
        let entry = self.entry(&key)?;
        let record = lock(&entry.record);
        let process = if exec_id.is_empty() {
            &record.container.init
        } else {
            record.container.exec(&exec_id).map_err(errors::refused)?
        };
        let exit = process.exit();
        Ok(Response::new(StateResponse {
            id: key.1.to_string(),
            bundle: record.bundle.display().to_string(),
            pid: process.pid.unwrap_or(0) as u32,
            status: task_status(&process.state) as i32,
            stdin: record.stdin.clone(),
            stdout: record.stdout.clone(),
            stderr: record.stderr.clone(),
            terminal: record.terminal,
            exit_status: exit.map_or(0, |e| e.code_for_containerd()),
            exited_at: exit.map(|e| timestamp(e.at)),
            exec_id,
        }))
    }

    async fn kill(&self, req: Request<KillRequest>) -> Result<Response<()>, Status> {
        let key = key_of(&req, &req.get_ref().id)?;
        let entry = self.entry(&key)?;
        let r = req.into_inner();
        if r.exec_id.is_empty() {
            self.kill_init(&key, &entry, r.signal, r.all).await?;
        } else {
            self.kill_exec(&entry, &r.exec_id, r.signal).await?;
        }
        Ok(Response::new(()))
    }

    async fn wait(&self, req: Request<WaitRequest>) -> Result<Response<WaitResponse>, Status> {
        let key = key_of(&req, &req.get_ref().id)?;
        let entry = self.entry(&key)?;
        let exec_id = &req.get_ref().exec_id;
        let exit = if exec_id.is_empty() {
            *entry.init_exit.wait().await
        } else {
            lock(&entry.record)
                .container
                .exec(exec_id)
                .map_err(errors::refused)?;
            let slot = lock(&entry.execs)
                .entry(exec_id.clone())
                .or_default()
                .clone();
            *slot.exit.wait().await
        };
        Ok(Response::new(WaitResponse {
            exit_status: exit.code_for_containerd(),
            exited_at: Some(timestamp(exit.at)),
        }))
    }

    async fn delete(
        &self,
        req: Request<DeleteRequest>,
    ) -> Result<Response<DeleteResponse>, Status> {
        let key = key_of(&req, &req.get_ref().id)?;
        let entry = self.entry(&key)?;
        let exec_id = &req.get_ref().exec_id;
        let deleted = if exec_id.is_empty() {
            self.delete_container(&key, &entry).await?
        } else {
            self.delete_exec(&key, &entry, exec_id).await?
        };
        Ok(Response::new(deleted))
    }

    async fn pids(&self, req: Request<PidsRequest>) -> Result<Response<PidsResponse>, Status> {
        let key = key_of(&req, &req.get_ref().id)?;
        let entry = self.entry(&key)?;
        let (stopped, init_pid) = {
            let record = lock(&entry.record);
            let init = &record.container.init;
            (
                matches!(init.state, ProcessState::Stopped(_)),
                init.pid.unwrap_or(0),
            )
        };
        // A stopped task still lists its init: a restarted containerd 1.7 takes a task whose
        // shim reports no process for one that was never created, and deletes it ("cleaning
        // leaked shim process") before anyone could read its exit status.
        let pids = if stopped {
            vec![init_pid]
        } else if let Some((pod, init)) = super::fold::joined(&entry) {
            // `runc ps` would list the whole pod cgroup: its PID namespace's only.
            super::fold::container_pids(pod, init).await?
        } else {
            entry.runc.ps(key.1.as_str()).await.map_err(errors::runc)?
        };
        let processes = pids
            .into_iter()
            .map(|pid| ProcessInfo {
                pid: pid as u32,
                info: None,
            })
            .collect();
        Ok(Response::new(PidsResponse { processes }))
    }

    async fn pause(&self, req: Request<PauseRequest>) -> Result<Response<()>, Status> {
        let key = key_of(&req, &req.get_ref().id)?;
        self.set_paused(key, true).await.map(Response::new)
    }

    async fn resume(&self, req: Request<ResumeRequest>) -> Result<Response<()>, Status> {
        let key = key_of(&req, &req.get_ref().id)?;
        self.set_paused(key, false).await.map(Response::new)
    }

    async fn update(&self, req: Request<UpdateTaskRequest>) -> Result<Response<()>, Status> {
        let key = key_of(&req, &req.get_ref().id)?;
        let entry = self.entry(&key)?;
        let any = req
            .into_inner()
            .resources
            .ok_or_else(|| Status::invalid_argument("update without resources"))?;
        // containerd packs the OCI LinuxResources as JSON.
        let resources: oci_spec::runtime::LinuxResources = serde_json::from_slice(&any.value)
            .map_err(|e| {
                Status::invalid_argument(format!(
                    "resources ({}) are not OCI LinuxResources JSON: {e}",
                    any.type_url
                ))
            })?;
        if self.update_folded(&key, &entry, &resources).await? {
            return Ok(Response::new(()));
        }
        entry
            .runc
            .update(key.1.as_str(), &resources)
            .await
            .map_err(errors::runc)?;
        Ok(Response::new(()))
    }

    async fn connect(
        &self,
        req: Request<ConnectRequest>,
    ) -> Result<Response<ConnectResponse>, Status> {
        let key = key_of(&req, &req.get_ref().id)?;
        let task_pid = self
            .entry(&key)
            .ok()
            .and_then(|e| lock(&e.record).container.init.pid);
        Ok(Response::new(ConnectResponse {
            shim_pid: std::process::id(),
            task_pid: task_pid.unwrap_or(0) as u32,
            version: format!("shimless {}", env!("CARGO_PKG_VERSION")),
        }))
    }

    async fn shutdown(&self, _req: Request<ShutdownRequest>) -> Result<Response<()>, Status> {
        // containerd calls this after deleting each task; one daemon serves every container, so
        // it never stops here.
        Ok(Response::new(()))
    }

    async fn exec(&self, req: Request<ExecProcessRequest>) -> Result<Response<()>, Status> {
        let key = key_of(&req, &req.get_ref().id)?;
        self.add_exec(key, req.into_inner()).await?;
        Ok(Response::new(()))
    }

    async fn resize_pty(&self, req: Request<ResizePtyRequest>) -> Result<Response<()>, Status> {
        let key = key_of(&req, &req.get_ref().id)?;
        let entry = self.entry(&key)?;
        let r = req.into_inner();
        let (Ok(height), Ok(width)) = (u16::try_from(r.height), u16::try_from(r.width)) else {
            return Err(Status::invalid_argument(format!(
                "window {}x{} is larger than a terminal can be (65535)",
                r.width, r.height
            )));
        };
        let resized = entry.with_console(&r.exec_id, |c| c.resize(height, width))?;
        resized.map_err(|e| errors::internal("resize the terminal", e))?;
        Ok(Response::new(()))
    }

    async fn close_io(&self, req: Request<CloseIoRequest>) -> Result<Response<()>, Status> {
        let key = key_of(&req, &req.get_ref().id)?;
        let entry = self.entry(&key)?;
        let r = req.into_inner();
        if r.stdin {
            // Without a terminal the process holds containerd's stdin FIFO itself and the
            // daemon holds no writer: containerd closing its end is what the process sees.
            // Nothing to do then.
            let _ = entry.with_console(&r.exec_id, |c| c.close_stdin());
        }
        Ok(Response::new(()))
    }

    async fn stats(&self, req: Request<StatsRequest>) -> Result<Response<StatsResponse>, Status> {
        let key = key_of(&req, &req.get_ref().id)?;
        let entry = self.entry(&key)?;
        let stats = entry
            .runc
            .stats(key.1.as_str())
            .await
            .map_err(errors::runc)?;
        Ok(Response::new(stats::response(&stats)))
    }

    async fn checkpoint(
        &self,
        _req: Request<CheckpointTaskRequest>,
    ) -> Result<Response<()>, Status> {
        let criu = std::env::var_os("PATH")
            .is_some_and(|p| std::env::split_paths(&p).any(|d| d.join("criu").is_file()));
        let why = if criu {
            "Checkpoint (criu is installed, but shimless does not drive it yet)"
        } else {
            "Checkpoint (it needs criu, which is not installed)"
        };
        Err(errors::unimplemented(why))
    }
}
