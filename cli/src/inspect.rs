//! `troupe logs`, `troupe calls` and `troupe timeline`: an actor's (or a job's) output across
//! its restarts, what a live actor is doing now (calls in flight, queue, thread stacks), and the
//! cluster's timeline of calls and stages as Chrome trace JSON for Perfetto.

use super::connect::{checked, head_address};
use anyhow::{bail, Context};
use std::path::PathBuf;
use std::time::{Duration, SystemTime, UNIX_EPOCH};
use troupe::logs::{ActorKey, FollowEvent, IncarnationLog, LogFollower, LogLine, LogQuery, Stream};
use troupe::server::rpc::{AuthChannel, Token};
use troupe_proto::actors_client::ActorsClient;

/// Largest reply these commands take from the head (actor lists, the drivers' spans).
const MAX_REPLY_BYTES: usize = 256 << 20;

/// How often `-f` looks for new output.
const FOLLOW_PERIOD: Duration = Duration::from_millis(500);

/// The flags of `troupe logs`.
#[derive(Debug, clap::Args)]
pub(crate) struct LogsArgs {
    /// An actor's name or id, or a job's submission id.
    target: String,
    /// Keep printing new output (across the actor's restarts) until it dies or the job ends.
    #[arg(short, long)]
    follow: bool,
    /// Only the last N lines.
    #[arg(long)]
    tail: Option<usize>,
    /// Only lines from this long ago on: 90s, 10m, 2h, 1d (actors only).
    #[arg(long, value_parser = parse_age)]
    since: Option<Duration>,
    /// Only this incarnation (default: every one the head still knows).
    #[arg(long)]
    incarnation: Option<u64>,
    /// The head's address (default: $TROUPE_ADDRESS, then the cluster `troupe up` started).
    #[arg(long)]
    head: Option<String>,
}

/// The furthest back an age may reach (100 years).
const MAX_AGE_S: u64 = 100 * 365 * 86_400;

/// Parses an age like `90s`, `10m`, `2h` or `1d`.
pub(crate) fn parse_age(text: &str) -> Result<Duration, String> {
    let (number, unit) = text.split_at(
        text.find(|c: char| !c.is_ascii_digit())
            .unwrap_or(text.len()),
    );
    let value: u64 = number
        .parse()
        .map_err(|_| format!("`{text}`: expected a number and a unit, like 90s, 10m, 2h or 1d"))?;
    let scale = match unit {
        "s" => 1,
        "m" => 60,
        "h" => 3600,
        "d" => 86_400,
        _ => return Err(format!("`{text}`: the unit must be s, m, h or d")),
    };
    let seconds = value
        .checked_mul(scale)
        .filter(|seconds| *seconds <= MAX_AGE_S)
        .ok_or_else(|| format!("`{text}`: more than 100 years back"))?;
    Ok(Duration::from_secs(seconds))
}

async fn connect(head: Option<String>) -> anyhow::Result<(String, Token, AuthChannel)> {
    let address = checked(head_address(head)?)?;
    let token =
        Token::from_env().with_context(|| format!("connecting to the cluster at {address}"))?;
    let channel = troupe::server::rpc::connect(&address, &token)
        .await
        .map_err(anyhow::Error::msg)
        .with_context(|| format!("connecting to the head at {address}"))?;
    Ok((address, token, channel))
}

/// Milliseconds since the Unix epoch; at least 1, since 0 means "unbounded" to the head.
fn unix_ms(at: SystemTime) -> u64 {
    (at.duration_since(UNIX_EPOCH)
        .unwrap_or(Duration::ZERO)
        .as_millis() as u64)
        .max(1)
}

