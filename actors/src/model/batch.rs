//! Padding sequences of different lengths into one batch: left padding (so every sequence ends at
//! the last column, as generation needs), per-token positions that skip the padding, and the
//! additive attention mask that hides padding and the future.

use super::layers::MASKED;
use crate::error::{ModelError, Result};
use candle_core::{DType, Device, Tensor};

/// Token sequences padded on the left to one length.
#[derive(Debug, Clone)]
pub struct PaddedBatch {
    /// (b, t) token ids, padding included.
    pub ids: Vec<Vec<u32>>,
    /// (b, t) whether each column holds a real token.
    pub valid: Vec<Vec<bool>>,
}

impl PaddedBatch {
    /// Left-pads `sequences` with `pad_id`. Empty sequences are refused.
    pub fn left_padded(sequences: &[Vec<u32>], pad_id: u32) -> Result<Self> {
        if sequences.is_empty() {
            return Err(ModelError::Input("an empty batch".to_string()));
        }
        if let Some(index) = sequences.iter().position(|s| s.is_empty()) {
            return Err(ModelError::Input(format!("sequence {index} is empty")));
        }
        let width = sequences.iter().map(Vec::len).max().unwrap_or(0);
        let mut ids = Vec::with_capacity(sequences.len());
        let mut valid = Vec::with_capacity(sequences.len());
        for sequence in sequences {
            let pad = width - sequence.len();
            let mut row = vec![pad_id; pad];
            row.extend_from_slice(sequence);
            let mut mask = vec![false; pad];
            mask.extend(std::iter::repeat_n(true, sequence.len()));
            ids.push(row);
            valid.push(mask);
        }
        Ok(PaddedBatch { ids, valid })
    }

    pub fn batch_size(&self) -> usize {
        self.ids.len()
    }

    pub fn width(&self) -> usize {
        self.ids.first().map(Vec::len).unwrap_or(0)
    }

    /// Positions: each real token's index among the real tokens of its row; 0 for padding.
    pub fn positions(&self) -> Vec<Vec<u32>> {
        self.valid
            .iter()
            .map(|row| {
                let mut next = 0_u32;
                row.iter()
                    .map(|valid| {
                        if *valid {
                            next += 1;
                            next - 1
                        } else {
                            0
                        }
                    })
                    .collect()
            })
            .collect()
    }

    /// (ids, positions, mask) tensors for a full forward pass.
    pub fn tensors(&self, dtype: DType, device: &Device) -> Result<(Tensor, Tensor, Tensor)> {
        let (b, t) = (self.batch_size(), self.width());
        let ids = Tensor::from_vec(self.ids.concat(), (b, t), device)?;
        let positions = Tensor::from_vec(self.positions().concat(), (b, t), device)?;
        let mask = attention_mask(&self.valid, t, dtype, device)?;
        Ok((ids, positions, mask))
    }
}

/// The additive mask (b, 1, queries, keys) for the last `queries` of the key columns: a query
/// sees the real keys at or before its own column.
pub fn attention_mask(
    valid: &[Vec<bool>],
    queries: usize,
    dtype: DType,
    device: &Device,
) -> Result<Tensor> {
    let b = valid.len();
    let keys = valid.first().map(Vec::len).unwrap_or(0);
    if queries > keys {
        return Err(ModelError::Input(format!(
            "{queries} queries over {keys} keys"
        )));
    }
    let offset = keys - queries;
    let mut values = Vec::with_capacity(b * queries * keys);
    for row in valid {
        for query in 0..queries {
            for (key, real) in row.iter().enumerate() {
                let visible = *real && key <= offset + query;
                values.push(if visible { 0.0_f32 } else { MASKED as f32 });
            }
        }
    }
    Ok(Tensor::from_vec(values, (b, 1, queries, keys), device)?.to_dtype(dtype)?)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn left_padding_positions_and_mask() {
        let batch = PaddedBatch::left_padded(&[vec![5, 6, 7], vec![8]], 0).unwrap();
        assert_eq!(batch.ids, vec![vec![5, 6, 7], vec![0, 0, 8]]);
        assert_eq!(batch.positions(), vec![vec![0, 1, 2], vec![0, 0, 0]]);
        let mask = attention_mask(&batch.valid, 3, DType::F32, &Device::Cpu).unwrap();
        let mask = mask.to_vec3::<f32>().ok();
        assert!(mask.is_none(), "the mask is 4-d");
        let full = attention_mask(&batch.valid, 3, DType::F32, &Device::Cpu)
            .unwrap()
            .squeeze(1)
            .unwrap()
            .to_vec3::<f32>()
            .unwrap();
        assert_eq!(full[0][0], vec![0.0, MASKED as f32, MASKED as f32]);
        assert_eq!(full[1][2], vec![MASKED as f32, MASKED as f32, 0.0]);
        assert!(PaddedBatch::left_padded(&[vec![]], 0).is_err());
    }
}
