//! Unit tests of the head's state machine: placement orders, restarts, node loss, sessions.

use super::*;
use std::time::Duration;
use troupe_proto::{GpuDevice as ProtoGpu, ResourceRequest};

pub(super) fn node_resources(gpus: u32) -> NodeResources {
    NodeResources {
        cpu_milli: 8000,
        memory_bytes: 1 << 34,
        gpus: (0..gpus)
            .map(|index| ProtoGpu {
                index,
                model: "H100".into(),
            })
            .collect(),
        ..NodeResources::default()
    }
}

/// Registers a new node (no jobs to claim).
pub(super) fn register(
    state: &mut HeadState,
    address: &str,
    hostname: &str,
    resources: NodeResources,
    now: Instant,
) -> (String, Vec<Order>) {
    state.register_node("", address, hostname, resources, &Default::default(), now)
}

pub(super) fn spec(gpu_milli: u64, max_restarts: i32, session: &str) -> CreateActorRequest {
    CreateActorRequest {
        type_name: "t::Actor".into(),
        resources: Some(ResourceRequest {
            cpu_milli: 1000,
            gpu_milli,
            ..ResourceRequest::default()
        }),
        max_restarts,
        max_concurrency: 1,
        owner_session: session.into(),
        binary_hash: "local-x".into(),
        ..CreateActorRequest::default()
    }
}

pub(super) fn started(orders: &[Order]) -> Vec<StartWorkerRequest> {
    orders
        .iter()
        .filter_map(|order| match order {
            Order::Start { request, .. } => Some(request.clone()),
            _ => None,
        })
        .collect()
}

#[test]
fn create_places_and_orders_a_start_with_devices() {
    let mut state = HeadState::default();
    state.open_session("s");
    state.open_session("driver");
    let now = Instant::now();
    register(&mut state, "127.0.0.1:1", "h", node_resources(4), now);
    let (info, orders) = state.create_actor(spec(2000, 0, "s"), now).expect("create");
    let starts = started(&orders);
    assert_eq!(starts.len(), 1);
    assert_eq!(starts[0].gpu_ids.len(), 2);
    assert_eq!(starts[0].actor_id, info.id);
    assert_eq!(state.actors[&info.id].info.state(), ActorState::Starting);
}

#[test]
fn infeasible_requests_fail_at_once() {
    let mut state = HeadState::default();
    state.open_session("s");
    state.open_session("driver");
    state.register_node(
        "",
        "127.0.0.1:1",
        "h",
        node_resources(8),
        &Default::default(),
        Instant::now(),
    );
    let err = state
        .create_actor(spec(16_000, 0, "s"), Instant::now())
        .expect_err("16 GPUs");
    assert_eq!(err.code(), tonic::Code::FailedPrecondition);
    assert!(
        err.message().contains("16 whole devices"),
        "{}",
        err.message()
    );
}

#[test]
fn a_dead_worker_restarts_with_a_new_incarnation_until_the_limit() {
    let mut state = HeadState::default();
    state.open_session("s");
    state.open_session("driver");
    let now = Instant::now();
    register(&mut state, "127.0.0.1:1", "h", node_resources(0), now);
    let (info, _) = state.create_actor(spec(0, 1, "s"), now).expect("create");
    state
        .worker_ready(&info.id, 1, "127.0.0.1:9", 42, "")
        .expect("ready");
    let orders = state.worker_failed(&info.id, 1, Failure::exited("killed"));
    assert_eq!(started(&orders)[0].incarnation, 2);
    assert_eq!(state.actors[&info.id].info.restarts, 1);
    // A stale report about incarnation 1 changes nothing.
    assert!(state
        .worker_failed(&info.id, 1, Failure::exited("late"))
        .is_empty());
    state
        .worker_ready(&info.id, 2, "127.0.0.1:9", 43, "")
        .expect("ready again");
    let orders = state.worker_failed(&info.id, 2, Failure::exited("killed again"));
    assert!(started(&orders).is_empty());
    let actor = &state.actors[&info.id].info;
    assert_eq!(actor.state(), ActorState::Dead);
    assert!(
        actor.death_reason.contains("no restarts left"),
        "{}",
        actor.death_reason
    );
}

