//! Ring collectives on top of send and recv: each step every rank sends to its right neighbour
//! while receiving from its left one, so each link carries (n-1)/n of the data once per phase.

use super::{bytes_to_f32, f32_to_bytes, CollectiveError, Communicator};
use crate::reshard::layout::chunk;
use bytes::Bytes;

fn neighbours(comm: &impl Communicator) -> (usize, usize, usize, usize) {
    let (rank, world) = (comm.rank(), comm.world_size());
    (rank, world, (rank + 1) % world, (rank + world - 1) % world)
}

fn bounds(len: usize, world: usize, index: usize) -> std::ops::Range<usize> {
    let (from, to) = chunk(len as u64, world, index);
    from as usize..to as usize
}

/// What a ring phase does with the chunk it receives.
#[derive(Clone, Copy)]
enum Combine {
    /// Reduce-scatter: add it in; afterwards chunk `rank` holds the full sum.
    Add,
    /// All-gather: take it; starts from each rank owning chunk `rank`.
    Replace,
}

/// One ring phase over `data` in place: world - 1 steps, each sending one chunk to the right
/// neighbour while receiving another from the left.
async fn ring_phase(
    comm: &impl Communicator,
    data: &mut [f32],
    combine: Combine,
) -> Result<(), CollectiveError> {
    let (rank, world, right, left) = neighbours(comm);
    // Chunk offsets per phase so that reduce-scatter ends with rank r owning chunk r and
    // all-gather starts from there.
    let lag = match combine {
        Combine::Add => 1,
        Combine::Replace => 0,
    };
    for step in 0..world.saturating_sub(1) {
        let send_index = (rank + 2 * world - step - lag) % world;
        let recv_index = (rank + 2 * world - step - lag - 1) % world;
        let outgoing = f32_to_bytes(&data[bounds(data.len(), world, send_index)]);
        let (sent, received) = tokio::join!(comm.send(right, outgoing), comm.recv(left));
        sent?;
        let incoming = bytes_to_f32(&received?)?;
        let range = bounds(data.len(), world, recv_index);
        let target = &mut data[range];
        if incoming.len() != target.len() {
            return Err(CollectiveError::Peer {
                peer: left,
                why: format!(
                    "sent {} values where {} were expected",
                    incoming.len(),
                    target.len()
                ),
            });
        }
        match combine {
            Combine::Add => target
                .iter_mut()
                .zip(incoming)
                .for_each(|(value, add)| *value += add),
            Combine::Replace => target.copy_from_slice(&incoming),
        }
    }
    Ok(())
}

pub(super) async fn all_reduce_sum(
    comm: &impl Communicator,
    data: &mut [f32],
) -> Result<(), CollectiveError> {
    ring_phase(comm, data, Combine::Add).await?;
    ring_phase(comm, data, Combine::Replace).await
}

pub(super) async fn reduce_scatter_sum(
    comm: &impl Communicator,
    mut data: Vec<f32>,
) -> Result<Vec<f32>, CollectiveError> {
    ring_phase(comm, &mut data, Combine::Add).await?;
    Ok(data[bounds(data.len(), comm.world_size(), comm.rank())].to_vec())
}

pub(super) async fn all_gather(
    comm: &impl Communicator,
    mine: Bytes,
) -> Result<Vec<Bytes>, CollectiveError> {
    let (rank, world, right, left) = neighbours(comm);
    let mut gathered = vec![Bytes::new(); world];
    gathered[rank] = mine;
    for step in 0..world.saturating_sub(1) {
        let send_index = (rank + world - step) % world;
        let recv_index = (rank + 2 * world - step - 1) % world;
        let (sent, received) = tokio::join!(
            comm.send(right, gathered[send_index].clone()),
            comm.recv(left)
        );
        sent?;
        gathered[recv_index] = received?;
    }
    Ok(gathered)
}

pub(super) async fn broadcast(
    comm: &impl Communicator,
    root: usize,
    message: Option<Bytes>,
) -> Result<Bytes, CollectiveError> {
    let (rank, world) = (comm.rank(), comm.world_size());
    if root >= world {
        return Err(CollectiveError::BadRank { rank: root, world });
    }
    if rank == root {
        let message = message.ok_or_else(|| {
            CollectiveError::Invalid("the broadcast root has no message".to_string())
        })?;
        let sends = (0..world)
            .filter(|peer| *peer != root)
            .map(|peer| comm.send(peer, message.clone()));
        for result in futures::future::join_all(sends).await {
            result?;
        }
        Ok(message)
    } else {
        comm.recv(root).await
    }
}
