//! What the private containerd is started with, and the config file (version 2 for
//! containerd 1.7, version 3 for 2.x) written from it.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use super::toml::toml_string;
use super::{Runtime, Version};

/// What the private containerd is started with.
///
/// ```
/// use integration::containerd::{ContainerdConfig, Runtime};
/// let config = ContainerdConfig::new()
///     .cri("registry.k8s.io/pause:3.9")
///     .runtime(Runtime::new("unified", "io.containerd.runc.v2"))
///     .log_level("debug");
/// let toml = config.to_toml(std::path::Path::new("/tmp/ctrd"));
/// assert!(toml.contains("sandbox_image = \"registry.k8s.io/pause:3.9\""));
/// assert!(toml.contains("address = \"/tmp/ctrd/containerd.sock\""));
/// assert!(!toml.contains("disabled_plugins = [\"io.containerd.grpc.v1.cri\"]"));
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ContainerdConfig {
    pub(super) sandbox_image: Option<String>,
    pub(super) import_sandbox_image: bool,
    restrict_oom_score_adj: Option<bool>,
    default_runtime: String,
    runtimes: Vec<Runtime>,
    pub(super) snapshotter: String,
    log_level: String,
    pub(super) path_prepend: Vec<PathBuf>,
    pub(super) env: Vec<(String, String)>,
    pub(super) parent_dir: PathBuf,
    pub(super) version: Version,
}

impl Default for ContainerdConfig {
    fn default() -> Self {
        ContainerdConfig {
            sandbox_image: None,
            import_sandbox_image: true,
            restrict_oom_score_adj: None,
            default_runtime: "runc".into(),
            runtimes: Vec::new(),
            snapshotter: "overlayfs".into(),
            log_level: "info".into(),
            path_prepend: Vec::new(),
            env: Vec::new(),
            parent_dir: PathBuf::from("/tmp"),
            version: Version::V1_7,
        }
    }
}

impl ContainerdConfig {
    /// CRI disabled, overlayfs, log level `info`, under `/tmp`.
    pub fn new() -> Self {
        Self::default()
    }

    /// Enables the CRI plugin with `sandbox_image` as its pause image. CRI runs without CNI:
    /// its CNI directories are empty ones in the private directory, so host-network pods work
    /// and others fail at network setup. [`Containerd::start`](super::Containerd::start)
    /// builds an [`Image::pause`](crate::image::Image::pause) of that name and imports it into
    /// [`CRI_NAMESPACE`](super::CRI_NAMESPACE) (see
    /// [`import_sandbox_image`](Self::import_sandbox_image)).
    pub fn cri(mut self, sandbox_image: impl Into<String>) -> Self {
        self.sandbox_image = Some(sandbox_image.into());
        self
    }

    /// Whether `start` imports a pause image named as CRI's `sandbox_image` (default: yes).
    pub fn import_sandbox_image(mut self, import: bool) -> Self {
        self.import_sandbox_image = import;
        self
    }

    /// CRI's `restrict_oom_score_adj`. By default it is set when this process lacks
    /// `CAP_SYS_RESOURCE` (as in this workplace's sandbox): CRI gives pause containers
    /// `oom_score_adj` -998, which only that capability may set, and runc then fails every
    /// sandbox with "can't get final child's PID from pipe: EOF"; restricted, CRI keeps
    /// containers at or above containerd's own score.
    pub fn restrict_oom_score_adj(mut self, restrict: bool) -> Self {
        self.restrict_oom_score_adj = Some(restrict);
        self
    }

    /// CRI's `default_runtime_name` (default `runc`, the stock `io.containerd.runc.v2`).
    pub fn default_runtime(mut self, name: impl Into<String>) -> Self {
        self.default_runtime = name.into();
        self
    }

    /// Registers a runtime for CRI (a `runc` runtime of type `io.containerd.runc.v2` is always
    /// there unless one named `runc` is given).
    pub fn runtime(mut self, runtime: Runtime) -> Self {
        self.runtimes.push(runtime);
        self
    }

    /// The snapshotter for CRI and for `ctr` commands from
    /// [`Containerd::ctr`](super::Containerd::ctr) (default `overlayfs`).
    pub fn snapshotter(mut self, name: impl Into<String>) -> Self {
        self.snapshotter = name.into();
        self
    }

    /// containerd's log level (`info` by default; `debug` shows every shim call).
    pub fn log_level(mut self, level: impl Into<String>) -> Self {
        self.log_level = level.into();
        self
    }

