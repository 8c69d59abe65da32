//! `troupe sim autoscale`: a trace replayed in time against an autoscaled cluster. Pods arrive
//! at their creation time, run for their trace lifetime once placed, and leave; the scheduler
//! places them (latency-sensitive first, and, where the policy allows, preempting best-effort
//! pods); the autoscaler's planner launches nodes that become usable after a boot delay and
//! stops idle (or under-used) ones. The run reports GPU-hours provisioned and allocated, queue
//! delays by class, preemptions and pods never placed.
//!
//! A preempted or moved pod goes back to the queue with the run time it had left.

use super::autoscale_policies::{quantile, AutoscaleRun, SimPolicy, Waits};
use super::openb::policy_for;
use super::trace::{Qos, TimedPod};
use crate::autoscaler::{ManagedNode, NodePhase, PendingSet};
use crate::scheduler::{Claim, NodeCapacity, Scheduler, Strategy};
use std::cmp::Reverse;
use std::collections::{BTreeMap, BTreeSet, BinaryHeap};
use std::time::Instant;

#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
enum Event {
    Arrive(usize),
    /// A pod's run ends (ignored if it was preempted since: `run` no longer matches).
    Depart {
        pod: usize,
        run: u32,
    },
    Ready(String),
    Wake,
}

struct SimNode {
    node_type: String,
    gpus: u64,
    phase: NodePhase,
    idle_since: f64,
    low_since: Option<f64>,
    pods: BTreeSet<usize>,
}

#[derive(Default, Clone)]
struct PodState {
    waiting_since: Option<f64>,
    waited_s: f64,
    run: u32,
    node: Option<String>,
    started_at: f64,
    remaining_s: f64,
    done: bool,
}

struct Sim<'a> {
    pods: &'a [TimedPod],
    policy: &'a SimPolicy,
    boot_delay_s: f64,
    now: f64,
    events: BinaryHeap<Reverse<(u64, u64, Event)>>,
    seq: u64,
    scheduler: Scheduler,
    nodes: BTreeMap<String, SimNode>,
    provisioned_gpus: u64,
    state: Vec<PodState>,
    waiting: BTreeSet<(Reverse<Qos>, u64, usize)>,
    wakes: BTreeSet<u64>,
    next_node: u64,
    gpu_seconds_provisioned: f64,
    gpu_milli_seconds_allocated: f64,
    preemptions: u64,
    launches: u64,
    terminations: u64,
    departed: usize,
}

/// Times are kept in milliseconds in the event queue, so that they order exactly.
fn millis(seconds: f64) -> u64 {
    (seconds * 1000.0).round() as u64
}

