//! The roles as troupe actors, each in its own worker process on an embedded cluster: one GRPO
//! iteration end to end through the roles' direct methods (generate, score, reference log-probs,
//! advantages, policy step, weights to the rollout); the recipes' tests run the same roles as
//! pipeline stages.
//!
//! Run: `cargo test -p troupe-actors --test roles_cluster`

use std::time::Duration;
use troupe::{Cluster, SpawnOptions};
use troupe_actors::generate::SamplingConfig;
use troupe_actors::roles::reference::Reference;
use troupe_actors::roles::reward::{Reward, RewardSpec};
use troupe_actors::roles::rollout::{Rollout, RolloutEngine};
use troupe_actors::roles::trainer::{
    Advantages, PolicyBatch, PolicyConfig, Trainer, TrainerConfig, TrainerHandle,
};
use troupe_actors::roles::ModelSource;
use troupe_actors::tasks::arithmetic::AdditionTask;
use troupe_actors::tasks::Problem;
use troupe_actors::tokenizer::{BuiltinTokenizer, TextTokenizer};
use troupe_actors::train::advantages::grpo;
use troupe_actors::train::optim::{AdamWConfig, LrSchedule};
use troupe_actors::ModelConfig;

async fn grpo_iteration(cluster: &Cluster) -> anyhow::Result<()> {
    let tokenizer = BuiltinTokenizer::new();
    let mut config = ModelConfig::tiny(tokenizer.vocab_size(), 32, 2, 4, 2);
    config.max_position_embeddings = 64;
    let source = ModelSource::fresh(config, 5);
    let options = || SpawnOptions::new().num_cpus(0.5);
    let trainer = Trainer::spawn(
        cluster,
        options(),
        TrainerConfig {
            source: source.clone(),
            pad_id: BuiltinTokenizer::PAD,
            optimizer: AdamWConfig::default(),
            schedule: LrSchedule::constant(1e-3),
            max_grad_norm: 1.0,
            micro_batch: 4,
            policy: PolicyConfig::default(),
        },
    )
    .await?;
    let rollout = Rollout::spawn(
        cluster,
        options(),
        source.clone(),
        BuiltinTokenizer::PAD,
        RolloutEngine::Candle,
    )
    .await?;
    let reference = Reference::spawn(cluster, options(), source, BuiltinTokenizer::PAD).await?;
    let reward = Reward::spawn(
        cluster,
        options(),
        AdditionTask::spec(10, 0),
        vec![
            RewardSpec::new("numeric_match", 1.0),
            RewardSpec::new("digits_only", 0.1),
        ],
        4,
    )
    .await?;

    let group = 4;
    let questions = [("1+2=", "3"), ("2+2=", "4")];
    let mut prompts = Vec::new();
    let mut problems = Vec::new();
    for (question, answer) in questions {
        for _ in 0..group {
            prompts.push(tokenizer.encode(question)?);
            problems.push(Problem {
                prompt: question.to_string(),
                reference: answer.to_string(),
            });
        }
    }
    let sampling = SamplingConfig {
        max_new_tokens: 4,
        temperature: 1.0,
        stop_tokens: vec![BuiltinTokenizer::EOS],
        seed: 7,
        ..SamplingConfig::default()
    };
    let generation = rollout.generate_tokens(prompts.clone(), sampling).await?;
    anyhow::ensure!(generation.weight_version == 0 && generation.tokens.len() == prompts.len());
    let texts = generation
        .tokens
        .iter()
        .map(|tokens| tokenizer.decode(tokens))
        .collect::<Result<Vec<_>, _>>()?;
    let rewards = reward.score_texts(texts, problems).await?;
    anyhow::ensure!(
        rewards.len() == prompts.len() && rewards.iter().all(|r| (0.0..=1.1).contains(r)),
        "{rewards:?}"
    );
    let advantages = grpo(&rewards, group, true, 1e-6)?;
    let ref_logprobs = reference
        .token_logprobs(prompts.clone(), generation.tokens.clone())
        .await?;
    for (sampled, frozen) in generation.logprobs.iter().zip(&ref_logprobs) {
        for (a, b) in sampled.iter().zip(frozen) {
            anyhow::ensure!(
                (a - b).abs() < 1e-3,
                "same weights, same log-probs: {a} vs {b}"
            );
        }
    }
    let stats = trainer
        .policy_step(PolicyBatch {
            prompts: prompts.clone(),
            responses: generation.tokens.clone(),
            old_logprobs: generation.logprobs.clone(),
            ref_logprobs: Some(ref_logprobs),
            advantages: Advantages::PerSequence(advantages),
        })
        .await?;
    anyhow::ensure!(stats.step == 1 && stats.tokens > 0, "{stats:?}");
    let weights = trainer.weights().await?;
    anyhow::ensure!(rollout.load_weights(weights).await? == 1);
    anyhow::ensure!(rollout.weight_version().await? == 1);
    let bad = trainer
        .sft_step(vec![vec![1]], vec![])
        .await
        .expect_err("mismatched batch");
    anyhow::ensure!(
        matches!(bad, troupe::Error::Method { .. }) && bad.to_string().contains("targets"),
        "{bad}"
    );
    println!(
        "one GRPO iteration over 4 role actors: rewards {rewards:?}, loss {:.4}",
        stats.loss
    );
    cluster.kill(&trainer).await?;
    cluster.kill(&rollout).await?;
    cluster.kill(&reference).await?;
    cluster.kill(&reward).await?;
    Ok(())
}

