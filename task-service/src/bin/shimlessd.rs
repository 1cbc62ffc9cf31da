//! `shimlessd`: one daemon serving containerd's shim Task API for every container of the node.
//!
//! Reads `/etc/shimless/config.toml` if it exists (built-in defaults otherwise), takes back the
//! containers of a previous run (printing what it found), and serves on the configured socket.
//! Containers outlive it: stopping or killing the daemon never stops a container.

use clap::Parser;
use std::path::PathBuf;
use std::sync::Arc;
use task_service::config::Config;
use task_service::daemon::Daemon;
use task_service::grpc;
use task_service::grpc::observe::Observed;

/// One daemon serving containerd's shim Task API (containerd.task.v3.Task) for every container
/// of the node, on runc or crun.
#[derive(Debug, Parser)]
#[command(
    version,
    after_help = "Examples:\n  shimlessd                                   # defaults: /run/shimless/shimless.sock\n  shimlessd --socket /tmp/s.sock --state-dir /tmp/state --runc-root /tmp/runc\n  shimlessd --config /etc/shimless/config.toml --runtime crun"
)]
struct Args {
    /// The configuration file (TOML; a missing file means built-in defaults).
    /// Default: $SHIMLESS_CONFIG, else /etc/shimless/config.toml.
    #[arg(long)]
    config: Option<PathBuf>,
    /// Overrides `socket`: the gRPC unix socket.
    #[arg(long)]
    socket: Option<PathBuf>,
    /// Overrides `state_dir`: where container records live.
    #[arg(long)]
    state_dir: Option<PathBuf>,
    /// Overrides `runc_root`: the parent of each namespace's runtime root.
    #[arg(long)]
    runc_root: Option<PathBuf>,
    /// Overrides `bpf_pin_dir`: where exitwatch pins its maps in bpffs.
    #[arg(long)]
    bpf_pin_dir: Option<PathBuf>,
    /// Overrides `runtime`: runc, crun or a path.
    #[arg(long)]
    runtime: Option<String>,
    /// Overrides `log_level`: error, warn, info, debug (a line per call) or trace.
    #[arg(long)]
    log_level: Option<task_service::logging::LogLevel>,
    /// Overrides `log_format`: text or json (one object per line).
    #[arg(long)]
    log_format: Option<task_service::logging::LogFormat>,
    /// Overrides `metrics_address`: unix:/PATH or a loopback IP:PORT to serve metrics on.
    #[arg(long)]
    metrics_address: Option<task_service::metrics::address::MetricsAddress>,
}

fn main() {
    let args = Args::parse();
    if let Err(e) = run(args) {
        task_service::logging::fatal(&format!("shimlessd: {e}"));
        std::process::exit(1);
    }
}

/// The configuration file with the command line's overrides (paths must be absolute).
fn config_of(args: Args) -> Result<Config, Box<dyn std::error::Error>> {
    let mut config = Config::load(
        args.config
            .unwrap_or_else(task_service::config::default_path),
    )?;
    let overrides = [
        (&mut config.socket, args.socket),
        (&mut config.state_dir, args.state_dir),
        (&mut config.runc_root, args.runc_root),
        (&mut config.bpf_pin_dir, args.bpf_pin_dir),
    ];
    for (slot, value) in overrides {
        if let Some(value) = value {
            if !value.is_absolute() {
                return Err(format!("{} must be an absolute path", value.display()).into());
            }
            *slot = value;
        }
    }
    if let Some(runtime) = args.runtime {
        config.runtime = runtime;
    }
    config.log_level = args.log_level.unwrap_or(config.log_level);
    config.log_format = args.log_format.unwrap_or(config.log_format);
    if args.metrics_address.is_some() {
        config.metrics_address = args.metrics_address;
    }
    Ok(config)
}

fn run(args: Args) -> Result<(), Box<dyn std::error::Error>> {
    let started = std::time::SystemTime::now();
    let config = config_of(args)?;
    task_service::logging::init(config.log_level, config.log_format);
    task_service::config::check_bpf_pin_dir(&config.bpf_pin_dir)
        .map_err(|problem| format!("--bpf-pin-dir {}: {problem}", config.bpf_pin_dir.display()))?;
    // Each container costs a pidfd and up to two FIFO readers: take every fd the hard limit
    // allows rather than fail at a few hundred containers.
    task_service::grpc::accept::raise_nofile_limit();
    // Before anything else touches the state or the socket: a second daemon on this directory
    // would unlink the first one's live socket and recover its containers a second time.
    let _lock = task_service::state::StateLock::acquire(&config.state_dir)?;
    task_service::logcap::cap_stderr(config.log_max_bytes, config.log_keep);
    let ex = Arc::new(smol::Executor::new());
    let daemon = Daemon::new(config.clone(), ex.clone())
        .map_err(|e| format!("cannot become the child subreaper: {e}"))?;
    daemon
        .reap_orphans()
        .map_err(|e| format!("cannot start the orphan reaper: {e}"))?;
    for warning in daemon.warnings() {
        tracing::warn!("shimlessd: warning: {warning}");
    }
    let status = task_service::daemon::HealthStatus::of(&daemon);
    if let Some(degraded) = status.degraded() {
        tracing::warn!("shimlessd: warning: {degraded}");
    }
    // A second thread runs tasks while the first waits on a slow runtime call.
    {
        let ex = ex.clone();
        std::thread::spawn(move || smol::block_on(ex.run(futures_lite::future::pending::<()>())));
    }
    // The forwarder subscribes first, so the exits recovered below reach containerd as well.
    daemon.forward_events();
    smol::block_on(ex.run(async {
        let recovering = std::time::Instant::now();
        let recovery = daemon
            .recover()
            .await
            .map_err(|e| format!("recovery failed: {}", e.message()))?;
        task_service::metrics::DAEMON.recovered(recovering.elapsed());
        tracing::info!("shimlessd: recovered: {recovery}");
        if let Some(address) = &config.metrics_address {
            serve_metrics(address, &daemon, &ex, started).await;
        }
        let listener = grpc::listen::bind(&config.socket)?;
        tracing::info!(
            "shimlessd: serving on {} (pid {}, exit codes kept in the kernel: {})",
            config.socket.display(),
            std::process::id(),
            if daemon.kernel_recording() {
                "yes"
            } else {
                "no"
            }
        );
        let serve = grpc::ServeConfig {
            allowed_uids: config.allowed_uids.clone(),
            ..grpc::ServeConfig::default()
        };
        let calls = &task_service::metrics::DAEMON.calls;
        grpc::serve(
            listener,
            Observed::new(status.around(daemon.into_router()), calls),
            ex.clone(),
            serve,
        )
        .await?;
        Ok::<(), Box<dyn std::error::Error>>(())
    }))
}

/// Serves the daemon's metrics on `address` from now on; a failure to bind is logged and
/// leaves the daemon serving containers (metrics are not worth stopping the node for).
async fn serve_metrics(
    address: &task_service::metrics::address::MetricsAddress,
    daemon: &Daemon,
    ex: &Arc<smol::Executor<'static>>,
    started: std::time::SystemTime,
) {
    use task_service::metrics::http::Listener;
    match Listener::bind(address).await {
        Ok(listener) => {
            let daemon = daemon.clone();
            listener.serve(ex.clone(), Arc::new(move || daemon.metrics_text(started)));
            tracing::info!("shimlessd: metrics on {address}");
        }
        Err(e) => tracing::error!("shimlessd: cannot serve metrics on {address}: {e}"),
    }
}
