//! pipeline_dag: a small RL-shaped pipeline over actor groups on the embedded cluster.
//!
//! Two rollout actors (rows split between them) turn prompts into responses, a reward actor
//! scores them, a trainer actor "learns" from both; after each step the pipeline's weight-sync
//! edge gives the trainer's version to every rollout actor. Each stage is a method taking a
//! `StageCall`: it fetches its input columns from the actors that made them and keeps its
//! output for the next stages, so the driver only sends calls and reads receipts. The program
//! prints the graph (DOT and Mermaid), runs three steps, and prints each stage's time and
//! throughput and the bytes the driver carried; `--json PATH` writes them too.
//!
//! Run: `cargo run --release -p troupe --example pipeline_dag`

use troupe::data::Batch;
use troupe::pipeline::{
    Dispatch, PipelineBuilder, StageCall, StageReceipt, SyncOutcome, WeightSyncEdge,
};
use troupe::{ActorGroup, BoxFuture, Cluster, SpawnOptions};

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

    pub async fn generate(&self, mut call: StageCall) -> anyhow::Result<StageReceipt> {
        let batch = call.inputs().await?;
        let responses: Vec<f32> = values(&batch, "prompt")?
            .iter()
            .map(|p| p * 2.0 + self.rank as f32 + self.version as f32)
            .collect();
        Ok(call.finish(Batch::new(batch.rows()).with_f32("response", &[], &responses)?)?)
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

    pub async fn score(&self, mut call: StageCall) -> anyhow::Result<StageReceipt> {
        let batch = call.inputs().await?;
        let rewards: Vec<f32> = values(&batch, "response")?
            .iter()
            .map(|r| f32::from(*r as i64 % 3 == 0))
            .collect();
        Ok(call.finish(Batch::new(batch.rows()).with_f32("reward", &[], &rewards)?)?)
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

    pub async fn learn(&mut self, mut call: StageCall) -> anyhow::Result<StageReceipt> {
        let batch = call.inputs().await?;
        let rewards = values(&batch, "reward")?;
        let mean = rewards.iter().sum::<f32>() / rewards.len().max(1) as f32;
        self.step += 1;
        let mut out =
            Batch::new(batch.rows()).with_f32("loss", &[], &vec![1.0 - mean; batch.rows()])?;
        out.step_meta_mut().set("loss", f64::from(1.0 - mean));
        Ok(call.finish(out)?)
    }

    pub fn version(&self) -> u64 {
        self.step
    }
}

/// The weight-sync edge: the learner's version reaches every generator.
struct VersionSync {
    learners: ActorGroup<LearnerHandle>,
    generators: ActorGroup<GeneratorHandle>,
}

impl WeightSyncEdge for VersionSync {
    fn learning_group(&self) -> &str {
        self.learners.name()
    }
    fn generating_group(&self) -> &str {
        self.generators.name()
    }
    fn connect(&self) -> BoxFuture<troupe::Result<()>> {
        Box::pin(async { Ok(()) })
    }
    fn sync(&self) -> BoxFuture<troupe::Result<SyncOutcome>> {
        let (learners, generators) = (self.learners.clone(), self.generators.clone());
        Box::pin(async move {
            let started = std::time::Instant::now();
            let version = learners
                .rank_zero(|learner| async move { learner.version().await })
                .await?;
            generators
                .broadcast(|generator| async move { generator.set_version(version).await })
                .await?;
            Ok(SyncOutcome {
                version,
                milliseconds: started.elapsed().as_secs_f64() * 1e3,
                bytes: 0,
            })
        })
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
    .await?
    .named("rollout");
    let reward = ActorGroup::spawn(&cluster, 1, options(), |_, _, options| {
        Scorer::spawn(&cluster, options)
    })
    .await?
    .named("reward");
    let trainer = ActorGroup::spawn(&cluster, 1, options(), |_, _, options| {
        Learner::spawn(&cluster, options)
    })
    .await?
    .named("trainer");

    let pipeline = PipelineBuilder::new()
        .source(&["prompt"])
        .stage(
            "generate",
            &rollout,
            Dispatch::Split,
            &["prompt"],
            &["response"],
            |generator, call| async move { generator.generate(call).await },
        )
        .stage(
            "score",
            &reward,
            Dispatch::RankZero,
            &["response"],
            &["reward"],
            |scorer, call| async move { scorer.score(call).await },
        )
        .stage(
            "train",
            &trainer,
            Dispatch::RankZero,
            &["response", "reward"],
            &["loss"],
            |learner, call| async move { learner.learn(call).await },
        )
        .weight_sync(VersionSync {
            learners: trainer.clone(),
            generators: rollout.clone(),
        })
        .build()?;

    println!("{}", pipeline.to_dot());
    println!("{}", pipeline.to_mermaid());
    let mut version = 0;
    let mut report = Vec::new();
    for step in 0..3 {
        let prompts: Vec<f32> = (0..64).map(|i| (i + step * 64) as f32).collect();
        let input = Batch::new(prompts.len()).with_f32("prompt", &[], &prompts)?;
        let carried = troupe::call_bytes_sent() + troupe::call_bytes_received();
        let result = pipeline.run_step(input, version).await?;
        let carried = troupe::call_bytes_sent() + troupe::call_bytes_received() - carried;
        version = pipeline.sync_weights().await?.version;
        println!(
            "step {step} (weights v{}): loss {:.3}; the driver carried {carried} bytes (the prompts and the calls), the stages {}",
            result.weight_version,
            result.scalars.get("loss").copied().unwrap_or(f64::NAN),
            result.stage_bytes,
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
