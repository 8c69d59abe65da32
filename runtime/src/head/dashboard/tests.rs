//! The dashboard's unit tests: every template renders with data (and escapes what users named),
//! and a real head's dashboard serves nothing without the token's session.

use super::pipeline_view::PipelineView;
use super::views::ClusterView;
use super::*;
use crate::head::pipelines::PipelineRecord;
use std::collections::VecDeque;
use std::time::{Duration, Instant};
use troupe_proto::{
    ActorInfo, ActorState, ClusterStatusReply, GpuUsage, JobInfo, JobSpec, NodeResources,
    NodeStatus, PipelineStageInfo, PipelineStageTime, PipelineStepInfo,
};

const EVIL: &str = "<script>alert(1)</script>";

fn status() -> ClusterStatusReply {
    ClusterStatusReply {
        nodes: vec![NodeStatus {
            id: "node-1".to_string(),
            address: "127.0.0.1:1".to_string(),
            hostname: "host".to_string(),
            alive: true,
            total: Some(NodeResources {
                cpu_milli: 4000,
                memory_bytes: 8 << 30,
                ..NodeResources::default()
            }),
            cpu_milli_used: 1000,
            gpus: vec![
                GpuUsage {
                    index: 0,
                    model: "T4".to_string(),
                    milli_used: 1000,
                    actor_ids: vec!["a1".to_string()],
                },
                GpuUsage {
                    index: 1,
                    model: "T4".to_string(),
                    ..GpuUsage::default()
                },
            ],
            ..NodeStatus::default()
        }],
        actors: vec![
            ActorInfo {
                id: "a1".to_string(),
                name: EVIL.to_string(),
                type_name: "Trainer".to_string(),
                state: ActorState::Alive as i32,
                node_id: "node-1".to_string(),
                ..ActorInfo::default()
            },
            ActorInfo {
                id: "a2".to_string(),
                name: "waiter".to_string(),
                state: ActorState::Pending as i32,
                pending_reason: "no node has 8 GPUs <free>".to_string(),
                ..ActorInfo::default()
            },
        ],
        jobs: vec![JobInfo {
            submission_id: "job-1".to_string(),
            spec: Some(JobSpec {
                entrypoint: format!("echo '{EVIL}'"),
                ..JobSpec::default()
            }),
            ..JobInfo::default()
        }],
        ..ClusterStatusReply::default()
    }
}

fn render(template: &str, page: &str, context: impl serde::Serialize) -> String {
    let env = templates().expect("the templates parse");
    env.get_template(template)
        .and_then(|t| {
            t.render(minijinja::context! {
                page => page,
                refresh_s => REFRESH_S,
                slow_refresh_s => SLOW_REFRESH_S,
                ..minijinja::Value::from_serialize(context)
            })
        })
        .unwrap_or_else(|err| panic!("{template}: {err:#}"))
}

fn assert_escaped(html: &str) {
    assert!(!html.contains(EVIL), "raw markup from user data: {html}");
    assert!(
        html.contains("&lt;script&gt;alert(1)&lt;&#x2f;script&gt;"),
        "the name is shown, escaped: {html}"
    );
}

#[test]
fn cluster_pages_render_and_escape_names() {
    let view = ClusterView::of(&status(), &[]);
    let overview = render("overview.html", "overview", &view);
    assert_escaped(&overview);
    assert!(
        overview.contains("href=\"&#x2f;actors&#x2f;a1\""),
        "{overview}"
    );
    let actors = render("actors.html", "actors", &view);
    assert_escaped(&actors);
    let pending = render("pending.html", "pending", &view);
    assert!(
        pending.contains("no node has 8 GPUs &lt;free&gt;"),
        "{pending}"
    );
    let jobs = render("jobs.html", "jobs", &view);
    assert_escaped(&jobs);
    render("groups.html", "groups", &view);
    assert_eq!((view.counts.gpus, view.counts.gpus_held), (2, 1));
    assert!(
        overview.contains("<li class=\"muted\">free</li>"),
        "{overview}"
    );

    // A device allotted to no actor (a bundle or job the status view does not name) is held.
    let mut reserved = status();
    reserved.nodes[0].gpus[1].milli_used = 1000;
    let view = ClusterView::of(&reserved, &[]);
    assert_eq!(view.counts.gpus_held, 2);
    let overview = render("overview.html", "overview", &view);
    assert!(
        overview.contains("<li class=\"muted\">reserved</li>"),
        "{overview}"
    );
    assert!(!overview.contains("gpu free"), "{overview}");
}

