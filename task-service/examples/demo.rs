//! The README's main job: one `shimlessd` runs N busybox containers (default 50), is killed
//! with SIGKILL while containers keep running and exiting, and a new one reports every exit
//! with its true code. Ends with the daemon's memory next to what N Go shims cost.
//!
//! `scripts/demo [N]` builds and runs it (as root).

#[path = "../benches/peer/go_shim.rs"]
mod go_shim;

use integration::bundle::{Bundle, BundleBuilder};
use integration::child::Child;
use integration::shimlessd::Shimlessd;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};
use task_service::api::containerd::task::v3::*;
use task_service::api::shimless::v1::ListRequest;
use task_service::client::{Client, TaskClient, namespaced};
use tonic::Request;

const NS: &str = "demo";

type Result<T> = std::result::Result<T, Box<dyn std::error::Error>>;

fn main() {
    if let Err(e) = run() {
        eprintln!("demo: {e}");
        std::process::exit(1);
    }
}

/// What a container does: exit with the code written to its `/ctl` FIFO, or wait for a signal
/// (its shell traps TERM and INT, as a real service's PID 1 would; KILL needs no trap).
#[derive(Clone, Copy, PartialEq)]
enum Kind {
    Controlled,
    Service,
}

struct Demo {
    dir: tempfile::TempDir,
    daemon: Option<Child>,
    log: PathBuf,
}

impl Demo {
    fn socket(&self) -> PathBuf {
        Shimlessd::socket_in(self.dir.path())
    }

    fn start_daemon(&mut self) -> Result<u32> {
        let exe = std::env::current_exe()?;
        let bin = exe
            .parent()
            .and_then(Path::parent)
            .map(|d| d.join("shimlessd"))
            .filter(|p| p.exists())
            .ok_or("shimlessd is not built next to the demo: run scripts/demo")?;
        let daemon = Shimlessd::new(bin)
            .in_dir(self.dir.path())
            .start(&self.log)?;
        let pid = daemon.pid();
        self.daemon = Some(daemon);
        Ok(pid)
    }

    fn last_line(&self, what: &str) -> String {
        self.daemon
            .as_ref()
            .and_then(|d| d.last_line(what))
            .unwrap_or_default()
    }
}

impl Drop for Demo {
    fn drop(&mut self) {
        self.daemon = None;
        // Whatever is left (an interrupted demo), force-removed so nothing leaks.
        integration::bundle::delete_all("runc", &self.dir.path().join("runc").join(NS));
        reap();
    }
}

fn reap() {
    while let Ok(Some(_)) = rustix::process::wait(rustix::process::WaitOptions::NOHANG) {}
}

fn req<T>(msg: T) -> Request<T> {
    namespaced(NS, msg)
}

async fn client(socket: &Path) -> Result<TaskClient> {
    Ok(Client::connect(socket).await?.task())
}

fn bundle(kind: Kind) -> Result<Bundle> {
    Ok(match kind {
        Kind::Controlled => Bundle::exit_on_demand()?,
        Kind::Service => BundleBuilder::new()
            .args([
                "sh",
                "-c",
                "trap 'exit 143' TERM; trap 'exit 130' INT; sleep 1000000 & wait",
            ])
            .build()?,
    })
}

fn progress(done: usize, total: usize, started: Instant) {
    let width = 40;
    let filled = done * width / total.max(1);
    print!(
        "\r  [{}{}] {done}/{total} containers ({:.1} s)",
        "#".repeat(filled),
        " ".repeat(width - filled),
        started.elapsed().as_secs_f64()
    );
    let _ = std::io::stdout().flush();
}

async fn table(socket: &Path, show: &[String]) -> Result<()> {
    let mut admin = Client::connect(socket).await?.admin();
    let tasks = admin
        .list(ListRequest {
            namespace: NS.into(),
        })
        .await?
        .into_inner()
        .tasks;
    let mut counts = std::collections::BTreeMap::new();
    for t in &tasks {
        *counts.entry(t.status.as_str()).or_insert(0) += 1;
    }
    println!("  {} containers: {counts:?}", tasks.len());
    println!("    {:<8} {:>8} {:<8} {:>5}", "ID", "PID", "STATUS", "EXIT");
    for t in tasks.iter().filter(|t| show.contains(&t.id)) {
        let exit = if t.status == "stopped" {
            t.exit_status.to_string()
        } else {
            "-".into()
        };
        println!("    {:<8} {:>8} {:<8} {:>5}", t.id, t.pid, t.status, exit);
    }
    Ok(())
}

