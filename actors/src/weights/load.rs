//! Loading a checkpoint: the config read strictly, every tensor header checked against the
//! parameters that config implies (names, shapes, dtypes, one file per tensor) before any
//! weight is read, then the weights memory-mapped and converted one tensor at a time to the
//! dtype asked for, each tensor's file pages released once copied, so the peak is about the
//! model in its run dtype plus one tensor. A tied model's stored head is kept only when it differs
//! from the embedding (as transformers does).

use super::{INDEX_FILE, SINGLE_FILE};
use crate::config::{ModelConfig, Strictness};
use crate::error::{ModelError, Result};
use crate::model::Decoder;
use candle_core::safetensors::{Load, MmapedSafetensors};
use candle_core::{DType, Device, Tensor, Var};
use candle_nn::VarMap;
use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};

/// How to load a checkpoint.
#[derive(Debug, Clone, Copy)]
pub struct LoadOptions {
    /// The dtype the model runs in: F32 or BF16 (F64 for tests). Checkpoints may hold F32, F16
    /// or BF16 tensors whatever this is.
    pub dtype: DType,
    /// Whether unknown config fields and tensors are refused (the default) or only logged.
    pub strictness: Strictness,
}

impl Default for LoadOptions {
    fn default() -> Self {
        LoadOptions {
            dtype: DType::F32,
            strictness: Strictness::Strict,
        }
    }
}

/// Loads a decoder from a checkpoint directory, strictly, to run in `dtype`.
pub fn load_pretrained(dir: &Path, dtype: DType, device: &Device) -> Result<Decoder> {
    load_pretrained_with(
        dir,
        &LoadOptions {
            dtype,
            ..LoadOptions::default()
        },
        device,
    )
}

/// Buffers that are not parameters and that transformers recomputes.
fn is_buffer(name: &str) -> bool {
    name.ends_with("rotary_emb.inv_freq")
}

fn stored_dtype_ok(dtype: DType) -> bool {
    matches!(dtype, DType::F32 | DType::F16 | DType::BF16 | DType::F64)
}

/// Loads a decoder from a checkpoint directory with `options`.
pub fn load_pretrained_with(dir: &Path, options: &LoadOptions, device: &Device) -> Result<Decoder> {
    if !matches!(options.dtype, DType::F32 | DType::BF16 | DType::F64) {
        return Err(ModelError::Input(format!(
            "the model runs in f32 or bf16, not {:?}",
            options.dtype
        )));
    }
    let mut config = ModelConfig::from_file_with(&dir.join("config.json"), options.strictness)?;
    let files = open_files(dir)?;
    let plan = plan_load(&config, &files, options.strictness)?;
    let varmap = VarMap::new();
    {
        let mut vars = varmap
            .data()
            .lock()
            .map_err(|_| ModelError::Checkpoint("the parameter map lock is poisoned".into()))?;
        for (index, (path, mapped)) in files.into_iter().enumerate() {
            for name in plan.get(&index).into_iter().flatten() {
                let view = mapped
                    .get(name)
                    .map_err(|err| ModelError::Checkpoint(format!("{}: {err}", path.display())))?;
                let stored = DType::try_from(view.dtype())?;
                let direct = device
                    .is_cpu()
                    .then(|| cpu_variable(view.data(), stored, view.shape(), options.dtype))
                    .flatten();
                let var = match direct {
                    Some(var) => var,
                    None => view
                        .load(device)
                        .and_then(|t| t.to_dtype(options.dtype))
                        .and_then(|t| Var::from_tensor(&t)),
                }
                .map_err(|err| {
                    ModelError::Checkpoint(format!("{}: tensor `{name}`: {err}", path.display()))
                })?;
                release_pages(view.data());
                vars.insert(name.clone(), var);
            }
            // The file's mapping goes here, before the next file is mapped.
            drop(mapped);
        }
    }
    untie_a_different_head(&mut config, &varmap)?;
    Decoder::assemble(&config, varmap, options.dtype, device)
}

/// A tied config whose checkpoint also stores `lm_head.weight`: transformers ties the two only
/// when the stored head equals the embedding, and otherwise keeps the stored head. The same here:
/// an equal head is dropped, a different one unties the model.
fn untie_a_different_head(config: &mut ModelConfig, varmap: &VarMap) -> Result<()> {
    const HEAD: &str = "lm_head.weight";
    const EMBEDDING: &str = "model.embed_tokens.weight";
    if !config.tie_word_embeddings {
        return Ok(());
    }
    let mut vars = varmap
        .data()
        .lock()
        .map_err(|_| ModelError::Checkpoint("the parameter map lock is poisoned".into()))?;
    let (Some(head), Some(embedding)) = (vars.get(HEAD), vars.get(EMBEDDING)) else {
        return Ok(());
    };
    // Compared a block of rows at a time, so the comparison costs no copy of the whole matrix.
    let (head, embedding) = (head.as_tensor(), embedding.as_tensor());
    let rows = head.dim(0)?;
    let block = ((1 << 22) / head.dim(1)?.max(1)).max(1);
    let mut differs = false;
    let mut start = 0;
    while start < rows && !differs {
        let count = block.min(rows - start);
        differs = head
            .narrow(0, start, count)?
            .ne(&embedding.narrow(0, start, count)?)?
            .to_dtype(DType::F32)?
            .sum_all()?
            .to_scalar::<f32>()?
            > 0.0;
        start += count;
    }
    if differs {
        tracing::warn!(
            "tie_word_embeddings is true but the stored {HEAD} differs from {EMBEDDING}: \
             keeping the stored head untied, as transformers does"
        );
        config.tie_word_embeddings = false;
    } else {
        vars.remove(HEAD);
    }
    Ok(())
}