#[test]
fn actor_and_job_pages_escape_log_lines() {
    let status = status();
    let actor = views::actor_view(&status.actors[0]);
    let log = pages::ActorLogView {
        incarnation: 1,
        node_id: "node-1".to_string(),
        running: true,
        lines: vec![pages::LineView {
            time: "12:00:00.000".to_string(),
            stream: "out",
            text: EVIL.to_string(),
        }],
        cut: String::new(),
        error: "node <gone>".to_string(),
        incarnations: Vec::new(),
    };
    let html = render(
        "actor.html",
        "actors",
        minijinja::context! { actor => actor, log => log },
    );
    assert_escaped(&html);
    assert!(html.contains("node &lt;gone&gt;"));
    let job = pages::JobLogView {
        job: views::job_view(&status.jobs[0]),
        lines: vec![EVIL.to_string()],
        cut: String::new(),
        error: String::new(),
    };
    assert_escaped(&render("job.html", "jobs", &job));
}

#[test]
fn pipeline_and_metrics_pages_escape_and_draw() {
    let record = PipelineRecord {
        pipeline_id: "p".to_string(),
        session: "s".to_string(),
        stages: vec![PipelineStageInfo {
            name: EVIL.to_string(),
            group: "g".to_string(),
            members: 1,
            inputs: vec!["x".to_string()],
            outputs: vec!["y".to_string()],
            dispatch: "split".to_string(),
        }],
        learning_group: String::new(),
        generating_group: String::new(),
        steps: VecDeque::from([PipelineStepInfo {
            step: 1,
            stages: vec![PipelineStageTime {
                stage: EVIL.to_string(),
                seconds: 1.25,
                rows_per_s: 10.0,
                ..PipelineStageTime::default()
            }],
            ..PipelineStepInfo::default()
        }]),
        last_report: Instant::now(),
    };
    let pipelines = vec![PipelineView::of(&record, Instant::now())];
    let html = render(
        "pipelines.html",
        "pipelines",
        minijinja::context! { pipelines => pipelines },
    );
    assert!(!html.contains(EVIL));
    assert!(html.contains("1.250 s · 10 rows&#x2f;s"), "{html}");
    let history = crate::head::metric_history::MetricHistory::default();
    history.record(&format!("up{{who=\"{EVIL}\"}} 1\n"), 1_000);
    let view = charts::charts(&history.snapshot(), 2_000);
    let html = render("metrics.html", "metrics", &view);
    assert!(html.contains("<polyline"), "{html}");
    assert!(!html.contains(EVIL));
    render("login.html", "login", minijinja::context! { error => EVIL });
}

#[test]
fn terminal_colors_are_taken_out_of_log_lines() {
    assert_eq!(
        pages::strip_ansi("\u{1b}[2m2026\u{1b}[0m \u{1b}[32m INFO\u{1b}[0m worker \u{1b}x"),
        "2026  INFO worker x"
    );
    assert_eq!(pages::strip_ansi("plain <b>"), "plain <b>");
}

/// Sends one HTTP/1.1 request; the answer's status line, headers and body.
async fn http(address: SocketAddr, request: String) -> String {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut socket = tokio::net::TcpStream::connect(address).await.unwrap();
    socket.write_all(request.as_bytes()).await.unwrap();
    let mut answer = String::new();
    tokio::time::timeout(Duration::from_secs(10), socket.read_to_string(&mut answer))
        .await
        .expect("the dashboard answers")
        .unwrap();
    answer
}

fn get(path: &str, cookie: &str) -> String {
    format!("GET {path} HTTP/1.1\r\nHost: x\r\nCookie: {cookie}\r\nConnection: close\r\n\r\n")
}