/// Replays `pods` under `policy`. `all_nodes` is the static cluster (used by the static policy).
pub fn run_autoscale(
    pods: &[TimedPod],
    all_nodes: &[(String, NodeCapacity)],
    policy: &SimPolicy,
    boot_delay_s: f64,
) -> AutoscaleRun {
    let started = Instant::now();
    let requests: Vec<_> = pods.iter().map(|p| p.pod.clone()).collect();
    let scheduler = Scheduler::with_policy(
        policy_for("fragmentation", &requests, 0).expect("the default policy exists"),
    );
    let mut sim = Sim {
        pods,
        policy,
        boot_delay_s,
        now: 0.0,
        events: BinaryHeap::new(),
        seq: 0,
        scheduler,
        nodes: BTreeMap::new(),
        provisioned_gpus: 0,
        state: vec![PodState::default(); pods.len()],
        waiting: BTreeSet::new(),
        wakes: BTreeSet::new(),
        next_node: 0,
        gpu_seconds_provisioned: 0.0,
        gpu_milli_seconds_allocated: 0.0,
        preemptions: 0,
        launches: 0,
        terminations: 0,
        departed: 0,
    };
    if policy.planner.is_none() {
        for (id, capacity) in all_nodes {
            sim.add_ready_node(id, "static", capacity.clone());
        }
    }
    for (i, pod) in pods.iter().enumerate() {
        sim.push(pod.arrival_s, Event::Arrive(i));
    }
    sim.push(0.0, Event::Wake);
    let mut waits = Waits::default();
    while let Some(Reverse((at, _, event))) = sim.events.pop() {
        if sim.departed == pods.len() {
            break;
        }
        sim.advance(at as f64 / 1000.0);
        sim.handle(event, &mut waits);
        sim.place_waiting();
        sim.autoscale();
    }
    let hours = sim.now / 3600.0;
    let provisioned = sim.gpu_seconds_provisioned / 3600.0;
    let allocated = sim.gpu_milli_seconds_allocated / 1000.0 / 3600.0;
    AutoscaleRun {
        policy: policy.name.to_string(),
        is_default: policy.is_default,
        gpu_hours_provisioned: provisioned,
        gpu_hours_allocated: allocated,
        idle_gpu_hours: provisioned - allocated,
        utilization: if provisioned > 0.0 {
            allocated / provisioned
        } else {
            0.0
        },
        queue_delay_p50_s: quantile(&mut waits.all, 0.5),
        queue_delay_p99_s: quantile(&mut waits.all, 0.99),
        queue_delay_max_s: quantile(&mut waits.all, 1.0),
        queue_delay_p50_s_ls: quantile(&mut waits.ls, 0.5),
        queue_delay_p99_s_ls: quantile(&mut waits.ls, 0.99),
        queue_delay_max_s_ls: quantile(&mut waits.ls, 1.0),
        queue_delay_p99_s_be: quantile(&mut waits.be, 0.99),
        preemptions: sim.preemptions,
        preemptions_per_hour: if hours > 0.0 {
            sim.preemptions as f64 / hours
        } else {
            0.0
        },
        never_placed: sim
            .state
            .iter()
            .filter(|s| !s.done && s.node.is_none())
            .count(),
        launches: sim.launches,
        terminations: sim.terminations,
        hours,
        wall_s: started.elapsed().as_secs_f64(),
    }
}

