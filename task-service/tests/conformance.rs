//! Wire conformance: every message of the task v3 API and every task event, encoded by an
//! independent implementation (`containerd-shim-protos`, rust-protobuf, generated from
//! containerd's own `.proto` files) and by ours (prost, from the `.proto` files in this crate),
//! must give the same bytes, and each side must decode the other's bytes to the same values.
//! Every field is set to a non-default value, so a wrong field number or type cannot hide.

use containerd_shim_protos::api as theirs;
use containerd_shim_protos::events::task as their_events;
use containerd_shim_protos::protobuf::{self, EnumOrUnknown, MessageField};
use std::collections::HashMap;
use std::fmt::Debug;
use task_service::api::containerd::{events as our_events, task::v3 as ours, types, v1};

fn check<O, T>(name: &str, our: O, their: T)
where
    O: prost::Message + Default + PartialEq + Debug,
    T: protobuf::Message + PartialEq + Debug,
{
    let their_bytes = their.write_to_bytes().unwrap();
    let our_bytes = our.encode_to_vec();
    assert!(
        !our_bytes.is_empty() || name.ends_with("(empty)"),
        "{name}: nothing encoded"
    );
    assert_eq!(our_bytes, their_bytes, "{name}: the two encodings differ");
    assert_eq!(
        O::decode(their_bytes.as_slice()).unwrap(),
        our,
        "{name}: we misread theirs"
    );
    assert_eq!(
        T::parse_from_bytes(&our_bytes).unwrap(),
        their,
        "{name}: they misread ours"
    );
}

fn our_any(n: u8) -> prost_types::Any {
    prost_types::Any {
        type_url: format!("types.example/any{n}"),
        value: vec![n, n + 1, n + 2],
    }
}
fn their_any(n: u8) -> MessageField<protobuf::well_known_types::any::Any> {
    let mut a = protobuf::well_known_types::any::Any::new();
    a.type_url = format!("types.example/any{n}");
    a.value = vec![n, n + 1, n + 2];
    MessageField::some(a)
}
fn our_time() -> prost_types::Timestamp {
    prost_types::Timestamp {
        seconds: 1_700_000_123,
        nanos: 456_789,
    }
}
fn their_time() -> MessageField<protobuf::well_known_types::timestamp::Timestamp> {
    let mut t = protobuf::well_known_types::timestamp::Timestamp::new();
    t.seconds = 1_700_000_123;
    t.nanos = 456_789;
    MessageField::some(t)
}
fn our_mount(n: u8) -> types::Mount {
    types::Mount {
        r#type: format!("overlay{n}"),
        source: format!("src{n}"),
        target: format!("/t{n}"),
        options: vec![format!("ro{n}"), "lowerdir=/a:/b".into()],
    }
}
fn their_mount(n: u8) -> theirs::Mount {
    theirs::Mount {
        type_: format!("overlay{n}"),
        source: format!("src{n}"),
        target: format!("/t{n}"),
        options: vec![format!("ro{n}"), "lowerdir=/a:/b".into()],
        ..Default::default()
    }
}

