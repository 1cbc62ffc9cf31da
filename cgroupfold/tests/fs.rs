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
        // Thaw first: a frozen child never exits, and waiting for it would hang the test.
        for dir in self.cg.dirs("x").unwrap().iter().filter_map(|d| d.parent()) {
            thaw_tree(dir);
        }
        for c in &mut self.children {
            let _ = c.kill();
            let _ = c.wait();
        }
        let _ = self.cg.remove_root();
    }
}

fn thaw_tree(dir: &std::path::Path) {
    let _ = std::fs::write(dir.join("freezer.state"), "THAWED");
    let _ = std::fs::write(dir.join("cgroup.freeze"), "0");
    for entry in std::fs::read_dir(dir).into_iter().flatten().flatten() {
        if entry.file_type().is_ok_and(|t| t.is_dir()) {
            thaw_tree(&entry.path());
        }
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

/// The directory holding `ctrl`'s files for `path`: its v1 hierarchy, or the one v2 directory.
fn ctl_dir(ctrl: &str, cg: &Cgroups, path: &str) -> std::path::PathBuf {
    if cg.mode() == Mode::V2 {
        cg.dirs(path).unwrap().remove(0)
    } else {
        v1_dir(ctrl, cg, path)
    }
}

fn words(dir: &std::path::Path, file: &str) -> Vec<String> {
    read(dir, file)
        .split_whitespace()
        .map(str::to_owned)
        .collect()
}

/// Whether `mode` has the cpu, memory and pids controllers to drive: always on v1 and hybrid,
/// on v2 when the hierarchy offers them (in the VM; not on this hybrid host's `unified`).
fn has_controllers(cg: &Cgroups) -> bool {
    if cg.mode() != Mode::V2 {
        return true;
    }
    let unified = Mounts::read().unwrap().unified.unwrap();
    let have = words(&unified, "cgroup.controllers");
    ["cpu", "memory", "pids"]
        .iter()
        .all(|c| have.iter().any(|h| h == c))
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
    if in_vm() {
        assert_eq!(want, Mode::V2);
        assert_eq!(m.unified, Some("/sys/fs/cgroup".into()));
        assert!(m.other_v1.is_empty(), "{m:?}");
    }
}

#[test]
fn applied_settings_read_back_as_kubelet_computes_them() {
    let Some(()) = require(&[Need::Root]) else {
        return;
    };
    let s = Scratch::new("apply", None);
    if !has_controllers(&s.cg) {
        assert!(
            !integration::require_privileged_env(),
            "this v2 hierarchy offers no controllers: the test cannot run here"
        );
        eprintln!("SKIP: this v2 hierarchy offers no controllers (the VM test covers v2)");
        return;
    }
    let v2 = s.cg.mode() == Mode::V2;
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
    let cpu = ctl_dir("cpu", &s.cg, "pod/limited");
    let mem = ctl_dir("memory", &s.cg, "pod/limited");
    if v2 {
        // Delegated down from the hierarchy's root to the cgroup's parent.
        let unified = Mounts::read().unwrap().unified.unwrap();
        for dir in cpu
            .ancestors()
            .skip(1)
            .take_while(|d| d.starts_with(&unified))
        {
            let on = words(dir, "cgroup.subtree_control");
            for c in ["cpu", "memory", "pids"] {
                assert!(
                    on.iter().any(|o| o == c),
                    "{c} not delegated in {}: {on:?}",
                    dir.display()
                );
            }
        }
        assert_eq!(words(&cpu, "cgroup.controllers"), ["cpu", "memory", "pids"]);
        // 1 + (256 - 2) × 9999 / 262142
        assert_eq!(read(&cpu, "cpu.weight"), "10");
        assert_eq!(read(&cpu, "cpu.max"), "50000 100000");
        assert_eq!(read(&mem, "memory.max"), (64u64 << 20).to_string());
    } else {
        assert_eq!(read(&cpu, "cpu.shares"), "256");
        assert_eq!(read(&cpu, "cpu.cfs_quota_us"), "50000");
        assert_eq!(read(&cpu, "cpu.cfs_period_us"), "100000");
        assert_eq!(
            read(&mem, "memory.limit_in_bytes"),
            (64u64 << 20).to_string()
        );
    }
    assert_eq!(
        read(&ctl_dir("pids", &s.cg, "pod/limited"), "pids.max"),
        "100"
    );
    let st = s.cg.stats("pod/limited").unwrap();
    assert_eq!(st.memory_limit, Some(MemoryLimit::Bytes(Bytes::mib(64))));

    s.cg.create("pod/unlimited").unwrap();
    s.cg.apply("pod/unlimited", &CgroupConfig::UNLIMITED)
        .unwrap();
    let cpu = ctl_dir("cpu", &s.cg, "pod/unlimited");
    let mem = ctl_dir("memory", &s.cg, "pod/unlimited");
    if v2 {
        assert_eq!(read(&cpu, "cpu.weight"), "1");
        assert_eq!(read(&cpu, "cpu.max"), "max 100000");
        assert_eq!(read(&mem, "memory.max"), "max");
    } else {
        assert_eq!(read(&cpu, "cpu.shares"), "2");
        assert_eq!(read(&cpu, "cpu.cfs_quota_us"), "-1");
        // The kernel stores "-1" as the page-aligned maximum the math module names.
        assert_eq!(
            read(&mem, "memory.limit_in_bytes"),
            V1_UNLIMITED.to_string()
        );
    }
    assert_eq!(
        read(&ctl_dir("pids", &s.cg, "pod/unlimited"), "pids.max"),
        "max"
    );
    assert_eq!(
        s.cg.stats("pod/unlimited").unwrap().memory_limit,
        Some(MemoryLimit::Unlimited)
    );
    assert_eq!(CgroupConfig::UNLIMITED.cpu_quota, CpuQuota::Unlimited);

    // Both versions keep whole pages: "100M" (100,000,000 bytes) reads back rounded down.
    s.cg.create("pod/odd").unwrap();
    let odd = CgroupConfig {
        memory: MemoryLimit::Bytes("100M".parse().unwrap()),
        ..CgroupConfig::UNLIMITED
    };
    s.cg.apply("pod/odd", &odd).unwrap();
    assert_eq!(
        s.cg.stats("pod/odd").unwrap().memory_limit,
        Some(MemoryLimit::Bytes(Bytes(99_999_744)))
    );
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
    if has_controllers(&s.cg) {
        assert_eq!(st.pids_current, Some(1));
        // A sleeping shell's pages since it moved (charges stay where they were made).
        assert!(st.memory_usage.is_some_and(|b| b.0 < 64 << 20), "{st:?}");
        assert_eq!(st.oom_kills, Some(0));
        assert_eq!(st.memory_limit, Some(MemoryLimit::Unlimited));
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
    let v2_dir = s.cg.dirs("spin").unwrap().pop().unwrap();
    if s.cg.mode() == Mode::V2 {
        assert_eq!(read(&v2_dir, "cgroup.freeze"), "1");
        assert!(
            read(&v2_dir, "cgroup.events")
                .lines()
                .any(|l| l == "frozen 1")
        );
    }
    let frozen_at = cpu_ns(&s.cg, "spin");
    std::thread::sleep(Duration::from_millis(200));
    assert_eq!(cpu_ns(&s.cg, "spin"), frozen_at, "a frozen task ran");
    s.cg.set_frozen("spin", false).unwrap();
    if s.cg.mode() == Mode::V2 {
        assert!(
            read(&v2_dir, "cgroup.events")
                .lines()
                .any(|l| l == "frozen 0")
        );
    }
    // Polled, not slept: under qemu's TCG on a loaded host the guest may get little CPU.
    files_wait(|| cpu_ns(&s.cg, "spin") > frozen_at + 10_000_000);
}

fn kill_all_reaches_forked_children(mode: Option<Mode>, name: &str) {
    let mut s = Scratch::new(name, mode);
    s.cg.create("pod").unwrap();
    let pid = s.spawn("read x; sleep 30 & sleep 30 & wait");
    s.cg.add_pid("pod", pid).unwrap();
    writeln!(s.children[0].stdin.as_mut().unwrap()).unwrap();
    files_wait(|| s.cg.pids("pod").unwrap().len() == 3);
    if in_vm() && s.cg.mode() == Mode::V2 {
        // The atomic cgroup.kill (kernel >= 5.14) is what kill_all uses here; before 5.14 it
        // freezes, signals and thaws, and the assertions below prove that fallback.
        let has_kill = s.cg.dirs("pod").unwrap()[0].join("cgroup.kill").exists();
        assert_eq!(has_kill, kernel_at_least(5, 14), "cgroup.kill");
        println!(
            "cgroupfold-kill: {}",
            if has_kill {
                "cgroup.kill"
            } else {
                "freeze, SIGKILL each, thaw"
            }
        );
    }
    s.cg.kill_all("pod").unwrap();
    assert_eq!(s.cg.pids("pod").unwrap(), Vec::<u32>::new());
    let status = s.children[0].wait().unwrap();
    use std::os::unix::process::ExitStatusExt;
    assert_eq!(status.signal(), Some(9));
    s.cg.remove("pod").unwrap();
    assert!(s.cg.dirs("pod").unwrap().iter().all(|d| !d.exists()));
}

/// Processes only in child cgroups (as v2 wants: the pod delegates, containers are leaves).
fn kill_all_reaches_child_cgroups(mode: Option<Mode>, name: &str) {
    let mut s = Scratch::new(name, mode);
    s.cg.create("pod/a").unwrap();
    s.cg.create("pod/b/deep").unwrap();
    let a = s.spawn("exec sleep 30");
    let b = s.spawn("exec sleep 30");
    s.cg.add_pid("pod/a", a).unwrap();
    s.cg.add_pid("pod/b/deep", b).unwrap();
    s.cg.kill_all("pod").unwrap();
    assert_eq!(s.cg.pids("pod/a").unwrap(), Vec::<u32>::new());
    assert_eq!(s.cg.pids("pod/b/deep").unwrap(), Vec::<u32>::new());
    use std::os::unix::process::ExitStatusExt;
    for child in &mut s.children {
        assert_eq!(child.wait().unwrap().signal(), Some(9));
    }
    s.cg.remove("pod").unwrap();
}

/// Whether the running kernel is `major.minor` or newer.
fn kernel_at_least(major: u32, minor: u32) -> bool {
    let release = std::fs::read_to_string("/proc/sys/kernel/osrelease").unwrap();
    let mut parts = release
        .split(|c: char| !c.is_ascii_digit())
        .filter_map(|p| p.parse::<u32>().ok());
    (parts.next().unwrap_or(0), parts.next().unwrap_or(0)) >= (major, minor)
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
    kill_all_reaches_child_cgroups(None, "kill-tree");
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
    kill_all_reaches_child_cgroups(Some(Mode::V1), "kill-v1-tree");
}

#[test]
fn kill_all_ends_a_frozen_cgroup() {
    let Some(()) = require(&[Need::Root]) else {
        return;
    };
    let mut s = Scratch::new("kill-frozen", None);
    s.cg.create("pod").unwrap();
    let pid = s.spawn("read x; sleep 30 & wait");
    s.cg.add_pid("pod", pid).unwrap();
    writeln!(s.children[0].stdin.as_mut().unwrap()).unwrap();
    files_wait(|| s.cg.pids("pod").unwrap().len() == 2);
    s.cg.set_frozen("pod", true).unwrap();
    // v2's cgroup.kill ends frozen tasks; on hybrid hosts the v1 freezer must be thawed too.
    s.cg.kill_all("pod").unwrap();
    assert_eq!(s.cg.pids("pod").unwrap(), Vec::<u32>::new());
    use std::os::unix::process::ExitStatusExt;
    assert_eq!(s.children[0].wait().unwrap().signal(), Some(9));
    s.cg.remove("pod").unwrap();
}

#[test]
fn v2_keeps_processes_in_leaf_cgroups_and_v1_does_not() {
    let Some(()) = require(&[Need::Root]) else {
        return;
    };
    let mut s = Scratch::new("leaf", None);
    let strict = s.cg.mode() == Mode::V2 && has_controllers(&s.cg);
    s.cg.create("pod/c").unwrap();
    s.cg.create("folded").unwrap();
    let pid = s.spawn("exec sleep 30");
    // A pod cgroup with container cgroups below it delegates controllers to them.
    let into_parent = s.cg.add_pid("pod", pid);
    // A folded pod holds its containers' processes itself: no child cgroup can get controllers.
    s.cg.add_pid("folded", pid).unwrap();
    let child_of_folded = s.cg.create("folded/late");
    if strict {
        let err = into_parent.unwrap_err();
        assert!(
            matches!(&err, FsError::NotALeaf { path, .. } if path.ends_with("pod")),
            "{err}"
        );
        let err = child_of_folded.unwrap_err();
        assert!(
            matches!(&err, FsError::NotALeaf { path, .. } if path.ends_with("folded")),
            "{err}"
        );
        assert!(err.to_string().contains("holds processes"), "{err}");
        // Refused as a whole: no controller half-delegated, no child made.
        let folded = s.cg.dirs("folded").unwrap().remove(0);
        assert_eq!(read(&folded, "cgroup.subtree_control"), "");
        assert!(!folded.join("late").exists());
    } else {
        into_parent.unwrap();
        child_of_folded.unwrap();
    }
    assert_eq!(s.cg.pids("folded").unwrap(), [pid]);
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
    if !has_controllers(&s.cg) {
        assert!(
            !integration::require_privileged_env(),
            "this v2 hierarchy offers no controllers: the test cannot run here"
        );
        eprintln!("SKIP: this v2 hierarchy offers no controllers (the VM test covers v2)");
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
    let cpu = |path: &str, file: &str| read(&ctl_dir("cpu", &s.cg, path), file);
    let mem = read(
        &ctl_dir("memory", &s.cg, "kubepods/podtwo"),
        if s.cg.mode() == Mode::V2 {
            "memory.max"
        } else {
            "memory.limit_in_bytes"
        },
    );
    assert_eq!(mem, (64u64 << 20).to_string());
    if s.cg.mode() == Mode::V2 {
        // cpu.weight = 1 + (shares - 2) × 9999 / 262142 of the shares below.
        assert_eq!(cpu("kubepods", "cpu.weight"), "79");
        assert_eq!(cpu("kubepods/podone", "cpu.weight"), "10");
        assert_eq!(cpu("kubepods/podone", "cpu.max"), "25000 100000");
        assert_eq!(cpu("kubepods/podtwo", "cpu.weight"), "20");
        assert_eq!(cpu("kubepods/podtwo", "cpu.max"), "50000 100000");
        assert_eq!(cpu("kubepods/podtwo/b", "cpu.max"), "25000 100000");
        assert_eq!(cpu("kubepods/podtwo/p2", "cpu.weight"), "1");
        assert_eq!(cpu("kubepods/podtwo/p2", "cpu.max"), "max 100000");
    } else {
        assert_eq!(cpu("kubepods", "cpu.shares"), "2048");
        assert_eq!(cpu("kubepods/podone", "cpu.shares"), "256");
        assert_eq!(cpu("kubepods/podone", "cpu.cfs_quota_us"), "25000");
        assert_eq!(cpu("kubepods/podtwo", "cpu.shares"), "512");
        assert_eq!(cpu("kubepods/podtwo", "cpu.cfs_quota_us"), "50000");
        assert_eq!(cpu("kubepods/podtwo/b", "cpu.cfs_quota_us"), "25000");
        assert_eq!(cpu("kubepods/podtwo/p2", "cpu.shares"), "2");
    }
    assert!(!ctl_dir("cpu", &s.cg, "kubepods/podone").join("a").exists());
}

/// Set in the guest by [`the_whole_suite_passes_on_pure_cgroup_v2_in_a_vm`]: this binary runs
/// there against the VM's pure v2 hierarchy, where controllers can be delegated.
const IN_VM: &str = "CGROUPFOLD_TEST_IN_VM";

fn in_vm() -> bool {
    std::env::var_os(IN_VM).is_some()
}

#[test]
fn the_whole_suite_passes_on_pure_cgroup_v2_in_a_vm() {
    use integration::vm::{NEEDS, Vm};
    const THIS: &str = "the_whole_suite_passes_on_pure_cgroup_v2_in_a_vm";
    if in_vm() {
        return;
    }
    let Some(()) = require(&NEEDS) else {
        return;
    };
    let exe = std::env::current_exe().unwrap();
    let list = Command::new(&exe)
        .args(["--list", "--format", "terse"])
        .output()
        .unwrap();
    let names: Vec<String> = String::from_utf8(list.stdout)
        .unwrap()
        .lines()
        .filter_map(|l| l.strip_suffix(": test"))
        .filter(|n| *n != THIS)
        .map(str::to_owned)
        .collect();
    assert!(names.len() > 5, "{names:?}");
    let run = Vm::new()
        .env(IN_VM, "1")
        .env(integration::REQUIRE_PRIVILEGED, "1")
        .run(
            &exe,
            [
                "--exact",
                "--skip",
                THIS,
                "--test-threads=1",
                "--show-output",
            ],
        )
        .unwrap();
    eprintln!(
        "booted after {:?}, whole run {:?}",
        run.booted_after, run.elapsed
    );
    assert_eq!(run.exit_code, 0, "{}", run.output);
    for name in &names {
        assert!(
            run.output
                .lines()
                .any(|l| l.starts_with(&format!("test {name} ... ")) && l.ends_with(" ok")),
            "{name} did not pass in the VM:\n{}",
            run.output
        );
    }
    // Passing by skipping does not count: `--show-output` prints each test's output under a
    // `---- <name> stdout ----` header; only the v1-only test may skip on a v2-only host.
    let mut skipped = Vec::new();
    let mut current = "";
    for line in run.output.lines() {
        if let Some(name) = line
            .strip_prefix("---- ")
            .and_then(|l| l.strip_suffix(" stdout ----"))
        {
            current = name;
        } else if line.starts_with("SKIP") {
            skipped.push(current);
        }
    }
    assert_eq!(
        skipped,
        ["kill_all_reaches_forked_children_with_v1_freeze_and_signal"],
        "{}",
        run.output
    );
}
