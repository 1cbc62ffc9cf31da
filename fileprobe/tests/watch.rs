//! Checks through an inotify [`ChangeWatch`] on real files: the cached mtime is reused only
//! until a change, and every verdict equals the one of a `statx` per check.

use std::fs::{self, File};
use std::os::fd::OwnedFd;
use std::path::Path;
use std::process::Command;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use fileprobe::{
    CachedPath, ChangeWatch, ProbeFailure, ProbeKind, ProbeResult, ProbeSpec, Prober, Target,
    check_at, open_root,
};
use integration::{Need, require};

const VALIDITY: Duration = Duration::from_secs(30);

fn set_mtime(path: &Path, t: SystemTime) {
    File::options()
        .write(true)
        .open(path)
        .unwrap()
        .set_modified(t)
        .unwrap();
}

fn root_of(dir: &Path) -> OwnedFd {
    open_root(dir.to_str().unwrap()).unwrap()
}

fn stale(path: &str, age: u64) -> Result<Duration, ProbeFailure> {
    Err(ProbeFailure::Stale {
        path: path.into(),
        age: Duration::from_secs(age),
        validity: VALIDITY,
    })
}

/// A probe file `/d/probe` with mtime `now - 10 s`, and a watched path with that mtime cached.
struct Fixture {
    dir: tempfile::TempDir,
    root: OwnedFd,
    watch: Arc<ChangeWatch>,
    path: CachedPath,
    now: SystemTime,
}

impl Fixture {
    fn new() -> Self {
        let dir = tempfile::tempdir().unwrap();
        fs::create_dir(dir.path().join("d")).unwrap();
        let file = dir.path().join("d/probe");
        fs::write(&file, b"").unwrap();
        let now = SystemTime::now();
        set_mtime(&file, now - Duration::from_secs(10));
        let root = root_of(dir.path());
        let watch = Arc::new(ChangeWatch::new());
        let mut path = CachedPath::with_watch("/d/probe", watch.clone()).unwrap();
        let mut f = Fixture {
            dir,
            root,
            watch,
            path: CachedPath::new("/unused").unwrap(),
            now,
        };
        assert_eq!(
            path.check(&f.root, VALIDITY, now),
            Ok(Duration::from_secs(10))
        );
        assert!(path.is_watched());
        f.path = path;
        // Cached: 1 s later, age 11 s, and no statx.
        assert_eq!(f.check(1), Ok(Duration::from_secs(11)));
        assert_eq!(f.counts(), (1, 1));
        f
    }

    fn file(&self) -> std::path::PathBuf {
        self.dir.path().join("d/probe")
    }

    /// Drains the watch, checks at `now + later` s.
    fn check(&mut self, later: u64) -> Result<Duration, ProbeFailure> {
        self.watch.drain();
        let now = self.now + Duration::from_secs(later);
        let got = self.path.check(&self.root, VALIDITY, now);
        // The same verdict as a full resolution and statx at that time.
        assert_eq!(got, check_at(&self.root, "/d/probe", VALIDITY, now));
        got
    }

    /// (statx calls, cached checks).
    fn counts(&self) -> (u64, u64) {
        let s = self.watch.stats();
        (s.statx_calls, s.cached_checks)
    }
}

/// Unmounts (lazily) when dropped, so a failed assertion leaves no mount behind.
struct Unmount<'a>(&'a Path);

impl Drop for Unmount<'_> {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg("-l").arg(self.0).status();
    }
}

#[test]
fn a_hundred_checks_of_an_unchanged_file_do_two_statx() {
    let mut f = Fixture::new();
    for _ in 2..100 {
        assert_eq!(f.check(1), Ok(Duration::from_secs(11)));
    }
    // The first check and the 65th (the directory is resolved again every 64 checks).
    assert_eq!(f.counts(), (2, 98));
    assert_eq!(f.watch.stats().watches, 1);
}

