//! The CRI flows checked, each one or more `ok`/`FAIL` lines.

use super::*;

/// One shimless pod end to end: running in its systemd scope, exec, logs, stop, remove.
pub(crate) async fn single_pod(report: &mut Report, cri: &mut Cri) {
    let pod = match start_pod(cri, UNIFIED, "single", "echo hello; exec sleep 3600").await {
        Ok(p) => p,
        Err(e) => {
            report.check("pod_runs_in_systemd_scope", Err(e));
            return;
        }
    };
    report.check("pod_runs_in_systemd_scope", pod_in_scope(cri, &pod).await);
    report.check("exec", exec(cri, &pod).await);
    report.check("logs", logs(&pod).await);
    report.check("stats_have_values", stats(&pod));
    report.check("stop_and_remove", stop_and_remove(cri, &pod).await);
}

pub(crate) async fn pod_in_scope(cri: &mut Cri, pod: &Pod) -> Outcome {
    wait_state(cri, &pod.container, ContainerState::ContainerRunning).await?;
    let (_, pid) = status(cri, &pod.container).await?;
    let pid = pid.ok_or("no pid in ContainerStatus's verbose info")?;
    let cgroup = cgroup_of(pid);
    info(format!("a shimless container's cgroup: {cgroup}"));
    let slice = format!("kubepods-besteffort-pod{}.slice", pod.uid.replace('-', "_"));
    let scope = format!("cri-containerd-{}.scope", pod.container);
    ensure(
        cgroup.contains(&format!(
            "/kubepods.slice/kubepods-besteffort.slice/{slice}/{scope}"
        )),
        || format!("container {pid} is in {cgroup:?}, not in {slice}/{scope}"),
    )?;
    let state = sh(&format!("systemctl is-active {scope}")).unwrap_or_else(|e| e);
    ensure(state.trim() == "active", || format!("{scope}: {state}"))
}

pub(crate) async fn exec(cri: &mut Cri, pod: &Pod) -> Outcome {
    let reply = cri
        .exec_sync(ExecSyncRequest {
            container_id: pod.container.clone(),
            cmd: ["sh", "-c", "echo out; echo err >&2; exit 3"]
                .map(String::from)
                .to_vec(),
            timeout: 60,
        })
        .await
        .map_err(|e| format!("ExecSync: {e}"))?
        .into_inner();
    ensure(
        (
            reply.exit_code,
            reply.stdout.as_slice(),
            reply.stderr.as_slice(),
        ) == (3, b"out\n", b"err\n"),
        || format!("ExecSync gave {reply:?}"),
    )
}

pub(crate) async fn logs(pod: &Pod) -> Outcome {
    let deadline = Instant::now() + PATIENCE;
    loop {
        let text = std::fs::read_to_string(pod.log()).unwrap_or_default();
        // `<RFC 3339 time> stdout F hello`
        if text.lines().any(|l| {
            let f: Vec<&str> = l.splitn(4, ' ').collect();
            f.len() == 4 && f[0].contains('T') && f[1] == "stdout" && f[2] == "F" && f[3] == "hello"
        }) {
            return Ok(());
        }
        ensure(Instant::now() < deadline, || {
            format!(
                "no `stdout F hello` line in {}: {text:?}",
                pod.log().display()
            )
        })?;
        async_io::Timer::after(Duration::from_millis(200)).await;
    }
}

