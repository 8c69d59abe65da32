//! Unit tests of placement and bookkeeping.

use super::*;
use std::collections::BTreeSet;

fn node(cpus: u64, gpus: u32) -> NodeCapacity {
    NodeCapacity {
        cpu_milli: cpus * 1000,
        memory_bytes: 64 << 30,
        gpus: (0..gpus)
            .map(|index| GpuDevice {
                index,
                model: "H100".to_string(),
            })
            .collect(),
        custom: BTreeMap::new(),
        labels: BTreeMap::new(),
    }
}

fn gpus(milli: u64) -> Request {
    Request {
        cpu_milli: 1000,
        gpu_milli: milli,
        ..Request::default()
    }
}

#[test]
fn whole_gpus_get_distinct_devices_and_are_released() {
    let mut scheduler = Scheduler::new();
    scheduler.add_node("a", node(16, 4));
    let first = scheduler.place(&gpus(2000)).expect("first");
    let second = scheduler.place(&gpus(2000)).expect("second");
    let mut devices: Vec<u32> = first
        .gpus
        .iter()
        .chain(&second.gpus)
        .map(|g| g.index)
        .collect();
    devices.sort();
    assert_eq!(devices, vec![0, 1, 2, 3]);
    assert!(matches!(
        scheduler.place(&gpus(1000)),
        Err(PlacementError::Busy(_))
    ));
    scheduler.release(&first);
    let third = scheduler.place(&gpus(1000)).expect("after release");
    assert!(first.gpus.iter().any(|g| g.index == third.gpus[0].index));
}

#[test]
fn fractions_share_one_device_before_opening_another() {
    let mut scheduler = Scheduler::new();
    scheduler.add_node("a", node(16, 2));
    let a = scheduler.place(&gpus(500)).expect("a");
    let b = scheduler.place(&gpus(500)).expect("b");
    assert_eq!(a.gpus[0].index, b.gpus[0].index);
    let usage = scheduler.usage("a").expect("usage");
    assert_eq!(usage.gpu_milli.iter().sum::<u64>(), 1000);
    assert!(usage.gpu_milli.contains(&0), "the other device stays whole");
}

#[test]
fn infeasible_names_what_no_node_has() {
    let mut scheduler = Scheduler::new();
    scheduler.add_node("a", node(8, 8));
    scheduler.add_node("b", node(8, 4));
    let err = scheduler.place(&gpus(16_000)).expect_err("16 GPUs");
    let PlacementError::Infeasible(message) = err else {
        panic!("expected infeasible, got {err:?}");
    };
    assert!(message.contains("16 whole devices"), "{message}");
    let mut labelled = gpus(0);
    labelled.label_selector.insert("zone".into(), "eu".into());
    let err = scheduler.place(&labelled).expect_err("label");
    assert!(err.to_string().contains("zone=eu"), "{err}");
}

#[test]
fn best_fit_prefers_the_fuller_node() {
    let mut scheduler = Scheduler::new();
    scheduler.add_node("big", node(16, 8));
    scheduler.add_node("small", node(16, 2));
    let placed = scheduler.place(&gpus(1000)).expect("place");
    assert_eq!(placed.node_id, "small");
}

#[test]
fn custom_resources_are_counted() {
    let mut scheduler = Scheduler::new();
    let mut capacity = node(4, 0);
    capacity.custom.insert("tpu".into(), 2.0);
    scheduler.add_node("a", capacity);
    let mut request = gpus(0);
    request.custom.insert("tpu".into(), 1.5);
    let first = scheduler.place(&request).expect("first");
    assert!(matches!(
        scheduler.place(&request),
        Err(PlacementError::Busy(_))
    ));
    scheduler.release(&first);
    scheduler.place(&request).expect("after release");
}

#[test]
fn no_nodes_is_infeasible() {
    let mut scheduler = Scheduler::new();
    assert!(matches!(
        scheduler.place(&gpus(0)),
        Err(PlacementError::Infeasible(_))
    ));
}

fn claim(priority: i32, preemptible: bool) -> Claim {
    Claim {
        priority,
        preemptible,
        since_s: 0.0,
    }
}

