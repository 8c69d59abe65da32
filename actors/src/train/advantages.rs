//! Advantage estimators over per-sequence rewards (GRPO, Dr.GRPO, RLOO, REINFORCE++) and
//! per-token GAE for PPO with a critic. Plain numbers in, plain numbers out.

use crate::error::{ModelError, Result};

fn check_groups(rewards: &[f32], group: usize) -> Result<()> {
    if group < 2 {
        return Err(ModelError::Input(format!(
            "group size {group}: need at least 2 samples per prompt"
        )));
    }
    if !rewards.len().is_multiple_of(group) {
        return Err(ModelError::Input(format!(
            "{} rewards do not split into groups of {group}",
            rewards.len()
        )));
    }
    Ok(())
}

fn mean(values: &[f32]) -> f32 {
    values.iter().sum::<f32>() / values.len() as f32
}

/// Whether a group's rewards differ (beyond rounding). A group whose rewards are all equal
/// carries no signal; its f32 mean can miss the common value by an ulp (16 rewards of 0.1 sum
/// to 1.6000001), and that miss divided by a near-zero std would be a spurious advantage.
pub fn group_has_signal(rewards: &[f32]) -> bool {
    let (low, high) = rewards
        .iter()
        .fold((f32::INFINITY, f32::NEG_INFINITY), |(low, high), r| {
            (low.min(*r), high.max(*r))
        });
    high - low > 1e-6 * low.abs().max(high.abs()).max(1.0)
}

/// Unbiased standard deviation (n - 1), as torch.std.
fn std_unbiased(values: &[f32]) -> f32 {
    let m = mean(values);
    let var = values.iter().map(|v| (v - m).powi(2)).sum::<f32>() / (values.len() as f32 - 1.0);
    var.sqrt()
}

/// GRPO: each reward minus its group's mean, divided by the group's standard deviation (plus
/// `eps`) when `scale_by_std`; Dr.GRPO turns the division off. Consecutive `group` rewards
/// belong to one prompt.
pub fn grpo(rewards: &[f32], group: usize, scale_by_std: bool, eps: f32) -> Result<Vec<f32>> {
    check_groups(rewards, group)?;
    let mut out = Vec::with_capacity(rewards.len());
    for chunk in rewards.chunks(group) {
        if !group_has_signal(chunk) {
            out.extend(std::iter::repeat_n(0.0, chunk.len()));
            continue;
        }
        let m = mean(chunk);
        let scale = if scale_by_std {
            std_unbiased(chunk) + eps
        } else {
            1.0
        };
        out.extend(
            chunk
                .iter()
                .map(|r| if scale > 0.0 { (r - m) / scale } else { 0.0 }),
        );
    }
    Ok(out)
}

/// RLOO: each reward minus the mean of the other rewards of its group.
pub fn rloo(rewards: &[f32], group: usize) -> Result<Vec<f32>> {
    check_groups(rewards, group)?;
    let mut out = Vec::with_capacity(rewards.len());
    for chunk in rewards.chunks(group) {
        let total: f32 = chunk.iter().sum();
        let others = (group - 1) as f32;
        out.extend(chunk.iter().map(|r| r - (total - r) / others));
    }
    Ok(out)
}

/// REINFORCE++: rewards normalised over the whole batch (no per-prompt baseline).
pub fn reinforce_pp(rewards: &[f32], eps: f32) -> Result<Vec<f32>> {
    if rewards.len() < 2 {
        return Err(ModelError::Input(
            "REINFORCE++ needs at least 2 rewards".to_string(),
        ));
    }
    let m = mean(rewards);
    let s = std_unbiased(rewards) + eps;
    Ok(rewards
        .iter()
        .map(|r| if s > 0.0 { (r - m) / s } else { 0.0 })
        .collect())
}

/// Per-token rewards of RLHF-style PPO: each token pays `kl_coef` times its sampled KL to the
/// reference (log p_old - log p_ref), and the last token also gets the sequence's score.
pub fn kl_shaped_rewards(
    scores: &[f32],
    old_logprobs: &[Vec<f32>],
    ref_logprobs: &[Vec<f32>],
    kl_coef: f32,
) -> Result<Vec<Vec<f32>>> {
    if scores.len() != old_logprobs.len() || scores.len() != ref_logprobs.len() {
        return Err(ModelError::Input(format!(
            "{} scores, {} log-prob rows, {} reference rows",
            scores.len(),
            old_logprobs.len(),
            ref_logprobs.len()
        )));
    }
    let mut out = Vec::with_capacity(scores.len());
    for (row, ((score, old), reference)) in scores
        .iter()
        .zip(old_logprobs)
        .zip(ref_logprobs)
        .enumerate()
    {
        if old.len() != reference.len() || old.is_empty() {
            return Err(ModelError::Input(format!(
                "row {row}: {} sampled and {} reference log-probs",
                old.len(),
                reference.len()
            )));
        }
        let mut rewards: Vec<f32> = old
            .iter()
            .zip(reference)
            .map(|(o, r)| -kl_coef * (o - r))
            .collect();
        if let Some(last) = rewards.last_mut() {
            *last += score;
        }
        out.push(rewards);
    }
    Ok(out)
}

