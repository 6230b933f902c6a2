//! The admin surface, served only on the node's local Unix socket (mode
//! 0600 in a 0700 data directory): whoever can open it administers the node.

use crate::audit::Audit;
use crate::auth::Authenticator;
use crate::clock::Clock;
use crate::config::AuthConfig;
use crate::directory::Directory;
use crate::domain::{OrgId, Peer, PeerAction};
use crate::error::{Error, FieldError};
use crate::identity::IdentityCell;
use crate::keys::MasterKeys;
use crate::peering;
use crate::peering::Peering;
use crate::protocol::Protocol;
use crate::store::Store;
use crate::subject_access::SubjectAccess;
use crate::wire::time::to_timestamp;
use crate::witness::Witness;
use anyhow::Context as _;
use exitnet_proto::pb;
use std::path::Path;
use std::sync::Arc;
use tokio::net::UnixListener;
use tonic::{Request, Response, Status};

pub mod report;

/// The admin adapter and the services administrators act through.
pub struct AdminApi {
    store: Arc<dyn Store>,
    clock: Arc<dyn Clock>,
    identity: Arc<IdentityCell>,
    directory: Directory,
    /// The federation endpoint peers are told to use.
    advertised: String,
    /// Mints development tokens (`auth.mode = "dev"` only).
    auth: Arc<Authenticator>,
    auth_config: AuthConfig,
    audit: Audit,
    peering: Peering,
    protocol: Protocol,
    witness: Witness,
    subject_access: SubjectAccess,
    master_keys: MasterKeys,
}

/// What the admin adapter is built from.
pub struct AdminParts {
    pub store: Arc<dyn Store>,
    pub clock: Arc<dyn Clock>,
    pub identity: Arc<IdentityCell>,
    pub directory: Directory,
    pub advertised: String,
    pub auth: Arc<Authenticator>,
    pub auth_config: AuthConfig,
    pub audit: Audit,
    pub peering: Peering,
    pub protocol: Protocol,
    pub witness: Witness,
    pub subject_access: SubjectAccess,
    pub master_keys: MasterKeys,
}

impl AdminApi {
    pub fn new(p: AdminParts) -> Self {
        Self {
            store: p.store,
            clock: p.clock,
            identity: p.identity,
            directory: p.directory,
            advertised: p.advertised,
            auth: p.auth,
            auth_config: p.auth_config,
            audit: p.audit,
            peering: p.peering,
            protocol: p.protocol,
            witness: p.witness,
            subject_access: p.subject_access,
            master_keys: p.master_keys,
        }
    }

    fn now_ms(&self) -> i64 {
        self.clock.now_ms()
    }

    pub fn into_service(self) -> pb::admin_service_server::AdminServiceServer<Self> {
        pb::admin_service_server::AdminServiceServer::new(self)
    }

    fn view(&self, p: &Peer) -> Result<pb::PeerView, Error> {
        let ours = self.identity.fingerprint()?;
        Ok(peer_view(p, &ours))
    }
}

/// Binds the admin socket at `path` so that no one else can reach it, not
/// even for an instant: it is bound inside a new directory only the owner
/// may enter, made 0600 there, then renamed into place. (A private umask
/// would do it too, but the umask is the whole process's, and other threads
/// create files meanwhile.)
pub fn bind_socket(path: &Path) -> anyhow::Result<UnixListener> {
    use std::os::unix::fs::{DirBuilderExt, PermissionsExt};
    let parent = path
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    crate::identity::create_private_dir(parent)?;
    if path.exists() {
        // A socket left by a node that died; refuse if one still answers.
        if std::os::unix::net::UnixStream::connect(path).is_ok() {
            anyhow::bail!(
                "another node is serving the admin socket {}",
                path.display()
            );
        }
        std::fs::remove_file(path).with_context(|| format!("removing stale {}", path.display()))?;
    }
    // Short, so the socket path stays within the 107 bytes Unix allows.
    let staging = parent.join(format!(
        ".adm-{}",
        &uuid::Uuid::new_v4().simple().to_string()[..8]
    ));
    std::fs::DirBuilder::new()
        .mode(0o700)
        .create(&staging)
        .with_context(|| format!("creating {}", staging.display()))?;
    let bound = (|| {
        let inner = staging.join("s");
        let listener = UnixListener::bind(&inner)?;
        std::fs::set_permissions(&inner, std::fs::Permissions::from_mode(0o600))?;
        std::fs::rename(&inner, path)?;
        anyhow::Ok(listener)
    })()
    .with_context(|| format!("binding admin socket {}", path.display()));
    let _ = std::fs::remove_dir_all(&staging);
    bound
}

