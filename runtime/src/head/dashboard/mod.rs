//! The web dashboard the head serves when `HeadConfig::dashboard_bind` is set: an axum server
//! with server-rendered pages (minijinja templates named `*.html`, so everything they print is
//! HTML-escaped) and JSON endpoints, behind a login with the cluster token (`auth.rs`). The
//! templates, CSS and JS are embedded in the binary; pages re-fetch themselves every few seconds
//! (`assets/dashboard.js`, as each page's `data-refresh` says), and their content is in the
//! first HTML too. Page handlers are in `pages.rs`; what they show is built by `views.rs` and
//! `gpu_map.rs` (cluster, from a status view shared for a second: `snapshot.rs`),
//! `pipeline_view.rs` (pipelines) and `charts.rs` (metrics).

mod auth;
mod charts;
mod gpu_map;
mod pages;
mod pipeline_view;
mod snapshot;
mod views;

use super::metric_history::MetricHistory;
use super::Head;
use crate::error::{Error, Result};
use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{Html, IntoResponse, Response};
use axum::routing::{get, post};
use axum::Router;
use serde::Serialize;
use std::net::SocketAddr;
use std::sync::Arc;

/// Seconds between a page's refreshes.
const REFRESH_S: u32 = 5;
/// Seconds between refreshes of a page whose subject is not running yet (a pending job, an
/// actor waiting for a node), and of the metrics page (sampled every 10 s).
const SLOW_REFRESH_S: u32 = 10;

/// The templates, by name; each is embedded in the binary.
const TEMPLATES: [(&str, &str); 12] = [
    ("base.html", include_str!("templates/base.html")),
    ("login.html", include_str!("templates/login.html")),
    ("overview.html", include_str!("templates/overview.html")),
    ("actors.html", include_str!("templates/actors.html")),
    ("actor.html", include_str!("templates/actor.html")),
    ("groups.html", include_str!("templates/groups.html")),
    ("pending.html", include_str!("templates/pending.html")),
    ("jobs.html", include_str!("templates/jobs.html")),
    ("job.html", include_str!("templates/job.html")),
    ("pipelines.html", include_str!("templates/pipelines.html")),
    ("metrics.html", include_str!("templates/metrics.html")),
    ("error.html", include_str!("templates/error.html")),
];
const CSS: &str = include_str!("assets/dashboard.css");
const JS: &str = include_str!("assets/dashboard.js");

/// What every handler shares.
pub(crate) struct Dashboard {
    head: Arc<Head>,
    history: Arc<MetricHistory>,
    sessions: auth::Sessions,
    /// The session cookie's name (per head).
    cookie: String,
    views: snapshot::ViewCache,
    templates: minijinja::Environment<'static>,
}

impl Dashboard {
    fn new(head: Arc<Head>, history: Arc<MetricHistory>) -> Result<Dashboard> {
        Ok(Dashboard {
            cookie: auth::cookie_name(head.token.as_str()),
            head,
            history,
            sessions: auth::Sessions::default(),
            views: snapshot::ViewCache::default(),
            templates: templates()?,
        })
    }

    /// Renders a page; `page` names the navigation entry to mark. A template error (a bug) is
    /// logged and answered 500 without details.
    fn render_page(&self, template: &str, page: &str, context: impl Serialize) -> Response {
        let context = minijinja::context! {
            page => page,
            refresh_s => REFRESH_S,
            slow_refresh_s => SLOW_REFRESH_S,
            ..minijinja::Value::from_serialize(context)
        };
        match self
            .templates
            .get_template(template)
            .and_then(|template| template.render(context))
        {
            Ok(body) => Html(body).into_response(),
            Err(err) => {
                tracing::error!(template, error = %err, "dashboard template failed");
                (
                    StatusCode::INTERNAL_SERVER_ERROR,
                    "the dashboard could not render this page; see the head's log",
                )
                    .into_response()
            }
        }
    }

