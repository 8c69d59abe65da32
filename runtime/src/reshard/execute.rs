//! Running a plan over a communicator: each source rank packs its buckets and sends them; each
//! destination rank receives from every source concurrently and unpacks into its buffer. A rank
//! may be both (colocated trainer and rollout); sends and receives then run side by side.

use super::local::{destination_slices, pieces, segments, source_slices};

/// Size of the frames a bucket travels in (one message each).
const FRAME_BYTES: usize = 64 << 20;

/// A bucket's message cut into frames: `[from, to)` byte ranges.
fn frames(total: usize) -> Vec<(usize, usize)> {
    (0..total)
        .step_by(FRAME_BYTES)
        .map(|from| (from, (from + FRAME_BYTES).min(total)))
        .collect()
}
use super::plan::Plan;
use super::ReshardError;
use crate::collective::Communicator;
use serde::{Deserialize, Serialize};

/// Which communicator ranks play a plan's ranks: source rank i is `src_base + i`, destination
/// rank j is `dst_base + j`.
#[derive(Debug, Clone, Copy, Serialize, Deserialize)]
pub struct RankMap {
    pub src_base: usize,
    pub dst_base: usize,
}

/// What one rank did.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct Moved {
    pub bytes_sent: u64,
    pub bytes_received: u64,
    pub buckets_sent: usize,
    pub buckets_received: usize,
}

