//! One round of the head's autoscaler, in the order it runs: registrations, deaths, timeouts
//! and retries are taken into the book; the planner runs on the live scheduler; its decisions
//! are recorded; launches, stops of drained nodes and retried stops are carried out in the
//! background; and now and then the provider's list is compared with the book.

use super::{type_of_launch, Autoscaler, Book, LaunchRecord, Phase, Reap, LIST_EVERY};
use crate::autoscaler::config::{LAUNCH_ID_LABEL, NODE_TYPE_LABEL};
use crate::autoscaler::planner::Plan;
use crate::autoscaler::provider::LaunchSpec;
use crate::autoscaler::{ManagedNode, NodePhase};
use crate::head::state::HeadState;
use crate::head::Head;
use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Compares the provider's list with the book: launches it has that the book does not (the head
/// restarted, or a stop was lost) are taken back as launching, so they register or time out and
/// are stopped; launches of retired nodes it still has are stopped again.
pub(super) async fn reconcile(head: &Arc<Head>, autoscaler: &Autoscaler) {
    let ids = match autoscaler.provider.list().await {
        Ok(ids) => ids,
        Err(e) => {
            tracing::warn!(error = %e, "autoscaler: listing the provider's nodes failed");
            return;
        }
    };
    head.inspect(|state| {
        let mut book = autoscaler.book();
        for id in ids {
            if book.launches.contains_key(&id)
                || book.reap.contains_key(&id)
                || book.reaping.contains(&id)
                || book.recently_stopped.contains_key(&id)
            {
                continue; // known, or its stop is under way or just done (the list may lag)
            }
            if state.retired_launches.contains(&id) {
                book.reap.insert(id, Reap::new());
                continue;
            }
            let node_type = type_of_launch(&id);
            if autoscaler.planner.capacity(&node_type).is_none() {
                continue;
            }
            book.launches.insert(
                id,
                LaunchRecord {
                    node_type,
                    phase: Phase::Launching,
                    since: Instant::now(),
                    attempts: 1,
                    reason: "found at the provider, not in this head's records".to_string(),
                    node_id: None,
                    idle_since: None,
                    adopted: true,
                },
            );
        }
        book.listed_at = Some(Instant::now());
        book.recently_stopped
            .retain(|_, at| at.elapsed() < LIST_EVERY * 3);
    });
}

pub(super) async fn round(head: &Arc<Head>, autoscaler: &Arc<Autoscaler>, head_address: &str) {
    let now = Instant::now();
    // Read with the state locked, then the book (the one lock order), so a node retired
    // meanwhile is never taken for a new one.
    let mut to_create = head.inspect(|state| take_registrations(state, autoscaler, now));
    let (plan, empty_draining) = head.inspect(|state| plan_on_state(state, autoscaler, now));
    to_create.extend(record_decisions(autoscaler, &plan, &empty_draining, now));
    // Carried out with no lock held across a provider call.
    start_launches(autoscaler, to_create, head_address);
    stop_drained(head, autoscaler, empty_draining);
    retry_stops(autoscaler, now);
    // Now and then, what the provider has is compared with the book.
    let list_due = autoscaler
        .book()
        .listed_at
        .is_none_or(|at| at.elapsed() > LIST_EVERY);
    if list_due {
        reconcile(head, autoscaler).await;
    }
}