#[test]
fn lifecycle_messages_match_containerd() {
    check(
        "CreateTaskRequest",
        ours::CreateTaskRequest {
            id: "c1".into(),
            bundle: "/run/b/c1".into(),
            rootfs: vec![our_mount(1), our_mount(2)],
            terminal: true,
            stdin: "/in".into(),
            stdout: "/out".into(),
            stderr: "/err".into(),
            checkpoint: "/ckpt".into(),
            parent_checkpoint: "/parent".into(),
            options: Some(our_any(1)),
        },
        theirs::CreateTaskRequest {
            id: "c1".into(),
            bundle: "/run/b/c1".into(),
            rootfs: vec![their_mount(1), their_mount(2)],
            terminal: true,
            stdin: "/in".into(),
            stdout: "/out".into(),
            stderr: "/err".into(),
            checkpoint: "/ckpt".into(),
            parent_checkpoint: "/parent".into(),
            options: their_any(1),
            ..Default::default()
        },
    );
    check(
        "CreateTaskResponse",
        ours::CreateTaskResponse { pid: 4242 },
        theirs::CreateTaskResponse {
            pid: 4242,
            ..Default::default()
        },
    );
    check(
        "StartRequest",
        ours::StartRequest {
            id: "c1".into(),
            exec_id: "e1".into(),
        },
        theirs::StartRequest {
            id: "c1".into(),
            exec_id: "e1".into(),
            ..Default::default()
        },
    );
    check(
        "StartResponse",
        ours::StartResponse { pid: 77 },
        theirs::StartResponse {
            pid: 77,
            ..Default::default()
        },
    );
    check(
        "DeleteRequest",
        ours::DeleteRequest {
            id: "c1".into(),
            exec_id: "e1".into(),
        },
        theirs::DeleteRequest {
            id: "c1".into(),
            exec_id: "e1".into(),
            ..Default::default()
        },
    );
    check(
        "DeleteResponse",
        ours::DeleteResponse {
            pid: 9,
            exit_status: 137,
            exited_at: Some(our_time()),
        },
        theirs::DeleteResponse {
            pid: 9,
            exit_status: 137,
            exited_at: their_time(),
            ..Default::default()
        },
    );
    check(
        "WaitRequest",
        ours::WaitRequest {
            id: "c1".into(),
            exec_id: "e2".into(),
        },
        theirs::WaitRequest {
            id: "c1".into(),
            exec_id: "e2".into(),
            ..Default::default()
        },
    );
    check(
        "WaitResponse",
        ours::WaitResponse {
            exit_status: 143,
            exited_at: Some(our_time()),
        },
        theirs::WaitResponse {
            exit_status: 143,
            exited_at: their_time(),
            ..Default::default()
        },
    );
    check(
        "ShutdownRequest",
        ours::ShutdownRequest {
            id: "c1".into(),
            now: true,
        },
        theirs::ShutdownRequest {
            id: "c1".into(),
            now: true,
            ..Default::default()
        },
    );
    check(
        "ConnectRequest",
        ours::ConnectRequest { id: "c1".into() },
        theirs::ConnectRequest {
            id: "c1".into(),
            ..Default::default()
        },
    );
    check(
        "ConnectResponse",
        ours::ConnectResponse {
            shim_pid: 1,
            task_pid: 2,
            version: "shimless 0.1".into(),
        },
        theirs::ConnectResponse {
            shim_pid: 1,
            task_pid: 2,
            version: "shimless 0.1".into(),
            ..Default::default()
        },
    );
    check("Empty (empty)", (), theirs::Empty::new());
}

