//! Node transitions of the head's state: registration, heartbeats (with reconciliation of what
//! each node really runs), and declaring silent nodes dead.

use super::{capacity_of, short_id, ActorState, Failure, HeadState, NodeRecord, Order};
use std::time::{Duration, Instant};
use troupe_proto::NodeResources;

/// How long an actor must have been ALIVE before a heartbeat that does not list it counts as
/// proof that its worker is gone (the heartbeat may have been built before the worker started).
const HEARTBEAT_GRACE: Duration = Duration::from_secs(2);

impl HeadState {
    /// A node agent (re)registers. Returns its id.
    pub fn register_node(
        &mut self,
        node_id: &str,
        address: &str,
        hostname: &str,
        resources: NodeResources,
        running_jobs: &std::collections::HashMap<String, u32>,
        now: Instant,
    ) -> (String, Vec<Order>) {
        // An agent that registers without an id at the address of a live node is that node
        // again: its earlier registration's answer was lost, or it restarted. Either way it
        // keeps the id, so registering twice never leaves a ghost node behind.
        let same_address = self
            .nodes
            .values()
            .find(|node| node.alive && node.address == address)
            .map(|node| node.id.clone());
        let id = if !node_id.is_empty() && self.nodes.contains_key(node_id) {
            node_id.to_string()
        } else if let Some(existing) = same_address.filter(|_| node_id.is_empty()) {
            existing
        } else {
            self.next_node += 1;
            format!("node-{}-{}", self.next_node, &short_id("n")[2..8])
        };
        let mut orders = Vec::new();
        if self.nodes.get(&id).is_some_and(|old| old.alive) {
            // Registering again while alive: the agent restarted and its workers are gone.
            // Take the node out first so nothing is placed on its old bookkeeping.
            let hit = self.scheduler.remove_node(&id);
            orders.extend(self.groups_lost_node(&hit, &id, now));
            orders.extend(self.fail_node_actors(&id, "the node agent restarted"));
            orders.extend(self.fail_node_jobs(&id, "the node agent restarted", running_jobs, now));
        }
        self.scheduler.add_node(&id, capacity_of(&resources));
        let retired = resources
            .labels
            .get(crate::autoscaler::config::LAUNCH_ID_LABEL)
            .is_some_and(|launch| self.retired_launches.contains(launch));
        if retired {
            // Its stop is under way: it takes no work.
            self.scheduler.set_schedulable(&id, false);
        }
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
        orders.extend(self.claim_jobs(&id, address, running_jobs, now));
        orders.extend(self.schedule(now));
        (id, orders)
    }

    /// A heartbeat listing the workers the node runs ("actor:incarnation"). Returns whether the
    /// node must register again, and the orders that reconcile the two views: stop workers the
    /// head no longer expects there, and fail actors whose worker the node no longer runs.
    pub fn heartbeat(
        &mut self,
        node_id: &str,
        running: &[String],
        now: Instant,
    ) -> (bool, Vec<Order>) {
        let Some(node) = self.nodes.get_mut_untracked(node_id) else {
            return (true, Vec::new());
        };
        if !node.alive {
            return (true, Vec::new());
        }
        node.last_heartbeat = now;
        let address = node.address.clone();
        // The first word from a node since the head restarted: the workers the records had
        // there that it does not list are gone (work placed since waits as usual).
        let unconfirmed = self
            .unconfirmed_after_restore
            .remove(node_id)
            .unwrap_or_default();
        let mut orders = Vec::new();
        let mut listed = Vec::new();
        for entry in running {
            let Some((actor_id, incarnation)) = entry.rsplit_once(':') else {
                continue;
            };
            let Ok(incarnation) = incarnation.parse::<u64>() else {
                continue;
            };
            listed.push((actor_id, incarnation));
            let expected = self.actors.get(actor_id).is_some_and(|actor| {
                actor.info.node_id == node_id
                    && actor.info.incarnation == incarnation
                    && matches!(actor.info.state(), ActorState::Starting | ActorState::Alive)
            });
            let draining = self
                .actors
                .get(actor_id)
                .and_then(|actor| actor.draining_until)
                .is_some_and(|until| until > now);
            if !expected && !draining {
                orders.push(Order::Stop {
                    node_address: address.clone(),
                    actor_id: actor_id.to_string(),
                    incarnation,
                    grace_ms: 0,
                });
            }
        }
        let vanished: Vec<(String, u64)> = self
            .actors
            .values()
            .filter(|actor| {
                let restored = unconfirmed
                    .iter()
                    .any(|(id, inc)| *id == actor.info.id && *inc == actor.info.incarnation);
                let settled = if restored {
                    matches!(actor.info.state(), ActorState::Alive | ActorState::Starting)
                } else {
                    actor.info.state() == ActorState::Alive
                        && actor
                            .alive_since
                            .is_some_and(|since| now.duration_since(since) > HEARTBEAT_GRACE)
                };
                actor.info.node_id == node_id
                    && settled
                    && !listed
                        .iter()
                        .any(|(id, inc)| *id == actor.info.id && *inc == actor.info.incarnation)
            })
            .map(|actor| (actor.info.id.clone(), actor.info.incarnation))
            .collect();
        for (actor_id, incarnation) in vanished {
            let restored = unconfirmed
                .iter()
                .any(|(id, inc)| *id == actor_id && *inc == incarnation);
            let failure = Failure::exited(if restored {
                format!("its worker was gone from node {node_id} when the head restarted")
            } else {
                format!("its worker is gone from node {node_id}")
            });
            orders.extend(self.worker_failed(&actor_id, incarnation, failure));
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
            let reason = format!(
                "node {node_id} died (no heartbeat for {} ms)",
                timeout.as_millis()
            );
            orders.extend(self.take_node_out(&node_id, &reason, now));
        }
        orders.extend(self.schedule(now));
        orders
    }

    /// A node leaves the cluster (it died, or the autoscaler stopped it): what it held is lost,
    /// its groups' bundles wait to be placed again, and its actors and jobs fail with `reason`
    /// (and restart elsewhere as their policies say). The caller schedules afterwards.
    pub(super) fn take_node_out(
        &mut self,
        node_id: &str,
        reason: &str,
        now: Instant,
    ) -> Vec<Order> {
        if let Some(node) = self.nodes.get_mut(node_id) {
            node.alive = false;
        }
        let hit = self.scheduler.remove_node(node_id);
        let mut orders = self.groups_lost_node(&hit, node_id, now);
        orders.extend(self.fail_node_actors(node_id, reason));
        orders.extend(self.fail_node_jobs(node_id, reason, &Default::default(), now));
        orders
    }

    pub(super) fn fail_node_actors(&mut self, node_id: &str, reason: &str) -> Vec<Order> {
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
            orders.extend(self.worker_failed(&actor_id, incarnation, Failure::exited(reason)));
        }
        orders
    }
}
