//! A real guest: static busybox and a dynamic program run inside the bookworm kernel under qemu.

use integration::require;
use integration::vm::{NEEDS, Vm, VmError};
use std::time::Duration;

#[test]
fn a_guest_program_sees_pure_cgroup_v2_and_its_exit_code_comes_back() {
    let Some(()) = require(&NEEDS) else {
        return;
    };
    let script = "echo arg=$0 env=$GREETING; \
                  grep -c cgroup2 /proc/mounts; grep -c ' cgroup ' /proc/mounts; \
                  cat /sys/fs/cgroup/cgroup.controllers; exit 7";
    let run = Vm::new()
        .env("GREETING", "it's me")
        .run("/bin/busybox".as_ref(), ["sh", "-c", script, "first"])
        .unwrap();
    assert_eq!(run.exit_code, 7, "{}", run.output);
    let lines: Vec<&str> = run.output.lines().collect();
    assert!(lines.contains(&"arg=first env=it's me"), "{}", run.output);
    // One cgroup2 mount, no v1 hierarchy, and the controllers this workspace delegates.
    let at = lines.iter().position(|l| l.starts_with("arg=")).unwrap();
    assert_eq!(lines[at + 1], "1", "{}", run.output);
    assert_eq!(lines[at + 2], "0", "{}", run.output);
    let controllers: Vec<&str> = lines[at + 3].split_whitespace().collect();
    for c in ["cpu", "memory", "pids"] {
        assert!(controllers.contains(&c), "{controllers:?}");
    }
    assert!(run.booted_after < run.elapsed);
    eprintln!(
        "booted after {:?}, whole run {:?}",
        run.booted_after, run.elapsed
    );
}

#[test]
fn a_dynamic_program_gets_its_libraries_and_a_hung_guest_times_out() {
    let Some(()) = require(&NEEDS) else {
        return;
    };
    // This test binary is dynamically linked: started with `--list`, it prints its tests.
    let exe = std::env::current_exe().unwrap();
    let run = Vm::new().run(&exe, ["--list"]).unwrap();
    assert_eq!(run.exit_code, 0, "{}", run.output);
    assert!(
        run.output
            .contains("a_dynamic_program_gets_its_libraries_and_a_hung_guest_times_out: test"),
        "{}",
        run.output
    );

    let err = Vm::new()
        .timeout(Duration::from_secs(2))
        .run("/bin/busybox".as_ref(), ["sleep", "1000"])
        .unwrap_err();
    assert!(matches!(err, VmError::TimedOut { .. }), "{err}");

    let err = Vm::new()
        .kernel("/no/such/vmlinuz")
        .run("/bin/busybox".as_ref(), ["true"])
        .unwrap_err();
    assert!(
        matches!(&err, VmError::NoKernel { path } if path.ends_with("vmlinuz")),
        "{err}"
    );
    assert!(err.to_string().contains("SHIMLESS_VM_KERNEL"), "{err}");
}

#[test]
fn extra_files_bring_their_libraries_and_the_root_can_move_to_tmpfs() {
    let mut needs = NEEDS.to_vec();
    needs.push(integration::Need::Program("runc"));
    let Some(()) = require(&needs) else {
        return;
    };
    // runc is dynamic (libseccomp): it runs only if its libraries came along.
    let runc = std::env::split_paths(&std::env::var_os("PATH").unwrap())
        .map(|d| d.join("runc"))
        .find(|r| r.is_file())
        .unwrap();
    let script = "awk '$2 == \"/\" {print \"root=\" $3}' /proc/mounts; \
                  /opt/extra/runc --version | head -n1; \
                  readlink /dev/fd";
    let run = Vm::new()
        .tmpfs_root()
        .file(&runc, "/opt/extra/runc")
        .run("/bin/busybox".as_ref(), ["sh", "-c", script])
        .unwrap();
    assert_eq!(run.exit_code, 0, "{}", run.output);
    let lines: Vec<&str> = run.output.lines().collect();
    assert!(lines.contains(&"root=tmpfs"), "{}", run.output);
    assert!(
        lines.iter().any(|l| l.starts_with("runc version")),
        "{}",
        run.output
    );
    assert!(lines.contains(&"/proc/self/fd"), "{}", run.output);
    let err = Vm::new()
        .file(&runc, "relative/runc")
        .run("/bin/busybox".as_ref(), ["true"])
        .unwrap_err();
    assert!(matches!(err, VmError::BadArgument { .. }), "{err}");
}
