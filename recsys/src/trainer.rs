//! The online trainer: takes mini-batches of events as they arrive, looks up their rows in the
//! shards, scores each event with the model as it stands (those scores are the progressive,
//! test-then-train evaluation), and takes one step on the batch: Adam on the dense parameters
//! here, Adagrad on the rows at their shards. Between steps it seals the shards and keeps the
//! dense parameters of the seal, which is what serving replicas copy (and, with a directory,
//! saves them, so a restarted trainer goes on from its last seal). `Trainer` is the logic
//! (also run in-process for the batch baseline); `OnlineTrainer` is the actor.

use crate::error::RecsysError;
use crate::layout::ShardLayout;
use crate::model::{Adam, DenseParams, Example, ModelShape, Rows};
use crate::shard::{EmbeddingShardHandle, SealSummary};
use crate::store::Store;
use crate::table::write_atomically;
use rustc_hash::FxHashMap;
use std::collections::VecDeque;
use std::path::{Path, PathBuf};

/// How the dense model is shaped and trained.
#[derive(Clone, Debug, serde::Serialize, serde::Deserialize)]
pub struct TrainerConfig {
    pub shape: ModelShape,
    pub dense_learning_rate: f32,
    pub seed: u64,
    /// Dense snapshots kept for replicas that sync a little late.
    pub retained_seals: usize,
    /// Where the dense parameters and their optimizer state are saved with every seal, and
    /// loaded from when the trainer starts (`None`: memory only).
    #[serde(default)]
    pub dir: Option<PathBuf>,
}

/// What a trainer saves with each seal.
#[derive(serde::Serialize, serde::Deserialize)]
struct SavedDense {
    step: u64,
    params: DenseParams,
    adam: Adam,
}

fn saved_path(dir: &Path) -> PathBuf {
    dir.join("trainer.bin")
}

/// The trainer's saved state in `dir`, if there is one; refused if it is not this model's.
fn load_saved(dir: &Path, shape: ModelShape) -> Result<Option<SavedDense>, RecsysError> {
    let path = saved_path(dir);
    let bytes = match std::fs::read(&path) {
        Ok(bytes) => bytes,
        Err(err) if err.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(source) => {
            return Err(RecsysError::Io {
                what: "trainer state",
                path: path.display().to_string(),
                source,
            })
        }
    };
    let corrupt = |why: String| RecsysError::Corrupt {
        what: "trainer state",
        path: path.display().to_string(),
        why,
    };
    let saved: SavedDense =
        troupe::codec::decode(&bytes).map_err(|err| corrupt(err.to_string()))?;
    if saved.params.shape != shape || saved.params.values.len() != shape.parameter_count() {
        return Err(corrupt(format!(
            "saved for a model of shape {:?}, this trainer's is {shape:?}",
            saved.params.shape
        )));
    }
    Ok(Some(saved))
}

/// What one step did.
#[derive(Clone, Debug, serde::Serialize, serde::Deserialize)]
pub struct StepReport {
    pub step: u64,
    pub loss: f32,
    /// Each event's score before the step (the progressive evaluation).
    pub predictions: Vec<f32>,
    pub distinct_ids: usize,
}

/// What a seal froze: the version and each shard's part.
#[derive(Clone, Debug, serde::Serialize, serde::Deserialize)]
pub struct SealReport {
    pub version: u64,
    pub shards: Vec<SealSummary>,
}

pub struct Trainer {
    config: TrainerConfig,
    store: Store,
    params: DenseParams,
    adam: Adam,
    step: u64,
    sealed: VecDeque<(u64, DenseParams)>,
    last_seal: Option<SealReport>,
}

