//! The decoder's building blocks (norms, projections, the gated MLP, attention, the block),
//! written only with candle ops that record a backward pass
//! (candle-nn 0.11's fused `softmax_last_dim`, `rms_norm` and `rope` do not, and would silently
//! leave parameters without gradients).

use candle_core::{DType, Tensor, D};
use candle_nn::VarBuilder;

use super::rope::Rope;
use crate::config::{Activation, ModelConfig};
use crate::error::Result;

/// The additive mask value for positions a query may not see: large and finite, so a row with
/// nothing visible (a padding query) gives a uniform average instead of NaN.
pub(crate) const MASKED: f64 = -1.0e9;

/// Softmax over the last dimension. The max is subtracted for stability and detached: softmax
/// does not depend on it, so its gradient is exactly zero anyway.
pub fn softmax_last_dim(x: &Tensor) -> Result<Tensor> {
    let max = x.max_keepdim(D::Minus1)?.detach();
    let shifted = x.broadcast_sub(&max)?.exp()?;
    let total = shifted.sum_keepdim(D::Minus1)?;
    Ok(shifted.broadcast_div(&total)?)
}

/// Log-softmax over the last dimension (same detached-max trick).
pub fn log_softmax_last_dim(x: &Tensor) -> Result<Tensor> {
    let max = x.max_keepdim(D::Minus1)?.detach();
    let shifted = x.broadcast_sub(&max)?;
    let log_total = shifted.exp()?.sum_keepdim(D::Minus1)?.log()?;
    Ok(shifted.broadcast_sub(&log_total)?)
}

/// Root-mean-square normalisation with a learned scale, computed in f32 for half-precision
/// inputs (as transformers does).
pub struct RmsNorm {
    weight: Tensor,
    eps: f64,
}

impl RmsNorm {
    pub fn new(size: usize, eps: f64, vb: VarBuilder) -> Result<Self> {
        let weight = vb.get_with_hints(size, "weight", candle_nn::Init::Const(1.0))?;
        Ok(RmsNorm { weight, eps })
    }

    pub fn forward(&self, x: &Tensor) -> Result<Tensor> {
        let dtype = x.dtype();
        let wide = match dtype {
            DType::BF16 | DType::F16 => x.to_dtype(DType::F32)?,
            _ => x.clone(),
        };
        let mean_square = wide.sqr()?.mean_keepdim(D::Minus1)?;
        let scale = (mean_square + self.eps)?.sqrt()?.recip()?;
        let normed = wide.broadcast_mul(&scale)?.to_dtype(dtype)?;
        Ok(normed.broadcast_mul(&self.weight)?)
    }
}

/// A dense layer, y = x W^T (+ b), over the last dimension. The leading dimensions are folded
/// into one before the product, so a whole batch is one matrix multiplication: candle-nn's
/// `Linear` broadcasts W over the batch instead, which costs one small product per sequence and,
/// in the backward pass, a full-size weight gradient per sequence that is then summed.
pub struct Projection {
    weight: Tensor,
    bias: Option<Tensor>,
}

impl Projection {
    /// W is (out, inputs), stored as `weight` (and `bias` when asked), the Hugging Face names.
    pub fn new(inputs: usize, out: usize, bias: bool, vb: VarBuilder) -> Result<Self> {
        let weight = vb.get((out, inputs), "weight")?;
        let bias = if bias {
            Some(vb.get(out, "bias")?)
        } else {
            None
        };
        Ok(Projection { weight, bias })
    }

    /// The same product as candle-nn's `Linear` (whose initialisation it keeps), folded.
    pub fn from_linear(linear: &candle_nn::Linear) -> Self {
        Projection {
            weight: linear.weight().clone(),
            bias: linear.bias().cloned(),
        }
    }

    /// A projection by an existing matrix (out, inputs), such as tied embeddings.
    pub fn from_weight(weight: Tensor) -> Self {
        Projection { weight, bias: None }
    }