    /// A page that says what went wrong, with `status`.
    fn error_page(&self, status: StatusCode, title: &str, message: &str) -> Response {
        let mut page = self.render_page(
            "error.html",
            "",
            minijinja::context! { title => title, message => message },
        );
        *page.status_mut() = status;
        page
    }
}

/// The template environment (strict about undefined values, so a mistake in a template fails
/// its unit test instead of printing nothing).
fn templates() -> Result<minijinja::Environment<'static>> {
    let mut env = minijinja::Environment::new();
    env.set_undefined_behavior(minijinja::UndefinedBehavior::Strict);
    for (name, source) in TEMPLATES {
        env.add_template(name, source)
            .map_err(|err| Error::Invalid {
                what: format!("dashboard template {name}"),
                why: err.to_string(),
            })?;
    }
    Ok(env)
}

/// Serves the dashboard on `bind`; returns the bound address and the server's task.
pub(crate) async fn serve(
    head: Arc<Head>,
    history: Arc<MetricHistory>,
    bind: SocketAddr,
) -> Result<(SocketAddr, tokio::task::JoinHandle<()>)> {
    let dashboard = Arc::new(Dashboard::new(head, history)?);
    let listener = tokio::net::TcpListener::bind(bind)
        .await
        .map_err(|err| Error::io(format!("binding the dashboard to {bind}"), err))?;
    let address = listener
        .local_addr()
        .map_err(|err| Error::io("reading the dashboard's address", err))?;
    let app = router(dashboard);
    let task = tokio::spawn(async move {
        if let Err(err) = axum::serve(listener, app).await {
            tracing::error!(%err, "the dashboard stopped");
        }
    });
    Ok((address, task))
}

fn router(dashboard: Arc<Dashboard>) -> Router {
    Router::new()
        .route("/", get(pages::overview))
        .route("/actors", get(pages::actors))
        .route("/actors/{id}", get(pages::actor))
        .route("/actors/{id}/logs", get(pages::actor))
        .route("/placement-groups", get(pages::groups))
        .route("/pending", get(pages::pending))
        .route("/jobs", get(pages::jobs))
        .route("/jobs/{id}", get(pages::job))
        .route("/pipelines", get(pages::pipelines))
        .route("/metrics", get(pages::metrics))
        .route("/api/status", get(pages::api_status))
        .route("/api/pipelines", get(pages::api_pipelines))
        .route("/api/metrics", get(pages::api_metrics))
        .route("/api/actors/{id}/log", get(pages::api_actor_log))
        .route("/api/jobs/{id}/log", get(pages::api_job_log))
        .route("/login", get(auth::login_page).post(auth::login))
        .route("/logout", post(auth::logout))
        .route("/assets/dashboard.css", get(css))
        .route("/assets/dashboard.js", get(js))
        .fallback(not_found)
        .layer(axum::middleware::from_fn_with_state(
            dashboard.clone(),
            auth::require_session,
        ))
        .layer(axum::middleware::map_response(security_headers))
        .with_state(dashboard)
}

/// No caching of data (the assets, which carry their own `max-age`, excepted), no framing, no scripts or styles but the dashboard's own.
async fn security_headers(mut response: Response) -> Response {
    let headers = response.headers_mut();
    headers.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(
            "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; \
             connect-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'",
        ),
    );
    headers.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    headers.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("no-referrer"),
    );
    headers.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    if !headers.contains_key(header::CACHE_CONTROL) {
        headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    }
    response
}

async fn css() -> Response {
    asset("text/css; charset=utf-8", CSS)
}

async fn js() -> Response {
    asset("text/javascript; charset=utf-8", JS)
}

fn asset(kind: &'static str, body: &'static str) -> Response {
    (
        [
            (header::CONTENT_TYPE, kind),
            (header::CACHE_CONTROL, "max-age=300"),
        ],
        body,
    )
        .into_response()
}

async fn not_found(
    axum::extract::State(dashboard): axum::extract::State<Arc<Dashboard>>,
) -> Response {
    dashboard.error_page(
        StatusCode::NOT_FOUND,
        "Not found",
        "No such page: see the links above.",
    )
}

#[cfg(test)]
mod tests;
