//! Placement groups in the head's state: creation (refused at once when no cluster could hold
//! it), placement as one scheduler holder (`pg:ID`), actors running inside a bundle's
//! reservation, removal (everything freed at once, and the pending queue placed in the same
//! call), and node loss (lost bundles placed again ahead of newer work of equal priority, or the
//! whole group restarted if asked).

use super::placement::{preemptable, Outcome};
use super::{request_of, short_id, ActorState, Failure, HeadState, Order, Pending};
use crate::scheduler::{Allocation, Claim, GpuShare, NodeAffinity, Request, Strategy};
use std::collections::BTreeMap;
use std::time::Instant;
use tonic::Status;
use troupe_proto::{
    BundleInfo, CreatePlacementGroupRequest, GpuAssignment, PlacementGroupInfo, PlacementGroupState,
};

/// At most this many bundles in one group.
const MAX_BUNDLES: usize = 10_000;

/// One placement group.
pub(crate) struct GroupRecord {
    pub info: PlacementGroupInfo,
    pub spec: CreatePlacementGroupRequest,
    pub bundles: Vec<Request>,
    pub strategy: Strategy,
    /// Its place in the pending queue's arrival order (kept when it is queued again).
    pub seq: u64,
    pub queued_at: Instant,
    /// Each bundle's reservation once placed.
    pub placed: Vec<Option<Allocation>>,
    /// What the actors inside use: actor id -> (bundle, allocation).
    pub tenants: BTreeMap<String, (usize, Allocation)>,
}

/// The scheduler holder of a placement group.
pub(super) fn group_holder(id: &str) -> String {
    format!("pg:{id}")
}

impl GroupRecord {
    /// The bundles not placed right now.
    pub fn missing_bundles(&self) -> Vec<Request> {
        self.bundles
            .iter()
            .zip(&self.placed)
            .filter(|(_, placed)| placed.is_none())
            .map(|(bundle, _)| bundle.clone())
            .collect()
    }

    /// An actor inside left: its share of the bundle is free again.
    pub fn give_back(&mut self, actor_id: &str) {
        self.tenants.remove(actor_id);
    }

    fn claim(&self, since_s: f64) -> Claim {
        Claim {
            priority: self.spec.priority,
            preemptible: self.spec.preemptible,
            since_s,
        }
    }

    /// The info with bundle placements filled in.
    pub fn snapshot(&self) -> PlacementGroupInfo {
        let mut info = self.info.clone();
        info.bundles = self
            .spec
            .bundles
            .iter()
            .zip(&self.placed)
            .map(|(resources, placed)| BundleInfo {
                resources: Some(resources.clone()),
                node_id: placed
                    .as_ref()
                    .map(|a| a.node_id.clone())
                    .unwrap_or_default(),
                gpus: placed
                    .as_ref()
                    .map(|a| {
                        a.gpus
                            .iter()
                            .map(|g| GpuAssignment {
                                index: g.index,
                                milli: g.milli,
                            })
                            .collect()
                    })
                    .unwrap_or_default(),
            })
            .collect();
        info
    }

