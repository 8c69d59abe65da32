//! The roles as plain types: supervised and policy steps move the model the right way,
//! micro-batch accumulation equals the full batch, checkpoints resume exactly, weights travel
//! from trainer to rollout, the reward model learns preferences and the critic learns values.

use futures::executor::block_on;
use troupe_actors::generate::SamplingConfig;
use troupe_actors::roles::critic::Critic;
use troupe_actors::roles::reference::Reference;
use troupe_actors::roles::reward_model::RewardModel;
use troupe_actors::roles::rollout::{Rollout, RolloutEngine};
use troupe_actors::roles::trainer::{
    Advantages, LossDenominator, PolicyBatch, PolicyConfig, Trainer, TrainerConfig,
};
use troupe_actors::roles::{ModelSource, WeightSet};
use troupe_actors::train::losses::{Aggregation, KlEstimator};
use troupe_actors::train::optim::Gradients;
use troupe_actors::train::optim::{global_norm, AdamWConfig, LrSchedule};
use troupe_actors::ModelConfig;

fn config() -> ModelConfig {
    let mut config = ModelConfig::tiny(20, 32, 2, 4, 2);
    config.max_position_embeddings = 64;
    config
}

fn source(seed: u64) -> ModelSource {
    ModelSource::fresh(config(), seed)
}

fn policy(skip_zero_advantage: bool) -> PolicyConfig {
    PolicyConfig {
        clip: 0.2,
        aggregation: Aggregation::TokenMean,
        kl_coef: 0.1,
        kl_estimator: KlEstimator::K3,
        skip_zero_advantage,
        entropy_coef: 0.0,
        tis_cap: None,
    }
}

fn trainer(micro_batch: usize, lr: f64) -> Trainer {
    Trainer::new(TrainerConfig {
        source: source(1),
        pad_id: 0,
        optimizer: AdamWConfig::default(),
        schedule: LrSchedule::constant(lr),
        max_grad_norm: 1.0,
        micro_batch,
        policy: policy(false),
    })
    .expect("trainer")
}

