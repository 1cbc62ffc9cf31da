//! The front's and the daemon's logs: levelled events through `tracing`, written as text for
//! humans or as JSON lines for collectors, always to stderr.
//!
//! Where stderr goes is decided by whoever starts the process: `containerd-shim-shimless-v2
//! start` points the front's at `<log_dir>/front.log`, the front points the daemon's at
//! `<log_dir>/shimlessd.log` (both capped and rotated by [`crate::logcap`]), unless the front
//! itself writes to journald ([`under_journal`]), in which case the daemon shares its stream.
//!
//! Events of shimless's own code (`task_service`, the binaries) are kept from the configured
//! level up; those of its libraries (hyper, h2, ...) from `warn` up whatever the level, so
//! `debug` shows shimless's calls, not HTTP/2 frames.

use serde::Deserialize;
use tracing_subscriber::filter::{LevelFilter, Targets};
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;

/// How each log line is written.
///
/// ```
/// use task_service::logging::LogFormat;
/// assert_eq!("json".parse::<LogFormat>(), Ok(LogFormat::Json));
/// assert!("yaml".parse::<LogFormat>().unwrap_err().contains("text or json"));
/// ```
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    /// One line per event: time, level, the call's span (`call{method=.. ns=.. id=..}`) and the
    /// message. The default.
    #[default]
    Text,
    /// One JSON object per line: `timestamp`, `level`, `fields.message`, the event's other
    /// fields, and `span` with the call's ids.
    Json,
}

impl std::str::FromStr for LogFormat {
    type Err = String;

    fn from_str(s: &str) -> Result<LogFormat, String> {
        match s {
            "text" => Ok(LogFormat::Text),
            "json" => Ok(LogFormat::Json),
            other => Err(format!("unknown log format {other:?}: say text or json")),
        }
    }
}

/// The least severe events kept.
///
/// ```
/// use task_service::logging::LogLevel;
/// assert_eq!("debug".parse::<LogLevel>(), Ok(LogLevel::Debug));
/// assert_eq!(LogLevel::default(), LogLevel::Info);
/// assert!("loud".parse::<LogLevel>().unwrap_err().contains("error, warn, info, debug or trace"));
/// ```
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LogLevel {
    /// Failures only.
    Error,
    /// Failures and what an operator should look at (a degraded daemon, a lost event, a
    /// call that failed on the daemon's side).
    Warn,
    /// The default: starts, recoveries, restarts, refused calls; no line per successful call.
    #[default]
    Info,
    /// Also one line per call (its ids, gRPC code and duration).
    Debug,
    /// Everything shimless logs.
    Trace,
}

impl std::str::FromStr for LogLevel {
    type Err = String;

    fn from_str(s: &str) -> Result<LogLevel, String> {
        Ok(match s {
            "error" => LogLevel::Error,
            "warn" => LogLevel::Warn,
            "info" => LogLevel::Info,
            "debug" => LogLevel::Debug,
            "trace" => LogLevel::Trace,
            other => {
                return Err(format!(
                    "unknown log level {other:?}: say error, warn, info, debug or trace"
                ));
            }
        })
    }
}

impl LogLevel {
    fn filter(self) -> LevelFilter {
        match self {
            LogLevel::Error => LevelFilter::ERROR,
            LogLevel::Warn => LevelFilter::WARN,
            LogLevel::Info => LevelFilter::INFO,
            LogLevel::Debug => LevelFilter::DEBUG,
            LogLevel::Trace => LevelFilter::TRACE,
        }
    }
}

/// The targets that are shimless's own code: the library and its binaries.
const OWN_TARGETS: [&str; 4] = [
    "task_service",
    "shimlessd",
    "shimless_front",
    "containerd_shim_shimless_v2",
];

/// Sends this process's `tracing` events to stderr at `level`, formatted as `format`. Call it
/// once, first thing; a second call changes nothing.
///
/// ```no_run
/// use task_service::logging::{self, LogFormat, LogLevel};
/// logging::init(LogLevel::Info, LogFormat::Json);
/// tracing::info!(pid = std::process::id(), "shimlessd: serving");
/// ```
pub fn init(level: LogLevel, format: LogFormat) {
    INITIALIZED.store(true, std::sync::atomic::Ordering::SeqCst);
    let mut targets = Targets::new().with_default(LevelFilter::WARN.min(level.filter()));
    for target in OWN_TARGETS {
        targets = targets.with_target(target, level.filter());
    }
    let layer = tracing_subscriber::fmt::layer()
        .with_ansi(false)
        .with_target(false)
        .with_writer(std::io::stderr);
    let registry = tracing_subscriber::registry().with(targets).with(Recent);
    let _ = match format {
        LogFormat::Text => registry.with(layer).try_init(),
        LogFormat::Json => registry
            .with(layer.json().with_current_span(true).with_span_list(false))
            .try_init(),
    };
}

/// Set once [`init`] ran: before it, `tracing` events go nowhere.
static INITIALIZED: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);

