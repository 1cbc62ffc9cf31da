//! The in-root check on real files: freshness, failure reasons, timeouts and escape attempts.

use std::fs::{self, File};
use std::os::unix::fs::symlink;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use fileprobe::{CachedPath, ProbeFailure, check, check_at, open_root};

const VALIDITY: Duration = Duration::from_secs(30);

fn set_mtime(path: &Path, t: SystemTime) {
    File::options()
        .write(true)
        .open(path)
        .unwrap()
        .set_modified(t)
        .unwrap();
}

fn root_of(dir: &Path) -> std::os::fd::OwnedFd {
    open_root(dir.to_str().unwrap()).unwrap()
}

#[test]
fn fresh_file_succeeds_and_stale_file_fails_with_its_age() {
    let dir = tempfile::tempdir().unwrap();
    let f = dir.path().join("probe");
    fs::write(&f, b"").unwrap();
    let now = SystemTime::now();
    set_mtime(&f, now - Duration::from_secs(20));
    let root = root_of(dir.path());
    let age = check_at(&root, "/probe", VALIDITY, now).unwrap();
    assert_eq!(age.as_secs(), 20);
    set_mtime(&f, now - Duration::from_secs(31));
    match check_at(&root, "/probe", VALIDITY, now) {
        Err(ProbeFailure::Stale { age, validity, .. }) => {
            assert_eq!((age.as_secs(), validity), (31, VALIDITY));
        }
        other => panic!("expected Stale, got {other:?}"),
    }
}

#[test]
fn age_exactly_validity_is_fresh_and_future_mtime_is_fresh_with_age_zero() {
    let dir = tempfile::tempdir().unwrap();
    let f = dir.path().join("probe");
    fs::write(&f, b"").unwrap();
    let now = SystemTime::now();
    set_mtime(&f, now - VALIDITY);
    let root = root_of(dir.path());
    assert_eq!(check_at(&root, "/probe", VALIDITY, now), Ok(VALIDITY));
    set_mtime(&f, now + Duration::from_secs(3600));
    assert_eq!(check_at(&root, "/probe", VALIDITY, now), Ok(Duration::ZERO));
}

#[test]
fn missing_file_and_gone_container_are_typed_failures() {
    let dir = tempfile::tempdir().unwrap();
    let root = root_of(dir.path());
    assert!(matches!(
        check_at(&root, "/nope", VALIDITY, SystemTime::now()),
        Err(ProbeFailure::Missing { .. })
    ));
    // No process has pid u32::MAX (pid_max is at most 2^22).
    assert!(matches!(
        fileprobe::open_container_root(u32::MAX),
        Err(ProbeFailure::ContainerGone { .. })
    ));
}

#[test]
fn async_check_reports_success_and_missing() {
    let dir = tempfile::tempdir().unwrap();
    fs::write(dir.path().join("probe"), b"").unwrap();
    let root = Arc::new(root_of(dir.path()));
    let t = Duration::from_secs(1);
    let ok = futures_lite::future::block_on(check(root.clone(), "/probe".into(), VALIDITY, t));
    assert!(ok.is_ok());
    let missing = futures_lite::future::block_on(check(root, "/x".into(), VALIDITY, t));
    assert!(matches!(missing, Err(ProbeFailure::Missing { .. })));
}

/// A host directory holding a fresh "host" file and a container root whose probe paths all try
/// to reach it. Inside the root nothing fresh exists, so success would prove an escape.
struct Escape {
    _dir: tempfile::TempDir,
    root: std::os::fd::OwnedFd,
    host_file: String,
}

fn escape_fixture() -> Escape {
    let dir = tempfile::tempdir().unwrap();
    let host_file = dir.path().join("host-probe");
    fs::write(&host_file, b"").unwrap();
    set_mtime(&host_file, SystemTime::now());
    let rootdir = dir.path().join("rootfs");
    fs::create_dir_all(rootdir.join("dir")).unwrap();
    let host = host_file.to_str().unwrap().to_owned();
    symlink(&host, rootdir.join("abs")).unwrap();
    symlink("../host-probe", rootdir.join("rel")).unwrap();
    symlink("../../../../../host-probe", rootdir.join("dir/deep")).unwrap();
    symlink("/proc/self/root", rootdir.join("self-root")).unwrap();
    // A stale file where a clamped `../host-probe` lands, to show it is the one statted.
    let clamped = rootdir.join("host-probe");
    fs::write(&clamped, b"").unwrap();
    set_mtime(&clamped, SystemTime::now() - Duration::from_secs(3600));
    Escape {
        root: root_of(&rootdir),
        _dir: dir,
        host_file: host,
    }
}

#[test]
fn absolute_symlink_out_of_the_root_resolves_inside_it() {
    let e = escape_fixture();
    let r = check_at(&e.root, "/abs", VALIDITY, SystemTime::now());
    assert!(matches!(r, Err(ProbeFailure::Missing { .. })), "{r:?}");
}

