//! Folded pods in the daemon: the spec rewritten at `Create`, the pod cgroup's values kept at
//! kubelet's, and the runtime commands that would reach a folded container's siblings done
//! per container instead (`cgroupfold::fold::RuntimeOp`).

use super::Daemon;
use super::container::{Entry, Key};
use crate::fold::{Choice, Folding, Role, SpecResources, choose, pod_cgroup_of};
use crate::ids::Namespace;
use crate::lock::lock;
use cgroupfold::fs::Cgroups;
use cgroupfold::layout::{Loss, losses};
use cgroupfold::math::{CgroupConfig, PodResources, pod_cgroup};
use oci_spec::runtime::Spec;
use std::path::Path;
use std::sync::Arc;
use tonic::Status;

/// A pod cgroup's values and what folding gives up, computed from its containers' records.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct PodFigures {
    pub(super) config: CgroupConfig,
    pub(super) losses: Vec<Loss>,
}

impl Daemon {
    /// Reads the bundle's spec and, for a container of a folded pod, rewrites its cgroup to
    /// the pod's (atomically: a temporary file renamed over `config.json`). An unfolded pod's
    /// spec is not written at all. The answer goes into the container's record.
    pub(super) async fn fold_at_create(
        &self,
        key: &Key,
        bundle: &Path,
        runtime: &Path,
    ) -> Result<Option<Folding>, Status> {
        let config = bundle.join("config.json");
        let load = config.clone();
        let spec = smol::unblock(move || Spec::load(&load))
            .await
            .map_err(|e| Status::invalid_argument(format!("{}: {e}", config.display())))?;
        let folding = match Role::of(&spec) {
            Role::NotCri => return Ok(None),
            Role::Sandbox => self.fold_sandbox(key, &spec)?,
            Role::Container { sandbox_id } => self.fold_container(key, &sandbox_id, &spec),
        };
        let Some(folding) = folding else {
            return Ok(None);
        };
        // Checked before anything is written: a container that cannot be folded is refused
        // with the pod's values and its spec as they were.
        let folded_spec = if folding.joined {
            check_runtime(key, runtime)?;
            let mut spec = spec;
            cgroupfold::fold::fold_spec(&mut spec, &folding.pod_cgroup).map_err(|e| {
                Status::invalid_argument(format!(
                    "container {:?} of a folded pod: {e}",
                    key.1.as_str()
                ))
            })?;
            Some(spec)
        } else {
            None
        };
        if folding.resources.is_some() {
            // Before the runtime runs it, as kubelet sizes the pod before its containers: a
            // container's own limits may not exceed its parent's (v1 refuses a child's larger
            // CFS quota), and a joining one must not start under the pod's smaller limit.
            let mut members = self.pod_members(&key.0, &folding.sandbox_id);
            members.push(folding.clone());
            apply(&folding, figures(&members).config).await;
        }
        if let Some(spec) = folded_spec {
            smol::unblock(move || write_atomically(&config, &spec))
                .await
                .map_err(|e| super::errors::internal("write the folded config.json", e))?;
        }
        Ok(Some(folding))
    }

    fn fold_sandbox(&self, key: &Key, spec: &Spec) -> Result<Option<Folding>, Status> {
        let refuse = |e: crate::fold::FoldRequestError| Status::invalid_argument(e.to_string());
        let annotations = spec.annotations().clone().unwrap_or_default();
        let choice = choose(&annotations, self.inner.config.fold).map_err(refuse)?;
        if choice == Choice::Keep {
            return Ok(None);
        }
        let path = spec
            .linux()
            .as_ref()
            .and_then(|l| l.cgroups_path().as_ref())
            .map(|p| p.display().to_string())
            .unwrap_or_default();
        let pod_cgroup = pod_cgroup_of(&path).map_err(refuse)?;
        // A new pod: none of its OOM kills is reported yet.
        lock(&REPORTED_OOMS)
            .get_or_insert_with(Default::default)
            .insert(pod_cgroup.trim_start_matches('/').to_owned(), 0);
        Ok(Some(Folding {
            sandbox_id: key.1.to_string(),
            pod_cgroup,
            choice,
            joined: true,
            resources: None,
        }))
    }

