//! `shimlessctl`: drive `shimlessd` by hand, through the same gRPC API containerd uses.
//!
//! `main.rs` holds the command line and sends each command to its module: `task` (the Task
//! calls and their printing), `attach` (`run` and `exec`, which attach the process's output and
//! exit with its code), `show` (`ps`, `probes` and `events`), `upgrade` (the front's handover).

mod attach;
mod show;
mod status;
mod task;
mod upgrade;

use clap::{Parser, Subcommand};
use std::path::PathBuf;
use task::Ctl;

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
  shimlessctl probes -A                                    # daemon-run probes, results, counters
  shimlessctl exec web --exec-id probe -- cat /etc/hostname
  shimlessctl kill web --signal TERM
  shimlessctl wait web && shimlessctl delete web
  shimlessctl events --filter topic==/tasks/exit
  shimlessctl --json state web
  shimlessctl upgrade                                      # after installing new binaries"
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
    /// List the probes the daemon runs (pod annotation shimless.io/probes): state, last
    /// result, counters; then the node's prober counters.
    Probes {
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
    /// Show whether the node's shimless is healthy: front and daemon (pids, version, uptime),
    /// exitwatch (pins, map entries), containers by namespace and state, events waiting for
    /// containerd, the daemon's latest warnings and errors. Exits 0 when healthy, 3 when
    /// degraded (no exitwatch), 2 when the daemon does not answer, 1 when nothing answers.
    Status,
    /// Hand the front's sockets and containerd's connections to the front binary installed
    /// now (containerd sees no shim go away); exits 0 once the new front answers, 1 with the
    /// reason if it could not take over (the old front then goes on serving).
    Upgrade {
        /// The new front binary; default: the path the running front was started from.
        #[arg(long)]
        binary: Option<PathBuf>,
    },
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

/// What every command returns: an error is printed as `shimlessctl: <error>` and exits 1.
type Result<T> = std::result::Result<T, Box<dyn std::error::Error>>;

/// A gRPC status as an error message naming the code.
fn status(e: tonic::Status) -> Box<dyn std::error::Error> {
    format!("{:?}: {}", e.code(), e.message()).into()
}

async fn run(cli: Cli) -> Result<i32> {
    let mut ctl = Ctl::connect(&cli.socket, cli.namespace, cli.json).await?;
    match cli.command {
        Command::Create {
            id,
            bundle,
            stdout,
            stderr,
        } => task::create_detached(&mut ctl, &id, &bundle, stdout, stderr).await,
        Command::Start { id } => task::start_init(&mut ctl, &id).await,
        Command::Run {
            id,
            bundle,
            detach,
            interactive,
        } => attach::run_container(&mut ctl, &id, &bundle, detach, interactive).await,
        Command::Ps { all_namespaces } => show::ps(&ctl, all_namespaces).await,
        Command::Probes { all_namespaces } => show::probes(&ctl, all_namespaces).await,
        Command::State { id, exec_id } => task::state(&mut ctl, &id, exec_id).await,
        Command::Exec { id, exec_id, args } => attach::exec(&mut ctl, &id, &exec_id, args).await,
        Command::Kill {
            id,
            signal,
            all,
            exec_id,
        } => task::kill(&mut ctl, &id, &signal, all, exec_id).await,
        Command::Wait { id } => task::wait_init(&mut ctl, &id).await,
        Command::Delete { id } => task::delete_init(&mut ctl, &id).await,
        Command::Events { filter } => show::events(&ctl, filter).await,
        Command::Status => status::status_of(&ctl).await,
        Command::Upgrade { binary } => {
            let binary = binary.map(|b| b.display().to_string()).unwrap_or_default();
            upgrade::upgrade(&ctl.client, &cli.socket, binary, cli.json).await
        }
    }
}
