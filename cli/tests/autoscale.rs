//! The autoscaler with real processes: a head started with `--autoscaler` and the `local`
//! provider, no node agents at first, and this test binary as the driver and every worker.
//! Work that fits no node launches a node agent of the right type; the work runs there; once
//! the node has been idle past the timeout it is drained and its agent stopped. Work that no
//! node type could hold is refused with the reason, and a config with a mistake is refused at
//! start.
//!
//! Run: `cargo test -p troupe-cli --test autoscale`.

#[macro_use]
mod support;

use std::time::{Duration, Instant};
use support::{troupe_bin, wait_for_state, Fixture};

use troupe::proto::ActorState;
use troupe::{Cluster, SpawnOptions};

/// Says which process it runs in.
pub struct Probe;

#[troupe::actor]
impl Probe {
    pub fn new() -> Self {
        Probe
    }

    pub fn pid(&self) -> u32 {
        std::process::id()
    }
}

const CONFIG: &str = r#"
idle_timeout_s = 3
period_s = 0.3
launch_timeout_s = 60
backoff_initial_s = 1
backoff_max_s = 5
[provider]
kind = "local"
[node_types.gpu-2x]
cpus = 2
memory_gib = 2
gpus = 2
gpu_model = "T4"
max = 2
[node_types.small]
cpus = 1
memory_gib = 1
max = 1
"#;

struct World {
    fixture: Fixture,
    cluster: Cluster,
}

fn scenarios<'a>() -> Vec<support::Scenario<'a, World>> {
    vec![scenario!(scale_up_and_down), scenario!(impossible_work)]
}

async fn autoscaler_status(world: &World) -> anyhow::Result<serde_json::Value> {
    Ok(world.fixture.status_json()?["autoscaler"].clone())
}

