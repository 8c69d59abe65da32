//! The update step every trainable role shares: gradients from a loss, optional clipping, an
//! AdamW step at the scheduled learning rate.

use crate::error::Result;
use crate::train::optim::{clip_grad_norm, collect_gradients, AdamW, Gradients, LrSchedule};
use candle_core::{Tensor, Var};

/// AdamW plus its schedule and clipping, over a fixed list of parameters.
pub struct Updater {
    pub vars: Vec<(String, Var)>,
    pub adam: AdamW,
    pub schedule: LrSchedule,
    pub max_grad_norm: f64,
}

/// What one update did.
pub struct Update {
    pub lr: f64,
    pub grad_norm: f64,
}

impl Updater {
    /// Gradients of `loss` for every parameter.
    pub fn gradients(&self, loss: &Tensor) -> Result<Gradients> {
        let grads = loss.backward()?;
        Ok(collect_gradients(&grads, &self.vars)?.0)
    }

    /// Zero gradients for every parameter (a data-parallel rank with no rows this step still
    /// takes part in the average).
    pub fn zero_gradients(&self) -> Result<Gradients> {
        self.vars
            .iter()
            .map(|(name, var)| Ok((name.clone(), var.as_tensor().zeros_like()?)))
            .collect()
    }

    /// Clips and applies `grads`.
    pub fn apply(&mut self, mut grads: Gradients) -> Result<Update> {
        let grad_norm = if self.max_grad_norm > 0.0 {
            clip_grad_norm(&mut grads, self.max_grad_norm)?
        } else {
            crate::train::optim::global_norm(&grads)?
        };
        let lr = self.schedule.at(self.adam.step);
        self.adam.apply(&self.vars, &grads, lr)?;
        Ok(Update { lr, grad_norm })
    }

    /// AdamW's moments as named tensors, for a peer or a restarted actor to take over.
    pub fn moments(&self) -> Result<Vec<super::batch::NamedTensor>> {
        self.adam
            .state_tensors()
            .iter()
            .map(|(name, tensor)| super::batch::NamedTensor::from_tensor(name, tensor))
            .collect()
    }

    /// An AdamW of `config` holding `moments` at `step`, built aside so that a state that does
    /// not load changes nothing.
    pub fn adam_with(
        config: crate::train::optim::AdamWConfig,
        step: u64,
        moments: &[super::batch::NamedTensor],
        device: &candle_core::Device,
    ) -> Result<AdamW> {
        let moments = moments
            .iter()
            .map(|tensor| Ok((tensor.name.clone(), tensor.to_tensor(device)?)))
            .collect::<Result<Vec<(String, Tensor)>>>()?;
        let mut adam = AdamW::new(config);
        adam.load_state(step, moments)?;
        Ok(adam)
    }

    /// Gradients of `loss`, then one update.
    pub fn step(&mut self, loss: &Tensor) -> Result<Update> {
        let grads = self.gradients(loss)?;
        self.apply(grads)
    }
}
