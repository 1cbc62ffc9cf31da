//! The `shimless-probe` command: `shimless-probe file PATH VALIDITY`, answered with an exit code
//! and a one-line reason, the same way whether the `shimless-probe` binary runs it (root `/`)
//! or `shimlessd` answers an exec of it without a process (root `/proc/<pid>/root`).
//!
//! Exit codes are an exec probe's: 0 fresh, 1 stale, missing or unreadable (kubelet shows the
//! reason line), 2 a command line that is not `file PATH VALIDITY` (with the usage).

use std::os::fd::AsFd;
use std::time::{Duration, SystemTime};

use crate::check::{ProbeFailure, check_at};

/// The usage line printed with every command-line error.
pub const USAGE: &str = "usage: shimless-probe file PATH VALIDITY\n  \
    exits 0 if PATH (as the container sees it) was modified within VALIDITY seconds, else 1";

/// A parsed `shimless-probe` command line.
///
/// ```
/// use fileprobe::ProbeCommand;
/// let c = ProbeCommand::parse(["file", "/probe-dir/probe", "30"]).unwrap();
/// assert_eq!(c.path(), "/probe-dir/probe");
/// assert_eq!(c.validity(), std::time::Duration::from_secs(30));
/// assert!(ProbeCommand::parse(["file", "/p"]).is_err());
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProbeCommand {
    path: String,
    validity: Duration,
}

/// Why a `shimless-probe` command line was refused (exit code 2).
///
/// ```
/// let e = fileprobe::ProbeCommand::parse(["file", "/p", "soon"]).unwrap_err();
/// assert_eq!(e.to_string(), "VALIDITY \"soon\" is not a whole number of seconds (1 or more)");
/// ```
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum UsageError {
    /// No subcommand, or one other than `file`.
    #[error("unknown command {0:?}; the command is `file`")]
    UnknownCommand(String),
    /// No arguments at all.
    #[error("no command given")]
    NoCommand,
    /// `file` without exactly PATH and VALIDITY.
    #[error("`file` takes PATH and VALIDITY, {0} argument(s) given")]
    WrongArgCount(usize),
    /// PATH is not absolute (the container's view has no working directory here).
    #[error("PATH {0:?} must be absolute (a path as the container sees it)")]
    RelativePath(String),
    /// An argument is not valid UTF-8 (the binary's command line).
    #[error("argument {0:?} is not valid UTF-8")]
    NotUnicode(String),
    /// PATH holds a NUL byte.
    #[error("PATH holds a NUL byte")]
    NulInPath,
    /// VALIDITY is not a positive whole number of seconds.
    #[error("VALIDITY {0:?} is not a whole number of seconds (1 or more)")]
    BadValidity(String),
}

impl ProbeCommand {
    /// Parses the arguments after the program name (`file PATH VALIDITY`).
    ///
    /// ```
    /// let e = fileprobe::ProbeCommand::parse(["file", "probe", "30"]).unwrap_err();
    /// assert_eq!(e, fileprobe::UsageError::RelativePath("probe".into()));
    /// ```
    pub fn parse<I, S>(args: I) -> Result<ProbeCommand, UsageError>
    where
        I: IntoIterator<Item = S>,
        S: AsRef<str>,
    {
        let args: Vec<S> = args.into_iter().collect();
        let args: Vec<&str> = args.iter().map(AsRef::as_ref).collect();
        match args.split_first() {
            None => Err(UsageError::NoCommand),
            Some((&"file", rest)) => Self::parse_file(rest),
            Some((other, _)) => Err(UsageError::UnknownCommand((*other).to_owned())),
        }
    }

    fn parse_file(rest: &[&str]) -> Result<ProbeCommand, UsageError> {
        let [path, validity] = rest else {
            return Err(UsageError::WrongArgCount(rest.len()));
        };
        if path.contains('\0') {
            return Err(UsageError::NulInPath);
        }
        if !path.starts_with('/') {
            return Err(UsageError::RelativePath((*path).to_owned()));
        }
        let secs = validity
            .parse::<u64>()
            .ok()
            .filter(|s| *s >= 1)
            .ok_or_else(|| UsageError::BadValidity((*validity).to_owned()))?;
        Ok(ProbeCommand {
            path: (*path).to_owned(),
            validity: Duration::from_secs(secs),
        })
    }

