//! The dashboard's login: the cluster token, posted to `/login`, buys a random session id in a
//! cookie (HttpOnly, SameSite=Strict, Path=/), named per head (`cookie_name`: cookies are per
//! host, not per port, so two dashboards on one host must not share a name); every page and JSON endpoint but the login page
//! and the static assets requires a live session, else a page request is redirected to
//! `/login` and a JSON request answered 401, with no data either way. Sessions live in memory
//! (a head restart logs everyone out), expire after `SESSION_TTL`, and at most `MAX_SESSIONS`
//! are kept. `/logout` takes a POST only (the pages' button), so no link or image can log
//! anyone out.

use super::Dashboard;
use axum::extract::{Request, State};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Redirect, Response};
use axum::Form;
use serde::Deserialize;
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// What every session cookie's name starts with.
const COOKIE_PREFIX: &str = "troupe_session_";
const SESSION_TTL: Duration = Duration::from_secs(12 * 3600);
const MAX_SESSIONS: usize = 1000;

/// The session cookie's name for the head with `token`: the prefix and 8 hex digits of the
/// token's SHA-256 (which says nothing usable about the token).
pub(crate) fn cookie_name(token: &str) -> String {
    use sha2::Digest;
    let digest = hex::encode(sha2::Sha256::digest(token.as_bytes()));
    format!("{COOKIE_PREFIX}{}", &digest[..8])
}

/// Live sessions: id → when it expires.
#[derive(Default)]
pub(crate) struct Sessions {
    live: Mutex<HashMap<String, Instant>>,
}

impl Sessions {
    /// A new session's id.
    fn open(&self, now: Instant) -> String {
        let id = crate::rpc::Token::generate().as_str().to_string();
        let mut live = self.lock();
        live.retain(|_, expires| *expires > now);
        if live.len() >= MAX_SESSIONS {
            let oldest = live
                .iter()
                .min_by_key(|(_, expires)| **expires)
                .map(|(id, _)| id.clone());
            if let Some(oldest) = oldest {
                live.remove(&oldest);
            }
        }
        live.insert(id.clone(), now + SESSION_TTL);
        id
    }

    /// Whether `id` is a live session (compared in constant time with each).
    pub(crate) fn valid(&self, id: &str, now: Instant) -> bool {
        let live = self.lock();
        let mut found = false;
        for (held, expires) in live.iter() {
            if crate::rpc::auth::constant_time_eq(held.as_bytes(), id.as_bytes()) && *expires > now
            {
                found = true;
            }
        }
        found
    }

    fn close(&self, id: &str) {
        self.lock().remove(id);
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, Instant>> {
        self.live
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

/// The session id a request's cookies carry under `name`, if any.
pub(crate) fn session_of(headers: &HeaderMap, name: &str) -> Option<String> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|value| value.to_str().ok())
        .flat_map(|value| value.split(';'))
        .filter_map(|pair| pair.trim().split_once('='))
        .find(|(key, _)| *key == name)
        .map(|(_, value)| value.trim().to_string())
}

/// Lets a request through only with a live session.
pub(crate) async fn require_session(
    State(dashboard): State<Arc<Dashboard>>,
    request: Request,
    next: Next,
) -> Response {
    let path = request.uri().path();
    if path == "/login" || path.starts_with("/assets/") {
        return next.run(request).await;
    }
    let live = session_of(request.headers(), &dashboard.cookie)
        .is_some_and(|id| dashboard.sessions.valid(&id, Instant::now()));
    if live {
        return next.run(request).await;
    }
    if path.starts_with("/api/") {
        let body = serde_json::json!({ "error": "log in first: POST the cluster token to /login" });
        return (StatusCode::UNAUTHORIZED, axum::Json(body)).into_response();
    }
    Redirect::to("/login").into_response()
}

#[derive(Deserialize)]
pub(crate) struct LoginForm {
    #[serde(default)]
    token: String,
}

pub(crate) async fn login_page(State(dashboard): State<Arc<Dashboard>>) -> Response {
    dashboard.render_page("login.html", "login", serde_json::json!({ "error": "" }))
}

pub(crate) async fn login(
    State(dashboard): State<Arc<Dashboard>>,
    Form(form): Form<LoginForm>,
) -> Response {
    let expected = dashboard.head.token.as_str().as_bytes();
    if !crate::rpc::auth::constant_time_eq(form.token.trim().as_bytes(), expected) {
        tracing::warn!("dashboard login refused: wrong token");
        let error = if form.token.trim().is_empty() {
            "Enter the cluster token."
        } else {
            "That is not the cluster token."
        };
        let mut page =
            dashboard.render_page("login.html", "login", serde_json::json!({ "error": error }));
        *page.status_mut() = StatusCode::UNAUTHORIZED;
        return page;
    }
    let id = dashboard.sessions.open(Instant::now());
    let cookie = format!(
        "{}={id}; HttpOnly; SameSite=Strict; Path=/; Max-Age={}",
        dashboard.cookie,
        SESSION_TTL.as_secs()
    );
    let mut response = Redirect::to("/").into_response();
    if let Ok(value) = HeaderValue::from_str(&cookie) {
        response.headers_mut().insert(header::SET_COOKIE, value);
    }
    response
}

pub(crate) async fn logout(
    State(dashboard): State<Arc<Dashboard>>,
    headers: HeaderMap,
) -> Response {
    if let Some(id) = session_of(&headers, &dashboard.cookie) {
        dashboard.sessions.close(&id);
    }
    let mut response = Redirect::to("/login").into_response();
    let cleared = format!(
        "{}=; HttpOnly; SameSite=Strict; Path=/; Max-Age=0",
        dashboard.cookie
    );
    if let Ok(value) = HeaderValue::from_str(&cleared) {
        response.headers_mut().insert(header::SET_COOKIE, value);
    }
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sessions_expire_and_cookies_parse() {
        let sessions = Sessions::default();
        let now = Instant::now();
        let id = sessions.open(now);
        assert_eq!(id.len(), 64);
        assert!(sessions.valid(&id, now));
        assert!(!sessions.valid("not-a-session", now));
        assert!(!sessions.valid(&id, now + SESSION_TTL + Duration::from_secs(1)));
        sessions.close(&id);
        assert!(!sessions.valid(&id, now));

        let name = cookie_name("token-a");
        assert_eq!(name.len(), COOKIE_PREFIX.len() + 8);
        assert_ne!(name, cookie_name("token-b"), "each head its own cookie");
        let mut headers = HeaderMap::new();
        let cookies = format!("other=1; {} =zzz; {name}=abc ; x=y", cookie_name("token-b"));
        headers.insert(
            header::COOKIE,
            HeaderValue::from_str(&cookies).expect("a header value"),
        );
        assert_eq!(session_of(&headers, &name).as_deref(), Some("abc"));
        assert_eq!(session_of(&HeaderMap::new(), &name), None);
    }
}
