//! Runtime commands still running on a container: a supervisor killed while `runc create` ran
//! leaves that command going without it, and removing the container before it is done would
//! leave behind the container it makes just after. [`runtime_calls`] finds such commands by
//! their arguments; [`wait_for_runtime_calls`] waits for them to end.
//!
//! A command is recognised by its argument list holding both the runtime root (`--root
//! <root>`) and the container id as whole arguments, which is how this driver (and
//! containerd's shims) call runc and crun.

use std::path::Path;
use std::time::{Duration, Instant};

/// How often [`wait_for_runtime_calls`] looks again.
const POLL: Duration = Duration::from_millis(20);

/// The PIDs of the processes whose arguments name both `root` and container `id`, read from
/// `/proc/<pid>/cmdline` (a process that has exited, even unreaped, has none).
///
/// ```
/// let root = std::path::Path::new("/run/no-such-runtime-root");
/// assert!(runc_driver::runtime_calls(root, "web").is_empty());
/// ```
pub fn runtime_calls(root: &Path, id: &str) -> Vec<i32> {
    calls_if_known(root, id).unwrap_or_default()
}

/// [`runtime_calls`], or `None` when `/proc` cannot tell (it, or a process's `cmdline`, could
/// not be read for another reason than the process being gone, e.g. no descriptor left): that
/// is no proof that nothing runs.
fn calls_if_known(root: &Path, id: &str) -> Option<Vec<i32>> {
    let root = root.as_os_str().as_encoded_bytes();
    let id = id.as_bytes();
    let mut calls = Vec::new();
    for entry in std::fs::read_dir("/proc").ok()?.flatten() {
        let Some(pid) = entry
            .file_name()
            .to_str()
            .and_then(|n| n.parse::<i32>().ok())
        else {
            continue;
        };
        let cmdline = match std::fs::read(format!("/proc/{pid}/cmdline")) {
            Ok(cmdline) => cmdline,
            Err(e) if gone(&e) => continue,
            Err(_) => return None,
        };
        let args: Vec<&[u8]> = cmdline.split(|b| *b == 0).collect();
        if args.contains(&root) && args.contains(&id) {
            calls.push(pid);
        }
    }
    Some(calls)
}

/// Whether reading a `/proc/<pid>` file failed because the process has gone meanwhile.
fn gone(e: &std::io::Error) -> bool {
    e.kind() == std::io::ErrorKind::NotFound
        || e.raw_os_error() == Some(rustix::io::Errno::SRCH.raw_os_error())
}

/// Waits, up to `timeout`, until no process runs the runtime on container `id` under `root`
/// (see [`runtime_calls`]), looking every 20 ms; whether none is left. A `/proc` that cannot be
/// read counts as a call still running.
///
/// ```no_run
/// # async fn f() {
/// use std::time::Duration;
/// let root = std::path::Path::new("/run/shimless/runc/default");
/// if runc_driver::wait_for_runtime_calls(root, "web", Duration::from_secs(30)).await {
///     // Nothing is making "web" any more: deleting it now is final.
/// }
/// # }
/// ```
pub async fn wait_for_runtime_calls(root: &Path, id: &str, timeout: Duration) -> bool {
    let deadline = Instant::now() + timeout;
    loop {
        if calls_if_known(root, id).is_some_and(|calls| calls.is_empty()) {
            return true;
        }
        if Instant::now() >= deadline {
            return false;
        }
        async_io::Timer::after(POLL).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::process::{Child, Command};

    /// A process whose arguments look like a runtime call on `id` under `root` (a shell that
    /// stays, rather than exec'ing its last command, so that its arguments stay too).
    fn fake_call(root: &Path, id: &str, seconds: &str) -> Child {
        Command::new("sh")
            .args(["-c", &format!("sleep {seconds}; exit 0"), "sh"])
            .arg("--root")
            .arg(root)
            .arg(id)
            .spawn()
            .unwrap()
    }

    #[test]
    fn a_call_is_found_until_it_ends() {
        let dir = tempfile::tempdir().unwrap();
        let mut call = fake_call(dir.path(), "calls-test-a", "1");
        let pid = call.id() as i32;
        // Until the child has exec'd `sh`, its cmdline is still this test binary's: look until
        // the shell's arguments show (the shell stays a second; its `sleep` child, forked before
        // it execs, may show for a moment too).
        let seen = Instant::now() + Duration::from_secs(10);
        while !runtime_calls(dir.path(), "calls-test-a").contains(&pid) {
            assert!(Instant::now() < seen, "the fake call {pid} never showed");
            std::thread::sleep(Duration::from_millis(5));
        }
        assert!(runtime_calls(dir.path(), "calls-test-other").is_empty());
        let done = futures_lite::future::block_on(wait_for_runtime_calls(
            dir.path(),
            "calls-test-a",
            Duration::from_secs(10),
        ));
        assert!(done);
        assert!(
            call.try_wait().unwrap().is_some()
                || runtime_calls(dir.path(), "calls-test-a").is_empty()
        );
        let _ = call.wait();
    }

    #[test]
    fn a_call_that_outlives_the_timeout_is_reported() {
        let dir = tempfile::tempdir().unwrap();
        let mut call = fake_call(dir.path(), "calls-test-b", "30");
        let start = Instant::now();
        let done = futures_lite::future::block_on(wait_for_runtime_calls(
            dir.path(),
            "calls-test-b",
            Duration::from_millis(200),
        ));
        assert!(!done);
        assert!(start.elapsed() >= Duration::from_millis(200));
        let _ = call.kill();
        let _ = call.wait();
    }
}
