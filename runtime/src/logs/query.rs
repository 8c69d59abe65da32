//! Reading an actor's logs through the head: which incarnations (`LogSelection`), the last N
//! lines (`tail`), lines from a time on (`since_unix_ms`), and following the log as it grows and
//! across restarts (`LogFollower`). Used by `Cluster::logs` and `troupe logs`.

use super::{parse_records, IncarnationLog, LogLine};
use crate::rpc::AuthChannel;
use std::time::Duration;
use tonic::Status;
use troupe_proto::actors_client::ActorsClient;
use troupe_proto::{ActorLogChunk, ActorState, Incarnation, ReadActorLogRequest};

/// Most bytes read of one incarnation's log (its last bytes, when it is longer).
const MAX_READ_PER_INCARNATION: u64 = 64 << 20;
/// Most bytes one `read` takes over all incarnations (the newest first).
const MAX_READ_TOTAL: u64 = 256 << 20;
/// How long after an incarnation's recorded end its last lines may still be stamped.
const ENDED_SLACK_MS: u64 = 30_000;
/// One read's size.
const READ_BYTES: u64 = 1 << 20;
/// How long one request to the head may take.
const REQUEST_DEADLINE: Duration = Duration::from_secs(20);

/// Which incarnations to read.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum LogSelection {
    /// Every incarnation the head still knows, oldest first.
    #[default]
    All,
    /// The latest only.
    Latest,
    Only(u64),
}

/// What to read of an actor's logs.
#[derive(Debug, Clone, Default)]
pub struct LogQuery {
    pub incarnations: LogSelection,
    /// Only the last this many lines (over the incarnations read).
    pub tail: Option<usize>,
    /// Only lines written at or after this time (milliseconds since the Unix epoch).
    pub since_unix_ms: Option<u64>,
}

/// The actor to read: by id, by name, or either (an id when one matches, else a name).
#[derive(Debug, Clone)]
pub enum ActorKey {
    Id(String),
    Name(String),
    Either(String),
}

impl ActorKey {
    fn request(&self) -> ReadActorLogRequest {
        let mut request = ReadActorLogRequest::default();
        match self {
            ActorKey::Id(id) => request.id = id.clone(),
            ActorKey::Name(name) | ActorKey::Either(name) => request.name = name.clone(),
        }
        request
    }
}

/// Whether `text` has the shape of the ids a head gives actors (`actor-` and 12 hex digits).
pub(super) fn looks_like_id(text: &str) -> bool {
    text.strip_prefix("actor-")
        .is_some_and(|hex| hex.len() == 12 && hex.chars().all(|c| c.is_ascii_hexdigit()))
}

async fn ask(
    actors: &mut ActorsClient<AuthChannel>,
    request: ReadActorLogRequest,
) -> Result<ActorLogChunk, Status> {
    match tokio::time::timeout(REQUEST_DEADLINE, actors.read_actor_log(request)).await {
        Ok(reply) => reply.map(|reply| reply.into_inner()),
        Err(_) => Err(Status::deadline_exceeded(format!(
            "the head did not answer within {} s",
            REQUEST_DEADLINE.as_secs()
        ))),
    }
}

/// The actor's id, name, state and incarnations, without reading any log.
pub async fn describe(
    actors: &mut ActorsClient<AuthChannel>,
    key: &ActorKey,
) -> Result<ActorLogChunk, Status> {
    if let ActorKey::Either(text) = key {
        if looks_like_id(text) {
            let by_id = ActorKey::Id(text.clone());
            match Box::pin(describe(actors, &by_id)).await {
                Err(status) if status.code() == tonic::Code::NotFound => {}
                found => return found,
            }
        }
    }
    let mut request = key.request();
    request.list_only = true;
    ask(actors, request).await
}

