//! Running a plan over a communicator: each source rank packs its buckets and sends them; each
//! destination rank receives from every source concurrently and unpacks into its buffer. A rank
//! may be both (colocated trainer and rollout); sends and receives then run side by side.

use super::local::{pack, unpack};
use super::plan::Plan;
use super::ReshardError;
use crate::collective::Communicator;
use futures::StreamExt;
use serde::{Deserialize, Serialize};
use std::sync::Mutex;

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

/// Executes this rank's part of `plan`. `source` is this rank's buffer if it is a source;
/// `destination` its buffer (of `plan.dst_bytes[rank]` bytes) if it is a destination.
pub async fn execute<C: Communicator>(
    plan: &Plan,
    comm: &C,
    ranks: RankMap,
    source: Option<&[u8]>,
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
        // Indices, not references: closures over borrowed items make the future's Send bound
        // higher-ranked, which the compiler cannot prove.
        let mine: Vec<usize> = (0..plan.buckets.len())
            .filter(|index| plan.buckets[*index].src == src)
            .collect();
        let count = mine.len();
        // Up to four buckets in flight, to different destinations in parallel.
        let mut sends = futures::stream::iter(mine.into_iter().map(move |index| async move {
            let bucket = &plan.buckets[index];
            let message = pack(plan, bucket, buffer)?;
            comm.send(ranks.dst_base + bucket.dst, bytes::Bytes::from(message))
                .await
                .map_err(|err| {
                    ReshardError::Buffer(format!(
                        "sending a bucket to destination {}: {err}",
                        bucket.dst
                    ))
                })?;
            Ok::<u64, ReshardError>(bucket.bytes)
        }))
        .buffered(4);
        let mut total = 0;
        while let Some(sent) = sends.next().await {
            total += sent?;
        }
        Ok((total, count))
    };
    let receiving = async {
        let Some((dst, buffer)) = my_dst.zip(destination) else {
            return Ok::<(u64, usize), ReshardError>((0, 0));
        };
        let buffer = Mutex::new(buffer);
        let buffer = &buffer;
        let per_source = (0..plan.src_ranks).map(move |src| {
            async move {
                let mut bytes = 0;
                let mut count = 0;
                // Buckets from one source arrive in plan order.
                for bucket in plan
                    .buckets
                    .iter()
                    .filter(|bucket| bucket.src == src && bucket.dst == dst)
                {
                    let message = comm
                        .recv(ranks.src_base + bucket.src)
                        .await
                        .map_err(|err| {
                            ReshardError::Buffer(format!(
                                "receiving from source {}: {err}",
                                bucket.src
                            ))
                        })?;
                    let mut target = buffer
                        .lock()
                        .map_err(|_| ReshardError::Buffer("buffer lock poisoned".into()))?;
                    unpack(plan, bucket, &message, &mut target)?;
                    bytes += bucket.bytes;
                    count += 1;
                }
                Ok::<(u64, usize), ReshardError>((bytes, count))
            }
        });
        let mut total = (0, 0);
        for result in futures::future::join_all(per_source).await {
            let (bytes, count) = result?;
            total.0 += bytes;
            total.1 += count;
        }
        Ok(total)
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