/// The task's metrics as containerd decodes them (`ctr task metrics`, which reads the shim's
/// `Stats`): memory, CPU and PIDs counted, not only a successful call. Which metrics type came
/// (cgroup v1 names or v2 names) is said in an `info` line.
pub(crate) fn stats(pod: &Pod) -> Outcome {
    let out = sh(&format!("ctr -n k8s.io task metrics {}", pod.container))?;
    let values: BTreeMap<&str, &str> = out
        .lines()
        .filter_map(|l| {
            let mut f = l.split_whitespace();
            Some((f.next()?, f.next()?))
        })
        .collect();
    let number = |names: &[&str]| -> Option<u64> {
        names
            .iter()
            .find_map(|n| values.get(n).and_then(|v| v.parse().ok()))
    };
    let memory = number(&["memory.usage_in_bytes", "memory.usage"]);
    let cpu = number(&["cpuacct.usage", "cpu.usage_usec"]);
    let pids = number(&["pids.current"]);
    let kind = if values.contains_key("memory.usage") {
        "cgroup v2"
    } else {
        "cgroup v1"
    };
    info(format!(
        "a shimless task's metrics ({kind} Metrics): memory {memory:?} B, cpu {cpu:?}, pids {pids:?}"
    ));
    ensure(
        memory.is_some_and(|m| m > 0) && cpu.is_some_and(|c| c > 0) && pids.is_some_and(|p| p >= 1),
        || format!("metrics without values: {out:?}"),
    )
}

pub(crate) async fn stop_and_remove(cri: &mut Cri, pod: &Pod) -> Outcome {
    cri.stop_container(StopContainerRequest {
        container_id: pod.container.clone(),
        timeout: 10,
    })
    .await
    .map_err(|e| format!("StopContainer: {e}"))?;
    let (s, _) = status(cri, &pod.container).await?;
    ensure(
        s.state == ContainerState::ContainerExited as i32 && s.exit_code == 143,
        || format!("after StopContainer (SIGTERM to sleep): {s:?}"),
    )?;
    remove_pod(cri, pod).await?;
    let left: Vec<String> = units()?
        .into_iter()
        .filter(|u| u.contains(&pod.container) || u.contains(&pod.id))
        .collect();
    ensure(left.is_empty(), || {
        format!("units left after removal: {left:?}")
    })
}

/// A container over its 16 MiB memory limit is reported `OOMKilled` with 137 (shimless reads
/// the kill from the scope's `memory.events` on cgroup v2).
pub(crate) async fn oom_killed(cri: &mut Cri) -> Outcome {
    let limit = LinuxContainerResources {
        memory_limit_in_bytes: 16 << 20,
        memory_swap_limit_in_bytes: 16 << 20,
        ..Default::default()
    };
    let fill = "echo filling; x=$(dd if=/dev/zero bs=1048576 count=64 2>/dev/null | tr '\\0' a); echo survived";
    let pod = start_pod_with(cri, UNIFIED, "oom", fill, Some(limit)).await?;
    let s = wait_state(cri, &pod.container, ContainerState::ContainerExited).await?;
    let outcome = ensure(
        (s.reason.as_str(), s.exit_code) == ("OOMKilled", 137),
        || format!("{s:?}"),
    );
    remove_pod(cri, &pod).await?;
    outcome
}

/// Ten shimless pods: no shim process added from the first to the tenth; systemd units per pod
/// compared with the stock runc shim's.
pub(crate) async fn ten_pods(report: &mut Report, cri: &mut Cri) -> Vec<Pod> {
    let units_before = units().unwrap_or_default().len();
    let mut pods = Vec::new();
    let mut after_first = Vec::new();
    let mut failure = None;
    for i in 0..10 {
        match start_pod(cri, UNIFIED, &format!("unified-{i}"), "exec sleep 3600").await {
            Ok(p) => pods.push(p),
            Err(e) => {
                failure = Some(e);
                break;
            }
        }
        if i == 0 {
            after_first = shim_like();
        }
    }
    let outcome = match failure {
        Some(e) => Err(e),
        None => ten_pods_outcome(cri, &pods, &after_first).await,
    };
    report.check("ten_pods_add_no_shim_process", outcome);
    let shimless_units = units()
        .unwrap_or_default()
        .len()
        .saturating_sub(units_before);
    report.check(
        "units_per_pod_as_the_stock_shim",
        stock_units(cri, shimless_units, pods.len()).await,
    );
    pods
}