#[test]
fn a_silent_node_is_declared_dead_and_its_actors_move() {
    let mut state = HeadState::default();
    state.open_session("s");
    state.open_session("driver");
    let start = Instant::now();
    let (first, _) = register(&mut state, "127.0.0.1:1", "a", node_resources(1), start);
    let (info, _) = state
        .create_actor(spec(1000, 1, "s"), start)
        .expect("create");
    assert_eq!(state.actors[&info.id].info.node_id, first);
    let (second, _) = register(&mut state, "127.0.0.1:2", "b", node_resources(1), start);
    state.heartbeat(&second, &[], start + Duration::from_secs(6));
    let orders = state.check_nodes(start + Duration::from_secs(6), Duration::from_secs(5));
    let starts = started(&orders);
    assert_eq!(starts.len(), 1);
    assert_eq!(state.actors[&info.id].info.node_id, second);
    assert!(!state.nodes[&first].alive);
    let (reregister, _) = state.heartbeat(&first, &[], start + Duration::from_secs(7));
    assert!(reregister, "a node declared dead must register again");
}

#[test]
fn closing_a_session_stops_owned_actors_but_not_detached_ones() {
    let mut state = HeadState::default();
    state.open_session("s");
    state.open_session("driver");
    let now = Instant::now();
    register(&mut state, "127.0.0.1:1", "h", node_resources(0), now);
    let (owned, _) = state
        .create_actor(spec(0, 3, "driver"), now)
        .expect("owned");
    let mut detached_spec = spec(0, 3, "driver");
    detached_spec.detached = true;
    let (detached, _) = state.create_actor(detached_spec, now).expect("detached");
    state.session_closed("driver");
    assert_eq!(state.actors[&owned.id].info.state(), ActorState::Dead);
    assert_ne!(state.actors[&detached.id].info.state(), ActorState::Dead);
}

#[test]
fn names_are_unique_among_live_actors() {
    let mut state = HeadState::default();
    state.open_session("s");
    state.open_session("driver");
    let now = Instant::now();
    register(&mut state, "127.0.0.1:1", "h", node_resources(0), now);
    let mut named = spec(0, 0, "s");
    named.name = "trainer".into();
    let (first, _) = state.create_actor(named.clone(), now).expect("first");
    let err = state
        .create_actor(named.clone(), now)
        .expect_err("duplicate");
    assert_eq!(err.code(), tonic::Code::AlreadyExists);
    state.kill_actor(&first.id, false, "test").expect("kill");
    state
        .create_actor(named, now)
        .expect("name free again after death");
}

#[test]
fn a_closed_session_cannot_own_new_actors() {
    let mut state = HeadState::default();
    let now = Instant::now();
    register(&mut state, "127.0.0.1:1", "h", node_resources(0), now);
    let err = state
        .create_actor(spec(0, 0, "never-opened"), now)
        .expect_err("no session");
    assert_eq!(err.code(), tonic::Code::FailedPrecondition);
    let mut detached = spec(0, 0, "never-opened");
    detached.detached = true;
    state
        .create_actor(detached, now)
        .expect("a detached actor needs no live owner");
}

#[test]
fn workers_that_never_start_back_off_and_constructor_errors_are_final() {
    let mut state = HeadState::default();
    state.open_session("s");
    let now = Instant::now();
    register(&mut state, "127.0.0.1:1", "h", node_resources(0), now);
    let (info, _) = state.create_actor(spec(0, -1, "s"), now).expect("create");
    for incarnation in 1..=3 {
        state.worker_failed(&info.id, incarnation, Failure::exited("exit 127"));
    }
    let actor = &state.actors[&info.id];
    assert!(
        actor.not_before.is_some(),
        "the third failed start backs off"
    );
    assert_eq!(actor.info.state(), ActorState::Restarting);
    let (first, _) = state.create_actor(spec(0, 5, "s"), now).expect("create");
    state
        .worker_ready(&first.id, 1, "", 1, "bad config")
        .expect("report");
    assert_eq!(state.actors[&first.id].info.state(), ActorState::Dead);
    assert!(state.actors[&first.id]
        .info
        .death_reason
        .contains("constructor failed: bad config"));
}

