//! The replicas' prediction endpoint over HTTP/1.1 with JSON, and a small client for it.
//!
//! - `POST /predict` `{"fields": [[id, ...], ...], "min_version": N}` answers
//!   `{"score": p, "version": v}` from one consistent snapshot. A request naming a version not
//!   served yet gets 409, before the first sync 503, a body that is not such a request, a wrong
//!   number of fields or an id of an undeclared slot 400, each with `{"error": "..."}` naming
//!   what was wrong.
//! - `GET /status` answers the served version, its row count and when it went live.

use super::snapshot::Snapshot;
use crate::error::RecsysError;
use crate::features::SlotSet;
use crate::model::{Example, ModelShape};
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use http_body_util::{BodyExt, Full};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, RwLock};

#[derive(Clone, Debug, serde::Serialize, serde::Deserialize)]
pub struct PredictRequest {
    pub fields: Vec<Vec<u64>>,
    #[serde(default)]
    pub min_version: u64,
}

#[derive(Clone, Debug, serde::Serialize, serde::Deserialize)]
pub struct PredictReply {
    pub score: f32,
    pub version: u64,
}

#[derive(Clone, Debug, serde::Serialize, serde::Deserialize)]
pub struct StatusReply {
    pub version: u64,
    pub rows: u64,
    pub live_since_unix_us: u64,
}

/// Requests answered and refused, by the handlers.
#[derive(Default, Debug)]
pub struct ServeCounters {
    pub answered: AtomicU64,
    pub refused: AtomicU64,
}

#[derive(Clone)]
pub(crate) struct Served {
    pub(crate) live: Arc<RwLock<Arc<Snapshot>>>,
    pub(crate) shape: ModelShape,
    pub(crate) slots: SlotSet,
    pub(crate) counters: Arc<ServeCounters>,
}

fn refuse(counters: &ServeCounters, status: StatusCode, why: String) -> Response {
    counters.refused.fetch_add(1, Ordering::Relaxed);
    (status, Json(serde_json::json!({ "error": why }))).into_response()
}

async fn predict(State(served): State<Served>, body: axum::body::Bytes) -> Response {
    let request: PredictRequest = match serde_json::from_slice(&body) {
        Ok(request) => request,
        Err(err) => {
            return refuse(
                &served.counters,
                StatusCode::BAD_REQUEST,
                format!("the body is not a prediction request ({{\"fields\": [[id, ...], ...], \"min_version\": N}}): {err}"),
            )
        }
    };
    let snapshot = served.live.read().expect("live snapshot").clone();
    let Some(dense) = snapshot.dense.as_ref() else {
        return refuse(
            &served.counters,
            StatusCode::SERVICE_UNAVAILABLE,
            "no version is served yet (the replica has not synced)".to_string(),
        );
    };
    if request.min_version > snapshot.version {
        let err = RecsysError::NotServedYet {
            wanted: request.min_version,
            serving: snapshot.version,
        };
        return refuse(&served.counters, StatusCode::CONFLICT, err.to_string());
    }
    if request.fields.len() != served.shape.fields {
        return refuse(
            &served.counters,
            StatusCode::BAD_REQUEST,
            format!(
                "{} fields given; the model takes {}",
                request.fields.len(),
                served.shape.fields
            ),
        );
    }
    let ids: Vec<u64> = request.fields.iter().flatten().copied().collect();
    if let Err(err) = served.slots.check(&ids) {
        return refuse(&served.counters, StatusCode::BAD_REQUEST, err.to_string());
    }
    let example = Example {
        fields: request.fields,
        label: 0.0,
    };
    let score = dense.predict(&example, &*snapshot);
    served.counters.answered.fetch_add(1, Ordering::Relaxed);
    Json(PredictReply {
        score,
        version: snapshot.version,
    })
    .into_response()
}

