//! Applying a plan to byte buffers: building a rank's buffer from whole parameters, packing a
//! bucket on its source, unpacking it on its destination. Execution over a communicator sends
//! packed buckets; tests and simulations call these directly.

use super::boxes::{runs, IndexBox};
use super::layout::{Layout, ParamSpec};

use super::plan::{Bucket, Plan};
use super::ReshardError;

/// Deterministic bytes for every element of every parameter (tests and benches): byte b of
/// parameter i is a simple function of (b, i), so any misplaced byte shows.
pub fn synthetic_whole(params: &[ParamSpec]) -> Vec<Vec<u8>> {
    params
        .iter()
        .enumerate()
        .map(|(index, param)| {
            let salt = (index as u64).wrapping_mul(7919);
            (0..param.elements() * param.elem_bytes)
                .map(|byte| (byte.wrapping_mul(131).wrapping_add(salt) % 251) as u8)
                .collect()
        })
        .collect()
}

/// The buffer `rank` of `layout` holds, cut from whole parameters (`whole[i]` is parameter i's
/// row-major bytes).
pub fn buffer_from_whole(
    layout: &Layout,
    params: &[ParamSpec],
    rank: usize,
    whole: &[Vec<u8>],
) -> Result<Vec<u8>, ReshardError> {
    let mut out = Vec::new();
    for (param, bytes) in params.iter().zip(whole) {
        let elem = param.elem_bytes as usize;
        if bytes.len() as u64 != param.elements() * param.elem_bytes {
            return Err(ReshardError::Buffer(format!(
                "`{}`: {} bytes for {} elements",
                param.name,
                bytes.len(),
                param.elements()
            )));
        }
        let all = IndexBox::whole(&param.shape);
        for piece in layout.holding(param, rank)? {
            for run in runs(&piece, &all, &piece) {
                let start = run.src as usize * elem;
                out.extend_from_slice(&bytes[start..start + run.len as usize * elem]);
            }
        }
    }
    Ok(out)
}

fn check_len(what: &str, buffer: &[u8], expected: u64) -> Result<(), ReshardError> {
    if buffer.len() as u64 != expected {
        return Err(ReshardError::Buffer(format!(
            "{what} holds {} bytes; the plan expects {expected}",
            buffer.len()
        )));
    }
    Ok(())
}

/// The message for `bucket`, cut from its source rank's buffer.
pub fn pack(plan: &Plan, bucket: &Bucket, src_buffer: &[u8]) -> Result<Vec<u8>, ReshardError> {
    check_len(
        &format!("source rank {}", bucket.src),
        src_buffer,
        plan.src_bytes[bucket.src],
    )?;
    let all = segments(plan, bucket);
    let parts = source_slices(src_buffer, &pieces(&all, 0, bucket.bytes as usize, false))?;
    Ok(parts.concat())
}

/// Writes a received bucket message into its destination rank's buffer.
pub fn unpack(
    plan: &Plan,
    bucket: &Bucket,
    message: &[u8],
    dst_buffer: &mut [u8],
) -> Result<(), ReshardError> {
    check_len(
        &format!("destination rank {}", bucket.dst),
        dst_buffer,
        plan.dst_bytes[bucket.dst],
    )?;
    if message.len() as u64 != bucket.bytes {
        return Err(ReshardError::Buffer(format!(
            "a bucket of {} bytes arrived as {}",
            bucket.bytes,
            message.len()
        )));
    }
    let all = segments(plan, bucket);
    let mut read = 0;
    for target in destination_slices(dst_buffer, &pieces(&all, 0, message.len(), true))? {
        let len = target.len();
        target.copy_from_slice(&message[read..read + len]);
        read += len;
    }
    Ok(())
}

/// A bucket's copy list in bytes: where each contiguous piece sits in the source buffer, the
/// destination buffer and the bucket's message (`at`).
#[derive(Debug, Clone, Copy)]
pub struct Segment {
    pub src: usize,
    pub dst: usize,
    pub at: usize,
    pub len: usize,
}

