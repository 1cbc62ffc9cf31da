//! `shimless-front`: owns the public socket and every containerd connection, forwards each call
//! to `shimlessd` on its private socket, holds calls while the daemon restarts, and (unless the
//! configuration says `supervise = false`) starts the daemon and starts it again when it exits.
//! See `task_service::front`.

use clap::Parser;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::AtomicU32;
use std::time::Duration;
use task_service::config::{Config, default_path};
use task_service::front::{self, FrontConfig, handover, supervise};

/// The connection holder in front of shimlessd: containerd talks to it, shimlessd may restart
/// behind it unseen. Normally started by `containerd-shim-shimless-v2 start`.
#[derive(Debug, Parser)]
#[command(
    version,
    after_help = "Examples:\n  shimless-front                               # /etc/shimless/config.toml or defaults\n  shimless-front --config /etc/shimless/config.toml\n  SHIMLESS_CONFIG=/tmp/shimless.toml shimless-front"
)]
struct Args {
    /// The configuration file (TOML; missing means built-in defaults). Default:
    /// $SHIMLESS_CONFIG, else /etc/shimless/config.toml.
    #[arg(long)]
    config: Option<PathBuf>,
    /// Only check that this binary can run as the front with this configuration, print
    /// `shimless-front-ready <version>` and exit (what an upgrade runs first).
    #[arg(long)]
    check: bool,
    /// Take over from the front that exec'd this binary: the descriptor of its handover
    /// manifest (set by an upgrade, not by hand).
    #[arg(long, value_name = "FD")]
    handover_fd: Option<i32>,
    /// Overrides `log_level`: error, warn, info, debug or trace.
    #[arg(long)]
    log_level: Option<task_service::logging::LogLevel>,
    /// Overrides `log_format`: text or json (one object per line).
    #[arg(long)]
    log_format: Option<task_service::logging::LogFormat>,
}

fn main() {
    let args = Args::parse();
    if let Err(e) = run(args) {
        task_service::logging::fatal(&format!("shimless-front: {e}"));
        std::process::exit(1);
    }
}

fn run(args: Args) -> Result<(), Box<dyn std::error::Error>> {
    // Read first: the manifest's descriptors must be owned before anything else opens files.
    let manifest = args.handover_fd.map(handover::Manifest::take).transpose()?;
    let config_path = args.config.unwrap_or_else(default_path);
    let config = Config::load(&config_path)?;
    if args.check {
        if config.supervise && supervise::find_binary("shimlessd").is_none() {
            return Err("shimlessd is neither beside shimless-front nor on PATH".into());
        }
        println!("{} {}", handover::READY, env!("CARGO_PKG_VERSION"));
        return Ok(());
    }
    task_service::logging::init(
        args.log_level.unwrap_or(config.log_level),
        args.log_format.unwrap_or(config.log_format),
    );
    task_service::logcap::cap_stderr(config.log_max_bytes, config.log_keep);
    let binary = std::env::current_exe()?;
    if manifest.is_none() && std::os::unix::net::UnixStream::connect(&config.socket).is_ok() {
        return Err(format!(
            "something already answers on {}: another front is running",
            config.socket.display()
        )
        .into());
    }
    // One connection per containerd task, plus the daemon link.
    task_service::grpc::accept::raise_nofile_limit();
    let daemon = supervise_daemon(&config, &config_path, manifest.as_ref())?;
    let lineage = handover::Lineage {
        binary,
        config_path: config_path.clone(),
        generation: manifest.as_ref().map_or(0, |m| m.generation + 1),
        daemon,
    };
    let ex = Arc::new(smol::Executor::new());
    let front = FrontConfig {
        daemon_socket: config.daemon_socket.clone(),
        namespace_dir: config.namespace_dir(),
        hold: Duration::from_millis(config.hold_ms),
        allowed_uids: config.allowed_uids.clone(),
    };
    let started = std::time::SystemTime::now();
    smol::block_on(ex.run(async {
        if let Some(address) = &config.front_metrics_address {
            serve_metrics(address, &ex, started).await;
        }
        log_serving(&config, lineage.generation, manifest.as_ref());
        match manifest {
            Some(manifest) => front::resume(manifest, front, ex.clone(), Some(lineage)).await?,
            None => {
                let listener = task_service::grpc::listen::bind(&config.socket)?;
                front::serve_upgradable(listener, front, ex.clone(), Some(lineage)).await?
            }
        }
        Ok(())
    }))
}

/// Starts `shimlessd` under the front's supervision when the config asks for it (adopting the
/// one a handed-over front supervised); its PID.
fn supervise_daemon(
    config: &Config,
    config_path: &std::path::Path,
    manifest: Option<&handover::Manifest>,
) -> Result<Option<Arc<AtomicU32>>, Box<dyn std::error::Error>> {
    if !config.supervise {
        return Ok(None);
    }
    let program = supervise::find_binary("shimlessd")
        .ok_or("shimlessd is neither beside shimless-front nor on PATH")?;
    let pid = supervise::Supervisor {
        program,
        args: vec![
            "--config".into(),
            config_path.into(),
            "--socket".into(),
            config.daemon_socket.clone().into(),
        ],
        log: config.log_dir.join("shimlessd.log"),
        restart_delay: Duration::from_millis(config.restart_delay_ms),
    }
    .start_adopting(manifest.and_then(|m| m.daemon_pid))?;
    Ok(Some(pid))
}

/// The line that says the front serves (tests and operators wait for "serving on").
fn log_serving(config: &Config, generation: u32, manifest: Option<&handover::Manifest>) {
    tracing::info!(
        "shimless-front: serving on {} for shimlessd at {} (pid {}, supervising: {}, \
         generation {generation}{})",
        config.socket.display(),
        config.daemon_socket.display(),
        std::process::id(),
        config.supervise,
        match manifest {
            Some(m) => format!(
                ", {} connection(s) handed over, unread for {} ms",
                m.connections.len(),
                handover::monotonic_ns().saturating_sub(m.paused_at_ns) / 1_000_000
            ),
            None => String::new(),
        }
    );
}

/// Serves the front's metrics on `address` from now on; a failure to bind is logged and leaves
/// the front serving.
async fn serve_metrics(
    address: &task_service::metrics::address::MetricsAddress,
    ex: &Arc<smol::Executor<'static>>,
    started: std::time::SystemTime,
) {
    use task_service::metrics::{FRONT, exposition::Exposition, http::Listener, process_info};
    match Listener::bind(address).await {
        Ok(listener) => {
            let render = move || {
                let mut out = Exposition::default();
                process_info(&mut out, "shimless_front", started);
                FRONT.render(&mut out);
                out.finish()
            };
            listener.serve(ex.clone(), Arc::new(render));
            tracing::info!("shimless-front: metrics on {address}");
        }
        Err(e) => tracing::error!("shimless-front: cannot serve metrics on {address}: {e}"),
    }
}