fn cluster(nodes: usize, gpus_each: u32) -> Scheduler {
    let mut scheduler = Scheduler::new();
    for index in 0..nodes {
        scheduler.add_node(&format!("n{index}"), node(32, gpus_each));
    }
    scheduler
}

fn nodes_of(allocations: &[Allocation]) -> BTreeSet<String> {
    allocations.iter().map(|a| a.node_id.clone()).collect()
}

#[test]
fn strict_pack_puts_every_bundle_on_one_node_and_strict_spread_on_distinct_ones() {
    let mut scheduler = cluster(4, 4);
    let packed = scheduler
        .place_group(
            "pack",
            &vec![gpus(1000); 4],
            Strategy::StrictPack,
            Claim::default(),
        )
        .expect("strict pack");
    assert_eq!(nodes_of(&packed).len(), 1);
    let spread = scheduler
        .place_group(
            "spread",
            &vec![gpus(1000); 3],
            Strategy::StrictSpread,
            Claim::default(),
        )
        .expect("strict spread");
    assert_eq!(nodes_of(&spread).len(), 3);
    assert!(nodes_of(&spread).is_disjoint(&nodes_of(&packed)));
    let err = scheduler
        .place_group(
            "five",
            &vec![gpus(0); 5],
            Strategy::StrictSpread,
            Claim::default(),
        )
        .expect_err("five bundles, four nodes");
    assert!(matches!(err, PlacementError::Infeasible(_)), "{err}");
    let err = scheduler
        .place_group(
            "big",
            &vec![gpus(1000); 5],
            Strategy::StrictPack,
            Claim::default(),
        )
        .expect_err("no node has five GPUs");
    assert!(err.to_string().contains("STRICT_PACK"), "{err}");
}

#[test]
fn pack_prefers_one_node_and_spread_prefers_many() {
    let mut scheduler = cluster(4, 8);
    let packed = scheduler
        .place_group(
            "pack",
            &vec![gpus(1000); 4],
            Strategy::Pack,
            Claim::default(),
        )
        .expect("pack");
    assert_eq!(nodes_of(&packed).len(), 1);
    let spread = scheduler
        .place_group(
            "spread",
            &vec![gpus(1000); 4],
            Strategy::Spread,
            Claim::default(),
        )
        .expect("spread");
    assert_eq!(nodes_of(&spread).len(), 4);
}

#[test]
fn a_group_that_does_not_fit_takes_nothing_and_release_frees_everything_at_once() {
    let mut scheduler = cluster(2, 4);
    scheduler
        .place_group(
            "first",
            &vec![gpus(1000); 6],
            Strategy::Pack,
            Claim::default(),
        )
        .expect("six of eight");
    let before: Vec<_> = ["n0", "n1"].iter().map(|n| scheduler.usage(n)).collect();
    let err = scheduler
        .place_group(
            "second",
            &vec![gpus(1000); 3],
            Strategy::Pack,
            Claim::default(),
        )
        .expect_err("three more do not fit");
    assert!(err.to_string().contains("GPU"), "{err}");
    let after: Vec<_> = ["n0", "n1"].iter().map(|n| scheduler.usage(n)).collect();
    assert_eq!(before, after, "a failed group leaves no partial allocation");
    assert_eq!(scheduler.release_holder("first").len(), 6);
    assert_eq!(scheduler.gpu_allocation().0, 0);
    scheduler
        .place_group(
            "second",
            &vec![gpus(1000); 3],
            Strategy::Pack,
            Claim::default(),
        )
        .expect("fits once the first group is gone");
}

#[test]
fn lost_bundles_are_placed_again_under_the_group_strategy() {
    let mut scheduler = cluster(3, 2);
    let placed = scheduler
        .place_group(
            "g",
            &vec![gpus(1000); 2],
            Strategy::StrictSpread,
            Claim::default(),
        )
        .expect("two nodes");
    let dead = placed[0].node_id.clone();
    let survivor = placed[1].node_id.clone();
    assert_eq!(scheduler.remove_node(&dead), vec!["g".to_string()]);
    assert_eq!(scheduler.lost_bundles("g"), vec![0]);
    let again = scheduler
        .place_lost_bundles("g")
        .expect("a third node is free");
    assert_eq!(again.len(), 1);
    assert_ne!(
        again[0].1.node_id, survivor,
        "STRICT_SPREAD holds after the loss"
    );
    assert!(scheduler.lost_bundles("g").is_empty());
}