    /// A pod's container: folded as its sandbox decided (with `when-lossless`, only if the pod
    /// loses nothing by it).
    fn fold_container(&self, key: &Key, sandbox_id: &str, spec: &Spec) -> Option<Folding> {
        let sandbox = self.folding_of(&key.0, sandbox_id)?;
        let resources = SpecResources::of(spec);
        let joined = match sandbox.choice {
            Choice::Keep => return None,
            Choice::Fold => true,
            Choice::FoldWhenLossless => {
                let mut members = self.pod_members(&key.0, sandbox_id);
                members.push(Folding {
                    joined: true,
                    resources: Some(resources),
                    ..sandbox.clone()
                });
                figures(&members).losses.is_empty()
            }
        };
        Some(Folding {
            joined,
            resources: Some(resources),
            ..sandbox
        })
    }

    /// The folding recorded for container `id` of namespace `ns`, if its pod is folded.
    fn folding_of(&self, ns: &Namespace, id: &str) -> Option<Folding> {
        let containers = lock(&self.inner.containers);
        let (_, entry) = containers
            .iter()
            .find(|((n, i), _)| n == ns && i.as_str() == id)?;
        lock(&entry.record).fold.clone()
    }

    /// The recorded foldings of every container of pod `sandbox_id` (the sandbox's included).
    fn pod_members(&self, ns: &Namespace, sandbox_id: &str) -> Vec<Folding> {
        let entries: Vec<Arc<Entry>> = lock(&self.inner.containers)
            .iter()
            .filter(|((n, _), _)| n == ns)
            .map(|(_, e)| e.clone())
            .collect();
        entries
            .iter()
            .filter_map(|e| lock(&e.record).fold.clone())
            .filter(|f| f.sandbox_id == sandbox_id)
            .collect()
    }

    /// The figures of the pod that container `key` belongs to, if it is folded.
    pub(super) fn pod_figures(&self, key: &Key) -> Option<(Folding, PodFigures)> {
        let own = self.folding_of(&key.0, key.1.as_str())?;
        let members = self.pod_members(&key.0, &own.sandbox_id);
        Some((own, figures(&members)))
    }

    /// Writes kubelet's values for the pod of `key` (a container of a folded pod that was just
    /// created or updated) to the pod cgroup, and logs what folding gives up. A failure is
    /// logged, not returned: the container runs, under the values the cgroup had.
    pub(super) async fn apply_pod_values(&self, key: &Key) {
        let Some((own, figures)) = self.pod_figures(key) else {
            return;
        };
        apply(&own, figures.config).await;
        let lost: Vec<String> = figures.losses.iter().map(ToString::to_string).collect();
        if !lost.is_empty() {
            tracing::warn!(
                "shimlessd: folded pod {} ({}) gives up: {}",
                own.sandbox_id,
                own.pod_cgroup,
                lost.join("; ")
            );
        }
    }
}

/// Writes the pod's values to the pod cgroup of `own`; a failure is logged (the containers
/// run under the values the cgroup had).
async fn apply(own: &Folding, config: CgroupConfig) {
    let path = own.pod_cgroup.trim_start_matches('/').to_owned();
    let applied = smol::unblock(move || Cgroups::detect()?.apply(&path, &config)).await;
    if let Err(e) = applied {
        tracing::warn!(
            "shimlessd: folded pod {}: cannot apply the pod's values to {}: {e}",
            own.sandbox_id,
            own.pod_cgroup
        );
    }
}

impl Daemon {
    /// `Update` of a container in a folded pod's cgroup: its new resources are recorded and
    /// the pod's values computed again and written (`runc update` would write this one
    /// container's values over the pod's). `false` if the container is not folded.
    pub(super) async fn update_folded(
        &self,
        key: &Key,
        entry: &Entry,
        resources: &oci_spec::runtime::LinuxResources,
    ) -> Result<bool, Status> {
        if joined(entry).is_none() {
            return Ok(false);
        }
        let mut spec = Spec::default();
        if let Some(linux) = spec.linux_mut() {
            linux.set_resources(Some(resources.clone()));
        }
        let snapshot = {
            let mut record = lock(&entry.record);
            if let Some(fold) = record.fold.as_mut() {
                fold.resources = Some(SpecResources::of(&spec));
            }
            entry.snapshot(&record)
        };
        self.persist(key, entry, snapshot).await?;
        self.apply_pod_values(key).await;
        Ok(true)
    }
}

