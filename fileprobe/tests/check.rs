//! The in-root check on real files: freshness, failure reasons, timeouts and escape attempts.

use std::fs::{self, File};
use std::os::unix::fs::symlink;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use fileprobe::{ProbeFailure, check, check_at, open_root};

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
