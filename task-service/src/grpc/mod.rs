//! gRPC over a unix socket on smol: hyper's HTTP/2 server and client, tonic's generated
//! services and codec, and no tokio runtime.
//!
//! tonic's own transport would bring tokio; instead the daemon accepts on a smol
//! [`UnixListener`](smol::net::unix::UnixListener), runs one hyper HTTP/2 connection task per
//! client on a smol executor, and hands requests to a tonic-generated service. Without tonic's
//! transport nobody enforces `grpc-timeout`, so [`serve`] does (see [`deadline`]), and nobody
//! checks who connects, so [`serve`] checks the peer's uid with `SO_PEERCRED` (see
//! [`listen`]).
//!
//! ```no_run
//! use std::sync::Arc;
//! use task_service::grpc::{self, ServeConfig};
//! # fn service() -> task_service::api::containerd::task::v3::task_server::TaskServer<MyTask> { todo!() }
//! # struct MyTask;
//! # #[tonic::async_trait] impl task_service::api::containerd::task::v3::task_server::Task for MyTask {
//! #   async fn state(&self, r: tonic::Request<task_service::api::containerd::task::v3::StateRequest>) -> Result<tonic::Response<task_service::api::containerd::task::v3::StateResponse>, tonic::Status> { todo!() }
//! #   async fn create(&self, r: tonic::Request<task_service::api::containerd::task::v3::CreateTaskRequest>) -> Result<tonic::Response<task_service::api::containerd::task::v3::CreateTaskResponse>, tonic::Status> { todo!() }
//! #   async fn start(&self, r: tonic::Request<task_service::api::containerd::task::v3::StartRequest>) -> Result<tonic::Response<task_service::api::containerd::task::v3::StartResponse>, tonic::Status> { todo!() }
//! #   async fn delete(&self, r: tonic::Request<task_service::api::containerd::task::v3::DeleteRequest>) -> Result<tonic::Response<task_service::api::containerd::task::v3::DeleteResponse>, tonic::Status> { todo!() }
//! #   async fn pids(&self, r: tonic::Request<task_service::api::containerd::task::v3::PidsRequest>) -> Result<tonic::Response<task_service::api::containerd::task::v3::PidsResponse>, tonic::Status> { todo!() }
//! #   async fn pause(&self, r: tonic::Request<task_service::api::containerd::task::v3::PauseRequest>) -> Result<tonic::Response<()>, tonic::Status> { todo!() }
//! #   async fn resume(&self, r: tonic::Request<task_service::api::containerd::task::v3::ResumeRequest>) -> Result<tonic::Response<()>, tonic::Status> { todo!() }
//! #   async fn checkpoint(&self, r: tonic::Request<task_service::api::containerd::task::v3::CheckpointTaskRequest>) -> Result<tonic::Response<()>, tonic::Status> { todo!() }
//! #   async fn kill(&self, r: tonic::Request<task_service::api::containerd::task::v3::KillRequest>) -> Result<tonic::Response<()>, tonic::Status> { todo!() }
//! #   async fn exec(&self, r: tonic::Request<task_service::api::containerd::task::v3::ExecProcessRequest>) -> Result<tonic::Response<()>, tonic::Status> { todo!() }
//! #   async fn resize_pty(&self, r: tonic::Request<task_service::api::containerd::task::v3::ResizePtyRequest>) -> Result<tonic::Response<()>, tonic::Status> { todo!() }
//! #   async fn close_io(&self, r: tonic::Request<task_service::api::containerd::task::v3::CloseIoRequest>) -> Result<tonic::Response<()>, tonic::Status> { todo!() }
//! #   async fn update(&self, r: tonic::Request<task_service::api::containerd::task::v3::UpdateTaskRequest>) -> Result<tonic::Response<()>, tonic::Status> { todo!() }
//! #   async fn wait(&self, r: tonic::Request<task_service::api::containerd::task::v3::WaitRequest>) -> Result<tonic::Response<task_service::api::containerd::task::v3::WaitResponse>, tonic::Status> { todo!() }
//! #   async fn stats(&self, r: tonic::Request<task_service::api::containerd::task::v3::StatsRequest>) -> Result<tonic::Response<task_service::api::containerd::task::v3::StatsResponse>, tonic::Status> { todo!() }
//! #   async fn connect(&self, r: tonic::Request<task_service::api::containerd::task::v3::ConnectRequest>) -> Result<tonic::Response<task_service::api::containerd::task::v3::ConnectResponse>, tonic::Status> { todo!() }
//! #   async fn shutdown(&self, r: tonic::Request<task_service::api::containerd::task::v3::ShutdownRequest>) -> Result<tonic::Response<()>, tonic::Status> { todo!() }
//! # }
//! let ex = Arc::new(smol::Executor::new());
//! smol::block_on(ex.run(async {
//!     let listener = grpc::listen::bind("/run/shimless/shimless.sock")?;
//!     grpc::serve(listener, service(), ex.clone(), ServeConfig::default()).await
//! }))?;
//! # Ok::<(), std::io::Error>(())
//! ```

pub mod accept;
pub mod channel;
pub mod deadline;
pub use crate::listen;
pub mod observe;
mod serve;

pub use channel::{Channel, connect};
pub use serve::{ServeConfig, serve};
