//! Kubelet's resource math, and pods folded into fewer cgroups.
//!
//! - [`math`]: kubelet's formulas (QoS class, `cpu.shares`/`cpu.weight`, CFS quota, memory
//!   limits, `oom_score_adj`, pod sums, QoS-level cgroups, node allocatable), pure and typed.
//! - [`layout`]: the cgroup tree kubelet + runc create for a set of pods (cgroupfs and systemd
//!   names), the *folded* tree where a pod's containers share the pod cgroup, what folding
//!   loses per pod, and how many cgroups and systemd units each implies.
//! - [`fs`]: drivers that create, configure, populate, read, freeze, kill and remove real
//!   cgroups on v1, v2 or hybrid hosts (detected at runtime), under a configurable root.
//! - [`fold`]: what a folded container needs from the OCI spec, and which runtime operations
//!   the service must do itself instead of asking runc or crun.
//!
//! Underneath, `math` and `layout` are plain functions over typed values (no I/O); `fs` reads
//! `/proc/self/mountinfo` to find the hierarchies and then only reads and writes cgroup control
//! files and directories, sending signals through `rustix`.
//!
//! Caveats: the Burstable `oom_score_adj` floor is 3, as kubelet's code has it (the
//! kubernetes.io table says 2); folding relies on runc 1.1 joining a non-empty cgroup (runc
//! 1.2 refuses), and crun 1.8.1 resets the shared memory limit on every create; the v2
//! driver's controller writes are untested on this hybrid host (see the README).
//!
//! ```
//! use cgroupfold::math::{PodResources, Resources, pod_cgroup};
//! let pod = PodResources {
//!     containers: vec![Resources::guaranteed("250m".parse().unwrap(), "64Mi".parse().unwrap())],
//!     ..Default::default()
//! };
//! let cfg = pod_cgroup(&pod);
//! assert_eq!(cfg.cpu_shares, 256);
//! assert_eq!(cfg.memory.v1_limit_in_bytes(), 64 << 20);
//! ```

pub mod fold;
pub mod fs;
pub mod layout;
pub mod math;
