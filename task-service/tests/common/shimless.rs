//! A private shimless installation for a test: a configuration file whose sockets, state,
//! runtime root and logs live in a temporary directory, and a clean-up that kills the front and
//! daemon started for it (found by their command line naming the configuration) and deletes
//! what is left in its runtime root.

use std::path::{Path, PathBuf};
use std::process::Command;

pub struct Shimless {
    pub dir: tempfile::TempDir,
    namespaces: Vec<String>,
}

impl Shimless {
    /// A configuration in a new temporary directory; `extra` is appended to it (TOML lines).
    pub fn new(extra: &str) -> Shimless {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path().display();
        std::fs::write(
            dir.path().join("shimless.toml"),
            format!(
                "socket = \"{d}/run/front.sock\"\ndaemon_socket = \"{d}/run/daemon.sock\"\n\
                 state_dir = \"{d}/state\"\nrunc_root = \"{d}/runc\"\nlog_dir = \"{d}/logs\"\n\
                 {extra}\n"
            ),
        )
        .unwrap();
        Shimless {
            dir,
            namespaces: Vec::new(),
        }
    }

    /// Also deletes, at the end, what the runtime keeps for containers of namespace `ns`.
    pub fn cleans(mut self, ns: &str) -> Shimless {
        self.namespaces.push(ns.to_string());
        self
    }

    pub fn config(&self) -> PathBuf {
        self.dir.path().join("shimless.toml")
    }

    pub fn front_socket(&self) -> PathBuf {
        self.dir.path().join("run/front.sock")
    }

    pub fn daemon_socket(&self) -> PathBuf {
        self.dir.path().join("run/daemon.sock")
    }

    pub fn runc_root(&self, ns: &str) -> PathBuf {
        self.dir.path().join("runc").join(ns)
    }

    /// The directory of the shimless binaries (what goes on containerd's PATH).
    pub fn bin_dir() -> PathBuf {
        Path::new(env!("CARGO_BIN_EXE_containerd-shim-shimless-v2"))
            .parent()
            .unwrap()
            .to_owned()
    }

    /// A log file's text (`front.log`, `shimlessd.log`).
    pub fn log(&self, name: &str) -> String {
        std::fs::read_to_string(self.dir.path().join("logs").join(name)).unwrap_or_default()
    }

    /// Processes beside the containers that mention "shim" on their command line (the seed's
    /// `ps -ef | grep shim`): `containerd`'s shims, and this shimless's front and daemon.
    pub fn shim_processes(&self, containerd: &integration::containerd::Containerd) -> Vec<u32> {
        let mut pids = containerd.shim_pids();
        pids.extend(self.processes("shimless-front"));
        pids.extend(self.processes("shimlessd"));
        pids.retain(|pid| {
            let cmdline = std::fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
            String::from_utf8_lossy(&cmdline).contains("shim")
        });
        pids.sort();
        pids.dedup();
        pids
    }

    /// PIDs of live processes running program `name` with this configuration.
    pub fn processes(&self, name: &str) -> Vec<u32> {
        let config = self.config().display().to_string();
        let mut pids = Vec::new();
        for entry in std::fs::read_dir("/proc").unwrap().flatten() {
            let Ok(pid) = entry.file_name().to_string_lossy().parse::<u32>() else {
                continue;
            };
            let cmdline = std::fs::read(entry.path().join("cmdline")).unwrap_or_default();
            let cmdline = String::from_utf8_lossy(&cmdline).replace('\0', " ");
            let first = cmdline.split(' ').next().unwrap_or("");
            if first.ends_with(name) && cmdline.contains(&config) && alive(pid) {
                pids.push(pid);
            }
        }
        pids
    }
}

impl Drop for Shimless {
    fn drop(&mut self) {
        for name in ["shimless-front", "shimlessd"] {
            for pid in self.processes(name) {
                let _ = Command::new("kill").args(["-9", &pid.to_string()]).status();
            }
        }
        for ns in &self.namespaces {
            integration::bundle::delete_all("runc", &self.runc_root(ns));
        }
    }
}

/// Whether process `pid` runs (exists and is not a zombie).
pub fn alive(pid: u32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat")).is_ok_and(|stat| {
        !stat
            .rsplit_once(')')
            .is_some_and(|(_, rest)| rest.trim_start().starts_with('Z'))
    })
}