#[test]
fn a_touch_after_a_cached_verdict_flips_it_at_the_next_check() {
    let mut f = Fixture::new();
    // Back-dated: stale at once, not 20 s later.
    set_mtime(&f.file(), f.now - Duration::from_secs(100));
    assert_eq!(f.check(2), stale("/d/probe", 102));
    assert_eq!(f.counts(), (2, 1));
    // Touched again: fresh at the next check.
    set_mtime(&f.file(), f.now);
    assert_eq!(f.check(3), Ok(Duration::from_secs(3)));
    assert_eq!(f.check(4), Ok(Duration::from_secs(4)));
    assert_eq!(f.counts(), (3, 2));
}

#[test]
fn a_write_after_a_cached_verdict_is_seen() {
    let mut f = Fixture::new();
    fs::write(f.file(), b"alive").unwrap();
    let mtime = fs::metadata(f.file()).unwrap().modified().unwrap();
    let want = (f.now + Duration::from_secs(5))
        .duration_since(mtime)
        .unwrap();
    // The cached mtime (10 s before `now`) would give 15 s.
    assert!(want < Duration::from_secs(6));
    assert_eq!(f.check(5), Ok(want));
    assert_eq!(f.counts(), (2, 1));
}

#[test]
fn a_rename_over_the_file_is_seen() {
    let mut f = Fixture::new();
    let tmp = f.dir.path().join("d/probe.tmp");
    fs::write(&tmp, b"").unwrap();
    set_mtime(&tmp, f.now - Duration::from_secs(50));
    fs::rename(&tmp, f.file()).unwrap();
    assert_eq!(f.check(2), stale("/d/probe", 52));
    // A rename from another directory too (IN_MOVED_TO).
    let other = f.dir.path().join("elsewhere");
    fs::write(&other, b"").unwrap();
    set_mtime(&other, f.now - Duration::from_secs(1));
    assert_eq!(f.check(3), stale("/d/probe", 53));
    fs::rename(&other, f.file()).unwrap();
    assert_eq!(f.check(4), Ok(Duration::from_secs(5)));
}

#[test]
fn deleting_the_file_fails_and_recreating_it_is_seen() {
    let mut f = Fixture::new();
    fs::remove_file(f.file()).unwrap();
    assert_eq!(
        f.check(2),
        Err(ProbeFailure::Missing {
            path: "/d/probe".into()
        })
    );
    fs::write(f.file(), b"").unwrap();
    set_mtime(&f.file(), f.now - Duration::from_secs(1));
    assert_eq!(f.check(3), Ok(Duration::from_secs(4)));
    // Deleted and recreated between two checks, with an old mtime.
    fs::remove_file(f.file()).unwrap();
    fs::write(f.file(), b"").unwrap();
    set_mtime(&f.file(), f.now - Duration::from_secs(60));
    assert_eq!(f.check(4), stale("/d/probe", 64));
}

#[test]
fn a_directory_renamed_away_is_followed_at_the_next_check() {
    let mut f = Fixture::new();
    fs::rename(f.dir.path().join("d"), f.dir.path().join("d.old")).unwrap();
    assert_eq!(
        f.check(2),
        Err(ProbeFailure::Missing {
            path: "/d/probe".into()
        })
    );
    // A new directory in its place, with a stale file.
    fs::create_dir(f.dir.path().join("d")).unwrap();
    fs::write(f.file(), b"").unwrap();
    set_mtime(&f.file(), f.now - Duration::from_secs(40));
    assert_eq!(f.check(3), stale("/d/probe", 43));
    // And the old directory (still holding a fresh file) is no longer watched for this path.
    assert!(f.path.is_watched());
    assert_eq!(f.watch.stats().watches, 1);
}

