//! The web dashboard in a real browser: a `troupe head --dashboard-port 0` with two node agents
//! (one declaring 2 GPUs), this test binary as the driver of a slow two-stage pipeline over two
//! GPU actors (each prints a known line when constructed), an actor with markup in its name, one
//! waiting for a GPU, a placement group and a job that prints a known line. Headless chromium
//! (driven by chromedriver) checks that a wrong or missing token gets the login page and no
//! data, then logs in and loads each page, asserting on what it shows (the GPU cell held by the
//! right actor, an actor's and a job's log line, a stage's time in seconds, the metric charts),
//! and saves a screenshot of each under `target/dashboard-screenshots/` (chromedriver's log goes
//! there too).
//!
//! The pages refresh themselves (the script swaps `<main>`'s children), so an element handle
//! can go stale between finding it and reading it: the test unticks auto-refresh right after
//! logging in (the choice persists in the browser's storage), ticks it again only to see a newer
//! pipeline step appear without navigating, and reads what pages show in single scripts
//! (`texts`, `attrs`), never through a handle kept across calls.
//!
//! Needs `chromium` and `chromedriver` (scripts/test.sh installs them); without them the test
//! is skipped, or fails when CI=true or TROUPE_REQUIRE_BROWSER=1.
//!
//! Run: `cargo test -p troupe-cli --test dashboard`.

#[macro_use]
mod support;
#[path = "support/browser.rs"]
mod browser;
#[path = "support/dashboard_work.rs"]
mod work;

use browser::Browser;
use fantoccini::{Client, Locator};
use std::path::PathBuf;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};
use support::Fixture;
use troupe::Cluster;
use work::{start_work, Work, EVIL_NAME, GENERATE_MS, JOB_LINE, TRAINER_LINE};

struct World {
    fixture: Fixture,
    cluster: Cluster,
    tools: browser::Tools,
}

fn scenarios<'a>() -> Vec<support::Scenario<'a, World>> {
    vec![scenario!(dashboard_in_a_browser)]
}

/// Where the screenshots go: `target/dashboard-screenshots/`.
fn screenshot_dir() -> PathBuf {
    let tmp = PathBuf::from(env!("CARGO_TARGET_TMPDIR"));
    tmp.parent()
        .map(|target| target.join("dashboard-screenshots"))
        .unwrap_or_else(|| tmp.join("dashboard-screenshots"))
}

async fn dashboard_in_a_browser(world: &World) -> anyhow::Result<()> {
    anyhow::ensure!(
        !world.fixture.dashboard_address.is_empty(),
        "the head wrote no dashboard address"
    );
    let work = start_work(&world.fixture, &world.cluster).await?;
    // Under target/, not the fixture's directory (removed at the end unless TROUPE_KEEP_LOGS).
    std::fs::create_dir_all(screenshot_dir())?;
    let log = screenshot_dir().join("chromedriver.log");
    let browser = Browser::start(&world.tools, &log, 1400, 1000).await?;
    let outcome = browse(world, &work, &browser).await;
    work.stop.store(true, Ordering::Relaxed);
    browser.close().await;
    let steps = tokio::time::timeout(Duration::from_secs(30), work.driver).await;
    outcome?;
    match steps {
        Ok(Ok(Ok(steps))) => println!("the pipeline ran {steps} steps"),
        Ok(Ok(Err(err))) => anyhow::bail!("the pipeline failed: {err:#}"),
        Ok(Err(err)) => anyhow::bail!("the pipeline's task: {err}"),
        Err(_) => anyhow::bail!("the pipeline did not stop within 30 s"),
    }
    timeline_from_elsewhere_has_the_stages(world)
}

