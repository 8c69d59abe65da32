//! The head's state machine: nodes, actors, names, the pending queue and driver sessions, and the
//! transitions between actor states. Every transition returns the orders (start or stop a
//! worker) that the head must then send to node agents, so that no gRPC call is ever made while
//! the state lock is held.

use crate::scheduler::{Allocation, GpuDevice, NodeCapacity, PlacementError, Request, Scheduler};
use std::collections::{BTreeMap, HashMap, VecDeque};
use std::time::{Duration, Instant};
use tonic::Status;
use troupe_proto::{
    ActorInfo, ActorSpec, ActorState, CreateActorRequest, GpuAssignment, NodeResources,
    StartWorkerRequest,
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
    pub queued_at: Option<Instant>,
}

/// Counters exported as metrics.
#[derive(Default)]
pub(crate) struct Counters {
    pub restarts_total: u64,
    pub actors_created_total: u64,
    pub calls_total: u64,
    pub scheduling_latency: crate::head::metrics::Histogram,
}

#[derive(Default)]
pub(crate) struct HeadState {
    pub nodes: BTreeMap<String, NodeRecord>,
    pub scheduler: Scheduler,
    pub actors: HashMap<String, ActorRecord>,
    pub names: HashMap<String, String>,
    pub pending: VecDeque<String>,
    pub counters: Counters,
    next_node: u64,
}

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
    let resources = spec.resources.clone().unwrap_or_default();
    Request {
        cpu_milli: resources.cpu_milli,
        memory_bytes: resources.memory_bytes,
        gpu_milli: resources.gpu_milli,
        custom: resources.custom.into_iter().collect(),
        label_selector: resources.label_selector.into_iter().collect(),
    }
}

impl HeadState {
    /// A node agent (re)registers. Returns its id.
    pub fn register_node(
        &mut self,
        node_id: &str,
        address: &str,
        hostname: &str,
        resources: NodeResources,
        now: Instant,
    ) -> (String, Vec<Order>) {
        let id = if !node_id.is_empty() && self.nodes.contains_key(node_id) {
            node_id.to_string()
        } else {
            self.next_node += 1;
            format!("node-{}-{}", self.next_node, &short_id("n")[2..8])
        };
        let mut orders = Vec::new();
        if let Some(old) = self.nodes.get(&id) {
            // Coming back after being declared dead: whatever it ran was placed elsewhere.
            if old.alive {
                orders.extend(self.fail_node_actors(&id, "the node agent restarted"));
            }
        }
        self.scheduler.add_node(&id, capacity_of(&resources));
        self.nodes.insert(
            id.clone(),
            NodeRecord {
                id: id.clone(),
                address: address.to_string(),
                hostname: hostname.to_string(),
                resources,
                alive: true,
                last_heartbeat: now,
            },
        );
        orders.extend(self.schedule(now));
        (id, orders)
    }

    /// A heartbeat. Returns whether the node must register again, and stop orders for workers it
    /// runs that the head no longer expects there.
    pub fn heartbeat(
        &mut self,
        node_id: &str,
        running: &[String],
        now: Instant,
    ) -> (bool, Vec<Order>) {
        let Some(node) = self.nodes.get_mut(node_id) else {
            return (true, Vec::new());
        };
        if !node.alive {
            return (true, Vec::new());
        }
        node.last_heartbeat = now;
        let address = node.address.clone();
        let mut orders = Vec::new();
        for entry in running {
            let Some((actor_id, incarnation)) = entry.rsplit_once(':') else {
                continue;
            };
            let Ok(incarnation) = incarnation.parse::<u64>() else {
                continue;
            };
            let expected = self.actors.get(actor_id).is_some_and(|actor| {
                actor.info.node_id == node_id
                    && actor.info.incarnation == incarnation
                    && matches!(actor.info.state(), ActorState::Starting | ActorState::Alive)
            });
            if !expected {
                orders.push(Order::Stop {
                    node_address: address.clone(),
                    actor_id: actor_id.to_string(),
                    incarnation,
                });
            }
        }
        (false, orders)
    }

