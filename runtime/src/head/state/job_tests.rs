//! Unit tests of the job transitions of the head's state: placement, idempotent submission,
//! exits, stops, deletion, node loss, heartbeat reconciliation, and claims after a restart.

use super::*;
use std::time::Duration;
use troupe_proto::{GpuDevice as ProtoGpu, JobInfo, JobSpec, JobStatus, ResourceRequest};

fn node(gpus: u32) -> NodeResources {
    NodeResources {
        cpu_milli: 4000,
        memory_bytes: 1 << 30,
        gpus: (0..gpus)
            .map(|index| ProtoGpu {
                index,
                model: "H100".into(),
            })
            .collect(),
        ..NodeResources::default()
    }
}

fn job(entrypoint: &str, gpus: f64) -> JobSpec {
    JobSpec {
        entrypoint: entrypoint.into(),
        entrypoint_num_cpus: 1.0,
        entrypoint_num_gpus: gpus,
        ..JobSpec::default()
    }
}

fn starts(orders: &[Order]) -> Vec<StartJobRequest> {
    orders
        .iter()
        .filter_map(|order| match order {
            Order::StartJob { request, .. } => Some(request.clone()),
            _ => None,
        })
        .collect()
}

fn stops(orders: &[Order]) -> Vec<StopJobOrder> {
    orders
        .iter()
        .filter_map(|order| match order {
            Order::StopJob { order, .. } => Some(order.clone()),
            _ => None,
        })
        .collect()
}

fn status(state: &HeadState, id: &str) -> JobStatus {
    state.jobs[id].info.status()
}

fn exit(code: i32, signal: i32) -> JobExit {
    JobExit {
        exit_code: code,
        signal,
        log_tail: "last words".into(),
    }
}

fn with_node(gpus: u32) -> (HeadState, String, Instant) {
    let mut state = HeadState::default();
    let now = Instant::now();
    let (node_id, _) =
        state.register_node("", "127.0.0.1:9", "h", node(gpus), &Default::default(), now);
    (state, node_id, now)
}

#[test]
fn a_job_is_placed_with_its_gpus_and_resubmitting_its_id_runs_nothing() {
    let (mut state, node_id, now) = with_node(2);
    let (existed, orders) = state
        .submit_job("j1", job("python train.py", 1.0), now)
        .unwrap();
    assert!(!existed);
    let started = starts(&orders);
    assert_eq!(started.len(), 1);
    assert_eq!(started[0].entrypoint, "python train.py");
    assert_eq!(started[0].gpu_ids.len(), 1);
    assert_eq!(started[0].cpu_milli, 1000);
    assert_eq!(status(&state, "j1"), JobStatus::Running);
    assert_eq!(state.jobs["j1"].info.node_id, node_id);
    assert!(
        state.dirty_jobs.contains("j1"),
        "the change is written to disk"
    );
    let (existed, orders) = state
        .submit_job("j1", job("python train.py", 1.0), now)
        .unwrap();
    assert!(
        existed && orders.is_empty(),
        "the same id and spec run once"
    );
    let other = state
        .submit_job("j1", job("python eval.py", 1.0), now)
        .unwrap_err();
    assert_eq!(other.code(), tonic::Code::AlreadyExists);
}

#[test]
fn infeasible_jobs_are_refused_and_busy_ones_wait() {
    let (mut state, _, now) = with_node(1);
    let refused = state.submit_job("big", job("x", 2.0), now).unwrap_err();
    assert_eq!(refused.code(), tonic::Code::FailedPrecondition);
    assert!(refused.message().contains("GPU"), "{}", refused.message());
    state.submit_job("a", job("x", 1.0), now).unwrap();
    let (_, orders) = state.submit_job("b", job("x", 1.0), now).unwrap();
    assert!(starts(&orders).is_empty());
    assert_eq!(status(&state, "b"), JobStatus::Pending);
    assert!(
        state.jobs["b"].info.message.contains("waiting"),
        "{}",
        state.jobs["b"].info.message
    );
    // The first ends: its GPU goes to the second.
    let orders = state.job_exited("ignored", "a", exit(0, 0), now);
    assert_eq!(status(&state, "a"), JobStatus::Succeeded);
    assert_eq!(
        starts(&orders).len(),
        1,
        "the waiting job starts once the GPU is free"
    );
    assert_eq!(status(&state, "b"), JobStatus::Running);
}