pub fn peer_view(p: &Peer, our_fingerprint: &str) -> pb::PeerView {
    pb::PeerView {
        profile: Some(p.profile.to_pb()),
        state: p.state.to_pb() as i32,
        awaiting: match p.awaiting {
            crate::domain::Awaiting::Local => pb::Awaiting::Local,
            crate::domain::Awaiting::Remote => pb::Awaiting::Remote,
            crate::domain::Awaiting::None => pb::Awaiting::None,
        } as i32,
        remote_state: p.remote_state.map(|s| s.to_pb() as i32).unwrap_or(0),
        endpoint: p.endpoint.clone(),
        key_fingerprint: p.key_fingerprint.clone(),
        verification_code: peering::verification_code(our_fingerprint, &p.key_fingerprint),
        created_at: Some(to_timestamp(p.created_at_ms)),
        updated_at: Some(to_timestamp(p.updated_at_ms)),
        last_seen_at: p.last_seen_at_ms.map(to_timestamp),
        pending_notices: u32::try_from(p.pending_notices).unwrap_or(u32::MAX),
    }
}

fn org(field: &str, s: &str) -> Result<OrgId, Error> {
    Ok(OrgId::parse(field, s)?)
}

#[tonic::async_trait]
impl pb::admin_service_server::AdminService for AdminApi {
    async fn get_identity(
        &self,
        _: Request<pb::GetIdentityRequest>,
    ) -> Result<Response<pb::GetIdentityResponse>, Status> {
        let identity = self.identity.read().map_err(Error::from)?;
        let now = self.now_ms();
        let mut keys = vec![pb::KeyView {
            fingerprint: identity.current().fingerprint().to_owned(),
            created_at: Some(to_timestamp(identity.current_created_at_ms())),
            valid_until: None,
        }];
        keys.extend(identity.retired(now).map(|r| pb::KeyView {
            fingerprint: r.key.fingerprint().to_owned(),
            created_at: Some(to_timestamp(r.created_at_ms)),
            valid_until: Some(to_timestamp(r.valid_until_ms)),
        }));
        Ok(Response::new(pb::GetIdentityResponse {
            profile: Some(self.directory.profile().to_pb()),
            key_fingerprint: identity.current().fingerprint().to_owned(),
            endpoint: self.advertised.clone(),
            keys,
        }))
    }

    async fn rotate_identity(
        &self,
        _: Request<pb::RotateIdentityRequest>,
    ) -> Result<Response<pb::RotateIdentityResponse>, Status> {
        let r = self.peering.rotate_key().await?;
        Ok(Response::new(pb::RotateIdentityResponse {
            new_fingerprint: r.new_fingerprint,
            old_fingerprint: r.old_fingerprint,
            old_key_valid_until: Some(to_timestamp(r.old_valid_until_ms)),
            peers_notified: r.peers_notified,
        }))
    }

    async fn rotate_master_key(
        &self,
        _: Request<pb::RotateMasterKeyRequest>,
    ) -> Result<Response<pb::RotateMasterKeyResponse>, Status> {
        let (generation, r) = self
            .master_keys
            .rotate_now()
            .await
            .map_err(crate::error::Error::Internal)?;
        Ok(Response::new(pb::RotateMasterKeyResponse {
            generation,
            rewrapped: r.rewrapped,
            generations: self
                .master_keys
                .generations()
                .into_iter()
                .map(|(number, created)| pb::MasterKeyGeneration {
                    number,
                    created_at: Some(to_timestamp(created)),
                })
                .collect(),
        }))
    }

    async fn create_invitation(
        &self,
        request: Request<pb::CreateInvitationRequest>,
    ) -> Result<Response<pb::CreateInvitationResponse>, Status> {
        let pb::CreateInvitationRequest {
            expires_in_seconds,
            endpoint,
            note,
        } = request.into_inner();
        let created = self
            .peering
            .create_invitation(expires_in_seconds, Some(endpoint), note)
            .await?;
        self.audited("peer.invite", "invitation", &created.invitation_id)
            .await;
        Ok(Response::new(pb::CreateInvitationResponse {
            code: created.code,
            invitation_id: created.invitation_id,
            expires_at: Some(to_timestamp(created.expires_at_ms)),
        }))
    }