/// A stored tensor (its little-endian `bytes`, stored as `stored`) as a new CPU variable in
/// `dtype`: one copy out of the mapping, converted on the way as candle converts (bf16 and f16
/// widened exactly, f32 narrowed to bf16 with round-to-nearest-even), and no second copy to
/// make it a variable. None for combinations it does not handle.
fn cpu_variable(
    bytes: &[u8],
    stored: DType,
    shape: &[usize],
    dtype: DType,
) -> Option<candle_core::Result<Var>> {
    use half::{bf16, f16};
    let cpu = &Device::Cpu;
    let words = |width: usize| bytes.chunks_exact(width);
    let half_bits = |b: &[u8]| u16::from_le_bytes([b[0], b[1]]);
    if stored == DType::BF16 && dtype == DType::BF16 {
        let same: Vec<bf16> = words(2).map(|b| bf16::from_bits(half_bits(b))).collect();
        return Some(Var::from_vec(same, shape, cpu));
    }
    let widened: Vec<f32> = match stored {
        DType::F32 => words(4)
            .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
            .collect(),
        DType::F16 => words(2)
            .map(|b| f16::from_bits(half_bits(b)).to_f32())
            .collect(),
        DType::BF16 => words(2)
            .map(|b| bf16::from_bits(half_bits(b)).to_f32())
            .collect(),
        _ => return None,
    };
    Some(match dtype {
        DType::F32 => Var::from_vec(widened, shape, cpu),
        DType::BF16 => {
            let narrowed: Vec<bf16> = widened.into_iter().map(bf16::from_f32).collect();
            Var::from_vec(narrowed, shape, cpu)
        }
        _ => return None,
    })
}

/// Checks every tensor header against the config and says which names to read from which file.
fn plan_load(
    config: &ModelConfig,
    files: &[(PathBuf, MmapedSafetensors)],
    strictness: Strictness,
) -> Result<BTreeMap<usize, Vec<String>>> {
    let expected: HashMap<String, Vec<usize>> = config.parameter_shapes().into_iter().collect();
    let mut found: HashMap<String, PathBuf> = HashMap::new();
    let mut plan: BTreeMap<usize, Vec<String>> = BTreeMap::new();
    for (index, (path, mapped)) in files.iter().enumerate() {
        for (name, view) in mapped.tensors() {
            if let Some(first) = found.get(&name) {
                return Err(ModelError::Checkpoint(format!(
                    "tensor `{name}` is stored twice, in {} and {}",
                    first.display(),
                    path.display()
                )));
            }
            found.insert(name.clone(), path.clone());
            if is_buffer(&name) {
                continue;
            }
            let dtype = DType::try_from(view.dtype()).ok();
            // A tied model may store its head too; it is read and compared with the embedding.
            let stored_head = [config.vocab_size, config.hidden_size];
            let tied_head = (config.tie_word_embeddings && name == "lm_head.weight")
                .then_some(stored_head.as_slice());
            let Some(shape) = expected.get(&name).map(Vec::as_slice).or(tied_head) else {
                let why = format!(
                    "tensor `{name}` ({:?}, shape {:?}) in {} is not a parameter of this model \
                     ({})",
                    view.dtype(),
                    view.shape(),
                    path.display(),
                    config.shape_summary()
                );
                match strictness {
                    Strictness::Strict => return Err(ModelError::Checkpoint(why)),
                    Strictness::WarnUnknown => {
                        tracing::warn!("{why}; skipped");
                        continue;
                    }
                }
            };
            if !dtype.is_some_and(stored_dtype_ok) {
                return Err(ModelError::Checkpoint(format!(
                    "tensor `{name}` is stored as {:?}; only F32, F16 and BF16 (and F64) load",
                    view.dtype()
                )));
            }
            if view.shape() != shape {
                return Err(ModelError::Checkpoint(format!(
                    "tensor `{name}` has shape {:?} but the config ({}) gives {shape:?}",
                    view.shape(),
                    config.shape_summary()
                )));
            }
            plan.entry(index).or_default().push(name);
        }
    }
    let mut missing: Vec<&String> = expected
        .keys()
        .filter(|n| !found.contains_key(*n))
        .collect();
    missing.sort();
    if let Some(first) = missing.first() {
        return Err(ModelError::Checkpoint(format!(
            "tensor `{first}` is missing{} (the config: {})",
            if missing.len() > 1 {
                format!(", and {} more", missing.len() - 1)
            } else {
                String::new()
            },
            config.shape_summary()
        )));
    }
    Ok(plan)
}

