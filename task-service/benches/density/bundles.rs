//! The smallest container that still exits on demand, N times over without N rootfs copies:
//! one busybox rootfs shared read-only, and per container a bundle directory holding only its
//! `config.json` and a FIFO bind-mounted at `/ctl`; the container (`sh -c 'read code < /ctl;
//! exit $code'`, sleeping in a read without using CPU) exits with the code written there.

use std::path::{Path, PathBuf};

/// The shared rootfs and the directory of every container's bundle; both removed when dropped.
pub(crate) struct Bundles {
    _rootfs: integration::bundle::Bundle,
    rootfs: PathBuf,
    dir: tempfile::TempDir,
    /// The cgroup parent of every container (`/<cgroup_parent>/<id>`).
    pub(crate) cgroup_parent: String,
}

impl Bundles {
    /// The busybox rootfs (with an empty `/ctl` as the FIFO's mount point) and an empty bundle
    /// directory under `parent`.
    pub(crate) fn new(parent: &Path) -> Result<Bundles, String> {
        let base = integration::bundle::BundleBuilder::new()
            .build()
            .map_err(|e| format!("make the busybox rootfs: {e}"))?;
        let rootfs = base.rootfs();
        std::fs::write(rootfs.join("ctl"), "")
            .map_err(|e| format!("create {}/ctl: {e}", rootfs.display()))?;
        let dir = tempfile::Builder::new()
            .prefix("shimless-density-bundles-")
            .tempdir_in(parent)
            .map_err(|e| format!("create a directory in {}: {e}", parent.display()))?;
        Ok(Bundles {
            _rootfs: base,
            rootfs,
            dir,
            cgroup_parent: format!("shimless-density-{}", std::process::id()),
        })
    }

    /// The rootfs every container shares.
    pub(crate) fn rootfs(&self) -> &Path {
        &self.rootfs
    }

    /// Writes container `id`'s bundle (its `config.json` and `ctl` FIFO); its path.
    pub(crate) fn make(&self, id: &str) -> Result<PathBuf, String> {
        let bundle = self.dir.path().join(id);
        std::fs::create_dir(&bundle).map_err(|e| format!("create {}: {e}", bundle.display()))?;
        let ctl = bundle.join("ctl");
        rustix::fs::mknodat(
            rustix::fs::CWD,
            &ctl,
            rustix::fs::FileType::Fifo,
            rustix::fs::Mode::from_raw_mode(0o600),
            0,
        )
        .map_err(|e| format!("mkfifo {}: {e}", ctl.display()))?;
        std::fs::write(bundle.join("config.json"), self.spec(id, &ctl))
            .map_err(|e| format!("write {}/config.json: {e}", bundle.display()))?;
        Ok(bundle)
    }

    /// Makes container `id` exit with `code` (the open waits until the container reads).
    pub(crate) fn tell_exit(&self, id: &str, code: u8) -> Result<(), String> {
        let ctl = self.dir.path().join(id).join("ctl");
        let mut fifo = std::fs::OpenOptions::new()
            .write(true)
            .open(&ctl)
            .map_err(|e| format!("open {}: {e}", ctl.display()))?;
        std::io::Write::write_all(&mut fifo, format!("{code}\n").as_bytes())
            .map_err(|e| format!("write {}: {e}", ctl.display()))
    }

    /// The OCI spec: no network namespace, no terminal, the rootfs read-only, a small `/dev`.
    fn spec(&self, id: &str, ctl: &Path) -> Vec<u8> {
        serde_json::json!({
            "ociVersion": "1.1.0",
            "process": {
                "terminal": false,
                "user": {"uid": 0, "gid": 0},
                "args": ["sh", "-c", "read code < /ctl; exit $code"],
                "env": ["PATH=/bin"],
                "cwd": "/",
                "noNewPrivileges": true,
            },
            "root": {"path": self.rootfs, "readonly": true},
            "hostname": "density",
            "mounts": [
                {"destination": "/proc", "type": "proc", "source": "proc",
                 "options": ["nosuid", "noexec", "nodev"]},
                {"destination": "/dev", "type": "tmpfs", "source": "tmpfs",
                 "options": ["nosuid", "strictatime", "mode=755", "size=64k"]},
                {"destination": "/ctl", "type": "bind", "source": ctl, "options": ["bind"]},
            ],
            "linux": {
                "namespaces": [{"type": "pid"}, {"type": "ipc"}, {"type": "uts"}, {"type": "mount"}],
                "cgroupsPath": format!("/{}/{id}", self.cgroup_parent),
            },
        })
        .to_string()
        .into_bytes()
    }
}

impl Drop for Bundles {
    /// Removes the containers' (empty) cgroup parent from every hierarchy.
    fn drop(&mut self) {
        for hierarchy in std::fs::read_dir("/sys/fs/cgroup")
            .into_iter()
            .flatten()
            .flatten()
        {
            let parent = hierarchy.path().join(&self.cgroup_parent);
            for child in std::fs::read_dir(&parent).into_iter().flatten().flatten() {
                let _ = std::fs::remove_dir(child.path());
            }
            let _ = std::fs::remove_dir(&parent);
        }
    }
}