/// Reads the actor's logs as `query` says.
pub async fn read(
    actors: &mut ActorsClient<AuthChannel>,
    key: &ActorKey,
    query: &LogQuery,
) -> Result<Vec<IncarnationLog>, Status> {
    let described = describe(actors, key).await?;
    let chosen: Vec<Incarnation> = match query.incarnations {
        LogSelection::All => described.incarnations.clone(),
        LogSelection::Latest => described.incarnations.last().cloned().into_iter().collect(),
        LogSelection::Only(n) => {
            let found: Vec<Incarnation> = described
                .incarnations
                .iter()
                .filter(|i| i.incarnation == n)
                .cloned()
                .collect();
            if found.is_empty() {
                let known: Vec<String> = described
                    .incarnations
                    .iter()
                    .map(|i| i.incarnation.to_string())
                    .collect();
                return Err(Status::not_found(format!(
                    "actor {} has no incarnation {n} the head still knows (known: {})",
                    described.actor_id,
                    if known.is_empty() {
                        "none".to_string()
                    } else {
                        known.join(", ")
                    }
                )));
            }
            found
        }
    };
    let id = ActorKey::Id(described.actor_id.clone());
    let mut logs = Vec::with_capacity(chosen.len());
    let mut wanted = query.tail;
    let mut budget = MAX_READ_TOTAL;
    // Newest first, so that a tail stops reading once it has its lines.
    for incarnation in chosen.iter().rev() {
        let mut log = IncarnationLog {
            actor_id: described.actor_id.clone(),
            incarnation: incarnation.incarnation,
            node_id: incarnation.node_id.clone(),
            started_unix_ms: incarnation.started_unix_ms,
            ended_unix_ms: incarnation.ended_unix_ms,
            exit_reason: incarnation.exit_reason.clone(),
            lines: Vec::new(),
            unreadable: None,
            // Unread: a follower starts at its end (the node clamps the offset to the size).
            next_offset: u64::MAX,
        };
        if wanted == Some(0) && !logs.is_empty() {
            break;
        }
        // Lines reach the log up to a few seconds after the head records the end (grace
        // periods, the output drain): only incarnations that ended well before are skipped.
        let ended_before = query.since_unix_ms.is_some_and(|since| {
            incarnation.ended_unix_ms != 0
                && incarnation.ended_unix_ms.saturating_add(ENDED_SLACK_MS) < since
        });
        if ended_before {
            logs.push(log);
            continue;
        }
        if budget == 0 {
            log.unreadable = Some(format!(
                "not read: this read's {} MiB went to newer incarnations (ask for this one alone)",
                MAX_READ_TOTAL >> 20
            ));
            logs.push(log);
            continue;
        }
        match read_incarnation(actors, &id, incarnation.incarnation, wanted, budget).await {
            Ok((mut lines, next_offset, bytes)) => {
                log.next_offset = next_offset;
                budget = budget.saturating_sub(bytes);
                if let Some(since) = query.since_unix_ms {
                    lines.retain(|line| line.unix_ms >= since);
                }
                if let Some(left) = wanted.as_mut() {
                    let keep = lines.len().min(*left);
                    lines.drain(..lines.len() - keep);
                    *left -= keep;
                }
                log.lines = lines;
            }
            Err(status) if unreadable(&status) => {
                log.unreadable = Some(status.message().to_string());
            }
            Err(status) => return Err(status),
        }
        logs.push(log);
    }
    logs.reverse();
    Ok(logs)
}

/// Whether a failed read means this incarnation's log cannot be had (its node is dead, gone or
/// not answering, or the log is missing), rather than that the whole read must fail.
fn unreadable(status: &Status) -> bool {
    matches!(
        status.code(),
        tonic::Code::Unavailable | tonic::Code::NotFound | tonic::Code::DeadlineExceeded
    )
}

/// One incarnation's lines: all of them (up to `MAX_READ_PER_INCARNATION`, and `budget`, from
/// the end), or the last `tail`; with where the read ended and how many bytes it took.
async fn read_incarnation(
    actors: &mut ActorsClient<AuthChannel>,
    key: &ActorKey,
    incarnation: u64,
    tail: Option<usize>,
    budget: u64,
) -> Result<(Vec<LogLine>, u64, u64), Status> {
    let most = MAX_READ_PER_INCARNATION.min(budget);
    let mut window = match tail {
        Some(lines) => (lines as u64)
            .saturating_add(1)
            .saturating_mul(256)
            .clamp(4096, READ_BYTES)
            .min(most),
        None => most,
    };
    loop {
        let mut request = key.request();
        request.incarnation = incarnation;
        request.from_end = true;
        request.offset = window;
        request.max_bytes = READ_BYTES;
        let first = ask(actors, request).await?;
        let chunk = first.chunk.unwrap_or_default();
        let mut data = chunk.data.to_vec();
        let mut next = chunk.next_offset;
        // Up to the size at the first read: a log that grows meanwhile is not chased.
        let end = chunk.size;
        while next < end && (data.len() as u64) < most {
            let mut request = key.request();
            request.incarnation = incarnation;
            request.offset = next;
            request.max_bytes = READ_BYTES.min(end - next);
            let more = ask(actors, request).await?.chunk.unwrap_or_default();
            if more.data.is_empty() {
                break;
            }
            next = more.next_offset;
            data.extend_from_slice(&more.data);
        }
        let from_start = chunk.offset == 0;
        // A read that started mid-file drops its first, cut line.
        let skipped = if from_start {
            0
        } else {
            data.iter()
                .position(|byte| *byte == b'\n')
                .map_or(data.len(), |cut| cut + 1)
        };
        // Every record ends with its line end: a read that stopped inside one leaves that
        // record to the next read (`next_offset` is the end of the last whole record).
        let (lines, used) = parse_records(&data[skipped..], false);
        let enough = tail.is_none_or(|wanted| lines.len() >= wanted);
        if enough || from_start || window >= most {
            let read_to = chunk.offset + (skipped + used) as u64;
            return Ok((lines, read_to, data.len() as u64));
        }
        window = window.saturating_mul(4).min(most);
    }
}

