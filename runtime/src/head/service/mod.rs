//! The head's gRPC services: `serve` puts them on one listener behind the cluster token, and
//! each service's handlers have a file of their own: `nodes.rs` (what node agents call),
//! `actors.rs` (actor lifecycle), `cluster.rs` (drivers: status, sessions, placement groups, the
//! rendezvous store, executables) and the `Jobs` service in `head::jobs`. Each handler validates
//! its request (naming the bad field; the shared checks are in `validate.rs`), then changes or
//! reads the head's state; none may panic on input.

mod actors;
mod cluster;
mod nodes;
mod validate;

use super::Head;
use std::sync::Arc;
use std::time::Duration;
use troupe_proto::actors_server::ActorsServer;
use troupe_proto::cluster_server::ClusterServer;
use troupe_proto::jobs_server::JobsServer;
use troupe_proto::nodes_server::NodesServer;

/// Longest a GetActor or KvGet wait may last.
const MAX_WAIT: Duration = Duration::from_secs(600);

pub(super) async fn serve(head: Arc<Head>, listener: tokio::net::TcpListener) {
    let incoming = crate::rpc::incoming(listener);
    let require_token = crate::rpc::auth::RequireToken::new(&head.token, "head");
    let service = HeadService(head);
    let limit = crate::rpc::MAX_MESSAGE_BYTES;
    let result = tonic::transport::Server::builder()
        .http2_keepalive_interval(Some(Duration::from_secs(5)))
        .http2_keepalive_timeout(Some(Duration::from_secs(10)))
        .layer(require_token)
        .add_service(
            NodesServer::new(service.clone())
                .max_decoding_message_size(limit)
                .max_encoding_message_size(limit),
        )
        .add_service(
            ActorsServer::new(service.clone())
                .max_decoding_message_size(limit)
                .max_encoding_message_size(limit),
        )
        .add_service(
            JobsServer::new(super::jobs::JobsService(service.0.clone()))
                .max_decoding_message_size(limit)
                .max_encoding_message_size(limit),
        )
        .add_service(
            ClusterServer::new(service)
                .max_decoding_message_size(limit)
                .max_encoding_message_size(limit),
        )
        .serve_with_incoming(incoming)
        .await;
    if let Err(err) = result {
        tracing::error!(%err, "head server stopped");
    }
}

/// The `Nodes`, `Actors` and `Cluster` services, over the one head.
#[derive(Clone)]
struct HeadService(Arc<Head>);
