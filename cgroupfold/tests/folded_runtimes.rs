//! Two real busybox containers folded into one pod cgroup, under runc and under crun: the
//! per-container replacements for kill, pause and ps never touch the sibling.

use cgroupfold::fold::{
    Replacement, RuntimeOp, container_pids, continue_container, fold_spec, stop_container,
};
use cgroupfold::fs::Cgroups;
use cgroupfold::math::{Bytes, CgroupConfig, CpuQuota, MemoryLimit};
use integration::bundle::{Bundle, BundleBuilder, ContainerGuard};
use integration::{Need, require};
use oci_spec::runtime::Spec;
use std::process::{Command, Stdio};
use std::time::Duration;

struct Pod {
    runtime: &'static str,
    cg: Cgroups,
    state: tempfile::TempDir,
    // Dropped before `Pod::drop` finishes removing the cgroup: declared order matters less
    // than the explicit clear in drop.
    guards: Vec<ContainerGuard>,
    bundles: Vec<Bundle>,
}

impl Pod {
    fn bundle(&mut self, args: &[&str], pod_cgroup: &str) -> usize {
        let bundle = BundleBuilder::new()
            .args(args.iter().copied())
            .build()
            .unwrap();
        let config = bundle.path().join("config.json");
        let mut spec = Spec::load(&config).unwrap();
        fold_spec(&mut spec, pod_cgroup).unwrap();
        spec.save(&config).unwrap();
        self.bundles.push(bundle);
        self.bundles.len() - 1
    }

    /// Starts a container detached and returns its init pid and the runtime's messages.
    fn run(&mut self, name: &str, bundle: usize) -> (u32, String) {
        let id = format!("cgf-{}-{}-{name}", std::process::id(), self.runtime);
        let dir = self.state.path();
        let pid_file = dir.join(format!("{name}.pid"));
        // A detached container inherits the runtime's stdio: a pipe would never reach EOF, so
        // the runtime's messages go to a file.
        let log_path = dir.join(format!("{name}.stderr"));
        let log = std::fs::File::create(&log_path).unwrap();
        self.guards.push(ContainerGuard::new(
            self.runtime,
            dir.join("state"),
            id.clone(),
        ));
        let status = Command::new(self.runtime)
            .arg("--root")
            .arg(dir.join("state"))
            .args(["run", "-d", "--pid-file"])
            .arg(&pid_file)
            .arg("--bundle")
            .arg(self.bundles[bundle].path())
            .arg(&id)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log)
            .status()
            .unwrap();
        let stderr = std::fs::read_to_string(&log_path).unwrap();
        assert!(status.success(), "{} run: {stderr}", self.runtime);
        let pid = std::fs::read_to_string(&pid_file)
            .unwrap()
            .trim()
            .parse()
            .unwrap();
        (pid, stderr)
    }
}

impl Drop for Pod {
    fn drop(&mut self) {
        let _ = self.cg.kill_all("pod");
        self.guards.clear();
        let _ = self.cg.remove_root();
    }
}

fn proc_state(pid: u32) -> char {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    // The state follows the parenthesised command name.
    stat.rsplit_once(") ")
        .and_then(|(_, rest)| rest.chars().next())
        .unwrap_or('X')
}

