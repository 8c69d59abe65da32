//! Checkpoints in the Hugging Face layout: `config.json` plus `model.safetensors`, or several
//! `model-0000i-of-0000n.safetensors` shards with a `model.safetensors.index.json` weight map.

use crate::config::ModelConfig;
use crate::error::{ModelError, Result};
use crate::model::Decoder;
use candle_core::{DType, Device, Tensor};
use std::collections::{BTreeMap, HashMap};
use std::path::Path;

const SINGLE_FILE: &str = "model.safetensors";
const INDEX_FILE: &str = "model.safetensors.index.json";

/// Writes `config.json` and the weights; with `max_shard_bytes`, as shards plus an index.
pub fn save_pretrained(model: &Decoder, dir: &Path, max_shard_bytes: Option<usize>) -> Result<()> {
    std::fs::create_dir_all(dir)
        .map_err(|err| ModelError::io(format!("creating {}", dir.display()), err))?;
    model.config().to_file(&dir.join("config.json"))?;
    let tensors = model.named_tensors();
    let Some(limit) = max_shard_bytes else {
        let map: HashMap<String, Tensor> = tensors.into_iter().collect();
        candle_core::safetensors::save(&map, dir.join(SINGLE_FILE))?;
        return Ok(());
    };
    let mut shards: Vec<Vec<(String, Tensor)>> = vec![Vec::new()];
    let mut current = 0_usize;
    for (name, tensor) in tensors {
        let size = tensor.elem_count() * tensor.dtype().size_in_bytes();
        if current > 0 && current + size > limit {
            shards.push(Vec::new());
            current = 0;
        }
        current += size;
        if let Some(shard) = shards.last_mut() {
            shard.push((name, tensor));
        }
    }
    let count = shards.len();
    let mut weight_map = BTreeMap::new();
    let mut total = 0_usize;
    for (index, shard) in shards.into_iter().enumerate() {
        let file = format!("model-{:05}-of-{count:05}.safetensors", index + 1);
        let mut map = HashMap::new();
        for (name, tensor) in shard {
            total += tensor.elem_count() * tensor.dtype().size_in_bytes();
            weight_map.insert(name.clone(), file.clone());
            map.insert(name, tensor);
        }
        candle_core::safetensors::save(&map, dir.join(&file))?;
    }
    let index =
        serde_json::json!({ "metadata": { "total_size": total }, "weight_map": weight_map });
    let text = serde_json::to_string_pretty(&index)
        .map_err(|err| ModelError::Checkpoint(err.to_string()))?;
    std::fs::write(dir.join(INDEX_FILE), text)
        .map_err(|err| ModelError::io("writing the shard index", err))
}

/// Reads every tensor of a checkpoint directory (single file or sharded), skipping buffers that
/// are not parameters (`rotary_emb.inv_freq`).
pub fn read_tensors(dir: &Path, device: &Device) -> Result<Vec<(String, Tensor)>> {
    let files: Vec<String> = if dir.join(INDEX_FILE).is_file() {
        let text = std::fs::read_to_string(dir.join(INDEX_FILE))
            .map_err(|err| ModelError::io("reading the shard index", err))?;
        let index: serde_json::Value = serde_json::from_str(&text)
            .map_err(|err| ModelError::Checkpoint(format!("{INDEX_FILE}: {err}")))?;
        let map = index["weight_map"]
            .as_object()
            .ok_or_else(|| ModelError::Checkpoint(format!("{INDEX_FILE} has no weight_map")))?;
        let mut files: Vec<String> = map
            .values()
            .filter_map(|file| file.as_str().map(str::to_string))
            .collect();
        files.sort();
        files.dedup();
        if let Some(bad) = files
            .iter()
            .find(|file| file.contains('/') || file.contains(".."))
        {
            return Err(ModelError::Checkpoint(format!(
                "shard name `{bad}` leaves the checkpoint directory"
            )));
        }
        files
    } else if dir.join(SINGLE_FILE).is_file() {
        vec![SINGLE_FILE.to_string()]
    } else {
        return Err(ModelError::Checkpoint(format!(
            "{} has neither {SINGLE_FILE} nor {INDEX_FILE}",
            dir.display()
        )));
    };
    let mut tensors = Vec::new();
    for file in files {
        let path = dir.join(&file);
        let loaded = candle_core::safetensors::load(&path, device)
            .map_err(|err| ModelError::Checkpoint(format!("{}: {err}", path.display())))?;
        tensors.extend(
            loaded
                .into_iter()
                .filter(|(name, _)| !name.ends_with("rotary_emb.inv_freq")),
        );
    }
    tensors.sort_by(|a, b| a.0.cmp(&b.0));
    Ok(tensors)
}

/// Loads a decoder from a checkpoint directory. A tied model ignores a stored `lm_head.weight`.
pub fn load_pretrained(dir: &Path, dtype: DType, device: &Device) -> Result<Decoder> {
    let config = ModelConfig::from_file(&dir.join("config.json"))?;
    let model = Decoder::new(&config, dtype, device, 0)?;
    let mut tensors = read_tensors(dir, device)?;
    if config.tie_word_embeddings {
        tensors.retain(|(name, _)| name != "lm_head.weight");
    }
    model.load_tensors(&tensors, false)?;
    Ok(model)
}