    pub fn forward(&self, x: &Tensor) -> Result<Tensor> {
        let mut dims = x.dims().to_vec();
        let inputs = dims.pop().unwrap_or(1);
        let rows = dims.iter().product::<usize>();
        let flat = x.reshape((rows, inputs))?.matmul(&self.weight.t()?)?;
        let flat = match &self.bias {
            Some(bias) => flat.broadcast_add(bias)?,
            None => flat,
        };
        dims.push(flat.dim(1)?);
        Ok(flat.reshape(dims)?)
    }
}

/// Gated feed-forward: down(act(gate(x)) * up(x)), with the config's activation (SwiGLU for
/// SiLU) and Llama's optional biases.
pub struct Mlp {
    gate: Projection,
    up: Projection,
    down: Projection,
    activation: Activation,
}

impl Mlp {
    pub fn new(config: &ModelConfig, vb: VarBuilder) -> Result<Self> {
        let (h, i, bias) = (
            config.hidden_size,
            config.intermediate_size,
            config.mlp_bias,
        );
        Ok(Mlp {
            gate: Projection::new(h, i, bias, vb.pp("gate_proj"))?,
            up: Projection::new(h, i, bias, vb.pp("up_proj"))?,
            down: Projection::new(i, h, bias, vb.pp("down_proj"))?,
            activation: config.hidden_act,
        })
    }

    pub fn forward(&self, x: &Tensor) -> Result<Tensor> {
        // candle-core's unary activations have backward rules (unlike candle-nn's fused ops).
        let activated = self.activation.apply(&self.gate.forward(x)?)?;
        self.down.forward(&(activated * self.up.forward(x)?)?)
    }
}

/// Grouped-query self-attention with rotary embeddings, optional per-head query/key norms
/// (Qwen3) and an optional key/value cache.
pub struct Attention {
    q: Projection,
    k: Projection,
    v: Projection,
    o: Projection,
    qk_norm: Option<(RmsNorm, RmsNorm)>,
    heads: usize,
    kv_heads: usize,
    head_dim: usize,
}

impl Attention {
    pub fn new(config: &ModelConfig, vb: VarBuilder) -> Result<Self> {
        let h = config.hidden_size;
        let head_dim = config.head_dim();
        let q = config.num_attention_heads * head_dim;
        let kv = config.kv_heads() * head_dim;
        let projection =
            |out: usize, name: &str| Projection::new(h, out, config.qkv_bias(), vb.pp(name));
        let qk_norm = if config.qk_norm {
            Some((
                RmsNorm::new(head_dim, config.rms_norm_eps, vb.pp("q_norm"))?,
                RmsNorm::new(head_dim, config.rms_norm_eps, vb.pp("k_norm"))?,
            ))
        } else {
            None
        };
        Ok(Attention {
            q: projection(q, "q_proj")?,
            k: projection(kv, "k_proj")?,
            v: projection(kv, "v_proj")?,
            o: Projection::new(q, h, config.o_bias(), vb.pp("o_proj"))?,
            qk_norm,
            heads: config.num_attention_heads,
            kv_heads: config.kv_heads(),
            head_dim,
        })
    }

