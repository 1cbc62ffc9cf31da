//! The pod annotation [`ANNOTATION`] (`shimless.io/probes`): file probes the daemon runs itself,
//! per container name, with kubelet's fields, defaults and validation.
//!
//! Its value is JSON: an object from container name (as in the pod spec) to that container's
//! `livenessProbe`, `readinessProbe` and `startupProbe`, each a probe as a pod spec writes it
//! with the seed's `file: {path, validity}` action ([`fileprobe::ProbeSpec`]), plus kubelet's
//! probe-level `terminationGracePeriodSeconds` (how long a container killed by its liveness or
//! startup probe has between `SIGTERM` and `SIGKILL`; [`DEFAULT_GRACE`] when absent, the pod
//! default kubelet would use, since the runtime never sees the pod's own setting). containerd
//! passes the annotation into every spec of the pod when the runtime's `pod_annotations` lists
//! it (e.g. `["shimless.io/*"]`).
//!
//! ```
//! use task_service::probes::PodProbes;
//! let pod = PodProbes::parse(r#"{"web": {"livenessProbe":
//!     {"file": {"path": "/probe-dir/probe", "validity": 10}, "periodSeconds": 2}}}"#)?;
//! let web = pod.container("web").unwrap();
//! assert_eq!(web.probes()[0].probe.period.as_secs(), 2);
//! assert_eq!(web.probes()[0].grace.as_secs(), 30);
//! # Ok::<(), task_service::probes::ProbesError>(())
//! ```

use fileprobe::{ConfigError, FileProbe, ProbeKind, ProbeSpec};
use serde::Deserialize;
use std::collections::BTreeMap;
use std::time::Duration;

/// The pod annotation naming the probes the daemon runs.
pub const ANNOTATION: &str = "shimless.io/probes";

/// containerd's CRI annotation with a container's name in its pod.
pub const CONTAINER_NAME: &str = "io.kubernetes.cri.container-name";

/// The grace between `SIGTERM` and `SIGKILL` when a probe does not set
/// `terminationGracePeriodSeconds`: the Kubernetes default of a pod's.
pub const DEFAULT_GRACE: Duration = Duration::from_secs(30);

/// The annotation could not be used; the message names the container and the field.
///
/// ```
/// let e = task_service::probes::PodProbes::parse(r#"{"web": {"livenessProbe":
///     {"file": {"path": "/p", "validity": 0}}}}"#).unwrap_err();
/// assert!(e.to_string().contains("livenessProbe.file.validity"), "{e}");
/// ```
#[derive(Debug, thiserror::Error)]
pub enum ProbesError {
    /// Not JSON of the expected shape (an unknown probe kind is named here).
    #[error(
        "pod annotation {ANNOTATION} is not usable: {0}; write a JSON object from container \
         name to {{\"livenessProbe\"|\"readinessProbe\"|\"startupProbe\": {{\"file\": \
         {{\"path\": ..., \"validity\": N}}, ...}}}}"
    )]
    Json(#[from] serde_json::Error),
    /// A probe breaks one of kubelet's rules.
    #[error("pod annotation {ANNOTATION}, container {container:?}: {source}")]
    Probe {
        /// The container name in the annotation.
        container: String,
        /// The field and the rule.
        source: ConfigError,
    },
    /// `terminationGracePeriodSeconds` is not a positive number, or is set on a readiness probe.
    #[error(
        "pod annotation {ANNOTATION}, container {container:?}: {kind}.terminationGracePeriodSeconds: \
         invalid value {value}: {rule}"
    )]
    Grace {
        /// The container name in the annotation.
        container: String,
        /// Which probe.
        kind: ProbeKind,
        /// The value as written.
        value: i64,
        /// What to do.
        rule: &'static str,
    },
}

/// One probe as the annotation writes it: kubelet's fields plus the probe-level grace.
#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct Written {
    #[serde(flatten)]
    spec: ProbeSpec,
    #[serde(default)]
    termination_grace_period_seconds: Option<i64>,
}

/// One container's entry in the annotation; unknown keys (a misspelt probe kind) are refused.
#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct WrittenContainer {
    #[serde(default)]
    liveness_probe: Option<Written>,
    #[serde(default)]
    readiness_probe: Option<Written>,
    #[serde(default)]
    startup_probe: Option<Written>,
}

