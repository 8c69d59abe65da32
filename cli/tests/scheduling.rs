//! Multi-process integration tests of scheduling: a head and two node agents (4 GPUs each) as
//! separate `troupe` processes on loopback, this test binary as the driver and every worker.
//! Covers placement groups (actors inside bundles, removal freeing everything and placing what
//! waited in the same call), priorities with preemption of real workers, infeasible groups, and
//! pending reasons and demand in `troupe status --json`.
//!
//! Run: `cargo test -p troupe --test scheduling` (add a scenario name to run only that one).

#[macro_use]
mod support;

use std::time::{Duration, Instant};
use support::{http_get, wait_for_state, wait_gone, Fixture, Scenario};
use troupe::proto::{ActorState, PlacementGroupState};
use troupe::{ActorHandle, Cluster, PlacementGroupSpec, SpawnOptions};

/// An actor that reports the process it runs in.
pub struct Sleeper;

#[troupe::actor]
impl Sleeper {
    pub fn new() -> Self {
        Sleeper
    }

    pub fn pid(&self) -> u32 {
        std::process::id()
    }

    pub fn gpus(&self) -> String {
        std::env::var("CUDA_VISIBLE_DEVICES").unwrap_or_default()
    }
}

struct World {
    fixture: Fixture,
    cluster: Cluster,
}

fn gpus(count: f64) -> SpawnOptions {
    SpawnOptions::new().num_cpus(0.25).num_gpus(count)
}

async fn placement_group_removal_places_waiting_work(world: &World) -> anyhow::Result<()> {
    let cluster = &world.cluster;
    let spec = PlacementGroupSpec {
        name: "trainer-gang".into(),
        ..PlacementGroupSpec::new(vec![gpus(4.0), gpus(4.0)], "STRICT_SPREAD")
    };
    let group = cluster.create_placement_group(spec).await?;
    let info = group.ready(Duration::from_secs(10)).await?;
    anyhow::ensure!(
        info.bundles[0].node_id != info.bundles[1].node_id,
        "{info:?}"
    );
    let inside =
        Sleeper::spawn(cluster, group.bundle(Some(1)).num_cpus(0.25).num_gpus(2.0)).await?;
    inside.pid().await?;
    let inside_info = cluster.actor_info(&inside).await?;
    anyhow::ensure!(
        inside_info.node_id == info.bundles[1].node_id,
        "runs on its bundle's node"
    );
    let reserved: Vec<u32> = info.bundles[1].gpus.iter().map(|g| g.index).collect();
    let seen = inside.gpus().await?;
    for device in seen.split(',') {
        anyhow::ensure!(
            reserved.contains(&device.parse()?),
            "device {device} not in the bundle {reserved:?}"
        );
    }
    // Every GPU is reserved: an outside actor waits and says what it is short of.
    let outside = Sleeper::spawn(cluster, gpus(1.0)).await?;
    let pending = wait_for_state(
        cluster,
        &outside,
        ActorState::Pending,
        Duration::from_secs(5),
    )
    .await?;
    anyhow::ensure!(
        pending.pending_reason.contains("short of GPU"),
        "{}",
        pending.pending_reason
    );
    let status = world.fixture.status_json()?;
    let listed = status["actors"]
        .as_array()
        .and_then(|a| a.iter().find(|a| a["id"] == outside.actor_ref().id()))
        .ok_or_else(|| anyhow::anyhow!("status lacks the pending actor"))?;
    anyhow::ensure!(
        listed["pending_reason"]
            .as_str()
            .unwrap_or("")
            .contains("short of GPU"),
        "{listed}"
    );
    anyhow::ensure!(
        status["pending_demand"]["gpus"] == 1.0,
        "demand: {}",
        status["pending_demand"]
    );
    anyhow::ensure!(
        status["placement_groups"][0]["state"] == "created",
        "{}",
        status["placement_groups"]
    );
    anyhow::ensure!(
        status["policy"] == "fragmentation",
        "policy: {}",
        status["policy"]
    );
    // Removal frees both bundles at once; the waiting actor is placed by the removal itself.
    let removing = Instant::now();
    group.remove().await?;
    let after = cluster.actor_info(&outside).await?;
    let placed_within = removing.elapsed();
    anyhow::ensure!(
        after.state() != ActorState::Pending,
        "still pending right after the removal: {}",
        after.pending_reason
    );
    println!(
        "    waiting actor placed {:.2} ms after the removal was sent (RPC round trips included)",
        placed_within.as_secs_f64() * 1e3
    );
    outside.pid().await?;
    let gone = wait_for_state(cluster, &inside, ActorState::Dead, Duration::from_secs(10)).await?;
    anyhow::ensure!(
        gone.death_reason.contains("placement group"),
        "{}",
        gone.death_reason
    );
    anyhow::ensure!(
        group.info().await?.state() == PlacementGroupState::PlacementGroupRemoved,
        "removed"
    );
    cluster.kill(&outside).await?;
    Ok(())
}

