//! The command line containerd gives a runtime v2 binary, in Go's `flag` syntax: single-dash
//! long flags (`-namespace k8s.io`, `-id=web`, `--debug`), then the action (`start`, `delete`).
//!
//! clap does not read single-dash long flags, and containerd's set is fixed and small, so this
//! is parsed by hand; unknown flags are refused by name, as Go's `flag` package would.

/// What containerd asked for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    /// Make sure the service runs and print the bootstrap JSON.
    Start,
    /// Clean one container up after containerd lost its shim, and print a `DeleteResponse`.
    Delete,
    /// Print the version (`-v`).
    Version,
    /// Print a `RuntimeInfo` protobuf (`-info`, which containerd 2.x runs before it creates a
    /// task of a runtime other than runc's); the runtime options come on stdin.
    Info,
}

/// The parsed command line.
///
/// ```
/// use task_service::shim::flags::{Action, Flags};
/// let args = ["-namespace", "k8s.io", "-address", "/run/containerd/containerd.sock",
///             "-publish-binary", "/usr/bin/containerd", "-id=web", "-debug", "start"];
/// let flags = Flags::parse(args.iter().map(|s| s.to_string()))?;
/// assert_eq!(flags.action, Action::Start);
/// assert_eq!(flags.namespace, "k8s.io");
/// assert_eq!(flags.id, "web");
/// assert!(flags.debug);
/// # Ok::<(), task_service::shim::flags::FlagError>(())
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Flags {
    /// `-namespace` (also from `$NAMESPACE`).
    pub namespace: String,
    /// `-address`: containerd's gRPC socket (also from `$GRPC_ADDRESS`).
    pub address: String,
    /// `-publish-binary`: containerd's binary, for `containerd publish` (unused: events go to
    /// containerd's gRPC `Forward`).
    pub publish_binary: String,
    /// `-id`: the container.
    pub id: String,
    /// `-bundle`: the bundle directory (`delete`; `start` runs in it).
    pub bundle: String,
    /// `-socket` (unused; shims before runtime v2's `start` took it).
    pub socket: String,
    /// `-debug`.
    pub debug: bool,
    /// What to do.
    pub action: Action,
}

/// A command line that is not containerd's.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum FlagError {
    /// A flag this binary does not know.
    #[error("flag provided but not defined: -{0}")]
    Unknown(String),
    /// A flag that takes a value came last.
    #[error("flag needs an argument: -{0}")]
    MissingValue(String),
    /// No action, or one that is not `start` or `delete`.
    #[error(
        "action {0:?} is not one of start, delete (this binary is run by containerd: \
         configure it as a runtime, e.g. runtime_path = \"/usr/local/bin/containerd-shim-shimless-v2\")"
    )]
    Action(String),
}

impl Flags {
    /// Parses `args` (without the program name); `$NAMESPACE` and `$GRPC_ADDRESS` fill flags
    /// that are not given.
    pub fn parse(args: impl IntoIterator<Item = String>) -> Result<Flags, FlagError> {
        let mut flags = Flags {
            namespace: std::env::var("NAMESPACE").unwrap_or_default(),
            address: std::env::var("GRPC_ADDRESS").unwrap_or_default(),
            publish_binary: String::new(),
            id: String::new(),
            bundle: String::new(),
            socket: String::new(),
            debug: false,
            action: Action::Start,
        };
        let mut action = None;
        let mut args = args.into_iter();
        while let Some(arg) = args.next() {
            let Some(flag) = arg.strip_prefix("--").or_else(|| arg.strip_prefix('-')) else {
                action = Some(arg);
                break;
            };
            let (name, inline) = match flag.split_once('=') {
                Some((name, value)) => (name.to_string(), Some(value.to_string())),
                None => (flag.to_string(), None),
            };
            match name.as_str() {
                "debug" => flags.debug = inline.is_none_or(|v| v != "false"),
                "v" | "version" => flags.action = Action::Version,
                "info" => {
                    if inline.is_none_or(|v| v != "false") {
                        flags.action = Action::Info;
                    }
                }
                "namespace" | "address" | "publish-binary" | "id" | "bundle" | "socket" => {
                    let value = match inline {
                        Some(value) => value,
                        None => args
                            .next()
                            .ok_or_else(|| FlagError::MissingValue(name.clone()))?,
                    };
                    let slot = match name.as_str() {
                        "namespace" => &mut flags.namespace,
                        "address" => &mut flags.address,
                        "publish-binary" => &mut flags.publish_binary,
                        "id" => &mut flags.id,
                        "bundle" => &mut flags.bundle,
                        _ => &mut flags.socket,
                    };
                    *slot = value;
                }
                _ => return Err(FlagError::Unknown(name)),
            }
        }
        if matches!(flags.action, Action::Version | Action::Info) {
            return Ok(flags);
        }
        flags.action = match action.as_deref() {
            Some("start") => Action::Start,
            Some("delete") => Action::Delete,
            other => return Err(FlagError::Action(other.unwrap_or("").to_string())),
        };
        Ok(flags)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(args: &[&str]) -> Result<Flags, FlagError> {
        Flags::parse(args.iter().map(|s| s.to_string()))
    }

    #[test]
    fn containerds_delete_command_line() {
        let flags = parse(&[
            "-namespace",
            "default",
            "-address",
            "/run/containerd/containerd.sock",
            "-publish-binary",
            "/usr/bin/containerd",
            "-id",
            "web",
            "-bundle",
            "/run/containerd/io.containerd.runtime.v2.task/default/web",
            "delete",
        ])
        .unwrap();
        assert_eq!(flags.action, Action::Delete);
        assert_eq!(flags.address, "/run/containerd/containerd.sock");
        assert_eq!(
            flags.bundle,
            "/run/containerd/io.containerd.runtime.v2.task/default/web"
        );
    }

    #[test]
    fn bad_command_lines_are_named() {
        assert_eq!(
            parse(&["-nope", "x", "start"]).unwrap_err(),
            FlagError::Unknown("nope".into())
        );
        assert_eq!(
            parse(&["-id"]).unwrap_err(),
            FlagError::MissingValue("id".into())
        );
        assert!(matches!(parse(&["-id", "a", "stop"]), Err(FlagError::Action(a)) if a == "stop"));
        assert!(matches!(parse(&[]), Err(FlagError::Action(a)) if a.is_empty()));
        assert_eq!(parse(&["-v"]).unwrap().action, Action::Version);
    }

    #[test]
    fn info_needs_no_action() {
        // containerd 2.x runs `<runtime_path> -info` and nothing else.
        assert_eq!(parse(&["-info"]).unwrap().action, Action::Info);
        assert_eq!(parse(&["--info"]).unwrap().action, Action::Info);
        assert!(matches!(parse(&["-info=false"]), Err(FlagError::Action(_))));
    }
}