/// Registrations, deaths, launch timeouts and retries. Returns the launches to create.
fn take_registrations(state: &mut HeadState, autoscaler: &Autoscaler, now: Instant) -> Vec<String> {
    let config = &autoscaler.config;
    let launch_timeout = Duration::from_secs_f64(config.launch_timeout_s);
    let registered: BTreeMap<String, (String, bool, String)> = state
        .nodes
        .values()
        .filter_map(|node| {
            let launch = node.resources.labels.get(LAUNCH_ID_LABEL)?;
            let node_type = node
                .resources
                .labels
                .get(NODE_TYPE_LABEL)
                .cloned()
                .unwrap_or_default();
            Some((launch.clone(), (node.id.clone(), node.alive, node_type)))
        })
        .collect();
    let mut to_create: Vec<String> = Vec::new();
    let mut book = autoscaler.book();
    for (launch, (node_id, alive, node_type)) in &registered {
        if state.retired_launches.contains(launch) {
            continue; // stopped by this autoscaler: never taken back
        }
        if *alive && book.reaping.contains(launch) {
            // Its stop is under way: it takes no work and is not taken back.
            state.scheduler.set_schedulable(node_id, false);
            continue;
        }
        if *alive && book.reap.remove(launch).is_some() {
            // A stop was queued (its try failed or timed out), but the agent is here and
            // registered: keep it rather than stop a node that works.
            book.decide(format!(
                "launch {launch} registered as {node_id} after its try was given up; kept"
            ));
        }
        if !*alive {
            if let Some(record) = book.launches.remove(launch) {
                if !matches!(record.phase, Phase::Stopping) {
                    book.decide(format!("node {node_id} ({launch}) died; forgotten"));
                    book.reap.insert(launch.clone(), Reap::new());
                }
            }
            continue;
        }
        if autoscaler.planner.capacity(node_type).is_none() && !book.launches.contains_key(launch) {
            continue; // not a type of this config: capacity the autoscaler leaves alone
        }
        let record = book
            .launches
            .entry(launch.clone())
            .or_insert_with(|| LaunchRecord {
                node_type: node_type.clone(),
                phase: Phase::Launching,
                since: now,
                attempts: 1,
                reason: "registered; launched by an earlier head or an earlier try".to_string(),
                node_id: None,
                idle_since: None,
                adopted: false,
            });
        if matches!(
            record.phase,
            Phase::Requested | Phase::Launching | Phase::BackingOff { .. } | Phase::Failed { .. }
        ) {
            let took = now.duration_since(record.since).as_secs_f64();
            record.phase = Phase::Running;
            record.since = now;
            record.node_id = Some(node_id.clone());
            record.reason = format!("registered as {node_id} after {took:.1} s");
        }
    }
    let mut failed_now = Vec::new();
    let mut retries = Vec::new();
    for (launch, record) in book.launches.iter() {
        match record.phase {
            Phase::Requested | Phase::Launching
                if now.duration_since(record.since) > launch_timeout =>
            {
                failed_now.push((
                    launch.clone(),
                    format!("did not register within {:.0} s", config.launch_timeout_s),
                ));
            }
            Phase::BackingOff { until } if now >= until => retries.push(launch.clone()),
            _ => {}
        }
    }
    for (launch, why) in failed_now {
        let adopted = book.launches.get(&launch).is_some_and(|r| r.adopted);
        if adopted {
            // Not this head's launch: stopped, and left to the plan to replace if needed.
            book.launches.remove(&launch);
            book.decide(format!(
                "launch {launch}, found at the provider, {why}; stopping it"
            ));
        } else {
            fail_attempt(autoscaler, &mut book, &launch, why);
        }
        book.reap.insert(launch, Reap::new());
    }
    // Each try gets its own launch id, so a late agent of an earlier try, or the stop of
    // one, can never be taken for this one.
    for old in retries {
        if let Some(mut record) = book.launches.remove(&old) {
            let id = new_launch_id(&record.node_type);
            record.phase = Phase::Requested;
            record.since = now;
            book.launches.insert(id.clone(), record);
            to_create.push(id);
        }
    }
    book.launches
        .retain(|_, r| !matches!(r.phase, Phase::Failed { until } if now >= until));
    to_create
}

/// Plans on the live scheduler and marks the nodes to drain. Returns the plan and the draining
/// nodes that are empty now (launch, node id).
fn plan_on_state(
    state: &mut HeadState,
    autoscaler: &Autoscaler,
    now: Instant,
) -> (Plan, Vec<(String, String)>) {
    let mut book = autoscaler.book();
    let mut managed = Vec::new();
    let mut empty_draining = Vec::new();
    for (launch, record) in book.launches.iter_mut() {
        let phase = match record.phase {
            Phase::Running => NodePhase::Running,
            Phase::Draining | Phase::Stopping => NodePhase::Draining,
            _ => NodePhase::Launching,
        };
        let mut idle_for_s = 0.0;
        if let Some(node_id) = &record.node_id {
            if phase == NodePhase::Draining {
                // Kept off even if the agent registered again (which makes it schedulable).
                state.scheduler.set_schedulable(node_id, false);
            }
            if state.node_holds_anything(node_id) {
                record.idle_since = None;
            } else {
                let since = *record.idle_since.get_or_insert(now);
                idle_for_s = now.duration_since(since).as_secs_f64();
                if record.phase == Phase::Draining {
                    empty_draining.push((launch.clone(), node_id.clone()));
                }
            }
        }
        managed.push(ManagedNode {
            id: record.node_id.clone().unwrap_or_else(|| launch.clone()),
            node_type: record.node_type.clone(),
            phase,
            idle_for_s,
            low_use_for_s: 0.0,
            movable: Vec::new(),
        });
    }
    let pending = state.pending_sets();
    let plan = autoscaler
        .planner
        .plan(&mut state.scheduler, &managed, &pending);
    for drain in &plan.drains {
        state.scheduler.set_schedulable(&drain.node_id, false);
    }
    (plan, empty_draining)
}

