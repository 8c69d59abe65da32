//! Gathering a timeline: this process's spans (a driver's stages) and those of every live
//! worker (its served calls), asked for concurrently with a deadline each; a worker that does
//! not answer is listed, not waited for.

use super::{recorder, Recorded, SpanKind, StepTag};
use crate::rpc::{AuthChannel, Token};
use futures::StreamExt;
use std::time::Duration;
use troupe_proto::actors_client::ActorsClient;
use troupe_proto::cluster_client::ClusterClient;
use troupe_proto::worker_client::WorkerClient;
use troupe_proto::{ActorState, Empty, Span, TimelineRequest};

/// How long one worker has to send its spans.
const WORKER_DEADLINE: Duration = Duration::from_secs(10);
/// Workers asked at once.
const CONCURRENT_ASKS: usize = 16;

/// One span of a gathered timeline.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct TimelineSpan {
    pub kind: SpanKind,
    /// The method, or the stage.
    pub name: String,
    /// The actor that served the call (empty for a driver's stage).
    pub actor_id: String,
    pub actor_name: String,
    pub incarnation: u64,
    /// The node it ran on (`driver` for a driver's spans).
    pub node_id: String,
    pub start_unix_us: u64,
    pub duration_us: u64,
    pub step: Option<u64>,
    pub weight_version: Option<u64>,
    pub bytes_in: u64,
    pub bytes_out: u64,
    pub caller: String,
    pub failed: bool,
    /// A stage's group.
    pub group: String,
}

impl serde::Serialize for super::SpanKind {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(self.as_str())
    }
}

/// A gathered timeline.
#[derive(Debug, Clone, Default)]
pub struct Timeline {
    /// Oldest first.
    pub spans: Vec<TimelineSpan>,
    /// Spans the processes' rings dropped (they keep the latest `CAPACITY` each).
    pub dropped: u64,
    /// Live actors asked.
    pub actors_asked: usize,
    /// Actors that could not be asked, each with why.
    pub unreachable: Vec<String>,
}

/// Gathers spans overlapping `[since, until]` (microseconds since the Unix epoch; 0:
/// unbounded) from this process (`driver`), the stages and syncs other drivers reported to the
/// head, and every live worker of the cluster. `own_session` is this process's driver session,
/// if it is one: its spans come from its own ring, not from the head's copy.
pub async fn gather(
    actors: &mut ActorsClient<AuthChannel>,
    cluster: &mut ClusterClient<AuthChannel>,
    token: &Token,
    since_unix_us: u64,
    until_unix_us: u64,
    own_session: Option<&str>,
) -> Result<Timeline, tonic::Status> {
    let listed = tokio::time::timeout(WORKER_DEADLINE, actors.list_actors(Empty {}))
        .await
        .map_err(|_| tonic::Status::deadline_exceeded("the head did not list its actors in time"))??
        .into_inner()
        .actors;
    let live: Vec<_> = listed
        .into_iter()
        .filter(|info| info.state() == ActorState::Alive && !info.worker_address.is_empty())
        .collect();
    let mut timeline = Timeline {
        actors_asked: live.len(),
        ..Timeline::default()
    };
    let (own, dropped) = recorder().between(since_unix_us, until_unix_us);
    timeline.dropped += dropped;
    timeline.spans.extend(
        own.into_iter()
            .map(|span| from_recorded(span, "", "", 0, "driver")),
    );
    let request = TimelineRequest {
        since_unix_us,
        until_unix_us,
    };
    match tokio::time::timeout(WORKER_DEADLINE, cluster.driver_timeline(request)).await {
        Ok(Ok(reply)) => timeline.spans.extend(
            reply
                .into_inner()
                .spans
                .into_iter()
                .filter(|span| Some(span.caller.as_str()) != own_session)
                .filter_map(|mut span| {
                    span.node_id = format!("driver {}", span.caller);
                    from_wire(span, "")
                }),
        ),
        Ok(Err(status)) => timeline.unreachable.push(format!(
            "the head's copy of the drivers' stages: {}",
            status.message()
        )),
        Err(_) => timeline.unreachable.push(format!(
            "the head's copy of the drivers' stages: no answer within {} s",
            WORKER_DEADLINE.as_secs()
        )),
    }
    let answers: Vec<_> = futures::stream::iter(live)
        .map(|info| {
            let token = token.clone();
            async move {
                let asked = async {
                    let channel = crate::rpc::connect(&info.worker_address, &token).await?;
                    let mut worker = WorkerClient::new(channel)
                        .max_decoding_message_size(crate::rpc::MAX_MESSAGE_BYTES);
                    worker
                        .timeline(request)
                        .await
                        .map(|reply| reply.into_inner())
                        .map_err(|status| status.message().to_string())
                };
                let reply = match tokio::time::timeout(WORKER_DEADLINE, asked).await {
                    Ok(reply) => reply,
                    Err(_) => Err(format!("no answer within {} s", WORKER_DEADLINE.as_secs())),
                };
                (info, reply)
            }
        })
        .buffer_unordered(CONCURRENT_ASKS)
        .collect()
        .await;
    for (info, reply) in answers {
        match reply {
            Ok(reply) => {
                timeline.dropped += reply.dropped;
                timeline.spans.extend(
                    reply
                        .spans
                        .into_iter()
                        .filter_map(|span| from_wire(span, &info.name)),
                );
            }
            Err(why) => timeline.unreachable.push(format!(
                "{} ({}) on {}: {why}",
                if info.name.is_empty() {
                    &info.id
                } else {
                    &info.name
                },
                info.id,
                info.node_id
            )),
        }
    }
    timeline
        .spans
        .sort_by_key(|span| (span.start_unix_us, span.duration_us));
    Ok(timeline)
}