#[test]
fn a_heartbeat_without_a_live_worker_fails_its_actor() {
    let mut state = HeadState::default();
    state.open_session("s");
    let start = Instant::now();
    let (node, _) = register(&mut state, "127.0.0.1:1", "h", node_resources(0), start);
    let (info, _) = state.create_actor(spec(0, 1, "s"), start).expect("create");
    state
        .worker_ready(&info.id, 1, "127.0.0.1:9", 7, "")
        .expect("ready");
    let listed = vec![format!("{}:1", info.id)];
    state.heartbeat(&node, &listed, Instant::now());
    assert_eq!(state.actors[&info.id].info.state(), ActorState::Alive);
    let later = Instant::now() + Duration::from_secs(3);
    let (_, orders) = state.heartbeat(&node, &[], later);
    assert_eq!(
        started(&orders).len(),
        1,
        "restarted once the node stopped listing it"
    );
    let stale = vec![format!("{}:1", info.id)];
    let (_, orders) = state.heartbeat(&node, &stale, later);
    assert!(
        orders
            .iter()
            .any(|order| matches!(order, Order::Stop { incarnation: 1, .. })),
        "a stale worker is stopped"
    );
}

#[test]
fn a_gang_is_placed_all_together_or_not_at_all() {
    let mut state = HeadState::default();
    state.open_session("s");
    let now = Instant::now();
    register(&mut state, "127.0.0.1:1", "h", node_resources(4), now);
    let member = |gpus: u64| CreateActorRequest {
        gang: "g1".into(),
        gang_size: 3,
        ..spec(gpus, 0, "s")
    };
    // Three members of 2 GPUs on a 4-GPU node: two would fit, the gang does not.
    let mut ids = Vec::new();
    for _ in 0..3 {
        let (info, orders) = state.create_actor(member(2000), now).expect("create");
        assert!(started(&orders).is_empty(), "no member starts alone");
        ids.push(info.id);
    }
    for id in &ids {
        let actor = &state.actors[id];
        assert_eq!(actor.info.state(), ActorState::Pending);
        assert!(
            actor.info.pending_reason.contains("all together"),
            "{}",
            actor.info.pending_reason
        );
    }
    assert_eq!(
        state
            .scheduler
            .usage(state.nodes.keys().next().unwrap())
            .unwrap()
            .gpu_milli
            .iter()
            .sum::<u64>(),
        0
    );
    // A second node makes room: all three start in one pass.
    let (_, orders) = register(&mut state, "127.0.0.1:2", "h2", node_resources(4), now);
    assert_eq!(started(&orders).len(), 3);
}

#[test]
fn dead_actors_beyond_the_history_are_forgotten_oldest_first() {
    let mut state = HeadState {
        dead_actor_history: Some(2),
        ..HeadState::default()
    };
    state.open_session("driver");
    let now = Instant::now();
    // A node with one CPU: the first actor holds it, the others wait and are killed without
    // ever holding resources.
    let one_cpu = NodeResources {
        cpu_milli: 1000,
        ..node_resources(0)
    };
    register(&mut state, "127.0.0.1:1", "h", one_cpu, now);
    let (alive, _) = state
        .create_actor(spec(0, 0, "driver"), now)
        .expect("alive");
    let mut ids = Vec::new();
    for _ in 0..5 {
        let (waiting, _) = state
            .create_actor(spec(0, 0, "driver"), now)
            .expect("created");
        ids.push(waiting.id);
    }
    for id in &ids {
        state.kill_actor(id, false, "test").expect("killed");
    }
    state.schedule(now);
    for forgotten in &ids[..3] {
        assert!(!state.actors.contains_key(forgotten), "{forgotten} kept");
    }
    for kept in &ids[3..] {
        assert_eq!(state.actors[kept].info.state(), ActorState::Dead);
    }
    assert_ne!(state.actors[&alive.id].info.state(), ActorState::Dead);
}
