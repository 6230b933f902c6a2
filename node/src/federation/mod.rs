//! The federation surface: the gRPC adapter for calls from other nodes.
//! It authenticates the caller by the key it presented, then hands plain
//! domain values to `peering`. Every refusal is recorded.

use crate::clock::Clock;
use crate::domain::Peer;
use crate::error::Error;
use crate::identity::IdentityCell;
use crate::identity::{fingerprint_spki, spki_from_cert};
use crate::limits::Limits;
use crate::limits::Permit;
use crate::metrics::Metrics;
use crate::peering;
use crate::peering::Peering;
use crate::protocol::Protocol;
use crate::referrals::Referrals;
use crate::security::Refusals;
use crate::store::SecurityEvent;
use crate::store::Store;
use crate::transport::client::Channels;
use crate::witness::Witness;
use exitnet_proto::pb;
use std::sync::Arc;
use tonic::server::NamedService;
use tonic::transport::server::{TcpConnectInfo, TlsConnectInfo};
use tonic::{Request, Response, Status};
use tracing::Instrument;

use crate::transport::{MAX_BATCH, MAX_MESSAGE_BYTES};

/// The federation adapter and what it hands peers' calls to.
#[derive(Clone)]
pub struct FederationApi {
    store: Arc<dyn Store>,
    clock: Arc<dyn Clock>,
    /// Signs the receipts of a batch together.
    identity: Arc<IdentityCell>,
    limits: Arc<Limits>,
    max_message_bytes: usize,
    metrics: Arc<Metrics>,
    /// Connections from peers (a caller refused for good has its closed).
    peer_channels: Arc<Channels>,
    protocol: Protocol,
    referrals: Referrals,
    peering: Peering,
    witness: Witness,
    refusals: Refusals,
}

/// What the federation adapter is built from.
pub struct FederationParts {
    pub store: Arc<dyn Store>,
    pub clock: Arc<dyn Clock>,
    pub identity: Arc<IdentityCell>,
    pub limits: Arc<Limits>,
    pub max_message_bytes: usize,
    pub metrics: Arc<Metrics>,
    pub peer_channels: Arc<Channels>,
    pub protocol: Protocol,
    pub referrals: Referrals,
    pub peering: Peering,
    pub witness: Witness,
    pub refusals: Refusals,
}

impl FederationApi {
    pub fn new(p: FederationParts) -> Self {
        Self {
            store: p.store,
            clock: p.clock,
            identity: p.identity,
            limits: p.limits,
            max_message_bytes: p.max_message_bytes,
            metrics: p.metrics,
            peer_channels: p.peer_channels,
            protocol: p.protocol,
            referrals: p.referrals,
            peering: p.peering,
            witness: p.witness,
            refusals: p.refusals,
        }
    }

    fn now_ms(&self) -> i64 {
        self.clock.now_ms()
    }

    /// Refuses connections from addresses over their rate before the
    /// handshake: see `stranger_gate`.
    pub fn stranger_gate(&self) -> crate::tls::ConnectionGate {
        stranger_gate(self.limits.clone(), self.metrics.clone())
    }

    pub fn into_service(self) -> pb::federation_service_server::FederationServiceServer<Self> {
        let max = self.max_message_bytes;
        pb::federation_service_server::FederationServiceServer::new(self)
            .max_decoding_message_size(max)
            .max_encoding_message_size(max.max(MAX_MESSAGE_BYTES))
    }
}

/// What the transport tells us about a caller.
struct CallerInfo {
    spki: Option<Vec<u8>>,
    fingerprint: Option<String>,
    /// The certificate presented; the organisation it names is read only
    /// when its key is unknown (to record "a known organisation with
    /// another key"), not on every call.
    cert: Option<Vec<u8>>,
    remote: Option<std::net::SocketAddr>,
    method: &'static str,
}

fn caller_info<T>(req: &Request<T>, method: &'static str) -> CallerInfo {
    let info = req.extensions().get::<TlsConnectInfo<TcpConnectInfo>>();
    let remote = info.and_then(|i| i.get_ref().remote_addr());
    let cert = info
        .and_then(|i| i.peer_certs())
        .and_then(|c| c.first().map(|c| c.to_vec()));
    let spki = cert.as_ref().and_then(|c| spki_from_cert(c).ok());
    CallerInfo {
        fingerprint: spki.as_deref().map(fingerprint_spki),
        spki,
        cert,
        remote,
        method,
    }
}

