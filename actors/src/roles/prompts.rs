//! The prompt source: the first stage of an RL step. It holds the task and makes each step's
//! prompts on its own node (`batch` training problems, each repeated `group_size` times), so
//! prompts enter the pipeline without passing through the driver.

use super::columns::{PROBLEM, PROMPT};
use crate::error::{ModelError, Result};
use crate::tasks::{Task, TaskSpec};
use troupe::data::Batch;
use troupe::pipeline::{StageCall, StageReceipt};

/// Makes each step's prompts from a task.
pub struct PromptSource {
    task: Box<dyn Task>,
    batch: usize,
    group_size: usize,
}

impl PromptSource {
    /// Step `step`'s rows: problems `step * batch ..` of the task, each `group_size` times.
    pub fn step_batch(&self, step: u64) -> Result<Batch> {
        let mut prompts = Vec::with_capacity(self.batch * self.group_size);
        let mut indexes = Vec::with_capacity(self.batch * self.group_size);
        for offset in 0..self.batch as u64 {
            let index = step * self.batch as u64 + offset;
            let index32 = u32::try_from(index).map_err(|_| {
                ModelError::Input(format!("problem index {index} does not fit the column"))
            })?;
            let ids = self.task.prompt_ids(&self.task.train_problem(index))?;
            for _ in 0..self.group_size {
                prompts.push(ids.clone());
                indexes.push(index32);
            }
        }
        Ok(Batch::new(prompts.len())
            .with_ragged_u32(PROMPT, &prompts, self.task.prompt_tokens())?
            .with_u32(PROBLEM, &indexes)?)
    }
}

#[troupe::actor]
impl PromptSource {
    pub fn new(task: TaskSpec, batch: usize, group_size: usize) -> Result<Self> {
        if batch == 0 || group_size == 0 {
            return Err(ModelError::Input(format!(
                "prompt source: batch {batch} and group size {group_size} must be at least 1"
            )));
        }
        Ok(PromptSource {
            task: task.build()?,
            batch,
            group_size,
        })
    }

    /// Stage `prompts` (no inputs): `prompt`, `problem` for the call's step.
    pub async fn prompts(&self, call: StageCall) -> Result<StageReceipt> {
        let batch = self.step_batch(call.step())?;
        Ok(call.finish(batch)?)
    }
}
