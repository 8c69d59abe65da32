//! Property tests: random sequences of node arrivals and deaths, placements of single requests
//! and gangs at random priorities, releases and preemptions, checked after every step against
//! the invariants the scheduler promises.

use super::{
    Claim, GpuDevice, NodeCapacity, NodeUsage, PendingQueue, Request, Scheduler, Strategy as Layout,
};
use proptest::prelude::*;
use std::collections::{BTreeMap, BTreeSet};

#[derive(Debug, Clone)]
enum Step {
    AddNode {
        gpus: u32,
        cpus: u64,
    },
    RemoveNode(usize),
    Place {
        bundles: Vec<u64>,
        strategy: u8,
        priority: i32,
        preemptible: bool,
    },
    Release(usize),
    Preempt {
        bundles: Vec<u64>,
        priority: i32,
    },
    ReplaceLost(usize),
}

fn gpu_amount() -> impl Strategy<Value = u64> {
    prop_oneof![
        Just(0u64),
        Just(250),
        Just(500),
        Just(1000),
        Just(2000),
        Just(4000)
    ]
}

fn step() -> impl Strategy<Value = Step> {
    prop_oneof![
        2 => (1u32..=8, 4u64..=64).prop_map(|(gpus, cpus)| Step::AddNode { gpus, cpus }),
        1 => any::<usize>().prop_map(Step::RemoveNode),
        6 => (prop::collection::vec(gpu_amount(), 1..=4), 0u8..4, 0i32..3, any::<bool>())
            .prop_map(|(bundles, strategy, priority, preemptible)| Step::Place { bundles, strategy, priority, preemptible }),
        2 => any::<usize>().prop_map(Step::Release),
        2 => (prop::collection::vec(gpu_amount(), 1..=3), 1i32..4)
            .prop_map(|(bundles, priority)| Step::Preempt { bundles, priority }),
        1 => any::<usize>().prop_map(Step::ReplaceLost),
    ]
}

fn request(gpu_milli: u64) -> Request {
    Request {
        cpu_milli: 1000 + gpu_milli,
        memory_bytes: 1 << 30,
        gpu_milli,
        ..Request::default()
    }
}

fn strategy_of(code: u8) -> Layout {
    [
        Layout::Pack,
        Layout::Spread,
        Layout::StrictPack,
        Layout::StrictSpread,
    ][code as usize % 4]
}

/// What the test knows about each holder: its strategy and whether a node loss touched it.
struct Model {
    strategies: BTreeMap<String, Layout>,
    hit_by_node_loss: BTreeSet<String>,
}

