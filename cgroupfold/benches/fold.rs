//! Creates, configures and removes the cgroups of 1,000 pods × 3 containers in kubelet's
//! standard layout and in the folded layouts, side by side, on this host's real hierarchies.
//!
//! Run as root: `cargo bench -p cgroupfold --bench fold`. Prints a markdown table.

use cgroupfold::fs::Cgroups;
use cgroupfold::layout::{Driver, FoldPolicy, Plan, Pod};
use cgroupfold::math::{Bytes, MilliCpu, NodeResources, Resources};
use std::time::{Duration, Instant};

const PODS: usize = 1000;
const CONTAINERS: usize = 3;

fn pods() -> Vec<Pod> {
    (0..PODS)
        .map(|i| {
            // A third each of Guaranteed, Burstable and BestEffort pods.
            let r = match i % 3 {
                0 => Resources::guaranteed(MilliCpu(100), Bytes::mib(64)),
                1 => Resources {
                    cpu_request: Some(MilliCpu(50)),
                    memory_limit: Some(Bytes::mib(128)),
                    ..Default::default()
                },
                _ => Resources::default(),
            };
            let containers = (0..CONTAINERS).map(|c| (format!("c{i}x{c}"), r)).collect();
            Pod::new(&format!("0000-{i:04}"), &format!("pause{i}"), containers)
        })
        .collect()
}

struct Timing {
    create: Duration,
    apply: Duration,
    remove: Duration,
}

fn run(cg: &Cgroups, plan: &Plan) -> Result<Timing, cgroupfold::fs::FsError> {
    let t = Instant::now();
    for node in &plan.cgroups {
        cg.create(&node.path)?;
    }
    let create = t.elapsed();
    let t = Instant::now();
    for node in &plan.cgroups {
        cg.apply(&node.path, &node.config)?;
    }
    let apply = t.elapsed();
    let t = Instant::now();
    cg.remove_root()?;
    Ok(Timing {
        create,
        apply,
        remove: t.elapsed(),
    })
}

fn ms(d: Duration) -> String {
    format!("{:.0} ms", d.as_secs_f64() * 1000.0)
}

fn main() {
    if !rustix::process::geteuid().is_root() {
        eprintln!("fold bench: needs root to create cgroups; skipped");
        return;
    }
    let pods = pods();
    let node = NodeResources {
        cpu: MilliCpu::cores(64),
        memory: Bytes::gib(256),
    };
    let policies = [
        ("standard (Never)", FoldPolicy::Never),
        ("folded (WhenLossless)", FoldPolicy::WhenLossless),
        ("folded (Always)", FoldPolicy::Always),
    ];
    let detected = Cgroups::detect().expect("detect cgroup mode");
    println!(
        "mode: {:?}; {PODS} pods x {CONTAINERS} containers (+ pause)\n",
        detected.mode()
    );
    println!(
        "| layout | cgroups | systemd units | create | apply | remove | total | total vs standard |"
    );
    println!("|---|---|---|---|---|---|---|---|");
    let mut base = None;
    for (name, policy) in policies {
        let plan = Plan::new(&pods, node, Driver::Cgroupfs, policy);
        let units = Plan::new(&pods, node, Driver::Systemd, policy)
            .counts()
            .systemd_units;
        let root = format!("cgroupfold-bench-{}-{policy:?}", std::process::id());
        let cg = detected.clone().with_root(&root).expect("root");
        let timing = match run(&cg, &plan) {
            Ok(t) => t,
            Err(e) => {
                let _ = cg.remove_root();
                panic!("{name}: {e}");
            }
        };
        let total = timing.create + timing.apply + timing.remove;
        let base_total = *base.get_or_insert(total);
        println!(
            "| {name} | {} | {units} | {} | {} | {} | {} | {:.2}x |",
            plan.counts().cgroups,
            ms(timing.create),
            ms(timing.apply),
            ms(timing.remove),
            ms(total),
            total.as_secs_f64() / base_total.as_secs_f64(),
        );
    }
}