/// Two trainers joined in a data-parallel group, each stepping on its half of a batch, end up
/// with identical weights (their gradients were averaged) that moved from the start.
/// A trainer of a tiny fresh model (seed `seed`) at a constant 1e-2.
fn tiny_trainer(seed: u64, policy: PolicyConfig) -> TrainerConfig {
    let mut config = ModelConfig::tiny(BuiltinTokenizer::new().vocab_size(), 32, 2, 4, 2);
    config.max_position_embeddings = 64;
    TrainerConfig {
        source: ModelSource::fresh(config, seed),
        pad_id: BuiltinTokenizer::PAD,
        optimizer: AdamWConfig::default(),
        schedule: LrSchedule::constant(1e-2),
        max_grad_norm: 1.0,
        micro_batch: 0,
        policy,
    }
}

/// Two trainer actors from `config`, joined to a data-parallel group named after `name`.
async fn data_parallel_pair(
    cluster: &Cluster,
    config: &TrainerConfig,
    name: &str,
) -> anyhow::Result<Vec<TrainerHandle>> {
    let mut trainers = Vec::new();
    for _ in 0..2 {
        trainers.push(
            Trainer::spawn(cluster, SpawnOptions::new().num_cpus(0.5), config.clone()).await?,
        );
    }
    let group = format!("{name}-{}", std::process::id());
    let joins = trainers
        .iter()
        .enumerate()
        .map(|(rank, trainer)| trainer.join_data_parallel(group.clone(), rank, 2));
    for joined in futures::future::join_all(joins).await {
        joined?;
    }
    Ok(trainers)
}

async fn data_parallel_trainers(cluster: &Cluster) -> anyhow::Result<()> {
    let trainer_config = tiny_trainer(11, PolicyConfig::default());
    let trainers = data_parallel_pair(cluster, &trainer_config, "dp").await?;
    let before = trainers[0].weights().await?;
    let halves = [
        (
            vec![vec![4_u32, 5], vec![6, 7]],
            vec![vec![8_u32, 2], vec![9, 10, 2]],
        ),
        (
            vec![vec![11_u32], vec![12, 13, 14]],
            vec![vec![15_u32, 2], vec![16, 2]],
        ),
    ];
    let steps = trainers
        .iter()
        .zip(halves)
        .map(|(trainer, (prompts, targets))| trainer.sft_step(prompts, targets));
    let mut losses = Vec::new();
    for stats in futures::future::join_all(steps).await {
        losses.push(stats?.loss);
    }
    anyhow::ensure!(
        (losses[0] - losses[1]).abs() < 1e-5,
        "the reported loss is the group's mean: {losses:?}"
    );
    let (first, second) = (trainers[0].weights().await?, trainers[1].weights().await?);
    anyhow::ensure!(
        first.tensors == second.tensors,
        "data-parallel ranks hold identical weights after a step"
    );
    anyhow::ensure!(
        first.tensors != before.tensors,
        "the step moved the weights"
    );
    println!("test data_parallel_trainers ... ok");
    Ok(())
}