#[test]
fn process_messages_match_containerd() {
    check(
        "StateRequest",
        ours::StateRequest {
            id: "c1".into(),
            exec_id: "e1".into(),
        },
        theirs::StateRequest {
            id: "c1".into(),
            exec_id: "e1".into(),
            ..Default::default()
        },
    );
    for (our_status, their_status) in [
        (v1::types::Status::Created, theirs::Status::CREATED),
        (v1::types::Status::Running, theirs::Status::RUNNING),
        (v1::types::Status::Stopped, theirs::Status::STOPPED),
        (v1::types::Status::Paused, theirs::Status::PAUSED),
        (v1::types::Status::Pausing, theirs::Status::PAUSING),
    ] {
        check(
            "StateResponse",
            ours::StateResponse {
                id: "c1".into(),
                bundle: "/b".into(),
                pid: 3,
                status: our_status as i32,
                stdin: "i".into(),
                stdout: "o".into(),
                stderr: "e".into(),
                terminal: true,
                exit_status: 255,
                exited_at: Some(our_time()),
                exec_id: "x".into(),
            },
            theirs::StateResponse {
                id: "c1".into(),
                bundle: "/b".into(),
                pid: 3,
                status: EnumOrUnknown::new(their_status),
                stdin: "i".into(),
                stdout: "o".into(),
                stderr: "e".into(),
                terminal: true,
                exit_status: 255,
                exited_at: their_time(),
                exec_id: "x".into(),
                ..Default::default()
            },
        );
    }
    check(
        "ExecProcessRequest",
        ours::ExecProcessRequest {
            id: "c1".into(),
            exec_id: "e1".into(),
            terminal: true,
            stdin: "i".into(),
            stdout: "o".into(),
            stderr: "e".into(),
            spec: Some(our_any(2)),
        },
        theirs::ExecProcessRequest {
            id: "c1".into(),
            exec_id: "e1".into(),
            terminal: true,
            stdin: "i".into(),
            stdout: "o".into(),
            stderr: "e".into(),
            spec: their_any(2),
            ..Default::default()
        },
    );
    check(
        "ExecProcessResponse (empty)",
        ours::ExecProcessResponse {},
        theirs::ExecProcessResponse::new(),
    );
    check(
        "ResizePtyRequest",
        ours::ResizePtyRequest {
            id: "c1".into(),
            exec_id: "e".into(),
            width: 120,
            height: 40,
        },
        theirs::ResizePtyRequest {
            id: "c1".into(),
            exec_id: "e".into(),
            width: 120,
            height: 40,
            ..Default::default()
        },
    );
    check(
        "KillRequest",
        ours::KillRequest {
            id: "c1".into(),
            exec_id: "e".into(),
            signal: 15,
            all: true,
        },
        theirs::KillRequest {
            id: "c1".into(),
            exec_id: "e".into(),
            signal: 15,
            all: true,
            ..Default::default()
        },
    );
    check(
        "CloseIORequest",
        ours::CloseIoRequest {
            id: "c1".into(),
            exec_id: "e".into(),
            stdin: true,
        },
        theirs::CloseIORequest {
            id: "c1".into(),
            exec_id: "e".into(),
            stdin: true,
            ..Default::default()
        },
    );
    check(
        "PidsRequest",
        ours::PidsRequest { id: "c1".into() },
        theirs::PidsRequest {
            id: "c1".into(),
            ..Default::default()
        },
    );
    check(
        "PidsResponse",
        ours::PidsResponse {
            processes: vec![
                v1::types::ProcessInfo {
                    pid: 10,
                    info: Some(our_any(3)),
                },
                v1::types::ProcessInfo {
                    pid: 11,
                    info: None,
                },
            ],
        },
        theirs::PidsResponse {
            processes: vec![
                theirs::ProcessInfo {
                    pid: 10,
                    info: their_any(3),
                    ..Default::default()
                },
                theirs::ProcessInfo {
                    pid: 11,
                    ..Default::default()
                },
            ],
            ..Default::default()
        },
    );
}

#[test]
fn control_messages_match_containerd() {
    check(
        "PauseRequest",
        ours::PauseRequest { id: "c1".into() },
        theirs::PauseRequest {
            id: "c1".into(),
            ..Default::default()
        },
    );
    check(
        "ResumeRequest",
        ours::ResumeRequest { id: "c1".into() },
        theirs::ResumeRequest {
            id: "c1".into(),
            ..Default::default()
        },
    );
    check(
        "CheckpointTaskRequest",
        ours::CheckpointTaskRequest {
            id: "c1".into(),
            path: "/ck".into(),
            options: Some(our_any(4)),
        },
        theirs::CheckpointTaskRequest {
            id: "c1".into(),
            path: "/ck".into(),
            options: their_any(4),
            ..Default::default()
        },
    );
    // One annotation: map entries have no defined order, so two could encode either way round.
    check(
        "UpdateTaskRequest",
        ours::UpdateTaskRequest {
            id: "c1".into(),
            resources: Some(our_any(5)),
            annotations: HashMap::from([("io.example/k".to_string(), "v".to_string())]),
        },
        theirs::UpdateTaskRequest {
            id: "c1".into(),
            resources: their_any(5),
            annotations: HashMap::from([("io.example/k".to_string(), "v".to_string())]),
            ..Default::default()
        },
    );
    check(
        "StatsRequest",
        ours::StatsRequest { id: "c1".into() },
        theirs::StatsRequest {
            id: "c1".into(),
            ..Default::default()
        },
    );
    check(
        "StatsResponse",
        ours::StatsResponse {
            stats: Some(our_any(6)),
        },
        theirs::StatsResponse {
            stats: their_any(6),
            ..Default::default()
        },
    );
}

