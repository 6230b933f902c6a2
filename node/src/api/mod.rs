//! The client API for agency systems: thin gRPC adapters over the domain.

use crate::auth::{ON_BEHALF_OF_HEADER, Principal};
use crate::directory::{Directory, PeerQuery};
use crate::domain::{NeedArea, OrgProfile, Service};
use crate::error::Error;
use crate::store::SecurityEvent;
use exitnet_proto::pb;
use std::sync::Arc;
use tonic::transport::server::{TcpConnectInfo, TlsConnectInfo};
use tonic::{Request, Response, Status};

pub mod audit;
pub mod consent;
pub mod referral;
pub mod requests;
pub mod views;

/// Signs in the callers of the client API: the bearer token checked, the
/// caller's address and subject rate-limited, refusals recorded.
#[derive(Clone)]
pub struct SignIn {
    auth: Arc<crate::auth::Authenticator>,
    auth_config: Arc<crate::config::AuthConfig>,
    limits: Arc<crate::limits::Limits>,
    metrics: Arc<crate::metrics::Metrics>,
    refusals: crate::security::Refusals,
    clock: Arc<dyn crate::clock::Clock>,
}

impl SignIn {
    pub fn new(
        auth: Arc<crate::auth::Authenticator>,
        auth_config: crate::config::AuthConfig,
        limits: Arc<crate::limits::Limits>,
        metrics: Arc<crate::metrics::Metrics>,
        refusals: crate::security::Refusals,
        clock: Arc<dyn crate::clock::Clock>,
    ) -> Self {
        Self {
            auth,
            auth_config: Arc::new(auth_config),
            limits,
            metrics,
            refusals,
            clock,
        }
    }

    /// The caller of a client API request, or a refusal (recorded, without the token).
    pub async fn authenticate<T>(
        &self,
        req: &Request<T>,
    ) -> Result<(Principal, crate::limits::Permit), Status> {
        let remote = req
            .extensions()
            .get::<TcpConnectInfo>()
            .and_then(|i| i.remote_addr())
            .or_else(|| {
                req.extensions()
                    .get::<TlsConnectInfo<TcpConnectInfo>>()
                    .and_then(|i| i.get_ref().remote_addr())
            });
        // Before sign-in, per address: a flood of bad tokens is refused before
        // it costs a token check and a security-event row each.
        if let Some(ip) = remote.map(|a| a.ip().to_string()) {
            self.limits.addresses.rate(&ip)?;
        }
        let md = req.metadata();
        let token = md
            .get("authorization")
            .and_then(|v| v.to_str().ok())
            .and_then(|v| {
                v.strip_prefix("Bearer ")
                    .or_else(|| v.strip_prefix("bearer "))
            })
            .map(str::trim);
        let on_behalf_of = md.get(ON_BEHALF_OF_HEADER).and_then(|v| v.to_str().ok());
        match self
            .auth
            .authenticate(&self.auth_config, token, on_behalf_of)
            .await
        {
            Ok(p) => {
                tracing::Span::current().record("caller", p.role.as_str());
                let permit = self.limits.callers.admit(&p.subject)?;
                Ok((p, permit))
            }
            Err(e) => {
                self.metrics
                    .sign_in_failures
                    .get_or_create(&crate::metrics::ReasonLabel {
                        reason: e.reason().into(),
                    })
                    .inc();
                self.refusals
                    .record(SecurityEvent {
                        at_ms: self.clock.now_ms(),
                        surface: "client".into(),
                        reason: e.reason().into(),
                        key_fingerprint: None,
                        org_id: None,
                        remote_addr: remote.map(|a| a.to_string()),
                        method: req
                            .extensions()
                            .get::<crate::telemetry::CallPath>()
                            .map(|m| m.0.trim_start_matches('/').to_owned()),
                    })
                    .await;
                Err(Error::from(e).into())
            }
        }
    }
}

/// How often a watch checks its caller's token again: an opaque token is
/// introspected anew (a revoked one ends the watch), a JWT's claims and role
/// are checked as on a call.
const WATCH_RECHECK: std::time::Duration = std::time::Duration::from_secs(60);