/// Two data-parallel trainers skipping rows without signal, one left with none: the step is
/// the token mean over the rows kept on either rank (the loss equals a lone trainer's on those
/// rows), the empty rank still joins the average, and both ranks end with the same weights.
async fn data_parallel_policy_step_with_an_empty_rank(cluster: &Cluster) -> anyhow::Result<()> {
    let trainer_config = tiny_trainer(
        12,
        PolicyConfig {
            skip_zero_advantage: true,
            ..PolicyConfig::clipped(0.2, 0.1)
        },
    );
    let lone = Trainer::new(trainer_config.clone())?;
    let batch = |prompts: Vec<Vec<u32>>, responses: Vec<Vec<u32>>, advantages: Vec<f32>| {
        let old = lone.logprobs(prompts.clone(), responses.clone())?;
        anyhow::Ok(PolicyBatch {
            prompts,
            responses,
            ref_logprobs: Some(old.clone()),
            old_logprobs: old,
            advantages: Advantages::PerSequence(advantages),
        })
    };
    let with_signal = batch(
        vec![vec![4, 5], vec![6], vec![7, 8]],
        vec![vec![9, 10, 2], vec![11, 2], vec![12, 2]],
        vec![1.0, 0.0, -0.5],
    )?;
    let flat = batch(
        vec![vec![13], vec![14, 15]],
        vec![vec![16, 2], vec![17, 18, 19, 2]],
        vec![0.0, 0.0],
    )?;
    let kept = batch(
        vec![vec![4, 5], vec![7, 8]],
        vec![vec![9, 10, 2], vec![12, 2]],
        vec![1.0, -0.5],
    )?;
    let (_, expected_stats) = lone.policy_gradients(&kept)?;
    let trainers = data_parallel_pair(cluster, &trainer_config, "dp-policy").await?;
    let (first, second) = futures::future::join(
        trainers[0].policy_step(with_signal),
        trainers[1].policy_step(flat),
    )
    .await;
    let (first, second) = (first?, second?);
    anyhow::ensure!(
        (first.tokens, second.tokens) == (5, 0),
        "rank 0 trains its 2 rows with signal (5 tokens), rank 1 none: {} and {}",
        first.tokens,
        second.tokens
    );
    anyhow::ensure!(
        (first.loss - expected_stats.loss).abs() < 1e-5 && first.loss == second.loss,
        "the step's loss is the kept rows' token mean ({}), on both ranks: {} and {}",
        expected_stats.loss,
        first.loss,
        second.loss
    );
    let (a, b) = (trainers[0].weights().await?, trainers[1].weights().await?);
    anyhow::ensure!(
        a.tensors == b.tensors,
        "data-parallel ranks hold identical weights after a policy step"
    );
    println!("test data_parallel_policy_step_with_an_empty_rank ... ok");
    Ok(())
}

fn main() -> std::process::ExitCode {
    troupe::init();
    let tests = troupe::testing::with_local_cluster(None, |cluster| async move {
        grpo_iteration(&cluster).await?;
        data_parallel_trainers(&cluster).await?;
        data_parallel_policy_step_with_an_empty_rank(&cluster).await?;
        println!("test grpo_iteration_over_role_actors ... ok");
        anyhow::Ok(())
    });
    troupe::testing::run_tests(3, Duration::from_secs(120), tests)
}
