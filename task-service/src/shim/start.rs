//! `start`: the front serving, containerd's address registered, the bootstrap answer — JSON, or
//! a `BootstrapResult` protobuf when containerd 2.3+ asked with `BootstrapParams` on stdin.

use super::{ShimError, log};
use crate::api::containerd::runtime::bootstrap::v1::{BootstrapParams, BootstrapResult};
use crate::api::containerd::services::version::v1::version_client::VersionClient;
use crate::api::shimless::v1::{ListenRequest, RegisterPublisherRequest};
use crate::client::Client;
use crate::config::Config;
use crate::front::Protocol;
use crate::front::supervise::find_binary;
use prost::Message;
use std::os::unix::fs::OpenOptionsExt;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

/// How long `start` waits for a front it started to listen.
const FRONT_START: Duration = Duration::from_secs(20);
/// How long registering may take (the front holds it until the daemon has recovered).
const REGISTER: Duration = Duration::from_secs(60);

pub(super) fn start(
    flags: &super::Flags,
    config: &Config,
    config_path: &Path,
    stdin: &[u8],
) -> Result<Vec<u8>, ShimError> {
    let asked = Asked::read(stdin);
    let flags = asked.fill(flags);
    if flags.id.is_empty() {
        return Err(ShimError::Missing("id"));
    }
    if flags.namespace.is_empty() {
        return Err(ShimError::Missing("namespace"));
    }
    let version = match &asked {
        Asked::Bootstrap(params) if !params.containerd_version.is_empty() => {
            version_for(&params.containerd_version)
        }
        _ => smol::block_on(bootstrap_version(&flags.address)),
    };
    if version >= 3 && config.containerd_protocol == Protocol::Grpc {
        return Err(ShimError::Protocol(format!(
            "containerd_protocol = \"grpc\" (in {}) does not work with containerd 2.x: its gRPC \
             client to a shim starts idle, and it takes an idle connection for a dead shim and \
             deletes the task right after start. Use containerd_protocol = \"ttrpc\" (the \
             default) with containerd 2.x",
            config_path.display()
        )));
    }
    ensure_front(config, config_path)?;
    let socket = smol::block_on(async {
        let socket = namespace_socket(config, &flags.namespace).await?;
        if !flags.address.is_empty() {
            register(config, &flags).await?;
        }
        Ok::<_, ShimError>(socket)
    })?;
    log(&format!(
        "task {}/{} is served by shimless at {socket} (bootstrap version {version}{})",
        flags.namespace,
        flags.id,
        if matches!(asked, Asked::Bootstrap(_)) {
            ", asked with BootstrapParams"
        } else {
            ""
        }
    ));
    answer(config, &asked, &socket, version)
}

/// Writes `address` and `bootstrap.json` in the bundle and returns the answer, in the form
/// containerd asked in.
fn answer(
    config: &Config,
    asked: &Asked,
    socket: &str,
    version: u32,
) -> Result<Vec<u8>, ShimError> {
    let address = match config.containerd_protocol {
        // A bare path for gRPC: containerd 1.7 and 2.x dial it with net.Dial("unix", address)
        // before adding the scheme themselves, so `unix://...` would fail with ENOENT.
        Protocol::Grpc => socket.to_string(),
        // The scheme for ttrpc: containerd's ttrpc dialer takes a bare path for an abstract
        // socket (`\0/run/...`).
        Protocol::Ttrpc => format!("unix://{socket}"),
    };
    let json = serde_json::json!({
        "version": version,
        "address": address,
        "protocol": config.containerd_protocol.as_str(),
    })
    .to_string();
    // What a restarted containerd reads to reconnect to the task (1.7: `address`, which may hold
    // the bootstrap JSON; 2.x: `bootstrap.json`). Go shims write `address` themselves, and
    // without it a restarted containerd takes every task for dead and deletes it.
    for name in ["address", "bootstrap.json"] {
        write_atomically(Path::new(name), json.as_bytes())
            .map_err(|e| ShimError::Front(format!("cannot write {name} in the bundle: {e}")))?;
    }
    Ok(match asked {
        Asked::Bootstrap(_) => BootstrapResult {
            version: version as i32,
            address,
            protocol: config.containerd_protocol.as_str().into(),
            ..Default::default()
        }
        .encode_to_vec(),
        Asked::Legacy => json.into_bytes(),
    })
}

/// What containerd wrote on `start`'s stdin.
#[derive(Debug, PartialEq)]
enum Asked {
    /// Nothing, or the runtime options as an encoded `Any` (containerd 1.x to 2.2): answer
    /// with the bootstrap JSON.
    Legacy,
    /// containerd 2.3+'s encoded `BootstrapParams`: answer with a `BootstrapResult`.
    Bootstrap(BootstrapParams),
}

