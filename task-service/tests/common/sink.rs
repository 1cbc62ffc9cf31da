//! What containerd's Events service receives, for tests of the daemon alone: a gRPC server on a
//! unix socket answering `containerd.services.events.v1.Events/Forward` (as containerd does)
//! and keeping every envelope, in order.

use std::path::PathBuf;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use task_service::api::containerd::services::events::v1 as pb;
use tonic::{Request, Response, Status};

pub struct EventSink {
    pub socket: PathBuf,
    received: Arc<Mutex<Vec<pb::Envelope>>>,
    _dir: tempfile::TempDir,
}

#[derive(Clone)]
struct Recorder(Arc<Mutex<Vec<pb::Envelope>>>);

type Envelopes = Pin<Box<dyn futures_lite::Stream<Item = Result<pb::Envelope, Status>> + Send>>;

#[tonic::async_trait]
impl pb::events_server::Events for Recorder {
    async fn publish(&self, _req: Request<pb::PublishRequest>) -> Result<Response<()>, Status> {
        Err(Status::unimplemented("the sink only takes Forward"))
    }

    async fn forward(&self, req: Request<pb::ForwardRequest>) -> Result<Response<()>, Status> {
        let envelope = req
            .into_inner()
            .envelope
            .ok_or_else(|| Status::invalid_argument("no envelope"))?;
        self.0.lock().unwrap().push(envelope);
        Ok(Response::new(()))
    }

    type SubscribeStream = Envelopes;

    async fn subscribe(
        &self,
        _req: Request<pb::SubscribeRequest>,
    ) -> Result<Response<Envelopes>, Status> {
        Err(Status::unimplemented("the sink only takes Forward"))
    }
}

impl EventSink {
    /// Serves on a new socket from a thread of its own, for the life of the test process.
    pub fn start() -> EventSink {
        EventSink::start_in(tempfile::tempdir().unwrap())
    }

    /// Where [`EventSink::start_in`] serves in `dir`: a containerd address nothing listens on
    /// until then (containerd away).
    pub fn socket_in(dir: &tempfile::TempDir) -> PathBuf {
        dir.path().join("containerd.sock")
    }

    /// Serves on [`EventSink::socket_in`] `dir` (containerd back).
    pub fn start_in(dir: tempfile::TempDir) -> EventSink {
        let socket = EventSink::socket_in(&dir);
        let received = Arc::new(Mutex::new(Vec::new()));
        let listener = task_service::grpc::listen::bind(&socket).unwrap();
        let service = pb::events_server::EventsServer::new(Recorder(received.clone()));
        std::thread::spawn(move || {
            let ex = Arc::new(smol::Executor::new());
            let _ = smol::block_on(ex.run(task_service::grpc::serve(
                listener,
                service,
                ex.clone(),
                task_service::grpc::ServeConfig::default(),
            )));
        });
        EventSink {
            socket,
            received,
            _dir: dir,
        }
    }

    /// Every envelope forwarded so far.
    pub fn received(&self) -> Vec<pb::Envelope> {
        self.received.lock().unwrap().clone()
    }
}
