//! What an operator sees of a real `shimlessd`: its metrics endpoint scraped around real
//! container lifecycles (runc) and a `kill -9` of the daemon, parsed as Prometheus would
//! (`prometheus-parse`); its logs as JSON lines whose call spans carry the call's ids; its
//! log rotated at the cap, keeping `log_keep` copies.

use integration::bundle::Bundle;
use integration::child::Child;
use integration::shimlessd::Shimlessd;
use prometheus_parse::{Scrape, Value};
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};
use task_service::api::containerd::task::v3::*;
use tonic::Code;

mod common;
use common::processes::reap_children;

/// Removes whatever a failed run left in the runtime root, so a failure leaks nothing.
struct ForceDelete(PathBuf);

impl Drop for ForceDelete {
    fn drop(&mut self) {
        integration::bundle::delete_all("runc", &self.0);
    }
}

/// `shimlessd` in `dir` with `extra` flags, logging to `dir/d.log`, once it serves.
fn daemon(dir: &Path, config: Option<&Path>, extra: &[&str]) -> Child {
    let mut builder = Shimlessd::new(env!("CARGO_BIN_EXE_shimlessd")).in_dir(dir);
    if let Some(config) = config {
        builder = builder.config(config);
    }
    let mut cmd = builder.command();
    cmd.args(extra);
    Child::start(cmd, &dir.join("d.log"), "serving on").unwrap()
}

/// `GET /metrics` on the unix socket `socket`, parsed.
fn scrape(socket: &Path) -> Scrape {
    let mut stream = std::os::unix::net::UnixStream::connect(socket).unwrap();
    stream
        .write_all(b"GET /metrics HTTP/1.0\r\nHost: shimless\r\n\r\n")
        .unwrap();
    let mut answer = String::new();
    stream.read_to_string(&mut answer).unwrap();
    let (head, body) = answer.split_once("\r\n\r\n").unwrap();
    assert!(head.starts_with("HTTP/1.0 200 OK"), "{head}");
    assert!(head.contains("text/plain; version=0.0.4"), "{head}");
    Scrape::parse(body.lines().map(|l| Ok(l.to_string()))).unwrap()
}

/// The value of the sample of `metric` whose labels include `labels` (0 when there is none:
/// a counter never incremented is not written).
fn value(scrape: &Scrape, metric: &str, labels: &[(&str, &str)]) -> f64 {
    let matching: Vec<f64> = scrape
        .samples
        .iter()
        .filter(|s| s.metric == metric && labels.iter().all(|(k, v)| s.labels.get(k) == Some(v)))
        .filter_map(|s| match s.value {
            Value::Counter(v) | Value::Gauge(v) | Value::Untyped(v) => Some(v),
            _ => None,
        })
        .collect();
    assert!(matching.len() <= 1, "{metric} {labels:?}: {matching:?}");
    matching.first().copied().unwrap_or(0.0)
}

/// Calls of the Task method `method` answered with `code`.
fn calls(scrape: &Scrape, method: &str, code: &str) -> f64 {
    value(
        scrape,
        "shimless_daemon_calls_total",
        &[
            ("service", "containerd.task.v3.Task"),
            ("method", method),
            ("code", code),
        ],
    )
}

fn exits(scrape: &Scrape) -> [f64; 4] {
    ["waitid", "ebpf", "pidfd_info", "lost"]
        .map(|source| value(scrape, "shimless_exits_total", &[("source", source)]))
}

fn containers(scrape: &Scrape, ns: &str, state: &str) -> f64 {
    value(
        scrape,
        "shimless_containers",
        &[("namespace", ns), ("state", state)],
    )
}

