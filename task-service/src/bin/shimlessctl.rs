//! `shimlessctl`: drive `shimlessd` by hand, through the same gRPC API containerd uses.

use clap::{Parser, Subcommand};
use serde_json::json;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};
use task_service::api::containerd::services::events::v1::SubscribeRequest;
use task_service::api::containerd::services::events::v1::events_client::EventsClient;
use task_service::api::containerd::task::v3::task_client::TaskClient;
use task_service::api::containerd::task::v3::*;
use task_service::api::shimless::v1::ListRequest;
use task_service::api::shimless::v1::admin_client::AdminClient;
use task_service::events::TaskEvent;
use task_service::grpc::{self, Channel};
use tonic::Request;

/// Drive shimlessd: create, start, inspect, signal and delete containers through the Task API
/// that containerd speaks.
#[derive(Debug, Parser)]
#[command(
    version,
    after_help = "Examples:
  shimlessctl run web --bundle /srv/bundles/web            # attach output, exit with its code
  shimlessctl create web --bundle /srv/bundles/web --stdout /tmp/web.log
  shimlessctl start web
  shimlessctl ps                                           # id, pid, status, exit, age
  shimlessctl exec web --exec-id probe -- cat /etc/hostname
  shimlessctl kill web --signal TERM
  shimlessctl wait web && shimlessctl delete web
  shimlessctl events --filter topic==/tasks/exit
  shimlessctl --json state web"
)]
struct Cli {
    /// The daemon's socket.
    #[arg(long, global = true, default_value = "/run/shimless/shimless.sock")]
    socket: PathBuf,
    /// The containerd namespace of the container.
    #[arg(short, long, global = true, default_value = "default")]
    namespace: String,
    /// Print JSON instead of text.
    #[arg(long, global = true)]
    json: bool,
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Create a container from an OCI bundle (not started).
    Create {
        id: String,
        /// The bundle directory (holding config.json and its rootfs).
        #[arg(long)]
        bundle: PathBuf,
        /// Where stdout goes: a file (appended) or a FIFO path; none if omitted.
        #[arg(long)]
        stdout: Option<PathBuf>,
        /// Where stderr goes: a file (appended) or a FIFO path; none if omitted.
        #[arg(long)]
        stderr: Option<PathBuf>,
    },
    /// Start a created container.
    Start { id: String },
    /// Create and start a container, attach its output, wait, delete it, and exit with its code
    /// (or with -d, leave it running).
    Run {
        id: String,
        #[arg(long)]
        bundle: PathBuf,
        /// Start it and return without attaching (its output is discarded).
        #[arg(short, long, conflicts_with = "interactive")]
        detach: bool,
        /// Also attach stdin: ours is copied to the container until its end.
        #[arg(short, long)]
        interactive: bool,
    },
    /// List containers: id, pid, status, exit code, age.
    Ps {
        /// Every namespace, not only --namespace.
        #[arg(short = 'A', long)]
        all_namespaces: bool,
    },
    /// Show one container's (or exec's) state.
    State {
        id: String,
        #[arg(long, default_value = "")]
        exec_id: String,
    },
    /// Run a command in a running container and exit with its code.
    Exec {
        id: String,
        /// The exec's id (unique within the container).
        #[arg(long)]
        exec_id: String,
        /// The command and its arguments.
        #[arg(last = true, required = true)]
        args: Vec<String>,
    },
    /// Send a signal (name or number) to a container's init, or to every process with --all.
    Kill {
        id: String,
        #[arg(short, long, default_value = "TERM")]
        signal: String,
        #[arg(long)]
        all: bool,
        #[arg(long, default_value = "")]
        exec_id: String,
    },
    /// Wait for a container to exit and print its code (and exit with it).
    Wait { id: String },
    /// Delete a stopped (or never started) container.
    Delete { id: String },
    /// Follow the daemon's task events.
    Events {
        /// `topic==/tasks/exit`, `namespace!=k8s.io`, ...; several are alternatives.
        #[arg(long)]
        filter: Vec<String>,
    },
}

