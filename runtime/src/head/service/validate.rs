//! Checks of the requests that carry resources or actor specs (node registrations, actor
//! creation, placement-group bundles), shared by the services: each names the bad field in an
//! `invalid argument` status.

use crate::rpc::{check_id, check_text, invalid};
use tonic::Status;
use troupe_proto::{CreateActorRequest, NodeResources, ResourceRequest};

pub(super) fn check_resources(resources: &NodeResources) -> Result<(), Status> {
    if resources.gpus.len() > 1024 {
        return Err(invalid("resources.gpus", "more than 1024 devices"));
    }
    let mut seen = std::collections::HashSet::new();
    for gpu in &resources.gpus {
        if !seen.insert(gpu.index) {
            return Err(invalid(
                "resources.gpus",
                format!("device {} listed twice", gpu.index),
            ));
        }
        check_text("resources.gpus.model", &gpu.model, 128)?;
    }
    check_custom("resources.custom", &resources.custom)?;
    for (key, value) in &resources.labels {
        check_id("resources.labels key", key)?;
        check_text("resources.labels value", value, 256)?;
    }
    Ok(())
}

fn check_custom(
    field: &str,
    custom: &std::collections::HashMap<String, f64>,
) -> Result<(), Status> {
    for (name, quantity) in custom {
        check_id(&format!("{field} name"), name)?;
        if !quantity.is_finite() || *quantity < 0.0 {
            return Err(invalid(
                field,
                format!("{name}={quantity} is not a quantity"),
            ));
        }
    }
    Ok(())
}

pub(super) fn check_create(request: &CreateActorRequest) -> Result<(), Status> {
    check_id("type_name", &request.type_name)?;
    check_text("name", &request.name, 256)?;
    check_text("spawn_id", &request.spawn_id, 128)?;
    if request.max_restarts < -1 {
        return Err(invalid(
            "max_restarts",
            format!("{} (use -1 for no limit)", request.max_restarts),
        ));
    }
    if request.max_concurrency == 0 || request.max_concurrency > 100_000 {
        return Err(invalid(
            "max_concurrency",
            format!("{} is not in 1..=100000", request.max_concurrency),
        ));
    }
    check_id("binary_hash", &request.binary_hash)?;
    if !request.gang.is_empty() {
        check_id("gang", &request.gang)?;
        if request.gang_size == 0 || request.gang_size > 10_000 {
            return Err(invalid(
                "gang_size",
                format!("{} is not in 1..=10000", request.gang_size),
            ));
        }
    }
    if !request.placement_group_id.is_empty() {
        check_id("placement_group_id", &request.placement_group_id)?;
        if !request.gang.is_empty() {
            return Err(invalid(
                "placement_group_id",
                "an actor runs in a gang or in a placement group, not both".to_string(),
            ));
        }
    } else if request.bundle_index.is_some() {
        return Err(invalid(
            "bundle_index",
            "given without a placement_group_id".to_string(),
        ));
    }
    for arg in &request.worker_args {
        check_text("worker_args", arg, 4096)?;
    }
    for (key, value) in &request.env {
        if key.is_empty() || key.contains('=') || key.contains('\0') {
            return Err(invalid("env", format!("`{key}` is not a variable name")));
        }
        if value.contains('\0') {
            return Err(invalid(
                "env",
                format!("the value of {key} contains a NUL byte"),
            ));
        }
    }
    let resources = request
        .resources
        .as_ref()
        .ok_or_else(|| invalid("resources", "missing"))?;
    check_request("resources", resources)
}

/// Checks one resource request (an actor's, or a placement-group bundle's, named `what`).
pub(super) fn check_request(what: &str, resources: &ResourceRequest) -> Result<(), Status> {
    if resources.gpu_milli > 1000 && !resources.gpu_milli.is_multiple_of(1000) {
        return Err(invalid(
            &format!("{what}.gpu_milli"),
            format!("{}: above one GPU, GPUs must be whole", resources.gpu_milli),
        ));
    }
    check_custom(&format!("{what}.custom"), &resources.custom)?;
    for (key, value) in &resources.label_selector {
        check_id(&format!("{what}.label_selector key"), key)?;
        check_text(&format!("{what}.label_selector value"), value, 256)?;
    }
    for model in &resources.gpu_models {
        check_text(&format!("{what}.gpu_models"), model, 256)?;
    }
    if !resources.node_id.is_empty() {
        check_id(&format!("{what}.node_id"), &resources.node_id)?;
    }
    Ok(())
}
