//! Jobs on a cluster of real processes: a job's driver connects through the environment its
//! entrypoint gets and its actors stop with the job; `troupe job submit --wait` exits with the
//! job's exit code; job records, logs and a running entrypoint survive a restart of the head; a
//! job whose node dies fails and names the node.

#[macro_use]
mod support;

use std::time::{Duration, Instant};
use support::{http_get, pid_alive, run_scenarios, Fixture, Probe, Scenario};
use troupe::jobs::JobClient;
use troupe::proto::{JobInfo, JobSpec, JobStatus};
use troupe::{Cluster, SpawnOptions};

/// When set, this test executable is the driver of a job (see `job_driver`).
const JOB_DRIVER: &str = "TROUPE_JOBS_TEST_DRIVER";

/// The job's entrypoint: connects to the cluster it runs on, spawns a probe, prints the probe's
/// pid and waits to be stopped.
async fn job_driver() -> anyhow::Result<()> {
    let cluster = Cluster::from_env().await?;
    let probe = Probe::spawn(&cluster, SpawnOptions::new().num_cpus(0.1)).await?;
    println!("actor-pid={}", probe.pid().await?);
    tokio::time::sleep(Duration::from_secs(600)).await;
    Ok(())
}

struct World {
    fixture: Fixture,
    jobs: JobClient,
}

fn spec(entrypoint: &str) -> JobSpec {
    JobSpec {
        entrypoint: entrypoint.to_string(),
        ..JobSpec::default()
    }
}

async fn submit(world: &World, spec: JobSpec) -> anyhow::Result<String> {
    Ok(world.jobs.submit("", spec).await?.submission_id)
}

