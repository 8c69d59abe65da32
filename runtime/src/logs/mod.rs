//! Seeing what actors do: their output logs as users read them (the record format node agents
//! write, one line per record, `UNIX_MS O|E text`, O for stdout and E for stderr; its parser;
//! and the query a caller makes with `Cluster::logs` or `troupe logs`: which incarnations, how
//! many lines from the end, from when), and what a live actor is doing now (`activity`).

mod activity;
mod query;

pub use activity::{inspect, ActorActivity};
pub use query::{describe, read, ActorKey, FollowEvent, LogFollower, LogQuery, LogSelection};

use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// Which of a worker's streams a line came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
pub enum Stream {
    Stdout,
    Stderr,
}

impl Stream {
    fn tag(self) -> u8 {
        match self {
            Stream::Stdout => b'O',
            Stream::Stderr => b'E',
        }
    }
}

/// One line of an actor's output.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct LogLine {
    /// When the node agent read it from the worker, in milliseconds since the Unix epoch.
    pub unix_ms: u64,
    pub stream: Stream,
    pub text: String,
}

impl LogLine {
    /// `HH:MM:SS.mmm` in UTC.
    pub fn clock(&self) -> String {
        let seconds_of_day = (self.unix_ms / 1000) % 86_400;
        format!(
            "{:02}:{:02}:{:02}.{:03}",
            seconds_of_day / 3600,
            seconds_of_day / 60 % 60,
            seconds_of_day % 60,
            self.unix_ms % 1000
        )
    }
}

/// One incarnation's lines, as `Cluster::logs` returns them.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct IncarnationLog {
    pub actor_id: String,
    pub incarnation: u64,
    pub node_id: String,
    pub started_unix_ms: u64,
    /// 0 while it runs.
    pub ended_unix_ms: u64,
    pub exit_reason: String,
    pub lines: Vec<LogLine>,
    /// Why the lines could not be read (its node died, say); the lines are then empty.
    pub unreadable: Option<String>,
    /// Where in the log the read ended (the end of its last whole line): `LogFollower::after`
    /// goes on from here. `u64::MAX` when this incarnation was not read (its end, then).
    pub next_offset: u64,
}

/// Milliseconds since the Unix epoch, now.
pub(crate) fn unix_ms_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or(Duration::ZERO)
        .as_millis() as u64
}

/// Appends one record (its text without the line end) to `out`.
pub(crate) fn write_record(out: &mut Vec<u8>, unix_ms: u64, stream: Stream, text: &[u8]) {
    out.extend_from_slice(unix_ms.to_string().as_bytes());
    out.push(b' ');
    out.push(stream.tag());
    out.push(b' ');
    out.extend_from_slice(text);
    out.push(b'\n');
}

/// Parses one record line (without its line end). A line that is not a record (a log written
/// before records, or cut by a read that started mid-line) comes back as stdout text at time 0.
pub fn parse_record(line: &str) -> LogLine {
    let parsed = line.split_once(' ').and_then(|(time, rest)| {
        let unix_ms = time.parse::<u64>().ok()?;
        let (tag, text) = rest.split_at_checked(1)?;
        let stream = match tag {
            "O" => Stream::Stdout,
            "E" => Stream::Stderr,
            _ => return None,
        };
        let text = text.strip_prefix(' ').unwrap_or(text);
        Some(LogLine {
            unix_ms,
            stream,
            text: text.to_string(),
        })
    });
    parsed.unwrap_or_else(|| LogLine {
        unix_ms: 0,
        stream: Stream::Stdout,
        text: line.to_string(),
    })
}

/// Parses whole lines of `data`; a last line without its end is kept only when `complete`.
pub fn parse_records(data: &[u8], complete: bool) -> (Vec<LogLine>, usize) {
    let text = String::from_utf8_lossy(data);
    let mut lines = Vec::new();
    let mut used = 0;
    for piece in text.split_inclusive('\n') {
        let Some(line) = piece.strip_suffix('\n') else {
            if complete {
                lines.push(parse_record(piece));
                used += piece.len();
            }
            break;
        };
        lines.push(parse_record(line));
        used += piece.len();
    }
    // Lossy decoding can change lengths: count bytes of the input, not of the decoded text.
    let used = if text.len() == data.len() {
        used
    } else {
        data.iter().rposition(|byte| *byte == b'\n').map_or(
            if complete { data.len() } else { 0 },
            |end| {
                if complete {
                    data.len()
                } else {
                    end + 1
                }
            },
        )
    };
    (lines, used)
}

/// The text of the last `lines` records of `data`, prefixes removed (for death reasons).
pub(crate) fn tail_text(data: &str, lines: usize) -> String {
    let all: Vec<String> = data.lines().map(|line| parse_record(line).text).collect();
    all[all.len().saturating_sub(lines)..].join("\n")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn records_round_trip_and_foreign_lines_are_kept() {
        let mut out = Vec::new();
        write_record(&mut out, 1_700_000_000_123, Stream::Stdout, b"hello world");
        write_record(&mut out, 1_700_000_000_456, Stream::Stderr, b"");
        out.extend_from_slice(b"no prefix here\npartial");
        let (lines, used) = parse_records(&out, false);
        assert_eq!(lines.len(), 3);
        assert_eq!(lines[0].text, "hello world");
        assert_eq!(lines[0].stream, Stream::Stdout);
        assert_eq!(lines[0].unix_ms, 1_700_000_000_123);
        assert_eq!(lines[1].stream, Stream::Stderr);
        assert_eq!(lines[1].text, "");
        assert_eq!(lines[2].unix_ms, 0, "a foreign line has no time");
        assert_eq!(lines[2].text, "no prefix here");
        assert_eq!(used, out.len() - "partial".len());
        let (all, used) = parse_records(&out, true);
        assert_eq!(all.last().unwrap().text, "partial");
        assert_eq!(used, out.len());
        assert_eq!(lines[0].clock(), "22:13:20.123");
    }

    #[test]
    fn tails_drop_prefixes() {
        let mut out = Vec::new();
        for (i, text) in ["one", "two", "three"].iter().enumerate() {
            write_record(&mut out, i as u64, Stream::Stderr, text.as_bytes());
        }
        let text = String::from_utf8(out).unwrap();
        assert_eq!(tail_text(&text, 2), "two\nthree");
    }
}
