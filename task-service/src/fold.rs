//! Folding a pod into its pod cgroup: whether a pod is folded, and what a container's OCI spec
//! says about its pod and its resources.
//!
//! A pod is *folded* when its sandbox and its containers all run in the pod's cgroup instead of
//! one cgroup each (see `cgroupfold`). The decision is made once per pod, at the sandbox's
//! `Create`, from the pod annotation [`ANNOTATION`] (`folded` or `unfolded`) or else from the
//! configuration's [`FoldPolicy`] (default [`FoldPolicy::Never`]). Everything here is pure: the
//! daemon reads the spec and applies the answers (`daemon::fold`).
//!
//! ```
//! use std::collections::HashMap;
//! use task_service::fold::{Choice, FoldPolicy, choose};
//! let mut annotations = HashMap::new();
//! annotations.insert("shimless.io/cgroup".to_string(), "folded".to_string());
//! assert_eq!(choose(&annotations, FoldPolicy::Never)?, Choice::Fold);
//! assert_eq!(choose(&HashMap::new(), FoldPolicy::Never)?, Choice::Keep);
//! # Ok::<(), task_service::fold::FoldRequestError>(())
//! ```

use cgroupfold::math::{Bytes, MilliCpu, Resources};
use oci_spec::runtime::Spec;
use serde::{Deserialize, Serialize};
use std::collections::HashMap;

/// The pod annotation that asks for (or against) folding; containerd passes it in the spec
/// when the runtime's `pod_annotations` lists it (e.g. `["shimless.io/*"]`).
pub const ANNOTATION: &str = "shimless.io/cgroup";

/// containerd's CRI annotation saying whether a spec is a pod's `sandbox` or a `container`.
pub const CONTAINER_TYPE: &str = "io.kubernetes.cri.container-type";

/// containerd's CRI annotation naming a container's sandbox.
pub const SANDBOX_ID: &str = "io.kubernetes.cri.sandbox-id";

/// Which pods the daemon folds when their sandbox carries no [`ANNOTATION`] (config key
/// `fold`).
///
/// ```
/// use task_service::fold::FoldPolicy;
/// assert_eq!(FoldPolicy::default(), FoldPolicy::Never);
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum FoldPolicy {
    /// No pod is folded unless its annotation says `folded` (the default).
    #[default]
    Never,
    /// A pod is folded; each container joins the pod cgroup only while the pod loses nothing
    /// by it (`cgroupfold::layout::losses`), else it keeps the cgroup containerd gave it.
    WhenLossless,
    /// Every pod is folded (unless its annotation says `unfolded`).
    Always,
}

/// What to do with a pod, decided at its sandbox's `Create`.
///
/// ```
/// assert_ne!(task_service::fold::Choice::Fold, task_service::fold::Choice::Keep);
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Choice {
    /// Leave every spec of the pod as containerd wrote it.
    Keep,
    /// Fold every container of the pod into the pod cgroup.
    Fold,
    /// Fold each container only while the pod loses nothing by it.
    FoldWhenLossless,
}

/// A pod annotation shimless cannot act on.
///
/// ```
/// use std::collections::HashMap;
/// use task_service::fold::{FoldPolicy, choose};
/// let bad = HashMap::from([("shimless.io/cgroup".to_string(), "yes".to_string())]);
/// let err = choose(&bad, FoldPolicy::Never).unwrap_err();
/// assert!(err.to_string().contains("shimless.io/cgroup"), "{err}");
/// ```
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FoldRequestError {
    /// The annotation has a value other than `folded` or `unfolded`.
    #[error(
        "pod annotation {ANNOTATION} = {value:?} is not understood: the allowed values are \
         \"folded\" and \"unfolded\" (or leave it out to follow the daemon's `fold` setting)"
    )]
    BadAnnotation {
        /// The refused value.
        value: String,
    },
    /// A folded pod's sandbox has no cgroup parent to fold into.
    #[error(
        "pod is to be folded, but its sandbox's linux.cgroupsPath {path:?} has no pod cgroup \
         above it: set the pod's cgroup_parent (kubelet's /kubepods/.../pod<uid>), or annotate \
         the pod {ANNOTATION}=unfolded"
    )]
    NoPodCgroup {
        /// The sandbox's cgroupsPath (empty if none).
        path: String,
    },
}

/// Decides what to do with a pod from its sandbox spec's annotations and the daemon's policy:
/// the annotation wins; without it, the policy.
pub fn choose(
    annotations: &HashMap<String, String>,
    policy: FoldPolicy,
) -> Result<Choice, FoldRequestError> {
    match annotations.get(ANNOTATION).map(String::as_str) {
        Some("folded") => Ok(Choice::Fold),
        Some("unfolded") => Ok(Choice::Keep),
        Some(other) => Err(FoldRequestError::BadAnnotation {
            value: other.to_owned(),
        }),
        None => Ok(match policy {
            FoldPolicy::Never => Choice::Keep,
            FoldPolicy::WhenLossless => Choice::FoldWhenLossless,
            FoldPolicy::Always => Choice::Fold,
        }),
    }
}

