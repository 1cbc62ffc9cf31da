//! `shimlessctl upgrade`: hands the front's sockets and containerd's connections to the front
//! binary now installed (or `--binary`), and waits until the new front answers.

use crate::{Result, status};
use std::path::Path;
use std::time::{Duration, Instant};
use task_service::api::shimless::v1::{InfoRequest, InfoResponse, UpgradeRequest};
use task_service::client::Client;

/// How long the new front has to answer after the old one said it hands over.
const TAKEOVER_TIME: Duration = Duration::from_secs(60);

/// Asks the front on `socket` to upgrade to `binary` (empty: its own path), then waits for the
/// next generation to answer. Exits 0 once it does; 1 with the reason if the upgrade was
/// refused or failed (the old front then goes on serving).
pub(crate) async fn upgrade(
    client: &Client,
    socket: &Path,
    binary: String,
    json: bool,
) -> Result<i32> {
    let started = client
        .front()
        .upgrade(UpgradeRequest { binary })
        .await
        .map_err(status)?
        .into_inner();
    let deadline = Instant::now() + TAKEOVER_TIME;
    loop {
        smol::Timer::after(Duration::from_millis(100)).await;
        match info(socket).await {
            Ok(info) if info.generation > started.generation => {
                report(&info, json);
                return Ok(0);
            }
            Ok(info) if !info.last_upgrade_error.is_empty() => {
                return Err(format!(
                    "the upgrade to {} failed: {}",
                    started.binary, info.last_upgrade_error
                )
                .into());
            }
            // The old front still drains, or the new one is starting.
            Ok(_) | Err(_) if Instant::now() < deadline => {}
            Ok(_) | Err(_) => {
                return Err(format!(
                    "no new front answered on {} within {TAKEOVER_TIME:?} of the upgrade to {}; \
                     see the front's log",
                    socket.display(),
                    started.binary
                )
                .into());
            }
        }
    }
}

/// The front's `Info`, over a connection of its own (the old front's connections close as it
/// hands over).
async fn info(socket: &Path) -> Result<InfoResponse> {
    let client = Client::connect(socket).await?;
    let info = client.front().info(InfoRequest {}).await.map_err(status)?;
    Ok(info.into_inner())
}

fn report(info: &InfoResponse, json: bool) {
    if json {
        println!(
            "{}",
            serde_json::json!({
                "pid": info.pid,
                "generation": info.generation,
                "binary": info.binary,
                "version": info.version,
            })
        );
    } else {
        println!(
            "upgraded: shimless-front generation {} (pid {}, {}, version {})",
            info.generation, info.pid, info.binary, info.version
        );
    }
}
