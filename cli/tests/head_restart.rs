//! The head as a single point of failure, tested with real processes: a head and two node
//! agents as separate `troupe` processes, this test binary as the driver and every worker. The
//! head is killed with SIGKILL and started again on the same port and data directory; actors keep
//! their workers (same pids) and answer calls during the outage, names, placement groups and
//! key-value entries are still there, a spawn made during the outage waits for the head, and
//! what changed while the head was down (a worker killed, a node agent lost) is found and
//! repaired once it is back. A state file that is not one is refused with what to do.
//!
//! Run: `cargo test -p troupe-cli --test head_restart` (add a scenario name to run only that one).
//! Each scenario prints its figures (outage, restart to first spawn answered, calls answered).

#[macro_use]
mod support;

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};
use support::{kill9, pid_alive, Fixture, Scenario};
use troupe::proto::{ActorState, PlacementGroupState};
use troupe::{Cluster, PlacementGroupSpec, SpawnOptions};

/// A counter that reports its process.
pub struct Keeper {
    count: u64,
}

#[troupe::actor]
impl Keeper {
    pub fn new() -> Self {
        Keeper { count: 0 }
    }

    pub fn bump(&mut self) -> u64 {
        self.count += 1;
        self.count
    }

    pub fn pid(&self) -> u32 {
        std::process::id()
    }
}

struct World {
    fixture: Fixture,
    cluster: Cluster,
}

/// How long the head stays down in each scenario.
const OUTAGE: Duration = Duration::from_millis(1500);

fn on_node(index: usize) -> SpawnOptions {
    SpawnOptions::new()
        .num_cpus(0.5)
        .max_restarts(3)
        .label("index", index.to_string())
}

