//! The cgroup drivers against this host's real hierarchies, each test in its own subtree.

use cgroupfold::fs::{Cgroups, FsError, Mode, Mounts};
use cgroupfold::math::{
    Bytes, CgroupConfig, CpuQuota, MemoryLimit, MilliCpu, Resources, V1_UNLIMITED, container_cgroup,
};
use integration::{Need, require};
use std::io::Write;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

/// A private subtree and the processes a test started; both are gone when it drops.
struct Scratch {
    cg: Cgroups,
    children: Vec<Child>,
}

impl Scratch {
    fn new(name: &str, mode: Option<Mode>) -> Scratch {
        let root = format!("cgroupfold-test-{}-{name}", std::process::id());
        let cg = match mode {
            None => Cgroups::detect().expect("detect"),
            Some(m) => Cgroups::with_mode(&Mounts::read().expect("mounts"), m).expect("mode"),
        };
        Scratch {
            cg: cg.with_root(&root).expect("root"),
            children: Vec::new(),
        }
    }

    fn spawn(&mut self, script: &str) -> u32 {
        let child = Command::new("sh")
            .args(["-c", script])
            .stdin(Stdio::piped())
            .stdout(Stdio::null())
            .spawn()
            .expect("spawn sh");
        let pid = child.id();
        self.children.push(child);
        pid
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        for c in &mut self.children {
            let _ = c.kill();
            let _ = c.wait();
        }
        let _ = self.cg.set_frozen("", false);
        let _ = self.cg.remove_root();
    }
}

fn v1_dir(ctrl: &str, cg: &Cgroups, path: &str) -> std::path::PathBuf {
    let mount = Mounts::read().unwrap().v1_mount(ctrl).unwrap().clone();
    cg.dirs(path)
        .unwrap()
        .into_iter()
        .find(|d| d.starts_with(&mount))
        .unwrap()
}

fn read(dir: &std::path::Path, file: &str) -> String {
    std::fs::read_to_string(dir.join(file))
        .unwrap()
        .trim()
        .to_owned()
}

#[test]
fn detected_mode_matches_the_mount_table() {
    let Some(()) = require(&[Need::Root]) else {
        return;
    };
    let m = Mounts::read().unwrap();
    let want = match (m.v1.is_empty(), m.unified.is_some()) {
        (false, true) => Mode::Hybrid,
        (false, false) => Mode::V1,
        _ => Mode::V2,
    };
    assert_eq!(Cgroups::detect().unwrap().mode(), want);
}

#[test]
fn applied_settings_read_back_as_kubelet_computes_them() {
    let Some(()) = require(&[Need::Root]) else {
        return;
    };
    let s = Scratch::new("apply", None);
    if s.cg.mode() == Mode::V2 {
        eprintln!("SKIP: this test reads v1 files; a v2-only host is covered by the v2 test");
        return;
    }
    let limited = Resources {
        cpu_request: Some(MilliCpu(250)),
        cpu_limit: Some(MilliCpu(500)),
        memory_limit: Some(Bytes::mib(64)),
        ..Default::default()
    };
    let cfg = CgroupConfig {
        pids_max: Some(100),
        ..container_cgroup(&limited)
    };
    s.cg.create("pod/limited").unwrap();
    s.cg.apply("pod/limited", &cfg).unwrap();
    let cpu = v1_dir("cpu", &s.cg, "pod/limited");
    assert_eq!(read(&cpu, "cpu.shares"), "256");
    assert_eq!(read(&cpu, "cpu.cfs_quota_us"), "50000");
    assert_eq!(read(&cpu, "cpu.cfs_period_us"), "100000");
    assert_eq!(
        read(&v1_dir("pids", &s.cg, "pod/limited"), "pids.max"),
        "100"
    );
    let st = s.cg.stats("pod/limited").unwrap();
    assert_eq!(st.memory_limit, Some(MemoryLimit::Bytes(Bytes::mib(64))));

    s.cg.create("pod/unlimited").unwrap();
    s.cg.apply("pod/unlimited", &CgroupConfig::UNLIMITED)
        .unwrap();
    let cpu = v1_dir("cpu", &s.cg, "pod/unlimited");
    assert_eq!(read(&cpu, "cpu.shares"), "2");
    assert_eq!(read(&cpu, "cpu.cfs_quota_us"), "-1");
    // The kernel stores "-1" as the page-aligned maximum the math module names.
    let mem = v1_dir("memory", &s.cg, "pod/unlimited");
    assert_eq!(
        read(&mem, "memory.limit_in_bytes"),
        V1_UNLIMITED.to_string()
    );
    assert_eq!(
        read(&v1_dir("pids", &s.cg, "pod/unlimited"), "pids.max"),
        "max"
    );
    assert_eq!(
        s.cg.stats("pod/unlimited").unwrap().memory_limit,
        Some(MemoryLimit::Unlimited)
    );
    assert_eq!(CgroupConfig::UNLIMITED.cpu_quota, CpuQuota::Unlimited);
}