#[test]
fn a_directory_removed_and_recreated_is_followed_at_the_next_check() {
    let mut f = Fixture::new();
    fs::remove_dir_all(f.dir.path().join("d")).unwrap();
    fs::create_dir(f.dir.path().join("d")).unwrap();
    fs::write(f.file(), b"").unwrap();
    set_mtime(&f.file(), f.now - Duration::from_secs(45));
    assert_eq!(f.check(2), stale("/d/probe", 47));
}

#[test]
fn a_permission_change_on_the_directory_voids_the_cache() {
    let mut f = Fixture::new();
    let d = f.dir.path().join("d");
    let mode = fs::metadata(&d).unwrap().permissions();
    use std::os::unix::fs::PermissionsExt;
    fs::set_permissions(&d, fs::Permissions::from_mode(0o700)).unwrap();
    // Same verdict (the test runs as the owner or root), from a new statx.
    assert_eq!(f.check(2), Ok(Duration::from_secs(12)));
    assert_eq!(f.counts(), (2, 1));
    fs::set_permissions(&d, mode).unwrap();
}

#[test]
fn a_queue_overflow_for_real_voids_the_cache() {
    let mut f = Fixture::new();
    let max: usize = fs::read_to_string("/proc/sys/fs/inotify/max_queued_events")
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    // More distinct events than the queue holds, without draining.
    let d = f.dir.path().join("d");
    for i in 0..=max {
        File::create(d.join(format!("n{i}"))).unwrap();
    }
    set_mtime(&f.file(), f.now - Duration::from_secs(100));
    assert_eq!(f.check(2), stale("/d/probe", 102));
    assert!(f.watch.stats().overflows >= 1);
}

#[test]
fn a_hard_linked_file_is_never_served_from_the_cache() {
    let mut f = Fixture::new();
    let link = f.dir.path().join("link");
    fs::hard_link(f.file(), &link).unwrap();
    // The next statx (after this touch) sees two links: not cached from then on.
    set_mtime(&f.file(), f.now - Duration::from_secs(5));
    assert_eq!(f.check(2), Ok(Duration::from_secs(7)));
    // Changes through the other link reach no watch of /d; each check asks the kernel.
    set_mtime(&link, f.now - Duration::from_secs(70));
    assert_eq!(f.check(3), stale("/d/probe", 73));
    assert_eq!(f.counts(), (3, 1));
}

/// Every check of `script` against a watch and against the fallback: identical verdicts.
fn same_verdicts(watch: ChangeWatch) -> (Vec<Result<Duration, ProbeFailure>>, (u64, u64)) {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("probe");
    fs::write(&file, b"").unwrap();
    let t0 = SystemTime::now();
    set_mtime(&file, t0);
    let root = root_of(dir.path());
    let watch = Arc::new(watch);
    let mut p = CachedPath::with_watch("/probe", watch.clone()).unwrap();
    let mut out = Vec::new();
    for i in 0..100u64 {
        match i {
            20 => set_mtime(&file, t0 + Duration::from_secs(5)),
            40 => fs::remove_file(&file).unwrap(),
            45 => {
                fs::write(&file, b"").unwrap();
                set_mtime(&file, t0 + Duration::from_secs(44));
            }
            60 => set_mtime(&file, t0 - Duration::from_secs(100)),
            61 => set_mtime(&file, t0 + Duration::from_secs(61)),
            _ => {}
        }
        watch.drain();
        out.push(p.check(&root, VALIDITY, t0 + Duration::from_secs(i)));
    }
    let s = watch.stats();
    (out, (s.statx_calls, s.cached_checks))
}