    async fn join_peer(
        &self,
        request: Request<pb::JoinPeerRequest>,
    ) -> Result<Response<pb::JoinPeerResponse>, Status> {
        let pb::JoinPeerRequest { code } = request.into_inner();
        let peer = self.peering.join(&code).await?;
        self.audited("peer.join", "peer", peer.org_id.as_str())
            .await;
        Ok(Response::new(pb::JoinPeerResponse {
            peer: Some(self.view(&peer)?),
        }))
    }

    async fn list_peers(
        &self,
        _: Request<pb::AdminServiceListPeersRequest>,
    ) -> Result<Response<pb::AdminServiceListPeersResponse>, Status> {
        let peers = self.store.list_peers().await?;
        let peers = peers
            .iter()
            .map(|p| self.view(p))
            .collect::<Result<Vec<_>, _>>()?;
        Ok(Response::new(pb::AdminServiceListPeersResponse { peers }))
    }

    async fn get_peer(
        &self,
        request: Request<pb::GetPeerRequest>,
    ) -> Result<Response<pb::GetPeerResponse>, Status> {
        let id = org("org_id", &request.into_inner().org_id)?;
        let peer = self
            .store
            .get_peer(&id)
            .await?
            .ok_or(Error::NotFound("peer"))?;
        Ok(Response::new(pb::GetPeerResponse {
            peer: Some(self.view(&peer)?),
        }))
    }

    async fn set_peer_state(
        &self,
        request: Request<pb::SetPeerStateRequest>,
    ) -> Result<Response<pb::SetPeerStateResponse>, Status> {
        let pb::SetPeerStateRequest { org_id, action } = request.into_inner();
        let id = org("org_id", &org_id)?;
        let action = PeerAction::from_pb("action", action)?;
        let peer = self.peering.decide(&id, action).await?;
        let pending = self.peering.pending_at(&id).await?;
        Ok(Response::new(pb::SetPeerStateResponse {
            peer: Some(self.view(&peer)?),
            pending_purges: u32::try_from(pending).unwrap_or(u32::MAX),
        }))
    }

    async fn abandon_purges(
        &self,
        request: Request<pb::AbandonPurgesRequest>,
    ) -> Result<Response<pb::AbandonPurgesResponse>, Status> {
        let id = org("org_id", &request.into_inner().org_id)?;
        let (abandoned, dropped) = self.peering.abandon(&id).await?;
        Ok(Response::new(pb::AbandonPurgesResponse {
            abandoned: u32::try_from(abandoned).unwrap_or(u32::MAX),
            withdrawals_dropped: u32::try_from(dropped).unwrap_or(u32::MAX),
        }))
    }

    async fn get_peer_policy(
        &self,
        request: Request<pb::GetPeerPolicyRequest>,
    ) -> Result<Response<pb::GetPeerPolicyResponse>, Status> {
        let id = org("org_id", &request.into_inner().org_id)?;
        self.store
            .get_peer(&id)
            .await?
            .ok_or(Error::NotFound("peer"))?;
        let (policy, customised) = crate::policy::for_peer(self.store.as_ref(), &id).await?;
        Ok(Response::new(pb::GetPeerPolicyResponse {
            policy: Some(policy.to_pb()),
            customised,
        }))
    }

    async fn set_peer_policy(
        &self,
        request: Request<pb::SetPeerPolicyRequest>,
    ) -> Result<Response<pb::SetPeerPolicyResponse>, Status> {
        let pb::SetPeerPolicyRequest { org_id, policy } = request.into_inner();
        let id = org("org_id", &org_id)?;
        self.store
            .get_peer(&id)
            .await?
            .ok_or(Error::NotFound("peer"))?;
        let policy = crate::policy::PeerPolicy::from_pb(
            policy.ok_or_else(|| FieldError::new("policy", "required"))?,
        )?;
        crate::policy::set_for_peer(self.store.as_ref(), &id, &policy).await?;
        tracing::info!(peer = %id, "peer policy changed");
        Ok(Response::new(pb::SetPeerPolicyResponse {
            policy: Some(policy.to_pb()),
        }))
    }

