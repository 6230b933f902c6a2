//! The node's listeners and background tasks, each handed the services it
//! calls: the client API, the federation API, the admin socket, metrics and
//! health, and the sender, scheduler, key and checkpoint tasks.

use super::node::Node;
use super::services::Services;
use crate::admin::AdminApi;
use crate::api::{DirectoryApi, NodeApi};
use crate::federation::FederationApi;
use crate::telemetry::CallLog;
use crate::tls;
use exitnet_proto::pb;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;
use tokio::net::{TcpListener, UnixListener};
use tokio::sync::watch;
use tokio::task::JoinHandle;
use tonic::transport::Server;
use tonic::transport::server::{Router, TcpIncoming};
use tonic_health::pb::health_server::HealthServer;
use tonic_health::server::{HealthReporter, HealthService};
use tower::layer::util::{Identity, Stack};

/// Services the client API offers (and reflection lists).
const CLIENT_SERVICES: &[&str] = &[
    "exitnet.v1.NodeService",
    "exitnet.v1.DirectoryService",
    "exitnet.v1.ConsentService",
    "exitnet.v1.ReferralService",
    "exitnet.v1.AuditService",
    "grpc.health.v1.Health",
];

/// Longest time between HTTP/2 keepalive pings on idle connections.
const KEEPALIVE: Duration = Duration::from_secs(30);
/// A connection whose ping is not answered in this time is closed.
const KEEPALIVE_TIMEOUT: Duration = Duration::from_secs(20);

/// A listener's task: ends when it stops serving.
pub(super) type Listener = JoinHandle<Result<(), tonic::transport::Error>>;

/// What the listeners share: the node, its services, the health statuses
/// and the stop signal.
pub(super) struct Serving<'a> {
    pub node: &'a Node,
    pub services: &'a Services,
    pub health: HealthReporter,
    pub stop: watch::Receiver<bool>,
}