fn run() -> Result<()> {
    let n = containers_wanted()?;
    if !rustix::process::geteuid().is_root() {
        return Err("run as root (containers and eBPF need it)".into());
    }
    // Containers the killed daemon leaves behind become our children, and we reap them, as
    // systemd would on a node: their exit codes then survive only in the kernel (exitwatch).
    rustix::process::set_child_subreaper(rustix::process::Pid::from_raw(1))?;
    let _ = raise_fd_limit();
    let dir = tempfile::Builder::new()
        .prefix("shimless-demo-")
        .tempdir()?;
    let log = dir.path().join("shimlessd.log");
    let mut demo = Demo {
        dir,
        daemon: None,
        log,
    };
    println!("shimless demo: one daemon, {n} containers, a kill -9, no lost exit\n");
    let pid = demo.start_daemon()?;
    println!(
        "1. shimlessd started (pid {pid}, socket {}).",
        demo.socket().display()
    );
    println!("   {}", demo.last_line("exit codes kept in the kernel"));

    let fleet = Fleet::start(demo.socket(), n)?;
    fleet.signals_and_codes()?;
    let exited = fleet.exits_while_down(&mut demo)?;
    let pid = fleet.after_restart(&mut demo, &exited)?;
    fleet.memory(pid)?;
    fleet.remove_all()?;
    println!("   done.");
    Ok(())
}

/// N from the command line: 50 by default, 20 to 2000 (the steps use four services and eight
/// other containers, and one in five is a service).
fn containers_wanted() -> Result<usize> {
    match std::env::args().nth(1) {
        None => Ok(50),
        Some(arg) => Ok(arg
            .parse()
            .ok()
            .filter(|n| (20..=2000).contains(n))
            .ok_or_else(|| format!("N must be a number from 20 to 2000, not {arg:?}"))?),
    }
}

/// The demo's container ID for index `i`.
fn id(i: usize) -> String {
    format!("c{i:03}")
}

/// The demo's containers, made through the daemon at `socket`.
struct Fleet {
    socket: PathBuf,
    bundles: Vec<Bundle>,
    pids: Vec<u32>,
    /// Indexes of the containers that wait for a signal.
    services: Vec<usize>,
    /// Indexes of the containers that exit when told.
    controlled: Vec<usize>,
    /// The IDs the tables show.
    show: Vec<String>,
}

impl Fleet {
    /// Step 2: creates and starts `n` containers, one in five a service.
    fn start(socket: PathBuf, n: usize) -> Result<Fleet> {
        let kinds: Vec<Kind> = (0..n)
            .map(|i| {
                if i % 5 == 0 {
                    Kind::Service
                } else {
                    Kind::Controlled
                }
            })
            .collect();
        println!("\n2. Creating and starting {n} busybox containers through the Task API:");
        let bundles: Vec<Bundle> = kinds.iter().map(|&k| bundle(k)).collect::<Result<_>>()?;
        let pids = smol::block_on(create_and_start(&socket, &bundles))?;
        let services: Vec<usize> = (0..n).filter(|&i| kinds[i] == Kind::Service).collect();
        let controlled: Vec<usize> = (0..n).filter(|&i| kinds[i] == Kind::Controlled).collect();
        let mut show: Vec<String> = services[..3].iter().map(|&i| id(i)).collect();
        show.extend(controlled[..3].iter().map(|&i| id(i)));
        Ok(Fleet {
            socket,
            bundles,
            pids,
            services,
            controlled,
            show,
        })
    }

    /// Step 3: three services signalled, three containers told to exit; what Wait says.
    fn signals_and_codes(&self) -> Result<()> {
        println!("\n3. Signals and exit codes, while the daemon runs:");
        let signals = [
            (self.services[0], 9, "KILL"),
            (self.services[1], 15, "TERM"),
            (self.services[2], 2, "INT"),
        ];
        let codes = [
            (self.controlled[0], 0u8),
            (self.controlled[1], 1),
            (self.controlled[2], 42),
        ];
        smol::block_on(async {
            let mut c = client(&self.socket).await?;
            for &(i, signal, name) in &signals {
                c.kill(req(KillRequest {
                    id: id(i),
                    signal,
                    ..Default::default()
                }))
                .await?;
                let code = wait(&mut c, i).await?;
                println!("   {} got SIG{name:<4} -> exit {code}", id(i));
            }
            for &(i, code) in &codes {
                self.bundles[i].tell_exit(code)?;
                let got = wait(&mut c, i).await?;
                println!("   {} exited by itself with {code:<3} -> exit {got}", id(i));
            }
            table(&self.socket, &self.show).await
        })
    }

    /// Step 4: the daemon killed; meanwhile five containers exit and one is killed from
    /// outside. Which exited with which code.
    fn exits_while_down(&self, demo: &mut Demo) -> Result<Vec<(usize, u8)>> {
        println!("\n4. kill -9 of the daemon; containers keep running.");
        if let Some(mut daemon) = demo.daemon.take() {
            daemon.kill();
        }
        let mut exited: Vec<(usize, u8)> = self.controlled[3..8]
            .iter()
            .enumerate()
            .map(|(k, &i)| (i, 10 + k as u8))
            .collect();
        for &(i, code) in &exited {
            self.bundles[i].tell_exit(code)?;
            println!("   while down: {} exits with {code}", id(i));
        }
        let victim = self.services[3];
        rustix::process::kill_process(
            rustix::process::Pid::from_raw(self.pids[victim] as i32).ok_or("bad pid")?,
            rustix::process::Signal::KILL,
        )?;
        println!(
            "   while down: {} is killed with SIGKILL from outside",
            id(victim)
        );
        std::thread::sleep(Duration::from_millis(300));
        reap();
        println!("   (their parent reaped them: the statuses now live only in exitwatch's map)");
        exited.push((victim, 137));
        Ok(exited)
    }