/// What a long-lived stream needs to check its caller again.
pub struct WatchCredentials {
    token: Option<String>,
    on_behalf_of: Option<String>,
    expires_at_ms: Option<i64>,
}

impl WatchCredentials {
    /// The credentials `req` was authenticated with, as `p`.
    pub fn of<T>(req: &Request<T>, p: &Principal) -> Self {
        let md = req.metadata();
        let header = |name: &str| {
            md.get(name)
                .and_then(|v| v.to_str().ok())
                .map(str::to_owned)
        };
        let token = header("authorization").and_then(|v| {
            v.strip_prefix("Bearer ")
                .or_else(|| v.strip_prefix("bearer "))
                .map(|t| t.trim().to_owned())
        });
        Self {
            token,
            on_behalf_of: header(ON_BEHALF_OF_HEADER),
            expires_at_ms: p.expires_at_ms,
        }
    }

    /// Resolves, with the status to end the stream with, when the token
    /// expires or no longer passes a check (see `WATCH_RECHECK`).
    pub async fn ended(&self, sign_in: &SignIn) -> Status {
        loop {
            let left = self
                .expires_at_ms
                .map(|e| e.saturating_sub(sign_in.clock.now_ms()));
            if left.is_some_and(|l| l <= 0) {
                return Status::unauthenticated(
                    "the token has expired: sign in again and watch again",
                );
            }
            let wait = match left {
                Some(l) => WATCH_RECHECK.min(std::time::Duration::from_millis(l.unsigned_abs())),
                None => WATCH_RECHECK,
            };
            tokio::time::sleep(wait).await;
            if self
                .expires_at_ms
                .is_some_and(|e| e <= sign_in.clock.now_ms())
            {
                continue; // said as expiry above
            }
            if let Err(e) = sign_in
                .auth
                .authenticate(
                    &sign_in.auth_config,
                    self.token.as_deref(),
                    self.on_behalf_of.as_deref(),
                )
                .await
            {
                let status: Status = Error::from(e).into();
                return Status::new(
                    status.code(),
                    format!("{}: sign in again and watch again", status.message()),
                );
            }
        }
    }
}

pub struct NodeApi {
    sign_in: SignIn,
    directory: Directory,
}

impl NodeApi {
    pub fn new(sign_in: SignIn, directory: Directory) -> Self {
        Self { sign_in, directory }
    }
}

#[tonic::async_trait]
impl pb::node_service_server::NodeService for NodeApi {
    async fn get_node_info(
        &self,
        request: Request<pb::GetNodeInfoRequest>,
    ) -> Result<Response<pb::GetNodeInfoResponse>, Status> {
        self.sign_in.authenticate(&request).await?;
        Ok(Response::new(pb::GetNodeInfoResponse {
            profile: Some(self.directory.profile().to_pb()),
            protocol_version: exitnet_proto::PROTOCOL_VERSION,
            key_fingerprint: self.directory.fingerprint()?,
            software_version: env!("CARGO_PKG_VERSION").to_owned(),
        }))
    }
}

pub struct DirectoryApi {
    sign_in: SignIn,
    directory: Directory,
}

impl DirectoryApi {
    pub fn new(sign_in: SignIn, directory: Directory) -> Self {
        Self { sign_in, directory }
    }
}

#[tonic::async_trait]
impl pb::directory_service_server::DirectoryService for DirectoryApi {
    async fn list_peers(
        &self,
        request: Request<pb::ListPeersRequest>,
    ) -> Result<Response<pb::ListPeersResponse>, Status> {
        self.sign_in.authenticate(&request).await?;
        let pb::ListPeersRequest {
            need_area,
            service,
            accepting_only,
        } = request.into_inner();
        let query = PeerQuery {
            need_area: NeedArea::from_pb_optional("need_area", need_area).map_err(Error::from)?,
            service: Service::from_pb_optional("service", service).map_err(Error::from)?,
            accepting_only,
        };
        let peers = self.directory.peers(&query).await?;
        Ok(Response::new(pb::ListPeersResponse {
            peers: peers.iter().map(OrgProfile::to_pb).collect(),
        }))
    }
}
