//! The head's state as records on disk, and back: after each change the head collects the
//! records that changed (actors, placement groups, scheduler holders, nodes, key-value entries,
//! jobs) as encoded bytes, skipping any whose bytes did not change; when the head starts on a
//! data directory that holds records, `restore` rebuilds the state from them. Times are kept as
//! wall-clock milliseconds and turned back into instants on restore.
//!
//! What a restore leaves to the live cluster: nodes are taken as alive until their first
//! heartbeat proves otherwise (or their timeout runs out); the first heartbeat of each node
//! settles which workers still run; owner sessions get a grace period to reconnect.

use super::{ActorRecord, HeadState, NodeRecord, Pending};
use crate::error::{Error, Result};
use crate::head::store::{Change, Snapshot, Table};
use crate::scheduler::{Allocation, Holder};
use prost::Message;
use std::collections::{BTreeMap, HashMap};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};
use troupe_proto::{
    ActorInfo, ActorState, CreateActorRequest, CreatePlacementGroupRequest, JobInfo, NodeResources,
    PlacementGroupInfo, PlacementGroupState,
};

#[derive(serde::Serialize, serde::Deserialize)]
struct StoredActor {
    /// `ActorInfo`, protobuf.
    info: Vec<u8>,
    /// `CreateActorRequest`, protobuf.
    spec: Vec<u8>,
    allocation: Option<Allocation>,
    seq: u64,
    failed_starts: u32,
    gang_bundle: Option<usize>,
    queued_at_unix_ms: Option<u64>,
}

#[derive(serde::Serialize, serde::Deserialize)]
struct StoredGroup {
    /// `PlacementGroupInfo`, protobuf.
    info: Vec<u8>,
    /// `CreatePlacementGroupRequest`, protobuf.
    spec: Vec<u8>,
    seq: u64,
    queued_at_unix_ms: u64,
    placed: Vec<Option<Allocation>>,
    tenants: BTreeMap<String, (usize, Allocation)>,
}

#[derive(serde::Serialize, serde::Deserialize)]
struct StoredNode {
    address: String,
    hostname: String,
    /// `NodeResources`, protobuf.
    resources: Vec<u8>,
    /// False once the node was declared dead (kept for status, never placed on).
    alive: bool,
}

/// What a restore found, for the head's log.
#[derive(Debug, Default, PartialEq)]
pub(crate) struct Restored {
    pub nodes: usize,
    pub actors: usize,
    pub live_actors: usize,
    pub groups: usize,
    pub kv_entries: usize,
    pub jobs: usize,
    pub sessions: usize,
}

/// Remembers what was last written for each record, so unchanged records are not written again.
#[derive(Default)]
pub(crate) struct WrittenRecords {
    hashes: HashMap<(Table, String), u64>,
}

fn hash_of(bytes: &[u8]) -> u64 {
    use std::hash::{Hash, Hasher};
    let mut hasher = std::collections::hash_map::DefaultHasher::new();
    bytes.hash(&mut hasher);
    hasher.finish()
}

impl WrittenRecords {
    /// Keeps `change` unless it writes the same bytes as last time.
    fn keep(&mut self, change: &Change) -> bool {
        let key = (change.table, change.key.clone());
        match &change.value {
            Some(bytes) => {
                let hash = hash_of(bytes);
                self.hashes.insert(key, hash) != Some(hash)
            }
            None => self.hashes.remove(&key).is_some(),
        }
    }
}

fn encode<T: serde::Serialize>(value: &T) -> Vec<u8> {
    // Encoding plain structs of strings, numbers and maps cannot fail.
    crate::codec::encode(value)
        .map(|bytes| bytes.to_vec())
        .unwrap_or_default()
}

fn unix_ms(at: Instant, now: Instant) -> u64 {
    let wall = SystemTime::now()
        .checked_sub(now.saturating_duration_since(at))
        .unwrap_or(UNIX_EPOCH);
    wall.duration_since(UNIX_EPOCH)
        .map(|elapsed| elapsed.as_millis() as u64)
        .unwrap_or(0)
}

/// The instant of a wall-clock time (`now` for times in the future, or before the monotonic
/// clock's start).
pub(crate) fn instant_of(unix_ms: u64, now: Instant) -> Instant {
    let wall = UNIX_EPOCH + Duration::from_millis(unix_ms);
    let ago = SystemTime::now().duration_since(wall).unwrap_or_default();
    now.checked_sub(ago).unwrap_or(now)
}

/// A record that does not decode: which one, and why.
fn unreadable(table: Table, key: &str, why: impl std::fmt::Display) -> Error {
    Error::Invalid {
        what: format!("head state record `{key}` in table `{}`", table.name()),
        why: format!(
            "it does not decode ({why}). It was written by another troupe version or damaged; \
             start the version that wrote it, or restore the data directory from a backup"
        ),
    }
}

fn decode_stored<T: serde::de::DeserializeOwned>(
    table: Table,
    key: &str,
    bytes: &[u8],
) -> Result<T> {
    crate::codec::decode(bytes).map_err(|err| unreadable(table, key, err))
}