/// `troupe timeline`, run in another process than the pipeline's driver, holds the driver's
/// stages and weight syncs (sent to the head with its pipeline reports) beside the actors' calls.
fn timeline_from_elsewhere_has_the_stages(world: &World) -> anyhow::Result<()> {
    let path = screenshot_dir().join("timeline.json");
    let output = std::process::Command::new(support::troupe_bin())
        .args(["timeline", "--out"])
        .arg(&path)
        .args(["--head", &world.fixture.head_address])
        .output()?;
    anyhow::ensure!(
        output.status.success(),
        "troupe timeline failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    let trace: serde_json::Value = serde_json::from_slice(&std::fs::read(&path)?)?;
    let events = trace["traceEvents"].as_array().cloned().unwrap_or_default();
    let has = |cat: &str, name: &str| {
        events.iter().any(|e| {
            e["ph"] == "X" && e["cat"] == cat && e["name"] == name && e["args"]["group"].is_string()
        })
    };
    anyhow::ensure!(
        has("stage", "generate") && has("stage", "train") && has("sync", "weight_sync"),
        "the driver's stages and syncs are not in the timeline of another process"
    );
    println!("troupe timeline from another process holds the pipeline's stages and syncs");
    Ok(())
}

/// Polls `check` (which reloads what it looks at) until it gives a value; fails after
/// `limit` with the last reason.
async fn until<T, F, Fut>(what: &str, limit: Duration, mut check: F) -> anyhow::Result<T>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = anyhow::Result<Option<T>>>,
{
    let deadline = Instant::now() + limit;
    loop {
        let last = match check().await {
            Ok(Some(value)) => return Ok(value),
            Ok(None) => "not yet".to_string(),
            Err(err) => format!("{err:#}"),
        };
        anyhow::ensure!(
            Instant::now() < deadline,
            "{what}: not seen within {limit:?} ({last})"
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

async fn browse(world: &World, work: &Work, browser: &Browser) -> anyhow::Result<()> {
    let client = &browser.client;
    let base = format!("http://{}", world.fixture.dashboard_address);
    let shots = screenshot_dir();
    std::fs::create_dir_all(&shots)?;
    let shoot = |name: &'static str| {
        let path = shots.join(format!("{name}.png"));
        async move {
            let png = client.screenshot().await?;
            std::fs::write(&path, png)?;
            anyhow::Ok(())
        }
    };

    // No token: every page sends the browser to the login page, with no data on it.
    for page in ["/", "/actors", "/pipelines"] {
        client.goto(&format!("{base}{page}")).await?;
        anyhow::ensure!(
            current_path(client).await? == "/login",
            "{page} without a session did not go to /login"
        );
        let source = client.source().await?;
        anyhow::ensure!(
            !source.contains("dash-trainer") && !source.contains("generate"),
            "the login page shows data: {source}"
        );
    }
    client.goto(&format!("{base}/api/status")).await?;
    let api = client.source().await?;
    anyhow::ensure!(
        api.contains("log in first") && !api.contains("dash-trainer"),
        "the JSON without a session: {api}"
    );
    shoot("login").await?;

    // A wrong token: the login page again, with an error and no data.
    client.goto(&format!("{base}/login")).await?;
    client
        .find(Locator::Id("token"))
        .await?
        .send_keys("not-the-token")
        .await?;
    client
        .find(Locator::Id("login-button"))
        .await?
        .click()
        .await?;
    client
        .wait()
        .at_most(Duration::from_secs(10))
        .for_element(Locator::Id("login-error"))
        .await?;
    let error = text(client, "#login-error").await?;
    anyhow::ensure!(error.contains("not the cluster token"), "error: {error}");
    anyhow::ensure!(current_path(client).await? == "/login");
    anyhow::ensure!(!client.source().await?.contains("dash-trainer"));
    shoot("login-refused").await?;

    // The right token.
    let token = std::fs::read_to_string(world.fixture.dir.join("head").join("token"))?;
    client
        .find(Locator::Id("token"))
        .await?
        .send_keys(token.trim())
        .await?;
    client
        .find(Locator::Id("login-button"))
        .await?
        .click()
        .await?;
    until(
        "the overview after logging in",
        Duration::from_secs(10),
        || async { Ok((current_path(client).await? == "/").then_some(())) },
    )
    .await?;
    // No refreshes swapping the pages under the checks below (the choice is kept for later
    // pages too), but for the one that wants to see them.
    set_auto_refresh(client, false).await?;

    // Overview: the trainer's GPU cell names it.
    let info = world.cluster.actor_info(&work.trainer).await?;
    let gpu = info
        .gpus
        .first()
        .ok_or_else(|| anyhow::anyhow!("the trainer holds no GPU: {info:?}"))?
        .index;
    let cell = format!(
        "section[id=\"node-{}\"] .gpu[data-gpu=\"{gpu}\"] a.holder",
        info.node_id
    );
    let holder = until(
        "the trainer's GPU cell",
        Duration::from_secs(20),
        || async {
            client.goto(&format!("{base}/")).await?;
            let names = texts(client, &cell).await?;
            Ok(names.contains(&"dash-trainer".to_string()).then_some(names))
        },
    )
    .await?;
    anyhow::ensure!(
        holder == ["dash-trainer"],
        "GPU {gpu} is held by {holder:?}"
    );
    let free_cells = texts(client, ".gpu.free").await?.len();
    anyhow::ensure!(
        free_cells == 0,
        "both GPUs are held, yet {free_cells} show free"
    );
    shoot("overview").await?;

    // Actors: the table, the name with markup shown as text and not run.
    client.goto(&format!("{base}/actors")).await?;
    let table = text(client, "#actors").await?;
    for name in ["dash-trainer", "dash-generator", "dash-waiting", EVIL_NAME] {
        anyhow::ensure!(
            table.contains(name),
            "{name} missing from the actors table: {table}"
        );
    }
    let images = texts(client, "#actors img").await?.len();
    anyhow::ensure!(images == 0, "an actor's name became an element");
    shoot("actors").await?;

    // The trainer's log, from its node, with the line its constructor printed.
    // The stream is read from the row of that line (other lines may come first).
    let logs = format!("{base}/actors/{}/logs", info.id);
    let stream = until(
        "the trainer's log line",
        Duration::from_secs(30),
        || async {
            client.goto(&logs).await?;
            let stream = client
                .execute(
                    "const line = arguments[0];\n\
                     const row = Array.from(document.querySelectorAll('#log tr')).find(\n\
                       (tr) => { const td = tr.querySelector('td.text'); return td && td.textContent === line; });\n\
                     const stream = row && row.querySelector('td.stream');\n\
                     return stream ? stream.textContent : null;",
                    vec![serde_json::json!(TRAINER_LINE)],
                )
                .await?;
            Ok(stream.as_str().map(str::to_string))
        },
    )
    .await?;
    anyhow::ensure!(stream == "out", "the line's stream: {stream}");
    let incarnations = text(client, "#incarnations").await?;
    anyhow::ensure!(incarnations.contains(&info.node_id), "{incarnations}");
    shoot("actor-log").await?;

    // Placement groups and pending demand.
    client.goto(&format!("{base}/placement-groups")).await?;
    let groups = text(client, "main").await?;
    anyhow::ensure!(
        groups.contains("dash-group") && groups.contains("created"),
        "{groups}"
    );
    shoot("placement-groups").await?;
    client.goto(&format!("{base}/pending")).await?;
    let waiting = text(client, "#pending-actors").await?;
    anyhow::ensure!(waiting.contains("dash-waiting"), "{waiting}");
    let reason = text(client, "#pending-actors td.reason").await?;
    anyhow::ensure!(
        !reason.trim().is_empty(),
        "the waiting actor shows no reason"
    );
    shoot("pending").await?;

    // Jobs: the list, then the job's log line.
    client.goto(&format!("{base}/jobs")).await?;
    let jobs = text(client, "#jobs").await?;
    anyhow::ensure!(jobs.contains(&work.job_id), "{jobs}");
    shoot("jobs").await?;
    let job_page = format!("{base}/jobs/{}", work.job_id);
    until("the job's log line", Duration::from_secs(30), || async {
        client.goto(&job_page).await?;
        let lines = texts(client, "#log td.text").await?;
        Ok(lines.iter().any(|line| line == JOB_LINE).then_some(()))
    })
    .await?;
    shoot("job").await?;

    // The pipeline: the generate stage's box shows its latest time in seconds.
    let seconds = until(
        "the generate stage's time",
        Duration::from_secs(60),
        || async {
            client.goto(&format!("{base}/pipelines")).await?;
            let texts = texts(client, "g.stage[data-stage=\"generate\"] text").await?;
            anyhow::ensure!(
                texts.first().map(String::as_str) == Some("generate"),
                "the stage box: {texts:?}"
            );
            Ok(texts.iter().find_map(|text| stage_seconds(text)))
        },
    )
    .await?;
    anyhow::ensure!(
        seconds >= GENERATE_MS as f64 / 1000.0 && seconds < 30.0,
        "generate took {seconds} s by the dashboard, but sleeps {GENERATE_MS} ms"
    );
    let steps = text(client, "table.steps").await?;
    anyhow::ensure!(
        steps.contains("generate") && steps.contains("rows/s"),
        "{steps}"
    );
    shoot("pipelines").await?;
    // The page refreshes itself (the script swaps in the new content): newer steps appear
    // without navigating, once auto-refresh is ticked again.
    let newest = || async {
        let cell = text(client, "table.steps tbody tr td").await?;
        anyhow::Ok(cell.trim().parse::<u64>()?)
    };
    let first = newest().await?;
    set_auto_refresh(client, true).await?;
    until(
        "a newer step without reloading",
        Duration::from_secs(20),
        || async { Ok((newest().await? > first).then_some(())) },
    )
    .await?;
    set_auto_refresh(client, false).await?;

    // Metrics: a chart per metric; the sampler (every 10 s) has seen the actors come alive.
    let chart = "figure.chart[data-metric=\"troupe_actors\"]";
    let alive = until(
        "a metrics sample with the actors alive",
        Duration::from_secs(40),
        || async {
            client.goto(&format!("{base}/metrics")).await?;
            let samples: usize = attrs(client, chart, "data-samples")
                .await?
                .into_iter()
                .next()
                .flatten()
                .unwrap_or_default()
                .parse()?;
            let legend = text(client, &format!("{chart} ul.legend")).await?;
            let alive = legend
                .split("state=\"alive\": ")
                .nth(1)
                .and_then(|rest| rest.split_whitespace().next())
                .and_then(|count| count.parse::<u64>().ok())
                .unwrap_or(0);
            Ok((samples >= 2 && alive >= 3).then_some(alive))
        },
    )
    .await?;
    let charts = texts(client, "figure.chart").await?.len();
    anyhow::ensure!(charts >= 5, "{charts} charts");
    let lines = attrs(client, &format!("{chart} polyline"), "points").await?;
    anyhow::ensure!(lines.len() == 5, "troupe_actors has {} lines", lines.len());
    for points in lines {
        let points = points.unwrap_or_default();
        anyhow::ensure!(
            points.split(' ').count() >= 2,
            "a line of one point: {points}"
        );
    }
    println!("the metrics chart shows {alive} actors alive");
    shoot("metrics").await?;

    // Logging out ends the session.
    client
        .find(Locator::Css("form.logout button"))
        .await?
        .click()
        .await?;
    until(
        "the login page after logging out",
        Duration::from_secs(10),
        || async { Ok((current_path(client).await? == "/login").then_some(())) },
    )
    .await?;
    client.goto(&format!("{base}/actors")).await?;
    anyhow::ensure!(current_path(client).await? == "/login");
    println!("screenshots in {}", shots.display());
    Ok(())
}

/// The text of every element `css` selects (trimmed; an SVG element's text content), read in
/// one script, so no element handle outlives the call and a refresh cannot make one stale.
async fn texts(client: &Client, css: &str) -> anyhow::Result<Vec<String>> {
    let value = client
        .execute(
            "return Array.from(document.querySelectorAll(arguments[0]), (element) =>\n\
               (element instanceof HTMLElement ? element.innerText : element.textContent).trim());",
            vec![serde_json::json!(css)],
        )
        .await?;
    Ok(serde_json::from_value(value)?)
}

/// The text of the first element `css` selects; an error when there is none.
async fn text(client: &Client, css: &str) -> anyhow::Result<String> {
    texts(client, css)
        .await?
        .into_iter()
        .next()
        .ok_or_else(|| anyhow::anyhow!("no element matches {css}"))
}

/// Attribute `name` of every element `css` selects (null where absent), read in one script.
async fn attrs(client: &Client, css: &str, name: &str) -> anyhow::Result<Vec<Option<String>>> {
    let value = client
        .execute(
            "return Array.from(document.querySelectorAll(arguments[0]),\n\
               (element) => element.getAttribute(arguments[1]));",
            vec![serde_json::json!(css), serde_json::json!(name)],
        )
        .await?;
    Ok(serde_json::from_value(value)?)
}

/// Ticks or unticks the header's auto-refresh box, as a click would (the page's script keeps
/// the choice in the browser's storage for the pages loaded after).
async fn set_auto_refresh(client: &Client, on: bool) -> anyhow::Result<()> {
    let found = client
        .execute(
            "const toggle = document.getElementById('auto-refresh');\n\
             if (!toggle) { return false; }\n\
             toggle.checked = arguments[0];\n\
             toggle.dispatchEvent(new Event('change'));\n\
             return true;",
            vec![serde_json::json!(on)],
        )
        .await?;
    anyhow::ensure!(found == serde_json::json!(true), "no auto-refresh box");
    Ok(())
}

/// The path of the page the browser shows.
async fn current_path(client: &Client) -> anyhow::Result<String> {
    Ok(client.current_url().await?.path().to_string())
}

/// The seconds in a stage box's time line (`0.312 s · 102 rows/s`).
fn stage_seconds(text: &str) -> Option<f64> {
    let (seconds, rest) = text.split_once(" s · ")?;
    rest.ends_with("rows/s").then_some(())?;
    seconds.trim().parse().ok()
}

fn main() -> std::process::ExitCode {
    troupe::init();
    let required = std::env::var("CI").is_ok_and(|v| v == "true")
        || std::env::var("TROUPE_REQUIRE_BROWSER").is_ok_and(|v| v == "1");
    let tools = match browser::find_tools() {
        Ok(tools) => tools,
        Err(why) if required => {
            println!("test dashboard_in_a_browser ... FAILED: {why}\n\n0 passed, 1 failed");
            return support::exit_code(false);
        }
        Err(why) => {
            println!(
                "test dashboard_in_a_browser ... skipped: {why} (set TROUPE_REQUIRE_BROWSER=1 to fail instead)\n\n0 passed, 0 failed, 1 skipped"
            );
            return support::exit_code(true);
        }
    };
    let runtime = match support::tokio_runtime() {
        Ok(runtime) => runtime,
        Err(code) => return code,
    };
    let head_extra = vec!["--dashboard-port".to_string(), "0".to_string()];
    let nodes: Vec<Vec<&str>> = vec![vec!["--cpus", "4", "--gpus", "2"], vec!["--cpus", "2"]];
    let passed = runtime.block_on(async {
        let fixture = match Fixture::start_with(&head_extra, &nodes) {
            Ok(fixture) => fixture,
            Err(err) => {
                println!("could not start the cluster: {err:#}\n0 passed, 1 failed");
                return false;
            }
        };
        let cluster = match Cluster::connect(&fixture.head_address).await {
            Ok(cluster) => cluster,
            Err(err) => {
                println!("could not connect: {err:#}\n0 passed, 1 failed");
                return false;
            }
        };
        let world = World {
            fixture,
            cluster,
            tools,
        };
        let passed = support::run_scenarios(&world, scenarios(), Duration::from_secs(300)).await;
        world.cluster.clone().shutdown().await;
        passed
    });
    support::exit_code(passed)
}
