//! The front, for real: `shimless-front` in front of a `shimlessd` that is killed with `kill -9`
//! and started again, one client connection held across it all.
//!
//! - a `Wait` in flight when the daemon dies is answered by the next daemon with the true exit
//!   code (it only reads, so the front sends it again), and a call made while the daemon is
//!   down waits for it;
//! - a `Create` inside the daemon when it dies gets `UNAVAILABLE` (never sent twice), and the
//!   connection stays usable;
//! - a call whose deadline passes while the daemon is away gets `UNAVAILABLE` naming why;
//! - with `supervise = true` the front starts the daemon itself and starts it again after
//!   `kill -9`;
//! - a daemon of a newer front-daemon protocol gets no call: each is answered
//!   `FAILED_PRECONDITION` at once, naming both versions; a daemon of this version put in its
//!   place is served on the same connection.

use integration::bundle::Bundle;
use integration::child::Child;
use integration::shimlessd::Shimlessd;

use std::process::Command;
use std::time::{Duration, Instant};
use task_service::api::containerd::task::v3::*;
use task_service::api::containerd::v1::types::Status as TaskStatus;
use tonic::Code;

mod common;
use common::shimless::Shimless;
use common::{client, request};

const NS: &str = "front-test";

/// A shimless configuration for both binaries, the front not supervising unless asked.
fn setup(supervise: bool) -> Shimless {
    Shimless::new(&format!(
        "supervise = {supervise}\nrestart_delay_ms = 100\nhold_ms = 30000"
    ))
    .cleans(NS)
}

fn daemon(s: &Shimless) -> Child {
    let log = s.dir.path().join("shimlessd.log");
    Shimlessd::new(env!("CARGO_BIN_EXE_shimlessd"))
        .config(s.config())
        .socket(s.daemon_socket())
        .start(&log)
        .unwrap()
}

fn front(s: &Shimless) -> Child {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_shimless-front"));
    cmd.arg("--config").arg(s.config());
    let log = s.dir.path().join("front.log");
    Child::start(cmd, &log, "serving on").unwrap()
}

#[test]
fn a_daemon_killed_behind_the_front_is_invisible_to_a_held_connection() {
    let Some(()) = common::needs_daemon() else {
        return;
    };
    rustix::process::set_child_subreaper(rustix::process::Pid::from_raw(1)).unwrap();
    let s = setup(false);
    let mut first = daemon(&s);
    let _front = front(&s);
    let exits = Bundle::exit_on_demand().unwrap();
    let stays = Bundle::exit_on_demand().unwrap();

    smol::block_on(async {
        // One connection for the whole test, as containerd holds one per task.
        let mut c = client(&s.front_socket()).await;
        common::create(&mut c, NS, "exits", exits.path()).await;
        common::start(&mut c, NS, "exits").await;
        common::create(&mut c, NS, "stays", stays.path()).await;
        common::start(&mut c, NS, "stays").await;

        let mut waiter = c.clone();
        let wait = smol::spawn(async move { common::wait(&mut waiter, NS, "exits").await });
        // Let the Wait reach the daemon before it dies.
        smol::Timer::after(Duration::from_millis(300)).await;
        first.kill();
        exits.tell_exit(42).unwrap();

        // Made while no daemon answers: held until one does.
        let mut asker = c.clone();
        let state = smol::spawn(async move {
            asker
                .state(request(
                    NS,
                    StateRequest {
                        id: "stays".into(),
                        ..Default::default()
                    },
                ))
                .await
        });
        // A deadline that passes while the daemon is away.
        let mut hurried = request(
            NS,
            StateRequest {
                id: "stays".into(),
                ..Default::default()
            },
        );
        hurried.set_timeout(Duration::from_millis(200));
        let hurried = c.clone().state(hurried).await.unwrap_err();
        assert_eq!(hurried.code(), Code::Unavailable, "{hurried:?}");
        assert!(
            hurried.message().contains("not answering"),
            "{}",
            hurried.message()
        );

        let _second = daemon(&s);
        let waited = wait.await;
        assert_eq!(
            waited.exit_status, 42,
            "the Wait replayed to the next daemon"
        );
        let state = state.await.unwrap().into_inner();
        assert_eq!(state.status, TaskStatus::Running as i32);

        // The same connection goes on working.
        common::delete(&mut c, NS, "exits").await;
        common::kill_wait_delete(&mut c, NS, "stays").await;
        let gone = c
            .state(request(
                NS,
                StateRequest {
                    id: "stays".into(),
                    ..Default::default()
                },
            ))
            .await
            .unwrap_err();
        assert_eq!(gone.code(), Code::NotFound);
    });
}

