//! Rewriting a container's OCI spec so that the runtime places it in its pod's cgroup.

use oci_spec::runtime::{LinuxNamespaceType, LinuxResources, Spec};

/// Why a container cannot be folded.
///
/// ```
/// use cgroupfold::fold::FoldError;
/// assert!(FoldError::SharedPidNamespace.to_string().contains("pid namespace"));
/// ```
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FoldError {
    /// The spec has no `linux` section.
    #[error(
        "the spec has no linux section: a folded container needs linux.cgroupsPath and namespaces"
    )]
    NotLinux,
    /// The pod cgroup path is not an absolute cgroupfs path.
    #[error(
        "pod cgroup {path:?} must be an absolute cgroupfs path such as \"/kubepods/burstable/pod<uid>\" (systemd slice:prefix:name paths make the runtime create a scope per container)"
    )]
    BadPodCgroup {
        /// The refused path.
        path: String,
    },
    /// The container would not have its own PID namespace: then killing its init does not take
    /// its other processes down, and nothing but the cgroup would tell them from a sibling's.
    #[error(
        "a folded container needs its own pid namespace (a linux.namespaces entry of type pid without a path); drop the shared or joined pid namespace, or do not fold this pod"
    )]
    SharedPidNamespace,
    /// A device rule allows every device: in a shared v1 devices cgroup it would open all
    /// devices to the sibling containers too.
    #[error(
        "device rule {rule} allows every device, which the shared pod cgroup would grant to sibling containers too; do not fold privileged containers"
    )]
    AllowsAllDevices {
        /// The rule, as text.
        rule: String,
    },
}

/// Rewrites `spec` for a container folded into the pod cgroup `pod_cgroup`:
///
/// - `linux.cgroupsPath` becomes the pod cgroup, so runc/crun join it instead of making one;
/// - every resource limit but the device rules is dropped, because the runtime writes them to
///   the cgroup it is given — the shared pod cgroup — and would overwrite the pod's limits with
///   one container's (the service applies the pod's limits itself, from
///   [`crate::math::pod_cgroup`]);
/// - the container must have its own PID namespace and no allow-all device rule.
///
/// ```
/// use cgroupfold::fold::fold_spec;
/// let mut spec = oci_spec::runtime::Spec::default();
/// fold_spec(&mut spec, "/kubepods/burstable/podabc").unwrap();
/// let linux = spec.linux().as_ref().unwrap();
/// assert_eq!(linux.cgroups_path().as_deref(), Some(std::path::Path::new("/kubepods/burstable/podabc")));
/// ```
pub fn fold_spec(spec: &mut Spec, pod_cgroup: &str) -> Result<(), FoldError> {
    let valid = pod_cgroup.starts_with('/')
        && !pod_cgroup.contains(':')
        && pod_cgroup
            .split('/')
            .skip(1)
            .all(|p| !p.is_empty() && p != "." && p != "..");
    if !valid {
        return Err(FoldError::BadPodCgroup {
            path: pod_cgroup.to_owned(),
        });
    }
    let linux = spec.linux_mut().as_mut().ok_or(FoldError::NotLinux)?;
    let own_pid_ns = linux.namespaces().as_ref().is_some_and(|ns| {
        ns.iter()
            .any(|n| n.typ() == LinuxNamespaceType::Pid && n.path().is_none())
    });
    if !own_pid_ns {
        return Err(FoldError::SharedPidNamespace);
    }
    let devices = linux.resources().as_ref().and_then(|r| r.devices().clone());
    if let Some(rule) = devices.iter().flatten().find(|d| {
        d.allow()
            && d.typ()
                .is_none_or(|t| t == oci_spec::runtime::LinuxDeviceType::A)
            && d.major().is_none()
            && d.minor().is_none()
    }) {
        return Err(FoldError::AllowsAllDevices {
            rule: rule.to_string(),
        });
    }
    let mut kept = LinuxResources::default();
    kept.set_devices(devices);
    linux.set_resources(Some(kept));
    linux.set_cgroups_path(Some(pod_cgroup.into()));
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use oci_spec::runtime::{
        LinuxCpuBuilder, LinuxDeviceCgroupBuilder, LinuxMemoryBuilder, LinuxNamespaceBuilder,
        LinuxPidsBuilder, LinuxResourcesBuilder,
    };

    fn limited_spec() -> Spec {
        let mut spec = Spec::default();
        let deny = LinuxDeviceCgroupBuilder::default()
            .allow(false)
            .access("rwm")
            .build()
            .unwrap();
        let res = LinuxResourcesBuilder::default()
            .devices(vec![deny])
            .memory(
                LinuxMemoryBuilder::default()
                    .limit(64i64 << 20)
                    .build()
                    .unwrap(),
            )
            .cpu(
                LinuxCpuBuilder::default()
                    .shares(256u64)
                    .quota(50_000i64)
                    .build()
                    .unwrap(),
            )
            .pids(LinuxPidsBuilder::default().limit(100i64).build().unwrap())
            .build()
            .unwrap();
        spec.linux_mut().as_mut().unwrap().set_resources(Some(res));
        spec
    }

    #[test]
    fn folding_points_at_the_pod_and_drops_limits_but_keeps_device_rules() {
        let mut spec = limited_spec();
        fold_spec(&mut spec, "/kubepods/pod1").unwrap();
        let linux = spec.linux().as_ref().unwrap();
        assert_eq!(
            linux.cgroups_path().as_deref(),
            Some(std::path::Path::new("/kubepods/pod1"))
        );
        let r = linux.resources().as_ref().unwrap();
        assert!(r.memory().is_none() && r.cpu().is_none() && r.pids().is_none());
        assert_eq!(r.devices().as_ref().unwrap().len(), 1);
    }

    #[test]
    fn shared_pid_namespace_is_refused() {
        let mut spec = limited_spec();
        let ns = LinuxNamespaceBuilder::default()
            .typ(LinuxNamespaceType::Pid)
            .path("/proc/1/ns/pid")
            .build()
            .unwrap();
        spec.linux_mut()
            .as_mut()
            .unwrap()
            .set_namespaces(Some(vec![ns]));
        assert_eq!(
            fold_spec(&mut spec, "/p"),
            Err(FoldError::SharedPidNamespace)
        );
        spec.linux_mut()
            .as_mut()
            .unwrap()
            .set_namespaces(Some(vec![]));
        assert_eq!(
            fold_spec(&mut spec, "/p"),
            Err(FoldError::SharedPidNamespace)
        );
    }

    #[test]
    fn privileged_device_rules_are_refused() {
        let mut spec = limited_spec();
        let all = LinuxDeviceCgroupBuilder::default()
            .allow(true)
            .access("rwm")
            .build()
            .unwrap();
        spec.linux_mut()
            .as_mut()
            .unwrap()
            .resources_mut()
            .as_mut()
            .unwrap()
            .set_devices(Some(vec![all]));
        assert!(matches!(
            fold_spec(&mut spec, "/p"),
            Err(FoldError::AllowsAllDevices { .. })
        ));
    }

    #[test]
    fn systemd_and_relative_paths_are_refused() {
        for bad in [
            "kubepods.slice:cri-containerd:abc",
            "relative/pod",
            "/a/../b",
            "/a//b",
            "/",
        ] {
            let mut spec = limited_spec();
            assert!(
                matches!(
                    fold_spec(&mut spec, bad),
                    Err(FoldError::BadPodCgroup { .. })
                ),
                "{bad}"
            );
        }
    }
}