#[test]
fn exits_settle_the_status_with_code_signal_and_log_tail() {
    let (mut state, node_id, now) = with_node(0);
    for id in ["ok", "three", "killed"] {
        state.submit_job(id, job("x", 0.0), now).unwrap();
    }
    state.job_exited(&node_id, "ok", exit(0, 0), now);
    state.job_exited(&node_id, "three", exit(3, 0), now);
    state.job_exited(&node_id, "killed", exit(-1, 9), now);
    assert_eq!(status(&state, "ok"), JobStatus::Succeeded);
    let three = &state.jobs["three"].info;
    assert_eq!(three.status(), JobStatus::Failed);
    assert!(three.has_exit_code && three.exit_code == 3);
    assert!(three.message.contains("exited with code 3") && three.message.contains("last words"));
    let killed = &state.jobs["killed"].info;
    assert!(!killed.has_exit_code && killed.signal == 9);
    assert!(killed.message.contains("signal 9"));
    // A second report changes nothing.
    state.job_exited(&node_id, "ok", exit(5, 0), now);
    assert_eq!(status(&state, "ok"), JobStatus::Succeeded);
}

#[test]
fn stopping_orders_the_node_kills_the_job_actors_and_ends_stopped() {
    let (mut state, node_id, now) = with_node(0);
    state.open_session("driver");
    state.submit_job("j", job("x", 0.0), now).unwrap();
    let mut actor = CreateActorRequest {
        type_name: "t::A".into(),
        resources: Some(ResourceRequest {
            cpu_milli: 100,
            ..ResourceRequest::default()
        }),
        max_concurrency: 1,
        owner_session: "driver".into(),
        binary_hash: "local-x".into(),
        job_id: "j".into(),
        ..CreateActorRequest::default()
    };
    let (of_job, _) = state.create_actor(actor.clone(), now).unwrap();
    actor.job_id = String::new();
    let (other, _) = state.create_actor(actor, now).unwrap();
    let (stopped, orders) = state.stop_job("j", 2000, now).unwrap();
    assert!(stopped);
    assert_eq!(stops(&orders)[0].grace_ms, 2000);
    assert_eq!(state.actors[&of_job.id].info.state(), ActorState::Dead);
    assert_ne!(
        state.actors[&other.id].info.state(),
        ActorState::Dead,
        "other actors stay"
    );
    assert_eq!(
        status(&state, "j"),
        JobStatus::Running,
        "until the node says it exited"
    );
    state.job_exited(&node_id, "j", exit(-1, 15), now);
    assert_eq!(status(&state, "j"), JobStatus::Stopped);
    assert!(
        !state.stop_job("j", 0, now).unwrap().0,
        "stopping a finished job"
    );
    // A pending job stops at once.
    let whole_node = JobSpec {
        entrypoint_num_cpus: 4.0,
        ..job("x", 0.0)
    };
    state.submit_job("first", whole_node.clone(), now).unwrap();
    state.submit_job("waiting", whole_node, now).unwrap();
    assert_eq!(status(&state, "waiting"), JobStatus::Pending);
    let (stopped, orders) = state.stop_job("waiting", 0, now).unwrap();
    assert!(stopped && stops(&orders).is_empty());
    assert_eq!(status(&state, "waiting"), JobStatus::Stopped);
    assert!(!state.pending_jobs.contains(&"waiting".to_string()));
}

#[test]
fn only_finished_jobs_are_deleted() {
    let (mut state, node_id, now) = with_node(0);
    state.submit_job("j", job("x", 0.0), now).unwrap();
    state.dirty_jobs.clear();
    assert_eq!(
        state.delete_job("j").unwrap_err().code(),
        tonic::Code::FailedPrecondition
    );
    state.job_exited(&node_id, "j", exit(0, 0), now);
    state.delete_job("j").unwrap();
    assert!(!state.jobs.contains_key("j"));
    assert!(
        state.dirty_jobs.contains("j"),
        "the deletion reaches the disk"
    );
    assert_eq!(
        state.delete_job("j").unwrap_err().code(),
        tonic::Code::NotFound
    );
}

#[test]
fn a_dead_node_fails_its_jobs_and_a_silent_one_loses_them() {
    let (mut state, node_id, now) = with_node(0);
    state.submit_job("a", job("x", 0.0), now).unwrap();
    state.submit_job("b", job("x", 0.0), now).unwrap();
    // A heartbeat that lists "a" only, past the grace for starts: "b" is lost.
    let later = now + Duration::from_secs(11);
    let orders = state.reconcile_jobs(&node_id, &["a".to_string(), "stray".to_string()], later);
    assert_eq!(status(&state, "a"), JobStatus::Running);
    assert_eq!(status(&state, "b"), JobStatus::Failed);
    assert!(state.jobs["b"].info.message.contains("no longer runs"));
    assert_eq!(
        stops(&orders).len(),
        1,
        "a job the head does not expect there is stopped"
    );
    assert_eq!(stops(&orders)[0].submission_id, "stray");
    // The node goes silent: its running job fails, naming the node.
    state.check_nodes(later + Duration::from_secs(6), Duration::from_secs(5));
    assert_eq!(status(&state, "a"), JobStatus::Failed);
    assert!(state.jobs["a"].info.message.contains("node was lost"));
}

