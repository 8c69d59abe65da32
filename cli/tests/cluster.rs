//! Multi-process integration tests: a head and three node agents as separate `troupe`
//! processes on loopback, this test binary as the driver (it ships itself to the head) and as
//! every worker. Covers GPU pinning, thread-pool sizing, status and metrics, names and handle
//! passing, concurrency, restarts after kill -9 and panics, driver exit, node loss, and bad input.
//!
//! Run: `cargo test -p troupe --test cluster` (add a scenario name to run only that one).

#[macro_use]
mod support;

use std::collections::HashMap;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};
use support::{http_get, kill9, pid_alive, wait_for_state, Fixture, Scenario};
use troupe::data::Batch;
use troupe::objects::ObjectRef;
use troupe::proto::actors_client::ActorsClient;
use troupe::proto::cluster_client::ClusterClient;
use troupe::proto::nodes_client::NodesClient;
use troupe::proto::{
    ActorState, BinaryChunk, BinaryRef, CreateActorRequest, Empty, GetActorRequest, GpuDevice,
    HeartbeatRequest, KillActorRequest, NodeResources, RegisterNodeRequest, ResourceRequest,
    WorkerReadyRequest,
};
use troupe::{ActorGroup, ActorHandle, Cluster, Error, SpawnOptions};

/// An actor that reports on the process it runs in.
pub struct Probe {
    label: String,
    bumps: u64,
}

static IN_FLIGHT: AtomicU32 = AtomicU32::new(0);

#[troupe::actor]
impl Probe {
    pub fn new(label: String) -> Self {
        Probe { label, bumps: 0 }
    }

    pub fn env(&self, key: String) -> Option<String> {
        std::env::var(key).ok()
    }

    pub fn pid(&self) -> u32 {
        std::process::id()
    }

    pub fn label(&self) -> String {
        self.label.clone()
    }

    pub fn bump(&mut self) -> u64 {
        self.bumps += 1;
        self.bumps
    }

    pub async fn sleep_ms(&self, ms: u64) -> u32 {
        tokio::time::sleep(Duration::from_millis(ms)).await;
        std::process::id()
    }

    pub fn crash(&self, message: String) -> u64 {
        panic!("{message}");
    }

