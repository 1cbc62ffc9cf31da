//! Kubelet's state machine as a table of scenarios, on an injected clock.

use std::time::{Duration, Instant};

use ProbeResult::{Failure as F, Success as S, Unknown as U};
use fileprobe::{Machine, ProbeKind, ProbeResult, ProbeSpec, Skip, first_due};

/// One step of a scenario.
#[derive(Debug, Clone, Copy)]
enum Ev {
    /// A tick at `t` seconds with the given startup state and raw result: runs if the gate lets it.
    Tick(u64, bool, bool),
    /// A new container id started at `t` seconds.
    Restart(&'static str, u64),
}

struct Row {
    name: &'static str,
    kind: ProbeKind,
    yaml: &'static str,
    events: &'static [Ev],
    /// After each event: (reported result, gate verdict of that tick if it was a tick).
    expect: &'static [(ProbeResult, Option<Skip>)],
}

fn table() -> Vec<Row> {
    use Ev::*;
    use ProbeKind::*;
    vec![
        Row {
            name: "readiness starts Failure, one success flips it",
            kind: Readiness,
            yaml: "",
            events: &[Tick(0, true, true)],
            expect: &[(S, None)],
        },
        Row {
            name: "liveness starts Success and stays until failureThreshold",
            kind: Liveness,
            yaml: "failureThreshold: 3",
            events: &[
                Tick(0, true, false),
                Tick(10, true, false),
                Tick(20, true, false),
            ],
            expect: &[(S, None), (S, None), (F, None)],
        },
        Row {
            name: "startup starts Unknown",
            kind: Startup,
            yaml: "",
            events: &[Tick(0, false, true)],
            expect: &[(S, None)],
        },
        Row {
            name: "a success in between resets the failure run",
            kind: Readiness,
            yaml: "failureThreshold: 2",
            events: &[
                Tick(0, true, true),
                Tick(1, true, false),
                Tick(2, true, true),
                Tick(3, true, false),
                Tick(4, true, false),
            ],
            expect: &[(S, None), (S, None), (S, None), (S, None), (F, None)],
        },
        Row {
            name: "readiness successThreshold 2 needs two in a row",
            kind: Readiness,
            yaml: "successThreshold: 2",
            events: &[
                Tick(0, true, true),
                Tick(1, true, false),
                Tick(2, true, true),
                Tick(3, true, true),
            ],
            expect: &[(F, None), (F, None), (F, None), (S, None)],
        },
        Row {
            name: "readiness and liveness wait for startup",
            kind: Readiness,
            yaml: "",
            events: &[Tick(0, false, true), Tick(1, true, true)],
            expect: &[(F, Some(Skip::AwaitingStartup)), (S, None)],
        },
        Row {
            name: "initialDelaySeconds counts from the container start",
            kind: Readiness,
            yaml: "initialDelaySeconds: 5",
            events: &[Tick(4, true, true), Tick(5, true, true)],
            expect: &[(F, Some(Skip::InitialDelay)), (S, None)],
        },
        Row {
            name: "liveness failure holds until a new container id",
            kind: Liveness,
            yaml: "failureThreshold: 1",
            events: &[
                Tick(0, true, false),
                Tick(1, true, true),
                Restart("c2", 2),
                Tick(2, true, true),
            ],
            expect: &[(F, None), (F, Some(Skip::OnHold)), (S, None), (S, None)],
        },
        Row {
            name: "startup failure holds too; restart resets to Unknown",
            kind: Startup,
            yaml: "failureThreshold: 1",
            events: &[
                Tick(0, false, false),
                Tick(1, false, true),
                Restart("c2", 2),
                Tick(2, false, true),
            ],
            expect: &[(F, None), (F, Some(Skip::OnHold)), (U, None), (S, None)],
        },
        Row {
            name: "readiness failure does not hold",
            kind: Readiness,
            yaml: "failureThreshold: 1",
            events: &[Tick(0, true, false), Tick(1, true, true)],
            expect: &[(F, None), (S, None)],
        },
        Row {
            name: "delay restarts with the new container's start time",
            kind: Readiness,
            yaml: "initialDelaySeconds: 5",
            events: &[
                Tick(5, true, true),
                Restart("c2", 10),
                Tick(12, true, true),
                Tick(15, true, true),
            ],
            expect: &[
                (S, None),
                (F, None),
                (F, Some(Skip::InitialDelay)),
                (S, None),
            ],
        },
    ]
}

#[test]
fn kubelet_state_machine_scenarios() {
    let t0 = Instant::now();
    let at = |s: u64| t0 + Duration::from_secs(s);
    for row in table() {
        let yaml = format!("file: {{path: /p, validity: 5}}\n{}", row.yaml);
        let probe = ProbeSpec::from_yaml(&yaml)
            .unwrap()
            .validate(row.kind)
            .unwrap();
        let mut m = Machine::new(&probe, "c1", t0);
        assert_eq!(
            m.result(),
            ProbeResult::initial(row.kind),
            "{}: initial",
            row.name
        );
        assert_eq!(
            row.events.len(),
            row.expect.len(),
            "{}: table shape",
            row.name
        );
        for (i, (ev, (want, want_skip))) in row.events.iter().zip(row.expect).enumerate() {
            let skip = match *ev {
                Ev::Tick(t, startup_ok, raw) => {
                    let gate = m.gate(at(t), startup_ok);
                    if gate.is_ok() {
                        m.record(raw);
                    }
                    gate.err()
                }
                Ev::Restart(id, t) => {
                    m.new_container(id, at(t));
                    None
                }
            };
            assert_eq!(
                (m.result(), skip),
                (*want, *want_skip),
                "{}: step {i} {ev:?}",
                row.name
            );
        }
    }
}

#[test]
fn record_reports_only_changes() {
    let p = ProbeSpec::from_yaml("file: {path: /p, validity: 5}")
        .unwrap()
        .validate(ProbeKind::Readiness)
        .unwrap();
    let mut m = Machine::new(&p, "c1", Instant::now());
    let changes: Vec<_> = [true, true, false, false, false, false]
        .iter()
        .map(|&r| m.record(r))
        .collect();
    assert_eq!(changes, [Some(S), None, None, None, Some(F), None]);
}

#[test]
fn first_run_is_jittered_only_when_the_prober_starts_after_the_container() {
    let t0 = Instant::now();
    let period = Duration::from_secs(10);
    assert_eq!(first_due(t0, t0, period, 0.9), t0);
    assert_eq!(first_due(t0, t0 + Duration::from_secs(1), period, 0.9), t0);
    let late = t0 + Duration::from_secs(60);
    assert_eq!(
        first_due(late, t0, period, 0.25),
        late + Duration::from_millis(2500)
    );
    assert_eq!(
        first_due(late, t0, period, 7.0),
        late + period,
        "fraction is clamped"
    );
}