/// Refuses crun for a folded container: its delete of one container kills its siblings and
/// removes the pod cgroup (`cgroupfold::fold::observed`).
fn check_runtime(key: &Key, runtime: &Path) -> Result<(), Status> {
    if runtime.file_name().is_some_and(|n| n == "crun") {
        return Err(Status::invalid_argument(format!(
            "container {:?}: a folded pod needs runc 1.1 (crun's delete of one container kills \
             every container of the pod cgroup); use runc for this runtime handler or annotate \
             the pod {}=unfolded",
            key.1.as_str(),
            crate::fold::ANNOTATION
        )));
    }
    Ok(())
}

/// A joined container's pod cgroup and init pid, for the calls done per container.
pub(super) fn joined(entry: &Entry) -> Option<(String, u32)> {
    let record = lock(&entry.record);
    let fold = record.fold.as_ref().filter(|f| f.joined)?;
    let pid = record.container.init.pid.filter(|&p| p > 0)?;
    Some((
        fold.pod_cgroup.trim_start_matches('/').to_owned(),
        pid as u32,
    ))
}

/// Signals every process of a folded container (its PID namespace inside the pod cgroup), for
/// `Kill` with `all`: the runtime's `kill --all` would signal the siblings too.
pub(super) async fn signal_container(pod: String, init: u32, signal: i32) -> Result<(), Status> {
    let signal = rustix::process::Signal::from_named_raw(signal)
        .ok_or_else(|| Status::invalid_argument(format!("signal {signal} is not a signal")))?;
    smol::unblock(move || {
        let cg = Cgroups::detect()?;
        for pid in cgroupfold::fold::container_pids(&cg, &pod, init)? {
            if let Some(pid) = i32::try_from(pid)
                .ok()
                .and_then(rustix::process::Pid::from_raw)
            {
                // ESRCH: it exited meanwhile.
                let _ = rustix::process::kill_process(pid, signal);
            }
        }
        Ok::<(), cgroupfold::fs::FsError>(())
    })
    .await
    .map_err(|e| super::errors::internal("signal the folded container's processes", e))
}

/// The processes of a folded container (its PID namespace inside the pod cgroup), for `Pids`:
/// the runtime's `ps` would list the siblings' too.
pub(super) async fn container_pids(pod: String, init: u32) -> Result<Vec<i32>, Status> {
    smol::unblock(move || cgroupfold::fold::container_pids(&Cgroups::detect()?, &pod, init))
        .await
        .map(|pids| {
            pids.into_iter()
                .filter_map(|p| i32::try_from(p).ok())
                .collect()
        })
        .map_err(|e| super::errors::internal("list the folded container's processes", e))
}

/// Stops (`paused`) or continues every process of a folded container, for `Pause`/`Resume`:
/// the runtime's freezer would freeze the whole pod cgroup.
pub(super) async fn stop_container(pod: String, init: u32, paused: bool) -> Result<(), Status> {
    smol::unblock(move || {
        let cg = Cgroups::detect()?;
        let pids = if paused {
            cgroupfold::fold::stop_container(&cg, &pod, init)
        } else {
            cgroupfold::fold::continue_container(&cg, &pod, init)
        }?;
        settle(&pids, paused);
        Ok::<(), cgroupfold::fs::FsError>(())
    })
    .await
    .map_err(|e| super::errors::internal("stop or continue the folded container", e))
}