    /// Declares dead every node silent for longer than `timeout`.
    pub fn check_nodes(&mut self, now: Instant, timeout: Duration) -> Vec<Order> {
        let silent: Vec<String> = self
            .nodes
            .values()
            .filter(|node| node.alive && now.duration_since(node.last_heartbeat) > timeout)
            .map(|node| node.id.clone())
            .collect();
        let mut orders = Vec::new();
        for node_id in silent {
            tracing::warn!(
                node = node_id,
                "node missed its heartbeats: declaring it dead"
            );
            if let Some(node) = self.nodes.get_mut(&node_id) {
                node.alive = false;
            }
            self.scheduler.remove_node(&node_id);
            let reason = format!(
                "node {node_id} died (no heartbeat for {} ms)",
                timeout.as_millis()
            );
            orders.extend(self.fail_node_actors(&node_id, &reason));
        }
        if !orders.is_empty() {
            orders.extend(self.schedule(now));
        }
        orders
    }

    fn fail_node_actors(&mut self, node_id: &str, reason: &str) -> Vec<Order> {
        let victims: Vec<(String, u64)> = self
            .actors
            .values()
            .filter(|actor| {
                actor.info.node_id == node_id
                    && matches!(actor.info.state(), ActorState::Starting | ActorState::Alive)
            })
            .map(|actor| (actor.info.id.clone(), actor.info.incarnation))
            .collect();
        let mut orders = Vec::new();
        for (actor_id, incarnation) in victims {
            orders.extend(self.worker_failed(&actor_id, incarnation, reason.to_string(), false));
        }
        orders
    }

    /// Validates and records a new actor, then tries to place it.
    pub fn create_actor(
        &mut self,
        spec: CreateActorRequest,
        now: Instant,
    ) -> Result<(ActorInfo, Vec<Order>), Status> {
        let request = request_of(&spec);
        if let Err(PlacementError::Infeasible(reason)) = self.scheduler.check_feasible(&request) {
            return Err(Status::failed_precondition(format!(
                "cannot place actor of type {}: {reason}",
                spec.type_name
            )));
        }
        if !spec.name.is_empty() {
            if let Some(existing) = self.names.get(&spec.name) {
                return Err(Status::already_exists(format!(
                    "an actor named `{}` already exists ({existing})",
                    spec.name
                )));
            }
        }
        let id = short_id("actor");
        let info = ActorInfo {
            id: id.clone(),
            name: spec.name.clone(),
            type_name: spec.type_name.clone(),
            state: ActorState::Pending as i32,
            max_restarts: spec.max_restarts,
            detached: spec.detached,
            owner_session: spec.owner_session.clone(),
            resources: spec.resources.clone(),
            max_concurrency: spec.max_concurrency,
            ..ActorInfo::default()
        };
        if !spec.name.is_empty() {
            self.names.insert(spec.name.clone(), id.clone());
        }
        self.actors.insert(
            id.clone(),
            ActorRecord {
                info,
                spec,
                allocation: None,
                queued_at: Some(now),
            },
        );
        self.pending.push_back(id.clone());
        self.counters.actors_created_total += 1;
        let orders = self.schedule(now);
        let info = self.actors[&id].info.clone();
        Ok((info, orders))
    }