#[test]
fn relative_symlinks_and_dotdot_chains_are_clamped_to_the_root() {
    let e = escape_fixture();
    let now = SystemTime::now();
    for path in [
        "/rel",
        "/dir/deep",
        "/../../../../host-probe",
        "/dir/../../../host-probe",
    ] {
        match check_at(&e.root, path, VALIDITY, now) {
            // The clamped target is the stale file inside the root, not the fresh host file.
            Err(ProbeFailure::Stale { age, .. }) => assert!(age >= Duration::from_secs(3599)),
            other => panic!("{path}: expected the in-root stale file, got {other:?}"),
        }
    }
    let host_path = e.host_file.clone();
    let r = check_at(
        &e.root,
        &format!("/../../../../../..{host_path}"),
        VALIDITY,
        now,
    );
    assert!(matches!(r, Err(ProbeFailure::Missing { .. })), "{r:?}");
}

#[test]
fn symlink_to_proc_self_root_never_reaches_the_host() {
    let e = escape_fixture();
    let now = SystemTime::now();
    // Inside this root `/proc` does not exist, so the link leads nowhere.
    let r = check_at(
        &e.root,
        &format!("/self-root{}", e.host_file),
        VALIDITY,
        now,
    );
    assert!(r.is_err(), "{r:?}");
    // Even where /proc exists (root = the host's `/`), the magic link itself is refused.
    let host_root = open_root("/").unwrap();
    let r = check_at(
        &host_root,
        &format!("/proc/self/root{}", e.host_file),
        VALIDITY,
        now,
    );
    assert!(matches!(r, Err(ProbeFailure::Unreadable { .. })), "{r:?}");
    // ...while the same file reached without the magic link is fresh: the verdict would differ.
    assert!(check_at(&host_root, &e.host_file, VALIDITY, now).is_ok());
}

/// The cached-directory check gives the same verdict as the full resolution on every escape
/// attempt of the fixture (a symlink as the last component falls back to the in-root walk).
#[test]
fn cached_path_agrees_with_the_full_resolution_on_every_escape() {
    let e = escape_fixture();
    let now = SystemTime::now();
    let host_via_dotdot = format!("/../../../../../..{}", e.host_file);
    let self_root = format!("/self-root{}", e.host_file);
    for path in [
        "/abs",
        "/rel",
        "/dir/deep",
        "/../../../../host-probe",
        "/dir/../../../host-probe",
        "/dir/../host-probe",
        host_via_dotdot.as_str(),
        self_root.as_str(),
    ] {
        let mut cached = CachedPath::new(path).unwrap();
        for round in 0..3 {
            let want = check_at(&e.root, path, VALIDITY, now);
            let got = cached.check(&e.root, VALIDITY, now);
            assert_eq!(got, want, "{path}, round {round}");
            assert!(
                got.is_err(),
                "{path}: the fresh host file was statted: {got:?}"
            );
        }
    }
}

#[test]
fn cached_path_follows_a_directory_replaced_after_caching() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path().join("probe-dir");
    fs::create_dir(&d).unwrap();
    fs::write(d.join("probe"), b"").unwrap();
    let now = SystemTime::now();
    set_mtime(&d.join("probe"), now - Duration::from_secs(3600));
    let root = root_of(dir.path());
    let mut cached = CachedPath::new("/probe-dir/probe").unwrap();
    assert!(matches!(
        cached.check(&root, VALIDITY, now),
        Err(ProbeFailure::Stale { .. })
    ));
    assert!(cached.is_cached());

    // rm -r + mkdir: the cached fd now names a deleted directory.
    fs::remove_dir_all(&d).unwrap();
    assert!(matches!(
        cached.check(&root, VALIDITY, now),
        Err(ProbeFailure::Missing { .. })
    ));
    fs::create_dir(&d).unwrap();
    fs::write(d.join("probe"), b"").unwrap();
    set_mtime(&d.join("probe"), now - Duration::from_secs(5));
    assert_eq!(
        cached.check(&root, VALIDITY, now),
        Ok(Duration::from_secs(5))
    );
    assert!(cached.is_cached());
    // And again: the new directory is now the cached one and a stale file there is seen.
    set_mtime(&d.join("probe"), now - Duration::from_secs(60));
    assert!(matches!(
        cached.check(&root, VALIDITY, now),
        Err(ProbeFailure::Stale { .. })
    ));
}