async fn status(State(served): State<Served>) -> Json<StatusReply> {
    let snapshot = served.live.read().expect("live snapshot").clone();
    Json(StatusReply {
        version: snapshot.version,
        rows: snapshot.rows.len() as u64,
        live_since_unix_us: snapshot.live_since_unix_us,
    })
}

/// Serves the endpoint on `listener` until the task is aborted.
pub(crate) async fn serve(listener: tokio::net::TcpListener, served: Served) {
    let app = Router::new()
        .route("/predict", post(predict))
        .route("/status", get(status))
        .with_state(served);
    if let Err(err) = axum::serve(listener, app).await {
        tracing::error!(%err, "prediction endpoint stopped");
    }
}

/// Why a prediction request got no score.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    #[error("connecting to {address}: {source}")]
    Connect {
        address: String,
        #[source]
        source: std::io::Error,
    },
    #[error("HTTP to {address}: {source}")]
    Http {
        address: String,
        #[source]
        source: hyper::Error,
    },
    #[error("{address} answered {status}: {body}")]
    Refused {
        address: String,
        status: u16,
        body: String,
    },
    #[error("{address} did not answer within {after:?}")]
    TimedOut {
        address: String,
        after: std::time::Duration,
    },
    #[error("{address} answered something that is not a reply: {why}")]
    Malformed { address: String, why: String },
}

/// One kept-alive HTTP/1.1 connection to a replica.
pub struct PredictClient {
    address: String,
    sender: hyper::client::conn::http1::SendRequest<Full<bytes::Bytes>>,
}

impl PredictClient {
    pub async fn connect(address: &str) -> Result<PredictClient, ClientError> {
        let stream = tokio::net::TcpStream::connect(address)
            .await
            .map_err(|source| ClientError::Connect {
                address: address.to_string(),
                source,
            })?;
        let _ = stream.set_nodelay(true);
        let (sender, connection) =
            hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(stream))
                .await
                .map_err(|source| ClientError::Http {
                    address: address.to_string(),
                    source,
                })?;
        tokio::spawn(async move {
            let _ = connection.await;
        });
        Ok(PredictClient {
            address: address.to_string(),
            sender,
        })
    }

    async fn exchange(
        &mut self,
        request: hyper::Request<Full<bytes::Bytes>>,
    ) -> Result<bytes::Bytes, ClientError> {
        let http = |source| ClientError::Http {
            address: self.address.clone(),
            source,
        };
        self.sender.ready().await.map_err(http)?;
        let response = self.sender.send_request(request).await.map_err(http)?;
        let status = response.status();
        let body = response
            .into_body()
            .collect()
            .await
            .map_err(|source| ClientError::Http {
                address: self.address.clone(),
                source,
            })?
            .to_bytes();
        if !status.is_success() {
            return Err(ClientError::Refused {
                address: self.address.clone(),
                status: status.as_u16(),
                body: String::from_utf8_lossy(&body).into_owned(),
            });
        }
        Ok(body)
    }

    fn decode<T: serde::de::DeserializeOwned>(&self, body: &[u8]) -> Result<T, ClientError> {
        serde_json::from_slice(body).map_err(|err| ClientError::Malformed {
            address: self.address.clone(),
            why: err.to_string(),
        })
    }

    pub async fn predict(&mut self, request: &PredictRequest) -> Result<PredictReply, ClientError> {
        let body = serde_json::to_vec(request).expect("a request encodes");
        let http_request = hyper::Request::post("/predict")
            .header("host", self.address.as_str())
            .header("content-type", "application/json")
            .body(Full::new(bytes::Bytes::from(body)))
            .expect("a well-formed request");
        let reply = self.exchange(http_request).await?;
        self.decode(&reply)
    }

    pub async fn status(&mut self) -> Result<StatusReply, ClientError> {
        let http_request = hyper::Request::get("/status")
            .header("host", self.address.as_str())
            .body(Full::new(bytes::Bytes::new()))
            .expect("a well-formed request");
        let reply = self.exchange(http_request).await?;
        self.decode(&reply)
    }
}
