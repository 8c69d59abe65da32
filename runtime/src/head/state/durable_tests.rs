//! Unit tests of the head's records: a state written as records and restored in a fresh head
//! state has the same actors, names, reservations, placement groups, queue and key-value
//! entries; a restored node's first heartbeat settles its workers; owner sessions that never
//! reconnect end; unchanged records are not written again; a record that does not decode is
//! refused by name.

use super::tests::{node_resources, register, spec};
use super::*;
use crate::head::store::{Change, Snapshot, Table};
use std::time::Duration;
use troupe_proto::{CreatePlacementGroupRequest, PlacementGroupState, ResourceRequest};

/// What a disk would hold after applying `changes` in order.
#[derive(Default)]
struct Disk(BTreeMap<Table, BTreeMap<String, Vec<u8>>>);

impl Disk {
    fn apply(&mut self, changes: Vec<Change>) {
        for change in changes {
            let table = self.0.entry(change.table).or_default();
            match change.value {
                Some(bytes) => table.insert(change.key, bytes),
                None => table.remove(&change.key),
            };
        }
    }

    fn snapshot(&self) -> Snapshot {
        Table::ALL
            .iter()
            .map(|table| {
                let rows = self
                    .0
                    .get(table)
                    .map(|rows| rows.clone().into_iter().collect())
                    .unwrap_or_default();
                (*table, rows)
            })
            .collect()
    }
}

fn fresh_state() -> HeadState {
    let mut state = HeadState::default();
    state.scheduler.track_holder_changes();
    state
}

fn restored(disk: &Disk, now: Instant) -> HeadState {
    let mut state = fresh_state();
    state
        .restore(disk.snapshot(), Duration::from_secs(10), now)
        .expect("restore");
    state
}

fn named(mut request: CreateActorRequest, name: &str) -> CreateActorRequest {
    request.name = name.to_string();
    request
}

/// A node with 4 GPUs; a named trainer (2 GPUs) alive; a pending actor that wants 4 GPUs; a
/// placement group of one 1-GPU bundle; a detached actor; a key-value entry.
struct World {
    state: HeadState,
    disk: Disk,
    node: String,
    trainer: String,
    waiting: String,
    detached: String,
    group: String,
    now: Instant,
}

fn world() -> World {
    let mut state = fresh_state();
    let now = Instant::now();
    state.open_session("driver");
    let (node, _) = register(&mut state, "127.0.0.1:1", "h", node_resources(4), now);
    let (trainer, _) = state
        .create_actor(named(spec(2000, 3, "driver"), "trainer"), now)
        .expect("trainer");
    state
        .worker_ready(&trainer.id, 1, "127.0.0.1:9", 42, "")
        .expect("ready");
    let (waiting, _) = state
        .create_actor(spec(4000, 0, "driver"), now)
        .expect("waiting");
    let mut detached_spec = spec(0, 0, "driver");
    detached_spec.detached = true;
    let (detached, _) = state.create_actor(detached_spec, now).expect("detached");
    state
        .worker_ready(&detached.id, 1, "127.0.0.1:10", 43, "")
        .expect("ready");
    let (group, _) = state
        .create_group(
            CreatePlacementGroupRequest {
                bundles: vec![ResourceRequest {
                    cpu_milli: 1000,
                    gpu_milli: 1000,
                    ..ResourceRequest::default()
                }],
                strategy: "PACK".into(),
                owner_session: "driver".into(),
                ..CreatePlacementGroupRequest::default()
            },
            now,
        )
        .expect("group");
    state
        .kv
        .insert("collective/g/0".into(), bytes::Bytes::from_static(b"addr"));
    let mut disk = Disk::default();
    disk.apply(state.take_changes(now));
    World {
        state,
        disk,
        node,
        trainer: trainer.id,
        waiting: waiting.id,
        detached: detached.id,
        group: group.id,
        now,
    }
}

#[test]
fn a_restored_state_has_what_the_old_one_had() {
    let world = world();
    let old = &world.state;
    let new = restored(&world.disk, world.now);
    assert_eq!(new.nodes.len(), 1);
    assert_eq!(new.names.get("trainer"), Some(&world.trainer));
    for id in [&world.trainer, &world.waiting, &world.detached] {
        assert_eq!(new.actors[id].info, old.actors[id].info, "actor {id}");
        assert_eq!(new.actors[id].allocation, old.actors[id].allocation);
    }
    assert_eq!(new.actors[&world.trainer].info.state(), ActorState::Alive);
    assert_eq!(
        new.scheduler.usage(&world.node),
        old.scheduler.usage(&world.node),
        "the same reservations"
    );
    assert_eq!(new.pending.ordered(), old.pending.ordered());
    assert_eq!(new.groups[&world.group].info, old.groups[&world.group].info);
    assert_eq!(
        new.groups[&world.group].info.state(),
        PlacementGroupState::PlacementGroupCreated
    );
    assert_eq!(
        new.kv.get("collective/g/0").map(|v| v.to_vec()),
        Some(b"addr".to_vec())
    );
    assert!(new.reconnecting_sessions.contains_key("driver"));
}

#[test]
fn new_work_after_a_restore_queues_behind_the_restored_queue() {
    let world = world();
    let mut new = restored(&world.disk, world.now);
    let (later, _) = new
        .create_actor(spec(4000, 0, "driver"), world.now)
        .expect("create");
    let order: Vec<Pending> = new.pending.ordered().into_iter().map(|(p, _)| p).collect();
    let waiting_at = order
        .iter()
        .position(|p| *p == Pending::Actor(world.waiting.clone()));
    let later_at = order
        .iter()
        .position(|p| *p == Pending::Actor(later.id.clone()));
    assert!(waiting_at < later_at, "{order:?}");
}

