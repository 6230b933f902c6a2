//! A typed client of an Exitnet node's admin socket (a Unix socket only the
//! node's user can open). `exitnetctl` is a command line over it; the tests
//! call it directly where they are not about the command line itself.
//!
//! Each call takes its arguments as values and answers with what the node
//! returned, or the node's `Status` (its code names the kind of refusal, its
//! message the field or rule), which the caller words for its reader.

use exitnet_proto::pb;
use hyper_util::rt::TokioIo;
use pb::admin_service_client::AdminServiceClient;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};
use tokio::net::UnixStream;
use tonic::Status;
use tonic::transport::{Channel, Endpoint, Uri};

/// What one call answers.
pub type Result<T> = std::result::Result<T, Status>;

/// How often `connect` looks for the socket while it waits.
const POLL: Duration = Duration::from_millis(100);

/// A connection to one node's admin socket.
#[derive(Debug, Clone)]
pub struct AdminClient {
    inner: AdminServiceClient<Channel>,
}

/// Why the admin socket cannot be used, in words for the administrator.
fn socket_problem(path: &Path, e: &std::io::Error) -> anyhow::Error {
    match e.kind() {
        std::io::ErrorKind::NotFound => anyhow::anyhow!(
            "no admin socket at {} (is the node running? set --socket or EXITNET_ADMIN_SOCKET; --wait SECS waits for it)",
            path.display()
        ),
        std::io::ErrorKind::ConnectionRefused => anyhow::anyhow!(
            "the node is not running: nothing listens on the admin socket {} (the file is left from an earlier run)",
            path.display()
        ),
        std::io::ErrorKind::PermissionDenied => anyhow::anyhow!(
            "may not open the admin socket {}: permission denied (run exitnetctl as the node's user)",
            path.display()
        ),
        _ => anyhow::anyhow!("cannot open the admin socket {}: {e}", path.display()),
    }
}

impl AdminClient {
    /// Connects to the admin socket at `path`, waiting up to `wait` for the
    /// node to listen on it.
    pub async fn connect(path: &Path, wait: Duration) -> anyhow::Result<Self> {
        let path: PathBuf = path.to_owned();
        let deadline = Instant::now() + wait;
        loop {
            match UnixStream::connect(&path).await {
                Ok(_) => break,
                Err(e) => {
                    let retryable = matches!(
                        e.kind(),
                        std::io::ErrorKind::NotFound | std::io::ErrorKind::ConnectionRefused
                    );
                    if !retryable || Instant::now() >= deadline {
                        let err = socket_problem(&path, &e);
                        return Err(if wait.is_zero() {
                            err
                        } else {
                            anyhow::anyhow!("{err} (waited {wait:?})")
                        });
                    }
                    tokio::time::sleep(POLL).await;
                }
            }
        }
        let shown = path.display().to_string();
        // The URI is a placeholder: the connector always dials the socket.
        let channel =
            Endpoint::from_static("http://exitnet.admin")
                .connect_with_connector(tower::service_fn(move |_: Uri| {
                    let path = path.clone();
                    async move {
                        Ok::<_, std::io::Error>(TokioIo::new(UnixStream::connect(path).await?))
                    }
                }))
                .await
                .map_err(|e| anyhow::anyhow!("connecting to the admin socket {shown}: {e}"))?;
        Ok(AdminClient {
            inner: AdminServiceClient::new(channel),
        })
    }

    /// The node's organisation, endpoint and keys.
    pub async fn identity(&mut self) -> Result<pb::GetIdentityResponse> {
        Ok(self
            .inner
            .get_identity(pb::GetIdentityRequest {})
            .await?
            .into_inner())
    }

    /// A new identity key; peers are told, the old key stays valid a while.
    pub async fn rotate_identity(&mut self) -> Result<pb::RotateIdentityResponse> {
        Ok(self
            .inner
            .rotate_identity(pb::RotateIdentityRequest {})
            .await?
            .into_inner())
    }

    /// A new master-key generation; the data keys are wrapped under it.
    pub async fn rotate_master_key(&mut self) -> Result<pb::RotateMasterKeyResponse> {
        Ok(self
            .inner
            .rotate_master_key(pb::RotateMasterKeyRequest {})
            .await?
            .into_inner())
    }

    /// A single-use invitation code, valid `expires_in_seconds` (0: the
    /// node's default), naming `endpoint` (empty: the node's own).
    pub async fn invite(
        &mut self,
        expires_in_seconds: u64,
        endpoint: &str,
        note: &str,
    ) -> Result<pb::CreateInvitationResponse> {
        Ok(self
            .inner
            .create_invitation(pb::CreateInvitationRequest {
                expires_in_seconds,
                endpoint: endpoint.to_owned(),
                note: note.to_owned(),
            })
            .await?
            .into_inner())
    }

    /// Joins the peer that made `code`; the peering then waits for both
    /// sides' approval.
    pub async fn join(&mut self, code: &str) -> Result<pb::PeerView> {
        let r = self
            .inner
            .join_peer(pb::JoinPeerRequest {
                code: code.to_owned(),
            })
            .await?
            .into_inner();
        r.peer
            .ok_or_else(|| Status::internal("the node sent no peer"))
    }

    pub async fn peers(&mut self) -> Result<Vec<pb::PeerView>> {
        Ok(self
            .inner
            .list_peers(pb::AdminServiceListPeersRequest {})
            .await?
            .into_inner()
            .peers)
    }

