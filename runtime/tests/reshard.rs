//! Resharding between real worker processes over the TCP communicator: for each layout pair the
//! recipes use, source actors send their pieces and every destination actor ends with buffers
//! bit-identical to what its layout should hold (compared by checksum), and the collectives
//! (all-reduce, all-gather, reduce-scatter, broadcast) give the same answers on every rank. Each
//! runs three times: over the sockets only (as between machines), with every message read
//! directly from the sender's memory, and with every message through shared segments (the
//! workers share this machine); the resharding also runs from sources kept in shared buffers,
//! read in place, and from shared buffers whose destinations refuse to read in place (each
//! message offered, refused, and sent again another way). The senders' counts confirm which way
//! the messages went.
//!
//! Run: `cargo test -p troupe --test reshard`

use bytes::Bytes;
use serde::{Deserialize, Serialize};
use std::time::Duration;
use troupe::collective::{Communicator, TcpCommunicator};
use troupe::objects::SharedBuffer;
use troupe::reshard::local::{buffer_from_whole, synthetic_whole};
use troupe::reshard::{execute, execute_from_shared, LayoutSpec, ParamSpec, PlanCache, RankMap};
use troupe::{Cluster, SpawnOptions};

/// What a peer is asked to do.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Job {
    pub group: String,
    pub rank: usize,
    pub src: LayoutSpec,
    pub dst: LayoutSpec,
    pub params: Vec<(String, Vec<u64>)>,
    pub bucket_bytes: u64,
    pub way: Way,
}

/// How the messages travel.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Way {
    Sockets,
    DirectReads,
    SharedSegments,
    /// The sources' buffers in shared memory, read in place.
    SharedBuffers,
    /// The same, with every destination refusing to read in place: every message is offered,
    /// refused, and sent again through a shared segment.
    SharedBuffersRefused,
}

/// Joins `group` so that every message goes `way`.
async fn join(group: &str, rank: usize, world: usize, way: Way) -> anyhow::Result<TcpCommunicator> {
    let cluster = Cluster::current()?;
    let mut comm = TcpCommunicator::rendezvous_with(
        &cluster,
        group,
        rank,
        world,
        Duration::from_secs(30),
        way != Way::Sockets,
    )
    .await?;
    comm.shared_memory_min_bytes = 0;
    if way == Way::DirectReads {
        comm.enable_direct_reads();
    }
    if way == Way::SharedBuffersRefused {
        comm.refuse_in_place_reads();
    }
    Ok(comm)
}

/// How many of a rank's sends went through shared segments, and how many were read in place
/// (directly from its memory, or from its shared buffer).
fn went(comm: &TcpCommunicator) -> (u64, u64) {
    let in_place = comm.direct_read_messages() + comm.shared_buffer_messages();
    (comm.shared_memory_messages() - in_place, in_place)
}

fn fnv(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf29ce484222325, |hash, byte| {
        (hash ^ *byte as u64).wrapping_mul(0x100000001b3)
    })
}

/// One rank of a resharding group.
pub struct ReshardPeer;

#[troupe::actor]
impl ReshardPeer {
    pub fn new() -> Self {
        ReshardPeer
    }

    /// Joins the group, moves its part, and returns (checksum received, checksum expected)
    /// when it is a destination, and how many messages it sent through shared segments and by
    /// direct reads.
    pub async fn run(&self, job: Job) -> anyhow::Result<(Option<(u64, u64)>, (u64, u64))> {
        let (src, dst) = (job.src.layout(), job.dst.layout());
        let params: Vec<ParamSpec> = job
            .params
            .iter()
            .map(|(name, shape)| ParamSpec::new(name, shape, 4))
            .collect();
        let world = src.ranks() + dst.ranks();
        let comm = join(&job.group, job.rank, world, job.way).await?;
        let plan = PlanCache::new().get(&params, &src, &dst, job.bucket_bytes)?;
        let whole = synthetic_whole(&params);
        let ranks = RankMap {
            src_base: 0,
            dst_base: src.ranks(),
        };
        if job.rank < src.ranks() {
            let buffer = buffer_from_whole(&src, &params, job.rank, &whole)?;
            if matches!(job.way, Way::SharedBuffers | Way::SharedBuffersRefused) {
                let mut shared = SharedBuffer::new(buffer.len())?;
                shared.rewrite(|bytes| bytes.copy_from_slice(&buffer))?;
                execute_from_shared(&plan, &comm, ranks, Some(&shared), None).await?;
            } else {
                execute(&plan, &comm, ranks, Some(&buffer), None).await?;
            }
            Ok((None, went(&comm)))
        } else {
            let rank = job.rank - src.ranks();
            let mut buffer = vec![0_u8; plan.dst_bytes[rank] as usize];
            execute(&plan, &comm, ranks, None, Some(&mut buffer)).await?;
            let expected = buffer_from_whole(&dst, &params, rank, &whole)?;
            Ok((Some((fnv(&buffer), fnv(&expected))), went(&comm)))
        }
    }