#[test]
fn the_first_heartbeat_after_a_restore_settles_the_nodes_workers() {
    let world = world();
    let mut new = restored(&world.disk, world.now);
    let incarnation = new.actors[&world.trainer].info.incarnation;
    // The node still runs the detached actor, and a worker the head has no record of; the
    // trainer's worker is gone.
    let running = vec![
        format!("{}:1", world.detached),
        "actor-unknown:1".to_string(),
    ];
    let (reregister, orders) = new.heartbeat(&world.node, &running, world.now);
    assert!(!reregister);
    let stops: Vec<&str> = orders
        .iter()
        .filter_map(|order| match order {
            Order::Stop { actor_id, .. } => Some(actor_id.as_str()),
            _ => None,
        })
        .collect();
    assert_eq!(stops, ["actor-unknown"], "{orders:?}");
    let trainer = &new.actors[&world.trainer];
    assert_eq!(
        trainer.info.restarts, 1,
        "restarted at once: {:?}",
        trainer.info
    );
    assert!(
        trainer.info.incarnation > incarnation || trainer.info.state() == ActorState::Restarting
    );
    assert_eq!(new.actors[&world.detached].info.state(), ActorState::Alive);
    // Later heartbeats give workers their usual grace again.
    let (_, orders) = new.heartbeat(&world.node, &running, world.now);
    assert!(
        orders
            .iter()
            .all(|order| !matches!(order, Order::Start { .. })),
        "{orders:?}"
    );
}

#[test]
fn owner_sessions_that_never_reconnect_end_after_their_grace() {
    let world = world();
    let mut new = restored(&world.disk, world.now);
    assert!(!new.sessions_expired(world.now));
    let later = world.now + Duration::from_secs(11);
    assert!(new.sessions_expired(later));
    new.expire_sessions(later);
    assert_eq!(new.actors[&world.trainer].info.state(), ActorState::Dead);
    assert_eq!(new.actors[&world.detached].info.state(), ActorState::Alive);
    assert!(!new.names.contains_key("trainer"));
}

#[test]
fn a_session_that_reconnects_keeps_its_actors() {
    let world = world();
    let mut new = restored(&world.disk, world.now);
    new.open_session("driver");
    let later = world.now + Duration::from_secs(11);
    assert!(!new.sessions_expired(later));
    new.expire_sessions(later);
    assert_eq!(new.actors[&world.trainer].info.state(), ActorState::Alive);
}

#[test]
fn unchanged_records_are_not_written_again() {
    let mut world = world();
    let running = vec![
        format!("{}:1", world.trainer),
        format!("{}:1", world.detached),
    ];
    world.state.heartbeat(&world.node, &running, world.now);
    assert!(world.state.take_changes(world.now).is_empty());
    // A restored state writes nothing back either.
    let mut new = restored(&world.disk, world.now);
    let written: Vec<(Table, String)> = new
        .take_changes(world.now)
        .into_iter()
        .map(|change| (change.table, change.key))
        .collect();
    assert!(written.is_empty(), "{written:?}");
    // A removal is written.
    new.kv.remove("collective/g/0");
    let changes = new.take_changes(world.now);
    assert_eq!(changes.len(), 1);
    assert_eq!(changes[0].value, None);
}

#[test]
fn a_record_that_does_not_decode_is_refused_by_name() {
    let mut world = world();
    world.disk.apply(vec![Change {
        table: Table::Actors,
        key: "actor-broken".into(),
        value: Some(vec![0xff; 7]),
    }]);
    let mut state = fresh_state();
    let err = state
        .restore(world.disk.snapshot(), Duration::from_secs(10), world.now)
        .expect_err("refused")
        .to_string();
    assert!(err.contains("actor-broken"), "{err}");
    assert!(err.contains("actors"), "{err}");
}

#[test]
fn a_dead_node_stays_dead_after_a_restore() {
    let mut world = world();
    let (second, _) = register(
        &mut world.state,
        "127.0.0.1:2",
        "h2",
        node_resources(4),
        world.now,
    );
    world.disk.apply(world.state.take_changes(world.now));
    let later = world.now + Duration::from_secs(60);
    // Only the first node keeps heartbeating.
    let running = vec![
        format!("{}:1", world.trainer),
        format!("{}:1", world.detached),
    ];
    world.state.heartbeat(&world.node, &running, later);
    world.state.check_nodes(later, Duration::from_secs(5));
    assert!(!world.state.nodes[&second].alive);
    world.disk.apply(world.state.take_changes(later));
    let new = restored(&world.disk, later);
    assert!(!new.nodes[&second].alive, "restored as dead");
    assert!(!new.scheduler.has_node(&second), "never placed on");
    assert!(new.scheduler.has_node(&world.node));
}

#[test]
fn work_placed_after_a_restore_waits_for_its_start_as_usual() {
    let world = world();
    let mut new = restored(&world.disk, world.now);
    // Room for one more 1-GPU actor: placed on the restored node before it heartbeats.
    let (fresh, orders) = new
        .create_actor(spec(1000, 0, "driver"), world.now)
        .expect("create");
    assert!(
        orders
            .iter()
            .any(|order| matches!(order, Order::Start { .. })),
        "{orders:?}"
    );
    assert_eq!(new.actors[&fresh.id].info.state(), ActorState::Starting);
    // The node's first heartbeat does not list it yet (its start order is on the way): it is
    // not failed, while the trainer, which the records had there, is.
    let running = vec![format!("{}:1", world.detached)];
    new.heartbeat(&world.node, &running, world.now);
    assert_eq!(new.actors[&fresh.id].info.state(), ActorState::Starting);
    assert_eq!(new.actors[&world.trainer].info.restarts, 1);
}