fn main() {
    let cli = Cli::parse();
    let code = match smol::block_on(run(cli)) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("shimlessctl: {e}");
            1
        }
    };
    std::process::exit(code);
}

type Result<T> = std::result::Result<T, Box<dyn std::error::Error>>;

/// A gRPC status as an error message naming the code.
fn status(e: tonic::Status) -> Box<dyn std::error::Error> {
    format!("{:?}: {}", e.code(), e.message()).into()
}

async fn channel(socket: &Path) -> Result<Channel> {
    grpc::connect(socket).await.map_err(|e| {
        format!(
            "cannot reach shimlessd at {}: {e} (is it running? see --socket)",
            socket.display()
        )
        .into()
    })
}

fn origin() -> http::Uri {
    http::Uri::from_static("http://localhost")
}

struct Ctl {
    task: TaskClient<Channel>,
    channel: Channel,
    namespace: String,
    json: bool,
}

impl Ctl {
    fn req<T>(&self, msg: T) -> Request<T> {
        let mut req = Request::new(msg);
        if let Ok(ns) = self.namespace.parse() {
            req.metadata_mut().insert("containerd-namespace", ns);
        }
        req
    }

    fn print(&self, value: serde_json::Value, text: String) {
        if self.json {
            println!("{value}");
        } else {
            println!("{text}");
        }
    }
}

async fn run(cli: Cli) -> Result<i32> {
    let channel = channel(&cli.socket).await?;
    let mut ctl = Ctl {
        task: TaskClient::with_origin(channel.clone(), origin()),
        channel,
        namespace: cli.namespace,
        json: cli.json,
    };
    match cli.command {
        Command::Create {
            id,
            bundle,
            stdout,
            stderr,
        } => {
            let pid = create(
                &mut ctl,
                &id,
                &bundle,
                String::new(),
                uri(stdout),
                uri(stderr),
            )
            .await?;
            ctl.print(
                json!({"id": id, "pid": pid}),
                format!("created {id} (pid {pid})"),
            );
            Ok(0)
        }
        Command::Start { id } => {
            let pid = start(&mut ctl, &id, "").await?;
            ctl.print(
                json!({"id": id, "pid": pid}),
                format!("started {id} (pid {pid})"),
            );
            Ok(0)
        }
        Command::Run {
            id,
            bundle,
            detach,
            interactive,
        } => run_container(&mut ctl, &id, &bundle, detach, interactive).await,
        Command::Ps { all_namespaces } => ps(&ctl, all_namespaces).await,
        Command::State { id, exec_id } => {
            let s = ctl
                .task
                .state(ctl.req(StateRequest {
                    id: id.clone(),
                    exec_id,
                }))
                .await
                .map_err(status)?
                .into_inner();
            let status = status_name(s.status);
            ctl.print(
                json!({"id": s.id, "pid": s.pid, "status": status, "exit_status": s.exit_status,
                       "bundle": s.bundle, "stdout": s.stdout, "stderr": s.stderr,
                       "exited_at": s.exited_at.map(|t| t.seconds)}),
                format!(
                    "{} pid {} {status}{} bundle {}",
                    s.id,
                    s.pid,
                    if status == "stopped" {
                        format!(" (exit {})", s.exit_status)
                    } else {
                        String::new()
                    },
                    s.bundle
                ),
            );
            Ok(0)
        }
        Command::Exec { id, exec_id, args } => exec(&mut ctl, &id, &exec_id, args).await,
        Command::Kill {
            id,
            signal,
            all,
            exec_id,
        } => {
            let signal = parse_signal(&signal)?;
            ctl.task
                .kill(ctl.req(KillRequest {
                    id: id.clone(),
                    exec_id,
                    signal,
                    all,
                }))
                .await
                .map_err(status)?;
            ctl.print(
                json!({"id": id, "signal": signal}),
                format!("sent signal {signal} to {id}"),
            );
            Ok(0)
        }
        Command::Wait { id } => {
            let code = wait(&mut ctl, &id, "").await?;
            ctl.print(json!({"id": id, "exit_status": code}), code.to_string());
            Ok(code as i32)
        }
        Command::Delete { id } => {
            let d = ctl
                .task
                .delete(ctl.req(DeleteRequest {
                    id: id.clone(),
                    exec_id: String::new(),
                }))
                .await
                .map_err(status)?
                .into_inner();
            ctl.print(
                json!({"id": id, "pid": d.pid, "exit_status": d.exit_status}),
                format!("deleted {id} (exit {})", d.exit_status),
            );
            Ok(0)
        }
        Command::Events { filter } => events(&ctl, filter).await,
    }
}

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