#[test]
fn preemption_takes_the_lowest_priority_then_least_gpu_time_and_whole_gangs() {
    let mut scheduler = cluster(2, 4);
    // n0: a preemptible gang at priority 1 (placed long ago) and n1: two priority-0 actors.
    scheduler
        .place_group(
            "gang",
            &vec![gpus(1000); 4],
            Strategy::StrictPack,
            claim(1, true),
        )
        .expect("gang");
    let mut recent = claim(0, true);
    recent.since_s = 90.0;
    scheduler
        .place_group("old", &[gpus(2000)], Strategy::Pack, claim(0, true))
        .expect("old");
    scheduler
        .place_group("new", &[gpus(2000)], Strategy::Pack, recent)
        .expect("new");
    let victims = scheduler
        .plan_preemption(&[gpus(2000)], Strategy::Pack, claim(5, false), 100.0, &[])
        .expect("a plan");
    assert_eq!(
        victims,
        vec!["new".to_string()],
        "lowest priority, least GPU time lost"
    );
    assert_eq!(
        scheduler.gpu_allocation().0,
        8000,
        "planning changes nothing"
    );
    let victims = scheduler
        .plan_preemption(
            &vec![gpus(1000); 6],
            Strategy::Pack,
            claim(5, false),
            100.0,
            &[],
        )
        .expect("a plan for six");
    let victims: BTreeSet<String> = victims.into_iter().collect();
    assert!(victims.contains("gang"), "{victims:?}");
    for victim in &victims {
        scheduler.release_holder(victim);
    }
    scheduler
        .place_group("big", &vec![gpus(1000); 6], Strategy::Pack, claim(5, false))
        .expect("fits after the eviction");
}

#[test]
fn preemption_never_touches_equal_higher_or_protected_work() {
    let mut scheduler = cluster(1, 4);
    scheduler
        .place_group("equal", &[gpus(2000)], Strategy::Pack, claim(3, true))
        .expect("equal");
    scheduler
        .place_group("protected", &[gpus(2000)], Strategy::Pack, claim(0, false))
        .expect("protected");
    assert_eq!(
        scheduler.plan_preemption(&[gpus(1000)], Strategy::Pack, claim(3, false), 1.0, &[]),
        None
    );
    assert_eq!(
        scheduler
            .plan_preemption(&[gpus(1000)], Strategy::Pack, claim(4, false), 1.0, &[])
            .expect("higher priority may evict"),
        vec!["equal".to_string()]
    );
}

/// The property test's request shape: a CPU core, plus one per GPU wanted.
fn gpu_bundle(gpu_milli: u64) -> Request {
    Request {
        cpu_milli: 1000 + gpu_milli,
        memory_bytes: 1 << 30,
        gpu_milli,
        ..Request::default()
    }
}

/// A shrunk failure of the property test. Evicting "low" lets the three bundles fit (the 1-GPU
/// one on n1, the other two on n0), but placing them afterwards puts the 1-GPU bundle on the
/// freed n0 first and then has no room for the 0.25-GPU one: a plan must be one the placement
/// that follows it carries out, or it evicts work for nothing.
#[test]
fn a_preemption_plan_is_one_the_placement_that_follows_carries_out() {
    let mut scheduler = Scheduler::new();
    scheduler.add_node("n0", node(4, 1));
    scheduler.add_node("n1", node(9, 6));
    scheduler
        .place_group("low", &[gpu_bundle(1000)], Strategy::Pack, claim(0, true))
        .expect("low");
    scheduler
        .place_group(
            "kept",
            &[gpu_bundle(500), gpu_bundle(4000)],
            Strategy::Pack,
            claim(0, false),
        )
        .expect("kept");
    let wanted = [gpu_bundle(250), gpu_bundle(1000), gpu_bundle(500)];
    let urgent = Claim {
        since_s: 4.0,
        ..claim(1, false)
    };
    let before: Vec<NodeUsage> = scheduler.nodes().iter().map(|n| n.2.clone()).collect();
    let plan = scheduler.plan_preemption(&wanted, Strategy::Pack, urgent, 4.0, &[]);
    let after: Vec<NodeUsage> = scheduler.nodes().iter().map(|n| n.2.clone()).collect();
    assert_eq!(before, after, "planning changes nothing");
    match plan {
        Some(victims) => {
            for victim in &victims {
                scheduler.release_holder(victim);
            }
            scheduler
                .place_group("urgent", &wanted, Strategy::Pack, urgent)
                .expect("the plan made room");
        }
        None => {
            // No plan is right only if even evicting every eligible holder would not do.
            scheduler.release_holder("low");
            assert!(scheduler
                .place_group("urgent", &wanted, Strategy::Pack, urgent)
                .is_err());
        }
    }
}

