//! Placement groups from a driver: reserve bundles of resources all together (PACK, SPREAD,
//! STRICT_PACK, STRICT_SPREAD), wait until they are placed, run actors inside them
//! (`SpawnOptions::placement_group`), and remove them, which frees everything at once.

use super::Cluster;
use crate::actor::SpawnOptions;
use crate::error::{Error, Result};
use std::time::{Duration, Instant};
use troupe_proto::{
    CreatePlacementGroupRequest, PlacementGroupInfo, PlacementGroupRef, PlacementGroupState,
};

/// What to reserve: bundles (each described like an actor's resources) and how to lay them out.
#[derive(Debug, Clone, Default)]
pub struct PlacementGroupSpec {
    pub name: String,
    pub bundles: Vec<SpawnOptions>,
    /// PACK (default), SPREAD, STRICT_PACK or STRICT_SPREAD.
    pub strategy: String,
    pub priority: i32,
    pub preemptible: bool,
    /// After a node dies, place the whole group again instead of only its lost bundles.
    pub restart_whole_on_node_loss: bool,
    pub detached: bool,
}

impl PlacementGroupSpec {
    /// A group of `bundles` laid out by `strategy`.
    pub fn new(bundles: Vec<SpawnOptions>, strategy: &str) -> Self {
        Self {
            bundles,
            strategy: strategy.to_string(),
            ..Self::default()
        }
    }
}

/// A placement group the head knows.
#[derive(Debug, Clone)]
pub struct PlacementGroup {
    pub id: String,
    cluster: Cluster,
    /// Placed already when the head answered the creation (it places in the same call when
    /// resources allow): `ready` then needs no round trip.
    placed_at_creation: Option<PlacementGroupInfo>,
}

impl PlacementGroup {
    /// Options for an actor that runs in bundle `bundle` (or the first with room).
    pub fn bundle(&self, bundle: Option<u32>) -> SpawnOptions {
        SpawnOptions::new().placement_group(&self.id, bundle)
    }

    /// The group as the head sees it now.
    pub async fn info(&self) -> Result<PlacementGroupInfo> {
        let mut cluster = self.cluster.client.cluster.clone();
        Ok(cluster
            .get_placement_group(PlacementGroupRef {
                id: self.id.clone(),
            })
            .await
            .map_err(|status| Error::rpc(format!("reading placement group {}", self.id), status))?
            .into_inner())
    }

    /// Waits until every bundle has been placed (at once, with no round trip, when the head
    /// placed the group while creating it, as Ray's `ready` resolves once); the error names why
    /// not (its pending reason). `info` tells the state now.
    pub async fn ready(&self, timeout: Duration) -> Result<PlacementGroupInfo> {
        if let Some(info) = &self.placed_at_creation {
            return Ok(info.clone());
        }
        let deadline = Instant::now() + timeout;
        loop {
            let info = self.info().await?;
            match info.state() {
                PlacementGroupState::PlacementGroupCreated => return Ok(info),
                PlacementGroupState::PlacementGroupRemoved => {
                    return Err(Error::Invalid {
                        what: format!("placement group {}", self.id),
                        why: "it was removed".to_string(),
                    })
                }
                _ if Instant::now() >= deadline => {
                    return Err(Error::Invalid {
                        what: format!("placement group {}", self.id),
                        why: format!(
                            "not placed within {:.1} s: {}",
                            timeout.as_secs_f64(),
                            info.pending_reason
                        ),
                    })
                }
                _ => tokio::time::sleep(Duration::from_millis(5)).await,
            }
        }
    }

    /// Frees every bundle at once; actors inside are stopped.
    pub async fn remove(&self) -> Result<()> {
        let mut cluster = self.cluster.client.cluster.clone();
        cluster
            .remove_placement_group(PlacementGroupRef {
                id: self.id.clone(),
            })
            .await
            .map_err(|status| {
                Error::rpc(format!("removing placement group {}", self.id), status)
            })?;
        Ok(())
    }
}

impl Cluster {
    /// Creates a placement group; it is placed (all bundles or none) as soon as resources allow.
    /// One that no cluster state could hold is refused with the reason.
    pub async fn create_placement_group(&self, spec: PlacementGroupSpec) -> Result<PlacementGroup> {
        let bundles = spec
            .bundles
            .iter()
            .map(SpawnOptions::resource_request)
            .collect::<Result<Vec<_>>>()?;
        let request = CreatePlacementGroupRequest {
            name: spec.name,
            bundles,
            strategy: spec.strategy,
            priority: spec.priority,
            preemptible: spec.preemptible,
            restart_whole_on_node_loss: spec.restart_whole_on_node_loss,
            owner_session: self.client.session_id.clone(),
            detached: spec.detached,
        };
        let info = crate::rpc::while_head_unavailable(
            "creating a placement group",
            crate::rpc::HEAD_OUTAGE_PATIENCE,
            crate::rpc::Resend::IfNotSent,
            || {
                let mut cluster = self.client.cluster.clone();
                let request = request.clone();
                async move { cluster.create_placement_group(request).await }
            },
        )
        .await
        .map_err(|status| Error::rpc("creating a placement group", status))?
        .into_inner();
        let placed = info.state() == PlacementGroupState::PlacementGroupCreated;
        Ok(PlacementGroup {
            id: info.id.clone(),
            cluster: self.clone(),
            placed_at_creation: placed.then_some(info),
        })
    }
}