impl Trainer {
    /// A fresh model over `store`, starting after the newest step any shard has applied (so a
    /// restarted trainer never re-uses a step the shards would take for a duplicate).
    pub async fn new(config: TrainerConfig, store: Store) -> Result<Trainer, RecsysError> {
        let step = store
            .stats()
            .await?
            .iter()
            .map(|stats| stats.version)
            .max()
            .unwrap_or(0);
        let saved = match &config.dir {
            Some(dir) => load_saved(dir, config.shape)?,
            None => None,
        };
        let (params, adam, step) = match saved {
            Some(saved) => {
                tracing::info!(
                    saved_step = saved.step,
                    shards_step = step,
                    "trainer state loaded"
                );
                (saved.params, saved.adam, step.max(saved.step))
            }
            None => {
                let params = DenseParams::init(config.shape, config.seed);
                let adam = Adam::new(config.dense_learning_rate, params.values.len());
                (params, adam, step)
            }
        };
        Ok(Trainer {
            config,
            store,
            params,
            adam,
            step,
            sealed: VecDeque::new(),
            last_seal: None,
        })
    }

    pub fn step(&self) -> u64 {
        self.step
    }

    pub fn store(&self) -> &Store {
        &self.store
    }

    pub fn set_store(&mut self, store: Store) {
        self.store = store;
    }

    fn check(&self, examples: &[Example]) -> Result<(), RecsysError> {
        for (index, example) in examples.iter().enumerate() {
            if example.fields.len() != self.config.shape.fields {
                return Err(RecsysError::BadBatch(format!(
                    "example {index} has {} fields; the model takes {}",
                    example.fields.len(),
                    self.config.shape.fields
                )));
            }
            if !(example.label == 0.0 || example.label == 1.0) {
                return Err(RecsysError::BadBatch(format!(
                    "example {index} has label {}; labels are 0 or 1",
                    example.label
                )));
            }
        }
        Ok(())
    }

    async fn rows_of(&self, examples: &[Example]) -> Result<(Vec<u64>, Rows), RecsysError> {
        let mut ids: Vec<u64> = examples
            .iter()
            .flat_map(|example| example.fields.iter().flatten().copied())
            .collect();
        ids.sort_unstable();
        ids.dedup();
        let width = self.config.shape.width();
        let values = self.store.lookup(&ids, width).await?;
        let rows = Rows::new(&ids, values, width);
        Ok((ids, rows))
    }

    /// Scores events without training on them.
    pub async fn predict(&self, examples: &[Example]) -> Result<Vec<f32>, RecsysError> {
        self.check(examples)?;
        let (_, rows) = self.rows_of(examples).await?;
        Ok(examples
            .iter()
            .map(|example| self.params.predict(example, &rows))
            .collect())
    }

    /// Scores the batch, then takes one step on it.
    pub async fn train(
        &mut self,
        examples: &[Example],
        event_time: u64,
    ) -> Result<StepReport, RecsysError> {
        self.check(examples)?;
        if examples.is_empty() {
            return Err(RecsysError::BadBatch("an empty batch".to_string()));
        }
        let (_, rows) = self.rows_of(examples).await?;
        let mut dense = vec![0.0f32; self.params.values.len()];
        let mut row_grads: FxHashMap<u64, Vec<f32>> = FxHashMap::default();
        let (predictions, loss) = self
            .params
            .backward(examples, &rows, &mut dense, &mut row_grads);
        let mut counts: FxHashMap<u64, u32> = FxHashMap::default();
        for example in examples {
            for id in example.fields.iter().flatten() {
                *counts.entry(*id).or_default() += 1;
            }
        }
        let mut ids: Vec<u64> = row_grads.keys().copied().collect();
        ids.sort_unstable();
        let width = self.config.shape.width();
        let grads: Vec<f32> = ids
            .iter()
            .flat_map(|id| row_grads[id].iter().copied())
            .collect();
        let id_counts: Vec<u32> = ids.iter().map(|id| counts[id]).collect();
        let step = self.step + 1;
        // The step number is used up even if a shard failed: some shards may have applied it,
        // and a later batch under the same number would be taken for a retry and dropped there.
        self.step = step;
        self.store
            .update(step, event_time, &ids, &id_counts, &grads, width)
            .await?;
        self.adam.step(&mut self.params.values, &dense);
        Ok(StepReport {
            step,
            loss,
            predictions,
            distinct_ids: ids.len(),
        })
    }

