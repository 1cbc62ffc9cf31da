//! Kubelet's cgroup tree for a node's pods, and the folded tree.
//!
//! In kubelet's standard tree every container (and the pause container) has its own cgroup
//! below the pod's; with the systemd driver each is also a transient `.scope` unit. A *folded*
//! pod puts all of its containers' processes in the pod cgroup. [`FoldPolicy`] decides per pod,
//! and [`losses`] says what a pod's folding gives up.
//!
//! ```
//! use cgroupfold::layout::{Driver, FoldPolicy, Plan, Pod};
//! use cgroupfold::math::{NodeResources, Resources};
//! let pod = Pod::new("u", "pause", vec![("app".into(), Resources::default())]);
//! let plan = Plan::new(&[pod], NodeResources::default(), Driver::Cgroupfs, FoldPolicy::WhenLossless);
//! assert_eq!(plan.pods[0].container_cgroups[1].1, "kubepods/besteffort/podu");
//! ```

mod loss;
mod names;
mod plan;
mod pod;

pub use loss::{Loss, losses};
pub use names::{Driver, SCOPE_PREFIX};
pub use plan::{CgroupNode, Counts, FoldPolicy, NodeKind, Plan, PodPlan};
pub use pod::Pod;
