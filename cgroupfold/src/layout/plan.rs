//! A node's whole cgroup tree, standard or folded per pod.

use super::{Driver, Loss, Pod, losses};
use crate::math::{
    CgroupConfig, NodeResources, PodResources, QosClass, container_cgroup, pod_cgroup, qos_cgroups,
};

/// Whether to fold a pod's containers into the pod cgroup.
///
/// ```
/// use cgroupfold::layout::FoldPolicy;
/// assert_ne!(FoldPolicy::Never, FoldPolicy::Always);
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum FoldPolicy {
    /// Kubelet's standard tree: a cgroup per container.
    Never,
    /// Fold only pods that would lose nothing ([`losses`] is empty).
    WhenLossless,
    /// Fold every pod, whatever it loses.
    Always,
}

/// What a cgroup in the tree is.
///
/// ```
/// use cgroupfold::layout::NodeKind;
/// assert_ne!(NodeKind::Kubepods, NodeKind::Qos);
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum NodeKind {
    /// `kubepods`.
    Kubepods,
    /// `burstable` or `besteffort`.
    Qos,
    /// A pod's cgroup (in a folded pod, its processes live here).
    Pod,
    /// The pause container's cgroup.
    Sandbox,
    /// An app or init container's cgroup.
    Container,
}

/// One cgroup of the tree, with the settings kubelet/runc give it.
///
/// ```
/// use cgroupfold::layout::{Driver, FoldPolicy, Plan};
/// use cgroupfold::math::NodeResources;
/// let plan = Plan::new(&[], NodeResources::default(), Driver::Cgroupfs, FoldPolicy::Never);
/// assert_eq!(plan.cgroups[0].path, "kubepods");
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CgroupNode {
    /// Path relative to the cgroup root, parents before children.
    pub path: String,
    /// What it is.
    pub kind: NodeKind,
    /// Settings to apply.
    pub config: CgroupConfig,
}

/// Per-pod outcome of the policy.
///
/// ```
/// use cgroupfold::layout::{Driver, FoldPolicy, Plan, Pod};
/// use cgroupfold::math::NodeResources;
/// let plan = Plan::new(&[Pod::new("u", "s", vec![])], NodeResources::default(), Driver::Cgroupfs, FoldPolicy::WhenLossless);
/// assert!(plan.pods[0].folded);
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PodPlan {
    /// The pod's uid.
    pub uid: String,
    /// Its QoS class.
    pub qos: QosClass,
    /// Whether its containers share the pod cgroup.
    pub folded: bool,
    /// What folding loses (or would lose, if not folded).
    pub losses: Vec<Loss>,
    /// The cgroup each container's processes go into: sandbox first, then app, then init.
    pub container_cgroups: Vec<(String, String)>,
}

/// How many cgroups and systemd units a tree has.
///
/// ```
/// use cgroupfold::layout::Counts;
/// assert_eq!(Counts::default().cgroups, 0);
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Counts {
    /// Cgroup directories (per hierarchy; v1 multiplies by the controllers mounted).
    pub cgroups: usize,
    /// systemd units (slices and scopes) with the systemd driver; 0 with cgroupfs.
    pub systemd_units: usize,
}

/// The cgroup tree for a node's pods, under one driver and fold policy.
///
/// ```
/// use cgroupfold::layout::{Driver, FoldPolicy, Plan, Pod};
/// use cgroupfold::math::{NodeResources, Resources};
/// let pods: Vec<Pod> = (0..10)
///     .map(|i| Pod::new(&format!("u{i}"), &format!("s{i}"), vec![(format!("c{i}"), Resources::default())]))
///     .collect();
/// let std = Plan::new(&pods, NodeResources::default(), Driver::Systemd, FoldPolicy::Never).counts();
/// let fold = Plan::new(&pods, NodeResources::default(), Driver::Systemd, FoldPolicy::Always).counts();
/// assert_eq!((std.cgroups, std.systemd_units), (3 + 10 * 3, 3 + 10 * 3));
/// assert_eq!((fold.cgroups, fold.systemd_units), (3 + 10, 3 + 10));
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Plan {
    /// The driver names follow.
    pub driver: Driver,
    /// Every cgroup, parents first (create in order, remove in reverse).
    pub cgroups: Vec<CgroupNode>,
    /// Per pod, in input order.
    pub pods: Vec<PodPlan>,
}