impl Asked {
    /// Tells the two forms apart: both decode as either message (an `Any` is fields 1 and 2,
    /// strings or bytes), but containerd always fills `BootstrapParams`' version or addresses
    /// (fields 4 to 6), which an `Any` never has.
    fn read(stdin: &[u8]) -> Asked {
        match BootstrapParams::decode(stdin) {
            Ok(params)
                if !params.containerd_version.is_empty()
                    || !params.containerd_ttrpc_address.is_empty()
                    || !params.containerd_grpc_address.is_empty() =>
            {
                Asked::Bootstrap(params)
            }
            _ => Asked::Legacy,
        }
    }

    /// `flags`, with what `BootstrapParams` say filling what they leave out (containerd 2.3
    /// still passes the flags; a later one may not).
    fn fill(&self, flags: &super::Flags) -> super::Flags {
        let mut flags = flags.clone();
        if let Asked::Bootstrap(params) = self {
            for (slot, value) in [
                (&mut flags.id, &params.instance_id),
                (&mut flags.namespace, &params.namespace),
                (&mut flags.address, &params.containerd_grpc_address),
            ] {
                if slot.is_empty() {
                    slot.clone_from(value);
                }
            }
        }
        flags
    }
}

/// Writes `path` (relative to the bundle, the working directory) through a temporary file, so
/// a reader never sees half of it.
fn write_atomically(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    let tmp = PathBuf::from(format!(".{}.shimless-tmp", path.display()));
    std::fs::write(&tmp, bytes)?;
    std::fs::rename(&tmp, path)
}

fn answers(socket: &Path) -> bool {
    std::os::unix::net::UnixStream::connect(socket).is_ok()
}

