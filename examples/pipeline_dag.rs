//! pipeline_dag: a small RL-shaped pipeline over actor groups on the embedded cluster.
//!
//! Two rollout actors (rows split between them) turn prompts into responses, a reward actor
//! scores them, a trainer actor "learns" from both; after each step the trainer's weight
//! version flows to the rollout group. The program prints the graph (DOT and Mermaid), runs three
//! steps, and prints each stage's time and throughput; `--json PATH` writes them too.
//!
//! Run: `cargo run --release -p troupe --example pipeline_dag`

use troupe::data::Batch;
use troupe::pipeline::{Dispatch, PipelineBuilder};
use troupe::{ActorGroup, Cluster, SpawnOptions};

fn values(batch: &Batch, column: &str) -> anyhow::Result<Vec<f32>> {
    Ok(batch.f32_values(column)?)
}

/// Turns prompts into responses with the weights of its current version.
pub struct Generator {
    rank: usize,
    version: u64,
}

#[troupe::actor]
impl Generator {
    pub fn new(rank: usize, _world: usize) -> Self {
        Generator { rank, version: 0 }
    }

    pub fn generate(&self, batch: Batch) -> anyhow::Result<Batch> {
        let responses: Vec<f32> = values(&batch, "prompt")?
            .iter()
            .map(|p| p * 2.0 + self.rank as f32 + self.version as f32)
            .collect();
        Ok(Batch::new(batch.rows()).with_f32("response", &[], &responses)?)
    }

    pub fn set_version(&mut self, version: u64) {
        self.version = version;
    }
}

/// Scores responses.
pub struct Scorer;

#[troupe::actor]
impl Scorer {
    pub fn new() -> Self {
        Scorer
    }

    pub fn score(&self, batch: Batch) -> anyhow::Result<Batch> {
        let rewards: Vec<f32> = values(&batch, "response")?
            .iter()
            .map(|r| f32::from(*r as i64 % 3 == 0))
            .collect();
        Ok(Batch::new(batch.rows()).with_f32("reward", &[], &rewards)?)
    }
}

/// Learns from scored responses; its step count is its weight version.
pub struct Learner {
    step: u64,
}

#[troupe::actor]
impl Learner {
    pub fn new() -> Self {
        Learner { step: 0 }
    }

    pub fn learn(&mut self, batch: Batch) -> anyhow::Result<Batch> {
        let rewards = values(&batch, "reward")?;
        let mean = rewards.iter().sum::<f32>() / rewards.len().max(1) as f32;
        self.step += 1;
        Ok(Batch::new(batch.rows()).with_f32("loss", &[], &vec![1.0 - mean; batch.rows()])?)
    }

    pub fn version(&self) -> u64 {
        self.step
    }
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    troupe::init();
    let cluster = Cluster::local_builder().cpus(8.0).start().await?;
    let options = || SpawnOptions::new().num_cpus(0.5);
    let rollout = ActorGroup::spawn(&cluster, 2, options(), |rank, world, options| {
        Generator::spawn(&cluster, options, rank, world)
    })
    .await?;
    let reward = ActorGroup::spawn(&cluster, 1, options(), |_, _, options| {
        Scorer::spawn(&cluster, options)
    })
    .await?;
    let trainer = ActorGroup::spawn(&cluster, 1, options(), |_, _, options| {
        Learner::spawn(&cluster, options)
    })
    .await?;

    let (generators, scorers, learners) = (rollout.clone(), reward.clone(), trainer.clone());
    let pipeline = PipelineBuilder::new()
        .group("rollout", rollout.world_size())
        .group("reward", reward.world_size())
        .group("trainer", trainer.world_size())
        .source(&["prompt"])
        .stage(
            "generate",
            "rollout",
            Dispatch::Split,
            &["prompt"],
            &["response"],
            move |rank, batch| {
                let member = generators.rank(rank).cloned();
                Box::pin(async move {
                    member
                        .ok_or(troupe::Error::NoCluster)?
                        .generate(batch)
                        .await
                })
            },
        )
        .stage(
            "score",
            "reward",
            Dispatch::RankZero,
            &["response"],
            &["reward"],
            move |rank, batch| {
                let member = scorers.rank(rank).cloned();
                Box::pin(async move { member.ok_or(troupe::Error::NoCluster)?.score(batch).await })
            },
        )
        .stage(
            "train",
            "trainer",
            Dispatch::RankZero,
            &["response", "reward"],
            &["loss"],
            move |rank, batch| {
                let member = learners.rank(rank).cloned();
                Box::pin(async move { member.ok_or(troupe::Error::NoCluster)?.learn(batch).await })
            },
        )
        .weight_sync("trainer", "rollout")
        .build()?;

    println!("{}", pipeline.to_dot());
    println!("{}", pipeline.to_mermaid());
    let mut version = 0;
    let mut report = Vec::new();
    for step in 0..3 {
        let prompts: Vec<f32> = (0..64).map(|i| (i + step * 64) as f32).collect();
        let input = Batch::new(prompts.len()).with_f32("prompt", &[], &prompts)?;
        let result = pipeline.run_step(input, version).await?;
        // The weight-sync edge: the trainer's new version reaches every rollout actor.
        version = trainer
            .rank_zero(|learner| async move { learner.version().await })
            .await?;
        rollout
            .broadcast(|generator| async move { generator.set_version(version).await })
            .await?;
        println!(
            "step {step} (weights v{}): loss {:.3}",
            result.weight_version,
            result.output.f32_values("loss")?[0]
        );
        for timing in &result.timings {
            println!(
                "  {:<10} {:>8.2} ms  {:>10.0} rows/s",
                timing.stage,
                timing.seconds * 1000.0,
                timing.rows_per_s
            );
            report.push(serde_json::json!({ "step": step, "stage": timing.stage, "seconds": timing.seconds, "rows_per_s": timing.rows_per_s }));
        }
    }
    if let Some(path) = troupe::report::json_path_arg() {
        let json = serde_json::json!({ "example": "pipeline_dag", "order": pipeline.order(), "timings": report });
        println!(
            "wrote {}",
            troupe::report::write_json(&path, &json)?.display()
        );
    }
    cluster.shutdown().await;
    Ok(())
}