    /// Carves `request` out of bundle `bundle`'s reservation, if it has room.
    fn carve(&self, bundle: usize, request: &Request) -> Result<Allocation, String> {
        let Some(Some(reserved)) = self.placed.get(bundle) else {
            return Err(format!("bundle {bundle} is not placed"));
        };
        let inside = self.tenants.values().filter(|(b, _)| *b == bundle);
        let (mut cpu, mut memory) = (0u64, 0u64);
        let mut devices: BTreeMap<u32, u64> = BTreeMap::new();
        let mut custom: BTreeMap<String, f64> = BTreeMap::new();
        for (_, used) in inside {
            cpu += used.cpu_milli;
            memory += used.memory_bytes;
            for share in &used.gpus {
                *devices.entry(share.index).or_default() += share.milli;
            }
            for (name, amount) in &used.custom {
                *custom.entry(name.clone()).or_default() += amount;
            }
        }
        if cpu + request.cpu_milli > reserved.cpu_milli {
            return Err(format!(
                "bundle {bundle}: CPU {} milli wanted, {} free",
                request.cpu_milli,
                reserved.cpu_milli - cpu
            ));
        }
        if memory + request.memory_bytes > reserved.memory_bytes {
            return Err(format!(
                "bundle {bundle}: memory {} bytes wanted, {} free",
                request.memory_bytes,
                reserved.memory_bytes - memory
            ));
        }
        for (name, wanted) in &request.custom {
            let total = reserved.custom.get(name).copied().unwrap_or(0.0);
            let used = custom.get(name).copied().unwrap_or(0.0);
            if used + wanted > total + 1e-9 {
                return Err(format!(
                    "bundle {bundle}: resource {name} {wanted} wanted, {} free",
                    total - used
                ));
            }
        }
        let free = |share: &GpuShare| share.milli - devices.get(&share.index).copied().unwrap_or(0);
        let gpus: Vec<GpuShare> = if request.gpu_milli == 0 {
            Vec::new()
        } else if request.gpu_milli < 1000 {
            let best = reserved
                .gpus
                .iter()
                .filter(|share| free(share) >= request.gpu_milli)
                .min_by_key(|share| (free(share), share.index));
            match best {
                Some(share) => vec![GpuShare {
                    index: share.index,
                    milli: request.gpu_milli,
                }],
                None => {
                    return Err(format!(
                        "bundle {bundle}: no reserved device has {} milli-GPU free",
                        request.gpu_milli
                    ))
                }
            }
        } else {
            let whole: Vec<GpuShare> = reserved
                .gpus
                .iter()
                .filter(|share| share.milli == 1000 && free(share) == 1000)
                .take(request.whole_gpus())
                .map(|share| GpuShare {
                    index: share.index,
                    milli: 1000,
                })
                .collect();
            if whole.len() < request.whole_gpus() {
                return Err(format!(
                    "bundle {bundle}: {} whole GPUs wanted, {} free",
                    request.whole_gpus(),
                    whole.len()
                ));
            }
            whole
        };
        Ok(Allocation {
            node_id: reserved.node_id.clone(),
            cpu_milli: request.cpu_milli,
            memory_bytes: request.memory_bytes,
            gpus,
            custom: request.custom.clone(),
        })
    }
}

impl HeadState {
    /// Validates and records a placement group, then tries to place it.
    pub fn create_group(
        &mut self,
        spec: CreatePlacementGroupRequest,
        now: Instant,
    ) -> Result<(PlacementGroupInfo, Vec<Order>), Status> {
        self.adopt_session_after_restart(&spec.owner_session, now);
        if !spec.detached && !self.sessions.contains(&spec.owner_session) {
            return Err(Status::failed_precondition(format!(
                "owner session `{}` is not open; only a detached placement group can outlive its owner",
                spec.owner_session
            )));
        }
        if spec.bundles.is_empty() || spec.bundles.len() > MAX_BUNDLES {
            return Err(Status::invalid_argument(format!(
                "bundles: {} given, a placement group needs 1 to {MAX_BUNDLES}",
                spec.bundles.len()
            )));
        }
        let strategy = Strategy::parse(&spec.strategy).ok_or_else(|| {
            Status::invalid_argument(format!(
                "strategy `{}`: expected PACK, SPREAD, STRICT_PACK or STRICT_SPREAD",
                spec.strategy
            ))
        })?;
        let bundles: Vec<Request> = spec
            .bundles
            .iter()
            .map(|resources| request_of_resources(resources.clone()))
            .collect();
        for (index, bundle) in bundles.iter().enumerate() {
            if bundle.gpu_milli > 1000 && bundle.gpu_milli % 1000 != 0 {
                return Err(Status::invalid_argument(format!(
                    "bundle {index}: {} milli-GPU; above one GPU, GPUs must be whole",
                    bundle.gpu_milli
                )));
            }
        }
        if let Err(err) = self.could_ever_fit_group(&bundles, strategy) {
            return Err(Status::failed_precondition(format!(
                "cannot place placement group: {err}"
            )));
        }
        if !spec.name.is_empty()
            && self.groups.values().any(|g| {
                g.info.name == spec.name
                    && g.info.state() != PlacementGroupState::PlacementGroupRemoved
            })
        {
            return Err(Status::already_exists(format!(
                "a placement group named `{}` already exists",
                spec.name
            )));
        }
        let id = short_id("pg");
        let seq = self.pending.push(Pending::Group(id.clone()), spec.priority);
        let info = PlacementGroupInfo {
            id: id.clone(),
            name: spec.name.clone(),
            strategy: strategy.name().to_string(),
            state: PlacementGroupState::PlacementGroupPending as i32,
            priority: spec.priority,
            preemptible: spec.preemptible,
            ..PlacementGroupInfo::default()
        };
        self.groups.insert(
            id.clone(),
            GroupRecord {
                info,
                placed: vec![None; bundles.len()],
                bundles,
                strategy,
                seq,
                queued_at: now,
                spec,
                tenants: BTreeMap::new(),
            },
        );
        for bundle in &self.groups[&id].bundles {
            self.scheduler.observe(bundle);
        }
        let orders = self.schedule(now);
        Ok((self.groups[&id].snapshot(), orders))
    }

