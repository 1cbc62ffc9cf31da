//! shimless's own `shimless.v1.Admin` service on [`Daemon`]: `List` (what `shimlessctl ps`
//! shows), `RegisterPublisher` (where a container's events go, from the shim's `start`) and
//! `Probes` (what `shimlessctl probes` shows).

use super::Daemon;
use super::container::{Entry, Key};
use super::errors;
use crate::api::shimless::v1::admin_server::Admin;
use crate::api::shimless::v1::{
    ListRequest, ListResponse, ProbesRequest, ProbesResponse, RegisterPublisherRequest, TaskSummary,
};
use crate::api::timestamp;
use crate::ids::{ContainerId, Namespace};
use crate::lock::lock;
use std::sync::Arc;
use tonic::{Request, Response, Status};

#[tonic::async_trait]
impl Admin for Daemon {
    async fn list(&self, req: Request<ListRequest>) -> Result<Response<ListResponse>, Status> {
        let only = req.into_inner().namespace;
        let entries: Vec<(Key, Arc<Entry>)> = lock(&self.inner.containers)
            .iter()
            .filter(|((ns, _), _)| only.is_empty() || ns.as_str() == only)
            .map(|(k, e)| (k.clone(), e.clone()))
            .collect();
        let mut tasks: Vec<TaskSummary> = entries
            .iter()
            .map(|(key, entry)| {
                let mut s = summary(key, entry);
                if let Some((own, figures)) = self.pod_figures(key).filter(|(f, _)| f.joined) {
                    s.pod_cgroup = own.pod_cgroup;
                    s.fold_losses = figures.losses.iter().map(ToString::to_string).collect();
                }
                s
            })
            .collect();
        tasks.sort_by(|a, b| (&a.namespace, &a.id).cmp(&(&b.namespace, &b.id)));
        let problems = lock(&self.inner.problems).clone();
        Ok(Response::new(ListResponse { tasks, problems }))
    }

    async fn probes(
        &self,
        req: Request<ProbesRequest>,
    ) -> Result<Response<ProbesResponse>, Status> {
        let (probes, counters) = self.probe_list(&req.into_inner().namespace);
        Ok(Response::new(ProbesResponse {
            probes,
            counters: Some(counters),
        }))
    }

    async fn register_publisher(
        &self,
        req: Request<RegisterPublisherRequest>,
    ) -> Result<Response<()>, Status> {
        let req = req.into_inner();
        let ns = Namespace::new(req.namespace.clone())
            .map_err(|e| Status::invalid_argument(format!("namespace {:?}: {e}", req.namespace)))?;
        let id = ContainerId::new(req.id.clone())
            .map_err(|e| Status::invalid_argument(format!("id {:?}: {e}", req.id)))?;
        let path = req.address.strip_prefix("unix://").unwrap_or(&req.address);
        if !path.starts_with('/') {
            return Err(Status::invalid_argument(format!(
                "publisher address {:?} is not an absolute unix socket path (containerd's \
                 -address)",
                req.address
            )));
        }
        let publishers = self.inner.publishers.clone();
        let address = path.to_string();
        smol::unblock(move || publishers.register(&ns, &id, &address))
            .await
            .map_err(|e| errors::internal("save the publisher", e))?;
        Ok(Response::new(()))
    }
}

/// One line of `List`: a container's init and what it was made from.
fn summary((ns, id): &Key, entry: &Entry) -> TaskSummary {
    let record = lock(&entry.record);
    let init = &record.container.init;
    let exit = init.exit();
    TaskSummary {
        namespace: ns.to_string(),
        id: id.to_string(),
        pid: init.pid.unwrap_or(0) as u32,
        status: init.state.name().to_string(),
        exit_status: exit.map_or(0, |e| e.code_for_containerd()),
        created_at: Some(timestamp(record.created_at)),
        exited_at: exit.map(|e| timestamp(e.at)),
        bundle: record.bundle.display().to_string(),
        execs: record.container.execs.len() as u32,
        pod_cgroup: String::new(),
        fold_losses: Vec::new(),
    }
}
