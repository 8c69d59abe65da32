//! Tests of building, checking, exporting and running pipelines (stages as local closures).

use super::*;
use crate::data::Batch;
use std::sync::Arc;
use std::time::Duration;

fn scale(
    column: &'static str,
    output: &'static str,
    by: f32,
) -> impl Fn(usize, Batch) -> crate::actor::BoxFuture<crate::Result<Batch>> + Send + Sync + 'static
{
    move |_rank, batch| {
        Box::pin(async move {
            let values: Vec<f32> = batch
                .f32_values(column)
                .map_err(crate::Error::from)?
                .iter()
                .map(|v| v * by)
                .collect();
            Batch::new(batch.rows())
                .with_f32(output, &[], &values)
                .map_err(crate::Error::from)
        })
    }
}

#[test]
fn build_errors_name_the_stages_at_fault() {
    let unknown = PipelineBuilder::new()
        .source(&["x"])
        .stage(
            "a",
            "nobody",
            Dispatch::Split,
            &["x"],
            &["y"],
            scale("x", "y", 1.0),
        )
        .build();
    assert!(matches!(unknown, Err(PipelineError::UnknownGroup { ref stage, .. }) if stage == "a"));
    let missing = PipelineBuilder::new()
        .group("g", 1)
        .source(&["x"])
        .stage(
            "a",
            "g",
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
        .group("g", 1)
        .source(&["x"])
        .stage(
            "a",
            "g",
            Dispatch::Split,
            &["y"],
            &["z"],
            scale("y", "z", 1.0),
        )
        .stage(
            "b",
            "g",
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
        .group("g", 1)
        .source(&["x"])
        .stage(
            "a",
            "g",
            Dispatch::Split,
            &["x"],
            &["y"],
            scale("x", "y", 1.0),
        )
        .stage(
            "b",
            "g",
            Dispatch::Split,
            &["x"],
            &["y"],
            scale("x", "y", 1.0),
        )
        .build();
    assert!(matches!(twice, Err(PipelineError::DuplicateColumn { .. })));
    let sync = PipelineBuilder::new()
        .group("g", 1)
        .weight_sync("trainer", "g")
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
        move |_rank: usize, batch: Batch| {
            let barrier = barrier.clone();
            Box::pin(async move {
                tokio::time::timeout(Duration::from_secs(5), barrier.wait())
                    .await
                    .map_err(|_| crate::Error::Invalid {
                        what: "stage".into(),
                        why: "ran alone".into(),
                    })?;
                let values: Vec<f32> = (0..batch.rows()).map(|i| i as f32).collect();
                Batch::new(batch.rows())
                    .with_f32(output, &[], &values)
                    .map_err(crate::Error::from)
            }) as crate::actor::BoxFuture<crate::Result<Batch>>
        }
    };
    let pipeline = PipelineBuilder::new()
        .group("rollout", 2)
        .group("reward", 1)
        .group("trainer", 1)
        .source(&["prompt"])
        .stage(
            "left",
            "rollout",
            Dispatch::Split,
            &["prompt"],
            &["a"],
            waiting(barrier.clone(), "a"),
        )
        .stage(
            "right",
            "reward",
            Dispatch::RankZero,
            &["prompt"],
            &["b"],
            waiting(barrier, "b"),
        )
        .stage(
            "train",
            "trainer",
            Dispatch::Broadcast,
            &["a", "b"],
            &["loss"],
            scale("a", "loss", 2.0),
        )
        .weight_sync("trainer", "rollout")
        .build()
        .expect("valid");
    assert_eq!(pipeline.order().last().map(String::as_str), Some("train"));
    let input = Batch::new(4).with_f32("prompt", &[], &[0.0; 4]).unwrap();
    let step = pipeline.run_step(input, 7).await.expect("step");
    // "a" came from two members, each numbering its own two rows.
    assert_eq!(
        step.output.f32_values("loss").unwrap(),
        vec![0.0, 2.0, 0.0, 2.0]
    );
    assert!(step
        .output
        .meta()
        .iter()
        .all(|meta| meta["weight_version"] == "7"));
    let names: Vec<&str> = step.timings.iter().map(|t| t.stage.as_str()).collect();
    assert_eq!(names.len(), 3);
    assert_eq!(names[2], "train");
    let dot = pipeline.to_dot();
    assert!(
        dot.contains("source -> left")
            && dot.contains("left -> train")
            && dot.contains("weights: trainer -> rollout"),
        "{dot}"
    );
    let mermaid = pipeline.to_mermaid();
    assert!(
        mermaid.starts_with("flowchart LR") && mermaid.contains("right -->|b| train"),
        "{mermaid}"
    );
}

#[tokio::test]
async fn a_stage_that_omits_an_output_is_named() {
    let pipeline = PipelineBuilder::new()
        .group("g", 1)
        .source(&["x"])
        .stage(
            "forgetful",
            "g",
            Dispatch::RankZero,
            &["x"],
            &["y"],
            scale("x", "not-y", 1.0),
        )
        .build()
        .expect("valid");
    let input = Batch::new(1).with_f32("x", &[], &[1.0]).unwrap();
    let err = pipeline.run_step(input, 0).await.unwrap_err().to_string();
    assert!(err.contains("forgetful") && err.contains("`y`"), "{err}");
}

/// A rollout stage that stamps the weight version it generated with, and a slow trainer.
fn staleness_pipeline(weights: Arc<std::sync::atomic::AtomicU64>) -> Pipeline {
    PipelineBuilder::new()
        .group("rollout", 1)
        .group("trainer", 1)
        .source(&["prompt"])
        .stage(
            "generate",
            "rollout",
            Dispatch::RankZero,
            &["prompt"],
            &["made_with"],
            move |_rank, batch| {
                let version = weights.load(std::sync::atomic::Ordering::SeqCst) as f32;
                Box::pin(async move {
                    Batch::new(batch.rows())
                        .with_f32("made_with", &[], &vec![version; batch.rows()])
                        .map_err(crate::Error::from)
                })
            },
        )
        .stage(
            "train",
            "trainer",
            Dispatch::RankZero,
            &["made_with"],
            &["loss"],
            |_rank, batch| {
                Box::pin(async move {
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    Batch::new(batch.rows())
                        .with_f32("loss", &[], &vec![0.0; batch.rows()])
                        .map_err(crate::Error::from)
                })
            },
        )
        .weight_sync("trainer", "rollout")
        .build()
        .expect("valid")
}

async fn versions_used(max_staleness: usize) -> Vec<(u64, f32)> {
    let weights = Arc::new(std::sync::atomic::AtomicU64::new(0));
    let pipeline = staleness_pipeline(weights.clone());
    let sync_weights = weights.clone();
    let reports = pipeline
        .run_with_staleness(
            4,
            max_staleness,
            |_| Batch::new(2).with_f32("prompt", &[], &[0.0, 0.0]).unwrap(),
            move || {
                let weights = sync_weights.clone();
                Box::pin(async move {
                    Ok(weights.fetch_add(1, std::sync::atomic::Ordering::SeqCst) + 1)
                })
            },
        )
        .await
        .expect("run");
    reports
        .iter()
        .map(|r| {
            (
                r.weight_version,
                r.output.f32_values("made_with").unwrap()[0],
            )
        })
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
            *stamped as f32, *used,
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
