//! The probe as users write it in a pod spec, with kubelet's defaults and validation.
//!
//! Field names follow the Kubernetes API (`camelCase`): a probe is kubelet's common fields plus
//! the seed's `file: { path, validity }` action. Parsing accepts YAML and JSON; [`ProbeSpec::validate`]
//! applies the defaults and kubelet's rules and yields a [`FileProbe`] ready to run.
//!
//! The `path` is the path **as the container sees it** (inside its root filesystem), not a host
//! path: the seed's example mounts an emptyDir at `/probe-dir` yet probes `/probe-volume/probe`,
//! which only works if the container has something at `/probe-volume`; write the probe path the
//! way a process in the container would open it.

use std::time::Duration;

use serde::{Deserialize, Serialize};

/// Which of kubelet's three probes a spec configures; it decides defaults and some rules.
///
/// ```
/// use fileprobe::ProbeKind;
/// assert_eq!(ProbeKind::Liveness.to_string(), "livenessProbe");
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum ProbeKind {
    /// `readinessProbe`: gates traffic; starts as Failure.
    Readiness,
    /// `livenessProbe`: restarts the container on failure; starts as Success.
    Liveness,
    /// `startupProbe`: holds back the other two until it succeeds; starts as Unknown.
    Startup,
}

impl std::fmt::Display for ProbeKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            ProbeKind::Readiness => "readinessProbe",
            ProbeKind::Liveness => "livenessProbe",
            ProbeKind::Startup => "startupProbe",
        })
    }
}

/// The seed's `file` action: `path` inside the container, fresh for `validity` seconds.
///
/// Both fields default to the seed's "empty" values (`""` and `0`), which validation rejects:
/// an empty file action is not a probe.
///
/// ```
/// let f: fileprobe::FileAction = serde_json::from_str(r#"{"path":"/p","validity":30}"#).unwrap();
/// assert_eq!((f.path.as_str(), f.validity), ("/p", 30));
/// ```
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct FileAction {
    /// Absolute path of the file as the container sees it.
    #[serde(default)]
    pub path: String,
    /// Seconds since the last modification during which the probe succeeds.
    #[serde(default)]
    pub validity: i64,
}

/// A probe exactly as written in a pod spec (`readinessProbe:` and friends), before defaults.
///
/// Missing common fields are `None`; [`ProbeSpec::validate`] fills kubelet's defaults.
/// Unknown fields (e.g. `httpGet`) are ignored so a whole kubelet probe parses; only `file` is
/// run by this crate.
///
/// ```
/// use fileprobe::{ProbeKind, ProbeSpec};
/// let spec = ProbeSpec::from_yaml("file: {path: /probe-dir/probe, validity: 30}\nperiodSeconds: 20\n").unwrap();
/// let probe = spec.validate(ProbeKind::Readiness).unwrap();
/// assert_eq!(probe.period.as_secs(), 20);
/// assert_eq!(probe.failure_threshold, 3);
/// ```
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ProbeSpec {
    /// The lightweight file action; `None` means "no file probe".
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub file: Option<FileAction>,
    /// Seconds after the container starts before the first run (default 0).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub initial_delay_seconds: Option<i64>,
    /// Seconds between runs (default 10, minimum 1).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub period_seconds: Option<i64>,
    /// Seconds after which a run counts as failed (default 1, minimum 1).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timeout_seconds: Option<i64>,
    /// Consecutive successes to flip to Success (default 1; must be 1 for liveness/startup).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub success_threshold: Option<i64>,
    /// Consecutive failures to flip to Failure (default 3, minimum 1).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub failure_threshold: Option<i64>,
}

/// Why a probe spec failed to parse or validate; names the field (as in the pod spec) and rule.
///
/// ```
/// use fileprobe::{ConfigError, ProbeKind, ProbeSpec};
/// let err = ProbeSpec::from_json(r#"{"file":{"path":"rel","validity":5}}"#).unwrap()
///     .validate(ProbeKind::Liveness).unwrap_err();
/// assert!(matches!(err, ConfigError::Invalid { field: "file.path", .. }));
/// ```
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The text is not valid YAML for a probe.
    #[error("probe spec is not valid YAML: {0}")]
    Yaml(#[from] serde_yaml_ng::Error),
    /// The text is not valid JSON for a probe.
    #[error("probe spec is not valid JSON: {0}")]
    Json(#[from] serde_json::Error),
    /// The spec has no `file` action, so there is no file probe to run.
    #[error(
        "{kind}.file: no file action (the seed's default, empty, means no file probe); add `file: {{path: /abs/path, validity: N}}`"
    )]
    NoFileAction {
        /// Which probe.
        kind: ProbeKind,
    },
    /// A field breaks one of kubelet's rules.
    #[error("{kind}.{field}: invalid value {value}: {rule}")]
    Invalid {
        /// Which probe.
        kind: ProbeKind,
        /// The field's path in the pod spec, e.g. `file.validity`.
        field: &'static str,
        /// The bad value, as written.
        value: String,
        /// The rule it breaks, phrased as what to do.
        rule: &'static str,
    },
}

