//! The gRPC transport for real: a Task service served by `grpc::serve` on a unix socket, called
//! by the tonic-generated client through `task_service::client` (over `grpc::connect`).

use std::os::unix::fs::{FileTypeExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;
use task_service::api::containerd::task::v3::task_server::{Task, TaskServer};
use task_service::api::containerd::task::v3::*;
use task_service::client::{Client, TaskClient};
use task_service::grpc::{self, ServeConfig};
use tonic::{Code, Request, Response, Status};

/// A service for the transport tests: `connect` and `state` answer, `create` validates, the
/// rest are unimplemented. A `state` call for id "slow" sleeps for a minute, and records
/// whether its future was dropped.
#[derive(Default)]
struct Probe {
    slow_call_dropped: Arc<AtomicBool>,
}

struct SetOnDrop(Arc<AtomicBool>);
impl Drop for SetOnDrop {
    fn drop(&mut self) {
        self.0.store(true, Ordering::SeqCst);
    }
}

#[tonic::async_trait]
impl Task for Probe {
    async fn connect(
        &self,
        req: Request<ConnectRequest>,
    ) -> Result<Response<ConnectResponse>, Status> {
        let ns = req
            .metadata()
            .get("containerd-namespace")
            .and_then(|v| v.to_str().ok());
        Ok(Response::new(ConnectResponse {
            shim_pid: std::process::id(),
            task_pid: 0,
            version: format!("probe ns={} id={}", ns.unwrap_or("-"), req.get_ref().id),
        }))
    }
    async fn state(&self, req: Request<StateRequest>) -> Result<Response<StateResponse>, Status> {
        if req.get_ref().id == "slow" {
            let _guard = SetOnDrop(self.slow_call_dropped.clone());
            smol::Timer::after(Duration::from_secs(60)).await;
        }
        Ok(Response::new(StateResponse {
            id: req.into_inner().id,
            ..Default::default()
        }))
    }
    async fn create(
        &self,
        req: Request<CreateTaskRequest>,
    ) -> Result<Response<CreateTaskResponse>, Status> {
        if req.get_ref().id.is_empty() {
            return Err(Status::invalid_argument("container id is empty"));
        }
        Ok(Response::new(CreateTaskResponse { pid: 1 }))
    }
    async fn start(&self, _: Request<StartRequest>) -> Result<Response<StartResponse>, Status> {
        Err(Status::unimplemented("start"))
    }
    async fn delete(&self, _: Request<DeleteRequest>) -> Result<Response<DeleteResponse>, Status> {
        Err(Status::unimplemented("delete"))
    }
    async fn pids(&self, _: Request<PidsRequest>) -> Result<Response<PidsResponse>, Status> {
        Err(Status::unimplemented("pids"))
    }
    async fn pause(&self, _: Request<PauseRequest>) -> Result<Response<()>, Status> {
        Err(Status::unimplemented("pause"))
    }
    async fn resume(&self, _: Request<ResumeRequest>) -> Result<Response<()>, Status> {
        Err(Status::unimplemented("resume"))
    }
    async fn checkpoint(&self, _: Request<CheckpointTaskRequest>) -> Result<Response<()>, Status> {
        Err(Status::unimplemented("checkpoint"))
    }
    async fn kill(&self, _: Request<KillRequest>) -> Result<Response<()>, Status> {
        Err(Status::unimplemented("kill"))
    }
    async fn exec(&self, _: Request<ExecProcessRequest>) -> Result<Response<()>, Status> {
        Err(Status::unimplemented("exec"))
    }
    async fn resize_pty(&self, _: Request<ResizePtyRequest>) -> Result<Response<()>, Status> {
        Err(Status::unimplemented("resize_pty"))
    }
    async fn close_io(&self, _: Request<CloseIoRequest>) -> Result<Response<()>, Status> {
        Err(Status::unimplemented("close_io"))
    }
    async fn update(&self, _: Request<UpdateTaskRequest>) -> Result<Response<()>, Status> {
        Err(Status::unimplemented("update"))
    }
    async fn wait(&self, _: Request<WaitRequest>) -> Result<Response<WaitResponse>, Status> {
        Err(Status::unimplemented("wait"))
    }
    async fn stats(&self, _: Request<StatsRequest>) -> Result<Response<StatsResponse>, Status> {
        Err(Status::unimplemented("stats"))
    }
    async fn shutdown(&self, _: Request<ShutdownRequest>) -> Result<Response<()>, Status> {
        Err(Status::unimplemented("shutdown"))
    }
}

struct Server {
    _dir: tempfile::TempDir,
    socket: PathBuf,
    slow_call_dropped: Arc<AtomicBool>,
}

fn start(config: ServeConfig) -> Server {
    let dir = tempfile::tempdir().unwrap();
    let socket = dir.path().join("run/task.sock");
    let probe = Probe::default();
    let slow_call_dropped = probe.slow_call_dropped.clone();
    let service = TaskServer::new(probe).max_decoding_message_size(64 * 1024);
    let listener = grpc::listen::bind(&socket).unwrap();
    std::thread::spawn(move || {
        let ex = Arc::new(smol::Executor::new());
        let _ = smol::block_on(ex.run(grpc::serve(listener, service, ex.clone(), config)));
    });
    Server {
        _dir: dir,
        socket,
        slow_call_dropped,
    }
}

async fn client(socket: &Path) -> TaskClient {
    Client::connect(socket).await.unwrap().task()
}

#[test]
fn calls_and_their_errors_cross_the_socket_intact() {
    let server = start(ServeConfig::default());
    smol::block_on(async {
        let mut c = client(&server.socket).await;
        let mut req = Request::new(ConnectRequest { id: "web".into() });
        req.metadata_mut()
            .insert("containerd-namespace", "k8s.io".parse().unwrap());
        let reply = c.connect(req).await.unwrap().into_inner();
        assert_eq!(reply.shim_pid, std::process::id());
        assert_eq!(reply.version, "probe ns=k8s.io id=web");

        let err = c.create(CreateTaskRequest::default()).await.unwrap_err();
        assert_eq!(
            (err.code(), err.message()),
            (Code::InvalidArgument, "container id is empty")
        );
        let err = c
            .pause(PauseRequest { id: "web".into() })
            .await
            .unwrap_err();
        assert_eq!((err.code(), err.message()), (Code::Unimplemented, "pause"));
    });
}

#[test]
fn the_socket_is_owner_only_and_replaces_a_stale_one() {
    let server = start(ServeConfig::default());
    let meta = std::fs::metadata(&server.socket).unwrap();
    assert!(meta.file_type().is_socket());
    assert_eq!(meta.permissions().mode() & 0o777, 0o600);

    // A socket left by a dead daemon is replaced; a regular file is never clobbered.
    let dir = tempfile::tempdir().unwrap();
    let stale = dir.path().join("stale.sock");
    drop(std::os::unix::net::UnixListener::bind(&stale).unwrap());
    assert!(grpc::listen::bind(&stale).is_ok());
    let file = dir.path().join("precious");
    std::fs::write(&file, "data").unwrap();
    let err = grpc::listen::bind(&file).unwrap_err();
    assert_eq!(err.kind(), std::io::ErrorKind::AlreadyExists);
    assert!(err.to_string().contains("is not a socket"), "{err}");
    assert_eq!(std::fs::read_to_string(&file).unwrap(), "data");
}

#[test]
fn a_call_past_its_grpc_timeout_is_answered_deadline_exceeded_and_dropped() {
    let server = start(ServeConfig::default());
    smol::block_on(async {
        let mut c = client(&server.socket).await;
        let mut req = Request::new(StateRequest {
            id: "slow".into(),
            ..Default::default()
        });
        req.set_timeout(Duration::from_millis(100));
        let err = c.state(req).await.unwrap_err();
        assert_eq!(err.code(), Code::DeadlineExceeded, "{err:?}");
        assert!(err.message().contains("grpc-timeout"), "{}", err.message());
        // The same connection still serves calls.
        let ok = c
            .state(StateRequest {
                id: "fast".into(),
                ..Default::default()
            })
            .await
            .unwrap();
        assert_eq!(ok.into_inner().id, "fast");
    });
    assert!(
        server.slow_call_dropped.load(Ordering::SeqCst),
        "the handler must be cancelled"
    );
}

#[test]
fn a_caller_whose_uid_is_not_allowed_is_refused_with_the_reason() {
    let me = rustix::process::geteuid().as_raw();
    let server = start(ServeConfig {
        allowed_uids: vec![me.wrapping_add(4242)],
        ..ServeConfig::default()
    });
    smol::block_on(async {
        let mut c = client(&server.socket).await;
        let err = c
            .connect(ConnectRequest { id: "web".into() })
            .await
            .unwrap_err();
        assert_eq!(err.code(), Code::PermissionDenied);
        assert!(
            err.message()
                .contains(&format!("uid {me} may not use this socket")),
            "{}",
            err.message()
        );
    });
}

#[test]
fn an_oversized_message_is_refused_not_buffered() {
    let server = start(ServeConfig::default());
    smol::block_on(async {
        let mut c = client(&server.socket).await;
        let huge = CreateTaskRequest {
            id: "x".repeat(100 * 1024),
            ..Default::default()
        };
        let err = c.create(huge).await.unwrap_err();
        assert_eq!(err.code(), Code::OutOfRange, "{err:?}");
        // The connection survives it.
        assert!(c.connect(ConnectRequest { id: "web".into() }).await.is_ok());
    });
}

#[test]
fn a_namespace_header_that_is_not_ascii_is_refused_not_taken_as_default() {
    let server = start(ServeConfig::default());
    smol::block_on(async {
        let mut c = client(&server.socket).await;
        let mut req = Request::new(ConnectRequest { id: "web".into() });
        let value = tonic::metadata::AsciiMetadataValue::try_from("k8s.\u{e9}".as_bytes()).unwrap();
        req.metadata_mut().insert("containerd-namespace", value);
        let err = c.connect(req).await.unwrap_err();
        assert_eq!(err.code(), Code::InvalidArgument, "{err:?}");
        assert!(
            err.message().contains("containerd-namespace") && err.message().contains("k8s."),
            "{}",
            err.message()
        );
        // An ASCII one still reaches the service.
        let mut req = Request::new(ConnectRequest { id: "web".into() });
        req.metadata_mut()
            .insert("containerd-namespace", "k8s.io".parse().unwrap());
        let version = c.connect(req).await.unwrap().into_inner().version;
        assert_eq!(version, "probe ns=k8s.io id=web");
    });
}

#[test]
fn a_connection_past_its_stream_bound_waits_for_a_call_to_end() {
    let server = start(ServeConfig {
        max_streams_per_connection: 2,
        ..ServeConfig::default()
    });
    smol::block_on(async {
        let c = client(&server.socket).await;
        // Make sure the server's SETTINGS reached the client before the calls start.
        c.clone()
            .connect(ConnectRequest { id: "warm".into() })
            .await
            .unwrap();
        let slow = |c: &TaskClient| {
            let mut c = c.clone();
            smol::spawn(async move {
                let mut req = Request::new(StateRequest {
                    id: "slow".into(),
                    ..Default::default()
                });
                req.set_timeout(Duration::from_millis(1500));
                c.state(req).await
            })
        };
        let (a, b) = (slow(&c), slow(&c));
        smol::Timer::after(Duration::from_millis(200)).await;
        let started = std::time::Instant::now();
        let mut third = c.clone();
        let answered = third
            .connect(ConnectRequest { id: "third".into() })
            .await
            .unwrap();
        let waited = started.elapsed();
        assert_eq!(answered.into_inner().version, "probe ns=- id=third");
        assert_eq!(a.await.unwrap_err().code(), Code::DeadlineExceeded);
        assert_eq!(b.await.unwrap_err().code(), Code::DeadlineExceeded);
        assert!(
            waited >= Duration::from_millis(900),
            "the third call ran beside two open ones after {waited:?}: the bound is not applied"
        );
    });
}
