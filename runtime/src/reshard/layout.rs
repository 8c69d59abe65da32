//! Layouts: how a group of ranks holds a model. Ranks form a mesh of named axes (numbered in
//! row-major order over the axes); each parameter is replicated, split along one of its
//! dimensions over one axis (tensor parallelism), or cut into flat row-major chunks over one axis
//! (FSDP-style sharding, per parameter); a rank holds the same piece as every rank that differs
//! from it only along other axes (its replicas).

use super::boxes::{flat_range_boxes, IndexBox};
use super::ReshardError;

/// One parameter: name, shape, bytes per element.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct ParamSpec {
    pub name: String,
    pub shape: Vec<u64>,
    pub elem_bytes: u64,
}

impl ParamSpec {
    pub fn new(name: impl Into<String>, shape: &[u64], elem_bytes: u64) -> Self {
        ParamSpec {
            name: name.into(),
            shape: if shape.is_empty() {
                vec![1]
            } else {
                shape.to_vec()
            },
            elem_bytes,
        }
    }

    pub fn elements(&self) -> u64 {
        self.shape.iter().product()
    }
}

/// How one parameter is spread over the mesh.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Placement {
    /// Every rank holds all of it.
    Replicated,
    /// Dimension `dim` is cut into `size(axis)` contiguous parts (the last may be shorter).
    Split { dim: usize, axis: String },
    /// The row-major flattened parameter is cut into `size(axis)` contiguous chunks.
    Flat { axis: String },
}

/// Which placement each parameter gets, from its name and shape.
pub type PlacementRule = fn(&ParamSpec) -> Placement;

/// Ranks as a mesh of named axes, and the rule that places parameters on it.
#[derive(Debug, Clone)]
pub struct Layout {
    pub axes: Vec<(String, usize)>,
    pub rule: PlacementRule,
}

/// Megatron-style tensor parallelism for Llama/Qwen2 names: q/k/v, gate and up projections and
/// the embeddings are split along their output dimension (0), o and down projections along their
/// input dimension (1); norms and biases of row-split layers are replicated.
pub fn megatron_rule(param: &ParamSpec) -> Placement {
    let name = param.name.as_str();
    let column = [
        "q_proj",
        "k_proj",
        "v_proj",
        "gate_proj",
        "up_proj",
        "embed_tokens",
        "lm_head",
    ];
    let row = ["o_proj", "down_proj"];
    if column.iter().any(|part| name.contains(part)) {
        return Placement::Split {
            dim: 0,
            axis: "tp".into(),
        };
    }
    if row.iter().any(|part| name.contains(part))
        && name.ends_with("weight")
        && param.shape.len() >= 2
    {
        return Placement::Split {
            dim: 1,
            axis: "tp".into(),
        };
    }
    Placement::Replicated
}

fn all_flat(_: &ParamSpec) -> Placement {
    Placement::Flat { axis: "dp".into() }
}

fn all_replicated(_: &ParamSpec) -> Placement {
    Placement::Replicated
}

impl Layout {
    /// `replicas` ranks that each hold the whole model.
    pub fn replicated(replicas: usize) -> Self {
        Layout {
            axes: vec![("replica".into(), replicas)],
            rule: all_replicated,
        }
    }

    /// FSDP-style: every parameter cut into `dp` flat chunks, one per rank.
    pub fn fsdp(dp: usize) -> Self {
        Layout {
            axes: vec![("dp".into(), dp)],
            rule: all_flat,
        }
    }

    /// Tensor parallelism of degree `tp` (Megatron rules), times `replicas` copies.
    pub fn tensor_parallel(tp: usize, replicas: usize) -> Self {
        Layout {
            axes: vec![("replica".into(), replicas), ("tp".into(), tp)],
            rule: megatron_rule,
        }
    }

    /// Any mesh with any rule.
    pub fn custom(axes: Vec<(String, usize)>, rule: PlacementRule) -> Self {
        Layout { axes, rule }
    }

    /// Each parameter's placement (what a plan cache keys on, with the axes).
    pub fn placements(&self, params: &[ParamSpec]) -> Vec<Placement> {
        params.iter().map(|param| (self.rule)(param)).collect()
    }

    pub fn ranks(&self) -> usize {
        self.axes.iter().map(|(_, size)| *size).product()
    }

    fn axis(&self, name: &str) -> Result<(usize, usize), ReshardError> {
        self.axes
            .iter()
            .position(|(axis, _)| axis == name)
            .map(|index| (index, self.axes[index].1))
            .ok_or_else(|| {
                ReshardError::Layout(format!("no mesh axis `{name}` (axes: {:?})", self.axes))
            })
    }

    /// A rank's coordinate along each axis.
    fn coordinates(&self, rank: usize) -> Vec<usize> {
        let mut coords = vec![0; self.axes.len()];
        let mut rest = rank;
        for (index, (_, size)) in self.axes.iter().enumerate().rev() {
            coords[index] = rest % size;
            rest /= size;
        }
        coords
    }

    /// The boxes of `param` that `rank` holds, in the order its local buffer stores them.
    pub fn holding(&self, param: &ParamSpec, rank: usize) -> Result<Vec<IndexBox>, ReshardError> {
        if self.axes.iter().any(|(_, size)| *size == 0) {
            return Err(ReshardError::Layout("a mesh axis of size 0".to_string()));
        }
        let coords = self.coordinates(rank);
        Ok(match (self.rule)(param) {
            Placement::Replicated => vec![IndexBox::whole(&param.shape)],
            Placement::Split { dim, axis } => {
                if dim >= param.shape.len() {
                    return Err(ReshardError::Layout(format!(
                        "`{}` has {} dimensions; cannot split dimension {dim}",
                        param.name,
                        param.shape.len()
                    )));
                }
                let (index, parts) = self.axis(&axis)?;
                let (from, to) = chunk(param.shape[dim], parts, coords[index]);
                let mut piece = IndexBox::whole(&param.shape);
                piece.start[dim] = from;
                piece.end[dim] = to;
                if piece.is_empty() {
                    Vec::new()
                } else {
                    vec![piece]
                }
            }
            Placement::Flat { axis } => {
                let (index, parts) = self.axis(&axis)?;
                let (from, to) = chunk(param.elements(), parts, coords[index]);
                flat_range_boxes(&param.shape, from, to)
            }
        })
    }
}

/// A layout by name, as actors and command lines pass it around.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub enum LayoutSpec {
    Replicated(usize),
    Fsdp(usize),
    TensorParallel { tp: usize, replicas: usize },
}

impl LayoutSpec {
    pub fn layout(&self) -> Layout {
        match self {
            LayoutSpec::Replicated(replicas) => Layout::replicated(*replicas),
            LayoutSpec::Fsdp(dp) => Layout::fsdp(*dp),
            LayoutSpec::TensorParallel { tp, replicas } => Layout::tensor_parallel(*tp, *replicas),
        }
    }
}

/// Part `index` of `length` cut into `parts` contiguous pieces of ceil(length / parts).
pub fn chunk(length: u64, parts: usize, index: usize) -> (u64, u64) {
    let size = length.div_ceil(parts as u64);
    let from = (size * index as u64).min(length);
    let to = (from + size).min(length);
    (from, to)
}