fn claimed_org(cert_der: &[u8]) -> Option<String> {
    let (_, cert) = x509_parser::parse_x509_certificate(cert_der).ok()?;
    let san = cert.subject_alternative_name().ok()??;
    san.value.general_names.iter().find_map(|n| match n {
        x509_parser::extensions::GeneralName::DNSName(d) => {
            d.strip_suffix(".exitnet.invalid").map(str::to_owned)
        }
        _ => None,
    })
}

impl FederationApi {
    async fn refuse(
        &self,
        info: &CallerInfo,
        org: Option<String>,
        reason: &str,
        err: Error,
    ) -> Status {
        self.refusals
            .record(SecurityEvent {
                at_ms: self.now_ms(),
                surface: "federation".into(),
                reason: reason.into(),
                key_fingerprint: info.fingerprint.clone(),
                org_id: org,
                remote_addr: info.remote.map(|a| a.to_string()),
                method: Some(info.method.into()),
            })
            .await;
        err.into()
    }

    /// The approved peer that made this call, within its limits, or a refusal.
    async fn authenticate(&self, info: &CallerInfo) -> Result<(Peer, Permit), Status> {
        let peer = self.identify(info).await?;
        let permit = self.admit(&peer, 1)?;
        Ok((peer, permit))
    }

    /// A place for a call of `peer` carrying `notices` notices: each counts
    /// against the peer's rate, the call holds one place in flight.
    fn admit(&self, peer: &Peer, notices: usize) -> Result<Permit, Status> {
        let limits = &self.limits.peers;
        let org = peer.org_id.as_str();
        limits
            .rate_n(org, notices)
            .and_then(|()| limits.enter(org))
            .map_err(|e| {
                self.metrics.received(org, "any", "rate_limited");
                Status::from(e)
            })
    }

    /// Notify's answer to an applied notice; a notice the peer may not send
    /// is recorded as a refusal.
    async fn answer(
        &self,
        info: &CallerInfo,
        peer: &Peer,
        outcome: Result<Result<pb::NotifyResponse, Error>, tokio::task::JoinError>,
    ) -> Result<pb::NotifyResponse, Status> {
        match outcome {
            Ok(Ok(resp)) => Ok(resp),
            Ok(Err(e @ (Error::PermissionDenied(_) | Error::PeeringRefused(_)))) => Err(self
                .refuse(info, Some(peer.org_id.to_string()), "notice_not_allowed", e)
                .await),
            Ok(Err(e)) => Err(e.into()),
            Err(_) => Err(Status::internal("the notice could not be applied")),
        }
    }

    /// A caller not identified as a peer is bounded per address before its
    /// refusal is recorded: beyond the rate it gets RESOURCE_EXHAUSTED and
    /// costs no write (counted in the metrics). Approved peers never draw on
    /// these buckets.
    ///
    /// Past the rate, the caller's connections are closed too (every one
    /// made with its key, or this one when it presented none): a flood on
    /// a kept connection costs us its TLS records, streams and decoding,
    /// while a closed one must pay for a new handshake, which its address
    /// gets only once its bucket has refilled (`stranger_gate`).
    fn stranger_limit(&self, info: &CallerInfo) -> Result<(), Status> {
        let remote = info.remote;
        let bucket = match remote {
            Some(a) => crate::limits::Limits::stranger_bucket(a.ip()),
            None => "stranger:".into(),
        };
        self.limits.addresses.rate(&bucket).map_err(|e| {
            self.metrics.received("-", "any", "rate_limited");
            let connection = match (&info.fingerprint, remote) {
                (Some(fp), _) => Some(fp.clone()),
                (None, Some(a)) => Some(crate::transport::closer::unauthenticated(a)),
                (None, None) => None,
            };
            if let Some(c) = connection {
                self.peer_channels.connections.close(&[c]);
            }
            Status::from(e)
        })
    }

    /// The approved peer that made this call, or a recorded refusal.
    async fn identify(&self, info: &CallerInfo) -> Result<Peer, Status> {
        let peer = self.identify_pinned(info).await?;
        self.peering_allows(info, &peer).await?;
        Ok(peer)
    }

    /// Whether the state of the peering lets `peer` call at all; a refusal
    /// is recorded.
    async fn peering_allows(&self, info: &CallerInfo, peer: &Peer) -> Result<(), Status> {
        if let Err(reason) = peering::may_notify(peer) {
            let org = Some(peer.org_id.to_string());
            return Err(self
                .refuse(info, org, reason, Error::PeeringRefused(reason))
                .await);
        }
        Ok(())
    }