fn post_token(token: &str) -> String {
    let body = format!("token={token}");
    format!(
        "POST /login HTTP/1.1\r\nHost: x\r\nContent-Type: application/x-www-form-urlencoded\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    )
}

#[tokio::test]
async fn nothing_is_served_without_a_session() {
    let dir = std::env::temp_dir().join(format!("troupe-dashboard-{}", uuid::Uuid::new_v4()));
    let mut config = crate::head::HeadConfig::local(dir.clone());
    config.dashboard_bind = Some(SocketAddr::from(([127, 0, 0, 1], 0)));
    let head = crate::head::start(config).await.unwrap();
    let address = head.dashboard_address.expect("the dashboard serves");

    let page = http(address, get("/actors", "")).await;
    assert!(page.starts_with("HTTP/1.1 303"), "{page}");
    assert!(page.contains("location: /login"), "{page}");
    let cookie_name = auth::cookie_name(head.token.as_str());
    let api = http(
        address,
        get("/api/status", &format!("{cookie_name}=forged")),
    )
    .await;
    assert!(api.starts_with("HTTP/1.1 401"), "{api}");
    assert!(!api.contains("nodes"), "{api}");

    let wrong = http(address, post_token("not-the-token")).await;
    assert!(wrong.starts_with("HTTP/1.1 401"), "{wrong}");
    assert!(wrong.contains("That is not the cluster token."), "{wrong}");
    assert!(!wrong.to_lowercase().contains("set-cookie"), "{wrong}");

    let right = http(address, post_token(head.token.as_str())).await;
    assert!(right.starts_with("HTTP/1.1 303"), "{right}");
    let cookie = right
        .lines()
        .find_map(|line| line.strip_prefix("set-cookie: "))
        .expect("a session cookie")
        .to_string();
    assert!(cookie.contains("HttpOnly") && cookie.contains("SameSite=Strict"));
    let session = cookie.split(';').next().unwrap_or_default().to_string();
    assert!(session.starts_with(&format!("{cookie_name}=")), "{cookie}");
    let overview = http(address, get("/", &session)).await;
    assert!(overview.starts_with("HTTP/1.1 200"), "{overview}");
    assert!(overview.contains("content-security-policy"), "{overview}");
    assert!(overview.contains("<h1>Cluster</h1>"), "{overview}");
    for path in [
        "/actors",
        "/placement-groups",
        "/pending",
        "/jobs",
        "/pipelines",
        "/metrics",
    ] {
        let page = http(address, get(path, &session)).await;
        assert!(page.starts_with("HTTP/1.1 200"), "{path}: {page}");
    }
    let missing = http(address, get("/actors/nobody/logs", &session)).await;
    assert!(missing.starts_with("HTTP/1.1 404"), "{missing}");
    assert!(missing.contains("No such actor"), "{missing}");
    let api = http(address, get("/api/status", &session)).await;
    assert!(
        api.starts_with("HTTP/1.1 200") && api.contains("\"nodes\""),
        "{api}"
    );

    // Only a POST logs out (a link or an image cannot).
    let refused = http(address, get("/logout", &session)).await;
    assert!(refused.starts_with("HTTP/1.1 405"), "{refused}");
    let still = http(address, get("/", &session)).await;
    assert!(still.starts_with("HTTP/1.1 200"), "{still}");
    let post = format!(
        "POST /logout HTTP/1.1\r\nHost: x\r\nCookie: {session}\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
    );
    let out = http(address, post).await;
    assert!(out.starts_with("HTTP/1.1 303"), "{out}");
    let after = http(address, get("/", &session)).await;
    assert!(
        after.starts_with("HTTP/1.1 303"),
        "the session ended: {after}"
    );
    drop(head);
    let _ = std::fs::remove_dir_all(&dir);
}

#[tokio::test]
async fn a_dashboard_that_cannot_bind_stops_the_head_it_started() {
    let dir = std::env::temp_dir().join(format!("troupe-dashboard-{}", uuid::Uuid::new_v4()));
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let grpc = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let grpc_address = grpc.local_addr().unwrap();
    drop(grpc);
    let mut config = crate::head::HeadConfig::local(dir.clone());
    config.bind = grpc_address;
    config.dashboard_bind = Some(taken.local_addr().unwrap());
    let err = crate::head::start(config)
        .await
        .err()
        .expect("the bind fails");
    assert!(err.to_string().contains("dashboard"), "{err}");
    // The gRPC server it had spawned is stopped: its port can be bound again.
    let deadline = Instant::now() + Duration::from_secs(10);
    while tokio::net::TcpListener::bind(grpc_address).await.is_err() {
        assert!(
            Instant::now() < deadline,
            "the gRPC server still holds its port"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let _ = std::fs::remove_dir_all(&dir);
}
