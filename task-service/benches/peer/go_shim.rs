//! The peer shimless replaces, measured for real: containerd 1.7 with its Go shim
//! (`containerd-shim-runc-v2`, one per container), started in private directories, running
//! busybox containers from an unpacked rootfs with `ctr run --rootfs`. Shared by the density
//! benchmark and the demo.

#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// PSS and private memory of a process, in KiB, from `/proc/<pid>/smaps_rollup`.
pub fn memory_kib(pid: u32) -> Option<(u64, u64)> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/smaps_rollup")).ok()?;
    let field = |name: &str| {
        text.lines()
            .find(|l| l.starts_with(name))
            .and_then(|l| l.split_whitespace().nth(1))
            .and_then(|v| v.parse::<u64>().ok())
    };
    let private = field("Private_Clean:")? + field("Private_Dirty:")?;
    Some((field("Pss:")?, private))
}

/// A private containerd.
pub struct Containerd {
    dir: tempfile::TempDir,
    child: Child,
    ids: Vec<String>,
}

impl Containerd {
    /// Starts containerd in a temporary directory, or says why it cannot.
    pub fn start() -> Result<Containerd, String> {
        for program in ["containerd", "ctr", "containerd-shim-runc-v2"] {
            let found = std::env::var_os("PATH")
                .map(|p| std::env::split_paths(&p).any(|d| d.join(program).is_file()))
                .unwrap_or(false);
            if !found {
                return Err(format!("{program} is not installed"));
            }
        }
        let dir = tempfile::tempdir().map_err(|e| e.to_string())?;
        let d = dir.path().display();
        let config = format!(
            "version = 2\nroot = \"{d}/root\"\nstate = \"{d}/state\"\n\
             [grpc]\n  address = \"{d}/containerd.sock\"\n\
             [ttrpc]\n  address = \"{d}/containerd.sock.ttrpc\"\n\
             [plugins.\"io.containerd.grpc.v1.cri\"]\n  disable_apparmor = true\n"
        );
        let path = dir.path().join("config.toml");
        std::fs::write(&path, config).map_err(|e| e.to_string())?;
        let log =
            std::fs::File::create(dir.path().join("containerd.log")).map_err(|e| e.to_string())?;
        let child = Command::new("containerd")
            .arg("--config")
            .arg(&path)
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .map_err(|e| format!("cannot start containerd: {e}"))?;
        let me = Containerd {
            dir,
            child,
            ids: Vec::new(),
        };
        let deadline = Instant::now() + Duration::from_secs(30);
        while !me.socket().exists() {
            if Instant::now() > deadline {
                return Err("containerd did not start in 30 s".into());
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        Ok(me)
    }

    fn socket(&self) -> PathBuf {
        self.dir.path().join("containerd.sock")
    }

    fn ctr(&self) -> Command {
        let mut cmd = Command::new("ctr");
        cmd.arg("--address").arg(self.socket());
        cmd.stdout(Stdio::null()).stderr(Stdio::piped());
        cmd
    }

    /// Runs a detached container (one Go shim) from `rootfs`, sleeping.
    pub fn run(&mut self, id: &str, rootfs: &Path) -> Result<(), String> {
        let out = self
            .ctr()
            .args(["run", "-d", "--env", "PATH=/bin", "--rootfs"])
            .arg(rootfs)
            .args([id, "sh", "-c", "sleep 1000000"])
            .output()
            .map_err(|e| e.to_string())?;
        if !out.status.success() {
            return Err(String::from_utf8_lossy(&out.stderr).into_owned());
        }
        self.ids.push(id.to_string());
        Ok(())
    }

    /// The Go shims' PIDs.
    pub fn shim_pids(&self) -> Vec<u32> {
        let mut pids = Vec::new();
        for entry in std::fs::read_dir("/proc").into_iter().flatten().flatten() {
            let Ok(pid) = entry.file_name().to_string_lossy().parse::<u32>() else {
                continue;
            };
            let cmdline = std::fs::read(entry.path().join("cmdline")).unwrap_or_default();
            let cmdline = String::from_utf8_lossy(&cmdline);
            if cmdline.starts_with("/usr/bin/containerd-shim-runc-v2")
                && cmdline.contains(&*self.socket().to_string_lossy())
            {
                pids.push(pid);
            }
        }
        pids
    }
}

impl Drop for Containerd {
    fn drop(&mut self) {
        for id in std::mem::take(&mut self.ids) {
            let _ = self
                .ctr()
                .args(["task", "kill", "-s", "KILL", &id])
                .status();
            for _ in 0..50 {
                let ok = self.ctr().args(["task", "delete", &id]).status();
                if ok.is_ok_and(|s| s.success()) {
                    break;
                }
                std::thread::sleep(Duration::from_millis(100));
            }
            let _ = self.ctr().args(["container", "delete", &id]).status();
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
