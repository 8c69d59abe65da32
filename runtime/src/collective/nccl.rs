//! The NCCL backend (`cuda` feature): the same `Communicator`, with messages and all-reduce going
//! through NCCL on one GPU per rank. An NCCL communicator is not `Send`, so each rank's lives on
//! a thread of its own that serves commands from a channel. Ranks rendezvous through the head's
//! key-value store: rank 0 creates the NCCL unique id and publishes it. Compiled everywhere (the
//! libraries are loaded at run time); usable only where `cuda::nccl_present()` holds.
//!
//! Not yet run on a GPU (no machine was lent when it was written). Every collective is NCCL's
//! own (all-reduce, all-gather, reduce-scatter, broadcast; variable sizes are padded to the
//! largest and trimmed). Point-to-point calls run one at a time on the rank's stream, so
//! patterns where a rank only sends or only receives at a time (resharding) work; a caller that
//! sends and receives at once on one NCCL communicator would need NCCL group calls.

use super::{CollectiveError, Communicator};
use crate::cluster::Cluster;
use bytes::Bytes;
use cudarc::driver::CudaContext;
use cudarc::nccl::{Comm, Id, ReduceOp};
use std::sync::mpsc as std_mpsc;
use std::time::Duration;
use tokio::sync::oneshot;

enum Command {
    Send(usize, Bytes, oneshot::Sender<Result<(), String>>),
    Recv(usize, oneshot::Sender<Result<Bytes, String>>),
    AllReduce(Vec<f32>, oneshot::Sender<Result<Vec<f32>, String>>),
    AllGather(Bytes, oneshot::Sender<Result<Vec<Bytes>, String>>),
    ReduceScatter(Vec<f32>, oneshot::Sender<Result<Vec<f32>, String>>),
    Broadcast(usize, Option<Bytes>, oneshot::Sender<Result<Bytes, String>>),
}

/// A group's members connected through NCCL, one GPU each.
pub struct NcclCommunicator {
    rank: usize,
    world: usize,
    commands: std::sync::Mutex<std_mpsc::Sender<Command>>,
}

impl NcclCommunicator {
    /// Joins group `group` as `rank` of `world` on CUDA device `device`.
    pub async fn rendezvous(
        cluster: &Cluster,
        group: &str,
        rank: usize,
        world: usize,
        device: usize,
        timeout: Duration,
    ) -> Result<Self, CollectiveError> {
        let fail = |why: String| CollectiveError::Rendezvous {
            group: group.to_string(),
            why,
        };
        if !(crate::cuda::driver_present() && crate::cuda::nccl_present()) {
            return Err(fail(
                "the CUDA driver or NCCL library is not present".to_string(),
            ));
        }
        if rank >= world {
            return Err(CollectiveError::BadRank { rank, world });
        }
        let key = format!("nccl/{group}/id");
        let id = if rank == 0 {
            let id = Id::new().map_err(|err| fail(format!("creating the NCCL id: {err:?}")))?;
            let bytes: Vec<u8> = id.internal().iter().map(|c| *c as u8).collect();
            cluster
                .kv_put(&key, Bytes::from(bytes), true)
                .await
                .map_err(|err| fail(err.to_string()))?;
            id
        } else {
            let bytes = cluster
                .kv_wait(&key, timeout)
                .await
                .map_err(|err| fail(err.to_string()))?
                .ok_or_else(|| {
                    fail(format!(
                        "rank 0 did not publish the NCCL id within {timeout:?}"
                    ))
                })?;
            if bytes.len() != 128 {
                return Err(fail(format!(
                    "the NCCL id has {} bytes, not 128",
                    bytes.len()
                )));
            }
            let mut internal = [0 as core::ffi::c_char; 128];
            for (slot, byte) in internal.iter_mut().zip(bytes.iter()) {
                *slot = *byte as core::ffi::c_char;
            }
            Id::uninit(internal)
        };
        let (commands, inbox) = std_mpsc::channel();
        let (ready, started) = oneshot::channel();
        std::thread::Builder::new()
            .name(format!("troupe-nccl-{rank}"))
            .spawn(move || serve(device, rank, world, id, inbox, ready))
            .map_err(|err| fail(err.to_string()))?;
        tokio::time::timeout(timeout, started)
            .await
            .map_err(|_| {
                fail(format!(
                    "NCCL initialisation did not finish within {timeout:?}"
                ))
            })?
            .map_err(|_| fail("the NCCL thread exited".to_string()))?
            .map_err(fail)?;
        Ok(NcclCommunicator {
            rank,
            world,
            commands: std::sync::Mutex::new(commands),
        })
    }