    /// Places what it can from the pending queue, in order.
    pub fn schedule(&mut self, now: Instant) -> Vec<Order> {
        let mut orders = Vec::new();
        let mut still_pending = VecDeque::new();
        while let Some(actor_id) = self.pending.pop_front() {
            let Some(actor) = self.actors.get_mut(&actor_id) else {
                continue;
            };
            if !matches!(
                actor.info.state(),
                ActorState::Pending | ActorState::Restarting
            ) {
                continue;
            }
            match self.scheduler.place(&request_of(&actor.spec)) {
                Ok(allocation) => {
                    let Some(node) = self.nodes.get(&allocation.node_id) else {
                        self.scheduler.release(&allocation);
                        still_pending.push_back(actor_id);
                        continue;
                    };
                    if let Some(queued_at) = actor.queued_at.take() {
                        self.counters
                            .scheduling_latency
                            .observe(now.duration_since(queued_at).as_secs_f64());
                    }
                    actor.info.incarnation += 1;
                    actor.info.state = ActorState::Starting as i32;
                    actor.info.node_id = allocation.node_id.clone();
                    actor.info.node_address = node.address.clone();
                    actor.info.worker_address.clear();
                    actor.info.pending_reason.clear();
                    actor.info.gpus = allocation
                        .gpus
                        .iter()
                        .map(|share| GpuAssignment {
                            index: share.index,
                            milli: share.milli,
                        })
                        .collect();
                    let request = StartWorkerRequest {
                        actor_id: actor_id.clone(),
                        incarnation: actor.info.incarnation,
                        binary_hash: actor.spec.binary_hash.clone(),
                        args: actor.spec.worker_args.clone(),
                        env: actor.spec.env.clone(),
                        gpu_ids: allocation.gpus.iter().map(|share| share.index).collect(),
                        cpu_milli: allocation.cpu_milli,
                        owner_session: actor.spec.owner_session.clone(),
                    };
                    orders.push(Order::Start {
                        node_address: node.address.clone(),
                        request,
                    });
                    actor.allocation = Some(allocation);
                }
                Err(err) => {
                    actor.info.pending_reason = err.to_string();
                    still_pending.push_back(actor_id);
                }
            }
        }
        self.pending = still_pending;
        orders
    }

    /// A worker process of `actor_id` is gone (exited, never started, or its node died).
    /// Restarts the actor if it has restarts left.
    pub fn worker_failed(
        &mut self,
        actor_id: &str,
        incarnation: u64,
        reason: String,
        stop_worker: bool,
    ) -> Vec<Order> {
        let Some(actor) = self.actors.get_mut(actor_id) else {
            return Vec::new();
        };
        if actor.info.incarnation != incarnation
            || matches!(
                actor.info.state(),
                ActorState::Dead | ActorState::Pending | ActorState::Restarting
            )
        {
            return Vec::new();
        }
        let mut orders = Vec::new();
        if stop_worker && !actor.info.node_address.is_empty() {
            orders.push(Order::Stop {
                node_address: actor.info.node_address.clone(),
                actor_id: actor_id.to_string(),
                incarnation,
            });
        }
        if let Some(allocation) = actor.allocation.take() {
            self.scheduler.release(&allocation);
        }
        actor.info.worker_address.clear();
        actor.info.pid = 0;
        actor.info.gpus.clear();
        let restartable = actor.info.max_restarts < 0
            || (actor.info.restarts as i64) < actor.info.max_restarts as i64;
        if restartable {
            actor.info.restarts += 1;
            actor.info.state = ActorState::Restarting as i32;
            actor.info.death_reason = reason;
            actor.queued_at = Some(Instant::now());
            self.counters.restarts_total += 1;
            // Restarts go ahead of new work.
            self.pending.push_front(actor_id.to_string());
            tracing::info!(
                actor = actor_id,
                restarts = actor.info.restarts,
                "restarting actor"
            );
        } else {
            let limit = actor.info.max_restarts;
            actor.info.state = ActorState::Dead as i32;
            actor.info.death_reason = if limit == 0 {
                reason
            } else {
                format!("{reason} (no restarts left of {limit})")
            };
            let name = actor.info.name.clone();
            if !name.is_empty() && self.names.get(&name).is_some_and(|id| id == actor_id) {
                self.names.remove(&name);
            }
        }
        orders.extend(self.schedule(Instant::now()));
        orders
    }

