//! compare_trl: the report of `benches/compare_trl.sh`, GRPO runs of troupe and of TRL's
//! GRPOTrainer side by side, per seed. Every run of a seed started from the same saved warm start
//! (the first troupe run made it), so each curve's clock is that warm start's seconds plus the
//! seconds since the run's own step-0 evaluation: the warm start is counted for everyone, start-up
//! (cluster spawn, imports, model load) for no one.
//!
//! For each seed it prints held-out success at every evaluation against steps and against
//! seconds, seconds per step and completion tokens per second, and for each troupe run: the time
//! it took to reach TRL's final held-out success against TRL's whole run (the speed-up) and its
//! worst margin over TRL at equal wall time. `--json` writes all of it, `--png` draws the curves.
//!
//! Run: `cargo run --release -p troupe-actors --example compare_trl -- --run troupe:0:A.json
//!       --run trl:0:B.json --json out.json --png out.png` (benches/compare_trl.sh does this)

use anyhow::{bail, Context};
use clap::Parser;
use serde::Serialize;
use serde_json::Value;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use troupe_actors::recipes::plot::{write_png, Panel, Series, BLUE, GREEN, ORANGE, RED};

#[derive(Parser)]
struct Args {
    /// LABEL:SEED:PATH of a run's JSON (troupe's `--json`, or benches/trl/grpo_trl.py's); a
    /// label starting with `trl` is the baseline of its seed.
    #[arg(long = "run", required = true)]
    runs: Vec<String>,
    #[arg(long)]
    json: Option<PathBuf>,
    #[arg(long)]
    png: Option<PathBuf>,
}

/// One evaluation of a run on the common clock.
#[derive(Debug, Clone, Serialize)]
struct Point {
    step: u64,
    seconds: f64,
    accuracy: f64,
}

#[derive(Debug, Clone, Serialize)]
struct Run {
    label: String,
    seed: u64,
    path: PathBuf,
    warm_start_s: f64,
    curve: Vec<Point>,
    step_s_mean: f64,
    completion_tokens_per_s: f64,
}

/// A troupe run against its seed's TRL run.
#[derive(Debug, Clone, Serialize)]
struct Versus {
    label: String,
    trl_final_accuracy: f64,
    trl_wall_s: f64,
    /// When this run first reached TRL's final held-out success after its step 0 (None: never,
    /// or TRL ended no higher than it started).
    reaches_trl_final_at_s: Option<f64>,
    speedup: Option<f64>,
    /// The least (this run - TRL) held-out success at TRL's evaluation times, this run read at
    /// its latest evaluation before each (points; negative: behind somewhere).
    worst_margin_at_equal_time: f64,
}

fn number(value: &Value, key: &str, path: &Path) -> anyhow::Result<f64> {
    value[key]
        .as_f64()
        .with_context(|| format!("{}: no number `{key}`", path.display()))
}

fn read_run(spec: &str) -> anyhow::Result<Run> {
    let mut parts = spec.splitn(3, ':');
    let (Some(label), Some(seed), Some(path)) = (parts.next(), parts.next(), parts.next()) else {
        bail!("--run `{spec}`: expected LABEL:SEED:PATH");
    };
    let seed: u64 = seed
        .parse()
        .with_context(|| format!("--run `{spec}`: seed `{seed}`"))?;
    let path = PathBuf::from(path);
    let text =
        std::fs::read_to_string(&path).with_context(|| format!("reading {}", path.display()))?;
    let value: Value =
        serde_json::from_str(&text).with_context(|| format!("parsing {}", path.display()))?;
    if value["seed"].as_u64() != Some(seed) {
        bail!(
            "{}: seed {} where --run says {seed}",
            path.display(),
            value["seed"]
        );
    }
    let raw: Vec<Point> =
        serde_json::from_value::<Vec<BTreeMap<String, f64>>>(value["heldout_curve"].clone())
            .with_context(|| format!("{}: heldout_curve", path.display()))?
            .into_iter()
            .map(|p| Point {
                step: p.get("step").copied().unwrap_or(0.0) as u64,
                seconds: p.get("seconds").copied().unwrap_or(f64::NAN),
                accuracy: p.get("accuracy").copied().unwrap_or(f64::NAN),
            })
            .collect();
    let Some(start) = raw.first().filter(|p| p.step == 0) else {
        bail!("{}: heldout_curve does not start at step 0", path.display());
    };
    let trl = value["framework"].as_str() == Some("trl");
    let (warm_start_s, step_s_mean, tokens_per_s) = if trl {
        let warm_start = PathBuf::from(value["warm_start"].as_str().unwrap_or_default());
        let record_path = warm_start.join("warm_start.json");
        let record: Value = serde_json::from_str(
            &std::fs::read_to_string(&record_path)
                .with_context(|| format!("reading {}", record_path.display()))?,
        )?;
        (
            number(&record["outcome"], "seconds", &record_path)?,
            number(&value, "step_s_mean", &path)?,
            number(&value, "completion_tokens_per_s", &path)?,
        )
    } else {
        (
            number(&value, "sft_s", &path)?,
            number(&value, "step_s_mean", &path)?,
            troupe_tokens_per_s(&value, &path)?,
        )
    };
    let origin = start.seconds;
    let curve = raw
        .iter()
        .map(|p| Point {
            seconds: warm_start_s + p.seconds - origin,
            ..p.clone()
        })
        .collect();
    Ok(Run {
        label: label.to_string(),
        seed,
        path,
        warm_start_s,
        curve,
        step_s_mean,
        completion_tokens_per_s: tokens_per_s,
    })
}