#[test]
fn a_scrape_counts_a_containers_life_and_a_kill_9_of_the_daemon() {
    const NS: &str = "observe-metrics";
    let Some(()) = common::needs_daemon() else {
        return;
    };
    // Container inits orphaned by the killed daemon come to this process, which reaps them.
    rustix::process::set_child_subreaper(rustix::process::Pid::from_raw(1)).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let _cleanup = ForceDelete(dir.path().join("runc").join(NS));
    let metrics = dir.path().join("m.sock");
    let address = format!("unix:{}", metrics.display());
    let mut first = daemon(dir.path(), None, &["--metrics-address", &address]);
    let socket = Shimlessd::socket_in(dir.path());

    let before = scrape(&metrics);
    assert_eq!(value(&before, "shimless_daemon_build_info", &[]), 1.0);
    assert_eq!(value(&before, "shimless_recoveries_total", &[]), 1.0);
    assert_eq!(value(&before, "shimless_exitwatch_loaded", &[]), 1.0);
    let exited = Bundle::exit_on_demand().unwrap();
    let survivor = Bundle::exit_on_demand().unwrap();
    let survivor_pid = smol::block_on(async {
        let mut c = common::client(&socket).await;
        common::create(&mut c, NS, "exits-7", exited.path()).await;
        common::start(&mut c, NS, "exits-7").await;
        let running = scrape(&metrics);
        assert_eq!(containers(&running, NS, "running"), 1.0);
        exited.tell_exit(7).unwrap();
        assert_eq!(common::wait(&mut c, NS, "exits-7").await.exit_status, 7);
        let missing = c
            .state(common::request(
                NS,
                StateRequest {
                    id: "never-created".into(),
                    ..Default::default()
                },
            ))
            .await
            .unwrap_err();
        assert_eq!(missing.code(), Code::NotFound);
        assert_eq!(containers(&scrape(&metrics), NS, "stopped"), 1.0);
        common::delete(&mut c, NS, "exits-7").await;
        common::create(&mut c, NS, "survivor", survivor.path()).await;
        common::start(&mut c, NS, "survivor").await
    });

    let after = scrape(&metrics);
    for (method, code, more) in [
        ("Create", "OK", 2.0),
        ("Start", "OK", 2.0),
        ("Wait", "OK", 1.0),
        ("Delete", "OK", 1.0),
        ("State", "NOT_FOUND", 1.0),
        ("State", "OK", 0.0),
    ] {
        assert_eq!(
            calls(&after, method, code) - calls(&before, method, code),
            more,
            "{method} {code}"
        );
    }
    let created = value(
        &after,
        "shimless_daemon_call_duration_seconds_count",
        &[("method", "Create")],
    );
    assert_eq!(created, 2.0);
    let runtime = |scrape: &Scrape, command: &str| {
        value(
            scrape,
            "shimless_runtime_invocations_total",
            &[("command", command), ("result", "success")],
        )
    };
    // runc create and start for each container, and a delete for the one deleted.
    for (command, more) in [("create", 2.0), ("start", 2.0), ("delete", 1.0)] {
        assert_eq!(
            runtime(&after, command) - runtime(&before, command),
            more,
            "runc {command}"
        );
    }
    let [waitid, ebpf, pidfd_info, lost] = exits(&after);
    assert_eq!(waitid + ebpf + pidfd_info, 1.0, "{:?}", exits(&after));
    assert_eq!(lost, 0.0);
    assert_eq!(containers(&after, NS, "stopped"), 0.0);
    assert_eq!(containers(&after, NS, "running"), 1.0);
    assert!(
        value(
            &after,
            "shimless_exitwatch_map_entries",
            &[("map", "tracking")]
        ) >= 1.0
    );

    // kill -9, and the survivor exits while no daemon runs.
    first.kill();
    survivor.tell_exit(9).unwrap();
    let deadline = Instant::now() + Duration::from_secs(60);
    while common::alive(survivor_pid) {
        assert!(Instant::now() < deadline, "the survivor did not exit");
        reap_children();
        std::thread::sleep(Duration::from_millis(20));
    }
    reap_children();
    let _second = daemon(dir.path(), None, &["--metrics-address", &address]);
    let restarted = scrape(&metrics);
    assert_eq!(value(&restarted, "shimless_recoveries_total", &[]), 1.0);
    assert!(value(&restarted, "shimless_recovery_duration_seconds", &[]) > 0.0);
    // A new process: its counters start from zero, and the one exit it reported came from
    // the kernel's record.
    assert_eq!(exits(&restarted), [0.0, 1.0, 0.0, 0.0]);
    assert_eq!(calls(&restarted, "Create", "OK"), 0.0);
    assert_eq!(containers(&restarted, NS, "stopped"), 1.0);
    assert!(
        value(&restarted, "shimless_daemon_start_time_seconds", &[])
            >= value(&after, "shimless_daemon_start_time_seconds", &[])
    );
    smol::block_on(async {
        let mut c = common::client(&socket).await;
        assert_eq!(common::wait(&mut c, NS, "survivor").await.exit_status, 9);
        common::delete(&mut c, NS, "survivor").await;
    });
    let done = scrape(&metrics);
    assert_eq!(calls(&done, "Wait", "OK"), 1.0);
    assert_eq!(calls(&done, "Delete", "OK"), 1.0);
    for state in ["created", "running", "stopped", "paused", "creating"] {
        assert_eq!(containers(&done, NS, state), 0.0, "{state}");
    }
    // At the default level no successful call is logged; a refused one is, with its ids.
    let log = std::fs::read_to_string(dir.path().join("d.log")).unwrap();
    assert!(!log.contains(" answered "), "{log}");
    let refused = log
        .lines()
        .find(|l| l.contains("refused") && l.contains("id=\"never-created\""))
        .unwrap_or_else(|| panic!("no refused State in:\n{log}"));
    assert!(refused.contains("code=\"NOT_FOUND\""), "{refused}");
    assert!(refused.contains(&format!("ns=\"{NS}\"")), "{refused}");
}

