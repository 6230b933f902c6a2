//! What the store reads and writes: records of each aggregate, as the
//! traits in `store` take and return them.

use crate::domain::audit::AuditEntry;
use crate::domain::{Awaiting, OrgId, OrgProfile, PeerState, PurgeStatus, ReferralState};

/// An invitation as the inviter keeps it: the secret only as a hash.
#[derive(Debug, Clone)]
pub struct NewInvitation {
    pub id: String,
    pub secret_hash: Vec<u8>,
    pub expires_at_ms: i64,
    pub note: String,
    pub created_at_ms: i64,
}

/// A key pinned for a peer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PeerKey {
    pub fingerprint: String,
    pub spki_der: Vec<u8>,
    pub added_at_ms: i64,
    /// Unset while the key is the peer's current one.
    pub valid_until_ms: Option<i64>,
}

/// A peer to record, with its first pinned key.
#[derive(Debug, Clone)]
pub struct NewPeer {
    pub profile: OrgProfile,
    pub state: PeerState,
    pub awaiting: Awaiting,
    pub remote_state: Option<PeerState>,
    pub endpoint: String,
    pub key: PeerKey,
    pub now_ms: i64,
}

/// Why a join was refused. Each is recorded as a security event.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum JoinRefusal {
    UnknownInvitation,
    WrongSecret,
    Expired,
    AlreadyUsed,
    OrgAlreadyPeered,
    KeyAlreadyPinned,
}

impl JoinRefusal {
    pub fn reason(self) -> &'static str {
        match self {
            JoinRefusal::UnknownInvitation => "invitation_unknown",
            JoinRefusal::WrongSecret => "invitation_secret_wrong",
            JoinRefusal::Expired => "invitation_expired",
            JoinRefusal::AlreadyUsed => "invitation_used",
            JoinRefusal::OrgAlreadyPeered => "org_already_peered",
            JoinRefusal::KeyAlreadyPinned => "key_already_pinned",
        }
    }
}

/// A notice queued for a peer (outbox row).
#[derive(Debug, Clone)]
pub struct NewNotice {
    pub notice_id: String,
    pub org_id: OrgId,
    /// Encoded `NotifyRequest`, exactly as it will be sent.
    pub payload: Vec<u8>,
    /// Fingerprint of our own key to present (a key rotation is announced
    /// with the old key); unset means the current key.
    pub present_key: Option<String>,
    /// How delivery routes it, kept beside the sealed payload.
    pub route: Route,
    pub now_ms: i64,
}

/// What a queued notice is, for delivery: it orders, batches and holds back
/// notices by this, never by opening their payloads.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NoticeKind {
    /// A referral offer (it expires if not delivered in time).
    Offer,
    /// A receiver's state change.
    Status,
    /// A withdrawal (it goes even while the peering is not active).
    Withdrawal,
    /// An audit checkpoint for the peer to witness.
    Checkpoint,
    /// A peering notice: state, profile or key rotation.
    Peering,
}

impl NoticeKind {
    pub fn as_str(self) -> &'static str {
        match self {
            NoticeKind::Offer => "offer",
            NoticeKind::Status => "status",
            NoticeKind::Withdrawal => "withdrawal",
            NoticeKind::Checkpoint => "checkpoint",
            NoticeKind::Peering => "peering",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        [
            NoticeKind::Offer,
            NoticeKind::Status,
            NoticeKind::Withdrawal,
            NoticeKind::Checkpoint,
            NoticeKind::Peering,
        ]
        .into_iter()
        .find(|k| k.as_str() == s)
    }

    /// A referral message (signed, batched, ordered per referral).
    pub fn is_message(self) -> bool {
        matches!(
            self,
            NoticeKind::Offer | NoticeKind::Status | NoticeKind::Withdrawal
        )
    }
}

/// A notice's kind and, for a referral message, its referral.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Route {
    pub kind: NoticeKind,
    pub referral_id: Option<String>,
}

impl Route {
    pub fn peering() -> Self {
        Route {
            kind: NoticeKind::Peering,
            referral_id: None,
        }
    }
}

#[derive(Debug, Clone)]
pub struct Notice {
    pub id: i64,
    pub notice_id: String,
    pub org_id: OrgId,
    pub payload: Vec<u8>,
    pub present_key: Option<String>,
    pub attempts: i64,
    pub next_attempt_at_ms: i64,
    pub created_at_ms: i64,
    /// `None` for a notice queued before routes were kept (delivery reads it
    /// from the payload).
    pub route: Option<Route>,
}