fn decode_proto<T: Message + Default>(table: Table, key: &str, bytes: &[u8]) -> Result<T> {
    T::decode(bytes).map_err(|err| unreadable(table, key, err))
}

impl HeadState {
    /// The records changed since the last call, as the disk should have them (encoded, or
    /// `None` once removed); records whose bytes did not change are left out.
    pub fn take_changes(&mut self, now: Instant) -> Vec<Change> {
        let mut changes = Vec::new();
        for id in self.actors.take_changed() {
            let value = self.actors.get(&id).map(|actor| {
                encode(&StoredActor {
                    info: actor.info.encode_to_vec(),
                    spec: actor.spec.encode_to_vec(),
                    allocation: actor.allocation.clone(),
                    seq: actor.seq,
                    failed_starts: actor.failed_starts,
                    gang_bundle: actor.gang_bundle,
                    queued_at_unix_ms: actor.queued_at.map(|at| unix_ms(at, now)),
                })
            });
            changes.push(Change {
                table: Table::Actors,
                key: id,
                value,
            });
        }
        for id in self.groups.take_changed() {
            let value = self.groups.get(&id).map(|group| {
                encode(&StoredGroup {
                    info: group.info.encode_to_vec(),
                    spec: group.spec.encode_to_vec(),
                    seq: group.seq,
                    queued_at_unix_ms: unix_ms(group.queued_at, now),
                    placed: group.placed.clone(),
                    tenants: group.tenants.clone(),
                })
            });
            changes.push(Change {
                table: Table::Groups,
                key: id,
                value,
            });
        }
        for id in self.scheduler.take_changed_holders() {
            let value = self.scheduler.holder(&id).map(encode);
            changes.push(Change {
                table: Table::Holders,
                key: id,
                value,
            });
        }
        for id in self.nodes.take_changed() {
            let value = self.nodes.get(&id).map(|node| {
                encode(&StoredNode {
                    address: node.address.clone(),
                    hostname: node.hostname.clone(),
                    resources: node.resources.encode_to_vec(),
                    alive: node.alive,
                })
            });
            changes.push(Change {
                table: Table::Nodes,
                key: id,
                value,
            });
        }
        for key in self.kv.take_changed() {
            let value = self.kv.get(&key).map(|value| value.to_vec());
            changes.push(Change {
                table: Table::Kv,
                key,
                value,
            });
        }
        for id in std::mem::take(&mut self.dirty_jobs) {
            let value = self.jobs.get(&id).map(|job| job.info.encode_to_vec());
            changes.push(Change {
                table: Table::Jobs,
                key: id,
                value,
            });
        }
        changes.retain(|change| self.written.keep(change));
        changes
    }