/// Calls `keeper.bump()` every 10 ms until `stop` is set; counts answers and failures.
fn keep_calling(
    keeper: KeeperHandle,
    stop: Arc<AtomicU64>,
) -> tokio::task::JoinHandle<(u64, u64, Option<String>)> {
    tokio::spawn(async move {
        let (mut answered, mut failed, mut first_error) = (0, 0, None);
        while stop.load(Ordering::SeqCst) == 0 {
            match keeper.bump().await {
                Ok(_) => answered += 1,
                Err(err) => {
                    failed += 1;
                    first_error.get_or_insert(err.to_string());
                }
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        (answered, failed, first_error)
    })
}

async fn state_survives_and_calls_go_on(world: &World) -> anyhow::Result<()> {
    let cluster = &world.cluster;
    let keeper = Keeper::spawn(cluster, on_node(0).name("keeper")).await?;
    let other = Keeper::spawn(cluster, on_node(1)).await?;
    let (keeper_pid, other_pid) = (keeper.pid().await?, other.pid().await?);
    let keeper_before = cluster.actor_info(&keeper).await?;
    cluster
        .kv_put("restart/key", bytes::Bytes::from_static(b"kept"), true)
        .await?;
    let group = cluster
        .create_placement_group(PlacementGroupSpec::new(
            vec![SpawnOptions::new().num_cpus(0.5)],
            "PACK",
        ))
        .await?;
    let group_before = group.info().await?;
    anyhow::ensure!(
        group_before.state() == PlacementGroupState::PlacementGroupCreated,
        "{group_before:?}"
    );

    let stop = Arc::new(AtomicU64::new(0));
    let calls = keep_calling(keeper.clone(), stop.clone());
    tokio::time::sleep(Duration::from_millis(200)).await;
    world.fixture.kill_head()?;
    let killed_at = Instant::now();
    // A spawn made while the head is down waits for it.
    let spawn_cluster = cluster.clone();
    let late_spawn = tokio::spawn(async move { Keeper::spawn(&spawn_cluster, on_node(1)).await });
    tokio::time::sleep(OUTAGE).await;
    let restarting_at = Instant::now();
    world.fixture.start_head_again()?;
    let serving_ms = restarting_at.elapsed().as_millis();
    let fresh = Keeper::spawn(cluster, on_node(0)).await?;
    let first_spawn_ms = restarting_at.elapsed().as_millis();
    let late = late_spawn.await??;
    let late_spawn_ms = restarting_at.elapsed().as_millis();
    let late_pid = late.pid().await?;
    let restarted_at = restarting_at;
    tokio::time::sleep(Duration::from_millis(300)).await;
    stop.store(1, Ordering::SeqCst);
    let (answered, failed, first_error) = calls.await?;
    println!(
        "  figures: outage {} ms; head start to serving {serving_ms} ms; to the first spawn answered {first_spawn_ms} ms; a spawn sent during the outage answered {late_spawn_ms} ms after the head started; calls during the test {answered} answered, {failed} failed",
        (restarted_at - killed_at).as_millis()
    );
    anyhow::ensure!(
        failed == 0,
        "{failed} calls failed during the outage: {first_error:?}"
    );
    anyhow::ensure!(answered > 50, "only {answered} calls answered");
    anyhow::ensure!(late_pid > 0 && pid_alive(late_pid));

    // The same workers, not restarted.
    anyhow::ensure!(
        keeper.pid().await? == keeper_pid,
        "the keeper was restarted"
    );
    anyhow::ensure!(other.pid().await? == other_pid, "the other was restarted");
    let keeper_after = cluster.actor_info(&keeper).await?;
    anyhow::ensure!(
        keeper_after.incarnation == keeper_before.incarnation
            && keeper_after.node_id == keeper_before.node_id
            && keeper_after.restarts == 0,
        "before {keeper_before:?}, after {keeper_after:?}"
    );
    // Names, key-value entries and placement groups are back.
    let by_name: KeeperHandle = cluster.get_actor::<Keeper>("keeper").await?;
    anyhow::ensure!(by_name.pid().await? == keeper_pid);
    let value = cluster
        .kv_wait("restart/key", Duration::from_secs(1))
        .await?;
    anyhow::ensure!(value.as_deref() == Some(&b"kept"[..]), "{value:?}");
    let group_after = group.info().await?;
    anyhow::ensure!(
        group_after.state() == PlacementGroupState::PlacementGroupCreated
            && group_after.bundles == group_before.bundles,
        "before {group_before:?}, after {group_after:?}"
    );
    // The nodes kept their ids and are alive.
    let status = world.fixture.status_json()?;
    let alive = status["nodes"]
        .as_array()
        .map(|nodes| nodes.iter().filter(|n| n["state"] == "alive").count())
        .unwrap_or(0);
    anyhow::ensure!(alive == 2, "{status}");
    anyhow::ensure!(
        status["nodes"].as_array().is_some_and(|nodes| nodes
            .iter()
            .any(|n| n["id"] == keeper_before.node_id.as_str())),
        "node {} is not known by its id: {status}",
        keeper_before.node_id
    );
    // A reserved name cannot be taken twice after the restart.
    let clash = Keeper::spawn(cluster, on_node(0).name("keeper")).await;
    anyhow::ensure!(clash.is_err(), "a second `keeper` was spawned");
    for handle in [&keeper, &other, &late, &fresh] {
        cluster.kill(handle).await?;
    }
    group.remove().await?;
    Ok(())
}

/// Waits until the actor is alive again after one restart.
async fn restarted_once(
    cluster: &Cluster,
    keeper: &KeeperHandle,
    within: Duration,
) -> anyhow::Result<troupe::proto::ActorInfo> {
    let deadline = Instant::now() + within;
    loop {
        let info = cluster.actor_info(keeper).await?;
        if info.state() == ActorState::Alive && info.restarts == 1 {
            return Ok(info);
        }
        anyhow::ensure!(
            Instant::now() < deadline,
            "not restarted within {within:?} after the head came back: {info:?}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

async fn a_worker_killed_during_the_outage_restarts(world: &World) -> anyhow::Result<()> {
    let cluster = &world.cluster;
    let keeper = Keeper::spawn(cluster, on_node(0)).await?;
    let pid = keeper.pid().await?;
    world.fixture.kill_head()?;
    kill9(pid);
    tokio::time::sleep(OUTAGE).await;
    world.fixture.start_head_again()?;
    let restarted_at = Instant::now();
    restarted_once(cluster, &keeper, Duration::from_secs(20)).await?;
    let new_pid = keeper.pid().await?;
    println!(
        "  figures: a worker killed while the head was down is answering again {} ms after the head restarted",
        restarted_at.elapsed().as_millis()
    );
    anyhow::ensure!(new_pid != pid, "the same pid {pid}");
    cluster.kill(&keeper).await?;
    Ok(())
}

async fn a_node_lost_during_the_outage_is_replaced(world: &World) -> anyhow::Result<()> {
    let cluster = &world.cluster;
    let keeper = Keeper::spawn(cluster, SpawnOptions::new().num_cpus(0.5).max_restarts(3)).await?;
    let pid = keeper.pid().await?;
    let before = cluster.actor_info(&keeper).await?;
    let index = world.fixture.node_index_of(&before.node_id)?;
    world.fixture.kill_head()?;
    world.fixture.kill_node(index)?;
    tokio::time::sleep(OUTAGE).await;
    world.fixture.start_head_again()?;
    let restarted_at = Instant::now();
    let after = restarted_once(cluster, &keeper, Duration::from_secs(30)).await;
    // Let the next scenario have both nodes again, whatever happened.
    world.fixture.start_node(index, &[])?;
    let after = after?;
    anyhow::ensure!(
        after.node_id != before.node_id && after.restarts == 1,
        "before {before:?}, after {after:?}"
    );
    anyhow::ensure!(
        !pid_alive(pid),
        "the old worker {pid} outlived its node agent"
    );
    println!(
        "  figures: an actor whose node died while the head was down is alive elsewhere {} ms after the head restarted",
        restarted_at.elapsed().as_millis()
    );
    world.fixture.wait_for_nodes(2)?;
    cluster.kill(&keeper).await?;
    Ok(())
}

async fn a_damaged_state_file_is_refused(world: &World) -> anyhow::Result<()> {
    let dir = world.fixture.dir.join("damaged-head");
    std::fs::create_dir_all(&dir)?;
    std::fs::write(dir.join("state.redb"), vec![0x5a_u8; 64 << 10])?;
    let output = tokio::process::Command::new(support::troupe_bin())
        .args(["head", "--port", "0", "--data-dir"])
        .arg(&dir)
        .output()
        .await?;
    let stderr = String::from_utf8_lossy(&output.stderr);
    anyhow::ensure!(!output.status.success(), "the head started: {stderr}");
    anyhow::ensure!(
        stderr.contains("state.redb") && stderr.contains("move it aside"),
        "{stderr}"
    );
    Ok(())
}

fn scenarios<'a>() -> Vec<Scenario<'a, World>> {
    vec![
        scenario!(state_survives_and_calls_go_on),
        scenario!(a_worker_killed_during_the_outage_restarts),
        scenario!(a_node_lost_during_the_outage_is_replaced),
        scenario!(a_damaged_state_file_is_refused),
    ]
}

fn main() -> std::process::ExitCode {
    troupe::init();
    let runtime = match support::tokio_runtime() {
        Ok(runtime) => runtime,
        Err(code) => return code,
    };
    let passed = runtime.block_on(async {
        run_cluster_scenarios!(
            &[vec!["--cpus", "4"], vec!["--cpus", "4"]],
            World,
            scenarios
        )
    });
    support::exit_code(passed)
}
