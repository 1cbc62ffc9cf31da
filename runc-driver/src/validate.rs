//! Checks made before anything runs.

use crate::Error;
use std::path::Path;

/// The longest container id accepted.
pub const MAX_ID_LEN: usize = 1024;

/// A container id must match `[A-Za-z0-9][A-Za-z0-9_.-]*` and be at most [`MAX_ID_LEN`] long.
///
/// ```
/// assert!(runc_driver::validate_id("web-1.a_b").is_ok());
/// assert!(runc_driver::validate_id("../x").is_err());
/// ```
pub fn validate_id(id: &str) -> Result<(), Error> {
    let rule = "must match [A-Za-z0-9][A-Za-z0-9_.-]* and be at most 1024 characters";
    let mut bytes = id.bytes();
    let ok = id.len() <= MAX_ID_LEN
        && bytes.next().is_some_and(|b| b.is_ascii_alphanumeric())
        && bytes.all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'.' | b'-'));
    if ok {
        Ok(())
    } else {
        Err(Error::InvalidArgument {
            what: "container id",
            value: id.into(),
            rule,
        })
    }
}

/// A bundle must be an absolute directory holding `config.json`.
pub(crate) fn validate_bundle(bundle: &Path) -> Result<(), Error> {
    let invalid = |rule| Error::InvalidArgument {
        what: "bundle",
        value: bundle.display().to_string(),
        rule,
    };
    if !bundle.is_absolute() {
        return Err(invalid("must be an absolute path"));
    }
    if !bundle.join("config.json").is_file() {
        return Err(invalid("must be a directory holding config.json"));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bad_ids_are_refused_with_the_value() {
        let long = "a".repeat(MAX_ID_LEN + 1);
        for bad in [
            "",
            "-a",
            ".a",
            "a/b",
            "../x",
            "a b",
            "a\0",
            "é",
            long.as_str(),
        ] {
            match validate_id(bad) {
                Err(Error::InvalidArgument {
                    what: "container id",
                    value,
                    ..
                }) => assert_eq!(value, bad),
                other => panic!("{bad:?}: {other:?}"),
            }
        }
    }

    #[test]
    fn bundles_must_be_absolute_and_hold_config_json() {
        assert!(validate_bundle(Path::new("relative")).is_err());
        let dir = tempfile::tempdir().unwrap();
        let err = validate_bundle(dir.path()).unwrap_err().to_string();
        assert!(err.contains("config.json"), "{err}");
        std::fs::write(dir.path().join("config.json"), "{}").unwrap();
        assert!(validate_bundle(dir.path()).is_ok());
    }
}
