//! Every typed error, produced for real, on runc and on crun.

mod common;

use common::{RUNTIMES, bundle, env, id, reap_orphans};
use runc_driver::{CreateOpts, Error, ExecOpts, Runc};
use std::time::Duration;

#[test]
fn each_failure_gets_its_variant_on_both_runtimes() {
    for runtime in RUNTIMES {
        let Some(env) = env(runtime) else { return };
        let runc = &env.runc;
        let b = bundle(&["sleep", "600"]);
        let c = id(&format!("err-{runtime}"));
        let _guard = integration::bundle::ContainerGuard::new(runtime, env.root.path(), &c);
        smol::block_on(async {
            let missing = id("missing");
            assert!(
                matches!(runc.state(&missing).await, Err(Error::NotFound { .. })),
                "{runtime} state"
            );
            assert!(
                matches!(
                    runc.kill(&missing, 9, false).await,
                    Err(Error::NotFound { .. })
                ),
                "{runtime} kill"
            );
            assert!(
                matches!(
                    runc.delete(&missing, false).await,
                    Err(Error::NotFound { .. })
                ),
                "{runtime} delete"
            );

            runc.create(&c, b.path(), CreateOpts::default())
                .await
                .unwrap();
            let again = runc.create(&c, b.path(), CreateOpts::default()).await;
            assert!(
                matches!(again, Err(Error::AlreadyExists { .. })),
                "{runtime}: {again:?}"
            );

            runc.start(&c).await.unwrap();
            let twice = runc.start(&c).await;
            assert!(
                matches!(twice, Err(Error::InvalidState { .. })),
                "{runtime}: {twice:?}"
            );
            let running = runc.delete(&c, false).await;
            assert!(
                matches!(running, Err(Error::InvalidState { .. })),
                "{runtime}: {running:?}"
            );

            // A command that runs past its limit is killed and reported as such.
            let slow = Runc::builder()
                .binary(runtime)
                .root(env.root.path())
                .timeout(Duration::from_millis(200))
                .build()
                .unwrap();
            let sleeper = oci_spec::runtime::ProcessBuilder::default()
                .args(vec!["sleep".to_string(), "5".to_string()])
                .cwd("/")
                .build()
                .unwrap();
            let timed = slow.exec(&c, &sleeper, ExecOpts::default()).await;
            assert!(
                matches!(
                    timed,
                    Err(Error::Timeout {
                        command: "exec",
                        ..
                    })
                ),
                "{runtime}: {timed:?}"
            );

            // A process that cannot be started is the runtime's own failure, with its words.
            let nonsense = oci_spec::runtime::ProcessBuilder::default()
                .args(vec!["/no/such/binary".to_string()])
                .cwd("/")
                .build()
                .unwrap();
            match runc.exec(&c, &nonsense, ExecOpts::default()).await {
                Err(Error::Runtime {
                    command: "exec",
                    message,
                    ..
                }) => {
                    assert!(
                        message.contains("no such file") || message.contains("No such file"),
                        "{runtime}: {message}"
                    )
                }
                other => panic!("{runtime}: {other:?}"),
            }

            runc.kill(&c, 9, false).await.unwrap();
            // The runtime calls a container stopped once its init is gone; as its subreaper,
            // we must reap it.
            for _ in 0..300 {
                reap_orphans();
                if runc.state(&c).await.unwrap().status == runc_driver::Status::Stopped {
                    break;
                }
                async_io::Timer::after(Duration::from_millis(10)).await;
            }
            let stopped = runc.pause(&c).await;
            assert!(
                matches!(stopped, Err(Error::InvalidState { .. })),
                "{runtime}: {stopped:?}"
            );
            runc.delete(&c, false).await.unwrap();
        });
        reap_orphans();
    }
}

#[test]
fn bad_arguments_are_refused_before_anything_runs() {
    let Some(env) = env("runc") else { return };
    let runc = &env.runc;
    smol::block_on(async {
        for bad in ["", "../x", "a/b", "-flag"] {
            match runc.state(bad).await {
                Err(Error::InvalidArgument {
                    what: "container id",
                    value,
                    ..
                }) => assert_eq!(value, bad),
                other => panic!("{bad:?}: {other:?}"),
            }
        }
        let relative = runc
            .create("ok", "relative/bundle".as_ref(), CreateOpts::default())
            .await;
        assert!(
            matches!(relative, Err(Error::InvalidArgument { what: "bundle", .. })),
            "{relative:?}"
        );
        let empty = tempfile::tempdir().unwrap();
        let no_config = runc.create("ok", empty.path(), CreateOpts::default()).await;
        assert!(
            matches!(
                no_config,
                Err(Error::InvalidArgument { what: "bundle", .. })
            ),
            "{no_config:?}"
        );
    });
    match Runc::new("/nonexistent/runc") {
        Err(Error::Spawn { path, .. }) => {
            assert_eq!(path, std::path::Path::new("/nonexistent/runc"))
        }
        other => panic!("{other:?}"),
    }
}

#[test]
fn the_message_is_the_runtime_log_s_own_and_a_kept_log_gets_it_too() {
    for runtime in RUNTIMES {
        let Some(env) = env(runtime) else { return };
        let kept = tempfile::tempdir().unwrap();
        let log = kept.path().join("runtime.log");
        let runc = Runc::builder()
            .binary(runtime)
            .root(env.root.path())
            .log(&log)
            .build()
            .unwrap();
        let missing = id("never-made");
        let message = match smol::block_on(runc.state(&missing)) {
            Err(Error::NotFound { message, .. }) => message,
            other => panic!("{runtime}: {other:?}"),
        };
        // The `msg` of the runtime's JSON log line, neither the whole line nor a text echo.
        let expected = if runtime == "runc" {
            "container does not exist".to_string()
        } else {
            format!(
                "error opening file `{}/{missing}/status`: No such file or directory",
                env.root.path().display()
            )
        };
        assert_eq!(message, expected, "{runtime}");
        let text = std::fs::read_to_string(&log).unwrap();
        let lines: Vec<serde_json::Value> = text
            .lines()
            .map(|line| serde_json::from_str(line).unwrap())
            .collect();
        let last = lines.last().unwrap();
        assert_eq!(last["level"], "error", "{runtime}: {text}");
        assert_eq!(last["msg"], expected.as_str(), "{runtime}: {text}");
    }
}
