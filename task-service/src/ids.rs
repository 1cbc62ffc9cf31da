//! Validated names: namespaces, container ids and exec ids.
//!
//! Everything that names a container ends up in a path (`state/<namespace>/<id>.json`, the runc
//! root, the bundle), so a name is checked before anything touches the disk, with containerd's
//! own identifier rule: alphanumeric runs joined by single `.`, `_` or `-`, at most 76
//! characters. That refuses `..`, `a/b`, empty names, NUL bytes and over-long names.

use std::fmt;

/// The longest identifier containerd accepts.
pub const MAX_LEN: usize = 76;

/// Why a name was refused.
///
/// ```
/// use task_service::ids::ContainerId;
/// let err = ContainerId::new("../etc").unwrap_err();
/// assert_eq!(
///     err.to_string(),
///     "invalid container id \"../etc\": must be letters and digits joined by single '.', '_' or '-' (at most 76 characters)"
/// );
/// ```
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "invalid {kind} {value:?}: must be letters and digits joined by single '.', '_' or '-' \
     (at most {MAX_LEN} characters)"
)]
pub struct InvalidId {
    /// What was being named: `namespace`, `container id` or `exec id`.
    pub kind: &'static str,
    /// The refused value (lossy if it was not UTF-8 to begin with).
    pub value: String,
}

fn is_identifier(value: &str) -> bool {
    if value.is_empty() || value.len() > MAX_LEN {
        return false;
    }
    let bytes = value.as_bytes();
    let mut previous_was_separator = true; // no leading separator
    for &b in bytes {
        match b {
            b'a'..=b'z' | b'A'..=b'Z' | b'0'..=b'9' => previous_was_separator = false,
            b'.' | b'_' | b'-' if !previous_was_separator => previous_was_separator = true,
            _ => return false,
        }
    }
    !previous_was_separator // no trailing separator
}

macro_rules! identifier {
    ($(#[$doc:meta])* $name:ident, $kind:literal) => {
        $(#[$doc])*
        #[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, serde::Serialize, serde::Deserialize)]
        #[serde(try_from = "String", into = "String")]
        pub struct $name(String);

        impl $name {
            /// Checks `value` against containerd's identifier rule.
            pub fn new(value: impl Into<String>) -> Result<Self, InvalidId> {
                let value = value.into();
                if is_identifier(&value) {
                    Ok($name(value))
                } else {
                    Err(InvalidId { kind: $kind, value })
                }
            }

            /// The name as a string.
            pub fn as_str(&self) -> &str {
                &self.0
            }
        }

        impl TryFrom<String> for $name {
            type Error = InvalidId;
            fn try_from(value: String) -> Result<Self, InvalidId> {
                $name::new(value)
            }
        }

        impl From<$name> for String {
            fn from(id: $name) -> String {
                id.0
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(&self.0)
            }
        }
    };
}

identifier!(
    /// A containerd namespace (`default`, `k8s.io`, ...).
    ///
    /// ```
    /// use task_service::ids::Namespace;
    /// assert_eq!(Namespace::new("k8s.io").unwrap().as_str(), "k8s.io");
    /// assert!(Namespace::new("").is_err());
    /// ```
    Namespace,
    "namespace"
);
identifier!(
    /// A container's id, unique within its namespace.
    ///
    /// ```
    /// use task_service::ids::ContainerId;
    /// assert!(ContainerId::new("web-1").is_ok());
    /// assert!(ContainerId::new("a/b").is_err());
    /// ```
    ContainerId,
    "container id"
);
identifier!(
    /// An exec process's id, unique within its container.
    ///
    /// ```
    /// use task_service::ids::ExecId;
    /// assert!(ExecId::new("probe.1").is_ok());
    /// assert!(ExecId::new("probe\0").is_err());
    /// ```
    ExecId,
    "exec id"
);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn containerd_style_names_are_accepted() {
        for ok in [
            "a",
            "A9",
            "web-1",
            "k8s.io",
            "a_b.c-d",
            "0",
            &"x".repeat(MAX_LEN),
        ] {
            assert!(ContainerId::new(ok).is_ok(), "{ok}");
        }
    }

    #[test]
    fn names_that_could_escape_or_confuse_a_path_are_refused() {
        let long = "x".repeat(MAX_LEN + 1);
        for bad in [
            "",
            ".",
            "..",
            "../x",
            "a/b",
            "/abs",
            "a\0b",
            "-lead",
            "trail-",
            "a..b",
            "a._b",
            " sp",
            "tab\t",
            "é",
            long.as_str(),
        ] {
            let err = ContainerId::new(bad).unwrap_err();
            assert_eq!((err.kind, err.value.as_str()), ("container id", bad));
        }
    }

    #[test]
    fn deserializing_validates_too() {
        assert_eq!(
            serde_json::from_str::<Namespace>("\"default\"")
                .unwrap()
                .as_str(),
            "default"
        );
        let err = serde_json::from_str::<Namespace>("\"../x\"").unwrap_err();
        assert!(err.to_string().contains("invalid namespace"), "{err}");
    }
}