async fn scale_up_and_down(world: &World) -> anyhow::Result<()> {
    let cluster = &world.cluster;
    let started = Instant::now();
    let probe = Probe::spawn(cluster, SpawnOptions::new().num_cpus(0.5).num_gpus(2.0)).await?;
    let info = wait_for_state(cluster, &probe, ActorState::Alive, Duration::from_secs(40)).await?;
    let placed_after = started.elapsed().as_secs_f64();
    let pid = probe.pid().await?;
    anyhow::ensure!(pid != std::process::id(), "the probe runs in a worker");
    // The autoscaler ties the registration to its launch at its next round.
    let deadline = Instant::now() + Duration::from_secs(10);
    let status = loop {
        let status = autoscaler_status(world).await?;
        if status["nodes"][0]["phase"] == "running" || Instant::now() > deadline {
            break status;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    let nodes = status["nodes"].as_array().cloned().unwrap_or_default();
    anyhow::ensure!(nodes.len() == 1, "one launch expected: {status:#}");
    anyhow::ensure!(
        nodes[0]["node_type"] == "gpu-2x",
        "the GPU type: {status:#}"
    );
    anyhow::ensure!(
        nodes[0]["phase"] == "running",
        "a node holding work is running: {status:#}"
    );
    anyhow::ensure!(
        nodes[0]["node_id"] == info.node_id.as_str(),
        "the actor runs on the launched node: {status:#}"
    );
    let decisions = status["decisions"].to_string();
    anyhow::ensure!(
        decisions.contains("launch 1 x gpu-2x for actor"),
        "{decisions}"
    );
    println!(
        "  a GPU actor was placed {placed_after:.1} s after its spawn, on a node launched for it"
    );
    cluster.kill(&probe).await?;
    let killed = Instant::now();
    let deadline = killed + Duration::from_secs(30);
    loop {
        let status = autoscaler_status(world).await?;
        let gone =
            status["nodes"].as_array().is_some_and(|n| n.is_empty()) && status["terminations"] == 1;
        if gone {
            let text = status["decisions"].to_string();
            anyhow::ensure!(
                text.contains("drain") && text.contains("idle for"),
                "{text}"
            );
            break;
        }
        anyhow::ensure!(
            Instant::now() < deadline,
            "the idle node was not stopped: {status:#}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    println!(
        "  the idle node was drained and stopped {:.1} s after its work ended (timeout 3 s)",
        killed.elapsed().as_secs_f64()
    );
    let status = world.fixture.status_json()?;
    let alive = status["nodes"]
        .as_array()
        .map_or(0, |n| n.iter().filter(|n| n["state"] == "alive").count());
    anyhow::ensure!(alive == 0, "no node left alive: {status:#}");
    let metrics = support::http_get(&world.fixture.metrics_address, "/metrics").await?;
    anyhow::ensure!(
        metrics.contains("troupe_autoscaler_launches_total 1"),
        "{metrics}"
    );
    anyhow::ensure!(
        metrics.contains("troupe_autoscaler_terminations_total 1"),
        "{metrics}"
    );
    Ok(())
}

async fn impossible_work(world: &World) -> anyhow::Result<()> {
    let cluster = &world.cluster;
    let refused = Probe::spawn(cluster, SpawnOptions::new().num_cpus(0.5).num_gpus(8.0)).await;
    let err = match refused {
        Ok(_) => anyhow::bail!("8 GPUs fit no node type; the spawn must be refused"),
        Err(err) => err.to_string(),
    };
    anyhow::ensure!(
        err.contains("no autoscaler node type could hold it either") && err.contains("GPU"),
        "{err}"
    );
    let status = autoscaler_status(world).await?;
    anyhow::ensure!(
        status["waiting"].as_array().is_some_and(|w| w.is_empty()),
        "nothing waits: {status:#}"
    );
    println!("  refused: {err}");
    Ok(())
}

/// A config with a mistake: the head refuses to start and names it.
fn bad_config_is_refused(dir: &std::path::Path) -> anyhow::Result<()> {
    let bad = dir.join("bad-autoscaler.toml");
    std::fs::write(&bad, CONFIG.replace("max = 1", "max = 1\nmin = 2"))?;
    let output = std::process::Command::new(troupe_bin())
        .args(["head", "--port", "0", "--data-dir"])
        .arg(dir.join("bad-head"))
        .arg("--autoscaler")
        .arg(&bad)
        .output()?;
    let stderr = String::from_utf8_lossy(&output.stderr);
    anyhow::ensure!(!output.status.success(), "a bad config must stop the head");
    anyhow::ensure!(
        stderr.contains("node type `small`: min 2 is above max 1"),
        "{stderr}"
    );
    println!("test bad_config_is_refused ... ok");
    Ok(())
}

fn main() -> std::process::ExitCode {
    troupe::init();
    let runtime = match support::tokio_runtime() {
        Ok(runtime) => runtime,
        Err(code) => return code,
    };
    let dir = std::env::temp_dir().join(format!("troupe-autoscale-{}", std::process::id()));
    if let Err(err) = std::fs::create_dir_all(&dir)
        .map_err(anyhow::Error::from)
        .and_then(|_| bad_config_is_refused(&dir))
    {
        println!("test bad_config_is_refused ... FAILED: {err:#}");
        return support::exit_code(false);
    }
    let config = dir.join("autoscaler.toml");
    if let Err(err) = std::fs::write(&config, CONFIG) {
        println!("cannot write the config: {err}");
        return support::exit_code(false);
    }
    let head_extra = vec!["--autoscaler".to_string(), config.display().to_string()];
    let passed = runtime.block_on(async {
        let fixture = match Fixture::start_with(&head_extra, &[]) {
            Ok(fixture) => fixture,
            Err(err) => {
                println!("could not start the cluster: {err:#}\n0 passed, 1 failed");
                return false;
            }
        };
        let cluster = match Cluster::connect(&fixture.head_address).await {
            Ok(cluster) => cluster,
            Err(err) => {
                println!("could not connect: {err:#}\n0 passed, 1 failed");
                return false;
            }
        };
        let world = World { fixture, cluster };
        let passed = support::run_scenarios(&world, scenarios(), Duration::from_secs(90)).await;
        world.cluster.clone().shutdown().await;
        passed
    });
    let _ = std::fs::remove_dir_all(&dir);
    support::exit_code(passed)
}