#[test]
fn the_statx_fallback_gives_identical_verdicts() {
    let (watched, (statx, cached)) = same_verdicts(ChangeWatch::new());
    let (fallback, counts) = same_verdicts(ChangeWatch::disabled());
    assert_eq!(watched, fallback);
    assert_eq!(counts, (100, 0));
    assert_eq!(statx + cached, 100);
    assert!(statx < 40, "{statx} statx calls");
    // No watch allowed: the same, one statx per check.
    let (limited, counts) = same_verdicts(ChangeWatch::new().with_limit(0));
    assert_eq!(limited, fallback);
    assert_eq!(counts, (100, 0));
    // Spot checks of the script: stale after 35 s, missing while deleted, fresh again.
    assert_eq!(fallback[35], Ok(Duration::from_secs(30)));
    assert_eq!(fallback[30], Ok(Duration::from_secs(25)));
    assert_eq!(fallback[36], stale("/probe", 31));
    assert_eq!(
        fallback[42],
        Err(ProbeFailure::Missing {
            path: "/probe".into()
        })
    );
    assert_eq!(fallback[50], Ok(Duration::from_secs(6)));
    assert_eq!(fallback[60], stale("/probe", 160));
    assert_eq!(fallback[70], Ok(Duration::from_secs(9)));
}

#[test]
fn a_directory_on_a_file_system_inotify_cannot_see_fully_is_statted_every_time() {
    // procfs: its files change without inotify events.
    let root = open_root("/proc/sys/fs").unwrap();
    let watch = Arc::new(ChangeWatch::new());
    let mut p = CachedPath::with_watch("/inotify/max_user_watches", watch.clone()).unwrap();
    let now = SystemTime::now();
    for _ in 0..10 {
        watch.drain();
        let r = p.check(&root, Duration::from_secs(u64::from(u32::MAX)), now);
        assert_eq!(
            r,
            check_at(
                &root,
                "/inotify/max_user_watches",
                Duration::from_secs(u64::from(u32::MAX)),
                now
            )
        );
    }
    assert!(!p.is_watched());
    let s = watch.stats();
    assert_eq!((s.statx_calls, s.cached_checks, s.watches), (10, 0, 0));
    assert!(s.unwatched >= 1);
}