    pub fn group_info(&self, id: &str) -> Result<PlacementGroupInfo, Status> {
        self.groups
            .get(id)
            .map(GroupRecord::snapshot)
            .ok_or_else(|| Status::not_found(format!("no placement group with id {id}")))
    }

    /// Frees a group's resources at once, stops the actors inside, and places what was
    /// waiting, in this same call.
    pub fn remove_group(&mut self, id: &str, now: Instant) -> Result<Vec<Order>, Status> {
        let Some(group) = self.groups.get_mut(id) else {
            return Err(Status::not_found(format!(
                "no placement group with id {id}"
            )));
        };
        if group.info.state() == PlacementGroupState::PlacementGroupRemoved {
            return Ok(Vec::new());
        }
        group.info.state = PlacementGroupState::PlacementGroupRemoved as i32;
        group.info.pending_reason = "removed".to_string();
        group.placed.iter_mut().for_each(|p| *p = None);
        group.tenants.clear();
        self.pending.remove(&Pending::Group(id.to_string()));
        self.scheduler.release_holder(&group_holder(id));
        let inside: Vec<String> = self
            .actors
            .values()
            .filter(|a| a.spec.placement_group_id == id && a.info.state() != ActorState::Dead)
            .map(|a| a.info.id.clone())
            .collect();
        let mut orders = Vec::new();
        for actor_id in inside {
            if let Ok(more) = self.kill_actor(
                &actor_id,
                false,
                &format!("its placement group {id} was removed"),
            ) {
                orders.extend(more);
            }
        }
        orders.extend(self.schedule(now));
        Ok(orders)
    }

    /// Places a pending (or rescheduling) group.
    pub(super) fn try_group(&mut self, id: &str, now: Instant) -> Outcome {
        let since_s = self.clock_s(now);
        let Some(group) = self.groups.get(id) else {
            self.pending.remove(&Pending::Group(id.to_string()));
            return Outcome::Skip;
        };
        let holder = group_holder(id);
        let claim = group.claim(since_s);
        let strategy = group.strategy;
        let placing_lost = self.scheduler.holder_allocations(&holder).is_some();
        let result = if placing_lost {
            self.scheduler
                .place_lost_bundles(&holder)
                .map(|placed| placed.into_iter().collect::<Vec<_>>())
        } else {
            let bundles = group.bundles.clone();
            self.scheduler
                .place_group(&holder, &bundles, strategy, claim)
                .map(|all| all.into_iter().enumerate().collect())
        };
        let Some(group) = self.groups.get_mut(id) else {
            return Outcome::Skip;
        };
        match result {
            Ok(placed) => {
                for (bundle, allocation) in placed {
                    group.placed[bundle] = Some(allocation);
                }
                group.info.state = PlacementGroupState::PlacementGroupCreated as i32;
                group.info.pending_reason.clear();
                self.pending.remove(&Pending::Group(id.to_string()));
                self.groups_placed += 1;
                Outcome::Placed(Vec::new())
            }
            Err(err) => {
                group.info.pending_reason = err.to_string();
                let avoid: Vec<String> = group
                    .placed
                    .iter()
                    .flatten()
                    .map(|a| a.node_id.clone())
                    .collect();
                let wanted = preemptable(&err, group.missing_bundles(), strategy, claim);
                Outcome::Waiting(
                    wanted.map(|(bundles, strategy, claim, _)| (bundles, strategy, claim, avoid)),
                )
            }
        }
    }