    /// Rebuilds the state from the records of a previous head. Owner sessions of live work may
    /// reconnect within `session_grace`; nodes are expected to heartbeat within the node timeout.
    pub fn restore(
        &mut self,
        mut snapshot: Snapshot,
        session_grace: Duration,
        now: Instant,
    ) -> Result<Restored> {
        let mut restored = Restored::default();
        self.written = WrittenRecords::default();
        let mut rows = |table: Table| snapshot.remove(&table).unwrap_or_default();
        let (node_rows, holder_rows, group_rows, actor_rows, kv_rows, job_rows) = (
            rows(Table::Nodes),
            rows(Table::Holders),
            rows(Table::Groups),
            rows(Table::Actors),
            rows(Table::Kv),
            rows(Table::Jobs),
        );
        for (id, bytes) in &node_rows {
            let stored: StoredNode = decode_stored(Table::Nodes, id, bytes)?;
            let resources: NodeResources = decode_proto(Table::Nodes, id, &stored.resources)?;
            if stored.alive {
                self.scheduler.add_node(id, super::capacity_of(&resources));
                self.unconfirmed_after_restore
                    .insert(id.clone(), Vec::new());
                restored.nodes += 1;
            }
            self.nodes.restore(
                id.clone(),
                NodeRecord {
                    id: id.clone(),
                    address: stored.address,
                    hostname: stored.hostname,
                    resources,
                    alive: stored.alive,
                    last_heartbeat: now,
                },
            );
        }
        self.next_node = self.nodes.len() as u64;
        for (id, bytes) in &holder_rows {
            let holder: Holder = decode_stored(Table::Holders, id, bytes)?;
            self.scheduler.restore_holder(id, holder);
        }
        // Writing the restored holders back would only repeat them.
        self.scheduler.take_changed_holders();
        let mut next_seq = 0;
        let mut owners: Vec<String> = Vec::new();
        for (id, bytes) in &group_rows {
            let stored: StoredGroup = decode_stored(Table::Groups, id, bytes)?;
            let info: PlacementGroupInfo = decode_proto(Table::Groups, id, &stored.info)?;
            let spec: CreatePlacementGroupRequest = decode_proto(Table::Groups, id, &stored.spec)?;
            let strategy = crate::scheduler::Strategy::parse(&spec.strategy)
                .ok_or_else(|| unreadable(Table::Groups, id, "its strategy is unknown"))?;
            let bundles: Vec<_> = spec
                .bundles
                .iter()
                .map(|resources| super::groups::request_of_resources(resources.clone()))
                .collect();
            let waiting = matches!(
                info.state(),
                PlacementGroupState::PlacementGroupPending
                    | PlacementGroupState::PlacementGroupRescheduling
            );
            if waiting {
                self.pending
                    .push_with_seq(Pending::Group(id.clone()), spec.priority, stored.seq);
            }
            if info.state() != PlacementGroupState::PlacementGroupRemoved && !spec.detached {
                owners.push(spec.owner_session.clone());
            }
            next_seq = next_seq.max(stored.seq + 1);
            self.groups.restore(
                id.clone(),
                super::groups::GroupRecord {
                    info,
                    spec,
                    bundles,
                    strategy,
                    seq: stored.seq,
                    queued_at: instant_of(stored.queued_at_unix_ms, now),
                    placed: stored.placed,
                    tenants: stored.tenants,
                },
            );
            restored.groups += 1;
        }
        for (id, bytes) in &actor_rows {
            let stored: StoredActor = decode_stored(Table::Actors, id, bytes)?;
            let info: ActorInfo = decode_proto(Table::Actors, id, &stored.info)?;
            let spec: CreateActorRequest = decode_proto(Table::Actors, id, &stored.spec)?;
            let state = info.state();
            if matches!(state, ActorState::Pending | ActorState::Restarting) {
                self.pending
                    .push_with_seq(Pending::Actor(id.clone()), spec.priority, stored.seq);
            }
            if !spec.spawn_id.is_empty() {
                self.spawns.insert(spec.spawn_id.clone(), id.clone());
            }
            if state != ActorState::Dead {
                restored.live_actors += 1;
                if !info.name.is_empty() {
                    self.names.insert(info.name.clone(), id.clone());
                }
                if !spec.detached {
                    owners.push(spec.owner_session.clone());
                }
            }
            if matches!(state, ActorState::Alive | ActorState::Starting) {
                if let Some(workers) = self.unconfirmed_after_restore.get_mut(&info.node_id) {
                    workers.push((id.clone(), info.incarnation));
                }
            }
            next_seq = next_seq.max(stored.seq + 1);
            self.actors.restore(
                id.clone(),
                ActorRecord {
                    alive_since: (state == ActorState::Alive).then_some(now),
                    info,
                    spec,
                    allocation: stored.allocation,
                    queued_at: stored.queued_at_unix_ms.map(|ms| instant_of(ms, now)),
                    failed_starts: stored.failed_starts,
                    not_before: None,
                    seq: stored.seq,
                    gang_bundle: stored.gang_bundle,
                    draining_until: None,
                },
            );
            restored.actors += 1;
        }
        self.pending.advance_seq(next_seq);
        for (key, value) in &kv_rows {
            self.written.keep(&Change {
                table: Table::Kv,
                key: key.clone(),
                value: Some(value.clone()),
            });
            self.kv
                .restore(key.clone(), bytes::Bytes::from(value.clone()));
            restored.kv_entries += 1;
        }
        let mut jobs = Vec::with_capacity(job_rows.len());
        for (id, bytes) in &job_rows {
            jobs.push(decode_proto::<JobInfo>(Table::Jobs, id, bytes)?);
        }
        restored.jobs = jobs.len();
        self.restore_jobs(jobs, now);
        if restored != Restored::default() {
            self.session_grace_until = Some(now + session_grace);
        }
        owners.sort();
        owners.dedup();
        owners.retain(|owner| !owner.is_empty());
        for owner in owners {
            self.sessions.insert(owner.clone());
            self.reconnecting_sessions
                .insert(owner, now + session_grace);
            restored.sessions += 1;
        }
        // What was read is what the disk has: only later changes are written.
        for (table, rows) in [
            (Table::Nodes, &node_rows),
            (Table::Holders, &holder_rows),
            (Table::Groups, &group_rows),
            (Table::Actors, &actor_rows),
            (Table::Jobs, &job_rows),
        ] {
            for (key, bytes) in rows {
                self.written.keep(&Change {
                    table,
                    key: key.clone(),
                    value: Some(bytes.clone()),
                });
            }
        }
        Ok(restored)
    }

    /// Owner sessions restored from disk whose driver or worker did not reconnect in time end
    /// now, as if their stream had closed.
    pub fn expire_sessions(&mut self, now: Instant) -> Vec<super::Order> {
        let expired: Vec<String> = self
            .reconnecting_sessions
            .iter()
            .filter(|(_, deadline)| **deadline <= now)
            .map(|(session, _)| session.clone())
            .collect();
        let mut orders = Vec::new();
        for session in expired {
            self.reconnecting_sessions.remove(&session);
            tracing::warn!(
                session,
                "owner session did not reconnect after the head restarted: stopping its actors"
            );
            orders.extend(self.session_closed(&session));
        }
        orders
    }

    /// Whether a restored session's grace period ran out.
    pub fn sessions_expired(&self, now: Instant) -> bool {
        self.reconnecting_sessions
            .values()
            .any(|deadline| *deadline <= now)
    }
}
