//! gRPC plumbing shared by every process: address parsing, channels with bounded connect
//! times and keep-alives that carry the cluster token, message size limits, and turning invalid
//! input into clear statuses.

pub mod auth;

pub use auth::{AuthChannel, Token};

use std::time::Duration;
use tonic::transport::Endpoint;

/// Largest message any troupe service accepts or sends (arguments, replies, binary chunks).
pub const MAX_MESSAGE_BYTES: usize = 1 << 30;

/// How long connecting to any troupe process may take.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

/// How long a call to the head waits for a head that is down (restarting on the same data
/// directory) before it fails.
pub const HEAD_OUTAGE_PATIENCE: Duration = Duration::from_secs(60);

/// Whether a request may be sent again when its answer was lost (the connection broke while it
/// was in flight, so the head may or may not have acted on it).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Resend {
    /// Only when it surely never reached the head (could not connect).
    IfNotSent,
    /// Also when its answer was lost: the request is idempotent (a read, a keyed write, a spawn
    /// with its spawn id).
    Idempotent,
}

/// Whether `status` says the request surely did not reach the head, or at least that the
/// connection failed around it.
fn head_unreachable(status: &tonic::Status, resend: Resend) -> bool {
    match status.code() {
        tonic::Code::Unavailable => true,
        tonic::Code::Unknown => {
            resend == Resend::Idempotent && status.message().contains("transport error")
        }
        _ => false,
    }
}

/// Runs `call` again while the head cannot be reached (it is down or restarting), backing off
/// from 100 ms to 1 s, for at most `patience`; any other answer is returned as it is. When the
/// patience runs out, the status says how long it waited and why.
pub async fn while_head_unavailable<T, F, Fut>(
    what: &str,
    patience: Duration,
    resend: Resend,
    mut call: F,
) -> Result<T, tonic::Status>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<T, tonic::Status>>,
{
    let started = tokio::time::Instant::now();
    let mut pause = Duration::from_millis(100);
    let mut logged = false;
    loop {
        let status = match tokio::time::timeout(patience, call()).await {
            Ok(Ok(answer)) => return Ok(answer),
            Ok(Err(status)) if !head_unreachable(&status, resend) => return Err(status),
            Ok(Err(status)) => status,
            Err(_) => tonic::Status::unavailable("no answer"),
        };
        let waited = started.elapsed();
        if waited + pause > patience {
            return Err(tonic::Status::unavailable(format!(
                "{what}: the head did not answer for {:.0} s (last: {})",
                waited.as_secs_f64(),
                status.message()
            )));
        }
        if !logged {
            tracing::warn!(
                what,
                why = status.message(),
                "the head is unavailable; waiting for it"
            );
            logged = true;
        }
        tokio::time::sleep(pause).await;
        pause = (pause * 2).min(Duration::from_secs(1));
    }
}

/// Accepts `host:port` or `http://host:port` and returns the URI form.
pub fn normalize_address(address: &str) -> Result<String, String> {
    let trimmed = address.trim();
    if trimmed.is_empty() {
        return Err("the address is empty".to_string());
    }
    let uri = if trimmed.starts_with("http://") || trimmed.starts_with("https://") {
        trimmed.to_string()
    } else {
        format!("http://{trimmed}")
    };
    let parsed: http::Uri = uri
        .parse()
        .map_err(|err| format!("`{address}` is not an address: {err}"))?;
    if parsed.port_u16().is_none() {
        return Err(format!("`{address}` has no port (expected host:port)"));
    }
    Ok(uri)
}

