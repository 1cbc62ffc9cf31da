//! `shimless.v1.Front`: the front's own calls on the public socket.

use super::{Protocol, Shared, handover};
use crate::api::shimless::v1::front_server;
use crate::api::shimless::v1::{
    InfoRequest, InfoResponse, ListenRequest, ListenResponse, UpgradeRequest, UpgradeResponse,
};
use crate::ids::Namespace;
use std::path::PathBuf;
use std::sync::Arc;

/// The front's own service on the public socket: namespace sockets on request.
#[derive(Clone)]
pub(super) struct FrontService {
    pub(super) shared: Arc<Shared>,
}

#[tonic::async_trait]
impl front_server::Front for FrontService {
    async fn listen(
        &self,
        req: tonic::Request<ListenRequest>,
    ) -> Result<tonic::Response<ListenResponse>, tonic::Status> {
        let req = req.into_inner();
        let name = req.namespace;
        let ns = Namespace::new(name.clone())
            .map_err(|e| tonic::Status::invalid_argument(format!("namespace {name:?}: {e}")))?;
        let protocol: Protocol = req
            .protocol
            .parse()
            .map_err(tonic::Status::invalid_argument)?;
        let socket = self.shared.listen(&ns, protocol).map_err(|e| {
            tonic::Status::internal(format!("cannot serve namespace {ns}'s socket: {e}"))
        })?;
        Ok(tonic::Response::new(ListenResponse {
            socket: socket.display().to_string(),
        }))
    }

    async fn upgrade(
        &self,
        req: tonic::Request<UpgradeRequest>,
    ) -> Result<tonic::Response<UpgradeResponse>, tonic::Status> {
        let binary = req.into_inner().binary;
        let binary = (!binary.is_empty()).then(|| PathBuf::from(binary));
        let generation = handover::start(&self.shared, binary.clone())
            .await
            .map_err(tonic::Status::failed_precondition)?;
        let binary = binary
            .or_else(|| self.shared.lineage.as_ref().map(|l| l.binary.clone()))
            .unwrap_or_default();
        Ok(tonic::Response::new(UpgradeResponse {
            generation,
            binary: binary.display().to_string(),
        }))
    }

    async fn info(
        &self,
        _req: tonic::Request<InfoRequest>,
    ) -> Result<tonic::Response<InfoResponse>, tonic::Status> {
        let lineage = self.shared.lineage.as_ref();
        Ok(tonic::Response::new(InfoResponse {
            pid: std::process::id(),
            generation: lineage.map_or(0, |l| l.generation),
            binary: lineage.map_or(String::new(), |l| l.binary.display().to_string()),
            last_upgrade_error: crate::lock::lock(&self.shared.last_upgrade_error).clone(),
            version: crate::version::build(),
        }))
    }
}
