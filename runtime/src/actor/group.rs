//! `ActorGroup`: N actors of one type that work as one (data-parallel trainers, rollout
//! engines), each knowing its rank and the world size, called together with a dispatch mode:
//! broadcast (same call to all, every result returned in rank order), split (a batch's rows
//! spread over the ranks, results concatenated in rank order), rank 0 only, or one argument per
//! rank. This is the one dispatch implementation: pipelines dispatch their stages through it.
//! Calls take each member's handle by value (handles are cheap clones), so they read
//! `group.broadcast(|member| async move { member.step().await })`. A group has a name (the
//! pipeline graph's node label); members may be anything cheap to clone, so tests can group
//! in-process stand-ins.

use crate::actor::ActorHandle;
use crate::data::Batch;
use crate::error::{Error, Result};
use std::future::Future;

/// A name no other group has, for groups not given one (`named`).
fn fresh_name() -> String {
    static NEXT: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    format!(
        "group-{}",
        NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed)
    )
}

/// Actors of one type, by rank.
#[derive(Clone, Debug)]
pub struct ActorGroup<H> {
    name: String,
    members: Vec<H>,
}

impl<H: ActorHandle> ActorGroup<H> {
    /// Spawns `world` actors as one gang: the head places all of them at once or none (a
    /// member that does not fit keeps the whole group pending, and `troupe status` says which).
    /// `spawn(rank, world, options)` creates rank `rank` with `options` (the given ones, made a
    /// gang member): pass both numbers to the constructor so each actor knows its place. If a
    /// member cannot even be requested, the ones already created are killed and the error is
    /// returned.
    pub async fn spawn<F, Fut>(
        cluster: &crate::Cluster,
        world: usize,
        options: crate::SpawnOptions,
        mut spawn: F,
    ) -> Result<Self>
    where
        F: FnMut(usize, usize, crate::SpawnOptions) -> Fut,
        Fut: Future<Output = Result<H>>,
    {
        if world == 0 {
            return Err(Error::Invalid {
                what: "group size".to_string(),
                why: "0 members".to_string(),
            });
        }
        let gang = format!("gang-{}", uuid::Uuid::new_v4().simple());
        let mut members = Vec::with_capacity(world);
        for rank in 0..world {
            let member_options = options.clone().gang(gang.clone(), world as u32);
            match spawn(rank, world, member_options).await {
                Ok(member) => members.push(member),
                Err(err) => {
                    for member in &members {
                        let _ = cluster.kill(member).await;
                    }
                    return Err(err);
                }
            }
        }
        Ok(ActorGroup {
            name: fresh_name(),
            members,
        })
    }

    /// Kills every member.
    pub async fn kill(&self, cluster: &crate::Cluster) -> Result<()> {
        for member in &self.members {
            cluster.kill(member).await?;
        }
        Ok(())
    }
}

impl<H: Clone + Send + Sync + 'static> ActorGroup<H> {
    /// A group of existing handles, rank = position.
    pub fn from_handles(members: Vec<H>) -> Self {
        ActorGroup {
            name: fresh_name(),
            members,
        }
    }

    /// The same group under `name` (how pipelines and their pictures call it).
    pub fn named(mut self, name: &str) -> Self {
        self.name = name.to_string();
        self
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    pub fn world_size(&self) -> usize {
        self.members.len()
    }

    pub fn members(&self) -> &[H] {
        &self.members
    }

    /// The member of rank `rank`.
    pub fn rank(&self, rank: usize) -> Option<&H> {
        self.members.get(rank)
    }

    /// The same call on every member at once; results in rank order.
    pub async fn broadcast<T, F, Fut>(&self, call: F) -> Result<Vec<T>>
    where
        F: Fn(H) -> Fut,
        Fut: Future<Output = Result<T>>,
    {
        futures::future::join_all(self.members.iter().cloned().map(call))
            .await
            .into_iter()
            .collect()
    }

    /// The call on rank 0 only.
    pub async fn rank_zero<T, F, Fut>(&self, call: F) -> Result<T>
    where
        F: FnOnce(H) -> Fut,
        Fut: Future<Output = Result<T>>,
    {
        let first = self.members.first().ok_or_else(|| Error::Invalid {
            what: "group".to_string(),
            why: "it has no members".to_string(),
        })?;
        call(first.clone()).await
    }

    /// One argument per member (in rank order), all at once; results in rank order.
    pub async fn per_rank<A, T, F, Fut>(&self, arguments: Vec<A>, call: F) -> Result<Vec<T>>
    where
        F: Fn(H, A) -> Fut,
        Fut: Future<Output = Result<T>>,
    {
        if arguments.len() != self.members.len() {
            return Err(Error::Invalid {
                what: "per-rank arguments".to_string(),
                why: format!(
                    "{} arguments for {} members",
                    arguments.len(),
                    self.members.len()
                ),
            });
        }
        let calls = self
            .members
            .iter()
            .cloned()
            .zip(arguments)
            .map(|(member, argument)| call(member, argument));
        futures::future::join_all(calls).await.into_iter().collect()
    }

    /// The rows of `batch` split over the members (near-equal contiguous parts, rank order),
    /// each part through `call`, the results concatenated in rank order.
    pub async fn split<F, Fut>(&self, batch: &Batch, call: F) -> Result<Batch>
    where
        F: Fn(H, Batch) -> Fut,
        Fut: Future<Output = Result<Batch>>,
    {
        let parts = batch.split(self.members.len())?;
        let results = self.per_rank(parts, call).await?;
        Ok(Batch::concat(&results)?)
    }
}