    /// The peer whose pinned key made this call, whatever the state of the
    /// peering (withdrawals pass while any key of the peer is pinned), or a
    /// recorded refusal.
    async fn identify_pinned(&self, info: &CallerInfo) -> Result<Peer, Status> {
        let Some(fp) = &info.fingerprint else {
            self.stranger_limit(info)?;
            return Err(self
                .refuse(
                    info,
                    None,
                    "no_client_certificate",
                    Error::Unauthenticated("a client certificate is required".into()),
                )
                .await);
        };
        let now = self.now_ms();
        // A key refused within the last second takes from its address's
        // bucket before any lookup: past the rate, a flood costs nothing.
        let limited_already = self.limits.unknown_keys.recently_unknown(fp, now);
        if limited_already {
            self.stranger_limit(info)?;
        }
        let peer = match self.store.find_peer_by_key(fp, now).await {
            Ok(p) => p,
            Err(e) => return Err(e.into()),
        };
        let Some(peer) = peer else {
            self.limits.unknown_keys.note(fp, now);
            // A known organisation presenting a key we never pinned (or one
            // whose overlap has ended) is worth telling apart in the record.
            let known = match info.cert.as_deref().and_then(claimed_org) {
                Some(org) => match crate::domain::OrgId::parse("org", &org) {
                    Ok(id) => self
                        .store
                        .get_peer(&id)
                        .await
                        .ok()
                        .flatten()
                        .map(|p| p.org_id.to_string()),
                    Err(_) => None,
                },
                None => None,
            };
            let reason = if known.is_some() {
                "key_mismatch_for_known_org"
            } else {
                "unknown_key"
            };
            if !limited_already {
                self.stranger_limit(info)?;
            }
            return Err(self
                .refuse(
                    info,
                    known,
                    reason,
                    Error::Unauthenticated("the presented key is not pinned for any peer".into()),
                )
                .await);
        };
        tracing::Span::current().record("peer", peer.org_id.as_str());
        Ok(peer)
    }
}

#[tonic::async_trait]
impl pb::federation_service_server::FederationService for FederationApi {
    async fn join(
        &self,
        request: Request<pb::JoinRequest>,
    ) -> Result<Response<pb::JoinResponse>, Status> {
        let info = caller_info(&request, "Join");
        // Joins come from not yet known parties: bounded per address.
        let address = info.remote.map(|a| a.ip().to_string()).unwrap_or_default();
        self.limits.addresses.rate(&format!("join:{address}"))?;
        let Some(spki) = info.spki.clone() else {
            return Err(self
                .refuse(
                    &info,
                    None,
                    "no_client_certificate",
                    Error::Unauthenticated("a client certificate is required".into()),
                )
                .await);
        };
        let req = request.into_inner();
        let claimed = req.profile.as_ref().map(|p| p.org_id.clone());
        let joined = match crate::domain::JoinRequest::from_pb(req) {
            Ok(req) => self.peering.accept_join(&spki, req).await,
            Err(e) => Err(e.into()),
        };
        match joined {
            Ok(profile) => Ok(Response::new(pb::JoinResponse {
                profile: Some(profile.to_pb()),
                protocol_version: exitnet_proto::PROTOCOL_VERSION,
            })),
            Err(e) => {
                let reason = peering::join_refusal_reason(&e, "join_failed");
                let org = claimed.filter(|c| crate::domain::OrgId::parse("o", c).is_ok());
                Err(self.refuse(&info, org, reason, e).await)
            }
        }
    }

    async fn notify(
        &self,
        request: Request<pb::NotifyRequest>,
    ) -> Result<Response<pb::NotifyResponse>, Status> {
        let info = caller_info(&request, "Notify");
        let peer = self.identify_pinned(&info).await?;
        let req = request.into_inner();
        // A withdrawal passes whatever the state of the peering (the
        // receiver checks again that it is one, once its signature holds).
        if !crate::protocol::messages::is_withdrawal(&req) {
            self.peering_allows(&info, &peer).await?;
        }
        let permit = self.admit(&peer, 1)?;
        let fp = info.fingerprint.clone().unwrap_or_default();
        let spki = info.spki.clone().unwrap_or_default();
        // An accepted notice runs to its end on a task of its own: a peer
        // that hangs up mid-call (it will send again) must not cut the work
        // between the commit and its accounting.
        let task = tokio::spawn(
            apply_notice(
                self.clone(),
                peer.clone(),
                fp,
                spki,
                req,
                Arc::new(permit),
                None,
            )
            .instrument(tracing::Span::current()),
        );
        let outcome = task.await;
        self.answer(&info, &peer, outcome).await.map(Response::new)
    }