#[test]
fn task_events_match_containerd() {
    check(
        "TaskCreate",
        our_events::TaskCreate {
            container_id: "c1".into(),
            bundle: "/b".into(),
            rootfs: vec![our_mount(3)],
            io: Some(our_events::TaskIo {
                stdin: "i".into(),
                stdout: "o".into(),
                stderr: "e".into(),
                terminal: true,
            }),
            checkpoint: "/ck".into(),
            pid: 5,
        },
        their_events::TaskCreate {
            container_id: "c1".into(),
            bundle: "/b".into(),
            rootfs: vec![their_mount(3)],
            io: MessageField::some(their_events::TaskIO {
                stdin: "i".into(),
                stdout: "o".into(),
                stderr: "e".into(),
                terminal: true,
                ..Default::default()
            }),
            checkpoint: "/ck".into(),
            pid: 5,
            ..Default::default()
        },
    );
    check(
        "TaskStart",
        our_events::TaskStart {
            container_id: "c1".into(),
            pid: 6,
        },
        their_events::TaskStart {
            container_id: "c1".into(),
            pid: 6,
            ..Default::default()
        },
    );
    check(
        "TaskDelete",
        our_events::TaskDelete {
            container_id: "c1".into(),
            pid: 7,
            exit_status: 1,
            exited_at: Some(our_time()),
            id: "e".into(),
        },
        their_events::TaskDelete {
            container_id: "c1".into(),
            pid: 7,
            exit_status: 1,
            exited_at: their_time(),
            id: "e".into(),
            ..Default::default()
        },
    );
    check(
        "TaskExit",
        our_events::TaskExit {
            container_id: "c1".into(),
            id: "c1".into(),
            pid: 8,
            exit_status: 137,
            exited_at: Some(our_time()),
            exit_reason: v1::types::ExitReason::None as i32,
        },
        their_events::TaskExit {
            container_id: "c1".into(),
            id: "c1".into(),
            pid: 8,
            exit_status: 137,
            exited_at: their_time(),
            ..Default::default()
        },
    );
    check(
        "TaskOOM",
        our_events::TaskOom {
            container_id: "c1".into(),
        },
        their_events::TaskOOM {
            container_id: "c1".into(),
            ..Default::default()
        },
    );
    check(
        "TaskExecAdded",
        our_events::TaskExecAdded {
            container_id: "c1".into(),
            exec_id: "e".into(),
        },
        their_events::TaskExecAdded {
            container_id: "c1".into(),
            exec_id: "e".into(),
            ..Default::default()
        },
    );
    check(
        "TaskExecStarted",
        our_events::TaskExecStarted {
            container_id: "c1".into(),
            exec_id: "e".into(),
            pid: 9,
        },
        their_events::TaskExecStarted {
            container_id: "c1".into(),
            exec_id: "e".into(),
            pid: 9,
            ..Default::default()
        },
    );
    check(
        "TaskPaused",
        our_events::TaskPaused {
            container_id: "c1".into(),
        },
        their_events::TaskPaused {
            container_id: "c1".into(),
            ..Default::default()
        },
    );
    check(
        "TaskResumed",
        our_events::TaskResumed {
            container_id: "c1".into(),
        },
        their_events::TaskResumed {
            container_id: "c1".into(),
            ..Default::default()
        },
    );
    check(
        "TaskCheckpointed",
        our_events::TaskCheckpointed {
            container_id: "c1".into(),
            checkpoint: "/ck".into(),
        },
        their_events::TaskCheckpointed {
            container_id: "c1".into(),
            checkpoint: "/ck".into(),
            ..Default::default()
        },
    );
}

