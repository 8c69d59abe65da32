//! A scalar head on the decoder's hidden states (`score`, as Hugging Face reward models name
//! it): the reward model's score and the critic's value.

use crate::error::Result;
use crate::model::layers::Projection;
use candle_core::{DType, Device, Tensor, Var};
use candle_nn::{VarBuilder, VarMap};

/// A new head for `model` and the updater that trains both together (AdamW at a constant `lr`,
/// gradient norm clipped at 1), as the reward model and the critic use.
pub fn head_with_updater(
    model: &crate::model::Decoder,
    lr: f64,
) -> Result<(ScalarHead, super::optimizer::Updater)> {
    let head = ScalarHead::new(model.config().hidden_size, model.dtype(), model.device())?;
    let mut vars = model.named_vars();
    vars.extend(head.named_vars());
    let updater = super::optimizer::Updater {
        vars,
        adam: crate::train::optim::AdamW::new(crate::train::optim::AdamWConfig::default()),
        schedule: crate::train::optim::LrSchedule::constant(lr),
        max_grad_norm: 1.0,
    };
    Ok((head, updater))
}

pub struct ScalarHead {
    varmap: VarMap,
    linear: Projection,
}

impl ScalarHead {
    pub fn new(hidden: usize, dtype: DType, device: &Device) -> Result<Self> {
        let varmap = VarMap::new();
        let vb = VarBuilder::from_varmap(&varmap, dtype, device);
        let linear = Projection::from_linear(&candle_nn::linear(hidden, 1, vb.pp("score"))?);
        Ok(ScalarHead { varmap, linear })
    }

    /// (b, t, hidden) -> (b, t).
    pub fn forward(&self, hidden: &Tensor) -> Result<Tensor> {
        Ok(self
            .linear
            .forward(hidden)?
            .squeeze(candle_core::D::Minus1)?)
    }

    pub fn named_vars(&self) -> Vec<(String, Var)> {
        let data = match self.varmap.data().lock() {
            Ok(data) => data,
            Err(poisoned) => poisoned.into_inner(),
        };
        let mut vars: Vec<(String, Var)> =
            data.iter().map(|(n, v)| (n.clone(), v.clone())).collect();
        vars.sort_by(|a, b| a.0.cmp(&b.0));
        vars
    }
}
