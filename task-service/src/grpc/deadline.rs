//! `grpc-timeout`: the deadline a gRPC client attaches to a call.
//!
//! tonic enforces it only in its own transport, which the daemon does not use, so
//! [`serve`](super::serve) races every call against it and answers `DEADLINE_EXCEEDED` itself.

use std::time::Duration;

/// Parses a `grpc-timeout` header value: at most 8 ASCII digits followed by one unit letter
/// (`H` hours, `M` minutes, `S` seconds, `m` milliseconds, `u` microseconds, `n`
/// nanoseconds), as the gRPC over HTTP/2 specification defines it. Anything else is `None`.
///
/// ```
/// use std::time::Duration;
/// use task_service::grpc::deadline::parse_grpc_timeout;
/// assert_eq!(parse_grpc_timeout("250m"), Some(Duration::from_millis(250)));
/// assert_eq!(parse_grpc_timeout("2S"), Some(Duration::from_secs(2)));
/// assert_eq!(parse_grpc_timeout("123456789S"), None); // nine digits
/// assert_eq!(parse_grpc_timeout("10"), None); // no unit
/// ```
pub fn parse_grpc_timeout(value: &str) -> Option<Duration> {
    let (digits, unit) = value.split_at_checked(value.len().checked_sub(1)?)?;
    if digits.is_empty() || digits.len() > 8 || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let n: u64 = digits.parse().ok()?;
    Some(match unit {
        "H" => Duration::from_secs(n * 3600),
        "M" => Duration::from_secs(n * 60),
        "S" => Duration::from_secs(n),
        "m" => Duration::from_millis(n),
        "u" => Duration::from_micros(n),
        "n" => Duration::from_nanos(n),
        _ => return None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_unit_is_understood() {
        let cases = [
            ("1H", Duration::from_secs(3600)),
            ("3M", Duration::from_secs(180)),
            ("0S", Duration::ZERO),
            ("99999999m", Duration::from_millis(99_999_999)),
            ("7u", Duration::from_micros(7)),
            ("5n", Duration::from_nanos(5)),
        ];
        for (text, want) in cases {
            assert_eq!(parse_grpc_timeout(text), Some(want), "{text}");
        }
    }

    #[test]
    fn malformed_values_are_ignored() {
        for bad in [
            "",
            "S",
            "m",
            "-1S",
            "1.5S",
            "1s",
            "1 S",
            "１S",
            "1SS",
            "999999999m",
        ] {
            assert_eq!(parse_grpc_timeout(bad), None, "{bad:?}");
        }
    }
}