/// Starts the front unless it answers on `config.socket`; concurrent callers serialize on a lock
/// file beside the socket, and only the first one starts it.
fn ensure_front(config: &Config, config_path: &Path) -> Result<(), ShimError> {
    if answers(&config.socket) {
        return Ok(());
    }
    let front_err = |what: &str, e: std::io::Error| ShimError::Front(format!("{what}: {e}"));
    let run_dir = config.socket.parent().unwrap_or(Path::new("/"));
    std::fs::create_dir_all(run_dir).map_err(|e| front_err("create the socket's directory", e))?;
    std::fs::create_dir_all(&config.log_dir)
        .map_err(|e| front_err("create the log directory", e))?;
    let lock_path = run_dir.join(".shimless-start.lock");
    let lock = std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&lock_path)
        .map_err(|e| front_err("open the start lock", e))?;
    rustix::fs::flock(&lock, rustix::fs::FlockOperation::LockExclusive)
        .map_err(|e| front_err("take the start lock", e.into()))?;
    if answers(&config.socket) {
        return Ok(());
    }
    let program = find_binary("shimless-front").ok_or_else(|| {
        ShimError::Front(
            "shimless-front is neither beside this binary nor on PATH: install it with \
             containerd-shim-shimless-v2 and shimlessd"
                .into(),
        )
    })?;
    let log_path = config.log_dir.join("front.log");
    // Root's only: the logs name bundles, stdio paths and runtime errors.
    let log_file = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .mode(0o600)
        .open(&log_path)
        .map_err(|e| front_err("open front.log", e))?;
    let mut child = std::process::Command::new(&program)
        .arg("--config")
        .arg(config_path)
        .stdin(std::process::Stdio::null())
        // Never containerd's pipe: containerd reads until every writer has closed it.
        .stdout(std::process::Stdio::null())
        .stderr(log_file)
        .current_dir("/")
        // Out of containerd's process group: a signal to it must not reach the front.
        .process_group(0)
        // containerd.service is Type=notify: its NOTIFY_SOCKET would reach runc, which then
        // binds a notify socket in the container's state directory, a path too long for a
        // unix socket under /run/shimless/runc/<namespace>/<64-hex id> ("bind: invalid
        // argument"). The stock runc shim does not pass it on either.
        .env_remove("NOTIFY_SOCKET")
        .spawn()
        .map_err(|e| front_err(&format!("run {}", program.display()), e))?;
    let deadline = Instant::now() + FRONT_START;
    while !answers(&config.socket) {
        if let Ok(Some(status)) = child.try_wait() {
            return Err(ShimError::Front(format!(
                "it exited ({status}); see {}",
                log_path.display()
            )));
        }
        if Instant::now() > deadline {
            return Err(ShimError::Front(format!(
                "it did not listen on {} within {FRONT_START:?}; see {}",
                config.socket.display(),
                log_path.display()
            )));
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    log(&format!(
        "started shimless-front (pid {}) on {}",
        child.id(),
        config.socket.display()
    ));
    Ok(())
}

/// A connection to the front's own socket.
async fn connect_front(config: &Config) -> Result<Client, ShimError> {
    Client::connect(&config.socket)
        .await
        .map_err(|e| ShimError::Front(format!("connect to {}: {e}", config.socket.display())))
}

/// The socket of the task's namespace, served by the front: containerd sends no namespace with
/// its calls to a gRPC shim, so the socket says it.
async fn namespace_socket(config: &Config, namespace: &str) -> Result<String, ShimError> {
    let mut front = connect_front(config).await?.front();
    let mut req = tonic::Request::new(ListenRequest {
        namespace: namespace.to_string(),
        protocol: config.containerd_protocol.as_str().to_string(),
    });
    req.set_timeout(Duration::from_secs(10));
    let reply = front
        .listen(req)
        .await
        .map_err(|s| ShimError::Front(s.message().to_string()))?;
    Ok(reply.into_inner().socket)
}

/// Tells the daemon (through the front, which holds the call until the daemon answers) where
/// this container's events go.
async fn register(config: &Config, flags: &super::Flags) -> Result<(), ShimError> {
    let mut admin = connect_front(config).await?.admin();
    let mut req = tonic::Request::new(RegisterPublisherRequest {
        namespace: flags.namespace.clone(),
        id: flags.id.clone(),
        address: flags.address.clone(),
    });
    req.set_timeout(REGISTER);
    admin
        .register_publisher(req)
        .await
        .map_err(|s| ShimError::Daemon(s.message().to_string()))?;
    Ok(())
}

/// 2 for containerd 1.x, 3 for 2.x, asked of the containerd at `address`; 2 if it cannot be
/// asked (containerd 1.7 refuses anything above 2, and is the one that runs here).
async fn bootstrap_version(address: &str) -> u32 {
    let path = address.strip_prefix("unix://").unwrap_or(address);
    if path.is_empty() {
        return 2;
    }
    let asked = async {
        let channel = crate::grpc::connect(path).await.ok()?;
        let mut client = VersionClient::with_origin(channel, crate::client::origin());
        let mut req = tonic::Request::new(());
        req.set_timeout(Duration::from_secs(5));
        let reply = client.version(req).await.ok()?.into_inner();
        Some(reply.version)
    };
    match asked.await {
        Some(version) => version_for(&version),
        None => {
            log(&format!(
                "cannot ask containerd at {address} for its version; answering bootstrap version 2"
            ));
            2
        }
    }
}

/// The bootstrap version for a containerd that says its version is `version` (`v2.1.9`,
/// `2.3.0+unknown`, `1.7.24~ds1`): 3 from 2.0 on, else 2.
fn version_for(version: &str) -> u32 {
    let major = version
        .trim_start_matches('v')
        .split('.')
        .next()
        .and_then(|m| m.parse::<u32>().ok());
    match major {
        Some(m) if m >= 2 => 3,
        Some(_) => 2,
        None => {
            log(&format!(
                "containerd says its version is {version:?}; answering bootstrap version 2"
            ));
            2
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::containerd::runc::v1::Options;
    use crate::api::containerd::runtime::bootstrap::v1::Extension;

    #[test]
    fn bootstrap_params_are_told_from_an_options_any() {
        assert_eq!(Asked::read(b""), Asked::Legacy);
        // What containerd 1.7 to 2.2 write: the runtime options as an Any.
        let options = prost_types::Any {
            type_url: "containerd.runc.v1.Options".into(),
            value: Options {
                binary_name: "crun".into(),
                ..Default::default()
            }
            .encode_to_vec(),
        };
        assert_eq!(Asked::read(&options.encode_to_vec()), Asked::Legacy);
        // What containerd 2.3 writes.
        let params = BootstrapParams {
            instance_id: "web".into(),
            namespace: "k8s.io".into(),
            log_level: -4,
            containerd_version: "2.3.0".into(),
            containerd_ttrpc_address: "/run/containerd/containerd.sock.ttrpc".into(),
            containerd_grpc_address: "/run/containerd/containerd.sock".into(),
            containerd_binary: "/usr/bin/containerd".into(),
            extensions: vec![Extension {
                value: Some(options),
            }],
            socket_dir: None,
        };
        assert_eq!(
            Asked::read(&params.encode_to_vec()),
            Asked::Bootstrap(params)
        );
        assert_eq!(Asked::read(b"not protobuf at all \xff"), Asked::Legacy);
    }

    #[test]
    fn containerd_versions_map_to_bootstrap_versions() {
        assert_eq!(version_for("1.7.24~ds1"), 2);
        assert_eq!(version_for("v1.6.20"), 2);
        assert_eq!(version_for("2.1.9+unknown"), 3);
        assert_eq!(version_for("v2.3.0"), 3);
        assert_eq!(version_for("dev"), 2);
    }
}
