//! The checks `scripts/node-vm` runs inside its node VM: Debian trixie, systemd as PID 1, pure
//! cgroup v2, and containerd.service with the seed's config (`SystemdCgroup = true`,
//! `runtime_path = /usr/local/bin/containerd-shim-shimless-v2`). This program plays kubelet
//! over CRI (`runtime.v1` on `/run/containerd/containerd.sock`) against that containerd, and
//! prints one line per check, `ok <name>` or `FAIL <name>: why`, and `info ...` lines with what
//! it measured. It exits non-zero when a check failed.
//!
//! It is made for that VM (it restarts containerd, kills `shimlessd`, leaves pods' systemd units
//! to be counted); on another machine it refuses to start.
//!
//! ```text
//! # in the node VM, as root (scripts/node-vm does it through a systemd unit):
//! /mnt/shimless/node-vm-checks
//! ```

#[path = "node-vm/checks.rs"]
mod checks;
#[path = "node-vm/node.rs"]
mod node;
#[path = "node-vm/pods.rs"]
mod pods;

use checks::*;
use integration::image::Image;
use node::*;
use pods::*;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

/// Kubernetes' CRI, package `runtime.v1` (the subset in `proto/k8s/cri/runtime_v1.proto`).
mod runtime {
    pub mod v1 {
        #![allow(dead_code, missing_docs, clippy::all)]
        include!(concat!(env!("OUT_DIR"), "/runtime.v1.rs"));
    }
}

use runtime::v1::runtime_service_client::RuntimeServiceClient;
use runtime::v1::*;

type Cri = RuntimeServiceClient<task_service::grpc::Channel>;

const SOCKET: &str = "/run/containerd/containerd.sock";
const BUSYBOX: &str = "docker.io/shimless/busybox:test";
/// The sandbox image the VM's containerd config names.
const PAUSE: &str = "registry.k8s.io/pause:3.9";
/// The seed's handler: shimless.
const UNIFIED: &str = "unified";
/// CRI's default handler: the stock runc shim.
const STOCK: &str = "";
/// Where pods' logs go.
const LOGS: &str = "/var/log/node-vm";
/// How long a state change may take under TCG before a check gives up (a bound, not a speed claim).
const PATIENCE: Duration = Duration::from_secs(180);

type Outcome = Result<(), String>;

fn main() {
    let hostname = std::fs::read_to_string("/etc/hostname").unwrap_or_default();
    if hostname.trim() != "node-vm" {
        eprintln!("node-vm: this program runs inside scripts/node-vm's VM only (hostname node-vm)");
        std::process::exit(2);
    }
    let failed = smol::block_on(run());
    std::process::exit(i32::from(failed > 0));
}

/// Every check in order; returns how many failed.
async fn run() -> usize {
    let mut report = Report::default();
    report.check("systemd_is_pid1", systemd_is_pid1());
    report.check("pure_cgroup_v2", pure_cgroup_v2());
    report.check("containerd_memlock_unlimited", containerd_memlock());
    if let Err(e) = import_images() {
        report.check("images_imported", Err(e));
        return report.failed;
    }
    report.check("images_imported", Ok(()));
    let mut cri = match connect().await {
        Ok(c) => c,
        Err(e) => {
            report.check("cri_connects", Err(e));
            return report.failed;
        }
    };
    single_pod(&mut report, &mut cri).await;
    report.check("oom_killed_from_memory_events", oom_killed(&mut cri).await);
    let pods = ten_pods(&mut report, &mut cri).await;
    report.check(
        "front_and_daemon_in_containerd_service",
        front_and_daemon_in_containerd_service(),
    );
    // The daemon's kill before any containerd restart: in that order containerd was once seen
    // to delete other tasks as if their shim had died (see integration/README.md).
    let mut cri = cri;
    kill_shimlessd(&mut report, &mut cri, &pods).await;
    let mut cri = restart_containerd(&mut report, cri, &pods).await;
    for pod in &pods {
        let _ = remove_pod(&mut cri, pod).await;
    }
    report.check("pods_leave_no_units", no_pod_units());
    report.failed
}

/// Prints each check's line as it completes.
#[derive(Default)]
struct Report {
    failed: usize,
}

impl Report {
    fn check(&mut self, name: &str, outcome: Outcome) {
        match outcome {
            Ok(()) => println!("ok {name}"),
            Err(why) => {
                self.failed += 1;
                println!("FAIL {name}: {}", why.replace('\n', " | "));
                if self.failed == 1 {
                    diagnostics();
                }
            }
        }
    }
}

/// Set once the stock pods are gone (diagnostics say whether a failure came before).
static STOCK_DONE: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);

/// What the node looked like, after a failure: processes with their cgroups, the daemon's and
/// the front's logs, containerd's journal.
fn diagnostics() {
    for script in [
        "ps -eo pid,ppid,stat,etimes,cgroup:100,args",
        "tail -n 60 /var/log/shimless/shimlessd.log",
        "tail -n 20 /var/log/shimless/front.log",
        "journalctl -q -u containerd --no-pager -n 40",
        "systemctl list-units --no-legend --plain 'cri-containerd-*'",
        "journalctl -q --no-pager -o short-monotonic -n 80 _PID=1",
        "journalctl -q --no-pager -o short-monotonic -k -n 30",
    ] {
        println!("| $ {script}");
        for line in sh(script).unwrap_or_else(|e| e).lines() {
            println!("| {line}");
        }
    }
}

fn info(what: impl std::fmt::Display) {
    println!("info {what}");
}

fn ensure(cond: bool, why: impl FnOnce() -> String) -> Outcome {
    if cond { Ok(()) } else { Err(why()) }
}

/// Runs `sh -c script`; its stdout, or why it failed.
fn sh(script: &str) -> Result<String, String> {
    let out = Command::new("sh")
        .args(["-c", script])
        .output()
        .map_err(|e| format!("{script}: {e}"))?;
    if out.status.success() {
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    } else {
        Err(format!(
            "{script}: {} {}",
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        ))
    }
}