/// Writes the plan into the book (waiting reasons, new launches, drains, stops). Returns the
/// launches to create.
fn record_decisions(
    autoscaler: &Autoscaler,
    plan: &Plan,
    empty_draining: &[(String, String)],
    now: Instant,
) -> Vec<String> {
    let mut to_create = Vec::new();
    let mut book = autoscaler.book();
    let mut waiting: Vec<String> = plan
        .waiting
        .iter()
        .map(|w| format!("{}: {}", w.set, w.why))
        .collect();
    // Work counted on a launch that keeps failing waits for that launch: say why.
    for (launch, record) in &book.launches {
        if matches!(
            record.phase,
            Phase::BackingOff { .. } | Phase::Failed { .. }
        ) {
            waiting.push(format!(
                "work planned on launch {launch} ({}) waits: {}",
                record.node_type, record.reason
            ));
        }
    }
    book.waiting = waiting;
    for launch in &plan.launches {
        for _ in 0..launch.count {
            let id = new_launch_id(&launch.node_type);
            book.launches.insert(
                id.clone(),
                LaunchRecord {
                    node_type: launch.node_type.clone(),
                    phase: Phase::Requested,
                    since: now,
                    attempts: 0,
                    reason: launch.reason.clone(),
                    node_id: None,
                    idle_since: None,
                    adopted: false,
                },
            );
            to_create.push(id);
        }
        book.decide(format!(
            "launch {} x {} {}",
            launch.count, launch.node_type, launch.reason
        ));
    }
    for drain in &plan.drains {
        if let Some((_, record)) = book
            .launches
            .iter_mut()
            .find(|(_, r)| r.node_id.as_deref() == Some(&drain.node_id))
        {
            record.phase = Phase::Draining;
            record.since = now;
            record.reason = drain.reason.clone();
        }
        book.decide(format!("drain {}: {}", drain.node_id, drain.reason));
    }
    for (launch, _) in empty_draining {
        if let Some(record) = book.launches.get_mut(launch) {
            record.phase = Phase::Stopping;
            record.since = now;
        }
    }
    to_create
}

/// Asks the provider for each launch, in the background.
fn start_launches(autoscaler: &Arc<Autoscaler>, to_create: Vec<String>, head_address: &str) {
    let config = &autoscaler.config;
    for launch in to_create {
        let autoscaler = autoscaler.clone();
        let Some(spec) = ({
            let book = autoscaler.book();
            book.launches.get(&launch).and_then(|record| {
                Some(LaunchSpec {
                    launch_id: launch.clone(),
                    node_type_name: record.node_type.clone(),
                    node_type: config.node_types.get(&record.node_type)?.clone(),
                    head_address: config
                        .head_address
                        .clone()
                        .unwrap_or_else(|| head_address.to_string()),
                    token_file: autoscaler.token_file.clone(),
                })
            })
        }) else {
            continue;
        };
        tokio::spawn(async move {
            let result = autoscaler.provider.create(spec).await;
            let mut book = autoscaler.book();
            match result {
                Ok(()) => {
                    book.launched += 1;
                    if let Some(record) = book.launches.get_mut(&launch) {
                        record.attempts += 1;
                        if record.phase == Phase::Requested {
                            record.phase = Phase::Launching;
                            record.since = Instant::now();
                        }
                    }
                }
                Err(e) => {
                    let phase = book
                        .launches
                        .get(&launch)
                        .map(|record| record.phase.clone());
                    match phase {
                        Some(Phase::Requested) => {
                            if let Some(record) = book.launches.get_mut(&launch) {
                                record.attempts += 1;
                            }
                            fail_attempt(&autoscaler, &mut book, &launch, e.to_string());
                            // Whatever the failed create left is stopped (a try gets a new id).
                            book.reap.insert(launch.clone(), Reap::new());
                        }
                        Some(Phase::Running) | Some(Phase::Draining) | Some(Phase::Stopping) => {
                            // Its agent registered although the create reported an error (a
                            // command that ran past its timeout after starting it): kept.
                            book.decide(format!(
                                "launch {launch}: the provider reported an error after its agent registered; kept: {e}"
                            ));
                        }
                        _ => {
                            // Timed out and handled already: whatever it left is stopped.
                            book.reap.insert(launch.clone(), Reap::new());
                            book.decide(format!("launch {launch}: its create failed late: {e}"));
                        }
                    }
                }
            }
        });
    }
}

