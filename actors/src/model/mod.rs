//! The decoder: a Llama / Qwen2 / Qwen3 / Mistral causal language model (RMSNorm, RoPE with
//! scaling, gated MLP, grouped-query attention with optional biases, per-head norms and sliding
//! windows, tied or untied embeddings) whose parameters live in a `VarMap` under their Hugging
//! Face names, so they can be trained, saved, loaded and shipped to other actors by name.

mod batch;
pub mod layers;
pub mod rope;

pub use batch::{attention_mask, PaddedBatch};

use crate::config::LayerAttention;
use crate::config::ModelConfig;
use crate::error::{ModelError, Result};
use candle_core::{DType, Device, Module, Tensor, Var};
use candle_nn::{Embedding, VarBuilder, VarMap};
use layers::{Block, Projection, RmsNorm, MASKED};
use rope::Rope;

/// Past keys and values of every layer, for incremental decoding.
#[derive(Default)]
pub struct KvCache {
    layers: Vec<Option<(Tensor, Tensor)>>,
}

impl KvCache {
    pub fn new(layers: usize) -> Self {
        KvCache {
            layers: vec![None; layers],
        }
    }

    /// How many positions are cached.
    pub fn len(&self) -> usize {
        self.layers
            .first()
            .and_then(|layer| layer.as_ref())
            .and_then(|(k, _)| k.dim(2).ok())
            .unwrap_or(0)
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// A decoder-only transformer.
pub struct Decoder {
    config: ModelConfig,
    varmap: VarMap,
    embedding: Embedding,
    blocks: Vec<Block>,
    norm: RmsNorm,
    lm_head: Option<Projection>,
    rope: Rope,
    device: Device,
    dtype: DType,
}

impl Decoder {
    /// A freshly initialised decoder: weights normal(0, 0.02) (output projections of each block
    /// scaled down by sqrt(2 x layers), as GPT-2 does), norms 1, biases 0; the same `seed` gives
    /// the same weights on every machine.
    pub fn new(config: &ModelConfig, dtype: DType, device: &Device, seed: u64) -> Result<Self> {
        let decoder = Self::assemble(config, VarMap::new(), dtype, device)?;
        decoder.initialize(seed)?;
        Ok(decoder)
    }

    /// Builds the modules over `varmap`: parameters already in it (a loaded checkpoint) are
    /// used as they are; missing ones are created (and must then be initialised).
    pub(crate) fn assemble(
        config: &ModelConfig,
        varmap: VarMap,
        dtype: DType,
        device: &Device,
    ) -> Result<Self> {
        config.validate()?;
        let vb = VarBuilder::from_varmap(&varmap, dtype, device);
        let model = vb.pp("model");
        let embedding = candle_nn::embedding(
            config.vocab_size,
            config.hidden_size,
            model.pp("embed_tokens"),
        )?;
        let blocks = (0..config.num_hidden_layers)
            .map(|index| Block::new(config, model.pp(format!("layers.{index}"))))
            .collect::<Result<Vec<_>>>()?;
        let norm = RmsNorm::new(config.hidden_size, config.rms_norm_eps, model.pp("norm"))?;
        let lm_head = if config.tie_word_embeddings {
            None
        } else {
            Some(Projection::new(
                config.hidden_size,
                config.vocab_size,
                false,
                vb.pp("lm_head"),
            )?)
        };
        let rope = Rope::new(config, dtype, device)?;
        Ok(Decoder {
            config: config.clone(),
            varmap,
            embedding,
            blocks,
            norm,
            lm_head,
            rope,
            device: device.clone(),
            dtype,
        })
    }

    /// Draws every parameter from a generator seeded with `seed` (candle's own CPU generator
    /// cannot be seeded).
    fn initialize(&self, seed: u64) -> Result<()> {
        use rand::{Rng, SeedableRng};
        let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
        let residual_scale = (2.0 * self.config.num_hidden_layers as f64).sqrt();
        for (name, var) in self.named_vars() {
            let count = var.elem_count();
            let values: Vec<f64> = if name.ends_with("norm.weight") {
                vec![1.0; count]
            } else if name.ends_with(".bias") {
                vec![0.0; count]
            } else {
                let std = if name.ends_with("o_proj.weight") || name.ends_with("down_proj.weight") {
                    0.02 / residual_scale
                } else {
                    0.02
                };
                (0..count)
                    .map(|_| {
                        // Box-Muller.
                        let u1: f64 = rng.random::<f64>().max(f64::MIN_POSITIVE);
                        let u2: f64 = rng.random();
                        std * (-2.0 * u1.ln()).sqrt() * (2.0 * std::f64::consts::PI * u2).cos()
                    })
                    .collect()
            };
            // Drawn in f64 and rounded once, so every dtype starts from the same numbers.
            let tensor = if self.dtype == DType::F64 {
                Tensor::from_vec(values, var.shape(), &self.device)?
            } else {
                let narrow: Vec<f32> = values.into_iter().map(|v| v as f32).collect();
                Tensor::from_vec(narrow, var.shape(), &self.device)?.to_dtype(self.dtype)?
            };
            var.set(&tensor)?;
        }
        Ok(())
    }

    pub fn config(&self) -> &ModelConfig {
        &self.config
    }

    pub fn device(&self) -> &Device {
        &self.device
    }

    pub fn dtype(&self) -> DType {
        self.dtype
    }

    /// Every trainable parameter, by Hugging Face name, sorted by name.
    pub fn named_vars(&self) -> Vec<(String, Var)> {
        let data = match self.varmap.data().lock() {
            Ok(data) => data,
            Err(poisoned) => poisoned.into_inner(),
        };
        let mut vars: Vec<(String, Var)> = data
            .iter()
            .map(|(name, var)| (name.clone(), var.clone()))
            .collect();
        vars.sort_by(|a, b| a.0.cmp(&b.0));
        vars
    }

    /// Every parameter's current value, by name.
    pub fn named_tensors(&self) -> Vec<(String, Tensor)> {
        self.named_vars()
            .into_iter()
            .map(|(name, var)| (name, var.as_tensor().clone()))
            .collect()
    }

    /// Overwrites parameters with `tensors` (all of them, or a subset when `partial`), checking
    /// names and shapes first so that a bad set changes nothing.
    pub fn load_tensors(&self, tensors: &[(String, Tensor)], partial: bool) -> Result<()> {
        let vars = self.named_vars();
        let by_name: std::collections::HashMap<&str, &Var> =
            vars.iter().map(|(n, v)| (n.as_str(), v)).collect();
        for (name, tensor) in tensors {
            let var = by_name
                .get(name.as_str())
                .ok_or_else(|| ModelError::Checkpoint(format!("unknown parameter `{name}`")))?;
            if var.shape() != tensor.shape() {
                return Err(ModelError::Checkpoint(format!(
                    "parameter `{name}`: shape {:?} given, {:?} expected",
                    tensor.dims(),
                    var.dims()
                )));
            }
        }
        if !partial {
            let given: std::collections::HashSet<&str> =
                tensors.iter().map(|(n, _)| n.as_str()).collect();
            if let Some((missing, _)) = vars.iter().find(|(name, _)| !given.contains(name.as_str()))
            {
                return Err(ModelError::Checkpoint(format!(
                    "parameter `{missing}` is missing"
                )));
            }
        }
        for (name, tensor) in tensors {
            if let Some(var) = by_name.get(name.as_str()) {
                var.set(&tensor.to_device(&self.device)?.to_dtype(self.dtype)?)?;
            }
        }
        Ok(())
    }

    /// Final hidden states (b, t, hidden) for `input_ids` (b, t) at `positions` (b, t), with
    /// an additive `mask` (b, 1, t, past + t); extends `cache` when given.
    pub fn hidden(
        &self,
        input_ids: &Tensor,
        positions: &Tensor,
        mask: &Tensor,
        mut cache: Option<&mut KvCache>,
    ) -> Result<Tensor> {
        let (cos, sin) = self.rope.tables(positions)?;
        let sliding = self.sliding_mask(mask)?;
        let mut x = self.embedding.forward(input_ids)?;
        for (index, block) in self.blocks.iter().enumerate() {
            let slot = match cache.as_deref_mut() {
                Some(cache) => {
                    if cache.layers.len() != self.blocks.len() {
                        cache.layers = vec![None; self.blocks.len()];
                    }
                    Some(&mut cache.layers[index])
                }
                None => None,
            };
            let layer_mask = match (self.config.layer_attention(index), &sliding) {
                (LayerAttention::Sliding, Some(sliding)) => sliding,
                _ => mask,
            };
            x = block.forward(&x, &cos, &sin, layer_mask, slot)?;
        }
        self.norm.forward(&x)
    }

    /// The causal `mask` (b, 1, queries, keys) further limited to the sliding window, when some
    /// layer slides: a query at column q sees keys at columns k with q - window < k <= q.
    fn sliding_mask(&self, mask: &Tensor) -> Result<Option<Tensor>> {
        let window = match self.config.sliding_window {
            Some(window)
                if (0..self.config.num_hidden_layers)
                    .any(|layer| self.config.layer_attention(layer) == LayerAttention::Sliding) =>
            {
                window
            }
            _ => return Ok(None),
        };
        let (_, _, queries, keys) = mask.dims4()?;
        let offset = keys.checked_sub(queries).ok_or_else(|| {
            ModelError::Input(format!("a mask of {queries} queries over {keys} keys"))
        })?;
        let mut band = Vec::with_capacity(queries * keys);
        for query in 0..queries {
            let column = offset + query;
            for key in 0..keys {
                let outside = key <= column && column - key >= window;
                band.push(if outside { MASKED as f32 } else { 0.0 });
            }
        }
        let band =
            Tensor::from_vec(band, (1, 1, queries, keys), &self.device)?.to_dtype(mask.dtype())?;
        Ok(Some(mask.broadcast_add(&band)?))
    }

    /// Vocabulary logits for hidden states.
    pub fn project(&self, hidden: &Tensor) -> Result<Tensor> {
        Ok(match &self.lm_head {
            Some(head) => head.forward(hidden)?,
            None => Projection::from_weight(self.embedding.embeddings().clone()).forward(hidden)?,
        })
    }

    /// Logits (b, t, vocab); see `hidden` for the arguments.
    pub fn forward(
        &self,
        input_ids: &Tensor,
        positions: &Tensor,
        mask: &Tensor,
        cache: Option<&mut KvCache>,
    ) -> Result<Tensor> {
        let hidden = self.hidden(input_ids, positions, mask, cache)?;
        self.project(&hidden)
    }

    /// Logits of a padded batch, all positions at once.
    pub fn forward_batch(&self, batch: &PaddedBatch) -> Result<Tensor> {
        let (ids, positions, mask) = batch.tensors(self.dtype, &self.device)?;
        self.forward(&ids, &positions, &mask, None)
    }

    /// Hidden states of a padded batch, all positions at once.
    pub fn hidden_batch(&self, batch: &PaddedBatch) -> Result<Tensor> {
        let (ids, positions, mask) = batch.tensors(self.dtype, &self.device)?;
        self.hidden(&ids, &positions, &mask, None)
    }
}