    async fn mint_dev_token(
        &self,
        request: Request<pb::MintDevTokenRequest>,
    ) -> Result<Response<pb::MintDevTokenResponse>, Status> {
        let pb::MintDevTokenRequest {
            subject,
            role,
            team,
        } = request.into_inner();
        let crate::auth::Authenticator::Dev(dev) = &*self.auth else {
            return Err(Error::FailedPrecondition(
                "dev tokens exist only with auth.mode = \"dev\"".into(),
            )
            .into());
        };
        if subject.is_empty() || subject.len() > 200 || subject.chars().any(char::is_control) {
            return Err(FieldError::new("subject", "must be 1 to 200 printable characters").into());
        }
        let role = crate::auth::Role::parse(&role).ok_or_else(|| {
            FieldError::new(
                "role",
                "must be case_manager, supervisor, auditor or system",
            )
        })?;
        let team = Some(team).filter(|t| !t.is_empty());
        let token = dev
            .mint(&self.auth_config, &subject, role, team.as_deref())
            .map_err(Error::from)?;
        tracing::info!(role = role.as_str(), "minted a development token");
        Ok(Response::new(pb::MintDevTokenResponse {
            access_token: token,
            expires_at: Some(to_timestamp(self.now_ms() + 8 * 3600 * 1000)),
        }))
    }

    async fn list_security_events(
        &self,
        request: Request<pb::ListSecurityEventsRequest>,
    ) -> Result<Response<pb::ListSecurityEventsResponse>, Status> {
        let limit = match request.into_inner().limit {
            0 => 100,
            n if n <= 10_000 => i64::from(n),
            _ => return Err(Error::from(FieldError::new("limit", "at most 10000")).into()),
        };
        let events = self.store.security_events(limit).await?;
        Ok(Response::new(pb::ListSecurityEventsResponse {
            events: events
                .into_iter()
                .map(|(e, count)| pb::SecurityEvent {
                    count: u64::try_from(count).unwrap_or_default(),
                    at: Some(to_timestamp(e.at_ms)),
                    surface: e.surface,
                    reason: e.reason,
                    key_fingerprint: e.key_fingerprint.unwrap_or_default(),
                    org_id: e.org_id.unwrap_or_default(),
                    remote_addr: e.remote_addr.unwrap_or_default(),
                    method: e.method.unwrap_or_default(),
                })
                .collect(),
        }))
    }

    async fn export_audit_records(
        &self,
        request: Request<pb::ExportAuditRecordsRequest>,
    ) -> Result<Response<pb::ExportAuditRecordsResponse>, Status> {
        let req = request.into_inner().query.unwrap_or_default();
        let query = crate::audit::AuditQuery::try_from(&req)?;
        let page = self.audit.list(&query).await?;
        if query.after_seq == 0 {
            self.audited("audit.export", "audit", "").await;
        }
        Ok(Response::new(pb::ExportAuditRecordsResponse {
            page: Some(page.into()),
        }))
    }

    async fn verify_audit(
        &self,
        request: Request<pb::VerifyAuditRequest>,
    ) -> Result<Response<pb::VerifyAuditResponse>, Status> {
        let local_only = request.into_inner().local_only;
        let report = self.witness.verify(local_only).await?;
        tracing::info!(
            ok = report.ok(),
            records = report.records,
            "audit trail verified"
        );
        Ok(Response::new(verify_response(&report)))
    }

    async fn create_checkpoint(
        &self,
        _: Request<pb::CreateCheckpointRequest>,
    ) -> Result<Response<pb::CreateCheckpointResponse>, Status> {
        let c = self.witness.create().await?;
        Ok(Response::new(pb::CreateCheckpointResponse {
            seq: c.seq.max(0) as u64,
            head_sha256: c.head_hash,
            sent_to: c.sent_to,
        }))
    }

    async fn subject_access(
        &self,
        request: Request<pb::SubjectAccessRequest>,
    ) -> Result<Response<pb::SubjectAccessResponse>, Status> {
        let subject = request.into_inner().subject_ref;
        crate::domain::consent::subject_ref("subject_ref", &subject).map_err(Error::from)?;
        let doc = self.subject_access.gather(&subject).await?;
        // The record names no client: only that an export was made.
        self.audited("subject.export", "subject", "").await;
        let json = serde_json::to_string_pretty(&doc).map_err(|e| Error::Internal(e.into()))?;
        Ok(Response::new(pb::SubjectAccessResponse { json }))
    }

