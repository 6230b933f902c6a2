//! Invitations and joins: the inviter's code, the joiner's request, the
//! checks that refuse a second or stolen join.

use super::*;
use crate::domain::JoinRequest;
use crate::protocol::peer_client::PeerClient;

pub struct CreatedInvitation {
    pub code: String,
    pub invitation_id: String,
    pub expires_at_ms: i64,
}

impl Peering {
    pub async fn create_invitation(
        &self,
        expires_in_secs: u64,
        endpoint: Option<String>,
        note: String,
    ) -> Result<CreatedInvitation> {
        let secs = if expires_in_secs == 0 {
            DEFAULT_INVITATION_SECS
        } else {
            expires_in_secs
        };
        if secs > MAX_INVITATION_SECS {
            return Err(FieldError::new("expires_in_seconds", "at most 30 days").into());
        }
        let endpoint = match endpoint.filter(|e| !e.is_empty()) {
            Some(e) => {
                crate::domain::endpoint_check("endpoint", &e)?;
                e
            }
            None => self.advertised_endpoint(),
        };
        crate::domain::bounded_text("note", &note, 200)?;
        let secret = random_bytes::<32>()?;
        let id = hex(&random_bytes::<12>()?);
        let now = self.now_ms();
        let expires_at_ms = now + (secs as i64) * 1000;
        self.store
            .create_invitation(&NewInvitation {
                id: id.clone(),
                secret_hash: sha256(&secret),
                expires_at_ms,
                note,
                created_at_ms: now,
            })
            .await?;
        let profile = self.profile();
        let code = {
            let identity = self.identity()?;
            let key = identity.current();
            invitation::encode(
                &invitation::Invitation {
                    invitation_id: id.clone(),
                    org_id: self.org_id.clone(),
                    org_name: profile.name.clone(),
                    endpoint,
                    key_fingerprint: key.fingerprint().to_owned(),
                    public_key: key.spki_der().to_vec(),
                    secret: secret.to_vec(),
                    expires_at_ms,
                },
                key,
            )?
        };
        tracing::info!(invitation_id = %id, "invitation created");
        Ok(CreatedInvitation {
            code,
            invitation_id: id,
            expires_at_ms,
        })
    }

    /// This node joins the inviter named in `code`. Running it is this
    /// administrator's approval; the inviter's administrator decides next.
    pub async fn join(&self, code: &str) -> Result<Peer> {
        let inv = invitation::decode(code)?;
        if inv.org_id == self.org_id {
            return Err(FieldError::new("code", "this is our own invitation").into());
        }
        if inv.expires_at_ms <= self.now_ms() {
            return Err(Error::FailedPrecondition(
                "the invitation has expired".into(),
            ));
        }
        // Checked before the inviter is called, so that a join that cannot be
        // recorded here does not use up the invitation there.
        if let Some(existing) = self.store.get_peer(&inv.org_id).await? {
            refuse_rejoin(&existing)?;
        }
        let request = JoinRequest {
            invitation_id: inv.invitation_id.clone(),
            secret: inv.secret.clone(),
            profile: self.profile(),
            endpoint: self.advertised_endpoint(),
        };
        let mut client = PeerClient::connect_pinned(
            &self.protocol,
            &inv.endpoint,
            vec![inv.key_fingerprint.clone()],
        )
        .await
        .map_err(|e| Error::Unavailable(format!("cannot reach the inviter: {e:#}")))?;
        let profile = client.join(&request).await?;
        if profile.org_id != inv.org_id {
            return Err(Error::Unavailable(
                "the inviter answered with another organisation ID".into(),
            ));
        }
        let now = self.now_ms();
        self.store
            .insert_peer(&NewPeer {
                profile,
                state: PeerState::Pending,
                awaiting: Awaiting::Remote,
                remote_state: Some(PeerState::Pending),
                endpoint: inv.endpoint.clone(),
                key: PeerKey {
                    fingerprint: inv.key_fingerprint.clone(),
                    spki_der: inv.public_key.clone(),
                    added_at_ms: now,
                    valid_until_ms: None,
                },
                now_ms: now,
            })
            .await?;
        tracing::info!(peer = %inv.org_id, "joined; waiting for the inviter's approval");
        self.store
            .get_peer(&inv.org_id)
            .await?
            .ok_or(Error::NotFound("peer"))
    }