    async fn notify_batch(
        &self,
        request: Request<pb::NotifyBatchRequest>,
    ) -> Result<Response<pb::NotifyBatchResponse>, Status> {
        let info = caller_info(&request, "NotifyBatch");
        let peer = self.identify_pinned(&info).await?;
        let notices = request.into_inner().notices;
        batch_check(&notices)?;
        if !notices.iter().all(crate::protocol::messages::is_withdrawal) {
            self.peering_allows(&info, &peer).await?;
        }
        let permit = Arc::new(self.admit(&peer, notices.len())?);
        let fp = info.fingerprint.clone().unwrap_or_default();
        let spki = info.spki.clone().unwrap_or_default();
        // Each notice is applied on a task of its own, as with Notify; they
        // run together, so the receiver stores their referrals together.
        let members =
            crate::protocol::batch_sign::Member::round(self.identity.clone(), notices.len());
        let tasks: Vec<_> = notices
            .into_iter()
            .zip(members)
            .map(|(req, member)| {
                tokio::spawn(
                    apply_notice(
                        self.clone(),
                        peer.clone(),
                        fp.clone(),
                        spki.clone(),
                        req,
                        permit.clone(),
                        Some(member),
                    )
                    .instrument(tracing::Span::current()),
                )
            })
            .collect();
        let mut outcomes = Vec::with_capacity(tasks.len());
        let mut answered = false;
        for task in tasks {
            let outcome = match self.answer(&info, &peer, task.await).await {
                Ok(resp) => {
                    answered = true;
                    pb::notify_outcome::Outcome::Response(resp)
                }
                Err(status) => pb::notify_outcome::Outcome::Refusal(pb::NotifyRefusal {
                    code: status.code() as i32,
                    message: status.message().to_owned(),
                }),
            };
            outcomes.push(pb::NotifyOutcome {
                outcome: Some(outcome),
            });
        }
        if answered {
            seen(&self, &peer).await;
        }
        Ok(Response::new(pb::NotifyBatchResponse { outcomes }))
    }

    async fn list_withdrawn(
        &self,
        request: Request<pb::ListWithdrawnRequest>,
    ) -> Result<Response<pb::ListWithdrawnResponse>, Status> {
        let info = caller_info(&request, "ListWithdrawn");
        let (peer, _permit) = self.authenticate(&info).await?;
        let ids = crate::referrals::reconcile::checked_ids(request.into_inner().referral_ids)?;
        let referral_ids = self.store.withdrawn_among(&peer.org_id, &ids).await?;
        Ok(Response::new(pb::ListWithdrawnResponse { referral_ids }))
    }

    async fn list_witnessed_checkpoints(
        &self,
        request: Request<pb::ListWitnessedCheckpointsRequest>,
    ) -> Result<Response<pb::ListWitnessedCheckpointsResponse>, Status> {
        let info = caller_info(&request, "ListWitnessedCheckpoints");
        let (peer, _permit) = self.authenticate(&info).await?;
        let req = request.into_inner();
        let limit = match req.limit {
            0 => 1000,
            n if n <= 1000 => i64::from(n),
            _ => {
                return Err(
                    Error::from(crate::error::FieldError::new("limit", "at most 1000")).into(),
                );
            }
        };
        let after = i64::try_from(req.after_seq).map_err(|_| {
            Status::from(Error::from(crate::error::FieldError::new(
                "after_seq",
                "at most 2^63-1",
            )))
        })?;
        let checkpoints = self
            .store
            .witnessed_checkpoints(&peer.org_id, after, limit)
            .await
            .map_err(Status::from)?
            .into_iter()
            .map(|(payload, signature)| pb::SignedCheckpoint { payload, signature })
            .collect();
        Ok(Response::new(pb::ListWitnessedCheckpointsResponse {
            checkpoints,
        }))
    }
}