/// Changes to a peer that arrive together and must apply together.
#[derive(Debug, Clone, Default)]
pub struct PeerUpdate {
    /// Apply only if the local state is still this one.
    pub expected_state: Option<PeerState>,
    pub state: Option<PeerState>,
    pub awaiting: Option<Awaiting>,
    pub remote_state: Option<PeerState>,
    pub profile: Option<OrgProfile>,
    pub add_key: Option<PeerKey>,
    /// Retire every other current key of the peer at this time.
    pub retire_other_keys_at_ms: Option<i64>,
    /// Apply only if the peer's newest pinned key is still this one (a key
    /// rotation: two signed by the same key cannot both apply).
    pub expected_newest_key: Option<String>,
    /// Notices to queue in the same transaction.
    pub notices: Vec<NewNotice>,
    /// Audit records written with the change.
    pub audit: Vec<AuditEntry>,
    pub now_ms: i64,
}

/// Which consents (and later referrals) a caller may list.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ListScope {
    All,
    /// Those owned by this subject, or by anyone in this team.
    Owner {
        subject: String,
        team: Option<String>,
    },
}

/// A page position: (recorded_at, id) of the last item seen.
pub type Cursor = (i64, String);

/// A referral as stored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReferralRecord {
    pub referral_id: String,
    pub outbound: bool,
    pub peer_org: OrgId,
    /// Outbound: the case manager who sent it. Inbound: the one who took it
    /// on, or empty while it waits in the intake queue.
    pub owner: String,
    pub team: Option<String>,
    pub consent_id: Option<String>,
    /// Inbound: the sender's pseudonym for the client. Outbound: the one sent.
    pub pseudonym: String,
    /// Stored as code names, comma-separated.
    pub need_areas: Vec<crate::domain::NeedArea>,
    pub services: Vec<crate::domain::Service>,
    pub urgency: crate::domain::Urgency,
    /// The data key that seals `summary`.
    pub key_id: String,
    /// Encoded `CaseSummary`, sealed under `key_id`; `None` once purged.
    pub summary: Option<Vec<u8>>,
    /// Encoded `ConsentTerms` as they travelled.
    pub terms: Vec<u8>,
    pub state: ReferralState,
    pub purge_status: PurgeStatus,
    pub purged_at_ms: Option<i64>,
    pub created_at_ms: i64,
    pub updated_at_ms: i64,
    /// When the terms it travelled under end (their `valid_until`): an
    /// inbound referral is purged here then, whatever the sender does.
    pub expires_at_ms: Option<i64>,
}

/// One state change in a referral's history.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReferralEvent {
    pub state: ReferralState,
    pub at_ms: i64,
    pub by_org: String,
    /// Who at this node made the change (empty for a peer's change).
    pub actor: String,
    /// Its reasons; and, where it is shown, its content too (a stored
    /// event keeps its codes only: what the history keeps after a purge).
    pub detail: crate::domain::referral::EventDetail,
    /// The change's case content (its text, its outcome), sealed under the
    /// referral's data key (`referrals::content`); deleted by a purge.
    pub content: Option<Vec<u8>>,
}

impl ReferralEvent {
    /// An event made by `by_org`, no actor named, nothing sealed yet.
    pub fn new(
        state: ReferralState,
        by_org: &str,
        at_ms: i64,
        detail: crate::domain::referral::EventDetail,
    ) -> Self {
        ReferralEvent {
            state,
            at_ms,
            by_org: by_org.to_owned(),
            actor: String::new(),
            detail,
            content: None,
        }
    }
}

/// A signed receipt, ours or a peer's.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReceiptRecord {
    pub message_id: String,
    pub issued_by: String,
    /// The sender of the acknowledged message.
    pub counterpart: String,
    pub referral_id: String,
    pub kind: String,
    pub payload: Vec<u8>,
    pub signature: Vec<u8>,
    /// An encoded `BatchProof`, when the signature covers a batch.
    pub batch: Option<Vec<u8>>,
    pub at_ms: i64,
}

/// A peer's audit checkpoint as we hold it, with the witness we signed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HeldCheckpoint {
    pub seq: i64,
    pub head_hash: Vec<u8>,
    pub payload: Vec<u8>,
    pub signature: Vec<u8>,
    /// `(payload, signature)` of our witness; none for one witnessed before
    /// witnesses were kept.
    pub witness: Option<(Vec<u8>, Vec<u8>)>,
}

/// A referral a peer offered, checked and sealed, with our receipt for it.
#[derive(Debug, Clone)]
pub struct NewOffer {
    pub receipt: ReceiptRecord,
    pub record: ReferralRecord,
    pub event: ReferralEvent,
    pub wrapped_key: Option<Vec<u8>>,
    pub audit: Vec<AuditEntry>,
}