    /// Returns whether `n` calls of this method were running at the same moment (waiting at
    /// most `patience_ms` for them).
    pub async fn rendezvous(&self, n: u32, patience_ms: u64) -> bool {
        IN_FLIGHT.fetch_add(1, Ordering::SeqCst);
        let deadline = Instant::now() + Duration::from_millis(patience_ms);
        let mut reached = false;
        while Instant::now() < deadline {
            if IN_FLIGHT.load(Ordering::SeqCst) >= n {
                reached = true;
                break;
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        // Let the others see the count before leaving.
        tokio::time::sleep(Duration::from_millis(50)).await;
        IN_FLIGHT.fetch_sub(1, Ordering::SeqCst);
        reached
    }

    /// Calls another probe through a handle that travelled here as an argument.
    pub async fn bump_other(&self, other: ProbeHandle) -> troupe::Result<u64> {
        other.bump().await
    }

    /// `n` first calls to another probe, all in flight at once; returns how many answered.
    pub async fn burst(&self, other: ProbeHandle, n: usize) -> troupe::Result<usize> {
        let calls = (0..n).map(|_| other.label());
        Ok(futures::future::try_join_all(calls).await?.len())
    }

    /// Names that generated code also uses internally must not clash (`id`, `actor`, `cell`).
    pub fn id(&self, actor: String, cell: u32) -> anyhow::Result<String> {
        anyhow::ensure!(cell > 0, "cell must be positive");
        Ok(format!("{}:{actor}:{cell}", self.label))
    }

    /// Fails with an application error.
    pub fn refuse(&self, why: String) -> Result<u64, String> {
        Err(format!("refused: {why}"))
    }
}

/// A member of an actor group.
pub struct Shard {
    rank: usize,
    world: usize,
}

#[troupe::actor]
impl Shard {
    pub fn new(rank: usize, world: usize) -> Self {
        Shard { rank, world }
    }

    pub fn place(&self) -> (usize, usize) {
        (self.rank, self.world)
    }

    /// Multiplies the `reward` column by (rank + 1) and stamps the rank on every row.
    pub fn scale(&self, batch: Batch) -> anyhow::Result<Batch> {
        let rewards: Vec<f32> = batch
            .f32_values("reward")?
            .iter()
            .map(|r| r * (self.rank + 1) as f32)
            .collect();
        let mut out = Batch::new(batch.rows()).with_f32("reward", &[], &rewards)?;
        out.set_meta_all("rank", &self.rank.to_string());
        Ok(out)
    }

    pub fn add(&self, x: u64) -> u64 {
        x + self.rank as u64
    }
}

/// A pipeline stage that hands its output on by reference.
pub struct Stage;

#[troupe::actor]
impl Stage {
    pub fn new() -> Self {
        Stage
    }

    /// `rows` rows of 256 f32 values (1 KiB a row), kept here.
    pub fn produce(&self, rows: usize) -> anyhow::Result<ObjectRef> {
        let values: Vec<f32> = (0..rows * 256).map(|i| (i % 7) as f32).collect();
        Ok(ObjectRef::put_batch(&Batch::new(rows).with_f32(
            "x",
            &[256],
            &values,
        )?)?)
    }

    /// Fetches its input from whoever holds it, doubles it, keeps the result here.
    pub async fn transform(&self, input: ObjectRef) -> anyhow::Result<ObjectRef> {
        let batch = input.fetch_batch().await?;
        let doubled: Vec<f32> = batch.f32_values("x")?.iter().map(|x| x * 2.0).collect();
        Ok(ObjectRef::put_batch(&Batch::new(batch.rows()).with_f32(
            "x",
            &[256],
            &doubled,
        )?)?)
    }

    /// Fetches its input and returns its sum and the bytes this worker fetched in all.
    pub async fn consume(&self, input: ObjectRef) -> anyhow::Result<(f64, u64)> {
        let batch = input.fetch_batch().await?;
        let sum = batch.f32_values("x")?.iter().map(|x| *x as f64).sum();
        Ok((sum, troupe::objects::bytes_fetched()))
    }

    pub fn fetched(&self) -> u64 {
        troupe::objects::bytes_fetched()
    }
}

/// An actor whose constructor can fail.
pub struct Picky;

#[troupe::actor]
impl Picky {
    pub fn new(fail: bool) -> Result<Self, String> {
        if fail {
            Err("refusing to start as asked".to_string())
        } else {
            Ok(Picky)
        }
    }

    pub fn ok(&self) -> bool {
        true
    }
}

struct World {
    fixture: Fixture,
    cluster: Cluster,
}

fn probe_options() -> SpawnOptions {
    SpawnOptions::new().num_cpus(0.5)
}

fn devices_of(info: &troupe::proto::ActorInfo) -> String {
    info.gpus
        .iter()
        .map(|gpu| gpu.index.to_string())
        .collect::<Vec<_>>()
        .join(",")
}

async fn gpus_are_pinned(world: &World) -> anyhow::Result<()> {
    let cluster = &world.cluster;
    let one = Probe::spawn(cluster, probe_options().num_gpus(1.0), "one".into()).await?;
    let two = Probe::spawn(
        cluster,
        probe_options().num_gpus(2.0).num_cpus(2.0),
        "two".into(),
    )
    .await?;
    let half_a = Probe::spawn(cluster, probe_options().num_gpus(0.5), "half-a".into()).await?;
    let half_b = Probe::spawn(cluster, probe_options().num_gpus(0.5), "half-b".into()).await?;
    let a100 = Probe::spawn(
        cluster,
        probe_options().num_gpus(1.0).label("gpu-model", "A100"),
        "a100".into(),
    )
    .await?;
    let cpu_only = Probe::spawn(cluster, probe_options(), "cpu".into()).await?;
    let mut infos = HashMap::new();
    for handle in [&one, &two, &half_a, &half_b, &a100, &cpu_only] {
        let label = handle.label().await?;
        let info = cluster.actor_info(handle).await?;
        let visible = handle.env("CUDA_VISIBLE_DEVICES".into()).await?;
        anyhow::ensure!(
            visible.as_deref() == Some(devices_of(&info).as_str()),
            "{label}: CUDA_VISIBLE_DEVICES={visible:?} but the head assigned [{}]",
            devices_of(&info)
        );
        infos.insert(label, info);
    }
    anyhow::ensure!(
        infos["one"].gpus.len() == 1 && infos["two"].gpus.len() == 2,
        "whole GPU counts"
    );
    anyhow::ensure!(infos["cpu"].gpus.is_empty(), "a CPU actor sees no GPU");
    let (a, b) = (&infos["half-a"], &infos["half-b"]);
    anyhow::ensure!(
        a.node_id == b.node_id && devices_of(a) == devices_of(b),
        "two half-GPU actors share one device: {} on {} vs {} on {}",
        devices_of(a),
        a.node_id,
        devices_of(b),
        b.node_id
    );
    let a100_node = world.fixture.node_index_of(&infos["a100"].node_id)?;
    anyhow::ensure!(
        a100_node == 1,
        "the A100 actor landed on node {a100_node}, not the A100 node"
    );
    let threads = two.env("RAYON_NUM_THREADS".into()).await?;
    anyhow::ensure!(
        threads.as_deref() == Some("2"),
        "a 2-CPU actor has RAYON_NUM_THREADS={threads:?}"
    );
    let omp = one.env("OMP_NUM_THREADS".into()).await?;
    anyhow::ensure!(
        omp.as_deref() == Some("1"),
        "a half-CPU actor has OMP_NUM_THREADS={omp:?}"
    );
    let status = world.fixture.status_json()?;
    let holders: Vec<String> = status["nodes"]
        .as_array()
        .into_iter()
        .flatten()
        .flat_map(|node| node["gpus"].as_array().cloned().unwrap_or_default())
        .flat_map(|gpu| gpu["actors"].as_array().cloned().unwrap_or_default())
        .filter_map(|actor| actor.as_str().map(str::to_string))
        .collect();
    anyhow::ensure!(
        holders.contains(&infos["two"].id),
        "status names the holder of each GPU"
    );
    for handle in [&one, &two, &half_a, &half_b, &a100, &cpu_only] {
        cluster.kill(handle).await?;
    }
    Ok(())
}

async fn status_and_metrics(world: &World) -> anyhow::Result<()> {
    let probe = Probe::spawn(
        &world.cluster,
        probe_options().name("status-probe"),
        "status".into(),
    )
    .await?;
    probe.bump().await?;
    let status = world.fixture.status_json()?;
    let nodes = status["nodes"]
        .as_array()
        .ok_or_else(|| anyhow::anyhow!("no nodes array"))?;
    anyhow::ensure!(nodes.len() == 3, "3 nodes in status, got {}", nodes.len());
    for node in nodes {
        anyhow::ensure!(
            node["id"].is_string() && node["state"] == "alive",
            "node entry: {node}"
        );
    }
    let actor = status["actors"]
        .as_array()
        .and_then(|actors| actors.iter().find(|a| a["name"] == "status-probe"))
        .ok_or_else(|| anyhow::anyhow!("status lists no status-probe"))?;
    for key in ["id", "name", "state", "node", "gpus", "restarts"] {
        anyhow::ensure!(actor.get(key).is_some(), "actor entry lacks {key}: {actor}");
    }
    anyhow::ensure!(actor["state"] == "alive", "state: {}", actor["state"]);
    let table = std::process::Command::new(support::troupe_bin())
        .args(["status", "--head", &world.fixture.head_address])
        .output()?;
    let table = String::from_utf8_lossy(&table.stdout);
    anyhow::ensure!(
        table.contains("NODES") && table.contains("status-probe"),
        "table:\n{table}"
    );
    let metrics = http_get(&world.fixture.metrics_address, "/metrics").await?;
    for line in [
        "troupe_nodes{state=\"alive\"} 3",
        "troupe_actors{state=\"alive\"}",
        "troupe_scheduling_latency_seconds_count",
        "troupe_pending_requests",
        "troupe_actor_restarts_total",
        "troupe_actor_calls_total",
    ] {
        anyhow::ensure!(metrics.contains(line), "metrics lack `{line}`:\n{metrics}");
    }
    world.cluster.kill(&probe).await?;
    Ok(())
}

async fn names_and_handle_passing(world: &World) -> anyhow::Result<()> {
    let cluster = &world.cluster;
    let target = Probe::spawn(cluster, probe_options().name("target"), "target".into()).await?;
    let caller = Probe::spawn(cluster, probe_options(), "caller".into()).await?;
    let found = cluster.get_actor::<Probe>("target").await?;
    anyhow::ensure!(
        found.actor_ref().id() == target.actor_ref().id(),
        "lookup by name finds the same actor"
    );
    anyhow::ensure!(target.bump().await? == 1, "first bump");
    // A burst of first calls from a fresh process shares one lookup of the route (5,000
    // lookups at once used to overwhelm the head's connection).
    let fresh = Probe::spawn(cluster, probe_options(), "fresh".into()).await?;
    fresh.label().await?;
    let lookups = || async {
        let metrics = http_get(&world.fixture.metrics_address, "/metrics").await?;
        metrics
            .lines()
            .find_map(|line| line.strip_prefix("troupe_actor_lookups_total "))
            .and_then(|value| value.trim().parse::<u64>().ok())
            .ok_or_else(|| anyhow::anyhow!("no troupe_actor_lookups_total in the metrics"))
    };
    let before = lookups().await?;
    let answered = caller.burst(fresh.clone(), 5000).await?;
    let spent = lookups().await? - before;
    anyhow::ensure!(answered == 5000, "{answered} of 5000 answered");
    anyhow::ensure!(spent <= 3, "5000 first calls cost {spent} lookups");
    cluster.kill(&fresh).await?;
    let through = caller.bump_other(found.clone()).await?;
    anyhow::ensure!(
        through == 2,
        "the handle passed to another actor reached the same state: {through}"
    );
    let refused = target
        .refuse("no".into())
        .await
        .expect_err("an Err travels");
    anyhow::ensure!(
        matches!(&refused, Error::Method { method, message, .. } if method == "refuse" && message == "refused: no"),
        "application errors arrive as Error::Method: {refused}"
    );
    anyhow::ensure!(
        target.bump().await? == 3,
        "an application error does not restart the actor"
    );
    let echoed = target.id("a".into(), 2).await?;
    anyhow::ensure!(echoed == "target:a:2", "method named id: {echoed}");
    let anyhow_err = target.id("a".into(), 0).await.expect_err("anyhow error");
    anyhow::ensure!(
        anyhow_err.to_string().contains("cell must be positive"),
        "{anyhow_err}"
    );
    let missing = cluster
        .get_actor::<Probe>("nobody")
        .await
        .expect_err("unknown name");
    anyhow::ensure!(
        missing.to_string().contains("nobody"),
        "error names the missing actor: {missing}"
    );
    let duplicate = Probe::spawn(cluster, probe_options().name("target"), "again".into())
        .await
        .expect_err("duplicate name");
    anyhow::ensure!(
        duplicate.rpc_code() == Some(tonic::Code::AlreadyExists),
        "duplicate name: {duplicate}"
    );
    let wrong_type = cluster
        .get_actor::<Picky>("target")
        .await
        .expect_err("wrong type");
    anyhow::ensure!(
        wrong_type.to_string().contains("Probe"),
        "type mismatch is named: {wrong_type}"
    );
    cluster.kill(&target).await?;
    cluster.kill(&caller).await?;
    Ok(())
}

async fn max_concurrency(world: &World) -> anyhow::Result<()> {
    let parallel = Probe::spawn(
        &world.cluster,
        probe_options().max_concurrency(4),
        "parallel".into(),
    )
    .await?;
    let results = futures::future::join_all((0..4).map(|_| parallel.rendezvous(4, 5000))).await;
    for result in results {
        anyhow::ensure!(result?, "4 calls ran at once with max_concurrency 4");
    }
    let serial = Probe::spawn(&world.cluster, probe_options(), "serial".into()).await?;
    let results = futures::future::join_all((0..2).map(|_| serial.rendezvous(2, 300))).await;
    for result in results {
        anyhow::ensure!(!result?, "with max_concurrency 1, calls never overlap");
    }
    world.cluster.kill(&parallel).await?;
    world.cluster.kill(&serial).await?;
    Ok(())
}

async fn kill9_worker_restarts(world: &World) -> anyhow::Result<()> {
    let cluster = &world.cluster;
    let probe = Probe::spawn(
        cluster,
        probe_options().max_restarts(2),
        "restartable".into(),
    )
    .await?;
    anyhow::ensure!(probe.bump().await? == 1, "first bump");
    let pid = probe.pid().await?;
    let in_flight = {
        let probe = probe.clone();
        tokio::spawn(async move { probe.sleep_ms(10_000).await })
    };
    tokio::time::sleep(Duration::from_millis(100)).await;
    kill9(pid);
    let err = in_flight.await?.expect_err("the call in flight must fail");
    let text = err.to_string();
    anyhow::ensure!(
        err.is_restarting(),
        "in-flight error says a restart is coming: {text}"
    );
    anyhow::ensure!(
        text.contains(probe.actor_ref().id())
            && text.contains("sleep_ms")
            && text.contains("node-"),
        "error names actor, node and method: {text}"
    );
    anyhow::ensure!(probe.bump().await? == 1, "the constructor ran again");
    let new_pid = probe.pid().await?;
    anyhow::ensure!(
        new_pid != pid && !pid_alive(pid),
        "a new process serves the actor"
    );
    let info = cluster.actor_info(&probe).await?;
    anyhow::ensure!(info.restarts == 1, "restarts counted: {}", info.restarts);
    cluster.kill(&probe).await?;
    let after = probe.bump().await.expect_err("killed actor");
    let finished = matches!(&after, Error::Dead { .. })
        || matches!(&after, Error::Died(death) if !death.restarting);
    anyhow::ensure!(finished, "after kill: {after}");
    Ok(())
}

async fn panics_reach_the_caller(world: &World) -> anyhow::Result<()> {
    let cluster = &world.cluster;
    let probe = Probe::spawn(cluster, probe_options().max_restarts(1), "panicky".into()).await?;
    let pid = probe.pid().await?;
    let err = probe
        .crash("kaboom 42".into())
        .await
        .expect_err("a panic is an error");
    let Error::Panicked(panic) = &err else {
        anyhow::bail!("expected Panicked, got {err}");
    };
    anyhow::ensure!(
        panic.actor == probe.actor_ref().id()
            && panic.node.starts_with("node-")
            && panic.method == "crash",
        "{err}"
    );
    anyhow::ensure!(
        panic.message.contains("kaboom 42"),
        "the panic message travels: {}",
        panic.message
    );
    anyhow::ensure!(!panic.backtrace.is_empty(), "a backtrace travels too");
    anyhow::ensure!(probe.pid().await? != pid, "the panic restarted the worker");
    probe.crash("again".into()).await.expect_err("second panic");
    let dead = probe.pid().await.expect_err("out of restarts");
    anyhow::ensure!(
        matches!(dead, Error::Dead { .. }),
        "out of restarts: {dead}"
    );
    let picky = Picky::spawn(cluster, SpawnOptions::new().num_cpus(0.1), true).await?;
    let failed = picky.ok().await.expect_err("constructor failed");
    anyhow::ensure!(
        failed.to_string().contains("refusing to start"),
        "constructor error travels: {failed}"
    );
    Ok(())
}

async fn bad_input_is_rejected(world: &World) -> anyhow::Result<()> {
    let address = format!("http://{}", world.fixture.head_address);
    let bare = tonic::transport::Endpoint::from_shared(address)?
        .connect()
        .await?;
    let refused = ClusterClient::new(bare.clone())
        .status(Empty {})
        .await
        .expect_err("a request without the token is refused");
    anyhow::ensure!(
        refused.code() == tonic::Code::Unauthenticated && refused.message().contains("no token"),
        "missing token: {refused:?}"
    );
    ClusterClient::new(bare)
        .version(Empty {})
        .await
        .map_err(|status| anyhow::anyhow!("the version check needs no token: {status:?}"))?;
    let token = troupe::server::rpc::Token::from_env()?;
    let channel = troupe::server::rpc::connect(&world.fixture.head_address, &token)
        .await
        .map_err(anyhow::Error::msg)?;
    let mut actors = ActorsClient::new(channel.clone());
    let mut nodes = NodesClient::new(channel.clone());
    let mut cluster = ClusterClient::new(channel);
    let valid = CreateActorRequest {
        type_name: "cluster::Probe".into(),
        resources: Some(ResourceRequest {
            cpu_milli: 100,
            ..ResourceRequest::default()
        }),
        max_concurrency: 1,
        binary_hash: "0".repeat(64),
        ..CreateActorRequest::default()
    };
    let mut checks: Vec<(&str, tonic::Code, &str, tonic::Status)> = Vec::new();
    macro_rules! expect_err {
        ($label:expr, $code:expr, $needle:expr, $call:expr) => {{
            let started = Instant::now();
            let outcome = $call.await;
            anyhow::ensure!(
                started.elapsed() < Duration::from_secs(1),
                "{} took {:?}",
                $label,
                started.elapsed()
            );
            match outcome {
                Ok(_) => anyhow::bail!("{} was accepted", $label),
                Err(status) => checks.push(($label, $code, $needle, status)),
            }
        }};
    }
    let too_many = world.cluster.spawn_raw(
        "cluster::Probe",
        troupe::codec::encode(&("x".to_string(),))?,
        SpawnOptions::new().num_gpus(16.0),
    );
    let started = Instant::now();
    let err = too_many.await.expect_err("16 GPUs");
    anyhow::ensure!(
        started.elapsed() < Duration::from_secs(1),
        "infeasible answer took {:?}",
        started.elapsed()
    );
    anyhow::ensure!(
        err.rpc_code() == Some(tonic::Code::FailedPrecondition)
            && err.to_string().contains("16 whole devices"),
        "{err}"
    );
    expect_err!(
        "empty type",
        tonic::Code::InvalidArgument,
        "type_name",
        actors.create_actor(CreateActorRequest {
            type_name: String::new(),
            ..valid.clone()
        })
    );
    expect_err!(
        "negative restarts",
        tonic::Code::InvalidArgument,
        "max_restarts",
        actors.create_actor(CreateActorRequest {
            max_restarts: -5,
            ..valid.clone()
        })
    );
    expect_err!(
        "zero concurrency",
        tonic::Code::InvalidArgument,
        "max_concurrency",
        actors.create_actor(CreateActorRequest {
            max_concurrency: 0,
            ..valid.clone()
        })
    );
    expect_err!(
        "1.5 GPUs",
        tonic::Code::InvalidArgument,
        "gpu_milli",
        actors.create_actor(CreateActorRequest {
            resources: Some(ResourceRequest {
                gpu_milli: 1500,
                ..ResourceRequest::default()
            }),
            ..valid.clone()
        })
    );
    expect_err!(
        "NaN resource",
        tonic::Code::InvalidArgument,
        "resources.custom",
        actors.create_actor(CreateActorRequest {
            resources: Some(ResourceRequest {
                custom: [("x".to_string(), f64::NAN)].into(),
                ..ResourceRequest::default()
            }),
            ..valid.clone()
        })
    );
    expect_err!(
        "unknown executable",
        tonic::Code::InvalidArgument,
        "binary_hash",
        actors.create_actor(valid.clone())
    );
    expect_err!(
        "no resources",
        tonic::Code::InvalidArgument,
        "resources",
        actors.create_actor(CreateActorRequest {
            resources: None,
            ..valid.clone()
        })
    );
    expect_err!(
        "unknown actor id",
        tonic::Code::NotFound,
        "actor-nope",
        actors.get_actor(GetActorRequest {
            id: "actor-nope".into(),
            ..GetActorRequest::default()
        })
    );
    expect_err!(
        "id and name",
        tonic::Code::InvalidArgument,
        "exactly one",
        actors.get_actor(GetActorRequest {
            id: "a".into(),
            name: "b".into(),
            ..GetActorRequest::default()
        })
    );
    expect_err!(
        "kill unknown",
        tonic::Code::NotFound,
        "actor-nope",
        actors.kill_actor(KillActorRequest {
            id: "actor-nope".into(),
            allow_restart: false
        })
    );
    expect_err!(
        "ready unknown",
        tonic::Code::NotFound,
        "actor-nope",
        actors.worker_ready(WorkerReadyRequest {
            actor_id: "actor-nope".into(),
            worker_address: "127.0.0.1:1".into(),
            ..WorkerReadyRequest::default()
        })
    );
    expect_err!(
        "ready bad address",
        tonic::Code::InvalidArgument,
        "worker_address",
        actors.worker_ready(WorkerReadyRequest {
            actor_id: "actor-nope".into(),
            worker_address: "nowhere".into(),
            ..WorkerReadyRequest::default()
        })
    );
    let resources = NodeResources {
        cpu_milli: 1000,
        ..NodeResources::default()
    };
    expect_err!(
        "node without port",
        tonic::Code::InvalidArgument,
        "address",
        nodes.register_node(RegisterNodeRequest {
            address: "localhost".into(),
            resources: Some(resources.clone()),
            ..RegisterNodeRequest::default()
        })
    );
    let twice = NodeResources {
        gpus: vec![
            GpuDevice {
                index: 0,
                model: "x".into(),
            },
            GpuDevice {
                index: 0,
                model: "x".into(),
            },
        ],
        ..resources.clone()
    };
    expect_err!(
        "GPU listed twice",
        tonic::Code::InvalidArgument,
        "listed twice",
        nodes.register_node(RegisterNodeRequest {
            address: "127.0.0.1:1".into(),
            resources: Some(twice),
            ..RegisterNodeRequest::default()
        })
    );
    expect_err!(
        "node without resources",
        tonic::Code::InvalidArgument,
        "resources",
        nodes.register_node(RegisterNodeRequest {
            address: "127.0.0.1:1".into(),
            ..RegisterNodeRequest::default()
        })
    );
    expect_err!(
        "empty heartbeat",
        tonic::Code::InvalidArgument,
        "node_id",
        nodes.heartbeat(HeartbeatRequest::default())
    );
    expect_err!(
        "fetch outside the store",
        tonic::Code::NotFound,
        "no executable",
        nodes.fetch_binary(BinaryRef {
            hash: "../../etc/passwd".into()
        })
    );
    let lying = vec![BinaryChunk {
        hash: "a".repeat(64),
        data: vec![1, 2, 3].into(),
    }];
    expect_err!(
        "upload with a wrong hash",
        tonic::Code::InvalidArgument,
        "hashes to",
        cluster.upload_binary(futures::stream::iter(lying))
    );
    let bad_hash = vec![BinaryChunk {
        hash: "../x".into(),
        data: vec![1].into(),
    }];
    expect_err!(
        "upload with a bad hash",
        tonic::Code::InvalidArgument,
        "hash",
        cluster.upload_binary(futures::stream::iter(bad_hash))
    );
    for (label, code, needle, status) in &checks {
        anyhow::ensure!(
            status.code() == *code,
            "{label}: expected {code:?}, got {:?}: {}",
            status.code(),
            status.message()
        );
        anyhow::ensure!(
            status.message().contains(needle),
            "{label}: message `{}` does not name `{needle}`",
            status.message()
        );
    }
    let unknown_node = nodes
        .heartbeat(HeartbeatRequest {
            node_id: "node-ghost".into(),
            running: vec!["garbage".into()],
            jobs: vec!["no-such-job".into()],
        })
        .await?;
    anyhow::ensure!(
        unknown_node.into_inner().reregister,
        "an unknown node is told to register"
    );
    let invalid = world
        .cluster
        .spawn_raw(
            "cluster::Probe",
            bytes::Bytes::new(),
            SpawnOptions::new().num_gpus(1.5),
        )
        .await
        .expect_err("1.5 GPUs");
    anyhow::ensure!(invalid.to_string().contains("num_gpus"), "{invalid}");
    cluster.version(troupe::proto::Empty {}).await?;
    anyhow::ensure!(
        world.fixture.status_json()?["nodes"]
            .as_array()
            .map(Vec::len)
            == Some(3),
        "the head is still up"
    );
    Ok(())
}

async fn driver_exit_stops_owned_actors(world: &World) -> anyhow::Result<()> {
    let exe = std::env::current_exe()?;
    let mut child = tokio::process::Command::new(exe)
        .env(CHILD_DRIVER, &world.fixture.head_address)
        .stdout(std::process::Stdio::piped())
        .kill_on_drop(true)
        .spawn()?;
    let stdout = child
        .stdout
        .take()
        .ok_or_else(|| anyhow::anyhow!("no stdout"))?;
    let mut lines = tokio::io::AsyncBufReadExt::lines(tokio::io::BufReader::new(stdout));
    let line = tokio::time::timeout(Duration::from_secs(30), lines.next_line())
        .await??
        .ok_or_else(|| anyhow::anyhow!("the child driver printed nothing"))?;
    let parts: Vec<&str> = line.split_whitespace().collect();
    anyhow::ensure!(parts.len() == 2, "child said `{line}`");
    let (owned_name, detached_name) = (parts[0], parts[1]);
    let owned = world.cluster.get_actor::<Probe>(owned_name).await?;
    let detached = world.cluster.get_actor::<Probe>(detached_name).await?;
    let owned_pid = owned.pid().await?;
    child.start_kill()?;
    child.wait().await?;
    let info = wait_for_state(
        &world.cluster,
        &owned,
        ActorState::Dead,
        Duration::from_secs(10),
    )
    .await?;
    anyhow::ensure!(
        info.death_reason.contains("driver"),
        "reason: {}",
        info.death_reason
    );
    let deadline = Instant::now() + Duration::from_secs(5);
    while pid_alive(owned_pid) {
        anyhow::ensure!(
            Instant::now() < deadline,
            "the owned actor's worker {owned_pid} outlived its driver"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    anyhow::ensure!(
        detached.bump().await? == 1,
        "the detached actor still serves"
    );
    world.cluster.kill(&detached).await?;
    Ok(())
}

async fn node_loss_replaces_actors(world: &World) -> anyhow::Result<()> {
    let cluster = &world.cluster;
    let probe = Probe::spawn(
        cluster,
        probe_options()
            .num_gpus(1.0)
            .max_restarts(3)
            .label("gpu-model", "H100"),
        "survivor".into(),
    )
    .await?;
    let before = cluster.actor_info(&probe).await?;
    let _ = probe.pid().await?;
    let before = if before.node_id.is_empty() {
        cluster.actor_info(&probe).await?
    } else {
        before
    };
    let index = world.fixture.node_index_of(&before.node_id)?;
    let pid = probe.pid().await?;
    let killed_at = Instant::now();
    world.fixture.kill_node(index)?;
    let deadline = killed_at + Duration::from_secs(10);
    loop {
        let status = world.fixture.status_json()?;
        let dead = status["nodes"]
            .as_array()
            .and_then(|nodes| nodes.iter().find(|n| n["id"] == before.node_id.as_str()))
            .map(|node| node["state"] == "dead")
            .unwrap_or(false);
        if dead {
            break;
        }
        anyhow::ensure!(
            Instant::now() < deadline,
            "node {} not marked dead within 10 s",
            before.node_id
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let marked_dead_after = killed_at.elapsed();
    let deadline = Instant::now() + Duration::from_secs(3);
    while pid_alive(pid) {
        anyhow::ensure!(
            Instant::now() < deadline,
            "the worker {pid} outlived its node agent"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let after = wait_for_state(cluster, &probe, ActorState::Alive, Duration::from_secs(10)).await?;
    anyhow::ensure!(after.node_id != before.node_id, "re-placed on another node");
    anyhow::ensure!(
        world.fixture.node_index_of(&after.node_id)? != 1,
        "the H100 label still holds"
    );
    anyhow::ensure!(probe.bump().await? == 1, "the re-placed actor answers");
    let visible = probe.env("CUDA_VISIBLE_DEVICES".into()).await?;
    anyhow::ensure!(
        visible.as_deref() == Some(devices_of(&after).as_str()),
        "pinned again: {visible:?}"
    );
    println!(
        "  node declared dead {:.1}s after kill -9",
        marked_dead_after.as_secs_f64()
    );
    cluster.kill(&probe).await?;
    Ok(())
}

async fn actor_group_dispatch(world: &World) -> anyhow::Result<()> {
    let cluster = &world.cluster;
    let group = ActorGroup::spawn(
        cluster,
        3,
        probe_options().num_gpus(1.0),
        |rank, size, options| Shard::spawn(cluster, options, rank, size),
    )
    .await?;
    let places = group
        .broadcast(|shard| async move { shard.place().await })
        .await?;
    anyhow::ensure!(
        places == vec![(0, 3), (1, 3), (2, 3)],
        "broadcast in rank order: {places:?}"
    );
    let batch = Batch::new(5).with_f32("reward", &[], &[1.0, 1.0, 1.0, 1.0, 1.0])?;
    let scaled = group
        .split(&batch, |shard, part| async move { shard.scale(part).await })
        .await?;
    anyhow::ensure!(
        scaled.f32_values("reward")? == vec![1.0, 1.0, 2.0, 2.0, 3.0],
        "split rows, concatenated in rank order"
    );
    let ranks: Vec<&str> = scaled
        .meta()
        .iter()
        .map(|meta| meta["rank"].as_str())
        .collect();
    anyhow::ensure!(ranks == vec!["0", "0", "1", "1", "2"], "{ranks:?}");
    anyhow::ensure!(
        group
            .rank_zero(|shard| async move { shard.add(10).await })
            .await?
            == 10
    );
    let sums = group
        .per_rank(
            vec![100, 200, 300],
            |shard, x| async move { shard.add(x).await },
        )
        .await?;
    anyhow::ensure!(sums == vec![100, 201, 302], "{sums:?}");
    let wrong = group
        .per_rank(vec![1], |shard, x| async move { shard.add(x).await })
        .await
        .expect_err("one argument for three");
    anyhow::ensure!(
        wrong.to_string().contains("1 arguments for 3 members"),
        "{wrong}"
    );
    let failed = ActorGroup::spawn(cluster, 2, probe_options(), |rank, size, options| {
        let gpus = if rank == 1 { 64.0 } else { 0.0 };
        Shard::spawn(cluster, options.num_gpus(gpus), rank, size)
    })
    .await
    .expect_err("rank 1 cannot be placed");
    anyhow::ensure!(failed.to_string().contains("64 whole devices"), "{failed}");
    group.kill(cluster).await?;
    // A gang is placed all at once or not at all: three members of 4 GPUs each could place one
    // member (node 1 has 4 free), but not all three, so none starts.
    let too_big = ActorGroup::spawn(
        cluster,
        3,
        probe_options().num_gpus(4.0),
        |rank, size, options| Shard::spawn(cluster, options, rank, size),
    )
    .await?;
    for member in too_big.members() {
        let info = cluster.actor_info(member).await?;
        anyhow::ensure!(
            info.state() == ActorState::Pending && info.gpus.is_empty(),
            "gang member {} is {:?} holding {:?}",
            info.id,
            info.state(),
            info.gpus
        );
        anyhow::ensure!(
            info.pending_reason.contains("all together"),
            "reason: {}",
            info.pending_reason
        );
    }
    too_big.kill(cluster).await?;
    Ok(())
}

async fn objects_move_peer_to_peer(world: &World) -> anyhow::Result<()> {
    let cluster = &world.cluster;
    let producer = Stage::spawn(cluster, probe_options()).await?;
    let transformer = Stage::spawn(cluster, probe_options()).await?;
    let consumer = Stage::spawn(cluster, probe_options()).await?;
    let before = troupe::call_bytes_received();
    let rows = 2048;
    let produced = producer.produce(rows).await?;
    let transformed = transformer.transform(produced.clone()).await?;
    let (sum, consumer_fetched) = consumer.consume(transformed.clone()).await?;
    let driver_bytes = troupe::call_bytes_received() - before;
    let expected: f64 = (0..rows * 256).map(|i| 2.0 * (i % 7) as f64).sum();
    anyhow::ensure!(
        (sum - expected).abs() < 1e-6 * expected,
        "three stages computed {sum}, expected {expected}"
    );
    let moved = transformer.fetched().await? + consumer_fetched;
    anyhow::ensure!(
        moved >= 2 * rows as u64 * 1024,
        "the stages fetched {moved} bytes peer to peer"
    );
    anyhow::ensure!(
        (driver_bytes as f64) < 0.01 * moved as f64,
        "the driver received {driver_bytes} bytes while {moved} moved between stages"
    );
    produced.release().await?;
    let gone = transformer.transform(produced).await.expect_err("released");
    anyhow::ensure!(gone.to_string().contains("holds no object"), "{gone}");
    anyhow::ensure!(
        ObjectRef::put(bytes::Bytes::from_static(b"x")).is_err(),
        "a driver holds no objects"
    );
    println!("  driver received {driver_bytes} bytes; {moved} moved peer to peer");
    for stage in [&producer, &transformer, &consumer] {
        cluster.kill(stage).await?;
    }
    Ok(())
}

const CHILD_DRIVER: &str = "TROUPE_TEST_CHILD_DRIVER";

/// A driver in its own process: spawns an owned and a detached actor, says their names, then
/// waits to be killed.
async fn child_driver(head: String) -> anyhow::Result<()> {
    let cluster = Cluster::connect(&head).await?;
    let suffix = std::process::id();
    let owned = format!("owned-{suffix}");
    let detached = format!("detached-{suffix}");
    let a = Probe::spawn(
        &cluster,
        probe_options().name(owned.clone()),
        "owned".into(),
    )
    .await?;
    let b = Probe::spawn(
        &cluster,
        probe_options().name(detached.clone()).detached(true),
        "detached".into(),
    )
    .await?;
    a.pid().await?;
    b.pid().await?;
    println!("{owned} {detached}");
    tokio::time::sleep(Duration::from_secs(120)).await;
    Ok(())
}

fn scenarios<'a>() -> Vec<Scenario<'a, World>> {
    vec![
        scenario!(gpus_are_pinned),
        scenario!(status_and_metrics),
        scenario!(names_and_handle_passing),
        scenario!(max_concurrency),
        scenario!(actor_group_dispatch),
        scenario!(objects_move_peer_to_peer),
        scenario!(kill9_worker_restarts),
        scenario!(panics_reach_the_caller),
        scenario!(bad_input_is_rejected),
        scenario!(driver_exit_stops_owned_actors),
        scenario!(node_loss_replaces_actors),
    ]
}

fn main() -> std::process::ExitCode {
    troupe::init();
    let runtime = match support::tokio_runtime() {
        Ok(runtime) => runtime,
        Err(code) => return code,
    };
    if let Ok(head) = std::env::var(CHILD_DRIVER) {
        return match runtime.block_on(child_driver(head)) {
            Ok(()) => std::process::ExitCode::SUCCESS,
            Err(err) => {
                eprintln!("child driver: {err:#}");
                std::process::ExitCode::FAILURE
            }
        };
    }
    let passed = runtime.block_on(async {
        run_cluster_scenarios!(
            &[
                vec!["--gpus", "2", "--gpu-model", "H100", "--cpus", "8"],
                vec!["--gpus", "4", "--gpu-model", "A100", "--cpus", "8"],
                vec!["--gpus", "2", "--gpu-model", "H100", "--cpus", "8"],
            ],
            World,
            scenarios
        )
    });
    support::exit_code(passed)
}
