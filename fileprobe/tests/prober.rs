//! The seed's two scenarios end to end: real files, a real toucher, the real scheduler.

use std::fs;
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread;
use std::time::{Duration, Instant};

use fileprobe::{FileProbe, ProbeFailure, ProbeKind, ProbeResult, ProbeSpec, Prober, Target};
use futures_lite::future::block_on;

/// The seed's readiness probe (`validity: 30`, `initialDelaySeconds: 5`, `periodSeconds: 10`,
/// `failureThreshold: 3`) with every duration divided by `scale`, so seconds become milliseconds.
fn seed_readiness(scale: u32) -> FileProbe {
    let yaml = "file: {path: /probe-dir/probe, validity: 30}\ninitialDelaySeconds: 5\nperiodSeconds: 10\ntimeoutSeconds: 1\nfailureThreshold: 3";
    let mut p = ProbeSpec::from_yaml(yaml)
        .unwrap()
        .validate(ProbeKind::Readiness)
        .unwrap();
    p.validity /= scale;
    p.initial_delay /= scale;
    p.period /= scale;
    p
}

fn target(dir: &Path) -> Target {
    let root = Arc::new(fileprobe::open_root(dir.to_str().unwrap()).unwrap());
    Target {
        id: "c1".into(),
        root,
        started_at: Instant::now(),
    }
}

/// Collects events until `until` has passed.
fn events_for(
    prober: &mut Prober,
    until: Duration,
) -> Vec<(Duration, ProbeResult, Option<ProbeFailure>)> {
    let start = Instant::now();
    let mut out = Vec::new();
    block_on(async {
        let deadline = async_io::Timer::after(until);
        futures_lite::pin!(deadline);
        loop {
            let next = async { Some(prober.next_event().await) };
            let stop = async {
                (&mut deadline).await;
                None
            };
            match futures_lite::future::or(next, stop).await {
                Some(Some(ev)) => out.push((start.elapsed(), ev.result, ev.reason)),
                _ => break,
            }
        }
    });
    out
}

#[test]
fn container_touching_every_20s_with_validity_30_stays_ready_in_scaled_time() {
    // Scale 1/20: touch every 1 s, validity 1.5 s, period 0.5 s, initial delay 0.25 s.
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("probe-dir/probe");
    fs::create_dir_all(file.parent().unwrap()).unwrap();
    fs::write(&file, b"").unwrap();
    let stop = Arc::new(AtomicBool::new(false));
    let toucher = {
        let (stop, file) = (stop.clone(), file.clone());
        thread::spawn(move || {
            while !stop.load(Ordering::Relaxed) {
                fs::File::options()
                    .write(true)
                    .open(&file)
                    .unwrap()
                    .set_modified(std::time::SystemTime::now())
                    .unwrap();
                thread::sleep(Duration::from_secs(1));
            }
        })
    };
    let mut prober = Prober::new();
    prober.add("container1", seed_readiness(20), target(dir.path()));
    let events = events_for(&mut prober, Duration::from_secs(5));
    stop.store(true, Ordering::Relaxed);
    toucher.join().unwrap();
    let results: Vec<_> = events.iter().map(|e| e.1).collect();
    assert_eq!(results, [ProbeResult::Success], "{events:?}");
    assert!(
        events[0].0 >= Duration::from_millis(250),
        "initial delay honoured: {events:?}"
    );
    let c = prober.counters();
    assert!(c.runs >= 8 && c.failures == 0, "{c:?}");
}

#[test]
fn container_that_never_touches_goes_not_ready_after_failure_threshold_periods() {
    // Same scaled probe; the file is written once and then never touched (the app failed).
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("probe-dir/probe");
    fs::create_dir_all(file.parent().unwrap()).unwrap();
    fs::write(&file, b"").unwrap();
    let mut prober = Prober::new();
    prober.add("container1", seed_readiness(20), target(dir.path()));
    let events = events_for(&mut prober, Duration::from_secs(4));
    let results: Vec<_> = events.iter().map(|e| e.1).collect();
    assert_eq!(
        results,
        [ProbeResult::Success, ProbeResult::Failure],
        "{events:?}"
    );
    // The file goes stale at 1.5 s, exactly on a tick, so that tick may see it fresh or just
    // stale: the failures are at 1.5|2.0, 2.0|2.5, 2.5|3.0 s and the third flips the result.
    // Before 2.4 s would mean fewer than three failures; after 3.45 s, more than three.
    let went_down = events[1].0;
    assert!(
        went_down >= Duration::from_millis(2400) && went_down < Duration::from_millis(3450),
        "{events:?}"
    );
    assert!(
        matches!(events[1].2, Some(ProbeFailure::Stale { .. })),
        "{events:?}"
    );
}

