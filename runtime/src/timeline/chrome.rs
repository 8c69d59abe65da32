//! A timeline as Chrome trace JSON (the Trace Event Format that Perfetto and chrome://tracing
//! open): one process per node (and one for the driver), one track per actor (and per stage on
//! the driver), complete ("X") events with the span's step, weight version, bytes and caller in
//! their args. Spans that overlap on one actor (a concurrent actor) go on extra lanes, so that
//! every track nests properly. Times are microseconds from the first span.

use super::{Timeline, TimelineSpan};
use serde_json::{json, Value};
use std::collections::BTreeMap;

/// Lanes one track may have.
const MAX_LANES: usize = 64;

/// The trace document for `timeline`.
pub fn to_chrome_trace(timeline: &Timeline) -> Value {
    let origin = timeline
        .spans
        .iter()
        .map(|span| span.start_unix_us)
        .min()
        .unwrap_or(0);
    let mut processes: BTreeMap<&str, u64> = BTreeMap::new();
    // (process, track key) -> (track id, lane ends)
    let mut tracks: BTreeMap<(u64, String), (u64, Vec<u64>)> = BTreeMap::new();
    let mut events = Vec::with_capacity(timeline.spans.len() + 16);
    let mut metadata = Vec::new();
    let mut next_track = 1u64;
    for span in &timeline.spans {
        let next_pid = processes.len() as u64 + 1;
        let pid = *processes.entry(span.node_id.as_str()).or_insert_with(|| {
            let label = if span.node_id.starts_with("driver") {
                span.node_id.clone()
            } else {
                format!("node {}", span.node_id)
            };
            metadata.push(json!({"ph": "M", "name": "process_name", "pid": next_pid,
                "args": {"name": label}}));
            next_pid
        });
        let (key, label) = track_of(span);
        let (base, lanes) = tracks.entry((pid, key)).or_insert_with(|| {
            let base = next_track;
            next_track += MAX_LANES as u64;
            (base, Vec::new())
        });
        let end = span.start_unix_us.saturating_add(span.duration_us);
        let free = lanes
            .iter()
            .position(|busy_until| *busy_until <= span.start_unix_us);
        let (lane, new_lane) = match free {
            Some(free) => (free, false),
            None if lanes.len() < MAX_LANES => {
                lanes.push(0);
                (lanes.len() - 1, true)
            }
            // Past the lanes a track has: the one that frees first (the view may overlap).
            None => (
                (0..lanes.len()).min_by_key(|i| lanes[*i]).unwrap_or(0),
                false,
            ),
        };
        lanes[lane] = lanes[lane].max(end);
        let tid = *base + lane as u64;
        if new_lane {
            let name = if lane == 0 {
                label
            } else {
                format!("{label} (lane {})", lane + 1)
            };
            metadata.push(
                json!({"ph": "M", "name": "thread_name", "pid": pid, "tid": tid,
                "args": {"name": name}}),
            );
        }
        let mut args = serde_json::Map::new();
        if let Some(step) = span.step {
            args.insert("step".into(), json!(step));
        }
        if let Some(version) = span.weight_version {
            args.insert("weight_version".into(), json!(version));
        }
        args.insert("bytes_in".into(), json!(span.bytes_in));
        args.insert("bytes_out".into(), json!(span.bytes_out));
        if !span.caller.is_empty() {
            args.insert("caller".into(), json!(span.caller));
        }
        if !span.actor_id.is_empty() {
            args.insert("actor".into(), json!(span.actor_id));
            args.insert("incarnation".into(), json!(span.incarnation));
        }
        if !span.group.is_empty() {
            args.insert("group".into(), json!(span.group));
        }
        if span.failed {
            args.insert("failed".into(), json!(true));
        }
        events.push(json!({
            "name": span.name,
            "cat": span.kind.as_str(),
            "ph": "X",
            "ts": span.start_unix_us - origin,
            "dur": span.duration_us.max(1),
            "pid": pid,
            "tid": tid,
            "args": args,
        }));
    }
    metadata.extend(events);
    json!({
        "traceEvents": metadata,
        "displayTimeUnit": "ms",
        "otherData": {
            "origin_unix_us": origin,
            "dropped_spans": timeline.dropped,
            "actors_asked": timeline.actors_asked,
            "unreachable": timeline.unreachable,
        },
    })
}

/// The track a span goes on and its name: its actor, or its stage on the driver.
fn track_of(span: &TimelineSpan) -> (String, String) {
    if span.actor_id.is_empty() {
        let key = format!("{}:{}", span.kind.as_str(), span.name);
        (key, format!("{} {}", span.kind.as_str(), span.name))
    } else {
        let name = if span.actor_name.is_empty() {
            span.actor_id.clone()
        } else {
            format!("{} ({})", span.actor_name, span.actor_id)
        };
        (span.actor_id.clone(), name)
    }
}

#[cfg(test)]
mod tests {
    use super::super::SpanKind;
    use super::*;

    fn span(actor: &str, node: &str, start: u64, duration: u64) -> TimelineSpan {
        TimelineSpan {
            kind: if actor.is_empty() {
                SpanKind::Stage
            } else {
                SpanKind::Call
            },
            name: "generate".into(),
            actor_id: actor.into(),
            actor_name: if actor.is_empty() {
                String::new()
            } else {
                format!("{actor}-name")
            },
            incarnation: 1,
            node_id: node.into(),
            start_unix_us: start,
            duration_us: duration,
            step: Some(2),
            weight_version: Some(1),
            bytes_in: 10,
            bytes_out: 20,
            caller: "driver-1".into(),
            failed: false,
            group: String::new(),
        }
    }

    #[test]
    fn overlapping_calls_get_lanes_and_nodes_get_processes() {
        let timeline = Timeline {
            spans: vec![
                span("", "driver", 1_000, 500),
                span("a1", "n1", 1_010, 100),
                span("a1", "n1", 1_050, 100),
                span("a1", "n1", 1_200, 10),
                span("a2", "n2", 1_020, 30),
            ],
            ..Timeline::default()
        };
        let trace = to_chrome_trace(&timeline);
        let events = trace["traceEvents"].as_array().unwrap();
        let complete: Vec<&Value> = events.iter().filter(|e| e["ph"] == "X").collect();
        assert_eq!(complete.len(), 5);
        assert_eq!(complete[0]["ts"], 0);
        assert_eq!(complete[1]["ts"], 10);
        assert_eq!(complete[1]["args"]["step"], 2);
        assert_eq!(complete[1]["args"]["weight_version"], 1);
        let tids: Vec<u64> = complete
            .iter()
            .map(|e| e["tid"].as_u64().unwrap())
            .collect();
        assert_eq!(
            tids[1] + 1,
            tids[2],
            "the overlapping call goes on the next lane"
        );
        assert_eq!(tids[1], tids[3], "a later call reuses the first lane");
        let pids: Vec<u64> = complete
            .iter()
            .map(|e| e["pid"].as_u64().unwrap())
            .collect();
        assert_eq!((pids[0], pids[1], pids[4]), (1, 2, 3));
        let names: Vec<&str> = events
            .iter()
            .filter(|e| e["ph"] == "M")
            .filter_map(|e| e["args"]["name"].as_str())
            .collect();
        assert!(names.contains(&"node n1"), "{names:?}");
        assert!(names.contains(&"a1-name (a1)"), "{names:?}");
        assert!(names.contains(&"a1-name (a1) (lane 2)"), "{names:?}");
        assert!(names.contains(&"stage generate"), "{names:?}");
    }
}
