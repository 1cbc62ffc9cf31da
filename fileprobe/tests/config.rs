//! Parsing and kubelet validation of probe specs.

use std::time::Duration;

use fileprobe::{ConfigError, ProbeKind, ProbeSpec};

fn field_of(yaml: &str, kind: ProbeKind) -> &'static str {
    match ProbeSpec::from_yaml(yaml).unwrap().validate(kind) {
        Err(ConfigError::Invalid { field, .. }) => field,
        other => panic!("expected a field error for {yaml:?}, got {other:?}"),
    }
}

#[test]
fn seed_readiness_probe_parses_from_yaml_with_its_values() {
    let yaml = "file:\n  path: /probe-volume/probe\n  validity: 30\ninitialDelaySeconds: 5\nperiodSeconds: 10\ntimeoutSeconds: 1\nfailureThreshold: 3\n";
    let p = ProbeSpec::from_yaml(yaml)
        .unwrap()
        .validate(ProbeKind::Readiness)
        .unwrap();
    assert_eq!(p.path, "/probe-volume/probe");
    assert_eq!(p.validity, Duration::from_secs(30));
    assert_eq!(p.initial_delay, Duration::from_secs(5));
    assert_eq!(p.period, Duration::from_secs(10));
    assert_eq!(p.timeout, Duration::from_secs(1));
    assert_eq!((p.success_threshold, p.failure_threshold), (1, 3));
}

#[test]
fn json_and_yaml_give_the_same_spec() {
    let y = ProbeSpec::from_yaml("file: {path: /a, validity: 7}\nperiodSeconds: 2").unwrap();
    let j =
        ProbeSpec::from_json(r#"{"file":{"path":"/a","validity":7},"periodSeconds":2}"#).unwrap();
    assert_eq!(y, j);
}

#[test]
fn missing_fields_take_kubelet_defaults_and_zero_means_default() {
    let p = ProbeSpec::from_yaml("file: {path: /a, validity: 1}\nperiodSeconds: 0")
        .unwrap()
        .validate(ProbeKind::Startup)
        .unwrap();
    assert_eq!(p.initial_delay, Duration::ZERO);
    assert_eq!(p.period, Duration::from_secs(10));
    assert_eq!(p.timeout, Duration::from_secs(1));
    assert_eq!((p.success_threshold, p.failure_threshold), (1, 3));
}

#[test]
fn other_kubelet_fields_are_accepted_but_a_spec_without_file_is_no_file_probe() {
    let s = ProbeSpec::from_yaml("httpGet: {path: /, port: 80}\nperiodSeconds: 1").unwrap();
    assert!(matches!(
        s.validate(ProbeKind::Readiness),
        Err(ConfigError::NoFileAction {
            kind: ProbeKind::Readiness
        })
    ));
}

#[test]
fn each_bad_field_is_named_in_the_error() {
    use ProbeKind::*;
    assert_eq!(field_of("file: {validity: 3}", Readiness), "file.path");
    assert_eq!(
        field_of("file: {path: probe, validity: 3}", Readiness),
        "file.path"
    );
    assert_eq!(
        field_of("file: {path: \"/a\\0b\", validity: 3}", Readiness),
        "file.path"
    );
    assert_eq!(field_of("file: {path: /a}", Readiness), "file.validity");
    assert_eq!(
        field_of("file: {path: /a, validity: -4}", Readiness),
        "file.validity"
    );
    let base = "file: {path: /a, validity: 3}\n";
    assert_eq!(
        field_of(&format!("{base}initialDelaySeconds: -1"), Readiness),
        "initialDelaySeconds"
    );
    assert_eq!(
        field_of(&format!("{base}periodSeconds: -1"), Readiness),
        "periodSeconds"
    );
    assert_eq!(
        field_of(&format!("{base}timeoutSeconds: -2"), Readiness),
        "timeoutSeconds"
    );
    assert_eq!(
        field_of(&format!("{base}failureThreshold: -3"), Readiness),
        "failureThreshold"
    );
    assert_eq!(
        field_of(&format!("{base}successThreshold: -1"), Readiness),
        "successThreshold"
    );
    assert_eq!(
        field_of(&format!("{base}successThreshold: 2"), Liveness),
        "successThreshold"
    );
    assert_eq!(
        field_of(&format!("{base}successThreshold: 2"), Startup),
        "successThreshold"
    );
}

#[test]
fn error_message_names_probe_field_value_and_rule() {
    let err = ProbeSpec::from_yaml("file: {path: /a, validity: 0}")
        .unwrap()
        .validate(ProbeKind::Liveness)
        .unwrap_err();
    assert_eq!(
        err.to_string(),
        "livenessProbe.file.validity: invalid value 0: must be at least 1 (seconds)"
    );
}

#[test]
fn malformed_text_is_a_typed_parse_error() {
    assert!(matches!(
        ProbeSpec::from_yaml("file: [1, 2"),
        Err(ConfigError::Yaml(_))
    ));
    assert!(matches!(
        ProbeSpec::from_json("{\"file\":"),
        Err(ConfigError::Json(_))
    ));
    assert!(matches!(
        ProbeSpec::from_yaml("file: {path: /a, validity: 3, extra: 1}"),
        Err(ConfigError::Yaml(_))
    ));
}
