//! Diagnostics a driver can run against a live actor: the round trip of the transport alone
//! (a gRPC `Ping` to the actor's worker, which runs no actor code), to set against a call's.

use super::Cluster;
use crate::actor::ActorHandle;
use crate::error::{Error, Result};
use std::time::{Duration, Instant};
use troupe_proto::worker_client::WorkerClient;

impl Cluster {
    /// Sends `count` empty `Ping` RPCs, one at a time, to the worker of `actor` over one fresh
    /// gRPC channel and returns their mean round trip: what a call costs below the actor (the
    /// network, HTTP/2 and gRPC, both processes' async runtimes), without the call stream, the
    /// codec or the actor's dispatch. Every ping has a 5 s deadline.
    pub async fn ping_worker(&self, actor: &impl ActorHandle, count: u32) -> Result<Duration> {
        let info = self.actor_info(actor).await?;
        if info.worker_address.is_empty() {
            return Err(Error::Invalid {
                what: format!("actor {}", info.id),
                why: "it has no worker yet".to_string(),
            });
        }
        let channel = crate::rpc::connect(&info.worker_address, &self.client.token)
            .await
            .map_err(|why| Error::Invalid {
                what: format!("the worker of actor {}", info.id),
                why,
            })?;
        let mut worker = WorkerClient::new(channel);
        let context = || format!("pinging the worker of actor {}", info.id);
        let started = Instant::now();
        for _ in 0..count.max(1) {
            tokio::time::timeout(Duration::from_secs(5), worker.ping(troupe_proto::Empty {}))
                .await
                .map_err(|_| Error::Invalid {
                    what: context(),
                    why: "no answer within 5 s".to_string(),
                })?
                .map_err(|status| Error::rpc(context(), status))?;
        }
        Ok(started.elapsed() / count.max(1))
    }
}
