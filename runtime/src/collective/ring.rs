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

/// Reduce-scatter phase over `data` in place: afterwards chunk `rank` holds the full sum.
async fn reduce_scatter_in_place(
    comm: &impl Communicator,
    data: &mut [f32],
) -> Result<(), CollectiveError> {
    let (rank, world, right, left) = neighbours(comm);
    for step in 0..world.saturating_sub(1) {
        let send_index = (rank + 2 * world - step - 1) % world;
        let recv_index = (rank + 2 * world - step - 2) % world;
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
        for (value, add) in target.iter_mut().zip(incoming) {
            *value += add;
        }
    }
    Ok(())
}

/// All-gather phase over `data` in place, starting from each rank owning chunk `rank`.
async fn all_gather_in_place(
    comm: &impl Communicator,
    data: &mut [f32],
) -> Result<(), CollectiveError> {
    let (rank, world, right, left) = neighbours(comm);
    for step in 0..world.saturating_sub(1) {
        let send_index = (rank + world - step) % world;
        let recv_index = (rank + 2 * world - step - 1) % world;
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
        target.copy_from_slice(&incoming);
    }
    Ok(())
}

pub(super) async fn all_reduce_sum(
    comm: &impl Communicator,
    data: &mut [f32],
) -> Result<(), CollectiveError> {
    reduce_scatter_in_place(comm, data).await?;
    all_gather_in_place(comm, data).await
}

pub(super) async fn reduce_scatter_sum(
    comm: &impl Communicator,
    mut data: Vec<f32>,
) -> Result<Vec<f32>, CollectiveError> {
    reduce_scatter_in_place(comm, &mut data).await?;
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
