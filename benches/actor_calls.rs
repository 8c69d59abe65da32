//! actor_calls: the workloads of Ray's `ray microbenchmark` (python/ray/_private/ray_perf.py) on
//! the embedded local cluster, under Ray's metric names, so that `benches/compare_ray.sh` can put
//! the two side by side.
//!
//! - `1_1_actor_calls_sync`: one call at a time to one actor, a tiny reply;
//! - `1_1_actor_calls_async`: 1,000 calls in flight to one actor, then wait for all;
//! - `1_1_actor_calls_concurrent`: the same to an actor with max_concurrency 16;
//! - `1_n_actor_calls_async[_nN]`: one client actor makes 5,000 calls to each of N actors;
//! - `n_n_actor_calls_async[_nN]`: N client actors, each 5,000 calls round robin over N actors;
//! - `n_n_actor_calls_with_arg_async[_nN]`: N client actors, each 1,000 calls with an argument
//!   object (an `ObjectRef` the client put) to its own actor;
//! - `actor_creation`: spawn 100 actors and wait for the first answer of each;
//! - `placement_group_create/removal`: create 100 groups of one tiny bundle, wait until all are
//!   placed, remove them;
//! - `put_get_gigabytes`: an actor puts 800 MiB, another fetches it (GB/s), against this
//!   machine's memcpy of the same buffer (`memcpy_gigabytes`), measured in the same run.
//!
//! N is Ray's choice (CPU count / 2, at least 1; no suffix) and also 4 (suffix `_n4`). Each
//! workload is timed like Ray's `timeit`: 1 s of warm-up, then 4 rounds of at least 2 s; the
//! figure is the mean rate. Run: `cargo bench -p troupe --bench actor_calls -- --json
//! target/actor_calls.json` (`--quick`: rounds of 0.5 s; `--only NAME`: one workload).

use bytes::Bytes;
use std::future::Future;
use std::time::{Duration, Instant};
use troupe::objects::ObjectRef;
use troupe::{ActorHandle, Cluster, PlacementGroupSpec, SpawnOptions};

/// The callee of every workload.
pub struct Server;

#[troupe::actor]
impl Server {
    pub fn new() -> Self {
        Server
    }

    pub fn small_value(&self) -> Vec<u8> {
        b"ok".to_vec()
    }

    pub async fn small_value_arg(&self, argument: ObjectRef) -> troupe::Result<Vec<u8>> {
        argument.fetch().await?;
        Ok(b"ok".to_vec())
    }

    /// Keeps `mib` MiB of bytes (filled, so the pages are real) and returns the reference.
    pub fn put_large(&self, mib: usize) -> Result<ObjectRef, String> {
        ObjectRef::put(Bytes::from(vec![7u8; mib << 20])).map_err(|err| err.to_string())
    }

    /// Fetches an object and returns its length.
    pub async fn fetch_len(&self, object: ObjectRef) -> troupe::Result<u64> {
        Ok(object.fetch().await?.len() as u64)
    }

    pub async fn release(&self, object: ObjectRef) -> troupe::Result<()> {
        object.release().await
    }
}

/// An actor that calls other actors (Ray's `Client`).
pub struct Caller {
    servers: Vec<ServerHandle>,
}

#[troupe::actor]
impl Caller {
    pub fn new(servers: Vec<ServerHandle>) -> Self {
        Caller { servers }
    }

    /// `n` calls to each server, all in flight at once.
    pub async fn batch(&self, n: usize) -> troupe::Result<usize> {
        let calls = self
            .servers
            .iter()
            .flat_map(|server| (0..n).map(move |_| server.small_value()));
        let replies = futures::future::try_join_all(calls).await?;
        Ok(replies.len())
    }

    /// `n` calls in all, round robin over the servers, all in flight at once.
    pub async fn round_robin(&self, n: usize) -> troupe::Result<usize> {
        let servers = &self.servers;
        let calls = (0..n).map(|i| servers[i % servers.len()].small_value());
        Ok(futures::future::try_join_all(calls).await?.len())
    }

    /// `n` calls with an argument object to each server.
    pub async fn batch_with_arg(&self, n: usize) -> troupe::Result<usize> {
        let argument = ObjectRef::put(Bytes::from_static(&[0u8; 8]))?;
        let calls = self
            .servers
            .iter()
            .flat_map(|server| (0..n).map(|_| server.small_value_arg(argument.clone())));
        let replies = futures::future::try_join_all(calls).await?;
        argument.release().await?;
        Ok(replies.len())
    }
}