#[test]
fn a_moved_process_is_listed_and_counted() {
    let Some(()) = require(&[Need::Root]) else {
        return;
    };
    let mut s = Scratch::new("move", None);
    s.cg.create("c").unwrap();
    let pid = s.spawn("exec sleep 30");
    s.cg.add_pid("c", pid).unwrap();
    assert_eq!(s.cg.pids("c").unwrap(), [pid]);
    let st = s.cg.stats("c").unwrap();
    assert!(st.cpu_usage_ns.is_some());
    if s.cg.mode() != Mode::V2 {
        assert_eq!(st.pids_current, Some(1));
        assert!(st.memory_usage.is_some());
        assert_eq!(st.oom_kills, Some(0));
    }
    let cg_file = std::fs::read_to_string(format!("/proc/{pid}/cgroup")).unwrap();
    assert!(
        cg_file.contains(&format!("cgroupfold-test-{}-move/c", std::process::id())),
        "{cg_file}"
    );
}

fn cpu_ns(cg: &Cgroups, path: &str) -> u64 {
    cg.stats(path).unwrap().cpu_usage_ns.unwrap()
}

#[test]
fn a_frozen_cgroup_uses_no_cpu_until_thawed() {
    let Some(()) = require(&[Need::Root]) else {
        return;
    };
    let mut s = Scratch::new("freeze", None);
    s.cg.create("spin").unwrap();
    let pid = s.spawn("read x; while :; do :; done");
    s.cg.add_pid("spin", pid).unwrap();
    writeln!(s.children[0].stdin.as_mut().unwrap()).unwrap();
    std::thread::sleep(Duration::from_millis(100));
    s.cg.set_frozen("spin", true).unwrap();
    let frozen_at = cpu_ns(&s.cg, "spin");
    std::thread::sleep(Duration::from_millis(200));
    assert_eq!(cpu_ns(&s.cg, "spin"), frozen_at, "a frozen task ran");
    s.cg.set_frozen("spin", false).unwrap();
    std::thread::sleep(Duration::from_millis(200));
    assert!(
        cpu_ns(&s.cg, "spin") > frozen_at + 10_000_000,
        "the thawed task did not run"
    );
}

fn kill_all_reaches_forked_children(mode: Option<Mode>, name: &str) {
    let mut s = Scratch::new(name, mode);
    s.cg.create("pod").unwrap();
    let pid = s.spawn("read x; sleep 30 & sleep 30 & wait");
    s.cg.add_pid("pod", pid).unwrap();
    writeln!(s.children[0].stdin.as_mut().unwrap()).unwrap();
    files_wait(|| s.cg.pids("pod").unwrap().len() == 3);
    s.cg.kill_all("pod").unwrap();
    assert_eq!(s.cg.pids("pod").unwrap(), Vec::<u32>::new());
    let status = s.children[0].wait().unwrap();
    use std::os::unix::process::ExitStatusExt;
    assert_eq!(status.signal(), Some(9));
    s.cg.remove("pod").unwrap();
    assert!(s.cg.dirs("pod").unwrap().iter().all(|d| !d.exists()));
}