    /// Stops an actor for good (or lets it restart, if `allow_restart`).
    pub fn kill_actor(
        &mut self,
        actor_id: &str,
        allow_restart: bool,
        reason: &str,
    ) -> Result<Vec<Order>, Status> {
        let Some(actor) = self.actors.get_mut(actor_id) else {
            return Err(Status::not_found(format!("no actor with id {actor_id}")));
        };
        if actor.info.state() == ActorState::Dead {
            return Ok(Vec::new());
        }
        let incarnation = actor.info.incarnation;
        if allow_restart {
            return Ok(self.worker_failed(actor_id, incarnation, reason.to_string(), true));
        }
        actor.info.max_restarts = 0;
        match actor.info.state() {
            ActorState::Pending | ActorState::Restarting => {
                actor.info.state = ActorState::Dead as i32;
                actor.info.death_reason = reason.to_string();
                let name = actor.info.name.clone();
                self.pending.retain(|id| id != actor_id);
                if !name.is_empty() && self.names.get(&name).is_some_and(|id| id == actor_id) {
                    self.names.remove(&name);
                }
                Ok(Vec::new())
            }
            _ => Ok(self.worker_failed(actor_id, incarnation, reason.to_string(), true)),
        }
    }

    /// A worker asks for its constructor arguments.
    pub fn actor_spec(&self, actor_id: &str, incarnation: u64) -> Result<ActorSpec, Status> {
        let actor = self
            .actors
            .get(actor_id)
            .ok_or_else(|| Status::not_found(format!("no actor with id {actor_id}")))?;
        if actor.info.incarnation != incarnation || actor.info.state() != ActorState::Starting {
            return Err(Status::failed_precondition(format!(
                "actor {actor_id} incarnation {incarnation} is not starting (current incarnation {}, state {})",
                actor.info.incarnation,
                actor.info.state().as_str_name()
            )));
        }
        Ok(ActorSpec {
            actor_id: actor_id.to_string(),
            type_name: actor.spec.type_name.clone(),
            constructor_args: actor.spec.constructor_args.clone(),
            name: actor.spec.name.clone(),
            max_concurrency: actor.spec.max_concurrency,
            incarnation,
            owner_session: actor.spec.owner_session.clone(),
            node_id: actor.info.node_id.clone(),
        })
    }

    /// A worker reports its constructor outcome.
    pub fn worker_ready(
        &mut self,
        actor_id: &str,
        incarnation: u64,
        address: &str,
        pid: u32,
        constructor_error: &str,
    ) -> Result<Vec<Order>, Status> {
        let actor = self
            .actors
            .get_mut(actor_id)
            .ok_or_else(|| Status::not_found(format!("no actor with id {actor_id}")))?;
        if actor.info.incarnation != incarnation || actor.info.state() != ActorState::Starting {
            return Err(Status::failed_precondition(format!(
                "actor {actor_id} incarnation {incarnation} is stale (current {})",
                actor.info.incarnation
            )));
        }
        if !constructor_error.is_empty() {
            // Running the same constructor again would fail the same way: no restart.
            actor.info.max_restarts = actor.info.restarts as i32;
            let reason = format!("constructor failed: {constructor_error}");
            return Ok(self.worker_failed(actor_id, incarnation, reason, true));
        }
        actor.info.state = ActorState::Alive as i32;
        actor.info.worker_address = address.to_string();
        actor.info.pid = pid;
        Ok(Vec::new())
    }

    /// A driver session ended: stop its non-detached actors.
    pub fn session_closed(&mut self, session_id: &str) -> Vec<Order> {
        let owned: Vec<String> = self
            .actors
            .values()
            .filter(|actor| {
                actor.info.owner_session == session_id
                    && !actor.info.detached
                    && actor.info.state() != ActorState::Dead
            })
            .map(|actor| actor.info.id.clone())
            .collect();
        let mut orders = Vec::new();
        for actor_id in owned {
            if let Ok(more) = self.kill_actor(&actor_id, false, "its driver exited") {
                orders.extend(more);
            }
        }
        orders
    }

    /// Looks an actor up by id or name.
    pub fn find_actor(&self, id: &str, name: &str) -> Result<&ActorRecord, Status> {
        if !id.is_empty() {
            return self
                .actors
                .get(id)
                .ok_or_else(|| Status::not_found(format!("no actor with id {id}")));
        }
        let id = self
            .names
            .get(name)
            .ok_or_else(|| Status::not_found(format!("no live actor named `{name}`")))?;
        self.actors
            .get(id)
            .ok_or_else(|| Status::not_found(format!("no live actor named `{name}`")))
    }
}

#[cfg(test)]
mod tests;
