//! `Stats`: the runtime's statistics as containerd's cgroup v1 `Metrics`, which is what its
//! `ctr task metrics` and CRI decode.

use crate::api::containerd::task::v3::StatsResponse;
use crate::api::io::containerd::cgroups::v1 as m;
use prost::Message;

/// The response for `stats`: `io.containerd.cgroups.v1.Metrics`, packed in an `Any`.
pub(super) fn response(stats: &runc_driver::Stats) -> StatsResponse {
    let usage = &stats.memory.usage;
    let metrics = m::Metrics {
        pids: Some(m::PidsStat {
            current: stats.pids.current,
            limit: stats.pids.limit,
        }),
        cpu: Some(m::CpuStat {
            usage: Some(m::CpuUsage {
                total: stats.cpu.usage.total,
                kernel: stats.cpu.usage.kernel,
                user: stats.cpu.usage.user,
            }),
        }),
        memory: Some(m::MemoryStat {
            cache: stats.memory.cache,
            usage: Some(m::MemoryEntry {
                limit: usage.limit,
                usage: usage.usage,
                max: usage.max,
                failcnt: usage.failcnt,
            }),
        }),
    };
    StatsResponse {
        stats: Some(prost_types::Any {
            type_url: "io.containerd.cgroups.v1.Metrics".into(),
            value: metrics.encode_to_vec(),
        }),
    }
}