pub(crate) async fn logs(args: LogsArgs) -> anyhow::Result<i32> {
    let (address, token, channel) = connect(args.head.clone()).await?;
    let mut actors = ActorsClient::new(channel).max_decoding_message_size(MAX_REPLY_BYTES);
    let key = ActorKey::Either(args.target.clone());
    let actor_id = match troupe::logs::describe(&mut actors, &key).await {
        Ok(described) => described.actor_id,
        Err(status) if status.code() == tonic::Code::NotFound => {
            return job_logs(&address, &token, &args).await.with_context(|| {
                format!(
                    "`{}` is no actor the head knows ({})",
                    args.target,
                    status.message()
                )
            });
        }
        Err(status) => bail!(
            "reading the logs of `{}`: {}",
            args.target,
            status.message()
        ),
    };
    let query = LogQuery {
        incarnations: match args.incarnation {
            Some(n) => troupe::logs::LogSelection::Only(n),
            None => troupe::logs::LogSelection::All,
        },
        tail: args.tail,
        since_unix_ms: args.since.map(|age| unix_ms(SystemTime::now() - age)),
    };
    let logs = troupe::logs::read(&mut actors, &key, &query)
        .await
        .map_err(|status| {
            anyhow::anyhow!(
                "reading the logs of `{}`: {}",
                args.target,
                status.message()
            )
        })?;
    for log in &logs {
        print_incarnation(log);
    }
    if !args.follow {
        return Ok(0);
    }
    // From where the read ended: nothing written meanwhile is lost.
    let mut follower = LogFollower::after(&logs, &actor_id);
    loop {
        match follower.next(&mut actors).await {
            Ok(FollowEvent::Lines { lines, .. }) => lines.iter().for_each(print_line),
            Ok(FollowEvent::Restarted(incarnation)) => println!(
                "=== incarnation {} on node {} started {} ===",
                incarnation.incarnation,
                incarnation.node_id,
                clock(incarnation.started_unix_ms)
            ),
            Ok(FollowEvent::Dead { reason }) => {
                println!("=== the actor is dead: {reason} ===");
                return Ok(0);
            }
            Ok(FollowEvent::Idle) => tokio::time::sleep(FOLLOW_PERIOD).await,
            Err(status) => bail!("following `{}`: {}", args.target, status.message()),
        }
    }
}

fn clock(unix_ms: u64) -> String {
    LogLine {
        unix_ms,
        stream: Stream::Stdout,
        text: String::new(),
    }
    .clock()
}

fn print_incarnation(log: &IncarnationLog) {
    let ended = if log.ended_unix_ms == 0 {
        "running".to_string()
    } else {
        format!("ended {}: {}", clock(log.ended_unix_ms), log.exit_reason)
    };
    println!(
        "=== {} incarnation {} on node {}, started {}, {} ===",
        log.actor_id,
        log.incarnation,
        log.node_id,
        clock(log.started_unix_ms),
        ended
    );
    if let Some(why) = &log.unreadable {
        println!("(log not readable: {why})");
    }
    log.lines.iter().for_each(print_line);
}

fn print_line(line: &LogLine) {
    let stream = match line.stream {
        Stream::Stdout => "out",
        Stream::Stderr => "err",
    };
    println!("{} {stream} {}", line.clock(), line.text);
}

async fn job_logs(address: &str, token: &Token, args: &LogsArgs) -> anyhow::Result<i32> {
    if args.since.is_some() || args.incarnation.is_some() {
        bail!("--since and --incarnation apply to actors; a job's log is one stream without times");
    }
    let client = troupe::jobs::JobClient::connect(address, token).await?;
    let mut out = std::io::stdout();
    let mut write_out = |data: &[u8]| {
        use std::io::Write;
        let _ = out.write_all(data);
        let _ = out.flush();
    };
    if args.follow && args.tail.is_none() {
        client.follow(&args.target, write_out).await?;
        return Ok(0);
    }
    let log = client
        .logs(&args.target)
        .await
        .with_context(|| format!("no job `{}` either", args.target))?;
    let text = String::from_utf8_lossy(&log);
    let lines: Vec<&str> = text.lines().collect();
    let keep = args.tail.unwrap_or(lines.len()).min(lines.len());
    for line in &lines[lines.len() - keep..] {
        write_out(format!("{line}\n").as_bytes());
    }
    if args.follow {
        // From where the tail ended.
        let mut seen = log.len();
        client
            .follow(&args.target, |data| {
                let skip = seen.min(data.len());
                seen -= skip;
                write_out(&data[skip..]);
            })
            .await?;
    }
    Ok(0)
}

/// The flags of `troupe calls`.
#[derive(Debug, clap::Args)]
pub(crate) struct CallsArgs {
    /// A live actor's name or id.
    actor: String,
    /// Leave out the threads' native stacks.
    #[arg(long)]
    no_stacks: bool,
    /// One JSON object instead of text.
    #[arg(long)]
    json: bool,
    /// The head's address (default: $TROUPE_ADDRESS, then the cluster `troupe up` started).
    #[arg(long)]
    head: Option<String>,
}