#[test]
fn json_log_lines_parse_and_each_calls_span_carries_its_ids() {
    const NS: &str = "observe-json";
    let Some(()) = common::needs_daemon() else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let _cleanup = ForceDelete(dir.path().join("runc").join(NS));
    let _daemon = daemon(
        dir.path(),
        None,
        &["--log-format", "json", "--log-level", "debug"],
    );
    let socket = Shimlessd::socket_in(dir.path());
    let bundle = Bundle::exit_on_demand().unwrap();
    smol::block_on(async {
        let mut c = common::client(&socket).await;
        common::create(&mut c, NS, "json-1", bundle.path()).await;
        let missing = c
            .state(common::request(
                NS,
                StateRequest {
                    id: "json-1".into(),
                    exec_id: "no-such-exec".into(),
                },
            ))
            .await
            .unwrap_err();
        assert_eq!(missing.code(), Code::NotFound);
        common::delete(&mut c, NS, "json-1").await;
    });
    let log = std::fs::read_to_string(dir.path().join("d.log")).unwrap();
    let lines: Vec<serde_json::Value> = log
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l}")))
        .collect();
    assert!(
        lines.iter().any(|l| l["fields"]["message"]
            .as_str()
            .unwrap_or("")
            .contains("serving on")),
        "{log}"
    );
    let call = |method: &str| {
        lines
            .iter()
            .find(|l| l["span"]["method"] == method && l["span"]["id"] == "json-1")
            .unwrap_or_else(|| panic!("no {method} of json-1 in:\n{log}"))
    };
    let create = call("Create");
    assert_eq!(create["level"], "DEBUG", "{create}");
    assert_eq!(create["span"]["ns"], NS, "{create}");
    assert_eq!(create["fields"]["code"], "OK", "{create}");
    assert!(create["fields"]["ms"].as_f64().unwrap() > 0.0, "{create}");
    let state = call("State");
    assert_eq!(state["level"], "INFO", "{state}");
    assert_eq!(state["span"]["exec_id"], "no-such-exec", "{state}");
    assert_eq!(state["fields"]["code"], "NOT_FOUND", "{state}");
    assert_eq!(call("Delete")["fields"]["code"], "OK");
}

#[test]
fn the_log_is_rotated_at_its_cap_keeping_log_keep_copies() {
    let Some(()) = common::needs_daemon() else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("c.toml");
    std::fs::write(&config, "log_max_bytes = 4096\nlog_keep = 2\n").unwrap();
    let _daemon = daemon(dir.path(), Some(&config), &[]);
    let log = dir.path().join("d.log");
    let copy = |n: u32| dir.path().join(format!("d.log.{n}"));
    // How many bytes of round `round`'s filler copy `n` holds.
    let filler = |n: u32, round: u8| {
        std::fs::read(copy(n)).map_or(0, |c| c.iter().filter(|&&b| b == b'0' + round).count())
    };
    // Three times over the cap, each waited for: the daemon's own check renames it.
    for round in 1..=3u8 {
        let mut file = std::fs::OpenOptions::new().append(true).open(&log).unwrap();
        file.write_all(&vec![b'0' + round; 8192]).unwrap();
        drop(file);
        let deadline = Instant::now() + Duration::from_secs(30);
        while filler(1, round) < 8192 {
            assert!(Instant::now() < deadline, "round {round}: never rotated");
            std::thread::sleep(Duration::from_millis(50));
        }
    }
    assert!(filler(2, 2) >= 8192, "the second copy is round 2's");
    assert!(!copy(3).exists(), "only log_keep = 2 copies are kept");
    // The first copy kept the daemon's start.
    let oldest = std::fs::read_to_string(copy(2)).unwrap_or_default();
    assert!(!oldest.contains("serving on"), "round 1's copy was dropped");
}

