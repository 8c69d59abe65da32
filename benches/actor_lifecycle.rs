//! actor_lifecycle: how fast actors come up and come back, on the embedded local cluster.
//!
//! - spawn_to_first_call: spawn an actor and wait for the answer to its first call (a new worker
//!   process each time), 20 times;
//! - kill9_to_restarted: SIGKILL an actor's worker and wait until the restarted actor answers
//!   (constructor re-run in a new process), 10 times.
//!
//! Prints median, p90 and mean of each in milliseconds; `--json PATH` also writes them.
//! Run: `cargo bench -p troupe --bench actor_lifecycle -- --json target/actor_lifecycle.json`
//! (Ray 2.60 measured about 490 ms and 970 ms for the same two on a 2-core machine.)

use std::time::{Duration, Instant};
use troupe::{Cluster, SpawnOptions};

/// The smallest possible actor.
pub struct Pinger {
    started: u32,
}

#[troupe::actor]
impl Pinger {
    pub fn new() -> Self {
        Pinger {
            started: std::process::id(),
        }
    }

    pub fn ping(&self) -> u32 {
        self.started
    }
}

fn summary(name: &str, samples: &mut [f64]) -> serde_json::Value {
    samples.sort_by(f64::total_cmp);
    let median = samples[samples.len() / 2];
    let p90 = samples[(samples.len() * 9 / 10).min(samples.len() - 1)];
    let mean = samples.iter().sum::<f64>() / samples.len() as f64;
    println!(
        "{name:<22} median {median:>8.1} ms   p90 {p90:>8.1} ms   mean {mean:>8.1} ms   (n={})",
        samples.len()
    );
    serde_json::json!({ "name": name, "median_ms": median, "p90_ms": p90, "mean_ms": mean, "samples_ms": samples })
}

async fn spawn_to_first_call(cluster: &Cluster, rounds: usize) -> anyhow::Result<Vec<f64>> {
    let mut samples = Vec::with_capacity(rounds);
    for _ in 0..rounds {
        let started = Instant::now();
        let pinger = Pinger::spawn(cluster, SpawnOptions::new().num_cpus(0.1)).await?;
        pinger.ping().await?;
        samples.push(started.elapsed().as_secs_f64() * 1000.0);
        cluster.kill(&pinger).await?;
    }
    Ok(samples)
}

async fn kill9_to_restarted(cluster: &Cluster, rounds: usize) -> anyhow::Result<Vec<f64>> {
    let pinger = Pinger::spawn(cluster, SpawnOptions::new().num_cpus(0.1).max_restarts(-1)).await?;
    let mut pid = pinger.ping().await?;
    let mut samples = Vec::with_capacity(rounds);
    for _ in 0..rounds {
        let started = Instant::now();
        // SAFETY: kill(2) on the worker pid the actor reported.
        unsafe {
            libc::kill(pid as i32, libc::SIGKILL);
        }
        let deadline = started + Duration::from_secs(30);
        let new_pid = loop {
            match pinger.ping().await {
                Ok(new_pid) if new_pid != pid => break new_pid,
                Ok(_) => {}
                Err(err) if err.is_restarting() => {}
                Err(err) => return Err(err.into()),
            }
            anyhow::ensure!(Instant::now() < deadline, "no restart within 30 s");
        };
        samples.push(started.elapsed().as_secs_f64() * 1000.0);
        pid = new_pid;
    }
    cluster.kill(&pinger).await?;
    Ok(samples)
}

fn main() -> anyhow::Result<()> {
    troupe::init();
    let runtime = tokio::runtime::Runtime::new()?;
    runtime.block_on(async {
        let cluster = Cluster::local().await?;
        // One warm-up spawn so the page cache holds the executable.
        spawn_to_first_call(&cluster, 1).await?;
        let mut spawn = spawn_to_first_call(&cluster, 20).await?;
        let mut restart = kill9_to_restarted(&cluster, 10).await?;
        let report = serde_json::json!({
            "bench": "actor_lifecycle",
            "cluster": "embedded local (Cluster::local)",
            "results": [summary("spawn_to_first_call", &mut spawn), summary("kill9_to_restarted", &mut restart)],
        });
        if let Some(path) = troupe::report::json_path_arg() {
            println!("wrote {}", troupe::report::write_json(&path, &report)?.display());
        }
        cluster.shutdown().await;
        anyhow::Ok(())
    })
}