    /// Hands a command to the NCCL thread and waits for its answer; the error is its text.
    async fn ask<T>(
        &self,
        what: &str,
        command: impl FnOnce(oneshot::Sender<Result<T, String>>) -> Command,
    ) -> Result<T, String> {
        let (reply, answer) = oneshot::channel();
        self.commands
            .lock()
            .map_err(|_| "NCCL command queue poisoned".to_string())?
            .send(command(reply))
            .map_err(|_| "the NCCL thread is gone".to_string())?;
        answer
            .await
            .map_err(|_| format!("the NCCL thread dropped the {what}"))?
    }
}

/// The thread that owns the NCCL communicator.
fn serve(
    device: usize,
    rank: usize,
    world: usize,
    id: Id,
    inbox: std_mpsc::Receiver<Command>,
    ready: oneshot::Sender<Result<(), String>>,
) {
    let setup = CudaContext::new(device)
        .map_err(|err| format!("CUDA device {device}: {err:?}"))
        .and_then(|context| {
            let stream = context.default_stream();
            Comm::from_rank(stream, rank, world, id).map_err(|err| format!("NCCL init: {err:?}"))
        });
    let comm = match setup {
        Ok(comm) => {
            let _ = ready.send(Ok(()));
            comm
        }
        Err(why) => {
            let _ = ready.send(Err(why));
            return;
        }
    };
    let stream = comm.stream();
    while let Ok(command) = inbox.recv() {
        match command {
            Command::Send(peer, message, reply) => {
                let outcome = (|| -> Result<(), String> {
                    let header = stream
                        .memcpy_stod(&(message.len() as u64).to_le_bytes())
                        .map_err(|e| format!("{e:?}"))?;
                    comm.send(&header, peer as i32)
                        .map_err(|e| format!("{e:?}"))?;
                    if !message.is_empty() {
                        let body = stream
                            .memcpy_stod(&message[..])
                            .map_err(|e| format!("{e:?}"))?;
                        comm.send(&body, peer as i32)
                            .map_err(|e| format!("{e:?}"))?;
                    }
                    stream.synchronize().map_err(|e| format!("{e:?}"))
                })();
                let _ = reply.send(outcome);
            }
            Command::Recv(peer, reply) => {
                let outcome = (|| -> Result<Bytes, String> {
                    let mut header = stream.alloc_zeros::<u8>(8).map_err(|e| format!("{e:?}"))?;
                    comm.recv(&mut header, peer as i32)
                        .map_err(|e| format!("{e:?}"))?;
                    let length = stream.memcpy_dtov(&header).map_err(|e| format!("{e:?}"))?;
                    let length = u64::from_le_bytes(
                        length.try_into().map_err(|_| "bad header".to_string())?,
                    ) as usize;
                    if length == 0 {
                        return Ok(Bytes::new());
                    }
                    let mut body = stream
                        .alloc_zeros::<u8>(length)
                        .map_err(|e| format!("{e:?}"))?;
                    comm.recv(&mut body, peer as i32)
                        .map_err(|e| format!("{e:?}"))?;
                    Ok(Bytes::from(
                        stream.memcpy_dtov(&body).map_err(|e| format!("{e:?}"))?,
                    ))
                })();
                let _ = reply.send(outcome);
            }
            Command::AllGather(mine, reply) => {
                let outcome = (|| -> Result<Vec<Bytes>, String> {
                    // Sizes first, then every rank's bytes padded to the largest.
                    let size = stream
                        .memcpy_stod(&[mine.len() as u64])
                        .map_err(|e| format!("{e:?}"))?;
                    let mut sizes = stream
                        .alloc_zeros::<u64>(world)
                        .map_err(|e| format!("{e:?}"))?;
                    comm.all_gather(&size, &mut sizes)
                        .map_err(|e| format!("{e:?}"))?;
                    let sizes = stream.memcpy_dtov(&sizes).map_err(|e| format!("{e:?}"))?;
                    let widest = sizes.iter().copied().max().unwrap_or(0).max(1) as usize;
                    let mut padded = mine.to_vec();
                    padded.resize(widest, 0);
                    let send = stream.memcpy_stod(&padded).map_err(|e| format!("{e:?}"))?;
                    let mut gathered = stream
                        .alloc_zeros::<u8>(widest * world)
                        .map_err(|e| format!("{e:?}"))?;
                    comm.all_gather(&send, &mut gathered)
                        .map_err(|e| format!("{e:?}"))?;
                    let gathered = stream
                        .memcpy_dtov(&gathered)
                        .map_err(|e| format!("{e:?}"))?;
                    Ok(sizes
                        .iter()
                        .enumerate()
                        .map(|(rank, size)| {
                            Bytes::copy_from_slice(
                                &gathered[rank * widest..rank * widest + *size as usize],
                            )
                        })
                        .collect())
                })();
                let _ = reply.send(outcome);
            }
            Command::ReduceScatter(values, reply) => {
                let outcome = (|| -> Result<Vec<f32>, String> {
                    // Equal chunks of ceil(len / world), as the ring version cuts them.
                    let chunk = values.len().div_ceil(world).max(1);
                    let mut padded = values.clone();
                    padded.resize(chunk * world, 0.0);
                    let send = stream.memcpy_stod(&padded).map_err(|e| format!("{e:?}"))?;
                    let mut mine = stream
                        .alloc_zeros::<f32>(chunk)
                        .map_err(|e| format!("{e:?}"))?;
                    comm.reduce_scatter(&send, &mut mine, &ReduceOp::Sum)
                        .map_err(|e| format!("{e:?}"))?;
                    let mine = stream.memcpy_dtov(&mine).map_err(|e| format!("{e:?}"))?;
                    let (from, to) =
                        crate::reshard::layout::chunk(values.len() as u64, world, rank);
                    Ok(mine[..(to - from) as usize].to_vec())
                })();
                let _ = reply.send(outcome);
            }
            Command::Broadcast(root, message, reply) => {
                let outcome = (|| -> Result<Bytes, String> {
                    let length = message.as_ref().map(|m| m.len() as u64).unwrap_or(0);
                    let mut size = stream
                        .memcpy_stod(&[length])
                        .map_err(|e| format!("{e:?}"))?;
                    comm.broadcast_in_place(&mut size, root as i32)
                        .map_err(|e| format!("{e:?}"))?;
                    let length = stream
                        .memcpy_dtov(&size)
                        .map_err(|e| format!("{e:?}"))?
                        .first()
                        .copied()
                        .unwrap_or(0) as usize;
                    let mut body = match &message {
                        Some(bytes) if rank == root => stream
                            .memcpy_stod(&bytes[..])
                            .map_err(|e| format!("{e:?}"))?,
                        _ => stream
                            .alloc_zeros::<u8>(length.max(1))
                            .map_err(|e| format!("{e:?}"))?,
                    };
                    if length > 0 {
                        comm.broadcast_in_place(&mut body, root as i32)
                            .map_err(|e| format!("{e:?}"))?;
                    }
                    let body = stream.memcpy_dtov(&body).map_err(|e| format!("{e:?}"))?;
                    Ok(Bytes::from(body).slice(..length))
                })();
                let _ = reply.send(outcome);
            }
            Command::AllReduce(values, reply) => {
                let outcome = (|| -> Result<Vec<f32>, String> {
                    let mut buffer = stream
                        .memcpy_stod(&values[..])
                        .map_err(|e| format!("{e:?}"))?;
                    comm.all_reduce_in_place(&mut buffer, &ReduceOp::Sum)
                        .map_err(|e| format!("{e:?}"))?;
                    stream.memcpy_dtov(&buffer).map_err(|e| format!("{e:?}"))
                })();
                let _ = reply.send(outcome);
            }
        }
    }
}

