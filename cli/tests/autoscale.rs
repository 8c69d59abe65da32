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
use support::{troupe_bin, wait_for_state, Fixture, Probe};

use troupe::proto::ActorState;
use troupe::{Cluster, SpawnOptions};

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
    vec![
        scenario!(scale_up_and_down),
        scenario!(impossible_work),
        scenario!(command_provider_retries_a_failed_launch),
    ]
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

/// A second head whose `command` provider starts `troupe node` in the background: its first
/// create fails (as a cloud out of quota would); the head reports it, backs off, tries again,
/// and the work runs; the idle node is then stopped through the delete command.
async fn command_provider_retries_a_failed_launch(world: &World) -> anyhow::Result<()> {
    use std::os::unix::fs::PermissionsExt;
    let dir = world.fixture.dir.join("command-head");
    let nodes = dir.join("nodes");
    std::fs::create_dir_all(dir.join("head"))?;
    std::fs::create_dir_all(&nodes)?;
    // The same token as the first head, so this test's driver and workers can use either.
    let token = dir.join("head").join("token");
    std::fs::copy(world.fixture.dir.join("head").join("token"), &token)?;
    std::fs::set_permissions(&token, std::fs::Permissions::from_mode(0o600))?;
    let d = nodes.display();
    let config = format!(
        r#"
idle_timeout_s = 2
period_s = 0.3
launch_timeout_s = 30
backoff_initial_s = 0.5
backoff_max_s = 2
max_launch_attempts = 3
[provider]
kind = "command"
create = """
if [ ! -e {d}/failed-once ]; then touch {d}/failed-once; echo "quota exceeded for T4 in zone a" >&2; exit 3; fi
(eval "exec {bin} $TROUPE_NODE_ARGS --token-file {token} --work-dir {d}/$TROUPE_LAUNCH_ID") > {d}/$TROUPE_LAUNCH_ID.log 2>&1 &
echo $! > {d}/$TROUPE_LAUNCH_ID.pid
"""
delete = "[ -e {d}/$TROUPE_LAUNCH_ID.pid ] || exit 0; kill $(cat {d}/$TROUPE_LAUNCH_ID.pid) && rm {d}/$TROUPE_LAUNCH_ID.pid"
list = "cd {d} && for f in *.pid; do [ -e \"$f\" ] && basename \"$f\" .pid; done; true"
[node_types.gpu-1x]
cpus = 1
memory_gib = 1
gpus = 1
gpu_model = "T4"
max = 1
"#,
        bin = troupe_bin(),
        token = token.display(),
    );
    let config_path = dir.join("autoscaler.toml");
    std::fs::write(&config_path, config)?;
    let address_file = dir.join("head.address");
    let args: Vec<String> = vec![
        "head".into(),
        "--port".into(),
        "0".into(),
        "--data-dir".into(),
        dir.join("head").display().to_string(),
        "--address-file".into(),
        address_file.display().to_string(),
        "--autoscaler".into(),
        config_path.display().to_string(),
    ];
    let mut head = support::spawn_process(troupe_bin(), &args, &dir.join("head.log"))?;
    let outcome = async {
        let deadline = Instant::now() + Duration::from_secs(15);
        let address = loop {
            if let Ok(text) = std::fs::read_to_string(&address_file) {
                if let Some(line) = text.lines().next().filter(|l| !l.is_empty()) {
                    break line.to_string();
                }
            }
            anyhow::ensure!(Instant::now() < deadline, "the second head did not start");
            tokio::time::sleep(Duration::from_millis(50)).await;
        };
        let cluster = Cluster::connect(&address).await?;
        let probe = Probe::spawn(&cluster, SpawnOptions::new().num_cpus(0.5).num_gpus(1.0)).await?;
        // While the first try backs off (0.5 s), the waiting work says why.
        let mut seen_waiting = String::new();
        let deadline = Instant::now() + Duration::from_secs(40);
        loop {
            let status = cluster.status().await?.to_json()["autoscaler"].clone();
            let waiting = status["waiting"].to_string();
            if waiting.contains("waits:") {
                seen_waiting = waiting;
            }
            if cluster.actor_info(&probe).await?.state() == ActorState::Alive {
                break;
            }
            anyhow::ensure!(Instant::now() < deadline, "the actor never ran: {status:#}");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        let status = cluster.status().await?.to_json()["autoscaler"].clone();
        let decisions = status["decisions"].to_string();
        anyhow::ensure!(
            decisions.contains("try 1 failed") && decisions.contains("quota exceeded for T4"),
            "the failed try is reported with the provider's words: {status:#}"
        );
        anyhow::ensure!(status["launch_failures"] == 1, "{status:#}");
        anyhow::ensure!(
            seen_waiting.contains("waits: try 1 failed") && seen_waiting.contains("quota exceeded"),
            "while the launch backed off, the waiting work said why: {seen_waiting}"
        );
        println!("  a failed create was reported, retried after its backoff, and the actor ran");
        cluster.kill(&probe).await?;
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let status = cluster.status().await?.to_json()["autoscaler"].clone();
            let pid_files = std::fs::read_dir(&nodes)?
                .flatten()
                .filter(|e| e.path().extension().is_some_and(|x| x == "pid"))
                .count();
            if status["terminations"] == 1 && pid_files == 0 {
                break;
            }
            anyhow::ensure!(
                Instant::now() < deadline,
                "the idle node was not deleted: {status:#}"
            );
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        cluster.shutdown().await;
        anyhow::Ok(())
    }
    .await;
    let _ = head.kill();
    let _ = head.wait();
    // Agents the delete command did not reach.
    for entry in std::fs::read_dir(&nodes)?.flatten() {
        if entry.path().extension().is_some_and(|x| x == "pid") {
            if let Ok(pid) = std::fs::read_to_string(entry.path())
                .unwrap_or_default()
                .trim()
                .parse::<u32>()
            {
                support::kill9(pid);
            }
        }
    }
    outcome
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