async fn preemption_evicts_lower_priority_workers(world: &World) -> anyhow::Result<()> {
    let cluster = &world.cluster;
    let low: Vec<SleeperHandle> = futures::future::try_join_all(
        (0..2).map(|_| Sleeper::spawn(cluster, gpus(4.0).priority(0).preemptible(true))),
    )
    .await?;
    let mut low_pids = Vec::new();
    for actor in &low {
        low_pids.push(actor.pid().await?);
    }
    let high = Sleeper::spawn(cluster, gpus(4.0).priority(10)).await?;
    let started = Instant::now();
    high.pid().await?;
    println!(
        "    high-priority actor answered {:.0} ms after it was spawned",
        started.elapsed().as_secs_f64() * 1e3
    );
    let mut evicted = None;
    for (actor, pid) in low.iter().zip(&low_pids) {
        let info = cluster.actor_info(actor).await?;
        if info.preemptions == 1 {
            anyhow::ensure!(
                info.state() == ActorState::Pending,
                "victim state {:?}",
                info.state()
            );
            anyhow::ensure!(
                info.pending_reason.contains("preempted"),
                "{}",
                info.pending_reason
            );
            evicted = Some((actor, *pid));
        }
    }
    let (victim, old_pid) =
        evicted.ok_or_else(|| anyhow::anyhow!("no low-priority actor was preempted"))?;
    wait_gone(
        old_pid,
        Duration::from_secs(10),
        "the victim's worker still runs",
    )
    .await?;
    let metrics = http_get(&world.fixture.metrics_address, "/metrics").await?;
    anyhow::ensure!(
        metrics.contains("troupe_preemptions_total 1"),
        "metrics:\n{metrics}"
    );
    // An equal priority never preempts: a second low actor just waits.
    cluster.kill(&high).await?;
    let back = wait_for_state(cluster, victim, ActorState::Alive, Duration::from_secs(20)).await?;
    anyhow::ensure!(
        back.incarnation == 2,
        "placed again as a new incarnation: {back:?}"
    );
    let new_pid = victim.pid().await?;
    anyhow::ensure!(new_pid != old_pid, "a new worker");
    for actor in &low {
        cluster.kill(actor).await?;
    }
    Ok(())
}

async fn infeasible_groups_fail_at_once(world: &World) -> anyhow::Result<()> {
    let spec = PlacementGroupSpec::new(vec![gpus(1.0); 3], "STRICT_SPREAD");
    let err = world
        .cluster
        .create_placement_group(spec)
        .await
        .err()
        .ok_or_else(|| anyhow::anyhow!("three STRICT_SPREAD bundles on two nodes were accepted"))?;
    anyhow::ensure!(
        err.to_string().contains("STRICT_SPREAD needs 3 nodes"),
        "{err}"
    );
    let spec = PlacementGroupSpec::new(vec![gpus(8.0)], "PACK");
    let err = world
        .cluster
        .create_placement_group(spec)
        .await
        .err()
        .ok_or_else(|| anyhow::anyhow!("8 GPUs accepted"))?;
    anyhow::ensure!(err.to_string().contains("8 whole devices"), "{err}");
    Ok(())
}

fn scenarios<'a>() -> Vec<Scenario<'a, World>> {
    vec![
        scenario!(placement_group_removal_places_waiting_work),
        scenario!(preemption_evicts_lower_priority_workers),
        scenario!(infeasible_groups_fail_at_once),
    ]
}

fn main() -> std::process::ExitCode {
    troupe::init();
    let runtime = match support::tokio_runtime() {
        Ok(runtime) => runtime,
        Err(code) => return code,
    };
    let passed = runtime.block_on(async {
        let node = vec!["--gpus", "4", "--gpu-model", "H100", "--cpus", "8"];
        run_cluster_scenarios!(&[node.clone(), node], World, scenarios)
    });
    support::exit_code(passed)
}
