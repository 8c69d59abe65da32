//! Moving policy weights from trainer actors to rollout actors with the runtime's resharding
//! planner: trainers (sources) and rollouts (destinations) form one communicator group, each
//! holding the whole model (replicated layouts); the plan spreads the bytes over the source
//! replicas, so with two trainers each sends half of every rollout's weights. A trainer flattens
//! its weights into a buffer in shared memory, kept across steps, so a rollout on the same
//! machine copies them straight out of it (one copy); rollouts elsewhere get them over TCP.

use crate::error::{ModelError, Result};
use crate::model::Decoder;
use troupe::collective::TcpCommunicator;
use troupe::objects::SharedBuffer;
use troupe::reshard::{
    execute, execute_from_shared, plan, Layout, Moved, ParamSpec, Plan, RankMap,
    DEFAULT_BUCKET_BYTES,
};

/// Which side of the sync an actor is on, with its index among that side's actors.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub enum SyncSide {
    Source(usize),
    Destination(usize),
}

/// One actor's membership of a weight-sync group.
pub struct WeightSync {
    comm: TcpCommunicator,
    plan: Plan,
    side: SyncSide,
    ranks: RankMap,
    /// A source's weights in shared memory, rewritten every send.
    staged: tokio::sync::Mutex<Option<SharedBuffer>>,
}

fn sync_error(what: &str, err: impl std::fmt::Display) -> ModelError {
    ModelError::Input(format!("weight sync: {what}: {err}"))
}

/// The model's parameters in name order, as the planner sees them (f32 elements).
fn param_specs(model: &Decoder) -> Vec<ParamSpec> {
    model
        .named_vars()
        .iter()
        .map(|(name, var)| {
            let shape: Vec<u64> = var.dims().iter().map(|d| *d as u64).collect();
            ParamSpec::new(name, &shape, 4)
        })
        .collect()
}

/// Every parameter's f32 values back to back, in name order: a replica's buffer.
pub fn flatten(model: &Decoder) -> Result<Vec<u8>> {
    let mut out = vec![0_u8; flat_bytes(model)];
    flatten_into(model, &mut out)?;
    Ok(out)
}

/// The bytes `flatten` gives for `model`.
pub fn flat_bytes(model: &Decoder) -> usize {
    model
        .named_vars()
        .iter()
        .map(|(_, var)| var.elem_count() * 4)
        .sum()
}

/// `flatten`, into `out` (exactly `flat_bytes` long).
pub fn flatten_into(model: &Decoder, out: &mut [u8]) -> Result<()> {
    if out.len() != flat_bytes(model) {
        return Err(ModelError::Input(format!(
            "a {}-byte buffer for {} bytes of weights",
            out.len(),
            flat_bytes(model)
        )));
    }
    let mut at = 0;
    for (_, var) in model.named_vars() {
        let values = var
            .as_tensor()
            .to_dtype(candle_core::DType::F32)?
            .flatten_all()?
            .to_vec1::<f32>()?;
        for value in values {
            out[at..at + 4].copy_from_slice(&value.to_le_bytes());
            at += 4;
        }
    }
    Ok(())
}

/// Loads a replica's buffer (as `flatten` lays it out) into `model`.
pub fn unflatten(model: &Decoder, buffer: &[u8]) -> Result<()> {
    let mut tensors = Vec::new();
    let mut at = 0;
    for (name, var) in model.named_vars() {
        let bytes = var.elem_count() * 4;
        let chunk = buffer.get(at..at + bytes).ok_or_else(|| {
            ModelError::Checkpoint(format!(
                "weight buffer of {} bytes ends inside `{name}`",
                buffer.len()
            ))
        })?;
        at += bytes;
        let values: Vec<f32> = chunk
            .chunks_exact(4)
            .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
            .collect();
        tensors.push((
            name,
            candle_core::Tensor::from_vec(values, var.shape(), model.device())?,
        ));
    }
    if at != buffer.len() {
        return Err(ModelError::Checkpoint(format!(
            "weight buffer of {} bytes; the model holds {at}",
            buffer.len()
        )));
    }
    model.load_tensors(&tensors, false)
}

