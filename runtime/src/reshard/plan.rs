//! The planner: which source rank sends which piece of which parameter to which destination
//! rank. Every destination element is covered exactly once; among the source ranks holding a
//! piece (replicas), the one with the least bytes assigned so far sends it; transfers are grouped
//! per (source, destination) pair into buckets of bounded size; plans are cached per pair of
//! layouts.

use super::boxes::{runs, IndexBox, Run};
use super::layout::{Layout, ParamSpec, Placement};
use super::ReshardError;
use std::collections::HashMap;
use std::sync::{Arc, Mutex};

/// Default bucket size: 512 MiB.
pub const DEFAULT_BUCKET_BYTES: u64 = 512 << 20;

/// One piece of one parameter moving between two ranks.
#[derive(Debug, Clone, PartialEq)]
pub struct Transfer {
    pub param: usize,
    /// Rank in the source layout.
    pub src: usize,
    /// Rank in the destination layout.
    pub dst: usize,
    /// The piece, in the parameter's index space.
    pub region: IndexBox,
    /// The source's holding box that contains it and where that box starts in the source's
    /// buffer (elements from the start of the parameter's block).
    pub src_box: IndexBox,
    pub src_box_offset: u64,
    pub dst_box: IndexBox,
    pub dst_box_offset: u64,
}

impl Transfer {
    pub fn elements(&self) -> u64 {
        self.region.elements()
    }

    /// Contiguous runs as element offsets within the parameter's block on each side.
    pub fn runs(&self) -> Vec<Run> {
        runs(&self.region, &self.src_box, &self.dst_box)
            .into_iter()
            .map(|run| Run {
                src: run.src + self.src_box_offset,
                dst: run.dst + self.dst_box_offset,
                len: run.len,
            })
            .collect()
    }
}

/// Transfers from one source rank to one destination rank, sent as one message.
#[derive(Debug, Clone, PartialEq)]
pub struct Bucket {
    pub src: usize,
    pub dst: usize,
    pub transfers: Vec<Transfer>,
    pub bytes: u64,
}

/// A complete resharding plan.
#[derive(Debug, Clone)]
pub struct Plan {
    pub params: Vec<ParamSpec>,
    pub src_ranks: usize,
    pub dst_ranks: usize,
    pub buckets: Vec<Bucket>,
    /// Byte offset of each parameter's block in each rank's buffer: [rank][param].
    pub src_offsets: Vec<Vec<u64>>,
    pub dst_offsets: Vec<Vec<u64>>,
    /// Bytes each rank's buffer holds.
    pub src_bytes: Vec<u64>,
    pub dst_bytes: Vec<u64>,
}

impl Plan {
    pub fn total_bytes(&self) -> u64 {
        self.buckets.iter().map(|bucket| bucket.bytes).sum()
    }

    /// Bytes each source rank sends.
    pub fn bytes_per_source(&self) -> Vec<u64> {
        let mut out = vec![0; self.src_ranks];
        for bucket in &self.buckets {
            out[bucket.src] += bucket.bytes;
        }
        out
    }
}

/// Where each rank keeps each parameter: its holding boxes with their offsets (elements within
/// the parameter's block), and the byte offset of the block in the rank's buffer.
struct Holdings {
    boxes: Vec<Vec<Vec<(IndexBox, u64)>>>,
    offsets: Vec<Vec<u64>>,
    bytes: Vec<u64>,
}

fn holdings(layout: &Layout, params: &[ParamSpec]) -> Result<Holdings, ReshardError> {
    let ranks = layout.ranks();
    let mut boxes = vec![Vec::with_capacity(params.len()); ranks];
    let mut offsets = vec![Vec::with_capacity(params.len()); ranks];
    let mut bytes = vec![0_u64; ranks];
    for rank in 0..ranks {
        for param in params {
            let mut within = 0;
            let mut held = Vec::new();
            for piece in layout.holding(param, rank)? {
                let count = piece.elements();
                held.push((piece, within));
                within += count;
            }
            offsets[rank].push(bytes[rank]);
            bytes[rank] += within * param.elem_bytes;
            boxes[rank].push(held);
        }
    }
    Ok(Holdings {
        boxes,
        offsets,
        bytes,
    })
}

