//! What travels between role actors, and how prompt+response pairs line up with a model's
//! per-token log-probabilities.

use crate::error::{ModelError, Result};
use crate::model::PaddedBatch;
use candle_core::{DType, Device, Tensor};
use serde::{Deserialize, Serialize};

/// One parameter, as raw little-endian f32 values.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct NamedTensor {
    pub name: String,
    pub shape: Vec<usize>,
    pub data: Vec<f32>,
}

impl NamedTensor {
    pub fn from_tensor(name: &str, tensor: &Tensor) -> Result<Self> {
        Ok(NamedTensor {
            name: name.to_string(),
            shape: tensor.dims().to_vec(),
            data: tensor
                .to_dtype(DType::F32)?
                .flatten_all()?
                .to_vec1::<f32>()?,
        })
    }

    pub fn to_tensor(&self, device: &Device) -> Result<Tensor> {
        let expected: usize = self.shape.iter().product();
        if expected != self.data.len() {
            return Err(ModelError::Input(format!(
                "tensor `{}`: shape {:?} holds {expected} values, {} given",
                self.name,
                self.shape,
                self.data.len()
            )));
        }
        Ok(Tensor::from_vec(
            self.data.clone(),
            self.shape.as_slice(),
            device,
        )?)
    }
}

/// Policy weights with the version they belong to: all of them, or a subset (`partial`).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct WeightSet {
    pub version: u64,
    pub partial: bool,
    pub tensors: Vec<NamedTensor>,
}

impl WeightSet {
    /// The parameters of `model`, all of them, as version `version`.
    pub fn from_model(model: &crate::model::Decoder, version: u64) -> Result<Self> {
        let tensors = model
            .named_tensors()
            .iter()
            .map(|(name, tensor)| NamedTensor::from_tensor(name, tensor))
            .collect::<Result<Vec<_>>>()?;
        Ok(WeightSet {
            version,
            partial: false,
            tensors,
        })
    }

    /// Writes these weights into `model` (checked first: a bad set changes nothing).
    pub fn apply_to(&self, model: &crate::model::Decoder) -> Result<()> {
        let device = model.device().clone();
        let tensors = self
            .tensors
            .iter()
            .map(|tensor| Ok((tensor.name.clone(), tensor.to_tensor(&device)?)))
            .collect::<Result<Vec<_>>>()?;
        model.load_tensors(&tensors, self.partial)
    }
}

/// Prompts with their responses, padded so that log-probabilities of response tokens can be
/// read off a forward pass over prompt + response.
pub struct ResponseBatch {
    pub padded: PaddedBatch,
    response_lengths: Vec<usize>,
}

impl ResponseBatch {
    pub fn new(prompts: &[Vec<u32>], responses: &[Vec<u32>], pad_id: u32) -> Result<Self> {
        if prompts.len() != responses.len() {
            return Err(ModelError::Input(format!(
                "{} prompts but {} responses",
                prompts.len(),
                responses.len()
            )));
        }
        if let Some(index) = responses.iter().position(Vec::is_empty) {
            return Err(ModelError::Input(format!("response {index} is empty")));
        }
        let sequences: Vec<Vec<u32>> = prompts
            .iter()
            .zip(responses)
            .map(|(prompt, response)| [prompt.as_slice(), response.as_slice()].concat())
            .collect();
        Ok(ResponseBatch {
            padded: PaddedBatch::left_padded(&sequences, pad_id)?,
            response_lengths: responses.iter().map(Vec::len).collect(),
        })
    }

    /// Columns of the (b, t-1) log-probability matrix that score response tokens: the last
    /// `len` columns of each row.
    fn columns(&self, row: usize) -> std::ops::Range<usize> {
        let width = self.padded.width() - 1;
        width - self.response_lengths[row]..width
    }

    /// 0/1 mask (b, t-1) of response tokens.
    pub fn mask(&self, dtype: DType, device: &Device) -> Result<Tensor> {
        self.scatter(
            &self
                .response_lengths
                .iter()
                .map(|len| vec![1.0; *len])
                .collect::<Vec<_>>(),
            dtype,
            device,
        )
    }

    /// Places per-response values (one per response token) into a (b, t-1) tensor, zeros
    /// elsewhere.
    pub fn scatter(&self, values: &[Vec<f32>], dtype: DType, device: &Device) -> Result<Tensor> {
        let width = self.padded.width() - 1;
        let mut out = vec![0.0_f32; values.len() * width];
        for (row, row_values) in values.iter().enumerate() {
            if row_values.len()
                != self
                    .response_lengths
                    .get(row)
                    .copied()
                    .unwrap_or(usize::MAX)
            {
                return Err(ModelError::Input(format!(
                    "row {row}: {} values for a response of {} tokens",
                    row_values.len(),
                    self.response_lengths.get(row).copied().unwrap_or(0)
                )));
            }
            let columns = self.columns(row);
            out[row * width + columns.start..row * width + columns.end].copy_from_slice(row_values);
        }
        Ok(Tensor::from_vec(out, (values.len(), width), device)?.to_dtype(dtype)?)
    }

    /// Broadcasts one value per response over its tokens: (b, t-1).
    pub fn per_sequence(&self, values: &[f32], dtype: DType, device: &Device) -> Result<Tensor> {
        let expanded: Vec<Vec<f32>> = values
            .iter()
            .zip(&self.response_lengths)
            .map(|(value, len)| vec![*value; *len])
            .collect();
        if expanded.len() != self.response_lengths.len() {
            return Err(ModelError::Input(format!(
                "{} values for {} responses",
                values.len(),
                self.response_lengths.len()
            )));
        }
        self.scatter(&expanded, dtype, device)
    }

    /// Reads the response columns of a (b, t-1) tensor back into per-response vectors.
    pub fn gather(&self, values: &Tensor) -> Result<Vec<Vec<f32>>> {
        let rows = values.to_dtype(DType::F32)?.to_vec2::<f32>()?;
        Ok(rows
            .iter()
            .enumerate()
            .map(|(row, row_values)| row_values[self.columns(row)].to_vec())
            .collect())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn response_columns_line_up() {
        let batch = ResponseBatch::new(&[vec![1, 2], vec![3]], &[vec![4], vec![5, 6]], 0).unwrap();
        // Rows: [1,2,4] and [3,5,6]; log-prob columns 0..2 predict ids 1..3.
        let mask = batch
            .mask(DType::F32, &Device::Cpu)
            .unwrap()
            .to_vec2::<f32>()
            .unwrap();
        assert_eq!(mask, vec![vec![0.0, 1.0], vec![1.0, 1.0]]);
        let values = Tensor::new(&[[10.0_f32, 11.0], [12.0, 13.0]], &Device::Cpu).unwrap();
        assert_eq!(
            batch.gather(&values).unwrap(),
            vec![vec![11.0], vec![12.0, 13.0]]
        );
        assert!(batch
            .scatter(&[vec![1.0, 2.0], vec![1.0, 2.0]], DType::F32, &Device::Cpu)
            .is_err());
    }
}
