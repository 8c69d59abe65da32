//! What a trainer needs to take another's place, in memory (`TrainingState`, handed from a
//! data-parallel peer that survived a failure) and on disk (a checkpoint: the model in Hugging
//! Face layout, the AdamW moments in `optimizer.safetensors`, and `trainer_state.json` with the
//! step, the weight version and the training phase). Restoring either leaves the trainer exactly
//! where the other one was: same weights, moments, step, version, schedule and objective.

use super::batch::NamedTensor;
use super::optimizer::Updater;
use super::trainer::{PolicyConfig, Trainer};
use super::WeightSet;
use crate::error::{ModelError, Result};
use crate::train::optim::{AdamW, AdamWConfig, LrSchedule};
use candle_core::Tensor;
use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};

/// The optimisation settings of the current phase (a warm start and RL differ).
#[derive(Debug, Clone, Copy, Serialize, Deserialize)]
pub struct TrainingPhase {
    pub optimizer: AdamWConfig,
    pub schedule: LrSchedule,
    pub max_grad_norm: f64,
}

/// A trainer's whole state.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct TrainingState {
    pub weights: WeightSet,
    /// AdamW's moments (`adam_m.NAME`, `adam_v.NAME`).
    pub moments: Vec<NamedTensor>,
    /// Optimizer steps of the current phase.
    pub step: u64,
    pub phase: TrainingPhase,
    pub policy: PolicyConfig,
}

/// What `trainer_state.json` holds.
#[derive(Serialize, Deserialize)]
struct StateFile {
    step: u64,
    version: u64,
    /// Absent in checkpoints written before phases were recorded: the trainer's own is kept.
    #[serde(default)]
    phase: Option<TrainingPhase>,
    #[serde(default)]
    policy: Option<PolicyConfig>,
}

fn paths(dir: &Path) -> (PathBuf, PathBuf) {
    (
        dir.join("optimizer.safetensors"),
        dir.join("trainer_state.json"),
    )
}

impl Trainer {
    pub(super) fn phase(&self) -> TrainingPhase {
        TrainingPhase {
            optimizer: self.config.optimizer,
            schedule: self.updater.schedule,
            max_grad_norm: self.updater.max_grad_norm,
        }
    }

    pub(super) fn set_phase(&mut self, phase: TrainingPhase) {
        self.updater.adam = AdamW::new(phase.optimizer);
        self.updater.schedule = phase.schedule;
        self.updater.max_grad_norm = phase.max_grad_norm;
        self.config.optimizer = phase.optimizer;
        self.config.schedule = phase.schedule;
        self.config.max_grad_norm = phase.max_grad_norm;
    }

    /// This trainer's whole state, for a peer to take over.
    pub(super) fn export_state(&self) -> Result<TrainingState> {
        Ok(TrainingState {
            weights: WeightSet::from_model(&self.model, self.version)?,
            moments: self.updater.moments()?,
            step: self.updater.adam.step,
            phase: self.phase(),
            policy: self.config.policy.clone(),
        })
    }

    /// Becomes the trainer `state` describes; a state for another model changes nothing.
    pub(super) fn import_state(&mut self, state: TrainingState) -> Result<u64> {
        state.policy.validate()?;
        // Everything that can be refused is checked before anything changes: the moments load
        // into an optimizer of their own, the weights are checked against the model as they load.
        let adam = Updater::adam_with(
            state.phase.optimizer,
            state.step,
            &state.moments,
            self.model.device(),
        )?;
        state.weights.apply_to(&self.model)?;
        self.set_phase(state.phase);
        self.updater.adam = adam;
        self.config.policy = state.policy;
        self.version = state.weights.version;
        Ok(self.version)
    }

    /// Writes the model (Hugging Face layout), the optimizer state, the step, the version and
    /// the phase to `dir`.
    pub(super) fn write_checkpoint(&self, dir: &Path) -> Result<()> {
        crate::weights::save_pretrained(&self.model, dir, None)?;
        let (optimizer, state) = paths(dir);
        let tensors: std::collections::HashMap<String, Tensor> =
            self.updater.adam.state_tensors().into_iter().collect();
        candle_core::safetensors::save(&tensors, &optimizer)?;
        let file = StateFile {
            step: self.updater.adam.step,
            version: self.version,
            phase: Some(self.phase()),
            policy: Some(self.config.policy.clone()),
        };
        let json = serde_json::to_string_pretty(&file)
            .map_err(|err| ModelError::Checkpoint(format!("encoding the trainer state: {err}")))?;
        std::fs::write(&state, json)
            .map_err(|err| ModelError::io(format!("writing {}", state.display()), err))
    }

    /// Restores what `write_checkpoint` wrote; returns the optimizer step.
    pub(super) fn read_checkpoint(&mut self, dir: &Path) -> Result<u64> {
        let (optimizer, state) = paths(dir);
        let text = std::fs::read_to_string(&state)
            .map_err(|err| ModelError::io(format!("reading {}", state.display()), err))?;
        let file: StateFile = serde_json::from_str(&text)
            .map_err(|err| ModelError::Checkpoint(format!("{}: {err}", state.display())))?;
        if let Some(policy) = &file.policy {
            policy.validate()?;
        }
        let tensors = crate::weights::read_tensors(dir, self.model.device())?;
        let moments = candle_core::safetensors::load(&optimizer, self.model.device())?;
        self.model.load_tensors(&tensors, false)?;
        if let Some(phase) = file.phase {
            self.set_phase(phase);
        }
        if let Some(policy) = file.policy {
            self.config.policy = policy;
        }
        self.updater
            .adam
            .load_state(file.step, moments.into_iter().collect())?;
        self.version = file.version;
        Ok(file.step)
    }
}
