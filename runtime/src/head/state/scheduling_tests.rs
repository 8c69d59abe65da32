//! Unit tests of scheduling in the head's state: placement groups, priorities and preemption,
//! node loss of groups, pending reasons and pending demand.

use super::tests::{node_resources, register, spec, started};
use super::*;
use std::time::Duration;
use troupe_proto::{CreatePlacementGroupRequest, PlacementGroupState, ResourceRequest};

fn gpus(milli: u64) -> ResourceRequest {
    ResourceRequest {
        cpu_milli: 1000,
        gpu_milli: milli,
        ..ResourceRequest::default()
    }
}

fn group(bundles: usize, gpu_milli: u64, strategy: &str) -> CreatePlacementGroupRequest {
    CreatePlacementGroupRequest {
        bundles: vec![gpus(gpu_milli); bundles],
        strategy: strategy.to_string(),
        owner_session: "s".to_string(),
        ..CreatePlacementGroupRequest::default()
    }
}

fn with_priority(
    mut request: CreateActorRequest,
    priority: i32,
    preemptible: bool,
) -> CreateActorRequest {
    request.priority = priority;
    request.preemptible = preemptible;
    request
}

fn state_with_nodes(nodes: usize, gpus_each: u32) -> (HeadState, Vec<String>, Instant) {
    let mut state = HeadState::default();
    state.open_session("s");
    let now = Instant::now();
    let ids = (0..nodes)
        .map(|i| {
            register(
                &mut state,
                &format!("127.0.0.1:{}", i + 1),
                "h",
                node_resources(gpus_each),
                now,
            )
            .0
        })
        .collect();
    (state, ids, now)
}

#[test]
fn a_group_is_placed_and_actors_run_inside_its_bundles() {
    let (mut state, _, now) = state_with_nodes(2, 4);
    let (info, _) = state
        .create_group(group(2, 2000, "STRICT_SPREAD"), now)
        .expect("group");
    assert_eq!(info.state(), PlacementGroupState::PlacementGroupCreated);
    let nodes: Vec<&str> = info.bundles.iter().map(|b| b.node_id.as_str()).collect();
    assert_ne!(nodes[0], nodes[1], "STRICT_SPREAD");
    let mut inside = spec(1000, 0, "s");
    inside.placement_group_id = info.id.clone();
    inside.bundle_index = Some(1);
    let (actor, orders) = state.create_actor(inside.clone(), now).expect("actor");
    assert_eq!(started(&orders).len(), 1);
    assert_eq!(actor.node_id, nodes[1]);
    let reserved: Vec<u32> = info.bundles[1].gpus.iter().map(|g| g.index).collect();
    assert!(
        reserved.contains(&actor.gpus[0].index),
        "runs on the bundle's devices"
    );
    // The bundle has two GPUs: a second actor fits, a third waits for room in the group.
    state.create_actor(inside.clone(), now).expect("second");
    let (third, _) = state.create_actor(inside.clone(), now).expect("third");
    assert_eq!(third.state(), ActorState::Pending);
    assert!(
        third.pending_reason.contains("placement group"),
        "{}",
        third.pending_reason
    );
    // Too big for any bundle: refused at once.
    let mut huge = inside;
    huge.resources = Some(gpus(4000));
    let err = state.create_actor(huge, now).expect_err("too big");
    assert!(err.message().contains("no bundle"), "{}", err.message());
}

#[test]
fn removing_a_group_frees_everything_and_places_what_waited_in_the_same_call() {
    let (mut state, _, now) = state_with_nodes(1, 4);
    let (info, _) = state
        .create_group(group(4, 1000, "PACK"), now)
        .expect("group");
    assert_eq!(info.state(), PlacementGroupState::PlacementGroupCreated);
    let (waiting, orders) = state.create_actor(spec(2000, 0, "s"), now).expect("actor");
    assert!(started(&orders).is_empty());
    assert!(
        waiting.pending_reason.contains("short of GPU"),
        "{}",
        waiting.pending_reason
    );
    let orders = state.remove_group(&info.id, now).expect("remove");
    let starts = started(&orders);
    assert_eq!(
        starts.len(),
        1,
        "placed by the removal itself, not by a later poll"
    );
    assert_eq!(starts[0].actor_id, waiting.id);
    assert_eq!(
        state.group_info(&info.id).expect("kept").state(),
        PlacementGroupState::PlacementGroupRemoved
    );
}