/// A `Wait` held for longer than `hold_ms` when the daemon dies still waits `hold_ms` for the
/// next daemon (containerd's `Wait`s are held for a task's whole life; one answered
/// `UNAVAILABLE` makes containerd's CRI take the task for exited with 255 and delete it).
#[test]
fn a_wait_held_longer_than_hold_ms_is_replayed_across_kill_9() {
    let Some(()) = common::needs_daemon() else {
        return;
    };
    rustix::process::set_child_subreaper(rustix::process::Pid::from_raw(1)).unwrap();
    let s = Shimless::new("supervise = false\nhold_ms = 1000").cleans(NS);
    let mut first = daemon(&s);
    let _front = front(&s);
    let exits = Bundle::exit_on_demand().unwrap();
    smol::block_on(async {
        let mut c = client(&s.front_socket()).await;
        common::create(&mut c, NS, "old-wait", exits.path()).await;
        common::start(&mut c, NS, "old-wait").await;
        let mut waiter = c.clone();
        let wait = smol::spawn(async move { common::wait(&mut waiter, NS, "old-wait").await });
        // Held by the daemon for more than `hold_ms` (a lower bound, not a race).
        smol::Timer::after(Duration::from_millis(2500)).await;
        first.kill();
        exits.tell_exit(42).unwrap();
        let _second = daemon(&s);
        let waited = wait.await;
        assert_eq!(waited.exit_status, 42, "the old Wait, replayed");
        common::delete(&mut c, NS, "old-wait").await;
    });
}

#[test]
fn a_create_inside_a_dying_daemon_is_unavailable_and_never_sent_twice() {
    let Some(()) = common::needs_daemon() else {
        return;
    };
    rustix::process::set_child_subreaper(rustix::process::Pid::from_raw(1)).unwrap();
    let s = setup(false);
    let mut first = daemon(&s);
    let _front = front(&s);
    // A createRuntime hook that takes 5 s keeps `runc create`, so the Create, in the daemon.
    let slow = Bundle::exit_on_demand().unwrap();
    let spec_path = slow.path().join("config.json");
    let mut spec: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&spec_path).unwrap()).unwrap();
    spec["hooks"] = serde_json::json!({
        "createRuntime": [{"path": "/bin/busybox", "args": ["sleep", "5"]}]
    });
    std::fs::write(&spec_path, spec.to_string()).unwrap();

    smol::block_on(async {
        let mut c = client(&s.front_socket()).await;
        let mut creator = c.clone();
        let bundle = slow.path().to_owned();
        let create = smol::spawn(async move {
            creator
                .create(request(
                    NS,
                    CreateTaskRequest {
                        id: "slow".into(),
                        bundle: bundle.display().to_string(),
                        ..Default::default()
                    },
                ))
                .await
        });
        smol::Timer::after(Duration::from_millis(1500)).await;
        first.kill();
        let err = create.await.unwrap_err();
        assert_eq!(err.code(), Code::Unavailable, "{err:?}");
        assert!(
            err.message().contains("not sent again"),
            "{}",
            err.message()
        );

        // The next daemon finds the interrupted create and removes it; the connection is the
        // same one.
        let _second = daemon(&s);
        let listed = c
            .state(request(
                NS,
                StateRequest {
                    id: "slow".into(),
                    ..Default::default()
                },
            ))
            .await
            .unwrap_err();
        assert_eq!(listed.code(), Code::NotFound, "{listed:?}");
        let other = Bundle::exit_on_demand().unwrap();
        common::create(&mut c, NS, "after", other.path()).await;
        common::start(&mut c, NS, "after").await;
        common::kill_wait_delete(&mut c, NS, "after").await;
    });
}