#[test]
fn cached_path_never_stats_a_host_file_when_the_probe_becomes_a_symlink_out_of_the_root() {
    let dir = tempfile::tempdir().unwrap();
    // The host file is fresh: if it were statted the verdict would be success.
    let host_file = dir.path().join("host-probe");
    fs::write(&host_file, b"").unwrap();
    set_mtime(&host_file, SystemTime::now());
    let rootdir = dir.path().join("rootfs");
    fs::create_dir_all(rootdir.join("probe-dir")).unwrap();
    let probe = rootdir.join("probe-dir/probe");
    fs::write(&probe, b"").unwrap();
    let now = SystemTime::now();
    set_mtime(&probe, now - Duration::from_secs(3600));
    let root = root_of(&rootdir);
    let mut cached = CachedPath::new("/probe-dir/probe").unwrap();
    assert!(matches!(
        cached.check(&root, VALIDITY, now),
        Err(ProbeFailure::Stale { .. })
    ));
    assert!(cached.is_cached());

    // Replace the file by absolute and relative symlinks to the host file.
    let rel = "../../host-probe";
    for target in [host_file.to_str().unwrap(), rel] {
        fs::remove_file(&probe).unwrap();
        symlink(target, &probe).unwrap();
        for _ in 0..2 {
            let r = cached.check(&root, VALIDITY, now);
            // Absolute: /<host path> does not exist in the root. Relative: clamped to
            // /host-probe, which does not exist in the root either.
            assert!(
                matches!(r, Err(ProbeFailure::Missing { .. })),
                "{target}: {r:?}"
            );
        }
    }
    // A clamped target that exists inside the root is the one statted, through the symlink.
    let inside = rootdir.join("host-probe");
    fs::write(&inside, b"").unwrap();
    set_mtime(&inside, now - Duration::from_secs(7));
    assert_eq!(
        cached.check(&root, VALIDITY, now),
        Ok(Duration::from_secs(7))
    );
}

#[test]
fn cached_path_without_a_usable_basename_uses_the_full_resolution() {
    let dir = tempfile::tempdir().unwrap();
    fs::create_dir(dir.path().join("d")).unwrap();
    let root = root_of(dir.path());
    let now = SystemTime::now();
    for path in ["/d/..", "/d/.", "/d/", "/"] {
        let mut cached = CachedPath::new(path).unwrap();
        assert_eq!(
            cached.check(&root, VALIDITY, now),
            check_at(&root, path, VALIDITY, now),
            "{path}"
        );
        assert!(!cached.is_cached(), "{path}");
    }
    assert!(CachedPath::new("/a\0b").is_none());
}

#[test]
fn cached_path_refuses_magic_links_like_the_full_resolution() {
    let e = escape_fixture();
    let now = SystemTime::now();
    let host_root = open_root("/").unwrap();
    let path = format!("/proc/self/root{}", e.host_file);
    let mut cached = CachedPath::new(&path).unwrap();
    for _ in 0..2 {
        let r = cached.check(&host_root, VALIDITY, now);
        assert!(matches!(r, Err(ProbeFailure::Unreadable { .. })), "{r:?}");
    }
    // The last component itself a magic link: `statx` does not follow it, the fallback refuses.
    let mut link = CachedPath::new("/proc/self/root").unwrap();
    let r = link.check(&host_root, VALIDITY, now);
    assert!(matches!(r, Err(ProbeFailure::Unreadable { .. })), "{r:?}");
}

#[test]
fn cached_path_follows_a_directory_renamed_away_within_64_checks() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path().join("probe-dir");
    fs::create_dir(&d).unwrap();
    fs::write(d.join("probe"), b"").unwrap();
    let now = SystemTime::now();
    set_mtime(&d.join("probe"), now - Duration::from_secs(3600));
    let root = root_of(dir.path());
    let mut cached = CachedPath::new("/probe-dir/probe").unwrap();
    assert!(cached.check(&root, VALIDITY, now).is_err());
    // mv probe-dir old && mkdir probe-dir: the old copy still holds a (stale) probe file.
    fs::rename(&d, dir.path().join("old")).unwrap();
    fs::create_dir(&d).unwrap();
    fs::write(d.join("probe"), b"").unwrap();
    set_mtime(&d.join("probe"), now - Duration::from_secs(1));
    let first_fresh = (1..=64).find(|_| cached.check(&root, VALIDITY, now).is_ok());
    assert!(
        first_fresh.is_some(),
        "the new directory was never looked at"
    );
}

/// A rename anywhere on the system while a `..` is resolved makes `openat2(RESOLVE_IN_ROOT)`
/// answer `EAGAIN`; a check must not report that as an unreadable file (CI caught one once).
#[test]
fn renames_elsewhere_never_make_a_check_fail() {
    let root_dir = tempfile::tempdir().unwrap();
    std::fs::create_dir(root_dir.path().join("dir")).unwrap();
    std::fs::write(root_dir.path().join("probe"), b"").unwrap();
    let churn = tempfile::tempdir().unwrap();
    let (a, b) = (churn.path().join("a"), churn.path().join("b"));
    std::fs::write(&a, b"").unwrap();
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let renamer = {
        let stop = stop.clone();
        std::thread::spawn(move || {
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                std::fs::rename(&a, &b).unwrap();
                std::fs::rename(&b, &a).unwrap();
            }
        })
    };
    let root = std::fs::File::open(root_dir.path()).unwrap();
    let mut failures = Vec::new();
    for _ in 0..20_000 {
        if let Err(e) = fileprobe::mtime_at(&root, "/dir/../dir/../probe") {
            failures.push(e);
        }
    }
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    renamer.join().unwrap();
    assert!(
        failures.is_empty(),
        "{} failed, e.g. {:?}",
        failures.len(),
        failures.first()
    );
}