/// `mount …` or panic with its stderr.
fn run(cmd: &mut Command) {
    let out = cmd.output().unwrap();
    assert!(
        out.status.success(),
        "{cmd:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn a_touch_through_an_overlay_mount_and_through_a_bind_mount_is_seen() {
    let Some(()) = require(&[
        Need::Root,
        Need::Program("mount"),
        Need::Program("umount"),
        Need::Program("unshare"),
    ]) else {
        return;
    };
    let base = tempfile::tempdir().unwrap();
    let (lower, upper, work, merged) = (
        base.path().join("lower"),
        base.path().join("upper"),
        base.path().join("work"),
        base.path().join("merged"),
    );
    for d in [&lower, &upper, &work, &merged] {
        fs::create_dir(d).unwrap();
    }
    fs::create_dir(lower.join("d")).unwrap();
    fs::write(lower.join("d/probe"), b"").unwrap();
    let now = SystemTime::now();
    set_mtime(&lower.join("d/probe"), now - Duration::from_secs(10));
    let opts = format!(
        "lowerdir={},upperdir={},workdir={}",
        lower.display(),
        upper.display(),
        work.display()
    );
    run(Command::new("mount")
        .args(["-t", "overlay", "overlay", "-o", &opts])
        .arg(&merged));
    let _unmount = Unmount(&merged);

    let root = root_of(&merged);
    let watch = Arc::new(ChangeWatch::new());
    let mut p = CachedPath::with_watch("/d/probe", watch.clone()).unwrap();
    let mut check = |later: u64| {
        watch.drain();
        let at = now + Duration::from_secs(later);
        let got = p.check(&root, VALIDITY, at);
        assert_eq!(got, check_at(&root, "/d/probe", VALIDITY, at));
        got
    };
    assert_eq!(check(0), Ok(Duration::from_secs(10)));
    assert_eq!(check(1), Ok(Duration::from_secs(11)));
    assert_eq!(watch.stats().watches, 1, "overlayfs is watched");
    // A back-dating touch through the overlay (copies the file up): seen at the next check.
    set_mtime(&merged.join("d/probe"), now - Duration::from_secs(60));
    assert_eq!(check(2), stale("/d/probe", 62));
    set_mtime(&merged.join("d/probe"), now);
    assert_eq!(check(3), Ok(Duration::from_secs(3)));
    // From another mount namespace, through the same overlay mount (inotify is per inode).
    let stamp = now - Duration::from_secs(80);
    let secs = stamp
        .duration_since(SystemTime::UNIX_EPOCH)
        .unwrap()
        .as_secs();
    run(Command::new("unshare")
        .args(["-m", "touch", "-m", "-d"])
        .arg(format!("@{secs}"))
        .arg(merged.join("d/probe")));
    let age = (now + Duration::from_secs(4))
        .duration_since(SystemTime::UNIX_EPOCH + Duration::from_secs(secs))
        .unwrap();
    assert_eq!(
        check(4),
        Err(ProbeFailure::Stale {
            path: "/d/probe".into(),
            age,
            validity: VALIDITY
        })
    );
    let s = watch.stats();
    assert_eq!((s.statx_calls, s.cached_checks), (4, 1));

    // A bind mount of a watched directory (an emptyDir): a touch through the bind mount reaches
    // the same inode, so the watch on the container's side sees it.
    let host = tempfile::tempdir().unwrap();
    fs::create_dir(host.path().join("vol")).unwrap();
    fs::write(host.path().join("vol/probe"), b"").unwrap();
    set_mtime(
        &host.path().join("vol/probe"),
        now - Duration::from_secs(10),
    );
    let ctr = tempfile::tempdir().unwrap();
    fs::create_dir(ctr.path().join("probe-dir")).unwrap();
    run(Command::new("mount")
        .arg("--bind")
        .arg(host.path().join("vol"))
        .arg(ctr.path().join("probe-dir")));
    let _unbind = Unmount(&ctr.path().join("probe-dir"));
    let root = root_of(ctr.path());
    let mut p = CachedPath::with_watch("/probe-dir/probe", watch.clone()).unwrap();
    let mut check = |later: u64| {
        watch.drain();
        let at = now + Duration::from_secs(later);
        let got = p.check(&root, VALIDITY, at);
        assert_eq!(got, check_at(&root, "/probe-dir/probe", VALIDITY, at));
        got
    };
    assert_eq!(check(0), Ok(Duration::from_secs(10)));
    assert_eq!(check(1), Ok(Duration::from_secs(11)));
    set_mtime(
        &host.path().join("vol/probe"),
        now - Duration::from_secs(90),
    );
    assert_eq!(check(2), stale("/probe-dir/probe", 92));
}

#[test]
fn a_file_that_is_a_bind_mount_of_its_own_is_never_served_from_the_cache() {
    let Some(()) = require(&[Need::Root, Need::Program("mount"), Need::Program("umount")]) else {
        return;
    };
    let host = tempfile::tempdir().unwrap();
    let src = host.path().join("src-probe");
    fs::write(&src, b"").unwrap();
    let now = SystemTime::now();
    set_mtime(&src, now - Duration::from_secs(10));
    let ctr = tempfile::tempdir().unwrap();
    fs::write(ctr.path().join("probe"), b"").unwrap();
    let target = ctr.path().join("probe");
    run(Command::new("mount").arg("--bind").arg(&src).arg(&target));
    let _unmount = Unmount(&target);
    let root = root_of(ctr.path());
    let watch = Arc::new(ChangeWatch::new());
    let mut p = CachedPath::with_watch("/probe", watch.clone()).unwrap();
    assert_eq!(p.check(&root, VALIDITY, now), Ok(Duration::from_secs(10)));
    // Its changes go to the source's directory, which is not watched: checked every time.
    set_mtime(&src, now - Duration::from_secs(100));
    watch.drain();
    assert_eq!(p.check(&root, VALIDITY, now), stale("/probe", 100));
    let s = watch.stats();
    assert_eq!((s.statx_calls, s.cached_checks), (2, 0));
}

#[test]
fn a_prober_gives_the_same_events_with_and_without_inotify_and_fewer_statx_with() {
    use fileprobe::ManualClock;
    let run = |watch: ChangeWatch| {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("probe");
        fs::write(&file, b"").unwrap();
        let clock = ManualClock::auto_advance();
        set_mtime(&file, clock.wall());
        let t0 = clock.now();
        let mut prober = Prober::with_clock(clock.clone()).with_watch(watch);
        // Fresh for 99 periods of 10 s, stale at the 101st run (1000 s).
        let yaml = "file: {path: /probe, validity: 990}\nperiodSeconds: 10\nfailureThreshold: 1";
        let p = ProbeSpec::from_yaml(yaml)
            .unwrap()
            .validate(ProbeKind::Readiness)
            .unwrap();
        let root = Arc::new(root_of(dir.path()));
        prober.add(
            "c",
            p,
            Target {
                id: "c1".into(),
                root,
                started_at: t0,
            },
        );
        let mut got = Vec::new();
        futures_lite::future::block_on(async {
            while got.len() < 2 {
                let ev = prober.next_event().await.unwrap();
                got.push((clock.now() - t0, ev.result, ev.reason));
            }
        });
        (got, prober.counters())
    };
    let (watched, c) = run(ChangeWatch::new());
    let (fallback, f) = run(ChangeWatch::disabled());
    assert_eq!(watched, fallback);
    let s = Duration::from_secs;
    assert_eq!(
        (watched[0].0, watched[0].1, watched[1].0, watched[1].1),
        (s(0), ProbeResult::Success, s(1000), ProbeResult::Failure)
    );
    // Runs 1 and 65 (directory revalidation) and the stale 101st ask the kernel.
    assert_eq!(
        (c.runs, c.statx_calls, c.cached_checks, c.watches),
        (101, 3, 98, 1)
    );
    assert_eq!(
        (f.runs, f.statx_calls, f.cached_checks, f.watches),
        (101, 101, 0, 0)
    );
}

#[test]
fn a_prober_sees_a_back_dating_touch_at_the_next_run_after_cached_successes() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("probe");
    fs::write(&file, b"").unwrap();
    let root = Arc::new(root_of(dir.path()));
    let yaml = "file: {path: /probe, validity: 3600}\nperiodSeconds: 1\nfailureThreshold: 1";
    let p = ProbeSpec::from_yaml(yaml)
        .unwrap()
        .validate(ProbeKind::Readiness)
        .unwrap();
    let mut prober = Prober::new();
    prober.add(
        "c",
        p,
        Target {
            id: "c1".into(),
            root,
            started_at: std::time::Instant::now(),
        },
    );
    let first = futures_lite::future::block_on(prober.next_event()).unwrap();
    assert_eq!(first.result, ProbeResult::Success);
    // Let a few runs be answered from the cache.
    while prober.counters().runs < 3 {
        let waker = std::task::Waker::noop();
        let mut cx = std::task::Context::from_waker(waker);
        assert!(prober.poll_event(&mut cx).is_pending());
        std::thread::sleep(Duration::from_millis(100));
    }
    let before = prober.counters();
    assert_eq!((before.statx_calls, before.watches), (1, 1));
    assert!(before.cached_checks >= 2);
    // Two hours old: the next run fails.
    set_mtime(&file, SystemTime::now() - Duration::from_secs(7200));
    let ev = futures_lite::future::block_on(prober.next_event()).unwrap();
    assert_eq!(ev.result, ProbeResult::Failure);
    match ev.reason {
        Some(ProbeFailure::Stale { age, .. }) => assert!(age > Duration::from_secs(7200)),
        other => panic!("not a Stale failure: {other:?}"),
    }
    let after = prober.counters();
    assert_eq!(after.statx_calls, 2);
    assert_eq!(after.runs, before.runs + 1);
}
