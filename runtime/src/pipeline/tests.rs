//! Tests of building, checking, exporting and running pipelines, with in-process stand-ins as
//! group members (the stage data path is the one actors use: outputs kept by name, inputs
//! fetched by the consumer, only calls and receipts through the driver).

use super::*;
use crate::actor::{ActorGroup, BoxFuture};
use crate::data::Batch;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

/// An in-process group member.
#[derive(Clone, Debug)]
struct Local;

fn group(name: &str, size: usize) -> ActorGroup<Local> {
    ActorGroup::from_handles(vec![Local; size]).named(name)
}

/// A stage that writes `output = column * by`.
fn scale(
    column: &'static str,
    output: &'static str,
    by: f32,
) -> impl Fn(Local, StageCall) -> BoxFuture<crate::Result<StageReceipt>> + Send + Sync + 'static {
    move |_member, mut call| {
        Box::pin(async move {
            let batch = call.inputs().await?;
            let values: Vec<f32> = batch.f32_values(column)?.iter().map(|v| v * by).collect();
            call.finish(Batch::new(batch.rows()).with_f32(output, &[], &values)?)
        })
    }
}

/// A weight-sync edge that counts versions.
struct CountingEdge {
    from: &'static str,
    to: &'static str,
    version: Arc<AtomicU64>,
}

impl WeightSyncEdge for CountingEdge {
    fn learning_group(&self) -> &str {
        self.from
    }
    fn generating_group(&self) -> &str {
        self.to
    }
    fn connect(&self) -> BoxFuture<crate::Result<()>> {
        Box::pin(async { Ok(()) })
    }
    fn sync(&self) -> BoxFuture<crate::Result<SyncOutcome>> {
        let version = self.version.fetch_add(1, Ordering::SeqCst) + 1;
        Box::pin(async move {
            Ok(SyncOutcome {
                version,
                milliseconds: 0.0,
                bytes: 0,
            })
        })
    }
}

#[test]
fn build_errors_name_the_stages_at_fault() {
    let g = group("g", 1);
    let missing = PipelineBuilder::new()
        .source(&["x"])
        .stage(
            "a",
            &g,
            Dispatch::Split,
            &["z"],
            &["y"],
            scale("z", "y", 1.0),
        )
        .build();
    assert_eq!(
        missing.err().map(|e| e.to_string()),
        Some(
            "stage `a` needs column `z`, which neither the source nor any stage produces"
                .to_string()
        )
    );
    let cycle = PipelineBuilder::new()
        .source(&["x"])
        .stage(
            "a",
            &g,
            Dispatch::Split,
            &["y"],
            &["z"],
            scale("y", "z", 1.0),
        )
        .stage(
            "b",
            &g,
            Dispatch::Split,
            &["z"],
            &["y"],
            scale("z", "y", 1.0),
        )
        .build();
    assert!(
        matches!(cycle, Err(PipelineError::Cycle { ref stages }) if stages == &vec!["a".to_string(), "b".to_string()]),
        "{:?}",
        cycle.err()
    );
    let twice = PipelineBuilder::new()
        .source(&["x"])
        .stage(
            "a",
            &g,
            Dispatch::Split,
            &["x"],
            &["y"],
            scale("x", "y", 1.0),
        )
        .stage(
            "b",
            &g,
            Dispatch::Split,
            &["x"],
            &["y"],
            scale("x", "y", 1.0),
        )
        .build();
    assert!(matches!(twice, Err(PipelineError::DuplicateColumn { .. })));
    let sizes = PipelineBuilder::new()
        .source(&["x"])
        .stage(
            "a",
            &g,
            Dispatch::Split,
            &["x"],
            &["y"],
            scale("x", "y", 1.0),
        )
        .stage(
            "b",
            &group("g", 2),
            Dispatch::Split,
            &["y"],
            &["z"],
            scale("y", "z", 1.0),
        )
        .build();
    assert!(matches!(sizes, Err(PipelineError::GroupSize { .. })));
    let sync = PipelineBuilder::new()
        .source(&["x"])
        .stage(
            "a",
            &g,
            Dispatch::Split,
            &["x"],
            &["y"],
            scale("x", "y", 1.0),
        )
        .weight_sync(CountingEdge {
            from: "trainer",
            to: "g",
            version: Arc::default(),
        })
        .build();
    assert!(sync
        .err()
        .map(|e| e.to_string())
        .unwrap_or_default()
        .contains("trainer"));
}

