//! The private containerd harness against the real containerd 1.7 and its stock runc shim.
//!
//! Each test has its own containerd and its own namespace (runc's state and `ctr run`'s cgroups
//! are keyed by namespace and ID on the host, whatever the containerd).

use integration::containerd::{
    CRI_NAMESPACE, Containerd, ContainerdConfig, NEEDS, Runtime, Version, mounts_under,
    processes_naming,
};
use integration::image::Image;
use integration::require;
use std::process::{Child, Stdio};
use std::time::{Duration, Instant};

const BUSYBOX: &str = "docker.io/shimless/busybox:test";
const PAUSE: &str = "registry.k8s.io/pause:3.9";

fn needs() -> Option<()> {
    require(NEEDS)
}

/// A private containerd with the busybox image imported into `ns`.
fn containerd_with_busybox(ns: &str) -> Containerd {
    let containerd = Containerd::start(ContainerdConfig::new()).expect("start containerd");
    let image = Image::busybox(BUSYBOX)
        .write_tar(&containerd.dir().join("busybox.tar"))
        .expect("write image");
    containerd.import(ns, image.path()).expect("import");
    containerd
}

/// Waits (bounded, so that a failure fails instead of hanging) until `id` has status `want`.
fn wait_for_status(containerd: &Containerd, ns: &str, id: &str, want: &str) {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let tasks = containerd.tasks(ns).expect("task ls");
        if tasks.get(id).map(String::as_str) == Some(want) {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "{id} never became {want}: {tasks:?}"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Waits (bounded) for a child `ctr` to exit and returns its exit code.
fn wait_exit(child: &mut Child) -> Option<i32> {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        if let Some(status) = child.try_wait().expect("wait") {
            return status.code();
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            panic!("ctr run did not exit");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn an_imported_busybox_image_runs_under_the_stock_shim_and_exit_codes_propagate() {
    let Some(()) = needs() else { return };
    let ns = "shimless-run";
    let containerd = containerd_with_busybox(ns);
    let images = containerd
        .ctr_ok(ns, &["images", "ls", "-q"])
        .expect("images ls");
    assert_eq!(images.lines().collect::<Vec<_>>(), [BUSYBOX]);
    assert!(containerd.ttrpc_socket().exists());
    assert_eq!(
        containerd.namespaces().expect("namespaces"),
        [ns.to_string()]
    );

    let hello = containerd
        .ctr(ns)
        .args(["run", "--rm", BUSYBOX, "hello", "echo", "hello"])
        .output()
        .expect("ctr run");
    assert_eq!(
        (
            hello.status.code(),
            &*String::from_utf8_lossy(&hello.stdout)
        ),
        (Some(0), "hello\n"),
        "stderr: {}",
        String::from_utf8_lossy(&hello.stderr)
    );

    // `ctr run --rm` (attached) exits with the task's exit code.
    let seven = containerd
        .ctr(ns)
        .args(["run", "--rm", BUSYBOX, "seven", "sh", "-c", "exit 7"])
        .output()
        .expect("ctr run");
    assert_eq!(seven.status.code(), Some(7));

    // The image's config gives PATH=/bin and the applets; the absolute-path form of --runtime.
    let env = containerd
        .ctr(ns)
        .args([
            "run",
            "--rm",
            "--runtime",
            "/usr/bin/containerd-shim-runc-v2",
        ])
        .args([
            BUSYBOX,
            "env",
            "sh",
            "-c",
            "echo $PATH; id -u; ls /bin/sleep",
        ])
        .output()
        .expect("ctr run");
    assert_eq!(
        String::from_utf8_lossy(&env.stdout),
        "/bin\n0\n/bin/sleep\n",
        "stderr: {}",
        String::from_utf8_lossy(&env.stderr)
    );
    assert!(containerd.tasks(ns).expect("task ls").is_empty());
    containerd.stop().expect("clean stop");
}

#[test]
fn restart_keeps_a_detached_task_running_with_its_shim() {
    let Some(()) = needs() else { return };
    let ns = "shimless-restart";
    let mut containerd = containerd_with_busybox(ns);
    containerd
        .ctr_ok(ns, &["run", "-d", BUSYBOX, "sleeper", "sleep", "3600"])
        .expect("run -d");
    wait_for_status(&containerd, ns, "sleeper", "RUNNING");
    let shims = containerd.shim_pids();
    assert_eq!(shims.len(), 1, "one shim per container: {shims:?}");
    let before = containerd.pid();

    containerd.restart().expect("restart");
    assert_ne!(containerd.pid(), before);
    assert_eq!(
        containerd
            .tasks(ns)
            .expect("task ls")
            .get("sleeper")
            .map(String::as_str),
        Some("RUNNING")
    );
    assert_eq!(containerd.shim_pids(), shims);

    // Still driven through the restarted containerd.
    let exec = containerd
        .ctr(ns)
        .args([
            "task",
            "exec",
            "--exec-id",
            "e1",
            "sleeper",
            "echo",
            "again",
        ])
        .output()
        .expect("exec");
    assert_eq!(String::from_utf8_lossy(&exec.stdout), "again\n");
}

#[test]
fn dropping_leaves_no_process_mount_or_directory_even_with_running_tasks() {
    let Some(()) = needs() else { return };
    let ns = "shimless-drop";
    let containerd = containerd_with_busybox(ns);
    for id in ["a", "b"] {
        containerd
            .ctr_ok(ns, &["run", "-d", BUSYBOX, id, "sleep", "3600"])
            .expect("run -d");
    }
    wait_for_status(&containerd, ns, "b", "RUNNING");
    let socket = containerd.socket();
    let dir = containerd.dir().to_owned();
    assert_eq!(containerd.shim_pids().len(), 2);
    assert!(!mounts_under(&dir).is_empty(), "the rootfs are mounted");

    drop(containerd);
    assert_eq!(processes_naming(&socket), Vec::<u32>::new());
    assert_eq!(processes_naming(&dir), Vec::<u32>::new());
    assert_eq!(mounts_under(&dir), Vec::<std::path::PathBuf>::new());
    assert!(!dir.exists());
}

#[test]
fn dropping_cleans_up_even_when_the_test_stopped_containerd() {
    let Some(()) = needs() else { return };
    let ns = "shimless-drop-down";
    let mut containerd = containerd_with_busybox(ns);
    containerd
        .ctr_ok(ns, &["run", "-d", BUSYBOX, "orphan", "sleep", "3600"])
        .expect("run -d");
    wait_for_status(&containerd, ns, "orphan", "RUNNING");
    containerd.stop_daemon();
    assert_eq!(containerd.pid(), None);
    let socket = containerd.socket();
    let dir = containerd.dir().to_owned();
    assert_eq!(
        processes_naming(&socket).len(),
        1,
        "the shim outlives containerd"
    );

    containerd.stop().expect("clean stop");
    assert_eq!(processes_naming(&dir), Vec::<u32>::new());
    assert_eq!(mounts_under(&dir), Vec::<std::path::PathBuf>::new());
    assert!(!dir.exists());
}

#[test]
fn the_pause_image_waits_and_exits_0_on_sigterm() {
    let Some(()) = needs() else { return };
    let ns = "shimless-pause";
    let containerd = Containerd::start(ContainerdConfig::new()).expect("start");
    let image = Image::pause(PAUSE)
        .write_tar(&containerd.dir().join("pause.tar"))
        .expect("write");
    containerd.import(ns, image.path()).expect("import");

    for signal in ["TERM", "INT"] {
        let id = format!("pause-{signal}");
        let mut attached = containerd
            .ctr(ns)
            .args(["run", "--rm", PAUSE, &id])
            .stdout(Stdio::null())
            .spawn()
            .expect("ctr run");
        wait_for_status(&containerd, ns, &id, "RUNNING");
        containerd
            .ctr_ok(ns, &["task", "kill", "--signal", signal, &id])
            .expect("kill");
        assert_eq!(wait_exit(&mut attached), Some(0), "after SIG{signal}");
    }
}

#[test]
fn cri_starts_without_cni_with_the_pause_image_and_extra_runtimes() {
    let Some(()) = needs() else { return };
    let config = ContainerdConfig::new().cri(PAUSE).runtime(
        Runtime::new("unified", "io.containerd.runc.v2")
            .path("/usr/bin/containerd-shim-runc-v2")
            .sandbox_mode("podsandbox")
            .option("SystemdCgroup", false),
    );
    let containerd = Containerd::start(config).expect("start with CRI");
    // The name imported, and the reference CRI adds once it has the image (its image ID).
    let pause_id = Image::pause(PAUSE)
        .write_tar(&containerd.dir().join("again.tar"))
        .expect("write")
        .config_digest()
        .to_string();
    let images = containerd
        .ctr_ok(CRI_NAMESPACE, &["images", "ls", "-q"])
        .expect("images ls");
    assert_eq!(images.lines().collect::<Vec<_>>(), [PAUSE, &pause_id]);
    let plugins = containerd
        .ctr_ok("default", &["plugins", "ls"])
        .expect("plugins");
    let cri = plugins
        .lines()
        .find(|l| l.starts_with("io.containerd.grpc.v1") && l.contains(" cri "))
        .expect("cri plugin listed");
    assert_eq!(cri.split_whitespace().last(), Some("ok"));
    let log = std::fs::read_to_string(containerd.log_path()).expect("log");
    let cri_config = log
        .lines()
        .find(|l| l.contains("Start cri plugin with config"))
        .expect("CRI logs its config");
    for part in [
        "unified:{Type:io.containerd.runc.v2 Path:/usr/bin/containerd-shim-runc-v2 ",
        "Options:map[SystemdCgroup:false]",
        "SandboxMode:podsandbox}",
        &format!(
            "NetworkPluginConfDir:{}/cni/net.d ",
            containerd.dir().display()
        ),
        &format!("SandboxImage:{PAUSE} "),
        "EnableCDI:false ",
    ] {
        assert!(cri_config.contains(part), "{part} not in {cri_config}");
    }
}

#[test]
fn ctr_finds_a_shim_named_by_runtime_type_on_the_prepended_path() {
    let Some(()) = needs() else { return };
    let ns = "shimless-path";
    // The stock shim under another name, as containerd-shim-shimless-v2 will be found. A copy,
    // not a symlink: the Go shim re-executes /proc/self/exe, which resolves links.
    let bin = tempfile::tempdir().expect("tempdir");
    std::fs::copy(
        "/usr/bin/containerd-shim-runc-v2",
        bin.path().join("containerd-shim-renamed-v2"),
    )
    .expect("copy");
    let containerd =
        Containerd::start(ContainerdConfig::new().path_prepend(bin.path())).expect("start");
    let image = Image::busybox(BUSYBOX)
        .write_tar(&containerd.dir().join("busybox.tar"))
        .expect("write image");
    containerd.import(ns, image.path()).expect("import");
    containerd
        .ctr_ok(
            ns,
            &[
                "run",
                "-d",
                "--runtime",
                "io.containerd.renamed.v2",
                BUSYBOX,
                "r",
                "sleep",
                "60",
            ],
        )
        .expect("run with the renamed shim");
    wait_for_status(&containerd, ns, "r", "RUNNING");
    let shim = containerd.shim_pids();
    assert_eq!(shim.len(), 1);
    let exe = std::fs::read(format!("/proc/{}/cmdline", shim[0])).expect("cmdline");
    assert!(
        String::from_utf8_lossy(&exe).starts_with(&format!(
            "{}/containerd-shim-renamed-v2\0",
            bin.path().display()
        )),
        "{}",
        String::from_utf8_lossy(&exe)
    );
    let containers = containerd
        .ctr_ok(ns, &["containers", "ls"])
        .expect("containers ls");
    assert!(
        containers.contains("io.containerd.renamed.v2"),
        "{containers}"
    );
}

#[test]
fn a_test_that_panics_leaks_nothing() {
    let Some(()) = needs() else { return };
    let ns = "shimless-panic";
    let seen = std::sync::Mutex::new(None);
    let outcome = std::panic::catch_unwind(|| {
        let containerd = containerd_with_busybox(ns);
        containerd
            .ctr_ok(ns, &["run", "-d", BUSYBOX, "doomed", "sleep", "3600"])
            .expect("run -d");
        wait_for_status(&containerd, ns, "doomed", "RUNNING");
        *seen.lock().expect("lock") = Some((containerd.socket(), containerd.dir().to_owned()));
        panic!("the test fails with the container running");
    });
    assert!(outcome.is_err());
    let (socket, dir) = seen.lock().expect("lock").take().expect("ran");
    assert_eq!(processes_naming(&socket), Vec::<u32>::new());
    assert_eq!(mounts_under(&dir), Vec::<std::path::PathBuf>::new());
    assert!(!dir.exists());
    assert!(
        !std::path::Path::new("/run/containerd/runc")
            .join(ns)
            .exists()
    );
}

#[test]
fn containerd_2_1_starts_with_a_version_3_config_runs_its_stock_shim_and_cri() {
    let Some(()) = require(Version::V2_1.needs()) else {
        return;
    };
    let ns = "shimless-v21";
    let config = ContainerdConfig::new()
        .version(Version::V2_1)
        .cri(PAUSE)
        .runtime(
            Runtime::new("unified", "io.containerd.runc.v2")
                .sandbox_mode("podsandbox")
                .option("SystemdCgroup", false),
        );
    let containerd = Containerd::start(config).expect("start containerd 2.1 with CRI");
    let version = containerd.ctr_ok("default", &["version"]).expect("version");
    assert!(
        version
            .lines()
            .filter(|l| l.trim_start().starts_with("Version:"))
            .all(|l| l.contains("2.1.")),
        "{version}"
    );
    let image = Image::busybox(BUSYBOX)
        .write_tar(&containerd.dir().join("busybox.tar"))
        .expect("write image");
    containerd.import(ns, image.path()).expect("import");
    let seven = containerd
        .ctr(ns)
        .args([
            "run",
            "--rm",
            BUSYBOX,
            "seven",
            "sh",
            "-c",
            "echo hi; exit 7",
        ])
        .output()
        .expect("ctr run");
    assert_eq!(
        (
            seven.status.code(),
            &*String::from_utf8_lossy(&seven.stdout)
        ),
        (Some(7), "hi\n"),
        "stderr: {}",
        String::from_utf8_lossy(&seven.stderr)
    );
    // The stock shim that ran it is 2.1.9's, found first on containerd's PATH.
    let log = std::fs::read_to_string(containerd.log_path()).expect("log");
    assert!(!log.contains("level=fatal"), "{log}");
    containerd.stop().expect("clean stop");
}