    /// Runs every collective once and returns what this rank saw.
    pub async fn collectives(
        &self,
        group: String,
        rank: usize,
        world: usize,
        way: Way,
    ) -> anyhow::Result<(Vec<f32>, Vec<u8>, Vec<f32>, Vec<u8>)> {
        let comm = join(&group, rank, world, way).await?;
        let mut values: Vec<f32> = (0..10).map(|i| (i * (rank + 1)) as f32).collect();
        comm.all_reduce_sum(&mut values).await?;
        let gathered = comm
            .all_gather(Bytes::from(vec![rank as u8; rank + 1]))
            .await?
            .concat();
        let scattered = comm.reduce_scatter_sum(vec![1.0; 7]).await?;
        let root = world - 1;
        let message = (rank == root).then(|| Bytes::from_static(b"from the root"));
        let broadcast = comm.broadcast(root, message).await?;
        check_way(way, went(&comm))?;
        Ok((values, gathered, scattered, broadcast.to_vec()))
    }
}

/// The counts (shared segments, direct reads) of some sends are what `way` should give.
fn check_way(way: Way, (segments, direct): (u64, u64)) -> anyhow::Result<()> {
    let right = match way {
        Way::Sockets => segments == 0 && direct == 0,
        Way::DirectReads | Way::SharedBuffers => segments == 0 && direct > 0,
        Way::SharedSegments | Way::SharedBuffersRefused => segments > 0 && direct == 0,
    };
    anyhow::ensure!(
        right,
        "{way:?}: {segments} messages through shared segments, {direct} read directly"
    );
    Ok(())
}

fn small_llama() -> Vec<(String, Vec<u64>)> {
    let (hidden, ffn, vocab) = (16, 24, 40);
    let mut params = vec![("model.embed_tokens.weight".to_string(), vec![vocab, hidden])];
    for layer in 0..2 {
        params.push((
            format!("model.layers.{layer}.input_layernorm.weight"),
            vec![hidden],
        ));
        for name in ["q_proj", "k_proj", "v_proj", "o_proj"] {
            params.push((
                format!("model.layers.{layer}.self_attn.{name}.weight"),
                vec![hidden, hidden],
            ));
        }
        params.push((
            format!("model.layers.{layer}.mlp.gate_proj.weight"),
            vec![ffn, hidden],
        ));
        params.push((
            format!("model.layers.{layer}.mlp.down_proj.weight"),
            vec![hidden, ffn],
        ));
    }
    params
}

async fn reshard_pair(
    cluster: &Cluster,
    name: &str,
    src: LayoutSpec,
    dst: LayoutSpec,
    way: Way,
) -> anyhow::Result<()> {
    let world = src.layout().ranks() + dst.layout().ranks();
    let group = format!("{name}-{way:?}-{}", std::process::id());
    let mut peers = Vec::new();
    for _ in 0..world {
        peers.push(ReshardPeer::spawn(cluster, SpawnOptions::new().num_cpus(0.1)).await?);
    }
    let jobs = peers.iter().enumerate().map(|(rank, peer)| {
        peer.run(Job {
            group: group.clone(),
            rank,
            src: src.clone(),
            dst: dst.clone(),
            params: small_llama(),
            bucket_bytes: 2048,
            way,
        })
    });
    let results = futures::future::join_all(jobs).await;
    // Every rank's error, not only the first in rank order: the rank that failed first is the
    // cause, the others mostly report its connection closing.
    let failures: Vec<String> = results
        .iter()
        .enumerate()
        .filter_map(|(rank, result)| {
            result
                .as_ref()
                .err()
                .map(|err| format!("rank {rank}: {err}"))
        })
        .collect();
    anyhow::ensure!(
        failures.is_empty(),
        "{name}: {} of {world} ranks failed:\n  {}",
        failures.len(),
        failures.join("\n  ")
    );
    let mut destinations = 0;
    let (mut segments, mut direct) = (0, 0);
    for (rank, result) in results.into_iter().enumerate() {
        let (checksums, (by_segment, by_direct)) = result?;
        segments += by_segment;
        direct += by_direct;
        if let Some((got, want)) = checksums {
            anyhow::ensure!(
                got == want,
                "{name}: rank {rank} checksum {got:x}, expected {want:x}"
            );
            destinations += 1;
        }
    }
    anyhow::ensure!(
        destinations == dst.layout().ranks(),
        "{name}: {destinations} destinations reported"
    );
    check_way(way, (segments, direct))?;
    for peer in &peers {
        cluster.kill(peer).await?;
    }
    Ok(())
}

