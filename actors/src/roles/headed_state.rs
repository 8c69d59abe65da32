//! The whole state of a role that trains a decoder with a scalar head (the critic, the reward
//! model): every parameter by name, AdamW's moments and step. A restarted critic or reward model
//! takes it back (`restore_state`), so a PPO run goes on from where it was.

use super::batch::NamedTensor;
use super::optimizer::Updater;
use crate::error::{ModelError, Result};
use serde::{Deserialize, Serialize};

/// Parameters (decoder and head), optimizer moments and step.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct HeadedState {
    pub params: Vec<NamedTensor>,
    pub moments: Vec<NamedTensor>,
    pub step: u64,
}

/// `updater`'s parameters and optimizer state.
pub(super) fn export(updater: &Updater) -> Result<HeadedState> {
    let params = updater
        .vars
        .iter()
        .map(|(name, var)| NamedTensor::from_tensor(name, var.as_tensor()))
        .collect::<Result<Vec<_>>>()?;
    Ok(HeadedState {
        params,
        moments: updater.moments()?,
        step: updater.adam.step,
    })
}

/// Puts `state` back into `updater`: every parameter must be there, with its shape, and no
/// other; nothing changes unless all fit.
pub(super) fn import(updater: &mut Updater, state: HeadedState) -> Result<()> {
    if state.params.len() != updater.vars.len() {
        return Err(ModelError::Checkpoint(format!(
            "a state of {} parameters for a model of {}",
            state.params.len(),
            updater.vars.len()
        )));
    }
    let mut values = Vec::with_capacity(updater.vars.len());
    for (name, var) in &updater.vars {
        let param = state
            .params
            .iter()
            .find(|param| &param.name == name)
            .ok_or_else(|| ModelError::Checkpoint(format!("the state lacks `{name}`")))?;
        let tensor = param.to_tensor(var.device())?;
        if tensor.dims() != var.dims() {
            return Err(ModelError::Checkpoint(format!(
                "`{name}` is {:?} in the state and {:?} in the model",
                tensor.dims(),
                var.dims()
            )));
        }
        values.push(tensor.to_dtype(var.dtype())?);
    }
    let device = updater
        .vars
        .first()
        .map(|(_, var)| var.device().clone())
        .unwrap_or(candle_core::Device::Cpu);
    let adam = Updater::adam_with(updater.adam.config, state.step, &state.moments, &device)?;
    for ((_, var), value) in updater.vars.iter().zip(values) {
        var.set(&value)?;
    }
    updater.adam = adam;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn updater(seed: u64) -> Updater {
        let config = crate::ModelConfig::tiny(25, 16, 1, 2, 2);
        let device = candle_core::Device::Cpu;
        let model =
            crate::model::Decoder::new(&config, candle_core::DType::F32, &device, seed).unwrap();
        super::super::head::head_with_updater(&model, 1e-3)
            .unwrap()
            .1
    }

    #[test]
    fn a_state_moves_whole_and_a_wrong_one_changes_nothing() {
        let from = updater(1);
        let mut to = updater(2);
        let state = export(&from).unwrap();
        import(&mut to, state.clone()).unwrap();
        let again = export(&to).unwrap();
        for (a, b) in state.params.iter().zip(&again.params) {
            assert_eq!(a.name, b.name);
            assert_eq!(a.data, b.data, "{}", a.name);
        }
        let mut short = state.clone();
        short.params.pop();
        let before = export(&to).unwrap();
        assert!(import(&mut to, short).is_err());
        let mut misnamed = state;
        misnamed.params[0].name = "nope".into();
        assert!(import(&mut to, misnamed)
            .unwrap_err()
            .to_string()
            .contains("lacks"));
        let after = export(&to).unwrap();
        assert!(before
            .params
            .iter()
            .zip(&after.params)
            .all(|(a, b)| a.data == b.data));
    }
}
