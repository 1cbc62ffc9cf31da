//! A runtime registered for CRI, written into either config version.

use std::fmt::Write as _;
use std::path::PathBuf;

use super::Version;
use super::toml::{TomlValue, toml_key, toml_string};

/// A runtime registered for CRI, as the seed writes `unified`:
///
/// ```
/// use integration::containerd::Runtime;
/// let unified = Runtime::new("unified", "io.containerd.runc.v2")
///     .path("/usr/local/bin/containerd-shim-shimless-v2")
///     .sandbox_mode("podsandbox")
///     .option("SystemdCgroup", false);
/// let toml = unified.to_toml();
/// assert!(toml.contains("[plugins.\"io.containerd.grpc.v1.cri\".containerd.runtimes.\"unified\"]"));
/// assert!(toml.contains("runtime_path = \"/usr/local/bin/containerd-shim-shimless-v2\""));
/// assert!(toml.contains("SystemdCgroup = false"));
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Runtime {
    pub(super) name: String,
    runtime_type: String,
    runtime_path: Option<PathBuf>,
    sandbox_mode: Option<String>,
    options: Vec<(String, TomlValue)>,
    pod_annotations: Vec<String>,
}

impl Runtime {
    /// A runtime CRI knows as `name` (the RuntimeClass handler) of type `runtime_type` (e.g.
    /// `io.containerd.runc.v2`).
    pub fn new(name: impl Into<String>, runtime_type: impl Into<String>) -> Self {
        Runtime {
            name: name.into(),
            runtime_type: runtime_type.into(),
            runtime_path: None,
            sandbox_mode: None,
            options: Vec::new(),
            pod_annotations: Vec::new(),
        }
    }

    /// The shim binary to run instead of the one `runtime_type` names (`runtime_path`).
    pub fn path(mut self, path: impl Into<PathBuf>) -> Self {
        self.runtime_path = Some(path.into());
        self
    }

    /// CRI's `sandbox_mode` (`podsandbox` runs a pause container per pod).
    pub fn sandbox_mode(mut self, mode: impl Into<String>) -> Self {
        self.sandbox_mode = Some(mode.into());
        self
    }

    /// An entry of the runtime's `options` table (`BinaryName`, `SystemdCgroup`, `Root`, ...).
    pub fn option(mut self, key: impl Into<String>, value: impl Into<TomlValue>) -> Self {
        self.options.push((key.into(), value.into()));
        self
    }

    /// Pod annotations CRI passes into this runtime's OCI specs (`pod_annotations`, globs such
    /// as `shimless.io/*`).
    ///
    /// ```
    /// use integration::containerd::Runtime;
    /// let toml = Runtime::new("unified", "io.containerd.runc.v2").pod_annotations(["shimless.io/*"]).to_toml();
    /// assert!(toml.contains("pod_annotations = [\"shimless.io/*\"]"), "{toml}");
    /// ```
    pub fn pod_annotations<S: Into<String>>(mut self, globs: impl IntoIterator<Item = S>) -> Self {
        self.pod_annotations
            .extend(globs.into_iter().map(Into::into));
        self
    }

    /// The runtime's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The runtime's tables as TOML source for containerd 1.7 (config version 2).
    pub fn to_toml(&self) -> String {
        self.to_toml_for(Version::V1_7)
    }

    /// The runtime's tables as TOML source for `version`'s config: version 3 keeps runtimes
    /// under `io.containerd.cri.v1.runtime` and calls `sandbox_mode` `sandboxer`.
    ///
    /// ```
    /// use integration::containerd::{Runtime, Version};
    /// let toml = Runtime::new("unified", "io.containerd.runc.v2")
    ///     .sandbox_mode("podsandbox")
    ///     .to_toml_for(Version::V2_1);
    /// assert!(toml.contains("[plugins.\"io.containerd.cri.v1.runtime\".containerd.runtimes.\"unified\"]"));
    /// assert!(toml.contains("sandboxer = \"podsandbox\""));
    /// ```
    pub fn to_toml_for(&self, version: Version) -> String {
        let (plugin, mode_key) = match version.config_version() {
            2 => ("io.containerd.grpc.v1.cri", "sandbox_mode"),
            _ => ("io.containerd.cri.v1.runtime", "sandboxer"),
        };
        let table = format!(
            "plugins.\"{plugin}\".containerd.runtimes.{}",
            toml_string(&self.name)
        );
        let mut out = format!(
            "[{table}]\n  runtime_type = {}\n",
            toml_string(&self.runtime_type)
        );
        if let Some(path) = &self.runtime_path {
            let _ = writeln!(
                out,
                "  runtime_path = {}",
                toml_string(&path.to_string_lossy())
            );
        }
        if let Some(mode) = &self.sandbox_mode {
            let _ = writeln!(out, "  {mode_key} = {}", toml_string(mode));
        }
        if !self.pod_annotations.is_empty() {
            let globs: Vec<String> = self
                .pod_annotations
                .iter()
                .map(|g| toml_string(g))
                .collect();
            let _ = writeln!(out, "  pod_annotations = [{}]", globs.join(", "));
        }
        if !self.options.is_empty() {
            let _ = writeln!(out, "[{table}.options]");
            for (key, value) in &self.options {
                let _ = writeln!(out, "  {} = {}", toml_key(key), value.to_toml());
            }
        }
        out
    }
}