#[tokio::test]
async fn independent_stages_run_together_and_outputs_flow() {
    // Two stages (one split over two members) that wait for each other: three calls that only
    // finish if they all run at once.
    let barrier = Arc::new(tokio::sync::Barrier::new(3));
    let waiting = |barrier: Arc<tokio::sync::Barrier>, output: &'static str| {
        move |_member: Local, mut call: StageCall| {
            let barrier = barrier.clone();
            Box::pin(async move {
                tokio::time::timeout(Duration::from_secs(5), barrier.wait())
                    .await
                    .map_err(|_| crate::Error::Invalid {
                        what: "stage".into(),
                        why: "ran alone".into(),
                    })?;
                let batch = call.inputs().await?;
                let values: Vec<f32> = (0..batch.rows()).map(|i| i as f32).collect();
                let mut out = Batch::new(batch.rows()).with_f32(output, &[], &values)?;
                out.step_meta_mut().set(output, call.rank() as f64 + 10.0);
                call.finish(out)
            }) as BoxFuture<crate::Result<StageReceipt>>
        }
    };
    let (rollout, reward, trainer) = (group("rollout", 2), group("reward", 1), group("trainer", 1));
    let pipeline = PipelineBuilder::new()
        .source(&["prompt"])
        .stage(
            "left",
            &rollout,
            Dispatch::Split,
            &["prompt"],
            &["a"],
            waiting(barrier.clone(), "a"),
        )
        .stage(
            "right",
            &reward,
            Dispatch::RankZero,
            &["prompt"],
            &["b"],
            waiting(barrier, "b"),
        )
        .stage(
            "train",
            &trainer,
            Dispatch::Broadcast,
            &["a", "b"],
            &["loss"],
            move |_member: Local, mut call: StageCall| async move {
                let batch = call.inputs().await?;
                assert_eq!(batch.step_meta().weight_version, 7);
                // Calls a stage makes carry its step.
                assert_eq!(crate::timeline::current_step().weight_version, Some(7));
                let a = batch.f32_values("a")?;
                let b = batch.f32_values("b")?;
                let loss: Vec<f32> = a.iter().zip(&b).map(|(a, b)| 2.0 * a + b).collect();
                let mut out = Batch::new(batch.rows()).with_f32("loss", &[], &loss)?;
                out.step_meta_mut()
                    .set("loss_sum", loss.iter().sum::<f32>() as f64);
                call.finish(out)
            },
        )
        .weight_sync(CountingEdge {
            from: "trainer",
            to: "rollout",
            version: Arc::default(),
        })
        .build()
        .expect("valid");
    assert_eq!(pipeline.order().last().map(String::as_str), Some("train"));
    let input = Batch::new(4).with_f32("prompt", &[], &[0.0; 4]).unwrap();
    let step = pipeline.run_step(input, 7).await.expect("step");
    // "a" came from two members, each numbering its own two rows; "b" numbers all four.
    assert_eq!(
        step.scalars["loss_sum"],
        (0.0 + 2.0 + 0.0 + 2.0) + (0.0 + 1.0 + 2.0 + 3.0)
    );
    assert_eq!(step.scalars["a"], 10.0, "rank 0's scalar is kept");
    assert_eq!(step.weight_version, 7);
    assert_eq!(step.rows, 4);
    assert!(step.stage_bytes > 0);
    // Each stage is a span on the driver's timeline, with its step, version, group and bytes.
    let (spans, _) = crate::timeline::recorder().between(0, 0);
    let train_span = spans
        .iter()
        .find(|span| {
            &*span.name == "train"
                && span.tag.weight_version == Some(7)
                && span.tag.step == Some(step.step as u64)
        })
        .expect("the train stage's span");
    assert_eq!(train_span.kind, crate::timeline::SpanKind::Stage);
    assert_eq!(train_span.group.as_deref(), Some("trainer"));
    assert!(train_span.bytes_in > 0 && train_span.duration_us > 0);
    let names: Vec<&str> = step.timings.iter().map(|t| t.stage.as_str()).collect();
    assert_eq!(names.len(), 3);
    assert_eq!(names[2], "train");
    for timing in &step.timings {
        // The members' own time (fetching included) is part of the driver's (receipts
        // round up to 100 µs).
        assert!(
            timing.fetch_seconds <= timing.member_seconds
                && timing.member_seconds <= timing.seconds + 1e-4,
            "{timing:?}"
        );
    }
    let train = &step.timings[2];
    assert!(
        train.fetch_seconds > 0.0,
        "train fetched its inputs: {train:?}"
    );
    let dot = pipeline.to_dot();
    assert!(
        dot.contains("source -> stage_left")
            && dot.contains("stage_left -> stage_train")
            && dot.contains("weights: trainer -> rollout"),
        "{dot}"
    );
    let mermaid = pipeline.to_mermaid();
    assert!(
        mermaid.starts_with("flowchart LR") && mermaid.contains("stage_right -->|b| stage_train"),
        "{mermaid}"
    );
}

