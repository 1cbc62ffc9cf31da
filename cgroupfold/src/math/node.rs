//! Node allocatable and the QoS-level cgroups (`kubepods`, `burstable`, `besteffort`).

use super::{
    Bytes, CgroupConfig, CpuQuota, MemoryLimit, MilliCpu, PodResources, QosClass, cpu_shares,
};

/// A node's CPU and memory.
///
/// ```
/// use cgroupfold::math::{Bytes, MilliCpu, NodeResources};
/// let n = NodeResources { cpu: MilliCpu::cores(4), memory: Bytes::gib(16) };
/// assert_eq!(n.cpu.0, 4000);
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct NodeResources {
    /// CPU.
    pub cpu: MilliCpu,
    /// Memory.
    pub memory: Bytes,
}

/// Allocatable = capacity − kube-reserved − system-reserved − hard eviction threshold (memory),
/// floored at zero as kubelet does.
///
/// ```
/// use cgroupfold::math::{Bytes, MilliCpu, NodeResources, node_allocatable};
/// let cap = NodeResources { cpu: MilliCpu(4000), memory: Bytes::gib(16) };
/// let kube = NodeResources { cpu: MilliCpu(100), memory: Bytes::gib(1) };
/// let sys = NodeResources { cpu: MilliCpu(100), memory: Bytes::gib(1) };
/// let a = node_allocatable(cap, kube, sys, Bytes::mib(100));
/// assert_eq!(a.cpu, MilliCpu(3800));
/// assert_eq!(a.memory, Bytes(Bytes::gib(14).0 - Bytes::mib(100).0));
/// ```
pub fn node_allocatable(
    capacity: NodeResources,
    kube_reserved: NodeResources,
    system_reserved: NodeResources,
    eviction_hard_memory: Bytes,
) -> NodeResources {
    NodeResources {
        cpu: MilliCpu(
            capacity
                .cpu
                .0
                .saturating_sub(kube_reserved.cpu.0)
                .saturating_sub(system_reserved.cpu.0),
        ),
        memory: Bytes(
            capacity
                .memory
                .0
                .saturating_sub(kube_reserved.memory.0)
                .saturating_sub(system_reserved.memory.0)
                .saturating_sub(eviction_hard_memory.0),
        ),
    }
}

/// The three QoS-level cgroups' settings.
///
/// ```
/// use cgroupfold::math::{Bytes, MilliCpu, NodeResources, qos_cgroups};
/// let q = qos_cgroups(NodeResources { cpu: MilliCpu(2000), memory: Bytes::gib(4) }, &[], 0);
/// assert_eq!(q.kubepods.cpu_shares, 2048);
/// assert_eq!(q.besteffort.cpu_shares, 2);
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct QosCgroups {
    /// `kubepods`: the node allocatable (kubelet's `--enforce-node-allocatable=pods`).
    pub kubepods: CgroupConfig,
    /// `kubepods/burstable`.
    pub burstable: CgroupConfig,
    /// `kubepods/besteffort`.
    pub besteffort: CgroupConfig,
}