impl Plan {
    /// Lays out `pods` on a node with `allocatable` resources.
    pub fn new(
        pods: &[Pod],
        allocatable: NodeResources,
        driver: Driver,
        policy: FoldPolicy,
    ) -> Self {
        let resources: Vec<PodResources> = pods.iter().map(|p| p.resources.clone()).collect();
        let qos = qos_cgroups(allocatable, &resources, 0);
        let mut cgroups = vec![
            CgroupNode {
                path: driver.kubepods_path(),
                kind: NodeKind::Kubepods,
                config: qos.kubepods,
            },
            CgroupNode {
                path: driver.qos_path(QosClass::Burstable),
                kind: NodeKind::Qos,
                config: qos.burstable,
            },
            CgroupNode {
                path: driver.qos_path(QosClass::BestEffort),
                kind: NodeKind::Qos,
                config: qos.besteffort,
            },
        ];
        let plans = pods
            .iter()
            .map(|pod| place_pod(pod, driver, policy, &mut cgroups))
            .collect();
        Plan {
            driver,
            cgroups,
            pods: plans,
        }
    }

    /// Cgroups and systemd units in this tree.
    pub fn counts(&self) -> Counts {
        Counts {
            cgroups: self.cgroups.len(),
            systemd_units: self
                .cgroups
                .iter()
                .filter(|c| self.driver.unit_of(&c.path).is_some())
                .count(),
        }
    }
}

