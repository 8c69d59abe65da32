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
    let mut out = Vec::with_capacity(bucket.bytes as usize);
    for transfer in &bucket.transfers {
        let elem = plan.params[transfer.param].elem_bytes as usize;
        let base = plan.src_offsets[bucket.src][transfer.param] as usize;
        for run in transfer.runs() {
            let start = base + run.src as usize * elem;
            out.extend_from_slice(&src_buffer[start..start + run.len as usize * elem]);
        }
    }
    Ok(out)
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
    let mut read = 0;
    for transfer in &bucket.transfers {
        let elem = plan.params[transfer.param].elem_bytes as usize;
        let base = plan.dst_offsets[bucket.dst][transfer.param] as usize;
        for run in transfer.runs() {
            let len = run.len as usize * elem;
            let start = base + run.dst as usize * elem;
            dst_buffer[start..start + len].copy_from_slice(&message[read..read + len]);
            read += len;
        }
    }
    Ok(())
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