#[test]
fn a_supervising_front_starts_the_daemon_and_starts_it_again_after_kill_9() {
    let Some(()) = common::needs_daemon() else {
        return;
    };
    rustix::process::set_child_subreaper(rustix::process::Pid::from_raw(1)).unwrap();
    let s = setup(true);
    let _front = front(&s);
    let bundle = Bundle::exit_on_demand().unwrap();

    smol::block_on(async {
        let mut c = client(&s.front_socket()).await;
        // Held by the front until the daemon it started has recovered and serves.
        common::create(&mut c, NS, "sup", bundle.path()).await;
        common::start(&mut c, NS, "sup").await;
        let first = s.processes("shimlessd");
        assert_eq!(first.len(), 1, "one daemon: {first:?}");
        Command::new("kill")
            .args(["-9", &first[0].to_string()])
            .status()
            .unwrap();
        bundle.tell_exit(7).unwrap();
        assert_eq!(common::wait(&mut c, NS, "sup").await.exit_status, 7);
        let deadline = Instant::now() + Duration::from_secs(20);
        let second = loop {
            let now = s.processes("shimlessd");
            if now.len() == 1 && now != first {
                break now;
            }
            assert!(Instant::now() < deadline, "no new daemon: {now:?}");
            smol::Timer::after(Duration::from_millis(50)).await;
        };
        assert_ne!(second, first);
        let log = s.log("front.log")
            + &std::fs::read_to_string(s.dir.path().join("front.log")).unwrap_or_default();
        assert!(log.contains("was killed by signal 9"), "{log}");
        common::delete(&mut c, NS, "sup").await;
    });
}

/// A daemon of the next protocol version, as far as the front can tell: it answers only
/// `Health/Status`, saying so.
struct NewerDaemon;

#[tonic::async_trait]
impl task_service::api::shimless::v1::health_server::Health for NewerDaemon {
    async fn status(
        &self,
        _req: tonic::Request<task_service::api::shimless::v1::StatusRequest>,
    ) -> Result<tonic::Response<task_service::api::shimless::v1::StatusResponse>, tonic::Status>
    {
        Ok(tonic::Response::new(
            task_service::api::shimless::v1::StatusResponse {
                protocol_version: task_service::version::PROTOCOL + 1,
                pid: std::process::id(),
                ..Default::default()
            },
        ))
    }
}

#[test]
fn a_daemon_of_a_newer_protocol_gets_no_call_and_each_is_refused_naming_both_versions() {
    let Some(()) = common::needs_daemon() else {
        return;
    };
    rustix::process::set_child_subreaper(rustix::process::Pid::from_raw(1)).unwrap();
    let s = setup(false);
    let listener = task_service::grpc::listen::bind(s.daemon_socket()).unwrap();
    let ex = std::sync::Arc::new(smol::Executor::new());
    let server = task_service::api::shimless::v1::health_server::HealthServer::new(NewerDaemon);
    let serving = ex.clone();
    std::thread::spawn(move || {
        let config = task_service::grpc::ServeConfig::default();
        let _ = smol::block_on(serving.run(task_service::grpc::serve(
            listener,
            server,
            serving.clone(),
            config,
        )));
    });
    let _front = front(&s);
    let bundle = Bundle::exit_on_demand().unwrap();
    smol::block_on(async {
        let mut c = client(&s.front_socket()).await;
        // Answered at once (the front holds calls 30 s for an absent daemon), never sent.
        let refused = c
            .create(request(
                NS,
                CreateTaskRequest {
                    id: "never".into(),
                    bundle: bundle.path().display().to_string(),
                    ..Default::default()
                },
            ))
            .await
            .unwrap_err();
        assert_eq!(refused.code(), Code::FailedPrecondition, "{refused:?}");
        let expected = format!(
            "the front-daemon protocol of shimlessd at {} is of version {}, newer than the {} \
             this shimless reads",
            s.daemon_socket().display(),
            task_service::version::PROTOCOL + 1,
            task_service::version::PROTOCOL
        );
        assert!(
            refused.message().contains(&expected),
            "{}",
            refused.message()
        );
        assert!(
            refused.message().contains("shimlessctl upgrade"),
            "{}",
            refused.message()
        );
        assert!(
            front_log(&s).contains(&expected),
            "the front says why in its log: {}",
            front_log(&s)
        );

        // A daemon of this version in its place is served on the same connection.
        let _daemon = daemon(&s);
        let gone = c
            .state(request(
                NS,
                StateRequest {
                    id: "never".into(),
                    ..Default::default()
                },
            ))
            .await
            .unwrap_err();
        assert_eq!(gone.code(), Code::NotFound, "{gone:?}");
    });
}

/// The front's own output (`front()` logs beside the configuration).
fn front_log(s: &Shimless) -> String {
    std::fs::read_to_string(s.dir.path().join("front.log")).unwrap_or_default()
}