/// A validated file probe with kubelet's defaults applied: what the checker and state machine run.
///
/// ```
/// use fileprobe::{ProbeKind, ProbeSpec};
/// let p = ProbeSpec::from_yaml("file: {path: /x, validity: 10}").unwrap().validate(ProbeKind::Liveness).unwrap();
/// assert_eq!((p.period.as_secs(), p.timeout.as_secs(), p.success_threshold), (10, 1, 1));
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FileProbe {
    /// Which probe this is.
    pub kind: ProbeKind,
    /// Absolute path inside the container's root.
    pub path: String,
    /// Freshness window.
    pub validity: Duration,
    /// Delay from container start to the first run.
    pub initial_delay: Duration,
    /// Time between runs.
    pub period: Duration,
    /// A run taking longer than this is a failure.
    pub timeout: Duration,
    /// Consecutive successes needed to report Success.
    pub success_threshold: u32,
    /// Consecutive failures needed to report Failure.
    pub failure_threshold: u32,
}

impl ProbeSpec {
    /// Parses a probe from YAML (a pod spec's `readinessProbe:` value).
    ///
    /// ```
    /// let s = fileprobe::ProbeSpec::from_yaml("file:\n  path: /a\n  validity: 3\n").unwrap();
    /// assert_eq!(s.file.unwrap().validity, 3);
    /// ```
    pub fn from_yaml(text: &str) -> Result<Self, ConfigError> {
        Ok(serde_yaml_ng::from_str(text)?)
    }

    /// Parses a probe from JSON.
    ///
    /// ```
    /// let s = fileprobe::ProbeSpec::from_json(r#"{"periodSeconds":5}"#).unwrap();
    /// assert_eq!(s.period_seconds, Some(5));
    /// ```
    pub fn from_json(text: &str) -> Result<Self, ConfigError> {
        Ok(serde_json::from_str(text)?)
    }

    /// Applies kubelet's defaults and rules for a probe of `kind`.
    ///
    /// ```
    /// use fileprobe::{ProbeKind, ProbeSpec};
    /// let s = ProbeSpec::from_yaml("file: {path: /x, validity: 10}\nsuccessThreshold: 2").unwrap();
    /// assert!(s.validate(ProbeKind::Readiness).is_ok());
    /// assert!(s.validate(ProbeKind::Liveness).is_err());
    /// ```
    pub fn validate(&self, kind: ProbeKind) -> Result<FileProbe, ConfigError> {
        let bad = |field: &'static str, value: String, rule: &'static str| ConfigError::Invalid {
            kind,
            field,
            value,
            rule,
        };
        let file = self
            .file
            .as_ref()
            .ok_or(ConfigError::NoFileAction { kind })?;
        validate_file(file, bad)?;
        let initial = self.initial_delay_seconds.unwrap_or(0);
        if initial < 0 {
            return Err(bad(
                "initialDelaySeconds",
                initial.to_string(),
                "must be greater than or equal to 0",
            ));
        }
        let at_least_one =
            |field: &'static str, v: Option<i64>, default: i64| -> Result<i64, ConfigError> {
                match v {
                    // Kubernetes defaults a zero to the default for these fields.
                    None | Some(0) => Ok(default),
                    Some(n) if n < 1 => Err(bad(
                        field,
                        n.to_string(),
                        "must be greater than or equal to 1",
                    )),
                    Some(n) => Ok(n),
                }
            };
        let period = at_least_one("periodSeconds", self.period_seconds, 10)?;
        let timeout = at_least_one("timeoutSeconds", self.timeout_seconds, 1)?;
        let success = at_least_one("successThreshold", self.success_threshold, 1)?;
        let failure = at_least_one("failureThreshold", self.failure_threshold, 3)?;
        if success != 1 && kind != ProbeKind::Readiness {
            return Err(bad(
                "successThreshold",
                success.to_string(),
                "must be 1 for liveness and startup probes",
            ));
        }
        let secs = |n: i64| Duration::from_secs(n.unsigned_abs());
        let count = |field: &'static str, n: i64| {
            u32::try_from(n).map_err(|_| bad(field, n.to_string(), "must fit in 32 bits"))
        };
        Ok(FileProbe {
            kind,
            path: file.path.clone(),
            validity: secs(file.validity),
            initial_delay: secs(initial),
            period: secs(period),
            timeout: secs(timeout),
            success_threshold: count("successThreshold", success)?,
            failure_threshold: count("failureThreshold", failure)?,
        })
    }
}

/// The rules of the `file` action: a non-empty absolute path without NUL, a validity of at
/// least a second. `bad` builds the error for (field, value, rule).
fn validate_file(
    file: &FileAction,
    bad: impl Fn(&'static str, String, &'static str) -> ConfigError,
) -> Result<(), ConfigError> {
    if file.path.is_empty() {
        return Err(bad(
            "file.path",
            "\"\"".into(),
            "must not be empty; give the absolute path inside the container",
        ));
    }
    if file.path.contains('\0') {
        return Err(bad(
            "file.path",
            format!("{:?}", file.path),
            "must not contain a NUL byte",
        ));
    }
    if !file.path.starts_with('/') {
        return Err(bad(
            "file.path",
            format!("{:?}", file.path),
            "must be an absolute path (start with `/`) as the container sees it",
        ));
    }
    if file.validity < 1 {
        return Err(bad(
            "file.validity",
            file.validity.to_string(),
            "must be at least 1 (seconds)",
        ));
    }
    Ok(())
}
