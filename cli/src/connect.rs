//! How a command finds and reaches a running cluster: the head's address (the flag, else
//! `TROUPE_ADDRESS`, else the state file `troupe up` left), that state file and its directory,
//! and the status call to the head (shared by `status`, `job` and `up`, which waits for its
//! nodes with it).

use anyhow::Context;
use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};
use troupe::server::rpc::Token;
use troupe_proto::cluster_client::ClusterClient;
use troupe_proto::{ClusterStatusReply, Empty};

/// What `up` leaves behind for `down` and `status`.
#[derive(Debug, Serialize, Deserialize)]
pub(crate) struct ClusterState {
    pub head_address: String,
    pub metrics_address: Option<String>,
    pub head_pid: u32,
    pub node_pids: Vec<u32>,
}

/// The state directory: the flag, else $TROUPE_HOME, else /tmp/troupe-up.
pub(crate) fn state_dir(flag: Option<PathBuf>) -> PathBuf {
    flag.or_else(|| std::env::var_os("TROUPE_HOME").map(PathBuf::from))
        .unwrap_or_else(|| std::env::temp_dir().join("troupe-up"))
}

/// The state file `up` writes in `dir`.
pub(crate) fn state_file(dir: &Path) -> PathBuf {
    dir.join("cluster.json")
}

/// Reads the state `up` left in `dir`, if any.
pub(crate) fn read_state(dir: &Path) -> Option<ClusterState> {
    // A state file someone else wrote could send clients, and their token, anywhere.
    if let Err(why) = troupe::server::private_fs::check_own_file(&state_file(dir)) {
        if state_file(dir).exists() {
            tracing::warn!(%why, "ignoring the cluster state file");
        }
        return None;
    }
    let text = std::fs::read_to_string(state_file(dir)).ok()?;
    serde_json::from_str(&text).ok()
}

/// The head's address: the flag, else `TROUPE_ADDRESS`, else the cluster `troupe up` started.
pub(crate) fn head_address(flag: Option<String>) -> anyhow::Result<String> {
    if let Some(address) = flag {
        return Ok(address);
    }
    if let Ok(address) = std::env::var("TROUPE_ADDRESS") {
        return Ok(address);
    }
    if let Some(state) = read_state(&state_dir(None)) {
        return Ok(state.head_address);
    }
    anyhow::bail!(
        "no head address: pass --head, set TROUPE_ADDRESS, or start a cluster with `troupe up`"
    )
}

/// Fails with the reason when `address` is not `host:port` (before any token is looked for).
pub(crate) fn checked(address: String) -> anyhow::Result<String> {
    troupe::server::rpc::normalize_address(&address).map_err(anyhow::Error::msg)?;
    Ok(address)
}

/// Asks the head at `address` for the cluster status.
pub(crate) async fn fetch_status(
    address: &str,
    token: &Token,
) -> anyhow::Result<ClusterStatusReply> {
    let channel = troupe::server::rpc::connect(address, token)
        .await
        .map_err(anyhow::Error::msg)?;
    let mut client = ClusterClient::new(channel);
    let reply = tokio::time::timeout(std::time::Duration::from_secs(10), client.status(Empty {}))
        .await
        .context("the head did not answer within 10 s")?
        .map_err(|status| anyhow::anyhow!("the head refused: {}", status.message()))?;
    Ok(reply.into_inner())
}
