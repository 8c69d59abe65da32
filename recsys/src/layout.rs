//! Where a table's shards are. The trainer and the replicas are given the shard handles, and
//! later a new list when shards are added or removed; but an actor that restarts runs its
//! constructor again with the arguments it was first given. With a name prefix, shards are
//! spawned as `{prefix}-shard-{i}`, and a constructor finds the layout as it is now: shard 0
//! knows how many shards there are, the others are looked up by name.

use crate::error::RecsysError;
use crate::shard::{EmbeddingShard, EmbeddingShardHandle};

/// A table's shards, and the names that find them again.
#[derive(Clone, serde::Serialize, serde::Deserialize)]
pub struct ShardLayout {
    pub prefix: Option<String>,
    pub handles: Vec<EmbeddingShardHandle>,
}

impl ShardLayout {
    /// The name of shard `index` under `prefix`.
    pub fn name(prefix: &str, index: u32) -> String {
        format!("{prefix}-shard-{index}")
    }

    /// The shards as they are now: by name when there is a prefix, else the handles given.
    pub async fn current(&self) -> Result<Vec<EmbeddingShardHandle>, RecsysError> {
        let Some(prefix) = &self.prefix else {
            return Ok(self.handles.clone());
        };
        let cluster =
            troupe::Cluster::current().map_err(RecsysError::call("this actor's cluster"))?;
        let lookup = |index: u32| {
            let cluster = cluster.clone();
            let name = Self::name(prefix, index);
            async move {
                cluster
                    .get_actor::<EmbeddingShard>(&name)
                    .await
                    .map_err(RecsysError::call(format!("looking up {name}")))
            }
        };
        let first = lookup(0).await?;
        let count = first
            .stats()
            .await
            .map_err(RecsysError::call("the shard count, from shard 0"))?
            .shards;
        let mut shards = vec![first];
        for index in 1..count {
            shards.push(lookup(index).await?);
        }
        Ok(shards)
    }
}
