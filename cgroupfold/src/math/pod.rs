//! Pod-level values: sums over app containers, the init-container maximum, overhead, pids.

use super::{
    Bytes, CpuQuota, MemoryLimit, MilliCpu, QosClass, Resources, cfs_quota, cpu_shares,
    memory_limit, qos_class,
};

/// What kubelet needs of a pod to size its cgroup.
///
/// ```
/// use cgroupfold::math::{Bytes, MilliCpu, PodResources, Resources};
/// let pod = PodResources {
///     containers: vec![Resources::guaranteed(MilliCpu(500), Bytes::mib(64)); 2],
///     ..Default::default()
/// };
/// assert_eq!(pod.requests().cpu_request, Some(MilliCpu(1000)));
/// ```
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct PodResources {
    /// App (and sidecar) containers; they run together, so they add up.
    pub containers: Vec<Resources>,
    /// Init containers; they run one at a time, so only the largest counts.
    pub init_containers: Vec<Resources>,
    /// `spec.overhead` from the RuntimeClass, added on top.
    pub overhead: Option<Resources>,
    /// kubelet's `podPidsLimit`, if set.
    pub pids_limit: Option<u64>,
}

/// A pod cgroup's settings, as kubelet's `ResourceConfigForPod` computes them.
///
/// ```
/// use cgroupfold::math::{PodResources, pod_cgroup};
/// let cfg = pod_cgroup(&PodResources::default());
/// assert_eq!(cfg.cpu_shares, 2);
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CgroupConfig {
    /// `cpu.shares` (v1); [`super::cpu_weight`] of it for v2.
    pub cpu_shares: u64,
    /// CFS quota.
    pub cpu_quota: CpuQuota,
    /// Memory limit.
    pub memory: MemoryLimit,
    /// `pids.max`; `None` is `max`.
    pub pids_max: Option<u64>,
}

impl CgroupConfig {
    /// No limits, and the shares of no request (what pause containers and BestEffort get).
    ///
    /// ```
    /// assert_eq!(cgroupfold::math::CgroupConfig::UNLIMITED.cpu_shares, 2);
    /// ```
    pub const UNLIMITED: CgroupConfig = CgroupConfig {
        cpu_shares: super::MIN_SHARES,
        cpu_quota: CpuQuota::Unlimited,
        memory: MemoryLimit::Unlimited,
        pids_max: None,
    };
}

fn add(a: Option<u64>, b: Option<u64>) -> Option<u64> {
    match (a, b) {
        (None, None) => None,
        (a, b) => Some(a.unwrap_or(0).saturating_add(b.unwrap_or(0))),
    }
}

fn max(a: Option<u64>, b: Option<u64>) -> Option<u64> {
    match (a, b) {
        (Some(a), Some(b)) => Some(a.max(b)),
        (a, b) => a.or(b),
    }
}

impl PodResources {
    fn fold(&self, pick: impl Fn(&Resources) -> Option<u64>) -> Option<u64> {
        let apps = self
            .containers
            .iter()
            .map(|r| pick(&r.defaulted()))
            .fold(None, add);
        let inits = self
            .init_containers
            .iter()
            .map(|r| pick(&r.defaulted()))
            .fold(None, max);
        add(
            max(apps, inits),
            self.overhead.as_ref().and_then(|o| pick(&o.defaulted())),
        )
    }

    /// Effective pod requests and limits: `max(sum(app), max(init)) + overhead` per resource.
    /// A limit is only set when every app and init container declares it (otherwise the pod is
    /// unbounded in that resource).
    ///
    /// ```
    /// use cgroupfold::math::{MilliCpu, PodResources, Resources};
    /// let r = |m| Resources { cpu_request: Some(MilliCpu(m)), ..Default::default() };
    /// let pod = PodResources { containers: vec![r(100), r(200)], init_containers: vec![r(250), r(50)], ..Default::default() };
    /// assert_eq!(pod.requests().cpu_request, Some(MilliCpu(300)));
    /// ```
    pub fn requests(&self) -> Resources {
        let all = || {
            self.containers
                .iter()
                .chain(&self.init_containers)
                .map(|r| r.defaulted())
        };
        let cpu_limited = all().all(|r| r.cpu_limit.is_some_and(|q| q.0 > 0));
        let mem_limited = all().all(|r| r.memory_limit.is_some_and(|q| q.0 > 0));
        let any = !self.containers.is_empty() || !self.init_containers.is_empty();
        Resources {
            cpu_request: self.fold(|r| r.cpu_request.map(|q| q.0)).map(MilliCpu),
            memory_request: self.fold(|r| r.memory_request.map(|q| q.0)).map(Bytes),
            cpu_limit: (any && cpu_limited)
                .then(|| self.fold(|r| r.cpu_limit.map(|q| q.0)))
                .flatten()
                .map(MilliCpu),
            memory_limit: (any && mem_limited)
                .then(|| self.fold(|r| r.memory_limit.map(|q| q.0)))
                .flatten()
                .map(Bytes),
        }
    }

    /// The pod's QoS class (over app and init containers; overhead does not count).
    ///
    /// ```
    /// use cgroupfold::math::{PodResources, QosClass};
    /// assert_eq!(PodResources::default().qos(), QosClass::BestEffort);
    /// ```
    pub fn qos(&self) -> QosClass {
        let all: Vec<Resources> = self
            .containers
            .iter()
            .chain(&self.init_containers)
            .copied()
            .collect();
        qos_class(&all)
    }
}