    /// A join request at the inviter, from a caller that presented `spki`.
    pub async fn accept_join(&self, spki: &[u8], req: JoinRequest) -> Result<OrgProfile> {
        let JoinRequest {
            invitation_id,
            secret,
            profile,
            endpoint,
        } = req;
        if secret.len() != invitation::SECRET_BYTES {
            return Err(FieldError::new("secret", "must be 32 bytes").into());
        }
        if profile.org_id == self.org_id {
            return Err(FieldError::new("profile.org_id", "is this node's own ID").into());
        }
        let now = self.now_ms();
        let fingerprint = fingerprint_spki(spki);
        let outcome = self
            .store
            .accept_join(
                &invitation_id,
                &sha256(&secret),
                &NewPeer {
                    profile: profile.clone(),
                    state: PeerState::Pending,
                    awaiting: Awaiting::Local,
                    // Running `join` was the other administrator's approval.
                    remote_state: Some(PeerState::Pending),
                    endpoint,
                    key: PeerKey {
                        fingerprint: fingerprint.clone(),
                        spki_der: spki.to_vec(),
                        added_at_ms: now,
                        valid_until_ms: None,
                    },
                    now_ms: now,
                },
            )
            .await?;
        match outcome {
            Ok(()) => {
                self.audit
                    .record(&[crate::audit::AuditEntry::peer(
                        self.now_ms(),
                        profile.org_id.as_str(),
                        "peer.join_request",
                        "invitation",
                        &invitation_id,
                    )])
                    .await;
                tracing::info!(peer = %profile.org_id, "join request recorded; waiting for approval");
                Ok(self.profile())
            }
            Err(refusal) => Err(join_refused(refusal)),
        }
    }
}

/// Whether the peering with `p` has ended on either side: then a new
/// invitation and join replace it (the record is updated in place, its keys
/// replaced; referral messages still queued for the peer stay queued and go
/// out once the new peering is active).
pub fn peering_ended(p: &Peer) -> bool {
    p.state.is_final() || p.remote_state.is_some_and(PeerState::is_final)
}

/// A join of an organisation we already have a record of: allowed only if
/// that peering has ended, else refused saying what to do.
pub(super) fn refuse_rejoin(existing: &Peer) -> Result<()> {
    if peering_ended(existing) {
        return Ok(());
    }
    let org = &existing.org_id;
    let remote = existing
        .remote_state
        .map(PeerState::as_str)
        .unwrap_or("unknown");
    let what = match (existing.state, existing.awaiting) {
        (PeerState::Pending, Awaiting::Remote) => format!(
            "a join of {org} already waits for their administrator's approval; ask them to run `exitnetctl peer approve`"
        ),
        (PeerState::Pending, _) => format!(
            "{org} already asked to join and waits for your approval (`exitnetctl peer approve {org}` or `peer reject {org}`)"
        ),
        _ => format!(
            "already peered with {org} (here {}, their view {remote})",
            existing.state.as_str()
        ),
    };
    Err(Error::FailedPrecondition(format!(
        "{what}. A new invitation replaces only a peering that has ended: to peer anew, first run `exitnetctl peer revoke {org}` here, then join again"
    )))
}

pub(super) fn join_refused(r: JoinRefusal) -> Error {
    match r {
        // One answer for unknown, wrong-secret, used and expired: a prober
        // learns nothing about which invitations exist.
        JoinRefusal::UnknownInvitation
        | JoinRefusal::WrongSecret
        | JoinRefusal::AlreadyUsed
        | JoinRefusal::Expired => Error::PermissionDenied(
            "invitation not valid (unknown, used, expired or wrong secret)".into(),
        ),
        JoinRefusal::OrgAlreadyPeered => {
            Error::AlreadyExists("this organisation is already a peer".into())
        }
        JoinRefusal::KeyAlreadyPinned => {
            Error::AlreadyExists("this key is already pinned for a peer".into())
        }
    }
}

/// The reason code recorded for a refused join.
pub fn join_refusal_reason(e: &Error, fallback: &'static str) -> &'static str {
    match e {
        Error::PermissionDenied(_) => "invitation_invalid",
        Error::AlreadyExists(_) => "already_peered",
        Error::InvalidArgument(_) => "invalid_join_request",
        _ => fallback,
    }
}