/// Normalises every value of every row together to mean 0 and standard deviation 1 (advantage
/// whitening over a batch's tokens); leaves them unchanged when they are all equal.
pub fn whiten(rows: &mut [Vec<f32>]) {
    let all: Vec<f32> = rows.iter().flatten().copied().collect();
    if all.len() < 2 {
        return;
    }
    let m = mean(&all);
    let s = std_unbiased(&all);
    if s > 0.0 {
        rows.iter_mut()
            .flatten()
            .for_each(|value| *value = (*value - m) / (s + 1e-8));
    }
}

/// Generalised advantage estimation over one trajectory: `rewards[t]` and `values[t]` per step,
/// `last_value` the value after the last step (0 when it ended). Returns (advantages, returns).
pub fn gae(
    rewards: &[f32],
    values: &[f32],
    last_value: f32,
    gamma: f32,
    lambda: f32,
) -> Result<(Vec<f32>, Vec<f32>)> {
    if rewards.len() != values.len() {
        return Err(ModelError::Input(format!(
            "{} rewards but {} values",
            rewards.len(),
            values.len()
        )));
    }
    let steps = rewards.len();
    let mut advantages = vec![0.0; steps];
    let mut running = 0.0;
    for t in (0..steps).rev() {
        let next_value = if t + 1 < steps {
            values[t + 1]
        } else {
            last_value
        };
        let delta = rewards[t] + gamma * next_value - values[t];
        running = delta + gamma * lambda * running;
        advantages[t] = running;
    }
    let returns = advantages.iter().zip(values).map(|(a, v)| a + v).collect();
    Ok((advantages, returns))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn close(a: &[f32], b: &[f32]) {
        assert_eq!(a.len(), b.len());
        for (x, y) in a.iter().zip(b) {
            assert!((x - y).abs() < 1e-5, "{a:?} vs {b:?}");
        }
    }

    #[test]
    fn grpo_by_hand() {
        // Group [1, 0, 0, 1]: mean 0.5, unbiased std sqrt(1/3) = 0.57735.
        let advantages = grpo(&[1.0, 0.0, 0.0, 1.0, 2.0, 2.0, 2.0, 2.0], 4, true, 0.0).unwrap();
        close(
            &advantages[..4],
            &[0.866025, -0.866025, -0.866025, 0.866025],
        );
        close(&advantages[4..], &[0.0; 4]);
        // Equal rewards whose f32 mean is off by an ulp still give exactly zero, not
        // rounding error over a near-zero std.
        for flat in [0.1_f32, 1.1, 0.3] {
            let advantages = grpo(&[flat; 16], 16, true, 1e-6).unwrap();
            assert!(
                advantages.iter().all(|a| *a == 0.0),
                "{flat}: {advantages:?}"
            );
        }
        assert!(!group_has_signal(&[0.1; 16]) && group_has_signal(&[0.1, 0.1, 1.1]));
        let dr = grpo(&[1.0, 0.0, 0.0, 1.0], 4, false, 0.0).unwrap();
        close(&dr, &[0.5, -0.5, -0.5, 0.5]);
        assert!(grpo(&[1.0, 2.0, 3.0], 2, true, 0.0).is_err());
    }

    #[test]
    fn rloo_by_hand() {
        // [3, 1, 2]: 3 - 1.5, 1 - 2.5, 2 - 2.
        close(&rloo(&[3.0, 1.0, 2.0], 3).unwrap(), &[1.5, -1.5, 0.0]);
    }

    #[test]
    fn reinforce_pp_by_hand() {
        // [0, 2]: mean 1, unbiased std sqrt(2).
        close(
            &reinforce_pp(&[0.0, 2.0], 0.0).unwrap(),
            &[
                -std::f32::consts::FRAC_1_SQRT_2,
                std::f32::consts::FRAC_1_SQRT_2,
            ],
        );
    }

    #[test]
    fn gae_by_hand() {
        // gamma 0.5, lambda 0.5: deltas 1 + 0.5*2 - 1 = 1 and 0 + 0 - 2 = -2;
        // A1 = -2, A0 = 1 + 0.25 * -2 = 0.5; returns = A + V = [1.5, 0].
        let (advantages, returns) = gae(&[1.0, 0.0], &[1.0, 2.0], 0.0, 0.5, 0.5).unwrap();
        close(&advantages, &[0.5, -2.0]);
        close(&returns, &[1.5, 0.0]);
    }

    #[test]
    fn kl_shaped_rewards_pay_per_token_and_score_at_the_end() {
        let rewards =
            kl_shaped_rewards(&[2.0], &[vec![-1.0, -0.5]], &[vec![-1.5, -0.5]], 0.1).unwrap();
        assert!((rewards[0][0] + 0.05).abs() < 1e-6);
        assert!((rewards[0][1] - 2.0).abs() < 1e-6);
        assert!(kl_shaped_rewards(&[1.0], &[vec![-1.0]], &[vec![]], 0.1).is_err());
        let mut rows = vec![vec![1.0, 2.0], vec![3.0]];
        whiten(&mut rows);
        let all: Vec<f32> = rows.concat();
        assert!(mean(&all).abs() < 1e-6 && (std_unbiased(&all) - 1.0).abs() < 1e-4);
        let mut flat = vec![vec![5.0, 5.0]];
        whiten(&mut flat);
        assert_eq!(flat, vec![vec![5.0, 5.0]]);
    }
}
