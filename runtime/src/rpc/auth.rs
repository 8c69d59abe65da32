//! The cluster token: a random secret the head creates at its first start (a file under its data
//! directory, mode 0600), which every troupe server (head, node agent, worker) requires as a
//! bearer token on every RPC except the head's version check. Owns where clients look for it,
//! the server-side check (a tower layer) and the client-side interceptor that sends it.

use std::future::Future;
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use tonic::metadata::{Ascii, MetadataValue};
use tonic::service::interceptor::InterceptedService;
use tonic::transport::Channel;

/// Environment variable holding the token itself.
pub const TOKEN_ENV: &str = "TROUPE_TOKEN";
/// Environment variable naming a file that holds the token.
pub const TOKEN_FILE_ENV: &str = "TROUPE_TOKEN_FILE";
/// The token file's name inside the head's data directory.
pub const TOKEN_FILE_NAME: &str = "token";
/// The one RPC that needs no token, so that clients can check they reach a troupe head.
pub const UNAUTHENTICATED_PATHS: [&str; 1] = ["/troupe.v1.Cluster/Version"];

/// Why a token could not be had.
#[derive(Debug, thiserror::Error)]
pub enum TokenError {
    #[error("reading the token file {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("writing the token file {path}: {source}")]
    Write {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("the token file: {0}")]
    NotOwn(String),
    #[error("the token {origin} is not usable: {why}")]
    Malformed { origin: String, why: String },
    #[error("no cluster token: set {TOKEN_ENV}, or {TOKEN_FILE_ENV} to the file `token` in the head's --data-dir (looked in: {looked})")]
    Missing { looked: String },
}

/// A cluster token. Cheap to clone.
#[derive(Clone)]
pub struct Token(Arc<str>);

impl std::fmt::Debug for Token {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Token(..)")
    }
}

impl Token {
    /// Checks that `text` can travel as a header value (printable ASCII, no spaces).
    pub fn parse(text: &str, origin: &str) -> Result<Token, TokenError> {
        let text = text.trim();
        let malformed = |why: &str| TokenError::Malformed {
            origin: origin.to_string(),
            why: why.to_string(),
        };
        if text.is_empty() {
            return Err(malformed("it is empty"));
        }
        if text.len() > 512 {
            return Err(malformed("it is longer than 512 characters"));
        }
        if !text.bytes().all(|b| b.is_ascii_graphic()) {
            return Err(malformed("it has characters other than printable ASCII"));
        }
        Ok(Token(Arc::from(text)))
    }

    /// A fresh random token (256 bits, hex).
    pub fn generate() -> Token {
        let mut bytes = [0_u8; 32];
        bytes[..16].copy_from_slice(uuid::Uuid::new_v4().as_bytes());
        bytes[16..].copy_from_slice(uuid::Uuid::new_v4().as_bytes());
        Token(Arc::from(hex::encode(bytes)))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// Reads a token file, which must belong to this user.
    pub fn read_file(path: &Path) -> Result<Token, TokenError> {
        if path.exists() {
            crate::private_fs::check_own_file(path).map_err(TokenError::NotOwn)?;
        }
        let text = std::fs::read_to_string(path).map_err(|source| TokenError::Read {
            path: path.to_path_buf(),
            source,
        })?;
        Token::parse(&text, &format!("in {}", path.display()))
    }

    /// The head's token: `data_dir/token`, created (mode 0600) with a fresh token the first time
    /// (written to a temporary file and renamed, so a crash never leaves an empty one).
    pub fn load_or_create(data_dir: &Path) -> Result<Token, TokenError> {
        let path = data_dir.join(TOKEN_FILE_NAME);
        if path.exists() {
            return Token::read_file(&path);
        }
        let token = Token::generate();
        let partial = data_dir.join(format!(
            "{TOKEN_FILE_NAME}.{}.partial",
            uuid::Uuid::new_v4().simple()
        ));
        let write = |source| TokenError::Write {
            path: path.clone(),
            source,
        };
        use std::io::Write;
        use std::os::unix::fs::OpenOptionsExt;
        let mut file = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(&partial)
            .map_err(write)?;
        file.write_all(token.as_str().as_bytes()).map_err(write)?;
        file.sync_all().map_err(write)?;
        std::fs::rename(&partial, &path).map_err(write)?;
        Ok(token)
    }

    /// What a client uses: `$TROUPE_TOKEN`, else the file named by `$TROUPE_TOKEN_FILE`, else the
    /// token of the cluster `troupe up` started (`$TROUPE_HOME/head/token`, else
    /// `/tmp/troupe-up/head/token`).
    pub fn from_env() -> Result<Token, TokenError> {
        if let Ok(text) = std::env::var(TOKEN_ENV) {
            return Token::parse(&text, &format!("in ${TOKEN_ENV}"));
        }
        if let Some(path) = std::env::var_os(TOKEN_FILE_ENV) {
            return Token::read_file(Path::new(&path));
        }
        let up_dir = std::env::var_os("TROUPE_HOME")
            .map(PathBuf::from)
            .unwrap_or_else(|| std::env::temp_dir().join("troupe-up"));
        let path = up_dir.join("head").join(TOKEN_FILE_NAME);
        if path.exists() {
            return Token::read_file(&path);
        }
        Err(TokenError::Missing {
            looked: format!("${TOKEN_ENV}, ${TOKEN_FILE_ENV}, {}", path.display()),
        })
    }

    fn header(&self) -> MetadataValue<Ascii> {
        // `parse` and `generate` only make printable ASCII, which is always a valid header.
        MetadataValue::try_from(format!("Bearer {}", self.0))
            .unwrap_or_else(|_| MetadataValue::from_static(""))
    }
}

/// Adds the bearer token to every request of a client.
#[derive(Clone)]
pub struct Bearer(MetadataValue<Ascii>);

impl Bearer {
    pub fn new(token: &Token) -> Self {
        Bearer(token.header())
    }
}

impl tonic::service::Interceptor for Bearer {
    fn call(
        &mut self,
        mut request: tonic::Request<()>,
    ) -> Result<tonic::Request<()>, tonic::Status> {
        crate::transport::keep_awake::note_activity();
        request
            .metadata_mut()
            .insert("authorization", self.0.clone());
        Ok(request)
    }
}

/// A channel whose requests carry the cluster token.
pub type AuthChannel = InterceptedService<Channel, Bearer>;

/// Wraps a channel so its requests carry `token`.
pub fn authorized(channel: Channel, token: &Token) -> AuthChannel {
    InterceptedService::new(channel, Bearer::new(token))
}

/// The server-side check, as a tower layer: requests without the right bearer token are answered
/// UNAUTHENTICATED (and logged) without reaching the service.
#[derive(Clone)]
pub struct RequireToken {
    expected: Arc<[u8]>,
    server: &'static str,
}

impl RequireToken {
    /// `server` names the server in the warning logged for a refused request.
    pub fn new(token: &Token, server: &'static str) -> Self {
        RequireToken {
            expected: Arc::from(format!("Bearer {}", token.as_str()).into_bytes()),
            server,
        }
    }