#[test]
fn runc_options_match_containerd() {
    use containerd_shim_protos::shim::oci::Options as TheirOptions;
    use task_service::api::containerd::runc::v1::Options as OurOptions;
    check(
        "containerd.runc.v1.Options",
        OurOptions {
            no_pivot_root: true,
            no_new_keyring: true,
            shim_cgroup: "/shim".into(),
            io_uid: 1000,
            io_gid: 1001,
            binary_name: "crun".into(),
            root: "/run/r".into(),
            systemd_cgroup: true,
            criu_image_path: "/ci".into(),
            criu_work_path: "/cw".into(),
            task_api_address: "unix:///t".into(),
            task_api_version: 3,
        },
        TheirOptions {
            no_pivot_root: true,
            no_new_keyring: true,
            shim_cgroup: "/shim".into(),
            io_uid: 1000,
            io_gid: 1001,
            binary_name: "crun".into(),
            root: "/run/r".into(),
            systemd_cgroup: true,
            criu_image_path: "/ci".into(),
            criu_work_path: "/cw".into(),
            task_api_address: "unix:///t".into(),
            task_api_version: 3,
            ..Default::default()
        },
    );
}

#[test]
fn exit_reason_is_invisible_to_a_containerd_that_predates_it() {
    // containerd 2.x added TaskExit.exit_reason (field 6); the peer's schema, like containerd
    // 1.7's, has no such field and must still read every other field of what we send.
    let ours = our_events::TaskExit {
        container_id: "c1".into(),
        id: "c1".into(),
        pid: 8,
        exit_status: 137,
        exited_at: Some(our_time()),
        exit_reason: v1::types::ExitReason::Oomkilled as i32,
    };
    let theirs = <their_events::TaskExit as protobuf::Message>::parse_from_bytes(
        &prost::Message::encode_to_vec(&ours),
    )
    .unwrap();
    assert_eq!(
        (theirs.container_id.as_str(), theirs.pid, theirs.exit_status),
        ("c1", 8, 137)
    );
    assert_eq!(theirs.exited_at.seconds, our_time().seconds);
}

#[test]
fn the_service_has_containerds_seventeen_methods_and_paths() {
    // The gRPC path is /<package>.<Service>/<Method>: the package must be containerd.task.v3.
    let source = include_str!("../proto/containerd/task/v3/shim.proto");
    assert!(source.contains("package containerd.task.v3;"));
    let methods: Vec<&str> = source
        .lines()
        .filter_map(|l| l.trim().strip_prefix("rpc "))
        .map(|l| l.split('(').next().unwrap())
        .collect();
    assert_eq!(
        methods,
        [
            "State",
            "Create",
            "Start",
            "Delete",
            "Pids",
            "Pause",
            "Resume",
            "Checkpoint",
            "Kill",
            "Exec",
            "ResizePty",
            "CloseIO",
            "Update",
            "Wait",
            "Stats",
            "Connect",
            "Shutdown"
        ]
    );
}

#[test]
fn cgroup_metrics_match_containerd_for_the_fields_we_fill() {
    use containerd_shim_protos::cgroups::metrics as t;
    use task_service::api::io::containerd::cgroups::v1 as o;
    check(
        "io.containerd.cgroups.v1.Metrics",
        o::Metrics {
            pids: Some(o::PidsStat {
                current: 3,
                limit: 77,
            }),
            cpu: Some(o::CpuStat {
                usage: Some(o::CpuUsage {
                    total: 1000,
                    kernel: 400,
                    user: 600,
                }),
            }),
            memory: Some(o::MemoryStat {
                cache: 4096,
                usage: Some(o::MemoryEntry {
                    limit: 1 << 30,
                    usage: 1 << 20,
                    max: 2 << 20,
                    failcnt: 5,
                }),
            }),
        },
        t::Metrics {
            pids: MessageField::some(t::PidsStat {
                current: 3,
                limit: 77,
                ..Default::default()
            }),
            cpu: MessageField::some(t::CPUStat {
                usage: MessageField::some(t::CPUUsage {
                    total: 1000,
                    kernel: 400,
                    user: 600,
                    ..Default::default()
                }),
                ..Default::default()
            }),
            memory: MessageField::some(t::MemoryStat {
                cache: 4096,
                usage: MessageField::some(t::MemoryEntry {
                    limit: 1 << 30,
                    usage: 1 << 20,
                    max: 2 << 20,
                    failcnt: 5,
                    ..Default::default()
                }),
                ..Default::default()
            }),
            ..Default::default()
        },
    );
}
