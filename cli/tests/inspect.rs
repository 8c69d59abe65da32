//! Seeing what a run does, on real processes: a head and two node agents as `troupe` processes,
//! this test binary as the driver and as every worker. `troupe logs` across an actor's restarts
//! (each incarnation marked, stdout and stderr, --tail, --since, --incarnation, -f until the
//! actor dies), the log of an actor whose node died, `Cluster::logs`; `troupe calls` on an actor
//! stuck in a sync method (the call, its caller and step, the queue behind it, the stuck
//! thread's native stack); `troupe timeline` (Chrome trace JSON with the calls' steps, and a
//! range with nothing in it refused); and bad input (unknown names) answered by name.
//!
//! Run: `cargo test -p troupe-cli --test inspect`.

#[macro_use]
mod support;

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};
use support::{kill9, wait_for_state, Fixture, Scenario};
use troupe::proto::ActorState;
use troupe::timeline::StepTag;
use troupe::{Cluster, SpawnOptions};

/// An actor that talks on both streams and can be made to hang in a sync method.
pub struct Talker {
    label: String,
}

#[troupe::actor]
impl Talker {
    pub fn new(label: String) -> Self {
        let incarnation = std::env::var("TROUPE_WORKER_INCARNATION").unwrap_or_default();
        println!("hello from {label} incarnation {incarnation}");
        eprintln!("warning from {label} incarnation {incarnation}");
        Talker { label }
    }

    pub fn say(&self, text: String) -> u32 {
        println!("{}: {text}", self.label);
        std::process::id()
    }

    /// Sleeps `ms` in a plain blocking call: a sync method stuck in native code.
    pub fn hang(&self, ms: u64) -> u64 {
        stuck_in_native_sleep(ms);
        ms
    }
}

#[inline(never)]
fn stuck_in_native_sleep(ms: u64) {
    std::thread::sleep(Duration::from_millis(ms));
    std::hint::black_box(ms);
}

struct World {
    fixture: Fixture,
    cluster: Cluster,
}

/// Runs `troupe ARGS` against the fixture's head; returns (success, stdout, stderr).
fn troupe(world: &World, args: &[&str]) -> anyhow::Result<(bool, String, String)> {
    let output = Command::new(support::troupe_bin())
        .args(args)
        .args(["--head", &world.fixture.head_address])
        .stdin(Stdio::null())
        .output()?;
    Ok((
        output.status.success(),
        String::from_utf8_lossy(&output.stdout).into_owned(),
        String::from_utf8_lossy(&output.stderr).into_owned(),
    ))
}

fn options() -> SpawnOptions {
    SpawnOptions::new().num_cpus(0.5)
}

