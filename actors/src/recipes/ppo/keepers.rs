//! What a PPO run keeps to bring its actors back after a failure: besides the policy (the
//! trainers, from a peer or a checkpoint; the rollouts, from the trainers), the reference's
//! frozen weights, the reward model's trained state (frozen during PPO), and the critic's state,
//! taken as PPO begins and again right after every checkpoint (the critic's stage runs with the
//! experience side, so it may be a step or two past the checkpoint then). A restarted critic
//! goes back to it: its value function is then some steps older than the policy, which PPO's
//! advantages tolerate.

use super::stages::PpoActors;
use super::PpoConfig;
use crate::recipes::error::{RecipeError, Result};
use crate::recipes::policy::PolicyActors;
use crate::recipes::recovery::{Checkpoints, Keeper, Recovery};
use crate::roles::headed_state::HeadedState;
use crate::roles::WeightSet;
use std::sync::Arc;
use troupe::{ActorHandle, Cluster};

/// The recovery of a PPO run, every keeper added and its first snapshot taken.
pub(super) async fn recovery(
    cluster: &Cluster,
    config: &PpoConfig,
    policy: &PolicyActors,
    actors: &PpoActors,
    frozen: WeightSet,
    start_version: u64,
) -> Result<Recovery> {
    let watched = vec![
        ("prompts".to_string(), actors.source.actor_ref().clone()),
        (
            "reference".to_string(),
            actors.reference.actor_ref().clone(),
        ),
        (
            "reward-model".to_string(),
            actors.reward_model.actor_ref().clone(),
        ),
        ("critic".to_string(), actors.critic.actor_ref().clone()),
    ];
    let reward_model_state = actors.reward_model.state().await?;
    let reward_model = actors.reward_model.clone();
    let critic_state: Arc<tokio::sync::Mutex<Option<HeadedState>>> = Arc::default();
    let (critic_to_save, saved) = (actors.critic.clone(), critic_state.clone());
    let (critic_to_restore, kept) = (actors.critic.clone(), critic_state);
    let recovery = Recovery::new(cluster, policy, watched, start_version)
        .await?
        .with_reference(actors.reference.clone(), frozen)
        .with_keeper(
            "reward-model",
            Keeper {
                snapshot: None,
                restore: Box::new(move || {
                    let (model, state) = (reward_model.clone(), reward_model_state.clone());
                    Box::pin(async move { Ok(model.restore_state(state).await?) })
                }),
            },
        )
        .with_keeper(
            "critic",
            Keeper {
                snapshot: Some(Box::new(move || {
                    let (critic, saved) = (critic_to_save.clone(), saved.clone());
                    Box::pin(async move {
                        *saved.lock().await = Some(critic.state().await?);
                        Ok(())
                    })
                })),
                restore: Box::new(move || {
                    let (critic, kept) = (critic_to_restore.clone(), kept.clone());
                    Box::pin(async move {
                        let state =
                            kept.lock()
                                .await
                                .clone()
                                .ok_or_else(|| RecipeError::Recovery {
                                    why: "the critic restarted before its state was kept"
                                        .to_string(),
                                })?;
                        Ok(critic.restore_state(state).await?)
                    })
                }),
            },
        )
        .with_checkpoints(Checkpoints {
            dir: config.out.join("recovery"),
            every: config.checkpoint_every,
        });
    recovery.snapshot_all().await?;
    Ok(recovery)
}