    /// Puts `dir` before the inherited `PATH` of containerd, so that `ctr run --runtime
    /// io.containerd.<name>.v2` finds `containerd-shim-<name>-v2` there.
    pub fn path_prepend(mut self, dir: impl Into<PathBuf>) -> Self {
        self.path_prepend.push(dir.into());
        self
    }

    /// Sets an environment variable for containerd, and so for the shims it runs (they inherit
    /// its environment): e.g. `SHIMLESS_CONFIG` for `containerd-shim-shimless-v2`.
    ///
    /// ```
    /// let config = integration::containerd::ContainerdConfig::new()
    ///     .env("SHIMLESS_CONFIG", "/tmp/shimless.toml");
    /// assert_eq!(config.env_vars(), [("SHIMLESS_CONFIG".to_string(), "/tmp/shimless.toml".to_string())]);
    /// ```
    pub fn env(mut self, key: impl Into<String>, value: impl Into<String>) -> Self {
        self.env.push((key.into(), value.into()));
        self
    }

    /// The environment variables set with [`env`](Self::env).
    pub fn env_vars(&self) -> &[(String, String)] {
        &self.env
    }

    /// The directory the private directory is made in (default `/tmp`; overlayfs needs a
    /// backing file system it accepts, such as ext4 or xfs).
    pub fn parent_dir(mut self, dir: impl Into<PathBuf>) -> Self {
        self.parent_dir = dir.into();
        self
    }

    /// Which containerd to run (default: the system's 1.7); its `ctr` and stock runc shim
    /// come with it.
    ///
    /// ```
    /// use integration::containerd::{ContainerdConfig, Version};
    /// let config = ContainerdConfig::new().version(Version::V2_1);
    /// assert_eq!(config.containerd_version(), Version::V2_1);
    /// assert!(config.to_toml("/tmp/x".as_ref()).starts_with("version = 3\n"));
    /// ```
    pub fn version(mut self, version: Version) -> Self {
        self.version = version;
        self
    }

    /// The containerd chosen.
    pub fn containerd_version(&self) -> Version {
        self.version
    }

    /// The snapshotter chosen.
    pub fn snapshotter_name(&self) -> &str {
        &self.snapshotter
    }

    /// CRI's pause image, when CRI is enabled.
    pub fn sandbox_image(&self) -> Option<&str> {
        self.sandbox_image.as_deref()
    }

    /// The `config.toml` for a private containerd in `dir`, in the form its version reads.
    pub fn to_toml(&self, dir: &Path) -> String {
        let mut out = match self.version.config_version() {
            2 => self.to_toml_v2(dir),
            _ => self.to_toml_v3(dir),
        };
        let mut runtimes = self.runtimes.clone();
        if !runtimes.iter().any(|r| r.name == "runc") {
            runtimes.insert(0, Runtime::new("runc", "io.containerd.runc.v2"));
        }
        for runtime in &runtimes {
            let _ = write!(out, "\n{}", runtime.to_toml_for(self.version));
        }
        out
    }

    /// The top-level tables both versions share: root, state, sockets, log level, opt, NRI off.
    fn common_toml(&self, out: &mut String, dir: &Path) {
        let p = |name: &str| toml_string(&dir.join(name).to_string_lossy());
        let _ = writeln!(out, "root = {}", p("root"));
        let _ = writeln!(out, "state = {}", p("state"));
        if self.sandbox_image.is_none() {
            let cri: &[&str] = match self.version.config_version() {
                2 => &["io.containerd.grpc.v1.cri"],
                _ => &[
                    "io.containerd.grpc.v1.cri",
                    "io.containerd.cri.v1.runtime",
                    "io.containerd.cri.v1.images",
                ],
            };
            let list: Vec<String> = cri.iter().map(|id| toml_string(id)).collect();
            let _ = writeln!(out, "disabled_plugins = [{}]", list.join(", "));
        }
        let _ = writeln!(out, "\n[grpc]\n  address = {}", p("containerd.sock"));
        let _ = writeln!(out, "\n[ttrpc]\n  address = {}", p("containerd.sock.ttrpc"));
        let _ = writeln!(out, "\n[debug]\n  level = {}", toml_string(&self.log_level));
        let _ = writeln!(
            out,
            "\n[plugins.\"io.containerd.internal.v1.opt\"]\n  path = {}",
            p("opt")
        );
        let _ = writeln!(
            out,
            "\n[plugins.\"io.containerd.nri.v1.nri\"]\n  disable = true"
        );
    }