/// Plans moving `params` from ranks laid out as `src` to ranks laid out as `dst`.
pub fn plan(
    params: &[ParamSpec],
    src: &Layout,
    dst: &Layout,
    bucket_bytes: u64,
) -> Result<Plan, ReshardError> {
    if bucket_bytes == 0 {
        return Err(ReshardError::Layout("bucket size 0".to_string()));
    }
    let from = holdings(src, params)?;
    let to = holdings(dst, params)?;
    let mut load = vec![0_u64; src.ranks()];
    let mut pairs: HashMap<(usize, usize), Vec<Transfer>> = HashMap::new();
    for (index, param) in params.iter().enumerate() {
        // Distinct source pieces, each with the ranks holding it (its replicas).
        let mut pieces: Vec<(IndexBox, Vec<(usize, u64)>)> = Vec::new();
        for rank in 0..src.ranks() {
            for (piece, offset) in &from.boxes[rank][index] {
                match pieces.iter_mut().find(|(known, _)| known == piece) {
                    Some((_, holders)) => holders.push((rank, *offset)),
                    None => pieces.push((piece.clone(), vec![(rank, *offset)])),
                }
            }
        }
        for dst_rank in 0..dst.ranks() {
            for (dst_box, dst_offset) in &to.boxes[dst_rank][index] {
                for (piece, holders) in &pieces {
                    let Some(region) = piece.intersect(dst_box) else {
                        continue;
                    };
                    let &(src_rank, src_offset) = holders
                        .iter()
                        .min_by_key(|(rank, _)| (load[*rank], *rank))
                        .ok_or_else(|| {
                            ReshardError::Layout(format!(
                                "no source holds part of `{}`",
                                param.name
                            ))
                        })?;
                    load[src_rank] += region.elements() * param.elem_bytes;
                    pairs
                        .entry((src_rank, dst_rank))
                        .or_default()
                        .push(Transfer {
                            param: index,
                            src: src_rank,
                            dst: dst_rank,
                            region,
                            src_box: piece.clone(),
                            src_box_offset: src_offset,
                            dst_box: dst_box.clone(),
                            dst_box_offset: *dst_offset,
                        });
                }
            }
        }
    }
    let mut keys: Vec<(usize, usize)> = pairs.keys().copied().collect();
    keys.sort();
    let mut buckets = Vec::new();
    for key in keys {
        let transfers = pairs.remove(&key).unwrap_or_default();
        let mut current = Bucket {
            src: key.0,
            dst: key.1,
            transfers: Vec::new(),
            bytes: 0,
        };
        for transfer in transfers {
            for piece in split_to_fit(transfer, params, bucket_bytes) {
                let size = piece.elements() * params[piece.param].elem_bytes;
                if current.bytes > 0 && current.bytes + size > bucket_bytes {
                    let full = std::mem::replace(
                        &mut current,
                        Bucket {
                            src: key.0,
                            dst: key.1,
                            transfers: Vec::new(),
                            bytes: 0,
                        },
                    );
                    buckets.push(full);
                }
                current.bytes += size;
                current.transfers.push(piece);
            }
        }
        if current.bytes > 0 {
            buckets.push(current);
        }
    }
    Ok(Plan {
        params: params.to_vec(),
        src_ranks: src.ranks(),
        dst_ranks: dst.ranks(),
        buckets,
        src_offsets: from.offsets,
        dst_offsets: to.offsets,
        src_bytes: from.bytes,
        dst_bytes: to.bytes,
    })
}

/// Cuts a transfer larger than a bucket along its first dimension that has more than one index.
fn split_to_fit(transfer: Transfer, params: &[ParamSpec], bucket_bytes: u64) -> Vec<Transfer> {
    let elem = params[transfer.param].elem_bytes;
    let total = transfer.elements() * elem;
    if total <= bucket_bytes {
        return vec![transfer];
    }
    let region = &transfer.region;
    let Some(dim) = (0..region.start.len()).find(|d| region.extent(*d) > 1) else {
        return vec![transfer];
    };
    let slab = total / region.extent(dim);
    let per_piece = (bucket_bytes / slab.max(1)).max(1);
    let mut out = Vec::new();
    let mut from = region.start[dim];
    while from < region.end[dim] {
        let to = (from + per_piece).min(region.end[dim]);
        let mut piece = transfer.clone();
        piece.region.start[dim] = from;
        piece.region.end[dim] = to;
        out.extend(split_to_fit(piece, params, bucket_bytes));
        from = to;
    }
    out
}

type CacheKey = (
    Vec<(String, usize)>,
    Vec<Placement>,
    Vec<(String, usize)>,
    Vec<Placement>,
    Vec<ParamSpec>,
    u64,
);

/// Plans by pair of layouts, computed once and replayed every step.
#[derive(Default)]
pub struct PlanCache {
    plans: Mutex<HashMap<CacheKey, Arc<Plan>>>,
}

impl PlanCache {
    pub fn new() -> Self {
        Self::default()
    }

    /// The cached plan, or a new one.
    pub fn get(
        &self,
        params: &[ParamSpec],
        src: &Layout,
        dst: &Layout,
        bucket_bytes: u64,
    ) -> Result<Arc<Plan>, ReshardError> {
        let key = (
            src.axes.clone(),
            src.placements(params),
            dst.axes.clone(),
            dst.placements(params),
            params.to_vec(),
            bucket_bytes,
        );
        if let Some(found) = self
            .plans
            .lock()
            .ok()
            .and_then(|plans| plans.get(&key).cloned())
        {
            return Ok(found);
        }
        let made = Arc::new(plan(params, src, dst, bucket_bytes)?);
        if let Ok(mut plans) = self.plans.lock() {
            plans.insert(key, made.clone());
        }
        Ok(made)
    }

    pub fn len(&self) -> usize {
        self.plans.lock().map(|plans| plans.len()).unwrap_or(0)
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}