pub(crate) async fn ten_pods_outcome(cri: &mut Cri, pods: &[Pod], after_first: &[u32]) -> Outcome {
    for pod in pods {
        wait_state(cri, &pod.container, ContainerState::ContainerRunning).await?;
    }
    pids_of(cri, pods).await?;
    let after_tenth = shim_like();
    info(format!(
        "shim-like processes after the 1st shimless pod: {}, after the 10th: {}",
        after_first.len(),
        after_tenth.len()
    ));
    for pid in &after_tenth {
        info(format!(
            "{} runs in {}",
            std::fs::read_to_string(format!("/proc/{pid}/comm"))
                .unwrap_or_default()
                .trim(),
            cgroup_of(*pid)
        ));
    }
    ensure(after_first.len() == after_tenth.len(), || {
        format!("shim processes went from {after_first:?} to {after_tenth:?}")
    })
}

/// Starts 3 stock pods and compares the systemd units they add per pod with shimless's.
pub(crate) async fn stock_units(
    cri: &mut Cri,
    shimless_units: usize,
    shimless_pods: usize,
) -> Outcome {
    ensure(shimless_pods == 10, || {
        "the ten shimless pods did not all start".into()
    })?;
    let before = units()?.len();
    let shims_before = shim_like().len();
    let mut stock = Vec::new();
    for i in 0..3 {
        stock.push(start_pod(cri, STOCK, &format!("stock-{i}"), "exec sleep 3600").await?);
    }
    for pod in &stock {
        wait_state(cri, &pod.container, ContainerState::ContainerRunning).await?;
    }
    let stock_units = units()?.len() - before;
    let stock_shims = shim_like().len() - shims_before;
    for pod in &stock {
        remove_pod(cri, pod).await?;
    }
    STOCK_DONE.store(true, std::sync::atomic::Ordering::Relaxed);
    info(format!(
        "systemd scopes+slices added: 10 shimless pods {shimless_units} ({:.1}/pod, incl. kubepods slices), 3 stock pods {stock_units} ({:.1}/pod); stock shim processes added: {stock_shims}",
        shimless_units as f64 / 10.0,
        stock_units as f64 / 3.0
    ));
    ensure(stock_shims == 3, || {
        format!("3 stock pods added {stock_shims} shim processes (expected one each)")
    })?;
    // Beyond the kubepods slices the first pod creates, each pod adds its slice and two scopes.
    ensure(shimless_units <= 10 * 3 + 2 && stock_units == 3 * 3, || {
        format!("units added: shimless {shimless_units} for 10 pods, stock {stock_units} for 3")
    })
}

/// The pods whose container still runs.
pub(crate) async fn running(cri: &mut Cri, pods: &[Pod]) -> Vec<Pod> {
    let mut live = Vec::new();
    for pod in pods {
        if let Ok((s, _)) = status(cri, &pod.container).await
            && s.state == ContainerState::ContainerRunning as i32
        {
            live.push(pod.clone());
        }
    }
    info(format!(
        "{} of {} pods still running",
        live.len(),
        pods.len()
    ));
    live
}

/// `kill -9 shimlessd`: an exit that happens meanwhile is reported with its code, and the
/// pods still running keep running.
pub(crate) async fn kill_shimlessd(report: &mut Report, cri: &mut Cri, pods: &[Pod]) {
    let live = running(cri, pods).await;
    let pods = &live[..];
    let before = pids_of(cri, pods).await;
    let exiting = match start_pod(cri, UNIFIED, "exits-7", "sleep 5; exit 7").await {
        Ok(p) => p,
        Err(e) => {
            report.check("kill_9_shimlessd_exit_reported", Err(e));
            return;
        }
    };
    report.check(
        "kill_9_shimlessd_exit_reported",
        kill_and_wait_exit(cri, &exiting).await,
    );
    let outcome = match before {
        Ok(before) => pids_of(cri, pods).await.and_then(|after| {
            ensure(before == after, || {
                format!("container PIDs changed: {before:?} -> {after:?}")
            })
        }),
        Err(e) => Err(format!("before the kill: {e}")),
    };
    report.check("kill_9_shimlessd_containers_keep_running", outcome);
    let _ = remove_pod(cri, &exiting).await;
}