    /// containerd 2.x's form: CRI split into `io.containerd.cri.v1.images` (snapshotter, the
    /// pinned sandbox image, registry), `io.containerd.cri.v1.runtime` (runtimes, CNI, security
    /// switches) and `io.containerd.grpc.v1.cri` (the streaming server).
    fn to_toml_v3(&self, dir: &Path) -> String {
        let p = |name: &str| toml_string(&dir.join(name).to_string_lossy());
        let mut out = String::from("version = 3\n");
        self.common_toml(&mut out, dir);
        let Some(image) = &self.sandbox_image else {
            return out;
        };
        let images = "plugins.\"io.containerd.cri.v1.images\"";
        let _ = writeln!(out, "\n[{images}]");
        let _ = writeln!(out, "  snapshotter = {}", toml_string(&self.snapshotter));
        let _ = writeln!(out, "[{images}.pinned_images]");
        let _ = writeln!(out, "  sandbox = {}", toml_string(image));
        let _ = writeln!(out, "[{images}.registry]");
        let _ = writeln!(out, "  config_path = {}", p("certs.d"));
        let runtime = "plugins.\"io.containerd.cri.v1.runtime\"";
        let _ = writeln!(out, "\n[{runtime}]");
        let _ = writeln!(out, "  disable_apparmor = true");
        let _ = writeln!(out, "  enable_selinux = false");
        let _ = writeln!(out, "  enable_cdi = false");
        let restrict = self
            .restrict_oom_score_adj
            .unwrap_or_else(|| !has_cap_sys_resource());
        let _ = writeln!(out, "  restrict_oom_score_adj = {restrict}");
        let _ = writeln!(out, "[{runtime}.cni]");
        let _ = writeln!(out, "  bin_dirs = [{}]", p("cni/bin"));
        let _ = writeln!(out, "  conf_dir = {}", p("cni/net.d"));
        let _ = writeln!(out, "[{runtime}.containerd]");
        let _ = writeln!(
            out,
            "  default_runtime_name = {}",
            toml_string(&self.default_runtime)
        );
        let _ = writeln!(out, "\n[plugins.\"io.containerd.grpc.v1.cri\"]");
        let _ = writeln!(out, "  stream_server_address = \"127.0.0.1\"");
        let _ = writeln!(out, "  stream_server_port = \"0\"");
        out
    }

    /// containerd 1.7's form (version 2): everything of CRI under `io.containerd.grpc.v1.cri`.
    fn to_toml_v2(&self, dir: &Path) -> String {
        let p = |name: &str| toml_string(&dir.join(name).to_string_lossy());
        let mut out = String::from("version = 2\n");
        self.common_toml(&mut out, dir);
        if let Some(image) = &self.sandbox_image {
            let cri = "plugins.\"io.containerd.grpc.v1.cri\"";
            let _ = writeln!(out, "\n[{cri}]");
            let _ = writeln!(out, "  sandbox_image = {}", toml_string(image));
            let _ = writeln!(out, "  disable_apparmor = true");
            let _ = writeln!(out, "  enable_selinux = false");
            let _ = writeln!(out, "  enable_cdi = false");
            let restrict = self
                .restrict_oom_score_adj
                .unwrap_or_else(|| !has_cap_sys_resource());
            let _ = writeln!(out, "  restrict_oom_score_adj = {restrict}");
            let _ = writeln!(out, "  stream_server_address = \"127.0.0.1\"");
            let _ = writeln!(out, "  stream_server_port = \"0\"");
            let _ = writeln!(out, "[{cri}.cni]");
            let _ = writeln!(out, "  bin_dir = {}", p("cni/bin"));
            let _ = writeln!(out, "  conf_dir = {}", p("cni/net.d"));
            let _ = writeln!(out, "[{cri}.registry]");
            let _ = writeln!(out, "  config_path = {}", p("certs.d"));
            let _ = writeln!(out, "[{cri}.containerd]");
            let _ = writeln!(out, "  snapshotter = {}", toml_string(&self.snapshotter));
            let _ = writeln!(
                out,
                "  default_runtime_name = {}",
                toml_string(&self.default_runtime)
            );
        }
        out
    }
}