impl Sim<'_> {
    fn push(&mut self, at_s: f64, event: Event) {
        self.seq += 1;
        self.events.push(Reverse((millis(at_s), self.seq, event)));
    }

    fn advance(&mut self, to: f64) {
        let dt = (to - self.now).max(0.0);
        self.gpu_seconds_provisioned += self.provisioned_gpus as f64 * dt;
        self.gpu_milli_seconds_allocated += self.scheduler.gpu_allocation().0 as f64 * dt;
        self.now = to.max(self.now);
    }

    fn add_ready_node(&mut self, id: &str, node_type: &str, capacity: NodeCapacity) {
        let gpus = capacity.gpus.len() as u64;
        self.scheduler.add_node(id, capacity);
        self.provisioned_gpus += gpus;
        self.nodes.insert(
            id.to_string(),
            SimNode {
                node_type: node_type.to_string(),
                gpus,
                phase: NodePhase::Running,
                idle_since: self.now,
                low_since: Some(self.now),
                pods: BTreeSet::new(),
            },
        );
    }

    fn handle(&mut self, event: Event, waits: &mut Waits) {
        match event {
            Event::Arrive(pod) => {
                self.state[pod].remaining_s = self.pods[pod].duration_s;
                self.enqueue(pod);
            }
            Event::Depart { pod, run } => {
                if self.state[pod].run == run && !self.state[pod].done {
                    self.unplace(pod);
                    self.state[pod].done = true;
                    self.departed += 1;
                    // Every wait the pod had, re-queued ones after preemption included.
                    waits.add(&self.pods[pod], self.state[pod].waited_s);
                }
            }
            Event::Ready(id) => {
                let Some(node) = self.nodes.get_mut(&id) else {
                    return;
                };
                node.phase = NodePhase::Running;
                node.idle_since = self.now;
                node.low_since = Some(self.now);
                let node_type = node.node_type.clone();
                let capacity = self
                    .policy
                    .planner
                    .as_ref()
                    .and_then(|p| p.capacity(&node_type))
                    .expect("a launched type")
                    .clone();
                self.scheduler.add_node(&id, capacity);
            }
            Event::Wake => {}
        }
    }

    fn enqueue(&mut self, pod: usize) {
        self.state[pod].waiting_since = Some(self.now);
        self.waiting.insert((
            Reverse(self.pods[pod].qos),
            millis(self.pods[pod].arrival_s),
            pod,
        ));
    }

    /// Takes a pod off its node (done, preempted or moved).
    fn unplace(&mut self, pod: usize) {
        self.scheduler.release_holder(&pod.to_string());
        if let Some(id) = self.state[pod].node.take() {
            if let Some(node) = self.nodes.get_mut(&id) {
                node.pods.remove(&pod);
                if node.pods.is_empty() {
                    node.idle_since = self.now;
                }
            }
        }
    }

    /// Sends a running pod back to the queue with the run time it has left.
    fn evict(&mut self, pod: usize) {
        let state = &mut self.state[pod];
        state.remaining_s = (state.remaining_s - (self.now - state.started_at)).max(0.0);
        state.run += 1;
        self.unplace(pod);
        self.preemptions += 1;
        self.enqueue(pod);
    }

    fn claim(&self, pod: usize) -> Claim {
        let qos = self.pods[pod].qos;
        Claim {
            priority: if qos == Qos::LatencySensitive { 1 } else { 0 },
            preemptible: qos == Qos::BestEffort,
            since_s: self.now,
        }
    }

    fn place_waiting(&mut self) {
        let order: Vec<(Reverse<Qos>, u64, usize)> = self.waiting.iter().cloned().collect();
        for key in order {
            let pod = key.2;
            let request = [self.pods[pod].pod.request.clone()];
            let claim = self.claim(pod);
            let holder = pod.to_string();
            let mut placed = self
                .scheduler
                .place_group(&holder, &request, Strategy::Pack, claim);
            if placed.is_err() && self.policy.preempt_for_priority && !claim.preemptible {
                if let Some(victims) =
                    self.scheduler
                        .plan_preemption(&request, Strategy::Pack, claim, self.now, &[])
                {
                    for victim in victims {
                        if let Ok(victim) = victim.parse::<usize>() {
                            self.evict(victim);
                        }
                    }
                    placed = self
                        .scheduler
                        .place_group(&holder, &request, Strategy::Pack, claim);
                }
            }
            let Ok(allocations) = placed else { continue };
            let node_id = allocations[0].node_id.clone();
            self.waiting.remove(&key);
            let state = &mut self.state[pod];
            let since = state.waiting_since.take().unwrap_or(self.now);
            state.waited_s += self.now - since;
            state.node = Some(node_id.clone());
            state.started_at = self.now;
            let (run, remaining) = (state.run, state.remaining_s);
            if let Some(node) = self.nodes.get_mut(&node_id) {
                node.pods.insert(pod);
            }
            self.push(self.now + remaining, Event::Depart { pod, run });
        }
    }

    fn managed_nodes(&mut self) -> Vec<ManagedNode> {
        let threshold = self
            .policy
            .planner
            .as_ref()
            .and_then(|p| p.consolidation)
            .map(|c| c.below_utilization);
        let mut managed = Vec::with_capacity(self.nodes.len());
        for (id, node) in self.nodes.iter_mut() {
            let idle_for_s = if node.phase == NodePhase::Running && node.pods.is_empty() {
                self.now - node.idle_since
            } else {
                0.0
            };
            let mut low_use_for_s = 0.0;
            if let (Some(threshold), NodePhase::Running) = (threshold, node.phase) {
                let usage = self.scheduler.usage(id).unwrap_or_default();
                let used = if node.gpus > 0 {
                    usage.gpu_milli.iter().sum::<u64>() as f64 / (node.gpus as f64 * 1000.0)
                } else {
                    let capacity = self
                        .scheduler
                        .capacity(id)
                        .map_or(1, |c| c.cpu_milli.max(1));
                    usage.cpu_milli as f64 / capacity as f64
                };
                if used < threshold {
                    let since = *node.low_since.get_or_insert(self.now);
                    low_use_for_s = self.now - since;
                } else {
                    node.low_since = None;
                }
            }
            let movable = !node.pods.is_empty()
                && (self.policy.move_any_pod
                    || node
                        .pods
                        .iter()
                        .all(|p| self.pods[*p].qos == Qos::BestEffort));
            managed.push(ManagedNode {
                id: id.clone(),
                node_type: node.node_type.clone(),
                phase: node.phase,
                idle_for_s,
                low_use_for_s,
                movable: if movable {
                    node.pods
                        .iter()
                        .map(|p| self.pods[*p].pod.request.clone())
                        .collect()
                } else {
                    Vec::new()
                },
            });
        }
        managed
    }

    fn autoscale(&mut self) {
        let Some(planner) = self.policy.planner.as_ref() else {
            return;
        };
        let managed = self.managed_nodes();
        let pending: Vec<PendingSet> = self
            .waiting
            .iter()
            .map(|(_, _, pod)| PendingSet {
                name: self.pods[*pod].pod.name.clone(),
                bundles: vec![self.pods[*pod].pod.request.clone()],
                strategy: Strategy::Pack,
                priority: self.claim(*pod).priority,
                preemptible: self.pods[*pod].qos == Qos::BestEffort,
            })
            .collect();
        let plan = planner.plan(&mut self.scheduler, &managed, &pending);
        for launch in &plan.launches {
            for _ in 0..launch.count {
                self.next_node += 1;
                let id = format!("{}-{}", launch.node_type, self.next_node);
                let gpus = planner
                    .capacity(&launch.node_type)
                    .map_or(0, |c| c.gpus.len() as u64);
                self.provisioned_gpus += gpus;
                self.nodes.insert(
                    id.clone(),
                    SimNode {
                        node_type: launch.node_type.clone(),
                        gpus,
                        phase: NodePhase::Launching,
                        idle_since: self.now,
                        low_since: None,
                        pods: BTreeSet::new(),
                    },
                );
                self.launches += 1;
                self.push(self.now + self.boot_delay_s, Event::Ready(id));
            }
        }
        let mut moved = false;
        for drain in &plan.drains {
            let Some(node) = self.nodes.get(&drain.node_id) else {
                continue;
            };
            let pods: Vec<usize> = node.pods.iter().copied().collect();
            if !pods.is_empty() && !drain.evict {
                continue;
            }
            for pod in pods {
                self.evict(pod);
                moved = true;
            }
            if let Some(node) = self.nodes.remove(&drain.node_id) {
                self.provisioned_gpus -= node.gpus;
            }
            self.scheduler.remove_node(&drain.node_id);
            self.terminations += 1;
        }
        if moved {
            self.place_waiting();
        }
        self.schedule_wake(planner.idle_timeout_s);
    }

    /// Wakes the loop when the next idle or low-use timer runs out.
    fn schedule_wake(&mut self, idle_timeout_s: f64) {
        let after = self
            .policy
            .planner
            .as_ref()
            .and_then(|p| p.consolidation)
            .map(|c| c.after_s);
        let mut next: Option<f64> = None;
        for node in self
            .nodes
            .values()
            .filter(|n| n.phase == NodePhase::Running)
        {
            let mut candidates = Vec::new();
            if node.pods.is_empty() {
                candidates.push(node.idle_since + idle_timeout_s);
            }
            if let (Some(after), Some(since)) = (after, node.low_since) {
                if !node.pods.is_empty() {
                    candidates.push(since + after);
                }
            }
            for at in candidates {
                if at > self.now && next.is_none_or(|n| at < n) {
                    next = Some(at);
                }
            }
        }
        if let Some(at) = next {
            if self.wakes.insert(millis(at)) {
                self.push(at, Event::Wake);
            }
        }
    }
}

#[cfg(test)]
#[path = "autoscale_tests.rs"]
mod tests;