fn files_wait(mut f: impl FnMut() -> bool) {
    for _ in 0..500 {
        if f() {
            return;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    panic!("condition not reached in 5 s");
}

#[test]
fn kill_all_reaches_forked_children_with_the_detected_driver() {
    let Some(()) = require(&[Need::Root]) else {
        return;
    };
    kill_all_reaches_forked_children(None, "kill");
}

#[test]
fn kill_all_reaches_forked_children_with_v1_freeze_and_signal() {
    let Some(()) = require(&[Need::Root]) else {
        return;
    };
    if Mounts::read().unwrap().v1.is_empty() {
        eprintln!("SKIP: no cgroup v1 hierarchy on this host");
        return;
    }
    kill_all_reaches_forked_children(Some(Mode::V1), "kill-v1");
}

#[test]
fn remove_waits_out_a_busy_cgroup_and_leaves_nothing() {
    let Some(()) = require(&[Need::Root]) else {
        return;
    };
    let mut s = Scratch::new("remove", None);
    s.cg.create("a/b/c").unwrap();
    let pid = s.spawn("exec sleep 30");
    s.cg.add_pid("a/b/c", pid).unwrap();
    // Busy: the kernel refuses rmdir while a process is inside, and we stop retrying in time.
    let err = s.cg.remove("a").unwrap_err();
    assert!(matches!(err, FsError::Busy { .. }), "{err}");
    s.cg.kill_all("a/b/c").unwrap();
    s.cg.remove("a").unwrap();
    assert!(s.cg.dirs("a").unwrap().iter().all(|d| !d.exists()));
}

#[test]
fn oom_kills_are_counted() {
    let Some(()) = require(&[Need::Root]) else {
        return;
    };
    let mut s = Scratch::new("oom", None);
    s.cg.create("small").unwrap();
    let cfg = CgroupConfig {
        memory: MemoryLimit::Bytes(Bytes::mib(16)),
        ..CgroupConfig::UNLIMITED
    };
    s.cg.apply("small", &cfg).unwrap();
    // `tail` keeps a whole newline-free line in memory, so reading /dev/zero grows without end.
    let pid = s.spawn("read x; exec tail /dev/zero");
    s.cg.add_pid("small", pid).unwrap();
    writeln!(s.children[0].stdin.as_mut().unwrap()).unwrap();
    use std::os::unix::process::ExitStatusExt;
    assert_eq!(s.children[0].wait().unwrap().signal(), Some(9));
    assert_eq!(s.cg.stats("small").unwrap().oom_kills, Some(1));
}

#[test]
fn v2_core_files_work_without_controllers() {
    let Some(()) = require(&[Need::Root]) else {
        return;
    };
    let Some(unified) = Mounts::read().unwrap().unified else {
        eprintln!("SKIP: no cgroup v2 hierarchy on this host");
        return;
    };
    let mut s = Scratch::new("v2", Some(Mode::V2));
    s.cg.create("pod/c").unwrap();
    let pid = s.spawn("read x; while :; do :; done");
    s.cg.add_pid("pod/c", pid).unwrap();
    writeln!(s.children[0].stdin.as_mut().unwrap()).unwrap();
    assert_eq!(s.cg.pids("pod/c").unwrap(), [pid]);
    std::thread::sleep(Duration::from_millis(50));
    s.cg.set_frozen("pod", true).unwrap();
    let at = cpu_ns(&s.cg, "pod/c");
    std::thread::sleep(Duration::from_millis(100));
    assert_eq!(cpu_ns(&s.cg, "pod/c"), at);
    s.cg.set_frozen("pod", false).unwrap();
    let controllers = std::fs::read_to_string(unified.join("cgroup.controllers")).unwrap();
    if !controllers.split_whitespace().any(|c| c == "cpu") {
        let err = s.cg.apply("pod/c", &CgroupConfig::UNLIMITED).unwrap_err();
        assert!(
            matches!(
                err,
                FsError::ControllerUnavailable {
                    controller: "cpu",
                    ..
                }
            ),
            "{err}"
        );
    }
    s.cg.kill_all("pod").unwrap();
    assert!(s.cg.pids("pod/c").unwrap().is_empty());
    s.cg.remove("pod").unwrap();
}

#[test]
fn paths_that_escape_the_root_are_refused() {
    let m = Mounts::parse("1 1 0:1 / /sys/fs/cgroup rw - cgroup2 cgroup2 rw\n");
    let cg = Cgroups::with_mode(&m, Mode::V2).unwrap();
    for bad in ["", "../x", "/abs", "a//b", "a/", "a/../b", "."] {
        assert!(
            matches!(cg.create(bad), Err(FsError::BadPath { .. })),
            "{bad:?}"
        );
    }
}

#[test]
fn a_plan_applies_to_real_cgroups_and_reads_back_kubelets_pod_values() {
    use cgroupfold::layout::{Driver, FoldPolicy, Plan, Pod};
    use cgroupfold::math::NodeResources;
    let Some(()) = require(&[Need::Root]) else {
        return;
    };
    let s = Scratch::new("plan", None);
    if s.cg.mode() == Mode::V2 {
        eprintln!(
            "SKIP: this test reads v1 files; v2 is covered by v2_core_files_work_without_controllers"
        );
        return;
    }
    let g = Resources::guaranteed(MilliCpu(250), Bytes::mib(32));
    let pods = [
        Pod::new("one", "p1", vec![("a".into(), g)]),
        Pod::new("two", "p2", vec![("b".into(), g), ("c".into(), g)]),
    ];
    let node = NodeResources {
        cpu: MilliCpu::cores(2),
        memory: Bytes::gib(1),
    };
    let plan = Plan::new(&pods, node, Driver::Cgroupfs, FoldPolicy::WhenLossless);
    for c in &plan.cgroups {
        s.cg.create(&c.path).unwrap();
        s.cg.apply(&c.path, &c.config).unwrap();
    }
    // Pod "one" is folded: its pod cgroup carries the single container's limits and has no
    // children; pod "two" keeps a cgroup per container under a pod cgroup with the sums.
    assert_eq!(
        plan.pods.iter().map(|p| p.folded).collect::<Vec<_>>(),
        [true, false]
    );
    let cpu = |path: &str, file: &str| read(&v1_dir("cpu", &s.cg, path), file);
    assert_eq!(cpu("kubepods", "cpu.shares"), "2048");
    assert_eq!(cpu("kubepods/podone", "cpu.shares"), "256");
    assert_eq!(cpu("kubepods/podone", "cpu.cfs_quota_us"), "25000");
    assert_eq!(cpu("kubepods/podtwo", "cpu.shares"), "512");
    assert_eq!(cpu("kubepods/podtwo", "cpu.cfs_quota_us"), "50000");
    assert_eq!(cpu("kubepods/podtwo/b", "cpu.cfs_quota_us"), "25000");
    assert_eq!(cpu("kubepods/podtwo/p2", "cpu.shares"), "2");
    let mem = v1_dir("memory", &s.cg, "kubepods/podtwo");
    assert_eq!(
        read(&mem, "memory.limit_in_bytes"),
        (64u64 << 20).to_string()
    );
    assert!(!v1_dir("cpu", &s.cg, "kubepods/podone").join("a").exists());
}