#[test]
fn after_a_restart_running_jobs_are_claimed_or_given_up() {
    let mut state = HeadState::default();
    let now = Instant::now();
    let running = |id: &str| JobInfo {
        submission_id: id.into(),
        status: JobStatus::Running as i32,
        spec: Some(job("x", 0.0)),
        node_id: "node-old".into(),
        ..JobInfo::default()
    };
    let pending = JobInfo {
        status: JobStatus::Pending as i32,
        ..running("queued")
    };
    state.restore_jobs(vec![running("kept"), running("orphan"), pending], now);
    let claims =
        std::collections::HashMap::from([("kept".to_string(), 42_u32), ("gone".to_string(), 7)]);
    let (node_id, orders) = state.register_node("", "127.0.0.1:9", "h", node(0), &claims, now);
    let kept = &state.jobs["kept"].info;
    assert_eq!(
        (kept.status(), kept.node_id.as_str(), kept.pid),
        (JobStatus::Running, node_id.as_str(), 42)
    );
    assert_eq!(
        stops(&orders).len(),
        1,
        "an entrypoint the head does not know is stopped"
    );
    assert_eq!(
        status(&state, "queued"),
        JobStatus::Running,
        "pending jobs queue again"
    );
    let patience = Duration::from_secs(15);
    assert!(!state.unclaimed_jobs_expired(now + Duration::from_secs(1), patience));
    assert!(state.unclaimed_jobs_expired(now + Duration::from_secs(16), patience));
    state.fail_unclaimed_jobs(now + Duration::from_secs(16), patience);
    assert_eq!(status(&state, "orphan"), JobStatus::Failed);
    assert_eq!(status(&state, "kept"), JobStatus::Running);
}

#[test]
fn stops_that_may_be_lost_go_out_again() {
    let (mut state, node_id, now) = with_node(0);
    state.submit_job("j", job("x", 0.0), now).unwrap();
    let (_, orders) = state.stop_job("j", 1000, now).unwrap();
    assert_eq!(stops(&orders).len(), 1);
    // The start's answer arrives after the stop went out: the stop is sent again.
    let orders = state.job_started("j", 77, now);
    assert_eq!(
        stops(&orders).len(),
        1,
        "a stop that may have overtaken the start is resent"
    );
    // Heartbeats still list it: within the grace period nothing more, past it a SIGKILL.
    let listed = ["j".to_string()];
    assert!(
        stops(&state.reconcile_jobs(&node_id, &listed, now + Duration::from_millis(500)))
            .is_empty()
    );
    let overdue = state.reconcile_jobs(&node_id, &listed, now + Duration::from_secs(4));
    let resent = stops(&overdue);
    assert_eq!(resent.len(), 1);
    assert_eq!(resent[0].grace_ms, 0, "past its grace the job is killed");
}

#[test]
fn a_job_still_starting_during_a_restart_is_claimed_by_heartbeat() {
    let mut state = HeadState::default();
    let now = Instant::now();
    state.restore_jobs(
        vec![JobInfo {
            submission_id: "starting".into(),
            status: JobStatus::Running as i32,
            spec: Some(job("x", 0.0)),
            ..JobInfo::default()
        }],
        now,
    );
    let (node_id, _) =
        state.register_node("", "127.0.0.1:9", "h", node(0), &Default::default(), now);
    assert!(
        state.jobs["starting"].unclaimed_since.is_some(),
        "not running yet: not claimed"
    );
    let orders = state.reconcile_jobs(&node_id, &["starting".to_string()], now);
    assert!(stops(&orders).is_empty());
    let claimed = &state.jobs["starting"];
    assert!(claimed.unclaimed_since.is_none());
    assert_eq!(claimed.info.node_id, node_id);
    assert!(!state.unclaimed_jobs_expired(now + Duration::from_secs(60), Duration::from_secs(15)));
}

#[test]
fn a_stop_asked_for_before_a_restart_reaches_the_node_that_claims_the_job() {
    let mut state = HeadState::default();
    let now = Instant::now();
    state.restore_jobs(
        vec![JobInfo {
            submission_id: "stopping".into(),
            status: JobStatus::Running as i32,
            spec: Some(job("x", 0.0)),
            stop_requested: true,
            ..JobInfo::default()
        }],
        now,
    );
    let claims = std::collections::HashMap::from([("stopping".to_string(), 5_u32)]);
    let (_, orders) = state.register_node("", "127.0.0.1:9", "h", node(0), &claims, now);
    let sent = stops(&orders);
    assert_eq!(sent.len(), 1, "the claim sends the stop again");
    assert_eq!(sent[0].submission_id, "stopping");
}