fn from_recorded(
    span: Recorded,
    actor_id: &str,
    actor_name: &str,
    incarnation: u64,
    node_id: &str,
) -> TimelineSpan {
    TimelineSpan {
        kind: span.kind,
        name: span.name.to_string(),
        actor_id: actor_id.to_string(),
        actor_name: actor_name.to_string(),
        incarnation,
        node_id: node_id.to_string(),
        start_unix_us: span.start_unix_us,
        duration_us: span.duration_us,
        step: span.tag.step,
        weight_version: span.tag.weight_version,
        bytes_in: span.bytes_in,
        bytes_out: span.bytes_out,
        caller: span.caller.to_string(),
        failed: span.failed,
        group: span.group.map(|g| g.to_string()).unwrap_or_default(),
    }
}

/// A worker's span; one of a kind this build does not know is skipped.
fn from_wire(span: Span, actor_name: &str) -> Option<TimelineSpan> {
    Some(TimelineSpan {
        kind: SpanKind::parse(&span.kind)?,
        name: span.name,
        actor_id: span.actor_id,
        actor_name: actor_name.to_string(),
        incarnation: span.incarnation,
        node_id: span.node_id,
        start_unix_us: span.start_unix_us,
        duration_us: span.duration_us,
        step: span.step,
        weight_version: span.weight_version,
        bytes_in: span.bytes_in,
        bytes_out: span.bytes_out,
        caller: span.caller,
        failed: span.failed,
        group: span.group,
    })
}

/// A worker's spans on the wire, with its actor, incarnation and node.
pub(crate) fn to_wire(
    spans: Vec<Recorded>,
    actor_id: &str,
    incarnation: u64,
    node_id: &str,
) -> Vec<Span> {
    spans
        .into_iter()
        .map(|span| {
            let StepTag {
                step,
                weight_version,
            } = span.tag;
            Span {
                kind: span.kind.as_str().to_string(),
                name: span.name.to_string(),
                actor_id: actor_id.to_string(),
                node_id: node_id.to_string(),
                start_unix_us: span.start_unix_us,
                duration_us: span.duration_us,
                step,
                weight_version,
                bytes_in: span.bytes_in,
                bytes_out: span.bytes_out,
                caller: span.caller.to_string(),
                failed: span.failed,
                group: span.group.map(|g| g.to_string()).unwrap_or_default(),
                incarnation,
            }
        })
        .collect()
}
