//! Exit times from the kernel, for exit → `Wait` latency: a private tracefs instance records,
//! on the monotonic clock, `sched_process_exit` (the process starts dying) and the `SIGCHLD`
//! its parent is sent (`signal_generate`, at the moment it becomes waitable and its pidfd
//! readable). Timing from these instead of from the moment the benchmark told a container to
//! exit leaves out the container's own wake-up and exit, which no shim can shorten.

#![allow(dead_code)]

use std::collections::HashMap;
use std::path::PathBuf;
use std::time::Duration;

/// A tracefs instance of its own, removed when dropped.
pub struct ExitTrace {
    dir: PathBuf,
}

/// When one process started dying and when its parent was told.
#[derive(Debug, Clone, Copy, Default)]
pub struct ExitTimes {
    /// `sched_process_exit`, on the monotonic clock.
    pub dying: Option<Duration>,
    /// `SIGCHLD` to the parent (waitable), on the monotonic clock.
    pub waitable: Option<Duration>,
}

/// Now on the monotonic clock, as the trace stamps it.
pub fn mono_now() -> Duration {
    let t = rustix::time::clock_gettime(rustix::time::ClockId::Monotonic);
    Duration::new(t.tv_sec as u64, t.tv_nsec as u32)
}

impl ExitTrace {
    /// Starts recording exits and the `SIGCHLD`s sent to `parent`.
    pub fn start(parent: u32) -> Result<ExitTrace, String> {
        let root = ["/sys/kernel/tracing", "/sys/kernel/debug/tracing"]
            .into_iter()
            .map(PathBuf::from)
            .find(|p| p.join("instances").is_dir())
            .ok_or("tracefs is not mounted")?;
        let dir = root
            .join("instances")
            .join(format!("shimless-bench-{}", std::process::id()));
        std::fs::create_dir(&dir).map_err(|e| format!("{}: {e}", dir.display()))?;
        let trace = ExitTrace { dir };
        let events = trace.dir.join("events");
        let write = |path: PathBuf, what: &str| {
            std::fs::write(&path, what).map_err(|e| format!("{}: {e}", path.display()))
        };
        write(trace.dir.join("trace_clock"), "mono")?;
        write(trace.dir.join("buffer_size_kb"), "4096")?;
        let signal = events.join("signal/signal_generate");
        write(
            signal.join("filter"),
            &format!("sig == 17 && pid == {parent}"),
        )?;
        write(signal.join("enable"), "1")?;
        write(events.join("sched/sched_process_exit/enable"), "1")?;
        Ok(trace)
    }

    /// What was recorded so far, by PID of the exiting process.
    pub fn times(&self) -> HashMap<u32, ExitTimes> {
        let text = std::fs::read_to_string(self.dir.join("trace")).unwrap_or_default();
        let mut times: HashMap<u32, ExitTimes> = HashMap::new();
        for line in text.lines().filter(|l| !l.starts_with('#')) {
            let Some((pid, at, event)) = parse(line) else {
                continue;
            };
            let slot = times.entry(pid).or_default();
            match event {
                "sched_process_exit" => slot.dying = slot.dying.or(Some(at)),
                "signal_generate" => slot.waitable = Some(at),
                _ => {}
            }
        }
        times
    }
}

/// A trace line's task PID (the one the event ran in), time and event name:
/// `sh-1234 [001] ..... 1234.567890: signal_generate: sig=17 ...`.
fn parse(line: &str) -> Option<(u32, Duration, &str)> {
    let bracket = line.find(" [")?;
    let task = line[..bracket].trim();
    let pid = task[task.rfind('-')? + 1..].parse().ok()?;
    let rest = &line[bracket..];
    let colon = rest.find(": ")?;
    let stamp = rest[..colon].split_whitespace().last()?;
    let (secs, micros) = stamp.split_once('.')?;
    let at = Duration::new(secs.parse().ok()?, 0) + Duration::from_micros(micros.parse().ok()?);
    let event = rest[colon + 2..].split(':').next()?;
    Some((pid, at, event))
}

impl Drop for ExitTrace {
    fn drop(&mut self) {
        let _ = std::fs::write(self.dir.join("events/enable"), "0");
        let _ = std::fs::remove_dir(&self.dir);
    }
}
