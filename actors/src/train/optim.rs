//! AdamW over named parameters (with state that checkpoints can save and restore), global
//! gradient-norm clipping, gradient accumulation, and learning-rate schedules (linear warm-up,
//! then constant, linear or cosine decay).

use crate::error::{ModelError, Result};
use candle_core::{backprop::GradStore, Tensor, Var};
use serde::{Deserialize, Serialize};
use std::collections::HashMap;

/// AdamW's hyper-parameters (the learning rate comes from the schedule at each step).
#[derive(Debug, Clone, Copy, Serialize, Deserialize)]
pub struct AdamWConfig {
    pub beta1: f64,
    pub beta2: f64,
    pub eps: f64,
    pub weight_decay: f64,
}

impl Default for AdamWConfig {
    fn default() -> Self {
        AdamWConfig {
            beta1: 0.9,
            beta2: 0.999,
            eps: 1e-8,
            weight_decay: 0.0,
        }
    }
}

/// Gradients by parameter name.
pub type Gradients = HashMap<String, Tensor>;

/// Picks each parameter's gradient out of a backward pass. A parameter the loss did not reach
/// gets zeros (and is named in the second list).
pub fn collect_gradients(
    grads: &GradStore,
    vars: &[(String, Var)],
) -> Result<(Gradients, Vec<String>)> {
    let mut out = HashMap::with_capacity(vars.len());
    let mut missing = Vec::new();
    for (name, var) in vars {
        match grads.get(var.as_tensor()) {
            Some(grad) => {
                out.insert(name.clone(), grad.clone());
            }
            None => {
                missing.push(name.clone());
                out.insert(name.clone(), var.as_tensor().zeros_like()?);
            }
        }
    }
    Ok((out, missing))
}

/// Adds `more` into `total` (gradient accumulation over micro-batches).
pub fn accumulate(total: &mut Gradients, more: Gradients) -> Result<()> {
    for (name, grad) in more {
        let sum = match total.remove(&name) {
            Some(existing) => (existing + grad)?,
            None => grad,
        };
        total.insert(name, sum);
    }
    Ok(())
}

/// Scales all gradients by `factor`.
pub fn scale(grads: &mut Gradients, factor: f64) -> Result<()> {
    for grad in grads.values_mut() {
        *grad = (&*grad * factor)?;
    }
    Ok(())
}

/// The global L2 norm of all gradients.
pub fn global_norm(grads: &Gradients) -> Result<f64> {
    let mut total = 0.0;
    for grad in grads.values() {
        total += grad
            .sqr()?
            .sum_all()?
            .to_dtype(candle_core::DType::F64)?
            .to_scalar::<f64>()?;
    }
    Ok(total.sqrt())
}

/// Scales gradients so their global norm is at most `max_norm`; returns the norm before.
pub fn clip_grad_norm(grads: &mut Gradients, max_norm: f64) -> Result<f64> {
    let norm = global_norm(grads)?;
    if norm.is_finite() && norm > max_norm && max_norm > 0.0 {
        scale(grads, max_norm / (norm + 1e-6))?;
    }
    Ok(norm)
}

/// AdamW with decoupled weight decay.
pub struct AdamW {
    pub config: AdamWConfig,
    pub step: u64,
    moments: HashMap<String, (Tensor, Tensor)>,
}

impl AdamW {
    pub fn new(config: AdamWConfig) -> Self {
        AdamW {
            config,
            step: 0,
            moments: HashMap::new(),
        }
    }

    /// One update of every parameter that has a gradient, at learning rate `lr`.
    pub fn apply(&mut self, vars: &[(String, Var)], grads: &Gradients, lr: f64) -> Result<()> {
        self.step += 1;
        let c = self.config;
        let t = self.step as i32;
        let correction1 = 1.0 - c.beta1.powi(t);
        let correction2 = 1.0 - c.beta2.powi(t);
        for (name, var) in vars {
            let Some(grad) = grads.get(name) else {
                continue;
            };
            let (m, v) = match self.moments.remove(name) {
                Some(moments) => moments,
                None => (var.as_tensor().zeros_like()?, var.as_tensor().zeros_like()?),
            };
            let m = ((m * c.beta1)? + (grad * (1.0 - c.beta1))?)?;
            let v = ((v * c.beta2)? + (grad.sqr()? * (1.0 - c.beta2))?)?;
            let step = ((&m / correction1)? / ((&v / correction2)?.sqrt()? + c.eps)?)?;
            let decayed = (var.as_tensor() * (1.0 - lr * c.weight_decay))?;
            var.set(&(decayed - (step * lr)?)?)?;
            self.moments.insert(name.clone(), (m, v));
        }
        Ok(())
    }

    /// The moments as named tensors (`adam_m.NAME`, `adam_v.NAME`) for a checkpoint.
    pub fn state_tensors(&self) -> Vec<(String, Tensor)> {
        let mut out = Vec::with_capacity(self.moments.len() * 2);
        for (name, (m, v)) in &self.moments {
            out.push((format!("adam_m.{name}"), m.clone()));
            out.push((format!("adam_v.{name}"), v.clone()));
        }
        out
    }