fn wait_for(mut f: impl FnMut() -> bool, what: &str) {
    for _ in 0..500 {
        if f() {
            return;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    panic!("timed out waiting for {what}");
}

fn folded_containers_are_killed_paused_and_listed_one_at_a_time(runtime: &'static str) {
    let root = format!("cgroupfold-{runtime}-{}", std::process::id());
    let cg = Cgroups::detect().unwrap().with_root(&root).unwrap();
    let state = tempfile::tempdir().unwrap();
    let mut pod = Pod {
        runtime,
        cg,
        state,
        guards: Vec::new(),
        bundles: Vec::new(),
    };
    pod.cg.create("pod").unwrap();
    let limits = CgroupConfig {
        memory: MemoryLimit::Bytes(Bytes::mib(256)),
        pids_max: Some(64),
        cpu_shares: 512,
        cpu_quota: CpuQuota::Micros(50_000),
    };
    pod.cg.apply("pod", &limits).unwrap();

    let pod_cgroup = format!("/{root}/pod");
    let a_bundle = pod.bundle(&["sh", "-c", "sleep 300 & exec sleep 301"], &pod_cgroup);
    let b_bundle = pod.bundle(&["sleep", "302"], &pod_cgroup);
    let (a, _) = pod.run("a", a_bundle);
    let (b, b_stderr) = pod.run("b", b_bundle);
    eprintln!("{runtime} on joining a non-empty cgroup: {b_stderr:?}");
    // Both joined the one pod cgroup. The runtime kept the pod's CPU and pids limits; crun
    // 1.8.1 resets the memory limit to unlimited on every create even though the folded spec
    // has no memory section, so the service re-applies the pod's limits after each create.
    let memory_after_create = pod.cg.stats("pod").unwrap().memory_limit;
    let dirs = pod.cg.dirs("pod").unwrap();
    let read = |dir: &std::path::Path, file: &str| {
        std::fs::read_to_string(dir.join(file))
            .unwrap()
            .trim()
            .to_owned()
    };
    match dirs.iter().find(|d| d.join("cpu.shares").exists()) {
        // v1 (hybrid hosts): the cpu hierarchy's files.
        Some(cpu) => {
            assert_eq!(read(cpu, "cpu.shares"), "512");
            assert_eq!(read(cpu, "cpu.cfs_quota_us"), "50000");
        }
        // Pure v2: shares 512 is weight 1 + (512 - 2) * 9999 / 262142 = 20, as kubelet maps it.
        None => {
            let v2 = dirs
                .iter()
                .find(|d| d.join("cpu.weight").exists())
                .expect("a cpu.weight file on v2");
            assert_eq!(read(v2, "cpu.weight"), "20");
            assert_eq!(read(v2, "cpu.max"), "50000 100000");
        }
    }
    // On pure v2 (the kernel matrix's guests, 5.10 to 6.12) crun 1.8.1 keeps the limit.
    let v2 = pod.cg.mode() == cgroupfold::fs::Mode::V2;
    match runtime {
        "crun" if !v2 => assert_eq!(memory_after_create, Some(MemoryLimit::Unlimited)),
        _ => assert_eq!(
            memory_after_create,
            Some(MemoryLimit::Bytes(Bytes::mib(256)))
        ),
    }
    assert_eq!(
        RuntimeOp::Create.replacement(),
        Replacement::ReapplyPodLimits
    );
    pod.cg.apply("pod", &limits).unwrap();
    wait_for(
        || container_pids(&pod.cg, "pod", a).unwrap().len() == 2,
        "a's two processes",
    );
    let mut all = pod.cg.pids("pod").unwrap();
    all.sort_unstable();
    let mut a_pids = container_pids(&pod.cg, "pod", a).unwrap();
    let b_pids = container_pids(&pod.cg, "pod", b).unwrap();
    assert_eq!(b_pids, [b]);
    assert!(a_pids.contains(&a) && !a_pids.contains(&b));
    a_pids.extend(&b_pids);
    a_pids.sort_unstable();
    assert_eq!(
        a_pids, all,
        "every pod process belongs to exactly one container"
    );
    assert_eq!(
        pod.cg.stats("pod").unwrap().memory_limit,
        Some(MemoryLimit::Bytes(Bytes::mib(256)))
    );

    // Pause a: all of a's processes stop, b keeps running.
    let stopped = stop_container(&pod.cg, "pod", a).unwrap();
    assert_eq!(stopped.len(), 2);
    for &p in &stopped {
        wait_for(|| proc_state(p) == 'T', "a stopped");
    }
    assert_ne!(proc_state(b), 'T', "b must not be stopped");
    continue_container(&pod.cg, "pod", a).unwrap();
    for &p in &stopped {
        wait_for(|| proc_state(p) != 'T', "a continued");
    }

    // Kill a by its init only: its pid namespace takes its child down; b is untouched.
    rustix::process::kill_process(
        rustix::process::Pid::from_raw(a as i32).unwrap(),
        rustix::process::Signal::KILL,
    )
    .unwrap();
    wait_for(
        || pod.cg.pids("pod").unwrap() == [b],
        "only b left in the pod cgroup",
    );
    assert_eq!(container_pids(&pod.cg, "pod", b).unwrap(), [b]);
    assert_ne!(proc_state(b), 'T', "b must not be stopped");
}

#[test]
fn runc_folded_containers_are_killed_paused_and_listed_one_at_a_time() {
    let Some(()) = require(&[
        Need::Root,
        Need::Program("runc"),
        Need::File("/bin/busybox"),
    ]) else {
        return;
    };
    folded_containers_are_killed_paused_and_listed_one_at_a_time("runc");
}

#[test]
fn crun_folded_containers_are_killed_paused_and_listed_one_at_a_time() {
    let Some(()) = require(&[
        Need::Root,
        Need::Program("crun"),
        Need::File("/bin/busybox"),
    ]) else {
        return;
    };
    integration::bundle::prepare_crun().unwrap();
    folded_containers_are_killed_paused_and_listed_one_at_a_time("crun");
}