impl Serving<'_> {
    fn health_service(&self) -> HealthServer<HealthService> {
        HealthServer::new(HealthService::from_health_reporter(self.health.clone()))
    }

    /// Completes when the node is told to stop.
    fn stopped(&self) -> impl std::future::Future<Output = ()> + Send + 'static {
        let mut rx = self.stop.clone();
        async move {
            let _ = rx.wait_for(|s| *s).await;
        }
    }

    /// A server with the limits every TCP listener has.
    fn bounded_server(&self) -> Server {
        let limits = &self.node.config.limits;
        Server::builder()
            .http2_keepalive_interval(Some(KEEPALIVE))
            .http2_keepalive_timeout(Some(KEEPALIVE_TIMEOUT))
            .max_concurrent_streams(Some(limits.max_concurrent_streams))
            .max_connection_age(Duration::from_secs(limits.max_connection_age_secs.max(1)))
            .timeout(Duration::from_secs(60))
    }

    fn handshake_timeout(&self) -> Duration {
        Duration::from_millis(self.node.config.federation.handshake_timeout_ms)
    }

    /// The client API: agency systems and staff, signed in.
    pub async fn client_api(&self, listener: TcpListener) -> anyhow::Result<Listener> {
        let router = self.client_router().await?;
        let stopped = self.stopped();
        Ok(match &self.node.config.api.tls {
            Some(tls_cfg) => {
                let cfg = tls::api_server_config(tls_cfg)?;
                let incoming = tls::tls_incoming(listener, cfg, self.handshake_timeout(), None);
                tokio::spawn(router.serve_with_incoming_shutdown(incoming, stopped))
            }
            None => {
                let incoming = TcpIncoming::from(listener).with_nodelay(Some(true));
                tokio::spawn(router.serve_with_incoming_shutdown(incoming, stopped))
            }
        })
    }

    async fn client_router(&self) -> anyhow::Result<Router<Stack<CallLog, Identity>>> {
        use pb::audit_service_server::AuditServiceServer;
        use pb::consent_service_server::ConsentServiceServer;
        use pb::directory_service_server::DirectoryServiceServer;
        use pb::node_service_server::NodeServiceServer;
        use pb::referral_service_server::ReferralServiceServer;
        let s = self.services;
        let max = self.node.config.limits.max_message_bytes;
        // Reflection lists the client API's own services, not the admin or
        // federation surfaces.
        let reflection = || {
            CLIENT_SERVICES.iter().fold(
                tonic_reflection::server::Builder::configure()
                    .register_encoded_file_descriptor_set(exitnet_proto::FILE_DESCRIPTOR_SET)
                    .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET),
                |b, s| b.with_service_name(*s),
            )
        };
        let node_svc = NodeServiceServer::new(NodeApi::new(s.sign_in.clone(), s.directory.clone()))
            .max_decoding_message_size(max);
        let directory_svc =
            DirectoryServiceServer::new(DirectoryApi::new(s.sign_in.clone(), s.directory.clone()))
                .max_decoding_message_size(max);
        let referral_svc = ReferralServiceServer::new(crate::api::referral::ReferralApi::new(
            s.sign_in.clone(),
            s.referrals.clone(),
            self.node.changes.clone(),
        ))
        .max_decoding_message_size(max);
        let consent_svc = ConsentServiceServer::new(crate::api::consent::ConsentApi::new(
            s.sign_in.clone(),
            s.consents.clone(),
        ))
        .max_decoding_message_size(max);
        let audit_svc = AuditServiceServer::new(crate::api::audit::AuditApi::new(
            s.sign_in.clone(),
            s.audit.clone(),
        ))
        .max_decoding_message_size(max);
        let h = &self.health;
        h.set_serving::<ReferralServiceServer<crate::api::referral::ReferralApi>>()
            .await;
        h.set_serving::<ConsentServiceServer<crate::api::consent::ConsentApi>>()
            .await;
        h.set_serving::<AuditServiceServer<crate::api::audit::AuditApi>>()
            .await;
        h.set_serving::<NodeServiceServer<NodeApi>>().await;
        h.set_serving::<DirectoryServiceServer<DirectoryApi>>()
            .await;
        h.set_service_status(
            crate::federation::SERVICE_NAME,
            tonic_health::ServingStatus::Serving,
        )
        .await;
        Ok(self
            .bounded_server()
            .layer(CallLog::new("client", self.node.metrics.clone()))
            .add_service(self.health_service())
            .add_service(reflection().build_v1()?)
            .add_service(reflection().build_v1alpha()?)
            .add_service(node_svc)
            .add_service(directory_svc)
            .add_service(consent_svc)
            .add_service(referral_svc)
            .add_service(audit_svc))
    }

    /// The federation API: approved peers, over mutual TLS.
    pub fn federation(&self, listener: TcpListener) -> anyhow::Result<Listener> {
        let (n, s) = (self.node, self.services);
        let federation = FederationApi::new(crate::federation::FederationParts {
            store: n.store.clone(),
            clock: n.clock.clone(),
            identity: n.identity.clone(),
            limits: n.limits.clone(),
            max_message_bytes: n.config.limits.max_message_bytes,
            metrics: n.metrics.clone(),
            peer_channels: n.peer_channels.clone(),
            protocol: s.protocol.clone(),
            referrals: s.referrals.clone(),
            peering: s.peering.clone(),
            witness: s.witness.clone(),
            refusals: s.refusals.clone(),
        });
        let incoming = crate::transport::closer::closable_incoming(
            tls::tls_incoming(
                listener,
                tls::federation_server_config(n.current_key.clone())?,
                self.handshake_timeout(),
                Some(federation.stranger_gate()),
            ),
            n.peer_channels.connections.clone(),
        );
        Ok(tokio::spawn(
            self.bounded_server()
                .layer(CallLog::new("federation", n.metrics.clone()))
                .add_service(self.health_service())
                .add_service(federation.into_service())
                .serve_with_incoming_shutdown(incoming, self.stopped()),
        ))
    }

    /// The admin socket: whoever can open it administers the node.
    pub fn admin(&self, listener: UnixListener) -> Listener {
        let (n, s) = (self.node, self.services);
        let admin = AdminApi::new(crate::admin::AdminParts {
            store: n.store.clone(),
            clock: n.clock.clone(),
            identity: n.identity.clone(),
            directory: s.directory.clone(),
            advertised: n.advertised_endpoint(),
            auth: n.auth.clone(),
            auth_config: n.config.auth.clone(),
            audit: s.audit.clone(),
            peering: s.peering.clone(),
            protocol: s.protocol.clone(),
            witness: s.witness.clone(),
            subject_access: s.subject_access.clone(),
            master_keys: s.master_keys.clone(),
        });
        let incoming = tokio_stream::wrappers::UnixListenerStream::new(listener);
        tokio::spawn(
            Server::builder()
                .layer(CallLog::new("admin", n.metrics.clone()))
                .add_service(self.health_service())
                .add_service(admin.into_service())
                .serve_with_incoming_shutdown(incoming, self.stopped()),
        )
    }

    /// Prometheus metrics, when configured: the address served.
    pub fn metrics(&self, listener: Option<TcpListener>) -> anyhow::Result<Option<SocketAddr>> {
        let Some(l) = listener else { return Ok(None) };
        let addr = l.local_addr()?;
        let n = self.node;
        tokio::spawn(crate::metrics::serve(
            n.metrics.clone(),
            n.store.clone(),
            n.config.audit.checkpoint_interval_secs,
            l,
            self.stop.clone(),
        ));
        Ok(Some(addr))
    }

    /// Plaintext gRPC health for orchestrators' probes, when configured.
    pub fn health_only(&self, listener: Option<TcpListener>) -> anyhow::Result<Option<SocketAddr>> {
        let Some(l) = listener else { return Ok(None) };
        let addr = l.local_addr()?;
        let incoming = TcpIncoming::from(l).with_nodelay(Some(true));
        tokio::spawn(
            Server::builder()
                .timeout(Duration::from_secs(10))
                .add_service(self.health_service())
                .serve_with_incoming_shutdown(incoming, self.stopped()),
        );
        Ok(Some(addr))
    }

    /// The background tasks; those that must finish before the store is
    /// closed are returned (refusals last: counted up to the end).
    pub fn tasks(&self) -> Vec<JoinHandle<()>> {
        let (n, s, stop) = (self.node, self.services, &self.stop);
        let interval = Duration::from_secs(n.config.federation.scheduler_interval_secs.max(1));
        let outbox = tokio::spawn(crate::delivery::run(
            s.delivery.clone(),
            Arc::new(crate::answers::NodeAnswers {
                referrals: s.referrals.clone(),
                witness: s.witness.clone(),
            }),
            stop.clone(),
        ));
        // Purges a restore from backup would have undone, applied again.
        tokio::spawn(crate::referrals::reconcile::run_at_start(
            s.referrals.clone(),
            stop.clone(),
        ));
        let scheduler = tokio::spawn(crate::referrals::run_scheduler(
            s.referrals.clone(),
            interval,
            stop.clone(),
        ));
        // Master key generations: rotation, rewrapping, destruction.
        tokio::spawn(s.master_keys.clone().run(interval, stop.clone()));
        let checkpoints = tokio::spawn(crate::witness::checkpoint::run(
            s.witness.clone(),
            stop.clone(),
        ));
        let refusals = tokio::spawn(s.refusals.clone().run_flush(stop.clone()));
        vec![outbox, scheduler, checkpoints, refusals]
    }
}
