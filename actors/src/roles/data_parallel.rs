//! Data parallelism for the trainer: ranks holding the same model average their gradients over a
//! communicator before each optimizer step, so every rank takes the same step.

use crate::error::{ModelError, Result};
use crate::train::optim::Gradients;
use candle_core::Tensor;
use troupe::collective::Communicator;

fn collective(source: troupe::collective::CollectiveError) -> ModelError {
    ModelError::Collective {
        context: "data-parallel all-reduce".to_string(),
        source,
    }
}

/// Replaces every gradient by its mean over the group's ranks (one all-reduce over all of them,
/// in name order).
pub async fn average_gradients<C: Communicator>(comm: &C, grads: &mut Gradients) -> Result<()> {
    let world = comm.world_size() as f32;
    let mut names: Vec<String> = grads.keys().cloned().collect();
    names.sort();
    let mut flat = Vec::new();
    let mut shapes = Vec::with_capacity(names.len());
    for name in &names {
        let grad = &grads[name];
        let values = grad
            .to_dtype(candle_core::DType::F32)?
            .flatten_all()?
            .to_vec1::<f32>()?;
        shapes.push((
            grad.shape().clone(),
            grad.dtype(),
            grad.device().clone(),
            values.len(),
        ));
        flat.extend(values);
    }
    comm.all_reduce_sum(&mut flat).await.map_err(collective)?;
    let mut at = 0;
    for (name, (shape, dtype, device, count)) in names.into_iter().zip(shapes) {
        let mean: Vec<f32> = flat[at..at + count]
            .iter()
            .map(|value| value / world)
            .collect();
        at += count;
        grads.insert(
            name,
            Tensor::from_vec(mean, shape, &device)?.to_dtype(dtype)?,
        );
    }
    Ok(())
}

/// Replaces each value by its mean over the group's ranks.
pub async fn average_values<C: Communicator>(comm: &C, values: &mut [f64]) -> Result<()> {
    let mut flat: Vec<f32> = values.iter().map(|value| *value as f32).collect();
    comm.all_reduce_sum(&mut flat).await.map_err(collective)?;
    let world = comm.world_size() as f64;
    for (value, sum) in values.iter_mut().zip(flat) {
        *value = sum as f64 / world;
    }
    Ok(())
}
