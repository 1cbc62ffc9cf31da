//! `shimlessctl status`: whether the node's shimless is healthy, as one command an operator or
//! a health check runs: the front and the daemon (pids, version, uptime), exitwatch, the
//! containers by namespace and state, the forward queue, the latest problems.
//!
//! Exit codes: 0 healthy, 3 degraded (exitwatch not loaded: exits while the daemon is down
//! would be reported as 255), 2 the daemon does not answer (behind a front that does), 1 nothing
//! answers on the socket.

use crate::task::Ctl;
use crate::{Result, status};
use serde_json::json;
use std::time::{Duration, SystemTime, UNIX_EPOCH};
use task_service::api::shimless::v1::{InfoRequest, InfoResponse, StatusRequest, StatusResponse};

/// How long each question may take: the front holds a call while the daemon is away, and a
/// health check must not hang for its whole hold.
const ASK: Duration = Duration::from_secs(5);

/// Exit code: the daemon does not answer.
const DOWN: i32 = 2;
/// Exit code: the daemon runs without exitwatch.
const DEGRADED: i32 = 3;

fn asked<T>(msg: T) -> tonic::Request<T> {
    let mut request = tonic::Request::new(msg);
    request.set_timeout(ASK);
    request
}

/// `shimlessctl status` (see the [module docs](self) for its exit codes).
pub(crate) async fn status_of(ctl: &Ctl) -> Result<i32> {
    // The front answers Info itself; shimlessd, asked directly, does not know the call.
    let front = ctl.client.front().info(asked(InfoRequest {})).await;
    let front = match front {
        Ok(info) => Some(info.into_inner()),
        Err(e) if e.code() == tonic::Code::Unimplemented => None,
        Err(e) => return Err(status(e)),
    };
    let daemon = ctl.client.health().status(asked(StatusRequest {})).await;
    let (code, daemon) = match daemon {
        Ok(answer) => {
            let answer = answer.into_inner();
            (
                if answer.kernel_exit_records {
                    0
                } else {
                    DEGRADED
                },
                Ok(answer),
            )
        }
        Err(e) => (DOWN, Err(format!("{:?}: {}", e.code(), e.message()))),
    };
    if ctl.json() {
        println!("{}", as_json(front.as_ref(), &daemon, code));
    } else {
        print_front(front.as_ref());
        match &daemon {
            Ok(answer) => print_daemon(answer),
            Err(why) => println!("shimlessd: DOWN ({why})"),
        }
    }
    Ok(code)
}

fn as_json(
    front: Option<&InfoResponse>,
    daemon: &std::result::Result<StatusResponse, String>,
    code: i32,
) -> serde_json::Value {
    let front = front.map(|f| {
        json!({"pid": f.pid, "generation": f.generation, "binary": f.binary, "version": f.version})
    });
    match daemon {
        Ok(a) => json!({
            "healthy": code == 0, "front": front, "pid": a.pid, "version": a.version,
            "protocol_version": a.protocol_version,
            "started_at": a.started_at, "kernel_exit_records": a.kernel_exit_records,
            "degraded": !a.kernel_exit_records, "warnings": a.warnings,
            "exitwatch": a.kernel_exit_records.then(|| json!({
                "pin_dir": a.exitwatch_pin_dir, "attach": a.exitwatch_attach,
                "tracked": a.exitwatch_tracked,
                "recorded": a.exitwatch_recorded, "capacity": a.exitwatch_capacity})),
            "containers": a.containers.iter().map(|c| json!({
                "namespace": c.namespace, "state": c.state, "count": c.count})).collect::<Vec<_>>(),
            "forward_queue": a.forward_queue, "forward_dropped": a.forward_dropped,
            "last_errors": a.last_errors.iter().map(|l| json!({
                "at": l.at, "level": l.level, "message": l.message})).collect::<Vec<_>>(),
        }),
        Err(why) => json!({"healthy": false, "front": front, "daemon_down": why}),
    }
}

fn print_front(front: Option<&InfoResponse>) {
    match front {
        Some(f) => println!(
            "shimless-front pid {}, version {}, generation {} ({})",
            f.pid, f.version, f.generation, f.binary
        ),
        None => println!("shimless-front: none (this socket is shimlessd's own)"),
    }
}

fn print_daemon(a: &StatusResponse) {
    println!(
        "shimlessd pid {}, version {}, up {}",
        a.pid,
        a.version,
        since(a.started_at)
    );
    if a.kernel_exit_records {
        println!(
            "exit codes kept in the kernel: yes (exitwatch loaded, attached by {}, pinned in {}: \
             {} tracked, {} recorded, capacity {})",
            a.exitwatch_attach,
            a.exitwatch_pin_dir,
            a.exitwatch_tracked,
            a.exitwatch_recorded,
            a.exitwatch_capacity
        );
    } else {
        println!(
            "DEGRADED: exit codes are not kept in the kernel (exitwatch not loaded): exits \
             while shimlessd is down are reported with 255"
        );
    }
    for warning in &a.warnings {
        println!("warning: {warning}");
    }
    let mut namespaces: Vec<(&str, Vec<String>)> = Vec::new();
    for c in &a.containers {
        let line = format!("{} {}", c.count, c.state);
        match namespaces.last_mut() {
            Some((ns, states)) if *ns == c.namespace => states.push(line),
            _ => namespaces.push((&c.namespace, vec![line])),
        }
    }
    if namespaces.is_empty() {
        println!("containers: none");
    }
    for (ns, states) in namespaces {
        println!("containers in {ns}: {}", states.join(", "));
    }
    println!(
        "events waiting for containerd: {}; dropped: {}",
        a.forward_queue, a.forward_dropped
    );
    for line in &a.last_errors {
        println!("{} ago {} {}", since(line.at), line.level, line.message);
    }
}

/// How long ago `unix_seconds` was, as `3d`, `5h`, `12m` or `40s`.
fn since(unix_seconds: u64) -> String {
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default()
        .as_secs();
    let secs = now.saturating_sub(unix_seconds);
    match secs {
        0..60 => format!("{secs}s"),
        60..3600 => format!("{}m", secs / 60),
        3600..86400 => format!("{}h", secs / 3600),
        _ => format!("{}d", secs / 86400),
    }
}
