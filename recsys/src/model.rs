//! The dense part of the model, trained together with the embedding rows: a DeepFM-style
//! scorer over F fields. Each field is a bag of feature ids (one id for a user or an item,
//! several for genres); its embedding is the mean of its rows' first `dim` values and its
//! linear weight the mean of their last value. The logit is
//!
//! ```text
//! bias + Σ_f w_f + ½ Σ_d ((Σ_f e_fd)² − Σ_f e_fd²) + w2 · relu(W1 · [e_1 … e_F] + b1)
//! ```
//!
//! (a linear term, the factorisation machine's pairwise interactions, and a one-hidden-layer
//! MLP over the concatenated embeddings), trained on log loss. Gradients are written out by
//! hand (checked against finite differences below); the dense parameters take Adam steps and
//! the rows' gradients go to their shards.

use crate::features::mix64;
use rustc_hash::FxHashMap;

/// The model's shape.
#[derive(Clone, Copy, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct ModelShape {
    pub fields: usize,
    pub dim: usize,
    pub hidden: usize,
}

impl ModelShape {
    /// Row width in the tables: `dim` embedding values and one linear weight.
    pub fn width(&self) -> usize {
        self.dim + 1
    }

    fn inputs(&self) -> usize {
        self.fields * self.dim
    }

    /// bias, W1 (hidden × inputs), b1 (hidden), w2 (hidden).
    pub fn parameter_count(&self) -> usize {
        1 + self.hidden * self.inputs() + 2 * self.hidden
    }
}

/// One training or serving example: a bag of feature ids per field, and its label (0 or 1).
#[derive(Clone, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct Example {
    pub fields: Vec<Vec<u64>>,
    pub label: f32,
}

/// The dense parameters, flat: `[bias, W1 (row-major, hidden rows), b1, w2]`.
#[derive(Clone, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct DenseParams {
    pub shape: ModelShape,
    pub values: Vec<f32>,
}

/// What one example's forward pass keeps for its backward pass.
struct Forward {
    embeddings: Vec<f32>,
    hidden_pre: Vec<f32>,
    logit: f32,
}

impl DenseParams {
    /// Glorot-uniform W1 and w2 from `seed`, zero biases.
    pub fn init(shape: ModelShape, seed: u64) -> DenseParams {
        let mut values = vec![0.0f32; shape.parameter_count()];
        let mut state = mix64(seed);
        let mut uniform = |limit: f32| {
            state = mix64(state);
            ((state >> 40) as f32 / (1u64 << 24) as f32 * 2.0 - 1.0) * limit
        };
        let w1_limit = (6.0 / (shape.inputs() + shape.hidden) as f32).sqrt();
        let (w1, _, w2) = Self::ranges(shape);
        for value in &mut values[w1] {
            *value = uniform(w1_limit);
        }
        let w2_limit = (6.0 / (shape.hidden + 1) as f32).sqrt();
        for value in &mut values[w2] {
            *value = uniform(w2_limit);
        }
        DenseParams { shape, values }
    }

    fn ranges(
        shape: ModelShape,
    ) -> (
        std::ops::Range<usize>,
        std::ops::Range<usize>,
        std::ops::Range<usize>,
    ) {
        let w1 = 1..1 + shape.hidden * shape.inputs();
        let b1 = w1.end..w1.end + shape.hidden;
        let w2 = b1.end..b1.end + shape.hidden;
        (w1, b1, w2)
    }

    /// Mean of the bag's rows, per field: `fields × width` values (empty bags are zeros).
    fn pool(&self, example: &Example, rows: &impl RowSource) -> Vec<f32> {
        let width = self.shape.width();
        let mut pooled = vec![0.0f32; self.shape.fields * width];
        for (field, bag) in example.fields.iter().enumerate() {
            if bag.is_empty() {
                continue;
            }
            let out = &mut pooled[field * width..(field + 1) * width];
            for id in bag {
                if let Some(row) = rows.get(*id) {
                    for (o, v) in out.iter_mut().zip(row) {
                        *o += v;
                    }
                }
            }
            let scale = 1.0 / bag.len() as f32;
            out.iter_mut().for_each(|o| *o *= scale);
        }
        pooled
    }