    async fn list_receipts(
        &self,
        request: Request<pb::ListReceiptsRequest>,
    ) -> Result<Response<pb::ListReceiptsResponse>, Status> {
        let id = request.into_inner().referral_id;
        crate::domain::id_check("referral_id", &id)?;
        let receipts = self.store.receipts_for(&id).await?;
        self.audited("receipt.export", "referral", &id).await;
        let receipts = receipts
            .into_iter()
            .map(|r| {
                // A stored batch proof that does not decode is an error: the
                // receipt would not verify without it.
                let batch = match r.batch {
                    Some(b) => Some(prost::Message::decode(b.as_slice()).map_err(|e| {
                        Error::Internal(anyhow::anyhow!("the stored batch proof of a receipt: {e}"))
                    })?),
                    None => None,
                };
                Ok(pb::ExportedReceipt {
                    issued_by: r.issued_by,
                    payload: r.payload,
                    signature: r.signature,
                    batch,
                })
            })
            .collect::<Result<Vec<_>, Error>>()?;
        Ok(Response::new(pb::ListReceiptsResponse { receipts }))
    }

    async fn verify_receipt(
        &self,
        request: Request<pb::VerifyReceiptRequest>,
    ) -> Result<Response<pb::VerifyReceiptResponse>, Status> {
        let r = request
            .into_inner()
            .receipt
            .ok_or_else(|| Error::from(FieldError::new("receipt", "required")))?;
        if r.payload.len() > 64 * 1024 || r.signature.len() > 1024 || r.issued_by.len() > 200 {
            return Err(Error::from(FieldError::new("receipt", "too large")).into());
        }
        Ok(Response::new(self.protocol.verify_exported(&r).await?))
    }

    async fn report_shared(
        &self,
        request: Request<pb::ReportSharedRequest>,
    ) -> Result<Response<pb::ReportSharedResponse>, Status> {
        Ok(Response::new(
            self.report_shared_impl(request.into_inner()).await?,
        ))
    }

    async fn report_purges(
        &self,
        _: Request<pb::ReportPurgesRequest>,
    ) -> Result<Response<pb::ReportPurgesResponse>, Status> {
        let r = report::purges(self.store.as_ref()).await?;
        self.audited("report.purges", "report", "").await;
        Ok(Response::new(r))
    }
}

impl AdminApi {
    async fn report_shared_impl(
        &self,
        req: pb::ReportSharedRequest,
    ) -> Result<pb::ReportSharedResponse, Error> {
        let r = report::shared(self.store.as_ref(), req).await?;
        self.audited("report.shared", "report", "").await;
        Ok(r)
    }

    /// Records an administrator's action (standalone: it changes nothing else).
    async fn audited(&self, action: &str, object_type: &str, object_id: &str) {
        self.audit
            .record(&[crate::audit::AuditEntry::admin(
                self.now_ms(),
                action,
                object_type,
                object_id,
            )])
            .await;
    }
}

/// `audit verify`'s report as the admin API answers it.
fn verify_response(r: &crate::witness::verify::Report) -> pb::VerifyAuditResponse {
    pb::VerifyAuditResponse {
        ok: r.ok(),
        records: r.records.max(0) as u64,
        head_sha256: r.head_hash.clone(),
        checkpoints: r.checkpoints,
        witnesses: r.witnesses,
        peers: r
            .peers
            .iter()
            .map(|p| pb::PeerWitnessCheck {
                org_id: p.org_id.clone(),
                held: p.held,
                agreeing: p.agreeing,
                error: p.error.clone().unwrap_or_default(),
            })
            .collect(),
        failures: r
            .failures
            .iter()
            .map(|f| pb::AuditFailure {
                seq: f.seq.max(0) as u64,
                reason: f.reason.clone(),
            })
            .collect(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    #[tokio::test]
    async fn admin_socket_is_private_from_its_creation() {
        // A directory others may enter and write: the socket must still be
        // 0600 when it appears there, and nothing else is left behind.
        let dir = tempfile::tempdir().unwrap();
        std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o777)).unwrap();
        let path = dir.path().join("admin.sock");
        let _listener = bind_socket(&path).unwrap();
        let mode = std::fs::metadata(&path).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600, "mode {mode:o}");
        let names: Vec<_> = std::fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(names, vec![std::ffi::OsString::from("admin.sock")]);
        // A second node on the same socket is refused.
        assert!(bind_socket(&path).is_err());
    }
}
