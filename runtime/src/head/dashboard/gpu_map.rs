//! The overview's GPU map: one cell per device of a node, with how much of it is allotted and
//! who holds it. A device counts as held when any of it is allotted (`milli_used > 0`), whoever
//! holds it: the actors placed on it, the placement-group bundles that reserve it (with or
//! without an actor in them) and the jobs whose entrypoint was given it. An allotment none of
//! these explains is shown as "reserved".

use super::views::{path_segment, ActorLink};
use serde::Serialize;
use std::collections::HashMap;
use troupe_proto::{ActorInfo, GpuUsage, PlacementGroupInfo, PlacementGroupState};

/// The GPUs a running job's entrypoint was given (the status view's `JobInfo` does not carry
/// them, so the dashboard reads them from the head's state next to the status view).
#[derive(Debug, Clone, Default, PartialEq)]
pub(crate) struct JobGpus {
    pub(crate) id: String,
    pub(crate) node_id: String,
    /// Device indices on that node.
    pub(crate) gpus: Vec<u32>,
}

/// What holds a device: an actor, a placement-group bundle or a job.
#[derive(Debug, Clone, Serialize)]
pub(crate) struct Holder {
    /// `actor`, `bundle` or `job` (also the link's class).
    pub(crate) kind: &'static str,
    pub(crate) id: String,
    pub(crate) label: String,
    pub(crate) href: String,
}

#[derive(Debug, Clone, Serialize)]
pub(crate) struct GpuCell {
    pub(crate) index: u32,
    pub(crate) model: String,
    /// Thousandths of the device in use, and as a percentage.
    pub(crate) milli_used: u64,
    pub(crate) percent: u64,
    /// Whether any of it is allotted (to a holder below or not).
    pub(crate) held: bool,
    pub(crate) holders: Vec<Holder>,
}

/// Who holds what, across the cluster, for looking up each device.
pub(crate) struct Holders<'a> {
    actors: HashMap<&'a str, &'a ActorInfo>,
    groups: &'a [PlacementGroupInfo],
    jobs: &'a [JobGpus],
}

impl<'a> Holders<'a> {
    pub(crate) fn new(
        actors: &'a [ActorInfo],
        groups: &'a [PlacementGroupInfo],
        jobs: &'a [JobGpus],
    ) -> Holders<'a> {
        Holders {
            actors: actors
                .iter()
                .map(|actor| (actor.id.as_str(), actor))
                .collect(),
            groups,
            jobs,
        }
    }

    /// The cells of one node's devices.
    pub(crate) fn cells(&self, node_id: &str, gpus: &[GpuUsage]) -> Vec<GpuCell> {
        gpus.iter().map(|gpu| self.cell(node_id, gpu)).collect()
    }

    fn cell(&self, node_id: &str, gpu: &GpuUsage) -> GpuCell {
        let mut holders: Vec<Holder> = gpu
            .actor_ids
            .iter()
            .map(|id| {
                let name = self.actors.get(id.as_str()).map(|a| a.name.as_str());
                let link = actor_link(id, name);
                Holder {
                    kind: "actor",
                    id: link.id,
                    label: link.label,
                    href: link.href,
                }
            })
            .collect();
        for group in self.groups {
            if group.state() == PlacementGroupState::PlacementGroupRemoved {
                continue;
            }
            for (index, bundle) in group.bundles.iter().enumerate() {
                let reserves = bundle.node_id == node_id
                    && bundle.gpus.iter().any(|share| share.index == gpu.index);
                if reserves {
                    let name = if group.name.is_empty() {
                        &group.id
                    } else {
                        &group.name
                    };
                    holders.push(Holder {
                        kind: "bundle",
                        id: group.id.clone(),
                        label: format!("{name} bundle {index}"),
                        href: format!("/placement-groups#group-{}", path_segment(&group.id)),
                    });
                }
            }
        }
        for job in self.jobs {
            if job.node_id == node_id && job.gpus.contains(&gpu.index) {
                holders.push(Holder {
                    kind: "job",
                    id: job.id.clone(),
                    label: format!("job {}", job.id),
                    href: format!("/jobs/{}", path_segment(&job.id)),
                });
            }
        }
        GpuCell {
            index: gpu.index,
            model: gpu.model.clone(),
            milli_used: gpu.milli_used,
            percent: (gpu.milli_used.saturating_mul(100) / 1000).min(100),
            held: gpu.milli_used > 0 || !holders.is_empty(),
            holders,
        }
    }
}

/// A link to an actor: its name (or id, when unnamed) and its page.
pub(crate) fn actor_link(id: &str, name: Option<&str>) -> ActorLink {
    ActorLink {
        id: id.to_string(),
        label: match name {
            Some(name) if !name.is_empty() => name.to_string(),
            _ => id.to_string(),
        },
        href: format!("/actors/{}", path_segment(id)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use troupe_proto::{BundleInfo, GpuAssignment};

    fn gpu(index: u32, milli_used: u64, actors: &[&str]) -> GpuUsage {
        GpuUsage {
            index,
            model: "T4".to_string(),
            milli_used,
            actor_ids: actors.iter().map(|id| id.to_string()).collect(),
        }
    }

    #[test]
    fn bundles_jobs_and_unexplained_allotments_hold_a_gpu() {
        let actors = vec![ActorInfo {
            id: "a1".to_string(),
            name: "trainer".to_string(),
            ..ActorInfo::default()
        }];
        let groups = vec![PlacementGroupInfo {
            id: "pg1".to_string(),
            name: "gang".to_string(),
            state: PlacementGroupState::PlacementGroupCreated as i32,
            bundles: vec![BundleInfo {
                node_id: "n1".to_string(),
                gpus: vec![GpuAssignment {
                    index: 1,
                    milli: 1000,
                }],
                ..BundleInfo::default()
            }],
            ..PlacementGroupInfo::default()
        }];
        let jobs = vec![JobGpus {
            id: "job-1".to_string(),
            node_id: "n1".to_string(),
            gpus: vec![2],
        }];
        let holders = Holders::new(&actors, &groups, &jobs);
        let cells = holders.cells(
            "n1",
            &[
                gpu(0, 1000, &["a1"]),
                gpu(1, 1000, &[]),
                gpu(2, 1000, &[]),
                gpu(3, 500, &[]),
                gpu(4, 0, &[]),
            ],
        );
        let who: Vec<Vec<(&str, &str)>> = cells
            .iter()
            .map(|cell| {
                cell.holders
                    .iter()
                    .map(|h| (h.kind, h.label.as_str()))
                    .collect()
            })
            .collect();
        assert_eq!(who[0], [("actor", "trainer")]);
        assert_eq!(who[1], [("bundle", "gang bundle 0")]);
        assert_eq!(cells[1].holders[0].href, "/placement-groups#group-pg1");
        assert_eq!(who[2], [("job", "job job-1")]);
        assert_eq!(cells[2].holders[0].href, "/jobs/job-1");
        assert!(
            who[3].is_empty() && cells[3].held,
            "allotted to no one known"
        );
        assert!(!cells[4].held);
        // Another node's devices with the same indices are nobody's.
        let other = holders.cells("n2", &[gpu(1, 0, &[])]);
        assert!(other[0].holders.is_empty() && !other[0].held);
    }
}
