//! The whole lifecycle on real runc and real crun.

mod common;

use common::{RUNTIMES, bundle, cgroup_file, env, id, reap_orphans};
use runc_driver::{CreateOpts, Error, ExecOpts, Io, Status, Stdio};
use std::io::Read;
use std::time::Duration;

#[test]
fn create_start_state_ps_pause_resume_kill_delete() {
    for runtime in RUNTIMES {
        let Some(env) = env(runtime) else { return };
        let runc = &env.runc;
        let b = bundle(&["sleep", "600"]);
        let c = id(&format!("life-{runtime}"));
        let _guard = integration::bundle::ContainerGuard::new(runtime, env.root.path(), &c);
        smol::block_on(async {
            let created = runc
                .create(&c, b.path(), CreateOpts::default())
                .await
                .unwrap();
            let state = runc.state(&c).await.unwrap();
            assert_eq!(
                (state.id.as_str(), state.status, state.pid),
                (c.as_str(), Status::Created, created.pid),
                "{runtime}"
            );
            assert_eq!(state.bundle, b.path().to_str().unwrap());
            runc.start(&c).await.unwrap();
            assert_eq!(
                runc.state(&c).await.unwrap().status,
                Status::Running,
                "{runtime}"
            );
            assert_eq!(runc.ps(&c).await.unwrap(), vec![created.pid], "{runtime}");
            assert!(runc.list().await.unwrap().iter().any(|s| s.id == c));
            runc.pause(&c).await.unwrap();
            assert_eq!(
                runc.state(&c).await.unwrap().status,
                Status::Paused,
                "{runtime}"
            );
            runc.resume(&c).await.unwrap();
            assert_eq!(
                runc.state(&c).await.unwrap().status,
                Status::Running,
                "{runtime}"
            );
            // SIGKILL: a PID 1 without a handler (busybox sleep) ignores SIGTERM.
            runc.kill(&c, 9, false).await.unwrap();
        });
        for _ in 0..300 {
            reap_orphans(); // as the init's subreaper, reap it so the runtime sees it stopped
            if smol::block_on(runc.state(&c)).unwrap().status == Status::Stopped {
                break;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        smol::block_on(async {
            assert_eq!(
                runc.state(&c).await.unwrap().status,
                Status::Stopped,
                "{runtime}"
            );
            runc.delete(&c, false).await.unwrap();
            assert!(
                matches!(runc.state(&c).await, Err(Error::NotFound { .. })),
                "{runtime}"
            );
            assert!(runc.list().await.unwrap().is_empty(), "{runtime}");
        });
        reap_orphans();
    }
}

#[test]
fn run_detached_then_exec_with_pipes_and_with_a_terminal() {
    for runtime in RUNTIMES {
        let Some(env) = env(runtime) else { return };
        let runc = &env.runc;
        let b = bundle(&["sleep", "600"]);
        let c = id(&format!("exec-{runtime}"));
        let _guard = integration::bundle::ContainerGuard::new(runtime, env.root.path(), &c);
        smol::block_on(async {
            let created = runc
                .run_detached(&c, b.path(), CreateOpts::default())
                .await
                .unwrap();
            assert!(created.pid > 0);
            assert_eq!(runc.state(&c).await.unwrap().status, Status::Running);

            // Foreground exec with pipes: output read back, and its exit code returned.
            let process = oci_spec::runtime::ProcessBuilder::default()
                .args(
                    ["sh", "-c", "echo out; echo err >&2; exit 3"]
                        .map(String::from)
                        .to_vec(),
                )
                .env(vec!["PATH=/bin".to_string()])
                .cwd("/")
                .build()
                .unwrap();
            let stdio = Stdio {
                stdin: Io::Null,
                stdout: Io::Pipe,
                stderr: Io::Pipe,
            };
            let done = runc
                .exec(
                    &c,
                    &process,
                    ExecOpts {
                        stdio,
                        ..ExecOpts::default()
                    },
                )
                .await
                .unwrap();
            assert_eq!(done.exit_code, Some(3), "{runtime}");
            let mut out = String::new();
            std::fs::File::from(done.pipes.stdout.unwrap())
                .read_to_string(&mut out)
                .unwrap();
            let mut err = String::new();
            std::fs::File::from(done.pipes.stderr.unwrap())
                .read_to_string(&mut err)
                .unwrap();
            assert_eq!(
                (out.as_str(), err.as_str()),
                ("out\n", "err\n"),
                "{runtime}"
            );

            // Detached exec with a terminal: the pty master comes back over the console socket.
            let tty_process = oci_spec::runtime::ProcessBuilder::default()
                .args(
                    ["sh", "-c", "echo tty-ok; sleep 1"]
                        .map(String::from)
                        .to_vec(),
                )
                .env(vec!["PATH=/bin".to_string()])
                .cwd("/")
                .terminal(true)
                .build()
                .unwrap();
            let opts = ExecOpts {
                detach: true,
                console: true,
                ..ExecOpts::default()
            };
            let tty = runc.exec(&c, &tty_process, opts).await.unwrap();
            assert!(tty.pid.is_some_and(|p| p > 0));
            let mut master = std::fs::File::from(tty.console.unwrap());
            let mut seen = Vec::new();
            let mut buf = [0u8; 64];
            while !String::from_utf8_lossy(&seen).contains("tty-ok") {
                let n = master.read(&mut buf).unwrap();
                assert!(n > 0, "{runtime}: pty closed before the output");
                seen.extend_from_slice(&buf[..n]);
            }
            runc.delete(&c, true).await.unwrap();
        });
        reap_orphans();
    }
}

#[test]
fn update_sets_a_memory_limit_that_the_cgroup_then_holds() {
    for runtime in RUNTIMES {
        let Some(env) = env(runtime) else { return };
        let runc = &env.runc;
        let b = bundle(&["sleep", "600"]);
        let c = id(&format!("upd-{runtime}"));
        let _guard = integration::bundle::ContainerGuard::new(runtime, env.root.path(), &c);
        smol::block_on(async {
            let created = runc
                .run_detached(&c, b.path(), CreateOpts::default())
                .await
                .unwrap();
            let limit: i64 = 48 * 1024 * 1024;
            let memory = oci_spec::runtime::LinuxMemoryBuilder::default()
                .limit(limit)
                .build()
                .unwrap();
            let resources = oci_spec::runtime::LinuxResourcesBuilder::default()
                .memory(memory)
                .build()
                .unwrap();
            runc.update(&c, &resources).await.unwrap();
            let file = cgroup_file(created.pid, "memory", "memory.limit_in_bytes");
            let read: i64 = std::fs::read_to_string(&file)
                .unwrap()
                .trim()
                .parse()
                .unwrap();
            assert_eq!(read, limit, "{runtime}: {}", file.display());
            runc.delete(&c, true).await.unwrap();
        });
        reap_orphans();
    }
}

#[test]
fn stats_are_plausible_on_runc_and_unsupported_on_crun() {
    for runtime in RUNTIMES {
        let Some(env) = env(runtime) else { return };
        let runc = &env.runc;
        let b = bundle(&[
            "sh",
            "-c",
            "i=0; while [ $i -lt 20000 ]; do i=$((i+1)); done; sleep 600",
        ]);
        let c = id(&format!("stats-{runtime}"));
        let _guard = integration::bundle::ContainerGuard::new(runtime, env.root.path(), &c);
        smol::block_on(async {
            runc.run_detached(&c, b.path(), CreateOpts::default())
                .await
                .unwrap();
            std::thread::sleep(Duration::from_millis(300));
            match runc.stats(&c).await {
                Ok(stats) => {
                    assert_eq!(runtime, "runc");
                    assert!(stats.cpu.usage.total > 1_000_000, "{stats:?}");
                    assert!(stats.memory.usage.usage > 0, "{stats:?}");
                    assert!(stats.pids.current >= 1, "{stats:?}");
                }
                Err(Error::Unsupported {
                    command: "events", ..
                }) => assert_eq!(runtime, "crun"),
                Err(e) => panic!("{runtime}: {e}"),
            }
            let version = runc.version().await.unwrap();
            assert_eq!(version.runtime, runtime);
            match runc.features().await {
                Ok(f) => assert!(!f.oci_version_max.is_empty()),
                Err(Error::Unsupported {
                    command: "features",
                    ..
                }) => assert_eq!(runtime, "crun"),
                Err(e) => panic!("{runtime}: {e}"),
            }
            runc.delete(&c, true).await.unwrap();
        });
        reap_orphans();
    }
}

#[test]
fn extra_fds_reach_the_container_as_3_and_up() {
    for runtime in RUNTIMES {
        let Some(env) = env(runtime) else { return };
        let runc = &env.runc;
        let b = bundle(&["sh", "-c", "echo via-fd3 >&3; echo via-fd4 >&4"]);
        let c = id(&format!("fds-{runtime}"));
        let _guard = integration::bundle::ContainerGuard::new(runtime, env.root.path(), &c);
        let (r3, w3) = rustix::pipe::pipe_with(rustix::pipe::PipeFlags::CLOEXEC).unwrap();
        let (r4, w4) = rustix::pipe::pipe_with(rustix::pipe::PipeFlags::CLOEXEC).unwrap();
        smol::block_on(async {
            let opts = CreateOpts {
                extra_fds: vec![w3, w4],
                ..CreateOpts::default()
            };
            runc.run_detached(&c, b.path(), opts).await.unwrap();
        });
        // Our copies went with the call: end-of-file comes when the container exits.
        let mut got3 = String::new();
        std::fs::File::from(r3).read_to_string(&mut got3).unwrap();
        let mut got4 = String::new();
        std::fs::File::from(r4).read_to_string(&mut got4).unwrap();
        assert_eq!(
            (got3.as_str(), got4.as_str()),
            ("via-fd3\n", "via-fd4\n"),
            "{runtime}"
        );
        reap_orphans();
        smol::block_on(runc.delete(&c, true)).unwrap();
    }
}
