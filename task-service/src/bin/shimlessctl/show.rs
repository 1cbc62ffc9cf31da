//! `ps` and `probes` (the daemon's containers and its probes, through the Admin service) and
//! `events` (its task events, through `Events/Subscribe`).

use crate::task::Ctl;
use crate::{Result, status};
use serde_json::json;
use std::time::{Duration, SystemTime};
use task_service::api::containerd::services::events::v1::SubscribeRequest;
use task_service::api::shimless::v1::{ListRequest, ProbesRequest};
use task_service::events::TaskEvent;

/// `shimlessctl ps`: a table, or a JSON array.
pub(crate) async fn ps(ctl: &Ctl, all: bool) -> Result<i32> {
    let mut admin = ctl.client.admin();
    let namespace = if all {
        String::new()
    } else {
        ctl.namespace.clone()
    };
    let listed = admin
        .list(ListRequest { namespace })
        .await
        .map_err(status)?
        .into_inner();
    // What the daemon's recovery left for a human: on stderr, so the table stays parseable.
    for problem in &listed.problems {
        eprintln!("shimlessctl: warning: {problem}");
    }
    let tasks = listed.tasks;
    if ctl.json() {
        let rows: Vec<_> = tasks
            .iter()
            .map(|t| {
                json!({"namespace": t.namespace, "id": t.id, "pid": t.pid, "status": t.status,
                       "exit_status": (t.status == "stopped").then_some(t.exit_status),
                       "created_at": t.created_at.map(|c| c.seconds), "execs": t.execs,
                       "pod_cgroup": t.pod_cgroup, "fold_losses": t.fold_losses})
            })
            .collect();
        println!("{}", serde_json::Value::Array(rows));
        return Ok(0);
    }
    println!(
        "{:<12} {:<24} {:>8} {:<8} {:>5} {:>8}",
        "NAMESPACE", "ID", "PID", "STATUS", "EXIT", "AGE"
    );
    for t in &tasks {
        let exit = if t.status == "stopped" {
            t.exit_status.to_string()
        } else {
            "-".into()
        };
        println!(
            "{:<12} {:<24} {:>8} {:<8} {:>5} {:>8}",
            t.namespace,
            t.id,
            t.pid,
            t.status,
            exit,
            age(t.created_at)
        );
    }
    folded_pods(&tasks);
    Ok(0)
}

/// `shimlessctl probes`: a table and the node's counters, or one JSON object.
pub(crate) async fn probes(ctl: &Ctl, all: bool) -> Result<i32> {
    let namespace = if all {
        String::new()
    } else {
        ctl.namespace.clone()
    };
    let listed = ctl
        .client
        .admin()
        .probes(ProbesRequest { namespace })
        .await
        .map_err(status)?
        .into_inner();
    let c = listed.counters.unwrap_or_default();
    if ctl.json() {
        let rows: Vec<_> = listed
            .probes
            .iter()
            .map(|p| {
                json!({"namespace": p.namespace, "id": p.id, "container": p.container,
                       "kind": p.kind, "path": p.path, "period_seconds": p.period_seconds,
                       "validity_seconds": p.validity_seconds, "state": p.state,
                       "result": p.result, "reason": p.reason, "changes": p.changes,
                       "failures": p.failures, "kills": p.kills,
                       "since": p.since.map(|s| s.seconds)})
            })
            .collect();
        let counters = json!({"runs": c.runs, "failures": c.failures, "skips": c.skips,
            "events": c.events, "hung": c.hung, "statx_calls": c.statx_calls,
            "cached_checks": c.cached_checks, "watches": c.watches, "kills": c.kills});
        println!("{}", json!({"probes": rows, "counters": counters}));
        return Ok(0);
    }
    println!(
        "{:<12} {:<24} {:<14} {:<15} {:<8} {:<8} {:>7} {:>8} {:>5}  REASON",
        "NAMESPACE", "ID", "CONTAINER", "PROBE", "STATE", "RESULT", "CHANGES", "FAILURES", "KILLS"
    );
    for p in &listed.probes {
        println!(
            "{:<12} {:<24} {:<14} {:<15} {:<8} {:<8} {:>7} {:>8} {:>5}  {}",
            p.namespace,
            p.id,
            p.container,
            p.kind,
            p.state,
            p.result,
            p.changes,
            p.failures,
            p.kills,
            p.reason
        );
    }
    println!(
        "prober: {} checks ({} failed, {} skipped, {} hung), {} statx, {} answered by inotify, \
         {} directories watched; {} containers killed",
        c.runs, c.failures, c.skips, c.hung, c.statx_calls, c.cached_checks, c.watches, c.kills
    );
    Ok(0)
}

/// Below the table: each folded pod's cgroup, its containers, and what folding gives up.
fn folded_pods(tasks: &[task_service::api::shimless::v1::TaskSummary]) {
    let mut pods: std::collections::BTreeMap<&str, (Vec<&str>, &[String])> = Default::default();
    for t in tasks.iter().filter(|t| !t.pod_cgroup.is_empty()) {
        let pod = pods.entry(&t.pod_cgroup).or_default();
        pod.0.push(&t.id);
        pod.1 = &t.fold_losses;
    }
    for (cgroup, (ids, losses)) in pods {
        let lost = if losses.is_empty() {
            "nothing".to_string()
        } else {
            losses.join("; ")
        };
        println!(
            "folded pod {cgroup}: {} containers in one cgroup; gives up: {lost}",
            ids.len()
        );
    }
}

fn age(created: Option<prost_types::Timestamp>) -> String {
    let Some(created) = created else {
        return "-".into();
    };
    let at = SystemTime::UNIX_EPOCH + Duration::from_secs(created.seconds.max(0) as u64);
    let secs = SystemTime::now()
        .duration_since(at)
        .unwrap_or_default()
        .as_secs();
    match secs {
        0..60 => format!("{secs}s"),
        60..3600 => format!("{}m", secs / 60),
        3600..86400 => format!("{}h", secs / 3600),
        _ => format!("{}d", secs / 86400),
    }
}

/// `shimlessctl events`: one line per event until the daemon goes away.
pub(crate) async fn events(ctl: &Ctl, filters: Vec<String>) -> Result<i32> {
    let mut client = ctl.client.events();
    let mut stream = client
        .subscribe(SubscribeRequest { filters })
        .await
        .map_err(status)?
        .into_inner();
    while let Some(envelope) = stream.message().await.map_err(status)? {
        let event = envelope.event.as_ref().and_then(TaskEvent::from_any);
        let when = envelope.timestamp.map_or(0, |t| t.seconds);
        let detail = match &event {
            Some(TaskEvent::Exit(e)) => format!("{} pid {} exit {}", e.id, e.pid, e.exit_status),
            Some(TaskEvent::Create(e)) => format!("{} pid {}", e.container_id, e.pid),
            Some(TaskEvent::Start(e)) => format!("{} pid {}", e.container_id, e.pid),
            Some(TaskEvent::Delete(e)) => format!("{} exit {}", e.container_id, e.exit_status),
            Some(other) => other.container_id().to_string(),
            None => "(undecodable)".into(),
        };
        ctl.print(
            json!({"timestamp": when, "namespace": envelope.namespace,
                   "topic": envelope.topic, "event": format!("{event:?}")}),
            format!("{when} {} {} {detail}", envelope.namespace, envelope.topic),
        );
    }
    Ok(0)
}
