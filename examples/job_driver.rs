//! job_driver: a driver meant to run as a job. `Cluster::from_env()` connects to the cluster the
//! job runs on (`TROUPE_ADDRESS` and `TROUPE_TOKEN` are set in every entrypoint) or, run by hand,
//! starts an embedded one. It spawns named actors, calls each once, and holds them for a while;
//! stopping the job stops them too.
//!
//! Run as a job:
//! `cargo build --release -p troupe --example job_driver`, then
//! `troupe job submit --wait -- target/release/examples/job_driver --actors 2 --hold-s 5`

use std::time::Duration;
use troupe::{Cluster, SpawnOptions};

/// Answers pings with the process it runs in.
pub struct Echo {
    calls: u64,
}

#[troupe::actor]
impl Echo {
    pub fn new() -> Self {
        Echo { calls: 0 }
    }

    pub fn ping(&mut self, text: String) -> String {
        self.calls += 1;
        // What its logs show (`troupe logs NAME`).
        println!("echo got `{text}` (call {})", self.calls);
        format!("{text} #{} from pid {}", self.calls, std::process::id())
    }
}

/// `--actors N` and `--hold-s S` from the command line.
fn options() -> anyhow::Result<(usize, f64)> {
    let mut actors = 1;
    let mut hold_s = 0.0;
    let mut args = std::env::args().skip(1);
    while let Some(flag) = args.next() {
        let value = args
            .next()
            .ok_or_else(|| anyhow::anyhow!("{flag} needs a value"))?;
        match flag.as_str() {
            "--actors" => actors = value.parse()?,
            "--hold-s" => hold_s = value.parse()?,
            other => anyhow::bail!("unknown flag {other} (expected --actors N, --hold-s S)"),
        }
    }
    Ok((actors, hold_s))
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    troupe::init();
    let (actors, hold_s) = options()?;
    let job = std::env::var("TROUPE_JOB_ID").unwrap_or_else(|_| "none".to_string());
    let cluster = Cluster::from_env().await?;
    println!("job {job}: connected to {}", cluster.address());
    let mut echoes = Vec::new();
    for index in 0..actors {
        let options = SpawnOptions::new()
            .num_cpus(0.1)
            .name(format!("{job}-echo-{index}"));
        let echo = Echo::spawn(&cluster, options).await?;
        let reply = echo.ping(format!("hello {index}")).await?;
        println!("actor {index} answered: {reply}");
        echoes.push(echo);
    }
    if hold_s > 0.0 {
        println!("holding {actors} actor(s) for {hold_s} s");
        tokio::time::sleep(Duration::from_secs_f64(hold_s)).await;
    }
    cluster.shutdown().await;
    println!("done");
    Ok(())
}