/// The pod cgroup's settings: shares from summed requests; quota and memory limit only when
/// every container declares that limit; BestEffort pods get minimum shares and no limits.
///
/// ```
/// use cgroupfold::math::{Bytes, CpuQuota, MilliCpu, PodResources, Resources, pod_cgroup};
/// let pod = PodResources { containers: vec![Resources::guaranteed(MilliCpu(1000), Bytes::gib(1))], pids_limit: Some(1024), ..Default::default() };
/// let cfg = pod_cgroup(&pod);
/// assert_eq!((cfg.cpu_shares, cfg.cpu_quota, cfg.pids_max), (1024, CpuQuota::Micros(100_000), Some(1024)));
/// ```
pub fn pod_cgroup(pod: &PodResources) -> CgroupConfig {
    let pids_max = pod.pids_limit;
    if pod.qos() == QosClass::BestEffort {
        return CgroupConfig {
            pids_max,
            ..CgroupConfig::UNLIMITED
        };
    }
    let r = pod.requests();
    CgroupConfig {
        cpu_shares: cpu_shares(r.cpu_request),
        cpu_quota: cfs_quota(r.cpu_limit),
        memory: memory_limit(r.memory_limit),
        pids_max,
    }
}

/// A container's own cgroup settings (what runc writes from the OCI spec kubelet builds).
///
/// ```
/// use cgroupfold::math::{Bytes, MilliCpu, Resources, container_cgroup};
/// let cfg = container_cgroup(&Resources { cpu_request: Some(MilliCpu(250)), ..Default::default() });
/// assert_eq!(cfg.cpu_shares, 256);
/// ```
pub fn container_cgroup(r: &Resources) -> CgroupConfig {
    let r = r.defaulted();
    CgroupConfig {
        cpu_shares: cpu_shares(r.cpu_request),
        cpu_quota: cfs_quota(r.cpu_limit),
        memory: memory_limit(r.memory_limit),
        pids_max: None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cpu(req: u64, lim: Option<u64>) -> Resources {
        Resources {
            cpu_request: Some(MilliCpu(req)),
            cpu_limit: lim.map(MilliCpu),
            ..Default::default()
        }
    }

    #[test]
    fn app_containers_sum_and_init_containers_take_the_max() {
        let pod = PodResources {
            containers: vec![cpu(100, None), cpu(200, None)],
            init_containers: vec![cpu(250, None), cpu(50, None)],
            ..Default::default()
        };
        assert_eq!(pod.requests().cpu_request, Some(MilliCpu(300)));
        let big_init = PodResources {
            init_containers: vec![cpu(1000, None)],
            ..pod.clone()
        };
        assert_eq!(big_init.requests().cpu_request, Some(MilliCpu(1000)));
    }

    #[test]
    fn overhead_is_added_on_top() {
        let pod = PodResources {
            containers: vec![Resources::guaranteed(MilliCpu(1000), Bytes::mib(100))],
            overhead: Some(Resources::guaranteed(MilliCpu(250), Bytes::mib(20))),
            ..Default::default()
        };
        let r = pod.requests();
        assert_eq!(r.cpu_request, Some(MilliCpu(1250)));
        assert_eq!(r.memory_limit, Some(Bytes::mib(120)));
        let cfg = pod_cgroup(&pod);
        assert_eq!(cfg.cpu_shares, 1280);
        assert_eq!(cfg.cpu_quota, CpuQuota::Micros(125_000));
        assert_eq!(cfg.memory, MemoryLimit::Bytes(Bytes::mib(120)));
    }

    #[test]
    fn one_container_without_a_limit_unbounds_the_pod() {
        let pod = PodResources {
            containers: vec![cpu(100, Some(200)), cpu(100, None)],
            ..Default::default()
        };
        let cfg = pod_cgroup(&pod);
        assert_eq!(cfg.cpu_shares, 204);
        assert_eq!(cfg.cpu_quota, CpuQuota::Unlimited);
        assert_eq!(cfg.memory, MemoryLimit::Unlimited);
    }

    #[test]
    fn best_effort_pod_gets_minimum_shares_and_keeps_pids_limit() {
        let pod = PodResources {
            containers: vec![Resources::default()],
            pids_limit: Some(100),
            ..Default::default()
        };
        assert_eq!(
            pod_cgroup(&pod),
            CgroupConfig {
                pids_max: Some(100),
                ..CgroupConfig::UNLIMITED
            }
        );
    }

    #[test]
    fn huge_values_saturate_instead_of_wrapping() {
        let pod = PodResources {
            containers: vec![cpu(u64::MAX, Some(u64::MAX)); 2],
            ..Default::default()
        };
        let cfg = pod_cgroup(&pod);
        assert_eq!(cfg.cpu_shares, 262_144);
        assert_eq!(cfg.cpu_quota, CpuQuota::Micros(u64::MAX / 1000));
    }

    #[test]
    fn container_cgroup_of_a_one_millicore_limit() {
        let cfg = container_cgroup(&cpu(1, Some(1)));
        assert_eq!((cfg.cpu_shares, cfg.cpu_quota), (2, CpuQuota::Micros(1000)));
    }
}
