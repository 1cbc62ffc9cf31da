//! The runtime alone: the calls a shim makes for one container's lifecycle, made directly
//! (`<runtime> create`, `start`, `kill KILL`, reap the container's init, `delete`), on the
//! same spec as the containers made through containerd.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

/// One OCI runtime (`runc` or `crun`) on a private root, making bundles under `bundles`.
#[derive(Debug)]
pub(crate) struct Alone {
    pub(crate) runtime: String,
    pub(crate) root: PathBuf,
    pub(crate) bundles: PathBuf,
}

impl Alone {
    /// A runtime with its root and bundles under `dir` (`dir/<runtime>-root`,
    /// `dir/<runtime>-bundles`).
    pub(crate) fn new(runtime: &str, dir: &Path) -> Result<Alone, String> {
        let alone = Alone {
            runtime: runtime.to_string(),
            root: dir.join(format!("{runtime}-root")),
            bundles: dir.join(format!("{runtime}-bundles")),
        };
        for d in [&alone.root, &alone.bundles] {
            std::fs::create_dir_all(d).map_err(|e| format!("create {}: {e}", d.display()))?;
        }
        Ok(alone)
    }

    /// One container's lifecycle: writes its bundle (`config.json` = `spec`), creates,
    /// starts, kills (SIGKILL) it, reaps its init (the bench is the child subreaper) and
    /// deletes it and its bundle.
    pub(crate) fn lifecycle(&self, id: &str, spec: &[u8]) -> Result<(), String> {
        let bundle = self.bundles.join(id);
        std::fs::create_dir_all(&bundle)
            .map_err(|e| format!("create {}: {e}", bundle.display()))?;
        std::fs::write(bundle.join("config.json"), spec)
            .map_err(|e| format!("write {}/config.json: {e}", bundle.display()))?;
        let pid_file = bundle.join("init.pid");
        let log = bundle.join("runtime.log");
        self.call(
            &log,
            &[
                "create".as_ref(),
                "--bundle".as_ref(),
                bundle.as_os_str(),
                "--pid-file".as_ref(),
                pid_file.as_os_str(),
                id.as_ref(),
            ],
        )?;
        let pid = std::fs::read_to_string(&pid_file)
            .ok()
            .and_then(|p| p.trim().parse::<i32>().ok())
            .and_then(rustix::process::Pid::from_raw)
            .ok_or_else(|| format!("{}: no PID in {}", self.runtime, pid_file.display()))?;
        self.call(&log, &["start".as_ref(), id.as_ref()])?;
        self.call(&log, &["kill".as_ref(), id.as_ref(), "KILL".as_ref()])?;
        let status = rustix::process::waitpid(Some(pid), rustix::process::WaitOptions::empty())
            .map_err(|e| format!("wait for {id}'s init {pid:?}: {e}"))?;
        let signal = status.and_then(|(_, s)| s.terminating_signal());
        if signal != Some(9) {
            return Err(format!("{id} ended with {status:?}, not SIGKILL"));
        }
        self.call(&log, &["delete".as_ref(), id.as_ref()])?;
        std::fs::remove_dir_all(&bundle).map_err(|e| format!("remove {}: {e}", bundle.display()))
    }

    /// `<runtime> --root <root> <args>`, its stderr in `log` (a file, not a pipe: the
    /// container's init inherits the stdio of `create`), quoted in the error.
    fn call(&self, log: &Path, args: &[&std::ffi::OsStr]) -> Result<(), String> {
        let err =
            std::fs::File::create(log).map_err(|e| format!("create {}: {e}", log.display()))?;
        let status = Command::new(&self.runtime)
            .arg("--root")
            .arg(&self.root)
            .args(args)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(err)
            .status()
            .map_err(|e| format!("run {}: {e}", self.runtime))?;
        if status.success() {
            Ok(())
        } else {
            Err(format!(
                "{} {:?}: {status}: {}",
                self.runtime,
                args,
                std::fs::read_to_string(log).unwrap_or_default().trim()
            ))
        }
    }
}

impl Drop for Alone {
    fn drop(&mut self) {
        integration::bundle::delete_all(&self.runtime, &self.root);
    }
}
