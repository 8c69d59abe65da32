//! The autoscaler: node types and scaling rules read from a config file (`config`), the pure
//! planner that turns waiting work and node use into launches and drains (`planner`, shared
//! with `troupe sim autoscale`; its trial on the live scheduler is `trial`), and the node providers that start and stop node agents
//! (`provider`, `local`, `command`). The head's loop that drives them is `head::autoscale`.

pub mod command;
pub mod config;
pub mod local;
pub mod planner;
pub mod provider;
mod trial;

pub use config::AutoscalerConfig;
pub use planner::{ManagedNode, NodePhase, PendingSet, Planner, TypeChoice};