/// The QoS-level cgroups for these pods: quota is always unlimited; `burstable` shares are the
/// sum of its pods' CPU requests, `besteffort` has 2. With `qos_reserved_memory_percent` > 0
/// (kubelet's `qosReserved`), burstable is capped at `allocatable − guaranteed requests × p%`
/// and besteffort at that minus `burstable requests × p%`.
///
/// ```
/// use cgroupfold::math::{Bytes, MemoryLimit, MilliCpu, NodeResources, PodResources, Resources, qos_cgroups};
/// let g = PodResources { containers: vec![Resources::guaranteed(MilliCpu(1000), Bytes::gib(1))], ..Default::default() };
/// let q = qos_cgroups(NodeResources { cpu: MilliCpu(2000), memory: Bytes::gib(4) }, &[g], 100);
/// assert_eq!(q.burstable.memory, MemoryLimit::Bytes(Bytes::gib(3)));
/// ```
pub fn qos_cgroups(
    allocatable: NodeResources,
    pods: &[PodResources],
    qos_reserved_memory_percent: u64,
) -> QosCgroups {
    let mut burstable_cpu = 0u64;
    let mut requests = [0u64; 2]; // memory requests of guaranteed, burstable pods
    for pod in pods {
        let r = pod.requests();
        let mem = r.memory_request.map_or(0, |b| b.0);
        match pod.qos() {
            QosClass::Guaranteed => requests[0] = requests[0].saturating_add(mem),
            QosClass::Burstable => {
                requests[1] = requests[1].saturating_add(mem);
                burstable_cpu = burstable_cpu.saturating_add(r.cpu_request.map_or(0, |c| c.0));
            }
            QosClass::BestEffort => {}
        }
    }
    let pct = qos_reserved_memory_percent.min(100) as u128;
    let reserve = |b: u64| (u128::from(b) * pct / 100) as u64;
    let (burstable_mem, besteffort_mem) = if pct == 0 {
        (MemoryLimit::Unlimited, MemoryLimit::Unlimited)
    } else {
        let b = allocatable.memory.0.saturating_sub(reserve(requests[0]));
        let be = b.saturating_sub(reserve(requests[1]));
        (MemoryLimit::Bytes(Bytes(b)), MemoryLimit::Bytes(Bytes(be)))
    };
    QosCgroups {
        kubepods: CgroupConfig {
            cpu_shares: cpu_shares(Some(allocatable.cpu)),
            cpu_quota: CpuQuota::Unlimited,
            memory: MemoryLimit::Bytes(allocatable.memory),
            pids_max: None,
        },
        burstable: CgroupConfig {
            cpu_shares: cpu_shares(Some(MilliCpu(burstable_cpu))),
            cpu_quota: CpuQuota::Unlimited,
            memory: burstable_mem,
            pids_max: None,
        },
        besteffort: CgroupConfig {
            memory: besteffort_mem,
            ..CgroupConfig::UNLIMITED
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::math::Resources;

    #[test]
    fn allocatable_table() {
        let n = |c, m| NodeResources {
            cpu: MilliCpu(c),
            memory: Bytes(m),
        };
        for (cap, kube, sys, evict, want) in [
            (n(0, 0), n(0, 0), n(0, 0), 0, n(0, 0)),
            (n(1000, 1 << 30), n(1, 1), n(0, 0), 0, n(999, (1 << 30) - 1)),
            (n(1000, 100), n(600, 60), n(600, 60), 1, n(0, 0)),
            (
                n(u64::MAX, u64::MAX),
                n(0, 0),
                n(0, 0),
                100 << 20,
                n(u64::MAX, u64::MAX - (100 << 20)),
            ),
        ] {
            assert_eq!(node_allocatable(cap, kube, sys, Bytes(evict)), want);
        }
    }

    #[test]
    fn qos_cgroups_sum_burstable_requests() {
        let burst = |m| PodResources {
            containers: vec![Resources {
                cpu_request: Some(MilliCpu(m)),
                memory_request: Some(Bytes::mib(m)),
                ..Default::default()
            }],
            ..Default::default()
        };
        let be = PodResources {
            containers: vec![Resources::default()],
            ..Default::default()
        };
        let g = PodResources {
            containers: vec![Resources::guaranteed(MilliCpu(1000), Bytes::mib(1000))],
            ..Default::default()
        };
        let alloc = NodeResources {
            cpu: MilliCpu(4000),
            memory: Bytes::mib(4000),
        };
        let q = qos_cgroups(alloc, &[burst(100), burst(400), be.clone(), g.clone()], 0);
        assert_eq!(q.kubepods.cpu_shares, 4096);
        assert_eq!(q.kubepods.memory, MemoryLimit::Bytes(Bytes::mib(4000)));
        assert_eq!(q.burstable.cpu_shares, 512);
        assert_eq!(q.burstable.cpu_quota, CpuQuota::Unlimited);
        assert_eq!(q.burstable.memory, MemoryLimit::Unlimited);
        assert_eq!(q.besteffort.cpu_shares, 2);

        let q = qos_cgroups(alloc, &[burst(100), burst(400), be, g], 50);
        assert_eq!(q.burstable.memory, MemoryLimit::Bytes(Bytes::mib(3500)));
        assert_eq!(q.besteffort.memory, MemoryLimit::Bytes(Bytes::mib(3250)));
    }

    #[test]
    fn no_burstable_pods_means_minimum_shares() {
        let q = qos_cgroups(NodeResources::default(), &[], 100);
        assert_eq!(q.burstable.cpu_shares, 2);
        assert_eq!(q.kubepods.cpu_shares, 2);
        assert_eq!(q.besteffort.memory, MemoryLimit::Bytes(Bytes(0)));
    }
}
