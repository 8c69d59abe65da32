//! Rotary position embeddings in the Hugging Face (rotate-half) convention: cos and sin computed
//! for the positions of each call from the config's inverse frequencies (so no table is sized by
//! `max_position_embeddings`), scaled by the RoPE type's attention factor.

use crate::config::ModelConfig;
use crate::error::{ModelError, Result};
use candle_core::{DType, Device, Tensor, D};

/// The rotary frequencies of one model.
pub struct Rope {
    inverse_frequencies: Vec<f32>,
    attention_factor: f64,
    /// Positions at or past this are refused (dynamic NTK scaling changes past it).
    limit: Option<usize>,
    dtype: DType,
    device: Device,
}

impl Rope {
    pub fn new(config: &ModelConfig, dtype: DType, device: &Device) -> Result<Self> {
        let (inverse_frequencies, attention_factor) = config.rope_scaling.frequencies(config);
        Ok(Rope {
            inverse_frequencies,
            attention_factor,
            limit: config.rope_scaling.position_limit(config),
            dtype,
            device: device.clone(),
        })
    }

    /// cos and sin for `positions` (b, t), shaped (b, 1, t, head_dim) to broadcast over heads.
    pub fn tables(&self, positions: &Tensor) -> Result<(Tensor, Tensor)> {
        let (b, t) = positions.dims2()?;
        let positions = positions.to_dtype(DType::U32)?.to_vec2::<u32>()?;
        let half = self.inverse_frequencies.len();
        let mut cos = Vec::with_capacity(b * t * half * 2);
        let mut sin = Vec::with_capacity(b * t * half * 2);
        for &position in positions.iter().flatten() {
            if let Some(limit) = self.limit {
                if position as usize >= limit {
                    return Err(ModelError::Input(format!(
                        "position {position} is past max_position_embeddings {limit}, where \
                         dynamic RoPE scaling would change the frequencies"
                    )));
                }
            }
            let start = cos.len();
            // As transformers: the angle is an f32 product, cos and sin are scaled in f32.
            let factor = self.attention_factor as f32;
            for frequency in &self.inverse_frequencies {
                let angle = (position as f32 * frequency) as f64;
                cos.push(angle.cos() as f32 * factor);
                sin.push(angle.sin() as f32 * factor);
            }
            cos.extend_from_within(start..start + half);
            sin.extend_from_within(start..start + half);
        }
        let shape = (b, 1, t, half * 2);
        let cos = Tensor::from_vec(cos, shape, &self.device)?.to_dtype(self.dtype)?;
        let sin = Tensor::from_vec(sin, shape, &self.device)?.to_dtype(self.dtype)?;
        Ok((cos, sin))
    }

    /// x * cos + rotate_half(x) * sin, for x of shape (b, heads, t, head_dim).
    pub fn apply(x: &Tensor, cos: &Tensor, sin: &Tensor) -> Result<Tensor> {
        let half = x.dim(D::Minus1)? / 2;
        let first = x.narrow(D::Minus1, 0, half)?;
        let second = x.narrow(D::Minus1, half, half)?;
        let rotated = Tensor::cat(&[&second.neg()?, &first], D::Minus1)?;
        Ok((x.broadcast_mul(cos)? + rotated.broadcast_mul(sin)?)?)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::RopeScaling;

    #[test]
    fn tables_hold_cos_and_sin_of_position_times_frequency() {
        let mut config = ModelConfig::tiny(10, 8, 1, 2, 2);
        config.rope_theta = 100.0;
        let rope = Rope::new(&config, DType::F64, &Device::Cpu).unwrap();
        let positions = Tensor::new(&[[3_u32]], &Device::Cpu).unwrap();
        let (cos, sin) = rope.tables(&positions).unwrap();
        let cos = cos.flatten_all().unwrap().to_vec1::<f64>().unwrap();
        let sin = sin.flatten_all().unwrap().to_vec1::<f64>().unwrap();
        // head_dim 4: frequencies 1 and 1/10, each repeated for the two halves.
        for (index, frequency) in [1.0_f64, 0.1, 1.0, 0.1].iter().enumerate() {
            assert!((cos[index] - (3.0 * frequency).cos()).abs() < 1e-6);
            assert!((sin[index] - (3.0 * frequency).sin()).abs() < 1e-6);
        }
    }

    #[test]
    fn dynamic_scaling_refuses_positions_past_the_limit() {
        let mut config = ModelConfig::tiny(10, 16, 1, 2, 2);
        config.max_position_embeddings = 8;
        config.rope_scaling = RopeScaling::Dynamic { factor: 2.0 };
        let rope = Rope::new(&config, DType::F32, &Device::Cpu).unwrap();
        assert!(rope
            .tables(&Tensor::new(&[[0_u32, 7]], &Device::Cpu).unwrap())
            .is_ok());
        let err = rope
            .tables(&Tensor::new(&[[8_u32]], &Device::Cpu).unwrap())
            .unwrap_err()
            .to_string();
        assert!(err.contains("max_position_embeddings"), "{err}");
    }
}
