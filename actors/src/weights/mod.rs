//! Checkpoints in the Hugging Face layout: `config.json` plus `model.safetensors`, or several
//! `model-0000i-of-0000n.safetensors` shards with a `model.safetensors.index.json` weight map.
//! Saving is here; loading (memory-mapped, strict about names, shapes and dtypes) in `load`.

mod load;

pub use load::{load_pretrained, load_pretrained_with, read_tensors, tensor_shapes, LoadOptions};

use crate::error::{ModelError, Result};
use crate::model::Decoder;
use candle_core::Tensor;
use std::collections::{BTreeMap, HashMap};
use std::path::Path;

pub(crate) const SINGLE_FILE: &str = "model.safetensors";
pub(crate) const INDEX_FILE: &str = "model.safetensors.index.json";

/// Writes the weights (in the model's dtype; with `max_shard_bytes`, as shards plus an index)
/// and `config.json`. Weight files of an earlier save there that the new one does not rewrite
/// (`model.safetensors`, the index, `model-NNNNN-of-NNNNN.safetensors` shards) are removed, so
/// stale weights never shadow new ones; `config.json` is written last.
pub fn save_pretrained(model: &Decoder, dir: &Path, max_shard_bytes: Option<usize>) -> Result<()> {
    std::fs::create_dir_all(dir)
        .map_err(|err| ModelError::io(format!("creating {}", dir.display()), err))?;
    let tensors = model.named_tensors();
    let written = match max_shard_bytes {
        None => {
            let map: HashMap<String, Tensor> = tensors.into_iter().collect();
            candle_core::safetensors::save(&map, dir.join(SINGLE_FILE))?;
            vec![SINGLE_FILE.to_string()]
        }
        Some(limit) => save_shards(tensors, dir, limit)?,
    };
    remove_stale_weights(dir, &written)?;
    model
        .config()
        .to_file(&dir.join("config.json"), model.dtype())
}

/// Writes `tensors` as shards of at most `limit` bytes (a tensor larger than that alone) and the
/// index; returns the names of the files written.
fn save_shards(tensors: Vec<(String, Tensor)>, dir: &Path, limit: usize) -> Result<Vec<String>> {
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
    let mut written = Vec::with_capacity(count + 1);
    for (index, shard) in shards.into_iter().enumerate() {
        let file = format!("model-{:05}-of-{count:05}.safetensors", index + 1);
        let mut map = HashMap::new();
        for (name, tensor) in shard {
            total += tensor.elem_count() * tensor.dtype().size_in_bytes();
            weight_map.insert(name.clone(), file.clone());
            map.insert(name, tensor);
        }
        candle_core::safetensors::save(&map, dir.join(&file))?;
        written.push(file);
    }
    let index =
        serde_json::json!({ "metadata": { "total_size": total }, "weight_map": weight_map });
    let text = serde_json::to_string_pretty(&index)
        .map_err(|err| ModelError::Checkpoint(err.to_string()))?;
    std::fs::write(dir.join(INDEX_FILE), text)
        .map_err(|err| ModelError::io("writing the shard index", err))?;
    written.push(INDEX_FILE.to_string());
    Ok(written)
}

/// Whether `name` is a shard as `save_pretrained` (and transformers) names them:
/// `model-00001-of-00003.safetensors`.
fn is_shard_name(name: &str) -> bool {
    let Some(middle) = name
        .strip_prefix("model-")
        .and_then(|rest| rest.strip_suffix(".safetensors"))
    else {
        return false;
    };
    let digits = |part: &str| part.len() == 5 && part.bytes().all(|b| b.is_ascii_digit());
    matches!(middle.split_once("-of-"), Some((index, count)) if digits(index) && digits(count))
}

/// Removes weight files of an earlier save that `written` does not include.
fn remove_stale_weights(dir: &Path, written: &[String]) -> Result<()> {
    let entries = std::fs::read_dir(dir)
        .map_err(|err| ModelError::io(format!("listing {}", dir.display()), err))?;
    for entry in entries {
        let entry =
            entry.map_err(|err| ModelError::io(format!("listing {}", dir.display()), err))?;
        let name = entry.file_name().to_string_lossy().into_owned();
        let weights = name == SINGLE_FILE || name == INDEX_FILE || is_shard_name(&name);
        if weights && !written.contains(&name) {
            std::fs::remove_file(entry.path()).map_err(|err| {
                ModelError::io(format!("removing {}", entry.path().display()), err)
            })?;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_shard_names_count_as_shards() {
        assert!(is_shard_name("model-00001-of-00003.safetensors"));
        for other in [
            "model-final.safetensors",
            "model-lora.safetensors",
            "model-1-of-3.safetensors",
            "model-00001-of-00003.safetensors.bak",
            "model.safetensors",
        ] {
            assert!(!is_shard_name(other), "{other}");
        }
    }
}
