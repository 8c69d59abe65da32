//! The policy as the engine reads it: a Hugging Face checkpoint (`config.json`,
//! `model.safetensors`) in a directory in shared memory, written at start and rewritten in place
//! for every weight update. Tied embeddings are exported untied (`lm_head.weight` is a copy of the
//! embedding and `tie_word_embeddings` is false): vLLM's CPU build keeps its own packed copy of
//! the output layer, which an in-place reload of a tied embedding leaves stale.

use crate::error::{ModelError, Result};
use crate::model::Decoder;
use candle_core::Tensor;
use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};

const EMBEDDING: &str = "model.embed_tokens.weight";
pub(super) const OUTPUT_HEAD: &str = "lm_head.weight";
const WEIGHTS_FILE: &str = "model.safetensors";

/// Where an engine's checkpoint lives: shared memory when the machine has it, so weights move
/// from the actor to the engine without touching a disk.
pub fn checkpoint_dir(tag: &str) -> PathBuf {
    let shm = Path::new("/dev/shm");
    let base = if shm.is_dir() {
        shm.to_path_buf()
    } else {
        std::env::temp_dir()
    };
    base.join(format!("troupe-vllm-{}-{tag}", std::process::id()))
}

/// The tensors the engine loads: the model's, plus an untied output head when it is tied.
fn engine_tensors(model: &Decoder) -> Result<HashMap<String, Tensor>> {
    let mut tensors: HashMap<String, Tensor> = model.named_tensors().into_iter().collect();
    if model.config().tie_word_embeddings {
        let embedding = tensors
            .get(EMBEDDING)
            .cloned()
            .ok_or_else(|| ModelError::Checkpoint(format!("a tied model without `{EMBEDDING}`")))?;
        tensors.insert(OUTPUT_HEAD.to_string(), embedding);
    }
    Ok(tensors)
}

/// The names and shapes of what `write_weights` writes for `model`.
pub fn engine_shapes(model: &Decoder) -> Result<BTreeMap<String, Vec<usize>>> {
    Ok(engine_tensors(model)?
        .into_iter()
        .map(|(name, tensor)| (name, tensor.dims().to_vec()))
        .collect())
}

/// Where `offered` (weights for the engine) differs from `held` (what the engine holds): the
/// first few differences in words, or None when names and shapes all match.
pub fn shape_mismatch(
    held: &BTreeMap<String, Vec<usize>>,
    offered: &BTreeMap<String, Vec<usize>>,
) -> Option<String> {
    let mut differences = Vec::new();
    for (name, shape) in offered {
        match held.get(name) {
            None => differences.push(format!("`{name}` is not one of the engine's weights")),
            Some(held) if held != shape => {
                differences.push(format!("`{name}` is {shape:?}, the engine's is {held:?}"))
            }
            Some(_) => {}
        }
    }
    for name in held.keys().filter(|name| !offered.contains_key(*name)) {
        differences.push(format!("`{name}` is missing"));
    }
    if differences.is_empty() {
        return None;
    }
    let count = differences.len();
    differences.truncate(3);
    Some(format!(
        "{count} weight(s) do not match the engine's: {}",
        differences.join("; ")
    ))
}

/// Writes the whole checkpoint (config and weights) into `dir`.
pub fn write_checkpoint(model: &Decoder, dir: &Path) -> Result<()> {
    std::fs::create_dir_all(dir)
        .map_err(|err| ModelError::io(format!("creating {}", dir.display()), err))?;
    write_weights(model, dir)?;
    let mut config = model.config().clone();
    config.tie_word_embeddings = false;
    config.to_file(&dir.join("config.json"), model.dtype())
}

/// Rewrites only the weights in `dir` (what an update reloads). Returns the bytes written.
pub fn write_weights(model: &Decoder, dir: &Path) -> Result<u64> {
    let tensors = engine_tensors(model)?;
    let bytes = tensors
        .values()
        .map(|t| (t.elem_count() * t.dtype().size_in_bytes()) as u64)
        .sum();
    // Written beside, then renamed: the engine never reads a half-written file.
    let partial = dir.join(format!("{WEIGHTS_FILE}.partial"));
    candle_core::safetensors::save(&tensors, &partial)?;
    std::fs::rename(&partial, dir.join(WEIGHTS_FILE))
        .map_err(|err| ModelError::io(format!("renaming {}", partial.display()), err))?;
    Ok(bytes)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mismatched_names_and_shapes_are_named() {
        let held: BTreeMap<String, Vec<usize>> =
            [("a".to_string(), vec![2, 3]), ("b".to_string(), vec![4])].into();
        assert_eq!(shape_mismatch(&held, &held), None);
        let offered: BTreeMap<String, Vec<usize>> =
            [("a".to_string(), vec![3, 2]), ("c".to_string(), vec![4])].into();
        let why = shape_mismatch(&held, &offered).unwrap();
        for part in [
            "3 weight(s)",
            "`a` is [3, 2], the engine's is [2, 3]",
            "`c` is not",
            "`b` is missing",
        ] {
            assert!(why.contains(part), "`{part}` missing: {why}");
        }
    }

    #[test]
    fn a_tied_model_is_written_untied_and_loads_back_the_same() {
        let config = crate::ModelConfig::tiny(25, 16, 1, 2, 2);
        assert!(config.tie_word_embeddings);
        let model = Decoder::new(
            &config,
            candle_core::DType::F32,
            &candle_core::Device::Cpu,
            3,
        )
        .unwrap();
        let dir = checkpoint_dir("export-test");
        write_checkpoint(&model, &dir).unwrap();
        let loaded = crate::weights::read_tensors(&dir, &candle_core::Device::Cpu).unwrap();
        let by_name: HashMap<_, _> = loaded.into_iter().collect();
        let head = by_name[OUTPUT_HEAD]
            .flatten_all()
            .unwrap()
            .to_vec1::<f32>()
            .unwrap();
        let embedding = by_name[EMBEDDING]
            .flatten_all()
            .unwrap()
            .to_vec1::<f32>()
            .unwrap();
        assert_eq!(head, embedding);
        let written = crate::ModelConfig::from_file(&dir.join("config.json")).unwrap();
        assert!(!written.tie_word_embeddings);
        assert!(!dir.join("model.safetensors.partial").exists());
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
