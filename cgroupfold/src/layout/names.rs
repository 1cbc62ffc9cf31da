//! Cgroup and systemd unit names, per cgroup driver.

use crate::math::QosClass;

/// How kubelet and runc name cgroups.
///
/// ```
/// use cgroupfold::layout::Driver;
/// use cgroupfold::math::QosClass;
/// assert_eq!(Driver::Cgroupfs.pod_path(QosClass::Burstable, "a-b"), "kubepods/burstable/poda-b");
/// assert_eq!(
///     Driver::Systemd.pod_path(QosClass::Burstable, "a-b"),
///     "kubepods.slice/kubepods-burstable.slice/kubepods-burstable-poda_b.slice"
/// );
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Driver {
    /// Plain directories (`--cgroup-driver=cgroupfs`); no systemd units.
    Cgroupfs,
    /// systemd slices for kubepods/QoS/pods and a transient `.scope` per container.
    Systemd,
}

/// The prefix containerd's CRI plugin gives container scopes (`cri-containerd-<id>.scope`).
pub const SCOPE_PREFIX: &str = "cri-containerd";

impl Driver {
    /// The top `kubepods` cgroup.
    ///
    /// ```
    /// assert_eq!(cgroupfold::layout::Driver::Systemd.kubepods_path(), "kubepods.slice");
    /// ```
    pub fn kubepods_path(self) -> String {
        match self {
            Driver::Cgroupfs => "kubepods".to_owned(),
            Driver::Systemd => "kubepods.slice".to_owned(),
        }
    }

    /// The QoS-level cgroup for `qos`; Guaranteed pods sit directly in `kubepods`.
    ///
    /// ```
    /// use cgroupfold::{layout::Driver, math::QosClass};
    /// assert_eq!(Driver::Cgroupfs.qos_path(QosClass::BestEffort), "kubepods/besteffort");
    /// assert_eq!(Driver::Cgroupfs.qos_path(QosClass::Guaranteed), "kubepods");
    /// ```
    pub fn qos_path(self, qos: QosClass) -> String {
        match (self, qos) {
            (_, QosClass::Guaranteed) => self.kubepods_path(),
            (Driver::Cgroupfs, q) => format!("kubepods/{}", qos_word(q)),
            (Driver::Systemd, q) => format!("kubepods.slice/kubepods-{}.slice", qos_word(q)),
        }
    }

    /// The pod cgroup. systemd unit names cannot hold `-` inside a component (it means nesting),
    /// so kubelet writes the uid's dashes as underscores.
    ///
    /// ```
    /// use cgroupfold::{layout::Driver, math::QosClass};
    /// assert_eq!(Driver::Systemd.pod_path(QosClass::Guaranteed, "u-1"), "kubepods.slice/kubepods-podu_1.slice");
    /// ```
    pub fn pod_path(self, qos: QosClass, uid: &str) -> String {
        let parent = self.qos_path(qos);
        match self {
            Driver::Cgroupfs => format!("{parent}/pod{uid}"),
            Driver::Systemd => {
                let stem = parent
                    .rsplit('/')
                    .next()
                    .unwrap_or(&parent)
                    .trim_end_matches(".slice");
                format!("{parent}/{stem}-pod{}.slice", uid.replace('-', "_"))
            }
        }
    }

    /// A container's own cgroup (standard layout).
    ///
    /// ```
    /// use cgroupfold::{layout::Driver, math::QosClass};
    /// assert_eq!(Driver::Cgroupfs.container_path(QosClass::BestEffort, "u", "c1"), "kubepods/besteffort/podu/c1");
    /// ```
    pub fn container_path(self, qos: QosClass, uid: &str, id: &str) -> String {
        let pod = self.pod_path(qos, uid);
        match self {
            Driver::Cgroupfs => format!("{pod}/{id}"),
            Driver::Systemd => format!("{pod}/{SCOPE_PREFIX}-{id}.scope"),
        }
    }

    /// The folded pod's cgroup, where all of its containers' processes live. With systemd,
    /// processes may only live in scopes and services, never in slices, so the folded pod is one
    /// scope `kubepods-…-pod<uid>.scope` in place of the pod slice and its container scopes.
    ///
    /// ```
    /// use cgroupfold::{layout::Driver, math::QosClass};
    /// assert_eq!(Driver::Cgroupfs.folded_pod_path(QosClass::Burstable, "u"), "kubepods/burstable/podu");
    /// assert_eq!(Driver::Systemd.folded_pod_path(QosClass::Guaranteed, "u"), "kubepods.slice/kubepods-podu.scope");
    /// ```
    pub fn folded_pod_path(self, qos: QosClass, uid: &str) -> String {
        let pod = self.pod_path(qos, uid);
        match self {
            Driver::Cgroupfs => pod,
            Driver::Systemd => format!("{}.scope", pod.trim_end_matches(".slice")),
        }
    }

    /// The systemd unit a cgroup path is, if this driver makes one (its last component).
    ///
    /// ```
    /// use cgroupfold::layout::Driver;
    /// assert_eq!(Driver::Systemd.unit_of("a.slice/b.scope"), Some("b.scope"));
    /// assert_eq!(Driver::Cgroupfs.unit_of("kubepods"), None);
    /// ```
    pub fn unit_of(self, path: &str) -> Option<&str> {
        match self {
            Driver::Cgroupfs => None,
            Driver::Systemd => path.rsplit('/').next(),
        }
    }
}

fn qos_word(q: QosClass) -> &'static str {
    match q {
        QosClass::Guaranteed => "guaranteed",
        QosClass::Burstable => "burstable",
        QosClass::BestEffort => "besteffort",
    }
}