/// Whether this process may lower `oom_score_adj` (`CAP_SYS_RESOURCE` in its effective set).
fn has_cap_sys_resource() -> bool {
    const CAP_SYS_RESOURCE: u32 = 24;
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|status| {
            let hex = status.lines().find_map(|l| l.strip_prefix("CapEff:"))?;
            u64::from_str_radix(hex.trim(), 16).ok()
        })
        .is_some_and(|caps| caps & (1 << CAP_SYS_RESOURCE) != 0)
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use super::*;

    #[test]
    fn without_cri_the_plugin_is_disabled_and_runc_is_still_registered() {
        let toml = ContainerdConfig::new().to_toml(Path::new("/tmp/x"));
        assert!(toml.contains("disabled_plugins = [\"io.containerd.grpc.v1.cri\"]"));
        assert!(toml.contains(
            "[plugins.\"io.containerd.grpc.v1.cri\".containerd.runtimes.\"runc\"]\n  \
             runtime_type = \"io.containerd.runc.v2\"\n"
        ));
        assert!(toml.contains("root = \"/tmp/x/root\""));
        assert!(toml.contains("[ttrpc]\n  address = \"/tmp/x/containerd.sock.ttrpc\""));
    }

    #[test]
    fn version_3_config_splits_cri_into_its_2x_plugins() {
        let toml = ContainerdConfig::new()
            .version(Version::V2_1)
            .cri("registry.k8s.io/pause:3.9")
            .restrict_oom_score_adj(true)
            .runtime(
                Runtime::new("unified", "io.containerd.runc.v2")
                    .sandbox_mode("podsandbox")
                    .option("SystemdCgroup", false),
            )
            .to_toml(Path::new("/tmp/x"));
        let parsed: toml::Table = toml.parse().expect("valid TOML");
        assert_eq!(parsed["version"].as_integer(), Some(3));
        let plugins = parsed["plugins"].as_table().unwrap();
        let images = &plugins["io.containerd.cri.v1.images"];
        assert_eq!(
            images["pinned_images"]["sandbox"].as_str(),
            Some("registry.k8s.io/pause:3.9")
        );
        assert_eq!(images["snapshotter"].as_str(), Some("overlayfs"));
        let runtime = &plugins["io.containerd.cri.v1.runtime"];
        assert_eq!(runtime["restrict_oom_score_adj"].as_bool(), Some(true));
        assert_eq!(
            runtime["cni"]["bin_dirs"].as_array().unwrap()[0].as_str(),
            Some("/tmp/x/cni/bin")
        );
        let unified = &runtime["containerd"]["runtimes"]["unified"];
        assert_eq!(unified["sandboxer"].as_str(), Some("podsandbox"));
        assert_eq!(unified["options"]["SystemdCgroup"].as_bool(), Some(false));
        assert_eq!(
            runtime["containerd"]["runtimes"]["runc"]["runtime_type"].as_str(),
            Some("io.containerd.runc.v2")
        );
        assert!(
            !plugins.contains_key("io.containerd.grpc.v1.cri") || {
                let cri = &plugins["io.containerd.grpc.v1.cri"];
                cri.get("containerd").is_none() && cri.get("sandbox_image").is_none()
            }
        );
        assert!(parsed.get("disabled_plugins").is_none());

        let without_cri = ContainerdConfig::new()
            .version(Version::V2_1)
            .to_toml(Path::new("/tmp/x"));
        let parsed: toml::Table = without_cri.parse().unwrap();
        let disabled = parsed["disabled_plugins"].as_array().unwrap();
        assert!(
            disabled
                .iter()
                .any(|p| p.as_str() == Some("io.containerd.cri.v1.runtime"))
        );
    }

    #[test]
    fn cri_config_points_cni_at_private_empty_directories() {
        let toml = ContainerdConfig::new()
            .cri("registry.k8s.io/pause:3.9")
            .restrict_oom_score_adj(true)
            .snapshotter("native")
            .runtime(
                Runtime::new("unified", "io.containerd.runc.v2")
                    .option("BinaryName", "crun")
                    .option("SystemdCgroup", false),
            )
            .to_toml(Path::new("/tmp/x"));
        for line in [
            "  sandbox_image = \"registry.k8s.io/pause:3.9\"",
            "  conf_dir = \"/tmp/x/cni/net.d\"",
            "  bin_dir = \"/tmp/x/cni/bin\"",
            "  snapshotter = \"native\"",
            "  default_runtime_name = \"runc\"",
            "  enable_cdi = false",
            "  restrict_oom_score_adj = true",
            "  BinaryName = \"crun\"",
            "  SystemdCgroup = false",
        ] {
            assert!(toml.lines().any(|l| l == line), "{line} missing in\n{toml}");
        }
        assert!(!toml.contains("disabled_plugins"));
    }
}
