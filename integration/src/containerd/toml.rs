//! The bits of TOML the config files are written with: values, strings and keys.

use std::fmt::Write as _;

/// A value in a runtime's `options` table.
///
/// ```
/// use integration::containerd::TomlValue;
/// assert_eq!(TomlValue::from(false).to_toml(), "false");
/// assert_eq!(TomlValue::from("crun").to_toml(), "\"crun\"");
/// assert_eq!(TomlValue::from(7).to_toml(), "7");
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TomlValue {
    /// A string, written as a TOML basic string.
    String(String),
    /// A boolean.
    Bool(bool),
    /// An integer.
    Integer(i64),
}

impl TomlValue {
    /// The value as TOML source.
    pub fn to_toml(&self) -> String {
        match self {
            TomlValue::String(s) => toml_string(s),
            TomlValue::Bool(b) => b.to_string(),
            TomlValue::Integer(i) => i.to_string(),
        }
    }
}

impl From<&str> for TomlValue {
    fn from(s: &str) -> Self {
        TomlValue::String(s.to_string())
    }
}

impl From<String> for TomlValue {
    fn from(s: String) -> Self {
        TomlValue::String(s)
    }
}

impl From<bool> for TomlValue {
    fn from(b: bool) -> Self {
        TomlValue::Bool(b)
    }
}

impl From<i64> for TomlValue {
    fn from(i: i64) -> Self {
        TomlValue::Integer(i)
    }
}

impl From<i32> for TomlValue {
    fn from(i: i32) -> Self {
        TomlValue::Integer(i.into())
    }
}

/// A TOML basic string.
pub(super) fn toml_string(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 2);
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            c if c.is_control() => {
                let _ = write!(out, "\\u{:04X}", c as u32);
            }
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

/// A TOML key: bare when it can be, quoted otherwise.
pub(super) fn toml_key(key: &str) -> String {
    if !key.is_empty()
        && key
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-')
    {
        key.to_string()
    } else {
        toml_string(key)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn toml_strings_escape_quotes_backslashes_and_controls() {
        assert_eq!(toml_string("a\"b\\c\nd"), "\"a\\\"b\\\\c\\u000Ad\"");
        assert_eq!(toml_key("SystemdCgroup"), "SystemdCgroup");
        assert_eq!(toml_key("a.b"), "\"a.b\"");
    }
}
