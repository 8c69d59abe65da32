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

impl Cluster {
    /// An actor's stdout and stderr, one entry per incarnation (each with the node it ran on and
    /// how it ended), read through the head from the node agents that ran them. `actor` is an id
    /// or a name (a name finds the live actor of that name, else the latest dead one). An
    /// incarnation whose node died or left is returned with `unreadable` saying so.
    pub async fn logs(
        &self,
        actor: &str,
        query: &crate::logs::LogQuery,
    ) -> Result<Vec<crate::logs::IncarnationLog>> {
        let mut actors = self.client.actors.clone();
        let key = crate::logs::ActorKey::Either(actor.to_string());
        crate::logs::read(&mut actors, &key, query)
            .await
            .map_err(|status| Error::rpc(format!("reading the logs of actor `{actor}`"), status))
    }
}

impl Cluster {
    /// What the live actor `actor` (an id or a name) is doing now: its calls in flight (method,
    /// caller, step, elapsed time), its queue, and, with `backtraces`, each thread's native
    /// stack.
    pub async fn calls(&self, actor: &str, backtraces: bool) -> Result<crate::logs::ActorActivity> {
        let mut actors = self.client.actors.clone();
        crate::logs::inspect(&mut actors, &self.client.token, actor, backtraces)
            .await
            .map_err(|status| {
                Error::rpc(format!("asking actor `{actor}` what it is doing"), status)
            })
    }

    /// The timeline of this driver's pipeline stages and of the calls every live actor served,
    /// between `since` and `until` (microseconds since the Unix epoch; 0: unbounded).
    /// `timeline::chrome::to_chrome_trace` turns it into a trace Perfetto opens.
    pub async fn timeline(
        &self,
        since_unix_us: u64,
        until_unix_us: u64,
    ) -> Result<crate::timeline::Timeline> {
        let mut actors = self.client.actors.clone();
        let mut cluster = self.client.cluster.clone();
        crate::timeline::gather(
            &mut actors,
            &mut cluster,
            &self.client.token,
            since_unix_us,
            until_unix_us,
            Some(&self.client.session_id),
        )
        .await
        .map_err(|status| Error::rpc("gathering the timeline", status))
    }

    /// Writes the timeline from `since_unix_us` on (0: all the live processes hold) as Chrome
    /// trace JSON to `path` and returns how many spans it holds.
    pub async fn write_timeline(
        &self,
        path: &std::path::Path,
        since_unix_us: u64,
    ) -> Result<usize> {
        let timeline = self.timeline(since_unix_us, 0).await?;
        let trace = crate::timeline::chrome::to_chrome_trace(&timeline);
        let text = serde_json::to_vec(&trace).map_err(|err| Error::Invalid {
            what: "timeline".to_string(),
            why: err.to_string(),
        })?;
        std::fs::write(path, text)
            .map_err(|err| Error::io(format!("writing {}", path.display()), err))?;
        Ok(timeline.spans.len())
    }
}
