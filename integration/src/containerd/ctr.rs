//! Driving the private containerd through `ctr`: images, namespaces, tasks, shims.

use std::collections::HashMap;
use std::path::Path;
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use super::cleanup::processes_naming;
use super::{CRI_NAMESPACE, Containerd, ContainerdError, READY_TIMEOUT};
use crate::image::Image;

impl Containerd {
    /// A `ctr` command preset with `--address` of this containerd, `-n namespace`, and
    /// `CONTAINERD_SNAPSHOTTER` set to the configured snapshotter: add the subcommand.
    ///
    /// ```no_run
    /// # let containerd = integration::containerd::Containerd::start(Default::default())?;
    /// let listed = containerd.ctr("my-test").args(["task", "ls"]).output()?;
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn ctr(&self, namespace: &str) -> Command {
        let mut cmd = Command::new(self.config.version.program("ctr"));
        cmd.arg("--address")
            .arg(self.socket())
            .args(["--namespace", namespace])
            .env("CONTAINERD_SNAPSHOTTER", &self.config.snapshotter)
            .stdin(Stdio::null());
        cmd
    }

    /// Runs `ctr -n namespace <args>` and returns its stdout, or an error with its stderr.
    ///
    /// ```no_run
    /// # let containerd = integration::containerd::Containerd::start(Default::default())?;
    /// let tasks = containerd.ctr_ok("my-test", &["task", "ls", "-q"])?;
    /// # Ok::<(), integration::containerd::ContainerdError>(())
    /// ```
    pub fn ctr_ok(&self, namespace: &str, args: &[&str]) -> Result<String, ContainerdError> {
        let mut cmd = self.ctr(namespace);
        cmd.args(args);
        let out = run(&mut cmd)?;
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    }

    /// Imports an image tarball (see [`image`](crate::image)) into `namespace` and unpacks it
    /// with the configured snapshotter.
    ///
    /// ```no_run
    /// # let containerd = integration::containerd::Containerd::start(Default::default())?;
    /// let image = integration::image::Image::busybox("docker.io/shimless/busybox:test")
    ///     .write_tar(&containerd.dir().join("busybox.tar"))?;
    /// containerd.import("my-test", image.path())?;
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn import(&self, namespace: &str, tarball: &Path) -> Result<(), ContainerdError> {
        let mut cmd = self.ctr(namespace);
        cmd.args([
            "images",
            "import",
            "--snapshotter",
            &self.config.snapshotter,
        ])
        .arg(tarball);
        run(&mut cmd).map(drop)
    }

    /// Waits (at most [`READY_TIMEOUT`]) until CRI has taken an image imported into
    /// [`CRI_NAMESPACE`] into its own store, which it shows by adding a reference named by the
    /// image's config digest (CRI's image ID) beside the image's name; before that, CRI may
    /// not find the image and try to pull it.
    ///
    /// ```no_run
    /// # let containerd = integration::containerd::Containerd::start(Default::default())?;
    /// let image = integration::image::Image::busybox("docker.io/shimless/busybox:test")
    ///     .write_tar(&containerd.dir().join("busybox.tar"))?;
    /// containerd.import(integration::containerd::CRI_NAMESPACE, image.path())?;
    /// containerd.wait_cri_knows(&image)?;
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn wait_cri_knows(&self, image: &Image) -> Result<(), ContainerdError> {
        let deadline = Instant::now() + READY_TIMEOUT;
        loop {
            let refs = self.ctr_ok(CRI_NAMESPACE, &["images", "ls", "-q"])?;
            if refs.lines().any(|r| r == image.config_digest()) {
                return Ok(());
            }
            if Instant::now() > deadline {
                return Err(self.not_ready(format!(
                    "CRI did not take {} in within {READY_TIMEOUT:?} (no {} reference)",
                    image.name(),
                    image.config_digest()
                )));
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// The namespaces containerd knows.
    pub fn namespaces(&self) -> Result<Vec<String>, ContainerdError> {
        Ok(self
            .ctr_ok("default", &["namespaces", "ls", "-q"])?
            .lines()
            .map(str::to_string)
            .collect())
    }

    /// Tasks of `namespace` with their status (`RUNNING`, `STOPPED`, ...), from `ctr task ls`.
    pub fn tasks(&self, namespace: &str) -> Result<HashMap<String, String>, ContainerdError> {
        Ok(self
            .ctr_ok(namespace, &["task", "ls"])?
            .lines()
            .skip(1)
            .filter_map(|line| {
                let mut fields = line.split_whitespace();
                let id = fields.next()?;
                let status = fields.nth(1)?;
                Some((id.to_string(), status.to_string()))
            })
            .collect())
    }

    /// The PIDs of processes other than containerd whose command line names its socket: the
    /// shims (and any `ctr` still talking to it).
    pub fn shim_pids(&self) -> Vec<u32> {
        let own = self.pid();
        processes_naming(&self.socket())
            .into_iter()
            .filter(|pid| Some(*pid) != own)
            .collect()
    }
}

/// Runs a command, or says how it failed.
fn run(cmd: &mut Command) -> Result<Output, ContainerdError> {
    let line = format!(
        "{} {}",
        cmd.get_program().to_string_lossy(),
        cmd.get_args()
            .map(|a| a.to_string_lossy())
            .collect::<Vec<_>>()
            .join(" ")
    );
    let out = cmd.output().map_err(|source| ContainerdError::Spawn {
        program: cmd.get_program().to_string_lossy().into_owned(),
        source,
    })?;
    if !out.status.success() {
        return Err(ContainerdError::Ctr {
            command: line,
            status: out.status,
            stderr: String::from_utf8_lossy(&out.stderr).trim().to_string(),
        });
    }
    Ok(out)
}