/// Rounds of `round` seconds after 1 s of warm-up, as Ray's `timeit`; returns the mean rate.
async fn rate<F, Fut>(round: Duration, per_call: f64, mut work: F) -> anyhow::Result<f64>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = anyhow::Result<()>>,
{
    let warm = Instant::now();
    let mut count = 0u64;
    while warm.elapsed() < Duration::from_secs(1) {
        work().await?;
        count += 1;
    }
    let step = count / 10 + 1;
    let mut rates = Vec::new();
    for _ in 0..4 {
        let started = Instant::now();
        let mut done = 0u64;
        while started.elapsed() < round {
            for _ in 0..step {
                work().await?;
            }
            done += step;
        }
        rates.push(per_call * done as f64 / started.elapsed().as_secs_f64());
    }
    Ok(rates.iter().sum::<f64>() / rates.len() as f64)
}

fn server() -> SpawnOptions {
    SpawnOptions::new().num_cpus(0.0)
}

async fn servers(cluster: &Cluster, count: usize) -> anyhow::Result<Vec<ServerHandle>> {
    let handles =
        futures::future::try_join_all((0..count).map(|_| Server::spawn(cluster, server()))).await?;
    for handle in &handles {
        handle.small_value().await?;
    }
    Ok(handles)
}

struct Bench {
    cluster: Cluster,
    round: Duration,
    only: Option<String>,
    results: Vec<serde_json::Value>,
}

impl Bench {
    fn wanted(&self, name: &str) -> bool {
        self.only
            .as_ref()
            .is_none_or(|only| name.contains(only.as_str()))
    }

    fn record(&mut self, name: &str, per_s: f64, unit: &str) {
        println!("{name:<40} {per_s:>14.1} {unit}");
        self.results
            .push(serde_json::json!({ "name": name, "per_s": per_s, "unit": unit }));
    }

    async fn one_to_one(&mut self) -> anyhow::Result<()> {
        let round = self.round;
        if self.wanted("1_1_actor_calls_sync") {
            let actor = servers(&self.cluster, 1).await?.remove(0);
            let per_s = rate(round, 1.0, || async {
                actor.small_value().await?;
                Ok(())
            })
            .await?;
            self.record("1_1_actor_calls_sync", per_s, "calls/s");
            self.cluster.kill(&actor).await?;
        }
        for (name, concurrency) in [
            ("1_1_actor_calls_async", 1),
            ("1_1_actor_calls_concurrent", 16),
        ] {
            if !self.wanted(name) {
                continue;
            }
            let actor = Server::spawn(&self.cluster, server().max_concurrency(concurrency)).await?;
            actor.small_value().await?;
            let per_s = rate(round, 1000.0, || async {
                futures::future::try_join_all((0..1000).map(|_| actor.small_value())).await?;
                Ok(())
            })
            .await?;
            self.record(name, per_s, "calls/s");
            self.cluster.kill(&actor).await?;
        }
        Ok(())
    }

    async fn fan_out(&mut self, n: usize, suffix: &str) -> anyhow::Result<()> {
        let round = self.round;
        let name = format!("1_n_actor_calls_async{suffix}");
        if self.wanted(&name) {
            let targets = servers(&self.cluster, n).await?;
            let client = Caller::spawn(&self.cluster, server(), targets.clone()).await?;
            let per_s = rate(round, (5000 * n) as f64, || async {
                client.batch(5000).await?;
                Ok(())
            })
            .await?;
            self.record(&name, per_s, "calls/s");
            self.kill_all(&targets).await?;
            self.cluster.kill(&client).await?;
        }
        let name = format!("n_n_actor_calls_async{suffix}");
        if self.wanted(&name) {
            let targets = servers(&self.cluster, n).await?;
            let clients = futures::future::try_join_all(
                (0..n).map(|_| Caller::spawn(&self.cluster, server(), targets.clone())),
            )
            .await?;
            let per_s = rate(round, (5000 * n) as f64, || async {
                futures::future::try_join_all(clients.iter().map(|c| c.round_robin(5000))).await?;
                Ok(())
            })
            .await?;
            self.record(&name, per_s, "calls/s");
            self.kill_all(&targets).await?;
            self.kill_all(&clients).await?;
        }
        let name = format!("n_n_actor_calls_with_arg_async{suffix}");
        if self.wanted(&name) {
            let targets = servers(&self.cluster, n).await?;
            let clients = futures::future::try_join_all(
                targets
                    .iter()
                    .map(|t| Caller::spawn(&self.cluster, server(), vec![t.clone()])),
            )
            .await?;
            let per_s = rate(round, (1000 * n) as f64, || async {
                futures::future::try_join_all(clients.iter().map(|c| c.batch_with_arg(1000)))
                    .await?;
                Ok(())
            })
            .await?;
            self.record(&name, per_s, "calls/s");
            self.kill_all(&targets).await?;
            self.kill_all(&clients).await?;
        }
        Ok(())
    }