    /// Seals every shard at the current step and keeps the dense parameters of that version.
    pub async fn seal(&mut self) -> Result<SealReport, RecsysError> {
        let version = self.step;
        if version == 0 {
            // Nothing trained yet: nothing to seal, no version to serve.
            return Ok(SealReport {
                version,
                shards: Vec::new(),
            });
        }
        if let Some(last) = self
            .last_seal
            .as_ref()
            .filter(|last| last.version == version)
        {
            return Ok(last.clone());
        }
        let shards = self.store.seal(version).await?;
        if let Some(dir) = &self.config.dir {
            std::fs::create_dir_all(dir).map_err(|source| RecsysError::Io {
                what: "trainer directory",
                path: dir.display().to_string(),
                source,
            })?;
            let saved = SavedDense {
                step: version,
                params: self.params.clone(),
                adam: self.adam.clone(),
            };
            let bytes = troupe::codec::encode(&saved).map_err(|err| RecsysError::Corrupt {
                what: "trainer state",
                path: dir.display().to_string(),
                why: err.to_string(),
            })?;
            write_atomically(&saved_path(dir), &bytes, "trainer state")?;
        }
        self.sealed.push_back((version, self.params.clone()));
        while self.sealed.len() > self.config.retained_seals.max(1) {
            self.sealed.pop_front();
        }
        let report = SealReport { version, shards };
        self.last_seal = Some(report.clone());
        Ok(report)
    }

    /// The dense parameters of sealed version `version`.
    pub fn dense_at(&self, version: u64) -> Result<DenseParams, RecsysError> {
        self.sealed
            .iter()
            .find(|(v, _)| *v == version)
            .map(|(_, params)| params.clone())
            .ok_or_else(|| RecsysError::DenseNotSealed {
                wanted: version,
                newest: self.sealed.back().map(|(v, _)| *v).unwrap_or(0),
            })
    }
}

/// The trainer as an actor over shard actors.
pub struct OnlineTrainer {
    trainer: Trainer,
}

/// One mini-batch of events as it reaches the trainer.
#[derive(Clone, Debug, serde::Serialize, serde::Deserialize)]
pub struct EventBatch {
    pub examples: Vec<Example>,
    /// Newest event time in the batch (seconds).
    pub event_time: u64,
}

#[troupe::actor]
impl OnlineTrainer {
    /// Over the shards of `layout` as they are now (see `ShardLayout`).
    pub async fn new(config: TrainerConfig, layout: ShardLayout) -> Result<Self, RecsysError> {
        let trainer = Trainer::new(config, Store::Sharded(layout.current().await?)).await?;
        Ok(OnlineTrainer { trainer })
    }

    pub async fn train(&mut self, batch: EventBatch) -> Result<StepReport, RecsysError> {
        self.trainer.train(&batch.examples, batch.event_time).await
    }

    pub async fn predict(&self, examples: Vec<Example>) -> Result<Vec<f32>, RecsysError> {
        self.trainer.predict(&examples).await
    }

    pub async fn seal(&mut self) -> Result<SealReport, RecsysError> {
        self.trainer.seal().await
    }

    pub fn dense(&self, version: u64) -> Result<DenseParams, RecsysError> {
        self.trainer.dense_at(version)
    }

    pub fn step(&self) -> u64 {
        self.trainer.step()
    }

    /// Takes the shards of a new layout (after rows were re-distributed).
    pub fn set_shards(&mut self, shards: Vec<EmbeddingShardHandle>) {
        self.trainer.set_store(Store::Sharded(shards));
    }
}