/// Polls the job until `done` holds for its record (and log), or fails after `limit`.
async fn wait_for(
    world: &World,
    id: &str,
    limit: Duration,
    what: &str,
    done: impl Fn(&JobInfo, &str) -> bool,
) -> anyhow::Result<(JobInfo, String)> {
    let deadline = Instant::now() + limit;
    loop {
        let info = world.jobs.get(id).await;
        let log = world.jobs.logs(id).await;
        if let (Ok(info), Ok(log)) = (&info, &log) {
            let log = String::from_utf8_lossy(log).to_string();
            if done(info, &log) {
                return Ok((info.clone(), log));
            }
        }
        anyhow::ensure!(
            Instant::now() < deadline,
            "job {id}: {what} not seen within {limit:?}; last: {info:?}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

async fn actors_of_job_stop_with_it(world: &World) -> anyhow::Result<()> {
    let exe = std::env::current_exe()?;
    let mut spec = spec(&format!("exec {}", exe.display()));
    spec.env_vars
        .insert(JOB_DRIVER.to_string(), "1".to_string());
    let id = submit(world, spec).await?;
    let (running, log) = wait_for(
        world,
        &id,
        Duration::from_secs(30),
        "the actor's pid",
        |_, log| log.contains("actor-pid="),
    )
    .await?;
    anyhow::ensure!(
        running.status() == JobStatus::Running && running.pid > 0,
        "{running:?}"
    );
    let actor_pid: u32 = log
        .split("actor-pid=")
        .nth(1)
        .and_then(|rest| rest.lines().next())
        .and_then(|pid| pid.trim().parse().ok())
        .ok_or_else(|| anyhow::anyhow!("no pid in the log: {log}"))?;
    anyhow::ensure!(pid_alive(actor_pid), "the actor's worker runs");
    anyhow::ensure!(
        world.jobs.stop(&id, Duration::from_secs(5)).await?,
        "stop reports a running job"
    );
    let (stopped, _) = wait_for(world, &id, Duration::from_secs(15), "STOPPED", |info, _| {
        info.status() == JobStatus::Stopped
    })
    .await?;
    anyhow::ensure!(stopped.stop_requested && stopped.end_time_ms >= stopped.start_time_ms);
    anyhow::ensure!(!pid_alive(running.pid), "the entrypoint is gone");
    support::wait_gone(
        actor_pid,
        Duration::from_secs(10),
        "the job's actor outlived the job",
    )
    .await?;
    let status = world.fixture.status_json()?;
    let probe = status["actors"]
        .as_array()
        .and_then(|actors| {
            actors
                .iter()
                .find(|a| a["type"].as_str().is_some_and(|t| t.ends_with("Probe")))
        })
        .ok_or_else(|| anyhow::anyhow!("no probe actor in {status}"))?;
    anyhow::ensure!(probe["state"] == "dead", "the probe is dead: {probe}");
    let reason = probe["death_reason"].as_str().unwrap_or_default();
    anyhow::ensure!(reason.contains(&id), "the death names the job: {reason}");
    Ok(())
}

async fn cli_wait_exits_with_the_job_code(world: &World) -> anyhow::Result<()> {
    let output = tokio::process::Command::new(support::troupe_bin())
        .args([
            "job",
            "submit",
            "--address",
            &world.fixture.head_address,
            "--wait",
            "--",
        ])
        .args(["sh", "-c", "echo out-of-the-job; exit 7"])
        .output()
        .await?;
    let stdout = String::from_utf8_lossy(&output.stdout);
    anyhow::ensure!(
        output.status.code() == Some(7),
        "exit code {:?}: {stdout} {}",
        output.status,
        String::from_utf8_lossy(&output.stderr)
    );
    anyhow::ensure!(
        stdout.contains("out-of-the-job"),
        "the log is followed: {stdout}"
    );
    let status = world.fixture.status_json()?;
    let listed = status["jobs"]
        .as_array()
        .and_then(|jobs| {
            jobs.iter().find(|job| {
                job["entrypoint"]
                    .as_str()
                    .is_some_and(|entrypoint| entrypoint.contains("out-of-the-job"))
            })
        })
        .ok_or_else(|| anyhow::anyhow!("`troupe status --json` lists the job: {status}"))?;
    anyhow::ensure!(
        listed["status"] == "FAILED" && listed["exit_code"] == 7,
        "{listed}"
    );
    let metrics = http_get(&world.fixture.metrics_address, "/metrics").await?;
    anyhow::ensure!(
        metrics.lines().any(
            |line| line.starts_with("troupe_jobs{status=\"failed\"} ") && !line.ends_with(" 0")
        ),
        "the metrics count the failed job"
    );
    Ok(())
}

async fn jobs_survive_a_head_restart(world: &World) -> anyhow::Result<()> {
    let finished = submit(world, spec("echo finished-before-restart")).await?;
    wait_for(
        world,
        &finished,
        Duration::from_secs(15),
        "SUCCEEDED",
        |info, _| info.status() == JobStatus::Succeeded,
    )
    .await?;
    // The head holds the log and the outcome, so the node drops its copies.
    let node_copy = world
        .fixture
        .dir
        .join("node-0")
        .join("jobs")
        .join(&finished);
    anyhow::ensure!(
        node_copy.parent().is_some_and(|jobs| jobs.is_dir()),
        "the node keeps its jobs under {}",
        node_copy.display()
    );
    let deadline = Instant::now() + Duration::from_secs(5);
    while node_copy.exists() {
        anyhow::ensure!(
            Instant::now() < deadline,
            "{} is still there",
            node_copy.display()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let ticking = submit(
        world,
        spec("i=0; while true; do echo tick $i; i=$((i+1)); sleep 0.1; done"),
    )
    .await?;
    let (before, _) = wait_for(
        world,
        &ticking,
        Duration::from_secs(15),
        "tick 3",
        |_, log| log.contains("tick 3"),
    )
    .await?;

    world.fixture.restart_head()?;

    let (after, _) = wait_for(
        world,
        &finished,
        Duration::from_secs(15),
        "the record back",
        |info, log| {
            info.status() == JobStatus::Succeeded && log.contains("finished-before-restart")
        },
    )
    .await?;
    anyhow::ensure!(after.has_exit_code && after.exit_code == 0, "{after:?}");
    // The node keeps its id (the head restored its record) and claims the entrypoint it still
    // runs; its output keeps arriving.
    let (claimed, log) = wait_for(
        world,
        &ticking,
        Duration::from_secs(20),
        "claimed by the node",
        |info, log| {
            info.status() == JobStatus::Running
                && info.node_id == before.node_id
                && log.matches("tick").count() > 60
        },
    )
    .await?;
    anyhow::ensure!(claimed.pid == before.pid, "the same process: {claimed:?}");
    anyhow::ensure!(
        log.starts_with("tick 0\ntick 1\n"),
        "no output lost or repeated at the start: {}",
        &log[..40.min(log.len())]
    );
    let numbers: Vec<u64> = log
        .lines()
        .filter_map(|line| line.strip_prefix("tick ")?.parse().ok())
        .collect();
    anyhow::ensure!(
        numbers.windows(2).all(|pair| pair[1] == pair[0] + 1),
        "every line once, in order"
    );
    world.jobs.stop(&ticking, Duration::from_secs(2)).await?;
    wait_for(
        world,
        &ticking,
        Duration::from_secs(15),
        "STOPPED",
        |info, _| info.status() == JobStatus::Stopped,
    )
    .await?;
    anyhow::ensure!(!pid_alive(before.pid), "the entrypoint is gone");
    Ok(())
}

async fn a_job_whose_node_dies_fails(world: &World) -> anyhow::Result<()> {
    let id = submit(world, spec("echo waiting; sleep 600")).await?;
    let (running, _) = wait_for(
        world,
        &id,
        Duration::from_secs(15),
        "RUNNING with a pid",
        |info, log| info.pid > 0 && log.contains("waiting"),
    )
    .await?;
    let index = world.fixture.node_index_of(&running.node_id)?;
    world.fixture.kill_node(index)?;
    let (failed, _) = wait_for(world, &id, Duration::from_secs(20), "FAILED", |info, _| {
        info.status() == JobStatus::Failed
    })
    .await?;
    anyhow::ensure!(
        failed.message.contains("node was lost"),
        "{}",
        failed.message
    );
    anyhow::ensure!(
        !pid_alive(running.pid),
        "the entrypoint died with its node agent"
    );
    Ok(())
}

fn scenarios<'a>() -> Vec<Scenario<'a, World>> {
    vec![
        scenario!(actors_of_job_stop_with_it),
        scenario!(cli_wait_exits_with_the_job_code),
        scenario!(jobs_survive_a_head_restart),
        scenario!(a_job_whose_node_dies_fails),
    ]
}

fn main() -> std::process::ExitCode {
    troupe::init();
    let runtime = match support::tokio_runtime() {
        Ok(runtime) => runtime,
        Err(code) => return code,
    };
    if std::env::var_os(JOB_DRIVER).is_some() {
        return match runtime.block_on(job_driver()) {
            Ok(()) => std::process::ExitCode::SUCCESS,
            Err(err) => {
                eprintln!("job driver: {err:#}");
                std::process::ExitCode::FAILURE
            }
        };
    }
    let passed = runtime.block_on(async {
        let fixture = match Fixture::start(&[vec!["--cpus", "4"]]) {
            Ok(fixture) => fixture,
            Err(err) => {
                println!("could not start the cluster: {err:#}\n0 passed, 1 failed");
                return false;
            }
        };
        let token = match troupe::server::rpc::Token::from_env() {
            Ok(token) => token,
            Err(err) => {
                println!("no token: {err}\n0 passed, 1 failed");
                return false;
            }
        };
        let jobs = match JobClient::connect(&fixture.head_address, &token).await {
            Ok(jobs) => jobs,
            Err(err) => {
                println!("could not connect: {err:#}\n0 passed, 1 failed");
                return false;
            }
        };
        let world = World { fixture, jobs };
        run_scenarios(&world, scenarios(), Duration::from_secs(60)).await
    });
    if passed {
        std::process::ExitCode::SUCCESS
    } else {
        std::process::ExitCode::FAILURE
    }
}