/// A new outbound referral, with what is stored with it (`create_referrals`).
#[derive(Debug, Clone)]
pub struct NewCreate {
    pub record: ReferralRecord,
    /// The caller's request ID (retries of one request make one referral).
    pub request_key: String,
    pub request_digest: Vec<u8>,
    pub event: ReferralEvent,
    pub notice: NewNotice,
    pub audit: Vec<AuditEntry>,
    /// The data key the summary is sealed under, wrapped: a sender's key is
    /// its client's (`SHARED_KEY_PREFIX`), and is stored with the referral.
    pub wrapped_key: Vec<u8>,
}

/// Data keys shared by a client's outbound referrals are named so: one is
/// destroyed when the last referral holding content under it is purged.
pub const SHARED_KEY_PREFIX: &str = "subject:";

/// A checked receipt for one of our notices, with what it implies.
#[derive(Debug, Clone)]
pub struct AcceptedReceipt {
    /// The notice it acknowledges (`Notice::id`).
    pub notice_row: i64,
    pub receipt: ReceiptRecord,
    /// The change to the referral it is about, if any.
    pub change: Option<(String, ReferralChange)>,
    /// Audit records written if the receipt is new.
    pub audit: Vec<AuditEntry>,
}

/// A change to a referral, applied only if its state is still `expected`.
#[derive(Debug, Clone, Default)]
pub struct ReferralChange {
    pub expected_states: Vec<ReferralState>,
    pub state: Option<ReferralState>,
    pub event: Option<ReferralEvent>,
    pub owner: Option<String>,
    pub team: Option<Option<String>>,
    pub purge_status: Option<PurgeStatus>,
    pub purged_at_ms: Option<i64>,
    /// Deletes the case content (a purge): the summary and the content of
    /// every history event.
    pub purge_summary: bool,
    /// Replaces the stored terms (a purge: the same without their free text).
    pub purge_terms: Option<Vec<u8>>,
    /// Apply only if the purge status is still this one.
    pub expected_purge_status: Option<PurgeStatus>,
    /// Destroys this data key (a purge): old copies can no longer be read.
    pub destroy_key: Option<String>,
    pub notices: Vec<NewNotice>,
    /// Audit records written with the change.
    pub audit: Vec<AuditEntry>,
    pub now_ms: i64,
}

/// A checkpoint this node signed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CheckpointRecord {
    pub seq: i64,
    pub head_hash: Vec<u8>,
    pub at_ms: i64,
    /// Encoded `AuditCheckpoint`, exactly as signed.
    pub payload: Vec<u8>,
    pub signature: Vec<u8>,
}

/// A peer's countersignature of one of our checkpoints.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WitnessRecord {
    pub seq: i64,
    pub witness_org: String,
    /// Encoded `CheckpointWitness`, exactly as signed.
    pub payload: Vec<u8>,
    pub signature: Vec<u8>,
    pub at_ms: i64,
}

/// Filters for listing referrals.
#[derive(Debug, Clone, Default)]
pub struct ReferralFilter {
    pub outbound: Option<bool>,
    pub state: Option<String>,
    pub peer_org: Option<String>,
}

/// A refused call, recorded without any payload.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct SecurityEvent {
    pub at_ms: i64,
    pub surface: String,
    pub reason: String,
    pub key_fingerprint: Option<String>,
    pub org_id: Option<String>,
    pub remote_addr: Option<String>,
    pub method: Option<String>,
}

/// A referral offered by a peer, stored with its first event and the data
/// key its summary is sealed under (a key of its own, `record.key_id`).
#[derive(Debug, Clone, Copy)]
pub struct NewInbound<'a> {
    pub record: &'a ReferralRecord,
    pub event: &'a ReferralEvent,
    pub wrapped_key: Option<&'a [u8]>,
}

impl SecurityEvent {
    /// The remote address without its port: a flood from one host with
    /// new connections is one address.
    pub fn remote_host(&self) -> Option<String> {
        self.remote_addr.as_deref().map(|a| {
            a.parse::<std::net::SocketAddr>()
                .map(|s| s.ip().to_string())
                .unwrap_or_else(|_| a.to_owned())
        })
    }

    /// The row a refusal is counted in: its minute and everything but the time.
    pub fn aggregation_key(&self) -> String {
        let o = |v: &Option<String>| v.clone().unwrap_or_default();
        format!(
            "{}|{}|{}|{}|{}|{}|{}",
            self.at_ms.div_euclid(60_000),
            self.surface,
            self.reason,
            o(&self.key_fingerprint),
            o(&self.org_id),
            self.remote_host().unwrap_or_default(),
            o(&self.method)
        )
    }
}