fn check(scheduler: &Scheduler, model: &Model) -> Result<(), TestCaseError> {
    // No device, CPU or memory is ever over-allocated, and use equals what holders hold.
    let mut held: BTreeMap<String, NodeUsage> = BTreeMap::new();
    for id in scheduler.holder_ids() {
        let allocations = scheduler.holder_allocations(&id).unwrap_or_default();
        for allocation in allocations.iter().flatten() {
            let capacity = scheduler.capacity(&allocation.node_id);
            prop_assert!(capacity.is_some(), "{id} holds on a node that is gone");
            let capacity = capacity.unwrap();
            held.entry(allocation.node_id.clone())
                .or_insert_with(|| NodeUsage::empty(capacity))
                .add(capacity, allocation);
        }
        let missing = allocations.iter().filter(|a| a.is_none()).count();
        // Gangs are all or nothing: only a node loss may leave bundles unplaced.
        prop_assert!(
            missing == 0 || model.hit_by_node_loss.contains(&id),
            "{id} is missing {missing} bundles without a node loss"
        );
        let nodes: Vec<&str> = allocations
            .iter()
            .flatten()
            .map(|a| a.node_id.as_str())
            .collect();
        let distinct: BTreeSet<&str> = nodes.iter().copied().collect();
        match model.strategies.get(&id) {
            Some(Layout::StrictPack) => {
                prop_assert!(distinct.len() <= 1, "{id}: STRICT_PACK on {distinct:?}")
            }
            Some(Layout::StrictSpread) => prop_assert_eq!(
                distinct.len(),
                nodes.len(),
                "{}: STRICT_SPREAD shares a node",
                id
            ),
            _ => {}
        }
    }
    for (node_id, capacity, usage) in scheduler.nodes() {
        prop_assert!(
            usage.cpu_milli <= capacity.cpu_milli,
            "{node_id}: CPU over-allocated"
        );
        prop_assert!(
            usage.memory_bytes <= capacity.memory_bytes,
            "{node_id}: memory over-allocated"
        );
        for used in &usage.gpu_milli {
            prop_assert!(*used <= 1000, "{node_id}: a device holds {used} milli-GPU");
        }
        let expected = held
            .remove(node_id)
            .unwrap_or_else(|| NodeUsage::empty(capacity));
        prop_assert_eq!(
            &usage.gpu_milli,
            &expected.gpu_milli,
            "{}: device use differs from holders",
            node_id
        );
        prop_assert_eq!(
            usage.cpu_milli,
            expected.cpu_milli,
            "{}: CPU use differs from holders",
            node_id
        );
    }
    let (used, _) = scheduler.gpu_allocation();
    let summed: u64 = scheduler
        .nodes()
        .iter()
        .map(|(_, _, u)| u.gpu_milli.iter().sum::<u64>())
        .sum();
    prop_assert_eq!(used, summed, "the running GPU total drifted");
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(96))]

    #[test]
    fn invariants_hold_through_placements_preemptions_and_node_loss(steps in prop::collection::vec(step(), 1..60)) {
        let mut scheduler = Scheduler::new();
        let mut model = Model { strategies: BTreeMap::new(), hit_by_node_loss: BTreeSet::new() };
        let mut next_node = 0;
        let mut next_holder = 0;
        for (time, step) in steps.into_iter().enumerate() {
            let now = time as f64;
            match step {
                Step::AddNode { gpus, cpus } => {
                    let capacity = NodeCapacity {
                        cpu_milli: cpus * 1000,
                        memory_bytes: 64 << 30,
                        gpus: (0..gpus).map(|index| GpuDevice { index, model: "H100".into() }).collect(),
                        ..NodeCapacity::default()
                    };
                    scheduler.add_node(&format!("n{next_node}"), capacity);
                    next_node += 1;
                }
                Step::RemoveNode(pick) => {
                    let ids: Vec<String> = scheduler.nodes().iter().map(|(id, _, _)| id.to_string()).collect();
                    if !ids.is_empty() {
                        let hit = scheduler.remove_node(&ids[pick % ids.len()]);
                        model.hit_by_node_loss.extend(hit);
                    }
                }
                Step::Place { bundles, strategy, priority, preemptible } => {
                    let id = format!("h{next_holder}");
                    next_holder += 1;
                    let requests: Vec<Request> = bundles.iter().map(|g| request(*g)).collect();
                    let strategy = strategy_of(strategy);
                    let claim = Claim { priority, preemptible, since_s: now };
                    if scheduler.place_group(&id, &requests, strategy, claim).is_ok() {
                        model.strategies.insert(id, strategy);
                    } else {
                        prop_assert!(scheduler.holder_allocations(&id).is_none(), "a failed group is not recorded");
                    }
                }
                Step::Release(pick) => {
                    let ids = scheduler.holder_ids();
                    if !ids.is_empty() {
                        let id = &ids[pick % ids.len()];
                        scheduler.release_holder(id);
                        prop_assert!(scheduler.holder_allocations(id).is_none());
                    }
                }
                Step::Preempt { bundles, priority } => {
                    let requests: Vec<Request> = bundles.iter().map(|g| request(*g)).collect();
                    let claim = Claim { priority, preemptible: false, since_s: now };
                    let before: Vec<(String, Option<Claim>)> = scheduler.holder_ids().into_iter().map(|id| { let c = scheduler.holder_claim(&id); (id, c) }).collect();
                    let usage_before: Vec<NodeUsage> = scheduler.nodes().iter().map(|(_, _, u)| (*u).clone()).collect();
                    if let Some(victims) = scheduler.plan_preemption(&requests, Layout::Pack, claim, now, &[]) {
                        let usage_after: Vec<NodeUsage> = scheduler.nodes().iter().map(|(_, _, u)| (*u).clone()).collect();
                        prop_assert_eq!(usage_before, usage_after, "planning must not change the cluster");
                        for victim in &victims {
                            let victim_claim = before.iter().find(|(id, _)| id == victim).and_then(|(_, c)| *c);
                            prop_assert!(victim_claim.is_some(), "victim {} is not a holder", victim);
                            let victim_claim = victim_claim.unwrap();
                            prop_assert!(victim_claim.preemptible, "victim {} is not preemptible", victim);
                            prop_assert!(victim_claim.priority < priority, "victim {} has priority {} >= {}", victim, victim_claim.priority, priority);
                            scheduler.release_holder(victim);
                        }
                        let id = format!("h{next_holder}");
                        next_holder += 1;
                        let placed = scheduler.place_group(&id, &requests, Layout::Pack, claim);
                        prop_assert!(placed.is_ok(), "the plan made room, yet placing failed: {:?}", placed);
                        model.strategies.insert(id, Layout::Pack);
                    }
                }
                Step::ReplaceLost(pick) => {
                    let ids = scheduler.holder_ids();
                    if !ids.is_empty() {
                        let id = &ids[pick % ids.len()];
                        if scheduler.place_lost_bundles(id).is_ok() {
                            prop_assert!(scheduler.lost_bundles(id).is_empty());
                        }
                    }
                }
            }
            check(&scheduler, &model)?;
        }
    }

    #[test]
    fn the_pending_queue_is_ordered_by_priority_then_age(
        pushes in prop::collection::vec((0i32..4, any::<bool>()), 1..80)
    ) {
        let mut queue = PendingQueue::new();
        let mut arrival = BTreeMap::new();
        for (index, (priority, remove_one)) in pushes.into_iter().enumerate() {
            let seq = queue.push(index, priority);
            arrival.insert(index, seq);
            if remove_one && index % 3 == 0 {
                queue.remove(&(index / 2));
            }
        }
        let ordered = queue.ordered();
        for pair in ordered.windows(2) {
            let ((a, pa), (b, pb)) = (&pair[0], &pair[1]);
            prop_assert!(pa > pb || (pa == pb && arrival[a] < arrival[b]), "{:?} before {:?}", pair[0], pair[1]);
        }
    }
}