pub(crate) async fn calls(args: CallsArgs) -> anyhow::Result<i32> {
    let (_, token, channel) = connect(args.head.clone()).await?;
    let mut actors = ActorsClient::new(channel).max_decoding_message_size(MAX_REPLY_BYTES);
    let found = troupe::logs::inspect(&mut actors, &token, &args.actor, !args.no_stacks)
        .await
        .map_err(|status| {
            anyhow::anyhow!("asking `{}` what it does: {}", args.actor, status.message())
        })?;
    let (info, activity) = (&found.actor, &found.activity);
    if args.json {
        let value = serde_json::json!({
            "actor_id": info.id,
            "name": info.name,
            "node_id": info.node_id,
            "incarnation": info.incarnation,
            "pid": activity.pid,
            "max_concurrency": activity.max_concurrency,
            "queued": activity.queued,
            "served": activity.served,
            "calls": activity.calls.iter().map(|call| serde_json::json!({
                "call_id": call.call_id,
                "method": call.method,
                "caller": call.caller,
                "elapsed_s": call.elapsed_us as f64 / 1e6,
                "step": call.step,
                "weight_version": call.weight_version,
            })).collect::<Vec<_>>(),
            "threads": activity.threads.iter().map(|thread| serde_json::json!({
                "tid": thread.tid,
                "name": thread.name,
                "frames": thread.frames,
                "note": thread.note,
            })).collect::<Vec<_>>(),
            "backtrace_note": activity.backtrace_note,
        });
        println!("{}", serde_json::to_string_pretty(&value)?);
        return Ok(0);
    }
    println!(
        "actor {} ({}) incarnation {} on node {}, pid {}",
        if info.name.is_empty() {
            "(unnamed)"
        } else {
            &info.name
        },
        info.id,
        info.incarnation,
        info.node_id,
        activity.pid
    );
    println!(
        "{} call(s) in flight of at most {}, {} queued, {} served",
        activity.calls.len(),
        activity.max_concurrency,
        activity.queued,
        activity.served
    );
    if !activity.calls.is_empty() {
        println!(
            "  {:<8} {:<24} {:>10} {:>6} {:>8}  CALLER",
            "CALL", "METHOD", "ELAPSED", "STEP", "WEIGHTS"
        );
        for call in &activity.calls {
            let or_dash = |value: Option<u64>| value.map_or("-".to_string(), |v| v.to_string());
            println!(
                "  {:<8} {:<24} {:>10} {:>6} {:>8}  {}",
                call.call_id,
                call.method,
                elapsed(call.elapsed_us),
                or_dash(call.step),
                or_dash(call.weight_version),
                call.caller
            );
        }
    }
    if !activity.backtrace_note.is_empty() {
        println!("no thread stacks: {}", activity.backtrace_note);
    }
    for thread in &activity.threads {
        println!("\nthread {} \"{}\"", thread.tid, thread.name);
        if !thread.note.is_empty() {
            println!("  ({})", thread.note);
        }
        for (depth, frame) in thread.frames.iter().enumerate() {
            println!("  {depth:>3}: {}", shortened(frame));
        }
    }
    Ok(0)
}

/// Longest frame line in text output (`--json` keeps whole frames).
const FRAME_CHARS: usize = 200;

/// A frame cut to `FRAME_CHARS` characters (generic async frames can run to thousands).
fn shortened(frame: &str) -> String {
    match frame.char_indices().nth(FRAME_CHARS) {
        Some((cut, _)) => format!("{}…", &frame[..cut]),
        None => frame.to_string(),
    }
}

/// `1.234s`, `2m03s`, `1h02m`.
fn elapsed(us: u64) -> String {
    let seconds = us / 1_000_000;
    match seconds {
        0..=59 => format!("{:.3}s", us as f64 / 1e6),
        60..=3599 => format!("{}m{:02}s", seconds / 60, seconds % 60),
        _ => format!("{}h{:02}m", seconds / 3600, seconds / 60 % 60),
    }
}

