//! Every attach mode gives the same records; loaders race safely; stale pins are refused.

mod common;

use exitwatch::{AttachMode, Error, ExitStatus, ExitWatch};
use std::process::Command;

#[test]
fn each_attach_mode_records_the_same_statuses() {
    for mode in [
        AttachMode::BtfTracePoint,
        AttachMode::TracePoint,
        AttachMode::RawTracePoint,
    ] {
        let Some(dir) = common::pin_dir(&format!("mode-{mode:?}")) else {
            return;
        };
        if mode == AttachMode::TracePoint && common::kernel_older_than(5, 15) {
            // Before 5.15 a perf-event attachment is no bpf_link, so it cannot be pinned: the
            // mode is refused with that reason, and Auto goes on to the raw tracepoint (tp_btf
            // and raw_tp are checked here on the same kernel).
            match ExitWatch::open_or_load_with(&dir, mode) {
                Err(Error::Attach { last, .. }) => {
                    assert_eq!(last.mode, AttachMode::TracePoint);
                    assert!(last.step.contains("pinnable"), "{last:?}");
                }
                other => panic!("a classic tracepoint before 5.15: {:?}", other.err()),
            }
            let _ = std::fs::remove_dir_all(&dir);
            continue;
        }
        let mut watch = ExitWatch::open_or_load_with(&dir, mode).unwrap();
        assert_eq!(watch.attach_mode(), Some(mode));
        // A second opener finds the pinned program and reads the same mode.
        let found = ExitWatch::open_or_load(&dir).unwrap();
        assert_eq!(found.attach_mode(), Some(mode), "found pinned");
        drop(found);
        // It exits when its stdin closes, after being tracked: a timed exit can come before
        // `track` on a loaded machine, and a zombie's exit is never recorded.
        let mut code = Command::new("sh")
            .args(["-c", "read x; exit 3"])
            .stdin(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        let mut killed = Command::new("sleep").arg("600").spawn().unwrap();
        watch.track(code.id(), 1).unwrap();
        watch.track(killed.id(), 2).unwrap();
        drop(code.stdin.take());
        rustix::process::kill_process(
            rustix::process::Pid::from_raw(killed.id() as i32).unwrap(),
            rustix::process::Signal::KILL,
        )
        .unwrap();
        common::reap(&mut code);
        common::reap(&mut killed);
        let mut exits = watch.drain().unwrap();
        exits.sort_by_key(|e| e.cookie);
        let got: Vec<_> = exits.iter().map(|e| (e.cookie, e.status)).collect();
        assert_eq!(
            got,
            [
                (1, ExitStatus::Exited(3)),
                (
                    2,
                    ExitStatus::Signaled {
                        signal: 9,
                        core_dumped: false
                    }
                )
            ],
            "{mode:?}"
        );
        assert_eq!(watch.stats().unwrap().recorded_total, 2, "{mode:?}");
        watch.unload().unwrap();
    }
}

#[test]
fn racing_loaders_share_one_program() {
    let Some(dir) = common::pin_dir("race") else {
        return;
    };
    let loaders: Vec<_> = (0..4)
        .map(|_| {
            let dir = dir.clone();
            std::thread::spawn(move || ExitWatch::open_or_load(&dir))
        })
        .collect();
    let mut watches: Vec<ExitWatch> = loaders
        .into_iter()
        .map(|t| t.join().unwrap().unwrap())
        .collect();
    // One link pin; what one watch tracks, every other sees.
    let mut child = Command::new("sh")
        .args(["-c", "read x; exit 5"])
        .stdin(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    watches[0].track(child.id(), 77).unwrap();
    for w in &watches {
        assert_eq!(w.stats().unwrap().tracked, 1);
    }
    drop(child.stdin.take());
    common::reap(&mut child);
    let exit = watches[3].take(child.id()).unwrap().unwrap();
    assert_eq!((exit.cookie, exit.status), (77, ExitStatus::Exited(5)));
    // Exactly one program uses this pin directory's tracing_tasks map.
    let map = aya::maps::MapData::from_pin(watches[0].pin_dir().join("tracing_tasks")).unwrap();
    let map_id = map.info().unwrap().id();
    let users = aya::programs::loaded_programs()
        .filter_map(Result::ok)
        .filter(|p| {
            p.map_ids()
                .ok()
                .flatten()
                .is_some_and(|ids| ids.contains(&map_id))
        })
        .count();
    assert_eq!(
        users, 1,
        "four racing loaders must leave one program loaded"
    );
    watches.pop().unwrap().unload().unwrap();
}

#[test]
fn a_map_pinned_with_another_layout_is_refused() {
    let Some(dir) = common::pin_dir("stale") else {
        return;
    };
    let Some(()) = integration::require(&[integration::Need::Program("clang")]) else {
        return;
    };
    // An older exitwatch whose tracing_tasks held 8-byte values, pinned where v1's goes.
    let src = tempfile::tempdir().unwrap();
    std::fs::write(
        src.path().join("old.bpf.c"),
        "typedef unsigned char __u8; typedef unsigned short __u16; typedef unsigned int __u32;\n\
         typedef unsigned long long __u64; typedef long long __s64; typedef int __s32;\n\
         typedef __u16 __be16; typedef __u32 __be32; typedef __u32 __wsum;\n\
         #include <bpf/bpf_helpers.h>\n\
         struct { __uint(type, 1); __uint(max_entries, 16); __type(key, __u32); __type(value, __u64);\n\
                  __uint(pinning, LIBBPF_PIN_BY_NAME); } tracing_tasks SEC(\".maps\");\n\
         SEC(\"raw_tp/sched_process_exit\") int old(void *ctx) { __u32 k = 0; bpf_map_lookup_elem(&tracing_tasks, &k); return 0; }\n\
         char LICENSE[] SEC(\"license\") = \"GPL\";\n",
    )
    .unwrap();
    let obj = src.path().join("old.bpf.o");
    let ok = Command::new("clang")
        .args(["-target", "bpf", "-O2", "-g", "-c"])
        .arg(src.path().join("old.bpf.c"))
        .arg("-o")
        .arg(&obj)
        .status()
        .unwrap();
    assert!(ok.success());
    let layout_dir = dir.join(exitwatch::LAYOUT);
    std::fs::create_dir_all(&layout_dir).unwrap();
    let old = aya::EbpfLoader::new()
        .default_map_pin_directory(&layout_dir)
        .load_file(&obj)
        .unwrap();
    drop(old); // the map stays pinned

    match ExitWatch::open_or_load(&dir) {
        Err(Error::PinLayoutMismatch {
            map,
            found,
            expected,
            ..
        }) => {
            assert_eq!(map, "tracing_tasks");
            assert_eq!(
                (found.as_str(), expected.as_str()),
                ("key 4 B, value 8 B", "key 4 B, value 16 B")
            );
        }
        other => panic!("{other:?}"),
    }
    let _ = std::fs::remove_file(layout_dir.join("tracing_tasks"));
    let _ = std::fs::remove_dir(&layout_dir);
    let _ = std::fs::remove_dir(&dir);
}

#[test]
fn maps_left_by_a_loader_that_died_before_pinning_its_link_are_completed() {
    let Some(dir) = common::pin_dir("halfway") else {
        return;
    };
    // What a crash between pinning the maps and pinning the link leaves: the maps alone,
    // holding a tracked process.
    let mut child = Command::new("sh")
        .args(["-c", "read x; exit 4"])
        .stdin(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    {
        let mut watch = ExitWatch::open_or_load(&dir).unwrap();
        watch.track(child.id(), 11).unwrap();
        let link = watch.pin_dir().join("link");
        let pinned = aya::programs::links::PinnedLink::from_pin(&link).unwrap();
        pinned.unpin().unwrap(); // detached, pin gone: maps only
    }
    let mut watch = ExitWatch::open_or_load(&dir).unwrap();
    assert_eq!(
        watch.stats().unwrap().tracked,
        1,
        "the tracked process survives in the reused map"
    );
    drop(child.stdin.take());
    assert_eq!(common::reap(&mut child), 4 << 8);
    let exit = watch
        .take(child.id())
        .unwrap()
        .expect("recorded by the re-attached program");
    assert_eq!((exit.cookie, exit.status), (11, ExitStatus::Exited(4)));
    watch.unload().unwrap();
}