    /// Step 5: a new daemon; what Wait says of each exit that happened while none ran. The
    /// new daemon's PID.
    fn after_restart(&self, demo: &mut Demo, exited: &[(usize, u8)]) -> Result<u32> {
        println!("\n5. shimlessd restarted:");
        let pid = demo.start_daemon()?;
        println!(
            "   pid {pid}; {}",
            demo.last_line("recovered:")
                .trim_start_matches("shimlessd: ")
        );
        smol::block_on(async {
            let mut c = client(&self.socket).await?;
            for &(i, want) in exited {
                let got = wait(&mut c, i).await?;
                let verdict = if u32::from(want) == got {
                    "ok"
                } else {
                    "WRONG"
                };
                println!(
                    "   {} exited while down: Wait says {got} (true code {want}) {verdict}",
                    id(i)
                );
            }
            let mut more = self.show.clone();
            more.extend(exited.iter().map(|&(i, _)| id(i)));
            table(&self.socket, &more).await
        })?;
        Ok(pid)
    }

    /// Step 6: the daemon's PSS beside five Go shims' mean, measured now.
    fn memory(&self, pid: u32) -> Result<()> {
        let n = self.bundles.len();
        println!("\n6. Memory:");
        let (pss, _) = go_shim::memory_kib(pid).ok_or("cannot read the daemon's smaps_rollup")?;
        println!(
            "   shimlessd PSS with {n} containers: {:.1} MiB",
            pss as f64 / 1024.0
        );
        match measure_go_shim(&self.bundles[self.controlled[0]]) {
            Ok(per_shim) => println!(
                "   containerd-shim-runc-v2: {:.1} MiB PSS each (measured now, 5 shims) -> {n} x = {:.1} MiB ({:.0}x shimlessd)",
                per_shim as f64 / 1024.0,
                (per_shim * n as u64) as f64 / 1024.0,
                (per_shim * n as u64) as f64 / pss as f64
            ),
            Err(why) => println!("   the Go shim was not measured: {why}"),
        }
        Ok(())
    }

    /// Step 7: every container killed, waited for and deleted through the API.
    fn remove_all(&self) -> Result<()> {
        println!("\n7. Cleaning up: every container deleted through the API.");
        smol::block_on(async {
            let mut c = client(&self.socket).await?;
            for i in 0..self.bundles.len() {
                let _ = c
                    .kill(req(KillRequest {
                        id: id(i),
                        signal: 9,
                        ..Default::default()
                    }))
                    .await;
                wait(&mut c, i).await?;
                c.delete(req(DeleteRequest {
                    id: id(i),
                    ..Default::default()
                }))
                .await?;
            }
            Ok(())
        })
    }
}

/// Creates and starts every bundle's container, with a progress bar; their PIDs.
async fn create_and_start(socket: &Path, bundles: &[Bundle]) -> Result<Vec<u32>> {
    let started = Instant::now();
    let mut c = client(socket).await?;
    let mut pids = Vec::new();
    for (i, b) in bundles.iter().enumerate() {
        let created = c
            .create(req(CreateTaskRequest {
                id: id(i),
                bundle: b.path().display().to_string(),
                ..Default::default()
            }))
            .await?
            .into_inner();
        pids.push(created.pid);
        c.start(req(StartRequest {
            id: id(i),
            ..Default::default()
        }))
        .await?;
        progress(i + 1, bundles.len(), started);
    }
    println!();
    Ok(pids)
}

/// Container `i`'s exit status, as Wait answers.
async fn wait(c: &mut TaskClient, i: usize) -> Result<u32> {
    Ok(c.wait(req(WaitRequest {
        id: id(i),
        ..Default::default()
    }))
    .await?
    .into_inner()
    .exit_status)
}

/// Mean PSS (KiB) of 5 Go shims, each running one busybox container.
fn measure_go_shim(sample: &Bundle) -> std::result::Result<u64, String> {
    let mut containerd = go_shim::Containerd::start()?;
    for k in 0..5 {
        containerd.run(&format!("shim-peer-{k}"), &sample.rootfs())?;
    }
    let pids = containerd.shim_pids();
    let pss: Vec<u64> = pids
        .iter()
        .filter_map(|&p| go_shim::memory_kib(p))
        .map(|m| m.0)
        .collect();
    if pss.is_empty() {
        return Err("no containerd-shim-runc-v2 process found".into());
    }
    Ok(pss.iter().sum::<u64>() / pss.len() as u64)
}

fn raise_fd_limit() -> Option<u64> {
    integration::raise_fd_limit(65536)
}
