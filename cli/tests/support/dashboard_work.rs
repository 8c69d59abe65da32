//! The dashboard test's cluster work: two GPU actors joined in a slow two-stage pipeline with a
//! weight sync (each prints a known line when constructed), an actor with markup in its name,
//! one waiting for a GPU, a placement group, and a job that prints a known line.

use crate::support::{wait_for_state, Fixture, Probe};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};
use troupe::data::Batch;
use troupe::jobs::JobClient;
use troupe::pipeline::{
    Dispatch, PipelineBuilder, StageCall, StageReceipt, SyncOutcome, WeightSyncEdge,
};
use troupe::proto::{ActorState, JobSpec};
use troupe::{ActorGroup, BoxFuture, Cluster, PlacementGroupSpec, SpawnOptions};

pub const TRAINER_LINE: &str = "dashboard-test: the trainer is constructed";
pub const GENERATOR_LINE: &str = "dashboard-test: the generator is constructed";
pub const JOB_LINE: &str = "dashboard-test: the job says hello";
pub const EVIL_NAME: &str = "<img src=x onerror=alert(1)>dash-evil";
/// How long each stage of the pipeline takes at least.
pub const GENERATE_MS: u64 = 300;

/// Makes responses from prompts, slowly.
pub struct DashGenerator {
    version: u64,
}

#[troupe::actor]
impl DashGenerator {
    pub fn new() -> Self {
        println!("{GENERATOR_LINE}");
        DashGenerator { version: 0 }
    }

    pub async fn generate(&self, mut call: StageCall) -> anyhow::Result<StageReceipt> {
        let batch = call.inputs().await?;
        tokio::time::sleep(Duration::from_millis(GENERATE_MS)).await;
        let responses: Vec<f32> = batch
            .f32_values("prompt")?
            .iter()
            .map(|p| p * 2.0 + self.version as f32)
            .collect();
        Ok(call.finish(Batch::new(batch.rows()).with_f32("response", &[], &responses)?)?)
    }

    pub fn set_version(&mut self, version: u64) {
        self.version = version;
    }
}

/// Learns from responses; its step count is its weight version.
pub struct DashTrainer {
    step: u64,
}

#[troupe::actor]
impl DashTrainer {
    pub fn new() -> Self {
        println!("{TRAINER_LINE}");
        DashTrainer { step: 0 }
    }

    pub async fn train(&mut self, mut call: StageCall) -> anyhow::Result<StageReceipt> {
        let batch = call.inputs().await?;
        tokio::time::sleep(Duration::from_millis(100)).await;
        let mean = batch.f32_values("response")?.iter().sum::<f32>() / batch.rows().max(1) as f32;
        self.step += 1;
        Ok(call.finish(Batch::new(batch.rows()).with_f32(
            "loss",
            &[],
            &vec![mean; batch.rows()],
        )?)?)
    }

    pub fn version(&self) -> u64 {
        self.step
    }
}

struct VersionSync {
    trainers: ActorGroup<DashTrainerHandle>,
    generators: ActorGroup<DashGeneratorHandle>,
}

impl WeightSyncEdge for VersionSync {
    fn learning_group(&self) -> &str {
        self.trainers.name()
    }
    fn generating_group(&self) -> &str {
        self.generators.name()
    }
    fn connect(&self) -> BoxFuture<troupe::Result<()>> {
        Box::pin(async { Ok(()) })
    }
    fn sync(&self) -> BoxFuture<troupe::Result<SyncOutcome>> {
        let (trainers, generators) = (self.trainers.clone(), self.generators.clone());
        Box::pin(async move {
            let started = Instant::now();
            let version = trainers
                .rank_zero(|t| async move { t.version().await })
                .await?;
            generators
                .broadcast(|g| async move { g.set_version(version).await })
                .await?;
            Ok(SyncOutcome {
                version,
                milliseconds: started.elapsed().as_secs_f64() * 1e3,
                bytes: 0,
            })
        })
    }
}

/// The cluster's work: the pipeline's actors, the others, a placement group and a job.
pub struct Work {
    pub trainer: DashTrainerHandle,
    pub job_id: String,
    pub stop: Arc<AtomicBool>,
    pub driver: tokio::task::JoinHandle<anyhow::Result<u64>>,
}

pub async fn start_work(fixture: &Fixture, cluster: &Cluster) -> anyhow::Result<Work> {
    let gpu = || SpawnOptions::new().num_cpus(0.5).num_gpus(1.0);
    let trainer = DashTrainer::spawn(cluster, gpu().name("dash-trainer")).await?;
    let generator = DashGenerator::spawn(cluster, gpu().name("dash-generator")).await?;
    wait_for_state(
        cluster,
        &trainer,
        ActorState::Alive,
        Duration::from_secs(60),
    )
    .await?;
    wait_for_state(
        cluster,
        &generator,
        ActorState::Alive,
        Duration::from_secs(60),
    )
    .await?;
    // Both GPUs are held now: this one waits, with a reason.
    Probe::spawn(cluster, gpu().name("dash-waiting")).await?;
    let evil = Probe::spawn(cluster, SpawnOptions::new().num_cpus(0.1).name(EVIL_NAME)).await?;
    wait_for_state(cluster, &evil, ActorState::Alive, Duration::from_secs(60)).await?;
    let mut spec = PlacementGroupSpec::new(vec![SpawnOptions::new().num_cpus(0.1)], "PACK");
    spec.name = "dash-group".to_string();
    cluster.create_placement_group(spec).await?;

    let token = troupe::server::rpc::Token::read_file(&fixture.dir.join("head").join("token"))?;
    let jobs = JobClient::connect(&fixture.head_address, &token).await?;
    let job_spec = JobSpec {
        entrypoint: format!("echo '{JOB_LINE}'; sleep 1"),
        ..JobSpec::default()
    };
    let job_id = jobs.submit("", job_spec).await?.submission_id;

    let trainers = ActorGroup::from_handles(vec![trainer.clone()]).named("trainers");
    let generators = ActorGroup::from_handles(vec![generator]).named("generators");
    let pipeline = PipelineBuilder::new()
        .source(&["prompt"])
        .stage(
            "generate",
            &generators,
            Dispatch::Split,
            &["prompt"],
            &["response"],
            |g, call| async move { g.generate(call).await },
        )
        .stage(
            "train",
            &trainers,
            Dispatch::RankZero,
            &["response"],
            &["loss"],
            |t, call| async move { t.train(call).await },
        )
        .weight_sync(VersionSync {
            trainers: trainers.clone(),
            generators: generators.clone(),
        })
        .build()?;
    let stop = Arc::new(AtomicBool::new(false));
    let stopped = stop.clone();
    let driver = tokio::spawn(async move {
        let mut version = 0;
        let mut steps = 0;
        while !stopped.load(Ordering::Relaxed) && steps < 2000 {
            let prompts: Vec<f32> = (0..32).map(|i| (i + steps) as f32).collect();
            let input = Batch::new(prompts.len()).with_f32("prompt", &[], &prompts)?;
            pipeline.run_step(input, version).await?;
            version = pipeline.sync_weights().await?.version;
            steps += 1;
        }
        Ok(steps)
    });
    Ok(Work {
        trainer,
        job_id,
        stop,
        driver,
    })
}
