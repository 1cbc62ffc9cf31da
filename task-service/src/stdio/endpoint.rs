//! What containerd sends for each stream, parsed: nothing, a FIFO path or a `file://` URI.

use std::path::{Path, PathBuf};

use super::StdioError;

/// One of the three standard streams.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stream {
    /// Standard input.
    Stdin,
    /// Standard output.
    Stdout,
    /// Standard error.
    Stderr,
}

impl Stream {
    /// `stdin`, `stdout` or `stderr`.
    pub fn name(self) -> &'static str {
        match self {
            Stream::Stdin => "stdin",
            Stream::Stdout => "stdout",
            Stream::Stderr => "stderr",
        }
    }
}

/// Where one stream goes.
///
/// ```
/// use task_service::stdio::{Endpoint, Stream};
/// assert_eq!(Endpoint::parse(Stream::Stdout, "").unwrap(), Endpoint::None);
/// assert_eq!(
///     Endpoint::parse(Stream::Stdout, "/run/containerd/fifo/1/web-stdout").unwrap(),
///     Endpoint::Fifo("/run/containerd/fifo/1/web-stdout".into())
/// );
/// assert_eq!(Endpoint::parse(Stream::Stdout, "file:///var/log/web.log").unwrap(), Endpoint::File("/var/log/web.log".into()));
/// assert!(Endpoint::parse(Stream::Stdout, "relative/path").is_err());
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Endpoint {
    /// No stream: the process gets `/dev/null`.
    None,
    /// A FIFO containerd created and holds the other end of.
    Fifo(PathBuf),
    /// A file the stream is appended to (`file://` URI; output streams only).
    File(PathBuf),
}

impl Endpoint {
    /// Parses what containerd sent for `stream`.
    pub fn parse(stream: Stream, value: &str) -> Result<Endpoint, StdioError> {
        let invalid = |reason| StdioError::Invalid {
            stream: stream.name(),
            value: value.into(),
            reason,
        };
        if value.is_empty() {
            return Ok(Endpoint::None);
        }
        if value.contains('\0') {
            return Err(invalid("contains a NUL byte"));
        }
        if let Some(rest) = value.strip_prefix("file://") {
            if stream == Stream::Stdin {
                return Err(invalid("file:// is for output streams only"));
            }
            return absolute(rest)
                .map(Endpoint::File)
                .ok_or_else(|| invalid("file:// needs an absolute path"));
        }
        if value.contains("://") {
            return Err(invalid(
                "unsupported URI scheme: shimless takes FIFO paths and file:// URIs",
            ));
        }
        absolute(value)
            .map(Endpoint::Fifo)
            .ok_or_else(|| invalid("must be an absolute path"))
    }

    /// Parses stdin, stdout and stderr as a request gives them, in that order.
    ///
    /// ```
    /// use task_service::stdio::Endpoint;
    /// let [i, o, e] = Endpoint::parse_all(["", "file:///tmp/out.log", ""])?;
    /// assert_eq!((i, e), (Endpoint::None, Endpoint::None));
    /// assert_eq!(o, Endpoint::File("/tmp/out.log".into()));
    /// # Ok::<(), task_service::stdio::StdioError>(())
    /// ```
    pub fn parse_all(values: [&str; 3]) -> Result<[Endpoint; 3], StdioError> {
        let [i, o, e] = values;
        Ok([
            Endpoint::parse(Stream::Stdin, i)?,
            Endpoint::parse(Stream::Stdout, o)?,
            Endpoint::parse(Stream::Stderr, e)?,
        ])
    }
}

fn absolute(path: &str) -> Option<PathBuf> {
    let path = Path::new(path);
    (path.is_absolute()
        && !path
            .components()
            .any(|c| c == std::path::Component::ParentDir))
    .then(|| path.to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bad_values_are_refused_naming_the_stream() {
        let cases = [
            (Stream::Stdout, "out.fifo", "must be an absolute path"),
            (Stream::Stderr, "/a/../b", "must be an absolute path"),
            (
                Stream::Stdin,
                "file:///x",
                "file:// is for output streams only",
            ),
            (
                Stream::Stdout,
                "binary:///usr/bin/logger",
                "unsupported URI scheme",
            ),
            (Stream::Stdout, "/a\0b", "contains a NUL byte"),
        ];
        for (stream, value, want) in cases {
            let err = Endpoint::parse(stream, value).unwrap_err().to_string();
            assert!(
                err.starts_with(stream.name()) && err.contains(want),
                "{value:?}: {err}"
            );
        }
    }
}
