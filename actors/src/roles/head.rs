//! A scalar head on the decoder's hidden states (`score`, as Hugging Face reward models name
//! it): the reward model's score and the critic's value.

use crate::error::Result;
use candle_core::{DType, Device, Module, Tensor, Var};
use candle_nn::{Linear, VarBuilder, VarMap};

pub struct ScalarHead {
    varmap: VarMap,
    linear: Linear,
}

impl ScalarHead {
    pub fn new(hidden: usize, dtype: DType, device: &Device) -> Result<Self> {
        let varmap = VarMap::new();
        let vb = VarBuilder::from_varmap(&varmap, dtype, device);
        let linear = candle_nn::linear(hidden, 1, vb.pp("score"))?;
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