    /// The probe path, as the container sees it.
    ///
    /// ```
    /// let c = fileprobe::ProbeCommand::parse(["file", "/probe", "10"]).unwrap();
    /// assert_eq!(c.path(), "/probe");
    /// ```
    pub fn path(&self) -> &str {
        &self.path
    }

    /// How recently the file must have been modified.
    ///
    /// ```
    /// let c = fileprobe::ProbeCommand::parse(["file", "/probe", "10"]).unwrap();
    /// assert_eq!(c.validity(), std::time::Duration::from_secs(10));
    /// ```
    pub fn validity(&self) -> Duration {
        self.validity
    }

    /// Runs the check inside `root` at `now`.
    ///
    /// ```
    /// use std::time::{Duration, SystemTime};
    /// let dir = tempfile::tempdir().unwrap();
    /// std::fs::write(dir.path().join("probe"), b"").unwrap();
    /// let root = fileprobe::open_root(dir.path().to_str().unwrap()).unwrap();
    /// let c = fileprobe::ProbeCommand::parse(["file", "/probe", "30"]).unwrap();
    /// let later = SystemTime::now() + Duration::from_secs(42);
    /// let out = c.run(&root, later);
    /// assert_eq!(out.exit_code(), 1);
    /// assert!(out.stdout().starts_with("/probe modified 4"), "{}", out.stdout());
    /// ```
    pub fn run(&self, root: impl AsFd, now: SystemTime) -> ProbeOutcome {
        match check_at(root, &self.path, self.validity, now) {
            Ok(age) => ProbeOutcome::Fresh {
                path: self.path.clone(),
                age,
                validity: self.validity,
            },
            Err(failure) => ProbeOutcome::Failed(failure),
        }
    }
}

/// What a `shimless-probe` command answers: an exit code and what it prints.
///
/// ```
/// use fileprobe::{ProbeOutcome, UsageError};
/// let out = ProbeOutcome::Usage(UsageError::NoCommand);
/// assert_eq!(out.exit_code(), 2);
/// assert_eq!(out.stdout(), "");
/// assert!(out.stderr().contains("usage: shimless-probe file PATH VALIDITY"));
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ProbeOutcome {
    /// The file was modified within the validity (exit 0).
    Fresh {
        /// The probe path.
        path: String,
        /// Time since the last modification (zero for a future mtime).
        age: Duration,
        /// The allowed window.
        validity: Duration,
    },
    /// Stale, missing, unreadable, or the container is gone (exit 1).
    Failed(ProbeFailure),
    /// The command line was not `file PATH VALIDITY` (exit 2).
    Usage(UsageError),
}

impl ProbeOutcome {
    /// The exit code: 0 fresh, 1 failed, 2 usage.
    ///
    /// ```
    /// use fileprobe::{ProbeFailure, ProbeOutcome};
    /// let missing = ProbeOutcome::Failed(ProbeFailure::Missing { path: "/p".into() });
    /// assert_eq!(missing.exit_code(), 1);
    /// ```
    pub fn exit_code(&self) -> u8 {
        match self {
            ProbeOutcome::Fresh { .. } => 0,
            ProbeOutcome::Failed(_) => 1,
            ProbeOutcome::Usage(_) => 2,
        }
    }

    /// What goes to standard output: the one-line reason (with its newline), or nothing for a
    /// usage error.
    ///
    /// ```
    /// use std::time::Duration;
    /// let fresh = fileprobe::ProbeOutcome::Fresh {
    ///     path: "/probe-dir/probe".into(),
    ///     age: Duration::from_millis(3_900),
    ///     validity: Duration::from_secs(30),
    /// };
    /// assert_eq!(fresh.stdout(), "/probe-dir/probe modified 3s ago, validity 30s\n");
    /// ```
    pub fn stdout(&self) -> String {
        match self {
            ProbeOutcome::Fresh {
                path,
                age,
                validity,
            } => format!("{}\n", age_line(path, *age, *validity)),
            ProbeOutcome::Failed(ProbeFailure::Stale {
                path,
                age,
                validity,
            }) => format!("{}\n", age_line(path, *age, *validity)),
            ProbeOutcome::Failed(other) => format!("{other}\n"),
            ProbeOutcome::Usage(_) => String::new(),
        }
    }