    /// Restores moments saved by `state_tensors`, and the step count.
    pub fn load_state(&mut self, step: u64, tensors: Vec<(String, Tensor)>) -> Result<()> {
        let mut firsts = HashMap::new();
        let mut seconds = HashMap::new();
        for (name, tensor) in tensors {
            if let Some(param) = name.strip_prefix("adam_m.") {
                firsts.insert(param.to_string(), tensor);
            } else if let Some(param) = name.strip_prefix("adam_v.") {
                seconds.insert(param.to_string(), tensor);
            } else {
                return Err(ModelError::Checkpoint(format!(
                    "unexpected optimizer tensor `{name}`"
                )));
            }
        }
        let mut moments = HashMap::new();
        for (name, m) in firsts {
            let v = seconds.remove(&name).ok_or_else(|| {
                ModelError::Checkpoint(format!(
                    "optimizer state for `{name}` lacks its second moment"
                ))
            })?;
            moments.insert(name, (m, v));
        }
        self.moments = moments;
        self.step = step;
        Ok(())
    }
}

/// How the learning rate decays after warm-up.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub enum Decay {
    Constant,
    Linear,
    Cosine,
}

/// Learning rate by step: linear warm-up to `peak`, then decay to `peak * min_ratio` at
/// `total_steps`.
#[derive(Debug, Clone, Copy, Serialize, Deserialize)]
pub struct LrSchedule {
    pub peak: f64,
    pub warmup_steps: u64,
    pub total_steps: u64,
    pub min_ratio: f64,
    pub decay: Decay,
}

impl LrSchedule {
    pub fn constant(lr: f64) -> Self {
        LrSchedule {
            peak: lr,
            warmup_steps: 0,
            total_steps: 1,
            min_ratio: 1.0,
            decay: Decay::Constant,
        }
    }

    /// Cosine decay from `peak` to `peak * min_ratio` over `steps`, no warm-up.
    pub fn cosine(peak: f64, steps: u64, min_ratio: f64) -> Self {
        LrSchedule {
            peak,
            warmup_steps: 0,
            total_steps: steps,
            min_ratio,
            decay: Decay::Cosine,
        }
    }

    /// The rate for `step` (counting from 0).
    pub fn at(&self, step: u64) -> f64 {
        if step < self.warmup_steps {
            return self.peak * (step + 1) as f64 / self.warmup_steps as f64;
        }
        let span = self.total_steps.saturating_sub(self.warmup_steps).max(1) as f64;
        let progress = ((step - self.warmup_steps) as f64 / span).min(1.0);
        let floor = self.peak * self.min_ratio;
        match self.decay {
            Decay::Constant => self.peak,
            Decay::Linear => floor + (self.peak - floor) * (1.0 - progress),
            Decay::Cosine => {
                floor + (self.peak - floor) * 0.5 * (1.0 + (std::f64::consts::PI * progress).cos())
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::Device;

    #[test]
    fn adamw_first_step_by_hand() {
        // First step: m_hat = g, v_hat = g^2, so the update is lr * g / (|g| + eps) = lr * sign(g),
        // after decay w * (1 - lr * wd).
        let var = Var::new(&[1.0_f64, -2.0], &Device::Cpu).unwrap();
        let vars = vec![("w".to_string(), var.clone())];
        let grads: Gradients = [(
            "w".to_string(),
            Tensor::new(&[0.5_f64, -3.0], &Device::Cpu).unwrap(),
        )]
        .into();
        let mut adam = AdamW::new(AdamWConfig {
            weight_decay: 0.1,
            eps: 0.0,
            ..AdamWConfig::default()
        });
        adam.apply(&vars, &grads, 0.01).unwrap();
        let w = var.as_tensor().to_vec1::<f64>().unwrap();
        assert!((w[0] - (1.0 * (1.0 - 0.001) - 0.01)).abs() < 1e-12, "{w:?}");
        assert!(
            (w[1] - (-2.0 * (1.0 - 0.001) + 0.01)).abs() < 1e-12,
            "{w:?}"
        );
        assert_eq!(adam.state_tensors().len(), 2);
    }

    #[test]
    fn clipping_by_hand() {
        let mut grads: Gradients = [(
            "a".to_string(),
            Tensor::new(&[3.0_f64, 4.0], &Device::Cpu).unwrap(),
        )]
        .into();
        let norm = clip_grad_norm(&mut grads, 1.0).unwrap();
        assert!((norm - 5.0).abs() < 1e-12);
        let clipped = grads["a"].to_vec1::<f64>().unwrap();
        assert!((clipped[0] - 0.6).abs() < 1e-6 && (clipped[1] - 0.8).abs() < 1e-6);
    }

    #[test]
    fn schedules_by_hand() {
        let cosine = LrSchedule {
            peak: 1.0,
            warmup_steps: 2,
            total_steps: 12,
            min_ratio: 0.0,
            decay: Decay::Cosine,
        };
        assert!((cosine.at(0) - 0.5).abs() < 1e-12);
        assert!((cosine.at(1) - 1.0).abs() < 1e-12);
        assert!((cosine.at(2) - 1.0).abs() < 1e-12);
        assert!((cosine.at(7) - 0.5).abs() < 1e-12);
        assert!(cosine.at(12).abs() < 1e-12);
        let linear = LrSchedule {
            decay: Decay::Linear,
            min_ratio: 0.1,
            ..cosine
        };
        assert!((linear.at(7) - 0.55).abs() < 1e-12);
    }

    #[test]
    fn accumulation_adds() {
        let device = Device::Cpu;
        let mut total: Gradients =
            [("a".to_string(), Tensor::new(&[1.0_f64], &device).unwrap())].into();
        accumulate(
            &mut total,
            [("a".to_string(), Tensor::new(&[2.0_f64], &device).unwrap())].into(),
        )
        .unwrap();
        assert_eq!(total["a"].to_vec1::<f64>().unwrap(), vec![3.0]);
    }
}