/// Takes each empty draining node out of the cluster, then has the provider stop it.
fn stop_drained(
    head: &Arc<Head>,
    autoscaler: &Arc<Autoscaler>,
    empty_draining: Vec<(String, String)>,
) {
    for (launch, node_id) in empty_draining {
        let autoscaler = autoscaler.clone();
        let head = head.clone();
        tokio::spawn(async move {
            // Taken out of the cluster first, unless work landed since the plan: from here on
            // the agent, if it registers again, gets no work and is never taken back.
            let retired = head.update(|state| {
                if state.node_holds_anything(&node_id) {
                    (false, Vec::new())
                } else {
                    (true, state.retire_node(&node_id, Instant::now()))
                }
            });
            if !retired {
                let mut book = autoscaler.book();
                if let Some(record) = book.launches.get_mut(&launch) {
                    record.phase = Phase::Draining;
                    record.reason = "work arrived while draining; stopped once it ends".to_string();
                }
                return;
            }
            let stopped = autoscaler.provider.delete(launch.clone()).await;
            let mut book = autoscaler.book();
            book.launches.remove(&launch);
            book.terminated += 1;
            match stopped {
                Ok(()) => {
                    book.recently_stopped.insert(launch.clone(), Instant::now());
                    book.decide(format!("stopped {node_id} ({launch})"))
                }
                Err(e) => {
                    book.reap.insert(launch.clone(), Reap::new());
                    book.decide(format!(
                        "{node_id} ({launch}) left the cluster; stopping it failed, asking again: {e}"
                    ));
                }
            }
        });
    }
}

/// Asks again for the stops that are due, with backoff until the provider says they are gone.
fn retry_stops(autoscaler: &Arc<Autoscaler>, now: Instant) {
    let reap: Vec<String> = {
        let mut book = autoscaler.book();
        let due: Vec<String> = book
            .reap
            .iter()
            .filter(|(id, reap)| reap.next_at <= now && !book.reaping.contains(*id))
            .map(|(id, _)| id.clone())
            .collect();
        book.reaping.extend(due.iter().cloned());
        due
    };
    for launch in reap {
        let autoscaler = autoscaler.clone();
        tokio::spawn(async move {
            let outcome = autoscaler.provider.delete(launch.clone()).await;
            let mut book = autoscaler.book();
            book.reaping.remove(&launch);
            match outcome {
                Ok(()) => {
                    book.reap.remove(&launch);
                    book.recently_stopped.insert(launch.clone(), Instant::now());
                }
                Err(e) => {
                    let max_tries = autoscaler.config.max_launch_attempts * 2;
                    let Some(reap) = book.reap.get_mut(&launch) else {
                        return;
                    };
                    reap.tries += 1;
                    reap.last_error = e.to_string();
                    reap.next_at = Instant::now() + autoscaler.backoff(reap.tries);
                    if reap.tries >= max_tries {
                        book.reap.remove(&launch);
                        book.decide(format!(
                            "gave up stopping {launch} after {max_tries} tries; stop it by hand if it exists: {e}"
                        ));
                    }
                }
            }
        });
    }
}

/// A fresh launch id: the type, a dash and 8 hex digits (the type is read back from it).
fn new_launch_id(node_type: &str) -> String {
    format!(
        "{node_type}-{}",
        &uuid::Uuid::new_v4().simple().to_string()[..8]
    )
}

/// One try of a launch failed: back off, or give up after the last try and rest the capacity.
fn fail_attempt(autoscaler: &Autoscaler, book: &mut Book, launch: &str, why: String) {
    let config = &autoscaler.config;
    book.failures += 1;
    let Some(record) = book.launches.get_mut(launch) else {
        return;
    };
    let now = Instant::now();
    let attempts = record.attempts.max(1);
    if attempts >= config.max_launch_attempts {
        let rest = Duration::from_secs_f64(config.backoff_max_s);
        record.phase = Phase::Failed { until: now + rest };
        record.reason = format!(
            "gave up after {attempts} tries (resting {:.0} s): {why}",
            rest.as_secs_f64()
        );
    } else {
        let wait = autoscaler.backoff(attempts);
        record.phase = Phase::BackingOff { until: now + wait };
        record.reason = format!(
            "try {attempts} failed, next in {:.0} s: {why}",
            wait.as_secs_f64()
        );
    }
    record.since = now;
    let text = format!("launch {launch}: {}", record.reason);
    book.decide(text);
}