#[test]
fn real_time_liveness_with_one_second_period_fails_once_the_file_is_two_seconds_old() {
    let dir = tempfile::tempdir().unwrap();
    fs::write(dir.path().join("probe"), b"").unwrap();
    let yaml = "file: {path: /probe, validity: 2}\nperiodSeconds: 1\nfailureThreshold: 1";
    let probe = ProbeSpec::from_yaml(yaml)
        .unwrap()
        .validate(ProbeKind::Liveness)
        .unwrap();
    let mut prober = Prober::new();
    prober.add("c", probe, target(dir.path()));
    let events = events_for(&mut prober, Duration::from_millis(4500));
    assert_eq!(events.len(), 1, "{events:?}");
    assert_eq!(events[0].1, ProbeResult::Failure);
    // The file's age, not the time since this test started waiting (ticks count from the
    // prober's start, a little earlier): the first failing check saw it older than 2 s.
    match &events[0].2 {
        Some(ProbeFailure::Stale { age, validity, .. }) => {
            assert_eq!(*validity, Duration::from_secs(2));
            assert!(*age > Duration::from_secs(2), "{events:?}");
        }
        other => panic!("not a Stale failure: {other:?}"),
    }
    assert!(events[0].0 < Duration::from_secs(4), "{events:?}");
    // On hold after a liveness failure: later ticks are skipped, not run.
    assert!(prober.counters().skips >= 1, "{:?}", prober.counters());
}

#[test]
fn startup_probe_gates_readiness_and_removed_probes_stop_running() {
    let dir = tempfile::tempdir().unwrap();
    let t = target(dir.path());
    let mk = |kind, path: &str| {
        let yaml = format!("file: {{path: {path}, validity: 30}}\nperiodSeconds: 1");
        let mut p = ProbeSpec::from_yaml(&yaml).unwrap().validate(kind).unwrap();
        p.period = Duration::from_millis(100);
        p.failure_threshold = 30;
        p
    };
    let mut prober = Prober::new();
    prober.add("c", mk(ProbeKind::Startup, "/started"), t.clone());
    prober.add("c", mk(ProbeKind::Readiness, "/ready"), t.clone());
    fs::write(dir.path().join("ready"), b"").unwrap();
    assert!(
        events_for(&mut prober, Duration::from_millis(400)).is_empty(),
        "readiness waits for startup"
    );
    fs::write(dir.path().join("started"), b"").unwrap();
    let kinds: Vec<_> = events_for(&mut prober, Duration::from_millis(400))
        .into_iter()
        .map(|e| e.1)
        .collect();
    assert_eq!(kinds, [ProbeResult::Success, ProbeResult::Success]);
    assert!(prober.remove("c", ProbeKind::Readiness));
    assert!(prober.remove("c", ProbeKind::Startup));
    let runs = prober.counters().runs;
    assert!(block_on(prober.next_event()).is_none());
    assert_eq!(prober.counters().runs, runs);
}

fn readiness(path: &str, extra: &str) -> FileProbe {
    let yaml = format!("file: {{path: {path}, validity: 3600}}\n{extra}");
    ProbeSpec::from_yaml(&yaml)
        .unwrap()
        .validate(ProbeKind::Readiness)
        .unwrap()
}

/// Waits (without asserting on time) until `f` holds, checking every 10 ms for up to 20 s.
fn wait_for(mut f: impl FnMut() -> bool) -> bool {
    (0..2000).any(|_| {
        thread::sleep(Duration::from_millis(10));
        f()
    })
}

#[test]
fn handle_adds_and_removes_probes_while_the_consumer_is_awaiting_the_stream() {
    use futures_lite::StreamExt;
    let dir = tempfile::tempdir().unwrap();
    fs::write(dir.path().join("a"), b"").unwrap();
    fs::write(dir.path().join("b"), b"").unwrap();
    let t = target(dir.path());
    let mut prober = Prober::new();
    let handle = prober.handle();
    // The consumer starts on an empty prober: with a handle alive the stream waits, not ends.
    let consumer = thread::spawn(move || {
        let mut seen = Vec::new();
        block_on(async {
            while let Some(ev) = prober.next().await {
                seen.push((ev.container, ev.kind, ev.result));
            }
        });
        (seen, prober.counters(), prober.len())
    });
    let fast = "periodSeconds: 1";
    assert!(handle.add("a", readiness("/a", fast), t.clone()));
    assert!(
        wait_for(|| handle.counters().events == 1),
        "a never reported"
    );
    let other = handle.clone();
    let adder = thread::spawn(move || other.add("b", readiness("/b", fast), t));
    assert!(adder.join().unwrap());
    assert!(
        wait_for(|| handle.counters().events == 2),
        "b never reported"
    );
    assert!(handle.remove("a", ProbeKind::Readiness));
    assert!(handle.remove("b", ProbeKind::Readiness));
    // No probe and no handle left: the stream ends, so the removals took effect.
    drop(handle);
    let (seen, counters, len) = consumer.join().unwrap();
    let r = ProbeKind::Readiness;
    assert_eq!(
        seen,
        [
            ("a".to_string(), r, ProbeResult::Success),
            ("b".to_string(), r, ProbeResult::Success)
        ]
    );
    assert_eq!((counters.events, counters.failures, len), (2, 0, 0));
}

