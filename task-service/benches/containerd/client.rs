//! A client of containerd's Containers and Tasks services, and running jobs a few at a time.

use super::api::containers::containers_client::ContainersClient;
use super::api::containers::{
    Container, CreateContainerRequest, DeleteContainerRequest, container,
};
use super::api::tasks::tasks_client::TasksClient;
use super::api::tasks::{
    CreateTaskRequest, DeleteTaskRequest, KillRequest, StartRequest, WaitRequest,
};
use super::{NS, RUNC_OPTIONS_TYPE, SPEC_TYPE};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};
use task_service::grpc::Channel;

/// A client of one containerd: containers, tasks, and how to make one container.
#[derive(Clone)]
pub(crate) struct Client {
    pub(crate) containers: ContainersClient<Channel>,
    pub(crate) tasks: TasksClient<Channel>,
    pub(crate) rootfs: PathBuf,
    /// `BinaryName` for the runc options (`crun`), or none.
    pub(crate) binary: Option<String>,
}

pub(crate) fn namespaced<T>(msg: T) -> tonic::Request<T> {
    let mut req = tonic::Request::new(msg);
    req.metadata_mut().insert(
        "containerd-namespace",
        tonic::metadata::MetadataValue::from_static(NS),
    );
    req.set_timeout(Duration::from_secs(120));
    req
}

impl Client {
    pub(crate) async fn connect(socket: &Path, rootfs: PathBuf) -> Result<Client, String> {
        let channel = task_service::grpc::connect(socket)
            .await
            .map_err(|e| format!("connect to {}: {e}", socket.display()))?;
        let origin: http::Uri = "http://localhost".parse().map_err(|e| format!("{e}"))?;
        Ok(Client {
            containers: ContainersClient::with_origin(channel.clone(), origin.clone()),
            tasks: TasksClient::with_origin(channel, origin),
            rootfs,
            binary: None,
        })
    }

    /// The OCI spec (JSON) of container `id`.
    pub(crate) fn spec(&self, id: &str) -> Vec<u8> {
        serde_json::json!({
            "ociVersion": "1.1.0",
            "process": {
                "terminal": false,
                "user": {"uid": 0, "gid": 0},
                "args": ["sleep", "1000000"],
                "env": ["PATH=/bin"],
                "cwd": "/",
                "noNewPrivileges": true,
            },
            "root": {"path": self.rootfs, "readonly": true},
            "hostname": "bench",
            "mounts": [
                {"destination": "/proc", "type": "proc", "source": "proc",
                 "options": ["nosuid", "noexec", "nodev"]},
                {"destination": "/dev", "type": "tmpfs", "source": "tmpfs",
                 "options": ["nosuid", "strictatime", "mode=755", "size=65536k"]},
            ],
            "linux": {
                "namespaces": [{"type": "pid"}, {"type": "ipc"}, {"type": "uts"}, {"type": "mount"}],
                "cgroupsPath": format!("/{NS}/{id}"),
            },
        })
        .to_string()
        .into_bytes()
    }

    pub(crate) fn runtime_options(&self) -> Option<prost_types::Any> {
        use prost::Message;
        let binary = self.binary.as_ref()?;
        let options = task_service::api::containerd::runc::v1::Options {
            binary_name: binary.clone(),
            ..Default::default()
        };
        Some(prost_types::Any {
            type_url: RUNC_OPTIONS_TYPE.into(),
            value: options.encode_to_vec(),
        })
    }