/// Lays out one pod: its pod cgroup, and either every container in it (folded) or a cgroup
/// per sandbox and container below it, appended to `cgroups`; returns the pod's plan.
fn place_pod(
    pod: &Pod,
    driver: Driver,
    policy: FoldPolicy,
    cgroups: &mut Vec<CgroupNode>,
) -> PodPlan {
    let class = pod.resources.qos();
    let pod_cfg = pod_cgroup(&pod.resources);
    let lost = losses(&pod.resources, &pod_cfg);
    let folded = match policy {
        FoldPolicy::Never => false,
        FoldPolicy::Always => true,
        FoldPolicy::WhenLossless => lost.is_empty(),
    };
    let ids = std::iter::once(&pod.sandbox_id)
        .chain(&pod.container_ids)
        .chain(&pod.init_container_ids);
    let mut placed = Vec::new();
    if folded {
        let path = driver.folded_pod_path(class, &pod.uid);
        cgroups.push(CgroupNode {
            path: path.clone(),
            kind: NodeKind::Pod,
            config: pod_cfg,
        });
        placed.extend(ids.map(|id| (id.clone(), path.clone())));
    } else {
        cgroups.push(CgroupNode {
            path: driver.pod_path(class, &pod.uid),
            kind: NodeKind::Pod,
            config: pod_cfg,
        });
        let res = pod
            .resources
            .containers
            .iter()
            .chain(&pod.resources.init_containers);
        let configs = std::iter::once(CgroupConfig::UNLIMITED).chain(res.map(container_cgroup));
        for (i, (id, config)) in ids.zip(configs).enumerate() {
            let path = driver.container_path(class, &pod.uid, id);
            let kind = if i == 0 {
                NodeKind::Sandbox
            } else {
                NodeKind::Container
            };
            cgroups.push(CgroupNode {
                path: path.clone(),
                kind,
                config,
            });
            placed.push((id.clone(), path));
        }
    }
    PodPlan {
        uid: pod.uid.clone(),
        qos: class,
        folded,
        losses: lost,
        container_cgroups: placed,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::math::{Bytes, MilliCpu, Resources};

    fn pods() -> Vec<Pod> {
        let g = Resources::guaranteed(MilliCpu(500), Bytes::mib(64));
        let b = Resources {
            cpu_request: Some(MilliCpu(100)),
            ..Default::default()
        };
        vec![
            Pod::new("single-g", "s1", vec![("a".into(), g)]),
            Pod::new("multi-b", "s2", vec![("b".into(), b), ("c".into(), b)]),
            Pod::new(
                "multi-be",
                "s3",
                vec![
                    ("d".into(), Resources::default()),
                    ("e".into(), Resources::default()),
                ],
            ),
        ]
    }

    #[test]
    fn standard_tree_has_kubelets_cgroupfs_paths() {
        let plan = Plan::new(
            &pods(),
            NodeResources::default(),
            Driver::Cgroupfs,
            FoldPolicy::Never,
        );
        let paths: Vec<&str> = plan.cgroups.iter().map(|c| c.path.as_str()).collect();
        assert_eq!(
            paths,
            [
                "kubepods",
                "kubepods/burstable",
                "kubepods/besteffort",
                "kubepods/podsingle-g",
                "kubepods/podsingle-g/s1",
                "kubepods/podsingle-g/a",
                "kubepods/burstable/podmulti-b",
                "kubepods/burstable/podmulti-b/s2",
                "kubepods/burstable/podmulti-b/b",
                "kubepods/burstable/podmulti-b/c",
                "kubepods/besteffort/podmulti-be",
                "kubepods/besteffort/podmulti-be/s3",
                "kubepods/besteffort/podmulti-be/d",
                "kubepods/besteffort/podmulti-be/e",
            ]
        );
        assert_eq!(
            plan.counts(),
            Counts {
                cgroups: 14,
                systemd_units: 0
            }
        );
        assert_eq!(
            plan.cgroups[4].config,
            CgroupConfig::UNLIMITED,
            "pause container gets 2 shares"
        );
        assert_eq!(
            plan.cgroups[1].config.cpu_shares, 204,
            "burstable = sum of burstable requests"
        );
    }

    #[test]
    fn systemd_tree_names_slices_and_scopes() {
        let plan = Plan::new(
            &pods()[..1],
            NodeResources::default(),
            Driver::Systemd,
            FoldPolicy::Never,
        );
        let paths: Vec<&str> = plan.cgroups.iter().map(|c| c.path.as_str()).collect();
        assert_eq!(
            paths,
            [
                "kubepods.slice",
                "kubepods.slice/kubepods-burstable.slice",
                "kubepods.slice/kubepods-besteffort.slice",
                "kubepods.slice/kubepods-podsingle_g.slice",
                "kubepods.slice/kubepods-podsingle_g.slice/cri-containerd-s1.scope",
                "kubepods.slice/kubepods-podsingle_g.slice/cri-containerd-a.scope",
            ]
        );
        assert_eq!(
            plan.counts(),
            Counts {
                cgroups: 6,
                systemd_units: 6
            }
        );
    }

    #[test]
    fn when_lossless_folds_only_pods_that_lose_nothing() {
        let plan = Plan::new(
            &pods(),
            NodeResources::default(),
            Driver::Cgroupfs,
            FoldPolicy::WhenLossless,
        );
        let folded: Vec<(&str, bool)> = plan
            .pods
            .iter()
            .map(|p| (p.uid.as_str(), p.folded))
            .collect();
        assert_eq!(
            folded,
            [("single-g", true), ("multi-b", false), ("multi-be", true)]
        );
        assert_eq!(
            plan.pods[1].losses,
            vec![Loss::CpuSharesBetweenContainers { containers: 2 }]
        );
        assert_eq!(
            plan.pods[0].container_cgroups,
            [
                ("s1".to_owned(), "kubepods/podsingle-g".to_owned()),
                ("a".to_owned(), "kubepods/podsingle-g".to_owned())
            ]
        );
        assert_eq!(plan.counts().cgroups, 3 + 1 + 4 + 1);
    }

    #[test]
    fn always_folds_and_still_states_the_losses() {
        let plan = Plan::new(
            &pods(),
            NodeResources::default(),
            Driver::Systemd,
            FoldPolicy::Always,
        );
        assert!(plan.pods.iter().all(|p| p.folded));
        assert_eq!(plan.pods[1].losses.len(), 1);
        assert_eq!(
            plan.cgroups[4].path,
            "kubepods.slice/kubepods-burstable.slice/kubepods-burstable-podmulti_b.scope"
        );
        assert_eq!(
            plan.counts(),
            Counts {
                cgroups: 6,
                systemd_units: 6
            }
        );
    }
}