#[tokio::test]
async fn a_stage_with_no_inputs_makes_the_rows_and_a_failure_keeps_its_cause() {
    let (source, g) = (group("source", 1), group("g", 2));
    let pipeline = PipelineBuilder::new()
        .stage(
            "prompts",
            &source,
            Dispatch::RankZero,
            &[],
            &["x"],
            |_member: Local, call: StageCall| async move {
                let rows = 3 + call.step() as usize;
                call.finish(Batch::new(rows).with_f32("x", &[], &vec![1.0; rows])?)
            },
        )
        .stage(
            "double",
            &g,
            Dispatch::Split,
            &["x"],
            &["y"],
            scale("x", "y", 2.0),
        )
        .build()
        .expect("valid");
    let step = pipeline.run_step(Batch::new(0), 0).await.expect("step");
    assert_eq!(step.rows, 3);
    let failing = PipelineBuilder::new()
        .source(&["x"])
        .stage(
            "forgetful",
            &g,
            Dispatch::RankZero,
            &["x"],
            &["y"],
            scale("x", "not-y", 1.0),
        )
        .build()
        .expect("valid");
    let input = Batch::new(1).with_f32("x", &[], &[1.0]).unwrap();
    let err = failing.run_step(input, 0).await.unwrap_err();
    assert!(err.to_string().contains("forgetful"), "{err}");
    let cause = std::error::Error::source(&err).map(|e| e.to_string());
    assert!(
        cause.as_deref().is_some_and(|c| c.contains("`y`")),
        "the cause is kept: {cause:?}"
    );
}

/// A rollout stage that stamps the weight version it generated with, and a slow trainer.
fn staleness_pipeline(version: Arc<AtomicU64>) -> Pipeline {
    PipelineBuilder::new()
        .source(&["prompt"])
        .stage(
            "generate",
            &group("rollout", 1),
            Dispatch::RankZero,
            &["prompt"],
            &["made_with"],
            |_member: Local, mut call: StageCall| async move {
                let batch = call.inputs().await?;
                let version = batch.step_meta().weight_version as f32;
                let mut out = Batch::new(batch.rows()).with_f32(
                    "made_with",
                    &[],
                    &vec![version; batch.rows()],
                )?;
                out.step_meta_mut().set("made_with", version as f64);
                call.finish(out)
            },
        )
        .stage(
            "train",
            &group("trainer", 1),
            Dispatch::RankZero,
            &["made_with"],
            &["loss"],
            |_member: Local, mut call: StageCall| async move {
                let batch = call.inputs().await?;
                tokio::time::sleep(Duration::from_millis(50)).await;
                let made_with = batch.f32_values("made_with")?;
                assert!(made_with
                    .iter()
                    .all(|v| *v == batch.step_meta().weight_version as f32));
                call.finish(Batch::new(batch.rows()).with_f32(
                    "loss",
                    &[],
                    &vec![0.0; batch.rows()],
                )?)
            },
        )
        .weight_sync(CountingEdge {
            from: "trainer",
            to: "rollout",
            version,
        })
        .build()
        .expect("valid")
}

async fn versions_used(max_staleness: usize) -> Vec<(u64, f64)> {
    let pipeline = staleness_pipeline(Arc::default());
    let reports = pipeline
        .run_with_staleness(4, max_staleness, |_| {
            Batch::new(2).with_f32("prompt", &[], &[0.0, 0.0]).unwrap()
        })
        .await
        .expect("run");
    for report in &reports {
        assert_eq!(
            report.weight_sync.as_ref().map(|s| s.version),
            Some(report.step as u64 + 1)
        );
    }
    reports
        .iter()
        .map(|r| (r.weight_version, r.scalars["made_with"]))
        .collect()
}

#[tokio::test]
async fn staleness_bounds_how_far_rollouts_run_ahead() {
    let synchronous = versions_used(0).await;
    assert_eq!(
        synchronous,
        vec![(0, 0.0), (1, 1.0), (2, 2.0), (3, 3.0)],
        "k = 0: always the latest weights"
    );
    let ahead = versions_used(1).await;
    for (step, (stamped, used)) in ahead.iter().enumerate() {
        assert_eq!(
            *stamped as f64, *used,
            "the stamp is the version that made the sample"
        );
        assert!(
            *stamped as usize + 1 >= step,
            "step {step} used weights v{stamped}: staler than 1"
        );
    }
    assert!(
        ahead
            .iter()
            .enumerate()
            .any(|(step, (stamped, _))| (*stamped as usize) < step),
        "with k = 1 rollouts run ahead: {ahead:?}"
    );
}