impl Communicator for NcclCommunicator {
    fn rank(&self) -> usize {
        self.rank
    }

    fn world_size(&self) -> usize {
        self.world
    }

    async fn send(&self, peer: usize, message: Bytes) -> Result<(), CollectiveError> {
        self.ask("send", |reply| Command::Send(peer, message, reply))
            .await
            .map_err(|why| CollectiveError::Peer { peer, why })
    }

    async fn recv(&self, peer: usize) -> Result<Bytes, CollectiveError> {
        self.ask("receive", |reply| Command::Recv(peer, reply))
            .await
            .map_err(|why| CollectiveError::Peer { peer, why })
    }

    async fn all_gather(&self, mine: Bytes) -> Result<Vec<Bytes>, CollectiveError> {
        self.ask("all-gather", |reply| Command::AllGather(mine, reply))
            .await
            .map_err(CollectiveError::Invalid)
    }

    async fn reduce_scatter_sum(&self, data: Vec<f32>) -> Result<Vec<f32>, CollectiveError> {
        self.ask("reduce-scatter", |reply| {
            Command::ReduceScatter(data, reply)
        })
        .await
        .map_err(CollectiveError::Invalid)
    }

    async fn broadcast(
        &self,
        root: usize,
        message: Option<Bytes>,
    ) -> Result<Bytes, CollectiveError> {
        if root >= self.world {
            return Err(CollectiveError::BadRank {
                rank: root,
                world: self.world,
            });
        }
        if self.rank == root && message.is_none() {
            return Err(CollectiveError::Invalid(
                "the broadcast root has no message".to_string(),
            ));
        }
        self.ask("broadcast", |reply| {
            Command::Broadcast(root, message, reply)
        })
        .await
        .map_err(CollectiveError::Invalid)
    }

    async fn all_reduce_sum(&self, data: &mut [f32]) -> Result<(), CollectiveError> {
        let summed = self
            .ask("all-reduce", |reply| {
                Command::AllReduce(data.to_vec(), reply)
            })
            .await
            .map_err(CollectiveError::Invalid)?;
        data.copy_from_slice(&summed);
        Ok(())
    }
}
