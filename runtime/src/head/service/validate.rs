//! Checks of the requests that carry resources or actor specs (node registrations, actor
//! creation, placement-group bundles) and of pipeline reports, shared by the services: each
//! names the bad field in an `invalid argument` status.

use crate::rpc::{check_id, check_text, invalid};
use tonic::Status;
use troupe_proto::{CreateActorRequest, NodeResources, PipelineReport, ResourceRequest};

/// Bounds of a pipeline report: stages, a stage's columns, and the length of names.
const MAX_PIPELINE_STAGES: usize = 256;
/// Largest pipeline report (graph, step and spans), encoded.
const MAX_PIPELINE_REPORT_BYTES: usize = 1 << 20;
/// Spans one pipeline report may carry.
const MAX_REPORT_SPANS: usize = 4096;
const MAX_STAGE_COLUMNS: usize = 256;
const MAX_PIPELINE_NAME: usize = 256;

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

/// Checks a driver's pipeline report: names present and bounded, numbers finite.
pub(super) fn check_pipeline_report(report: &PipelineReport) -> Result<(), Status> {
    use prost::Message;
    if report.encoded_len() > MAX_PIPELINE_REPORT_BYTES {
        return Err(invalid(
            "report",
            format!(
                "is {} bytes; at most {MAX_PIPELINE_REPORT_BYTES}",
                report.encoded_len()
            ),
        ));
    }
    if report.spans.len() > MAX_REPORT_SPANS {
        return Err(invalid(
            "spans",
            format!("{} spans; at most {MAX_REPORT_SPANS}", report.spans.len()),
        ));
    }
    for (index, span) in report.spans.iter().enumerate() {
        if crate::timeline::SpanKind::parse(&span.kind).is_none() {
            return Err(invalid(
                &format!("spans[{index}].kind"),
                format!("`{}` is not call, stage or sync", span.kind),
            ));
        }
        for (field, value) in [
            ("name", &span.name),
            ("caller", &span.caller),
            ("group", &span.group),
            ("node_id", &span.node_id),
            ("actor_id", &span.actor_id),
        ] {
            check_text(&format!("spans[{index}].{field}"), value, MAX_PIPELINE_NAME)?;
        }
    }
    check_name("pipeline_id", &report.pipeline_id)?;
    check_text("session", &report.session, MAX_PIPELINE_NAME)?;
    check_text("learning_group", &report.learning_group, MAX_PIPELINE_NAME)?;
    check_text(
        "generating_group",
        &report.generating_group,
        MAX_PIPELINE_NAME,
    )?;
    if report.stages.len() > MAX_PIPELINE_STAGES {
        return Err(invalid(
            "stages",
            format!(
                "{} stages; at most {MAX_PIPELINE_STAGES}",
                report.stages.len()
            ),
        ));
    }
    for (index, stage) in report.stages.iter().enumerate() {
        check_name(&format!("stages[{index}].name"), &stage.name)?;
        check_text(
            &format!("stages[{index}].group"),
            &stage.group,
            MAX_PIPELINE_NAME,
        )?;
        check_text(&format!("stages[{index}].dispatch"), &stage.dispatch, 64)?;
        for (field, columns) in [("inputs", &stage.inputs), ("outputs", &stage.outputs)] {
            if columns.len() > MAX_STAGE_COLUMNS {
                return Err(invalid(
                    &format!("stages[{index}].{field}"),
                    format!("{} columns; at most {MAX_STAGE_COLUMNS}", columns.len()),
                ));
            }
            for column in columns {
                check_name(&format!("stages[{index}].{field}"), column)?;
            }
        }
    }
    let Some(step) = &report.step else {
        return Ok(());
    };
    if step.stages.len() > MAX_PIPELINE_STAGES {
        return Err(invalid(
            "step.stages",
            format!(
                "{} stages; at most {MAX_PIPELINE_STAGES}",
                step.stages.len()
            ),
        ));
    }
    check_amount("step.sync_ms", step.sync_ms)?;
    for (index, time) in step.stages.iter().enumerate() {
        check_name(&format!("step.stages[{index}].stage"), &time.stage)?;
        for (field, value) in [
            ("seconds", time.seconds),
            ("member_seconds", time.member_seconds),
            ("fetch_seconds", time.fetch_seconds),
            ("rows_per_s", time.rows_per_s),
        ] {
            check_amount(&format!("step.stages[{index}].{field}"), value)?;
        }
    }
    Ok(())
}

/// A name that must be given: non-empty, bounded, no control characters.
fn check_name(field: &str, value: &str) -> Result<(), Status> {
    if value.is_empty() {
        return Err(invalid(field, "is empty"));
    }
    check_text(field, value, MAX_PIPELINE_NAME)
}

/// A time or rate: finite and not negative.
fn check_amount(field: &str, value: f64) -> Result<(), Status> {
    if !value.is_finite() || value < 0.0 {
        return Err(invalid(
            field,
            format!("{value} is not a finite amount >= 0"),
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use troupe_proto::{PipelineStageInfo, PipelineStageTime, PipelineStepInfo};

    fn good() -> PipelineReport {
        PipelineReport {
            pipeline_id: "driver-1/0".to_string(),
            session: "driver-1".to_string(),
            stages: vec![PipelineStageInfo {
                name: "generate".to_string(),
                group: "rollout".to_string(),
                members: 2,
                inputs: vec!["prompt".to_string()],
                outputs: vec!["response".to_string()],
                dispatch: "split".to_string(),
            }],
            step: Some(PipelineStepInfo {
                step: 3,
                stages: vec![PipelineStageTime {
                    stage: "generate".to_string(),
                    seconds: 0.25,
                    rows_per_s: 256.0,
                    ..PipelineStageTime::default()
                }],
                ..PipelineStepInfo::default()
            }),
            ..PipelineReport::default()
        }
    }

    fn refused_field(report: &PipelineReport) -> String {
        match check_pipeline_report(report) {
            Ok(()) => "accepted".to_string(),
            Err(status) => {
                assert_eq!(status.code(), tonic::Code::InvalidArgument);
                status.message().split(':').next().unwrap_or("").to_string()
            }
        }
    }

    #[test]
    fn pipeline_reports_are_checked_field_by_field() {
        assert_eq!(refused_field(&good()), "accepted");
        let mut report = good();
        report.pipeline_id.clear();
        assert_eq!(refused_field(&report), "pipeline_id");
        let mut report = good();
        report.stages[0].name.clear();
        assert_eq!(refused_field(&report), "stages[0].name");
        let mut report = good();
        report.stages[0].outputs = vec!["c".to_string(); MAX_STAGE_COLUMNS + 1];
        assert_eq!(refused_field(&report), "stages[0].outputs");
        let mut report = good();
        report.stages = vec![report.stages[0].clone(); MAX_PIPELINE_STAGES + 1];
        assert_eq!(refused_field(&report), "stages");
        let mut report = good();
        if let Some(step) = report.step.as_mut() {
            step.stages[0].seconds = f64::NAN;
        }
        assert_eq!(refused_field(&report), "step.stages[0].seconds");
        let mut report = good();
        report.session = "x".repeat(MAX_PIPELINE_NAME + 1);
        assert_eq!(refused_field(&report), "session");
    }
}