/// A validated probe and the grace of the kill it may cause.
///
/// ```
/// # let pod = task_service::probes::PodProbes::parse(r#"{"c": {"startupProbe":
/// #     {"file": {"path": "/p", "validity": 5}, "terminationGracePeriodSeconds": 3}}}"#).unwrap();
/// let p = &pod.container("c").unwrap().probes()[0];
/// assert_eq!((p.probe.kind, p.grace.as_secs()), (fileprobe::ProbeKind::Startup, 3));
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DaemonProbe {
    /// The probe with kubelet's defaults applied.
    pub probe: FileProbe,
    /// Time between `SIGTERM` and `SIGKILL` when this probe kills (liveness, startup).
    pub grace: Duration,
}

/// The probes of one container, at most one per kind.
///
/// ```
/// let pod = task_service::probes::PodProbes::parse(r#"{"c": {}}"#).unwrap();
/// assert!(pod.container("c").unwrap().probes().is_empty());
/// ```
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ContainerProbes {
    probes: Vec<DaemonProbe>,
}

impl ContainerProbes {
    /// The probes, startup first, then liveness, then readiness.
    ///
    /// ```
    /// assert!(task_service::probes::ContainerProbes::default().probes().is_empty());
    /// ```
    pub fn probes(&self) -> &[DaemonProbe] {
        &self.probes
    }

    /// The probe of `kind`, if configured.
    ///
    /// ```
    /// let none = task_service::probes::ContainerProbes::default();
    /// assert!(none.get(fileprobe::ProbeKind::Readiness).is_none());
    /// ```
    pub fn get(&self, kind: ProbeKind) -> Option<&DaemonProbe> {
        self.probes.iter().find(|p| p.probe.kind == kind)
    }
}

/// Every container's probes from one pod's annotation, validated.
///
/// ```
/// let pod = task_service::probes::PodProbes::parse("{}").unwrap();
/// assert!(pod.container("web").is_none());
/// ```
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PodProbes {
    containers: BTreeMap<String, ContainerProbes>,
}

impl PodProbes {
    /// Parses and validates the annotation's value (every container's probes, so a sandbox's
    /// `Create` refuses a bad annotation before any container of the pod is made).
    ///
    /// ```
    /// let e = task_service::probes::PodProbes::parse(r#"{"c": {"livenessProbe":
    ///     {"file": {"path": "/p", "validity": 5}, "successThreshold": 2}}}"#).unwrap_err();
    /// assert!(e.to_string().contains("livenessProbe.successThreshold"), "{e}");
    /// ```
    pub fn parse(text: &str) -> Result<PodProbes, ProbesError> {
        let written: BTreeMap<String, WrittenContainer> = serde_json::from_str(text)?;
        let mut containers = BTreeMap::new();
        for (name, c) in written {
            let mut probes = Vec::new();
            for (kind, w) in [
                (ProbeKind::Startup, c.startup_probe),
                (ProbeKind::Liveness, c.liveness_probe),
                (ProbeKind::Readiness, c.readiness_probe),
            ] {
                if let Some(w) = w {
                    probes.push(validate(&name, kind, &w)?);
                }
            }
            containers.insert(name, ContainerProbes { probes });
        }
        Ok(PodProbes { containers })
    }

    /// Reads the annotation from a spec's annotations; `None` when absent.
    ///
    /// ```
    /// let a = std::collections::HashMap::new();
    /// assert!(task_service::probes::PodProbes::from_annotations(&a).unwrap().is_none());
    /// ```
    pub fn from_annotations(
        annotations: &std::collections::HashMap<String, String>,
    ) -> Result<Option<PodProbes>, ProbesError> {
        annotations
            .get(ANNOTATION)
            .map(|text| PodProbes::parse(text))
            .transpose()
    }

    /// The probes of the container named `name`, if the annotation lists it.
    ///
    /// ```
    /// let pod = task_service::probes::PodProbes::parse(r#"{"web": {}}"#).unwrap();
    /// assert!(pod.container("web").is_some());
    /// ```
    pub fn container(&self, name: &str) -> Option<&ContainerProbes> {
        self.containers.get(name)
    }
}