    pub async fn peer(&mut self, org_id: &str) -> Result<pb::PeerView> {
        let r = self
            .inner
            .get_peer(pb::GetPeerRequest {
                org_id: org_id.to_owned(),
            })
            .await?
            .into_inner();
        r.peer
            .ok_or_else(|| Status::internal("the node sent no peer"))
    }

    /// Approves, rejects, suspends, resumes or revokes a peering.
    pub async fn set_peer_state(
        &mut self,
        org_id: &str,
        action: pb::PeerAction,
    ) -> Result<pb::SetPeerStateResponse> {
        Ok(self
            .inner
            .set_peer_state(pb::SetPeerStateRequest {
                org_id: org_id.to_owned(),
                action: action as i32,
            })
            .await?
            .into_inner())
    }

    /// The newest security events, at most `limit` (0: the node's default).
    pub async fn security_events(&mut self, limit: u32) -> Result<Vec<pb::SecurityEvent>> {
        Ok(self
            .inner
            .list_security_events(pb::ListSecurityEventsRequest { limit })
            .await?
            .into_inner()
            .events)
    }

    /// What this node takes from `org_id`, and whether it was set (not the
    /// default).
    pub async fn peer_policy(&mut self, org_id: &str) -> Result<pb::GetPeerPolicyResponse> {
        Ok(self
            .inner
            .get_peer_policy(pb::GetPeerPolicyRequest {
                org_id: org_id.to_owned(),
            })
            .await?
            .into_inner())
    }

    pub async fn set_peer_policy(
        &mut self,
        org_id: &str,
        policy: pb::PeerPolicy,
    ) -> Result<pb::PeerPolicy> {
        let r = self
            .inner
            .set_peer_policy(pb::SetPeerPolicyRequest {
                org_id: org_id.to_owned(),
                policy: Some(policy),
            })
            .await?
            .into_inner();
        r.policy
            .ok_or_else(|| Status::internal("the node sent no policy"))
    }

    /// A token for the client API from the development issuer (refused
    /// unless the node enables it).
    pub async fn mint_dev_token(
        &mut self,
        subject: &str,
        role: &str,
        team: &str,
    ) -> Result<pb::MintDevTokenResponse> {
        Ok(self
            .inner
            .mint_dev_token(pb::MintDevTokenRequest {
                subject: subject.to_owned(),
                role: role.to_owned(),
                team: team.to_owned(),
            })
            .await?
            .into_inner())
    }

    /// One page of audit records matching `query`.
    pub async fn export_audit(
        &mut self,
        query: pb::ListAuditRecordsRequest,
    ) -> Result<pb::ListAuditRecordsResponse> {
        let r = self
            .inner
            .export_audit_records(pb::ExportAuditRecordsRequest { query: Some(query) })
            .await?
            .into_inner();
        Ok(r.page.unwrap_or_default())
    }

    /// Checks the audit chain, its checkpoints and (unless `local_only`)
    /// what the peers witnessed.
    pub async fn verify_audit(&mut self, local_only: bool) -> Result<pb::VerifyAuditResponse> {
        Ok(self
            .inner
            .verify_audit(pb::VerifyAuditRequest { local_only })
            .await?
            .into_inner())
    }

    /// Signs a checkpoint of the audit chain now and sends it to the peers.
    pub async fn create_checkpoint(&mut self) -> Result<pb::CreateCheckpointResponse> {
        Ok(self
            .inner
            .create_checkpoint(pb::CreateCheckpointRequest {})
            .await?
            .into_inner())
    }

    /// Everything held about one client (GDPR Art. 15), as JSON.
    pub async fn subject_access(&mut self, subject_ref: &str) -> Result<String> {
        Ok(self
            .inner
            .subject_access(pb::SubjectAccessRequest {
                subject_ref: subject_ref.to_owned(),
            })
            .await?
            .into_inner()
            .json)
    }

    /// The signed receipts of one referral, exported.
    pub async fn receipts(&mut self, referral_id: &str) -> Result<Vec<pb::ExportedReceipt>> {
        Ok(self
            .inner
            .list_receipts(pb::ListReceiptsRequest {
                referral_id: referral_id.to_owned(),
            })
            .await?
            .into_inner()
            .receipts)
    }

    /// Checks an exported receipt against the issuer's pinned keys.
    pub async fn verify_receipt(
        &mut self,
        receipt: pb::ExportedReceipt,
    ) -> Result<pb::VerifyReceiptResponse> {
        Ok(self
            .inner
            .verify_receipt(pb::VerifyReceiptRequest {
                receipt: Some(receipt),
            })
            .await?
            .into_inner())
    }

    /// What was shared with each peer (or one), counted, in a period.
    pub async fn report_shared(
        &mut self,
        request: pb::ReportSharedRequest,
    ) -> Result<pb::ReportSharedResponse> {
        Ok(self.inner.report_shared(request).await?.into_inner())
    }

    /// Every withdrawal and where its purge stands.
    pub async fn report_purges(&mut self) -> Result<Vec<pb::PurgeEntry>> {
        Ok(self
            .inner
            .report_purges(pb::ReportPurgesRequest {})
            .await?
            .into_inner()
            .purges)
    }

    /// Gives up the purges a peering that ended can no longer confirm.
    pub async fn abandon_purges(&mut self, org_id: &str) -> Result<pb::AbandonPurgesResponse> {
        Ok(self
            .inner
            .abandon_purges(pb::AbandonPurgesRequest {
                org_id: org_id.to_owned(),
            })
            .await?
            .into_inner())
    }
}