impl WeightSync {
    /// Joins group `group` of `sources` trainers and `destinations` rollouts, all holding
    /// `model`'s architecture. Every member must call this (it waits up to `timeout`).
    pub async fn join(
        group: &str,
        side: SyncSide,
        sources: usize,
        destinations: usize,
        model: &Decoder,
        timeout: std::time::Duration,
    ) -> Result<Self> {
        let rank = match side {
            SyncSide::Source(index) if index < sources => index,
            SyncSide::Destination(index) if index < destinations => sources + index,
            _ => {
                return Err(ModelError::Input(format!(
                    "weight sync: {side:?} is outside {sources} sources and {destinations} destinations"
                )))
            }
        };
        let plan = plan(
            &param_specs(model),
            &Layout::replicated(sources),
            &Layout::replicated(destinations),
            DEFAULT_BUCKET_BYTES,
        )
        .map_err(|err| sync_error("planning", err))?;
        let cluster = troupe::Cluster::current().map_err(|err| sync_error("no cluster", err))?;
        let comm =
            TcpCommunicator::rendezvous(&cluster, group, rank, sources + destinations, timeout)
                .await
                .map_err(|err| sync_error(&format!("joining `{group}`"), err))?;
        Ok(WeightSync {
            comm,
            plan,
            side,
            ranks: RankMap {
                src_base: 0,
                dst_base: sources,
            },
            staged: tokio::sync::Mutex::new(None),
        })
    }

    /// Sends this source's share of the model to every destination.
    pub async fn send(&self, model: &Decoder) -> Result<Moved> {
        if !matches!(self.side, SyncSide::Source(_)) {
            return Err(ModelError::Input(
                "weight sync: a destination cannot send".to_string(),
            ));
        }
        let mut staged = self.staged.lock().await;
        let len = flat_bytes(model);
        let mut flattened = Ok(());
        let rewritten = match staged.as_mut().filter(|buffer| buffer.len() == len) {
            Some(buffer) => buffer
                .rewrite(|bytes| flattened = flatten_into(model, bytes))
                .is_ok(),
            None => false,
        };
        if !rewritten {
            *staged = SharedBuffer::new(len).ok();
            if let Some(buffer) = staged.as_mut() {
                if buffer
                    .rewrite(|bytes| flattened = flatten_into(model, bytes))
                    .is_err()
                {
                    *staged = None;
                }
            }
        }
        flattened?;
        let moved = match staged.as_ref() {
            Some(buffer) => {
                execute_from_shared(&self.plan, &self.comm, self.ranks, Some(buffer), None).await
            }
            // No shared memory here: plain bytes.
            None => {
                let buffer = flatten(model)?;
                execute(&self.plan, &self.comm, self.ranks, Some(&buffer), None).await
            }
        };
        moved.map_err(|err| self.leave(sync_error("sending", err)))
    }

    /// After a failed sync this member leaves the group, so the others stop waiting for it at
    /// once (the group must be joined again).
    fn leave(&self, err: ModelError) -> ModelError {
        self.comm.abort(&err.to_string());
        err
    }

    /// Receives the whole model from the sources and loads it.
    pub async fn receive(&self, model: &Decoder) -> Result<Moved> {
        let SyncSide::Destination(index) = self.side else {
            return Err(ModelError::Input(
                "weight sync: a source cannot receive".to_string(),
            ));
        };
        let mut buffer = vec![0_u8; self.plan.dst_bytes[index] as usize];
        let moved = execute(&self.plan, &self.comm, self.ranks, None, Some(&mut buffer))
            .await
            .map_err(|err| self.leave(sync_error("receiving", err)))?;
        unflatten(model, &buffer)?;
        Ok(moved)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn flatten_and_unflatten_round_trip() {
        let config = crate::ModelConfig::tiny(25, 16, 1, 2, 2);
        let device = candle_core::Device::Cpu;
        let a = Decoder::new(&config, candle_core::DType::F32, &device, 1).unwrap();
        let b = Decoder::new(&config, candle_core::DType::F32, &device, 2).unwrap();
        let buffer = flatten(&a).unwrap();
        assert_eq!(buffer.len(), config.num_parameters() * 4);
        unflatten(&b, &buffer).unwrap();
        assert_eq!(flatten(&b).unwrap(), buffer);
        assert!(unflatten(&b, &buffer[..buffer.len() - 4]).is_err());
        let mut longer = buffer.clone();
        longer.extend_from_slice(&[0; 4]);
        assert!(unflatten(&b, &longer).is_err());
    }
}
