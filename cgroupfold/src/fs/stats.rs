//! What a cgroup reports about itself.

use crate::math::{Bytes, MemoryLimit};

/// A cgroup's usage counters; `None` where the controller is not available for it.
///
/// ```
/// let s = cgroupfold::fs::Stats::default();
/// assert_eq!(s.oom_kills, None);
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Stats {
    /// CPU time used by all tasks, in nanoseconds (v1 `cpuacct.usage`, v2 `cpu.stat usage_usec` × 1000).
    pub cpu_usage_ns: Option<u64>,
    /// Memory charged now (v1 `memory.usage_in_bytes`, v2 `memory.current`).
    pub memory_usage: Option<Bytes>,
    /// Memory limit (v1 `memory.limit_in_bytes`, v2 `memory.max`).
    pub memory_limit: Option<MemoryLimit>,
    /// Tasks now (`pids.current`).
    pub pids_current: Option<u64>,
    /// Processes the OOM killer killed here (v1 `memory.oom_control oom_kill`, v2 `memory.events oom_kill`).
    pub oom_kills: Option<u64>,
}
