//! The critic role for PPO: the decoder with a scalar value head, giving a value before each
//! response token, trained on GAE returns with the clipped value loss.

use super::head::{head_with_updater, ScalarHead};
use super::optimizer::Updater;
use super::{ModelSource, ResponseBatch};
use crate::error::Result;
use crate::model::Decoder;
use crate::train::losses::value_loss;
use candle_core::Tensor;

pub struct Critic {
    model: Decoder,
    head: ScalarHead,
    updater: Updater,
    pad_id: u32,
    value_clip: Option<f64>,
}

impl Critic {
    pub fn from_model(
        model: Decoder,
        pad_id: u32,
        lr: f64,
        value_clip: Option<f64>,
    ) -> Result<Self> {
        let (head, updater) = head_with_updater(&model, lr)?;
        Ok(Critic {
            model,
            head,
            updater,
            pad_id,
            value_clip,
        })
    }

    /// Values (b, t-1), column j being the value of the state that emits token j + 1.
    fn value_matrix(&self, shaped: &ResponseBatch) -> Result<Tensor> {
        let hidden = self.model.hidden_batch(&shaped.padded)?;
        let width = shaped.padded.width();
        self.head.forward(&hidden.narrow(1, 0, width - 1)?)
    }
}

#[troupe::actor]
impl Critic {
    pub fn new(source: ModelSource, pad_id: u32, lr: f64, value_clip: Option<f64>) -> Result<Self> {
        Critic::from_model(source.build()?, pad_id, lr, value_clip)
    }

    /// The value before each response token.
    pub fn values(
        &self,
        prompts: Vec<Vec<u32>>,
        responses: Vec<Vec<u32>>,
    ) -> Result<Vec<Vec<f32>>> {
        let shaped = ResponseBatch::new(&prompts, &responses, self.pad_id)?;
        shaped.gather(&self.value_matrix(&shaped)?)
    }

    /// One step towards `returns` (per response token); `old_values` anchor the clipping.
    pub fn train(
        &mut self,
        prompts: Vec<Vec<u32>>,
        responses: Vec<Vec<u32>>,
        returns: Vec<Vec<f32>>,
        old_values: Vec<Vec<f32>>,
    ) -> Result<f64> {
        let shaped = ResponseBatch::new(&prompts, &responses, self.pad_id)?;
        let (dtype, device) = (self.model.dtype(), self.model.device().clone());
        let mask = shaped.mask(dtype, &device)?;
        let returns = shaped.scatter(&returns, dtype, &device)?;
        let old = shaped.scatter(&old_values, dtype, &device)?;
        let values = self.value_matrix(&shaped)?;
        let loss = value_loss(&values, &old, &returns, &mask, self.value_clip)?;
        let value = loss.to_dtype(candle_core::DType::F64)?.to_scalar::<f64>()?;
        self.updater.step(&loss)?;
        Ok(value)
    }
}