    /// Why a request with these headers is refused, if it is.
    fn refusal(&self, path: &str, headers: &http::HeaderMap) -> Option<&'static str> {
        if UNAUTHENTICATED_PATHS.contains(&path) {
            return None;
        }
        match headers.get(http::header::AUTHORIZATION) {
            None => Some("no token was sent"),
            Some(value) if constant_time_eq(value.as_bytes(), &self.expected) => None,
            Some(_) => Some("the token is wrong"),
        }
    }
}

/// Compares without stopping at the first difference, so timing does not leak the token.
pub(crate) fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    if a.len() != b.len() {
        return false;
    }
    a.iter().zip(b).fold(0_u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

impl<S> tower::Layer<S> for RequireToken {
    type Service = TokenChecked<S>;

    fn layer(&self, inner: S) -> TokenChecked<S> {
        TokenChecked {
            inner,
            check: self.clone(),
        }
    }
}

/// A service behind `RequireToken`.
#[derive(Clone)]
pub struct TokenChecked<S> {
    inner: S,
    check: RequireToken,
}

type BoxResponse<E> =
    Pin<Box<dyn Future<Output = Result<http::Response<tonic::body::Body>, E>> + Send>>;

impl<S, B> tower::Service<http::Request<B>> for TokenChecked<S>
where
    S: tower::Service<http::Request<B>, Response = http::Response<tonic::body::Body>>,
    S::Future: Send + 'static,
{
    type Response = http::Response<tonic::body::Body>;
    type Error = S::Error;
    type Future = BoxResponse<S::Error>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: http::Request<B>) -> Self::Future {
        crate::transport::keep_awake::note_activity();
        let path = request.uri().path().to_string();
        match self.check.refusal(&path, request.headers()) {
            None => Box::pin(self.inner.call(request)),
            Some(why) => {
                tracing::warn!(
                    server = self.check.server,
                    rpc = path,
                    why,
                    "refused an unauthenticated request"
                );
                let status = tonic::Status::unauthenticated(format!(
                    "{why}: every troupe RPC but the version check needs the cluster token as `authorization: Bearer TOKEN` (the file `token` in the head's --data-dir; clients read ${TOKEN_ENV} or ${TOKEN_FILE_ENV})"
                ));
                Box::pin(async move { Ok(status.into_http()) })
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn token_file_is_created_once_with_mode_0600() {
        let dir = std::env::temp_dir().join(format!("troupe-token-{}", uuid::Uuid::new_v4()));
        std::fs::create_dir_all(&dir).unwrap();
        let first = Token::load_or_create(&dir).unwrap();
        let again = Token::load_or_create(&dir).unwrap();
        assert_eq!(first.as_str(), again.as_str());
        assert_eq!(first.as_str().len(), 64);
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(dir.join(TOKEN_FILE_NAME))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600);
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn tokens_are_checked() {
        let token = Token::parse("abc", "test").unwrap();
        let check = RequireToken::new(&token, "test");
        let mut headers = http::HeaderMap::new();
        assert_eq!(
            check.refusal("/troupe.v1.Jobs/ListJobs", &headers),
            Some("no token was sent")
        );
        assert_eq!(check.refusal("/troupe.v1.Cluster/Version", &headers), None);
        headers.insert("authorization", "Bearer abd".parse().unwrap());
        assert_eq!(
            check.refusal("/troupe.v1.Jobs/ListJobs", &headers),
            Some("the token is wrong")
        );
        headers.insert("authorization", "Bearer abc".parse().unwrap());
        assert_eq!(check.refusal("/troupe.v1.Jobs/ListJobs", &headers), None);
        assert!(Token::parse("", "test").is_err());
        assert!(Token::parse("a b", "test").is_err());
        assert_ne!(Token::generate().as_str(), Token::generate().as_str());
    }
}