    /// What goes to standard error: the command-line error and the usage, or nothing.
    ///
    /// ```
    /// let out = fileprobe::run_command(fileprobe::open_root("/").unwrap(), ["file"], std::time::SystemTime::now());
    /// assert!(out.stderr().starts_with("shimless-probe: `file` takes PATH and VALIDITY"));
    /// ```
    pub fn stderr(&self) -> String {
        match self {
            ProbeOutcome::Usage(e) => format!("shimless-probe: {e}\n{USAGE}\n"),
            _ => String::new(),
        }
    }
}

/// `PATH modified 42s ago, validity 30s` (whole seconds, as kubelet shows probe output).
fn age_line(path: &str, age: Duration, validity: Duration) -> String {
    format!(
        "{path} modified {}s ago, validity {}s",
        age.as_secs(),
        validity.as_secs()
    )
}

/// Parses and runs one command line (the arguments after the program name) inside `root`: what
/// both the binary and the daemon call.
///
/// ```
/// let root = fileprobe::open_root("/").unwrap();
/// let out = fileprobe::run_command(&root, ["file", "/no/such/probe", "30"], std::time::SystemTime::now());
/// assert_eq!(out.exit_code(), 1);
/// assert_eq!(out.stdout(), "/no/such/probe does not exist inside the container\n");
/// ```
pub fn run_command<I, S>(root: impl AsFd, args: I, now: SystemTime) -> ProbeOutcome
where
    I: IntoIterator<Item = S>,
    S: AsRef<str>,
{
    match ProbeCommand::parse(args) {
        Ok(command) => command.run(root, now),
        Err(usage) => ProbeOutcome::Usage(usage),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::check::open_root;
    use std::os::unix::fs::symlink;

    const HOUR: Duration = Duration::from_secs(3600);

    struct Root {
        dir: tempfile::TempDir,
        fd: std::os::fd::OwnedFd,
    }

    fn root() -> Root {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir(dir.path().join("probe-dir")).unwrap();
        std::fs::write(dir.path().join("probe-dir/probe"), b"").unwrap();
        let fd = open_root(dir.path().to_str().unwrap()).unwrap();
        Root { dir, fd }
    }

    fn run(root: &Root, args: &[&str], now: SystemTime) -> ProbeOutcome {
        run_command(&root.fd, args.iter().copied(), now)
    }

    #[test]
    fn a_file_touched_within_validity_is_fresh_with_exit_0() {
        let r = root();
        let out = run(&r, &["file", "/probe-dir/probe", "30"], SystemTime::now());
        assert_eq!(out.exit_code(), 0);
        assert_eq!(
            out.stdout(),
            "/probe-dir/probe modified 0s ago, validity 30s\n"
        );
        assert_eq!(out.stderr(), "");
    }

    #[test]
    fn a_file_older_than_validity_is_stale_with_exit_1_and_kubelets_line() {
        let r = root();
        let mtime = crate::mtime_at(&r.fd, "/probe-dir/probe").unwrap();
        let now = mtime + Duration::from_millis(42_500);
        let out = run(&r, &["file", "/probe-dir/probe", "30"], now);
        assert_eq!(out.exit_code(), 1);
        assert_eq!(
            out.stdout(),
            "/probe-dir/probe modified 42s ago, validity 30s\n"
        );
        // Exactly at the validity is still fresh, as the seed's `<=`.
        let edge = run(
            &r,
            &["file", "/probe-dir/probe", "30"],
            mtime + Duration::from_secs(30),
        );
        assert_eq!(edge.exit_code(), 0);
    }

    #[test]
    fn a_missing_file_is_exit_1_naming_the_path() {
        let r = root();
        let out = run(&r, &["file", "/probe-dir/nope", "30"], SystemTime::now());
        assert_eq!(out.exit_code(), 1);
        assert_eq!(
            out.stdout(),
            "/probe-dir/nope does not exist inside the container\n"
        );
    }

    #[test]
    fn an_unresolvable_path_is_exit_1_unreadable() {
        let r = root();
        // A path through a regular file: ENOTDIR.
        let out = run(&r, &["file", "/probe-dir/probe/x", "30"], SystemTime::now());
        assert_eq!(out.exit_code(), 1);
        assert!(
            matches!(out, ProbeOutcome::Failed(ProbeFailure::Unreadable { .. })),
            "{out:?}"
        );
        assert!(
            out.stdout()
                .starts_with("/probe-dir/probe/x cannot be resolved inside the container: "),
            "{}",
            out.stdout()
        );
    }

    #[test]
    fn command_lines_other_than_file_path_validity_are_usage_errors_with_exit_2() {
        let r = root();
        let now = SystemTime::now();
        let cases: [(&[&str], UsageError); 7] = [
            (&[], UsageError::NoCommand),
            (&["http", "/x"], UsageError::UnknownCommand("http".into())),
            (&["file"], UsageError::WrongArgCount(0)),
            (&["file", "/p", "30", "x"], UsageError::WrongArgCount(3)),
            (&["file", "p", "30"], UsageError::RelativePath("p".into())),
            (&["file", "/p", "0"], UsageError::BadValidity("0".into())),
            (&["file", "/p", "-3"], UsageError::BadValidity("-3".into())),
        ];
        for (args, want) in cases {
            let out = run(&r, args, now);
            assert_eq!(out, ProbeOutcome::Usage(want), "{args:?}");
            assert_eq!(out.exit_code(), 2);
            assert_eq!(out.stdout(), "");
            assert!(out.stderr().ends_with(&format!("{USAGE}\n")), "{args:?}");
        }
    }

    /// A file outside the root, fresh, that an escaping path would find.
    fn outside(r: &Root) -> std::path::PathBuf {
        let host = r.dir.path().parent().unwrap().join(format!(
            "shimless-probe-outside-{}",
            r.dir.path().file_name().unwrap().to_str().unwrap()
        ));
        std::fs::write(&host, b"").unwrap();
        host
    }

    #[test]
    fn dot_dot_cannot_leave_the_root() {
        let r = root();
        let host = outside(&r);
        let name = host.file_name().unwrap().to_str().unwrap();
        let path = format!("/../../../../{name}");
        let out = run(&r, &["file", &path, "30"], SystemTime::now());
        std::fs::remove_file(&host).unwrap();
        assert_eq!(out.exit_code(), 1, "{}", out.stdout());
        assert!(matches!(
            out,
            ProbeOutcome::Failed(ProbeFailure::Missing { .. })
        ));
        // `..` inside the root still works, clamped at its top.
        let ok = run(
            &r,
            &["file", "/../probe-dir/../probe-dir/probe", "30"],
            SystemTime::now(),
        );
        assert_eq!(ok.exit_code(), 0, "{}", ok.stdout());
    }

    #[test]
    fn an_absolute_symlink_resolves_inside_the_root() {
        let r = root();
        let host = outside(&r);
        // Inside the root, the target is missing; on the host it exists and is fresh.
        symlink(&host, r.dir.path().join("probe-dir/escape")).unwrap();
        let out = run(&r, &["file", "/probe-dir/escape", "30"], SystemTime::now());
        // An absolute symlink to a file the root does have is followed inside the root.
        symlink("/probe-dir/probe", r.dir.path().join("probe-dir/inside")).unwrap();
        let inside = run(&r, &["file", "/probe-dir/inside", "30"], SystemTime::now());
        std::fs::remove_file(&host).unwrap();
        assert_eq!(out.exit_code(), 1, "{}", out.stdout());
        assert!(matches!(
            out,
            ProbeOutcome::Failed(ProbeFailure::Missing { .. })
        ));
        assert_eq!(inside.exit_code(), 0, "{}", inside.stdout());
    }

    #[test]
    fn proc_magic_links_are_refused() {
        // With the host's root as the root, /proc is there: its magic links still are not
        // followed (a container's /proc would offer the same links to the host).
        let host = open_root("/").unwrap();
        for path in [
            "/proc/self/root/etc/hostname",
            "/proc/self/cwd",
            "/proc/self/exe",
            "/proc/thread-self/root",
        ] {
            let out = run_command(&host, ["file", path, "30"], SystemTime::now() + HOUR);
            assert_eq!(out.exit_code(), 1, "{path}: {out:?}");
            assert!(
                matches!(&out, ProbeOutcome::Failed(ProbeFailure::Unreadable { errno, .. })
                    if *errno == rustix::io::Errno::LOOP),
                "{path}: {out:?}"
            );
        }
    }
}