    fn forward(&self, pooled: &[f32]) -> Forward {
        let ModelShape {
            fields,
            dim,
            hidden,
        } = self.shape;
        let width = self.shape.width();
        let (w1, b1, w2) = Self::ranges(self.shape);
        let mut embeddings = Vec::with_capacity(fields * dim);
        let mut logit = self.values[0];
        let mut sum = vec![0.0f32; dim];
        let mut squares = 0.0f32;
        for field in 0..fields {
            let row = &pooled[field * width..(field + 1) * width];
            logit += row[dim];
            for d in 0..dim {
                sum[d] += row[d];
                squares += row[d] * row[d];
            }
            embeddings.extend_from_slice(&row[..dim]);
        }
        logit += 0.5 * (sum.iter().map(|s| s * s).sum::<f32>() - squares);
        let w1 = &self.values[w1];
        let b1 = &self.values[b1];
        let w2 = &self.values[w2];
        let mut hidden_pre = Vec::with_capacity(hidden);
        for h in 0..hidden {
            let weights = &w1[h * fields * dim..(h + 1) * fields * dim];
            let pre = b1[h] + dot(weights, &embeddings);
            hidden_pre.push(pre);
            logit += w2[h] * pre.max(0.0);
        }
        Forward {
            embeddings,
            hidden_pre,
            logit,
        }
    }

    /// The probability of a positive label.
    pub fn predict(&self, example: &Example, rows: &impl RowSource) -> f32 {
        sigmoid(self.forward(&self.pool(example, rows)).logit)
    }

    /// Predictions (before any update) and the mean log loss of `examples`, and the gradients
    /// of that mean: into `dense` (same layout as the parameters) and into `row_grads` (per
    /// feature id, `width` values).
    pub fn backward(
        &self,
        examples: &[Example],
        rows: &Rows,
        dense: &mut [f32],
        row_grads: &mut FxHashMap<u64, Vec<f32>>,
    ) -> (Vec<f32>, f32) {
        let ModelShape {
            fields,
            dim,
            hidden,
        } = self.shape;
        let width = self.shape.width();
        let (w1_range, b1_range, w2_range) = Self::ranges(self.shape);
        let scale = 1.0 / examples.len().max(1) as f32;
        let mut predictions = Vec::with_capacity(examples.len());
        let mut loss = 0.0f32;
        let mut d_embeddings = vec![0.0f32; fields * dim];
        for example in examples {
            let forward = self.forward(&self.pool(example, rows));
            let p = sigmoid(forward.logit);
            predictions.push(p);
            loss += log_loss(forward.logit, example.label);
            let g = (p - example.label) * scale;
            dense[0] += g;
            // MLP.
            d_embeddings.fill(0.0);
            for h in 0..hidden {
                let pre = forward.hidden_pre[h];
                dense[w2_range.start + h] += g * pre.max(0.0);
                if pre <= 0.0 {
                    continue;
                }
                let d_pre = g * self.values[w2_range.start + h];
                dense[b1_range.start + h] += d_pre;
                let row = w1_range.start + h * fields * dim;
                for (i, x) in forward.embeddings.iter().enumerate() {
                    dense[row + i] += d_pre * x;
                    d_embeddings[i] += d_pre * self.values[row + i];
                }
            }
            // Factorisation machine: d/de_fd = sum_d - e_fd.
            let mut sum = vec![0.0f32; dim];
            for embedding in forward.embeddings.chunks_exact(dim) {
                for (total, value) in sum.iter_mut().zip(embedding) {
                    *total += value;
                }
            }
            for field in 0..fields {
                for d in 0..dim {
                    d_embeddings[field * dim + d] +=
                        g * (sum[d] - forward.embeddings[field * dim + d]);
                }
            }
            // Back through the bags' means to each row.
            for (field, bag) in example.fields.iter().enumerate() {
                if bag.is_empty() {
                    continue;
                }
                let share = 1.0 / bag.len() as f32;
                for id in bag {
                    let grad = row_grads.entry(*id).or_insert_with(|| vec![0.0; width]);
                    for d in 0..dim {
                        grad[d] += d_embeddings[field * dim + d] * share;
                    }
                    grad[dim] += g * share;
                }
            }
        }
        (predictions, loss * scale)
    }
}

/// Where the model reads a feature's row (`width` values); an id without one reads as zeros.
pub trait RowSource {
    fn get(&self, id: u64) -> Option<&[f32]>;
}

/// Rows looked up for a batch: feature id → `width` values.
#[derive(Default)]
pub struct Rows {
    index: FxHashMap<u64, usize>,
    values: Vec<f32>,
    width: usize,
}

impl Rows {
    pub fn new(ids: &[u64], values: Vec<f32>, width: usize) -> Rows {
        Rows {
            index: ids.iter().enumerate().map(|(i, id)| (*id, i)).collect(),
            values,
            width,
        }
    }
}

impl RowSource for Rows {
    fn get(&self, id: u64) -> Option<&[f32]> {
        self.index
            .get(&id)
            .map(|&i| &self.values[i * self.width..(i + 1) * self.width])
    }
}

/// Adam on the dense parameters.
#[derive(Clone, Debug, serde::Serialize, serde::Deserialize)]
pub struct Adam {
    pub learning_rate: f32,
    m: Vec<f32>,
    v: Vec<f32>,
    t: i32,
}

impl Adam {
    pub fn new(learning_rate: f32, parameters: usize) -> Adam {
        Adam {
            learning_rate,
            m: vec![0.0; parameters],
            v: vec![0.0; parameters],
            t: 0,
        }
    }

