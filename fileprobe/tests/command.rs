//! The `shimless-probe` binary as a process: its exit codes and output are those of
//! `fileprobe::run_command` with `/` as the root.

use std::process::Command;
use std::time::{Duration, SystemTime};

const BIN: &str = env!("CARGO_BIN_EXE_shimless-probe");

struct Ran {
    code: Option<i32>,
    stdout: String,
    stderr: String,
}

fn probe(args: &[&str]) -> Ran {
    let out = Command::new(BIN).args(args).output().unwrap();
    Ran {
        code: out.status.code(),
        stdout: String::from_utf8(out.stdout).unwrap(),
        stderr: String::from_utf8(out.stderr).unwrap(),
    }
}

/// A probe file whose mtime is `ago` in the past.
fn file_aged(dir: &tempfile::TempDir, ago: Duration) -> String {
    let path = dir.path().join("probe");
    let f = std::fs::File::create(&path).unwrap();
    f.set_modified(SystemTime::now() - ago).unwrap();
    path.to_str().unwrap().to_owned()
}

#[test]
fn a_fresh_file_exits_0_with_its_age() {
    let dir = tempfile::tempdir().unwrap();
    let path = file_aged(&dir, Duration::from_secs(3));
    let ran = probe(&["file", &path, "30"]);
    assert_eq!(ran.code, Some(0), "{}{}", ran.stdout, ran.stderr);
    assert_eq!(
        ran.stdout,
        format!("{path} modified 3s ago, validity 30s\n")
    );
    assert_eq!(ran.stderr, "");
}

#[test]
fn a_stale_file_exits_1_with_kubelets_line() {
    let dir = tempfile::tempdir().unwrap();
    let path = file_aged(&dir, Duration::from_secs(42));
    let ran = probe(&["file", &path, "30"]);
    assert_eq!(ran.code, Some(1));
    assert_eq!(
        ran.stdout,
        format!("{path} modified 42s ago, validity 30s\n")
    );
    assert_eq!(ran.stderr, "");
}

#[test]
fn a_missing_file_exits_1_naming_it() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("nope");
    let path = path.to_str().unwrap();
    let ran = probe(&["file", path, "30"]);
    assert_eq!(ran.code, Some(1));
    assert_eq!(
        ran.stdout,
        format!("{path} does not exist inside the container\n")
    );
}

#[test]
fn a_bad_command_line_exits_2_with_the_usage_on_stderr() {
    for args in [
        &[][..],
        &["file", "/p"],
        &["file", "/p", "ten"],
        &["exec", "x"],
    ] {
        let ran = probe(args);
        assert_eq!(ran.code, Some(2), "{args:?}");
        assert_eq!(ran.stdout, "", "{args:?}");
        assert!(ran.stderr.starts_with("shimless-probe: "), "{}", ran.stderr);
        assert!(
            ran.stderr.ends_with(&format!("{}\n", fileprobe::USAGE)),
            "{}",
            ran.stderr
        );
    }
}

#[test]
fn the_binary_answers_exactly_as_run_command_does() {
    let dir = tempfile::tempdir().unwrap();
    let path = file_aged(&dir, Duration::from_secs(100));
    let root = fileprobe::open_root("/").unwrap();
    for args in [
        vec!["file", path.as_str(), "1000"],
        vec!["file", path.as_str(), "10"],
        vec!["file", "/proc/self/root/etc", "10"],
        vec!["file", "relative", "10"],
    ] {
        let ran = probe(&args);
        let want = fileprobe::run_command(&root, &args, SystemTime::now());
        assert_eq!(ran.code, Some(i32::from(want.exit_code())), "{args:?}");
        assert_eq!(ran.stdout, want.stdout(), "{args:?}");
        assert_eq!(ran.stderr, want.stderr(), "{args:?}");
    }
}
