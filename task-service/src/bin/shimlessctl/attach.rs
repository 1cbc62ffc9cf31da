//! `run` and `exec`: the process's output attached through FIFOs of our own, its exit code
//! ours.

use crate::task::{Ctl, create, delete, start, wait};
use crate::{Result, status};
use serde_json::json;
use std::io::Write;
use std::path::{Path, PathBuf};
use task_service::api::containerd::task::v3::ExecProcessRequest;

/// A FIFO only we may open.
fn mkfifo(path: &Path) -> std::io::Result<()> {
    rustix::fs::mknodat(
        rustix::fs::CWD,
        path,
        rustix::fs::FileType::Fifo,
        rustix::fs::Mode::from_raw_mode(0o600),
        0,
    )?;
    Ok(())
}

/// FIFOs for a process's stdout and stderr in a private directory, and threads copying them to
/// ours until the process (their only writer) exits.
struct Attached {
    dir: PathBuf,
    /// Our read ends, opened before the process exists (non-blocking, so the open does not wait
    /// for a writer) and kept open, so whatever it writes stays in the FIFO until we read it.
    readers: Vec<(rustix::fd::OwnedFd, bool)>,
    copiers: Vec<std::thread::JoinHandle<()>>,
}

impl Attached {
    fn fifos(tag: &str) -> Result<(Attached, String, String)> {
        let dir = std::env::temp_dir().join(format!("shimlessctl-{}-{tag}", std::process::id()));
        std::fs::create_dir_all(&dir)?;
        let out = dir.join("stdout");
        let err = dir.join("stderr");
        for path in [&out, &err] {
            let _ = std::fs::remove_file(path);
            mkfifo(path)?;
        }
        let names = (out.display().to_string(), err.display().to_string());
        let mut readers = Vec::new();
        for (path, to_stderr) in [(&out, false), (&err, true)] {
            let fd = rustix::fs::open(
                path,
                rustix::fs::OFlags::RDONLY
                    | rustix::fs::OFlags::NONBLOCK
                    | rustix::fs::OFlags::CLOEXEC,
                rustix::fs::Mode::empty(),
            )?;
            readers.push((fd, to_stderr));
        }
        Ok((
            Attached {
                dir,
                readers,
                copiers: Vec::new(),
            },
            names.0,
            names.1,
        ))
    }

    /// Starts copying; call once the process runs (it holds the write ends until it exits, so
    /// a blocking read ends exactly at its end-of-file).
    fn copy(&mut self) -> Result<()> {
        for (fd, to_stderr) in std::mem::take(&mut self.readers) {
            let flags = rustix::fs::fcntl_getfl(&fd)?;
            rustix::fs::fcntl_setfl(&fd, flags - rustix::fs::OFlags::NONBLOCK)?;
            let mut fifo = std::fs::File::from(fd);
            self.copiers.push(std::thread::spawn(move || {
                if to_stderr {
                    let _ = std::io::copy(&mut fifo, &mut std::io::stderr());
                } else {
                    let _ = std::io::copy(&mut fifo, &mut std::io::stdout());
                }
            }));
        }
        Ok(())
    }

    fn finish(self) {
        for copier in self.copiers {
            let _ = copier.join();
        }
        let _ = std::io::stdout().flush();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// `shimlessctl run`: create, start, attach, wait, delete (or with `detach`, create and start).
pub(crate) async fn run_container(
    ctl: &mut Ctl,
    id: &str,
    bundle: &Path,
    detach: bool,
    interactive: bool,
) -> Result<i32> {
    if detach {
        let pid = create(ctl, id, bundle, String::new(), String::new(), String::new()).await?;
        start(ctl, id, "").await?;
        ctl.print(
            json!({"id": id, "pid": pid}),
            format!("running {id} (pid {pid})"),
        );
        return Ok(0);
    }
    let (mut attached, out, err) = Attached::fifos(id)?;
    let stdin = if interactive {
        let path = attached.dir.join("stdin");
        let _ = std::fs::remove_file(&path);
        mkfifo(&path)?;
        path.display().to_string()
    } else {
        String::new()
    };
    // The daemon opens its own reader before the container's writer, so create never blocks.
    create(ctl, id, bundle, stdin.clone(), out, err).await?;
    if interactive {
        // The container holds the read end now: this open does not wait.
        let mut fifo = std::fs::OpenOptions::new().write(true).open(&stdin)?;
        std::thread::spawn(move || {
            let _ = std::io::copy(&mut std::io::stdin().lock(), &mut fifo);
            // Dropping our writer is the container's end of input.
        });
    }
    let started = start(ctl, id, "").await;
    let code = match started {
        Ok(_) => {
            attached.copy()?;
            wait(ctl, id, "").await
        }
        Err(e) => Err(e),
    };
    let deleted = delete(ctl, id, "").await;
    attached.finish();
    let code = code?;
    deleted.map_err(status)?;
    Ok(code as i32)
}

/// `shimlessctl exec`: a process in a running container, attached; its exit code.
pub(crate) async fn exec(ctl: &mut Ctl, id: &str, exec_id: &str, args: Vec<String>) -> Result<i32> {
    let process = oci_spec::runtime::ProcessBuilder::default()
        .args(args)
        .cwd("/")
        .env(vec![
            "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin".to_string(),
        ])
        .build()?;
    let spec = prost_types::Any {
        type_url: "types.containerd.io/opencontainers/runtime-spec/1/Process".into(),
        value: serde_json::to_vec(&process)?,
    };
    let (mut attached, out, err) = Attached::fifos(&format!("{id}-{exec_id}"))?;
    ctl.task
        .exec(ctl.req(ExecProcessRequest {
            id: id.into(),
            exec_id: exec_id.into(),
            terminal: false,
            stdin: String::new(),
            stdout: out,
            stderr: err,
            spec: Some(spec),
        }))
        .await
        .map_err(status)?;
    let code = match start(ctl, id, exec_id).await {
        Ok(_) => {
            attached.copy()?;
            wait(ctl, id, exec_id).await
        }
        Err(e) => Err(e),
    };
    let _ = delete(ctl, id, exec_id).await;
    attached.finish();
    Ok(code? as i32)
}