/// A source rank's buffer: plain bytes, or a buffer in shared memory that destinations on the
/// same machine read in place.
#[derive(Clone, Copy)]
enum Source<'a> {
    Bytes(&'a [u8]),
    Shared(&'a crate::objects::SharedBuffer),
}

/// Executes this rank's part of `plan`. `source` is this rank's buffer if it is a source;
/// `destination` its buffer (of `plan.dst_bytes[rank]` bytes) if it is a destination.
pub async fn execute<C: Communicator>(
    plan: &Plan,
    comm: &C,
    ranks: RankMap,
    source: Option<&[u8]>,
    destination: Option<&mut [u8]>,
) -> Result<Moved, ReshardError> {
    execute_from(plan, comm, ranks, source.map(Source::Bytes), destination).await
}

/// As `execute`, with the source buffer in shared memory: a destination on the same machine
/// copies its pieces straight out of it (one copy in all), others receive them as messages. It
/// returns once every destination has its pieces, so the buffer may be rewritten after.
pub async fn execute_from_shared<C: Communicator>(
    plan: &Plan,
    comm: &C,
    ranks: RankMap,
    source: Option<&crate::objects::SharedBuffer>,
    destination: Option<&mut [u8]>,
) -> Result<Moved, ReshardError> {
    execute_from(plan, comm, ranks, source.map(Source::Shared), destination).await
}

async fn execute_from<C: Communicator>(
    plan: &Plan,
    comm: &C,
    ranks: RankMap,
    source: Option<Source<'_>>,
    destination: Option<&mut [u8]>,
) -> Result<Moved, ReshardError> {
    let me = comm.rank();
    let my_src = me
        .checked_sub(ranks.src_base)
        .filter(|rank| *rank < plan.src_ranks);
    let my_dst = me
        .checked_sub(ranks.dst_base)
        .filter(|rank| *rank < plan.dst_ranks);
    let wrong = |why: String| ReshardError::Buffer(why);
    if my_src.is_some() != source.is_some() {
        return Err(wrong(format!(
            "communicator rank {me}: source buffer given: {}, is a source: {}",
            source.is_some(),
            my_src.is_some()
        )));
    }
    if my_dst.is_some() != destination.is_some() {
        return Err(wrong(format!(
            "communicator rank {me}: destination buffer given: {}, is a destination: {}",
            destination.is_some(),
            my_dst.is_some()
        )));
    }
    let sending = async {
        let Some((src, buffer)) = my_src.zip(source) else {
            return Ok::<(u64, usize), ReshardError>((0, 0));
        };
        // Frames of one (source, destination) pair must arrive in plan order, so each
        // destination gets one sequential sender; destinations are served in parallel. Frames
        // go out as vectored writes straight from the source buffer.
        let destinations: Vec<usize> = (0..plan.dst_ranks).collect();
        let per_destination = destinations.into_iter().map(move |dst| async move {
            let mut total = 0;
            let mut count = 0;
            for bucket in plan
                .buckets
                .iter()
                .filter(|bucket| bucket.src == src && bucket.dst == dst)
            {
                let started = std::time::Instant::now();
                let all = segments(plan, bucket);
                for (from, to) in frames(bucket.bytes as usize) {
                    let ranges = pieces(&all, from, to, false);
                    let sent = match buffer {
                        Source::Bytes(bytes) => {
                            let parts = source_slices(bytes, &ranges)?;
                            comm.send_parts(ranks.dst_base + dst, &parts).await
                        }
                        // Checked against the buffer by `send_shared`.
                        Source::Shared(shared) => {
                            comm.send_shared(ranks.dst_base + dst, shared, &ranges)
                                .await
                        }
                    };
                    sent.map_err(|err| {
                        ReshardError::Buffer(format!("sending to destination {dst}: {err}"))
                    })?;
                }
                tracing::debug!(
                    bytes = bucket.bytes,
                    dst,
                    ms = started.elapsed().as_millis() as u64,
                    "bucket sent"
                );
                total += bucket.bytes;
                count += 1;
            }
            Ok::<(u64, usize), ReshardError>((total, count))
        });
        let mut total = (0, 0);
        for result in futures::future::join_all(per_destination).await {
            let (bytes, count) = result?;
            total.0 += bytes;
            total.1 += count;
        }
        Ok(total)
    };
    let receiving =
        async {
            let Some((dst, buffer)) = my_dst.zip(destination) else {
                return Ok::<(u64, usize), ReshardError>((0, 0));
            };
            // Every frame's pieces of the destination buffer, for every source. They are disjoint
            // (each destination byte arrives once), so the buffer splits into slices up front and
            // each source's frames are received straight into their own slices, in parallel.
            let mut wanted = Vec::new();
            let mut shape: Vec<Vec<(usize, u64)>> = vec![Vec::new(); plan.src_ranks];
            for bucket in plan.buckets.iter().filter(|bucket| bucket.dst == dst) {
                let all = segments(plan, bucket);
                for (from, to) in frames(bucket.bytes as usize) {
                    let frame_pieces = pieces(&all, from, to, true);
                    shape[bucket.src].push((frame_pieces.len(), (to - from) as u64));
                    wanted.extend(frame_pieces);
                }
            }
            let mut slices = destination_slices(buffer, &wanted)?.into_iter();
            let mut per_source: Vec<Vec<Vec<&mut [u8]>>> = Vec::with_capacity(plan.src_ranks);
            for frames_of_source in &shape {
                per_source.push(
                    frames_of_source
                        .iter()
                        .map(|(count, _)| slices.by_ref().take(*count).collect())
                        .collect(),
                );
            }
            let receives = per_source.into_iter().enumerate().map(
                move |(src, mut frames_of_source)| async move {
                    let mut bytes = 0;
                    for targets in frames_of_source.iter_mut() {
                        comm.recv_into(ranks.src_base + src, targets)
                            .await
                            .map_err(|err| {
                                ReshardError::Buffer(format!("receiving from source {src}: {err}"))
                            })?;
                        bytes += targets
                            .iter()
                            .map(|target| target.len() as u64)
                            .sum::<u64>();
                    }
                    Ok::<u64, ReshardError>(bytes)
                },
            );
            let mut total = 0;
            for result in futures::future::join_all(receives).await {
                total += result?;
            }
            let count = plan
                .buckets
                .iter()
                .filter(|bucket| bucket.dst == dst)
                .count();
            tracing::debug!(bytes = total, "buckets received");
            Ok((total, count))
        };
    let (sent, received) = tokio::join!(sending, receiving);
    let (bytes_sent, buckets_sent) = sent?;
    let (bytes_received, buckets_received) = received?;
    Ok(Moved {
        bytes_sent,
        bytes_received,
        buckets_sent,
        buckets_received,
    })
}