    /// `x` (b, t, hidden); `mask` additive (b, 1, t, past + t); `cache` holds past keys/values.
    pub fn forward(
        &self,
        x: &Tensor,
        cos: &Tensor,
        sin: &Tensor,
        mask: &Tensor,
        cache: Option<&mut Option<(Tensor, Tensor)>>,
    ) -> Result<Tensor> {
        let (b, t, _) = x.dims3()?;
        let split = |y: Tensor, heads: usize, norm: Option<&RmsNorm>| -> Result<Tensor> {
            let y = y.reshape((b, t, heads, self.head_dim))?;
            let y = match norm {
                Some(norm) => norm.forward(&y)?,
                None => y,
            };
            Ok(y.transpose(1, 2)?.contiguous()?)
        };
        let (q_norm, k_norm) = match &self.qk_norm {
            Some((q, k)) => (Some(q), Some(k)),
            None => (None, None),
        };
        let q = split(self.q.forward(x)?, self.heads, q_norm)?;
        let q = Rope::apply(&q, cos, sin)?;
        let k = split(self.k.forward(x)?, self.kv_heads, k_norm)?;
        let mut k = Rope::apply(&k, cos, sin)?;
        let mut v = split(self.v.forward(x)?, self.kv_heads, None)?;
        if let Some(slot) = cache {
            if let Some((past_k, past_v)) = slot.as_ref() {
                k = Tensor::cat(&[past_k, &k], 2)?;
                v = Tensor::cat(&[past_v, &v], 2)?;
            }
            *slot = Some((k.clone(), v.clone()));
        }
        let k = self.repeat_kv(k)?;
        let v = self.repeat_kv(v)?;
        let scale = 1.0 / (self.head_dim as f64).sqrt();
        let scores = (q.matmul(&k.transpose(2, 3)?.contiguous()?)? * scale)?.broadcast_add(mask)?;
        // Half-precision scores are normalised in f32, as transformers does.
        let probabilities = match scores.dtype() {
            DType::BF16 | DType::F16 => {
                softmax_last_dim(&scores.to_dtype(DType::F32)?)?.to_dtype(scores.dtype())?
            }
            _ => softmax_last_dim(&scores)?,
        };
        let attended = probabilities.matmul(&v)?;
        let merged = attended
            .transpose(1, 2)?
            .reshape((b, t, self.heads * self.head_dim))?;
        self.o.forward(&merged)
    }

    fn repeat_kv(&self, x: Tensor) -> Result<Tensor> {
        let repeats = self.heads / self.kv_heads;
        if repeats == 1 {
            return Ok(x);
        }
        let (b, kv, t, d) = x.dims4()?;
        Ok(x.unsqueeze(2)?
            .expand((b, kv, repeats, t, d))?
            .reshape((b, kv * repeats, t, d))?)
    }
}

/// One decoder block: pre-norm attention and pre-norm MLP, each with a residual.
pub struct Block {
    input_norm: RmsNorm,
    attention: Attention,
    post_norm: RmsNorm,
    mlp: Mlp,
}

impl Block {
    pub fn new(config: &ModelConfig, vb: VarBuilder) -> Result<Self> {
        Ok(Block {
            input_norm: RmsNorm::new(
                config.hidden_size,
                config.rms_norm_eps,
                vb.pp("input_layernorm"),
            )?,
            attention: Attention::new(config, vb.pp("self_attn"))?,
            post_norm: RmsNorm::new(
                config.hidden_size,
                config.rms_norm_eps,
                vb.pp("post_attention_layernorm"),
            )?,
            mlp: Mlp::new(config, vb.pp("mlp"))?,
        })
    }

    pub fn forward(
        &self,
        x: &Tensor,
        cos: &Tensor,
        sin: &Tensor,
        mask: &Tensor,
        cache: Option<&mut Option<(Tensor, Tensor)>>,
    ) -> Result<Tensor> {
        let attended =
            self.attention
                .forward(&self.input_norm.forward(x)?, cos, sin, mask, cache)?;
        let x = (x + attended)?;
        let fed = self.mlp.forward(&self.post_norm.forward(&x)?)?;
        Ok((x + fed)?)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::Device;

    #[test]
    fn softmax_matches_the_definition() {
        let x = Tensor::new(&[[1.0_f64, 2.0, 3.0], [0.0, 0.0, MASKED]], &Device::Cpu).unwrap();
        let p = softmax_last_dim(&x).unwrap().to_vec2::<f64>().unwrap();
        let z: f64 = [1.0_f64, 2.0, 3.0].iter().map(|v| v.exp()).sum();
        assert!((p[0][2] - 3.0_f64.exp() / z).abs() < 1e-12);
        assert!((p[1][0] - 0.5).abs() < 1e-12 && p[1][2] < 1e-12);
        let logp = log_softmax_last_dim(&x).unwrap().to_vec2::<f64>().unwrap();
        assert!((logp[0][0] - (1.0 - z.ln())).abs() < 1e-12);
    }
}
