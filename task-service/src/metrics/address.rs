//! Where metrics are served: a unix socket, or a loopback TCP address (never a public one:
//! the scrape names containers).

use serde::Deserialize;
use std::net::SocketAddr;
use std::path::PathBuf;

/// A metrics endpoint, written `unix:/absolute/path` or `127.0.0.1:PORT` / `[::1]:PORT`.
///
/// ```
/// use task_service::metrics::address::MetricsAddress;
/// let tcp: MetricsAddress = "127.0.0.1:9464".parse()?;
/// assert_eq!(tcp.to_string(), "127.0.0.1:9464");
/// let unix: MetricsAddress = "unix:/run/shimless/metrics.sock".parse()?;
/// assert_eq!(unix, MetricsAddress::Unix("/run/shimless/metrics.sock".into()));
/// assert!("0.0.0.0:9464".parse::<MetricsAddress>().unwrap_err().contains("loopback"));
/// # Ok::<(), String>(())
/// ```
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(try_from = "String")]
pub enum MetricsAddress {
    /// A unix socket (made with mode 0600: root scrapes it).
    Unix(PathBuf),
    /// A TCP address on the loopback interface.
    Tcp(SocketAddr),
}

impl std::str::FromStr for MetricsAddress {
    type Err = String;

    fn from_str(s: &str) -> Result<MetricsAddress, String> {
        if let Some(path) = s.strip_prefix("unix:") {
            let path = PathBuf::from(path);
            if !path.is_absolute() {
                return Err(format!(
                    "{s:?}: a unix socket must be an absolute path (unix:/run/shimless/metrics.sock)"
                ));
            }
            return Ok(MetricsAddress::Unix(path));
        }
        let addr: SocketAddr = s.parse().map_err(|_| {
            format!("{s:?} is neither unix:/PATH nor IP:PORT (e.g. 127.0.0.1:9464)")
        })?;
        if !addr.ip().is_loopback() {
            return Err(format!(
                "{s:?} is not a loopback address: metrics are served on 127.0.0.1 or [::1] only \
                 (or a unix socket)"
            ));
        }
        Ok(MetricsAddress::Tcp(addr))
    }
}

impl TryFrom<String> for MetricsAddress {
    type Error = String;

    fn try_from(s: String) -> Result<MetricsAddress, String> {
        s.parse()
    }
}

impl std::fmt::Display for MetricsAddress {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            MetricsAddress::Unix(path) => write!(f, "unix:{}", path.display()),
            MetricsAddress::Tcp(addr) => write!(f, "{addr}"),
        }
    }
}