pub(crate) async fn kill_and_wait_exit(cri: &mut Cri, exiting: &Pod) -> Outcome {
    wait_state(cri, &exiting.container, ContainerState::ContainerRunning).await?;
    let daemons = processes(|n| n == "shimlessd");
    ensure(daemons.len() == 1, || {
        format!("shimlessd processes: {daemons:?}")
    })?;
    sh(&format!("kill -9 {}", daemons[0]))?;
    let s = wait_state(cri, &exiting.container, ContainerState::ContainerExited).await?;
    ensure(s.exit_code == 7, || {
        format!("the exit during the daemon's restart: {s:?}")
    })
}

/// The init PID of each pod's container, all RUNNING.
pub(crate) async fn pids_of(cri: &mut Cri, pods: &[Pod]) -> Result<BTreeMap<String, u32>, String> {
    let mut pids = BTreeMap::new();
    for pod in pods {
        let (s, pid) = status(cri, &pod.container).await?;
        ensure(s.state == ContainerState::ContainerRunning as i32, || {
            format!("{} is not running: {s:?}", pod.name)
        })?;
        let pid = pid.ok_or_else(|| format!("no pid for {}", pod.name))?;
        ensure(Path::new(&format!("/proc/{pid}")).exists(), || {
            format!(
                "{}'s pid {pid} is gone (after the stock pods: {})",
                pod.name,
                STOCK_DONE.load(std::sync::atomic::Ordering::Relaxed)
            )
        })?;
        pids.insert(pod.name.clone(), pid);
    }
    Ok(pids)
}

/// `systemctl restart containerd` leaves every container, the front and the daemon running;
/// `systemctl stop`, an exit while containerd is down, `start`: the exit is reported.
/// Runs on the pods still running (the checks before may have lost some), at least two.
pub(crate) async fn restart_containerd(report: &mut Report, mut cri: Cri, pods: &[Pod]) -> Cri {
    let live = running(&mut cri, pods).await;
    let pods = &live[..];
    let outcome = match pods.len() {
        0 | 1 => Err("fewer than two pods still run".to_owned()),
        _ => restart_outcome(&mut cri, pods).await,
    };
    report.check("systemctl_restart_containerd_keeps_containers", outcome);
    let mut cri = connect().await.unwrap_or(cri);
    let outcome = stop_start_outcome(&mut cri, pods).await;
    report.check("exit_while_containerd_is_stopped_is_reported", outcome);
    connect().await.unwrap_or(cri)
}

pub(crate) async fn restart_outcome(cri: &mut Cri, pods: &[Pod]) -> Result<(), String> {
    let before = pids_of(cri, pods).await?;
    let shimless_before = processes(|n| n == "shimlessd" || n == "shimless-front");
    sh("systemctl restart containerd")?;
    *cri = connect().await?;
    let after = pids_of(cri, pods).await?;
    ensure(before == after, || {
        format!("container PIDs: {before:?} -> {after:?}")
    })?;
    let shimless_after = processes(|n| n == "shimlessd" || n == "shimless-front");
    ensure(shimless_before == shimless_after, || {
        format!("front and daemon: {shimless_before:?} -> {shimless_after:?}")
    })
}

pub(crate) async fn stop_start_outcome(cri: &mut Cri, pods: &[Pod]) -> Result<(), String> {
    let (victim, rest) = pods.split_first().ok_or("no pods")?;
    let before = pids_of(cri, rest).await?;
    let (_, pid) = status(cri, &victim.container).await?;
    let pid = pid.ok_or("no pid")?;
    sh("systemctl stop containerd")?;
    let killed = sh(&format!("kill -9 {pid}"));
    sh("systemctl start containerd")?;
    killed?;
    *cri = connect().await?;
    let s = wait_state(cri, &victim.container, ContainerState::ContainerExited).await?;
    ensure(s.exit_code == 137, || {
        format!("the exit while containerd was down: {s:?}")
    })?;
    let after = pids_of(cri, rest).await?;
    ensure(before == after, || {
        format!("container PIDs: {before:?} -> {after:?}")
    })
}