fn scratch(name: &str) -> std::path::PathBuf {
    let dir = std::env::temp_dir().join(format!("troupe-roles-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    dir
}

#[test]
fn sft_lowers_the_loss_of_its_targets() {
    let mut trainer = trainer(0, 3e-3);
    let prompts = vec![vec![1, 4, 5], vec![1, 6]];
    let targets = vec![vec![7, 8, 2], vec![9, 2]];
    let first = block_on(trainer.sft_step(prompts.clone(), targets.clone()))
        .expect("step")
        .loss;
    let mut last = first;
    for _ in 0..30 {
        last = block_on(trainer.sft_step(prompts.clone(), targets.clone()))
            .expect("step")
            .loss;
    }
    assert!(last < first * 0.5, "SFT loss {first} -> {last}");
    assert_eq!(trainer.step(), 31);
}

fn policy_batch(trainer: &Trainer) -> PolicyBatch {
    let prompts = vec![vec![1, 4, 5], vec![1, 6], vec![1, 7, 7, 3], vec![1, 9]];
    let responses = vec![vec![7, 8, 2], vec![9, 2], vec![10, 11, 12, 2], vec![5]];
    let old = trainer
        .logprobs(prompts.clone(), responses.clone())
        .expect("logprobs");
    PolicyBatch {
        prompts,
        responses,
        ref_logprobs: Some(old.clone()),
        old_logprobs: old,
        advantages: Advantages::PerSequence(vec![1.0, -1.0, 0.5, -0.5]),
    }
}

/// A trainer whose objective includes an entropy bonus (so that its weighting is checked too).
fn trainer_with_bonus(micro_batch: usize) -> Trainer {
    let mut trainer = trainer(micro_batch, 1e-3);
    trainer
        .set_policy(PolicyConfig {
            entropy_coef: 0.3,
            ..policy(false)
        })
        .expect("objective");
    trainer
}

#[test]
fn micro_batches_accumulate_to_the_full_batch_gradient() {
    // One row per micro-batch: rows of 3, 2, 4 and 1 tokens weigh differently.
    let whole = trainer_with_bonus(0);
    let split = trainer_with_bonus(1);
    let batch = policy_batch(&whole);
    let (full, full_stats) = whole.policy_gradients(&batch).expect("full");
    let (accumulated, split_stats) = split.policy_gradients(&batch).expect("split");
    assert!(
        (full_stats.loss - split_stats.loss).abs() < 1e-5,
        "{} vs {}",
        full_stats.loss,
        split_stats.loss
    );
    assert!(
        (full_stats.entropy - split_stats.entropy).abs() < 1e-5 && full_stats.entropy > 0.0,
        "{} vs {}",
        full_stats.entropy,
        split_stats.entropy
    );
    let mut difference = full.clone();
    for (name, grad) in &accumulated {
        let delta = (difference[name].clone() - grad).expect("sub");
        difference.insert(name.clone(), delta);
    }
    let relative = global_norm(&difference).unwrap() / global_norm(&full).unwrap();
    assert!(
        relative < 1e-4,
        "accumulated gradients differ by {relative} of their norm"
    );
}

/// `a - b` relative to `b`'s norm.
fn relative_difference(a: &Gradients, b: &Gradients) -> f64 {
    let mut difference = a.clone();
    for (name, grad) in b {
        let delta = (difference[name].clone() - grad).expect("sub");
        difference.insert(name.clone(), delta);
    }
    global_norm(&difference).unwrap() / global_norm(b).unwrap()
}

/// `grads` times `factor`.
fn scaled(grads: &Gradients, factor: f64) -> Gradients {
    grads
        .iter()
        .map(|(name, grad)| (name.clone(), (grad * factor).expect("scale")))
        .collect()
}

#[test]
fn truncated_importance_sampling_weighs_tokens_by_the_capped_ratio() {
    // No KL or entropy term, so the whole gradient is the policy term's.
    let objective = |tis_cap| PolicyConfig {
        kl_coef: 0.0,
        tis_cap,
        ..policy(false)
    };
    let mut on_policy = trainer(0, 1e-3);
    on_policy.set_policy(objective(None)).expect("objective");
    let batch = policy_batch(&on_policy);
    let (plain, stats) = on_policy.policy_gradients(&batch).expect("gradients");
    assert_eq!(stats.mismatch.logprob_abs_diff, 0.0);
    let mut corrected = trainer(0, 1e-3);
    corrected
        .set_policy(objective(Some(2.0)))
        .expect("objective");
    // The engine found every sampled token `shift` nats less likely than the trainer does:
    // each token's weight is min(e^shift, 2).
    for (shift, weight, clipped) in [(0.1_f32, 0.1_f64.exp(), 0.0), (1.0, 2.0, 1.0)] {
        let mut engine = batch.clone();
        engine.old_logprobs = batch
            .old_logprobs
            .iter()
            .map(|row| row.iter().map(|l| l - shift).collect())
            .collect();
        let (grads, stats) = corrected.policy_gradients(&engine).expect("gradients");
        let gap = relative_difference(&grads, &scaled(&plain, weight));
        assert!(gap < 1e-4, "shift {shift}: off by {gap} of the norm");
        assert!((stats.mismatch.logprob_abs_diff - f64::from(shift)).abs() < 1e-5);
        assert!((stats.mismatch.tis_clipped_share - clipped).abs() < 1e-9);
        assert!(stats.mismatch.kl > 0.0);
    }
}

fn rows_of(batch: &PolicyBatch, rows: std::ops::Range<usize>) -> PolicyBatch {
    let Advantages::PerSequence(advantages) = &batch.advantages else {
        panic!("per-sequence advantages expected");
    };
    PolicyBatch {
        prompts: batch.prompts[rows.clone()].to_vec(),
        responses: batch.responses[rows.clone()].to_vec(),
        old_logprobs: batch.old_logprobs[rows.clone()].to_vec(),
        ref_logprobs: batch
            .ref_logprobs
            .as_ref()
            .map(|r| r[rows.clone()].to_vec()),
        advantages: Advantages::PerSequence(advantages[rows].to_vec()),
    }
}

#[test]
fn ranks_dividing_by_the_mean_counts_average_to_the_whole_batch_gradient() {
    // Two data-parallel ranks with unequal shares (3 rows of 9 tokens, 1 row of 1 token): each
    // divides by the ranks' mean counts, and the mean of their gradients is the whole batch's.
    let trainer = trainer_with_bonus(0);
    let batch = policy_batch(&trainer);
    let (whole, whole_stats) = trainer.policy_gradients(&batch).expect("whole");
    let (first, second) = (rows_of(&batch, 0..3), rows_of(&batch, 3..4));
    let over = LossDenominator {
        tokens: (first.tokens() + second.tokens()) as f64 / 2.0,
        rows: 2.0,
    };
    let (mut mean, first_stats) = trainer.policy_gradients_over(&first, over).expect("rank 0");
    let (other, second_stats) = trainer
        .policy_gradients_over(&second, over)
        .expect("rank 1");
    // The ranks' entropies, averaged as the step averages them, are the whole batch's.
    let entropy = (first_stats.entropy + second_stats.entropy) / 2.0;
    assert!((entropy - whole_stats.entropy).abs() < 1e-5, "{entropy}");
    for (name, grad) in other {
        let sum = ((mean[&name].clone() + grad).expect("add") * 0.5).expect("half");
        mean.insert(name, sum);
    }
    let relative = relative_difference(&mean, &whole);
    assert!(relative < 1e-4, "differs by {relative} of the norm");
    // Dividing by each rank's own counts (the old way) weighs the lone token three times.
    let (own_first, _) = trainer.policy_gradients(&first).expect("rank 0 alone");
    assert!(relative_difference(&own_first, &whole) > 1e-2);
}

#[test]
fn rows_without_signal_are_skipped_when_asked() {
    let mut batch = policy_batch(&trainer(0, 1e-3));
    batch.advantages = Advantages::PerSequence(vec![1.0, 0.0, -0.5, 0.0]);
    let skipping = |skip: bool| {
        let mut trainer = trainer(0, 1e-2);
        trainer.set_policy(policy(skip)).expect("objective");
        block_on(trainer.policy_step(batch.clone())).expect("step")
    };
    assert_eq!(skipping(false).tokens, 10);
    let skipped = skipping(true);
    assert_eq!(skipped.tokens, 7, "rows 0 and 2: 3 + 4 tokens");
    // The same step as training on those rows alone.
    let mut alone = trainer(0, 1e-2);
    let mut kept = rows_of(&batch, 0..3);
    for rows in [&mut kept.prompts, &mut kept.responses] {
        rows.remove(1);
    }
    kept.old_logprobs.remove(1);
    if let Some(reference) = kept.ref_logprobs.as_mut() {
        reference.remove(1);
    }
    kept.advantages = Advantages::PerSequence(vec![1.0, -0.5]);
    let direct = block_on(alone.policy_step(kept)).expect("kept rows");
    assert!((direct.loss - skipped.loss).abs() < 1e-6);
    // A step where no row has signal still steps (every rank must join the average).
    let mut flat = batch.clone();
    flat.advantages = Advantages::PerSequence(vec![0.0; 4]);
    let mut trainer = trainer(0, 1e-2);
    trainer.set_policy(policy(true)).expect("objective");
    let stats = block_on(trainer.policy_step(flat)).expect("flat step");
    assert_eq!((stats.tokens, stats.step), (0, 1));
    assert!(
        stats.nothing_trained,
        "its entropy measured nothing: not reported"
    );
    let mut meta = troupe::data::StepMeta::default();
    stats.write_to(&mut meta);
    assert!(meta.get("entropy").is_none() && meta.get("loss").is_some());
}

#[test]
fn a_trainer_refuses_a_negative_entropy_bonus_and_keeps_its_objective() {
    let mut trainer = trainer(0, 1e-3);
    let error = trainer
        .set_policy(PolicyConfig {
            entropy_coef: -1.0,
            ..policy(false)
        })
        .unwrap_err();
    assert!(error.to_string().contains("entropy_coef = -1"), "{error}");
    // The objective in place is the one before: a step's loss still matches a zero bonus.
    let mut batch = policy_batch(&trainer);
    batch.advantages = Advantages::PerSequence(vec![0.0; 4]);
    batch.ref_logprobs = None;
    let stats = block_on(trainer.policy_step(batch)).expect("step");
    assert!(stats.loss.abs() < 1e-6, "{stats:?}");
}

#[test]
fn an_entropy_bonus_raises_the_policys_entropy() {
    // With no advantage and no KL the bonus is the whole loss: -coef x mean entropy.
    let mut batch = policy_batch(&trainer(0, 1e-3));
    batch.advantages = Advantages::PerSequence(vec![0.0; 4]);
    batch.ref_logprobs = None;
    let mut bonused = trainer(2, 1e-2);
    bonused
        .set_policy(PolicyConfig {
            entropy_coef: 0.5,
            ..policy(false)
        })
        .expect("objective");
    let first = block_on(bonused.policy_step(batch.clone())).expect("step");
    assert!(first.entropy > 0.0, "{first:?}");
    assert!((first.loss + 0.5 * first.entropy).abs() < 1e-4, "{first:?}");
    let mut last = first.clone();
    for _ in 0..5 {
        last = block_on(bonused.policy_step(batch.clone())).expect("step");
    }
    assert!(last.entropy > first.entropy, "{first:?} -> {last:?}");
    // Without the bonus the same batch leaves the loss at zero; entropy is still reported.
    let mut plain = trainer(0, 1e-2);
    let stats = block_on(plain.policy_step(batch)).expect("step");
    assert!(stats.loss.abs() < 1e-9 && stats.entropy > 0.0, "{stats:?}");
}

#[test]
fn a_policy_step_moves_probability_towards_positive_advantages() {
    let mut trainer = trainer(2, 1e-2);
    let batch = policy_batch(&trainer);
    let before = batch.old_logprobs.clone();
    let stats = block_on(trainer.policy_step(batch.clone())).expect("step");
    assert!(stats.grad_norm > 0.0 && stats.tokens == 10 && stats.step == 1);
    let after = trainer
        .logprobs(batch.prompts.clone(), batch.responses.clone())
        .expect("logprobs");
    let total = |rows: &[Vec<f32>], row: usize| rows[row].iter().sum::<f32>();
    assert!(
        total(&after, 0) > total(&before, 0),
        "advantage +1: log-prob rises"
    );
    assert!(
        total(&after, 1) < total(&before, 1),
        "advantage -1: log-prob falls"
    );
    let bad = PolicyBatch {
        advantages: Advantages::PerSequence(vec![1.0]),
        ..batch
    };
    assert!(block_on(trainer.policy_step(bad))
        .unwrap_err()
        .to_string()
        .contains("advantages"));
}

#[test]
fn checkpoints_resume_exactly() {
    let mut original = trainer(0, 1e-2);
    let batch = policy_batch(&original);
    block_on(original.policy_step(batch.clone())).expect("step");
    let dir = scratch("checkpoint");
    original.save_checkpoint(dir.clone()).expect("save");
    let mut resumed = trainer(0, 1e-2);
    assert_eq!(resumed.load_checkpoint(dir.clone()).expect("load"), 1);
    block_on(original.policy_step(batch.clone())).expect("step");
    block_on(resumed.policy_step(batch)).expect("step");
    assert_eq!(
        original.weights().unwrap(),
        resumed.weights().unwrap(),
        "same state, same next step"
    );
    assert!(dir.join("config.json").is_file() && dir.join("model.safetensors").is_file());
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn weights_travel_from_trainer_to_rollout() {
    let mut trainer = trainer(0, 1e-2);
    let batch = policy_batch(&trainer);
    block_on(trainer.policy_step(batch.clone())).expect("step");
    let mut rollout =
        block_on(Rollout::new(source(99), 0, RolloutEngine::Candle)).expect("rollout");
    let weights = trainer.weights().expect("weights");
    assert_eq!(
        block_on(rollout.load_weights(weights.clone())).expect("load"),
        1
    );
    assert_eq!(rollout.weight_version(), 1);
    let reference = Reference::new(source(99), 0).expect("reference");
    let mut reference = reference;
    reference.load_weights(weights.clone()).expect("load");
    let ours = reference
        .token_logprobs(batch.prompts.clone(), batch.responses.clone())
        .unwrap();
    let theirs = trainer
        .logprobs(batch.prompts.clone(), batch.responses.clone())
        .unwrap();
    assert_eq!(ours, theirs, "identical weights, identical log-probs");
    let greedy = SamplingConfig {
        temperature: 0.0,
        max_new_tokens: 4,
        ..SamplingConfig::default()
    };
    let generated = block_on(rollout.generate_tokens(vec![vec![1, 4]], greedy)).expect("generate");
    assert_eq!(generated.weight_version, 1);
    // A partial set updates only what it names; a bad shape changes nothing.
    let one = WeightSet {
        version: 2,
        partial: true,
        tensors: vec![weights.tensors[0].clone()],
    };
    block_on(rollout.load_weights(one)).expect("partial");
    let mut wrong = weights.tensors[0].clone();
    wrong.shape = vec![1, wrong.data.len()];
    let err = block_on(rollout.load_weights(WeightSet {
        version: 3,
        partial: true,
        tensors: vec![wrong],
    }))
    .unwrap_err();
    assert!(err.to_string().contains("shape"), "{err}");
    assert_eq!(rollout.weight_version(), 2);
    let missing = WeightSet {
        version: 4,
        partial: false,
        tensors: vec![weights.tensors[0].clone()],
    };
    assert!(block_on(rollout.load_weights(missing))
        .unwrap_err()
        .to_string()
        .contains("missing"));
}

#[test]
fn the_reward_model_learns_preferences() {
    let mut model = RewardModel::new(source(3), 0, 3e-3).expect("reward model");
    // Preferred sequences end in 5, rejected ones in 6.
    let chosen: Vec<Vec<u32>> = (0..8).map(|i| vec![1, 3 + i % 4, 5]).collect();
    let rejected: Vec<Vec<u32>> = (0..8).map(|i| vec![1, 3 + i % 4, 6]).collect();
    let first = model
        .train_pairs(chosen.clone(), rejected.clone())
        .expect("train");
    let mut last = first.clone();
    for _ in 0..40 {
        last = model
            .train_pairs(chosen.clone(), rejected.clone())
            .expect("train");
    }
    assert!(
        last.loss < first.loss * 0.5,
        "Bradley-Terry loss {} -> {}",
        first.loss,
        last.loss
    );
    assert_eq!(last.accuracy, 1.0);
    let scores = model
        .score(vec![vec![1, 9, 5], vec![1, 9, 6]])
        .expect("score");
    assert!(
        scores[0] > scores[1],
        "an unseen pair is ranked right: {scores:?}"
    );
}

#[test]
fn the_critic_learns_returns() {
    let mut critic = Critic::new(source(4), 0, 3e-3, Some(10.0)).expect("critic");
    let prompts = vec![vec![1, 4], vec![1, 5]];
    let responses = vec![vec![7, 8], vec![9, 10, 2]];
    let returns = vec![vec![1.0, 1.0], vec![-1.0, -1.0, -1.0]];
    let first_values = critic
        .token_values(prompts.clone(), responses.clone())
        .expect("values");
    assert_eq!(first_values[1].len(), 3);
    let first = critic
        .train(
            prompts.clone(),
            responses.clone(),
            returns.clone(),
            first_values.clone(),
        )
        .expect("train");
    let mut last = first;
    for _ in 0..40 {
        let old = critic
            .token_values(prompts.clone(), responses.clone())
            .expect("values");
        last = critic
            .train(prompts.clone(), responses.clone(), returns.clone(), old)
            .expect("train");
    }
    assert!(last < first * 0.2, "value loss {first} -> {last}");
}
