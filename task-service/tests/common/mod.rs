//! What the task-service test binaries share: a client on the daemon's socket and the calls
//! every test makes the same way, in a given containerd namespace.

#![allow(dead_code)]

/// Each test once per containerd: `<name>::containerd_1_7` and `<name>::containerd_2_1`
/// (a binary that declares `#[macro_use] mod common;` writes `on_both!(test_a, test_b);`).
#[allow(unused_macros)] // not every test binary runs on both containerds
macro_rules! on_both {
    ($($name:ident),* $(,)?) => {$(
        mod $name {
            use integration::containerd::Version;
            #[test]
            fn containerd_1_7() {
                super::$name(Version::V1_7)
            }
            #[test]
            fn containerd_2_1() {
                super::$name(Version::V2_1)
            }
        }
    )*};
}

pub mod processes;
pub mod shimless;
#[allow(unused_imports)] // not every test binary uses it
pub use shimless::alive;
pub mod sink;

use std::path::Path;
use task_service::api::containerd::task::v3::*;
use tonic::Request;

pub type Client = task_service::client::TaskClient;

/// What a test that runs `shimlessd` with real containers needs (skipped by hand, a failure
/// under `SHIMLESS_REQUIRE_PRIVILEGED=1`).
pub fn needs_daemon() -> Option<()> {
    use integration::Need;
    integration::require(&[
        Need::Root,
        Need::Btf,
        Need::Bpffs,
        Need::Program("runc"),
        Need::File("/bin/busybox"),
    ])
}

/// A `Daemon` made from `config` and served on `config.socket` by a thread of its own, in this
/// test process (what a test that inspects the daemon's state directly needs).
pub fn serve_in_process(config: &task_service::config::Config) -> task_service::daemon::Daemon {
    use std::sync::Arc;
    use task_service::grpc;
    let ex = Arc::new(smol::Executor::new());
    let daemon = task_service::daemon::Daemon::new(config.clone(), ex.clone()).unwrap();
    let listener = grpc::listen::bind(&config.socket).unwrap();
    let server = daemon.clone().into_server();
    std::thread::spawn(move || {
        let _ = smol::block_on(ex.run(grpc::serve(
            listener,
            server,
            ex.clone(),
            grpc::ServeConfig::default(),
        )));
    });
    daemon
}

/// A Task client on the daemon's socket.
pub async fn client(socket: &Path) -> Client {
    task_service::client::Client::connect(socket)
        .await
        .unwrap()
        .task()
}

/// `msg` as a request in containerd namespace `ns`.
pub fn request<T>(ns: &str, msg: T) -> Request<T> {
    task_service::client::namespaced(ns, msg)
}

/// `Create` from `bundle` with no stdio; the init's PID.
pub async fn create(c: &mut Client, ns: &str, id: impl Into<String>, bundle: &Path) -> u32 {
    c.create(request(
        ns,
        CreateTaskRequest {
            id: id.into(),
            bundle: bundle.display().to_string(),
            ..Default::default()
        },
    ))
    .await
    .unwrap()
    .into_inner()
    .pid
}

/// `Start` of the init.
pub async fn start(c: &mut Client, ns: &str, id: impl Into<String>) -> u32 {
    c.start(request(
        ns,
        StartRequest {
            id: id.into(),
            ..Default::default()
        },
    ))
    .await
    .unwrap()
    .into_inner()
    .pid
}

/// `Wait` for the init.
pub async fn wait(c: &mut Client, ns: &str, id: impl Into<String>) -> WaitResponse {
    c.wait(request(
        ns,
        WaitRequest {
            id: id.into(),
            ..Default::default()
        },
    ))
    .await
    .unwrap()
    .into_inner()
}

/// `Delete` of the init.
pub async fn delete(c: &mut Client, ns: &str, id: impl Into<String>) -> DeleteResponse {
    c.delete(request(
        ns,
        DeleteRequest {
            id: id.into(),
            ..Default::default()
        },
    ))
    .await
    .unwrap()
    .into_inner()
}

/// SIGKILL, `Wait` and `Delete`: the end of a test's container.
pub async fn kill_wait_delete(c: &mut Client, ns: &str, id: impl Into<String>) {
    let id = id.into();
    c.kill(request(
        ns,
        KillRequest {
            id: id.clone(),
            signal: 9,
            ..Default::default()
        },
    ))
    .await
    .unwrap();
    wait(c, ns, id.clone()).await;
    delete(c, ns, id).await;
}