/// Waits (at most 2 s) until every process of `pids` that still exists shows as stopped
/// (`stopped`) or not: a signal is delivered when its target next runs, and `Pause` answers
/// only once the container is paused, as the freezer's `runc pause` does.
fn settle(pids: &[u32], stopped: bool) {
    let is_stopped = |pid: u32| {
        let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
        let state = stat.rsplit_once(')')?.1.trim_start().chars().next()?;
        Some(state == 'T')
    };
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(2);
    while pids
        .iter()
        .any(|&p| is_stopped(p).is_some_and(|s| s != stopped))
        && std::time::Instant::now() < deadline
    {
        std::thread::sleep(std::time::Duration::from_millis(2));
    }
}

/// OOM kills counted in each folded pod cgroup that were already reported for one of its
/// containers (by pod cgroup). Not persisted: after a restart at most one earlier kill can be
/// reported again, and only for a container whose init was SIGKILLed.
static REPORTED_OOMS: std::sync::Mutex<Option<std::collections::HashMap<String, u64>>> =
    std::sync::Mutex::new(None);

/// Whether an init exit is to be reported as an OOM kill, given `kills` counted in its memory
/// cgroup. Unfolded: any count (the cgroup is the container's own). Folded (the count is the
/// pod's): only an init killed by SIGKILL, and only while the pod has kills not yet reported
/// for another container, so that a sibling's OOM kill never makes a container `OOMKilled`.
pub(super) fn claims_oom(entry: &Entry, kills: u64, exit: &crate::model::Exit) -> bool {
    let Some((pod, _)) = joined(entry) else {
        return true;
    };
    let sigkill = exit.code_for_containerd() == 128 + 9;
    let mut reported = lock(&REPORTED_OOMS);
    let seen = reported
        .get_or_insert_with(Default::default)
        .entry(pod)
        .or_insert(kills.saturating_sub(1));
    if sigkill && kills > *seen {
        *seen += 1;
        return true;
    }
    false
}

/// Kubelet's pod values over every container of the pod, and what the joined ones lose.
fn figures(members: &[Folding]) -> PodFigures {
    let all = |only_joined: bool| PodResources {
        containers: members
            .iter()
            .filter(|f| f.joined || !only_joined)
            .filter_map(|f| f.resources.map(|r| r.kubelet()))
            .collect(),
        ..Default::default()
    };
    let config = pod_cgroup(&all(false));
    PodFigures {
        losses: losses(&all(true), &config),
        config,
    }
}

/// Writes `spec` over `path` through a temporary file in the same directory: a crash leaves
/// either the old file or the new one, never half of one.
fn write_atomically(path: &Path, spec: &Spec) -> std::io::Result<()> {
    let bytes = serde_json::to_vec(spec)?;
    let temp = path.with_extension("json.shimless-fold");
    std::fs::write(&temp, bytes)?;
    std::fs::rename(&temp, path).inspect_err(|_| {
        let _ = std::fs::remove_file(&temp);
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn member(joined: bool, shares: Option<u64>, memory: Option<i64>) -> Folding {
        Folding {
            sandbox_id: "s".into(),
            pod_cgroup: "/kubepods/podu".into(),
            choice: Choice::Fold,
            joined,
            resources: Some(SpecResources {
                cpu_shares: shares,
                memory_limit: memory,
                ..Default::default()
            }),
        }
    }

    #[test]
    fn pod_values_add_up_over_every_container_and_the_sandbox_counts_for_nothing() {
        let sandbox = Folding {
            resources: None,
            ..member(true, None, None)
        };
        let pod = [
            sandbox,
            member(true, Some(256), Some(64 << 20)),
            member(true, Some(512), Some(32 << 20)),
        ];
        let f = figures(&pod);
        assert_eq!(f.config.cpu_shares, 768);
        assert_eq!(f.config.memory.v1_limit_in_bytes(), 96 << 20);
        assert_eq!(f.losses.len(), 3, "{:?}", f.losses);
        let one = figures(&pod[..2]);
        assert!(one.losses.is_empty(), "{:?}", one.losses);
    }

    #[test]
    fn a_container_that_keeps_its_cgroup_counts_for_the_pod_but_loses_nothing() {
        let f = figures(&[
            member(true, None, None),
            member(false, Some(256), Some(64 << 20)),
        ]);
        assert_eq!(f.config.cpu_shares, 256);
        assert!(f.losses.is_empty(), "{:?}", f.losses);
    }
}
