//! Reading the output of one run back: per binary its counts, and the kernel's facts.

use std::path::Path;
use std::time::Duration;

/// One test binary's result.
#[derive(Debug, Default, PartialEq, Eq)]
pub(crate) struct Binary {
    /// The crate and test name (`exits`, `fs`, ...), the file name without cargo's hash.
    pub name: String,
    /// Its exit code; `None` if the run ended before it finished.
    pub rc: Option<i32>,
    pub passed: u32,
    pub failed: u32,
    pub ignored: u32,
    /// Tests that passed by skipping (`integration::require` printed `SKIP`).
    pub skipped: Vec<String>,
    /// Tests that failed.
    pub failures: Vec<String>,
}

impl Binary {
    fn green(&self) -> bool {
        self.rc == Some(0) && self.failed == 0
    }
}

/// `pidfd-0123abcd` -> `pidfd`.
pub(crate) fn short_name(path: &Path) -> String {
    let file = path
        .file_name()
        .map_or_else(String::new, |f| f.to_string_lossy().into_owned());
    match file.rsplit_once('-') {
        Some((name, hash)) if hash.len() == 16 && hash.chars().all(|c| c.is_ascii_hexdigit()) => {
            name.to_owned()
        }
        _ => file,
    }
}

/// The result of `path` in `output`: the lines between its begin and rc markers.
pub(crate) fn binary(output: &str, path: &Path) -> Binary {
    let p = path.to_string_lossy();
    let begin = format!("kernel-matrix-begin {p}");
    let rc = format!("kernel-matrix-rc {p} ");
    let mut b = Binary {
        name: short_name(path),
        ..Binary::default()
    };
    let mut inside = false;
    let mut current = String::new();
    for line in output.lines() {
        if line.ends_with(&begin) {
            inside = true;
            continue;
        }
        if !inside {
            continue;
        }
        if let Some(code) = line.find(&rc).map(|i| &line[i + rc.len()..]) {
            b.rc = code.trim().parse().ok();
            break;
        }
        if let Some(name) = line
            .strip_prefix("---- ")
            .and_then(|l| l.strip_suffix(" stdout ----"))
        {
            current = name.to_owned();
        } else if line.starts_with("SKIP") && !b.skipped.contains(&current) {
            b.skipped.push(current.clone());
        } else if let Some(name) = line
            .strip_prefix("test ")
            .and_then(|l| l.strip_suffix(" ... FAILED"))
        {
            b.failures.push(name.to_owned());
        } else if let Some(counts) = line.strip_prefix("test result: ") {
            add_counts(&mut b, counts);
        }
    }
    b
}

/// Adds `ok. 5 passed; 1 failed; 0 ignored; ...` to `b` (one binary may print several results).
fn add_counts(b: &mut Binary, counts: &str) {
    for part in counts.split(';') {
        let mut words = part.split_whitespace().rev();
        let (Some(what), Some(n)) = (words.next(), words.next()) else {
            continue;
        };
        let Ok(n) = n.parse::<u32>() else { continue };
        match what {
            "passed" => b.passed += n,
            "failed" => b.failed += n,
            "ignored" => b.ignored += n,
            _ => {}
        }
    }
}

/// What the run learned about the kernel.
#[derive(Debug, Default)]
pub(crate) struct Facts {
    release: String,
    btf: String,
    cgroup_kill: String,
    exit_path: String,
    auto: String,
    attach: Vec<String>,
    pidfd_info_exit: String,
    kill: String,
}

impl Facts {
    /// From the `kernel-matrix-fact` lines and exitwatch's `exit_path` test output.
    pub(crate) fn from_output(output: &str) -> Facts {
        let mut f = Facts::default();
        for line in output.lines() {
            let fact = |key: &str| {
                line.find(key)
                    .map(|i| line[i + key.len()..].trim().to_owned())
            };
            if let Some(v) = fact("kernel-matrix-fact release ") {
                f.release = v;
            } else if let Some(v) = fact("kernel-matrix-fact btf ") {
                f.btf = v;
            } else if let Some(v) = fact("kernel-matrix-fact cgroup.kill ") {
                f.cgroup_kill = v;
            } else if let Some(v) = fact("exitwatch-exit-path: ") {
                f.exit_path = v;
            } else if let Some(v) = fact("exitwatch-auto: ") {
                f.auto = v;
            } else if let Some(v) = fact("cgroupfold-kill: ") {
                f.kill = v;
            } else if let Some(v) = fact("pidfd-info-exit: ") {
                f.pidfd_info_exit = v;
            } else if let Some(v) = fact("exitwatch-attach: ") {
                f.attach.push(v);
            }
        }
        f
    }
}

/// Prints one line per binary and the kernel's summary; whether everything passed.
pub(crate) fn print(name: &str, facts: &Facts, binaries: &[Binary], took: Duration) -> bool {
    let mut green = true;
    let (mut passed, mut failed, mut skipped) = (0, 0, 0);
    for b in binaries {
        green &= b.green();
        passed += b.passed;
        failed += b.failed;
        skipped += b.skipped.len();
        let rc =
            b.rc.map_or_else(|| "never finished".to_owned(), |c| format!("rc {c}"));
        println!(
            "kernel-matrix: {name}: {:<28} {rc}, {} passed, {} failed, {} ignored{}{}",
            b.name,
            b.passed,
            b.failed,
            b.ignored,
            if b.skipped.is_empty() {
                String::new()
            } else {
                format!(", skipped: {}", b.skipped.join(" "))
            },
            if b.failures.is_empty() {
                String::new()
            } else {
                format!(", FAILED: {}", b.failures.join(" "))
            },
        );
    }
    for a in &facts.attach {
        println!("kernel-matrix: {name}: exitwatch attach {a}");
    }
    println!(
        "kernel-matrix: {name} ({}): {} — {passed} passed, {failed} failed, {skipped} skipped; BTF {}, cgroup.kill {}{}, PIDFD_INFO_EXIT {}, exit path {}, Auto attaches {}; {:.0?}",
        facts.release,
        if green { "green" } else { "RED" },
        facts.btf,
        facts.cgroup_kill,
        // Only a cgroup v2 run in a guest says which way kill_all went.
        if facts.kill.is_empty() {
            String::new()
        } else {
            format!(" (kill_all: {})", facts.kill)
        },
        facts.pidfd_info_exit,
        facts.exit_path,
        facts.auto,
        took,
    );
    green
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_binary_is_read_between_its_markers() {
        let out = "kernel-matrix-begin /t/exits-0123456789abcdef\n\
                   running 2 tests\n\
                   test a ... ok\n\
                   test b ... FAILED\n\
                   ---- a stdout ----\n\
                   SKIP: no cgroup v1 hierarchy on this host\n\
                   test result: FAILED. 1 passed; 1 failed; 3 ignored; 0 measured\n\
                   kernel-matrix-rc /t/exits-0123456789abcdef 101\n\
                   test result: ok. 9 passed; 0 failed\n";
        let b = binary(out, Path::new("/t/exits-0123456789abcdef"));
        assert_eq!(
            b,
            Binary {
                name: "exits".into(),
                rc: Some(101),
                passed: 1,
                failed: 1,
                ignored: 3,
                skipped: vec!["a".into()],
                failures: vec!["b".into()],
            }
        );
        assert!(!b.green());
        assert_eq!(binary("", Path::new("/t/x")).rc, None);
    }
}