#[test]
fn an_infeasible_group_is_refused_with_the_reason() {
    let (mut state, _, now) = state_with_nodes(2, 4);
    let err = state
        .create_group(group(3, 1000, "STRICT_SPREAD"), now)
        .expect_err("3 > 2 nodes");
    assert!(err.message().contains("STRICT_SPREAD"), "{}", err.message());
    let err = state
        .create_group(group(2, 4000, "STRICT_PACK"), now)
        .expect_err("8 GPUs on one node");
    assert!(err.message().contains("STRICT_PACK"), "{}", err.message());
    let err = state
        .create_group(group(1, 1000, "DIAGONAL"), now)
        .expect_err("bad strategy");
    assert!(err.message().contains("DIAGONAL"), "{}", err.message());
}

#[test]
fn a_high_priority_actor_preempts_a_low_one_which_goes_back_to_pending() {
    let (mut state, _, now) = state_with_nodes(1, 2);
    let (low, _) = state
        .create_actor(with_priority(spec(2000, 0, "s"), 0, true), now)
        .expect("low");
    let (protected, _) = state
        .create_actor(with_priority(spec(0, 0, "s"), 0, false), now)
        .expect("cpu only");
    assert_eq!(
        state.actors[&protected.id].info.state(),
        ActorState::Starting
    );
    let (high, orders) = state
        .create_actor(with_priority(spec(2000, 0, "s"), 5, false), now)
        .expect("high");
    let stops: Vec<u64> = orders
        .iter()
        .filter_map(|o| match o {
            Order::Stop {
                actor_id, grace_ms, ..
            } if *actor_id == low.id => Some(*grace_ms),
            _ => None,
        })
        .collect();
    assert_eq!(
        stops,
        vec![2000],
        "the victim is stopped with a grace period"
    );
    assert_eq!(high.state(), ActorState::Starting);
    let victim = &state.actors[&low.id].info;
    assert_eq!(victim.state(), ActorState::Pending);
    assert_eq!(victim.preemptions, 1);
    assert!(
        victim.pending_reason.contains("preempted"),
        "{}",
        victim.pending_reason
    );
    // Equal priority never preempts.
    let (equal, _) = state
        .create_actor(with_priority(spec(1000, 0, "s"), 5, false), now)
        .expect("equal");
    assert_eq!(equal.state(), ActorState::Pending);
    // When the high-priority actor goes, the older equal-priority one is placed first.
    let incarnation = state.actors[&high.id].info.incarnation;
    let orders = state.worker_failed(&high.id, incarnation, Failure::exited("done"));
    let placed: Vec<String> = started(&orders).into_iter().map(|s| s.actor_id).collect();
    assert_eq!(
        placed,
        vec![equal.id.clone()],
        "priority before age: the victim waits"
    );
}

#[test]
fn a_lost_bundle_is_placed_again_ahead_of_newer_work_of_equal_priority() {
    let (mut state, ids, now) = state_with_nodes(3, 1);
    let (info, _) = state
        .create_group(group(2, 1000, "STRICT_SPREAD"), now)
        .expect("group");
    let (newer, _) = state
        .create_actor(spec(1000, 0, "s"), now)
        .expect("fills the third");
    assert_eq!(newer.state(), ActorState::Starting);
    let (waiting, _) = state.create_actor(spec(1000, 0, "s"), now).expect("waits");
    assert_eq!(waiting.state(), ActorState::Pending);
    // The group's first node dies; then the newer actor's node frees up.
    let dead = info.bundles[0].node_id.clone();
    if let Some(node) = state.nodes.get_mut(&dead) {
        node.last_heartbeat = now - Duration::from_secs(60);
    }
    state.check_nodes(now, Duration::from_secs(5));
    let rescheduling = state.group_info(&info.id).expect("group");
    assert_eq!(
        rescheduling.state(),
        PlacementGroupState::PlacementGroupRescheduling
    );
    let incarnation = state.actors[&newer.id].info.incarnation;
    state.worker_failed(&newer.id, incarnation, Failure::exited("done"));
    let again = state.group_info(&info.id).expect("group");
    assert_eq!(
        again.state(),
        PlacementGroupState::PlacementGroupCreated,
        "{}",
        again.pending_reason
    );
    assert_eq!(again.reschedules, 1);
    assert!(again
        .bundles
        .iter()
        .all(|b| b.node_id != dead && !b.node_id.is_empty()));
    assert_eq!(
        state.actors[&waiting.id].info.state(),
        ActorState::Pending,
        "the group went first"
    );
    let _ = ids;
}