async fn all(cluster: &Cluster) -> anyhow::Result<()> {
    let pairs = [
        (
            "fsdp2-to-tp2x2",
            LayoutSpec::Fsdp(2),
            LayoutSpec::TensorParallel { tp: 2, replicas: 2 },
        ),
        (
            "tp4-to-tp2",
            LayoutSpec::TensorParallel { tp: 4, replicas: 1 },
            LayoutSpec::TensorParallel { tp: 2, replicas: 1 },
        ),
        (
            "tp2-to-full3",
            LayoutSpec::TensorParallel { tp: 2, replicas: 1 },
            LayoutSpec::Replicated(3),
        ),
        (
            "full-to-tp4",
            LayoutSpec::Replicated(1),
            LayoutSpec::TensorParallel { tp: 4, replicas: 1 },
        ),
    ];
    for way in [
        Way::Sockets,
        Way::DirectReads,
        Way::SharedSegments,
        Way::SharedBuffers,
        Way::SharedBuffersRefused,
    ] {
        for (name, src, dst) in pairs.clone() {
            reshard_pair(cluster, name, src, dst, way).await?;
            println!("test reshard_{name}_{way:?} ... ok");
        }
        // Collectives send no shared buffers: that way is resharding's alone.
        if !matches!(way, Way::SharedBuffers | Way::SharedBuffersRefused) {
            collectives(cluster, way).await?;
            println!("test collectives_{way:?} ... ok");
        }
    }
    Ok(())
}

async fn collectives(cluster: &Cluster, way: Way) -> anyhow::Result<()> {
    let world = 3;
    let mut peers = Vec::new();
    for _ in 0..world {
        peers.push(ReshardPeer::spawn(cluster, SpawnOptions::new().num_cpus(0.1)).await?);
    }
    let group = format!("collectives-{way:?}-{}", std::process::id());
    let results = futures::future::join_all(
        peers
            .iter()
            .enumerate()
            .map(|(rank, peer)| peer.collectives(group.clone(), rank, world, way)),
    )
    .await;
    let expected_sum: Vec<f32> = (0..10).map(|i| (i * (1 + 2 + 3)) as f32).collect();
    for (rank, result) in results.into_iter().enumerate() {
        let (sum, gathered, scattered, broadcast) = result?;
        anyhow::ensure!(sum == expected_sum, "rank {rank}: all-reduce gave {sum:?}");
        anyhow::ensure!(
            gathered == vec![0, 1, 1, 2, 2, 2],
            "rank {rank}: all-gather gave {gathered:?}"
        );
        let chunk = troupe::reshard::layout::chunk(7, world, rank);
        anyhow::ensure!(
            scattered == vec![3.0; (chunk.1 - chunk.0) as usize],
            "rank {rank}: reduce-scatter gave {scattered:?}"
        );
        anyhow::ensure!(
            broadcast == b"from the root",
            "rank {rank}: broadcast gave {broadcast:?}"
        );
    }
    for peer in &peers {
        cluster.kill(peer).await?;
    }
    Ok(())
}

fn main() -> std::process::ExitCode {
    troupe::init();
    let tests =
        troupe::testing::with_local_cluster(None, |cluster| async move { all(&cluster).await });
    troupe::testing::run_tests(23, Duration::from_secs(240), tests)
}
