//! `-info`: what `containerd-shim-runc-v2 -info` prints, for shimless. containerd 2.x runs
//! `<runtime_path> -info` with the runtime options (an encoded `google.protobuf.Any`, or
//! nothing) on stdin before it creates a task of any runtime but runc's own, and reads an
//! encoded `containerd.types.RuntimeInfo` from stdout: the runtime's name and version, the
//! options as understood, and the OCI runtime's `features` document, from `runc features` /
//! `crun features` (left out, as the stock shim does, when the runtime has no such command).

use super::ShimError;
use crate::api::containerd::types::{RuntimeInfo, RuntimeVersion};
use crate::config::Config;
use crate::options::RuntimeOptions;
use prost::Message;

/// The name shimless reports (the stock shim reports `io.containerd.runc.v2`).
///
/// ```
/// assert_eq!(task_service::shim::info::RUNTIME_NAME, "io.containerd.shimless.v2");
/// ```
pub const RUNTIME_NAME: &str = "io.containerd.shimless.v2";

/// The type URL containerd registers for runtime-spec's `features.Features`, whose value is
/// the JSON document (containerd's `typeurl` encodes non-protobuf types as JSON).
///
/// ```
/// use task_service::shim::info::FEATURES_TYPE_URL;
/// assert!(FEATURES_TYPE_URL.ends_with("/features/Features"));
/// ```
pub const FEATURES_TYPE_URL: &str =
    "types.containerd.io/opencontainers/runtime-spec/1/features/Features";

pub(super) fn info(config: &Config, stdin: &[u8]) -> Result<Vec<u8>, ShimError> {
    let options = if stdin.is_empty() {
        None
    } else {
        Some(prost_types::Any::decode(stdin).map_err(|e| {
            ShimError::Info(format!(
                "stdin is not an encoded google.protobuf.Any of runtime options ({e})"
            ))
        })?)
    };
    // Honouring SystemdCgroup is a matter for Create, not for describing the runtime.
    let understood = RuntimeOptions::from_any(options.as_ref(), true)
        .map_err(|e| ShimError::Info(e.to_string()))?;
    let binary = understood.binary.unwrap_or_else(|| config.runtime.clone());
    let info = RuntimeInfo {
        name: RUNTIME_NAME.into(),
        version: Some(RuntimeVersion {
            version: env!("CARGO_PKG_VERSION").into(),
            revision: String::new(),
        }),
        options,
        features: features(&binary)?,
        annotations: Default::default(),
    };
    Ok(info.encode_to_vec())
}

/// `<binary> features` as an `Any`; `None` when the runtime has no `features` command (crun
/// before 1.9, youki), an error when the binary cannot be run at all.
fn features(binary: &str) -> Result<Option<prost_types::Any>, ShimError> {
    let out = std::process::Command::new(binary)
        .arg("features")
        .stdin(std::process::Stdio::null())
        .output()
        .map_err(|e| {
            ShimError::Info(format!(
                "cannot run the runtime {binary:?} ({e}): set `runtime` in shimless's config or \
                 BinaryName in the runtime options to a runc or crun on PATH"
            ))
        })?;
    if !out.status.success() {
        return Ok(None);
    }
    let Ok(document) = serde_json::from_slice::<serde_json::Value>(&out.stdout) else {
        return Ok(None);
    };
    Ok(Some(prost_types::Any {
        type_url: FEATURES_TYPE_URL.into(),
        value: serde_json::to_vec(&document).unwrap_or_default(),
    }))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::containerd::runc::v1::Options;

    fn config(runtime: &str) -> Config {
        Config {
            runtime: runtime.into(),
            ..Config::default()
        }
    }

    #[test]
    fn bad_stdin_and_a_missing_runtime_are_named() {
        let err = info(&config("runc"), b"\xff\xff\xff").unwrap_err();
        assert!(err.to_string().contains("google.protobuf.Any"), "{err}");
        let err = info(&config("/no/such/runtime"), b"").unwrap_err();
        assert!(err.to_string().contains("/no/such/runtime"), "{err}");
    }

    #[test]
    fn options_come_back_and_a_runtime_without_features_gives_none() {
        // `false` exists everywhere and fails `false features`: no features, no error.
        let any = prost_types::Any {
            type_url: "containerd.runc.v1.Options".into(),
            value: Options {
                binary_name: "false".into(),
                ..Default::default()
            }
            .encode_to_vec(),
        };
        let out = info(&config("runc"), &any.encode_to_vec()).unwrap();
        let info = RuntimeInfo::decode(out.as_slice()).unwrap();
        assert_eq!(info.name, RUNTIME_NAME);
        assert_eq!(info.version.unwrap().version, env!("CARGO_PKG_VERSION"));
        assert_eq!(info.options, Some(any));
        assert_eq!(info.features, None);
    }
}