#[test]
fn a_group_can_ask_to_restart_whole_after_a_node_loss() {
    let (mut state, _, now) = state_with_nodes(3, 1);
    let mut spec_whole = group(2, 1000, "SPREAD");
    spec_whole.restart_whole_on_node_loss = true;
    let (info, _) = state.create_group(spec_whole, now).expect("group");
    let kept = info.bundles[1].node_id.clone();
    let dead = info.bundles[0].node_id.clone();
    if let Some(node) = state.nodes.get_mut(&dead) {
        node.last_heartbeat = now - Duration::from_secs(60);
    }
    state.check_nodes(now, Duration::from_secs(5));
    let again = state.group_info(&info.id).expect("group");
    assert_eq!(again.state(), PlacementGroupState::PlacementGroupCreated);
    assert_eq!(again.reschedules, 1);
    assert!(again.bundles.iter().all(|b| b.node_id != dead));
    let _ = kept;
}

#[test]
fn pending_demand_reports_what_the_cluster_lacks() {
    let (mut state, _, now) = state_with_nodes(1, 2);
    state.create_actor(spec(2000, 0, "s"), now).expect("fills");
    state.create_actor(spec(1000, 0, "s"), now).expect("waits");
    state
        .create_group(group(2, 1000, "STRICT_PACK"), now)
        .expect("waits too");
    let demand = state.pending_demand();
    assert_eq!(demand.gpu_milli, 3000, "{demand:?}");
    assert_eq!(
        state.scheduler.gpu_allocation().0,
        2000,
        "computing demand changes nothing"
    );
}

#[test]
fn waiting_for_room_inside_a_group_does_not_hold_back_other_work() {
    let (mut state, _, now) = state_with_nodes(1, 2);
    let mut one_cpu = group(1, 0, "PACK");
    one_cpu.bundles[0].cpu_milli = 1000;
    let (info, _) = state.create_group(one_cpu, now).expect("group");
    let mut inside = spec(0, 0, "s");
    inside.placement_group_id = info.id.clone();
    state
        .create_actor(inside.clone(), now)
        .expect("fills the bundle");
    let (waiting, _) = state.create_actor(inside, now).expect("waits for room");
    assert_eq!(waiting.state(), ActorState::Pending);
    let later = now + Duration::from_secs(10);
    let (other, _) = state
        .create_actor(spec(1000, 0, "s"), later)
        .expect("other");
    assert_eq!(
        other.state(),
        ActorState::Starting,
        "{}",
        other.pending_reason
    );
}

#[test]
fn a_request_pinned_to_a_full_node_evicts_nobody_elsewhere() {
    let (mut state, ids, now) = state_with_nodes(2, 1);
    let mut protected = spec(1000, 0, "s");
    protected.resources.as_mut().expect("resources").node_id = ids[0].clone();
    let (protected, _) = state.create_actor(protected, now).expect("protected");
    assert_eq!(protected.node_id, ids[0]);
    let (victim, _) = state
        .create_actor(with_priority(spec(1000, 0, "s"), 0, true), now)
        .expect("preemptible");
    assert_eq!(victim.node_id, ids[1]);
    let mut pinned = with_priority(spec(1000, 0, "s"), 9, false);
    pinned.resources.as_mut().expect("resources").node_id = ids[0].clone();
    let (pinned, _) = state.create_actor(pinned, now).expect("pinned");
    assert_eq!(pinned.state(), ActorState::Pending);
    let victim = &state.actors[&victim.id].info;
    assert_eq!(
        victim.preemptions, 0,
        "evicting on another node would not help"
    );
    assert_eq!(victim.state(), ActorState::Starting);
}

#[test]
fn bad_bundles_are_refused_by_name() {
    let (mut state, _, now) = state_with_nodes(1, 2);
    let err = state
        .create_group(group(1, 1500, "PACK"), now)
        .expect_err("1.5 GPUs");
    assert!(err.message().contains("bundle 0"), "{}", err.message());
    let err = state
        .create_group(group(0, 1000, "PACK"), now)
        .expect_err("no bundles");
    assert!(err.message().contains("bundles"), "{}", err.message());
}
