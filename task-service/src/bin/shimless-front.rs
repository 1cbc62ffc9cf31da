//! `shimless-front`: owns the public socket and every containerd connection, forwards each call
//! to `shimlessd` on its private socket, holds calls while the daemon restarts, and (unless the
//! configuration says `supervise = false`) starts the daemon and starts it again when it exits.
//! See `task_service::front`.

use clap::Parser;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;
use task_service::config::{Config, default_path};
use task_service::front::{self, FrontConfig, supervise};

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
}

fn main() {
    let args = Args::parse();
    if let Err(e) = run(args) {
        eprintln!("shimless-front: {e}");
        std::process::exit(1);
    }
}

fn run(args: Args) -> Result<(), Box<dyn std::error::Error>> {
    let config_path = args.config.unwrap_or_else(default_path);
    let config = Config::load(&config_path)?;
    task_service::logcap::cap_stderr(config.log_max_bytes);
    if std::os::unix::net::UnixStream::connect(&config.socket).is_ok() {
        return Err(format!(
            "something already answers on {}: another front is running",
            config.socket.display()
        )
        .into());
    }
    // One connection per containerd task, plus the daemon link.
    task_service::grpc::accept::raise_nofile_limit();
    if config.supervise {
        let program = supervise::find_binary("shimlessd")
            .ok_or("shimlessd is neither beside shimless-front nor on PATH")?;
        supervise::Supervisor {
            program,
            args: vec![
                "--config".into(),
                config_path.clone().into(),
                "--socket".into(),
                config.daemon_socket.clone().into(),
            ],
            log: config.log_dir.join("shimlessd.log"),
            restart_delay: Duration::from_millis(config.restart_delay_ms),
        }
        .start()?;
    }
    let ex = Arc::new(smol::Executor::new());
    let front = FrontConfig {
        daemon_socket: config.daemon_socket.clone(),
        namespace_dir: config.namespace_dir(),
        hold: Duration::from_millis(config.hold_ms),
        allowed_uids: config.allowed_uids.clone(),
    };
    smol::block_on(ex.run(async {
        let listener = task_service::grpc::listen::bind(&config.socket)?;
        eprintln!(
            "shimless-front: serving on {} for shimlessd at {} (pid {}, supervising: {})",
            config.socket.display(),
            config.daemon_socket.display(),
            std::process::id(),
            config.supervise
        );
        front::serve(listener, front, ex.clone()).await?;
        Ok(())
    }))
}
