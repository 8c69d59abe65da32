//! Checkpoints in the Hugging Face layout: `config.json` plus `model.safetensors`, or several
//! `model-0000i-of-0000n.safetensors` shards with a `model.safetensors.index.json` weight map.
//! Saving is here; loading (memory-mapped, strict about names, shapes and dtypes) in `load`.

mod load;

pub use load::{load_pretrained, load_pretrained_with, read_tensors, LoadOptions};

use crate::error::{ModelError, Result};
use crate::model::Decoder;
use candle_core::Tensor;
use std::collections::{BTreeMap, HashMap};
use std::path::Path;

pub(crate) const SINGLE_FILE: &str = "model.safetensors";
pub(crate) const INDEX_FILE: &str = "model.safetensors.index.json";

/// Writes `config.json` and the weights (in the model's dtype); with `max_shard_bytes`, as
/// shards plus an index.
pub fn save_pretrained(model: &Decoder, dir: &Path, max_shard_bytes: Option<usize>) -> Result<()> {
    std::fs::create_dir_all(dir)
        .map_err(|err| ModelError::io(format!("creating {}", dir.display()), err))?;
    model
        .config()
        .to_file(&dir.join("config.json"), model.dtype())?;
    remove_previous_weights(dir)?;
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

/// Removes the weight files of an earlier save into `dir` (a single file, or an index and its
/// shards), so that a new save in the other layout is not shadowed by stale weights.
fn remove_previous_weights(dir: &Path) -> Result<()> {
    let entries = std::fs::read_dir(dir)
        .map_err(|err| ModelError::io(format!("listing {}", dir.display()), err))?;
    for entry in entries {
        let entry =
            entry.map_err(|err| ModelError::io(format!("listing {}", dir.display()), err))?;
        let name = entry.file_name().to_string_lossy().into_owned();
        let is_shard = name.starts_with("model-") && name.ends_with(".safetensors");
        if name == SINGLE_FILE || name == INDEX_FILE || is_shard {
            std::fs::remove_file(entry.path()).map_err(|err| {
                ModelError::io(format!("removing {}", entry.path().display()), err)
            })?;
        }
    }
    Ok(())
}
