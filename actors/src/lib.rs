//! troupe-actors: the model the recipes train and the RL roles built on it.
//!
//! - `model`: a Llama/Qwen2-family decoder in candle, with differentiable ops only;
//! - `weights`, `config`, `tokenizer`: the Hugging Face layout (safetensors, config.json,
//!   tokenizer.json) and a built-in tokenizer for synthetic tasks;
//! - `generate`: batched sampling with a KV cache and per-token log-probabilities;
//! - `engines`: vLLM as a rollout engine, in a child process the rollout supervises;
//! - `train`: losses, advantage and KL estimators, AdamW and schedules;
//! - `roles`: rollout, reference, reward, trainer and critic as troupe actors;
//! - `tasks`: synthetic problems the recipes learn (three-digit addition), with held-out splits;
//! - `recipes`: the GRPO and PPO recipes the examples run, and their progress, metrics and plots.

pub mod alloc;
pub mod config;
pub mod engines;
pub mod error;
pub mod generate;
pub mod model;
pub mod recipes;
pub mod roles;
pub mod tasks;
pub mod tokenizer;
pub mod train;
pub mod weights;

pub use config::ModelConfig;
pub use error::{ModelError, Result};
pub use model::{Decoder, KvCache, PaddedBatch};

/// The device the `cuda` feature selects (the first GPU), or the CPU.
pub fn default_device() -> Result<candle_core::Device> {
    #[cfg(feature = "cuda")]
    {
        Ok(candle_core::Device::new_cuda(0)?)
    }
    #[cfg(not(feature = "cuda"))]
    {
        Ok(candle_core::Device::Cpu)
    }
}

#[doc(hidden)]
pub use inventory::submit as inventory_submit;
