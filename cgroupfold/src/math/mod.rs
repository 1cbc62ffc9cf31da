//! Kubelet's resource formulas, pure: no I/O, every function table-tested.
//!
//! Quantities are typed ([`MilliCpu`], [`Bytes`]) so a CPU value can never be passed where
//! bytes are expected; both parse Kubernetes quantity strings with typed errors.
//!
//! ```
//! use cgroupfold::math::{MilliCpu, cpu_shares, cfs_quota, cpu_weight};
//! let req: MilliCpu = "500m".parse().unwrap();
//! assert_eq!(cpu_shares(Some(req)), 512);
//! assert_eq!(cpu_weight(cpu_shares(Some(req))), 20);
//! assert_eq!(cfs_quota(Some(req)).v2_max(), "50000 100000");
//! ```

mod cpu;
mod memory;
mod node;
mod oom;
mod pod;
mod qos;
mod quantity;
mod resources;

pub use cpu::{
    CFS_PERIOD_US, CpuQuota, MAX_SHARES, MIN_QUOTA_US, MIN_SHARES, cfs_quota, cpu_shares,
    cpu_weight,
};
pub use memory::{MemoryLimit, V1_UNLIMITED, memory_limit};
pub use node::{NodeResources, QosCgroups, node_allocatable, qos_cgroups};
pub use oom::{BEST_EFFORT_OOM_SCORE_ADJ, GUARANTEED_OOM_SCORE_ADJ, oom_score_adj};
pub use pod::{CgroupConfig, PodResources, container_cgroup, pod_cgroup};
pub use qos::{QosClass, qos_class};
pub use quantity::{Bytes, MilliCpu, QuantityError};
pub use resources::Resources;