/// A fresh connection to `peer` for a call outside delivery (audit verify,
/// reconciling purges): our current key, the peer's keys pinned now.
/// The federation listener's gate: each new connection takes a token from
/// its address's strangers' bucket, and an address that spent it gets no
/// handshake until it refills (an approved peer connecting from the same
/// address meanwhile waits with the strangers; its kept connections are
/// not touched).
fn stranger_gate(limits: Arc<Limits>, metrics: Arc<Metrics>) -> crate::tls::ConnectionGate {
    Arc::new(move |ip| {
        let admitted = limits.admit_connection(ip);
        if !admitted {
            metrics.received("-", "connection", "refused_before_handshake");
        }
        admitted
    })
}

/// A batch carries 1 to `MAX_BATCH` referral messages, nothing else.
fn batch_check(notices: &[pb::NotifyRequest]) -> Result<(), Error> {
    use crate::error::FieldError;
    if notices.is_empty() || notices.len() > MAX_BATCH {
        return Err(FieldError::new("notices", format!("1 to {MAX_BATCH} notices")).into());
    }
    for (i, n) in notices.iter().enumerate() {
        if !matches!(n.notice, Some(pb::notify_request::Notice::Message(_))) {
            return Err(FieldError::new(
                format!("notices[{i}].message"),
                "required: a batch carries referral messages only",
            )
            .into());
        }
    }
    Ok(())
}

/// Applies one notice from an authenticated peer and counts it. The call's
/// place among the peer's calls in flight is held until the work is done.
/// `batch`: its place in a `NotifyBatch` (its receipt is signed with the
/// others; the peer's last seen is updated once, for the whole batch).
async fn apply_notice(
    api: FederationApi,
    peer: Peer,
    fp: String,
    spki: Vec<u8>,
    req: pb::NotifyRequest,
    _permit: Arc<Permit>,
    batch: Option<crate::protocol::batch_sign::Member>,
) -> Result<pb::NotifyResponse, Error> {
    let in_batch = batch.is_some();
    let req_kind = match &req.notice {
        Some(pb::notify_request::Notice::Message(_)) => Kind::Message,
        Some(pb::notify_request::Notice::Checkpoint(_)) => Kind::Checkpoint,
        _ => Kind::Notice,
    };
    let outcome = match &req.notice {
        Some(pb::notify_request::Notice::Message(signed)) => {
            let incoming = api
                .protocol
                .open_incoming(&peer.org_id, &req.notice_id, &spki, signed, batch)
                .await;
            match incoming {
                Ok(incoming) => api
                    .referrals
                    .receive(&peer, incoming)
                    .await
                    .and_then(crate::protocol::incoming::signed_receipt)
                    .map(|r| pb::NotifyResponse {
                        receipt: Some(r),
                        witness: None,
                    }),
                Err(e) => Err(e),
            }
        }
        Some(pb::notify_request::Notice::Checkpoint(signed)) => api
            .witness
            .witness(&peer.org_id, &signed.clone().into())
            .await
            .map(|w| pb::NotifyResponse {
                receipt: None,
                witness: Some(w.into()),
            }),
        Some(notice) => match crate::domain::PeeringNotice::from_pb(notice.clone()) {
            Ok(notice) => api
                .peering
                .receive_notice(&peer, &fp, &req.notice_id, notice)
                .await
                .map(|()| pb::NotifyResponse::default()),
            Err(e) => Err(e.into()),
        },
        None => Err(crate::error::FieldError::new("notice", "required").into()),
    };
    if outcome.is_err() {
        api.metrics
            .received(peer.org_id.as_str(), notice_kind(&req_kind), "refused");
    } else {
        if req_kind != Kind::Message {
            api.metrics
                .received(peer.org_id.as_str(), notice_kind(&req_kind), "new");
        }
        // A batch updates it once, when all its notices are done.
        if !in_batch {
            seen(&api, &peer).await;
        }
    }
    outcome
}

/// "Last seen" to the second: not a write per message.
async fn seen(api: &FederationApi, peer: &Peer) {
    let now = api.now_ms();
    if now - peer.last_seen_at_ms.unwrap_or(0) >= 1000 {
        let _ = api.store.touch_peer(&peer.org_id, now).await;
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Message,
    Checkpoint,
    Notice,
}

fn notice_kind(k: &Kind) -> &'static str {
    match k {
        Kind::Message => "message",
        Kind::Checkpoint => "checkpoint",
        Kind::Notice => "notice",
    }
}

/// The gRPC name of the federation service, for health reporting.
pub const SERVICE_NAME: &str =
    <pb::federation_service_server::FederationServiceServer<FederationApi> as NamedService>::NAME;
