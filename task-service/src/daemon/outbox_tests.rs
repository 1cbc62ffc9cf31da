//! The outbox's tests (in their own file: `outbox.rs` is long enough without them).

use super::*;
use crate::api::containerd::events as ev;

fn envelope(event: TaskEvent) -> pb::Envelope {
    crate::events::Envelope {
        timestamp: std::time::SystemTime::now(),
        namespace: crate::ids::Namespace::new("default").unwrap(),
        event,
    }
    .to_wire()
}

fn exit(id: &str, pid: u32, code: u32) -> pb::Envelope {
    envelope(TaskEvent::Exit(ev::TaskExit {
        container_id: id.into(),
        id: id.into(),
        pid,
        exit_status: code,
        ..Default::default()
    }))
}

fn start(id: &str) -> pb::Envelope {
    envelope(TaskEvent::Start(ev::TaskStart {
        container_id: id.into(),
        pid: 1,
    }))
}

fn topics(outbox: &Outbox) -> Vec<(u64, String)> {
    outbox
        .pending()
        .map(|(seq, e)| (seq, e.topic.clone()))
        .collect()
}

#[test]
fn a_reloaded_outbox_replays_what_was_not_taken_in_order() {
    let dir = tempfile::tempdir().unwrap();
    let mut outbox = Outbox::create(dir.path(), "/run/containerd/containerd.sock").unwrap();
    assert_eq!(outbox.append(start("a")).0, 1);
    assert_eq!(outbox.append(exit("a", 10, 0)).0, 2);
    assert_eq!(outbox.append(start("b")).0, 3);
    assert_eq!(outbox.append(exit("b", 11, 137)).0, 4);
    outbox.ack(2);
    let path = outbox.path.clone();
    drop(outbox);

    let (mut again, problems) = Outbox::load(&path).unwrap();
    assert!(problems.is_empty(), "{problems:?}");
    assert_eq!(again.address(), "/run/containerd/containerd.sock");
    assert_eq!(
        topics(&again),
        [(3, "/tasks/start".into()), (4, "/tasks/exit".into())]
    );
    assert_eq!(again.pending_len(), 2);
    // Numbers go on after the last one, never reused.
    assert_eq!(again.append(start("c")).0, 5);
    // The exit containerd took is still evidence until settled; the other is pending.
    let a = ExitKey::new("default", "a", "a", 10);
    assert_eq!(again.handed_over(&a).map(|e| e.pid), Some(10));
    again.settle_all();
    assert_eq!(again.handed_over(&a), None);
    let b = ExitKey::new("default", "b", "b", 11);
    assert_eq!(
        again.handed_over(&b).map(|e| e.exit_status),
        Some(137),
        "settled, but not taken yet: still handed over"
    );
    assert_eq!(
        topics(&again).len(),
        3,
        "settling never drops what is pending"
    );
}

#[test]
fn an_exit_stays_evidence_after_containerd_took_it_until_its_record_is_saved() {
    let dir = tempfile::tempdir().unwrap();
    let mut outbox = Outbox::create(dir.path(), "/c.sock").unwrap();
    let (seq, _) = outbox.append(exit("web", 42, 3));
    outbox.ack(seq);
    assert_eq!(outbox.pending_len(), 0);
    let key = ExitKey::new("default", "web", "web", 42);
    assert_eq!(outbox.handed_over(&key).map(|e| e.exit_status), Some(3));
    // A daemon killed now finds it again.
    let (again, _) = Outbox::load(&outbox.path).unwrap();
    assert_eq!(again.handed_over(&key).map(|e| e.exit_status), Some(3));
    assert_eq!(again.pending_len(), 0, "and does not send it again");
    outbox.settle(&key);
    assert_eq!(outbox.handed_over(&key), None);
    assert!(outbox.kept.is_empty());
}

#[test]
fn a_torn_last_record_is_skipped_and_the_file_rewritten_whole() {
    let dir = tempfile::tempdir().unwrap();
    let mut outbox = Outbox::create(dir.path(), "/c.sock").unwrap();
    outbox.append(start("a"));
    outbox.append(exit("a", 7, 1));
    let path = outbox.path.clone();
    drop(outbox);
    let full = std::fs::read(&path).unwrap();
    // The daemon died in the middle of the last write.
    std::fs::write(&path, &full[..full.len() - 5]).unwrap();

    let (mut again, problems) = Outbox::load(&path).unwrap();
    assert_eq!(problems.len(), 1, "{problems:?}");
    assert!(problems[0].contains("torn record"), "{problems:?}");
    assert_eq!(topics(&again), [(1, "/tasks/start".into())]);
    // The seq of the torn record may be used again: it was never sent.
    assert_eq!(again.append(start("b")).0, 2);
    let (third, problems) = Outbox::load(&path).unwrap();
    assert!(
        problems.is_empty(),
        "rewritten without the torn tail: {problems:?}"
    );
    assert_eq!(
        topics(&third),
        [(1, "/tasks/start".into()), (2, "/tasks/start".into())]
    );
}