#[test]
fn a_handle_on_a_dropped_prober_says_so() {
    let dir = tempfile::tempdir().unwrap();
    let handle = Prober::new().handle();
    assert!(!handle.add("a", readiness("/a", ""), target(dir.path())));
    assert!(!handle.remove("a", ProbeKind::Readiness));
}

#[test]
fn jitter_and_initial_delay_order_first_runs_on_a_manual_clock() {
    use fileprobe::ManualClock;
    let dir = tempfile::tempdir().unwrap();
    for f in ["a", "b", "c"] {
        fs::write(dir.path().join(f), b"").unwrap();
    }
    let root = Arc::new(fileprobe::open_root(dir.path().to_str().unwrap()).unwrap());
    let clock = ManualClock::auto_advance();
    let t0 = clock.now();
    let mut prober = Prober::with_clock(clock.clone());
    let seed = 42;
    prober.seed_jitter(seed);
    let before = |secs| t0.checked_sub(Duration::from_secs(secs)).unwrap();
    let tgt = |id: &str, started_at| Target {
        id: id.into(),
        root: root.clone(),
        started_at,
    };
    // a and b started before the prober (a kubelet restart): first runs jittered within the
    // 10 s period. c starts with the prober: due at once, but initialDelaySeconds: 5 skips the
    // ticks at 0, 2 and 4 s and the first run is at 6 s.
    prober.add(
        "a",
        readiness("/a", "periodSeconds: 10"),
        tgt("a", before(100)),
    );
    prober.add(
        "b",
        readiness("/b", "periodSeconds: 10"),
        tgt("b", before(50)),
    );
    let c = readiness("/c", "periodSeconds: 2\ninitialDelaySeconds: 5");
    prober.add("c", c, tgt("c", t0));

    let mut rng = fastrand::Rng::with_seed(seed);
    let period = Duration::from_secs(10);
    // Due times are rounded up to the prober's 100 ms ticks.
    let tick =
        |d: Duration| Duration::from_millis(100) * (d.as_nanos().div_ceil(100_000_000) as u32);
    let mut want = vec![
        ("a".to_string(), tick(period.mul_f64(rng.f64()))),
        ("b".to_string(), tick(period.mul_f64(rng.f64()))),
        ("c".to_string(), Duration::from_secs(6)),
    ];
    want.sort_by_key(|w| w.1);
    // In different ticks, so each runs in its own batch at its own time.
    assert!(want.windows(2).all(|w| w[1].1 > w[0].1), "{want:?}");

    let mut got = Vec::new();
    block_on(async {
        while got.len() < 3 {
            let ev = prober.next_event().await.unwrap();
            assert_eq!(ev.result, ProbeResult::Success);
            got.push((ev.container, clock.now() - t0));
        }
    });
    assert_eq!(got, want);
    assert_eq!(prober.counters().skips, 3, "{:?}", prober.counters());
}

#[test]
fn manual_clock_ages_the_file_and_the_failure_threshold_counts_periods() {
    use fileprobe::ManualClock;
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("probe");
    fs::write(&file, b"").unwrap();
    let clock = ManualClock::auto_advance();
    fs::File::options()
        .write(true)
        .open(&file)
        .unwrap()
        .set_modified(clock.wall())
        .unwrap();
    let t0 = clock.now();
    let mut prober = Prober::with_clock(clock.clone());
    // The seed's readiness probe in real seconds: validity 30, period 10, failureThreshold 3.
    let yaml = "file: {path: /probe, validity: 30}\nperiodSeconds: 10\nfailureThreshold: 3";
    let p = ProbeSpec::from_yaml(yaml)
        .unwrap()
        .validate(ProbeKind::Readiness)
        .unwrap();
    prober.add(
        "c",
        p,
        Target {
            id: "c1".into(),
            root: target(dir.path()).root,
            started_at: t0,
        },
    );
    let mut got = Vec::new();
    block_on(async {
        while got.len() < 2 {
            let ev = prober.next_event().await.unwrap();
            got.push((clock.now() - t0, ev.result));
        }
    });
    // Fresh at 0..30 s; stale at 40, 50, 60 s: the third failure flips the result at 60 s.
    let s = Duration::from_secs;
    assert_eq!(
        got,
        [(s(0), ProbeResult::Success), (s(60), ProbeResult::Failure)]
    );
    assert_eq!(prober.counters().runs, 7);
}