/// Response tokens of all steps over the GRPO seconds, from the run's metrics.jsonl.
fn troupe_tokens_per_s(report: &Value, path: &Path) -> anyhow::Result<f64> {
    let metrics = PathBuf::from(report["metrics"].as_str().unwrap_or_default());
    let text = std::fs::read_to_string(&metrics).with_context(|| {
        format!(
            "reading {} (named by {})",
            metrics.display(),
            path.display()
        )
    })?;
    let mut tokens = 0.0;
    for line in text.lines().filter(|l| !l.trim().is_empty()) {
        let row: Value = serde_json::from_str(line)?;
        tokens += row["response_tokens"].as_f64().unwrap_or(0.0);
    }
    Ok(tokens / number(report, "grpo_s", path)?)
}

fn versus(run: &Run, trl: &Run) -> Versus {
    let last = trl.curve.last().expect("curves start at step 0");
    // Only after training started, and only a success TRL gained: reaching a final at or
    // below the shared warm start's would be no race at all.
    let gained = last.accuracy > trl.curve[0].accuracy;
    let reached = run
        .curve
        .iter()
        .filter(|p| gained && p.step > 0)
        .find(|p| p.accuracy >= last.accuracy - 1e-9)
        .map(|p| p.seconds);
    let at = |seconds: f64| {
        run.curve
            .iter()
            .take_while(|p| p.seconds <= seconds + 1e-9)
            .last()
            .map_or(0.0, |p| p.accuracy)
    };
    let worst = trl
        .curve
        .iter()
        .map(|p| (at(p.seconds) - p.accuracy) * 100.0)
        .fold(f64::INFINITY, f64::min);
    Versus {
        label: run.label.clone(),
        trl_final_accuracy: last.accuracy,
        trl_wall_s: last.seconds,
        reaches_trl_final_at_s: reached,
        speedup: reached.map(|s| last.seconds / s),
        worst_margin_at_equal_time: worst,
    }
}

fn print_seed(seed: u64, runs: &[&Run], verdicts: &[Versus]) {
    println!("\n== seed {seed}: held-out success (time in s, warm start included)");
    let mut header = String::from("| step |");
    for run in runs {
        header.push_str(&format!(" {} | {} s |", run.label, run.label));
    }
    println!("{header}");
    println!("|{}", " --- |".repeat(1 + 2 * runs.len()));
    let steps: std::collections::BTreeSet<u64> = runs
        .iter()
        .flat_map(|r| r.curve.iter().map(|p| p.step))
        .collect();
    for step in steps {
        let mut row = format!("| {step} |");
        for run in runs {
            match run.curve.iter().find(|p| p.step == step) {
                Some(p) => {
                    row.push_str(&format!(" {:.1}% | {:.0} |", p.accuracy * 100.0, p.seconds))
                }
                None => row.push_str(" | |"),
            }
        }
        println!("{row}");
    }
    for run in runs {
        println!(
            "{}: warm start {:.0} s, {:.3} s per step, {:.0} completion tokens/s",
            run.label, run.warm_start_s, run.step_s_mean, run.completion_tokens_per_s
        );
    }
    for v in verdicts {
        match (v.reaches_trl_final_at_s, v.speedup) {
            (Some(at), Some(speedup)) => println!(
                "{}: reaches TRL's final {:.1}% at {:.0} s against TRL's {:.0} s: {:.2}x; worst margin at equal time {:+.1} points",
                v.label, v.trl_final_accuracy * 100.0, at, v.trl_wall_s, speedup, v.worst_margin_at_equal_time
            ),
            _ => println!(
                "{}: never reaches TRL's final {:.1}%; worst margin at equal time {:+.1} points",
                v.label, v.trl_final_accuracy * 100.0, v.worst_margin_at_equal_time
            ),
        }
    }
}

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let runs: Vec<Run> = args
        .runs
        .iter()
        .map(|s| read_run(s))
        .collect::<anyhow::Result<_>>()?;
    let seeds: std::collections::BTreeSet<u64> = runs.iter().map(|r| r.seed).collect();
    let colors = [BLUE, ORANGE, GREEN, RED];
    let mut panels = Vec::new();
    let mut report = Vec::new();
    for seed in seeds {
        let of_seed: Vec<&Run> = runs.iter().filter(|r| r.seed == seed).collect();
        let trl = of_seed.iter().find(|r| r.label.starts_with("trl"));
        let verdicts: Vec<Versus> = match trl {
            Some(trl) => of_seed
                .iter()
                .filter(|r| !r.label.starts_with("trl"))
                .map(|r| versus(r, trl))
                .collect(),
            None => Vec::new(),
        };
        print_seed(seed, &of_seed, &verdicts);
        for (title, x_label, by_time) in [
            (
                format!("seed {seed}: held-out success against time"),
                "seconds, warm start included",
                true,
            ),
            (
                format!("seed {seed}: held-out success against steps"),
                "GRPO steps",
                false,
            ),
        ] {
            panels.push(Panel {
                title,
                x_label: x_label.to_string(),
                y_range: Some((0.0, 1.0)),
                series: of_seed
                    .iter()
                    .zip(colors.iter().cycle())
                    .map(|(run, color)| Series {
                        name: run.label.clone(),
                        color: *color,
                        points: run
                            .curve
                            .iter()
                            .map(|p| (if by_time { p.seconds } else { p.step as f64 }, p.accuracy))
                            .collect(),
                    })
                    .collect(),
            });
        }
        report.push(serde_json::json!({"seed": seed, "runs": of_seed, "versus_trl": verdicts}));
    }
    if let Some(path) = &args.json {
        let written = troupe::report::write_json(path, &serde_json::json!({"seeds": report}))?;
        println!("wrote {}", written.display());
    }
    if let Some(path) = &args.png {
        write_png(path, &panels, 900, 300)
            .with_context(|| format!("writing {}", path.display()))?;
        println!("wrote {}", path.display());
    }
    Ok(())
}
