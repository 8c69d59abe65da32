//! The head's state machine: nodes, actors, names, the pending queue, driver sessions and jobs,
//! and the transitions between actor states (`actors.rs`), node states (`nodes.rs`) and job
//! states (`jobs.rs`). Every transition
//! returns the orders (start or stop a worker) that the head must then send to node agents, so
//! that no gRPC call is ever made while the state lock is held.

mod actors;
mod demand;
mod durable;
mod groups;
mod histogram;
mod history;
mod job_recovery;
mod jobs;
mod nodes;
mod placement;
mod preemption;
mod tracked;

pub(crate) use durable::{instant_of, Restored};
pub(crate) use jobs::JobExit;
use tracked::Tracked;

use crate::scheduler::{Allocation, GpuDevice, NodeCapacity, PendingQueue, Request, Scheduler};
use histogram::Histogram;
use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet, VecDeque};
use std::time::Instant;
use troupe_proto::{
    ActorInfo, ActorState, CreateActorRequest, NodeResources, StartJobRequest, StartWorkerRequest,
    StopJobOrder,
};

/// An order for a node agent, carried out after the state lock is released.
#[derive(Debug, Clone)]
pub(crate) enum Order {
    Start {
        node_address: String,
        request: StartWorkerRequest,
    },
    Stop {
        node_address: String,
        actor_id: String,
        incarnation: u64,
        /// How long the worker may take to exit before it is killed (0: at once).
        grace_ms: u64,
    },
    StartJob {
        node_address: String,
        request: StartJobRequest,
    },
    StopJob {
        node_address: String,
        order: StopJobOrder,
    },
}

pub(crate) struct NodeRecord {
    pub id: String,
    pub address: String,
    pub hostname: String,
    pub resources: NodeResources,
    pub alive: bool,
    pub last_heartbeat: Instant,
}

pub(crate) struct ActorRecord {
    pub info: ActorInfo,
    pub spec: CreateActorRequest,
    pub allocation: Option<Allocation>,
    /// When it started waiting for placement (for the scheduling-latency metric).
    pub queued_at: Option<Instant>,
    /// When the current incarnation reported ready.
    pub alive_since: Option<Instant>,
    /// Consecutive incarnations that died before ever becoming ready.
    pub failed_starts: u32,
    /// A crash-looping actor is not placed again before this.
    pub not_before: Option<Instant>,
    /// Its place in the pending queue's arrival order (kept when it is queued again).
    pub seq: u64,
    /// Its bundle in its gang's scheduler holder, once the gang is placed.
    pub gang_bundle: Option<usize>,
    /// A preempted worker may still be stopping until then; heartbeats do not kill it early.
    pub draining_until: Option<Instant>,
}

/// An entry of the pending queue.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub(crate) enum Pending {
    Actor(String),
    Group(String),
}

/// How a worker went away, as `worker_failed` needs it.
pub(crate) struct Failure {
    pub reason: String,
    /// Also order the node to kill the process (it may still run).
    pub stop_worker: bool,
    /// No restart, whatever `max_restarts` says.
    pub fatal: bool,
}

impl Failure {
    /// A worker that exited or whose node died: restart per `max_restarts`.
    pub fn exited(reason: impl Into<String>) -> Self {
        Failure {
            reason: reason.into(),
            stop_worker: false,
            fatal: false,
        }
    }
}

/// Counters exported as metrics.
#[derive(Default)]
pub(crate) struct Counters {
    pub restarts_total: u64,
    pub actors_created_total: u64,
    pub calls_total: u64,
    pub preemptions_total: u64,
    /// Actor lookups served (GetActor): the control-plane load that calls cause.
    pub lookups_total: u64,
    pub scheduling_latency: Histogram,
}

