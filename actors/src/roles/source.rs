//! Where a role's model comes from: a fresh initialisation of a config, or a checkpoint.

use crate::config::ModelConfig;
use crate::error::Result;
use crate::model::Decoder;
use serde::{Deserialize, Serialize};
use std::path::PathBuf;

/// A model to build inside a role actor.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub enum ModelSource {
    /// Random initialisation, seeded.
    Fresh { config: Box<ModelConfig>, seed: u64 },
    /// A Hugging Face checkpoint directory on the actor's node.
    Checkpoint { dir: PathBuf },
}

impl ModelSource {
    /// A fresh initialisation of `config` from `seed`.
    pub fn fresh(config: ModelConfig, seed: u64) -> Self {
        ModelSource::Fresh {
            config: Box::new(config),
            seed,
        }
    }

    pub fn build(&self) -> Result<Decoder> {
        crate::alloc::keep_freed_memory();
        let device = crate::default_device()?;
        match self {
            ModelSource::Fresh { config, seed } => {
                Decoder::new(config, candle_core::DType::F32, &device, *seed)
            }
            ModelSource::Checkpoint { dir } => {
                crate::weights::load_pretrained(dir, candle_core::DType::F32, &device)
            }
        }
    }
}