#[test]
fn a_record_with_a_wrong_checksum_is_skipped_and_the_rest_read() {
    let dir = tempfile::tempdir().unwrap();
    let mut outbox = Outbox::create(dir.path(), "/c.sock").unwrap();
    outbox.append(start("a"));
    let corrupt_at = outbox.file_bytes as usize + FRAME + 12;
    outbox.append(start("b"));
    outbox.append(start("c"));
    let path = outbox.path.clone();
    drop(outbox);
    let mut bytes = std::fs::read(&path).unwrap();
    bytes[corrupt_at] ^= 0xff;
    std::fs::write(&path, &bytes).unwrap();

    let (again, problems) = Outbox::load(&path).unwrap();
    assert_eq!(problems.len(), 1, "{problems:?}");
    assert!(problems[0].contains("checksum"), "{problems:?}");
    let seqs: Vec<u64> = again.pending().map(|(seq, _)| seq).collect();
    assert_eq!(seqs, [1, 3]);
}

#[test]
fn a_file_without_a_header_is_refused_by_name() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("garbage");
    std::fs::write(&path, b"not an outbox").unwrap();
    let err = Outbox::load(&path).unwrap_err().to_string();
    assert!(err.contains("garbage") && err.contains("header"), "{err}");
}

#[test]
fn an_unversioned_outbox_is_read_as_version_1_and_rewritten_as_the_current_one() {
    let dir = tempfile::tempdir().unwrap();
    let mut outbox = Outbox::create(dir.path(), "/c.sock").unwrap();
    outbox.append(exit("old", 9, 4));
    let path = outbox.path.clone();
    drop(outbox);
    set_header_format(&path, 0);

    let (again, problems) = Outbox::load(&path).unwrap();
    assert!(problems.is_empty(), "{problems:?}");
    assert_eq!(topics(&again), [(1, "/tasks/exit".into())]);
    let (records, _) = decode(&std::fs::read(&path).unwrap());
    assert_eq!(
        records[0].1,
        u64::from(crate::version::OUTBOX_FORMAT),
        "rewritten with the current version in its header"
    );
}

#[test]
fn a_newer_outbox_is_refused_naming_both_versions_and_left_as_it_is() {
    let dir = tempfile::tempdir().unwrap();
    let mut outbox = Outbox::create(dir.path(), "/c.sock").unwrap();
    outbox.append(start("a"));
    let path = outbox.path.clone();
    drop(outbox);
    let newer = u64::from(crate::version::OUTBOX_FORMAT) + 1;
    set_header_format(&path, newer);
    let before = std::fs::read(&path).unwrap();

    match Outbox::load(&path) {
        Err(LoadError::Newer(e)) => {
            assert_eq!(
                (u64::from(e.found), e.supported),
                (newer, crate::version::OUTBOX_FORMAT)
            );
            assert!(e.to_string().contains(&path.display().to_string()), "{e}");
        }
        other => panic!("{other:?}"),
    }
    assert_eq!(std::fs::read(&path).unwrap(), before, "not rewritten");
}

#[test]
fn a_file_mostly_taken_is_compacted() {
    let dir = tempfile::tempdir().unwrap();
    let mut outbox = Outbox::create(dir.path(), "/c.sock").unwrap();
    // Ten thousand events taken one by one: without compaction, over a megabyte.
    let mut last = 0;
    for _ in 0..10_000 {
        last = outbox.append(start("busy")).0;
        outbox.ack(last);
    }
    let size = std::fs::metadata(&outbox.path).unwrap().len();
    assert!(size < COMPACT_AT, "compacted to {size} bytes");
    assert_eq!(size, outbox.file_bytes);
    let waiting = outbox.append(start("late")).0;
    let (again, problems) = Outbox::load(&outbox.path).unwrap();
    assert!(problems.is_empty(), "{problems:?}");
    assert_eq!(again.pending_len(), 1);
    assert_eq!(
        again.pending().map(|(seq, _)| seq).collect::<Vec<_>>(),
        [waiting]
    );
    assert_eq!(again.next_seq, last + 2);
}
