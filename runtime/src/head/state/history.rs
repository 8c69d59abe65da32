//! Each actor's incarnation history (`ActorInfo.history`): where every worker process of it ran,
//! when, and how it ended, so that its logs can be found on the right node after restarts. The
//! latest `MAX_HISTORY` are kept.

use troupe_proto::{ActorInfo, Incarnation};

/// Incarnations kept per actor; older ones (and their logs) are no longer found.
pub(crate) const MAX_HISTORY: usize = 32;

/// Records that `info.incarnation` just started on `info.node_id`; an earlier one still open is
/// closed as replaced.
pub(super) fn started(info: &mut ActorInfo, now_unix_ms: u64) {
    for earlier in info.history.iter_mut().filter(|i| i.ended_unix_ms == 0) {
        earlier.ended_unix_ms = now_unix_ms;
        if earlier.exit_reason.is_empty() {
            earlier.exit_reason = "replaced by a later incarnation".to_string();
        }
    }
    info.history.push(Incarnation {
        incarnation: info.incarnation,
        node_id: info.node_id.clone(),
        node_address: info.node_address.clone(),
        started_unix_ms: now_unix_ms,
        ended_unix_ms: 0,
        exit_reason: String::new(),
    });
    let excess = info.history.len().saturating_sub(MAX_HISTORY);
    info.history.drain(..excess);
}

/// Characters of an exit reason kept per incarnation (its first line: the rest is the worker's
/// last output, which its log holds anyway).
const MAX_REASON_CHARS: usize = 200;

/// Records how `incarnation` ended (the first reason given wins; its first line, cut to
/// `MAX_REASON_CHARS`).
pub(super) fn ended(info: &mut ActorInfo, incarnation: u64, reason: &str, now_unix_ms: u64) {
    if let Some(entry) = info
        .history
        .iter_mut()
        .find(|i| i.incarnation == incarnation && i.ended_unix_ms == 0)
    {
        entry.ended_unix_ms = now_unix_ms;
        let first_line = reason.lines().next().unwrap_or("").trim_end_matches(':');
        entry.exit_reason = match first_line.char_indices().nth(MAX_REASON_CHARS) {
            Some((cut, _)) => format!("{}…", &first_line[..cut]),
            None => first_line.to_string(),
        };
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keeps_the_latest_with_their_nodes_and_ends() {
        let mut info = ActorInfo::default();
        for n in 1..=(MAX_HISTORY as u64 + 3) {
            info.incarnation = n;
            info.node_id = format!("node-{n}");
            started(&mut info, n * 10);
            if n % 2 == 0 {
                ended(&mut info, n, "exited with status 1", n * 10 + 5);
            }
        }
        assert_eq!(info.history.len(), MAX_HISTORY);
        assert_eq!(info.history[0].incarnation, 4);
        let last = info.history.last().unwrap();
        assert_eq!(
            (last.incarnation, last.ended_unix_ms),
            (MAX_HISTORY as u64 + 3, 0)
        );
        let odd = &info.history[1];
        assert_eq!(odd.incarnation, 5);
        assert_eq!(odd.exit_reason, "replaced by a later incarnation");
        let even = &info.history[0];
        assert_eq!(
            (even.exit_reason.as_str(), even.ended_unix_ms),
            ("exited with status 1", 45)
        );
        ended(&mut info, 5, "late report", 999);
        assert_eq!(
            info.history[1].exit_reason,
            "replaced by a later incarnation"
        );
        info.incarnation = 99;
        started(&mut info, 1000);
        let long = format!("killed by signal 9; last output:\n{}", "é".repeat(500));
        ended(&mut info, 99, &long, 1001);
        assert_eq!(
            info.history.last().unwrap().exit_reason,
            "killed by signal 9; last output"
        );
        info.incarnation = 100;
        started(&mut info, 1002);
        ended(&mut info, 100, &"x".repeat(300), 1003);
        assert_eq!(
            info.history.last().unwrap().exit_reason.chars().count(),
            MAX_REASON_CHARS + 1
        );
    }
}