#[derive(Default)]
pub(crate) struct HeadState {
    pub nodes: Tracked<BTreeMap<String, NodeRecord>>,
    pub scheduler: Scheduler,
    pub actors: Tracked<HashMap<String, ActorRecord>>,
    pub names: HashMap<String, String>,
    /// Actors and placement groups waiting for resources, by priority then age.
    pub pending: PendingQueue<Pending>,
    /// Placement groups by id (removed ones stay, as REMOVED).
    pub groups: Tracked<BTreeMap<String, groups::GroupRecord>>,
    /// Groups placed so far (a scheduling pass runs again when one was placed during it).
    pub groups_placed: u64,
    /// The scheduler's clock starts here.
    pub epoch: Option<Instant>,
    /// With an autoscaler: one empty node of each node type it may launch (up to 64 of each),
    /// so that work no node has room for yet, but a launched one would, is accepted.
    pub node_type_probe: Option<crate::scheduler::Scheduler>,
    /// Launch ids of nodes the autoscaler stopped (not kept on disk): an agent of one that
    /// registers again gets no work, and the autoscaler never takes it back.
    pub retired_launches: std::collections::HashSet<String>,
    /// Starts of preempting actors waiting for their victims' workers to exit.
    pub deferred_starts: Vec<preemption::DeferredStart>,
    /// Driver (and worker) sessions whose stream is open (or, after a restart, that may still
    /// reconnect).
    pub sessions: HashSet<String>,
    /// Sessions restored from disk that have not reconnected yet, with their deadline.
    pub reconnecting_sessions: HashMap<String, Instant>,
    /// Until then (after a restart), work from an owner session the head has not heard of yet
    /// is taken, and the session is given until then to open its stream.
    pub session_grace_until: Option<Instant>,
    /// Spawns by their caller-chosen id, so a request sent again gets the same actor.
    pub spawns: HashMap<String, String>,
    /// After a restart, per node not heard from since: the workers (actor, incarnation) it ran
    /// by the records. Its first heartbeat settles them: those it does not list are gone.
    pub unconfirmed_after_restore: HashMap<String, Vec<(String, u64)>>,
    /// The rendezvous key-value store.
    pub kv: Tracked<HashMap<String, bytes::Bytes>>,
    pub counters: Counters,
    /// Jobs by submission id, and those waiting for a node, oldest first.
    pub jobs: BTreeMap<String, jobs::JobRecord>,
    pub pending_jobs: VecDeque<String>,
    /// Jobs changed (or deleted) since the head last wrote them to disk.
    pub dirty_jobs: BTreeSet<String>,
    /// Dead actors kept at most (`DEFAULT_DEAD_ACTOR_HISTORY` when None).
    pub dead_actor_history: Option<usize>,
    /// What the disk has for each record (so unchanged records are not written again).
    written: durable::WrittenRecords,
    next_node: u64,
}

/// Dead actors a head keeps unless configured otherwise.
pub const DEFAULT_DEAD_ACTOR_HISTORY: usize = 1000;

fn short_id(prefix: &str) -> String {
    let uuid = uuid::Uuid::new_v4().simple().to_string();
    format!("{prefix}-{}", &uuid[..12])
}

pub(crate) fn capacity_of(resources: &NodeResources) -> NodeCapacity {
    let mut labels: BTreeMap<String, String> = resources.labels.clone().into_iter().collect();
    if let Some(gpu) = resources.gpus.first() {
        if !gpu.model.is_empty() {
            labels
                .entry("gpu-model".to_string())
                .or_insert_with(|| gpu.model.clone());
        }
    }
    NodeCapacity {
        cpu_milli: resources.cpu_milli,
        memory_bytes: resources.memory_bytes,
        gpus: resources
            .gpus
            .iter()
            .map(|gpu| GpuDevice {
                index: gpu.index,
                model: gpu.model.clone(),
            })
            .collect(),
        custom: resources.custom.clone().into_iter().collect(),
        labels,
    }
}

fn request_of(spec: &CreateActorRequest) -> Request {
    groups::request_of_resources(spec.resources.clone().unwrap_or_default())
}

#[cfg(test)]
mod durable_tests;
#[cfg(test)]
mod job_tests;
#[cfg(test)]
mod scheduling_tests;
#[cfg(test)]
mod tests;