/// What a spec is to its pod, from containerd's CRI annotations.
///
/// ```
/// use task_service::fold::Role;
/// let spec = oci_spec::runtime::Spec::default();
/// assert_eq!(Role::of(&spec), Role::NotCri);
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Role {
    /// A pod's sandbox (pause) container.
    Sandbox,
    /// An app container of the pod whose sandbox has this id.
    Container {
        /// The sandbox's container id.
        sandbox_id: String,
    },
    /// Not made by CRI (e.g. `ctr run`): never folded.
    NotCri,
}

impl Role {
    /// Reads the role from the spec's annotations.
    pub fn of(spec: &Spec) -> Role {
        let Some(a) = spec.annotations() else {
            return Role::NotCri;
        };
        match (a.get(CONTAINER_TYPE).map(String::as_str), a.get(SANDBOX_ID)) {
            (Some("sandbox"), _) => Role::Sandbox,
            (Some("container"), Some(sandbox)) => Role::Container {
                sandbox_id: sandbox.clone(),
            },
            _ => Role::NotCri,
        }
    }
}

/// The pod cgroup of a sandbox: the parent of its `linux.cgroupsPath` (containerd makes it
/// `<cgroup_parent>/<sandbox id>` with the cgroupfs driver).
///
/// ```
/// use task_service::fold::pod_cgroup_of;
/// assert_eq!(pod_cgroup_of("/kubepods/besteffort/podu/abc")?, "/kubepods/besteffort/podu");
/// assert!(pod_cgroup_of("/abc").is_err());
/// # Ok::<(), task_service::fold::FoldRequestError>(())
/// ```
pub fn pod_cgroup_of(sandbox_path: &str) -> Result<String, FoldRequestError> {
    let refuse = || FoldRequestError::NoPodCgroup {
        path: sandbox_path.to_owned(),
    };
    if !sandbox_path.starts_with('/') || sandbox_path.contains(':') {
        return Err(refuse());
    }
    match sandbox_path.trim_end_matches('/').rsplit_once('/') {
        Some((parent, _)) if !parent.is_empty() => Ok(parent.to_owned()),
        _ => Err(refuse()),
    }
}

/// A container's requests and limits as the OCI spec carries them (what kubelet asked, as
/// containerd wrote it): saved in the daemon's records so that the pod's values can be
/// computed again after a restart.
///
/// ```
/// use task_service::fold::SpecResources;
/// let r = SpecResources { cpu_shares: Some(256), cpu_quota: Some(50_000), cpu_period: Some(100_000), memory_limit: Some(64 << 20) };
/// let k = r.kubelet();
/// assert_eq!(k.cpu_request.map(|m| m.0), Some(250));
/// assert_eq!(k.cpu_limit.map(|m| m.0), Some(500));
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct SpecResources {
    /// `linux.resources.cpu.shares`.
    pub cpu_shares: Option<u64>,
    /// `linux.resources.cpu.quota` (µs per period).
    pub cpu_quota: Option<i64>,
    /// `linux.resources.cpu.period` (µs).
    pub cpu_period: Option<u64>,
    /// `linux.resources.memory.limit` (bytes).
    pub memory_limit: Option<i64>,
}

impl SpecResources {
    /// Reads them from a spec.
    ///
    /// ```
    /// let r = task_service::fold::SpecResources::of(&oci_spec::runtime::Spec::default());
    /// assert_eq!(r.memory_limit, None);
    /// ```
    pub fn of(spec: &Spec) -> SpecResources {
        let res = spec.linux().as_ref().and_then(|l| l.resources().as_ref());
        let cpu = res.and_then(|r| r.cpu().as_ref());
        SpecResources {
            cpu_shares: cpu.and_then(|c| c.shares()),
            cpu_quota: cpu.and_then(|c| c.quota()),
            cpu_period: cpu.and_then(|c| c.period()),
            memory_limit: res
                .and_then(|r| r.memory().as_ref())
                .and_then(|m| m.limit()),
        }
    }