fn validate(container: &str, kind: ProbeKind, w: &Written) -> Result<DaemonProbe, ProbesError> {
    let probe = w.spec.validate(kind).map_err(|source| ProbesError::Probe {
        container: container.to_owned(),
        source,
    })?;
    let bad = |value: i64, rule: &'static str| ProbesError::Grace {
        container: container.to_owned(),
        kind,
        value,
        rule,
    };
    let grace = match w.termination_grace_period_seconds {
        None => DEFAULT_GRACE,
        Some(n) if kind == ProbeKind::Readiness => {
            return Err(bad(
                n,
                "must not be set on a readiness probe (it never kills)",
            ));
        }
        Some(n) if n < 1 => return Err(bad(n, "must be greater than 0")),
        Some(n) => Duration::from_secs(n.unsigned_abs()),
    };
    Ok(DaemonProbe { probe, grace })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn err(text: &str) -> String {
        PodProbes::parse(text).unwrap_err().to_string()
    }

    #[test]
    fn kubelets_defaults_fill_what_is_not_written() {
        let pod = PodProbes::parse(
            r#"{"web": {"readinessProbe": {"file": {"path": "/probe-dir/probe", "validity": 30}},
                        "livenessProbe": {"file": {"path": "/probe-dir/probe", "validity": 10},
                                          "terminationGracePeriodSeconds": 2}}}"#,
        )
        .unwrap();
        let web = pod.container("web").unwrap();
        let kinds: Vec<_> = web.probes().iter().map(|p| p.probe.kind).collect();
        assert_eq!(kinds, [ProbeKind::Liveness, ProbeKind::Readiness]);
        let r = &web.get(ProbeKind::Readiness).unwrap().probe;
        assert_eq!(
            (
                r.period,
                r.timeout,
                r.failure_threshold,
                r.success_threshold
            ),
            (Duration::from_secs(10), Duration::from_secs(1), 3, 1)
        );
        assert_eq!(r.validity, Duration::from_secs(30));
        assert_eq!(
            web.get(ProbeKind::Liveness).unwrap().grace,
            Duration::from_secs(2)
        );
        assert_eq!(web.get(ProbeKind::Readiness).unwrap().grace, DEFAULT_GRACE);
    }

    #[test]
    fn a_bad_annotation_names_the_container_and_the_field() {
        let cases = [
            (
                r#"{"web": {"livenessProbe": {"file": {"path": "rel", "validity": 5}}}}"#,
                "livenessProbe.file.path",
            ),
            (
                r#"{"web": {"readinessProbe": {"file": {"path": "/p", "validity": 5}, "periodSeconds": -1}}}"#,
                "readinessProbe.periodSeconds",
            ),
            (
                r#"{"web": {"startupProbe": {"file": {"path": "/p", "validity": 5}, "failureThreshold": -2}}}"#,
                "startupProbe.failureThreshold",
            ),
            (
                r#"{"web": {"livenessProbe": {"periodSeconds": 5}}}"#,
                "livenessProbe.file",
            ),
            (
                r#"{"web": {"livenessProbe": {"file": {"path": "/p", "validity": 5}, "terminationGracePeriodSeconds": 0}}}"#,
                "livenessProbe.terminationGracePeriodSeconds",
            ),
            (
                r#"{"web": {"readinessProbe": {"file": {"path": "/p", "validity": 5}, "terminationGracePeriodSeconds": 3}}}"#,
                "readinessProbe.terminationGracePeriodSeconds",
            ),
            (r#"{"web": {"livenesProbe": {}}}"#, "livenesProbe"),
            (
                r#"{"web": {"livenessProbe": {"file": {"path": "/p", "validity": "x"}}}}"#,
                ANNOTATION,
            ),
            ("[1]", ANNOTATION),
        ];
        for (text, field) in cases {
            let e = err(text);
            assert!(e.contains(field), "{text}: {e}");
            assert!(e.contains(ANNOTATION), "{text}: {e}");
        }
        assert!(err(cases[0].0).contains("\"web\""));
    }

    #[test]
    fn absent_annotation_is_none() {
        let mut a = std::collections::HashMap::new();
        assert!(PodProbes::from_annotations(&a).unwrap().is_none());
        a.insert(ANNOTATION.to_string(), "{}".to_string());
        assert_eq!(
            PodProbes::from_annotations(&a).unwrap(),
            Some(PodProbes::default())
        );
        a.insert(ANNOTATION.to_string(), "nope".to_string());
        assert!(PodProbes::from_annotations(&a).is_err());
    }
}