#[test]
fn pending_demand_lists_what_does_not_fit_and_changes_nothing() {
    let mut scheduler = cluster(1, 4);
    let pending = vec![
        (vec![gpus(2000)], Strategy::Pack),
        (vec![gpus(2000)], Strategy::Pack),
        (vec![gpus(1000); 2], Strategy::StrictSpread),
        (vec![gpus(4000)], Strategy::Pack),
    ];
    let demand = scheduler.pending_demand(&pending);
    assert_eq!(demand.gpu_milli, 6000, "{demand:?}");
    assert_eq!(demand.items.len(), 2);
    assert_eq!(scheduler.gpu_allocation().0, 0);
}

#[test]
fn busy_requests_name_the_resource_they_are_short_of() {
    let mut scheduler = cluster(2, 1);
    scheduler.place(&gpus(1000)).expect("one");
    scheduler.place(&gpus(1000)).expect("two");
    let err = scheduler.place(&gpus(1000)).expect_err("full");
    assert!(err.to_string().contains("short of GPU on 2 nodes"), "{err}");
}

#[test]
fn gpu_models_and_node_affinity_restrict_where_requests_go() {
    let mut scheduler = Scheduler::new();
    let mut a100 = node(16, 2);
    for gpu in &mut a100.gpus {
        gpu.model = "A100".to_string();
    }
    scheduler.add_node("h", node(16, 2));
    scheduler.add_node("a", a100);
    let mut wants_a100 = gpus(1000);
    wants_a100.gpu_models = vec!["A100".to_string()];
    assert_eq!(scheduler.place(&wants_a100).expect("a100").node_id, "a");
    wants_a100.gpu_models = vec!["B200".to_string()];
    assert!(matches!(
        scheduler.place(&wants_a100),
        Err(PlacementError::Infeasible(_))
    ));
    let mut pinned = gpus(1000);
    pinned.node_affinity = Some(NodeAffinity {
        node_id: "a".to_string(),
        soft: false,
    });
    assert_eq!(scheduler.place(&pinned).expect("pinned").node_id, "a");
    assert!(matches!(
        scheduler.place(&pinned),
        Err(PlacementError::Busy(_))
    ));
    pinned.node_affinity = Some(NodeAffinity {
        node_id: "a".to_string(),
        soft: true,
    });
    assert_eq!(
        scheduler.place(&pinned).expect("soft falls back").node_id,
        "h"
    );
}

#[test]
fn every_policy_keeps_whole_devices_whole_for_a_second_fraction() {
    for name in POLICY_NAMES.iter().filter(|name| **name != "random") {
        let mut scheduler = Scheduler::with_policy(by_name(name, 1).expect("policy"));
        scheduler.add_node("a", node(16, 2));
        scheduler.observe(&gpus(1000));
        scheduler.observe(&gpus(500));
        let first = scheduler.place(&gpus(500)).expect("first");
        let second = scheduler.place(&gpus(500)).expect("second");
        assert_eq!(first.gpus[0].index, second.gpus[0].index, "{name}");
    }
}

#[test]
fn the_default_policy_keeps_cpu_heavy_work_off_gpu_dense_nodes() {
    let mut scheduler = Scheduler::new();
    scheduler.add_node("dense", node(16, 8));
    scheduler.add_node("roomy", node(128, 8));
    for _ in 0..8 {
        scheduler.observe(&gpus(1000));
    }
    let cpu_only = Request {
        cpu_milli: 12_000,
        ..Request::default()
    };
    scheduler.observe(&cpu_only);
    assert_eq!(scheduler.place(&cpu_only).expect("cpu").node_id, "roomy");
}