/// What following a log found.
#[derive(Debug, Clone)]
pub enum FollowEvent {
    /// New lines of an incarnation.
    Lines {
        incarnation: u64,
        lines: Vec<LogLine>,
    },
    /// A later incarnation started (the actor restarted).
    Restarted(Incarnation),
    /// The actor is dead and its last log is read to the end.
    Dead { reason: String },
    /// Nothing new yet.
    Idle,
}

/// Follows an actor's log: the latest incarnation from where the last read ended, moving on to
/// each new incarnation as the actor restarts.
pub struct LogFollower {
    key: ActorKey,
    incarnation: u64,
    offset: u64,
    /// Bytes of a last line not yet ended.
    partial: Vec<u8>,
}

impl LogFollower {
    /// Follows on from where `read` ended: the last incarnation it returned, from its
    /// `next_offset` (so nothing written meanwhile is lost), or from the first incarnation when
    /// there was none yet.
    pub fn after(logs: &[IncarnationLog], actor_id: &str) -> LogFollower {
        let (incarnation, offset) = logs
            .last()
            .map_or((0, 0), |log| (log.incarnation, log.next_offset));
        LogFollower {
            key: ActorKey::Id(actor_id.to_string()),
            incarnation,
            offset,
            partial: Vec::new(),
        }
    }

    /// Follows from the end of the latest incarnation's log as it is now.
    pub async fn start(
        actors: &mut ActorsClient<AuthChannel>,
        key: &ActorKey,
    ) -> Result<LogFollower, Status> {
        let described = describe(actors, key).await?;
        let id = ActorKey::Id(described.actor_id.clone());
        let (incarnation, offset) = match described.incarnations.last() {
            None => (0, 0),
            Some(latest) => {
                let mut request = id.request();
                request.incarnation = latest.incarnation;
                request.from_end = true;
                request.offset = 0;
                let size = match ask(actors, request).await {
                    Ok(reply) => reply.chunk.map(|c| c.size).unwrap_or(0),
                    Err(_) => 0,
                };
                (latest.incarnation, size)
            }
        };
        Ok(LogFollower {
            key: id,
            incarnation,
            offset,
            partial: Vec::new(),
        })
    }

    /// The next thing that happened (call it again after a short sleep on `Idle`).
    pub async fn next(
        &mut self,
        actors: &mut ActorsClient<AuthChannel>,
    ) -> Result<FollowEvent, Status> {
        let described = describe(actors, &self.key).await?;
        if self.incarnation > 0 {
            let mut request = self.key.request();
            request.incarnation = self.incarnation;
            request.offset = self.offset;
            request.max_bytes = READ_BYTES;
            match ask(actors, request).await {
                Ok(reply) => {
                    let chunk = reply.chunk.unwrap_or_default();
                    // Also when empty: an offset past the end comes back as the end.
                    self.offset = chunk.next_offset;
                    if !chunk.data.is_empty() {
                        self.partial.extend_from_slice(&chunk.data);
                        let (lines, used) = parse_records(&self.partial, false);
                        self.partial.drain(..used);
                        if !lines.is_empty() {
                            return Ok(FollowEvent::Lines {
                                incarnation: self.incarnation,
                                lines,
                            });
                        }
                        return Ok(FollowEvent::Idle);
                    }
                }
                // A slow node: ask again next time rather than leave lines unread.
                Err(status) if status.code() == tonic::Code::DeadlineExceeded => {
                    return Ok(FollowEvent::Idle);
                }
                // The node of an ended incarnation may be gone: move on.
                Err(status) if unreadable(&status) => {}
                Err(status) => return Err(status),
            }
        }
        if let Some(later) = described
            .incarnations
            .iter()
            .find(|i| i.incarnation > self.incarnation)
        {
            if !self.partial.is_empty() {
                let (lines, _) = parse_records(&std::mem::take(&mut self.partial), true);
                return Ok(FollowEvent::Lines {
                    incarnation: self.incarnation,
                    lines,
                });
            }
            self.incarnation = later.incarnation;
            self.offset = 0;
            return Ok(FollowEvent::Restarted(later.clone()));
        }
        if described.actor_state() == ActorState::Dead {
            if !self.partial.is_empty() {
                let (lines, _) = parse_records(&std::mem::take(&mut self.partial), true);
                return Ok(FollowEvent::Lines {
                    incarnation: self.incarnation,
                    lines,
                });
            }
            let reason = described
                .incarnations
                .last()
                .map(|i| i.exit_reason.clone())
                .unwrap_or_default();
            return Ok(FollowEvent::Dead { reason });
        }
        Ok(FollowEvent::Idle)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_have_the_heads_shape() {
        assert!(looks_like_id("actor-0123456789ab"));
        assert!(!looks_like_id("actor-0123456789"));
        assert!(!looks_like_id("trainer-0"));
        assert!(!looks_like_id("actor-0123456789xy"));
    }
}