    /// Creates and starts container `id` through `runtime`.
    pub(crate) async fn run(&mut self, id: &str, runtime: &str) -> Result<(), String> {
        let container = Container {
            id: id.into(),
            runtime: Some(container::Runtime {
                name: runtime.into(),
                options: self.runtime_options(),
            }),
            spec: Some(prost_types::Any {
                type_url: SPEC_TYPE.into(),
                value: self.spec(id),
            }),
            ..Default::default()
        };
        self.containers
            .create(namespaced(CreateContainerRequest {
                container: Some(container),
            }))
            .await
            .map_err(|e| format!("Containers.Create {id}: {}", e.message()))?;
        self.tasks
            .create(namespaced(CreateTaskRequest {
                container_id: id.into(),
                ..Default::default()
            }))
            .await
            .map_err(|e| format!("Tasks.Create {id} ({runtime}): {}", e.message()))?;
        self.tasks
            .start(namespaced(StartRequest {
                container_id: id.into(),
                exec_id: String::new(),
            }))
            .await
            .map_err(|e| format!("Tasks.Start {id}: {}", e.message()))?;
        Ok(())
    }

    /// Kills (SIGKILL) container `id`, waits for its exit, deletes its task and itself.
    pub(crate) async fn remove(&mut self, id: &str) -> Result<(), String> {
        self.tasks
            .kill(namespaced(KillRequest {
                container_id: id.into(),
                signal: 9,
                ..Default::default()
            }))
            .await
            .map_err(|e| format!("Tasks.Kill {id}: {}", e.message()))?;
        let exit = self
            .tasks
            .wait(namespaced(WaitRequest {
                container_id: id.into(),
                exec_id: String::new(),
            }))
            .await
            .map_err(|e| format!("Tasks.Wait {id}: {}", e.message()))?
            .into_inner();
        if exit.exit_status != 137 {
            return Err(format!(
                "{id} exited with {} after SIGKILL, not 137",
                exit.exit_status
            ));
        }
        self.tasks
            .delete(namespaced(DeleteTaskRequest {
                container_id: id.into(),
            }))
            .await
            .map_err(|e| format!("Tasks.Delete {id}: {}", e.message()))?;
        self.containers
            .delete(namespaced(DeleteContainerRequest { id: id.into() }))
            .await
            .map_err(|e| format!("Containers.Delete {id}: {}", e.message()))?;
        Ok(())
    }
}

/// One lifecycle run: `n` containers `{tag}-{i}`, `parallel` at a time, through `runtime`
/// (create + start, then kill + wait + delete); how long it took.
pub(crate) async fn lifecycle(
    client: &Client,
    runtime: &str,
    tag: &str,
    n: usize,
    parallel: usize,
) -> Result<Duration, String> {
    let started = Instant::now();
    for_each(n, parallel, |i| {
        let mut client = client.clone();
        let id = format!("{tag}-{i}");
        async move {
            client.run(&id, runtime).await?;
            client.remove(&id).await
        }
    })
    .await?;
    Ok(started.elapsed())
}

/// Runs `job(i)` for every i in 0..n, `parallel` at a time; the first error stops new jobs.
pub(crate) async fn for_each<F, Fut>(n: usize, parallel: usize, job: F) -> Result<(), String>
where
    F: Fn(usize) -> Fut,
    Fut: std::future::Future<Output = Result<(), String>>,
{
    let next = AtomicUsize::new(0);
    let failed = std::sync::Mutex::new(None::<String>);
    let worker = || async {
        loop {
            let i = next.fetch_add(1, Ordering::Relaxed);
            if i >= n || failed.lock().map(|f| f.is_some()).unwrap_or(true) {
                return;
            }
            if let Err(e) = job(i).await {
                if let Ok(mut f) = failed.lock() {
                    f.get_or_insert(e);
                }
                return;
            }
        }
    };
    let mut workers: Vec<_> = (0..parallel.max(1)).map(|_| Box::pin(worker())).collect();
    futures_lite::future::poll_fn(|cx| {
        workers.retain_mut(|w| w.as_mut().poll(cx).is_pending());
        if workers.is_empty() {
            std::task::Poll::Ready(())
        } else {
            std::task::Poll::Pending
        }
    })
    .await;
    drop(workers);
    match failed.into_inner() {
        Ok(Some(e)) => Err(e),
        _ => Ok(()),
    }
}