    pub fn step(&mut self, params: &mut [f32], grads: &[f32]) {
        const BETA1: f32 = 0.9;
        const BETA2: f32 = 0.999;
        self.t += 1;
        let correction1 = 1.0 - BETA1.powi(self.t);
        let correction2 = 1.0 - BETA2.powi(self.t);
        for (((p, g), m), v) in params
            .iter_mut()
            .zip(grads)
            .zip(self.m.iter_mut())
            .zip(self.v.iter_mut())
        {
            *m = BETA1 * *m + (1.0 - BETA1) * g;
            *v = BETA2 * *v + (1.0 - BETA2) * g * g;
            *p -= self.learning_rate * (*m / correction1) / ((*v / correction2).sqrt() + 1e-8);
        }
    }
}

fn dot(a: &[f32], b: &[f32]) -> f32 {
    a.iter().zip(b).map(|(x, y)| x * y).sum()
}

pub fn sigmoid(x: f32) -> f32 {
    1.0 / (1.0 + (-x).exp())
}

/// Log loss from the logit, stable for large |logit|.
fn log_loss(logit: f32, label: f32) -> f32 {
    logit.max(0.0) - logit * label + (-logit.abs()).exp().ln_1p()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn setup() -> (DenseParams, Vec<Example>, Vec<u64>, Vec<f32>) {
        let shape = ModelShape {
            fields: 3,
            dim: 4,
            hidden: 5,
        };
        let mut params = DenseParams::init(shape, 3);
        for (i, value) in params.values.iter_mut().enumerate().take(1 + 2 * 12) {
            *value += 0.01 * i as f32;
        }
        let ids: Vec<u64> = (1..=6).collect();
        let mut state = 11u64;
        let values: Vec<f32> = (0..ids.len() * 5)
            .map(|_| {
                state = mix64(state);
                ((state >> 40) as f32 / (1u64 << 24) as f32 - 0.5) * 0.8
            })
            .collect();
        let examples = vec![
            Example {
                fields: vec![vec![1], vec![2], vec![3, 4]],
                label: 1.0,
            },
            Example {
                fields: vec![vec![5], vec![2], vec![6, 4, 3]],
                label: 0.0,
            },
            Example {
                fields: vec![vec![1], vec![6], vec![]],
                label: 1.0,
            },
        ];
        (params, examples, ids, values)
    }

    fn mean_loss(params: &DenseParams, examples: &[Example], rows: &Rows) -> f64 {
        let total: f64 = examples
            .iter()
            .map(|e| {
                let logit = params.forward(&params.pool(e, rows)).logit;
                log_loss(logit, e.label) as f64
            })
            .sum();
        total / examples.len() as f64
    }

    #[test]
    fn every_gradient_matches_finite_differences() {
        let (params, examples, ids, values) = setup();
        let rows = Rows::new(&ids, values.clone(), 5);
        let mut dense = vec![0.0f32; params.values.len()];
        let mut row_grads = FxHashMap::default();
        let (_, loss) = params.backward(&examples, &rows, &mut dense, &mut row_grads);
        assert!((loss as f64 - mean_loss(&params, &examples, &rows)).abs() < 1e-5);
        let eps = 1e-3f32;
        for (i, analytic) in dense.iter().enumerate() {
            let mut plus = params.clone();
            plus.values[i] += eps;
            let mut minus = params.clone();
            minus.values[i] -= eps;
            let numeric = (mean_loss(&plus, &examples, &rows)
                - mean_loss(&minus, &examples, &rows))
                / (2.0 * eps as f64);
            assert!(
                (numeric - *analytic as f64).abs() < 2e-3,
                "dense parameter {i}: numeric {numeric}, analytic {analytic}"
            );
        }
        for (row, id) in ids.iter().enumerate() {
            for k in 0..5 {
                let bump = |delta: f32| {
                    let mut moved = values.clone();
                    moved[row * 5 + k] += delta;
                    mean_loss(&params, &examples, &Rows::new(&ids, moved, 5))
                };
                let numeric = (bump(eps) - bump(-eps)) / (2.0 * eps as f64);
                let analytic = row_grads.get(id).map(|g| g[k]).unwrap_or(0.0);
                assert!(
                    (numeric - analytic as f64).abs() < 2e-3,
                    "row {id} value {k}: numeric {numeric}, analytic {analytic}"
                );
            }
        }
    }

    #[test]
    fn log_loss_is_stable_far_from_zero() {
        assert!((log_loss(100.0, 1.0)).abs() < 1e-6);
        assert!((log_loss(-100.0, 1.0) - 100.0).abs() < 1e-3);
        assert!((log_loss(0.0, 0.0) - std::f32::consts::LN_2).abs() < 1e-6);
    }
}