async fn logs_follow_an_actor_across_restarts(world: &World) -> anyhow::Result<()> {
    let cluster = &world.cluster;
    let talker = Talker::spawn(
        cluster,
        options().name("talker").max_restarts(2),
        "talker".into(),
    )
    .await?;
    let first_pid = talker.say("before the crash".into()).await?;
    // A time between the two incarnations' lines, for --since.
    tokio::time::sleep(Duration::from_millis(300)).await;
    let between = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)?
        .as_millis() as u64;
    tokio::time::sleep(Duration::from_millis(300)).await;
    kill9(first_pid);
    let deadline = Instant::now() + Duration::from_secs(30);
    let second_pid = loop {
        match talker.say("after the crash".into()).await {
            Ok(pid) if pid != first_pid => break pid,
            _ => {}
        }
        anyhow::ensure!(
            Instant::now() < deadline,
            "the talker did not restart in 30 s"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    anyhow::ensure!(second_pid != first_pid);
    let (ok, out, err) = troupe(world, &["logs", "talker"])?;
    anyhow::ensure!(ok, "troupe logs failed: {err}");
    println!("{out}");
    let first = out
        .find("incarnation 1 on node")
        .ok_or_else(|| anyhow::anyhow!("no incarnation 1 header:\n{out}"))?;
    let second = out
        .find("incarnation 2 on node")
        .ok_or_else(|| anyhow::anyhow!("no incarnation 2 header:\n{out}"))?;
    anyhow::ensure!(first < second, "incarnations out of order:\n{out}");
    let before = out
        .find("out talker: before the crash")
        .ok_or_else(|| anyhow::anyhow!("no first line:\n{out}"))?;
    let after = out
        .find("out talker: after the crash")
        .ok_or_else(|| anyhow::anyhow!("no later line:\n{out}"))?;
    anyhow::ensure!(
        first < before && before < second && second < after,
        "lines under the wrong incarnation:\n{out}"
    );
    anyhow::ensure!(
        out.contains("err warning from talker incarnation 1"),
        "stderr not marked:\n{out}"
    );
    anyhow::ensure!(out.contains("out hello from talker incarnation 2"), "{out}");
    anyhow::ensure!(
        out.contains("signal 9") || out.contains("killed"),
        "the first incarnation's end is not told:\n{out}"
    );

    let (ok, out, err) = troupe(world, &["logs", "talker", "--tail", "1"])?;
    anyhow::ensure!(ok, "{err}");
    let lines: Vec<&str> = out.lines().filter(|l| !l.starts_with("===")).collect();
    anyhow::ensure!(
        lines.len() == 1 && lines[0].ends_with("talker: after the crash"),
        "--tail 1 gave:\n{out}"
    );

    let (ok, out, err) = troupe(world, &["logs", "talker", "--incarnation", "1"])?;
    anyhow::ensure!(
        ok && out.contains("before the crash") && !out.contains("after the crash"),
        "--incarnation 1 gave:\n{out}{err}"
    );

    let (ok, out, err) = troupe(world, &["logs", "talker", "--since", "1h"])?;
    anyhow::ensure!(
        ok && out.contains("after the crash"),
        "--since 1h lost lines:\n{out}{err}"
    );

    // The same from Rust, by id.
    let id = cluster.actor_info(&talker).await?.id;
    let logs = cluster
        .logs(&id, &troupe::logs::LogQuery::default())
        .await?;
    anyhow::ensure!(
        logs.len() == 2,
        "Cluster::logs gave {} incarnations",
        logs.len()
    );
    anyhow::ensure!(logs[0]
        .lines
        .iter()
        .any(|l| l.text == "talker: before the crash"));
    anyhow::ensure!(logs[1].ended_unix_ms == 0 && logs[0].ended_unix_ms > 0);
    let since = troupe::logs::LogQuery {
        since_unix_ms: Some(between),
        ..Default::default()
    };
    let later = cluster.logs("talker", &since).await?;
    let texts: Vec<&str> = later
        .iter()
        .flat_map(|log| log.lines.iter().map(|l| l.text.as_str()))
        .collect();
    anyhow::ensure!(
        texts.contains(&"talker: after the crash") && !texts.contains(&"talker: before the crash"),
        "since a time between the incarnations gave {texts:?}"
    );
    anyhow::ensure!(logs[0]
        .lines
        .iter()
        .any(|l| l.stream == troupe::logs::Stream::Stderr));

    // -f prints what comes and ends when the actor dies.
    let log = world.fixture.dir.join("follow.out");
    let mut follower = Command::new(support::troupe_bin())
        .args([
            "logs",
            "talker",
            "-f",
            "--tail",
            "0",
            "--head",
            &world.fixture.head_address,
        ])
        .stdout(std::fs::File::create(&log)?)
        .stderr(Stdio::inherit())
        .spawn()?;
    tokio::time::sleep(Duration::from_millis(1500)).await;
    talker.say("while followed".into()).await?;
    tokio::time::sleep(Duration::from_millis(1500)).await;
    cluster.kill(&talker).await?;
    let deadline = Instant::now() + Duration::from_secs(20);
    let status = loop {
        if let Some(status) = follower.try_wait()? {
            break status;
        }
        if Instant::now() > deadline {
            let _ = follower.kill();
            anyhow::bail!(
                "troupe logs -f did not end after the actor died: {}",
                std::fs::read_to_string(&log)?
            );
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    let followed = std::fs::read_to_string(&log)?;
    anyhow::ensure!(status.success(), "{followed}");
    anyhow::ensure!(
        followed.contains("talker: while followed"),
        "-f missed a line:\n{followed}"
    );
    anyhow::ensure!(
        followed.contains("the actor is dead"),
        "-f did not say the actor died:\n{followed}"
    );
    Ok(())
}

async fn logs_of_a_dead_node_and_unknown_names_are_told(world: &World) -> anyhow::Result<()> {
    let cluster = &world.cluster;
    let doomed = Talker::spawn(
        cluster,
        options().name("doomed").max_restarts(0).label("index", "1"),
        "doomed".into(),
    )
    .await?;
    doomed.say("on node one".into()).await?;
    world.fixture.kill_node(1)?;
    wait_for_state(cluster, &doomed, ActorState::Dead, Duration::from_secs(20)).await?;
    let (ok, out, err) = troupe(world, &["logs", "doomed"])?;
    anyhow::ensure!(ok, "{err}");
    anyhow::ensure!(
        out.contains("which is dead"),
        "the dead node is not named:\n{out}"
    );

    let (ok, _, err) = troupe(world, &["logs", "no-such-actor"])?;
    anyhow::ensure!(
        !ok && err.contains("no actor named `no-such-actor`"),
        "unknown name gave: {err}"
    );
    let (ok, _, err) = troupe(world, &["calls", "no-such-actor"])?;
    anyhow::ensure!(
        !ok && err.contains("no-such-actor"),
        "calls on an unknown name gave: {err}"
    );
    let (ok, _, err) = troupe(world, &["calls", "doomed"])?;
    anyhow::ensure!(
        !ok && err.contains("no live actor named `doomed`"),
        "calls on a dead actor gave: {err}"
    );
    Ok(())
}

async fn calls_show_a_stuck_sync_method(world: &World) -> anyhow::Result<()> {
    let cluster = &world.cluster;
    let stuck = Talker::spawn(cluster, options().name("stuck"), "stuck".into()).await?;
    stuck.say("ready".into()).await?;
    let hanging = stuck.clone();
    let tag = StepTag {
        step: Some(7),
        weight_version: Some(3),
    };
    let first = tokio::spawn(troupe::timeline::with_step(tag, async move {
        hanging.hang(6_000).await
    }));
    // The hang call first: the three calls behind it must find it running.
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let (ok, out, _) = troupe(world, &["calls", "stuck", "--json", "--no-stacks"])?;
        if ok && out.contains("\"hang\"") {
            break;
        }
        anyhow::ensure!(Instant::now() < deadline, "the hang call never ran: {out}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let behind: Vec<_> = (0..3)
        .map(|n| {
            let queued = stuck.clone();
            tokio::spawn(async move { queued.say(format!("queued behind {n}")).await })
        })
        .collect();
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let (ok, out, err) = troupe(world, &["calls", "stuck", "--json"])?;
    anyhow::ensure!(ok, "troupe calls failed: {err}");
    let report: serde_json::Value = serde_json::from_str(&out)?;
    let call = &report["calls"][0];
    anyhow::ensure!(call["method"] == "hang", "no hang call in flight: {out}");
    anyhow::ensure!(call["elapsed_s"].as_f64().unwrap_or(0.0) >= 1.0, "{out}");
    anyhow::ensure!(
        call["step"] == 7 && call["weight_version"] == 3,
        "the step did not travel: {out}"
    );
    anyhow::ensure!(
        call["caller"]
            .as_str()
            .is_some_and(|c| !c.is_empty() && c != "unknown"),
        "{out}"
    );
    anyhow::ensure!(
        report["queued"] == 3,
        "the three queued calls are not counted: {out}"
    );
    let stuck_thread = report["threads"].as_array().and_then(|threads| {
        threads.iter().find(|t| {
            t["frames"].as_array().is_some_and(|frames| {
                frames.iter().any(|f| {
                    f.as_str()
                        .is_some_and(|f| f.contains("stuck_in_native_sleep"))
                })
            })
        })
    });
    anyhow::ensure!(
        stuck_thread.is_some(),
        "no thread stack shows the stuck function: {out}"
    );
    let (ok, text, err) = troupe(world, &["calls", "stuck"])?;
    anyhow::ensure!(
        ok && text.contains("hang") && text.contains("3 queued"),
        "{text}{err}"
    );
    println!("{text}");
    first.await??;
    for queued in behind {
        queued.await??;
    }
    Ok(())
}

async fn timeline_holds_the_calls_with_their_steps(world: &World) -> anyhow::Result<()> {
    let cluster = &world.cluster;
    let talker = Talker::spawn(cluster, options().name("timed"), "timed".into()).await?;
    for step in 0..3u64 {
        let tag = StepTag {
            step: Some(step),
            weight_version: Some(step / 2),
        };
        troupe::timeline::with_step(tag, talker.say(format!("step {step}"))).await?;
    }
    let out = world.fixture.dir.join("timeline.json");
    let out_text = out.display().to_string();
    let (ok, printed, err) = troupe(world, &["timeline", "--out", &out_text])?;
    anyhow::ensure!(ok, "troupe timeline failed: {err}");
    println!("{printed}");
    let trace: serde_json::Value = serde_json::from_slice(&std::fs::read(&out)?)?;
    let events = trace["traceEvents"]
        .as_array()
        .ok_or_else(|| anyhow::anyhow!("no traceEvents"))?;
    let says: Vec<&serde_json::Value> = events
        .iter()
        .filter(|e| e["ph"] == "X" && e["name"] == "say" && e["args"]["step"].is_u64())
        .collect();
    anyhow::ensure!(
        says.len() >= 3,
        "the tagged calls are not in the trace: {} of them",
        says.len()
    );
    anyhow::ensure!(says
        .iter()
        .any(|e| e["args"]["step"] == 2 && e["args"]["weight_version"] == 1));
    anyhow::ensure!(
        events.iter().any(|e| e["ph"] == "M"
            && e["args"]["name"]
                .as_str()
                .is_some_and(|n| n.starts_with("timed ("))),
        "the actor's track is not named"
    );
    let (ok, _, err) = troupe(world, &["timeline", "--out", &out_text, "--until", "1d"])?;
    anyhow::ensure!(
        !ok && err.contains("no calls or stages recorded between"),
        "an empty range gave: {err}"
    );
    let spans = cluster
        .write_timeline(&world.fixture.dir.join("rust-timeline.json"), 0)
        .await?;
    anyhow::ensure!(spans >= 3, "Cluster::write_timeline wrote {spans} spans");
    Ok(())
}

fn scenarios<'a>() -> Vec<Scenario<'a, World>> {
    vec![
        scenario!(logs_follow_an_actor_across_restarts),
        scenario!(calls_show_a_stuck_sync_method),
        scenario!(timeline_holds_the_calls_with_their_steps),
        scenario!(logs_of_a_dead_node_and_unknown_names_are_told),
    ]
}

fn main() -> std::process::ExitCode {
    troupe::init();
    let runtime = match support::tokio_runtime() {
        Ok(runtime) => runtime,
        Err(code) => return code,
    };
    let passed = runtime.block_on(async {
        run_cluster_scenarios!(
            &[vec!["--cpus", "4"], vec!["--cpus", "4"]],
            World,
            scenarios
        )
    });
    support::exit_code(passed)
}
