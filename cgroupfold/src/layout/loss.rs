//! What a pod loses when its containers share the pod cgroup.

use crate::math::{Bytes, CgroupConfig, CpuQuota, MemoryLimit, PodResources, container_cgroup};
use std::fmt;

/// One limit that folding would stop enforcing.
///
/// ```
/// use cgroupfold::layout::Loss;
/// use cgroupfold::math::{Bytes, MemoryLimit};
/// let l = Loss::MemoryLimit { container: 1, limit: Bytes(64), pod: MemoryLimit::Unlimited };
/// assert_eq!(l.to_string(), "container 1's memory limit 64 bytes is only bounded by the pod's max");
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Loss {
    /// A container's memory limit, now only bounded by the pod's (larger or absent) limit.
    MemoryLimit {
        /// Index into the pod's containers, then init containers.
        container: usize,
        /// The container's own limit.
        limit: Bytes,
        /// The pod's limit that remains.
        pod: MemoryLimit,
    },
    /// A container's CFS quota, now only bounded by the pod's quota.
    CpuQuota {
        /// Index into the pod's containers, then init containers.
        container: usize,
        /// The container's own quota (µs per 100 ms).
        quota_us: u64,
        /// The pod's quota that remains.
        pod: CpuQuota,
    },
    /// Two or more app containers with CPU requests: the split of the pod's CPU between them by
    /// `cpu.shares` is gone (their threads now compete one by one).
    CpuSharesBetweenContainers {
        /// How many app containers shared the pod.
        containers: usize,
    },
}

impl fmt::Display for Loss {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Loss::MemoryLimit {
                container,
                limit,
                pod,
            } => write!(
                f,
                "container {container}'s memory limit {} bytes is only bounded by the pod's {pod}",
                limit.0
            ),
            Loss::CpuQuota {
                container,
                quota_us,
                pod,
            } => write!(
                f,
                "container {container}'s cpu quota {quota_us}us is only bounded by the pod's {pod}"
            ),
            Loss::CpuSharesBetweenContainers { containers } => {
                write!(
                    f,
                    "the cpu.shares split between {containers} containers is gone"
                )
            }
        }
    }
}

/// Every limit the pod would stop enforcing if folded, given its pod cgroup settings. A
/// container's limit survives only when the pod's limit is exactly as tight — which holds for a
/// pod with one app container, no init container limits above, and no overhead.
///
/// ```
/// use cgroupfold::layout::losses;
/// use cgroupfold::math::{Bytes, MilliCpu, PodResources, Resources, pod_cgroup};
/// let one = PodResources { containers: vec![Resources::guaranteed(MilliCpu(100), Bytes(1 << 20))], ..Default::default() };
/// assert!(losses(&one, &pod_cgroup(&one)).is_empty());
/// ```
pub fn losses(pod: &PodResources, pod_cfg: &CgroupConfig) -> Vec<Loss> {
    let mut out = Vec::new();
    for (i, r) in pod
        .containers
        .iter()
        .chain(&pod.init_containers)
        .enumerate()
    {
        let c = container_cgroup(r);
        if let MemoryLimit::Bytes(limit) = c.memory {
            let kept = matches!(pod_cfg.memory, MemoryLimit::Bytes(p) if p <= limit);
            if !kept {
                out.push(Loss::MemoryLimit {
                    container: i,
                    limit,
                    pod: pod_cfg.memory,
                });
            }
        }
        if let CpuQuota::Micros(quota_us) = c.cpu_quota {
            let kept = matches!(pod_cfg.cpu_quota, CpuQuota::Micros(p) if p <= quota_us);
            if !kept {
                out.push(Loss::CpuQuota {
                    container: i,
                    quota_us,
                    pod: pod_cfg.cpu_quota,
                });
            }
        }
    }
    let with_requests = pod
        .containers
        .iter()
        .filter(|r| r.defaulted().cpu_request.is_some_and(|m| m.0 > 0))
        .count();
    if pod.containers.len() >= 2 && with_requests > 0 {
        out.push(Loss::CpuSharesBetweenContainers {
            containers: pod.containers.len(),
        });
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::math::{MilliCpu, Resources, pod_cgroup};

    fn pod(containers: Vec<Resources>) -> PodResources {
        PodResources {
            containers,
            ..Default::default()
        }
    }

    #[test]
    fn single_container_pods_lose_nothing() {
        for r in [
            Resources::default(),
            Resources::guaranteed(MilliCpu(1), Bytes(1)),
            Resources {
                memory_limit: Some(Bytes::gib(1)),
                cpu_request: Some(MilliCpu(10)),
                ..Default::default()
            },
        ] {
            let p = pod(vec![r]);
            assert_eq!(losses(&p, &pod_cgroup(&p)), vec![], "{r:?}");
        }
    }

    #[test]
    fn two_limited_containers_lose_both_limits_and_the_share_split() {
        let p = pod(vec![
            Resources::guaranteed(MilliCpu(100), Bytes(100)),
            Resources::guaranteed(MilliCpu(300), Bytes(300)),
        ]);
        let cfg = pod_cgroup(&p);
        let l = losses(&p, &cfg);
        assert_eq!(
            l,
            vec![
                Loss::MemoryLimit {
                    container: 0,
                    limit: Bytes(100),
                    pod: MemoryLimit::Bytes(Bytes(400))
                },
                Loss::CpuQuota {
                    container: 0,
                    quota_us: 10_000,
                    pod: CpuQuota::Micros(40_000)
                },
                Loss::MemoryLimit {
                    container: 1,
                    limit: Bytes(300),
                    pod: MemoryLimit::Bytes(Bytes(400))
                },
                Loss::CpuQuota {
                    container: 1,
                    quota_us: 30_000,
                    pod: CpuQuota::Micros(40_000)
                },
                Loss::CpuSharesBetweenContainers { containers: 2 },
            ]
        );
    }

    #[test]
    fn a_sibling_without_limit_unbounds_a_limited_container() {
        let limited = Resources {
            memory_limit: Some(Bytes(10)),
            ..Default::default()
        };
        let p = pod(vec![limited, Resources::default()]);
        assert_eq!(
            losses(&p, &pod_cgroup(&p)),
            vec![Loss::MemoryLimit {
                container: 0,
                limit: Bytes(10),
                pod: MemoryLimit::Unlimited
            }]
        );
    }

    #[test]
    fn overhead_loosens_a_single_containers_limit() {
        let p = PodResources {
            containers: vec![Resources {
                memory_limit: Some(Bytes(10)),
                ..Default::default()
            }],
            overhead: Some(Resources {
                memory_limit: Some(Bytes(5)),
                ..Default::default()
            }),
            ..Default::default()
        };
        assert_eq!(
            losses(&p, &pod_cgroup(&p)),
            vec![Loss::MemoryLimit {
                container: 0,
                limit: Bytes(10),
                pod: MemoryLimit::Bytes(Bytes(15))
            }]
        );
    }

    #[test]
    fn best_effort_multi_container_pods_lose_nothing() {
        let p = pod(vec![Resources::default(); 3]);
        assert_eq!(losses(&p, &pod_cgroup(&p)), vec![]);
    }
}