/// Every tensor's name and shape in the checkpoint at `dir`, from the file headers alone.
pub fn tensor_shapes(dir: &Path) -> Result<BTreeMap<String, Vec<usize>>> {
    let mut shapes = BTreeMap::new();
    for (_, mapped) in open_files(dir)? {
        for (name, view) in mapped.tensors() {
            shapes.insert(name, view.shape().to_vec());
        }
    }
    Ok(shapes)
}

/// The checkpoint's safetensors files, each memory-mapped (headers parsed, nothing read yet):
/// `model.safetensors`, else the shards of the index, every tensor of which must be in the file
/// it names.
fn open_files(dir: &Path) -> Result<Vec<(PathBuf, MmapedSafetensors)>> {
    // transformers prefers the single file when both are there; so does this.
    let (names, weight_map) = if dir.join(SINGLE_FILE).is_file() {
        (vec![SINGLE_FILE.to_string()], None)
    } else if dir.join(INDEX_FILE).is_file() {
        let text = std::fs::read_to_string(dir.join(INDEX_FILE))
            .map_err(|err| ModelError::io("reading the shard index", err))?;
        let index: serde_json::Value = serde_json::from_str(&text)
            .map_err(|err| ModelError::Checkpoint(format!("{INDEX_FILE}: {err}")))?;
        let map = index["weight_map"]
            .as_object()
            .ok_or_else(|| ModelError::Checkpoint(format!("{INDEX_FILE} has no weight_map")))?;
        let mut weight_map = HashMap::new();
        for (tensor, file) in map {
            let file = file.as_str().ok_or_else(|| {
                ModelError::Checkpoint(format!("{INDEX_FILE}: `{tensor}` maps to {file}"))
            })?;
            if file.contains('/') || file.contains("..") || file.contains('\\') {
                return Err(ModelError::Checkpoint(format!(
                    "shard name `{file}` leaves the checkpoint directory"
                )));
            }
            weight_map.insert(tensor.clone(), file.to_string());
        }
        let mut names: Vec<String> = weight_map.values().cloned().collect();
        names.sort();
        names.dedup();
        (names, Some(weight_map))
    } else {
        return Err(ModelError::Checkpoint(format!(
            "{} has neither {SINGLE_FILE} nor {INDEX_FILE}",
            dir.display()
        )));
    };
    let mut files = Vec::with_capacity(names.len());
    for name in names {
        let path = dir.join(&name);
        // SAFETY: the file is mapped read-only and only read while mapped; a checkpoint
        // rewritten underneath a running load is the caller's to avoid (as for every loader
        // that maps weights: candle, safetensors, transformers).
        let mapped = unsafe { MmapedSafetensors::new(&path) }
            .map_err(|err| ModelError::Checkpoint(format!("{}: {err}", path.display())))?;
        if let Some(weight_map) = &weight_map {
            let held: std::collections::HashSet<String> =
                mapped.tensors().into_iter().map(|(n, _)| n).collect();
            if let Some((tensor, _)) = weight_map
                .iter()
                .find(|(tensor, file)| **file == name && !held.contains(*tensor))
            {
                return Err(ModelError::Checkpoint(format!(
                    "{INDEX_FILE} puts `{tensor}` in {name}, which does not hold it"
                )));
            }
        }
        files.push((path, mapped));
    }
    Ok(files)
}

/// Drops the pages of a copied tensor from this process's resident set: they are clean pages of
/// a read-only file mapping, so the kernel re-reads them if they are ever touched again.
fn release_pages(bytes: &[u8]) {
    #[cfg(target_os = "linux")]
    {
        // SAFETY: sysconf has no preconditions.
        let page = unsafe { libc::sysconf(libc::_SC_PAGESIZE) }.max(1) as usize;
        let start = (bytes.as_ptr() as usize).div_ceil(page) * page;
        let end = (bytes.as_ptr() as usize + bytes.len()) / page * page;
        if end > start {
            // SAFETY: [start, end) lies inside `bytes`, which is part of a live read-only file
            // mapping; MADV_DONTNEED on such a mapping only drops clean pages, and any later
            // read faults them back in from the file with the same contents.
            unsafe {
                libc::madvise(start as *mut libc::c_void, end - start, libc::MADV_DONTNEED);
            }
        }
    }
    #[cfg(not(target_os = "linux"))]
    let _ = bytes;
}

/// Reads every tensor of a checkpoint directory (single file or sharded) in its stored dtype,
/// skipping buffers that are not parameters (`rotary_emb.inv_freq`).
pub fn read_tensors(dir: &Path, device: &Device) -> Result<Vec<(String, Tensor)>> {
    let mut tensors = Vec::new();
    for (path, mapped) in open_files(dir)? {
        for (name, view) in mapped.tensors() {
            if is_buffer(&name) {
                continue;
            }
            let tensor = view
                .load(device)
                .map_err(|err| ModelError::Checkpoint(format!("{}: {err}", path.display())))?;
            tensors.push((name, tensor));
        }
    }
    tensors.sort_by(|a, b| a.0.cmp(&b.0));
    Ok(tensors)
}