/// The segments of `bucket`, in message order.
pub fn segments(plan: &Plan, bucket: &Bucket) -> Vec<Segment> {
    let mut out = Vec::new();
    let mut at = 0;
    for transfer in &bucket.transfers {
        let elem = plan.params[transfer.param].elem_bytes as usize;
        let src_base = plan.src_offsets[bucket.src][transfer.param] as usize;
        let dst_base = plan.dst_offsets[bucket.dst][transfer.param] as usize;
        for run in transfer.runs() {
            let len = run.len as usize * elem;
            out.push(Segment {
                src: src_base + run.src as usize * elem,
                dst: dst_base + run.dst as usize * elem,
                at,
                len,
            });
            at += len;
        }
    }
    out
}

/// Index of the segment holding message byte `at`.
fn segment_at(segments: &[Segment], at: usize) -> usize {
    segments.partition_point(|segment| segment.at + segment.len <= at)
}

/// The pieces of message bytes `[from, to)` in a buffer: `(offset, len)` in message order, read
/// from `Segment::src` (for a source) or `Segment::dst` (for a destination).
pub fn pieces(
    segments: &[Segment],
    from: usize,
    to: usize,
    destination: bool,
) -> Vec<(usize, usize)> {
    let mut out = Vec::new();
    let mut index = segment_at(segments, from);
    let mut at = from;
    while at < to {
        let Some(segment) = segments.get(index) else {
            break;
        };
        let skip = at - segment.at;
        let take = (segment.len - skip).min(to - at);
        let base = if destination {
            segment.dst
        } else {
            segment.src
        };
        out.push((base + skip, take));
        at += take;
        index += 1;
    }
    out
}

/// Borrows `pieces` of a source buffer as slices, in order.
pub fn source_slices<'a>(
    buffer: &'a [u8],
    pieces: &[(usize, usize)],
) -> Result<Vec<&'a [u8]>, ReshardError> {
    pieces
        .iter()
        .map(|(start, len)| {
            buffer.get(*start..start + len).ok_or_else(|| {
                ReshardError::Buffer(format!(
                    "source bytes {start}..{} are past its buffer",
                    start + len
                ))
            })
        })
        .collect()
}

/// Splits a destination buffer into mutable slices for `pieces` (which must not overlap),
/// returned in the order of `pieces`.
pub fn destination_slices<'a>(
    buffer: &'a mut [u8],
    pieces: &[(usize, usize)],
) -> Result<Vec<&'a mut [u8]>, ReshardError> {
    let mut order: Vec<usize> = (0..pieces.len()).collect();
    order.sort_by_key(|index| pieces[*index].0);
    let mut slots: Vec<Option<&'a mut [u8]>> = (0..pieces.len()).map(|_| None).collect();
    let mut rest = buffer;
    let mut consumed = 0;
    for index in order {
        let (start, len) = pieces[index];
        if start < consumed {
            return Err(ReshardError::Buffer(format!(
                "destination bytes from {start} are written twice"
            )));
        }
        let skip = start - consumed;
        if skip + len > rest.len() {
            return Err(ReshardError::Buffer(format!(
                "destination bytes {start}..{} are past its buffer",
                start + len
            )));
        }
        let (_, tail) = std::mem::take(&mut rest).split_at_mut(skip);
        let (piece, tail) = tail.split_at_mut(len);
        slots[index] = Some(piece);
        rest = tail;
        consumed = start + len;
    }
    Ok(slots
        .into_iter()
        .map(|slot| slot.unwrap_or_default())
        .collect())
}

/// Runs a whole plan between in-memory buffers; returns the destination buffers.
pub fn apply(plan: &Plan, src_buffers: &[Vec<u8>]) -> Result<Vec<Vec<u8>>, ReshardError> {
    let mut out: Vec<Vec<u8>> = plan
        .dst_bytes
        .iter()
        .map(|bytes| vec![0; *bytes as usize])
        .collect();
    for bucket in &plan.buckets {
        let message = pack(plan, bucket, &src_buffers[bucket.src])?;
        unpack(plan, bucket, &message, &mut out[bucket.dst])?;
    }
    Ok(out)
}