    /// The requests and limits kubelet turned into these values: shares back to a CPU request
    /// (kubelet's `milli×1024/1000` rounded down, so rounded up here; 2 shares or fewer is no
    /// request), quota over period back to a CPU limit, the memory limit as is. The memory
    /// request is not in a spec: it defaults from the limit, as the API server does.
    pub fn kubelet(&self) -> Resources {
        let cpu_request = self
            .cpu_shares
            .filter(|&s| s > cgroupfold::math::MIN_SHARES)
            .map(|s| MilliCpu((s.saturating_mul(1000)).div_ceil(1024)));
        let period = self
            .cpu_period
            .filter(|&p| p > 0)
            .unwrap_or(cgroupfold::math::CFS_PERIOD_US);
        let cpu_limit = self
            .cpu_quota
            .and_then(|q| u64::try_from(q).ok())
            .filter(|&q| q > 0)
            .map(|q| MilliCpu(q.saturating_mul(1000) / period));
        let memory_limit = self
            .memory_limit
            .and_then(|m| u64::try_from(m).ok())
            .filter(|&m| m > 0)
            .map(Bytes);
        Resources {
            cpu_request,
            cpu_limit,
            memory_request: None,
            memory_limit,
        }
        .defaulted()
    }
}

/// What a container's record says about its pod's folding: set for every container of a pod
/// whose sandbox chose to fold (the sandbox's own record too).
///
/// ```
/// let f = task_service::fold::Folding {
///     sandbox_id: "s".into(), pod_cgroup: "/kubepods/podu".into(),
///     choice: task_service::fold::Choice::Fold, joined: true, resources: None,
/// };
/// assert!(f.joined);
/// ```
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Folding {
    /// The pod's sandbox container id.
    pub sandbox_id: String,
    /// The pod cgroup (cgroupfs path, absolute).
    pub pod_cgroup: String,
    /// What the sandbox chose.
    pub choice: Choice,
    /// Whether this container runs in the pod cgroup (with `when-lossless` a container that
    /// would cost the pod a limit keeps its own cgroup).
    pub joined: bool,
    /// The container's own requests and limits (`None` for the sandbox).
    pub resources: Option<SpecResources>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_annotation_wins_over_the_policy() {
        let a = |v: &str| HashMap::from([(ANNOTATION.to_string(), v.to_string())]);
        assert_eq!(choose(&a("unfolded"), FoldPolicy::Always), Ok(Choice::Keep));
        assert_eq!(choose(&a("folded"), FoldPolicy::Never), Ok(Choice::Fold));
        assert_eq!(
            choose(&HashMap::new(), FoldPolicy::WhenLossless),
            Ok(Choice::FoldWhenLossless)
        );
        assert_eq!(
            choose(&a("Folded"), FoldPolicy::Always),
            Err(FoldRequestError::BadAnnotation {
                value: "Folded".into()
            })
        );
    }

    #[test]
    fn the_config_key_takes_three_values_and_names_a_wrong_one() {
        use crate::config::Config;
        assert_eq!(Config::default().fold, FoldPolicy::Never);
        for (text, want) in [
            ("never", FoldPolicy::Never),
            ("when-lossless", FoldPolicy::WhenLossless),
            ("always", FoldPolicy::Always),
        ] {
            let config = Config::from_toml(&format!("fold = \"{text}\"")).unwrap();
            assert_eq!(config.fold, want);
        }
        let err = Config::from_toml("fold = \"sometimes\"")
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("sometimes") && err.contains("when-lossless"),
            "{err}"
        );
    }

    #[test]
    fn kubelet_values_round_trip_through_the_spec() {
        for milli in [1u64, 100, 250, 333, 1000, 1500, 64_000] {
            let shares = cgroupfold::math::cpu_shares(Some(MilliCpu(milli)));
            let r = SpecResources {
                cpu_shares: Some(shares),
                ..Default::default()
            };
            let back = r.kubelet().cpu_request;
            if shares <= cgroupfold::math::MIN_SHARES {
                assert_eq!(back, None, "{milli}m");
            } else {
                assert_eq!(back, Some(MilliCpu(milli)), "{milli}m");
            }
        }
        let r = SpecResources {
            cpu_quota: Some(150_000),
            cpu_period: Some(100_000),
            memory_limit: Some(1 << 30),
            ..Default::default()
        };
        let k = r.kubelet();
        assert_eq!(k.cpu_limit, Some(MilliCpu(1500)));
        assert_eq!(
            k.cpu_request,
            Some(MilliCpu(1500)),
            "defaulted from the limit"
        );
        assert_eq!(k.memory_limit, Some(Bytes(1 << 30)));
        assert_eq!(k.memory_request, Some(Bytes(1 << 30)));
        assert_eq!(SpecResources::default().kubelet(), Resources::default());
    }

    #[test]
    fn pod_cgroup_is_the_sandbox_cgroups_parent() {
        assert_eq!(pod_cgroup_of("/kubepods/podu/s").unwrap(), "/kubepods/podu");
        for bad in [
            "",
            "/s",
            "kubepods/podu/s",
            "kubepods.slice:cri-containerd:s",
        ] {
            assert!(pod_cgroup_of(bad).is_err(), "{bad}");
        }
    }
}