/// The flags of `troupe timeline`.
#[derive(Debug, clap::Args)]
pub(crate) struct TimelineArgs {
    /// Where to write the Chrome trace JSON (open it at ui.perfetto.dev).
    #[arg(long)]
    out: PathBuf,
    /// Only spans from this long ago on: 90s, 10m, 2h, 1d.
    #[arg(long, value_parser = parse_age)]
    since: Option<Duration>,
    /// Only spans up to this long ago.
    #[arg(long, value_parser = parse_age)]
    until: Option<Duration>,
    /// The head's address (default: $TROUPE_ADDRESS, then the cluster `troupe up` started).
    #[arg(long)]
    head: Option<String>,
}

pub(crate) async fn timeline(args: TimelineArgs) -> anyhow::Result<i32> {
    let now = SystemTime::now();
    let unix_us = |age: Option<Duration>| age.map_or(0, |age| unix_ms(now - age) * 1000);
    let (since, until) = (unix_us(args.since), unix_us(args.until));
    if since != 0 && until != 0 && since >= until {
        bail!("--since must reach further back than --until");
    }
    let (address, token, channel) = connect(args.head.clone()).await?;
    let mut actors = ActorsClient::new(channel.clone()).max_decoding_message_size(MAX_REPLY_BYTES);
    let mut cluster = troupe_proto::cluster_client::ClusterClient::new(channel)
        .max_decoding_message_size(MAX_REPLY_BYTES);
    let timeline = troupe::timeline::gather(&mut actors, &mut cluster, &token, since, until, None)
        .await
        .map_err(|status| {
            anyhow::anyhow!(
                "gathering the timeline from {address}: {}",
                status.message()
            )
        })?;
    for why in &timeline.unreachable {
        eprintln!("warning: no spans from {why}");
    }
    if timeline.spans.is_empty() {
        let range = match (args.since, args.until) {
            (None, None) => "so far".to_string(),
            (since, until) => format!(
                "between {} and {}",
                since.map_or("the start".to_string(), |a| format!(
                    "{} s ago",
                    a.as_secs()
                )),
                until.map_or("now".to_string(), |a| format!("{} s ago", a.as_secs()))
            ),
        };
        bail!(
            "no calls or stages recorded {range} by the {} live actor(s) asked (recording is off \
             in processes started with TROUPE_TIMELINE=0; actors that died took their spans)",
            timeline.actors_asked
        );
    }
    let trace = troupe::timeline::chrome::to_chrome_trace(&timeline);
    std::fs::write(&args.out, serde_json::to_vec(&trace)?)
        .with_context(|| format!("writing {}", args.out.display()))?;
    println!(
        "wrote {} spans from {} actor(s) to {} (open it at https://ui.perfetto.dev){}",
        timeline.spans.len(),
        timeline.actors_asked - timeline.unreachable.len(),
        args.out.display(),
        if timeline.dropped > 0 {
            format!(
                "; {} older spans were dropped by full buffers",
                timeline.dropped
            )
        } else {
            String::new()
        }
    );
    Ok(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ages_parse_and_bad_ones_are_named() {
        assert_eq!(parse_age("90s"), Ok(Duration::from_secs(90)));
        assert_eq!(parse_age("10m"), Ok(Duration::from_secs(600)));
        assert_eq!(parse_age("2h"), Ok(Duration::from_secs(7200)));
        assert_eq!(parse_age("1d"), Ok(Duration::from_secs(86_400)));
        assert!(parse_age("10").unwrap_err().contains("unit"));
        assert!(parse_age("m").unwrap_err().contains("number"));
        assert!(parse_age("5y").unwrap_err().contains("unit"));
        assert!(parse_age("99999999999999999d")
            .unwrap_err()
            .contains("100 years"));
        assert!(parse_age("99999999999999999999s")
            .unwrap_err()
            .contains("number"));
        assert_eq!(elapsed(1_500_000), "1.500s");
        assert_eq!(elapsed(123_000_000), "2m03s");
        assert_eq!(elapsed(3_720_000_000), "1h02m");
        assert_eq!(shortened("ab"), "ab");
        let long = "é".repeat(FRAME_CHARS + 5);
        assert_eq!(shortened(&long).chars().count(), FRAME_CHARS + 1);
    }
}