    /// Runs an actor inside its placement group's bundle.
    pub(super) fn place_in_group(&mut self, actor_id: &str, now: Instant) -> Outcome {
        let Some(actor) = self.actors.get(actor_id) else {
            return Outcome::Skip;
        };
        let group_id = actor.spec.placement_group_id.clone();
        let wanted_bundle = actor.spec.bundle_index;
        let request = request_of(&actor.spec);
        let removed = self
            .groups
            .get(&group_id)
            .is_none_or(|g| g.info.state() == PlacementGroupState::PlacementGroupRemoved);
        if removed {
            let reason = format!("its placement group {group_id} was removed");
            let _ = self.kill_actor(actor_id, false, &reason);
            return Outcome::Skip;
        }
        let Some(group) = self.groups.get_mut(&group_id) else {
            return Outcome::Skip;
        };
        let state = group.info.state();
        let candidates: Vec<usize> = match wanted_bundle {
            Some(bundle) => vec![bundle as usize],
            None => (0..group.placed.len()).collect(),
        };
        let mut reasons = Vec::new();
        for bundle in candidates {
            match group.carve(bundle, &request) {
                Ok(allocation) => {
                    group
                        .tenants
                        .insert(actor_id.to_string(), (bundle, allocation.clone()));
                    self.pending.remove(&Pending::Actor(actor_id.to_string()));
                    return Outcome::Placed(
                        self.launch(actor_id, allocation, now).into_iter().collect(),
                    );
                }
                Err(why) => reasons.push(why),
            }
        }
        let why = format!(
            "waiting for room in placement group {group_id} ({}): {}",
            state.as_str_name(),
            reasons.join("; ")
        );
        self.note_actor(actor_id, &why);
        Outcome::Waiting(None)
    }

    /// Groups that lost bundles with a node: queue them again (keeping their age), either for
    /// the lost bundles or, if asked, as a whole.
    pub(super) fn groups_lost_node(
        &mut self,
        holders: &[String],
        node_id: &str,
        now: Instant,
    ) -> Vec<Order> {
        let mut restarting: Vec<(String, u64, String)> = Vec::new();
        for holder in holders {
            let Some(id) = holder.strip_prefix("pg:") else {
                continue;
            };
            let lost = self.scheduler.lost_bundles(holder);
            let Some(group) = self.groups.get_mut(id) else {
                continue;
            };
            let whole = group.spec.restart_whole_on_node_loss;
            if whole {
                self.scheduler.release_holder(holder);
                group.placed.iter_mut().for_each(|p| *p = None);
            } else {
                for bundle in &lost {
                    group.placed[*bundle] = None;
                }
            }
            group
                .tenants
                .retain(|_, (bundle, _)| !lost.contains(bundle) && !whole);
            group.info.state = PlacementGroupState::PlacementGroupRescheduling as i32;
            group.info.reschedules += 1;
            group.info.pending_reason =
                format!("node {node_id} died with {} of its bundles", lost.len());
            group.queued_at = now;
            let (seq, priority) = (group.seq, group.spec.priority);
            self.pending
                .push_with_seq(Pending::Group(id.to_string()), priority, seq);
            if whole {
                let inside: Vec<(String, u64)> = self
                    .actors
                    .values()
                    .filter(|a| {
                        a.spec.placement_group_id == id
                            && matches!(a.info.state(), ActorState::Starting | ActorState::Alive)
                    })
                    .map(|a| (a.info.id.clone(), a.info.incarnation))
                    .collect();
                for (actor_id, incarnation) in inside {
                    restarting.push((actor_id, incarnation, id.to_string()));
                }
            }
        }
        // Failing workers schedules again: only once every group's books are right.
        let mut orders = Vec::new();
        for (actor_id, incarnation, id) in restarting {
            let failure = Failure {
                reason: format!("its placement group {id} restarts: node {node_id} died"),
                stop_worker: true,
                fatal: false,
            };
            orders.extend(self.worker_failed(&actor_id, incarnation, failure));
        }
        orders
    }

    /// Removes the groups a closed session owned (not detached ones).
    pub(super) fn remove_session_groups(&mut self, session_id: &str, now: Instant) -> Vec<Order> {
        let owned: Vec<String> = self
            .groups
            .values()
            .filter(|g| {
                g.spec.owner_session == session_id
                    && !g.spec.detached
                    && g.info.state() != PlacementGroupState::PlacementGroupRemoved
            })
            .map(|g| g.info.id.clone())
            .collect();
        let mut orders = Vec::new();
        for id in owned {
            orders.extend(self.remove_group(&id, now).unwrap_or_default());
        }
        orders
    }
}

/// The scheduler's request for a wire resource request.
pub(crate) fn request_of_resources(resources: troupe_proto::ResourceRequest) -> Request {
    let node_affinity = (!resources.node_id.is_empty()).then(|| NodeAffinity {
        node_id: resources.node_id.clone(),
        soft: resources.node_soft,
    });
    Request {
        cpu_milli: resources.cpu_milli,
        memory_bytes: resources.memory_bytes,
        gpu_milli: resources.gpu_milli,
        custom: resources.custom.into_iter().collect(),
        label_selector: resources.label_selector.into_iter().collect(),
        gpu_models: resources.gpu_models,
        node_affinity,
    }
}
