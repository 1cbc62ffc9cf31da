//! Watches processes that end in every way a process can end, through pidfds on one async-io
//! reactor, and prints how each one ended.
//!
//! ```text
//! cargo run -p shimless-pidfd --example watch                  # the default set of processes
//! cargo run -p shimless-pidfd --example watch -- --count 500   # plus 500 `sleep`s killed at once
//! ```

use futures_lite::future;
use shimless_pidfd::{Error, ExitStatus, PidFd, Signal};
use std::io::BufRead;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

struct Watched {
    what: &'static str,
    pidfd: PidFd,
    is_child: bool,
}

type BoxError = Box<dyn std::error::Error>;

fn main() -> Result<(), BoxError> {
    let extra = match parse_args() {
        Ok(extra) => extra,
        Err(msg) => {
            eprintln!("{msg}");
            std::process::exit(2);
        }
    };
    let started = Instant::now();
    let mut watched = the_usual_endings()?;
    let mut parent = grandchild(&mut watched)?;
    let extra_start = watched.len();
    for _ in 0..extra {
        spawn(&mut watched, "extra sleep, SIGKILLed", "exec sleep 60")?;
    }
    println!(
        "watching {} processes through pidfds on one reactor (pid, what, how it ended):",
        watched.len()
    );
    let (firsts, extras) = watched.split_at(extra_start);
    future::block_on(send_signals(firsts, extras))?;
    wait_all(firsts, extras)?;
    parent.wait()?;
    println!("done in {:.2} s", started.elapsed().as_secs_f64());
    Ok(())
}

/// Starts `script` in a shell and watches it as `what`.
fn spawn(watched: &mut Vec<Watched>, what: &'static str, script: &str) -> Result<(), BoxError> {
    let child = Command::new("sh")
        .args(["-c", script])
        .stdin(Stdio::null())
        .spawn()?;
    watched.push(Watched {
        what,
        pidfd: PidFd::from_child(&child)?,
        is_child: true,
    });
    Ok(())
}

/// Children that exit with codes, kill themselves, and wait for our SIGTERM (index 4) and
/// SIGKILL (index 5).
fn the_usual_endings() -> Result<Vec<Watched>, BoxError> {
    let mut watched = Vec::new();
    spawn(&mut watched, "exits 0", "sleep 0.2; exit 0")?;
    spawn(&mut watched, "exits 42", "sleep 0.3; exit 42")?;
    spawn(&mut watched, "exits 255", "sleep 0.4; exit 255")?;
    spawn(
        &mut watched,
        "kills itself with SIGSEGV",
        "sleep 0.5; ulimit -c 0; kill -SEGV $$",
    )?;
    spawn(
        &mut watched,
        "sleeps until we send SIGTERM",
        "exec sleep 60",
    )?;
    spawn(
        &mut watched,
        "sleeps until we send SIGKILL",
        "exec sleep 60",
    )?;
    Ok(watched)
}

/// A grandchild: its own parent (a shell) reaps it, so only the kernel can tell us its status.
/// The parent, to be waited for at the end.
fn grandchild(watched: &mut Vec<Watched>) -> Result<std::process::Child, BoxError> {
    let mut parent = Command::new("sh")
        .args([
            "-c",
            "sh -c 'sleep 0.6; exit 7' & echo $!; wait $!; sleep 1",
        ])
        .stdout(Stdio::piped())
        .spawn()?;
    let mut line = String::new();
    std::io::BufReader::new(parent.stdout.take().ok_or("no stdout")?).read_line(&mut line)?;
    watched.push(Watched {
        what: "grandchild, reaped by its own parent",
        pidfd: PidFd::open(line.trim().parse()?)?,
        is_child: false,
    });
    Ok(parent)
}

/// After 0.7 s, SIGTERM and SIGKILL to the two sleepers and SIGKILL to every extra. Signals go
/// through the pidfd: they can only ever reach the process we opened.
async fn send_signals(firsts: &[Watched], extras: &[Watched]) -> Result<(), Error> {
    smol::Timer::after(Duration::from_millis(700)).await;
    firsts[4].pidfd.send_signal(Signal::TERM)?;
    firsts[5].pidfd.send_signal(Signal::KILL)?;
    for w in extras {
        w.pidfd.send_signal(Signal::KILL)?;
    }
    Ok(())
}

/// Waits for all of them at once, each of `firsts` reported as soon as it ends, the extras
/// counted by exit code.
fn wait_all(firsts: &[Watched], extras: &[Watched]) -> Result<(), Error> {
    let ex = smol::LocalExecutor::new();
    let tasks: Vec<_> = firsts
        .iter()
        .map(|w| ex.spawn(async move { report(w).await }))
        .collect();
    let extra_done = ex.spawn(async move {
        let mut codes = std::collections::BTreeMap::new();
        for w in extras {
            w.pidfd.exited().await?;
            *codes
                .entry(w.pidfd.wait()?.code_for_containerd())
                .or_insert(0) += 1;
        }
        Ok::<_, Error>(codes)
    });
    future::block_on(ex.run(async {
        for t in tasks {
            t.await?;
        }
        let codes = extra_done.await?;
        if !extras.is_empty() {
            let n = extras.len();
            println!("  {n} extra processes ended; containerd exit codes seen: {codes:?}");
        }
        Ok(())
    }))
}

async fn report(w: &Watched) -> Result<(), Error> {
    w.pidfd.exited().await?;
    let status = if w.is_child {
        w.pidfd.wait()?
    } else {
        // Not our child: the kernel gives its status once its parent has reaped it (6.15+).
        loop {
            match w.pidfd.exit_info() {
                Err(Error::NotYetReaped { .. }) => {
                    smol::Timer::after(Duration::from_millis(2)).await;
                }
                Err(e @ Error::Unsupported { .. }) => {
                    println!(
                        "  {:>7}  {:<38} exited; status unknown ({e})",
                        w.pidfd.pid(),
                        w.what
                    );
                    return Ok(());
                }
                other => break other?,
            }
        }
    };
    println!(
        "  {:>7}  {:<38} {:<40} containerd code {}",
        w.pidfd.pid(),
        w.what,
        status.to_string(),
        status.code_for_containerd()
    );
    debug_assert!(matches!(
        status,
        ExitStatus::Exited(_) | ExitStatus::Signaled { .. }
    ));
    Ok(())
}

fn parse_args() -> Result<usize, String> {
    let mut args = std::env::args().skip(1);
    let mut extra = 0;
    while let Some(arg) = args.next() {
        match arg.as_str() {
            "--count" => {
                let v = args.next().ok_or("--count needs a number")?;
                extra = v
                    .parse()
                    .map_err(|_| format!("--count: `{v}` is not a number"))?;
            }
            "-h" | "--help" => {
                return Err(
                    "usage: watch [--count N]\n\nSpawns processes that exit with codes, \
                            die by signals, and a grandchild reaped by its own parent; watches \
                            them all through pidfds and prints how each ended. --count N adds N \
                            sleeps that are SIGKILLed at once."
                        .into(),
                );
            }
            other => return Err(format!("unknown argument `{other}` (try --help)")),
        }
    }
    Ok(extra)
}