/// An endpoint with troupe's timeouts: connect within 5 s, HTTP/2 keep-alive every 5 s, and a
/// connection declared dead if a keep-alive goes unanswered for 10 s.
pub fn endpoint(address: &str) -> Result<Endpoint, String> {
    let uri = normalize_address(address)?;
    let endpoint = Endpoint::from_shared(uri)
        .map_err(|err| format!("`{address}` is not an address: {err}"))?
        .connect_timeout(CONNECT_TIMEOUT)
        .tcp_nodelay(true)
        .http2_keep_alive_interval(Duration::from_secs(5))
        .keep_alive_timeout(Duration::from_secs(10))
        .keep_alive_while_idle(true);
    Ok(endpoint)
}

/// Connects now (fails within the connect timeout); every request carries `token`.
pub async fn connect(address: &str, token: &Token) -> Result<AuthChannel, String> {
    let channel = endpoint(address)?
        .connect()
        .await
        .map_err(|err| format!("cannot connect to {address}: {err}"))?;
    Ok(auth::authorized(channel, token))
}

/// A channel that connects on first use (and reconnects after failures); every request carries
/// `token`.
pub fn connect_lazy(address: &str, token: &Token) -> Result<AuthChannel, String> {
    Ok(auth::authorized(endpoint(address)?.connect_lazy(), token))
}

/// Accepted connections of a server, with Nagle's algorithm off: with it on, small replies wait
/// for the peer's delayed ACK (about 40 ms on Linux).
pub fn incoming(listener: tokio::net::TcpListener) -> tonic::transport::server::TcpIncoming {
    tonic::transport::server::TcpIncoming::from(listener).with_nodelay(Some(true))
}

/// `InvalidArgument` naming the field.
pub fn invalid(field: &str, why: impl std::fmt::Display) -> tonic::Status {
    tonic::Status::invalid_argument(format!("{field}: {why}"))
}

/// Checks an id-like field: non-empty, at most 128 characters, printable ASCII, no spaces.
pub fn check_id(field: &str, value: &str) -> Result<(), tonic::Status> {
    if value.is_empty() {
        return Err(invalid(field, "is empty"));
    }
    check_text(field, value, 128)?;
    if value.chars().any(|c| c.is_whitespace()) {
        return Err(invalid(field, "contains whitespace"));
    }
    Ok(())
}

/// Checks an id that names a file (an actor's log on a node): as `check_id`, and no path
/// separators or dot-only names, so it stays inside its directory.
pub fn check_file_id(field: &str, value: &str) -> Result<(), tonic::Status> {
    check_id(field, value)?;
    if value.contains(['/', '\\']) || value.chars().all(|c| c == '.') {
        return Err(invalid(
            field,
            "may not contain `/` or `\\`, or be only dots",
        ));
    }
    Ok(())
}

/// Checks a job's submission id (it names files on the head and the nodes).
pub fn check_submission_id(value: &str) -> Result<(), tonic::Status> {
    crate::jobs::check_submission_id(value).map_err(|why| invalid("submission_id", why))
}

/// Checks free text: at most `max` characters, no control characters.
pub fn check_text(field: &str, value: &str, max: usize) -> Result<(), tonic::Status> {
    if value.chars().count() > max {
        return Err(invalid(field, format!("is longer than {max} characters")));
    }
    if value.chars().any(|c| c.is_control()) {
        return Err(invalid(field, "contains control characters"));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn addresses_with_and_without_scheme() {
        assert_eq!(
            normalize_address("127.0.0.1:80").unwrap(),
            "http://127.0.0.1:80"
        );
        assert_eq!(normalize_address("http://h:9").unwrap(), "http://h:9");
        assert!(normalize_address("").is_err());
        assert!(normalize_address("localhost")
            .unwrap_err()
            .contains("no port"));
        assert!(normalize_address("not an address:12").is_err());
    }

    #[test]
    fn ids_and_text_are_checked() {
        assert!(check_id("id", "a-1").is_ok());
        assert!(check_id("id", "").is_err());
        assert!(check_id("id", "a b").is_err());
        assert!(check_text("name", "x\u{7}", 10).is_err());
        assert!(check_text("name", &"x".repeat(11), 10).is_err());
    }
}