    async fn kill_all(&self, handles: &[impl ActorHandle]) -> anyhow::Result<()> {
        for handle in handles {
            self.cluster.kill(handle).await?;
        }
        Ok(())
    }

    async fn creation(&mut self) -> anyhow::Result<()> {
        if !self.wanted("actor_creation") {
            return Ok(());
        }
        let cluster = self.cluster.clone();
        let per_s = rate(self.round, 100.0, || {
            let cluster = cluster.clone();
            async move {
                let actors = servers(&cluster, 100).await?;
                for actor in &actors {
                    cluster.kill(actor).await?;
                }
                Ok(())
            }
        })
        .await?;
        self.record("actor_creation", per_s, "actors/s");
        Ok(())
    }

    async fn placement_groups(&mut self) -> anyhow::Result<()> {
        if !self.wanted("placement_group") {
            return Ok(());
        }
        let cluster = self.cluster.clone();
        let per_s = rate(self.round, 100.0, || {
            let cluster = cluster.clone();
            async move {
                let groups = futures::future::try_join_all((0..100).map(|_| {
                    cluster.create_placement_group(PlacementGroupSpec::new(
                        vec![SpawnOptions::new().num_cpus(0.001)],
                        "PACK",
                    ))
                }))
                .await?;
                for group in &groups {
                    group.ready(Duration::from_secs(30)).await?;
                }
                for group in &groups {
                    group.remove().await?;
                }
                Ok(())
            }
        })
        .await?;
        self.record("placement_group_create/removal", per_s, "groups/s");
        Ok(())
    }

    async fn put_get(&mut self) -> anyhow::Result<()> {
        if !self.wanted("gigabytes") {
            return Ok(());
        }
        const MIB: usize = 800;
        let gib = MIB as f64 / 1024.0;
        let source: Vec<u8> = vec![7u8; MIB << 20];
        let mut target = vec![0u8; MIB << 20];
        let per_s = rate(self.round, gib, || {
            target.copy_from_slice(&source);
            std::hint::black_box(&target);
            async { Ok(()) }
        })
        .await?;
        drop((source, target));
        self.record("memcpy_gigabytes", per_s, "GiB/s");
        let actors = servers(&self.cluster, 2).await?;
        let (owner, reader) = (&actors[0], &actors[1]);
        let per_s = rate(self.round, gib, || async {
            let object = owner.put_large(MIB).await?;
            let got = reader.fetch_len(object.clone()).await?;
            anyhow::ensure!(got == (MIB as u64) << 20, "fetched {got} bytes");
            owner.release(object).await?;
            Ok(())
        })
        .await?;
        self.record("put_get_gigabytes", per_s, "GiB/s");
        self.kill_all(&actors).await?;
        Ok(())
    }
}

fn main() -> anyhow::Result<()> {
    troupe::init();
    let args: Vec<String> = std::env::args().collect();
    let quick = args.iter().any(|a| a == "--quick");
    let only = args
        .iter()
        .position(|a| a == "--only")
        .and_then(|i| args.get(i + 1))
        .cloned();
    let runtime = tokio::runtime::Runtime::new()?;
    runtime.block_on(async {
        let cluster = Cluster::local().await?;
        let mut bench = Bench {
            cluster,
            round: if quick {
                Duration::from_millis(500)
            } else {
                Duration::from_secs(2)
            },
            only,
            results: Vec::new(),
        };
        let cpus = std::thread::available_parallelism().map_or(1, |n| n.get());
        let ray_n = (cpus / 2).max(1);
        bench.one_to_one().await?;
        bench.fan_out(ray_n, "").await?;
        if ray_n != 4 {
            bench.fan_out(4, "_n4").await?;
        }
        bench.creation().await?;
        bench.placement_groups().await?;
        bench.put_get().await?;
        let report = serde_json::json!({
            "bench": "actor_calls",
            "cluster": "embedded local (Cluster::local)",
            "cpus": cpus,
            "n": ray_n,
            "workloads": bench.results,
        });
        if let Some(path) = troupe::report::json_path_arg() {
            println!(
                "wrote {}",
                troupe::report::write_json(&path, &report)?.display()
            );
        }
        bench.cluster.shutdown().await;
        anyhow::Ok(())
    })
}