/// Logs why the process stops, at `error`, or on stderr as a plain line when [`init`] has not
/// run yet (a bad command line or configuration file is found before logging starts).
///
/// ```no_run
/// task_service::logging::fatal("shimlessd: cannot read /etc/shimless/config.toml");
/// std::process::exit(1);
/// ```
pub fn fatal(line: &str) {
    if INITIALIZED.load(std::sync::atomic::Ordering::SeqCst) {
        tracing::error!("{line}");
    } else {
        eprintln!("{line}");
    }
}

/// Whether this process's stderr is the journald stream systemd gave it (`JOURNAL_STREAM`
/// names the stream's device and inode, as systemd documents for this check). A process that
/// merely inherited the variable, with stderr pointed elsewhere, is not.
///
/// ```
/// // Under `cargo test` stderr is not a journal stream.
/// assert!(!task_service::logging::under_journal() || std::env::var_os("JOURNAL_STREAM").is_some());
/// ```
pub fn under_journal() -> bool {
    let Some(stream) = std::env::var_os("JOURNAL_STREAM") else {
        return false;
    };
    let Some((dev, ino)) = stream.to_str().and_then(|s| s.split_once(':')) else {
        return false;
    };
    let Ok(stat) = rustix::fs::fstat(rustix::stdio::stderr()) else {
        return false;
    };
    dev.parse::<u64>().ok() == Some(stat.st_dev) && ino.parse::<u64>().ok() == Some(stat.st_ino)
}

/// What a log line says, without what [`init`]'s formats add around it: a JSON line's
/// `fields.message`, a text line without its time and level; any other line as it is.
///
/// ```
/// use task_service::logging::message_of;
/// assert_eq!(
///     message_of("2026-12-07T17:22:25.226389Z ERROR shimlessd: cannot lock state"),
///     "shimlessd: cannot lock state"
/// );
/// assert_eq!(
///     message_of(r#"{"timestamp":"x","level":"ERROR","fields":{"message":"shimlessd: bye"}}"#),
///     "shimlessd: bye"
/// );
/// assert_eq!(message_of("panicked at src/main.rs"), "panicked at src/main.rs");
/// ```
pub fn message_of(line: &str) -> String {
    if line.starts_with('{')
        && let Ok(value) = serde_json::from_str::<serde_json::Value>(line)
        && let Some(message) = value["fields"]["message"].as_str()
    {
        return message.to_string();
    }
    let mut words = line.splitn(2, ' ');
    let (Some(time), Some(rest)) = (words.next(), words.next()) else {
        return line.to_string();
    };
    let rest = rest.trim_start();
    let level = ["ERROR ", "WARN ", "INFO ", "DEBUG ", "TRACE "]
        .iter()
        .find_map(|level| rest.strip_prefix(level));
    match level {
        Some(message) if time.ends_with('Z') && time.contains('T') => message.to_string(),
        _ => line.to_string(),
    }
}

/// How many of the latest warnings and errors [`recent_problems`] keeps.
const RECENT: usize = 16;

/// The latest warnings and errors, newest last: `(when, level, message)`.
static PROBLEMS: std::sync::Mutex<
    std::collections::VecDeque<(std::time::SystemTime, &str, String)>,
> = std::sync::Mutex::new(std::collections::VecDeque::new());

/// The latest warnings and errors this process logged (at most 16), oldest first, each with
/// when and at which level (`WARN`, `ERROR`): what `shimlessctl status` shows.
///
/// ```no_run
/// for (at, level, message) in task_service::logging::recent_problems() {
///     println!("{at:?} {level} {message}");
/// }
/// ```
pub fn recent_problems() -> Vec<(std::time::SystemTime, &'static str, String)> {
    crate::lock::lock(&PROBLEMS).iter().cloned().collect()
}

/// The layer that keeps [`recent_problems`].
struct Recent;

impl<S: tracing::Subscriber> tracing_subscriber::Layer<S> for Recent {
    fn on_event(
        &self,
        event: &tracing::Event<'_>,
        _ctx: tracing_subscriber::layer::Context<'_, S>,
    ) {
        let level = match *event.metadata().level() {
            tracing::Level::ERROR => "ERROR",
            tracing::Level::WARN => "WARN",
            _ => return,
        };
        let mut text = Fields::default();
        event.record(&mut text);
        let mut problems = crate::lock::lock(&PROBLEMS);
        if problems.len() == RECENT {
            problems.pop_front();
        }
        problems.push_back((std::time::SystemTime::now(), level, text.0));
    }
}

/// An event's message, then its other fields as ` name=value`.
#[derive(Default)]
struct Fields(String);

impl tracing::field::Visit for Fields {
    fn record_debug(&mut self, field: &tracing::field::Field, value: &dyn std::fmt::Debug) {
        use std::fmt::Write;
        if field.name() == "message" {
            let _ = write!(self.0, "{value:?}");
        } else {
            let _ = write!(self.0, " {}={value:?}", field.name());
        }
    }

    fn record_str(&mut self, field: &tracing::field::Field, value: &str) {
        use std::fmt::Write;
        if field.name() == "message" {
            self.0.push_str(value);
        } else {
            let _ = write!(self.0, " {}={value:?}", field.name());
        }
    }
}