fn uri(path: Option<PathBuf>) -> String {
    path.map(|p| p.display().to_string()).unwrap_or_default()
}

/// `Create` with the three stdio values as containerd passes them (empty: none).
async fn create(
    ctl: &mut Ctl,
    id: &str,
    bundle: &Path,
    stdin: String,
    stdout: String,
    stderr: String,
) -> Result<u32> {
    let bundle = std::path::absolute(bundle)?;
    let r = ctl
        .task
        .create(ctl.req(CreateTaskRequest {
            id: id.into(),
            bundle: bundle.display().to_string(),
            stdin,
            stdout,
            stderr,
            ..Default::default()
        }))
        .await
        .map_err(status)?;
    Ok(r.into_inner().pid)
}

async fn start(ctl: &mut Ctl, id: &str, exec_id: &str) -> Result<u32> {
    let r = ctl
        .task
        .start(ctl.req(StartRequest {
            id: id.into(),
            exec_id: exec_id.into(),
        }))
        .await
        .map_err(status)?;
    Ok(r.into_inner().pid)
}

async fn wait(ctl: &mut Ctl, id: &str, exec_id: &str) -> Result<u32> {
    let r = ctl
        .task
        .wait(ctl.req(WaitRequest {
            id: id.into(),
            exec_id: exec_id.into(),
        }))
        .await
        .map_err(status)?;
    Ok(r.into_inner().exit_status)
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

async fn run_container(
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
    let deleted = ctl
        .task
        .delete(ctl.req(DeleteRequest {
            id: id.into(),
            exec_id: String::new(),
        }))
        .await;
    attached.finish();
    let code = code?;
    deleted.map_err(status)?;
    Ok(code as i32)
}

async fn exec(ctl: &mut Ctl, id: &str, exec_id: &str, args: Vec<String>) -> Result<i32> {
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
    let _ = ctl
        .task
        .delete(ctl.req(DeleteRequest {
            id: id.into(),
            exec_id: exec_id.into(),
        }))
        .await;
    attached.finish();
    Ok(code? as i32)
}

async fn ps(ctl: &Ctl, all: bool) -> Result<i32> {
    let mut admin = AdminClient::with_origin(ctl.channel.clone(), origin());
    let namespace = if all {
        String::new()
    } else {
        ctl.namespace.clone()
    };
    let listed = admin
        .list(ListRequest { namespace })
        .await
        .map_err(status)?
        .into_inner();
    // What the daemon's recovery left for a human: on stderr, so the table stays parseable.
    for problem in &listed.problems {
        eprintln!("shimlessctl: warning: {problem}");
    }
    let tasks = listed.tasks;
    if ctl.json {
        let rows: Vec<_> = tasks
            .iter()
            .map(|t| {
                json!({"namespace": t.namespace, "id": t.id, "pid": t.pid, "status": t.status,
                       "exit_status": (t.status == "stopped").then_some(t.exit_status),
                       "created_at": t.created_at.map(|c| c.seconds), "execs": t.execs})
            })
            .collect();
        println!("{}", serde_json::Value::Array(rows));
        return Ok(0);
    }
    println!(
        "{:<12} {:<24} {:>8} {:<8} {:>5} {:>8}",
        "NAMESPACE", "ID", "PID", "STATUS", "EXIT", "AGE"
    );
    for t in tasks {
        let exit = if t.status == "stopped" {
            t.exit_status.to_string()
        } else {
            "-".into()
        };
        println!(
            "{:<12} {:<24} {:>8} {:<8} {:>5} {:>8}",
            t.namespace,
            t.id,
            t.pid,
            t.status,
            exit,
            age(t.created_at)
        );
    }
    Ok(0)
}

fn age(created: Option<prost_types::Timestamp>) -> String {
    let Some(created) = created else {
        return "-".into();
    };
    let at = SystemTime::UNIX_EPOCH + Duration::from_secs(created.seconds.max(0) as u64);
    let secs = SystemTime::now()
        .duration_since(at)
        .unwrap_or_default()
        .as_secs();
    match secs {
        0..60 => format!("{secs}s"),
        60..3600 => format!("{}m", secs / 60),
        3600..86400 => format!("{}h", secs / 3600),
        _ => format!("{}d", secs / 86400),
    }
}

async fn events(ctl: &Ctl, filters: Vec<String>) -> Result<i32> {
    let mut client = EventsClient::with_origin(ctl.channel.clone(), origin());
    let mut stream = client
        .subscribe(SubscribeRequest { filters })
        .await
        .map_err(status)?
        .into_inner();
    while let Some(envelope) = stream.message().await.map_err(status)? {
        let event = envelope.event.as_ref().and_then(TaskEvent::from_any);
        let when = envelope.timestamp.map_or(0, |t| t.seconds);
        let detail = match &event {
            Some(TaskEvent::Exit(e)) => format!("{} pid {} exit {}", e.id, e.pid, e.exit_status),
            Some(TaskEvent::Create(e)) => format!("{} pid {}", e.container_id, e.pid),
            Some(TaskEvent::Start(e)) => format!("{} pid {}", e.container_id, e.pid),
            Some(TaskEvent::Delete(e)) => format!("{} exit {}", e.container_id, e.exit_status),
            Some(other) => other.container_id().to_string(),
            None => "(undecodable)".into(),
        };
        ctl.print(
            json!({"timestamp": when, "namespace": envelope.namespace,
                   "topic": envelope.topic, "event": format!("{event:?}")}),
            format!("{when} {} {} {detail}", envelope.namespace, envelope.topic),
        );
    }
    Ok(0)
}

fn status_name(status: i32) -> &'static str {
    use task_service::api::containerd::v1::types::Status;
    match Status::try_from(status) {
        Ok(Status::Created) => "created",
        Ok(Status::Running) => "running",
        Ok(Status::Stopped) => "stopped",
        Ok(Status::Paused) => "paused",
        Ok(Status::Pausing) => "pausing",
        _ => "unknown",
    }
}

/// A signal by number (`9`) or name (`KILL`, `SIGKILL`, `term`).
fn parse_signal(text: &str) -> Result<u32> {
    if let Ok(n) = text.parse::<u32>() {
        return if (1..=64).contains(&n) {
            Ok(n)
        } else {
            Err(format!("signal {n} is not between 1 and 64").into())
        };
    }
    let name = text.to_ascii_uppercase();
    let name = name.strip_prefix("SIG").unwrap_or(&name);
    let known = [
        ("HUP", 1),
        ("INT", 2),
        ("QUIT", 3),
        ("ABRT", 6),
        ("KILL", 9),
        ("USR1", 10),
        ("SEGV", 11),
        ("USR2", 12),
        ("PIPE", 13),
        ("ALRM", 14),
        ("TERM", 15),
        ("CONT", 18),
        ("STOP", 19),
    ];
    known
        .iter()
        .find(|(n, _)| *n == name)
        .map(|(_, v)| *v)
        .ok_or_else(|| format!("unknown signal {text:?} (use a number or a name like TERM)").into())
}