/// `shimlessctl --socket <socket> [--json] status`.
fn ctl_status(socket: &Path, json: bool) -> (Option<i32>, String) {
    let mut cmd = std::process::Command::new(env!("CARGO_BIN_EXE_shimlessctl"));
    cmd.arg("--socket").arg(socket);
    if json {
        cmd.arg("--json");
    }
    let out = cmd.arg("status").output().unwrap();
    (
        out.status.code(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
    )
}

#[test]
fn status_counts_containers_when_healthy_and_exits_2_when_the_daemon_is_down() {
    const NS: &str = "observe-status";
    let Some(()) = common::needs_daemon() else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let _cleanup = ForceDelete(dir.path().join("runc").join(NS));
    let _daemon = daemon(dir.path(), None, &[]);
    let socket = Shimlessd::socket_in(dir.path());
    let bundle = Bundle::exit_on_demand().unwrap();
    smol::block_on(async {
        let mut c = common::client(&socket).await;
        common::create(&mut c, NS, "counted", bundle.path()).await;
    });
    let (code, text) = ctl_status(&socket, false);
    assert_eq!(code, Some(0), "{text}");
    assert!(text.contains("shimless-front: none"), "{text}");
    assert!(
        text.contains("exit codes kept in the kernel: yes (exitwatch loaded, attached by "),
        "{text}"
    );
    assert!(
        text.contains(&format!("containers in {NS}: 1 created")),
        "{text}"
    );
    let (code, text) = ctl_status(&socket, true);
    assert_eq!(code, Some(0), "{text}");
    let value: serde_json::Value = serde_json::from_str(&text).unwrap();
    assert_eq!(value["healthy"], true, "{value}");
    let version = value["version"].as_str().unwrap_or("");
    assert!(version.starts_with(env!("CARGO_PKG_VERSION")), "{value}");
    assert!(
        value["exitwatch"]["capacity"].as_u64().unwrap() > 0,
        "{value}"
    );
    let attach = value["exitwatch"]["attach"].as_str().unwrap_or("");
    assert!(
        ["tp_btf", "tracepoint", "raw_tp"].contains(&attach),
        "{value}"
    );
    let ours: Vec<_> = value["containers"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|c| c["namespace"] == NS)
        .collect();
    assert_eq!(ours.len(), 1, "{value}");
    assert_eq!(
        (&ours[0]["state"], &ours[0]["count"]),
        (&"created".into(), &1.into())
    );
    smol::block_on(async {
        let mut c = common::client(&socket).await;
        common::delete(&mut c, NS, "counted").await;
    });

    // A front whose daemon is not there: the front answers, the daemon does not.
    let s = common::shimless::Shimless::new("supervise = false");
    let mut cmd = std::process::Command::new(env!("CARGO_BIN_EXE_shimless-front"));
    cmd.arg("--config").arg(s.config());
    let _front = Child::start(cmd, &s.dir.path().join("front.log"), "serving on").unwrap();
    let (code, text) = ctl_status(&s.front_socket(), false);
    assert_eq!(code, Some(2), "{text}");
    assert!(text.contains("shimless-front pid "), "{text}");
    assert!(text.contains("shimlessd: DOWN ("), "{text}");
    let (code, text) = ctl_status(&s.front_socket(), true);
    assert_eq!(code, Some(2), "{text}");
    let value: serde_json::Value = serde_json::from_str(&text).unwrap();
    assert_eq!(value["healthy"], false, "{value}");
    assert!(value["front"]["pid"].as_u64().unwrap() > 0, "{value}");
}
